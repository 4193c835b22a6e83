//! Running many futures at once: [`gather()`] / [`gather!`](crate::gather),
//! [`wait`], [`as_completed`] and [`shield`] (asyncio's functions of the
//! same names).
//!
//! [`gather()`] and [`as_completed`] poll their futures in place, inside the
//! task that awaits them (no task per future, so borrowed futures work). To
//! avoid re-polling every future on every wake-up, each future gets its own
//! waker that queues its index and wakes the awaiting task; a poll then
//! touches only the futures that were woken. Those wakers must be
//! `Send + Sync` (the `Waker` contract), so this one structure uses a mutex
//! and an atomic flag per future: uncontended, as all wake-ups come from the
//! loop's own thread unless a future is woken from another thread.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_core::Stream;

use crate::task::{Task, spawn};

pub use crate::gather;

// ---------------------------------------------------------------------------
// FutureSet: polls many futures, only the woken ones.

struct ReadyList {
    woken: Vec<usize>,
    parent: Option<Waker>,
}

struct ReadyQueue {
    list: Mutex<ReadyList>,
}

impl ReadyQueue {
    fn lock(&self) -> MutexGuard<'_, ReadyList> {
        // A panic while holding this lock leaves only a list of indices, which
        // stays valid: ignore the poison.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct SlotWaker {
    index: usize,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let parent = {
            let mut list = self.queue.lock();
            list.woken.push(self.index);
            list.parent.clone()
        };
        if let Some(w) = parent {
            w.wake();
        }
    }
}

struct Slot<F> {
    fut: Option<Pin<Box<F>>>,
    flag: Arc<SlotWaker>,
    waker: Waker,
}

struct FutureSet<F> {
    slots: Vec<Slot<F>>,
    queue: Arc<ReadyQueue>,
    remaining: usize,
}

impl<F: Future> FutureSet<F> {
    fn new(futs: impl IntoIterator<Item = F>) -> Self {
        let queue = Arc::new(ReadyQueue {
            list: Mutex::new(ReadyList {
                woken: Vec::new(),
                parent: None,
            }),
        });
        let slots: Vec<Slot<F>> = futs
            .into_iter()
            .enumerate()
            .map(|(index, f)| {
                let flag = Arc::new(SlotWaker {
                    index,
                    queued: AtomicBool::new(true),
                    queue: Arc::clone(&queue),
                });
                Slot {
                    fut: Some(Box::pin(f)),
                    waker: Waker::from(Arc::clone(&flag)),
                    flag,
                }
            })
            .collect();
        // Every future starts out queued: each is polled once at first.
        queue.lock().woken = (0..slots.len()).collect();
        FutureSet {
            remaining: slots.len(),
            slots,
            queue,
        }
    }

    /// Polls the futures woken since the last call; `on_ready` gets each one
    /// that finished, with its index. Futures woken while this runs wait for
    /// the next call (their wake-up reschedules the caller).
    fn poll_woken(&mut self, cx: &mut Context<'_>, mut on_ready: impl FnMut(usize, F::Output)) {
        let woken = {
            let mut list = self.queue.lock();
            match &mut list.parent {
                Some(w) => w.clone_from(cx.waker()),
                None => list.parent = Some(cx.waker().clone()),
            }
            std::mem::take(&mut list.woken)
        };
        for i in woken {
            let slot = &mut self.slots[i];
            slot.flag.queued.store(false, Ordering::Release);
            let Some(fut) = slot.fut.as_mut() else {
                continue;
            };
            let mut sub = Context::from_waker(&slot.waker);
            if let Poll::Ready(v) = fut.as_mut().poll(&mut sub) {
                slot.fut = None;
                self.remaining -= 1;
                on_ready(i, v);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// gather

/// Runs every future concurrently and returns their outputs in input order
/// (`asyncio.gather`).
///
/// The futures are polled inside the awaiting task, so they need not be
/// `'static`; a panic in one propagates out of `gather`. For a fixed set of
/// futures of different types, use [`gather!`](crate::gather).
///
/// ```
/// use uringio::task::gather;
/// uringio::run(async {
///     let out = gather((1..=3).map(|i| async move { i * 10 })).await;
///     assert_eq!(out, [10, 20, 30]);
/// });
/// ```
pub fn gather<I>(futs: I) -> Gather<I::Item>
where
    I: IntoIterator,
    I::Item: Future,
{
    let set = FutureSet::new(futs);
    let results = (0..set.slots.len()).map(|_| None).collect();
    Gather { set, results }
}

/// The future returned by [`gather()`].
#[must_use = "futures do nothing unless awaited"]
pub struct Gather<F: Future> {
    set: FutureSet<F>,
    results: Vec<Option<F::Output>>,
}

impl<F: Future> fmt::Debug for Gather<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("len", &self.results.len())
            .field("remaining", &self.set.remaining)
            .finish()
    }
}

// The futures are boxed and the outputs are never pinned.
impl<F: Future> Unpin for Gather<F> {}

impl<F: Future> Future for Gather<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.set.remaining > 0 {
            let results = &mut this.results;
            this.set.poll_woken(cx, |i, v| results[i] = Some(v));
            if this.set.remaining > 0 {
                return Poll::Pending;
            }
        }
        Poll::Ready(
            std::mem::take(&mut this.results)
                .into_iter()
                .map(|r| r.expect("gather: every future finished"))
                .collect(),
        )
    }
}

