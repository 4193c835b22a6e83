//! Unix stream sockets: [`UnixListener`] (multishot accept on io_uring,
//! like `TcpListener`) and [`UnixStream`] (with `SCM_RIGHTS` descriptor
//! passing).

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::{MapOp, UCred, UnixSocketAddr};
use crate::BufResult;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::Cancellable;
use crate::driver::bufring::RecvLeftover;
use crate::driver::op::net as ops;
use crate::driver::op::unix as uops;
use crate::driver::op::{AcceptMulti, Op};
use crate::driver::uring::FdBacklog;
use crate::net::Socket;
use crate::net::recv::{HasLeftover, ReadFirst};
use crate::runtime::context;

/// A Unix-domain listening socket.
///
/// Binding a path that exists fails with `AddrInUse`, as with std, even
/// when it is a stale socket file left by a process that died: remove it
/// first (asyncio's `create_unix_server` does that for socket files).
/// Dropping the listener does not remove its socket file either.
pub struct UnixListener {
    sock: Socket,
    /// Connections a dropped multishot accept had already taken from the
    /// kernel: the next `accept`/`incoming` hands them out first.
    backlog: FdBacklog,
}

impl std::fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.sock.fd())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl UnixListener {
    /// Binds and listens on the socket file `path` (backlog 1024).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        Self::bind_addr(&UnixSocketAddr::from_pathname(path)?)
    }

    /// Binds and listens on `addr`: a pathname or an abstract name (an
    /// unnamed address lets the kernel pick an abstract name, autobind).
    pub fn bind_addr(addr: &UnixSocketAddr) -> io::Result<UnixListener> {
        let raw = addr.to_raw()?;
        let fd = ops::socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        uops::bind_raw(fd.as_raw_fd(), &raw)?;
        ops::listen(fd.as_raw_fd(), 1024)?;
        Ok(UnixListener {
            sock: Socket::new(fd),
            backlog: FdBacklog::default(),
        })
    }

    /// Takes over a std listener (made non-blocking).
    pub fn from_std(l: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        l.set_nonblocking(true)?;
        Ok(UnixListener {
            sock: Socket::new(OwnedFd::from(l)),
            backlog: FdBacklog::default(),
        })
    }

    /// Waits for a connection; returns it with the peer's address (usually
    /// unnamed: clients rarely bind).
    ///
    /// Out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`) the next call fails at once too, until something is
    /// freed: pause before retrying, as with `TcpListener::accept`.
    pub async fn accept(&self) -> io::Result<(UnixStream, UnixSocketAddr)> {
        if let Some(s) = self.take_backlog() {
            let addr = s.peer_addr().unwrap_or_else(|_| UnixSocketAddr::unnamed());
            return Ok((s, addr));
        }
        let (fd, addr) = Op::new(ops::Accept::new(self.sock.fd())).await?;
        let addr = UnixSocketAddr::from_raw(&addr).unwrap_or_else(|_| UnixSocketAddr::unnamed());
        Ok((UnixStream::from_fd(fd), addr))
    }

    fn take_backlog(&self) -> Option<UnixStream> {
        let fd = self.backlog.borrow_mut().pop_front()?;
        Some(UnixStream::from_fd(fd))
    }

    /// The connections, as a stream: one multishot accept on io_uring
    /// (5.19+), an accept loop elsewhere. Dropping the stream keeps the
    /// connections it had already taken for the next `accept()` or
    /// `incoming()` (see `TcpListener::incoming`).
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming {
            listener: self,
            multi: None,
            single: None,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixSocketAddr::from_raw(&uops::raw_name(self.sock.fd(), false)?)
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.owned().as_fd()
    }
}

type AcceptFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<(UnixStream, UnixSocketAddr)>> + 'a>>;

/// The stream of [`UnixListener::incoming`].
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
    multi: Option<AcceptMulti>,
    single: Option<AcceptFuture<'a>>,
}

impl std::fmt::Debug for UnixIncoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixIncoming")
            .field("multishot", &self.multi.is_some())
            .finish()
    }
}

