//! The epoll backend: try the system call, on `EAGAIN` wait for readiness.
//!
//! Each fd an op waits on is registered once, edge-triggered, for input and
//! output; its state holds the waiters (a token and a waker) of the ops
//! waiting to read and to write. An op removes its waiter when it
//! completes, is dropped or moves to another loop, so idle sockets
//! collect nothing. Ops always try their system call before waiting, so an
//! edge that fired while nobody waited is never needed, with one exception:
//! a stream read that came back short drained the socket, so the next read
//! on that fd waits for an input edge without trying first (the `EAGAIN` it
//! would get costs a system call per message in request/response traffic;
//! tokio does the same). Any input edge, even one nobody waited for, clears
//! that mark, so no data that arrived later is missed.
//!
//! ## Which loop knows an fd
//! Registrations live in a [`Registry`] per epoll instance; the thread
//! keeps a weak list of its registries. When a socket closes, every
//! registry on the thread forgets the fd ([`fd_closing`]) — the socket
//! does not need to know which loops waited on it, so a socket made outside
//! any loop, or used in several `Runner`s, cannot leave a stale
//! registration that would keep the next fd with its number out of epoll.
//!
//! ## Blocking pool
//! Regular-file ops, which epoll cannot wait on, run on the blocking pool:
//! the op's boxed data stays put while a pool thread performs it; the
//! thread stores the result in the job's [`JobState`], pushes the slot key
//! into the driver's inbox and unparks the loop ([`Unpark`]); `park`
//! drains the inbox.
//! ```text
//! slot{waker} ──pool reports──▶ slot{reported} ──op polls──▶ removed, result taken
//!      └─op dropped / moved─▶ slot{abandoned} ──pool reports──▶ removed, data freed
//! ```
//! A dropped op must not be performed later: its fd may be closed and the
//! number reused by another file by then. So each job claims its op before
//! running it; dropping the op skips a job still queued, and waits for one
//! already inside its system call (a bounded file syscall) to return. After
//! `abandon_blocking` or `detach_blocking` no pool thread touches the op.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use slab::Slab;

use super::blocking::BlockingPool;
use super::op::LateHook;
use super::op::OpCode;
use super::{Stats, Unpark};

const WAKE_TOKEN: u64 = u64::MAX;

/// One op waiting for readiness: its token (to update or remove it) and
/// its waker.
type Waiter = (u64, Waker);

#[derive(Default)]
struct FdState {
    registered: bool,
    /// A stream read returned less than it asked for and no input edge
    /// arrived since: the next read waits for one without trying first.
    read_drained: bool,
    /// The peer shut its write side (or the socket failed): a short read
    /// then says nothing about more reads, which return 0 or the error at
    /// once, with no edge to come. Never cleared (as tokio's READ_CLOSED).
    read_closed: bool,
    readers: Vec<Waiter>,
    writers: Vec<Waiter>,
}

/// The fds one epoll instance watches. Shared (weakly) with the thread's
/// list of registries, so that a descriptor being closed is forgotten by
/// every epoll loop on the thread that registered it, whichever loop the
/// socket was created in ([`fd_closing`]).
struct Registry {
    epfd: OwnedFd,
    fds: RefCell<Vec<FdState>>,
}

thread_local! {
    /// The epoll registries of the loops on this thread.
    static REGISTRIES: RefCell<Vec<Weak<Registry>>> = const { RefCell::new(Vec::new()) };
}

/// `fd` is about to be closed: every epoll loop on this thread that
/// registered it drops the registration and wakes its waiters (their retry
/// sees the closed fd), so a later descriptor with the same number starts
/// clean. Sockets cannot leave their thread, so these are all the loops
/// that can know the fd.
pub(crate) fn fd_closing(fd: RawFd) {
    let regs: Vec<Rc<Registry>> = REGISTRIES.with(|r| {
        let mut r = r.borrow_mut();
        r.retain(|w| w.strong_count() > 0);
        r.iter().filter_map(Weak::upgrade).collect()
    });
    for reg in regs {
        reg.forget(fd);
    }
}

