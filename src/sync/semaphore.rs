//! [`Semaphore`] and [`BoundedSemaphore`]: asyncio's counting semaphores,
//! with RAII [`Permit`]s.
//!
//! Both share one core: a count of free permits and a FIFO wait list. A
//! released permit goes straight to the first waiter (the count does not
//! move), so waiters are served in order and `try_acquire` cannot take a
//! permit that is on its way to somebody. A waiter dropped after it was handed
//! a permit releases it again, to the next waiter or back to the count.
//!
//! Invariant: if anybody waits, no permit is free.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::waiters::WaitList;
use crate::error::ValueError;

/// What both semaphores are made of.
struct Core {
    permits: Cell<usize>,
    /// `BoundedSemaphore`'s initial value; `None` for `Semaphore`.
    bound: Option<usize>,
    waiters: RefCell<WaitList<()>>,
}

impl Core {
    fn new(permits: usize, bound: Option<usize>) -> Core {
        Core {
            permits: Cell::new(permits),
            bound,
            waiters: RefCell::new(WaitList::new()),
        }
    }

    fn try_acquire(&self) -> Option<Permit<'_>> {
        let n = self.permits.get();
        if n == 0 {
            return None;
        }
        self.permits.set(n - 1);
        Some(Permit { core: self })
    }

    /// Gives one permit to the first waiter, or adds it to the count. For a
    /// bounded semaphore a permit past the bound is dropped (see `Permit`).
    fn add_permit(&self) {
        let next = self.waiters.borrow_mut().notify_one(());
        match next {
            Ok(w) => w.wake(),
            Err(()) => {
                let n = self.permits.get();
                if self.bound.is_none_or(|b| n < b) {
                    self.permits.set(n.saturating_add(1));
                }
            }
        }
    }

    fn acquire(&self) -> Acquire<'_> {
        Acquire {
            core: self,
            key: None,
        }
    }

    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("permits", &self.permits.get())
            .field("waiters", &self.waiters.borrow().len())
            .finish()
    }
}

/// A counting semaphore (`asyncio.Semaphore`).
///
/// [`acquire`](Self::acquire) waits for a free permit and returns it as a
/// [`Permit`], released when dropped. [`release`](Self::release) adds a permit
/// by hand, as asyncio's `release()` does (with no upper limit; see
/// [`BoundedSemaphore`] for one). A plain `!Send` struct: share it with
/// `Rc<Semaphore>`.
pub struct Semaphore {
    core: Core,
}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            core: Core::new(permits, None),
        }
    }

    /// Waits for a permit, in FIFO order behind earlier callers.
    ///
    /// Cancellation-safe: a future dropped after it was handed a permit
    /// passes that permit on.
    pub fn acquire(&self) -> Acquire<'_> {
        self.core.acquire()
    }

    /// Takes a permit if one is free right now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.core.try_acquire()
    }

    /// Adds one permit (asyncio's `release()`), waking the first waiter.
    ///
    /// Pairs with [`Permit::forget`]; an ordinary `Permit` releases itself
    /// when dropped.
    pub fn release(&self) {
        self.core.add_permit();
    }

    /// True if no permit is free, so [`acquire`](Self::acquire) would wait.
    pub fn locked(&self) -> bool {
        self.core.permits.get() == 0
    }

    /// How many permits are free.
    pub fn available_permits(&self) -> usize {
        self.core.permits.get()
    }
}

impl Default for Semaphore {
    /// A semaphore with one permit, like asyncio's default.
    fn default() -> Self {
        Semaphore::new(1)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.debug("Semaphore", f)
    }
}

/// A semaphore that refuses to be released past its initial value
/// (`asyncio.BoundedSemaphore`).
///
/// The same as [`Semaphore`], except that [`release`](Self::release) returns
/// an error when it would make more permits free than the semaphore started
/// with. A plain `!Send` struct: share it with `Rc<BoundedSemaphore>`.
pub struct BoundedSemaphore {
    core: Core,
}

impl BoundedSemaphore {
    /// A semaphore with `permits` free permits, never more.
    pub fn new(permits: usize) -> BoundedSemaphore {
        BoundedSemaphore {
            core: Core::new(permits, Some(permits)),
        }
    }

    /// Waits for a permit, in FIFO order behind earlier callers.
    ///
    /// Cancellation-safe: a future dropped after it was handed a permit
    /// passes that permit on.
    pub fn acquire(&self) -> Acquire<'_> {
        self.core.acquire()
    }

    /// Takes a permit if one is free right now.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.core.try_acquire()
    }

    /// Adds one permit by hand, waking the first waiter.
    ///
    /// # Errors
    /// [`ValueError`] if every permit is already free (the release would go
    /// past the initial value); nothing changes then.
    pub fn release(&self) -> Result<(), ValueError> {
        if self
            .core
            .bound
            .is_some_and(|b| self.core.permits.get() >= b)
        {
            return Err(ValueError::new("BoundedSemaphore released too many times"));
        }
        self.core.add_permit();
        Ok(())
    }

    /// True if no permit is free, so [`acquire`](Self::acquire) would wait.
    pub fn locked(&self) -> bool {
        self.core.permits.get() == 0
    }

    /// How many permits are free.
    pub fn available_permits(&self) -> usize {
        self.core.permits.get()
    }
}

impl Default for BoundedSemaphore {
    /// A bounded semaphore with one permit, like asyncio's default.
    fn default() -> Self {
        BoundedSemaphore::new(1)
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.debug("BoundedSemaphore", f)
    }
}

/// One permit of a [`Semaphore`] or [`BoundedSemaphore`]; dropping it gives
/// the permit back (to the first waiter, if any).
///
/// For a `BoundedSemaphore` whose permits were already all given back by
/// manual `release()` calls, dropping a permit does nothing: the bound holds.
#[must_use = "the permit is released as soon as it is dropped"]
pub struct Permit<'a> {
    core: &'a Core,
}

impl Permit<'_> {
    /// Keeps the permit taken for good: dropping is skipped, so the semaphore
    /// has one permit less until somebody calls `release()`.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.core.add_permit();
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

/// The future returned by [`Semaphore::acquire`] and
/// [`BoundedSemaphore::acquire`].
#[must_use = "futures do nothing unless awaited"]
pub struct Acquire<'a> {
    core: &'a Core,
    key: Option<usize>,
}

impl<'a> Future for Acquire<'a> {
    type Output = Permit<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit<'a>> {
        let core = self.core;
        match self.key {
            None => {
                if let Some(p) = core.try_acquire() {
                    return Poll::Ready(p);
                }
                self.key = Some(core.waiters.borrow_mut().push_back(cx.waker().clone()));
                Poll::Pending
            }
            Some(key) => match core.waiters.borrow_mut().poll(key, cx.waker()) {
                // A releaser handed its permit straight to us.
                Some(()) => {
                    self.key = None;
                    Poll::Ready(Permit { core })
                }
                None => Poll::Pending,
            },
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let handed = self.core.waiters.borrow_mut().remove(key);
            if handed.is_some() {
                self.core.add_permit();
            }
        }
    }
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("waiting", &self.key.is_some())
            .finish()
    }
}
