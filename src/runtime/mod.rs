//! The event loop: runners (`asyncio.run`, `asyncio.Runner`), the loop's
//! low-level methods ([`EventLoop`]), and the way in from other threads
//! ([`LoopHandle`]).

pub(crate) mod context;
mod handle;
pub(crate) mod scheduler;
mod threads;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use handle::{LoopHandle, RemoteTask};
pub use threads::CoreContext;

pub use crate::driver::Backend;
use crate::driver::blocking::BlockingPool;
use crate::driver::{Driver, DriverConfig};
use crate::task::TaskId;
use scheduler::{LoopInner, Settings, Shared};

/// Builds a [`Runner`]: the loop factory, per thread.
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    backend: Backend,
    sqpoll: Option<Duration>,
    debug: Option<bool>,
    slow: Duration,
    blocking_threads: usize,
    simulate_failure: Option<String>,
    buf_ring: (u32, usize),
    buf_ring_emulate: bool,
    msg_ring: bool,
    pub(crate) tpc: threads::TpcConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            entries: 1024,
            backend: Backend::Auto,
            sqpoll: None,
            debug: None,
            slow: Duration::from_millis(100),
            blocking_threads: 64,
            simulate_failure: None,
            buf_ring: crate::driver::DEFAULT_BUF_RING,
            buf_ring_emulate: false,
            msg_ring: true,
            tpc: threads::TpcConfig::default(),
        }
    }
}

impl Builder {
    /// A builder with the defaults: `Backend::Auto`, 1024 SQ entries
    /// (CQ 4×), 16 blocking threads, debug off (unless `URINGIO_DEBUG=1`).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Submission queue size of the io_uring backend: `n` rounded up to
    /// a power of two, at least 8 (the loop's own requests need room);
    /// the completion queue gets 4× as many entries (the kernel clamps it
    /// to 65536). Both sizes are in [`Features`](crate::driver::Features)
    /// (`sq_entries`, `cq_entries`). 0 or more than 32768 (the kernel's
    /// limit) makes [`build`](Self::build) fail with `InvalidInput`.
    /// Ignored by the epoll backend.
    pub fn entries(mut self, n: u32) -> Builder {
        self.entries = n;
        self
    }

    /// Which driver to use.
    pub fn backend(mut self, b: Backend) -> Builder {
        self.backend = b;
        self
    }

    /// Use a kernel submission thread (`IORING_SETUP_SQPOLL`) idling after
    /// the given time; `None` (the default) disables it.
    pub fn sqpoll(mut self, idle: Option<Duration>) -> Builder {
        self.sqpoll = idle;
        self
    }

    /// Debug mode: report slow callbacks and polls, unretrieved task panics
    /// and tasks pending at close, through the `log` facade.
    pub fn debug(mut self, on: bool) -> Builder {
        self.debug = Some(on);
        self
    }

    /// The threshold for "slow" in debug mode (default 100 ms).
    pub fn slow_callback_duration(mut self, d: Duration) -> Builder {
        self.slow = d;
        self
    }

    /// The most threads the blocking pool starts (default 64; threads start
    /// on demand and exit after a while idle). Bounds how many blocking
    /// file ops (all of them on epoll, `O_DIRECT` ones included) run at once.
    pub fn blocking_threads(mut self, n: usize) -> Builder {
        self.blocking_threads = n.max(1);
        self
    }

    /// Makes the io_uring probe fail as if `io_uring_setup` had returned
    /// `what` (`"EPERM"`, `"ENOSYS"`, `"EINVAL"`, `"disabled"`, `"memlock"`
    /// fall back; `"ENOMEM"` surfaces), or, with
    /// `"missing-opcode:IORING_OP_X"`, set the ring up and then treat
    /// opcode `X` as absent from the kernel's probe (a required one falls
    /// back with "opcode IORING_OP_X missing"; an optional one only turns
    /// its feature off). For testing the fallback; the environment variable
    /// `URINGIO_SIMULATE_SETUP_ERROR` does the same.
    pub fn simulate_setup_error(mut self, what: &str) -> Builder {
        self.simulate_failure = Some(what.to_string());
        self
    }

