//! The system side of signal handling: the calling thread's signal mask,
//! and a `signalfd` that a loop reads with an ordinary read op.
//!
//! `crate::signal` decides *which* signals a loop handles; this file only
//! knows how to block them and how to read them:
//! - [`block`] / [`unblock`] change the calling thread's mask
//!   (`pthread_sigmask`); [`discard_pending`] takes pending instances of a
//!   signal off the thread and the process (`sigtimedwait` with a zero
//!   timeout) so unblocking it cannot run its default action;
//! - [`SignalFd`] owns the (non-blocking) descriptor. The loop waits for
//!   it with [`Readable`] (`IORING_OP_POLL_ADD` on io_uring, readiness on
//!   epoll), then reads the `signalfd_siginfo` records with a plain
//!   non-blocking `read` on the loop thread, until `EAGAIN`.
//!
//! Why not an `IORING_OP_READ` on the signalfd: a signalfd read dequeues
//! from the *reading thread's* pending set and the process's shared one.
//! Kernels whose signalfd lacks `FMODE_NOWAIT` (it came with the
//! `read_iter` conversion, 6.8-ish) punt such a read to an io-wq worker,
//! which never sees signals sent to the loop thread (`raise`,
//! `pthread_kill`) and can sit blocked in the worker. Polling and reading
//! on the loop thread is right on every kernel, and costs one `read` per
//! wake-up, which for signals is nothing.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use io_uring::{opcode, squeue, types};

use super::{Mode, Op, OpCode};

/// The size of one `struct signalfd_siginfo` record.
pub(crate) const SIGINFO_SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// A set of signal numbers (`sigset_t`).
#[derive(Clone, Copy)]
pub(crate) struct SigSet(libc::sigset_t);

impl SigSet {
    /// The empty set.
    pub(crate) fn empty() -> SigSet {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
        let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `s` is a valid sigset_t we own.
        unsafe { libc::sigemptyset(&mut s) };
        SigSet(s)
    }

    /// A set holding `sig` alone.
    pub(crate) fn of(sig: i32) -> SigSet {
        let mut s = SigSet::empty();
        s.add(sig);
        s
    }

    /// Adds `sig` (a number the caller validated).
    pub(crate) fn add(&mut self, sig: i32) {
        // SAFETY: valid sigset_t; an out-of-range number only gives EINVAL.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }

    /// Removes `sig`.
    pub(crate) fn remove(&mut self, sig: i32) {
        // SAFETY: as in `add`.
        unsafe { libc::sigdelset(&mut self.0, sig) };
    }

    /// Whether `sig` is in the set.
    pub(crate) fn contains(&self, sig: i32) -> bool {
        // SAFETY: valid sigset_t, read only.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }
}

fn sigmask(how: libc::c_int, set: &SigSet) -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    // SAFETY: both pointers are valid sigset_t values for the call.
    let r = unsafe { libc::pthread_sigmask(how, &set.0, &mut old.0) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(old)
}

/// Blocks `sig` on the calling thread. Returns whether it was blocked
/// already.
pub(crate) fn block(sig: i32) -> io::Result<bool> {
    Ok(sigmask(libc::SIG_BLOCK, &SigSet::of(sig))?.contains(sig))
}

/// Unblocks `sig` on the calling thread.
pub(crate) fn unblock(sig: i32) -> io::Result<()> {
    sigmask(libc::SIG_UNBLOCK, &SigSet::of(sig)).map(|_| ())
}

/// Accepts, without running anything, every pending instance of `sig`
/// (the calling thread's and the process's), which must be blocked.
/// Returns how many were taken.
pub(crate) fn discard_pending(sig: i32) -> usize {
    let set = SigSet::of(sig);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut n = 0;
    // Real-time signals queue: take them all (bounded, in case of a storm).
    while n < 4096 {
        // SAFETY: valid set and timeout; a null siginfo pointer is allowed.
        let r = unsafe { libc::sigtimedwait(&set.0, std::ptr::null_mut(), &zero) };
        if r != sig {
            break;
        }
        n += 1;
    }
    n
}

/// A `signalfd`, closed (and forgotten by the epoll backend) on drop.
pub(crate) struct SignalFd {
    fd: OwnedFd,
    /// Not `Send`: the epoll loops that may have registered the fd are
    /// this thread's.
    _thread: std::marker::PhantomData<Rc<()>>,
}

impl SignalFd {
    /// A non-blocking, close-on-exec signalfd reading `mask`.
    pub(crate) fn new(mask: &SigSet) -> io::Result<SignalFd> {
        let flags = libc::SFD_CLOEXEC | libc::SFD_NONBLOCK;
        // SAFETY: -1 asks for a new descriptor; the mask pointer is valid.
        let fd = unsafe { libc::signalfd(-1, &mask.0, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SignalFd {
            // SAFETY: a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            _thread: std::marker::PhantomData,
        })
    }

    /// Replaces the set of signals the descriptor reads. An in-flight read
    /// sees the new set from its next attempt on.
    pub(crate) fn set_mask(&self, mask: &SigSet) -> io::Result<()> {
        // SAFETY: our own signalfd and a valid mask; flags are ignored when
        // updating an existing descriptor.
        let r = unsafe { libc::signalfd(self.fd.as_raw_fd(), &mask.0, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Resolves when a signal in the mask is pending.
    pub(crate) fn readable(&self) -> Op<Readable> {
        Op::new(Readable {
            fd: self.fd.as_raw_fd(),
        })
    }

    /// Reads as many `signalfd_siginfo` records as fit in `buf` (whose
    /// length should be a multiple of [`SIGINFO_SIZE`]), without blocking:
    /// `WouldBlock` when none is pending.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// The raw descriptor.
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        crate::driver::fd_closing(self.fd.as_raw_fd());
    }
}

/// The signal numbers of the records in `bytes` (`ssi_signo` is the first
/// field of each 128-byte record).
pub(crate) fn signal_numbers(bytes: &[u8]) -> impl Iterator<Item = i32> + '_ {
    bytes.chunks_exact(SIGINFO_SIZE).map(|rec| {
        let mut n = [0u8; 4];
        n.copy_from_slice(&rec[..4]);
        u32::from_ne_bytes(n) as i32
    })
}

/// Waits until an fd is readable: `IORING_OP_POLL_ADD` (one shot) on
/// io_uring; on epoll a zero-timeout `poll`, then readiness.
pub(crate) struct Readable {
    fd: RawFd,
}

impl Readable {
    /// Waits for `fd` to be readable.
    pub(crate) fn new(fd: RawFd) -> Readable {
        Readable { fd }
    }
}

impl OpCode for Readable {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd), libc::POLLIN as u32).build()
    }

    fn mode(&self) -> Mode {
        Mode::Readable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        match r {
            r if r < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(pfd.revents as usize),
        }
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}
