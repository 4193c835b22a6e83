//! Unix datagram sockets: [`UnixDatagram`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use super::{MapOp, UnixSocketAddr};
use crate::BufResult;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::Cancellable;
use crate::driver::op::net as ops;
use crate::driver::op::sock::RawAddr;
use crate::driver::op::unix as uops;
use crate::driver::op::{Op, unix::Received};
use crate::net::Socket;

/// A Unix-domain datagram socket. Datagrams keep their boundaries and,
/// unlike UDP, are reliable and ordered: a sender waits (here: its op
/// waits) rather than have one dropped.
///
/// One Linux limit to know: an *unconnected* sender whose receiver's
/// queue is full (`net.unix.max_dgram_qlen` datagrams, often 10 or 512)
/// gets `EAGAIN` with no readiness event for when the receiver drains, so
/// [`send_to`](Self::send_to) may wait until the sender's own socket next
/// becomes writable. Connected sockets ([`connect`](Self::connect),
/// [`pair`](Self::pair)) are woken by the receiver and do not have this
/// problem: use them for bulk traffic.
pub struct UnixDatagram {
    sock: Socket,
}

impl std::fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixDatagram")
            .field("fd", &self.sock.fd())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

fn dgram_socket() -> io::Result<OwnedFd> {
    ops::socket(libc::AF_UNIX, libc::SOCK_DGRAM)
}

impl UnixDatagram {
    /// A socket bound to the socket file `path` (`AddrInUse` if the path
    /// exists).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        Self::bind_addr(&UnixSocketAddr::from_pathname(path)?)
    }

    /// A socket bound to `addr` (a pathname or an abstract name; unnamed
    /// lets the kernel pick an abstract name).
    pub fn bind_addr(addr: &UnixSocketAddr) -> io::Result<UnixDatagram> {
        let raw = addr.to_raw()?;
        let fd = dgram_socket()?;
        uops::bind_raw(fd.as_raw_fd(), &raw)?;
        Ok(UnixDatagram {
            sock: Socket::new(fd),
        })
    }

    /// A socket with no address: it can send, and receive replies only
    /// once connected or if the peer knows it (it stays unnamed).
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            sock: Socket::new(dgram_socket()?),
        })
    }

    /// A connected pair (`socketpair(2)`).
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = uops::socketpair(libc::SOCK_DGRAM)?;
        Ok((
            UnixDatagram {
                sock: Socket::new(a),
            },
            UnixDatagram {
                sock: Socket::new(b),
            },
        ))
    }

    /// Takes over a std socket (made non-blocking).
    pub fn from_std(s: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        s.set_nonblocking(true)?;
        Ok(UnixDatagram {
            sock: Socket::new(OwnedFd::from(s)),
        })
    }

    /// Sets the default peer for [`send`](Self::send) and filters
    /// [`recv`](Self::recv) to it (immediate: a datagram connect never
    /// waits).
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.connect_addr(&UnixSocketAddr::from_pathname(path)?)
    }

    /// [`connect`](Self::connect) to any address, abstract names included.
    pub fn connect_addr(&self, addr: &UnixSocketAddr) -> io::Result<()> {
        uops::connect_raw_now(self.sock.fd(), &addr.to_raw()?)
    }

    /// Sends a datagram to the connected peer.
    pub fn send<B: IoBuf>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(ops::Write::new(self.sock.fd(), buf, None, true))
    }

    /// Receives a datagram into `buf`'s spare capacity (a longer one is
    /// truncated).
    pub fn recv<B: IoBufMut>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(ops::Read::new(self.sock.fd(), buf, None, true))
    }

    /// Sends a datagram to the socket file `path`.
    pub fn send_to<B: IoBuf>(
        &self,
        buf: B,
        path: impl AsRef<Path>,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.send_to_raw(
            buf,
            UnixSocketAddr::from_pathname(path).and_then(|a| a.to_raw()),
        )
    }

    /// Sends a datagram to `addr` (a pathname or an abstract name).
    pub fn send_to_addr<B: IoBuf>(
        &self,
        buf: B,
        addr: &UnixSocketAddr,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.send_to_raw(buf, addr.to_raw())
    }

    /// A bad address fails the op when it is first polled, with the buffer
    /// handed back.
    fn send_to_raw<B: IoBuf>(&self, buf: B, addr: io::Result<RawAddr>) -> Op<uops::SendMsg<B>> {
        let (raw, bad) = match addr {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        Op::new(uops::SendMsg::new(self.sock.fd(), buf, raw, &[], false).fail_with(bad))
    }

    /// Receives a datagram and its sender's address (unnamed if the sender
    /// is not bound).
    pub fn recv_from<B: IoBufMut>(
        &self,
        buf: B,
    ) -> impl Cancellable<Output = BufResult<(usize, UnixSocketAddr), B>> + '_ {
        MapOp::new(
            Op::new(uops::RecvMsg::new(self.sock.fd(), buf, 0)),
            |r: Received| Ok((r.n, UnixSocketAddr::from_raw(&r.addr)?)),
        )
    }

    /// Sends a datagram to the connected peer with `fds` attached
    /// (`SCM_RIGHTS`; see [`UnixStream::send_with_fds`](super::UnixStream::send_with_fds)).
    /// An empty datagram may carry descriptors.
    pub fn send_with_fds<B: IoBuf>(
        &self,
        buf: B,
        fds: &[BorrowedFd<'_>],
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(uops::SendMsg::new(self.sock.fd(), buf, None, fds, false))
    }

    /// Receives a datagram and up to `max_fds` descriptors sent with it
    /// (close-on-exec; truncation handled as in
    /// [`UnixStream::recv_with_fds`](super::UnixStream::recv_with_fds)).
    pub fn recv_with_fds<B: IoBufMut>(
        &self,
        buf: B,
        max_fds: usize,
    ) -> impl Cancellable<Output = BufResult<(usize, Vec<OwnedFd>), B>> + '_ {
        MapOp::new(
            Op::new(uops::RecvMsg::new(self.sock.fd(), buf, max_fds)),
            |r: Received| Ok((r.n, r.fds)),
        )
    }

    /// This socket's address.
    pub fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixSocketAddr::from_raw(&uops::raw_name(self.sock.fd(), false)?)
    }

    /// The connected peer's address (`NotConnected` if there is none).
    pub fn peer_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixSocketAddr::from_raw(&uops::raw_name(self.sock.fd(), true)?)
    }
}

impl AsRawFd for UnixDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd()
    }
}

impl AsFd for UnixDatagram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.owned().as_fd()
    }
}
