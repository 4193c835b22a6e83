//! Sockets on owned buffers: [`TcpListener`], [`TcpStream`], [`UdpSocket`],
//! and Unix-domain sockets ([`UnixListener`], [`UnixStream`],
//! [`UnixDatagram`]).
//!
//! Every op takes its buffer by value and hands it back with the result
//! ([`BufResult`](crate::BufResult)). Reads fill the buffer's spare capacity
//! (`Vec::with_capacity(n)`, or `clear()` a used one); a read into a buffer
//! without spare capacity is an `InvalidInput` error rather than a false
//! end-of-stream. To read over a full buffer (a `Box<[u8]>`, a full `Vec`),
//! wrap it in [`buf::Overwrite`](crate::buf::Overwrite).

mod copy;
mod recv;
mod resolve;
mod socket;
mod splice;
mod tcp;
mod udp;
mod unix;

pub use copy::{CopyBidirectional, CopyMode, CopyStream, copy_bidirectional};
pub use recv::RecvMulti;
pub use resolve::ToSocketAddrs;
pub(crate) use resolve::resolve_async;
pub(crate) use socket::Socket;
pub use splice::splice;
pub use tcp::{Incoming, OwnedReadHalf, OwnedWriteHalf, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub(crate) use unix::remove_stale_socket;
pub use unix::{
    UCred, UnixDatagram, UnixIncoming, UnixListener, UnixReadHalf, UnixSocketAddr, UnixStream,
    UnixWriteHalf,
};

use std::io;
use std::net::SocketAddr;

/// Resolves `addr` synchronously, for the set-up calls that are not async
/// (`bind`, UDP `connect`): instant for literal addresses, but a host name
/// blocks the calling thread in `getaddrinfo`.
pub(crate) fn resolve(addr: impl std::net::ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    let v: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if v.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        ));
    }
    Ok(v)
}

/// Tries `f` on each address, returning the first success or the last error.
pub(crate) fn each_addr<T>(
    addrs: &[SocketAddr],
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addrs {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
}
