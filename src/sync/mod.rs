//! Synchronisation primitives for tasks on one loop: asyncio's `Lock`,
//! `Event`, `Condition`, `Semaphore`, `BoundedSemaphore` and `Barrier`.
//!
//! All of them are single-threaded (`!Send`, `Cell`/`RefCell` inside, no
//! atomics) and take `&self`. They are plain structs: to share one between
//! tasks, put it in an `Rc` (`Rc<Lock>`, `Rc<Semaphore>`, …). Acquiring gives
//! an RAII value ([`LockGuard`], [`Permit`]) that releases on drop.
//!
//! Shared rules:
//! - **FIFO.** Waiters are served in the order they started waiting.
//! - **Direct hand-off.** Releasing a lock or a permit assigns it to the
//!   first waiter right away, so nobody can barge in (with `try_lock` or
//!   `try_acquire`) between the release and that waiter running.
//! - **Cancellation-safe.** Dropping a waiting future (its task was
//!   cancelled, a `timeout` fired) gives up its place; if it had already been
//!   chosen, the lock, permit or notification it was handed goes to the next
//!   waiter. Nothing is lost.
//!
//! Queues live in [`queue`](crate::queue); cross-thread channels in
//! [`channel`](crate::channel).

mod barrier;
mod condition;
mod event;
mod lock;
mod semaphore;
pub(crate) mod waiters;

pub use barrier::{Barrier, BarrierWait};
pub use condition::Condition;
pub use event::{Event, EventWait};
pub use lock::{Lock, LockFuture, LockGuard};
pub use semaphore::{Acquire, BoundedSemaphore, Permit, Semaphore};
