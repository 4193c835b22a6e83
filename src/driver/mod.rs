//! The driver: one description of each operation, two interpreters.
//!
//! ```text
//!   Op<T: OpCode> ──▶ Driver ──┬── uring: T::sqe() into the SQ, CQE → slot → waker
//!                              └── epoll: T::perform() now; on EAGAIN wait for
//!                                  readiness and retry; file ops on the blocking pool
//! ```
//! The loop sees only `Driver`: `park(timeout)` submits everything queued and
//! waits for completions in one system call. Ops find the driver of the loop
//! they run on through the thread's loop context.
//!
//! Public items here: [`Features`] (what the kernel supports, probed once per
//! loop), [`stats`] (counters), [`Canceller`] (ends an op early but still
//! hands back its result and buffer) and [`submit_raw`] (the escape hatch for
//! raw SQEs on io_uring).

pub(crate) mod epoll;
pub(crate) mod op;
#[cfg(test)]
mod tests;
pub(crate) mod uring;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

pub use op::{Cancellable, Canceller, submit_raw};

use crate::runtime::Backend;
use crate::runtime::blocking::BlockingPool;
use crate::runtime::scheduler::Shared;

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
    /// Multishot receive with provided buffers (6.0).
    pub recv_multishot: bool,
    /// Provided-buffer rings, `IORING_REGISTER_PBUF_RING` (5.19).
    pub buf_ring: bool,
    /// `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
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
    /// Sockets in the ring's registered-file table right now (io_uring;
    /// busy sockets are registered, see [`Features::fixed_files`]).
    pub registered_files: u64,
}

/// The counters of the loop running on this thread.
///
/// # Panics
/// Outside a running loop.
pub fn stats() -> Stats {
    crate::runtime::context::with_driver(|d| d.stats.get())
}

/// The features of the loop running on this thread.
///
/// # Panics
/// Outside a running loop.
pub fn features() -> Features {
    crate::runtime::context::with_driver(|d| d.features.clone())
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
}

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
    pub(crate) features: Features,
    pub(crate) stats: Cell<Stats>,
    pub(crate) kind: Backend,
    pub(crate) fallback_reason: Option<String>,
}

impl Driver {
    /// Builds the driver the config asks for. `Auto` falls back to epoll on
    /// set-up refusals, recording why.
    pub(crate) fn new(
        cfg: &DriverConfig,
        shared: &Arc<Shared>,
        pool: &Arc<BlockingPool>,
    ) -> io::Result<Driver> {
        let wake_fd = shared.wake_fd();
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
                        features,
                        stats: Cell::new(Stats::default()),
                        kind: Backend::IoUring,
                        fallback_reason: None,
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
        let e = epoll::Epoll::new(wake_fd, shared.clone(), pool.clone())?;
        Ok(Driver {
            inner: RefCell::new(Backends::Epoll(e)),
            features: Features {
                kernel,
                ..Features::default()
            },
            stats: Cell::new(Stats::default()),
            kind: Backend::Epoll,
            fallback_reason,
        })
    }

    pub(crate) fn is_uring(&self) -> bool {
        self.kind == Backend::IoUring
    }

    /// Submits what is queued and waits up to `timeout` (`None`: until
    /// something happens) for completions, waking their ops.
    pub(crate) fn park(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut stats = self.stats.get();
        let garbage = match &mut *self.inner.borrow_mut() {
            Backends::Uring(u) => u.park(timeout, &mut stats)?,
            Backends::Epoll(e) => {
                e.park(timeout, &mut stats)?;
                Vec::new()
            }
        };
        self.stats.set(stats);
        // Abandoned ops' buffers are dropped with the driver released, in
        // case a buffer's destructor reaches back into the loop.
        drop(garbage);
        Ok(())
    }

    /// Whether the kernel has something for us or we for it (io_uring:
    /// unsubmitted SQEs or unreaped CQEs), so a busy loop must still park.
    pub(crate) fn has_queued_work(&self) -> bool {
        match &mut *self.inner.borrow_mut() {
            Backends::Uring(u) => u.has_queued_work(),
            Backends::Epoll(_) => false,
        }
    }

    /// Called on the loop thread when the blocking pool finished op `key`.
    pub(crate) fn complete_blocking(&self, key: usize, res: io::Result<usize>) {
        let garbage = match &mut *self.inner.borrow_mut() {
            Backends::Epoll(e) => e.complete_blocking(key, res),
            Backends::Uring(_) => None,
        };
        drop(garbage);
    }

    /// The caller is about to close `fd`: forget any readiness registered
    /// for it (epoll), so a later fd with the same number starts clean.
    pub(crate) fn forget_fd(&self, fd: i32) {
        if let Backends::Epoll(e) = &mut *self.inner.borrow_mut() {
            e.forget_fd(fd);
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
pub(crate) fn epoll_wait_ready(
    driver: &Driver,
    fd: i32,
    write: bool,
    waker: &Waker,
) -> io::Result<()> {
    match &mut *driver.inner.borrow_mut() {
        Backends::Epoll(e) => e.wait_ready(fd, write, waker),
        Backends::Uring(_) => Ok(()),
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

/// A stream read on `fd` returned less than it asked for (epoll only).
pub(crate) fn epoll_mark_read_drained(driver: &Driver, fd: i32) {
    if let Backends::Epoll(e) = &mut *driver.inner.borrow_mut() {
        e.mark_read_drained(fd);
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