/// Runs a fixed list of futures concurrently and gives their outputs as a
/// tuple, in order: `gather!(a, b, c).await` is `(A, B, C)`.
///
/// The expressions are evaluated at once, in order; the futures are polled
/// in place inside the awaiting task (no spawning, no boxing), so they may
/// borrow. Like [`task::gather`](crate::task::gather()), the result is a
/// future to `.await`. Also reachable as `uringio::task::gather!`.
///
/// ```
/// uringio::run(async {
///     let (a, b) = uringio::gather!(async { 1 }, async { "two" }).await;
///     assert_eq!((a, b), (1, "two"));
/// });
/// ```
#[macro_export]
macro_rules! gather {
    // Internal: give each future its own pair of names. Each recursive
    // expansion introduces `fut`/`out` in a fresh hygiene context, so the
    // names never clash.
    (@munch [$($done:tt)*]) => {
        $crate::gather!(@finish $($done)*)
    };
    (@munch [$($done:tt)*] $head:expr $(, $tail:expr)*) => {
        $crate::gather!(@munch [$($done)* (fut out $head)] $($tail),*)
    };
    (@finish $(($fut:ident $out:ident $e:expr))*) => {{
        $( let $fut = $e; )*
        async move {
            $(
                let mut $fut = ::core::pin::pin!($fut);
                let mut $out = ::core::option::Option::None;
            )*
            ::core::future::poll_fn(|cx| {
                let mut pending = false;
                $(
                    if $out.is_none() {
                        match ::core::future::Future::poll($fut.as_mut(), cx) {
                            ::core::task::Poll::Ready(v) => $out = ::core::option::Option::Some(v),
                            ::core::task::Poll::Pending => pending = true,
                        }
                    }
                )*
                if pending {
                    ::core::task::Poll::Pending
                } else {
                    ::core::task::Poll::Ready((
                        $( $out.take().expect("gather!: every future finished"), )*
                    ))
                }
            })
            .await
        }
    }};
    ($($e:expr),+ $(,)?) => {
        $crate::gather!(@munch [] $($e),+)
    };
}

// ---------------------------------------------------------------------------
// as_completed

/// Yields the futures' outputs in the order they finish
/// (`asyncio.as_completed`).
///
/// The futures are polled in place by whoever polls the stream; none of
/// them runs while the stream is not being polled (spawn them first, and
/// pass the [`Task`]s, if they must make progress on their own).
pub fn as_completed<I>(futs: I) -> AsCompleted<I::Item>
where
    I: IntoIterator,
    I::Item: Future,
{
    AsCompleted {
        set: FutureSet::new(futs),
        finished: VecDeque::new(),
    }
}

/// The stream returned by [`as_completed`].
#[must_use = "streams do nothing unless polled"]
pub struct AsCompleted<F: Future> {
    set: FutureSet<F>,
    finished: VecDeque<F::Output>,
}

impl<F: Future> fmt::Debug for AsCompleted<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &(self.set.remaining + self.finished.len()))
            .finish()
    }
}

