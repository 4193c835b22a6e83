//! Addresses for [`TcpStream::connect`](super::TcpStream::connect): numeric
//! ones are parsed where they are, host names are looked up on the loop's
//! blocking pool (`getaddrinfo` can take seconds; the loop never waits on
//! it).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What [`TcpStream::connect`](super::TcpStream::connect) accepts: the
/// same types as `std::net::ToSocketAddrs` offers (`SocketAddr` and its
/// V4/V6 forms, `(IpAddr, u16)` and friends, `"host:port"` as `&str` or
/// `String`, `(&str, u16)`, `(String, u16)`, `&[SocketAddr]`, and
/// references to any of them).
///
/// Unlike std's trait, it never blocks: a numeric address (`"1.2.3.4:80"`,
/// `"[::1]:80"`, `("10.0.0.1", 80)`) is parsed at once, and only a host
/// name goes to `getaddrinfo`, on the loop's blocking pool
/// ([`EventLoop::getaddrinfo`](crate::EventLoop::getaddrinfo)). The trait
/// is sealed: it cannot be implemented outside uringio.
pub trait ToSocketAddrs: sealed::Sealed {}

pub(crate) mod sealed {
    use super::*;

    /// How an address is resolved.
    #[derive(Debug)]
    pub enum Addrs {
        /// Numeric (or malformed): no lookup needed.
        Ready(io::Result<Vec<SocketAddr>>),
        /// A host name to look up on the blocking pool.
        Lookup(String, u16),
    }

    /// The sealed half of [`ToSocketAddrs`](super::ToSocketAddrs).
    pub trait Sealed {
        /// Parses what can be parsed without a lookup.
        fn to_addrs(&self) -> Addrs;
    }
}

use sealed::{Addrs, Sealed};

fn host_port(host: &str, port: u16) -> Addrs {
    match host.parse::<IpAddr>() {
        Ok(ip) => Addrs::Ready(Ok(vec![SocketAddr::new(ip, port)])),
        Err(_) => Addrs::Lookup(host.to_string(), port),
    }
}

fn invalid(what: &str) -> Addrs {
    Addrs::Ready(Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        what.to_string(),
    )))
}

macro_rules! ready {
    ($($t:ty => |$s:ident| $e:expr;)*) => {$(
        impl Sealed for $t {
            fn to_addrs(&self) -> Addrs {
                let $s = self;
                Addrs::Ready(Ok($e))
            }
        }
        impl ToSocketAddrs for $t {}
    )*};
}

ready! {
    SocketAddr => |a| vec![*a];
    SocketAddrV4 => |a| vec![SocketAddr::V4(*a)];
    SocketAddrV6 => |a| vec![SocketAddr::V6(*a)];
    (IpAddr, u16) => |a| vec![SocketAddr::new(a.0, a.1)];
    (Ipv4Addr, u16) => |a| vec![SocketAddr::new(IpAddr::V4(a.0), a.1)];
    (Ipv6Addr, u16) => |a| vec![SocketAddr::new(IpAddr::V6(a.0), a.1)];
    [SocketAddr] => |a| a.to_vec();
}

impl Sealed for str {
    fn to_addrs(&self) -> Addrs {
        if let Ok(a) = self.parse::<SocketAddr>() {
            return Addrs::Ready(Ok(vec![a]));
        }
        let Some((host, port)) = self.rsplit_once(':') else {
            return invalid("invalid socket address: expected \"host:port\"");
        };
        match port.parse::<u16>() {
            Ok(p) => host_port(host, p),
            Err(_) => invalid("invalid port value"),
        }
    }
}
impl ToSocketAddrs for str {}

impl Sealed for String {
    fn to_addrs(&self) -> Addrs {
        self.as_str().to_addrs()
    }
}
impl ToSocketAddrs for String {}

impl Sealed for (&str, u16) {
    fn to_addrs(&self) -> Addrs {
        host_port(self.0, self.1)
    }
}
impl ToSocketAddrs for (&str, u16) {}

impl Sealed for (String, u16) {
    fn to_addrs(&self) -> Addrs {
        host_port(&self.0, self.1)
    }
}
impl ToSocketAddrs for (String, u16) {}

impl<T: Sealed + ?Sized> Sealed for &T {
    fn to_addrs(&self) -> Addrs {
        (**self).to_addrs()
    }
}
impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}

/// Resolves `addr`: at once if numeric, else on the running loop's
/// blocking pool.
pub(crate) async fn resolve_async(
    addr: &(impl ToSocketAddrs + ?Sized),
) -> io::Result<Vec<SocketAddr>> {
    let v = match addr.to_addrs() {
        Addrs::Ready(r) => r?,
        Addrs::Lookup(host, port) => {
            let lp = crate::runtime::try_running_loop().ok_or_else(|| {
                io::Error::other("looking up a host name needs a running uringio loop")
            })?;
            lp.getaddrinfo(&host, port).await?
        }
    };
    if v.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(a: &(impl ToSocketAddrs + ?Sized)) -> Vec<SocketAddr> {
        match a.to_addrs() {
            Addrs::Ready(r) => r.unwrap(),
            other => panic!("not numeric: {other:?}"),
        }
    }

    #[test]
    fn numeric_forms_need_no_lookup() {
        let v4: SocketAddr = "1.2.3.4:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(ready("1.2.3.4:80"), vec![v4]);
        assert_eq!(ready(&"[::1]:80".to_string()), vec![v6]);
        assert_eq!(ready(&("1.2.3.4", 80)), vec![v4]);
        assert_eq!(ready(&("::1".to_string(), 80)), vec![v6]);
        assert_eq!(ready(&(IpAddr::from([1, 2, 3, 4]), 80)), vec![v4]);
        assert_eq!(ready(&v4), vec![v4]);
        assert_eq!(ready(&[v4, v6][..]), vec![v4, v6]);
    }

    #[test]
    fn host_names_are_looked_up_and_bad_input_is_an_error() {
        for a in ["localhost:80", "example.invalid:1"] {
            assert!(matches!(a.to_addrs(), Addrs::Lookup(_, _)), "{a}");
        }
        assert!(matches!(("localhost", 8).to_addrs(), Addrs::Lookup(h, 8) if h == "localhost"));
        for bad in ["localhost", "localhost:http", "1.2.3.4:99999"] {
            match bad.to_addrs() {
                Addrs::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
