//! Subprocess transports (asyncio's `loop.subprocess_exec` /
//! `subprocess_shell`): a child process whose pipes run on the pipe
//! transports, and a [`SubprocessProtocol`] told what happens.
//!
//! ```text
//!   SubprocessTransport ──▶ Inner ◀── watcher task: waits for the exit (pidfd)
//!                            │  pipes: fd 0 write transport, fd 1/2 read transports
//!                            │         (connect_write_pipe / connect_read_pipe, each
//!                            │          with a small protocol forwarding to ↓)
//!                            └── protocol (Rc<RefCell<dyn SubprocessProtocol>>)
//! ```
//! ## Order of callbacks, as asyncio's
//! `connection_made` first (before any pipe data); `pipe_data_received`
//! as the child writes; each pipe's `pipe_connection_lost` when it closes;
//! `process_exited` once the child exited **and** every pipe is closed,
//! then `connection_lost(None)`. A child whose descendants keep its pipes
//! open is reported exited when they close them.
//!
//! Flow control is the pipe transports': `get_pipe_transport(1)` and
//! `pause_reading()` stop reading the child's stdout, the pipe fills and
//! the child blocks in its write; a stdin writer above the high-water mark
//! gets `pause_writing`.

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::future::poll_fn;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::rc::{Rc, Weak};

use super::{Protocol, SubprocessProtocol, Transport, connect_read_pipe, connect_write_pipe};
use crate::process::{Command, Process, returncode_of};

/// The transport of a child process (asyncio's `SubprocessTransport`): a
/// cheap handle; all clones are the same transport.
#[derive(Clone)]
pub struct SubprocessTransport {
    inner: Rc<Inner>,
}

struct Inner {
    pid: u32,
    proc: RefCell<Process>,
    returncode: Cell<Option<i32>>,
    /// fd 0's write transport, fd 1's and 2's read transports.
    pipes: RefCell<[Option<Transport>; 3]>,
    /// Pipes whose `pipe_connection_lost` has not come yet.
    open_pipes: Cell<u32>,
    exited: Cell<bool>,
    /// `process_exited` was called; the protocol is let go.
    finished: Cell<bool>,
    closed: Cell<bool>,
    proto: RefCell<Option<Rc<RefCell<dyn SubprocessProtocol>>>>,
}

impl std::fmt::Debug for SubprocessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessTransport")
            .field("pid", &self.inner.pid)
            .field("returncode", &self.inner.returncode.get())
            .field("closed", &self.inner.closed.get())
            .finish()
    }
}

impl Inner {
    fn protocol(&self) -> Option<Rc<RefCell<dyn SubprocessProtocol>>> {
        self.proto.borrow().clone()
    }

    /// `process_exited` and `connection_lost` once the child exited and
    /// every pipe closed (called from a task or a scheduled callback,
    /// never from a transport method).
    fn try_finish(&self) {
        if self.finished.get() || !self.exited.get() || self.open_pipes.get() > 0 {
            return;
        }
        self.finished.set(true);
        // The protocol usually holds the transport: letting it go here
        // breaks the cycle.
        let proto = self.proto.borrow_mut().take();
        if let Some(p) = proto {
            p.borrow_mut().process_exited();
            p.borrow_mut().connection_lost(None);
        }
    }
}

/// The protocol each pipe transport runs: forwards to the subprocess
/// protocol with the pipe's fd number.
struct PipeProto {
    fd: i32,
    owner: Weak<Inner>,
}

impl Protocol for PipeProto {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(p) = self.owner.upgrade().and_then(|o| o.protocol()) {
            p.borrow_mut().pipe_data_received(self.fd, data);
        }
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let Some(o) = self.owner.upgrade() else {
            return;
        };
        if let Some(p) = o.protocol() {
            p.borrow_mut().pipe_connection_lost(self.fd, exc);
        }
        o.open_pipes.set(o.open_pipes.get().saturating_sub(1));
        o.try_finish();
    }

    fn pause_writing(&mut self) {
        if let Some(p) = self.owner.upgrade().and_then(|o| o.protocol()) {
            p.borrow_mut().pause_writing();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(p) = self.owner.upgrade().and_then(|o| o.protocol()) {
            p.borrow_mut().resume_writing();
        }
    }
}

/// Lets go of the protocol if the watcher task is dropped before the
/// child's exit was reported (its loop shut down): the protocol holds the
/// transport, and the pair would otherwise never be freed — nor the child
/// reaped (dropping the `Process` hands it to the orphan reaper).
struct WatchGuard {
    inner: Rc<Inner>,
    /// The exit was seen and reported.
    done: bool,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if !self.done && !self.inner.finished.replace(true) {
            drop(self.inner.proto.borrow_mut().take());
            let pipes = std::mem::take(&mut *self.inner.pipes.borrow_mut());
            drop(pipes);
        }
    }
}

impl SubprocessTransport {
    /// The child's process id.
    pub fn get_pid(&self) -> u32 {
        self.inner.pid
    }

    /// `None` while the child runs, then its exit code, or the negative
    /// number of the signal that killed it.
    pub fn get_returncode(&self) -> Option<i32> {
        self.inner.returncode.get()
    }

    /// The transport of the child's pipe `fd`: 0 (stdin, a write
    /// transport), 1 (stdout) or 2 (stderr) (read transports); `None` if
    /// that stream is not a pipe.
    pub fn get_pipe_transport(&self, fd: i32) -> Option<Transport> {
        let i = usize::try_from(fd).ok().filter(|i| *i < 3)?;
        self.inner.pipes.borrow()[i].clone()
    }

