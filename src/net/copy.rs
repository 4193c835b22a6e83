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
//! ## Buffered on io_uring: reads from the loop's buffer ring
//! Where the kernel has provided-buffer rings and multishot receive
//! (6.0), a buffered direction starts with one multishot `RECV` from the
//! loop's shared buffer ring (the one `recv_multishot` uses) instead of a
//! `RECV` SQE per read into its own buffer, and sends each chunk straight
//! from its ring buffer, which goes back to the ring when the send
//! completes: one SQE per message instead of two, no poll re-armed per
//! read. While a send is in flight it takes what the source sends next
//! (at most `MAX_HELD` chunks held). A chunk that fills its ring buffer
//! (large reads) or a source that outruns its destination (`MAX_HELD`
//! chunks held) ends this for the direction: the receive is cancelled,
//! what it still had goes to the source's leftover (copied out, so the
//! ring buffers go back at once), and the direction goes on with its own
//! 64 KiB buffer, as on epoll. So the shared ring holds at most a few
//! buffers per direction, and bulk transfers keep the 64 KiB reads.
//!
//! ## Dropped mid-transfer: what "handed back" means
//! Each direction holds, at any moment, the bytes it has read from its
//! source and not yet written: in its buffer or ring chunks (buffered)
//! or its pipe (spliced), possibly inside an op the kernel still has. When the copy
//! is dropped, those bytes are put back in front of the source socket's
//! receive queue *in user space* (the socket's leftover, the same place
//! a dropped `recv_multishot` leaves chunks): the source's next `read` or
//! `readv` returns them first, in order, before anything still in the
//! kernel. Ops the kernel still has are cancelled; the source's readers
//! wait for their final completions, so a write that completed anyway
//! takes its bytes out of what is handed back, and a read that completed
//! anyway adds its bytes after them. Until a write or pipe still in the
//! kernel has handed its bytes back, readers of the source take nothing
//! from the leftover (what it holds comes after them). Pipes are closed
//! once the last op using them has completed.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use super::{TcpStream, UnixStream};
use crate::driver::bufring::{RecvItem, RecvLeftover, RingEntry};
use crate::driver::op::Op;
use crate::driver::op::recv::RecvChunks;
use crate::driver::op::splice::{
    CopyRead, CopyWrite, CopyWriteRing, HandBack, Pipe, Ready, Splice,
};

/// Bytes one read (or splice) asks for.
const CHUNK: usize = 64 * 1024;
/// A direction reading from the loop's buffer ring that holds this many
/// received chunks not yet written (its source outruns its destination)
/// goes over to an owned buffer.
const MAX_HELD: usize = 2;

