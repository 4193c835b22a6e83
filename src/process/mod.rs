//! Subprocesses (asyncio's `create_subprocess_exec` family), waited for
//! through pidfds.
//!
//! ```no_run
//! use uringio::process::Command;
//!
//! uringio::run(async {
//!     let mut child = Command::new("sh").arg("-c").arg("exit 7").spawn().unwrap();
//!     let status = child.wait().await.unwrap();
//!     assert_eq!(status.code(), Some(7));
//!     assert_eq!(child.returncode(), Some(7));
//! });
//! ```
//!
//! ## How a child is watched
//! [`Command::spawn`] starts the child with `std::process::Command` (whose
//! spawn reports a failed `exec` — a missing program, a file that is not
//! executable, a bad working directory — as the `io::Error` it was, and
//! reaps the dead child itself), then opens a pidfd on it at once
//! (`pidfd_open`, Linux 5.3). Everything after goes through the pidfd:
//! - **waiting**: on io_uring an `IORING_OP_WAITID` (6.7) on the pidfd
//!   where the kernel has it, else a poll of the pidfd (readable once the
//!   child exited; `POLL_ADD` on io_uring, readiness on epoll); then a
//!   non-blocking `waitid(P_PIDFD)` reaps it. No thread per child, no
//!   `waitpid(-1)`, no `SIGCHLD` handler: children spawned by other code
//!   (`std::process::Command` used directly) are never reaped here.
//!   The wait never loses the status to a cancellation: the kernel-side
//!   wait does not reap (`WNOWAIT`), the reap happens on the loop thread.
//! - **signalling**: `pidfd_send_signal`, which cannot hit another process
//!   that reused the pid.
//!
//! ## No zombies
//! A [`Process`] dropped before its exit was seen is reaped in the
//! background by the running loop (a small task waiting on the pidfd);
//! with [`Command::kill_on_drop`] it is sent `SIGKILL` first. Dropped
//! outside a loop, or still running when its loop shuts down, it is handed
//! to one process-wide thread that polls the pidfds of such orphans and
//! reaps them as they exit (started only when there is one).

use std::ffi::OsStr;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::pin::Pin;
pub use std::process::{ExitStatus, Output, Stdio};
use std::task::{Context, Poll};

use crate::driver;
use crate::driver::op::process::{ExitOf, Pidfd, orphans};
use crate::streams::{self, StreamReader, StreamWriter};

/// The size asked for each pipe to a child (1 MiB, Linux's default
/// `pipe-max-size`).
const PIPE_SIZE: i32 = 1 << 20;

/// A builder for a child process: `std::process::Command`'s, plus
/// [`kill_on_drop`](Self::kill_on_drop). By default the child inherits
/// this process's stdin, stdout and stderr (as asyncio's `None`).
#[derive(Debug)]
pub struct Command {
    std: std::process::Command,
    kill_on_drop: bool,
    limit: usize,
}

