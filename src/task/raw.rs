//! The raw task cell: one allocation per spawned task, holding a header and
//! the future (later its output).
//!
//! ## State machine
//! ```text
//!            wake (same thread)                poll returns Ready / panics /
//!  idle ───────────────────────▶ SCHEDULED ──▶ RUNNING ─────────────────────▶ COMPLETE
//!   ▲  wake (other thread): via the loop's        │  Pending                      │
//!   │  remote queue, then as above                ▼                               ▼
//!   └───────────────────────────────────────── idle              output taken by Task<T>
//! ```
//! `CANCEL` may be set at any time before `COMPLETE`; the next time the loop
//! picks the task up it drops the future instead of polling it and completes
//! with a cancelled [`JoinError`].
//!
//! ## Threads
//! Everything but the reference count and the `shared` pointer is touched
//! only on the thread that owns the task's loop (the "owner thread"). Wakers
//! are `Send + Sync`: a waker used on another thread only touches the
//! reference count and pushes the task onto its loop's remote queue
//! ([`Shared`]). The future and its output are dropped on the owner thread:
//! the loop empties every cell it still holds when it shuts down, and a
//! `Task<T>` (which is `!Send`) drops the output it did not take. So when the
//! last reference goes away on a foreign thread, the cell's stage is already
//! empty and only memory is freed.
//!
//! ## References
//! One each for: the loop's task registry (until completion), the `Task<T>`
//! handle, every waker clone, every run-queue or remote-queue entry.

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::error::JoinError;
use crate::runtime::scheduler::Shared;

pub(crate) const SCHEDULED: u8 = 1;
pub(crate) const RUNNING: u8 = 2;
pub(crate) const COMPLETE: u8 = 4;
pub(crate) const CANCEL: u8 = 8;
pub(crate) const DETACHED: u8 = 16;
pub(crate) const CANCELLED: u8 = 32;

/// What one poll of a task did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollOutcome {
    /// The future is still pending.
    Pending,
    /// The task finished (value, panic or cancellation).
    Complete,
}

pub(crate) struct Header {
    refs: AtomicUsize,
    state: Cell<u8>,
    vtable: &'static Vtable,
    /// The loop this task belongs to; its address is the loop's identity.
    pub(crate) shared: Arc<Shared>,
    join_waker: UnsafeCell<Option<Waker>>,
    pub(crate) id: u64,
    pub(crate) name: Option<Box<str>>,
    /// Index in the loop's task registry.
    pub(crate) registry_key: Cell<usize>,
    /// A panic nobody retrieved is reported when the cell is emptied.
    pub(crate) panic_retrieved: Cell<bool>,
}

struct Vtable {
    poll: unsafe fn(NonNull<Header>) -> PollOutcome,
    /// Writes `Poll<Result<T, JoinError>>` to `dst` if complete, else
    /// registers the waker.
    try_read_output: unsafe fn(NonNull<Header>, *mut (), &Waker),
    /// Drops whatever the stage holds (future or output).
    drop_stage: unsafe fn(NonNull<Header>),
    /// Drops the future and completes the task as cancelled.
    cancel_now: unsafe fn(NonNull<Header>),
    dealloc: unsafe fn(NonNull<Header>),
    /// The panic message, if the task completed with a panic not yet taken.
    panic_message: unsafe fn(NonNull<Header>) -> Option<String>,
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

#[repr(C)]
struct TaskCell<F: Future> {
    header: Header,
    stage: UnsafeCell<Stage<F>>,
}

/// A counted reference to a task cell.
pub(crate) struct TaskRef {
    ptr: NonNull<Header>,
}

// SAFETY: a TaskRef only crosses threads inside a loop's remote queue; on a
// foreign thread it is only moved or dropped, which touches the atomic
// reference count alone (see the module docs: the stage is empty by then if
// the drop frees the cell).
unsafe impl Send for TaskRef {}

impl TaskRef {
    /// Allocates a cell for `fut`. Returns the registry reference and the
    /// join reference (refcount 2).
    pub(crate) fn new<F>(
        fut: F,
        shared: Arc<Shared>,
        id: u64,
        name: Option<Box<str>>,
    ) -> (TaskRef, JoinRef<F::Output>)
    where
        F: Future + 'static,
    {
        let cell = Box::new(TaskCell {
            header: Header {
                refs: AtomicUsize::new(2),
                state: Cell::new(0),
                vtable: vtable_for::<F>(),
                shared,
                join_waker: UnsafeCell::new(None),
                id,
                name,
                registry_key: Cell::new(usize::MAX),
                panic_retrieved: Cell::new(false),
            },
            stage: UnsafeCell::new(Stage::Running(fut)),
        });
        let ptr = NonNull::from(Box::leak(cell)).cast::<Header>();
        (
            TaskRef { ptr },
            JoinRef {
                ptr,
                _t: PhantomData,
            },
        )
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we hold a reference, so the cell is alive.
        unsafe { self.ptr.as_ref() }
    }

