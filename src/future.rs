//! `asyncio.Future` as [`Promise<T>`]: a one-shot value that one side sets
//! and any number of tasks await.
//!
//! # State machine
//! ```text
//!            set_result(v)
//! Pending ───────────────────▶ Done(v)
//!    │        cancel()
//!    └───────────────────────▶ Cancelled
//! ```
//! A promise leaves `Pending` exactly once. On that transition every waiting
//! [`PromiseWait`] is woken and every done-callback is handed to the running
//! loop's `call_soon`, in the order the callbacks were added; callbacks never
//! run inline inside `set_result` or `cancel` (asyncio does the same). A
//! callback added after the promise is done is scheduled at once, again with
//! `call_soon`.
//!
//! The promise is a shared handle (`Rc` inside): cloning it gives another
//! handle to the same state, so the producer and the waiters each keep one.
//! It is `!Send`, like everything that lives inside one loop.

use std::cell::RefCell;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::error::{CancelledError, InvalidStateError};

type Callback<T> = Box<dyn FnOnce(&Promise<T>)>;

enum State<T> {
    Pending,
    Done(T),
    Cancelled,
}

struct Inner<T> {
    state: State<T>,
    /// Waiting `PromiseWait`s, keyed by the id each one got on its first poll.
    waiters: Vec<(u64, Waker)>,
    next_waiter: u64,
    callbacks: Vec<Callback<T>>,
}

/// A value that will be set later (`asyncio.Future`).
///
/// One side calls [`set_result`](Self::set_result) (or
/// [`cancel`](Self::cancel)); any number of tasks await
/// [`wait`](Self::wait), each getting a clone of the value. A `Promise` can
/// also be awaited directly: `promise.await` is `promise.wait().await`.
///
/// ```
/// use uringio::future::Promise;
/// uringio::run(async {
///     let p = Promise::new();
///     let waiter = uringio::spawn({
///         let p = p.clone();
///         async move { p.wait().await }
///     });
///     p.set_result(7).unwrap();
///     assert_eq!(waiter.await.unwrap(), Ok(7));
/// });
/// ```
pub struct Promise<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

impl<T> Clone for Promise<T> {
    fn clone(&self) -> Self {
        Promise {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<T: Clone + 'static> Default for Promise<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner.borrow().state {
            State::Pending => "pending",
            State::Done(_) => "done",
            State::Cancelled => "cancelled",
        };
        f.debug_struct("Promise").field("state", &state).finish()
    }
}