impl Command {
    /// A command running `program` (looked up in `PATH` if it has no `/`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            std: std::process::Command::new(program),
            kill_on_drop: false,
            limit: streams::DEFAULT_LIMIT,
        }
    }

    /// The limit of the stdout/stderr readers (asyncio's `limit`, default
    /// 64 KiB; see [`StreamReader`]).
    ///
    /// # Panics
    /// If `limit` is 0.
    pub fn limit(&mut self, limit: usize) -> &mut Command {
        assert!(limit > 0, "stream limit must be > 0");
        self.limit = limit;
        self
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what `env` adds).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// The child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// The child's stdin (`Stdio::piped()` for a pipe this side writes).
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdin(cfg);
        self
    }

    /// The child's stdout (`Stdio::piped()` for a pipe this side reads).
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stdout(cfg);
        self
    }

    /// The child's stderr (`Stdio::piped()` for a pipe this side reads).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.std.stderr(cfg);
        self
    }

    /// Sends the child `SIGKILL` when its [`Process`] is dropped before
    /// the child's exit was seen (it is reaped either way).
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Command {
        self.kill_on_drop = kill;
        self
    }

    /// Puts the child in process group `pgroup` (0: a new group whose id
    /// is the child's pid), as `std`'s `CommandExt::process_group`.
    pub fn process_group(&mut self, pgroup: i32) -> &mut Command {
        self.std.process_group(pgroup);
        self
    }

    /// The `std::process::Command` inside (for options not mirrored here:
    /// `uid`, `gid`, `pre_exec`, …).
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// The `std::process::Command` inside, mutably.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Starts the child.
    ///
    /// # Errors
    /// The child's `exec` failure as `std` reports it (`NotFound` for a
    /// missing program or working directory, `PermissionDenied` for a file
    /// that is not executable), with no child left behind; `Unsupported`
    /// on kernels without `pidfd_open` (before 5.3).
    pub fn spawn(&mut self) -> io::Result<Process> {
        let mut p = self.spawn_raw()?;
        if p.stdin_fd.is_some() || p.stdout_fd.is_some() || p.stderr_fd.is_some() {
            // Bigger pipes: fewer, larger reads and writes on both sides
            // (the kernel may refuse above /proc/sys/fs/pipe-max-size or a
            // user's pipe quota: then the default 64 KiB stays).
            for fd in [&p.stdin_fd, &p.stdout_fd, &p.stderr_fd]
                .into_iter()
                .flatten()
            {
                let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
            }
            if crate::runtime::context::current().is_none() {
                let _ = p.kill();
                return Err(io::Error::other(
                    "a child with piped stdio must be spawned inside a running loop \
                     (its pipes are streams on that loop)",
                ));
            }
            p.stdin = p.stdin_fd.take().map(streams::pipe_writer).transpose()?;
            p.stdout = p
                .stdout_fd
                .take()
                .map(|fd| streams::pipe_reader(fd, self.limit))
                .transpose()?;
            p.stderr = p
                .stderr_fd
                .take()
                .map(|fd| streams::pipe_reader(fd, self.limit))
                .transpose()?;
        }
        Ok(p)
    }

    /// Starts the child, keeping its pipes as raw fds (for the subprocess
    /// transport, which makes them pipe transports itself).
    pub(crate) fn spawn_raw(&mut self) -> io::Result<Process> {
        let mut child = self.std.spawn()?;
        let pid = child.id();
        let pidfd = match Pidfd::open(pid) {
            Ok(p) => p,
            Err(e) => {
                // Without a pidfd we cannot watch it: take it down and
                // reap it (its own pid, never -1).
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        // Dropping std's Child neither waits nor kills: the pidfd owns the
        // child's fate from here.
        drop(child);
        Ok(Process {
            pid,
            pidfd: Some(pidfd),
            exit: None,
            status: None,
            kill_on_drop: self.kill_on_drop,
            stdin_fd: stdin,
            stdout_fd: stdout,
            stderr_fd: stderr,
            stdin: None,
            stdout: None,
            stderr: None,
        })
    }
}

/// A running (or finished) child process (asyncio's `Process`).
///
/// Waiting is repeatable: once the child's exit was seen, [`wait`]
/// returns the same status again and [`returncode`] has it.
///
/// [`wait`]: Process::wait
/// [`returncode`]: Process::returncode
pub struct Process {
    pid: u32,
    /// `None` only while dropping.
    pidfd: Option<Pidfd>,
    /// The wait for the child's exit in flight, kept across `wait()`
    /// futures (a `wait` dropped under a timeout leaves it running).
    exit: Option<ExitOf>,
    status: Option<ExitStatus>,
    kill_on_drop: bool,
    stdin_fd: Option<OwnedFd>,
    stdout_fd: Option<OwnedFd>,
    stderr_fd: Option<OwnedFd>,
    /// The child's stdin, when it was `Stdio::piped()`: dropping (or
    /// closing) the writer closes the pipe, and the child sees end of
    /// input.
    pub stdin: Option<StreamWriter>,
    /// The child's stdout, when it was `Stdio::piped()` (asyncio's
    /// `StreamReader`, with flow control: a child that writes faster than
    /// this is read is paused by the full pipe, not buffered without
    /// bound).
    pub stdout: Option<StreamReader>,
    /// The child's stderr, when it was `Stdio::piped()`.
    pub stderr: Option<StreamReader>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}

/// asyncio's `returncode` for a status: the exit code, or the negative
/// number of the signal that killed the child.
pub(crate) fn returncode_of(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => -s,
        (None, None) => 255,
    }
}

