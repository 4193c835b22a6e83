//! The driver: one description of each operation, two interpreters.
//!
//! ```text
//!   Op<T: OpCode> ──▶ Driver ──┬── uring: T::sqe() into the SQ, CQE → slot → waker
//!                              └── epoll: T::perform() now; on EAGAIN wait for
//!                                  readiness and retry; file ops on the blocking pool
//! ```
//! The loop sees only `Driver`: `park(timeout)` submits everything queued and
//! waits for completions in one system call. The driver is a leaf: it knows
//! ops, rings, epoll and the blocking pool, and nothing of the scheduler,
//! tasks or the loop. Whoever runs a loop makes its driver the thread's
//! `current` one while it runs (ops go to it), and gives the driver an
//! `Unpark` hook to wake the loop when a blocking-pool job finishes.
//!
//! Public items here: [`Features`] (what the kernel supports, probed once per
//! loop), [`stats`] (counters), [`Canceller`] (ends an op early but still
//! hands back its result and buffer) and [`submit_raw`] (the escape hatch for
//! raw SQEs on io_uring).

pub(crate) mod blocking;
pub(crate) mod bufring;
pub(crate) mod direct;
pub(crate) mod epoll;
pub(crate) mod fixedbuf;
pub(crate) mod op;
#[cfg(test)]
mod tests;
pub(crate) mod uring;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

pub(crate) use epoll::fd_closing;
pub use op::link::{Eager, eager, submit};
pub use op::{Cancellable, Canceller, submit_raw};

thread_local! {
    /// The driver of the loop running on this thread.
    static CURRENT: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
}

/// The driver ops on this thread go to: the running loop's.
pub(crate) fn current() -> Option<Rc<Driver>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the current driver, if there is one, without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(&Rc<Driver>) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow().as_ref().map(f))
}

/// Makes `d` the thread's current driver; returns the previous one. Called
/// by whoever runs a loop, when it starts and when it stops.
pub(crate) fn set_current(d: Option<Rc<Driver>>) -> Option<Rc<Driver>> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), d))
}

/// How the driver wakes its loop from another thread (a blocking-pool
/// job finished). The loop's owner implements it; it must make the loop's
/// next park return promptly (e.g. write the wake eventfd if it sleeps).
pub(crate) trait Unpark: Send + Sync + 'static {
    /// Wakes the loop.
    fn unpark(&self);
}

use blocking::BlockingPool;

/// Which driver a loop runs on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring if the kernel and sandbox allow it, else epoll. The
    /// environment variable `URINGIO_BACKEND=io_uring|epoll|auto` overrides.
    #[default]
    Auto,
    /// io_uring, or an error if it is unavailable.
    IoUring,
    /// epoll (readiness), with file ops on the blocking pool.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// What the kernel and the chosen backend support, probed once when a loop
/// starts. On epoll every io_uring feature reads `false`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Features {
    /// `true` on io_uring, `false` on epoll.
    pub io_uring: bool,
    /// The kernel release, from `uname` (e.g. `"6.18.44"`).
    pub kernel: String,
    /// Setup flags the ring was created with (`SINGLE_ISSUER`, `DEFER_TASKRUN`,
    /// `COOP_TASKRUN`, `TASKRUN_FLAG`, `SQPOLL`).
    pub setup_flags: Vec<&'static str>,
    /// Setup flags the kernel refused and that were dropped.
    pub dropped_flags: Vec<&'static str>,
    /// Submission queue size.
    pub sq_entries: u32,
    /// Completion queue size.
    pub cq_entries: u32,
    /// `IORING_FEAT_NODROP` (5.5): completions are never dropped on CQ overflow.
    pub nodrop: bool,
    /// `IORING_FEAT_EXT_ARG` (5.11): wait with a timeout in `io_uring_enter`.
    pub ext_arg: bool,
    /// Multishot accept (5.19).
    pub multishot_accept: bool,
    /// Multishot receive with provided buffers (6.0): inferred from
    /// `IORING_OP_SEND_ZC` (same release) and a working buffer ring.
    /// `false` when buffer rings are emulated (see `buf_ring`).
    pub recv_multishot: bool,
    /// Provided-buffer rings, `IORING_REGISTER_PBUF_RING` (5.19), probed
    /// by registering a one-entry ring at set-up. `false` on epoll, and
    /// when forced off (`URINGIO_BUF_RING=emulate`, or the builder's
    /// hidden `emulate_buf_ring`): [`BufRing`](crate::buf::BufRing)s are
    /// then emulated in user space.
    pub buf_ring: bool,
    /// `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
    /// `IORING_OP_SPLICE` (5.7); without it `net::splice` makes the
    /// system call itself.
    pub splice: bool,
    /// `IORING_OP_MSG_RING` (5.18).
    pub msg_ring: bool,
    /// `IORING_OP_WAITID` (6.7).
    pub waitid: bool,
    /// Size of the registered-file table (sparse registration, 5.19) that
    /// busy sockets are put in, so their ops skip the per-op fd lookup;
    /// 0 on epoll or when the kernel refused it.
    pub fixed_files: u32,
    /// `IORING_OP_FTRUNCATE` (6.9).
    pub ftruncate: bool,
}

