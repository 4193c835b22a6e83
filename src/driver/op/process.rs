//! Child processes through pidfds: open one, signal through it, wait for
//! the child's exit, reap it. See uring-sys-notes/pidfd.md and waitid.md.
//!
//! ## Waiting without losing the status
//! Waiting and reaping are two steps:
//! 1. [`ExitOf`] resolves once the child has exited, *without* reaping it:
//!    on io_uring `IORING_OP_WAITID` (6.7) with `P_PIDFD` and
//!    `WEXITED | WNOWAIT`; where the probe lacks the opcode (and on epoll),
//!    a wait for the pidfd to turn readable (`POLL_ADD` / readiness) —
//!    a pidfd is readable once its process exited.
//! 2. [`Pidfd::try_reap`] then reaps it with a plain, non-blocking
//!    `waitid(P_PIDFD, fd, WEXITED | WNOHANG)` on the loop thread.
//!
//! Because the op never reaps, dropping or cancelling it at any moment
//! (a `wait()` under a timeout, a loop shutting down) loses nothing: the
//! child stays a zombie until step 2, which always runs on the owner's
//! side. A `WAITID` that reaped would hand the status only to its CQE,
//! and a CQE that raced a cancellation would take the status with it.
//!
//! The op's `siginfo_t` is written by the kernel when the request
//! completes (task work on the submitter), so it lives in the op's boxed
//! data, which the driver keeps until the CQE even if the future is
//! dropped (the op is not `MOVABLE`).
//!
//! Nothing here waits on "any child": no `waitpid(-1)`, no `SIGCHLD`
//! handler, so children that other code spawned are never reaped here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use io_uring::{opcode, squeue};

use super::{Mode, Op, OpCode};
use crate::driver::Driver;

/// An owned pidfd (`pidfd_open`, 5.3), close-on-exec, blocking (so that
/// `waitid` with `WNOHANG` says "not yet" rather than `EAGAIN`).
#[derive(Debug)]
pub(crate) struct Pidfd {
    fd: Option<OwnedFd>,
}

impl Pidfd {
    /// A pidfd for process `pid`, which should be a child of this process
    /// that nobody reaped yet (its pid cannot be reused until it is).
    pub(crate) fn open(pid: u32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "pidfd_open: ENOSYS (process support needs Linux 5.3 or later)",
                ));
            }
            return Err(e);
        }
        Ok(Pidfd {
            // SAFETY: a fresh descriptor that nothing else owns.
            fd: Some(unsafe { OwnedFd::from_raw_fd(r as RawFd) }),
        })
    }

    /// The descriptor number.
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Sends `sig` to the process (`pidfd_send_signal`, 5.1): no race with
    /// pid reuse. `ESRCH` (it was reaped) is reported as is.
    pub(crate) fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number the kernel checks, no
        // siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.raw(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reaps the child if it has exited: `waitid(P_PIDFD, fd, WEXITED |
    /// WNOHANG)`. `Ok(None)` while it runs; `ECHILD` if someone else
    /// reaped it (a `waitpid(-1)` elsewhere in the process).
    pub(crate) fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        waitid(self.raw(), libc::WEXITED | libc::WNOHANG)
    }

    /// Resolves once the child has exited, without reaping it (see the
    /// module docs): `WAITID` where `driver` has it, else a wait for the
    /// pidfd to be readable. `Err(ECHILD)` if it was reaped already.
    pub(crate) fn exited(&self, driver: Option<&Driver>) -> ExitOf {
        let waitid = driver.is_some_and(|d| !d.is_uring() || d.features.waitid);
        if waitid {
            ExitOf::WaitId(Op::new(WaitId::new(self.raw())))
        } else {
            ExitOf::Poll(Op::new(super::signal::Readable::new(self.raw())))
        }
    }

    /// Takes the descriptor out, for a thread that reaps the child after
    /// its loop is gone: every epoll loop on this thread forgets it first
    /// (as on close), so its number starts clean when it is reused here.
    pub(crate) fn into_owned(mut self) -> OwnedFd {
        let fd = self.fd.take().expect("pidfd taken twice");
        crate::driver::fd_closing(fd.as_raw_fd());
        fd
    }
}

impl Drop for Pidfd {
    fn drop(&mut self) {
        if let Some(fd) = &self.fd {
            crate::driver::fd_closing(fd.as_raw_fd());
        }
    }
}

/// `waitid(P_PIDFD, fd, flags)`: `Ok(None)` when `WNOHANG` found no exit.
pub(crate) fn waitid(fd: RawFd, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data; zeroed so that `si_pid` reads 0 when
    // WNOHANG finds nothing.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: a valid siginfo_t to write into; fd is a pidfd we own.
        let r = unsafe { libc::waitid(libc::P_PIDFD, fd as libc::id_t, &mut info, flags) };
        if r == 0 {
            return Ok(status_of(&info));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The exit status a `waitid` wrote, or `None` if it found no child
/// (`si_pid` 0).
fn status_of(info: &libc::siginfo_t) -> Option<ExitStatus> {
    // SAFETY: for the SIGCHLD siginfo waitid fills, si_pid and si_status
    // are the valid union members.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return None;
    }
    // Back to a wait(2)-style status word, which ExitStatus holds.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        // Stopped or continued: not asked for (WEXITED only).
        _ => return None,
    };
    Some(ExitStatus::from_raw(raw))
}

