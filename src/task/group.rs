//! `asyncio.TaskGroup`: structured concurrency.
//!
//! A [`TaskGroup`] owns the tasks spawned through it. [`TaskGroup::join`]
//! waits for all of them; the first task that returns `Err` or panics makes
//! the group *abort*: every other task is cancelled (its future is dropped
//! before its next poll), and once all have ended `join` returns every
//! failure in a [`TaskGroupError`]. As in asyncio, the abort is scheduled
//! with `call_soon` from the failing task, so tasks already woken in the same
//! loop iteration still take that step; if they fail too, their errors are
//! collected as well.
//!
//! # State machine
//! ```text
//!        first Err / panic (via call_soon), join dropped, group dropped
//!  Open ───────────────────────────────────────────────────────▶ Aborting
//!   │  join() sees no live task                                    │ join() sees no live task
//!   └──────────────────────────▶ Finished ◀────────────────────────┘
//! ```
//! * **Open**: `spawn` starts tasks.
//! * **Aborting**: live tasks are woken and, at their next poll, drop their
//!   future instead of polling it; they end as cancelled.
//! * **Finished**: `join` returned.
//!
//! Once a task has failed, and in *Aborting* and *Finished*, `spawn` refuses
//! new work: the future is dropped without ever being polled and the
//! returned [`GroupTask`] is already cancelled. (asyncio raises
//! `RuntimeError("TaskGroup is shutting down")` there; a `spawn` that cannot
//! fail keeps call sites simple, and the handle still tells what happened.)
//!
//! Each task runs inside a small supervisor that catches its panic, hands an
//! `Err` or a panic payload to the group, and registers its waker with the
//! group so an abort can wake it. A task cancelled on its own (through
//! [`GroupTask::cancel`]) is not a failure of the group, as in asyncio.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::error::{JoinError, TaskFailure, TaskGroupError};
use crate::task::{Task, TaskId, spawn};

/// Why awaiting a [`GroupTask`] gave no value.
///
/// The error or panic itself is not here: it belongs to the group and is
/// returned by [`TaskGroup::join`] inside [`TaskGroupError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupTaskError {
    /// The task's future returned `Err`; the error went to the group.
    Failed,
    /// The task's future panicked; the payload went to the group.
    Panicked,
    /// The task was cancelled: by the group aborting, by
    /// [`GroupTask::cancel`], or because the group refused it.
    Cancelled,
}

impl GroupTaskError {
    /// True if the task was cancelled (or refused) rather than failing.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, GroupTaskError::Cancelled)
    }
}

impl fmt::Display for GroupTaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupTaskError::Failed => "task failed; its error is in the TaskGroupError",
            GroupTaskError::Panicked => "task panicked; its payload is in the TaskGroupError",
            GroupTaskError::Cancelled => "task was cancelled",
        })
    }
}

impl std::error::Error for GroupTaskError {}

struct GroupState<E> {
    /// Live tasks, each with the waker of its last poll.
    children: Slab<Option<Waker>>,
    errors: Vec<TaskFailure<E>>,
    aborting: bool,
    finished: bool,
    joiner: Option<Waker>,
}

type Shared<E> = Rc<RefCell<GroupState<E>>>;

/// Starts aborting: marks the group and wakes every live task so that it
/// drops its future at its next poll.
fn abort<E>(shared: &Shared<E>) {
    let wakers: Vec<Waker> = {
        let mut st = shared.borrow_mut();
        if st.aborting {
            return;
        }
        st.aborting = true;
        st.children
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect()
    };
    for w in wakers {
        w.wake();
    }
}

/// How one task ended, as seen by its supervisor.
enum End<T, E> {
    Ok(T),
    Failed(E),
    Panicked(Box<dyn Any + Send + 'static>),
    Cancelled,
}

/// The supervisor's link to the group: removes the task from the group when
/// it ends, even if the task is cancelled by the loop (dropped mid-flight).
struct Membership<E: 'static> {
    shared: Shared<E>,
    key: usize,
    cancelled: Rc<Cell<bool>>,
    live: bool,
}

impl<E: 'static> Membership<E> {
    fn aborting(&self) -> bool {
        self.shared.borrow().aborting
    }

    fn register(&self, waker: &Waker) {
        let mut st = self.shared.borrow_mut();
        if let Some(slot) = st.children.get_mut(self.key) {
            match slot {
                Some(w) => w.clone_from(waker),
                None => *slot = Some(waker.clone()),
            }
        }
    }

    /// Records how the task ended and leaves the group.
    fn leave(&mut self, failure: Option<TaskFailure<E>>) {
        if !self.live {
            return;
        }
        self.live = false;
        let first_failure = {
            let mut st = self.shared.borrow_mut();
            st.children.try_remove(self.key);
            let first = failure.is_some() && st.errors.is_empty() && !st.aborting;
            if let Some(f) = failure {
                st.errors.push(f);
            }
            first
        };
        if first_failure {
            // As asyncio does from the task's done-callback: tasks already
            // woken in this loop iteration still take their step (and their
            // errors are collected too) before the others are cancelled.
            match crate::runtime::try_running_loop() {
                Some(lp) => {
                    let shared = Rc::clone(&self.shared);
                    let _ = lp.call_soon(move || abort(&shared));
                }
                None => abort(&self.shared),
            }
        }
        let joiner = {
            let mut st = self.shared.borrow_mut();
            if st.children.is_empty() {
                st.joiner.take()
            } else {
                None
            }
        };
        if let Some(w) = joiner {
            w.wake();
        }
    }
}

