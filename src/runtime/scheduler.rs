//! The loop itself: ready tasks, `call_soon` callbacks, timers, the remote
//! queue, and one driver park per iteration.
//!
//! One iteration (`run_once`), asyncio's `_run_once` made completion-based:
//! 1. take what other threads queued (wakes, callbacks);
//! 2. poll ready tasks, up to a budget, so a busy task cannot starve I/O;
//! 3. run the callbacks that were queued before this step;
//! 4. park the driver: timeout 0 if anything is ready, else until the next
//!    timer; this submits every queued SQE and waits in one system call;
//! 5. completions have woken their tasks; fire expired timers.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use super::context;
use super::{ExceptionContext, TaskInfo, TaskState};
use crate::driver::blocking::BlockingPool;
use crate::driver::{Driver, MsgTarget};
use crate::task::raw::{self, PollOutcome, TaskRef};
use crate::time::timers::Timers;

pub(crate) type ExceptionHandler = Rc<dyn Fn(&ExceptionContext)>;

/// Tasks polled per iteration before the loop looks at I/O again.
const TASK_BUDGET: usize = 256;

/// What other threads hand to a loop.
pub(crate) enum Remote {
    Wake(TaskRef),
    Call(Box<dyn FnOnce() + Send>),
}

/// The part of a loop other threads can reach.
pub(crate) struct Shared {
    remote: Mutex<Vec<Remote>>,
    notified: AtomicBool,
    /// The loop is (about to be) blocked in the driver.
    parked: AtomicBool,
    /// The loop is closed: what is pushed now is dropped at once.
    closed: AtomicBool,
    pub(crate) stop: AtomicBool,
    eventfd: Arc<OwnedFd>,
    /// Set when the loop runs on io_uring with `MSG_RING`: a loop that
    /// wakes this one sends a `MSG_RING` CQE into its ring instead of
    /// writing the eventfd (see `notify`).
    msg: OnceLock<Arc<MsgTarget>>,
}

impl Shared {
    pub(crate) fn new() -> io::Result<Arc<Shared>> {
        let fd = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )?;
        Ok(Arc::new(Shared {
            remote: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            eventfd: Arc::new(OwnedFd::from(fd)),
            msg: OnceLock::new(),
        }))
    }

    pub(crate) fn wake_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub(crate) fn eventfd(&self) -> &Arc<OwnedFd> {
        &self.eventfd
    }

    pub(crate) fn set_msg_target(&self, t: Arc<MsgTarget>) {
        let _ = self.msg.set(t);
    }

    pub(crate) fn push_wake(&self, t: TaskRef) {
        self.push(Remote::Wake(t));
    }

    pub(crate) fn push_call(&self, f: Box<dyn FnOnce() + Send>) {
        self.push(Remote::Call(f));
    }

    fn push(&self, r: Remote) {
        {
            let mut q = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            if !self.closed.load(Ordering::Acquire) {
                q.push(r);
                drop(q);
                self.notify();
                return;
            }
        }
        // The loop is gone: drop the work here (a RemoteTask's guard inside
        // it then resolves the task as cancelled).
        drop(r);
    }

    /// Marks the loop closed and drops whatever was still queued.
    pub(crate) fn close(&self) {
        let left = {
            let mut q = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *q)
        };
        drop(left);
    }

    /// Wakes the loop if it is sleeping: at most one wake-up per batch,
    /// and none while the loop is awake (it looks at `notified` before it
    /// sleeps; see `run_once`). The wake-up is a `MSG_RING` CQE when both
    /// this loop and the caller's run on io_uring with it (the caller's
    /// ring sends it with its next `io_uring_enter`: no system call here),
    /// else an eventfd write. A loop parked in `io_uring_enter` returns
    /// for either; an eventfd `READ` stays armed for callers without a
    /// ring.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) && self.parked.load(Ordering::SeqCst) {
            if let Some(t) = self.msg.get() {
                if crate::driver::send_msg(t) {
                    return;
                }
            }
            let one = 1u64.to_ne_bytes();
            // An eventfd write only fails if the counter would overflow, in
            // which case the loop is awake anyway.
            let _ = nix::unistd::write(&*self.eventfd, &one);
        }
    }

    fn take(&self) -> Vec<Remote> {
        if !self.notified.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        std::mem::take(&mut *self.remote.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl crate::driver::Unpark for Shared {
    fn unpark(&self) {
        self.notify();
    }
}

pub(crate) struct Callback {
    pub(crate) cancelled: Rc<Cell<bool>>,
    pub(crate) f: Box<dyn FnOnce()>,
}

pub(crate) struct Settings {
    pub debug: bool,
    pub slow: Duration,
}

/// The loop's state, shared by `EventLoop` handles on its thread.
pub(crate) struct LoopInner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) driver: Rc<Driver>,
    pub(crate) pool: Arc<BlockingPool>,
    pub(crate) ready: RefCell<VecDeque<TaskRef>>,
    pub(crate) callbacks: RefCell<VecDeque<Callback>>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) tasks: RefCell<Slab<TaskRef>>,
    pub(crate) stopping: Cell<bool>,
    pub(crate) running: Cell<bool>,
    pub(crate) debug: Cell<bool>,
    pub(crate) slow: Cell<Duration>,
    pub(crate) exception_handler: RefCell<Option<ExceptionHandler>>,
    pub(crate) current_task: Cell<Option<u64>>,
    pub(crate) signals: crate::signal::LoopSignals,
    /// Tasks and callbacks run since the driver was last parked.
    since_park: Cell<usize>,
}

