//! [`copy_bidirectional`]: relaying two stream connections (TCP or Unix,
//! in any mix), for proxies.
//!
//! ## One direction's state machine
//! ```text
//!            ┌──────────── buffered ─────────────┐
//!  Idle ──▶ Read(recv into buf) ──n──▶ Write(buf[pos..]) ──all sent──▶ Idle
//!    │                 └──0──▶ EOF: shutdown(dst, Write), done
//!    │       ┌──────────── spliced ──────────────┐
//!    └──▶ WaitIn(src readable) ──▶ In(src → pipe) ──n──▶ Out(pipe → dst) ──empty──▶ Idle
//!                                        │ EAGAIN ↑            │ EAGAIN
//!                                        └▶ WaitIn              └▶ WaitOut(dst writable) ──▶ Out
//! ```
//! Bytes that a dropped copy left in the source socket's leftover (or
//! that another dropped copy handed back) are taken first, and written
//! with the buffered path.
//!
//! ## Dropped mid-transfer: what "handed back" means
//! Each direction holds, at any moment, the bytes it has read from its
//! source and not yet written: in its buffer (buffered) or its pipe
//! (spliced), possibly inside an op the kernel still has. When the copy
//! is dropped, those bytes are put back in front of the source socket's
//! receive queue *in user space* (the socket's leftover, the same place
//! a dropped `recv_multishot` leaves chunks): the source's next `read` or
//! `readv` returns them first, in order, before anything still in the
//! kernel. Ops the kernel still has are cancelled; the source's readers
//! wait for their final completions, so a write that completed anyway
//! takes its bytes out of what is handed back, and a read that completed
//! anyway adds its bytes after them. Pipes are closed once the last op
//! using them has completed.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use super::{TcpStream, UnixStream};
use crate::driver::bufring::{RecvItem, RecvLeftover};
use crate::driver::op::Op;
use crate::driver::op::splice::{CopyRead, CopyWrite, HandBack, Pipe, Ready, Splice};

/// Bytes one read (or splice) asks for.
const CHUNK: usize = 64 * 1024;

/// How [`copy_bidirectional`] moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CopyMode {
    /// Spliced through a pipe per direction on epoll (`splice(2)` on
    /// readiness costs no more system calls than a copy, and no copy);
    /// owned-buffer copies on io_uring, where a splice SQE always runs
    /// on an io-wq worker thread (see uring-sys-notes/splice.md).
    #[default]
    Auto,
    /// Always through pipes with `splice`.
    Splice,
    /// Always through an owned 64 KiB buffer per direction.
    Buffered,
}

/// A stream [`copy_bidirectional`] can relay: [`TcpStream`] and
/// [`UnixStream`] (or an `Rc` or reference of one). Sealed.
pub trait CopyStream: sealed::Sealed {}

impl CopyStream for TcpStream {}
impl CopyStream for UnixStream {}
impl<T: CopyStream + ?Sized> CopyStream for Rc<T> {}
impl<T: CopyStream + ?Sized> CopyStream for &T {}

mod sealed {
    use super::{TcpStream, UnixStream};

    /// Which kind of stream a side of a copy is.
    #[derive(Clone, Copy)]
    pub enum Side<'a> {
        Tcp(&'a TcpStream),
        Unix(&'a UnixStream),
    }

    pub trait Sealed {
        fn side(&self) -> Side<'_>;
    }

    impl Sealed for TcpStream {
        fn side(&self) -> Side<'_> {
            Side::Tcp(self)
        }
    }

    impl Sealed for UnixStream {
        fn side(&self) -> Side<'_> {
            Side::Unix(self)
        }
    }

    impl<T: Sealed + ?Sized> Sealed for std::rc::Rc<T> {
        fn side(&self) -> Side<'_> {
            (**self).side()
        }
    }

    impl<T: Sealed + ?Sized> Sealed for &T {
        fn side(&self) -> Side<'_> {
            (**self).side()
        }
    }
}

use sealed::Side;

impl Side<'_> {
    fn fd(self) -> RawFd {
        match self {
            Side::Tcp(s) => s.as_raw_fd(),
            Side::Unix(s) => s.as_raw_fd(),
        }
    }

    fn leftover(self) -> RecvLeftover {
        match self {
            Side::Tcp(s) => s.leftover(),
            Side::Unix(s) => s.leftover(),
        }
    }
}

