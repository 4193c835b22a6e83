//! One type per operation, interpreted by either backend.
//!
//! An [`OpCode`] knows how to build its SQE (io_uring), how the epoll
//! backend should run it ([`Mode`]), how to perform itself with a plain
//! system call, and how to turn the raw result into its output (handing the
//! buffers back). [`Op`] is the future that drives one op on whichever
//! driver the current loop has.
//!
//! ## Op state machine
//! ```text
//!  Init ──poll──▶ Uring(key) ──CQE──▶ Done        (io_uring)
//!    │                 └─drop─▶ slot Abandoned(data) + ASYNC_CANCEL; freed on CQE
//!    ├──poll──▶ Epoll ──EAGAIN─▶ wait readiness ─▶ retry ─▶ Done   (sockets)
//!    ├──poll──▶ cached file read done on the loop (RWF_NOWAIT) ─▶ Done  (epoll)
//!    └──poll──▶ Pool(key) ──pool thread performs──▶ Done           (files)
//!                   └─drop─▶ slot Abandoned(data); freed when the pool is done
//! ```
//! An op's data (buffers included) never moves while the kernel or a pool
//! thread may touch it: it lives in a `Box`, unless the op declares
//! [`OpCode::MOVABLE`] (its SQE points only into buffers' own heap storage,
//! which [`IoBuf`](crate::buf::IoBuf)'s contract keeps put), in which case
//! it stays inline in the future on io_uring and is boxed only if it goes
//! to the blocking pool or is abandoned in flight. That saves an allocation
//! per socket read or write.
//!
//! An op belongs to the driver it was first polled on. Polled later on
//! another loop's driver (its future moved from one `Runner` to another on
//! the same thread), it is taken back from the first — cancelled there and
//! waited for if the kernel or a pool thread has it — and then completes
//! with what it got, or starts afresh on the new driver: the same on both
//! backends, and nothing is lost.

pub(crate) mod fixed;
pub(crate) mod fs;
pub(crate) mod fsext;
pub(crate) mod link;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod recv;
pub(crate) mod rw;
pub(crate) mod signal;
pub(crate) mod sock;
pub(crate) mod splice;
pub(crate) mod unix;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use io_uring::squeue;
use slab::Slab;

use super::uring::{FdBacklog, LateResults};
use super::{Backends, Driver};

/// How the epoll backend runs an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Try now; on `EAGAIN` wait until the fd is readable, retry.
    Readable(RawFd),
    /// Try now; on `EAGAIN` wait until the fd is writable, retry.
    Writable(RawFd),
    /// Run `perform` on the blocking pool (regular files, paths).
    Blocking,
    /// Run `perform` once, now (it never blocks).
    Inline,
}