/// Counters of the current loop's driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Submission queue entries handed to the kernel (io_uring).
    pub sqes_submitted: u64,
    /// Completion queue entries reaped (io_uring).
    pub cqes_reaped: u64,
    /// `io_uring_enter` calls (io_uring) or `epoll_wait` calls (epoll).
    pub enter_calls: u64,
    /// Times the kernel reported a completion queue overflow (io_uring).
    pub cq_overflows: u64,
    /// Ops sent to the blocking pool (epoll file ops).
    pub blocking_ops: u64,
    /// File reads done on the loop thread without the pool (epoll: the
    /// data was in the page cache, `preadv2(RWF_NOWAIT)`).
    pub nonblocking_ops: u64,
    /// Sockets and files in the ring's registered-file table right now
    /// (io_uring; busy sockets and [`RegisteredFile`](crate::fs::RegisteredFile)s
    /// are registered, see [`Features::fixed_files`]).
    pub registered_files: u64,
    /// Ops cancelled whose final completion has not been reaped yet
    /// (io_uring): the cancellation backlog, kept small while the loop
    /// runs.
    pub cancels_in_flight: u64,
    /// Ops waiting for readiness right now (epoll): one per op that got
    /// `EAGAIN` and has not completed or been dropped.
    pub readiness_waiters: u64,
    /// Times a receive into a [`BufRing`](crate::buf::BufRing) found it
    /// empty: an `ENOBUFS` completion on io_uring (the receive is re-armed
    /// once a buffer is back), or, when emulated, a wait for a free
    /// buffer.
    pub buf_ring_empty: u64,
    /// Wake-ups this loop sent to other io_uring loops with
    /// `IORING_OP_MSG_RING` instead of writing their eventfd (see
    /// uring-sys-notes/msg-ring.md).
    pub msg_ring_wakes: u64,
}

/// The counters of the loop running on this thread.
///
/// # Panics
/// Outside a running loop.
pub fn stats() -> Stats {
    with_current(|d| d.stats()).expect("driver::stats() called outside a running uringio loop")
}

/// The features of the loop running on this thread.
///
/// # Panics
/// Outside a running loop.
pub fn features() -> Features {
    with_current(|d| d.features.clone())
        .expect("driver::features() called outside a running uringio loop")
}

/// Settings the runtime builder passes down.
#[derive(Debug, Clone)]
pub(crate) struct DriverConfig {
    pub backend: Backend,
    pub entries: u32,
    pub sqpoll: Option<Duration>,
    /// A simulated `io_uring_setup` failure (`EPERM`, `ENOSYS`, `EINVAL`,
    /// `ENOMEM`, `disabled`), for tests of the fallback.
    pub simulate_failure: Option<String>,
    /// The loop's default buffer ring: (entries, buffer size).
    pub buf_ring: (u32, usize),
    /// Emulate buffer rings even where the kernel has them.
    pub buf_ring_emulate: bool,
    /// Wake other io_uring loops with `MSG_RING` where probed (else
    /// always their eventfd).
    pub msg_ring: bool,
}

/// The default buffer ring's shape: 256 buffers of 4 KiB (1 MiB per loop).
pub(crate) const DEFAULT_BUF_RING: (u32, usize) = (256, 4096);

// The io_uring variant is larger; boxing it would add a pointer chase on
// every op for no gain (there is exactly one driver per loop).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backends {
    Uring(uring::Uring),
    Epoll(epoll::Epoll),
}

