//! TCP: listener (with multishot accept on io_uring) and stream.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::recv::{ReadFirst, RecvMulti};
use super::{Socket, ToSocketAddrs as ConnectAddrs, each_addr, resolve, resolve_async};
use crate::BufResult;
use crate::buf::{self, BufRing, IoBuf, IoBufMut};
use crate::driver::Cancellable;
use crate::driver::bufring::RecvLeftover;
use crate::driver::op::net as ops;
use crate::driver::op::{AcceptMulti, Op};
use crate::driver::uring::FdBacklog;

const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));
use crate::runtime::context;

fn domain(a: &SocketAddr) -> i32 {
    if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A TCP listening socket.
pub struct TcpListener {
    sock: Socket,
    /// Connections a dropped multishot accept had already taken from the
    /// kernel: the next `accept`/`incoming` hands them out first.
    backlog: FdBacklog,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.sock.fd())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    fn bind_with(addr: impl ToSocketAddrs, reuseport: bool) -> io::Result<TcpListener> {
        let addrs = resolve(addr)?;
        each_addr(&addrs, |a| {
            let fd = ops::socket(domain(a), libc::SOCK_STREAM)?;
            let raw = fd.as_raw_fd();
            ops::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            if reuseport {
                ops::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
            }
            ops::bind(raw, a)?;
            ops::listen(raw, 1024)?;
            Ok(TcpListener {
                sock: Socket::new(fd),
                backlog: FdBacklog::default(),
            })
        })
    }

    /// Binds and listens on one address with the given options (for the
    /// transport layer's servers). IPv6 sockets are `IPV6_V6ONLY`, so a
    /// server can listen on `::` and `0.0.0.0` at once, as asyncio's do.
    pub(crate) fn bind_opts(
        a: &SocketAddr,
        reuse_port: bool,
        backlog: i32,
    ) -> io::Result<TcpListener> {
        let fd = ops::socket(domain(a), libc::SOCK_STREAM)?;
        let raw = fd.as_raw_fd();
        ops::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if reuse_port {
            ops::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        if a.is_ipv6() {
            ops::setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        ops::bind(raw, a)?;
        ops::listen(raw, backlog)?;
        Ok(TcpListener {
            sock: Socket::new(fd),
            backlog: FdBacklog::default(),
        })
    }

    /// Binds and listens on `addr` (`SO_REUSEADDR` set, backlog 1024).
    ///
    /// `bind` is not async: a host name in `addr` is resolved right here
    /// with `getaddrinfo`, blocking the thread (instant for `"localhost"`
    /// and numeric addresses). To bind to a name that needs DNS, resolve
    /// it first with [`EventLoop::getaddrinfo`](crate::EventLoop::getaddrinfo).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Self::bind_with(addr, false)
    }

    /// Like [`bind`](Self::bind) with `SO_REUSEPORT`, so several loops (one
    /// per core) can each listen on the same port and the kernel spreads
    /// connections between them.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Self::bind_with(addr, true)
    }

    /// Takes over a std listener (made non-blocking).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener {
            sock: Socket::new(OwnedFd::from(l)),
            backlog: FdBacklog::default(),
        })
    }

    /// Waits for a connection.
    ///
    /// Errors come back as they happen, as from `accept(2)`. Out of
    /// descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) the
    /// next call fails at once too, until something is freed: a server
    /// loop should pause before retrying (asyncio's servers wait 1 s;
    /// `examples/echo_server.rs` waits 100 ms) rather than spin.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        if let Some(s) = self.take_backlog() {
            let addr = s.peer_addr().unwrap_or(UNSPECIFIED);
            return Ok((s, addr));
        }
        let (fd, addr) = Op::new(ops::Accept::new(self.sock.fd())).await?;
        Ok((TcpStream::from_fd(fd), addr.as_inet()?))
    }

    /// A connection a dropped [`Incoming`] had already accepted.
    fn take_backlog(&self) -> Option<TcpStream> {
        let fd = self.backlog.borrow_mut().pop_front()?;
        Some(TcpStream::from_fd(fd))
    }

    /// The connections, as a stream. On io_uring with multishot accept
    /// (5.19+) one SQE serves every connection; elsewhere it accepts in a
    /// loop. Dropping the stream cancels the accept; connections the kernel
    /// had already accepted for it are kept for the next `accept()` or
    /// `incoming()` on this listener (closed only with the listener), so
    /// no connection is lost on either backend. Errors are yielded and the stream goes
    /// on; see [`accept`](Self::accept) for the ones that repeat until
    /// descriptors are freed.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            listener: self,
            multi: None,
            single: None,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        ops::sock_name(self.sock.fd(), false)
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.owned().as_fd()
    }
}

type AcceptFuture<'a> = Pin<Box<dyn Future<Output = io::Result<(TcpStream, SocketAddr)>> + 'a>>;