impl LoopInner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        driver: Driver,
        pool: Arc<BlockingPool>,
        settings: Settings,
    ) -> Rc<LoopInner> {
        Rc::new(LoopInner {
            shared,
            driver: Rc::new(driver),
            pool,
            ready: RefCell::new(VecDeque::with_capacity(256)),
            callbacks: RefCell::new(VecDeque::new()),
            timers: RefCell::new(Timers::default()),
            tasks: RefCell::new(Slab::with_capacity(64)),
            stopping: Cell::new(false),
            running: Cell::new(false),
            debug: Cell::new(settings.debug),
            slow: Cell::new(settings.slow),
            exception_handler: RefCell::new(None),
            current_task: Cell::new(None),
            signals: Default::default(),
            since_park: Cell::new(0),
        })
    }

    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Registers a freshly spawned task and queues its first poll.
    pub(crate) fn register(&self, task: TaskRef) {
        let key = self.tasks.borrow_mut().insert(task.clone());
        task.header().registry_key.set(key);
        if context::current_loop_id() == self.id() {
            raw::schedule_local(task);
        } else {
            self.shared.push_wake(task);
        }
    }

    fn drain_remote(&self) {
        for r in self.shared.take() {
            match r {
                Remote::Wake(t) => {
                    if t.header().loop_id() == self.id() {
                        raw::schedule_local(t);
                    }
                }
                Remote::Call(f) => self.callbacks.borrow_mut().push_back(Callback {
                    cancelled: Rc::new(Cell::new(false)),
                    f,
                }),
            }
        }
    }

    fn poll_task(&self, task: TaskRef) {
        let s = task.state();
        task.set_state((s & !raw::SCHEDULED) | raw::RUNNING);
        self.current_task.set(Some(task.id()));
        let started = if self.debug.get() {
            Some(Instant::now())
        } else {
            None
        };
        let outcome = task.poll();
        self.current_task.set(None);
        task.set_state(task.state() & !raw::RUNNING);
        if let Some(t0) = started {
            let took = t0.elapsed();
            if took >= self.slow.get() {
                log::warn!(
                    "uringio: executing task {} ({}) took {:.3} seconds",
                    task.id(),
                    task.header().name.as_deref().unwrap_or("unnamed"),
                    took.as_secs_f64()
                );
            }
        }
        if outcome == PollOutcome::Complete {
            self.task_done(&task);
        }
    }

    fn task_done(&self, task: &TaskRef) {
        let key = task.header().registry_key.get();
        let removed = {
            let mut tasks = self.tasks.borrow_mut();
            match tasks.get(key) {
                Some(t) if t.same(task) => Some(tasks.remove(key)),
                _ => None,
            }
        };
        if task.state() & raw::DETACHED != 0 {
            if let Some(msg) = task.unretrieved_panic() {
                self.report(ExceptionContext {
                    message: format!("Task exception was never retrieved: {msg}"),
                    task_id: Some(crate::task::TaskId(task.id())),
                    panic_message: Some(msg),
                });
                task.drop_stage();
            }
        }
        drop(removed);
    }

    /// Hands an error to the exception handler, or logs it.
    pub(crate) fn report(&self, ctx: ExceptionContext) {
        let h = self.exception_handler.borrow().clone();
        match h {
            Some(h) => h(&ctx),
            None => log::error!("uringio: {}", ctx.message),
        }
    }

    /// One loop iteration. `main_ready` says the main future wants a poll,
    /// so the driver must not block.
    pub(crate) fn run_once(&self, main_ready: &dyn Fn() -> bool) -> io::Result<()> {
        self.drain_remote();
        // 1. the tasks that were ready when this step began (as asyncio's
        //    `_run_once`): a task woken now, or yielding, runs in the next
        //    iteration, after the callbacks and a look at I/O. Bounded.
        let ready_now = self.ready.borrow().len().min(TASK_BUDGET);
        let mut polled = 0;
        while polled < ready_now {
            let next = self.ready.borrow_mut().pop_front();
            let Some(t) = next else { break };
            self.poll_task(t);
            polled += 1;
        }
        // 2. callbacks queued before this step.
        let n = self.callbacks.borrow().len();
        // The main future counts as a task: one that keeps yielding while
        // it waits for I/O (a `yield_now` loop) must not keep the loop from
        // looking at I/O.
        let main = usize::from(main_ready());
        self.since_park
            .set(self.since_park.get() + polled + n + main);
        for _ in 0..n {
            let cb = self.callbacks.borrow_mut().pop_front();
            let Some(cb) = cb else { break };
            if cb.cancelled.get() {
                continue;
            }
            let t0 = self.debug.get().then(Instant::now);
            // A panicking callback is reported, not allowed to unwind out of
            // the loop (asyncio logs it and goes on).
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb.f)) {
                let msg = crate::error::panic_message(p.as_ref())
                    .unwrap_or("<non-string panic payload>")
                    .to_string();
                self.report(ExceptionContext {
                    message: format!("Exception in callback: {msg}"),
                    task_id: None,
                    panic_message: Some(msg),
                });
            }
            if let Some(t0) = t0 {
                let took = t0.elapsed();
                if took >= self.slow.get() {
                    log::warn!(
                        "uringio: executing a callback took {:.3} seconds",
                        took.as_secs_f64()
                    );
                }
            }
        }
        // 3. how long may we sleep?
        // (A pending `stop()` counts only for `run_forever`, through
        // `main_ready`: inside `run(fut)` it must not turn into a busy wait.)
        let busy =
            !self.ready.borrow().is_empty() || !self.callbacks.borrow().is_empty() || main_ready();
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            // Capped: a far-future timer must not overflow the driver's
            // wait (io_uring's timespec, epoll's milliseconds); waking once
            // in 30 years to find nothing due is harmless.
            self.timers.borrow().next_deadline().map(|d| {
                d.saturating_duration_since(Instant::now())
                    .min(crate::time::FAR_FUTURE)
            })
        };
        // 4. submit + wait, one system call. While the loop is busy with
        // nothing queued for the kernel, a zero-timeout park is skipped until
        // TASK_BUDGET tasks and callbacks have run since the last one (as
        // tokio's `event_interval`): a task ping-pong then costs no system
        // call per round, and I/O is still looked at within that budget.
        let skip = busy && self.since_park.get() < TASK_BUDGET && !self.driver.has_queued_work();
        if !skip {
            self.since_park.set(0);
            // Before sleeping, say so, then look once more for remote work:
            // a thread that queued work either sees `parked` and writes the
            // eventfd, or we see its `notified` here (both SeqCst).
            let mut timeout = timeout;
            let sleeping = timeout != Some(Duration::ZERO);
            if sleeping {
                self.shared.parked.store(true, Ordering::SeqCst);
                if self.shared.notified.load(Ordering::SeqCst) {
                    timeout = Some(Duration::ZERO);
                }
            }
            let r = self.driver.park(timeout);
            if sleeping {
                self.shared.parked.store(false, Ordering::SeqCst);
            }
            r?;
        }
        // 5. timers.
        let due = {
            let mut timers = self.timers.borrow_mut();
            match timers.next_deadline() {
                Some(_) => timers.expire(Instant::now()),
                None => Vec::new(),
            }
        };
        for d in due {
            d.run();
        }
        Ok(())
    }

    /// Drops every task's future (asyncio's "cancel all tasks" at shutdown),
    /// then gives cancelled I/O a moment to complete.
    pub(crate) fn cancel_all(&self) {
        loop {
            let tasks: Vec<TaskRef> = self.tasks.borrow_mut().drain().collect();
            if tasks.is_empty() {
                break;
            }
            if self.debug.get() {
                for t in &tasks {
                    log::warn!(
                        "uringio: task {} ({}) was still pending when the loop closed",
                        t.id(),
                        t.header().name.as_deref().unwrap_or("unnamed")
                    );
                }
            }
            for t in &tasks {
                t.cancel_now();
            }
            // Drops of futures may spawn new tasks: go round again.
        }
        self.ready.borrow_mut().clear();
        self.callbacks.borrow_mut().clear();
        self.timers.borrow_mut().clear();
    }

    pub(crate) fn all_tasks(&self) -> Vec<TaskInfo> {
        self.tasks
            .borrow()
            .iter()
            .map(|(_, t)| {
                let s = t.state();
                TaskInfo {
                    id: crate::task::TaskId(t.id()),
                    name: t.header().name.as_deref().map(str::to_string),
                    state: if s & raw::RUNNING != 0 {
                        TaskState::Running
                    } else if s & raw::SCHEDULED != 0 {
                        TaskState::Scheduled
                    } else {
                        TaskState::Waiting
                    },
                }
            })
            .collect()
    }
}