/// One operation, described once for both backends.
pub(crate) trait OpCode: 'static {
    /// What awaiting the op yields.
    type Output;

    /// The SQE and `perform` point only into memory that stays put when
    /// `self` moves (a buffer's heap storage), never into `self`: the op's
    /// data may then live inline in its future while in flight on
    /// io_uring. Ops that hand the kernel pointers to their own fields
    /// (iovecs, socket addresses, statx) keep the default.
    const MOVABLE: bool = false;

    /// The SQE. Called once, with `self` at its final address, which stays
    /// put until the CQE arrives (on the heap), so pointers into `self` may
    /// go in it — except for [`OpCode::MOVABLE`] ops, whose data may move.
    fn sqe(&mut self) -> squeue::Entry;

    /// How epoll runs it.
    fn mode(&self) -> Mode;

    /// Called on io_uring just before [`OpCode::sqe`] with the driver the
    /// op goes to: an op carrying a registered-file slot ([`FixedFd`])
    /// drops it unless the slot belongs to that driver's ring.
    fn bind_fixed(&mut self, _driver: &Driver) {}

    /// On epoll, before a [`Mode::Blocking`] op goes to the pool: an
    /// attempt on the loop thread that cannot block (a cached file read,
    /// `preadv2(RWF_NOWAIT)`). `Some(result)` ends the op with it; `None`
    /// sends it to the pool, whose `perform` continues from whatever the
    /// attempt already did, so the result is the one the pool alone would
    /// give.
    fn try_nonblocking(&mut self) -> Option<io::Result<usize>> {
        None
    }

    /// Whether [`OpCode::try_nonblocking`] may end the op on the loop
    /// thread (such attempts are budgeted per loop iteration, see
    /// `Epoll::inline_budget`).
    fn tries_nonblocking(&self) -> bool {
        false
    }

    /// Checks the op's arguments before it is submitted; an error here
    /// resolves the op at once.
    fn check(&self) -> io::Result<()> {
        Ok(())
    }

    /// Checks the op against the driver it is about to start on (both
    /// backends; a fixed buffer must belong to that loop); an error here
    /// resolves the op at once.
    fn check_on(&self, _driver: &Driver) -> io::Result<()> {
        Ok(())
    }

    /// Performs the op with a plain system call. For `Mode::Blocking` ops
    /// this runs on a pool thread: it may only touch plain data (fds, raw
    /// pointers taken at construction, integers, C strings).
    fn perform(&mut self) -> io::Result<usize>;

    /// Turns the result into the output, handing buffers back.
    fn complete(self, res: io::Result<usize>, flags: u32) -> Self::Output;

    /// Called with the successful result of an op whose future was dropped
    /// before it could take it. Ops whose result is a new descriptor
    /// (accept, openat) close it here; nothing else needs to.
    fn discard_result(_res: i32) {}

    /// Called with the raw result (negative errno included) of an op
    /// whose future was dropped while the kernel or a pool thread had it,
    /// before its data is dropped (with the driver released). The default
    /// passes a success to [`OpCode::discard_result`]; ops that must
    /// account for what the kernel did after the drop (a copy handing
    /// unsent bytes back) record it here and act in their `Drop`.
    fn late_result(&mut self, res: i32) {
        if res >= 0 {
            Self::discard_result(res);
        }
    }

    /// For a read from a stream socket: how many bytes it asks for. A read
    /// that returns fewer drained the socket, so the epoll backend skips
    /// the next read's attempt (it would only see `EAGAIN`) until an input
    /// edge arrives.
    fn stream_read_len(&self) -> Option<usize> {
        None
    }
}

enum State {
    Init,
    Uring(usize),
    /// Retrying on readiness (epoll); the token of its waiter in the fd's
    /// list once it waits (removed when the op ends or is dropped).
    Epoll(Option<u64>),
    Pool(usize),
    Done,
}

/// A socket's slot in one ring's registered-file table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedFd {
    /// The slot (`types::Fixed`).
    pub(crate) slot: u32,
    /// The driver whose ring the slot is in (compared, never dereferenced).
    pub(crate) driver: *const Driver,
}

impl FixedFd {
    /// `Some(self)` when `driver` is the one the slot belongs to.
    pub(crate) fn on(fixed: Option<FixedFd>, driver: &Driver) -> Option<FixedFd> {
        fixed.filter(|f| std::ptr::eq(f.driver, driver))
    }
}

/// Where an op's data lives.
enum Data<T> {
    /// In the future itself (only for [`OpCode::MOVABLE`] ops).
    Inline(T),
    /// On the heap, at an address that never changes.
    Boxed(Box<T>),
}

impl<T> Data<T> {
    fn get(&mut self) -> &mut T {
        match self {
            Data::Inline(t) => t,
            Data::Boxed(b) => b,
        }
    }

    fn into_inner(self) -> T {
        match self {
            Data::Inline(t) => t,
            Data::Boxed(b) => *b,
        }
    }

    fn into_any(self) -> Box<dyn Any>
    where
        T: 'static,
    {
        match self {
            Data::Inline(t) => Box::new(t),
            Data::Boxed(b) => b,
        }
    }
}

/// The future of one op.
pub(crate) struct Op<T: OpCode> {
    data: Option<Data<T>>,
    state: State,
    /// The driver the op was submitted to (kept alive while the op lives).
    driver: Option<Rc<Driver>>,
    cancel: Option<(Rc<CancelInner>, Option<usize>)>,
}

impl<T: OpCode> Op<T> {
    pub(crate) fn new(data: T) -> Op<T> {
        let data = if T::MOVABLE {
            Data::Inline(data)
        } else {
            Data::Boxed(Box::new(data))
        };
        Op {
            data: Some(data),
            state: State::Init,
            driver: None,
            cancel: None,
        }
    }

