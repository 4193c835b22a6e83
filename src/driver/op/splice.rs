//! Moving bytes for proxies: `splice` through pipes, readiness waits,
//! copy steps that hand unsent bytes back when dropped, and zero-copy
//! send (`IORING_OP_SEND_ZC`).
//!
//! ## Splice
//! [`Splice`] is one `splice(2)` with `SPLICE_F_NONBLOCK` and no offsets
//! (a file's own position moves): `IORING_OP_SPLICE` on io_uring, the
//! system call itself on epoll (at once for pipes and sockets, on the
//! blocking pool for regular files). Both backends hand back `EAGAIN` as
//! `WouldBlock`; the caller waits with [`Ready`] on the side that is not
//! ready and retries. The kernel always runs a splice SQE on an io-wq
//! worker (`REQ_F_FORCE_ASYNC`): see uring-sys-notes/splice.md.
//!
//! ## Hand-back
//! A copy step ([`CopyRead`], [`CopyWrite`], and the [`Pipe`] of a spliced
//! direction) shares a [`HandBack`] token with the copy that made it. When
//! the copy is dropped it *arms* the token of each step still alive (the
//! source socket's leftover then counts one more receive in flight, so
//! its readers wait). An armed step, when its data is finally dropped (at
//! once if the kernel never had it, else after its late CQE, with the
//! driver released), puts the bytes it had read but not written at the
//! front (unsent bytes) or back (a late read) of the source socket's
//! leftover, where the socket's next `read` finds them.
//!
//! ## Zero-copy send
//! [`SendZc`] submits `IORING_OP_SEND_ZC` as a two-CQE request: the first
//! CQE (with `IORING_CQE_F_MORE` when a notification follows) carries the
//! result, the second (`IORING_CQE_F_NOTIF`) says the kernel no longer
//! reads the buffer. The buffer is handed back only after the second. A
//! dropped send keeps the buffer in the driver until the notification.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{cqueue, opcode, squeue, types};

use super::{Mode, Op, OpCode};
use crate::buf::{self, IoBuf};
use crate::driver::bufring::{RecvLeftover, RingEntry, hand_back};
use crate::driver::uring::LateResults;
use crate::driver::{Backends, Driver};

/// The most one splice or zero-copy send asks for.
const MAX_LEN: usize = 0x7fff_f000;

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// What an fd is, for choosing how to wait on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// A pipe or FIFO.
    Pipe,
    /// A regular file (never "ready"; epoll cannot wait on it).
    File,
    /// A socket, terminal or other pollable file.
    Pollable,
}

/// `fstat` on `fd`: what kind of file it is.
pub(crate) fn fd_kind(fd: RawFd) -> io::Result<FdKind> {
    // SAFETY: plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer; a bad fd is an error, not UB.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFREG | libc::S_IFBLK => FdKind::File,
        _ => FdKind::Pollable,
    })
}

/// Whether `fd` is ready for reading (or writing), without waiting.
pub(crate) fn ready_now(fd: RawFd, write: bool) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r != 0
}

/// One `splice(2)` from `fd_in` to `fd_out` (one of them a pipe), without
/// offsets, never blocking on a pipe (`SPLICE_F_NONBLOCK`).
pub(crate) struct Splice {
    fd_in: RawFd,
    fd_out: RawFd,
    len: u32,
    /// Run on the blocking pool on epoll (a regular file is involved).
    blocking: bool,
    /// Kept open until the op's data is dropped (after its CQE).
    _keep: Option<Rc<Pipe>>,
}

impl Splice {
    pub(crate) fn new(fd_in: RawFd, fd_out: RawFd, len: usize, blocking: bool) -> Splice {
        Splice {
            fd_in,
            fd_out,
            len: len.min(MAX_LEN) as u32,
            blocking,
            _keep: None,
        }
    }

    /// The system call, now (where the ring has no `IORING_OP_SPLICE`).
    pub(crate) fn run_now(mut self) -> io::Result<usize> {
        self.perform()
    }