    /// Sends signal `sig` to the child; a child that has exited is left
    /// alone (`Ok`).
    ///
    /// # Errors
    /// `ESRCH` (asyncio's `ProcessLookupError`) once the transport has
    /// finished (`process_exited` was called); `EINVAL` for a number that
    /// is not a signal.
    pub fn send_signal(&self, sig: i32) -> io::Result<()> {
        if self.inner.finished.get() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        self.inner.proc.borrow().send_signal(sig)
    }

    /// Sends `SIGTERM` (see [`send_signal`](Self::send_signal)).
    ///
    /// # Errors
    /// As [`send_signal`](Self::send_signal).
    pub fn terminate(&self) -> io::Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// Sends `SIGKILL` (see [`send_signal`](Self::send_signal)).
    ///
    /// # Errors
    /// As [`send_signal`](Self::send_signal).
    pub fn kill(&self) -> io::Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// Closes the pipes (stdin after flushing what was written) and, if
    /// the child still runs, kills it, as asyncio does. The callbacks
    /// still come: each pipe's `pipe_connection_lost`, then
    /// `process_exited`.
    pub fn close(&self) {
        if self.inner.closed.replace(true) {
            return;
        }
        let pipes: Vec<Transport> = self
            .inner
            .pipes
            .borrow()
            .iter()
            .flatten()
            .cloned()
            .collect();
        for t in pipes {
            t.close();
        }
        if self.inner.returncode.get().is_none() {
            let _ = self.inner.proc.borrow().kill();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.inner.closed.get()
    }
}

/// Starts `program` with `args` and runs `factory()`'s protocol on it
/// (asyncio's `loop.subprocess_exec`). Each of `stdin`, `stdout`, `stderr`
/// that is `Stdio::piped()` gets a pipe transport (see
/// [`SubprocessTransport::get_pipe_transport`]).
///
/// # Errors
/// As [`Command::spawn`]: the child's `exec` failure (`NotFound`,
/// `PermissionDenied`), with no child left behind.
pub async fn subprocess_exec<P, I, S>(
    factory: impl FnOnce() -> P,
    program: impl AsRef<OsStr>,
    args: I,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> io::Result<(SubprocessTransport, Rc<RefCell<P>>)>
where
    P: SubprocessProtocol,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(stdin).stdout(stdout).stderr(stderr);
    subprocess_command(factory, &mut cmd).await
}

/// Runs `cmd` through `/bin/sh -c` with `factory()`'s protocol (asyncio's
/// `loop.subprocess_shell`); see [`subprocess_exec`].
///
/// # Errors
/// As [`subprocess_exec`].
pub async fn subprocess_shell<P: SubprocessProtocol>(
    factory: impl FnOnce() -> P,
    cmd: impl AsRef<OsStr>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> io::Result<(SubprocessTransport, Rc<RefCell<P>>)> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    subprocess_command(factory, &mut c).await
}

/// Spawns `cmd` (every option of [`Command`]) and runs `factory()`'s
/// protocol on it; see [`subprocess_exec`].
///
/// # Errors
/// As [`subprocess_exec`].
pub async fn subprocess_command<P: SubprocessProtocol>(
    factory: impl FnOnce() -> P,
    cmd: &mut Command,
) -> io::Result<(SubprocessTransport, Rc<RefCell<P>>)> {
    let mut proc = cmd.spawn_raw()?;
    let fds: [Option<OwnedFd>; 3] = [
        proc.take_stdin_fd(),
        proc.take_stdout_fd(),
        proc.take_stderr_fd(),
    ];
    let p = Rc::new(RefCell::new(factory()));
    let dynp: Rc<RefCell<dyn SubprocessProtocol>> = p.clone();
    let inner = Rc::new(Inner {
        pid: proc.pid(),
        proc: RefCell::new(proc),
        returncode: Cell::new(None),
        pipes: RefCell::new([None, None, None]),
        open_pipes: Cell::new(fds.iter().flatten().count() as u32),
        exited: Cell::new(false),
        finished: Cell::new(false),
        closed: Cell::new(false),
        proto: RefCell::new(Some(dynp)),
    });
    for (fd, pipe) in fds.into_iter().enumerate() {
        let Some(pipe) = pipe else { continue };
        let pp = PipeProto {
            fd: fd as i32,
            owner: Rc::downgrade(&inner),
        };
        let r = if fd == 0 {
            connect_write_pipe(|| pp, pipe).await
        } else {
            connect_read_pipe(|| pp, pipe).await
        };
        match r {
            Ok((t, _)) => inner.pipes.borrow_mut()[fd] = Some(t),
            Err(e) => {
                // Do not leave a child nobody can talk to: kill it (it is
                // reaped in the background when `inner` goes).
                let _ = inner.proc.borrow().kill();
                for t in inner.pipes.borrow_mut().iter_mut().flatten() {
                    t.abort();
                }
                inner.proto.borrow_mut().take();
                return Err(e);
            }
        }
    }
    let t = SubprocessTransport {
        inner: inner.clone(),
    };
    // Before any pipe data: the pipe transports' tasks have not run yet.
    p.borrow_mut().connection_made(t.clone());
    let guard = WatchGuard { inner, done: false };
    drop(crate::spawn(async move {
        let mut guard = guard;
        let w = guard.inner.clone();
        let r = poll_fn(|cx| w.proc.borrow_mut().poll_wait(cx)).await;
        let code = match r {
            Ok(s) => returncode_of(s),
            Err(e) => {
                // asyncio reports 255 for a status it could not get.
                log::warn!("uringio: waiting for child {}: {e}", w.pid);
                255
            }
        };
        w.returncode.set(Some(code));
        w.exited.set(true);
        guard.done = true;
        w.try_finish();
    }));
    Ok((t, p))
}