    /// The data of an op never polled, to run it another way (linked).
    pub(crate) fn into_data(mut self) -> T {
        debug_assert!(matches!(self.state, State::Init) && self.driver.is_none());
        self.data.take().expect("op data").into_inner()
    }

    fn finish(&mut self, res: io::Result<usize>, flags: u32) -> T::Output {
        self.state = State::Done;
        self.unregister_cancel();
        let data = self.data.take().expect("op polled after completion");
        data.into_inner().complete(res, flags)
    }

    fn cancel_fired(&self) -> bool {
        self.cancel.as_ref().is_some_and(|(c, _)| c.fired.get())
    }

    fn register_cancel(&mut self, key: Option<usize>, waker: &Waker, driver: &Rc<Driver>) {
        if let Some((c, slot)) = &mut self.cancel {
            let uring_key = key.map(|k| (k, Rc::downgrade(driver)));
            match slot {
                Some(i) => {
                    if let Some(e) = c.ops.borrow_mut().get_mut(*i) {
                        e.uring_key = uring_key;
                        e.waker = Some(waker.clone());
                    }
                }
                None => {
                    *slot = Some(c.ops.borrow_mut().insert(CancelEntry {
                        uring_key,
                        waker: Some(waker.clone()),
                    }))
                }
            }
        }
    }

    /// The fd and direction an epoll op waits on.
    fn epoll_target(&mut self) -> Option<(RawFd, bool)> {
        match self.data.as_mut()?.get().mode() {
            Mode::Readable(fd) => Some((fd, false)),
            Mode::Writable(fd) => Some((fd, true)),
            _ => None,
        }
    }

    /// Removes the op's readiness waiter from `driver`, if it has one.
    fn unwait(&mut self, driver: &Driver, token: Option<u64>) {
        if let (Some(t), Some((fd, write))) = (token, self.epoll_target()) {
            if let Backends::Epoll(e) = &mut *driver.inner.borrow_mut() {
                e.unwait(fd, write, t);
            }
        }
    }

    /// The op was polled on `new`, not on the driver it started on: take
    /// it back from the old one (see the module docs). `Some(output)` if
    /// it completed there.
    fn migrate(&mut self, new: &Rc<Driver>) -> Option<T::Output> {
        let old = self.driver.replace(new.clone())?;
        self.unregister_cancel();
        match std::mem::replace(&mut self.state, State::Init) {
            State::Init | State::Done => None,
            State::Epoll(token) => {
                self.unwait(&old, token);
                self.state = State::Epoll(None);
                None
            }
            State::Uring(key) => {
                let (res, flags) = old.detach_uring(key)?;
                if res == -libc::ECANCELED {
                    // Cancelled before it did anything: start it here.
                    return None;
                }
                Some(self.finish(cvt_res(res), flags))
            }
            State::Pool(key) => {
                let res = match &mut *old.inner.borrow_mut() {
                    Backends::Epoll(e) => e.detach_blocking(key),
                    Backends::Uring(_) => None,
                }?;
                Some(self.finish(res, 0))
            }
        }
    }

    fn unregister_cancel(&mut self) {
        if let Some((c, slot)) = &mut self.cancel {
            if let Some(i) = slot.take() {
                c.ops.borrow_mut().try_remove(i);
            }
        }
    }

