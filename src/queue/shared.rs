//! The state every queue handle points to, and the logic of `put`, `get`,
//! `task_done`, `join` and `shutdown` (asyncio's `Queue`, Python 3.13).
//!
//! Items stay in the store until a getter takes them, so `qsize()` and
//! `get_nowait()` behave as in asyncio. A `put` wakes the first waiting
//! getter and a `get` the first waiting putter; the woken task re-checks the
//! queue when it runs. If somebody else took the item (or the free slot) in
//! the meantime, the woken task parks again at the *front* of the line, so
//! waiting tasks are still served in FIFO order. A woken task dropped before
//! it ran wakes the next one in its place if the item (or slot) is still
//! there, so no wake-up is lost.
//!
//! `shutdown` wakes every blocked getter and putter: putters fail, getters
//! drain what is left (or fail at once if `immediate`, which also empties the
//! queue and marks its items done).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_core::{FusedStream, Stream};

use super::error::{GetError, PutError};
use super::storage::Storage;
use crate::error::{QueueShutDown, ValueError};
use crate::sync::waiters::{WaitList, wake_all};

/// One queue's state, behind the `Rc` of every handle.
pub(crate) struct Shared<S> {
    maxsize: usize,
    inner: RefCell<Inner<S>>,
}

struct Inner<S> {
    items: S,
    /// Items put and not yet marked done by `task_done`.
    unfinished: usize,
    shutdown: bool,
    getters: WaitList<()>,
    putters: WaitList<()>,
    joiners: WaitList<()>,
}

impl<S: Storage> Inner<S> {
    fn full(&self, maxsize: usize) -> bool {
        maxsize > 0 && self.items.len() >= maxsize
    }

    /// Parks a getter or putter: at the front if it had been woken already
    /// and lost its item or slot to somebody faster.
    fn park(list: &mut WaitList<()>, waker: &Waker, woken: bool) -> usize {
        if woken {
            list.push_front(waker.clone())
        } else {
            list.push_back(waker.clone())
        }
    }
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl<S: Storage> Shared<S> {
    pub(crate) fn new(maxsize: usize) -> Shared<S> {
        Shared {
            maxsize,
            inner: RefCell::new(Inner {
                items: S::new(),
                unfinished: 0,
                shutdown: false,
                getters: WaitList::new(),
                putters: WaitList::new(),
                joiners: WaitList::new(),
            }),
        }
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize
    }

    pub(crate) fn qsize(&self) -> usize {
        self.inner.borrow().items.len()
    }

    pub(crate) fn full(&self) -> bool {
        self.inner.borrow().full(self.maxsize)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.inner.borrow().shutdown
    }

    pub(crate) fn put_nowait(&self, item: S::Item) -> Result<(), PutError<S::Item>> {
        let mut inner = self.inner.borrow_mut();
        if inner.shutdown {
            return Err(PutError::ShutDown(item));
        }
        if inner.full(self.maxsize) {
            return Err(PutError::Full(item));
        }
        let w = Self::push(&mut inner, item);
        drop(inner);
        wake(w);
        Ok(())
    }

    /// Stores `item`; returns the waker of the getter to wake.
    fn push(inner: &mut Inner<S>, item: S::Item) -> Option<Waker> {
        inner.items.push(item);
        inner.unfinished += 1;
        inner.getters.notify_one(()).ok()
    }

    pub(crate) fn get_nowait(&self) -> Result<S::Item, GetError> {
        let mut inner = self.inner.borrow_mut();
        match inner.items.pop() {
            Some(item) => {
                let w = inner.putters.notify_one(()).ok();
                drop(inner);
                wake(w);
                Ok(item)
            }
            None if inner.shutdown => Err(GetError::ShutDown),
            None => Err(GetError::Empty),
        }
    }

    /// One poll of a `get`; `key` is the getter's place in line.
    fn poll_get(
        &self,
        key: &mut Option<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Item, QueueShutDown>> {
        let mut inner = self.inner.borrow_mut();
        let mut woken = false;
        if let Some(k) = *key {
            match inner.getters.poll(k, cx.waker()) {
                None => return Poll::Pending,
                Some(()) => {
                    *key = None;
                    woken = true;
                }
            }
        }
        if let Some(item) = inner.items.pop() {
            let w = inner.putters.notify_one(()).ok();
            drop(inner);
            wake(w);
            return Poll::Ready(Ok(item));
        }
        if inner.shutdown {
            return Poll::Ready(Err(QueueShutDown));
        }
        *key = Some(Inner::<S>::park(&mut inner.getters, cx.waker(), woken));
        Poll::Pending
    }

    /// A getter's future is dropped while in line.
    fn cancel_get(&self, key: usize) {
        let mut inner = self.inner.borrow_mut();
        let woken = inner.getters.remove(key).is_some();
        if woken && !inner.items.is_empty() {
            // Our wake-up was for an item that is still there: pass it on.
            let w = inner.getters.notify_one(()).ok();
            drop(inner);
            wake(w);
        }
    }

    /// One poll of a `put`; `item` is taken once it is stored.
    fn poll_put(
        &self,
        key: &mut Option<usize>,
        item: &mut Option<S::Item>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), QueueShutDown>> {
        let mut inner = self.inner.borrow_mut();
        let mut woken = false;
        if let Some(k) = *key {
            match inner.putters.poll(k, cx.waker()) {
                None => return Poll::Pending,
                Some(()) => {
                    *key = None;
                    woken = true;
                }
            }
        }
        if inner.shutdown {
            // The item stays in the future and is dropped with it.
            return Poll::Ready(Err(QueueShutDown));
        }
        if !inner.full(self.maxsize) {
            let item = item
                .take()
                .expect("queue put future polled after completion");
            let w = Self::push(&mut inner, item);
            drop(inner);
            wake(w);
            return Poll::Ready(Ok(()));
        }
        *key = Some(Inner::<S>::park(&mut inner.putters, cx.waker(), woken));
        Poll::Pending
    }

    /// A putter's future is dropped while in line.
    fn cancel_put(&self, key: usize) {
        let mut inner = self.inner.borrow_mut();
        let woken = inner.putters.remove(key).is_some();
        if woken && !inner.full(self.maxsize) {
            // Our wake-up was for a free slot that is still free: pass it on.
            let w = inner.putters.notify_one(()).ok();
            drop(inner);
            wake(w);
        }
    }

    pub(crate) fn task_done(&self) -> Result<(), ValueError> {
        let mut inner = self.inner.borrow_mut();
        if inner.unfinished == 0 {
            return Err(ValueError::new("task_done() called too many times"));
        }
        inner.unfinished -= 1;
        if inner.unfinished == 0 {
            let wakers = inner.joiners.notify_all(|_| ());
            drop(inner);
            wake_all(wakers);
        }
        Ok(())
    }

    fn poll_join(&self, key: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        if let Some(k) = *key {
            return match inner.joiners.poll(k, cx.waker()) {
                Some(()) => {
                    *key = None;
                    Poll::Ready(())
                }
                None => Poll::Pending,
            };
        }
        if inner.unfinished == 0 {
            return Poll::Ready(());
        }
        *key = Some(inner.joiners.push_back(cx.waker().clone()));
        Poll::Pending
    }

    fn cancel_join(&self, key: usize) {
        // Every joiner is woken at once: nothing to pass on.
        self.inner.borrow_mut().joiners.remove(key);
    }

    pub(crate) fn shutdown(&self, immediate: bool) {
        let mut inner = self.inner.borrow_mut();
        inner.shutdown = true;
        let mut wakers = Vec::new();
        let mut drained = None;
        if immediate {
            let items = std::mem::replace(&mut inner.items, S::new());
            inner.unfinished = inner.unfinished.saturating_sub(items.len());
            drained = Some(items);
            if inner.unfinished == 0 {
                wakers.extend(inner.joiners.notify_all(|_| ()));
            }
        }
        wakers.extend(inner.getters.notify_all(|_| ()));
        wakers.extend(inner.putters.notify_all(|_| ()));
        drop(inner);
        // Items are dropped outside the borrow: their destructors may use
        // the queue.
        drop(drained);
        wake_all(wakers);
    }

    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct(name)
            .field("maxsize", &self.maxsize)
            .field("qsize", &inner.items.len())
            .field("unfinished", &inner.unfinished)
            .field("getters", &inner.getters.len())
            .field("putters", &inner.putters.len())
            .field("shutdown", &inner.shutdown)
            .finish()
    }
}

/// The future of a queue's `get()`.
pub(crate) struct Get<'a, S: Storage> {
    shared: &'a Shared<S>,
    key: Option<usize>,
}

