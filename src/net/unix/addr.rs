//! [`UnixSocketAddr`]: a pathname, an abstract name, or unnamed.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::driver::op::sock::RawAddr;
use crate::driver::op::unix::SUN_PATH_LEN;

/// The address of a Unix-domain socket.
///
/// Linux has three kinds: a **pathname** in the file system, an
/// **abstract** name (Linux only: `sun_path` starts with a NUL byte; the
/// name is any bytes, lives in the network namespace, and vanishes with
/// the last socket, so there is no file to clean up), and **unnamed** (a
/// socket that was never bound, such as a connecting client or either end
/// of a `pair()`).
///
/// This is our own type rather than `std::os::unix::net::SocketAddr`
/// because std has no way to build an unnamed address or to build one
/// from what the kernel hands back; it converts both ways with std's
/// (`From`/`TryFrom`), using `std::os::linux::net::SocketAddrExt` for
/// abstract names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UnixSocketAddr {
    /// `sun_path` as the kernel sees it: empty (unnamed), a leading NUL
    /// (abstract), or a pathname without its terminating NUL.
    bytes: Vec<u8>,
}

impl UnixSocketAddr {
    /// A pathname address. Fails with `InvalidInput` for a path with a NUL
    /// byte, an empty path, or one of 108 bytes or more.
    pub fn from_pathname(path: impl AsRef<Path>) -> io::Result<UnixSocketAddr> {
        let b = path.as_ref().as_os_str().as_bytes();
        if b.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty Unix socket path",
            ));
        }
        // Checks length and NUL bytes.
        RawAddr::from_unix(b)?;
        Ok(UnixSocketAddr { bytes: b.to_vec() })
    }

    /// An abstract-namespace address (Linux): `name` is any bytes (NULs
    /// included, possibly empty), at most 107 of them.
    pub fn from_abstract_name(name: impl AsRef<[u8]>) -> io::Result<UnixSocketAddr> {
        let name = name.as_ref();
        if name.len() >= SUN_PATH_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "abstract Unix socket name too long: {} bytes, at most {}",
                    name.len(),
                    SUN_PATH_LEN - 1
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(name.len() + 1);
        bytes.push(0);
        bytes.extend_from_slice(name);
        Ok(UnixSocketAddr { bytes })
    }

    /// The unnamed address.
    pub fn unnamed() -> UnixSocketAddr {
        UnixSocketAddr { bytes: Vec::new() }
    }

    /// The path, for a pathname address.
    pub fn pathname(&self) -> Option<&Path> {
        match self.bytes.first() {
            None | Some(0) => None,
            Some(_) => Some(Path::new(OsStr::from_bytes(&self.bytes))),
        }
    }

    /// The name (without the leading NUL), for an abstract address.
    pub fn as_abstract_name(&self) -> Option<&[u8]> {
        match self.bytes.first() {
            Some(0) => Some(&self.bytes[1..]),
            _ => None,
        }
    }

    /// Whether the socket has no address.
    pub fn is_unnamed(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn from_raw(a: &RawAddr) -> io::Result<UnixSocketAddr> {
        Ok(UnixSocketAddr {
            bytes: a.as_unix()?,
        })
    }

    pub(crate) fn to_raw(&self) -> io::Result<RawAddr> {
        RawAddr::from_unix(&self.bytes)
    }
}

impl fmt::Debug for UnixSocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `(unnamed)`, the path, or `@name` for an abstract name (escaped as
/// ASCII, as `ss` and `/proc/net/unix` show it).
impl fmt::Display for UnixSocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.pathname() {
            write!(f, "{}", p.display())
        } else if let Some(n) = self.as_abstract_name() {
            write!(f, "@{}", n.escape_ascii())
        } else {
            f.write_str("(unnamed)")
        }
    }
}

impl From<&std::os::unix::net::SocketAddr> for UnixSocketAddr {
    fn from(a: &std::os::unix::net::SocketAddr) -> UnixSocketAddr {
        use std::os::linux::net::SocketAddrExt;
        if let Some(p) = a.as_pathname() {
            UnixSocketAddr {
                bytes: p.as_os_str().as_bytes().to_vec(),
            }
        } else if let Some(n) = a.as_abstract_name() {
            let mut bytes = vec![0];
            bytes.extend_from_slice(n);
            UnixSocketAddr { bytes }
        } else {
            UnixSocketAddr::unnamed()
        }
    }
}

impl TryFrom<&UnixSocketAddr> for std::os::unix::net::SocketAddr {
    type Error = io::Error;

    /// Fails (`InvalidInput`) for the unnamed address, which std cannot
    /// build.
    fn try_from(a: &UnixSocketAddr) -> io::Result<std::os::unix::net::SocketAddr> {
        use std::os::linux::net::SocketAddrExt;
        if let Some(p) = a.pathname() {
            std::os::unix::net::SocketAddr::from_pathname(p)
        } else if let Some(n) = a.as_abstract_name() {
            std::os::unix::net::SocketAddr::from_abstract_name(n)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "std cannot represent an unnamed Unix socket address",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_limits() {
        let p = UnixSocketAddr::from_pathname("/tmp/x.sock").unwrap();
        assert_eq!(p.pathname(), Some(Path::new("/tmp/x.sock")));
        assert!(p.as_abstract_name().is_none() && !p.is_unnamed());
        let a = UnixSocketAddr::from_abstract_name(b"\0weird\0name").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"\0weird\0name"[..]));
        assert!(a.pathname().is_none());
        assert_eq!(a.to_string(), "@\\x00weird\\x00name");
        assert!(UnixSocketAddr::unnamed().is_unnamed());
        let e = UnixSocketAddr::from_pathname("a\0b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(UnixSocketAddr::from_pathname("").is_err());
        assert!(UnixSocketAddr::from_pathname("x".repeat(107)).is_ok());
        assert!(UnixSocketAddr::from_pathname("x".repeat(108)).is_err());
        assert!(UnixSocketAddr::from_abstract_name([1u8; 107]).is_ok());
        assert!(UnixSocketAddr::from_abstract_name([1u8; 108]).is_err());
        // Through the kernel's layout and back.
        for x in [p, a, UnixSocketAddr::unnamed()] {
            let raw = x.to_raw().unwrap();
            assert_eq!(UnixSocketAddr::from_raw(&raw).unwrap(), x);
        }
    }

    #[test]
    fn std_round_trip() {
        let a = UnixSocketAddr::from_abstract_name("n").unwrap();
        let s = std::os::unix::net::SocketAddr::try_from(&a).unwrap();
        assert_eq!(UnixSocketAddr::from(&s), a);
        assert!(std::os::unix::net::SocketAddr::try_from(&UnixSocketAddr::unnamed()).is_err());
    }
}