    fn poll_inner(&mut self, driver: &Rc<Driver>, cx: &mut Context<'_>) -> Poll<T::Output> {
        loop {
            match self.state {
                State::Done => panic!("op polled after completion"),
                State::Init => {
                    if self.cancel_fired() {
                        return Poll::Ready(self.finish(Err(ecanceled()), 0));
                    }
                    let data = self.data.as_mut().expect("op data").get();
                    if let Err(e) = data.check().and_then(|()| data.check_on(driver)) {
                        return Poll::Ready(self.finish(Err(e), 0));
                    }
                    let mut inner = driver.inner.borrow_mut();
                    match &mut *inner {
                        Backends::Uring(u) => {
                            data.bind_fixed(driver);
                            let sqe = data.sqe();
                            let key = u.submit(sqe, cx.waker());
                            drop(inner);
                            self.state = State::Uring(key);
                            self.register_cancel(Some(key), cx.waker(), driver);
                            return Poll::Pending;
                        }
                        Backends::Epoll(e) => match data.mode() {
                            Mode::Blocking => {
                                if data.tries_nonblocking() {
                                    if !e.inline_budget() {
                                        // Enough ops finished on the loop
                                        // thread since it last looked at
                                        // I/O: let the others run first.
                                        drop(inner);
                                        cx.waker().wake_by_ref();
                                        return Poll::Pending;
                                    }
                                    if let Some(res) = data.try_nonblocking() {
                                        drop(inner);
                                        driver.bump(|s| s.nonblocking_ops += 1);
                                        return Poll::Ready(self.finish(res, 0));
                                    }
                                }
                                // A pool thread gets a pointer to the data:
                                // it must not move from here on.
                                let boxed = match self.data.take().expect("op data") {
                                    Data::Boxed(b) => b,
                                    Data::Inline(t) => Box::new(t),
                                };
                                let ptr: *mut T = match self.data.insert(Data::Boxed(boxed)) {
                                    Data::Boxed(b) => &mut **b,
                                    Data::Inline(_) => unreachable!(),
                                };
                                let key = e.submit_blocking(ptr, cx.waker());
                                drop(inner);
                                driver.bump(|s| s.blocking_ops += 1);
                                self.state = State::Pool(key);
                                self.register_cancel(None, cx.waker(), driver);
                                return Poll::Pending;
                            }
                            Mode::Inline => {
                                drop(inner);
                                let res = data.perform();
                                return Poll::Ready(self.finish(res, 0));
                            }
                            Mode::Readable(_) | Mode::Writable(_) => {
                                drop(inner);
                                self.state = State::Epoll(None);
                            }
                        },
                    }
                }
                State::Uring(key) => {
                    let r = match &mut *driver.inner.borrow_mut() {
                        Backends::Uring(u) => u.poll_slot(key, cx.waker()),
                        Backends::Epoll(_) => unreachable!("uring op on an epoll driver"),
                    };
                    return match r {
                        Poll::Ready((res, flags)) => Poll::Ready(self.finish(cvt_res(res), flags)),
                        Poll::Pending => {
                            self.register_cancel(Some(key), cx.waker(), driver);
                            Poll::Pending
                        }
                    };
                }
                State::Pool(key) => {
                    let r = match &mut *driver.inner.borrow_mut() {
                        Backends::Epoll(e) => e.poll_blocking(key, cx.waker()),
                        Backends::Uring(_) => unreachable!("pool op on a uring driver"),
                    };
                    return match r {
                        Poll::Ready(res) => Poll::Ready(self.finish(res, 0)),
                        Poll::Pending => Poll::Pending,
                    };
                }
                State::Epoll(mut token) => {
                    // A fired canceller still gets one try: what already
                    // arrived is handed over rather than left behind.
                    let fired = self.cancel_fired();
                    let data = self.data.as_mut().expect("op data").get();
                    let mode = data.mode();
                    let (fd, write) = match mode {
                        Mode::Readable(fd) => (fd, false),
                        Mode::Writable(fd) => (fd, true),
                        _ => unreachable!(),
                    };
                    let stream_len = data.stream_read_len();
                    // A stream read right after one that drained the socket
                    // would only see EAGAIN: wait for the next edge instead
                    // (unless cancelling, which gets its one real try).
                    let res = if stream_len.is_some()
                        && !fired
                        && super::epoll_read_drained(driver, fd)
                    {
                        Err(io::Error::from(io::ErrorKind::WouldBlock))
                    } else {
                        data.perform()
                    };
                    match res {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && fired => {
                            self.unwait(driver, token);
                            return Poll::Ready(self.finish(Err(ecanceled()), 0));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            let r =
                                super::epoll_wait_ready(driver, fd, write, cx.waker(), &mut token);
                            self.state = State::Epoll(token);
                            if let Err(e) = r {
                                self.unwait(driver, token);
                                return Poll::Ready(self.finish(Err(e), 0));
                            }
                            self.register_cancel(None, cx.waker(), driver);
                            return Poll::Pending;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        res => {
                            self.unwait(driver, token);
                            if let (Some(len), Ok(n)) = (stream_len, &res) {
                                if *n > 0 && *n < len {
                                    super::epoll_mark_read_drained(driver, fd);
                                }
                            }
                            return Poll::Ready(self.finish(res, 0));
                        }
                    }
                }
            }
        }
    }
}

impl<T: OpCode> Unpin for Op<T> {}

impl<T: OpCode> Future for Op<T> {
    type Output = T::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = self.get_mut();
        let driver = super::current().expect("uringio I/O used outside a running uringio loop");
        match &this.driver {
            Some(d) if Rc::ptr_eq(d, &driver) => {}
            Some(_) => {
                if let Some(out) = this.migrate(&driver) {
                    return Poll::Ready(out);
                }
            }
            None => this.driver = Some(driver.clone()),
        }
        this.poll_inner(&driver, cx)
    }
}