/// The stream of [`TcpListener::incoming`].
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    multi: Option<AcceptMulti>,
    single: Option<AcceptFuture<'a>>,
}

impl std::fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("multishot", &self.multi.is_some())
            .finish()
    }
}

impl futures_core::Stream for Incoming<'_> {
    type Item = io::Result<TcpStream>;

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
            return m.poll_next(cx).map(|r| Some(r.map(TcpStream::from_fd)));
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

/// A TCP connection.
pub struct TcpStream {
    sock: Socket,
    /// What dropped receive streams left (see [`TcpStream::recv_multishot`]);
    /// made by the first one.
    leftover: std::cell::RefCell<Option<RecvLeftover>>,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.sock.fd())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

impl TcpStream {
    pub(crate) fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream {
            sock: Socket::new(fd),
            leftover: Default::default(),
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.sock.fd()
    }

    /// The socket's leftover queue, made on first use.
    pub(crate) fn leftover(&self) -> RecvLeftover {
        self.leftover
            .borrow_mut()
            .get_or_insert_with(Default::default)
            .clone()
    }

    /// The leftover queue, if the socket has one (no allocation).
    pub(crate) fn existing_leftover(&self) -> Option<RecvLeftover> {
        self.leftover.borrow().clone()
    }

    /// The leftover queue if a read must look at it first.
    pub(crate) fn pending_leftover(&self) -> Option<RecvLeftover> {
        let l = self.leftover.borrow();
        let l = l.as_ref()?;
        let busy = {
            let b = l.borrow();
            !b.items.is_empty() || b.in_flight > 0
        };
        busy.then(|| l.clone())
    }

    /// [`read`](Self::read) as its op type, without the bytes a dropped
    /// `recv_multishot` left (the transport layer never mixes the two).
    pub(crate) fn read_op<B: IoBufMut>(&self, buf: B) -> Op<ops::Read<B>> {
        let fixed = self.sock.fixed();
        Op::new(
            ops::Read::new(self.sock.fd(), buf, None, true)
                .stream()
                .fixed(fixed),
        )
    }

    fn readv_op<B: IoBufMut>(&self, bufs: Vec<B>) -> Op<ops::ReadV<B>> {
        Op::new(ops::ReadV::new(self.sock.fd(), bufs, None, true))
    }