impl<E: 'static> Drop for Membership<E> {
    fn drop(&mut self) {
        if self.live {
            // Dropped before it ended: the loop cancelled the task.
            self.cancelled.set(true);
            self.leave(None);
        }
    }
}

/// Polls `fut` under the group's rules: stop (unpolled) once the group is
/// aborting, catch panics.
async fn supervise<T, E, F>(fut: F, mut member: Membership<E>) -> Result<T, GroupTaskError>
where
    F: Future<Output = Result<T, E>>,
{
    let end = {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if member.aborting() {
                return Poll::Ready(End::Cancelled);
            }
            member.register(cx.waker());
            match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(Ok(v))) => Poll::Ready(End::Ok(v)),
                Ok(Poll::Ready(Err(e))) => Poll::Ready(End::Failed(e)),
                Err(payload) => Poll::Ready(End::Panicked(payload)),
            }
        })
        .await
        // The user's future is dropped here, before the group hears of the end.
    };
    match end {
        End::Ok(v) => {
            member.leave(None);
            Ok(v)
        }
        End::Failed(e) => {
            member.leave(Some(TaskFailure::Error(e)));
            Err(GroupTaskError::Failed)
        }
        End::Panicked(p) => {
            member.leave(Some(TaskFailure::Panic(crate::error::PanicPayload::new(p))));
            Err(GroupTaskError::Panicked)
        }
        End::Cancelled => {
            member.cancelled.set(true);
            member.leave(None);
            Err(GroupTaskError::Cancelled)
        }
    }
}

fn spawn_in<T, E, F>(shared: &Shared<E>, fut: F) -> GroupTask<T>
where
    T: 'static,
    E: 'static,
    F: Future<Output = Result<T, E>> + 'static,
{
    let cancelled = Rc::new(Cell::new(false));
    let key = {
        let mut st = shared.borrow_mut();
        if st.aborting || st.finished || !st.errors.is_empty() {
            None
        } else {
            Some(st.children.insert(None))
        }
    };
    let Some(key) = key else {
        drop(fut);
        cancelled.set(true);
        return GroupTask {
            task: None,
            cancelled,
        };
    };
    let member = Membership {
        shared: Rc::clone(shared),
        key,
        cancelled: Rc::clone(&cancelled),
        live: true,
    };
    GroupTask {
        task: Some(spawn(supervise(fut, member))),
        cancelled,
    }
}

/// Structured concurrency (`asyncio.TaskGroup`).
///
/// ```
/// use uringio::task::TaskGroup;
/// uringio::run(async {
///     let mut tg = TaskGroup::new();
///     let a = tg.spawn(async { Ok::<_, std::io::Error>(1) });
///     let b = tg.spawn(async { Ok::<_, std::io::Error>(2) });
///     tg.join().await.unwrap();
///     assert_eq!(a.await.unwrap() + b.await.unwrap(), 3);
/// });
/// ```
///
/// Dropping a group that was not joined cancels its tasks; so does dropping
/// the future of [`join`](Self::join) before it finishes (the task awaiting
/// it was cancelled).
pub struct TaskGroup<E> {
    shared: Shared<E>,
}

impl<E: 'static> Default for TaskGroup<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> fmt::Debug for TaskGroup<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.borrow();
        f.debug_struct("TaskGroup")
            .field("live_tasks", &st.children.len())
            .field("errors", &st.errors.len())
            .field("aborting", &st.aborting)
            .field("finished", &st.finished)
            .finish()
    }
}