    /// Polls the task once. Owner thread only.
    pub(crate) fn poll(&self) -> PollOutcome {
        // SAFETY: called by the owner loop, never re-entrantly for one task
        // (the RUNNING flag is checked by the caller), and the cell is alive.
        unsafe { (self.header().vtable.poll)(self.ptr) }
    }

    /// Drops the future now and completes the task as cancelled. Owner
    /// thread only, not while the task is running.
    pub(crate) fn cancel_now(&self) {
        // SAFETY: owner thread, not running (the loop calls this at shutdown).
        unsafe { (self.header().vtable.cancel_now)(self.ptr) }
    }

    pub(crate) fn id(&self) -> u64 {
        self.header().id
    }

    pub(crate) fn state(&self) -> u8 {
        self.header().state.get()
    }

    pub(crate) fn set_state(&self, s: u8) {
        self.header().state.set(s)
    }

    /// Drops whatever the cell still holds. Owner thread, task not running.
    pub(crate) fn drop_stage(&self) {
        // SAFETY: owner thread (the loop calls this), task not running.
        unsafe { (self.header().vtable.drop_stage)(self.ptr) }
    }

    /// A panic that nobody retrieved, to be reported by the loop.
    pub(crate) fn unretrieved_panic(&self) -> Option<String> {
        // SAFETY: owner thread; the cell is alive.
        unsafe { (self.header().vtable.panic_message)(self.ptr) }
    }

    pub(crate) fn same(&self, other: &TaskRef) -> bool {
        self.ptr == other.ptr
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> TaskRef {
        self.header().inc_ref();
        TaskRef { ptr: self.ptr }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { release(self.ptr) }
    }
}

impl Header {
    fn inc_ref(&self) {
        let old = self.refs.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            std::process::abort();
        }
    }

    /// The identity of the task's loop.
    pub(crate) fn loop_id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }
}

/// Drops one reference; frees the cell when it was the last.
///
/// # Safety
/// The caller owns one reference to a live cell.
unsafe fn release(ptr: NonNull<Header>) {
    // SAFETY: the caller owns a reference, so the header is alive here.
    let h = unsafe { ptr.as_ref() };
    if h.refs.fetch_sub(1, Ordering::Release) == 1 {
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: that was the last reference; nobody else can reach the cell.
        unsafe { (h.vtable.dealloc)(ptr) }
    }
}

/// The `Task<T>` side: reads the output.
pub(crate) struct JoinRef<T> {
    ptr: NonNull<Header>,
    _t: PhantomData<T>,
}

