//! Linked ops (`IOSQE_IO_LINK`) and submission control.
//!
//! [`Link2`] runs two ops as one chain on io_uring: the second starts only
//! once the first succeeded in full, and gets `ECANCELED` otherwise. Both
//! SQEs are queued together and reach the ring in one piece (the driver
//! makes room for the whole chain before pushing it: an `io_uring_enter`
//! between the two would end the chain early and run the second op
//! unlinked). Each op keeps its own slot and its own boxed data, so a
//! dropped chain is sound the same way a dropped op is: every member still
//! in flight is abandoned (cancelled, data parked in the driver until its
//! CQE), a member not yet submitted is simply taken back.
//!
//! Built on it:
//! - write → fsync ([`write_sync`]): a positioned write and an
//!   `fsync`/`fdatasync` in one submission, both results returned. On epoll
//!   the same pair runs as one blocking-pool job ([`WriteSync`]), with the
//!   same results (a failed or short write cancels the sync).
//! - read → `LINK_TIMEOUT` ([`with_timeout`]): a read with a deadline that
//!   costs no timer of the loop. On epoll a loop timer races the read and
//!   cancels it through a [`Canceller`]; reads on the blocking pool (regular
//!   files) cannot be interrupted and finish normally on both backends.
//!
//! See `uring-sys-notes/linked-ops.md`.

use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::rw::Write;
use super::{Cancellable, Canceller, Mode, Op, OpCode, cvt_res, late_hook};
use crate::buf::{self, BufResult, IoBuf};
use crate::driver::{Backends, Driver};

/// The most one `pwrite` moves (Linux's `MAX_RW_COUNT`).
const MAX_RW: usize = 0x7fff_f000;

/// The results of a finished chain: each op's data and raw result.
pub(crate) struct LinkDone<A, B> {
    pub(crate) a: Box<A>,
    pub(crate) ra: io::Result<usize>,
    pub(crate) fa: u32,
    pub(crate) b: Box<B>,
    pub(crate) rb: io::Result<usize>,
    pub(crate) fb: u32,
}

impl<A: OpCode, B: OpCode> LinkDone<A, B> {
    /// Both ops' outputs.
    pub(crate) fn complete(self) -> (A::Output, B::Output) {
        (
            self.a.complete(self.ra, self.fa),
            self.b.complete(self.rb, self.fb),
        )
    }
}

/// Two ops linked with `IOSQE_IO_LINK` (io_uring only: callers pick an
/// emulation on epoll before building one).
pub(crate) struct Link2<A: OpCode, B: OpCode> {
    a: Option<Box<A>>,
    b: Option<Box<B>>,
    /// The members' slots while their CQEs are outstanding.
    keys: [Option<usize>; 2],
    /// Results that arrived (or were decided without the kernel).
    res: [Option<(io::Result<usize>, u32)>; 2],
    /// The driver the chain was submitted to.
    driver: Option<Rc<Driver>>,
}

impl<A: OpCode, B: OpCode> Link2<A, B> {
    pub(crate) fn new(a: A, b: B) -> Link2<A, B> {
        Link2 {
            a: Some(Box::new(a)),
            b: Some(Box::new(b)),
            keys: [None, None],
            res: [None, None],
            driver: None,
        }
    }

    fn done(&mut self) -> LinkDone<A, B> {
        let [ra, rb] = std::mem::take(&mut self.res);
        let (ra, fa) = ra.expect("first result");
        let (rb, fb) = rb.expect("second result");
        LinkDone {
            a: self.a.take().expect("chain polled after completion"),
            ra,
            fa,
            b: self.b.take().expect("chain polled after completion"),
            rb,
            fb,
        }
    }