impl<E: 'static> TaskGroup<E> {
    /// An empty, open group.
    pub fn new() -> Self {
        TaskGroup {
            shared: Rc::new(RefCell::new(GroupState {
                children: Slab::new(),
                errors: Vec::new(),
                aborting: false,
                finished: false,
                joiner: None,
            })),
        }
    }

    /// Spawns `fut` as a task of this group (`TaskGroup.create_task`).
    ///
    /// If the group is aborting or already joined, the future is dropped
    /// unpolled and the handle is already cancelled (see the module docs).
    pub fn spawn<T, F>(&self, fut: F) -> GroupTask<T>
    where
        T: 'static,
        F: Future<Output = Result<T, E>> + 'static,
    {
        spawn_in(&self.shared, fut)
    }

    /// A cloneable handle that spawns into this group, to give to the
    /// group's own tasks so they can add siblings while `join` waits.
    pub fn spawner(&self) -> Spawner<E> {
        Spawner {
            shared: Rc::clone(&self.shared),
        }
    }

    /// Waits until every task of the group has ended.
    ///
    /// Returns `Err` holding every failure, in the order they happened, if
    /// any task returned `Err` or panicked (the others were then cancelled).
    /// After `join` returns, the group refuses new tasks. Joining again
    /// returns `Ok(())` at once: the errors were handed out already.
    ///
    /// Dropping the returned future before it finishes cancels the group's
    /// tasks.
    pub fn join(&mut self) -> Join<'_, E> {
        Join {
            group: self,
            done: false,
        }
    }

    /// How many tasks of the group are still running.
    pub fn len(&self) -> usize {
        self.shared.borrow().children.len()
    }

    /// True if no task of the group is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once a failure, a dropped `join` or [`abort`](Self::abort) has
    /// started cancelling the group's tasks.
    pub fn is_aborting(&self) -> bool {
        self.shared.borrow().aborting
    }

    /// Cancels every task of the group now, as a failure would; `join`
    /// still waits for them to end.
    pub fn abort(&self) {
        abort(&self.shared);
    }
}

impl<E> Drop for TaskGroup<E> {
    fn drop(&mut self) {
        if !self.shared.borrow().finished {
            abort(&self.shared);
        }
    }
}

/// Spawns into a [`TaskGroup`] from elsewhere, typically from one of its own
/// tasks; see [`TaskGroup::spawner`].
pub struct Spawner<E> {
    shared: Shared<E>,
}

impl<E> Clone for Spawner<E> {
    fn clone(&self) -> Self {
        Spawner {
            shared: Rc::clone(&self.shared),
        }
    }
}

impl<E> fmt::Debug for Spawner<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl<E: 'static> Spawner<E> {
    /// Same as [`TaskGroup::spawn`].
    pub fn spawn<T, F>(&self, fut: F) -> GroupTask<T>
    where
        T: 'static,
        F: Future<Output = Result<T, E>> + 'static,
    {
        spawn_in(&self.shared, fut)
    }
}

/// The future returned by [`TaskGroup::join`].
#[must_use = "futures do nothing unless awaited"]
pub struct Join<'a, E> {
    group: &'a mut TaskGroup<E>,
    done: bool,
}

impl<E> fmt::Debug for Join<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Join").field("group", &self.group).finish()
    }
}

impl<E> Future for Join<'_, E> {
    type Output = Result<(), TaskGroupError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let mut st = this.group.shared.borrow_mut();
        if !st.children.is_empty() {
            match &mut st.joiner {
                Some(w) => w.clone_from(cx.waker()),
                None => st.joiner = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        st.finished = true;
        st.joiner = None;
        this.done = true;
        let errors = std::mem::take(&mut st.errors);
        if errors.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(TaskGroupError { errors }))
        }
    }
}

impl<E> Drop for Join<'_, E> {
    fn drop(&mut self) {
        if !self.done {
            abort(&self.group.shared);
        }
    }
}

/// A task of a [`TaskGroup`]; await it for the task's value.
///
/// Awaiting gives `Ok(value)`, or a [`GroupTaskError`] saying why there is
/// none. Dropping the handle does not cancel the task: the group still owns
/// it, so ignoring the handle is fine.
pub struct GroupTask<T> {
    /// `None` when the group refused the task.
    task: Option<Task<Result<T, GroupTaskError>>>,
    cancelled: Rc<Cell<bool>>,
}

impl<T> fmt::Debug for GroupTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupTask")
            .field("finished", &self.is_finished())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl<T> GroupTask<T> {
    /// Cancels this one task. Unlike a failure, this does not abort the
    /// group. Returns `false` if the task had already ended.
    pub fn cancel(&self) -> bool {
        match &self.task {
            Some(t) if !self.cancelled.get() => t.cancel(),
            _ => false,
        }
    }

    /// True once the task has ended, however it ended.
    pub fn is_finished(&self) -> bool {
        match &self.task {
            Some(t) => t.is_finished(),
            None => true,
        }
    }

    /// The task's id; `None` if the group refused the task (it never ran).
    pub fn id(&self) -> Option<TaskId> {
        self.task.as_ref().map(|t| t.id())
    }

    /// True if the task ended by cancellation (or was refused by the group).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.get() || self.task.as_ref().is_some_and(|t| t.is_cancelled())
    }
}

impl<T> Future for GroupTask<T> {
    type Output = Result<T, GroupTaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.task {
            None => Poll::Ready(Err(GroupTaskError::Cancelled)),
            Some(t) => Pin::new(t).poll(cx).map(|r| match r {
                Ok(out) => out,
                Err(e) => Err(join_error_kind(&e)),
            }),
        }
    }
}

fn join_error_kind(e: &JoinError) -> GroupTaskError {
    if e.is_panic() {
        GroupTaskError::Panicked
    } else {
        GroupTaskError::Cancelled
    }
}