/// Wakes the main future of `block_on`.
struct MainWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
    loop_id: usize,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if context::current_loop_id() != self.loop_id {
            self.shared.notify();
        }
    }
}

/// Runs the loop until `fut` completes (or, with `None`, until stopped).
pub(crate) fn block_on<F: Future>(inner: &Rc<LoopInner>, fut: F) -> F::Output {
    let _guard = match context::enter(inner) {
        Ok(g) => g,
        Err(msg) => panic!("{msg}"),
    };
    inner.running.set(true);
    struct NotRunning<'a>(&'a LoopInner);
    impl Drop for NotRunning<'_> {
        fn drop(&mut self) {
            self.0.running.set(false);
        }
    }
    let _nr = NotRunning(inner);
    let main = Arc::new(MainWaker {
        woken: AtomicBool::new(true),
        shared: inner.shared.clone(),
        loop_id: inner.id(),
    });
    let waker = Waker::from(main.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if main.woken.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
        let woken = || main.woken.load(Ordering::Acquire);
        if let Err(e) = inner.run_once(&woken) {
            panic!("uringio: the driver failed: {e}");
        }
    }
}

/// Runs the loop until `stop()` is called.
pub(crate) fn run_until_stopped(inner: &Rc<LoopInner>) {
    let _guard = match context::enter(inner) {
        Ok(g) => g,
        Err(msg) => panic!("{msg}"),
    };
    inner.running.set(true);
    // A `stop()` made before `run_forever` is kept: like asyncio, the loop
    // then runs one iteration (I/O polled with a zero timeout) and returns.
    let stop_pending = || inner.stopping.get() || inner.shared.stop.load(Ordering::Relaxed);
    loop {
        if let Err(e) = inner.run_once(&stop_pending) {
            inner.running.set(false);
            panic!("uringio: the driver failed: {e}");
        }
        if inner.stopping.get() || inner.shared.stop.swap(false, Ordering::AcqRel) {
            break;
        }
    }
    inner.stopping.set(false);
    inner.running.set(false);
}

/// Enters the loop's context to tear it down: cancel the tasks and let the
/// driver settle.
pub(crate) fn shutdown(inner: &Rc<LoopInner>) {
    inner.signals.close();
    match context::enter(inner) {
        Ok(_g) => inner.cancel_all(),
        Err(_) => inner.cancel_all(),
    }
    inner.shared.close();
    inner.pool.shutdown();
}
