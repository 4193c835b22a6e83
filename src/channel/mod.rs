//! Channels between threads and loops: `channel::bounded` and
//! `channel::unbounded`.
//!
//! The loop-local primitives ([`sync`](crate::sync), [`queue`](crate::queue))
//! are `!Send`; a channel is how tasks on *different* threads (one loop per
//! thread, thread-per-core) hand each other values. Both ends are async and
//! work from any loop, on either backend, or from a plain thread through the
//! `*_blocking` methods.
//!
//! - Multi-producer, single-consumer: [`Sender`] is `Clone + Send + Sync`,
//!   [`Receiver`] is `Send` and receives through `&mut self` (like tokio's
//!   `mpsc`). Fan in with cloned senders; for fan-out, give each consumer
//!   its own channel.
//! - [`bounded`] holds at most `cap` messages not yet received; `send` waits
//!   for space. [`unbounded`] never waits.
//! - Close: once every `Sender` is dropped, the receiver drains what was sent
//!   and then gets `None`. Once the `Receiver` is dropped (or
//!   [`Receiver::close`] is called) every send fails with the value given
//!   back, including senders already waiting for space.
//! - Wake-ups are plain [`std::task::Waker`]s. Waking a task of another loop
//!   queues it there and wakes that loop (eventfd or io_uring message), so a
//!   wake-up costs a syscall at most; the channel wakes the receiver only when
//!   it is actually waiting (once, however many messages follow), and a
//!   waiting sender only when a slot has been freed.
//! - Messages travel through the lock-free queues of [`std::sync::mpsc`],
//!   used only through their non-blocking methods; this module adds the async
//!   parking, closing and cancellation around them (see `chan.rs`). A bounded
//!   channel allocates its `cap` slots up front and nothing per message.
//!
//! ```
//! use uringio::channel;
//!
//! let (tx, mut rx) = channel::bounded::<u64>(128);
//! let producer = std::thread::spawn(move || {
//!     uringio::run(async move {
//!         for i in 0..1000 {
//!             tx.send(i).await.unwrap();
//!         }
//!     })
//! });
//! let sum = uringio::run(async move {
//!     let mut sum = 0;
//!     while let Some(i) = rx.recv().await {
//!         sum += i;
//!     }
//!     sum
//! });
//! producer.join().unwrap();
//! assert_eq!(sum, 999 * 1000 / 2);
//! ```

mod block;
mod chan;
mod error;
mod receiver;
mod sender;

use std::sync::Arc;

pub use error::{SendError, TryRecvError, TrySendError};
pub use receiver::{Receiver, RecvFuture};
pub use sender::{SendFuture, Sender};

use chan::Chan;

/// A channel holding at most `cap` messages that the receiver has not yet
/// received; [`Sender::send`] waits while it is full. The `cap` slots are
/// allocated up front.
///
/// # Panics
/// If `cap` is 0 (there is no rendezvous channel).
pub fn bounded<T: Send>(cap: usize) -> (Sender<T>, Receiver<T>) {
    assert!(cap > 0, "channel::bounded: capacity must be at least 1");
    make(Some(cap))
}

/// A channel without a capacity limit: [`Sender::send`] never waits.
pub fn unbounded<T: Send>() -> (Sender<T>, Receiver<T>) {
    make(None)
}

fn make<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let (chan, cursor) = Chan::new(cap);
    let chan = Arc::new(chan);
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver::new(chan, cursor),
    )
}