    /// Receives into `ring`'s buffers: a stream of [`Chunk`](buf::Chunk)s
    /// of received bytes, in order, that ends at the end of the stream.
    ///
    /// On io_uring (6.0+, with a kernel [`BufRing`]) one multishot
    /// receive serves every chunk: the kernel picks a buffer as bytes
    /// arrive, so a waiting stream holds no buffer. Elsewhere each chunk
    /// is a plain receive into a free buffer once the socket is readable.
    /// When the ring is empty the stream waits for a chunk to be dropped;
    /// nothing is lost and order is kept.
    ///
    /// Dropping the stream cancels the receive. Chunks it had already
    /// received (or that arrive before the cancellation lands) are kept
    /// with the socket, and the next [`read`](Self::read),
    /// [`readv`](Self::readv) or `recv_multishot` returns them first: no
    /// byte is lost. Do not read the socket another way while a stream
    /// is alive: the two would share the bytes in no defined order.
    ///
    /// The stream yields an `InvalidInput` error if `ring` belongs to
    /// another loop's io_uring.
    pub fn recv_multishot(&self, ring: &BufRing) -> RecvMulti<'_> {
        RecvMulti::new(self, ring)
    }

    /// [`recv_multishot`](Self::recv_multishot) without the borrow, for
    /// transports that keep the stream next to the socket: the stream
    /// holds the socket.
    pub(crate) fn recv_multishot_shared(this: &Rc<Self>, ring: &BufRing) -> RecvMulti<'static> {
        RecvMulti::new_shared(this, ring)
    }

    /// Takes over a connected std stream (made non-blocking).
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(true)?;
        Ok(TcpStream::from_fd(OwnedFd::from(s)))
    }

    /// Connects to `addr`, trying each resolved address in turn.
    ///
    /// A numeric address (`SocketAddr`, `"1.2.3.4:80"`, `"[::1]:80"`,
    /// `(IpAddr, u16)`, `("10.0.0.1", 80)`) is parsed in place; a host name
    /// (`"localhost:80"`, `("example.com", 443)`) is looked up with
    /// `getaddrinfo` on the loop's blocking pool, so a slow lookup never
    /// stalls the loop. See [`ToSocketAddrs`](super::ToSocketAddrs).
    pub async fn connect(addr: impl ConnectAddrs) -> io::Result<TcpStream> {
        let addrs = resolve_async(&addr).await?;
        let mut last = None;
        for a in &addrs {
            match Self::connect_one(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
    }

    async fn connect_one(a: &SocketAddr) -> io::Result<TcpStream> {
        let fd = ops::socket(domain(a), libc::SOCK_STREAM)?;
        let s = TcpStream::from_fd(fd);
        Op::new(ops::Connect::new(s.sock.fd(), ops::RawAddr::from_inet(a))).await?;
        Ok(s)
    }

    /// Reads into `buf`'s spare capacity; `Ok(0)` at end of stream.
    /// Bytes a dropped [`recv_multishot`](Self::recv_multishot) stream
    /// left come first.
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        ReadFirst::new(self, buf, buf::fill_from, Self::read_op)
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
        if self.pending_leftover().is_some() {
            // Bytes a dropped receive stream left are there already.
            return self.read(buf).await;
        }
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

    /// Sends `buf`'s initialised bytes (maybe not all of them) without
    /// copying them into the kernel: `IORING_OP_SEND_ZC` (6.0), where the
    /// network stack reads the buffer in place.
    ///
    /// The future resolves only once the kernel is done with the buffer
    /// (its notification completion, `IORING_CQE_F_NOTIF`, has come), so
    /// the buffer handed back may be reused at once. Dropping the future
    /// keeps the buffer in the driver until that notification. Where the
    /// kernel lacks `SEND_ZC`, and on epoll, this is a plain
    /// [`write`](Self::write) with the same results. Zero-copy pays off
    /// for large sends to a real NIC; on loopback the kernel copies
    /// anyway (see uring-sys-notes/send-zc.md).
    pub fn send_zc<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        crate::driver::op::splice::SendZc::new(self.sock.fd(), buf)
    }

    /// Reads into several buffers' spare capacity, in order. Bytes a
    /// dropped [`recv_multishot`](Self::recv_multishot) stream left come
    /// first.
    pub fn readv<B: IoBufMut>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        ReadFirst::new(
            self,
            bufs,
            |v: &mut Vec<B>, s| fill_vec(v, s),
            Self::readv_op,
        )
    }

    /// Writes several buffers in order, in one system call or SQE.
    pub fn writev<B: IoBuf>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        self.writev_op(bufs)
    }

    /// Shuts down the read side, the write side or both.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        ops::shutdown(self.sock.fd(), how)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        ops::setsockopt_int(
            self.sock.fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(on),
        )
    }

    /// Reads `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        ops::getsockopt_int(self.sock.fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).map(|v| v != 0)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        ops::sock_name(self.sock.fd(), true)
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        ops::sock_name(self.sock.fd(), false)
    }

    /// Splits into a read half and a write half that can live in different
    /// tasks. The socket closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let s = Rc::new(self);
        (OwnedReadHalf { s: s.clone() }, OwnedWriteHalf { s })
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.owned().as_fd()
    }
}

/// The read half of [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    s: Rc<TcpStream>,
}

impl OwnedReadHalf {
    /// See [`TcpStream::read`].
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.s.read(buf)
    }

    /// See [`TcpStream::readv`].
    pub fn readv<B: IoBufMut>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        self.s.readv(bufs)
    }

    /// See [`TcpStream::read_timeout`].
    pub async fn read_timeout<B: IoBufMut>(
        &self,
        buf: B,
        timeout: std::time::Duration,
    ) -> BufResult<usize, B> {
        self.s.read_timeout(buf, timeout).await
    }

    /// See [`TcpStream::recv_multishot`].
    pub fn recv_multishot(&self, ring: &BufRing) -> RecvMulti<'_> {
        self.s.recv_multishot(ring)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.peer_addr()
    }
}

/// The write half of [`TcpStream::into_split`]. Dropping it does not shut
/// the socket down; call [`shutdown`](Self::shutdown) to send FIN.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    s: Rc<TcpStream>,
}

impl OwnedWriteHalf {
    /// See [`TcpStream::write`].
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        self.s.write(buf)
    }

    /// See [`TcpStream::write_all`].
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        self.s.write_all(buf).await
    }

    /// See [`TcpStream::writev`].
    pub fn writev<B: IoBuf>(
        &self,
        bufs: Vec<B>,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        self.s.writev(bufs)
    }

    /// Shuts down the write side (sends FIN).
    pub fn shutdown(&self) -> io::Result<()> {
        self.s.shutdown(std::net::Shutdown::Write)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.s.peer_addr()
    }
}

/// Copies `src` into the buffers' spare capacity, in order.
pub(crate) fn fill_vec<B: IoBufMut>(bufs: &mut [B], src: &[u8]) -> io::Result<usize> {
    let mut n = 0;
    for b in bufs.iter_mut() {
        if n == src.len() {
            break;
        }
        if b.bytes_total() > b.bytes_init() {
            n += buf::fill_from(b, &src[n..])?;
        }
    }
    if n == 0 && !src.is_empty() {
        return Err(crate::driver::op::rw::no_spare_capacity());
    }
    Ok(n)
}