/// The loop's driver: the facade over both backends.
pub(crate) struct Driver {
    pub(crate) inner: RefCell<Backends>,
    /// Wakers collected while `inner` was borrowed, run once it is not
    /// (a waker may run arbitrary code, e.g. drop a socket).
    wake: RefCell<Vec<Waker>>,
    pub(crate) features: Features,
    pub(crate) stats: Cell<Stats>,
    pub(crate) kind: Backend,
    pub(crate) fallback_reason: Option<String>,
    /// Shape of the default buffer group.
    pub(crate) buf_ring_shape: (u32, usize),
    /// The loop's default buffer group, made on first use. Declared after
    /// `inner` so the ring is closed first when the driver goes.
    pub(crate) default_group: RefCell<Option<Rc<bufring::BufGroup>>>,
    /// The registered-buffer table (io_uring; see [`fixedbuf`]).
    pub(crate) fixed_bufs: RefCell<fixedbuf::BufTable>,
    /// Cross-loop wake-ups go by `MSG_RING` (io_uring, probed, not
    /// switched off): this loop sends them, and others may send it them.
    pub(crate) msg_ring: bool,
}

pub(crate) use uring::MsgTarget;

/// Wakes the io_uring loop `t` with a `MSG_RING` from the loop running on
/// this thread, if that loop is on io_uring with `MSG_RING` on and its
/// driver is free. The message goes with that loop's next
/// `io_uring_enter` (its next park, or when it stops running). `false`:
/// nothing was sent, wake the target another way.
pub(crate) fn send_msg(t: &Arc<MsgTarget>) -> bool {
    with_current(|d| d.send_msg(t)).unwrap_or(false)
}