impl<T> JoinRef<T> {
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: we hold a reference.
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn poll_output(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: the vtable was built for a future whose output is T (the
        // JoinRef was created with it), `out` has that exact type, and
        // JoinRef is !Send so we are on the owner thread.
        unsafe {
            (self.header().vtable.try_read_output)(
                self.ptr,
                &mut out as *mut _ as *mut (),
                cx.waker(),
            )
        };
        out
    }

    pub(crate) fn state(&self) -> u8 {
        self.header().state.get()
    }

    /// A panic the task ended with that nobody took (owner thread).
    pub(crate) fn unretrieved_panic(&self) -> Option<String> {
        // SAFETY: JoinRef is !Send, so this is the owner thread.
        unsafe { (self.header().vtable.panic_message)(self.ptr) }
    }

    /// Requests cancellation. Returns false if the task already finished.
    /// The loop drops the future when it next picks the task up.
    pub(crate) fn request_cancel(&self) -> bool {
        let h = self.header();
        let s = h.state.get();
        if s & COMPLETE != 0 {
            return false;
        }
        h.state.set(s | CANCEL);
        schedule(self.ptr);
        true
    }
}

impl<T> Drop for JoinRef<T> {
    fn drop(&mut self) {
        let h = self.header();
        let s = h.state.get();
        h.state.set(s | DETACHED);
        if s & COMPLETE != 0 {
            // SAFETY: owner thread (JoinRef is !Send); the task is complete so
            // the stage holds the output (or nothing), never a running future.
            unsafe { (h.vtable.drop_stage)(self.ptr) };
        }
        // SAFETY: drop the join reference we own.
        unsafe { release(self.ptr) }
    }
}

fn vtable_for<F: Future + 'static>() -> &'static Vtable {
    &Vtable {
        poll: poll_impl::<F>,
        try_read_output: read_output_impl::<F>,
        drop_stage: drop_stage_impl::<F>,
        cancel_now: cancel_now_impl::<F>,
        dealloc: dealloc_impl::<F>,
        panic_message: panic_message_impl::<F>,
    }
}

/// # Safety
/// `ptr` points to a live `TaskCell<F>`; owner thread.
unsafe fn cell<'a, F: Future>(ptr: NonNull<Header>) -> &'a TaskCell<F> {
    // SAFETY: TaskCell is repr(C) with the header first, so the header
    // pointer is the cell pointer; the caller guarantees the type.
    unsafe { ptr.cast::<TaskCell<F>>().as_ref() }
}

fn finish<F: Future>(c: &TaskCell<F>, result: Result<F::Output, JoinError>, cancelled: bool) {
    let h = &c.header;
    let s = h.state.get();
    let detached = s & DETACHED != 0;
    let mut ns = s | COMPLETE;
    if cancelled {
        ns |= CANCELLED;
    }
    h.state.set(ns);
    // SAFETY: owner thread, no borrow of the stage is live (the future was
    // already dropped or returned).
    let stage = unsafe { &mut *c.stage.get() };
    if detached {
        if let Err(e) = &result {
            if e.is_panic() {
                // Keep it so the loop can report it, then drop.
                *stage = Stage::Finished(result);
                return;
            }
        }
        *stage = Stage::Consumed;
        drop(result);
    } else {
        *stage = Stage::Finished(result);
        // SAFETY: owner thread; the join waker is only touched there.
        if let Some(w) = unsafe { (*h.join_waker.get()).take() } {
            w.wake();
        }
    }
}

unsafe fn poll_impl<F: Future>(ptr: NonNull<Header>) -> PollOutcome {
    // SAFETY: the caller guarantees the cell type and the owner thread.
    let c = unsafe { cell::<F>(ptr) };
    let h = &c.header;
    if h.state.get() & COMPLETE != 0 {
        return PollOutcome::Complete;
    }
    if h.state.get() & CANCEL != 0 {
        // SAFETY: see cancel_now_impl.
        unsafe { cancel_now_impl::<F>(ptr) };
        return PollOutcome::Complete;
    }
    // SAFETY: the stage is only reached from the owner thread and not
    // re-entrantly: a task never polls itself.
    let stage = unsafe { &mut *c.stage.get() };
    let Stage::Running(fut) = stage else {
        return PollOutcome::Complete;
    };
    // SAFETY: the future lives inside a heap cell that never moves and is
    // dropped in place (stage replaced) only.
    let fut = unsafe { Pin::new_unchecked(fut) };
    let waker = waker_ref(ptr);
    let mut cx = Context::from_waker(&waker);
    match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
        Ok(Poll::Pending) => PollOutcome::Pending,
        Ok(Poll::Ready(v)) => {
            *stage = Stage::Consumed;
            finish(c, Ok(v), false);
            PollOutcome::Complete
        }
        Err(payload) => {
            // Drop the future that panicked, catching a second panic.
            // SAFETY: owner thread, no other borrow of the stage.
            unsafe { drop_stage_in_place(stage) };
            finish(c, Err(JoinError::panic(payload)), false);
            PollOutcome::Complete
        }
    }
}

/// Drops the stage where it lies (a running future is pinned: moving it out
/// first would break its self-references), then marks it consumed. A
/// destructor that panics must not take the loop down.
///
/// # Safety
/// Owner thread; no other borrow of the stage.
unsafe fn drop_stage_in_place<F: Future>(stage: &mut Stage<F>) {
    let p: *mut Stage<F> = stage;
    // SAFETY: `p` is valid and the value is dropped exactly once; it is
    // overwritten right after without being read or dropped again.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { std::ptr::drop_in_place(p) }));
    // SAFETY: `p` is valid for writes; the old value was dropped above.
    unsafe { std::ptr::write(p, Stage::Consumed) };
}

unsafe fn cancel_now_impl<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: caller: owner thread, right cell type, task not running.
    let c = unsafe { cell::<F>(ptr) };
    if c.header.state.get() & COMPLETE != 0 {
        return;
    }
    // SAFETY: owner thread and not running, so no other borrow of the stage.
    let stage = unsafe { &mut *c.stage.get() };
    // SAFETY: as above.
    unsafe { drop_stage_in_place(stage) };
    finish(c, Err(JoinError::cancelled()), true);
}