    /// The shape of the loop's default provided-buffer ring, which the
    /// loop's connections share for their receives: `entries` buffers (a
    /// power of two, at most 32768) of `buf_size` bytes, made on first
    /// use. The default, 256 × 4 KiB, is 1 MiB per loop: a 4 KiB buffer
    /// holds a typical request and a page of bulk data, and 256 of them
    /// cover the bursts of a few dozen busy connections before the ring
    /// runs empty (which only slows receives down: they wait for buffers
    /// to come back and lose nothing). Checked by [`build`](Self::build).
    pub fn buf_ring(mut self, entries: u32, buf_size: usize) -> Builder {
        self.buf_ring = (entries, buf_size);
        self
    }

    /// Emulates provided-buffer rings in user space even where the kernel
    /// has them, as on epoll (for testing the fallback; the environment
    /// variable `URINGIO_BUF_RING=emulate` does the same).
    #[doc(hidden)]
    pub fn emulate_buf_ring(mut self, on: bool) -> Builder {
        self.buf_ring_emulate = on;
        self
    }

    /// Whether other threads (running io_uring loops) wake this loop, and
    /// this loop wakes other io_uring loops, with `IORING_OP_MSG_RING`
    /// where the kernel has it (default on); off, every cross-thread
    /// wake-up writes the target's eventfd. For testing and measuring the
    /// fallback; the environment variable `URINGIO_MSG_RING=off` does the
    /// same. See uring-sys-notes/msg-ring.md.
    #[doc(hidden)]
    pub fn msg_ring(mut self, on: bool) -> Builder {
        self.msg_ring = on;
        self
    }

    /// Builds the loop on this thread.
    pub fn build(&self) -> io::Result<Runner> {
        if self.entries == 0 || self.entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Builder::entries({}): the submission queue size must be 1..=32768",
                    self.entries
                ),
            ));
        }
        let shared = Shared::new()?;
        let pool = BlockingPool::new(self.blocking_threads);
        let cfg = DriverConfig {
            backend: self.backend,
            entries: self.entries,
            sqpoll: self.sqpoll,
            simulate_failure: self.simulate_failure.clone(),
            buf_ring: self.buf_ring,
            buf_ring_emulate: self.buf_ring_emulate,
            msg_ring: self.msg_ring,
        };
        let driver = Driver::new(&cfg, shared.wake_fd(), shared.clone(), &pool)?;
        if let Some(t) = driver.msg_target(shared.eventfd()) {
            shared.set_msg_target(t);
        }
        let debug = self.debug.unwrap_or_else(|| {
            std::env::var("URINGIO_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0")
        });
        let inner = LoopInner::new(
            shared,
            driver,
            pool,
            Settings {
                debug,
                slow: self.slow,
            },
        );
        Ok(Runner { inner })
    }
}

/// A reusable loop (`asyncio.Runner`). Dropping it cancels the tasks left
/// and closes the loop.
pub struct Runner {
    inner: Rc<LoopInner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("backend", &self.backend())
            .field("fallback_reason", &self.fallback_reason())
            .finish()
    }
}

impl Runner {
    /// A loop with the default settings.
    pub fn new() -> io::Result<Runner> {
        Builder::new().build()
    }

    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Runs `fut` to completion on this loop. Tasks it spawned and left
    /// running stay on the loop (they run again in the next `run`).
    ///
    /// # Panics
    /// If a loop is already running on this thread.
    pub fn run<F: Future>(&mut self, fut: F) -> F::Output {
        scheduler::block_on(&self.inner, fut)
    }

    /// Runs the loop until [`EventLoop::stop`] or [`LoopHandle::stop`].
    pub fn run_forever(&mut self) {
        scheduler::run_until_stopped(&self.inner)
    }

    /// The backend actually chosen.
    pub fn backend(&self) -> Backend {
        self.inner.driver.kind
    }

