//! The receiving half: [`Receiver`], its [`RecvFuture`], and its `Stream`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::block::block_on;
use super::chan::{Chan, Cursor};
use super::error::TryRecvError;

/// The receiving half of a channel. There is exactly one (the channel is
/// multi-producer, single-consumer): receiving takes `&mut self`. Move it to
/// the thread or task that consumes; it is `Send` when `T: Send`.
///
/// Dropping it closes the channel: pending and later sends fail and give
/// their value back, and queued messages are dropped.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    /// Our place in the channel's storage.
    cursor: Cursor<T>,
}

impl<T> Receiver<T> {
    pub(super) fn new(chan: Arc<Chan<T>>, cursor: Cursor<T>) -> Receiver<T> {
        Receiver { chan, cursor }
    }

    /// Receives the next message, waiting while the channel is empty.
    /// `None` once every [`Sender`](super::Sender) is dropped (or the channel
    /// was [closed](Receiver::close)) and everything sent before has been
    /// received.
    ///
    /// Cancellation-safe: dropping the future loses no message.
    pub fn recv(&mut self) -> RecvFuture<'_, T> {
        RecvFuture {
            rx: self,
            parked: false,
        }
    }

    /// Receives a message if one is ready: [`TryRecvError::Empty`] when none
    /// is, [`TryRecvError::Closed`] when none ever will be.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.chan.poll_recv(&mut self.cursor, None) {
            Poll::Ready(Some(v)) => Ok(v),
            Poll::Ready(None) => Err(TryRecvError::Closed),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    /// Receives from a thread that runs no event loop, blocking the thread
    /// while the channel is empty. Do not call it on a loop's thread.
    pub fn recv_blocking(&mut self) -> Option<T> {
        block_on(self.recv())
    }

    /// Polls for the next message, for hand-written futures: registers
    /// `cx`'s waker when nothing is ready. [`recv`](Receiver::recv) and the
    /// `Stream` impl are built on it.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.chan.poll_recv(&mut self.cursor, Some(cx.waker()))
    }

    /// Closes the channel without dropping the receiver: every send fails
    /// from now on (parked senders wake with the error), while messages
    /// already queued can still be received, after which `recv` gives `None`.
    pub fn close(&mut self) {
        self.chan.close_rx();
    }

    /// The channel's capacity, `None` for an unbounded one.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }
}

// Messages are only ever moved whole, never pinned in place.
impl<T> Unpin for Receiver<T> {}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_rx(&mut self.cursor);
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.chan.capacity())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`Receiver::recv`].
#[must_use = "futures do nothing unless awaited"]
pub struct RecvFuture<'a, T> {
    rx: &'a mut Receiver<T>,
    /// Our waker is (or may still be) stored in the channel.
    parked: bool,
}

impl<T> Future for RecvFuture<'_, T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let res = self.rx.poll_recv(cx);
        self.parked = res.is_pending();
        res
    }
}

impl<T> Drop for RecvFuture<'_, T> {
    fn drop(&mut self) {
        if self.parked {
            self.rx.chan.unpark_rx();
        }
    }
}

impl<T> fmt::Debug for RecvFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture")
            .field("parked", &self.parked)
            .finish_non_exhaustive()
    }
}
