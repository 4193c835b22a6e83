//! UDP sockets.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::{Socket, each_addr, resolve};
use crate::BufResult;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::Cancellable;
use crate::driver::op::Op;
use crate::driver::op::net as ops;

/// A UDP socket.
pub struct UdpSocket {
    sock: Socket,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.sock.fd())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    /// Binds to `addr`. Not async: a host name is resolved here, blocking
    /// the thread (see [`TcpListener::bind`](super::TcpListener::bind)).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, |a| {
            let d = if a.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let fd = ops::socket(d, libc::SOCK_DGRAM)?;
            ops::bind(fd.as_raw_fd(), a)?;
            Ok(UdpSocket {
                sock: Socket::new(fd),
            })
        })
    }

    /// Binds to one address, with `SO_REUSEPORT` if asked (for the
    /// transport layer's datagram endpoints).
    pub(crate) fn bind_opts(a: &SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
        let d = if a.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = ops::socket(d, libc::SOCK_DGRAM)?;
        if reuse_port {
            ops::setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        ops::bind(fd.as_raw_fd(), a)?;
        Ok(UdpSocket {
            sock: Socket::new(fd),
        })
    }

    /// Sets the default peer for [`send`](Self::send) and filters
    /// [`recv`](Self::recv) to it. Immediate; a host name is resolved
    /// here, blocking the thread.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, |a| ops::connect_now(self.sock.fd(), a))
    }

    /// Sends a datagram to the connected peer.
    pub fn send<B: IoBuf>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(ops::Write::new(self.sock.fd(), buf, None, true))
    }

    /// Receives a datagram from the connected peer into `buf`'s spare
    /// capacity (a longer datagram is truncated).
    pub fn recv<B: IoBufMut>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(ops::Read::new(self.sock.fd(), buf, None, true))
    }

    /// Sends a datagram to `addr`.
    pub fn send_to<B: IoBuf>(
        &self,
        buf: B,
        addr: SocketAddr,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(ops::SendTo::new(self.sock.fd(), buf, addr))
    }

    /// Receives a datagram and its sender's address.
    pub fn recv_from<B: IoBufMut>(
        &self,
        buf: B,
    ) -> impl Cancellable<Output = BufResult<(usize, SocketAddr), B>> + '_ {
        Op::new(ops::RecvFrom::new(self.sock.fd(), buf))
    }

    /// This socket's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        ops::sock_name(self.sock.fd(), false)
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        ops::sock_name(self.sock.fd(), true)
    }

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        ops::setsockopt_int(
            self.sock.fd(),
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            i32::from(on),
        )
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.owned().as_fd()
    }
}