    /// Why `Backend::Auto` chose epoll, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.inner.driver.fallback_reason.as_deref()
    }

    /// What the kernel supports, as probed for this loop.
    pub fn features(&self) -> &crate::driver::Features {
        &self.inner.driver.features
    }

    /// A handle to this loop (usable before and between runs).
    pub fn event_loop(&self) -> EventLoop {
        EventLoop {
            inner: self.inner.clone(),
        }
    }

    /// The thread-safe handle to this loop.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.inner.shared.clone())
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        scheduler::shutdown(&self.inner);
    }
}

/// Runs `fut` on a new loop on this thread (`Backend::Auto`), then cancels
/// the tasks left and closes the loop, like `asyncio.run`.
///
/// # Panics
/// If the loop cannot be created, or a loop is already running here.
pub fn run<F: Future>(fut: F) -> F::Output {
    let mut r = match Runner::new() {
        Ok(r) => r,
        Err(e) => panic!("uringio::run: cannot create the event loop: {e}"),
    };
    r.run(fut)
}

/// The loop running on this thread.
///
/// # Panics
/// Outside a running loop (`asyncio.get_running_loop` raises too).
pub fn get_running_loop() -> EventLoop {
    try_running_loop().expect("no uringio loop is running on this thread")
}

/// The loop running on this thread, if any.
pub fn try_running_loop() -> Option<EventLoop> {
    context::current().map(|inner| EventLoop { inner })
}

/// What the exception handler is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExceptionContext {
    /// A description of what went wrong.
    pub message: String,
    /// The task concerned, if any.
    pub task_id: Option<TaskId>,
    /// The panic message, if the error was a panic.
    pub panic_message: Option<String>,
}

/// One entry of [`all_tasks`](crate::task::all_tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// What it is doing.
    pub state: TaskState,
}

/// The state of a live task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskState {
    /// Being polled right now.
    Running,
    /// Queued to be polled.
    Scheduled,
    /// Waiting for a wake-up (I/O, timer, another task).
    Waiting,
}

/// A handle to a loop on this thread (`asyncio.AbstractEventLoop`). Cheap
/// to clone; `!Send`.
#[derive(Clone)]
pub struct EventLoop {
    pub(crate) inner: Rc<LoopInner>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("backend", &self.inner.driver.kind)
            .field("running", &self.inner.running.get())
            .finish()
    }
}

/// A callback scheduled with [`EventLoop::call_soon`].
#[derive(Debug, Clone)]
pub struct Handle {
    cancelled: Rc<Cell<bool>>,
}

impl Handle {
    /// Cancels the callback if it has not run yet.
    pub fn cancel(&self) {
        self.cancelled.set(true);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.cancelled.get()
    }
}

/// A callback scheduled with [`EventLoop::call_later`] / [`EventLoop::call_at`].
#[derive(Debug, Clone)]
pub struct TimerHandle {
    key: crate::time::timers::TimerKey,
    cancelled: Rc<Cell<bool>>,
    inner: std::rc::Weak<LoopInner>,
}

impl TimerHandle {
    /// Cancels the callback if it has not run yet.
    pub fn cancel(&self) {
        self.cancelled.set(true);
        if let Some(l) = self.inner.upgrade() {
            l.timers.borrow_mut().remove(self.key);
        }
    }

    /// When the callback is due.
    pub fn when(&self) -> Instant {
        self.key.0
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.cancelled.get()
    }
}

