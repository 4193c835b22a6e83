//! Unix signals on the loop: [`EventLoop::add_signal_handler`] /
//! [`EventLoop::remove_signal_handler`] (asyncio's), the stream
//! [`signal()`] and [`ctrl_c()`] (tokio's), on both backends.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! uringio::run(async {
//!     let lp = uringio::get_running_loop();
//!     lp.add_signal_handler(libc::SIGHUP, || println!("reloading")).unwrap();
//!     let mut term = uringio::signal::signal(libc::SIGTERM);
//!     term.next().await;            // or: uringio::signal::ctrl_c().await
//! });
//! ```
//!
//! ## How it works
//! Each loop owns one `signalfd`, created when the loop first handles a
//! signal, and one internal task (named `uringio-signal`) that waits for it
//! to become readable (`IORING_OP_POLL_ADD` on io_uring, readiness on epoll)
//! and then reads the pending `signalfd_siginfo` records on the loop thread. No signal handler runs
//! in signal context and nothing is global: a signal the loop handles is
//! *blocked* on the loop's thread (`pthread_sigmask`), so it stays pending
//! until the signalfd read takes it. Each signal read is then dispatched:
//! the handler is scheduled with `call_soon` (it runs on the loop, after the
//! ready tasks, like any callback), and every [`Signal`] stream for that
//! number gets one item.
//!
//! When the last handler or stream for a signal goes away, the signal is
//! taken out of the signalfd, instances still pending are discarded (so
//! that unblocking cannot run a default action such as terminating the
//! process), and the thread's mask is restored: the signal is unblocked
//! unless it was blocked before the loop first blocked it. Closing the loop
//! (dropping its `Runner`, the end of [`run`](crate::run)) removes
//! everything.
//!
//! ## Threads: block the signals everywhere for process-wide signals
//! A signal sent to the *process* (`kill(pid)`, Ctrl-C from a terminal, a
//! service manager's `SIGTERM`) is delivered by the kernel to any thread
//! that does not block it. Only the loop's thread blocks it here, so if
//! another thread leaves it unblocked, the signal goes there and its
//! default action runs (for `SIGINT` or `SIGTERM`: the process ends). A
//! signal sent to the loop's thread itself (`raise`, `pthread_kill`) always
//! reaches the loop.
//!
//! For reliable delivery of process-wide signals, block them in every
//! thread. Threads inherit the mask of the thread that creates them, so the
//! simple way is to add the handlers (or create the streams) on the main
//! thread *before* starting other threads, the blocking pool included: the
//! pool's threads start lazily, on the first blocking op. asyncio avoids the
//! question by handling signals only on the main thread with a C-level
//! handler that writes to a wake-up fd; tokio installs a process-wide
//! `sigaction` handler that writes to a pipe and never blocks anything. A
//! signalfd needs the mask instead, and in exchange it runs no code in
//! signal context and delivers real-time signals with their queueing
//! intact.
//!
//! If several loops (on several threads) handle the same process-wide
//! signal, whichever reads first gets it. An instance that was already
//! pending (blocked) before the loop started handling the signal is read
//! too: updating a signalfd's mask wakes whoever waits on it.
//!
//! [`EventLoop::add_signal_handler`]: crate::EventLoop::add_signal_handler
//! [`EventLoop::remove_signal_handler`]: crate::EventLoop::remove_signal_handler

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::driver::op::signal::{self as sys, SIGINFO_SIZE, SigSet, SignalFd};
use crate::runtime::context;
use crate::runtime::scheduler::LoopInner;

/// How many `signalfd_siginfo` records one read takes at most.
const RECORDS_PER_READ: usize = 16;

/// Checks that `sig` is a signal a loop can handle, with a clear error.
fn validate(sig: i32) -> io::Result<()> {
    let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    let max = libc::SIGRTMAX();
    if sig < 1 || sig > max {
        return bad(format!(
            "invalid signal number {sig}: signals are 1..={max}"
        ));
    }
    match sig {
        libc::SIGKILL | libc::SIGSTOP => bad(format!(
            "{} cannot be caught, blocked or handled",
            name(sig)
        )),
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE => bad(format!(
            "{} reports a fault of the thread that raised it and cannot be handled on the loop",
            name(sig)
        )),
        s if s > 31 && s < libc::SIGRTMIN() => bad(format!(
            "signal {s} is reserved by the C library (use SIGRTMIN()..=SIGRTMAX())"
        )),
        _ => Ok(()),
    }
}