impl<'a, S: Storage> Get<'a, S> {
    pub(crate) fn new(shared: &'a Shared<S>) -> Self {
        Get { shared, key: None }
    }
}

impl<S: Storage> Future for Get<'_, S> {
    type Output = Result<S::Item, QueueShutDown>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.shared.poll_get(&mut this.key, cx)
    }
}

impl<S: Storage> Drop for Get<'_, S> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.cancel_get(key);
        }
    }
}

/// The future of a queue's `put(item)`.
pub(crate) struct Put<'a, S: Storage> {
    shared: &'a Shared<S>,
    key: Option<usize>,
    item: Option<S::Item>,
}

impl<'a, S: Storage> Put<'a, S> {
    pub(crate) fn new(shared: &'a Shared<S>, item: S::Item) -> Self {
        Put {
            shared,
            key: None,
            item: Some(item),
        }
    }
}

// The item is only ever moved, never pinned.
impl<S: Storage> Unpin for Put<'_, S> {}

impl<S: Storage> Future for Put<'_, S> {
    type Output = Result<(), QueueShutDown>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.shared.poll_put(&mut this.key, &mut this.item, cx)
    }
}

impl<S: Storage> Drop for Put<'_, S> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.cancel_put(key);
        }
    }
}

/// The future of a queue's `join()`.
pub(crate) struct Join<'a, S: Storage> {
    shared: &'a Shared<S>,
    key: Option<usize>,
}

impl<'a, S: Storage> Join<'a, S> {
    pub(crate) fn new(shared: &'a Shared<S>) -> Self {
        Join { shared, key: None }
    }
}

impl<S: Storage> Future for Join<'_, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.poll_join(&mut this.key, cx)
    }
}

impl<S: Storage> Drop for Join<'_, S> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.cancel_join(key);
        }
    }
}

/// A queue consumed as a [`Stream`]: each item is one `get()`; the stream
/// ends once the queue is shut down and empty.
pub(crate) struct QueueStream<S: Storage> {
    shared: Rc<Shared<S>>,
    key: Option<usize>,
}

impl<S: Storage> QueueStream<S> {
    pub(crate) fn new(shared: Rc<Shared<S>>) -> Self {
        QueueStream { shared, key: None }
    }
}

impl<S: Storage> Stream for QueueStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        this.shared.poll_get(&mut this.key, cx).map(Result::ok)
    }
}

impl<S: Storage> FusedStream for QueueStream<S> {
    fn is_terminated(&self) -> bool {
        let inner = self.shared.inner.borrow();
        inner.shutdown && inner.items.is_empty()
    }
}

impl<S: Storage> Drop for QueueStream<S> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.cancel_get(key);
        }
    }
}