impl<T: Clone + 'static> Promise<T> {
    /// A new, pending promise.
    pub fn new() -> Self {
        Promise {
            inner: Rc::new(RefCell::new(Inner {
                state: State::Pending,
                waiters: Vec::new(),
                next_waiter: 0,
                callbacks: Vec::new(),
            })),
        }
    }

    /// Sets the value, wakes every waiter and schedules the done-callbacks.
    ///
    /// Fails with [`InvalidStateError`] if the promise is already done or
    /// cancelled; the value is then dropped.
    pub fn set_result(&self, v: T) -> Result<(), InvalidStateError> {
        self.complete(State::Done(v))
    }

    /// Cancels the promise: waiters get [`CancelledError`], callbacks are
    /// scheduled. Returns `false` (and changes nothing) if it was already
    /// done or cancelled.
    pub fn cancel(&self) -> bool {
        self.complete(State::Cancelled).is_ok()
    }

    /// True once the promise has a value or was cancelled.
    pub fn done(&self) -> bool {
        !matches!(self.inner.borrow().state, State::Pending)
    }

    /// True if the promise was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(self.inner.borrow().state, State::Cancelled)
    }

    /// A clone of the value.
    ///
    /// Fails with [`InvalidStateError`] if no value is set yet, and also if
    /// the promise was cancelled (where asyncio raises `CancelledError`; use
    /// [`cancelled`](Self::cancelled) to tell the two apart).
    pub fn result(&self) -> Result<T, InvalidStateError> {
        match &self.inner.borrow().state {
            State::Done(v) => Ok(v.clone()),
            State::Pending | State::Cancelled => Err(InvalidStateError),
        }
    }

    /// Runs `f(&promise)` once the promise is done or cancelled.
    ///
    /// The callback is scheduled with the running loop's `call_soon`, never
    /// run inline; callbacks run in the order they were added. If the promise
    /// is already done, the callback is scheduled at once. Outside a running
    /// loop there is nothing to schedule on, so callbacks run inline at the
    /// moment the promise completes (or, if it is already done, right away).
    pub fn add_done_callback(&self, f: impl FnOnce(&Promise<T>) + 'static) {
        let mut inner = self.inner.borrow_mut();
        if let State::Pending = inner.state {
            inner.callbacks.push(Box::new(f));
            return;
        }
        drop(inner);
        self.schedule(vec![Box::new(f)]);
    }

    /// Waits for the value; every waiter gets its own clone. Fails with
    /// [`CancelledError`] if the promise is cancelled.
    ///
    /// The returned future keeps its own handle to the promise, so it is
    /// `'static` and can be moved into a spawned task.
    pub fn wait(&self) -> PromiseWait<T> {
        PromiseWait {
            promise: self.clone(),
            key: None,
        }
    }

    fn complete(&self, new: State<T>) -> Result<(), InvalidStateError> {
        let (waiters, callbacks) = {
            let mut inner = self.inner.borrow_mut();
            if !matches!(inner.state, State::Pending) {
                return Err(InvalidStateError);
            }
            inner.state = new;
            (
                std::mem::take(&mut inner.waiters),
                std::mem::take(&mut inner.callbacks),
            )
        };
        // The borrow is released: a waker or a callback may touch the promise.
        for (_, w) in waiters {
            w.wake();
        }
        self.schedule(callbacks);
        Ok(())
    }

    fn schedule(&self, callbacks: Vec<Callback<T>>) {
        if callbacks.is_empty() {
            return;
        }
        match crate::runtime::try_running_loop() {
            Some(lp) => {
                for cb in callbacks {
                    let p = self.clone();
                    let _ = lp.call_soon(move || cb(&p));
                }
            }
            None => {
                for cb in callbacks {
                    cb(self);
                }
            }
        }
    }
}

impl<T: Clone + 'static> IntoFuture for Promise<T> {
    type Output = Result<T, CancelledError>;
    type IntoFuture = PromiseWait<T>;

    fn into_future(self) -> PromiseWait<T> {
        PromiseWait {
            promise: self,
            key: None,
        }
    }
}

impl<T: Clone + 'static> IntoFuture for &Promise<T> {
    type Output = Result<T, CancelledError>;
    type IntoFuture = PromiseWait<T>;

    fn into_future(self) -> PromiseWait<T> {
        self.wait()
    }
}

/// The future returned by [`Promise::wait`]: resolves to a clone of the
/// value, or [`CancelledError`]. Dropping it before it resolves just removes
/// this waiter.
#[must_use = "futures do nothing unless awaited"]
pub struct PromiseWait<T> {
    promise: Promise<T>,
    key: Option<u64>,
}

impl<T> fmt::Debug for PromiseWait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromiseWait")
            .field("promise", &self.promise)
            .finish()
    }
}

impl<T: Clone + 'static> Future for PromiseWait<T> {
    type Output = Result<T, CancelledError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut inner = this.promise.inner.borrow_mut();
        match &inner.state {
            State::Done(v) => {
                let v = v.clone();
                this.key = None;
                return Poll::Ready(Ok(v));
            }
            State::Cancelled => {
                this.key = None;
                return Poll::Ready(Err(CancelledError));
            }
            State::Pending => {}
        }
        match this.key {
            Some(k) => match inner.waiters.iter_mut().find(|(id, _)| *id == k) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => inner.waiters.push((k, cx.waker().clone())),
            },
            None => {
                let k = inner.next_waiter;
                inner.next_waiter += 1;
                inner.waiters.push((k, cx.waker().clone()));
                this.key = Some(k);
            }
        }
        Poll::Pending
    }
}

impl<T> Drop for PromiseWait<T> {
    fn drop(&mut self) {
        let Some(k) = self.key else { return };
        if let Ok(mut inner) = self.promise.inner.try_borrow_mut() {
            inner.waiters.retain(|(id, _)| *id != k);
        }
    }
}