impl Process {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit and returns its status; once it has,
    /// returns the same status at once. Cancel-safe: dropping the future
    /// loses nothing (the next `wait` picks up where it left).
    ///
    /// # Errors
    /// If the child was reaped by someone else (a `waitpid(-1)` elsewhere
    /// in the process), or an unexpected system error.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Polls for the child's exit (see [`wait`](Self::wait)): for
    /// transports that hold the process in a `RefCell` and must not keep
    /// it borrowed across an await.
    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        loop {
            if let Some(s) = self.status {
                return Poll::Ready(Ok(s));
            }
            match &mut self.exit {
                None => {
                    // Reap first: a child that already exited needs no op.
                    match self.try_wait() {
                        Ok(Some(s)) => return Poll::Ready(Ok(s)),
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    let Some(pidfd) = &self.pidfd else {
                        return Poll::Ready(Err(io::Error::other("process handle released")));
                    };
                    let d = driver::current();
                    self.exit = Some(pidfd.exited(d.as_deref()));
                }
                Some(op) => match Pin::new(op).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Exited (not yet reaped: the next round reaps), or
                    // reaped by someone else (the reap says so).
                    Poll::Ready(Ok(())) => self.exit = None,
                    Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::ECHILD) => {
                        self.exit = None
                    }
                    Poll::Ready(Err(e)) => {
                        self.exit = None;
                        return Poll::Ready(Err(e));
                    }
                },
            }
        }
    }

    /// The child's status if it has exited (reaping it), `None` while it
    /// runs. Never blocks.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let Some(pidfd) = &self.pidfd else {
            return Ok(None);
        };
        match pidfd.try_reap() {
            Ok(Some(s)) => {
                self.status = Some(s);
                // A wait still in flight has nothing left to say.
                self.exit = None;
                Ok(Some(s))
            }
            Ok(None) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Err(io::Error::other(format!(
                "child {} was reaped by someone else (a waitpid(-1) elsewhere in the process?)",
                self.pid
            ))),
            Err(e) => Err(e),
        }
    }

    /// asyncio's `returncode`: `None` until the exit was seen (by
    /// [`wait`](Self::wait) or [`try_wait`](Self::try_wait)), then the
    /// exit code, or the negative number of the signal that killed it.
    pub fn returncode(&self) -> Option<i32> {
        self.status.map(returncode_of)
    }

    /// Sends signal `sig` to the child (`pidfd_send_signal`). A child
    /// whose exit was already seen is left alone (`Ok`), as asyncio.
    ///
    /// # Errors
    /// `EINVAL` for a number that is not a signal; `EPERM` if not allowed.
    pub fn send_signal(&self, sig: i32) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let Some(pidfd) = &self.pidfd else {
            return Ok(());
        };
        match pidfd.send_signal(sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }

    /// Sends `SIGTERM`.
    ///
    /// # Errors
    /// As [`send_signal`](Self::send_signal).
    pub fn terminate(&self) -> io::Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// Sends `SIGKILL`.
    ///
    /// # Errors
    /// As [`send_signal`](Self::send_signal).
    pub fn kill(&self) -> io::Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// Sends `input` to the child's stdin and closes it, reads its stdout
    /// and stderr to the end — all at once, so that no pipe fills up while
    /// another is waited on — then waits for the child to exit (asyncio's
    /// `communicate`). Takes the pipes ([`stdin`](Self::stdin),
    /// [`stdout`](Self::stdout), [`stderr`](Self::stderr)); one that is
    /// not piped gives empty output. A child that closes its stdin early is
    /// not an error (`BrokenPipe` on the input is ignored, as asyncio).
    ///
    /// # Errors
    /// `InvalidInput` if `input` is given but stdin is not piped; a read
    /// or wait error.
    pub async fn communicate(&mut self, input: Option<Vec<u8>>) -> io::Result<Output> {
        if input.as_ref().is_some_and(|i| !i.is_empty()) && self.stdin.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "communicate: input given, but the child's stdin is not piped",
            ));
        }
        let stdin = self.stdin.take();
        let mut stdout = self.stdout.take();
        let mut stderr = self.stderr.take();
        let feed = async move {
            let Some(w) = stdin else { return Ok(()) };
            if let Some(data) = input {
                w.transport().write_owned(data);
            }
            let r = w.drain().await;
            // Closing flushes what is left, then closes the pipe.
            w.close();
            match r {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    Ok(())
                }
                r => r,
            }
        };
        let out = async {
            match &mut stdout {
                Some(r) => r.read_to_end().await,
                None => Ok(Vec::new()),
            }
        };
        let err = async {
            match &mut stderr {
                Some(r) => r.read_to_end().await,
                None => Ok(Vec::new()),
            }
        };
        let (fed, out, err) = join3(feed, out, err).await;
        fed?;
        let (stdout, stderr) = (out?, err?);
        let status = self.wait().await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Takes this side of the child's stdin pipe (`Stdio::piped()`), if
    /// it has one and it was not taken yet. Blocking as `std` made it; the
    /// pipe transports make it non-blocking.
    pub(crate) fn take_stdin_fd(&mut self) -> Option<OwnedFd> {
        self.stdin_fd.take()
    }

    /// Takes this side of the child's stdout pipe (see
    /// [`take_stdin_fd`](Self::take_stdin_fd)).
    pub(crate) fn take_stdout_fd(&mut self) -> Option<OwnedFd> {
        self.stdout_fd.take()
    }

    /// Takes this side of the child's stderr pipe (see
    /// [`take_stdin_fd`](Self::take_stdin_fd)).
    pub(crate) fn take_stderr_fd(&mut self) -> Option<OwnedFd> {
        self.stderr_fd.take()
    }
}