    /// First poll: check both ops, then queue the chain.
    fn start(&mut self, driver: &Rc<Driver>, cx: &mut Context<'_>) {
        let a = self.a.as_mut().expect("op data");
        let b = self.b.as_mut().expect("op data");
        // A bad argument fails the chain before it reaches the kernel, as
        // the kernel fails a chain whose member it cannot prepare.
        if let Err(e) = a.check() {
            self.res = [Some((Err(e), 0)), Some((Err(super::ecanceled()), 0))];
            return;
        }
        if let Err(e) = b.check() {
            self.res = [Some((Err(super::ecanceled()), 0)), Some((Err(e), 0))];
            return;
        }
        let mut inner = driver.inner.borrow_mut();
        let Backends::Uring(u) = &mut *inner else {
            let un = || {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "linked ops need the io_uring backend",
                ))
            };
            self.res = [Some((un(), 0)), Some((un(), 0))];
            return;
        };
        a.bind_fixed(driver);
        b.bind_fixed(driver);
        let keys = u.submit_linked([a.sqe(), b.sqe()], cx.waker());
        self.keys = [Some(keys[0]), Some(keys[1])];
    }

    /// Polled on another loop's driver: take the members back from the
    /// old one (cancelled there and waited for if in flight). A member
    /// that did nothing there ends with `ECANCELED`: a chain is never
    /// restarted halfway.
    fn migrate(&mut self, old: &Rc<Driver>) {
        for i in 0..2 {
            if let Some(k) = self.keys[i].take() {
                let r = old.detach_uring(k).unwrap_or((-libc::ECANCELED, 0));
                self.res[i] = Some((cvt_res(r.0), r.1));
            }
        }
    }
}

impl<A: OpCode, B: OpCode> Future for Link2<A, B> {
    type Output = LinkDone<A, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let driver =
            crate::driver::current().expect("uringio I/O used outside a running uringio loop");
        match &this.driver {
            None => {
                this.driver = Some(driver.clone());
                this.start(&driver, cx);
            }
            Some(d) if Rc::ptr_eq(d, &driver) => {}
            Some(d) => {
                let old = d.clone();
                this.driver = Some(driver.clone());
                this.migrate(&old);
            }
        }
        if this.keys.iter().any(Option::is_some) {
            let mut inner = driver.inner.borrow_mut();
            if let Backends::Uring(u) = &mut *inner {
                for i in 0..2 {
                    if let Some(k) = this.keys[i] {
                        if let Poll::Ready((res, flags)) = u.poll_slot(k, cx.waker()) {
                            this.keys[i] = None;
                            this.res[i] = Some((cvt_res(res), flags));
                        }
                    }
                }
            }
        }
        if this.res.iter().all(Option::is_some) {
            Poll::Ready(this.done())
        } else {
            Poll::Pending
        }
    }
}

impl<A: OpCode, B: OpCode> Drop for Link2<A, B> {
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        if self.keys.iter().all(Option::is_none) {
            return;
        }
        {
            let mut inner = driver.inner.borrow_mut();
            if let Backends::Uring(u) = &mut *inner {
                // Head first: a member not submitted yet is taken back with
                // the rest of its chain; submitted ones are cancelled, their
                // data parked until their own CQE.
                if let (Some(k), Some(a)) = (self.keys[0].take(), self.a.take()) {
                    let a: Box<dyn Any> = a;
                    u.abandon(k, a, late_hook::<A>);
                }
                if let (Some(k), Some(b)) = (self.keys[1].take(), self.b.take()) {
                    let b: Box<dyn Any> = b;
                    u.abandon(k, b, late_hook::<B>);
                }
            }
        }
        // Data of members that completed drops after this, with the driver
        // released.
    }
}

/// `IORING_OP_LINK_TIMEOUT`: cancels the op it is linked behind if that
/// has not completed within the duration. io_uring only.
pub(crate) struct LinkTimeout {
    ts: types::Timespec,
}

impl LinkTimeout {
    pub(crate) fn new(d: Duration) -> LinkTimeout {
        LinkTimeout {
            ts: types::Timespec::from(d),
        }
    }
}

impl OpCode for LinkTimeout {
    type Output = io::Result<usize>;

    fn sqe(&mut self) -> squeue::Entry {
        // The kernel reads the timespec when it prepares the SQE; it lives
        // in the boxed op data until the CQE anyway.
        opcode::LinkTimeout::new(&self.ts).build()
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    fn perform(&mut self) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "LINK_TIMEOUT needs the io_uring backend",
        ))
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res
    }
}

/// The error a read that hit its deadline resolves to (both backends).
pub(crate) fn timed_out(d: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("read timed out after {d:?}"),
    )
}

fn is_errno(r: &io::Result<usize>, errno: i32) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(errno))
}