impl futures_core::Stream for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(s) = this.listener.take_backlog() {
            return Poll::Ready(Some(Ok(s)));
        }
        let d = context::current_driver().expect("incoming() polled outside a uringio loop");
        if this
            .multi
            .as_ref()
            .is_some_and(|m| !Rc::ptr_eq(m.driver(), &d))
        {
            // Polled in another loop than before: the old multishot goes
            // (what it took lands in the backlog) and one starts here.
            this.multi = None;
            if let Some(s) = this.listener.take_backlog() {
                return Poll::Ready(Some(Ok(s)));
            }
        }
        if this.multi.is_none()
            && this.single.is_none()
            && d.is_uring()
            && d.features.multishot_accept
        {
            let backlog = this.listener.backlog.clone();
            this.multi = Some(AcceptMulti::new(this.listener.sock.fd(), d, backlog));
        }
        if let Some(m) = &mut this.multi {
            return m.poll_next(cx).map(|r| Some(r.map(UnixStream::from_fd)));
        }
        let l = this.listener;
        let fut = this.single.get_or_insert_with(|| Box::pin(l.accept()));
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.single = None;
                Poll::Ready(Some(r.map(|(s, _)| s)))
            }
        }
    }
}

/// A Unix-domain stream connection.
pub struct UnixStream {
    sock: Socket,
    /// Bytes a dropped [`copy_bidirectional`](crate::net::copy_bidirectional)
    /// handed back; made by the first copy.
    leftover: std::cell::RefCell<Option<RecvLeftover>>,
}

impl std::fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.sock.fd())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

/// Longest pause between connect attempts while the listener's accept
/// queue is full.
const MAX_CONNECT_PAUSE: Duration = Duration::from_millis(50);

impl UnixStream {
    pub(crate) fn from_fd(fd: OwnedFd) -> UnixStream {
        UnixStream {
            sock: Socket::new(fd),
            leftover: Default::default(),
        }
    }

    /// The socket's leftover queue, made on first use.
    pub(crate) fn leftover(&self) -> RecvLeftover {
        self.leftover
            .borrow_mut()
            .get_or_insert_with(Default::default)
            .clone()
    }

    /// Takes over a connected std stream (made non-blocking).
    pub fn from_std(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        s.set_nonblocking(true)?;
        Ok(UnixStream::from_fd(OwnedFd::from(s)))
    }