/// Waits for a child's exit without reaping it: `IORING_OP_WAITID`
/// (6.7) with `P_PIDFD` and `WEXITED | WNOWAIT` on io_uring; on epoll a
/// non-blocking `waitid` retried when the pidfd turns readable.
pub(crate) struct WaitId {
    fd: RawFd,
    /// Written by the kernel at completion: it must stay put until the
    /// CQE (the op's data is boxed and kept by the driver until then).
    info: libc::siginfo_t,
}

impl WaitId {
    pub(crate) fn new(fd: RawFd) -> WaitId {
        WaitId {
            fd,
            // SAFETY: siginfo_t is plain data.
            info: unsafe { std::mem::zeroed() },
        }
    }
}

impl OpCode for WaitId {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::WaitId::new(
            libc::P_PIDFD,
            self.fd as libc::id_t,
            libc::WEXITED | libc::WNOWAIT,
        )
        .infop(std::ptr::addr_of_mut!(self.info).cast_const())
        .build()
    }

    fn mode(&self) -> Mode {
        Mode::Readable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        match waitid(self.fd, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)? {
            Some(_) => Ok(0),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// A wait for a child's exit, by whichever means the loop has (see
/// [`Pidfd::exited`]). Resolves `Ok(())` once the child exited (not yet
/// reaped); dropping it at any point is harmless.
pub(crate) enum ExitOf {
    /// `IORING_OP_WAITID`, or the epoll retry of `waitid`.
    WaitId(Op<WaitId>),
    /// The pidfd turning readable (io_uring without `WAITID`).
    Poll(Op<super::signal::Readable>),
}

impl std::future::Future for ExitOf {
    type Output = io::Result<()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            ExitOf::WaitId(op) => std::pin::Pin::new(op).poll(cx),
            ExitOf::Poll(op) => std::pin::Pin::new(op).poll(cx),
        }
    }
}

/// Reaps, off any loop, children whose `Process` was dropped after its
/// loop was gone (or whose loop shut down first): one thread for the
/// whole process, started when there is such a child and gone when there
/// is none left, that `poll`s their pidfds and reaps each that turns
/// readable. Never a thread per child, never `waitpid(-1)`.
pub(crate) mod orphans {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::{Mutex, OnceLock};

    struct State {
        fds: Vec<OwnedFd>,
        running: bool,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        fds: Vec::new(),
        running: false,
    });

    /// The eventfd that tells the thread its list grew.
    fn wake_fd() -> Option<&'static OwnedFd> {
        static FD: OnceLock<Option<OwnedFd>> = OnceLock::new();
        FD.get_or_init(|| {
            // SAFETY: a new eventfd; checked below.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            // SAFETY: a fresh descriptor nobody else owns.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .as_ref()
    }

    fn lock() -> std::sync::MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the pidfd of an unreaped child to the orphan reaper.
    pub(crate) fn adopt(pidfd: OwnedFd) {
        if let Ok(Some(_)) | Err(_) =
            super::waitid(pidfd.as_raw_fd(), libc::WEXITED | libc::WNOHANG)
        {
            // Reaped now (or not ours to reap).
            return;
        }
        let Some(wake) = wake_fd() else {
            log::warn!("uringio: no eventfd for the orphan reaper; a child may stay a zombie");
            return;
        };
        let mut st = lock();
        st.fds.push(pidfd);
        if st.running {
            drop(st);
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a valid buffer to our eventfd.
            unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), 8) };
            return;
        }
        st.running = true;
        drop(st);
        let spawned = std::thread::Builder::new()
            .name("uringio-orphans".into())
            .spawn(run);
        if let Err(e) = spawned {
            lock().running = false;
            log::warn!("uringio: cannot start the orphan reaper ({e}); children may stay zombies");
        }
    }

    /// How many children wait for the orphan reaper (tests).
    #[allow(dead_code)]
    pub(crate) fn pending() -> usize {
        lock().fds.len()
    }

    fn run() {
        let Some(wake) = wake_fd() else { return };
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        loop {
            {
                let st = lock();
                if st.fds.is_empty() {
                    drop(st);
                    // Re-checked under the lock: `adopt` may have pushed
                    // one after we looked.
                    let mut st = lock();
                    if st.fds.is_empty() {
                        st.running = false;
                        return;
                    }
                    continue;
                }
                pfds.clear();
                pfds.push(libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                pfds.extend(st.fds.iter().map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }));
            }
            // Only this thread removes from the list, so the fds polled
            // stay open during the call.
            // SAFETY: `pfds` is a valid array of its length.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                log::warn!(
                    "uringio: the orphan reaper's poll failed: {}",
                    io::Error::last_os_error()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if pfds[0].revents != 0 {
                let mut buf = [0u8; 8];
                // SAFETY: reading 8 bytes into a valid buffer from our eventfd.
                unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            }
            let ready: Vec<i32> = pfds[1..]
                .iter()
                .filter(|p| p.revents != 0)
                .map(|p| p.fd)
                .collect();
            if ready.is_empty() {
                continue;
            }
            let mut st = lock();
            st.fds.retain(|f| {
                if !ready.contains(&f.as_raw_fd()) {
                    return true;
                }
                // Exited (reaped now) or gone: either way done with it.
                !matches!(
                    super::waitid(f.as_raw_fd(), libc::WEXITED | libc::WNOHANG),
                    Ok(Some(_)) | Err(_)
                )
            });
        }
    }
}