    /// Keeps `pipe` (one of the two fds) alive as long as the op's data.
    pub(crate) fn keep(mut self, pipe: Rc<Pipe>) -> Splice {
        self._keep = Some(pipe);
        self
    }
}

const SPLICE_FLAGS: u32 = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;

impl OpCode for Splice {
    type Output = io::Result<usize>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Splice::new(
            types::Fd(self.fd_in),
            -1,
            types::Fd(self.fd_out),
            -1,
            self.len,
        )
        .flags(SPLICE_FLAGS)
        .build()
    }

    fn mode(&self) -> Mode {
        if self.blocking {
            Mode::Blocking
        } else {
            Mode::Inline
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain fds, null offsets (the fds' own positions).
        cvt(unsafe {
            libc::splice(
                self.fd_in,
                std::ptr::null_mut(),
                self.fd_out,
                std::ptr::null_mut(),
                self.len as usize,
                SPLICE_FLAGS,
            )
        })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res
    }
}

/// Waits until `fd` is readable (or writable): a one-shot
/// `IORING_OP_POLL_ADD` on io_uring, readiness on epoll. Hang-up and
/// errors count as ready.
pub(crate) struct Ready {
    fd: RawFd,
    write: bool,
}

impl Ready {
    pub(crate) fn new(fd: RawFd, write: bool) -> Ready {
        Ready { fd, write }
    }
}

impl OpCode for Ready {
    type Output = io::Result<()>;

    const MOVABLE: bool = true;

    fn sqe(&mut self) -> squeue::Entry {
        let ev = if self.write {
            libc::POLLOUT
        } else {
            libc::POLLIN
        };
        opcode::PollAdd::new(types::Fd(self.fd), ev as u32).build()
    }

    fn mode(&self) -> Mode {
        if self.write {
            Mode::Writable(self.fd)
        } else {
            Mode::Readable(self.fd)
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        if ready_now(self.fd, self.write) {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// A non-blocking, close-on-exec pipe pair that counts as "in flight" on
/// a socket's leftover once armed (see the module docs): dropped armed,
/// it reads what is left in it and hands it back.
pub(crate) struct Pipe {
    pub(crate) r: OwnedFd,
    pub(crate) w: OwnedFd,
    hb: Option<HandBack>,
}

impl Pipe {
    /// A new pipe; with a token, its contents are handed back if armed.
    pub(crate) fn new(hb: Option<HandBack>) -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid out array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 gave us these two new descriptors.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { r, w, hb })
    }

    /// The pipe's token, if its contents are handed back.
    pub(crate) fn token(&self) -> Option<&HandBack> {
        self.hb.as_ref()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let Some(hb) = self.hb.as_ref().filter(|h| h.armed()) else {
            return;
        };
        let mut out = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            // SAFETY: a valid fd and a writable stack buffer.
            let n =
                unsafe { libc::read(self.r.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n as usize]);
        }
        hb.finish(out, true);
    }
}

/// Shared between a copy and the steps it made: when the copy is dropped
/// it arms the token; armed steps hand their bytes back to `leftover`.
#[derive(Clone)]
pub(crate) struct HandBack {
    inner: Rc<HandBackInner>,
}

struct HandBackInner {
    leftover: RecvLeftover,
    armed: Cell<bool>,
    /// Armed for a step that hands back at the front (counted in the
    /// leftover's `front_pending`).
    front: Cell<bool>,
}

impl HandBack {
    pub(crate) fn new(leftover: RecvLeftover) -> HandBack {
        HandBack {
            inner: Rc::new(HandBackInner {
                leftover,
                armed: Cell::new(false),
                front: Cell::new(false),
            }),
        }
    }

    /// The copy that owns the step is going away while the step lives:
    /// readers of the source socket now wait for it.
    pub(crate) fn arm(&self) {
        if !self.inner.armed.replace(true) {
            self.inner.leftover.borrow_mut().in_flight += 1;
        }
    }

    /// As [`arm`](Self::arm), for a step that will hand its bytes back
    /// at the front (a write, a pipe): until it does, readers of the
    /// source take nothing from the leftover (what it holds comes after).
    pub(crate) fn arm_front(&self) {
        if !self.inner.armed.get() {
            self.arm();
            self.inner.front.set(true);
            self.inner.leftover.borrow_mut().front_pending += 1;
        }
    }

    fn armed(&self) -> bool {
        self.inner.armed.get()
    }

    /// Hands `bytes` back (at the front or the back) and stops counting
    /// as in flight.
    fn finish(&self, bytes: Vec<u8>, front: bool) {
        if !self.inner.armed.replace(false) {
            return;
        }
        let w = hand_back(&self.inner.leftover, bytes, front);
        {
            let mut l = self.inner.leftover.borrow_mut();
            l.in_flight = l.in_flight.saturating_sub(1);
            if self.inner.front.replace(false) {
                l.front_pending = l.front_pending.saturating_sub(1);
            }
        }
        let w = w.or_else(|| self.inner.leftover.borrow_mut().waker.take());
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Ends an armed step that had nothing to hand back, but saw the end
    /// of the stream (kept, as a socket keeps it) or an error.
    fn finish_item(&self, item: crate::driver::bufring::RecvItem) {
        if !self.armed() {
            return;
        }
        self.inner.leftover.borrow_mut().items.push_back(item);
        self.finish(Vec::new(), false);
    }
}

/// `recv` into a plain buffer's spare capacity, for a copy: dropped armed
/// with a late result, the bytes it got go to the back of the source's
/// leftover.
pub(crate) struct CopyRead {
    fd: RawFd,
    buf: Vec<u8>,
    hb: HandBack,
    late: Option<i32>,
}

impl CopyRead {
    /// `buf` must be empty with spare capacity.
    pub(crate) fn new(fd: RawFd, buf: Vec<u8>, hb: HandBack) -> CopyRead {
        CopyRead {
            fd,
            buf,
            hb,
            late: None,
        }
    }

    fn spare(&mut self) -> (*mut u8, usize) {
        let len = self.buf.len();
        let cap = self.buf.capacity().min(MAX_LEN);
        // SAFETY: `len <= cap`: the pointer stays in (or one past) the
        // allocation.
        (unsafe { self.buf.as_mut_ptr().add(len) }, cap - len)
    }

    /// The received bytes are now initialised.
    fn advance(&mut self, n: usize) {
        let n = n.min(self.buf.capacity() - self.buf.len());
        // SAFETY: the kernel (or recv) initialised `n` bytes of spare
        // capacity right after the initialised ones.
        unsafe { self.buf.set_len(self.buf.len() + n) };
    }
}

impl OpCode for CopyRead {
    type Output = crate::buf::BufResult<usize, Vec<u8>>;

    // The SQE points at the Vec's heap storage only.
    const MOVABLE: bool = true;

    fn check(&self) -> io::Result<()> {
        if self.buf.capacity() == self.buf.len() {
            return Err(super::rw::no_spare_capacity());
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        let (p, l) = self.spare();
        opcode::Recv::new(types::Fd(self.fd), p, l as u32).build()
    }

    fn mode(&self) -> Mode {
        Mode::Readable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (p, l) = self.spare();
        // SAFETY: spare capacity of our own buffer.
        cvt(unsafe { super::rw::raw_recv(self.fd, p, l) })
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(n) = res {
            self.advance(n);
        }
        (res, std::mem::take(&mut self.buf))
    }

    fn late_result(&mut self, res: i32) {
        self.late = Some(res);
    }
}

impl Drop for CopyRead {
    fn drop(&mut self) {
        if !self.hb.armed() {
            return;
        }
        use crate::driver::bufring::RecvItem;
        match self.late {
            Some(n) if n > 0 => {
                self.advance(n as usize);
                let bytes = std::mem::take(&mut self.buf);
                self.hb.finish(bytes, false);
            }
            Some(0) => self.hb.finish_item(RecvItem::Eof),
            Some(e) if e < 0 && e != -libc::ECANCELED => self
                .hb
                .finish_item(RecvItem::Err(io::Error::from_raw_os_error(-e))),
            _ => self.hb.finish(Vec::new(), false),
        }
    }
}

/// `send` of `buf[pos..]`, for a copy: dropped armed, what it did not
/// send (all of it, unless a late result says otherwise) goes to the
/// front of the source's leftover.
pub(crate) struct CopyWrite {
    fd: RawFd,
    buf: Vec<u8>,
    pos: usize,
    hb: HandBack,
    late: Option<i32>,
}

impl CopyWrite {
    pub(crate) fn new(fd: RawFd, buf: Vec<u8>, pos: usize, hb: HandBack) -> CopyWrite {
        CopyWrite {
            fd,
            buf,
            pos,
            hb,
            late: None,
        }
    }

    fn rest(&self) -> (*const u8, usize) {
        let pos = self.pos.min(self.buf.len());
        (
            self.buf[pos..].as_ptr(),
            (self.buf.len() - pos).min(MAX_LEN),
        )
    }
}

impl OpCode for CopyWrite {
    type Output = crate::buf::BufResult<usize, Vec<u8>>;

    const MOVABLE: bool = true;

    fn sqe(&mut self) -> squeue::Entry {
        let (p, l) = self.rest();
        opcode::Send::new(types::Fd(self.fd), p, l as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Writable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (p, l) = self.rest();
        // SAFETY: initialised bytes of our own buffer.
        cvt(unsafe { super::rw::raw_send(self.fd, p, l) })
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, std::mem::take(&mut self.buf))
    }

    fn late_result(&mut self, res: i32) {
        self.late = Some(res);
    }
}

impl Drop for CopyWrite {
    fn drop(&mut self) {
        if !self.hb.armed() {
            return;
        }
        let sent = self.late.filter(|&n| n > 0).unwrap_or(0) as usize;
        let from = (self.pos + sent).min(self.buf.len());
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.drain(..from);
        self.hb.finish(bytes, true);
    }
}

/// `send` of a ring buffer's unconsumed bytes, for a copy that received
/// them with a multishot receive: the buffer goes back to its ring when
/// the op's data is dropped (after the CQE). Dropped armed, what it did
/// not send goes to the front of the source's leftover, as
/// [`CopyWrite`].
pub(crate) struct CopyWriteRing {
    fd: RawFd,
    entry: Option<RingEntry>,
    hb: HandBack,
    late: Option<i32>,
}

impl CopyWriteRing {
    pub(crate) fn new(fd: RawFd, entry: RingEntry, hb: HandBack) -> CopyWriteRing {
        CopyWriteRing {
            fd,
            entry: Some(entry),
            hb,
            late: None,
        }
    }

    fn rest(&self) -> (*const u8, usize) {
        let s = self.entry.as_ref().map_or(&[][..], |e| e.as_slice());
        (s.as_ptr(), s.len().min(MAX_LEN))
    }
}

impl OpCode for CopyWriteRing {
    type Output = (io::Result<usize>, RingEntry);

    // The SQE points into the group's allocation, which the entry keeps
    // alive (and out of the ring) wherever the op's data moves.
    const MOVABLE: bool = true;

    fn sqe(&mut self) -> squeue::Entry {
        let (p, l) = self.rest();
        opcode::Send::new(types::Fd(self.fd), p, l as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Writable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let (p, l) = self.rest();
        // SAFETY: initialised bytes of a ring buffer this op holds.
        cvt(unsafe { super::rw::raw_send(self.fd, p, l) })
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.entry.take().expect("entry of a send"))
    }

    fn late_result(&mut self, res: i32) {
        self.late = Some(res);
    }
}

impl Drop for CopyWriteRing {
    fn drop(&mut self) {
        let Some(mut e) = self.entry.take() else {
            return;
        };
        if !self.hb.armed() {
            return;
        }
        e.consume(self.late.filter(|&n| n > 0).unwrap_or(0) as usize);
        let bytes = e.as_slice().to_vec();
        // The buffer goes back to its ring before the bytes are handed
        // back (a reader woken by them may want a ring buffer).
        drop(e);
        self.hb.finish(bytes, true);
    }
}

/// `IORING_OP_SEND_ZC` (6.0): resolves with the send's result and the
/// buffer once the notification CQE says the kernel is done with it; a
/// plain send where the kernel or backend lacks it.
pub(crate) struct SendZc<B: IoBuf> {
    fd: RawFd,
    buf: Option<B>,
    state: ZcState<B>,
}

enum ZcState<B: IoBuf> {
    Init,
    /// In the ring: the slot key, its driver, and the first CQE's result
    /// once it came.
    Uring {
        key: usize,
        driver: Rc<Driver>,
        res: Option<i32>,
    },
    Plain(Op<super::rw::Write<B>>),
    Done,
}

impl<B: IoBuf> SendZc<B> {
    pub(crate) fn new(fd: RawFd, buf: B) -> SendZc<B> {
        SendZc {
            fd,
            buf: Some(buf),
            state: ZcState::Init,
        }
    }
}

impl<B: IoBuf> Unpin for SendZc<B> {}

impl<B: IoBuf> std::future::Future for SendZc<B> {
    type Output = crate::buf::BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                ZcState::Done => panic!("send_zc polled after completion"),
                ZcState::Init => {
                    let driver =
                        crate::driver::current().expect("send_zc used outside a uringio loop");
                    let buf = this.buf.take().expect("send_zc buffer");
                    if !(driver.is_uring() && driver.features.send_zc) {
                        this.state = ZcState::Plain(Op::new(super::rw::Write::new(
                            this.fd, buf, None, true,
                        )));
                        continue;
                    }
                    let (p, l) = buf::init(&buf);
                    let sqe = opcode::SendZc::new(types::Fd(this.fd), p, l.min(MAX_LEN) as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build();
                    this.buf = Some(buf);
                    let key = match &mut *driver.inner.borrow_mut() {
                        Backends::Uring(u) => u.submit_multi(sqe, cx.waker(), None),
                        Backends::Epoll(_) => unreachable!("checked is_uring"),
                    };
                    let key = match key {
                        Ok(k) => k,
                        Err(e) => {
                            this.state = ZcState::Done;
                            return Poll::Ready((Err(e), this.buf.take().expect("buffer")));
                        }
                    };
                    this.state = ZcState::Uring {
                        key,
                        driver,
                        res: None,
                    };
                }
                ZcState::Plain(op) => {
                    let out = std::task::ready!(Pin::new(op).poll(cx));
                    this.state = ZcState::Done;
                    return Poll::Ready(out);
                }
                ZcState::Uring { key, driver, res } => {
                    let r = match &mut *driver.inner.borrow_mut() {
                        Backends::Uring(u) => u.poll_multi(*key, cx.waker()),
                        Backends::Epoll(_) => unreachable!("uring op on an epoll driver"),
                    };
                    match r {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some((r, flags))) => {
                            if cqueue::notif(flags) {
                                // The kernel is done with the buffer. The
                                // slot ends with this CQE (no F_MORE).
                                continue;
                            }
                            *res = Some(r);
                            // Without F_MORE no notification follows; the
                            // slot's next poll reports the end.
                            continue;
                        }
                        Poll::Ready(None) => {
                            let r = res.unwrap_or(-libc::EIO);
                            this.state = ZcState::Done;
                            let buf = this.buf.take().expect("buffer");
                            let r = if r < 0 {
                                Err(io::Error::from_raw_os_error(-r))
                            } else {
                                Ok(r as usize)
                            };
                            return Poll::Ready((r, buf));
                        }
                    }
                }
            }
        }
    }
}

impl<B: IoBuf> Drop for SendZc<B> {
    fn drop(&mut self) {
        if let ZcState::Uring { key, driver, .. } =
            std::mem::replace(&mut self.state, ZcState::Done)
        {
            let keep = self
                .buf
                .take()
                .map(|b| Box::new(b) as Box<dyn std::any::Any>);
            let garbage = match &mut *driver.inner.borrow_mut() {
                Backends::Uring(u) => {
                    u.abandon_multi(key, keep, LateResults::Ignore);
                    None
                }
                Backends::Epoll(_) => keep,
            };
            drop(garbage);
        }
    }
}