/// Runs read op `op` with a deadline of `d` from now. A read the deadline
/// cut short resolves to a `TimedOut` error (as `asyncio.wait_for` raises
/// `TimeoutError` and tokio's `timeout` gives `Elapsed`), with the buffer;
/// bytes that arrived first win over the deadline. io_uring: the read and
/// a `LINK_TIMEOUT` in one chain, no loop timer. epoll: a loop timer
/// cancels the read through a [`Canceller`] (its one last try still hands
/// over data that arrived). Ops on the blocking pool cannot be
/// interrupted on either backend (a regular file's read runs to the end).
pub(crate) async fn with_timeout<T, Bf>(op: T, d: Duration) -> BufResult<usize, Bf>
where
    T: OpCode<Output = BufResult<usize, Bf>>,
{
    let uring = crate::driver::with_current(|dr| dr.is_uring()).unwrap_or(false);
    if uring {
        let done = Link2::new(op, LinkTimeout::new(d)).await;
        let fired = is_errno(&done.rb, libc::ETIME);
        let cut = is_errno(&done.ra, libc::ECANCELED) || is_errno(&done.ra, libc::EINTR);
        if fired && cut {
            let (out, _) = done.complete();
            return (Err(timed_out(d)), out.1);
        }
        return done.complete().0;
    }
    let c = Canceller::new();
    let mut op = Op::new(op).with_canceller(&c);
    let mut sleep = crate::time::sleep(d);
    let mut fired = false;
    let out = std::future::poll_fn(|cx| {
        if let Poll::Ready(o) = Pin::new(&mut op).poll(cx) {
            return Poll::Ready(o);
        }
        if !fired && Pin::new(&mut sleep).poll(cx).is_ready() {
            fired = true;
            c.cancel();
            return Pin::new(&mut op).poll(cx);
        }
        Poll::Pending
    })
    .await;
    match out {
        (Err(e), b) if fired && e.raw_os_error() == Some(libc::ECANCELED) => (Err(timed_out(d)), b),
        o => o,
    }
}

/// Which sync follows a linked write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// `fdatasync`.
    Data,
    /// `fsync`.
    All,
}

/// The epoll form of write → sync: the write (one `pwrite`, or a loop
/// until all is written) and then the sync, in one blocking-pool job,
/// with both results. A failed write, or (for a single write) a short
/// one, cancels the sync as io_uring's link does.
pub(crate) struct WriteSync<Bf> {
    fd: RawFd,
    buf: Bf,
    ptr: *const u8,
    len: usize,
    pos: u64,
    all: bool,
    kind: SyncKind,
    wres: Option<io::Result<usize>>,
    sres: Option<io::Result<()>>,
}

impl<Bf: IoBuf> WriteSync<Bf> {
    pub(crate) fn new(fd: RawFd, b: Bf, pos: u64, all: bool, kind: SyncKind) -> WriteSync<Bf> {
        let (ptr, len) = buf::init(&b);
        WriteSync {
            fd,
            buf: b,
            ptr,
            len,
            pos,
            all,
            kind,
            wres: None,
            sres: None,
        }
    }
}

/// Output of a write → sync pair: (bytes written, buffer), sync result.
pub(crate) type WriteSyncOut<Bf> = (BufResult<usize, Bf>, io::Result<()>);

impl<Bf: IoBuf> OpCode for WriteSync<Bf> {
    type Output = WriteSyncOut<Bf>;

    fn check(&self) -> io::Result<()> {
        super::rw::check_range(self.pos, self.len as u64)
    }