impl<T: OpCode> Drop for Op<T> {
    fn drop(&mut self) {
        self.unregister_cancel();
        let state = std::mem::replace(&mut self.state, State::Done);
        let Some(driver) = self.driver.clone() else {
            return;
        };
        if let State::Epoll(token) = state {
            self.unwait(&driver, token);
            return;
        }
        let Some(data) = self.data.take() else {
            return;
        };
        let data: Box<dyn Any> = data.into_any();
        let garbage = match (state, &mut *driver.inner.borrow_mut()) {
            // The kernel or a pool thread still owns the buffers: park them in
            // the driver until the completion arrives.
            (State::Uring(key), Backends::Uring(u)) => {
                u.abandon(key, data, late_hook::<T>);
                None
            }
            (State::Pool(key), Backends::Epoll(e)) => e.abandon_blocking(key, data, late_hook::<T>),
            (_, _) => Some(data),
        };
        // Dropped with the driver released.
        drop(garbage);
    }
}

/// What the driver calls with a dropped op's data and its late result.
pub(crate) type LateHook = fn(&mut dyn Any, i32);

/// The [`LateHook`] of op type `T`: [`OpCode::late_result`] on its data.
fn late_hook<T: OpCode>(data: &mut dyn Any, res: i32) {
    match data.downcast_mut::<T>() {
        Some(t) => t.late_result(res),
        None if res >= 0 => T::discard_result(res),
        None => {}
    }
}

/// A CQE's result as an `io::Result`.
fn cvt_res(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

pub(crate) fn ecanceled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

/// An op future that a [`Canceller`] can end early.
pub trait Cancellable: Future + Sized {
    /// Ties this op to `c`: when `c.cancel()` fires, the op is cancelled
    /// (`IORING_OP_ASYNC_CANCEL` on io_uring; on epoll a wait for readiness
    /// ends) but the future still resolves to its result and buffer:
    /// `Err(ECANCELED)` or whatever completed first. Ops on the blocking pool
    /// cannot be interrupted and finish normally.
    fn with_canceller(self, c: &Canceller) -> Self;
}

impl<T: OpCode> Cancellable for Op<T> {
    fn with_canceller(mut self, c: &Canceller) -> Self {
        self.cancel = Some((c.inner.clone(), None));
        self
    }
}

struct CancelEntry {
    /// The op's slot on io_uring, and the driver it is in.
    uring_key: Option<(usize, Weak<Driver>)>,
    waker: Option<Waker>,
}

pub(crate) struct CancelInner {
    fired: Cell<bool>,
    ops: RefCell<Slab<CancelEntry>>,
}

/// A token that ends ops early without losing their results.
///
/// Dropping an op's future also cancels it, but a read that raced its
/// cancellation may have consumed bytes that are then lost with the future.
/// An op tied to a `Canceller` (with [`Cancellable::with_canceller`]) is
/// instead cancelled by [`Canceller::cancel`] and keeps being polled: it
/// resolves to `Err(ECANCELED)` or to the bytes that arrived first, with its
/// buffer.
///
/// ```no_run
/// use uringio::driver::{Canceller, Cancellable};
/// # async fn f(s: uringio::net::TcpStream) {
/// let c = Canceller::new();
/// let read = s.read(vec![0u8; 0].into_iter().collect::<Vec<u8>>()).with_canceller(&c);
/// c.cancel();
/// let (res, buf) = read.await; // Err(ECANCELED) or data, never lost
/// # }
/// ```
#[derive(Clone)]
pub struct Canceller {
    inner: Rc<CancelInner>,
}

impl Default for Canceller {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller")
            .field("fired", &self.inner.fired.get())
            .finish()
    }
}

impl Canceller {
    /// A new, unfired token.
    pub fn new() -> Canceller {
        Canceller {
            inner: Rc::new(CancelInner {
                fired: Cell::new(false),
                ops: RefCell::new(Slab::new()),
            }),
        }
    }

