//! [`Barrier`]: asyncio's `Barrier`, a meeting point for a fixed number of
//! tasks.
//!
//! States: *filling* (fewer than `parties` tasks wait) and *broken* (after
//! [`Barrier::abort`], until [`Barrier::reset`]). When the last party arrives,
//! every waiter is handed its index at once and the barrier is filling again
//! for the next cycle, so asyncio's separate *draining* state is not needed:
//! a released waiter already holds its result, and a later `abort` or `reset`
//! cannot take it away.
//!
//! Indices are given out when the barrier trips, in arrival order among the
//! tasks still waiting: `0..parties - 1` to the waiters, `parties - 1` to the
//! task that tripped it. A waiter cancelled before that simply leaves (one
//! fewer waiting), so the indices of a cycle are always distinct.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::waiters::{WaitList, wake_all};
use crate::error::BrokenBarrierError;

/// A barrier for `parties` tasks (`asyncio.Barrier`).
///
/// A plain `!Send` struct: share it with `Rc<Barrier>`.
pub struct Barrier {
    parties: usize,
    broken: Cell<bool>,
    waiters: RefCell<WaitList<Result<usize, BrokenBarrierError>>>,
}

impl Barrier {
    /// A barrier that releases its waiters once `parties` tasks wait.
    ///
    /// # Panics
    /// If `parties` is 0 (asyncio raises `ValueError`).
    pub fn new(parties: usize) -> Barrier {
        assert!(parties > 0, "Barrier::new: parties must be at least 1");
        Barrier {
            parties,
            broken: Cell::new(false),
            waiters: RefCell::new(WaitList::new()),
        }
    }

    /// Waits until `parties` tasks are waiting, then returns this task's index
    /// in the cycle (`0..parties`, distinct within a cycle).
    ///
    /// # Errors
    /// [`BrokenBarrierError`] if the barrier is broken, or is aborted or
    /// reset while this task waits.
    pub fn wait(&self) -> BarrierWait<'_> {
        BarrierWait {
            barrier: self,
            key: None,
        }
    }

    /// Returns the barrier to its empty, unbroken state. Tasks waiting now get
    /// [`BrokenBarrierError`].
    pub fn reset(&self) {
        self.broken.set(false);
        self.fail_waiters();
    }

    /// Breaks the barrier: tasks waiting now and every later
    /// [`wait`](Self::wait) get [`BrokenBarrierError`], until
    /// [`reset`](Self::reset).
    pub fn abort(&self) {
        self.broken.set(true);
        self.fail_waiters();
    }

    /// How many tasks must wait to trip the barrier.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// How many tasks are waiting now.
    pub fn n_waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// True if the barrier is broken (aborted and not reset).
    pub fn broken(&self) -> bool {
        self.broken.get()
    }

    fn fail_waiters(&self) {
        let wakers = self
            .waiters
            .borrow_mut()
            .notify_all(|_| Err(BrokenBarrierError));
        wake_all(wakers);
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken.get())
            .finish()
    }
}

/// The future returned by [`Barrier::wait`].
#[must_use = "futures do nothing unless awaited"]
pub struct BarrierWait<'a> {
    barrier: &'a Barrier,
    key: Option<usize>,
}

impl Future for BarrierWait<'_> {
    type Output = Result<usize, BrokenBarrierError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let barrier = self.barrier;
        if let Some(key) = self.key {
            return match barrier.waiters.borrow_mut().poll(key, cx.waker()) {
                Some(result) => {
                    self.key = None;
                    Poll::Ready(result)
                }
                None => Poll::Pending,
            };
        }
        if barrier.broken.get() {
            return Poll::Ready(Err(BrokenBarrierError));
        }
        let mut waiters = barrier.waiters.borrow_mut();
        if waiters.len() + 1 < barrier.parties {
            self.key = Some(waiters.push_back(cx.waker().clone()));
            return Poll::Pending;
        }
        // We are the last party: trip the barrier.
        let wakers = waiters.notify_all(Ok);
        drop(waiters);
        wake_all(wakers);
        Poll::Ready(Ok(barrier.parties - 1))
    }
}

impl Drop for BarrierWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // A result we were handed concerns only us: nothing to pass on.
            self.barrier.waiters.borrow_mut().remove(key);
        }
    }
}

impl fmt::Debug for BarrierWait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierWait")
            .field("waiting", &self.key.is_some())
            .finish()
    }
}
