//! Queues for tasks on one loop: asyncio's `Queue`, `LifoQueue` and
//! `PriorityQueue` (with Python 3.13's `shutdown`).
//!
//! A queue is a cheap, clonable handle (an `Rc` inside): clone it to give a
//! producer and a consumer task each their own. Like everything in a loop it
//! is `!Send`; for crossing threads use [`channel`](crate::channel).
//!
//! - `maxsize` 0 means unbounded; otherwise [`put`](Queue::put) waits while
//!   the queue is full and [`put_nowait`](Queue::put_nowait) fails with
//!   [`PutError::Full`], giving the item back.
//! - [`get`](Queue::get) waits while the queue is empty. Blocked getters and
//!   putters are served in FIFO order; dropping a blocked `get` or `put`
//!   future (cancellation) is safe and loses no wake-up.
//! - [`task_done`](Queue::task_done) and [`join`](Queue::join) count
//!   unfinished items, as in asyncio.
//! - [`shutdown`](Queue::shutdown) wakes every blocked task: `put` fails from
//!   then on with [`QueueShutDown`]; `get` still returns what is left, then
//!   fails — at once if `immediate`, which also empties the queue, marks its
//!   items done and so may release `join`.
//! - [`stream`](Queue::stream) consumes the queue as a
//!   [`Stream`](futures_core::Stream) that ends at shutdown once empty.
//!
//! ```
//! use uringio::queue::Queue;
//! uringio::run(async {
//!     let q = Queue::new(2);
//!     let tx = q.clone();
//!     let producer = uringio::spawn(async move {
//!         for i in 0..10 {
//!             tx.put(i).await.unwrap();
//!         }
//!         tx.shutdown(false);
//!     });
//!     let mut sum = 0;
//!     while let Ok(i) = q.get().await {
//!         sum += i;
//!         q.task_done().unwrap();
//!     }
//!     assert_eq!(sum, 45);
//!     producer.await.unwrap();
//! });
//! ```

mod error;
mod shared;
mod storage;

use std::fmt;
use std::future::Future;
use std::rc::Rc;

use futures_core::FusedStream;

pub use self::error::{GetError, PutError};
use self::shared::{Get, Join, Put, QueueStream, Shared};
use self::storage::{Fifo, Heap, Lifo};
use crate::error::{QueueShutDown, ValueError};

macro_rules! queue_type {
    (
        $(#[$doc:meta])*
        $name:ident, $storage:ident, [$($bound:tt)*]
    ) => {
        $(#[$doc])*
        pub struct $name<T> {
            shared: Rc<Shared<$storage<T>>>,
        }

        impl<T: $($bound)*> $name<T> {
            /// A new queue holding at most `maxsize` items (0: unbounded).
            pub fn new(maxsize: usize) -> Self {
                $name {
                    shared: Rc::new(Shared::new(maxsize)),
                }
            }

            /// Puts `item` in the queue, waiting while it is full.
            ///
            /// # Errors
            /// [`QueueShutDown`] if the queue is shut down before the item
            /// went in (the item is dropped).
            pub fn put(&self, item: T) -> impl Future<Output = Result<(), QueueShutDown>> + '_ {
                Put::new(&*self.shared, item)
            }

            /// Puts `item` in the queue if there is room right now.
            ///
            /// # Errors
            /// [`PutError::Full`] or [`PutError::ShutDown`], holding `item`.
            pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
                self.shared.put_nowait(item)
            }

            /// Takes the next item, waiting while the queue is empty.
            ///
            /// # Errors
            /// [`QueueShutDown`] once the queue is shut down and empty.
            pub fn get(&self) -> impl Future<Output = Result<T, QueueShutDown>> + '_ {
                Get::new(&*self.shared)
            }

            /// Takes the next item if there is one right now.
            ///
            /// # Errors
            /// [`GetError::Empty`], or [`GetError::ShutDown`] if the queue is
            /// also shut down.
            pub fn get_nowait(&self) -> Result<T, GetError> {
                self.shared.get_nowait()
            }

            /// How many items are in the queue.
            pub fn qsize(&self) -> usize {
                self.shared.qsize()
            }

            /// The most items the queue holds (0: unbounded).
            pub fn maxsize(&self) -> usize {
                self.shared.maxsize()
            }

            /// True if the queue holds no item.
            pub fn empty(&self) -> bool {
                self.shared.qsize() == 0
            }

            /// True if the queue holds `maxsize` items (never, if unbounded).
            pub fn full(&self) -> bool {
                self.shared.full()
            }

            /// Marks one item taken from the queue as processed; when every
            /// item put has been marked, [`join`](Self::join) returns.
            ///
            /// # Errors
            /// [`ValueError`] if called more times than items were put.
            pub fn task_done(&self) -> Result<(), ValueError> {
                self.shared.task_done()
            }

            /// Waits until every item put has been marked with
            /// [`task_done`](Self::task_done); returns at once if none is
            /// unfinished.
            pub fn join(&self) -> impl Future<Output = ()> + '_ {
                Join::new(&*self.shared)
            }

            /// Shuts the queue down: later puts fail with [`QueueShutDown`],
            /// and every blocked putter and getter wakes up. Gets still
            /// return the items left, then fail; with `immediate`, the queue
            /// is emptied at once, its items are counted as done (which may
            /// release [`join`](Self::join)), and gets fail right away.
            pub fn shutdown(&self, immediate: bool) {
                self.shared.shutdown(immediate)
            }

            /// True once [`shutdown`](Self::shutdown) was called.
            pub fn is_shut_down(&self) -> bool {
                self.shared.is_shut_down()
            }

            /// The queue as a [`Stream`](futures_core::Stream) of items: each
            /// one is a [`get`](Self::get). It ends once the queue is shut
            /// down and empty. The stream holds its own handle, so it can
            /// outlive `self`; it does not call `task_done`.
            pub fn stream(&self) -> impl FusedStream<Item = T> + use<T> {
                QueueStream::new(self.shared.clone())
            }
        }

        impl<T> Clone for $name<T> {
            /// Another handle to the same queue.
            fn clone(&self) -> Self {
                $name {
                    shared: self.shared.clone(),
                }
            }
        }

        impl<T: $($bound)*> Default for $name<T> {
            /// An unbounded queue.
            fn default() -> Self {
                Self::new(0)
            }
        }

        impl<T: $($bound)*> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.shared.debug(stringify!($name), f)
            }
        }
    };
}

queue_type!(
    /// A first-in, first-out queue (`asyncio.Queue`).
    ///
    /// A clonable handle: every clone is the same queue. See the
    /// [module docs](self) for the rules.
    Queue, Fifo, []
);

queue_type!(
    /// A last-in, first-out queue (`asyncio.LifoQueue`): `get` returns the
    /// item put most recently.
    ///
    /// A clonable handle: every clone is the same queue. See the
    /// [module docs](self) for the rules.
    LifoQueue, Lifo, []
);

queue_type!(
    /// A queue that hands out its smallest item first
    /// (`asyncio.PriorityQueue`, ordered like `heapq`). Use `(priority,
    /// value)` tuples or `std::cmp::Reverse` to choose the order. Items that
    /// compare equal come out in no particular order.
    ///
    /// A clonable handle: every clone is the same queue. See the
    /// [module docs](self) for the rules.
    PriorityQueue, Heap, [Ord]
);
