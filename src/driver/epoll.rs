//! The epoll backend: try the system call, on `EAGAIN` wait for readiness.
//!
//! Each fd an op waits on is registered once, edge-triggered, for input and
//! output; its state holds the wakers of the ops waiting to read and to
//! write. Ops always try their system call before waiting, so an edge that
//! fired while nobody waited is never needed, with one exception: a stream
//! read that came back short drained the socket, so the next read on that
//! fd waits for an input edge without trying first (the `EAGAIN` it would
//! get costs a system call per message in request/response traffic; tokio
//! does the same). Any input edge, even one nobody waited for, clears that
//! mark, so no data that arrived later is missed. Regular-file ops, which epoll
//! cannot wait on, run on the loop's blocking pool: the op's boxed data stays
//! put while a pool thread performs it, and the result comes back through the
//! loop's remote queue.
//!
//! ## Pool slot states
//! ```text
//! Running(waker) ──pool done──▶ Done(res) ──op polls──▶ removed
//!      └─op dropped─▶ Abandoned(data) ──pool done──▶ removed, data freed
//! ```
//! A dropped op must not be performed later: its fd may be closed and the
//! number reused by another file by then. So each job claims its op before
//! running it ([`JobState`]); dropping the op skips a job still queued, and
//! waits for one already inside its system call (a bounded file syscall)
//! to return. After `abandon_blocking` no pool thread touches the op.

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use slab::Slab;

use super::Stats;
use super::op::OpCode;
use crate::runtime::blocking::BlockingPool;
use crate::runtime::scheduler::Shared;

const WAKE_TOKEN: u64 = u64::MAX;

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
    readers: Vec<Waker>,
    writers: Vec<Waker>,
}

enum PoolSlot {
    Running(Option<Waker>, Arc<JobState>),
    Done(io::Result<usize>),
    /// Dropped; the hook is given a successful result (an fd to close).
    Abandoned(Box<dyn Any>, fn(i32)),
}

const QUEUED: u8 = 0;
const PERFORMING: u8 = 1;
const FINISHED: u8 = 2;
const SKIPPED: u8 = 3;

/// Where a pool job is, agreed between the loop and the pool thread.
struct JobState {
    state: Mutex<u8>,
    finished: Condvar,
}

impl JobState {
    fn new() -> Arc<JobState> {
        Arc::new(JobState {
            state: Mutex::new(QUEUED),
            finished: Condvar::new(),
        })
    }

    /// Pool side: may the op be performed (not dropped meanwhile)?
    fn claim(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *st == QUEUED {
            *st = PERFORMING;
            true
        } else {
            false
        }
    }

    /// Pool side: the op's system call returned.
    fn finish(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = FINISHED;
        self.finished.notify_all();
    }

    /// Loop side, the op is being dropped: skip it if it has not started,
    /// else wait until its system call returned.
    fn skip_or_wait(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *st == QUEUED {
            *st = SKIPPED;
            return;
        }
        while *st == PERFORMING {
            st = self.finished.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

pub(crate) struct Epoll {
    epfd: OwnedFd,
    fds: Vec<FdState>,
    events: Vec<libc::epoll_event>,
    wake_fd: RawFd,
    shared: Arc<Shared>,
    pool: Arc<BlockingPool>,
    blocking: Slab<PoolSlot>,
}

/// A pointer to an op's boxed data, sent to a pool thread.
struct Job {
    ptr: *mut (),
    run: unsafe fn(*mut ()) -> io::Result<usize>,
}

// SAFETY: the pointee is an op's boxed data, which stays allocated and is not
// touched by the loop thread until the pool reports completion (the slot is
// Running or Abandoned meanwhile); `OpCode::perform` for blocking ops only
// touches plain data (fds, raw pointers, integers, C strings).
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

impl Epoll {
    pub(crate) fn new(
        wake_fd: RawFd,
        shared: Arc<Shared>,
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
        Ok(Epoll {
            epfd,
            fds: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            wake_fd,
            shared,
            pool,
            blocking: Slab::new(),
        })
    }

    /// Registers `waker` to run when `fd` becomes readable (or writable).
    pub(crate) fn wait_ready(&mut self, fd: RawFd, write: bool, waker: &Waker) -> io::Result<()> {
        let idx = fd as usize;
        if self.fds.len() <= idx {
            self.fds.resize_with(idx + 1, FdState::default);
        }
        if !self.fds[idx].registered {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: fd as u64,
            };
            // SAFETY: valid epoll fd and event pointer; fd is owned by the op's
            // socket, which outlives the op.
            let r =
                unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
                // SAFETY: as above.
                cvt(unsafe {
                    libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev)
                })?;
            }
            self.fds[idx].registered = true;
        }
        let list = if write {
            &mut self.fds[idx].writers
        } else {
            &mut self.fds[idx].readers
        };
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
        Ok(())
    }

    /// See [`FdState::read_drained`].
    pub(crate) fn read_drained(&self, fd: RawFd) -> bool {
        self.fds.get(fd as usize).is_some_and(|s| s.read_drained)
    }