    /// Cancels every op tied to this token, now and later.
    pub fn cancel(&self) {
        self.inner.fired.set(true);
        type Entry = (Option<(usize, Weak<Driver>)>, Option<Waker>);
        let entries: Vec<Entry> = self
            .inner
            .ops
            .borrow_mut()
            .iter_mut()
            .map(|(_, e)| (e.uring_key.clone(), e.waker.take()))
            .collect();
        for (key, w) in entries {
            if let Some((k, d)) = key {
                if let Some(d) = d.upgrade() {
                    d.cancel_uring(k);
                }
            }
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.fired.get()
    }
}

/// A raw SQE with a value kept alive until its completion.
struct RawOp<K: 'static> {
    entry: Option<squeue::Entry>,
    keep: Option<K>,
}

impl<K: 'static> OpCode for RawOp<K> {
    type Output = (io::Result<u32>, K);

    fn sqe(&mut self) -> squeue::Entry {
        self.entry.take().expect("raw op submitted twice")
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    fn perform(&mut self) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "submit_raw needs the io_uring backend; this loop runs on epoll",
        ))
    }

    fn complete(mut self, res: io::Result<usize>, flags: u32) -> Self::Output {
        let _ = flags;
        (
            res.map(|n| n as u32),
            self.keep.take().expect("raw op completed twice"),
        )
    }
}

/// Submits a raw `io_uring` SQE and awaits its CQE result.
///
/// `keep_alive` is held until the completion arrives (even if the returned
/// future is dropped, in which case the op is cancelled): put in it every
/// buffer the SQE points to. The SQE's `user_data` is overwritten. On the
/// epoll backend the future resolves to an `Unsupported` error.
///
/// # Safety
/// The entry must be a valid SQE whose pointers stay valid while
/// `keep_alive` lives (point into heap memory owned by `keep_alive`, not into
/// the value itself, which may move), and it must not be a multishot request.
pub unsafe fn submit_raw<K: 'static>(
    entry: squeue::Entry,
    keep_alive: K,
) -> impl Future<Output = (io::Result<u32>, K)> {
    Op::new(RawOp {
        entry: Some(entry),
        keep: Some(keep_alive),
    })
}

/// A multishot accept on io_uring: one SQE, a CQE per connection, re-armed
/// when the kernel ends it.
/// Dropped, connections it took from the kernel (queued, or still to
/// come before the cancel lands) go to the listener's backlog.
pub(crate) struct AcceptMulti {
    fd: RawFd,
    key: Option<usize>,
    driver: Rc<Driver>,
    backlog: FdBacklog,
}

impl AcceptMulti {
    pub(crate) fn new(fd: RawFd, driver: Rc<Driver>, backlog: FdBacklog) -> AcceptMulti {
        AcceptMulti {
            fd,
            key: None,
            driver,
            backlog,
        }
    }

    /// The driver whose ring runs it.
    pub(crate) fn driver(&self) -> &Rc<Driver> {
        &self.driver
    }

    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<std::os::fd::OwnedFd>> {
        loop {
            let mut inner = self.driver.inner.borrow_mut();
            let Backends::Uring(u) = &mut *inner else {
                return Poll::Ready(Err(io::Error::other("multishot accept needs io_uring")));
            };
            let key = match self.key {
                Some(k) => k,
                None => {
                    let k = u.submit_multi(net::accept_multi_sqe(self.fd), cx.waker(), None)?;
                    self.key = Some(k);
                    k
                }
            };
            match u.poll_multi(key, cx.waker()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The kernel ended the multishot (error or overflow): re-arm.
                    self.key = None;
                    continue;
                }
                Poll::Ready(Some((res, _flags))) => {
                    if res < 0 {
                        return Poll::Ready(Err(io::Error::from_raw_os_error(-res)));
                    }
                    use std::os::fd::FromRawFd;
                    // SAFETY: the kernel handed us this new descriptor.
                    return Poll::Ready(Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(res) }));
                }
            }
        }
    }
}

impl Drop for AcceptMulti {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Backends::Uring(u) = &mut *self.driver.inner.borrow_mut() {
                u.abandon_multi(k, None, LateResults::Keep(self.backlog.clone()));
            }
        }
    }
}