impl Registry {
    fn forget(&self, fd: RawFd) {
        let st = {
            let mut fds = self.fds.borrow_mut();
            let Some(st) = fds.get_mut(fd as usize) else {
                return;
            };
            if st.registered {
                // SAFETY: valid epoll fd; fd still open (closed after this).
                unsafe {
                    libc::epoll_ctl(
                        self.epfd.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd,
                        std::ptr::null_mut(),
                    )
                };
            }
            std::mem::take(st)
        };
        for (_, w) in st.readers.into_iter().chain(st.writers) {
            w.wake();
        }
    }
}

/// A pool job's outcome, agreed between the loop and the pool thread.
#[derive(Debug)]
enum JobPhase {
    Queued,
    Performing,
    Finished(Option<io::Result<usize>>),
    Skipped,
}

/// Where a pool job is, and its result once it has one.
struct JobState {
    phase: Mutex<JobPhase>,
    finished: Condvar,
}

impl JobState {
    fn new() -> Arc<JobState> {
        Arc::new(JobState {
            phase: Mutex::new(JobPhase::Queued),
            finished: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobPhase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pool side: may the op be performed (not dropped meanwhile)?
    fn claim(&self) -> bool {
        let mut st = self.lock();
        if matches!(*st, JobPhase::Queued) {
            *st = JobPhase::Performing;
            true
        } else {
            false
        }
    }

    /// Pool side: the op's system call returned `res`.
    fn finish(&self, res: io::Result<usize>) {
        *self.lock() = JobPhase::Finished(Some(res));
        self.finished.notify_all();
    }

    /// Loop side, the op is going away (dropped, or moving to another
    /// loop): skip it if it has not started, else wait until its system
    /// call returned. Returns the result if it ran and nobody took it.
    fn skip_or_wait(&self) -> Option<io::Result<usize>> {
        let mut st = self.lock();
        if matches!(*st, JobPhase::Queued) {
            *st = JobPhase::Skipped;
            return None;
        }
        while matches!(*st, JobPhase::Performing) {
            st = self.finished.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        match &mut *st {
            JobPhase::Finished(r) => r.take(),
            _ => None,
        }
    }

    /// Loop side, after the pool reported: the result.
    fn take(&self) -> io::Result<usize> {
        match &mut *self.lock() {
            JobPhase::Finished(r) => r
                .take()
                .unwrap_or_else(|| Err(io::Error::other("blocking op result taken twice"))),
            _ => Err(io::Error::from_raw_os_error(libc::ECANCELED)),
        }
    }
}

/// A blocking op's slot: its job, the waker of the op, and (once the op
/// was dropped) its data, kept until the pool reports.
struct PoolSlot {
    job: Arc<JobState>,
    waker: Option<Waker>,
    /// The pool reported (its key came through the inbox).
    reported: bool,
    /// Dropped (or moved to another loop); the hook is given a successful
    /// result nobody took (an fd, to close).
    abandoned: Option<Abandoned>,
}

/// A dropped op's data and the hook for a result nobody took.
type Abandoned = (Box<dyn Any>, LateHook);

/// Keys of pool jobs that finished, handed from pool threads to the loop.
struct Inbox {
    done: Mutex<Vec<usize>>,
    /// Set after a key is pushed to `done`: the loop looks at this flag on
    /// every park, and takes the lock only when it is set.
    pending: AtomicBool,
    unpark: Arc<dyn Unpark>,
}

pub(crate) struct Epoll {
    reg: Rc<Registry>,
    events: Vec<libc::epoll_event>,
    wake_fd: RawFd,
    pool: Arc<BlockingPool>,
    inbox: Arc<Inbox>,
    blocking: Slab<PoolSlot>,
    next_token: u64,
    /// File reads the loop thread may still do itself (`RWF_NOWAIT`)
    /// before it next waits for I/O: a task reading a cached file in a
    /// loop would otherwise never yield (every read completes at once).
    inline_left: u32,
}

/// See [`Epoll::inline_budget`].
const INLINE_BUDGET: u32 = 128;

impl Registry {
    /// Ops waiting for readiness on any fd.
    fn waiters(&self) -> usize {
        self.fds
            .borrow()
            .iter()
            .map(|s| s.readers.len() + s.writers.len())
            .sum()
    }
}

/// A pointer to an op's boxed data, sent to a pool thread.
struct Job {
    ptr: *mut (),
    run: unsafe fn(*mut ()) -> io::Result<usize>,
}

// SAFETY: the pointee is an op's boxed data, which stays allocated and is not
// touched by the loop thread while the job is claimed (Performing); the loop
// waits for `finish` before dropping or moving it (`skip_or_wait`);
// `OpCode::perform` for blocking ops only touches plain data (fds, raw
// pointers, integers, C strings).
unsafe impl Send for Job {}

/// # Safety
/// `p` points to a live `T` that nothing else touches during the call.
unsafe fn run_op<T: OpCode>(p: *mut ()) -> io::Result<usize> {
    // SAFETY: guaranteed by the caller (see `Job`).
    unsafe { (*(p as *mut T)).perform() }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn discard_nothing(_: &mut dyn Any, _: i32) {}

impl Epoll {
    pub(crate) fn new(
        wake_fd: RawFd,
        unpark: Arc<dyn Unpark>,
        pool: Arc<BlockingPool>,
    ) -> io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_TOKEN,
        };
        // SAFETY: valid epoll fd, valid eventfd, valid event pointer.
        cvt(unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, wake_fd, &mut ev) })?;
        let reg = Rc::new(Registry {
            epfd,
            fds: RefCell::new(Vec::new()),
        });
        REGISTRIES.with(|r| r.borrow_mut().push(Rc::downgrade(&reg)));
        Ok(Epoll {
            reg,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            wake_fd,
            pool,
            inbox: Arc::new(Inbox {
                done: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                unpark,
            }),
            blocking: Slab::new(),
            next_token: 0,
            inline_left: INLINE_BUDGET,
        })
    }

    /// Registers `waker` to run when `fd` becomes readable (or writable).
    /// `token` names this waiter: `None` the first time (a new one is
    /// stored), then the same token, so a re-poll replaces its waker
    /// rather than adding one, and [`Epoll::unwait`] can remove it.
    pub(crate) fn wait_ready(
        &mut self,
        fd: RawFd,
        write: bool,
        waker: &Waker,
        token: &mut Option<u64>,
    ) -> io::Result<()> {
        let idx = fd as usize;
        let mut fds = self.reg.fds.borrow_mut();
        if fds.len() <= idx {
            fds.resize_with(idx + 1, FdState::default);
        }
        if !fds[idx].registered {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: fd as u64,
            };
            let epfd = self.reg.epfd.as_raw_fd();
            // SAFETY: valid epoll fd and event pointer; fd is owned by the op's
            // socket, which outlives the op.
            let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
                // SAFETY: valid epoll fd and event pointer; fd is open (the
                // ADD just saw it registered).
                cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, &mut ev) })?;
            }
            fds[idx].registered = true;
        }
        let list = if write {
            &mut fds[idx].writers
        } else {
            &mut fds[idx].readers
        };
        if let Some(t) = *token {
            if let Some((_, w)) = list.iter_mut().find(|(k, _)| *k == t) {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                return Ok(());
            }
        }
        let t = self.next_token;
        self.next_token += 1;
        *token = Some(t);
        if list.capacity() == 0 {
            // Room for one: nearly every fd has one reader and at most one
            // writer (a Vec's first push would make room for four, which
            // idle connections would carry).
            list.reserve_exact(1);
        }
        list.push((t, waker.clone()));
        Ok(())
    }

    /// Removes the waiter `token` (an op that stopped waiting: done,
    /// dropped, or moved to another loop) from `fd`'s list.
    pub(crate) fn unwait(&mut self, fd: RawFd, write: bool, token: u64) {
        let removed = {
            let mut fds = self.reg.fds.borrow_mut();
            let Some(st) = fds.get_mut(fd as usize) else {
                return;
            };
            let list = if write {
                &mut st.writers
            } else {
                &mut st.readers
            };
            list.iter()
                .position(|(k, _)| *k == token)
                .map(|i| list.swap_remove(i))
        };
        // The waker is dropped with the registry released.
        drop(removed);
    }

    /// See [`Stats::readiness_waiters`] (counted on demand: a test and
    /// debugging aid, not for the hot path).
    pub(crate) fn waiters(&self) -> usize {
        self.reg.waiters()
    }

    /// See [`FdState::read_drained`].
    pub(crate) fn read_drained(&self, fd: RawFd) -> bool {
        self.reg
            .fds
            .borrow()
            .get(fd as usize)
            .is_some_and(|s| s.read_drained)
    }

    /// A stream read on `fd` came back short. Only trusted once `fd` is
    /// registered: the edge that ends the wait must be able to arrive.
    pub(crate) fn mark_read_drained(&mut self, fd: RawFd) {
        if let Some(st) = self.reg.fds.borrow_mut().get_mut(fd as usize) {
            if st.registered && !st.read_closed {
                st.read_drained = true;
            }
        }
    }

    /// Takes one op from the budget of file reads done on the loop thread
    /// (`RWF_NOWAIT`, a page-cache hit) per loop iteration; `false` once
    /// it is spent (the op yields and tries again after the next wait for
    /// I/O, so other tasks and I/O get their turn).
    pub(crate) fn inline_budget(&mut self) -> bool {
        if self.inline_left == 0 {
            return false;
        }
        self.inline_left -= 1;
        true
    }

    /// A stream read on `fd` drained it (came back short, or `EAGAIN`):
    /// waits for the next input edge ([`wait_ready`](Self::wait_ready))
    /// and marks the fd so that reads skip their attempt until the edge
    /// comes ([`mark_read_drained`](Self::mark_read_drained)), in one call.
    /// Whether it marked the fd: not once the peer closed (reads return
    /// at once, and no edge is to come), so the caller must read again.
    pub(crate) fn drained_wait(
        &mut self,
        fd: RawFd,
        waker: &Waker,
        token: &mut Option<u64>,
    ) -> io::Result<bool> {
        self.wait_ready(fd, false, waker, token)?;
        self.mark_read_drained(fd);
        Ok(self.read_drained(fd))
    }

    /// Pool jobs reported but not yet taken in.
    pub(crate) fn has_reports(&self) -> bool {
        self.inbox.pending.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for readiness; the wakers to run go to
    /// `wake` (run by the caller with the driver released), the data of
    /// abandoned pool ops whose jobs ended to `garbage`.
    pub(crate) fn park(
        &mut self,
        timeout: Option<Duration>,
        stats: &mut Stats,
        wake: &mut Vec<Waker>,
        garbage: &mut Vec<Box<dyn Any>>,
    ) -> io::Result<()> {
        let ms: libc::c_int = match timeout {
            _ if self.has_reports() => 0,
            None => -1,
            Some(d) if d.is_zero() => 0,
            // Round up so a timer is never woken for early.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        // SAFETY: the events buffer is valid for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.reg.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        stats.enter_calls += 1;
        self.inline_left = INLINE_BUDGET;
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        let mut fds = self.reg.fds.borrow_mut();
        for i in 0..n.max(0) as usize {
            let ev = self.events[i];
            let token = ev.u64;
            if token == WAKE_TOKEN {
                let mut buf = [0u8; 8];
                // SAFETY: reading 8 bytes into a valid buffer from our eventfd.
                unsafe { libc::read(self.wake_fd, buf.as_mut_ptr().cast(), 8) };
                continue;
            }
            let bits = ev.events as i32;
            let Some(st) = fds.get_mut(token as usize) else {
                continue;
            };
            let err = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            if err || bits & libc::EPOLLRDHUP != 0 {
                st.read_closed = true;
            }
            if err || bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) != 0 {
                st.read_drained = false;
                wake.extend(st.readers.drain(..).map(|(_, w)| w));
            }
            if err || bits & libc::EPOLLOUT != 0 {
                wake.extend(st.writers.drain(..).map(|(_, w)| w));
            }
        }
        drop(fds);
        if !self.inbox.pending.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let done = std::mem::take(&mut *self.inbox.done.lock().unwrap_or_else(|e| e.into_inner()));
        for key in done {
            self.complete_blocking(key, wake, garbage);
        }
        Ok(())
    }

    /// Sends a blocking op to the pool; returns its slot key.
    pub(crate) fn submit_blocking<T: OpCode>(&mut self, ptr: *mut T, waker: &Waker) -> usize {
        let job_state = JobState::new();
        let key = self.blocking.insert(PoolSlot {
            job: job_state.clone(),
            waker: Some(waker.clone()),
            reported: false,
            abandoned: None,
        });
        let job = Job {
            ptr: ptr.cast(),
            run: run_op::<T>,
        };
        let inbox = self.inbox.clone();
        self.pool.spawn(Box::new(move || {
            let job = job;
            if job_state.claim() {
                // SAFETY: see `Job`; claimed, so the op was not dropped and
                // will not be until `finish`.
                let r = unsafe { (job.run)(job.ptr) };
                job_state.finish(r);
            }
            inbox
                .done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(key);
            inbox.pending.store(true, Ordering::Release);
            inbox.unpark.unpark();
        }));
        key
    }

    /// The pool reported job `key`.
    fn complete_blocking(
        &mut self,
        key: usize,
        wake: &mut Vec<Waker>,
        garbage: &mut Vec<Box<dyn Any>>,
    ) {
        let Some(slot) = self.blocking.get_mut(key) else {
            return;
        };
        if slot.abandoned.is_some() {
            let slot = self.blocking.remove(key);
            if let Some((mut data, discard)) = slot.abandoned {
                let res = match slot.job.take() {
                    Ok(n) => n as i32,
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                };
                discard(&mut *data, res);
                garbage.push(data);
            }
            return;
        }
        slot.reported = true;
        if let Some(w) = slot.waker.take() {
            wake.push(w);
        }
    }

    pub(crate) fn poll_blocking(&mut self, key: usize, waker: &Waker) -> Poll<io::Result<usize>> {
        match self.blocking.get_mut(key) {
            Some(s) if s.reported => Poll::Ready(self.blocking.remove(key).job.take()),
            Some(s) => {
                match &s.waker {
                    Some(old) if old.will_wake(waker) => {}
                    _ => s.waker = Some(waker.clone()),
                }
                Poll::Pending
            }
            None => Poll::Ready(Err(io::Error::other("blocking op slot lost"))),
        }
    }

    /// The op's future was dropped. On return no pool thread touches it
    /// (see the module docs); its slot stays until the pool reports back,
    /// so the key is not reused early. `discard` gets a successful result
    /// nobody will take (an opened fd, to close).
    pub(crate) fn abandon_blocking(
        &mut self,
        key: usize,
        mut data: Box<dyn Any>,
        discard: LateHook,
    ) -> Option<Box<dyn Any>> {
        let slot = self.blocking.get_mut(key)?;
        if slot.reported {
            let slot = self.blocking.remove(key);
            let res = match slot.job.take() {
                Ok(n) => n as i32,
                Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            };
            discard(&mut *data, res);
            return Some(data);
        }
        if let Some(r) = slot.job.skip_or_wait() {
            let res = match r {
                Ok(n) => n as i32,
                Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            };
            discard(&mut *data, res);
        }
        slot.abandoned = Some((data, discard_nothing));
        None
    }

    /// The op is moving to another loop: `Some(result)` if its job ran
    /// (the op completes with it), `None` if it never started (the op can
    /// start afresh elsewhere). Either way no pool thread touches the op
    /// after this returns.
    pub(crate) fn detach_blocking(&mut self, key: usize) -> Option<io::Result<usize>> {
        let slot = self.blocking.get_mut(key)?;
        if slot.reported {
            return Some(self.blocking.remove(key).job.take());
        }
        let res = slot.job.skip_or_wait();
        // The slot waits for the pool's report, so the key is not reused
        // before it comes.
        slot.abandoned = Some((Box::new(()), discard_nothing));
        res
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // Pool jobs of abandoned ops must not outlive their data: wait for
        // those already running (bounded file syscalls); skip the rest.
        for (_, slot) in self.blocking.iter() {
            let _ = slot.job.skip_or_wait();
        }
    }
}