    /// A stream read on `fd` came back short. Only trusted once `fd` is
    /// registered: the edge that ends the wait must be able to arrive.
    pub(crate) fn mark_read_drained(&mut self, fd: RawFd) {
        if let Some(st) = self.fds.get_mut(fd as usize) {
            if st.registered && !st.read_closed {
                st.read_drained = true;
            }
        }
    }

    /// The fd is being closed: drop its registration and wake its waiters
    /// (their retry sees the closed fd).
    pub(crate) fn forget_fd(&mut self, fd: RawFd) {
        let idx = fd as usize;
        if let Some(st) = self.fds.get_mut(idx) {
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
            let st = std::mem::take(st);
            for w in st.readers.into_iter().chain(st.writers) {
                w.wake();
            }
        }
    }

    pub(crate) fn park(&mut self, timeout: Option<Duration>, stats: &mut Stats) -> io::Result<()> {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) if d.is_zero() => 0,
            // Round up so a timer is never woken for early.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        // SAFETY: the events buffer is valid for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        stats.enter_calls += 1;
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(e);
        }
        for i in 0..n as usize {
            let ev = self.events[i];
            let token = ev.u64;
            if token == WAKE_TOKEN {
                let mut buf = [0u8; 8];
                // SAFETY: reading 8 bytes into a valid buffer from our eventfd.
                unsafe { libc::read(self.wake_fd, buf.as_mut_ptr().cast(), 8) };
                continue;
            }
            let bits = ev.events as i32;
            let Some(st) = self.fds.get_mut(token as usize) else {
                continue;
            };
            let err = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            if err || bits & libc::EPOLLRDHUP != 0 {
                st.read_closed = true;
            }
            if err || bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) != 0 {
                st.read_drained = false;
                for w in st.readers.drain(..) {
                    w.wake();
                }
            }
            if err || bits & libc::EPOLLOUT != 0 {
                for w in st.writers.drain(..) {
                    w.wake();
                }
            }
        }
        Ok(())
    }

    /// Sends a blocking op to the pool; returns its slot key.
    pub(crate) fn submit_blocking<T: OpCode>(&mut self, ptr: *mut T, waker: &Waker) -> usize {
        let st = JobState::new();
        let key = self
            .blocking
            .insert(PoolSlot::Running(Some(waker.clone()), st.clone()));
        let job = Job {
            ptr: ptr.cast(),
            run: run_op::<T>,
        };
        let shared = self.shared.clone();
        self.pool.spawn(Box::new(move || {
            let job = job;
            let res = if st.claim() {
                // SAFETY: see `Job`; claimed, so the op was not dropped and
                // will not be until `finish`.
                let r = unsafe { (job.run)(job.ptr) };
                st.finish();
                r
            } else {
                Err(io::Error::from_raw_os_error(libc::ECANCELED))
            };
            shared.push_call(Box::new(move || {
                crate::runtime::context::try_with_driver(|d| d.complete_blocking(key, res));
            }));
        }));
        key
    }

    /// A pool op finished. Returns the data of an abandoned op, to drop.
    pub(crate) fn complete_blocking(
        &mut self,
        key: usize,
        res: io::Result<usize>,
    ) -> Option<Box<dyn Any>> {
        match self.blocking.get_mut(key) {
            Some(PoolSlot::Running(w, _)) => {
                let w = w.take();
                self.blocking[key] = PoolSlot::Done(res);
                if let Some(w) = w {
                    w.wake();
                }
                None
            }
            Some(PoolSlot::Abandoned(..)) => match self.blocking.remove(key) {
                PoolSlot::Abandoned(d, discard) => {
                    if let Ok(n) = res {
                        discard(n as i32);
                    }
                    Some(d)
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn poll_blocking(&mut self, key: usize, waker: &Waker) -> Poll<io::Result<usize>> {
        match self.blocking.get_mut(key) {
            Some(PoolSlot::Done(_)) => match self.blocking.remove(key) {
                PoolSlot::Done(r) => Poll::Ready(r),
                _ => unreachable!(),
            },
            Some(PoolSlot::Running(w, _)) => {
                match w {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
            _ => Poll::Ready(Err(io::Error::other("blocking op slot lost"))),
        }
    }

    /// The op's future was dropped. On return no pool thread touches it
    /// (see the module docs); its slot stays until the pool reports back,
    /// so the key is not reused early. `discard` gets a successful result
    /// nobody will take (an opened fd, to close).
    pub(crate) fn abandon_blocking(&mut self, key: usize, data: Box<dyn Any>, discard: fn(i32)) {
        match self.blocking.get(key) {
            Some(PoolSlot::Running(_, st)) => {
                st.skip_or_wait();
                self.blocking[key] = PoolSlot::Abandoned(data, discard);
            }
            Some(PoolSlot::Done(_)) => {
                if let PoolSlot::Done(Ok(n)) = self.blocking.remove(key) {
                    discard(n as i32);
                }
            }
            _ => {}
        }
    }
}