fn name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

// ---- the thread's mask, shared by every loop on the thread ----

thread_local! {
    /// Per signal: how many loops on this thread block it, and whether it
    /// was blocked before the first of them did.
    static BLOCKED: RefCell<HashMap<i32, (u32, bool)>> = RefCell::new(HashMap::new());
}

fn acquire_block(sig: i32) -> io::Result<()> {
    let count = BLOCKED.with(|b| b.borrow().get(&sig).map_or(0, |e| e.0));
    if count == 0 {
        let was = sys::block(sig)?;
        BLOCKED.with(|b| b.borrow_mut().insert(sig, (1, was)));
    } else {
        BLOCKED.with(|b| {
            if let Some(e) = b.borrow_mut().get_mut(&sig) {
                e.0 += 1;
            }
        });
    }
    Ok(())
}

fn release_block(sig: i32) {
    let restore = BLOCKED.with(|b| {
        let mut b = b.borrow_mut();
        let e = b.get_mut(&sig)?;
        e.0 -= 1;
        if e.0 > 0 {
            return None;
        }
        let was = e.1;
        b.remove(&sig);
        Some(!was)
    });
    if restore == Some(true) {
        let n = sys::discard_pending(sig);
        if n > 0 {
            log::debug!(
                "uringio: discarded {n} pending {} as its last handler went away",
                name(sig)
            );
        }
        if let Err(e) = sys::unblock(sig) {
            log::warn!("uringio: cannot unblock {}: {e}", name(sig));
        }
    }
}

// ---- a loop's signal state ----

struct StreamSlot {
    sig: i32,
    pending: u64,
    waker: Option<Waker>,
}

#[derive(Default)]
struct State {
    fd: Option<Rc<SignalFd>>,
    mask: Option<SigSet>,
    handlers: HashMap<i32, Rc<dyn Fn()>>,
    streams: Slab<StreamSlot>,
    reader_started: bool,
    closed: bool,
}

impl State {
    fn wants(&self, sig: i32) -> bool {
        self.handlers.contains_key(&sig) || self.streams.iter().any(|(_, s)| s.sig == sig)
    }
}

/// A loop's signal handling, kept in the loop. Empty until first used.
#[derive(Default)]
pub(crate) struct LoopSignals {
    state: Rc<RefCell<State>>,
    /// Set while a [`sync`] is queued for the loop's next run.
    sync_queued: Cell<bool>,
}

impl LoopSignals {
    /// Closing the loop: forget every handler, end every stream, restore
    /// the thread's mask. The reader task is cancelled with the others.
    pub(crate) fn close(&self) {
        let (sigs, wakers, handlers) = {
            let mut st = self.state.borrow_mut();
            st.closed = true;
            let mut sigs: Vec<i32> = st.handlers.keys().copied().collect();
            for (_, s) in st.streams.iter() {
                if !sigs.contains(&s.sig) {
                    sigs.push(s.sig);
                }
            }
            if let (Some(fd), Some(_)) = (&st.fd, st.mask) {
                let _ = fd.set_mask(&SigSet::empty());
            }
            st.mask = Some(SigSet::empty());
            let wakers: Vec<Waker> = st
                .streams
                .iter_mut()
                .filter_map(|(_, s)| s.waker.take())
                .collect();
            let handlers = std::mem::take(&mut st.handlers);
            (sigs, wakers, handlers)
        };
        // Handlers may hold the loop: drop them with the state released.
        drop(handlers);
        for sig in sigs {
            release_block(sig);
        }
        for w in wakers {
            w.wake();
        }
    }
}

