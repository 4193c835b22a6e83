//! The sending half: [`Sender`] and its [`SendFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::block::block_on;
use super::chan::Chan;
use super::error::{SendError, TrySendError};

/// The sending half of a channel. Clone it to send from many tasks or
/// threads; the channel ends for the receiver once every clone is dropped.
///
/// `Send + Sync` when `T: Send`: share it by reference or move clones into
/// other threads' loops.
pub struct Sender<T> {
    pub(super) chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting for a free slot while a bounded channel is full.
    ///
    /// Fails, giving the value back, once the receiver is dropped or closed
    /// (also while waiting: a parked sender wakes with the error).
    ///
    /// Cancellation-safe: dropping the future before it completes sends
    /// nothing and leaves the queue as it was; a free slot it had been woken
    /// for goes to the next waiting sender.
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            tx: self,
            value: Some(value),
            id: None,
        }
    }

    /// Sends `value` if that is possible without waiting, or gives it back in
    /// [`TrySendError::Full`] / [`TrySendError::Closed`].
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Sends `value` from a thread that runs no event loop, blocking the
    /// thread while a bounded channel is full.
    ///
    /// Do not call it on a loop's thread: it would stall every task there,
    /// possibly including the receiver it waits for.
    pub fn send_blocking(&self, value: T) -> Result<(), SendError<T>> {
        block_on(self.send(value))
    }

    /// `true` once the receiver is dropped or has called
    /// [`Receiver::close`](super::Receiver::close): every send fails from then on.
    pub fn is_closed(&self) -> bool {
        self.chan.is_rx_closed()
    }

    /// The channel's capacity, `None` for an unbounded one.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// Do both senders feed the same channel?
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Sender {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.chan.capacity())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`Sender::send`].
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a, T> {
    tx: &'a Sender<T>,
    /// The value, until it is queued or handed back.
    value: Option<T>,
    /// Our place among the parked senders, once we have parked.
    id: Option<u64>,
}

// The value is only ever moved whole, never pinned in place.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let value = this
            .value
            .take()
            .expect("SendFuture polled after completion");
        match this.tx.chan.poll_send(value, &mut this.id, cx.waker()) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Closed(v)) => Poll::Ready(Err(SendError(v))),
            Err(TrySendError::Full(v)) => {
                this.value = Some(v);
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.tx.chan.cancel_send(id);
        }
    }
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("parked", &self.id.is_some())
            .finish_non_exhaustive()
    }
}