impl Driver {
    /// Builds the driver the config asks for. `Auto` falls back to epoll on
    /// set-up refusals, recording why.
    pub(crate) fn new(
        cfg: &DriverConfig,
        wake_fd: RawFd,
        unpark: Arc<dyn Unpark>,
        pool: &Arc<BlockingPool>,
    ) -> io::Result<Driver> {
        let kernel = kernel_release();
        let want = match cfg.backend {
            Backend::Auto => match std::env::var("URINGIO_BACKEND").ok().as_deref() {
                Some("io_uring") | Some("iouring") | Some("uring") => Backend::IoUring,
                Some("epoll") => Backend::Epoll,
                Some("auto") | Some("") | None => Backend::Auto,
                Some(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("URINGIO_BACKEND={other:?} is not one of io_uring, epoll, auto"),
                    ));
                }
            },
            b => b,
        };
        let mut cfg = cfg.clone();
        match std::env::var("URINGIO_BUF_RING").ok().as_deref() {
            Some("emulate") | Some("emulated") => cfg.buf_ring_emulate = true,
            Some("kernel") | Some("auto") | Some("") | None => {}
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("URINGIO_BUF_RING={other:?} is not one of emulate, auto"),
                ));
            }
        }
        bufring::check_shape(cfg.buf_ring.0, cfg.buf_ring.1)?;
        let cfg = &cfg;
        let simulate = cfg
            .simulate_failure
            .clone()
            .or_else(|| std::env::var("URINGIO_SIMULATE_SETUP_ERROR").ok())
            .filter(|s| !s.is_empty());
        let mut fallback_reason = None;
        if want != Backend::Epoll {
            match uring::Uring::new(cfg, wake_fd, simulate.as_deref()) {
                Ok((u, mut features)) => {
                    features.kernel = kernel;
                    return Ok(Driver {
                        inner: RefCell::new(Backends::Uring(u)),
                        wake: RefCell::new(Vec::new()),
                        stats: Cell::new(Stats::default()),
                        kind: Backend::IoUring,
                        fallback_reason: None,
                        buf_ring_shape: cfg.buf_ring,
                        default_group: RefCell::new(None),
                        fixed_bufs: RefCell::default(),
                        msg_ring: features.msg_ring && cfg.msg_ring && msg_ring_allowed(),
                        features,
                    });
                }
                Err(uring::SetupError::Refused(reason)) => {
                    if want == Backend::IoUring {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!("io_uring was asked for but is unavailable: {reason}"),
                        ));
                    }
                    log::info!("uringio: io_uring unavailable ({reason}); using epoll");
                    fallback_reason = Some(reason);
                }
                Err(uring::SetupError::Io(e)) => return Err(e),
            }
        }
        let e = epoll::Epoll::new(wake_fd, unpark, pool.clone())?;
        Ok(Driver {
            inner: RefCell::new(Backends::Epoll(e)),
            wake: RefCell::new(Vec::new()),
            features: Features {
                kernel,
                ..Features::default()
            },
            stats: Cell::new(Stats::default()),
            kind: Backend::Epoll,
            fallback_reason,
            buf_ring_shape: cfg.buf_ring,
            default_group: RefCell::new(None),
            fixed_bufs: RefCell::default(),
            msg_ring: false,
        })
    }

    /// A [`MsgTarget`] for this loop (io_uring with `MSG_RING` on), so
    /// other loops can wake it with `MSG_RING`; `wake` is its eventfd.
    pub(crate) fn msg_target(&self, wake: &Arc<std::os::fd::OwnedFd>) -> Option<Arc<MsgTarget>> {
        if !self.msg_ring {
            return None;
        }
        match &*self.inner.borrow() {
            Backends::Uring(u) => match u.msg_target(wake) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    log::debug!("uringio: no MSG_RING wake-ups for this loop: {e}");
                    None
                }
            },
            Backends::Epoll(_) => None,
        }
    }

    /// See [`send_msg`].
    fn send_msg(&self, t: &Arc<MsgTarget>) -> bool {
        if !self.msg_ring {
            return false;
        }
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return false;
        };
        let sent = match &mut *inner {
            Backends::Uring(u) => u.send_msg(t),
            Backends::Epoll(_) => false,
        };
        drop(inner);
        if sent {
            self.bump(|s| s.msg_ring_wakes += 1);
        }
        sent
    }

    /// Hands queued `MSG_RING` wake-ups to the kernel now: the loop stops
    /// running and will not park soon.
    pub(crate) fn flush_msgs(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if let Backends::Uring(u) = &mut *inner {
                u.flush_sq();
            }
        }
    }

    /// The counters, with the gauges read from the backend now.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats.get();
        match &*self.inner.borrow() {
            Backends::Uring(u) => s.cancels_in_flight = u.cancelling() as u64,
            Backends::Epoll(e) => s.readiness_waiters = e.waiters() as u64,
        }
        s
    }

    pub(crate) fn is_uring(&self) -> bool {
        self.kind == Backend::IoUring
    }

    /// Submits what is queued and waits up to `timeout` (`None`: until
    /// something happens) for completions, waking their ops.
    pub(crate) fn park(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut stats = self.stats.get();
        let mut wake = std::mem::take(&mut *self.wake.borrow_mut());
        let mut garbage: Vec<Box<dyn Any>> = Vec::new();
        let r = match &mut *self.inner.borrow_mut() {
            Backends::Uring(u) => u.park(timeout, &mut stats, &mut wake, &mut garbage),
            Backends::Epoll(e) => e.park(timeout, &mut stats, &mut wake, &mut garbage),
        };
        self.stats.set(stats);
        // Abandoned ops' buffers are dropped, and wakers run, with the
        // driver released, in case they reach back into the loop.
        drop(garbage);
        for w in wake.drain(..) {
            w.wake();
        }
        *self.wake.borrow_mut() = wake;
        r
    }

    /// Whether the kernel has something for us or we for it (io_uring:
    /// unsubmitted SQEs or unreaped CQEs; epoll: finished pool jobs), so a
    /// busy loop must still park.
    pub(crate) fn has_queued_work(&self) -> bool {
        match &mut *self.inner.borrow_mut() {
            Backends::Uring(u) => u.has_queued_work(),
            Backends::Epoll(e) => e.has_reports(),
        }
    }

    /// Cancels io_uring op `key` (a [`Canceller`] fired).
    pub(crate) fn cancel_uring(&self, key: usize) {
        let mut wake = Vec::new();
        if let Backends::Uring(u) = &mut *self.inner.borrow_mut() {
            u.cancel(key);
            u.take_woken(&mut wake);
        }
        for w in wake {
            w.wake();
        }
    }

    /// Takes io_uring op `key` back for another driver: `None` if it did
    /// nothing here (never submitted, or cancelled before it did
    /// anything: `ECANCELED`), else its completion. An op in flight is
    /// cancelled and this loop's ring is driven until its CQE comes (the
    /// loop is not running: loops on one thread run one at a time).
    pub(crate) fn detach_uring(&self, key: usize) -> Option<(i32, u32)> {
        let started = std::time::Instant::now();
        let mut warned = false;
        loop {
            let r = match &mut *self.inner.borrow_mut() {
                Backends::Uring(u) => u.detach(key),
                Backends::Epoll(_) => Ok(Some((-libc::EIO, 0))),
            };
            match r {
                Ok(None) => return None,
                Ok(Some((res, _))) if res == -libc::ECANCELED => return None,
                Ok(Some(c)) => return Some(c),
                Err(()) => {
                    if !warned && started.elapsed() > Duration::from_secs(1) {
                        warned = true;
                        log::warn!(
                            "uringio: an op moving between loops waits for its cancellation"
                        );
                    }
                    if let Err(e) = self.park(Some(Duration::from_millis(10))) {
                        log::warn!("uringio: driving a ring to take an op back: {e}");
                    }
                }
            }
        }
    }

    /// Registers `fd` in the ring's file table (io_uring only).
    pub(crate) fn register_file(&self, fd: RawFd) -> Option<u32> {
        let slot = match &mut *self.inner.borrow_mut() {
            Backends::Uring(u) => u.register_file(fd),
            Backends::Epoll(_) => None,
        };
        if slot.is_some() {
            self.bump(|s| s.registered_files += 1);
        }
        slot
    }

    /// Gives a registered-file slot back; call before closing its fd.
    pub(crate) fn unregister_file(&self, slot: u32) {
        if let Backends::Uring(u) = &mut *self.inner.borrow_mut() {
            u.unregister_file(slot);
        }
        self.bump(|s| s.registered_files = s.registered_files.saturating_sub(1));
    }

    pub(crate) fn bump(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

/// Registers interest in `fd` becoming ready (epoll only): used by ops.
/// `token` names the waiter (see [`epoll::Epoll::wait_ready`]).
pub(crate) fn epoll_wait_ready(
    driver: &Driver,
    fd: i32,
    write: bool,
    waker: &Waker,
    token: &mut Option<u64>,
) -> io::Result<()> {
    match &mut *driver.inner.borrow_mut() {
        Backends::Epoll(e) => e.wait_ready(fd, write, waker, token),
        Backends::Uring(_) => Ok(()),
    }
}

/// Removes the readiness waiter `token` from `fd` (epoll only).
pub(crate) fn epoll_unwait(driver: &Driver, fd: i32, write: bool, token: u64) {
    if let Backends::Epoll(e) = &mut *driver.inner.borrow_mut() {
        e.unwait(fd, write, token);
    }
}

/// Whether a stream read on `fd` drained it and no readiness edge came
/// since (epoll only).
pub(crate) fn epoll_read_drained(driver: &Driver, fd: i32) -> bool {
    match &*driver.inner.borrow() {
        Backends::Epoll(e) => e.read_drained(fd),
        Backends::Uring(_) => false,
    }
}

/// A stream read on `fd` drained it: wait for input, skipping reads until
/// it comes (epoll only; see [`epoll::Epoll::drained_wait`]). Whether the
/// fd was marked drained (`false`: read again, no edge is to come).
pub(crate) fn epoll_drained_wait(
    driver: &Driver,
    fd: i32,
    waker: &Waker,
    token: &mut Option<u64>,
) -> io::Result<bool> {
    match &mut *driver.inner.borrow_mut() {
        Backends::Epoll(e) => e.drained_wait(fd, waker, token),
        Backends::Uring(_) => Ok(false),
    }
}

/// A stream read on `fd` returned less than it asked for (epoll only).
pub(crate) fn epoll_mark_read_drained(driver: &Driver, fd: i32) {
    if let Backends::Epoll(e) = &mut *driver.inner.borrow_mut() {
        e.mark_read_drained(fd);
    }
}

/// `URINGIO_MSG_RING=off` (or `0`) switches `MSG_RING` wake-ups off.
fn msg_ring_allowed() -> bool {
    !matches!(
        std::env::var("URINGIO_MSG_RING").ok().as_deref(),
        Some("off") | Some("0") | Some("eventfd")
    )
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
