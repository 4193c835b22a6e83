//! Tasks: `spawn` (`asyncio.create_task`), [`Task`] handles, names, ids,
//! and the structured-concurrency helpers.
//!
//! A task is a `'static` future (not necessarily `Send`) owned by the loop
//! of the thread that spawned it. Awaiting its [`Task`] gives
//! `Result<T, JoinError>`; dropping the `Task` detaches it (it keeps
//! running). [`Task::cancel`] drops the future before its next poll; any
//! I/O it had in flight is cancelled safely (its buffers stay with the
//! driver until the kernel lets go).

mod combinators;
mod group;
pub(crate) mod raw;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

pub use crate::error::JoinError;
pub use crate::runtime::{TaskInfo, TaskState};
pub use combinators::*;
pub use group::*;

use crate::runtime::context;
use raw::{JoinRef, TaskRef};

/// A task's id, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The id as a number.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A handle to a spawned task. Awaiting it gives the task's output, or a
/// [`JoinError`] if it was cancelled or panicked. Dropping it detaches the
/// task.
#[must_use = "dropping a Task detaches it; call .detach() to say so"]
pub struct Task<T> {
    join: JoinRef<T>,
}

impl<T> std::fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> Task<T> {
    /// Asks the task to stop: its future is dropped before its next poll
    /// and awaiting the task gives a cancelled [`JoinError`]. Returns false
    /// if the task had already finished.
    pub fn cancel(&self) -> bool {
        self.join.request_cancel()
    }

    /// Whether the task finished (value, panic or cancellation).
    pub fn is_finished(&self) -> bool {
        self.join.state() & raw::COMPLETE != 0
    }

    /// Whether the task finished by being cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.join.state() & raw::CANCELLED != 0
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        TaskId(self.join.header().id)
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.join.header().name.as_deref()
    }

    /// Lets the task run on without a handle.
    pub fn detach(self) {}
}

impl<T> Future for Task<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.join.poll_output(cx)
    }
}

impl<T> Unpin for Task<T> {}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(msg) = self.join.unretrieved_panic() {
            if let Some(l) = context::current() {
                l.report(crate::runtime::ExceptionContext {
                    message: format!("Task exception was never retrieved: {msg}"),
                    task_id: Some(self.id()),
                    panic_message: Some(msg),
                });
            }
        }
    }
}

/// Spawns `fut` on the loop running on this thread
/// (`asyncio.create_task`).
///
/// # Panics
/// Outside a running loop.
pub fn spawn<F>(fut: F) -> Task<F::Output>
where
    F: Future + 'static,
{
    spawn_inner(fut, None)
}

fn spawn_inner<F>(fut: F, name: Option<Box<str>>) -> Task<F::Output>
where
    F: Future + 'static,
{
    let l = context::current().expect("spawn() called outside a running uringio loop");
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (task, join) = TaskRef::new(fut, l.shared.clone(), id, name);
    l.register(task);
    Task { join }
}

/// Spawns tasks with options (a name).
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
}

impl Builder {
    /// A builder with no options set.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The task's name (`asyncio.Task.get_name`).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Spawns `fut` on the running loop.
    ///
    /// # Panics
    /// Outside a running loop.
    pub fn spawn<F>(self, fut: F) -> Task<F::Output>
    where
        F: Future + 'static,
    {
        spawn_inner(fut, self.name.map(String::into_boxed_str))
    }
}

/// Gives other tasks a turn: returns after one trip through the loop.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The id of the task being polled right now, if any.
pub fn current_task() -> Option<TaskId> {
    context::current().and_then(|l| l.current_task.get().map(TaskId))
}

/// Every live task of the running loop (empty outside a loop).
pub fn all_tasks() -> Vec<TaskInfo> {
    context::current().map_or_else(Vec::new, |l| l.all_tasks())
}