unsafe fn read_output_impl<F: Future>(ptr: NonNull<Header>, dst: *mut (), waker: &Waker) {
    // SAFETY: caller guarantees type and thread.
    let c = unsafe { cell::<F>(ptr) };
    let h = &c.header;
    // SAFETY: dst is a `Poll<Result<F::Output, JoinError>>` (see JoinRef).
    let dst = unsafe { &mut *(dst as *mut Poll<Result<F::Output, JoinError>>) };
    if h.state.get() & COMPLETE != 0 {
        // SAFETY: owner thread; nothing else borrows the stage now.
        let stage = unsafe { &mut *c.stage.get() };
        match std::mem::replace(stage, Stage::Consumed) {
            Stage::Finished(r) => {
                if matches!(&r, Err(e) if e.is_panic()) {
                    h.panic_retrieved.set(true);
                }
                *dst = Poll::Ready(r);
            }
            _ => panic!("Task polled again after it returned its output"),
        }
    } else {
        // SAFETY: owner thread.
        let slot = unsafe { &mut *h.join_waker.get() };
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

unsafe fn drop_stage_impl<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: caller guarantees type, owner thread, not running.
    let c = unsafe { cell::<F>(ptr) };
    // SAFETY: as above.
    let stage = unsafe { &mut *c.stage.get() };
    // SAFETY: owner thread, no other borrow of the stage.
    unsafe { drop_stage_in_place(stage) };
}

unsafe fn panic_message_impl<F: Future>(ptr: NonNull<Header>) -> Option<String> {
    // SAFETY: caller guarantees type and owner thread.
    let c = unsafe { cell::<F>(ptr) };
    // SAFETY: owner thread, no live borrow.
    match unsafe { &*c.stage.get() } {
        Stage::Finished(Err(e)) if e.is_panic() => Some(
            e.panic_message()
                .unwrap_or("<non-string panic payload>")
                .to_string(),
        ),
        _ => None,
    }
}

unsafe fn dealloc_impl<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: last reference; the cell was allocated as Box<TaskCell<F>>.
    // Its stage is empty unless we are on the owner thread (module docs).
    drop(unsafe { Box::from_raw(ptr.cast::<TaskCell<F>>().as_ptr()) });
}

// ---- wakers ----

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

/// A waker borrowing the poll's reference (no count change), valid during
/// the poll.
fn waker_ref(ptr: NonNull<Header>) -> std::mem::ManuallyDrop<Waker> {
    // SAFETY: the ManuallyDrop never releases the reference it did not take;
    // clones made from it take their own.
    std::mem::ManuallyDrop::new(unsafe {
        Waker::from_raw(RawWaker::new(ptr.as_ptr() as *const (), &WAKER_VTABLE))
    })
}

unsafe fn waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: data is a live header (the waker being cloned holds a ref).
    let h = unsafe { &*(data as *const Header) };
    h.inc_ref();
    RawWaker::new(data, &WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: data is a live header pointer, and the waker owns one
    // reference, which the TaskRef takes over (no count up and down).
    let task = TaskRef {
        ptr: unsafe { NonNull::new_unchecked(data as *mut Header) },
    };
    schedule_owned(task);
}

unsafe fn waker_wake_by_ref(data: *const ()) {
    // SAFETY: data is a live header pointer.
    schedule(unsafe { NonNull::new_unchecked(data as *mut Header) });
}

unsafe fn waker_drop(data: *const ()) {
    // SAFETY: the waker owned one reference.
    unsafe { release(NonNull::new_unchecked(data as *mut Header)) }
}

/// Schedules a task: onto its loop's run queue when called on that loop's
/// thread while it runs, else through the loop's remote queue.
fn schedule(ptr: NonNull<Header>) {
    // SAFETY: the caller holds a reference.
    let h = unsafe { ptr.as_ref() };
    h.inc_ref();
    schedule_owned(TaskRef { ptr });
}

/// [`schedule`] with a reference of its own.
fn schedule_owned(task: TaskRef) {
    let h = task.header();
    if crate::runtime::context::current_loop_id() == h.loop_id() {
        schedule_local(task);
    } else {
        let shared = h.shared.clone();
        shared.push_wake(task);
    }
}

/// Queues a task on the current loop (the caller checked that it is the
/// task's loop), unless it is already queued or complete. Owner thread only.
pub(crate) fn schedule_local(task: TaskRef) {
    let s = task.state();
    if s & (SCHEDULED | COMPLETE) != 0 {
        return;
    }
    task.set_state(s | SCHEDULED);
    crate::runtime::context::push_ready(task);
}