/// Relays `a` and `b` both ways until both directions have reached end
/// of stream, then returns the bytes moved `(a → b, b → a)`. Each side
/// is a [`TcpStream`] or a [`UnixStream`] (a TCP front to a Unix-socket
/// upstream is a usual proxy).
///
/// Half-close is propagated: when one side's read reaches end of stream,
/// the other side's write half is shut down (`shutdown(SHUT_WR)`, a FIN)
/// and the opposite direction goes on until it ends too. The first error
/// (a reset, a refused write) ends the copy with that error.
///
/// How bytes move is chosen by [`CopyBidirectional::mode`] (default
/// [`CopyMode::Auto`]). The result is the same on both backends.
///
/// **Cancellation-safe.** Dropping the future (or returning an error)
/// loses no byte already read from either socket: bytes read but not
/// yet written are *handed back*, that is put back at the front of the
/// source socket's receive queue in user space, so the source's next
/// [`read`](TcpStream::read) or [`readv`](TcpStream::readv) returns them
/// first (a `recv_multishot` on that socket yields an `InvalidData` error
/// until they are read that way; a Unix socket's `recv_with_fds` does
/// not see them: read them with `read` first). Ops the kernel still has are
/// cancelled and accounted for when their completions arrive (a read of
/// the source waits for them). No pipe descriptor outlives its last op.
/// See the module source for the state machine.
pub fn copy_bidirectional<'a, A: CopyStream, B: CopyStream>(
    a: &'a A,
    b: &'a B,
) -> CopyBidirectional<'a> {
    CopyBidirectional {
        a: a.side(),
        b: b.side(),
        mode: CopyMode::Auto,
        dirs: None,
    }
}

/// The future of [`copy_bidirectional`].
pub struct CopyBidirectional<'a> {
    a: Side<'a>,
    b: Side<'a>,
    mode: CopyMode,
    /// Made at the first poll (the mode depends on the backend).
    dirs: Option<[Dir; 2]>,
}

impl std::fmt::Debug for CopyBidirectional<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = self.dirs.as_ref().map(|d| (d[0].count, d[1].count));
        f.debug_struct("CopyBidirectional")
            .field("mode", &self.mode)
            .field("counts", &counts)
            .finish()
    }
}

impl CopyBidirectional<'_> {
    /// Chooses how bytes move (before the first poll).
    pub fn mode(mut self, mode: CopyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Bytes moved so far `(a → b, b → a)`.
    pub fn counts(&self) -> (u64, u64) {
        self.dirs
            .as_ref()
            .map_or((0, 0), |d| (d[0].count, d[1].count))
    }
}

impl Future for CopyBidirectional<'_> {
    type Output = io::Result<(u64, u64)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.dirs.is_none() {
            let uring = crate::driver::with_current(|d| d.is_uring())
                .expect("copy_bidirectional polled outside a running uringio loop");
            let splice = match this.mode {
                CopyMode::Splice => true,
                CopyMode::Buffered => false,
                CopyMode::Auto => !uring,
            };
            this.dirs = Some([
                Dir::new(this.a, this.b, splice),
                Dir::new(this.b, this.a, splice),
            ]);
        }
        let dirs = this.dirs.as_mut().expect("made above");
        let mut pending = false;
        for d in dirs.iter_mut() {
            if d.done {
                continue;
            }
            match d.poll(cx) {
                Poll::Ready(Ok(())) => d.done = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(Ok((dirs[0].count, dirs[1].count)))
    }
}

enum Step {
    Idle,
    Read(Op<CopyRead>),
    Write(Op<CopyWrite>),
    WaitIn(Op<Ready>),
    In(Op<Splice>),
    WaitOut(Op<Ready>),
    Out(Op<Splice>),
}

/// One direction, `src` → `dst`.
struct Dir {
    src: RawFd,
    dst: RawFd,
    /// Shuts `dst`'s write side down at the end of `src`.
    dst_sock: RawFd,
    leftover: RecvLeftover,
    /// The token of this direction's buffered ops (one alive at a time).
    hb: HandBack,
    splice: bool,
    pipe: Option<Rc<Pipe>>,
    in_pipe: usize,
    /// The buffer when no op has it; `buf[pos..]` is still to be written.
    buf: Option<Vec<u8>>,
    pos: usize,
    step: Step,
    count: u64,
    done: bool,
}

impl Dir {
    fn new(src: Side<'_>, dst: Side<'_>, splice: bool) -> Dir {
        let leftover = src.leftover();
        Dir {
            src: src.fd(),
            dst: dst.fd(),
            dst_sock: dst.fd(),
            hb: HandBack::new(leftover.clone()),
            leftover,
            splice,
            pipe: None,
            in_pipe: 0,
            buf: None,
            pos: 0,
            step: Step::Idle,
            count: 0,
            done: false,
        }
    }