// The futures are boxed and the outputs are never pinned.
impl<F: Future> Unpin for AsCompleted<F> {}

impl<F: Future> Stream for AsCompleted<F> {
    type Item = F::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.get_mut();
        if this.finished.is_empty() && this.set.remaining > 0 {
            let finished = &mut this.finished;
            this.set.poll_woken(cx, |_, v| finished.push_back(v));
        }
        match this.finished.pop_front() {
            Some(v) => Poll::Ready(Some(v)),
            None if this.set.remaining == 0 => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.set.remaining + self.finished.len();
        (n, Some(n))
    }
}

// ---------------------------------------------------------------------------
// wait

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as any task has finished.
    FirstCompleted,
    /// As soon as any task has finished with a [`JoinError`](crate::JoinError)
    /// (it panicked or was cancelled), or when all have finished. A task whose
    /// value is an `Err` finished normally: `wait` cannot look inside `T`.
    FirstException,
    /// When every task has finished.
    AllCompleted,
}

/// Waits for tasks without consuming them (`asyncio.wait`), and splits them
/// into `(done, pending)`, each in input order.
///
/// Returns when `when` is met or after `timeout`, whichever comes first; an
/// empty list returns at once. A timeout cancels nothing: the pending tasks
/// keep running. The done tasks still hold their outcome, so awaiting one
/// returns it immediately.
pub async fn wait<T>(
    mut tasks: Vec<Task<T>>,
    when: ReturnWhen,
    timeout: Option<Duration>,
) -> (Vec<Task<T>>, Vec<Task<T>>) {
    let watch = poll_fn(|cx| {
        if condition_met(&tasks, when) {
            return Poll::Ready(());
        }
        for t in tasks.iter_mut().filter(|t| !t.is_finished()) {
            // An unfinished task has no output to hand over: polling it only
            // registers our waker for its completion. We own the tasks, so
            // no one else is waiting on them.
            let polled = Pin::new(t).poll(cx);
            debug_assert!(
                polled.is_pending(),
                "an unfinished task returned its output"
            );
        }
        Poll::Pending
    });
    match timeout {
        Some(d) => {
            let _ = crate::time::timeout(d, watch).await;
        }
        None => watch.await,
    }
    tasks.into_iter().partition(|t| t.is_finished())
}

fn condition_met<T>(tasks: &[Task<T>], when: ReturnWhen) -> bool {
    if tasks.is_empty() {
        return true;
    }
    match when {
        ReturnWhen::FirstCompleted => tasks.iter().any(|t| t.is_finished()),
        ReturnWhen::AllCompleted => tasks.iter().all(|t| t.is_finished()),
        ReturnWhen::FirstException => {
            tasks.iter().any(ended_with_join_error) || tasks.iter().all(|t| t.is_finished())
        }
    }
}

/// The task panicked or was cancelled: awaiting it gives a `JoinError`.
/// (`wait` owns the tasks and never takes their output, so a panic is still
/// in the task's cell.)
fn ended_with_join_error<T>(t: &Task<T>) -> bool {
    t.is_finished() && (t.is_cancelled() || t.join.unretrieved_panic().is_some())
}

// ---------------------------------------------------------------------------
// shield

/// Protects `fut` from the cancellation of whoever awaits it
/// (`asyncio.shield`).
///
/// `fut` is spawned as a task right away (so a running loop is needed and
/// `fut` must be `'static`); the returned future awaits that task. Dropping
/// the returned future detaches the task instead of cancelling it: the inner
/// work runs to completion. A panic inside `fut` is resumed in the awaiter.
pub fn shield<F>(fut: F) -> Shield<F::Output>
where
    F: Future + 'static,
{
    Shield { task: spawn(fut) }
}

/// The future returned by [`shield`].
#[must_use = "futures do nothing unless awaited"]
pub struct Shield<T> {
    task: Task<T>,
}

impl<T> fmt::Debug for Shield<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shield")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl<T> Future for Shield<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.get_mut().task).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(v),
            Poll::Ready(Err(e)) => match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                // Only the loop cancels the inner task (no one else holds it),
                // when it shuts down and cancels every task: the awaiter is
                // being torn down too.
                Err(e) => panic!("shield: the shielded task was cancelled: {e}"),
            },
        }
    }
}
