//! Unix datagram sockets: [`UnixDatagram`].

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{MapOp, UnixSocketAddr};
use crate::BufResult;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::op::net as ops;
use crate::driver::op::sock::RawAddr;
use crate::driver::op::unix as uops;
use crate::driver::op::{Op, unix::Received};
use crate::driver::{Cancellable, Canceller};
use crate::net::Socket;

/// A Unix-domain datagram socket. Datagrams keep their boundaries and,
/// unlike UDP, are reliable and ordered: a sender waits (here: its op
/// waits) rather than have one dropped.
///
/// One Linux limit to know: an *unconnected* sender whose receiver's
/// queue is full (`net.unix.max_dgram_qlen` datagrams, often 10 or 512)
/// gets `EAGAIN`, and only the receiver consuming one of *its* datagrams
/// wakes it. [`send_to`](Self::send_to) waits for that wake-up on epoll,
/// and retries after a growing pause (1 ms to 50 ms) where the kernel
/// gives no wake-up (io_uring completes the send with `EAGAIN`). Connected
/// sockets ([`connect`](Self::connect), [`pair`](Self::pair)) are woken by
/// the receiver: use them for bulk traffic.
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
    fn send_to_raw<B: IoBuf>(&self, buf: B, addr: io::Result<RawAddr>) -> SendTo<'_, B> {
        let (raw, bad) = match addr {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        let op = Op::new(uops::SendMsg::new(self.sock.fd(), buf, raw, &[], false).fail_with(bad));
        SendTo {
            sock: self,
            addr: raw,
            op: Some(op),
            pause: None,
            delay: Duration::from_millis(1),
            canceller: None,
        }
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

/// The future of [`UnixDatagram::send_to`]: a `SendMsg` op, sent again
/// after a pause when the kernel answers `EAGAIN` at once.
///
/// That happens on io_uring when the receiver's queue is full
/// (`net.unix.max_dgram_qlen`): the sender's socket polls writable, so
/// the kernel's retry gives up and completes the SQE with `-EAGAIN`. On
/// epoll the op waits for the sender's next writable edge instead (the
/// receiver consuming one of its datagrams). Pauses grow 1 ms → 50 ms.
struct SendTo<'a, B: IoBuf> {
    sock: &'a UnixDatagram,
    addr: Option<RawAddr>,
    op: Option<Op<uops::SendMsg<B>>>,
    pause: Option<(Pin<Box<crate::time::Sleep>>, B)>,
    delay: Duration,
    canceller: Option<Canceller>,
}

// Nothing in it is pinned: the op is `Unpin`, the buffer is only held.
impl<B: IoBuf> Unpin for SendTo<'_, B> {}

impl<B: IoBuf> Future for SendTo<'_, B> {
    type Output = BufResult<usize, B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if let Some(op) = &mut this.op {
                let (res, buf) = std::task::ready!(Pin::new(op).poll(cx));
                this.op = None;
                match res {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let sleep = Box::pin(crate::time::sleep(this.delay));
                        this.delay = (this.delay * 2).min(MAX_PAUSE);
                        this.pause = Some((sleep, buf));
                    }
                    r => return Poll::Ready((r, buf)),
                }
            }
            if let Some((sleep, _)) = &mut this.pause {
                std::task::ready!(sleep.as_mut().poll(cx));
                let (_, buf) = this.pause.take().expect("paused");
                let op = uops::SendMsg::new(this.sock.sock.fd(), buf, this.addr, &[], false);
                let mut op = Op::new(op);
                if let Some(c) = &this.canceller {
                    // A canceller fired during the pause ends it here.
                    op = op.with_canceller(c);
                }
                this.op = Some(op);
            }
        }
    }
}

impl<B: IoBuf> Cancellable for SendTo<'_, B> {
    fn with_canceller(mut self, c: &Canceller) -> Self {
        self.op = self.op.take().map(|op| op.with_canceller(c));
        self.canceller = Some(c.clone());
        self
    }
}

/// Longest pause between sends the kernel refused with `EAGAIN`.
const MAX_PAUSE: Duration = Duration::from_millis(50);

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