/// Polls three futures together until all are done.
async fn join3<A: Future, B: Future, C: Future>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut a, mut b, mut c) = (std::pin::pin!(a), std::pin::pin!(b), std::pin::pin!(c));
    let (mut ra, mut rb, mut rc) = (None, None, None);
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if rc.is_none() {
            if let Poll::Ready(v) = c.as_mut().poll(cx) {
                rc = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() && rc.is_some() {
            Poll::Ready((ra.take().unwrap(), rb.take().unwrap(), rc.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Starts `program` with `args` (asyncio's `create_subprocess_exec`);
/// each of `stdin`, `stdout`, `stderr` is `Stdio::piped()` (a stream on
/// [`Process`]), `Stdio::null()`, `Stdio::inherit()` or a file.
///
/// # Errors
/// As [`Command::spawn`].
pub async fn create_subprocess_exec<I, S>(
    program: impl AsRef<OsStr>,
    args: I,
    stdin: impl Into<Stdio>,
    stdout: impl Into<Stdio>,
    stderr: impl Into<Stdio>,
) -> io::Result<Process>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
}

/// Runs `cmd` with `/bin/sh -c` (asyncio's `create_subprocess_shell`);
/// stdio as [`create_subprocess_exec`]. The command line is the shell's
/// to interpret: quote anything that comes from users.
///
/// # Errors
/// As [`Command::spawn`].
pub async fn create_subprocess_shell(
    cmd: impl AsRef<OsStr>,
    stdin: impl Into<Stdio>,
    stdout: impl Into<Stdio>,
    stderr: impl Into<Stdio>,
) -> io::Result<Process> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
}

impl Drop for Process {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        if self.status.is_some() {
            return;
        }
        if self.kill_on_drop {
            let _ = pidfd.send_signal(libc::SIGKILL);
        }
        if !matches!(pidfd.try_reap(), Ok(None)) {
            // Reaped now, or not ours to reap any more.
            return;
        }
        let exit = self.exit.take();
        if crate::runtime::try_running_loop().is_some() {
            // The guard is made outside the task's future, so that it
            // also hands off if the task is dropped before its first poll.
            drop(crate::spawn(reap_later(Orphan(Some(pidfd)), exit)));
        } else {
            drop(exit);
            orphans::adopt(pidfd.into_owned());
        }
    }
}

/// Hands the child to the orphan reaper if the task reaping it is dropped
/// first (its loop shut down).
struct Orphan(Option<Pidfd>);

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            orphans::adopt(p.into_owned());
        }
    }
}

/// The background reap of a dropped [`Process`]: waits on its pidfd, then
/// reaps.
async fn reap_later(orphan: Orphan, exit: Option<ExitOf>) {
    // Declared after `orphan`, so dropped (cancelled) before it hands off.
    let mut exit = exit;
    loop {
        let Some(fd) = orphan.0.as_ref() else { return };
        let op = match exit.take() {
            Some(op) => op,
            None => {
                let d = driver::current();
                fd.exited(d.as_deref())
            }
        };
        exit = Some(op);
        let r = poll_fn(|cx| match exit.as_mut() {
            Some(op) => Pin::new(op).poll(cx),
            None => Poll::Ready(Ok(())),
        })
        .await;
        exit = None;
        if let Err(e) = r {
            if e.raw_os_error() != Some(libc::ECHILD) {
                // Not something a retry fixes: the orphan reaper polls it.
                log::warn!("uringio: waiting for a dropped child: {e}");
                return;
            }
        }
        match fd.try_reap() {
            Ok(None) => continue,
            _ => break,
        }
    }
    let mut orphan = orphan;
    drop(orphan.0.take());
}