    /// Connects to the socket file `path`.
    ///
    /// A missing path is `NotFound`; a path that is not a listening socket
    /// is `ConnectionRefused`. See [`connect_addr`](Self::connect_addr).
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        Self::connect_addr(&UnixSocketAddr::from_pathname(path)?).await
    }

    /// Connects to `addr` (a pathname or an abstract name).
    ///
    /// A Unix connect never waits in the kernel: it succeeds at once or
    /// fails, except when the listener's accept queue is full, where a
    /// non-blocking socket gets `EAGAIN` and no readiness event says when
    /// there is room. Then this retries, pausing 1 ms, 2 ms, … up to
    /// 50 ms between attempts, until the listener accepts or the caller
    /// gives up (wrap it in [`timeout`](crate::timeout)).
    pub async fn connect_addr(addr: &UnixSocketAddr) -> io::Result<UnixStream> {
        let raw = addr.to_raw()?;
        let fd = ops::socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        let s = UnixStream::from_fd(fd);
        let mut pause = Duration::from_millis(1);
        loop {
            match Op::new(uops::UnixConnect::new(s.sock.fd(), raw)).await {
                Ok(()) => return Ok(s),
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                    crate::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_CONNECT_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair of streams (`socketpair(2)`).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = uops::socketpair(libc::SOCK_STREAM)?;
        Ok((UnixStream::from_fd(a), UnixStream::from_fd(b)))
    }

    /// Reads into `buf`'s spare capacity; `Ok(0)` at end of stream.
    /// Bytes a dropped [`copy_bidirectional`](crate::net::copy_bidirectional)
    /// handed back come first.
    ///
    /// Descriptors the peer sent with these bytes are closed by the
    /// kernel: use [`recv_with_fds`](Self::recv_with_fds) to take them.
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        ReadFirst::new(self, buf, crate::buf::fill_from, Self::read_op)
    }

    /// [`read`](Self::read) as its op type (for the transport layer).
    pub(crate) fn read_op<B: IoBufMut>(&self, buf: B) -> Op<ops::Read<B>> {
        // Not marked as a stream read: a Unix stream read can be short
        // while more is queued (it stops at bytes that carried descriptors
        // or came from another writer), so a short read says nothing about
        // the socket being drained.
        let fixed = self.sock.fixed();
        Op::new(ops::Read::new(self.sock.fd(), buf, None, true).fixed(fixed))
    }

    /// Reads like [`read`](Self::read), giving up after `timeout`: the
    /// result is then a `TimedOut` error, with the buffer (bytes that
    /// arrived first win over the deadline; nothing is lost). On io_uring
    /// the deadline is an `IORING_OP_LINK_TIMEOUT` linked to the receive,
    /// costing no timer of the loop; on epoll a loop timer cancels the
    /// wait for readiness. Dropping the future cancels both.
    pub async fn read_timeout<B: IoBufMut>(
        &self,
        buf: B,
        timeout: std::time::Duration,
    ) -> BufResult<usize, B> {
        crate::driver::op::link::with_timeout(self.read_op(buf).into_data(), timeout).await
    }

    /// [`write`](Self::write) as its op type.
    pub(crate) fn write_op<B: IoBuf>(&self, buf: B) -> Op<ops::Write<B>> {
        let fixed = self.sock.fixed();
        Op::new(ops::Write::new(self.sock.fd(), buf, None, true).fixed(fixed))
    }

    /// [`writev`](Self::writev) as its op type.
    pub(crate) fn writev_op<B: IoBuf>(&self, bufs: Vec<B>) -> Op<ops::WriteV<B>> {
        Op::new(ops::WriteV::new(self.sock.fd(), bufs, None, true))
    }

    /// Writes `buf`'s initialised bytes (maybe not all of them).
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.write_op(buf)
    }

    /// Writes all of `buf`'s initialised bytes.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        let fixed = self.sock.fixed();
        ops::write_all(self.sock.fd(), buf, None, true, fixed).await
    }

    /// Reads into several buffers' spare capacity, in order. Bytes a
    /// dropped [`copy_bidirectional`](crate::net::copy_bidirectional)
    /// handed back come first.
    pub fn readv<B: IoBufMut>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        ReadFirst::new(
            self,
            bufs,
            |v: &mut Vec<B>, s| crate::net::tcp::fill_vec(v, s),
            Self::readv_op,
        )
    }

    /// [`readv`](Self::readv) as its op type, without the handed-back
    /// bytes.
    fn readv_op<B: IoBufMut>(&self, bufs: Vec<B>) -> Op<ops::ReadV<B>> {
        Op::new(ops::ReadV::new(self.sock.fd(), bufs, None, true))
    }

    /// Writes several buffers in order, in one system call or SQE.
    pub fn writev<B: IoBuf>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        self.writev_op(bufs)
    }

    /// Writes `buf`'s initialised bytes (maybe not all) with `fds`
    /// attached (`sendmsg` with `SCM_RIGHTS`; `IORING_OP_SENDMSG` on
    /// io_uring). The descriptors travel with the first byte that is
    /// sent, so `buf` must not be empty.
    ///
    /// The op sends duplicates it owns until it completes, so closing an
    /// fd right after this returns (or dropping the future) cannot send
    /// the wrong file. At most 253 descriptors per call (`SCM_MAX_FD`);
    /// more, or an empty `buf`, is an `InvalidInput` error.
    pub fn send_with_fds<B: IoBuf>(
        &self,
        buf: B,
        fds: &[BorrowedFd<'_>],
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        Op::new(uops::SendMsg::new(self.sock.fd(), buf, None, fds, true))
    }

    /// Reads into `buf`'s spare capacity and takes up to `max_fds`
    /// descriptors the peer sent with those bytes (`recvmsg`;
    /// `IORING_OP_RECVMSG` on io_uring). They arrive close-on-exec
    /// (`MSG_CMSG_CLOEXEC`). `Ok((0, []))` at end of stream.
    ///
    /// A read stops after bytes that carried descriptors, so each
    /// `send_with_fds` is met by one `recv_with_fds` (or several, if
    /// `buf` is smaller than what was sent; the descriptors come with the
    /// first). If more descriptors came than `max_fds` allows, the kernel
    /// discards the excess (`MSG_CTRUNC`): this then closes the ones that
    /// fit too and fails with `InvalidData`; the bytes read are in the
    /// buffer.
    pub fn recv_with_fds<B: IoBufMut>(
        &self,
        buf: B,
        max_fds: usize,
    ) -> impl Cancellable<Output = BufResult<(usize, Vec<OwnedFd>), B>> + '_ {
        MapOp::new(
            Op::new(uops::RecvMsg::new(self.sock.fd(), buf, max_fds)),
            |r: uops::Received| Ok((r.n, r.fds)),
        )
    }

    /// Shuts down the read side, the write side or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        ops::shutdown(self.sock.fd(), how)
    }

    /// The peer's address (unnamed unless the peer bound one).
    pub fn peer_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixSocketAddr::from_raw(&uops::raw_name(self.sock.fd(), true)?)
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<UnixSocketAddr> {
        UnixSocketAddr::from_raw(&uops::raw_name(self.sock.fd(), false)?)
    }

    /// The peer process's credentials (`SO_PEERCRED`), as of when it
    /// connected (or called `pair`).
    pub fn peer_cred(&self) -> io::Result<UCred> {
        let (pid, uid, gid) = uops::peer_cred(self.sock.fd())?;
        Ok(UCred { pid, uid, gid })
    }

    /// Splits into a read half and a write half that can live in different
    /// tasks. The socket closes when both are dropped.
    pub fn into_split(self) -> (UnixReadHalf, UnixWriteHalf) {
        let s = Rc::new(self);
        (UnixReadHalf { s: s.clone() }, UnixWriteHalf { s })
    }
}

