//! The way into a loop from other threads: [`LoopHandle`], and the one-shot
//! slot that carries results back across threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::scheduler::Shared;
use crate::error::JoinError;

/// A one-value slot filled on one thread and awaited on another.
pub(crate) struct Oneshot<T> {
    inner: Arc<Mutex<OneshotState<T>>>,
}

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

impl<T> Clone for Oneshot<T> {
    fn clone(&self) -> Self {
        Oneshot {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Oneshot<T> {
    pub(crate) fn new() -> Oneshot<T> {
        Oneshot {
            inner: Arc::new(Mutex::new(OneshotState {
                value: None,
                waker: None,
                closed: false,
            })),
        }
    }

    pub(crate) fn set(&self, v: T) {
        let w = {
            let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            st.value = Some(v);
            st.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// The sender went away without a value: the awaiting side gets `None`.
    pub(crate) fn close(&self) {
        let w = {
            let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl<T> Future for Oneshot<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = st.value.take() {
            return Poll::Ready(Some(v));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A thread-safe handle to a loop: `Send + Sync + Clone`.
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}

impl LoopHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> LoopHandle {
        LoopHandle { shared }
    }

    /// Runs `f` on the loop's thread soon, waking the loop if it sleeps
    /// (`loop.call_soon_threadsafe`).
    pub fn call_soon_threadsafe(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.push_call(Box::new(f));
    }

    /// Spawns `f` on the loop from any thread
    /// (`asyncio.run_coroutine_threadsafe`); await the returned
    /// [`RemoteTask`] anywhere for its output.
    pub fn spawn<F>(&self, f: F) -> RemoteTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let slot: Oneshot<Result<F::Output, JoinError>> = Oneshot::new();
        let tx = slot.clone();
        self.shared.push_call(Box::new(move || {
            // Runs on the loop thread.
            let task = crate::task::spawn(f);
            let guard = CloseOnDrop(tx.clone());
            crate::task::spawn(async move {
                let r = task.await;
                tx.set(r);
                drop(guard);
            })
            .detach();
        }));
        RemoteTask { slot }
    }

    /// Stops the loop's `run_forever` after its current iteration.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.notify();
    }
}

struct CloseOnDrop<T>(Oneshot<T>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The output of a future spawned with [`LoopHandle::spawn`]; awaitable
/// from any thread or loop. Resolves to a cancelled [`JoinError`] if the
/// loop closed before the future finished.
pub struct RemoteTask<T> {
    slot: Oneshot<Result<T, JoinError>>,
}

impl<T> std::fmt::Debug for RemoteTask<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTask").finish_non_exhaustive()
    }
}

impl<T> Future for RemoteTask<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.slot).poll(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            Poll::Ready(None) => Poll::Ready(Err(JoinError::cancelled())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> RemoteTask<T> {
    /// Waits for the output on a thread that runs no loop.
    pub fn block(self) -> Result<T, JoinError> {
        let mut r = crate::runtime::Runner::builder()
            .backend(crate::Backend::Epoll)
            .build()
            .expect("cannot create a loop to wait on");
        r.run(self)
    }
}