    fn eof(&mut self) -> io::Result<()> {
        match crate::driver::op::net::shutdown(self.dst_sock, Shutdown::Write) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            r => r,
        }
    }

    fn start_write(&mut self) {
        let buf = self.buf.take().expect("buffer to write");
        self.step = Step::Write(Op::new(CopyWrite::new(
            self.dst,
            buf,
            self.pos,
            self.hb.clone(),
        )));
    }

    /// Takes what the source's leftover holds: `Ready(Some(true))` bytes
    /// (now in `buf`), `Ready(Some(false))` end of stream, `Ready(None)`
    /// nothing; `Pending` while a dropped op may still add to it.
    fn take_leftover(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<bool>>> {
        let mut l = self.leftover.borrow_mut();
        let in_flight = l.in_flight;
        match l.items.front_mut() {
            None if in_flight > 0 => {
                l.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(Ok(None)),
            // Sticky, as on a socket.
            Some(RecvItem::Eof) => Poll::Ready(Ok(Some(false))),
            Some(RecvItem::Bytes(_)) => {
                let Some(RecvItem::Bytes(v)) = l.items.pop_front() else {
                    unreachable!()
                };
                self.buf = Some(v);
                self.pos = 0;
                Poll::Ready(Ok(Some(true)))
            }
            Some(RecvItem::Data(e)) => {
                let v = e.as_slice().to_vec();
                l.items.pop_front();
                self.buf = Some(v);
                self.pos = 0;
                Poll::Ready(Ok(Some(true)))
            }
            Some(RecvItem::Err(_)) => match l.items.pop_front() {
                Some(RecvItem::Err(e)) => Poll::Ready(Err(e)),
                _ => unreachable!(),
            },
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.step {
                Step::Idle => {
                    if self.buf.as_ref().is_some_and(|b| b.len() > self.pos) {
                        self.start_write();
                        continue;
                    }
                    if self.in_pipe > 0 {
                        self.start_out();
                        continue;
                    }
                    match ready!(self.take_leftover(cx))? {
                        Some(true) => continue,
                        Some(false) => return Poll::Ready(self.eof()),
                        None => {}
                    }
                    if self.splice {
                        if self.pipe.is_none() {
                            let hb = HandBack::new(self.leftover.clone());
                            self.pipe = Some(Rc::new(Pipe::new(Some(hb))?));
                        }
                        self.step = Step::WaitIn(Op::new(Ready::new(self.src, false)));
                    } else {
                        let mut buf = self.buf.take().unwrap_or_default();
                        buf.clear();
                        buf.reserve(CHUNK);
                        self.step =
                            Step::Read(Op::new(CopyRead::new(self.src, buf, self.hb.clone())));
                    }
                }
                Step::Read(op) => {
                    let (res, buf) = ready!(Pin::new(op).poll(cx));
                    self.step = Step::Idle;
                    self.buf = Some(buf);
                    self.pos = 0;
                    match res {
                        Ok(0) => return Poll::Ready(self.eof()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Step::Write(op) => {
                    let (res, buf) = ready!(Pin::new(op).poll(cx));
                    self.step = Step::Idle;
                    self.buf = Some(buf);
                    match res {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => {
                            self.pos += n;
                            self.count += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Step::WaitIn(op) => {
                    ready!(Pin::new(op).poll(cx))?;
                    let pipe = self.pipe.clone().expect("pipe");
                    let w = pipe.w.as_raw_fd();
                    self.step =
                        Step::In(Op::new(Splice::new(self.src, w, CHUNK, false).keep(pipe)));
                }
                Step::In(op) => {
                    let res = ready!(Pin::new(op).poll(cx));
                    self.step = Step::Idle;
                    match res {
                        Ok(0) => return Poll::Ready(self.eof()),
                        Ok(n) => self.in_pipe += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) =>
                        {
                            self.step = Step::WaitIn(Op::new(Ready::new(self.src, false)));
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Step::Out(op) => {
                    let res = ready!(Pin::new(op).poll(cx));
                    self.step = Step::Idle;
                    match res {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => {
                            self.in_pipe -= n.min(self.in_pipe);
                            self.count += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.step = Step::WaitOut(Op::new(Ready::new(self.dst, true)));
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Step::WaitOut(op) => {
                    ready!(Pin::new(op).poll(cx))?;
                    self.start_out();
                }
            }
        }
    }

    fn start_out(&mut self) {
        let pipe = self.pipe.clone().expect("pipe with bytes");
        let r = pipe.r.as_raw_fd();
        self.step = Step::Out(Op::new(
            Splice::new(r, self.dst, self.in_pipe, false).keep(pipe),
        ));
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // Steps still alive hand their bytes back when the kernel is done
        // with them (see the module docs); the readers of the source
        // wait for them meanwhile.
        if matches!(self.step, Step::Read(_) | Step::Write(_)) {
            self.hb.arm();
        }
        if let Some(t) = self.pipe.as_ref().and_then(|p| p.token()) {
            t.arm();
        }
        // Bytes read and not written that no op has.
        if let Some(buf) = self.buf.take() {
            if buf.len() > self.pos {
                let rest = buf[self.pos..].to_vec();
                if let Some(w) = crate::driver::bufring::hand_back(&self.leftover, rest, true) {
                    w.wake();
                }
            }
        }
    }
}