impl EventLoop {
    /// Runs `f` on the loop soon: after the ready tasks of the current
    /// iteration, in FIFO order with other callbacks.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) -> Handle {
        let cancelled = Rc::new(Cell::new(false));
        self.inner
            .callbacks
            .borrow_mut()
            .push_back(scheduler::Callback {
                cancelled: cancelled.clone(),
                f: Box::new(f),
            });
        Handle { cancelled }
    }

    /// Runs `f` after `d` (a duration past
    /// [`time::FAR_FUTURE`](crate::time::FAR_FUTURE) is saturated to it).
    pub fn call_later(&self, d: Duration, f: impl FnOnce() + 'static) -> TimerHandle {
        self.call_at(crate::time::deadline_after(d), f)
    }

    /// Runs `f` at `t` (or soon after).
    pub fn call_at(&self, t: Instant, f: impl FnOnce() + 'static) -> TimerHandle {
        let cancelled = Rc::new(Cell::new(false));
        let c = cancelled.clone();
        let key = self.inner.timers.borrow_mut().insert_call(
            t,
            Box::new(move || {
                if !c.get() {
                    f()
                }
            }),
        );
        TimerHandle {
            key,
            cancelled,
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// The loop's clock.
    pub fn time(&self) -> Instant {
        Instant::now()
    }

    /// Stops `run_forever` after the current iteration.
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    /// Whether the loop is running.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// The thread-safe handle to this loop.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.inner.shared.clone())
    }

    /// The backend this loop runs on.
    pub fn backend(&self) -> Backend {
        self.inner.driver.kind
    }

    /// Runs `f` on the blocking pool; resolves to its result.
    ///
    /// A panic in `f` is re-raised when the future is awaited.
    pub fn run_in_executor<T, F>(&self, f: F) -> impl Future<Output = T> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = handle::Oneshot::new();
        let tx = slot.clone();
        self.inner.pool.spawn(Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            tx.set(r);
        }));
        async move {
            match slot.await {
                Some(Ok(v)) => v,
                Some(Err(p)) => std::panic::resume_unwind(p),
                None => panic!("run_in_executor: the blocking pool dropped the job"),
            }
        }
    }

    /// Resolves `host:port` on the blocking pool.
    pub async fn getaddrinfo(
        &self,
        host: &str,
        port: u16,
    ) -> io::Result<Vec<std::net::SocketAddr>> {
        let host = host.to_string();
        self.run_in_executor(move || {
            use std::net::ToSocketAddrs;
            (host.as_str(), port).to_socket_addrs().map(|i| i.collect())
        })
        .await
    }

    /// Calls `f` (with `call_soon`) each time the loop receives signal
    /// `sig`, replacing the handler `sig` had (`loop.add_signal_handler`).
    /// `sig` is blocked on this thread meanwhile; see [`crate::signal`] for
    /// how delivery works and what other threads should do.
    ///
    /// # Errors
    /// `InvalidInput` for a number that is not a signal or cannot be handled
    /// (`SIGKILL`, `SIGSTOP`, `SIGSEGV`, …); an error if the signalfd cannot
    /// be created or the loop is closed.
    pub fn add_signal_handler(&self, sig: i32, f: impl Fn() + 'static) -> io::Result<()> {
        crate::signal::add_handler(&self.inner, sig, Rc::new(f))
    }

    /// Removes the handler of `sig`; returns whether there was one. When
    /// nothing else on the loop handles `sig`, the thread's mask is
    /// restored and the signal has its usual effect again.
    pub fn remove_signal_handler(&self, sig: i32) -> bool {
        crate::signal::remove_handler(&self.inner, sig)
    }

    /// Sets the handler for errors nobody else sees (unretrieved task
    /// panics and the like). Without one they are logged.
    pub fn set_exception_handler(&self, f: impl Fn(&ExceptionContext) + 'static) {
        *self.inner.exception_handler.borrow_mut() = Some(Rc::new(f));
    }

    /// Debug mode on or off.
    pub fn set_debug(&self, on: bool) {
        self.inner.debug.set(on);
    }

    /// Whether debug mode is on.
    pub fn get_debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// What the kernel supports, as probed for this loop.
    pub fn features(&self) -> crate::driver::Features {
        self.inner.driver.features.clone()
    }
}

// The ways in from other threads must stay `Send + Sync` (checked at
// compile time).
const _: fn() = || {
    fn is<T: Send + Sync>() {}
    is::<LoopHandle>();
    is::<Arc<Shared>>();
};