/// Starts handling `sig` on `inner` if nothing did yet: block it, add it to
/// the signalfd (creating that), make sure the reader runs.
fn want(inner: &Rc<LoopInner>, sig: i32) -> io::Result<()> {
    let sigs = &inner.signals;
    if sigs.state.borrow().closed {
        return Err(io::Error::other("the event loop is closed"));
    }
    if sigs.state.borrow().wants(sig) {
        return Ok(());
    }
    acquire_block(sig)?;
    let res = (|| {
        let mut st = sigs.state.borrow_mut();
        let mut mask = st.mask.unwrap_or_else(SigSet::empty);
        mask.add(sig);
        match &st.fd {
            Some(fd) => fd.set_mask(&mask)?,
            None => st.fd = Some(Rc::new(SignalFd::new(&mask)?)),
        }
        st.mask = Some(mask);
        Ok(())
    })();
    if let Err(e) = res {
        release_block(sig);
        return Err(e);
    }
    sync(inner);
    Ok(())
}

/// Stops handling `sig` if no handler or stream wants it any more.
fn unwant(inner: &LoopInner, sig: i32) {
    let sigs = &inner.signals;
    {
        let mut st = sigs.state.borrow_mut();
        if st.closed || st.wants(sig) {
            return;
        }
        let Some(mut mask) = st.mask else { return };
        if !mask.contains(sig) {
            return;
        }
        mask.remove(sig);
        if let Some(fd) = &st.fd {
            if let Err(e) = fd.set_mask(&mask) {
                log::warn!("uringio: cannot update the signalfd: {e}");
            }
        }
        st.mask = Some(mask);
    }
    release_block(sig);
}

/// Makes sure the reader task runs: spawns it now if the loop runs on
/// this thread, else as the first thing of the loop's next run. (A wait
/// already in flight needs nothing: updating a signalfd's mask wakes its
/// waiters, so a signal that was pending before it was added is read.)
fn sync(inner: &Rc<LoopInner>) {
    let sigs = &inner.signals;
    if context::current_loop_id() != inner.id() {
        if !sigs.sync_queued.replace(true) {
            inner.shared.push_call(Box::new(|| {
                if let Some(l) = context::current() {
                    l.signals.sync_queued.set(false);
                    sync(&l);
                }
            }));
        }
        return;
    }
    let fd = {
        let mut st = sigs.state.borrow_mut();
        if st.closed || st.reader_started {
            return;
        }
        st.reader_started = true;
        st.fd.clone()
    };
    if let Some(fd) = fd {
        let state = Rc::downgrade(&sigs.state);
        crate::task::Builder::new()
            .name("uringio-signal")
            .spawn(reader(fd, state))
            .detach();
    }
}

/// The reader task: waits for the signalfd to be readable, reads every
/// pending record, dispatches them.
async fn reader(fd: Rc<SignalFd>, state: std::rc::Weak<RefCell<State>>) {
    let mut buf = vec![0u8; SIGINFO_SIZE * RECORDS_PER_READ];
    loop {
        let mut res = fd.readable().await;
        while res.is_ok() {
            match fd.try_read(&mut buf) {
                Ok(n) => {
                    let Some(st) = state.upgrade() else { return };
                    for sig in sys::signal_numbers(&buf[..n]) {
                        dispatch(&st, sig);
                    }
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => res = Err(e),
            }
        }
        if let Err(e) = res {
            if let Some(l) = context::current() {
                l.report(crate::runtime::ExceptionContext {
                    message: format!(
                        "waiting on the signalfd (fd {}) failed: {e}; signal handling stopped",
                        fd.as_raw_fd()
                    ),
                    task_id: crate::task::current_task(),
                    panic_message: None,
                });
            }
            return;
        }
    }
}

fn dispatch(state: &Rc<RefCell<State>>, sig: i32) {
    let (handler, wakers) = {
        let mut st = state.borrow_mut();
        let handler = st.handlers.get(&sig).cloned();
        let mut wakers = Vec::new();
        for (_, s) in st.streams.iter_mut() {
            if s.sig == sig {
                s.pending += 1;
                if let Some(w) = s.waker.take() {
                    wakers.push(w);
                }
            }
        }
        (handler, wakers)
    };
    if let Some(h) = handler {
        if let Some(l) = crate::runtime::try_running_loop() {
            l.call_soon(move || h());
        }
    }
    for w in wakers {
        w.wake();
    }
}

// ---- the EventLoop methods ----

/// `EventLoop::add_signal_handler`.
pub(crate) fn add_handler(inner: &Rc<LoopInner>, sig: i32, f: Rc<dyn Fn()>) -> io::Result<()> {
    validate(sig)?;
    want(inner, sig)?;
    let old = inner.signals.state.borrow_mut().handlers.insert(sig, f);
    drop(old);
    Ok(())
}

/// `EventLoop::remove_signal_handler`.
pub(crate) fn remove_handler(inner: &Rc<LoopInner>, sig: i32) -> bool {
    let old = inner.signals.state.borrow_mut().handlers.remove(&sig);
    let had = old.is_some();
    drop(old);
    if had {
        unwant(inner, sig);
    }
    had
}

// ---- streams ----

/// A stream of deliveries of one signal: one item per signal the loop
/// read. See [`signal()`].
///
/// Standard signals (1–31) that arrive while one is already pending merge
/// into one, as the kernel does; real-time signals queue. The stream ends
/// (`None`) only when the loop closes. Dropping it stops handling the
/// signal unless a handler or another stream still wants it.
pub struct Signal {
    inner: Rc<LoopInner>,
    key: usize,
    sig: i32,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal").field("sig", &self.sig).finish()
    }
}

