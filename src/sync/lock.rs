//! [`Lock`]: asyncio's `Lock`, with an RAII guard.
//!
//! Ownership is handed directly from the releasing guard to the first waiter
//! (FIFO), so the lock stays `locked()` while it is on its way to that waiter
//! and a barging [`Lock::try_lock`] cannot steal it. If the chosen waiter's
//! future is dropped before it runs (its task was cancelled), the drop hands
//! the lock on to the next waiter, or unlocks it if nobody waits.
//!
//! Invariant: if anybody waits, the lock is locked.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::waiters::WaitList;

/// A mutual-exclusion lock for tasks (`asyncio.Lock`).
///
/// It guards no data (as in asyncio); hold a [`LockGuard`] for as long as you
/// need exclusive access. `Lock` is a plain `!Send` struct: share it between
/// tasks with `Rc<Lock>`.
///
/// ```
/// use std::rc::Rc;
/// uringio::run(async {
///     let lock = Rc::new(uringio::sync::Lock::new());
///     let l2 = lock.clone();
///     let t = uringio::spawn(async move {
///         let _g = l2.lock().await;
///         // ... critical section ...
///     });
///     {
///         let _g = lock.lock().await;
///     }
///     t.await.unwrap();
/// });
/// ```
pub struct Lock {
    locked: Cell<bool>,
    waiters: RefCell<WaitList<()>>,
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Lock {
        Lock {
            locked: Cell::new(false),
            waiters: RefCell::new(WaitList::new()),
        }
    }

    /// Acquires the lock, waiting in FIFO order behind earlier callers.
    ///
    /// Cancellation-safe: dropping the future gives up the place in line, and
    /// if the lock had already been handed to it, hands it on.
    pub fn lock(&self) -> LockFuture<'_> {
        LockFuture {
            lock: self,
            key: None,
        }
    }

    /// Acquires the lock if it is free right now, without waiting.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        if self.locked.get() {
            None
        } else {
            self.locked.set(true);
            Some(LockGuard { lock: self })
        }
    }

    /// True if somebody holds the lock (or it is being handed to a waiter).
    pub fn locked(&self) -> bool {
        self.locked.get()
    }

    /// Gives the lock to the first waiter, or unlocks it.
    fn release(&self) {
        let next = self.waiters.borrow_mut().notify_one(());
        match next {
            Ok(w) => w.wake(),
            Err(()) => self.locked.set(false),
        }
    }
}

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.locked.get())
            .field("waiters", &self.waiters.borrow().len())
            .finish()
    }
}

/// Proof that the [`Lock`] is held; dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    pub(crate) lock: &'a Lock,
}

impl<'a> LockGuard<'a> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &'a Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// The future returned by [`Lock::lock`].
#[must_use = "futures do nothing unless awaited"]
pub struct LockFuture<'a> {
    lock: &'a Lock,
    /// Our place in the wait list, once we wait.
    key: Option<usize>,
}

impl<'a> Future for LockFuture<'a> {
    type Output = LockGuard<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LockGuard<'a>> {
        let lock = self.lock;
        match self.key {
            None => {
                if !lock.locked.get() {
                    lock.locked.set(true);
                    return Poll::Ready(LockGuard { lock });
                }
                self.key = Some(lock.waiters.borrow_mut().push_back(cx.waker().clone()));
                Poll::Pending
            }
            Some(key) => match lock.waiters.borrow_mut().poll(key, cx.waker()) {
                // The releaser handed the lock to us: it is still marked locked.
                Some(()) => {
                    self.key = None;
                    Poll::Ready(LockGuard { lock })
                }
                None => Poll::Pending,
            },
        }
    }
}

impl Drop for LockFuture<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let handed = self.lock.waiters.borrow_mut().remove(key);
            if handed.is_some() {
                // We were chosen but will never run: pass the lock on.
                self.lock.release();
            }
        }
    }
}

impl fmt::Debug for LockFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockFuture")
            .field("waiting", &self.key.is_some())
            .finish()
    }
}