/// How [`copy_bidirectional`] moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CopyMode {
    /// [`Buffered`](CopyMode::Buffered) on both backends. Measured
    /// (`cargo bench --bench proxy`, README): through loopback, splicing
    /// loses throughput at every size — at 1 KiB a pipe round trip costs
    /// more than copying the bytes, and at 64 KiB the receiving side
    /// pays more per message than the copies splice saves — and on
    /// io_uring a splice SQE always runs on an io-wq worker thread (see
    /// uring-sys-notes/splice.md). Choose `Splice` to take the copies
    /// off the proxy's CPU when that CPU, not the peers', is the limit.
    #[default]
    Auto,
    /// Always through pipes with `splice`.
    Splice,
    /// Copied through user space: an owned 64 KiB buffer per direction;
    /// on io_uring with provided-buffer rings and multishot receive,
    /// small reads come from the loop's shared buffer ring and are sent
    /// straight from it until a direction's reads fill a ring buffer
    /// (then its own 64 KiB buffer; see the module source).
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
    /// Made at the first poll (how bytes move depends on the backend).
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
            let driver = crate::driver::current()
                .expect("copy_bidirectional polled outside a running uringio loop");
            let splice = this.mode == CopyMode::Splice;
            // Buffered on io_uring: small reads from the loop's kernel
            // buffer ring (multishot receive), where the kernel has both.
            let group = (!splice && driver.is_uring() && driver.features.recv_multishot)
                .then(|| crate::driver::bufring::default_group(&driver).ok())
                .flatten()
                .filter(|g| g.is_kernel());
            this.dirs = Some([
                Dir::new(this.a, this.b, splice, group.clone()),
                Dir::new(this.b, this.a, splice, group),
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
    WriteRing(Op<CopyWriteRing>),
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
    /// Buffered on io_uring: the multishot receive from the loop's
    /// buffer ring while this direction reads from it.
    chunks: Option<RecvChunks>,
    /// Chunks received from the ring and not yet written, in order,
    /// before `buf` (the one being written is in the step).
    held: VecDeque<RingEntry>,
    /// What the receive stream said after the chunks in `held`: end of
    /// stream (`None`) or an error.
    held_end: Option<Option<io::Error>>,
    /// The ring receive was given up: chunks it left in the source's
    /// leftover are copied out so their buffers go back to the ring.
    unpin: bool,
    step: Step,
    count: u64,
    done: bool,
}

impl Dir {
    fn new(
        src: Side<'_>,
        dst: Side<'_>,
        splice: bool,
        group: Option<Rc<crate::driver::bufring::BufGroup>>,
    ) -> Dir {
        let leftover = src.leftover();
        Dir {
            chunks: group.map(|g| RecvChunks::new(src.fd(), g, None)),
            held: VecDeque::new(),
            held_end: None,
            unpin: false,
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
        let front = if l.front_pending > 0 {
            // A dropped copy's write will put bytes before these.
            None
        } else {
            l.items.front_mut()
        };
        match front {
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

    /// Gives the ring receive up: what it still had goes to the source's
    /// leftover (taken next, after the chunks held here), and chunks
    /// there are copied out of their ring buffers.
    fn stop_ring(&mut self) {
        if let Some(mut rx) = self.chunks.take() {
            let leftover = self.leftover.clone();
            rx.abandon(move || leftover);
            self.unpin = true;
            self.unpin_leftover();
        }
    }

    /// See [`Dir::unpin`].
    fn unpin_leftover(&mut self) {
        let mut l = self.leftover.borrow_mut();
        for item in l.items.iter_mut() {
            if let RecvItem::Data(e) = item {
                *item = RecvItem::Bytes(e.as_slice().to_vec());
            }
        }
        if l.in_flight == 0 {
            self.unpin = false;
        }
    }

    /// Takes a chunk from the ring receive into `held`: `Ready(true)` if
    /// it did, `Ready(false)` at its end or error (kept in `held_end`).
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(rx) = self.chunks.as_mut() else {
            return Poll::Ready(false);
        };
        match ready!(rx.poll_next(cx)) {
            Some(Ok(e)) => {
                let full = e.as_slice().len() >= rx.group().size();
                self.held.push_back(e);
                if full || self.held.len() >= MAX_HELD {
                    // Large reads, or a source outrunning its
                    // destination: an owned 64 KiB buffer from here on.
                    self.stop_ring();
                }
                Poll::Ready(true)
            }
            end => {
                self.held_end = Some(end.and_then(|r| r.err()));
                self.chunks = None;
                Poll::Ready(false)
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unpin {
            self.unpin_leftover();
        }
        loop {
            match &mut self.step {
                Step::Idle => {
                    if let Some(e) = self.held.pop_front() {
                        self.step = Step::WriteRing(Op::new(CopyWriteRing::new(
                            self.dst,
                            e,
                            self.hb.clone(),
                        )));
                        continue;
                    }
                    if self.buf.as_ref().is_some_and(|b| b.len() > self.pos) {
                        self.start_write();
                        continue;
                    }
                    if self.in_pipe > 0 {
                        self.start_out();
                        continue;
                    }
                    match self.held_end.take() {
                        Some(None) => return Poll::Ready(self.eof()),
                        Some(Some(e)) => return Poll::Ready(Err(e)),
                        None => {}
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
                    } else if self.chunks.is_some() {
                        ready!(self.poll_chunk(cx));
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
                Step::WriteRing(op) => {
                    let Poll::Ready((res, mut e)) = Pin::new(op).poll(cx) else {
                        // Meanwhile, take what the source sends (a few
                        // chunks at most, see `poll_chunk`).
                        while self.held.len() < MAX_HELD
                            && self.held_end.is_none()
                            && self.poll_chunk(cx) == Poll::Ready(true)
                        {}
                        return Poll::Pending;
                    };
                    self.step = Step::Idle;
                    let r = match res {
                        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            e.consume(n);
                            self.count += n as u64;
                            Ok(())
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                        Err(e) => Err(e),
                    };
                    if !e.as_slice().is_empty() {
                        // Written first (or handed back first).
                        self.held.push_front(e);
                    }
                    r?;
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
        match self.step {
            Step::Read(_) => self.hb.arm(),
            Step::Write(_) | Step::WriteRing(_) => self.hb.arm_front(),
            _ => {}
        }
        if let Some(t) = self.pipe.as_ref().and_then(|p| p.token()) {
            t.arm_front();
        }
        // What the ring receive still has goes after everything else.
        if let Some(mut rx) = self.chunks.take() {
            let leftover = self.leftover.clone();
            rx.abandon(move || leftover);
        }
        if let Some(end) = self.held_end.take() {
            self.leftover.borrow_mut().items.push_front(match end {
                None => RecvItem::Eof,
                Some(e) => RecvItem::Err(e),
            });
        }
        // Bytes read and not written that no op has: the held chunks
        // come before the buffer, the op's bytes (handed back when it
        // is dropped, after this) before both.
        let mut waker = None;
        if let Some(buf) = self.buf.take() {
            if buf.len() > self.pos {
                let rest = buf[self.pos..].to_vec();
                waker = crate::driver::bufring::hand_back(&self.leftover, rest, true);
            }
        }
        while let Some(e) = self.held.pop_back() {
            let bytes = e.as_slice().to_vec();
            drop(e);
            waker = crate::driver::bufring::hand_back(&self.leftover, bytes, true).or(waker);
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}