    fn sqe(&mut self) -> squeue::Entry {
        // Never submitted: io_uring runs the pair as a `Link2`.
        opcode::Nop::new().build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        let mut done = 0usize;
        let wres = loop {
            let want = (self.len - done).min(MAX_RW);
            // SAFETY: ptr..ptr+len are the buffer's initialised bytes,
            // owned by this op while the pool thread runs it.
            let r = unsafe {
                libc::pwrite(
                    self.fd,
                    self.ptr.add(done).cast(),
                    want,
                    (self.pos + done as u64) as libc::off_t,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(e);
            }
            done += r as usize;
            if !self.all || done == self.len {
                break Ok(done);
            }
            if r == 0 {
                break Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file accepted no bytes",
                ));
            }
        };
        let sres = match &wres {
            Ok(n) if *n == self.len => {
                // SAFETY: plain system calls on an fd.
                let r = unsafe {
                    match self.kind {
                        SyncKind::Data => libc::fdatasync(self.fd),
                        SyncKind::All => libc::fsync(self.fd),
                    }
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
            _ => Err(super::ecanceled()),
        };
        self.wres = Some(wres);
        self.sres = Some(sres);
        Ok(0)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        match (res, self.wres, self.sres) {
            (Ok(_), Some(w), Some(s)) => ((w, self.buf), s),
            // The job did not run (checked arguments, or a cancel).
            (Err(e), _, _) => ((Err(e), self.buf), Err(super::ecanceled())),
            (Ok(_), _, _) => (
                (Err(io::Error::other("write/sync job lost")), self.buf),
                Err(super::ecanceled()),
            ),
        }
    }
}

/// A positioned write followed by a sync, linked: one submission on
/// io_uring, one pool job on epoll. With `all`, a short write is
/// completed by more writes and the sync then issued on its own (the
/// kernel cancels a link behind a short write).
pub(crate) async fn write_sync<Bf: IoBuf>(
    fd: RawFd,
    b: Bf,
    pos: u64,
    all: bool,
    kind: SyncKind,
) -> WriteSyncOut<Bf> {
    let uring = crate::driver::with_current(|dr| dr.is_uring()).unwrap_or(false);
    if !uring {
        return Op::new(WriteSync::new(fd, b, pos, all, kind)).await;
    }
    let len = b.bytes_init();
    if let Err(e) = super::rw::check_range(pos, len as u64) {
        return ((Err(e), b), Err(super::ecanceled()));
    }
    let fsync = super::fs::Fsync::new(fd, kind == SyncKind::Data);
    let ((wres, b), sres) = Link2::new(Write::new(fd, b, Some(pos), false), fsync)
        .await
        .complete();
    match wres {
        Ok(n) if all && n < len => {}
        r => return ((r, b), sres),
    }
    // Short: finish the write, then sync on its own.
    let done = wres.as_ref().map_or(0, |n| *n);
    if done == 0 {
        return (
            (
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file accepted no bytes",
                )),
                b,
            ),
            Err(super::ecanceled()),
        );
    }
    let (rest, slice) =
        super::rw::write_all(fd, b.slice(done..len), Some(pos + done as u64), false, None).await;
    let b = slice.into_inner();
    if let Err(e) = rest {
        return ((Err(e), b), Err(super::ecanceled()));
    }
    let sres = Op::new(super::fs::Fsync::new(fd, kind == SyncKind::Data)).await;
    ((Ok(len), b), sres)
}

impl Driver {
    /// Hands every queued SQE to the kernel now (io_uring); 0 on epoll.
    pub(crate) fn submit_now(&self) -> io::Result<usize> {
        let mut stats = self.stats.get();
        let mut wake = Vec::new();
        let r = match &mut *self.inner.borrow_mut() {
            Backends::Uring(u) => {
                let r = u.submit_now(&mut stats);
                u.take_woken(&mut wake);
                r
            }
            Backends::Epoll(_) => Ok(0),
        };
        self.stats.set(stats);
        for w in wake {
            w.wake();
        }
        r
    }
}

/// Submits every op queued so far on this thread's loop now, with one
/// `io_uring_enter` that does not wait, instead of at the end of the loop
/// iteration; returns how many SQEs the kernel took.
///
/// An op is queued when its future is first polled, so call this after
/// polling (or use [`eager`], which does both). Useful when the device
/// should start on a request at once (O_DIRECT reads on a fast disk),
/// at the cost of one system call per call. On epoll there is nothing to
/// submit: `Ok(0)`.
///
/// # Panics
/// Outside a running loop.
pub fn submit() -> io::Result<usize> {
    crate::driver::with_current(|d| d.submit_now())
        .expect("driver::submit() called outside a running uringio loop")
}

/// Wraps an op future so that its first poll also submits it (and
/// everything queued before it) at once: see [`submit`]. A submission
/// error is logged; the op then still completes at the end of the
/// iteration's enter (or with that error).
pub fn eager<F: Future>(fut: F) -> Eager<F> {
    Eager {
        fut,
        submitted: false,
    }
}

/// [`eager`] when `on`, else `fut` as it is (same type either way): the
/// fs layer submits ops on `O_DIRECT` files at once.
pub(crate) fn eager_if<F: Future>(on: bool, fut: F) -> Eager<F> {
    Eager {
        fut,
        submitted: !on,
    }
}

/// The future of [`eager`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Eager<F> {
    fut: F,
    submitted: bool,
}

impl<F: Future + Unpin> Future for Eager<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = Pin::new(&mut self.fut).poll(cx);
        if r.is_pending() && !self.submitted {
            self.submitted = true;
            if let Err(e) = submit() {
                log::warn!("uringio: eager submission: {e}");
            }
        }
        r
    }
}

impl<F: Cancellable + Unpin> Cancellable for Eager<F> {
    fn with_canceller(mut self, c: &Canceller) -> Self {
        self.fut = self.fut.with_canceller(c);
        self
    }
}