impl Signal {
    /// The signal number.
    pub fn signum(&self) -> i32 {
        self.sig
    }

    /// Waits for the next delivery. `None` once the loop closed.
    pub async fn recv(&mut self) -> Option<()> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next delivery. `Ready(None)` once the loop closed.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let mut st = self.inner.signals.state.borrow_mut();
        let closed = st.closed;
        let Some(slot) = st.streams.get_mut(self.key) else {
            return Poll::Ready(None);
        };
        if slot.pending > 0 {
            slot.pending -= 1;
            return Poll::Ready(Some(()));
        }
        if closed {
            return Poll::Ready(None);
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl futures_core::Stream for Signal {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        let slot = self
            .inner
            .signals
            .state
            .borrow_mut()
            .streams
            .try_remove(self.key);
        if slot.is_some() {
            unwant(&self.inner, self.sig);
        }
    }
}

/// A stream that yields `()` each time the running loop receives `sig`
/// (asyncio's `add_signal_handler` as an async iterator;
/// `tokio::signal::unix::signal`). Signals are numbers (`libc::SIGHUP`,
/// `libc::SIGRTMIN() + 1`, …).
///
/// The signal is blocked on this thread while the stream lives; see the
/// [module docs](self) for what that means for other threads.
///
/// # Panics
/// With the error [`try_signal`] describes (a number that is not a signal
/// or cannot be handled, no running loop, no signalfd). Use [`try_signal`]
/// to get the error as a value instead.
pub fn signal(sig: i32) -> Signal {
    match try_signal(sig) {
        Ok(s) => s,
        Err(e) => panic!("uringio::signal::signal({sig}): {e}"),
    }
}

/// Like [`signal`], returning set-up failures as errors.
///
/// # Errors
/// `InvalidInput` for a number that is not a signal or that cannot be
/// handled (`SIGKILL`, `SIGSTOP`, the fault signals `SIGSEGV`, `SIGBUS`,
/// `SIGILL`, `SIGFPE`, the C library's reserved 32 and 33); an error if no
/// loop is running on this thread or the signalfd cannot be created.
pub fn try_signal(sig: i32) -> io::Result<Signal> {
    validate(sig)?;
    let inner = context::current().ok_or_else(|| {
        io::Error::other("uringio::signal::signal() called outside a running uringio loop")
    })?;
    want(&inner, sig)?;
    let key = inner.signals.state.borrow_mut().streams.insert(StreamSlot {
        sig,
        pending: 0,
        waker: None,
    });
    Ok(Signal { inner, key, sig })
}

/// Waits for `SIGINT` (Ctrl-C in a terminal).
///
/// `SIGINT` is blocked on this thread while the future waits and restored
/// afterwards: a second Ctrl-C after this returns has its default effect
/// again unless something else still handles it.
///
/// # Errors
/// Outside a running loop, if the signalfd cannot be created, or if the
/// loop closes first.
pub async fn ctrl_c() -> io::Result<()> {
    let mut s = try_signal(libc::SIGINT)?;
    s.recv()
        .await
        .ok_or_else(|| io::Error::other("the event loop closed while waiting for SIGINT"))
}
