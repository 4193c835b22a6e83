//! [`Condition`]: asyncio's condition variable.
//!
//! A waiter's life: [`Condition::wait`] parks it in a FIFO wait list, *then*
//! releases the lock (both in the same poll, so no `notify` can slip in
//! between); [`Condition::notify`] unlinks the first `n` parked waiters and
//! wakes them; a woken waiter re-acquires the lock (queueing FIFO on the lock)
//! and returns its guard.
//!
//! Cancellation: a waiter dropped after it was notified, whether before it
//! ran or while re-acquiring the lock, notifies the next parked waiter
//! instead, so a `notify(1)` is never lost (asyncio does the same; at worst
//! this is a spurious wake-up, which condition-variable users must tolerate).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::lock::{Lock, LockFuture, LockGuard};
use super::waiters::{WaitList, wake_all};

/// A condition variable (`asyncio.Condition`): tasks wait for a notification
/// while temporarily giving up a [`Lock`].
///
/// [`Condition::new`] makes its own lock; [`Condition::with_lock`] shares an
/// existing `Rc<Lock>` (several conditions over one lock). The condition
/// itself is a plain `!Send` struct: share it with `Rc<Condition>`.
///
/// `notify` and `notify_all` do not check that the caller holds the lock (a
/// guard proves nothing about who holds it); as in asyncio, call them while
/// holding it so that the state you changed and the notification go together.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use uringio::sync::Condition;
/// uringio::run(async {
///     let cond = Rc::new(Condition::new());
///     let ready = Rc::new(Cell::new(false));
///     let (c, r) = (cond.clone(), ready.clone());
///     let waiter = uringio::spawn(async move {
///         let g = c.lock().await;
///         let _g = c.wait_for(g, || r.get()).await;
///     });
///     let _g = cond.lock().await;
///     ready.set(true);
///     cond.notify_all();
///     drop(_g);
///     waiter.await.unwrap();
/// });
/// ```
pub struct Condition {
    lock: Rc<Lock>,
    waiters: RefCell<WaitList<()>>,
}

impl Condition {
    /// A condition with a lock of its own.
    pub fn new() -> Condition {
        Condition::with_lock(Rc::new(Lock::new()))
    }

    /// A condition over `lock`, which other conditions or tasks may share.
    pub fn with_lock(lock: Rc<Lock>) -> Condition {
        Condition {
            lock,
            waiters: RefCell::new(WaitList::new()),
        }
    }

    /// The underlying lock.
    pub fn lock_ref(&self) -> &Rc<Lock> {
        &self.lock
    }

    /// Acquires the underlying lock (`async with cond`).
    pub fn lock(&self) -> LockFuture<'_> {
        self.lock.lock()
    }

    /// Acquires the underlying lock if it is free right now.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        self.lock.try_lock()
    }

    /// True if the underlying lock is held.
    pub fn locked(&self) -> bool {
        self.lock.locked()
    }

    /// Releases the lock, waits to be notified, re-acquires the lock and
    /// returns its guard.
    ///
    /// Dropping the future releases the lock (if it was not yet released) and
    /// leaves the caller without it; a notification it had received goes to
    /// the next waiter.
    ///
    /// # Panics
    /// If `guard` belongs to a lock other than this condition's.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> impl Future<Output = LockGuard<'a>> + 'a {
        assert!(
            std::ptr::eq(guard.lock, Rc::as_ptr(&self.lock)),
            "Condition::wait: the guard is for a different lock"
        );
        async move {
            Notified {
                cond: self,
                guard: Some(guard),
                key: None,
            }
            .await;
            // Notified: from here until we hold the lock again, a drop passes
            // the notification on.
            let pass_on = PassOn { cond: self };
            let guard = self.lock.lock().await;
            std::mem::forget(pass_on);
            guard
        }
    }

    /// Waits until `predicate()` is true: checks it (holding the lock), and
    /// [`wait`](Self::wait)s while it is false. Returns the guard.
    ///
    /// # Panics
    /// If `guard` belongs to a lock other than this condition's.
    pub fn wait_for<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut predicate: impl FnMut() -> bool,
    ) -> impl Future<Output = LockGuard<'a>> {
        assert!(
            std::ptr::eq(guard.lock, Rc::as_ptr(&self.lock)),
            "Condition::wait_for: the guard is for a different lock"
        );
        async move {
            while !predicate() {
                guard = self.wait(guard).await;
            }
            guard
        }
    }

    /// Wakes up to `n` waiting tasks, longest-waiting first.
    pub fn notify(&self, n: usize) {
        let mut wakers = Vec::new();
        {
            let mut waiters = self.waiters.borrow_mut();
            while wakers.len() < n {
                match waiters.notify_one(()) {
                    Ok(w) => wakers.push(w),
                    Err(()) => break,
                }
            }
        }
        wake_all(wakers);
    }

    /// Wakes every waiting task.
    pub fn notify_all(&self) {
        let wakers = self.waiters.borrow_mut().notify_all(|_| ());
        wake_all(wakers);
    }

    /// Notifies one waiter, if any (a dropped waiter passing its turn on).
    fn notify_next(&self) {
        let next = self.waiters.borrow_mut().notify_one(());
        if let Ok(w) = next {
            w.wake();
        }
    }
}

impl Default for Condition {
    fn default() -> Self {
        Condition::new()
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("locked", &self.lock.locked())
            .field("waiters", &self.waiters.borrow().len())
            .finish()
    }
}

/// Parks in the wait list and releases the lock (first poll), then waits for
/// a notification.
struct Notified<'a> {
    cond: &'a Condition,
    guard: Option<LockGuard<'a>>,
    key: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let cond = self.cond;
        match self.key {
            None => {
                self.key = Some(cond.waiters.borrow_mut().push_back(cx.waker().clone()));
                // Parked first, unlocked second: a notify made by whoever
                // takes the lock next will find us.
                self.guard = None;
                Poll::Pending
            }
            Some(key) => match cond.waiters.borrow_mut().poll(key, cx.waker()) {
                Some(()) => {
                    self.key = None;
                    Poll::Ready(())
                }
                None => Poll::Pending,
            },
        }
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let notified = self.cond.waiters.borrow_mut().remove(key);
            if notified.is_some() {
                self.cond.notify_next();
            }
        }
    }
}

/// Dropped (instead of forgotten) if a notified waiter is cancelled while it
/// re-acquires the lock: its notification goes to the next waiter.
struct PassOn<'a> {
    cond: &'a Condition,
}

impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        self.cond.notify_next();
    }
}