impl HasLeftover for UnixStream {
    fn pending_leftover(&self) -> Option<RecvLeftover> {
        let l = self.leftover.borrow();
        let l = l.as_ref()?;
        let busy = {
            let b = l.borrow();
            !b.items.is_empty() || b.in_flight > 0
        };
        busy.then(|| l.clone())
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd()
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.owned().as_fd()
    }
}

/// The read half of [`UnixStream::into_split`].
#[derive(Debug)]
pub struct UnixReadHalf {
    s: Rc<UnixStream>,
}

impl UnixReadHalf {
    /// See [`UnixStream::read`].
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.s.read(buf)
    }

    /// See [`UnixStream::readv`].
    pub fn readv<B: IoBufMut>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        self.s.readv(bufs)
    }

    /// See [`UnixStream::recv_with_fds`].
    pub fn recv_with_fds<B: IoBufMut>(
        &self,
        buf: B,
        max_fds: usize,
    ) -> impl Cancellable<Output = BufResult<(usize, Vec<OwnedFd>), B>> + '_ {
        self.s.recv_with_fds(buf, max_fds)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<UnixSocketAddr> {
        self.s.peer_addr()
    }
}

/// The write half of [`UnixStream::into_split`]. Dropping it does not shut
/// the socket down; call [`shutdown`](Self::shutdown) for the peer to see
/// end of stream.
#[derive(Debug)]
pub struct UnixWriteHalf {
    s: Rc<UnixStream>,
}

impl UnixWriteHalf {
    /// See [`UnixStream::write`].
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.s.write(buf)
    }

    /// See [`UnixStream::write_all`].
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        self.s.write_all(buf).await
    }

    /// See [`UnixStream::writev`].
    pub fn writev<B: IoBuf>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        self.s.writev(bufs)
    }

    /// See [`UnixStream::send_with_fds`].
    pub fn send_with_fds<B: IoBuf>(
        &self,
        buf: B,
        fds: &[BorrowedFd<'_>],
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.s.send_with_fds(buf, fds)
    }

    /// Shuts down the write side: the peer reads end of stream.
    pub fn shutdown(&self) -> io::Result<()> {
        self.s.shutdown(Shutdown::Write)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<UnixSocketAddr> {
        self.s.peer_addr()
    }
}
