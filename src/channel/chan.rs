//! The state both ends of a channel share, and the protocol for touching it.
//!
//! # Layout
//!
//! One `Mutex<State>` holds the queue of sent messages, the receiver's waker,
//! the FIFO of parked senders and the two "closed" flags. Three atomics sit
//! beside it: the number of live senders, how many messages the receiver has
//! consumed (`consumed`, written only by the receiver) and `want_slots`, a
//! flag a sender raises when it parks on a full channel.
//!
//! # Batches
//!
//! The receiver does not lock once per message. When its private buffer is
//! empty it locks once and *swaps* the shared queue with it, taking every
//! queued message in one go; until that batch is used up it pops without
//! touching the lock, so a busy sender keeps the lock's cache line to itself.
//! Both buffers keep their capacity across swaps: a bounded channel never
//! allocates per message.
//!
//! # Capacity of a bounded channel
//!
//! A message counts against the capacity from the moment it is queued until
//! the receiver hands it to the user, wherever it sits (shared queue or the
//! receiver's batch). The receiver's batch is accounted for with two counters,
//! both wrapping: `taken` (messages moved into batches, under the lock) and
//! `consumed` (messages popped from batches, an atomic only the receiver
//! writes). So
//!
//! ```text
//! occupied = queue.len() + (taken - consumed)
//! ```
//!
//! Senders keep a possibly stale copy of `consumed` (`consumed_seen`); stale
//! only over-counts, so they reload it only when the channel looks full.
//!
//! # Parking and waking
//!
//! - The receiver stores its waker only when it finds nothing to take, and a
//!   sender wakes it (after unlocking) only if one is stored: one wake-up per
//!   time the receiver ran dry, however many messages follow.
//! - A sender that finds the channel full joins `waiters`, raises
//!   `want_slots`, then re-reads `consumed`. The receiver, after each pop,
//!   stores `consumed` then reads `want_slots`. Both pairs are `SeqCst`, so
//!   either the sender sees the freed slot or the receiver sees the flag
//!   (Dekker's handshake); a parked sender is never forgotten.
//! - Seeing the flag, the receiver locks, clears it, and wakes as many waiters
//!   as there are free slots, taking them off the list. The flag stays raised
//!   while waiters remain.
//! - A woken sender that finds the channel full again (someone else took the
//!   slot) goes back to the *front* of the list. A woken sender whose future
//!   is dropped before it sent passes its wake-up on to the next waiter.
//!
//! # Rules
//!
//! Nothing user-defined runs under the lock: wakers are woken, and replaced
//! wakers and refused or leftover messages are dropped, only after unlocking
//! (a `Drop` could otherwise drop a `Sender` of this very channel and
//! deadlock). A poisoned lock is simply taken over: no invariant spans a
//! panic, since no user code runs inside.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use super::error::TrySendError;

/// How many elements a bounded channel reserves up front (it grows up to its
/// capacity, then keeps that allocation).
const PREALLOC_MAX: usize = 4096;

/// The shared part of a channel.
pub(super) struct Chan<T> {
    state: Mutex<State<T>>,
    /// The capacity, or `usize::MAX` when unbounded.
    cap: usize,
    /// Live `Sender` handles.
    senders: AtomicUsize,
    /// Messages the receiver has popped from its batches (wrapping). Only the
    /// receiver writes it, and only for bounded channels.
    consumed: AtomicUsize,
    /// A sender is parked on a full channel: the receiver calls
    /// [`Chan::release_slots`] after its next pop.
    want_slots: AtomicBool,
}

/// Everything behind the lock.
struct State<T> {
    queue: VecDeque<T>,
    /// Messages moved into the receiver's batches (wrapping).
    taken: usize,
    /// A copy of [`Chan::consumed`], possibly stale (never ahead).
    consumed_seen: usize,
    rx_waker: Option<Waker>,
    /// Parked senders, oldest first.
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// Every `Sender` is gone.
    tx_closed: bool,
    /// The receiver is gone or closed the channel.
    rx_closed: bool,
}

/// A parked sender.
struct Waiter {
    id: u64,
    waker: Waker,
}

/// What [`Chan::take_batch`] found.
pub(super) enum Batch {
    /// The receiver's buffer now holds at least one message.
    Taken,
    /// Nothing queued; the receiver's waker (if given) is stored.
    Empty,
    /// Nothing queued and nothing ever will be.
    Closed,
}

/// Wakers collected under the lock, woken after it is released. Fixed size,
/// so waking never allocates.
struct WakeList {
    wakers: [Option<Waker>; WakeList::CAP],
    len: usize,
}

impl WakeList {
    const CAP: usize = 16;

    fn new() -> WakeList {
        WakeList {
            wakers: [const { None }; WakeList::CAP],
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == WakeList::CAP
    }

    fn push(&mut self, w: Waker) {
        self.wakers[self.len] = Some(w);
        self.len += 1;
    }

    fn wake_all(&mut self) {
        for w in self.wakers[..self.len].iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        self.len = 0;
    }
}

impl<T> Chan<T> {
    /// A channel holding at most `cap` messages (`None`: unbounded).
    pub(super) fn new(cap: Option<usize>) -> Chan<T> {
        let (cap, prealloc) = match cap {
            Some(c) => (c, c.min(PREALLOC_MAX)),
            None => (usize::MAX, 0),
        };
        Chan {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(prealloc),
                taken: 0,
                consumed_seen: 0,
                rx_waker: None,
                waiters: VecDeque::new(),
                next_id: 0,
                tx_closed: false,
                rx_closed: false,
            }),
            cap,
            senders: AtomicUsize::new(1),
            consumed: AtomicUsize::new(0),
            want_slots: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The capacity, `None` when unbounded.
    pub(super) fn capacity(&self) -> Option<usize> {
        self.is_bounded().then_some(self.cap)
    }

    pub(super) fn is_bounded(&self) -> bool {
        self.cap != usize::MAX
    }

    /// How many elements the receiver's private buffer should reserve.
    pub(super) fn prealloc(&self) -> usize {
        if self.is_bounded() {
            self.cap.min(PREALLOC_MAX)
        } else {
            0
        }
    }

    fn occupied(st: &State<T>) -> usize {
        st.queue.len() + st.taken.wrapping_sub(st.consumed_seen)
    }

    /// Is there a free slot? Reloads `consumed` only when the stale view says
    /// no (and `SeqCst`: this is the sender's half of the handshake).
    fn has_room(&self, st: &mut State<T>) -> bool {
        if !self.is_bounded() || Self::occupied(st) < self.cap {
            return true;
        }
        st.consumed_seen = self.consumed.load(Ordering::SeqCst);
        Self::occupied(st) < self.cap
    }

    // ----- senders ---------------------------------------------------------

    /// Queues `v` if there is room. On success returns the parked receiver's
    /// waker, to be woken once the caller has unlocked.
    fn push(&self, st: &mut State<T>, v: T) -> Result<Option<Waker>, TrySendError<T>> {
        if st.rx_closed {
            return Err(TrySendError::Closed(v));
        }
        if !self.has_room(st) {
            return Err(TrySendError::Full(v));
        }
        st.queue.push_back(v);
        Ok(st.rx_waker.take())
    }

    /// `try_send`: queue `v` now or give it back.
    pub(super) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let rx = self.push(&mut self.lock(), v)?;
        if let Some(w) = rx {
            w.wake();
        }
        Ok(())
    }

    /// One poll of a `send`: queue `v`, or park the sender as `*id` (given an
    /// id on first parking) with `waker` and hand `v` back as `Full`.
    pub(super) fn poll_send(
        &self,
        v: T,
        id: &mut Option<u64>,
        waker: &Waker,
    ) -> Result<(), TrySendError<T>> {
        let mut st = self.lock();
        let mut v = v;
        let mut parked = false;
        let mut old_waker = None;
        let res = loop {
            match self.push(&mut st, v) {
                Ok(rx) => break Ok(rx),
                Err(TrySendError::Full(back)) if !parked => {
                    // Park, then try once more: the retry re-reads `consumed`
                    // after raising `want_slots`.
                    v = back;
                    old_waker = Self::park(&mut st, id, waker);
                    self.want_slots.store(true, Ordering::SeqCst);
                    parked = true;
                }
                Err(e) => break Err(e),
            }
        };
        match res {
            Ok(rx) => {
                let gone = id.take().and_then(|id| Self::unpark(&mut st, id));
                drop(st);
                drop((gone, old_waker));
                if let Some(w) = rx {
                    w.wake();
                }
                Ok(())
            }
            Err(TrySendError::Closed(v)) => {
                let gone = id.take().and_then(|id| Self::unpark(&mut st, id));
                drop(st);
                drop((gone, old_waker));
                Err(TrySendError::Closed(v))
            }
            Err(full) => {
                drop(st);
                drop(old_waker);
                Err(full)
            }
        }
    }

    /// Puts sender `*id` on the waiter list (or refreshes its waker). Returns
    /// a replaced waker, to be dropped after unlocking.
    fn park(st: &mut State<T>, id: &mut Option<u64>, waker: &Waker) -> Option<Waker> {
        match *id {
            Some(id) => {
                if let Some(w) = st.waiters.iter_mut().find(|w| w.id == id) {
                    if w.waker.will_wake(waker) {
                        return None;
                    }
                    return Some(mem::replace(&mut w.waker, waker.clone()));
                }
                // Woken, but the slot went to someone else: keep our turn.
                st.waiters.push_front(Waiter {
                    id,
                    waker: waker.clone(),
                });
            }
            None => {
                let new = st.next_id;
                st.next_id += 1;
                *id = Some(new);
                st.waiters.push_back(Waiter {
                    id: new,
                    waker: waker.clone(),
                });
            }
        }
        None
    }

    /// Takes sender `id` off the waiter list if it is still there.
    fn unpark(st: &mut State<T>, id: u64) -> Option<Waker> {
        let pos = st.waiters.iter().position(|w| w.id == id)?;
        st.waiters.remove(pos).map(|w| w.waker)
    }

    /// A `send` future that parked as `id` is dropped unfinished. If it was
    /// still waiting it leaves the list; if it had been woken for a slot it
    /// never used, the next waiter gets that wake-up.
    pub(super) fn cancel_send(&self, id: u64) {
        let mut st = self.lock();
        let w = match Self::unpark(&mut st, id) {
            Some(w) => {
                drop(st);
                drop(w);
                return;
            }
            None if !st.rx_closed && self.has_room(&mut st) => {
                st.waiters.pop_front().map(|w| w.waker)
            }
            None => None,
        };
        drop(st);
        if let Some(w) = w {
            w.wake();
        }
    }

    /// `Sender::clone`.
    pub(super) fn add_sender(&self) {
        self.senders.fetch_add(1, Ordering::Relaxed);
    }

    /// `Sender::drop`: the last one closes the sending side and wakes the
    /// receiver so it can see the end.
    pub(super) fn drop_sender(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let w = {
            let mut st = self.lock();
            st.tx_closed = true;
            st.rx_waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Is the receiving side gone or closed?
    pub(super) fn is_rx_closed(&self) -> bool {
        self.lock().rx_closed
    }

    // ----- the receiver ----------------------------------------------------

    /// Swaps the shared queue into the receiver's empty `local` buffer. When
    /// nothing is queued, stores `waker` (if any) to be woken by the next send.
    pub(super) fn take_batch(&self, local: &mut VecDeque<T>, waker: Option<&Waker>) -> Batch {
        debug_assert!(local.is_empty());
        let mut st = self.lock();
        if !st.queue.is_empty() {
            mem::swap(&mut st.queue, local);
            // `local` was empty, so every earlier batch has been consumed.
            st.consumed_seen = st.taken;
            st.taken = st.taken.wrapping_add(local.len());
            if !st.waiters.is_empty() {
                // Serviced by `release_slots` right after the caller's pop.
                self.want_slots.store(true, Ordering::SeqCst);
            }
            let old = st.rx_waker.take();
            drop(st);
            drop(old);
            return Batch::Taken;
        }
        if st.tx_closed || st.rx_closed {
            let old = st.rx_waker.take();
            drop(st);
            drop(old);
            return Batch::Closed;
        }
        let old = match waker {
            Some(w) if !st.rx_waker.as_ref().is_some_and(|o| o.will_wake(w)) => {
                st.rx_waker.replace(w.clone())
            }
            _ => None,
        };
        drop(st);
        drop(old);
        Batch::Empty
    }

    /// Called by the receiver after each pop from a bounded channel's batch,
    /// with its running (wrapping) count of popped messages.
    pub(super) fn popped(&self, consumed: usize) {
        self.consumed.store(consumed, Ordering::SeqCst);
        if self.want_slots.load(Ordering::SeqCst) {
            self.release_slots(consumed);
        }
    }

    /// Wakes parked senders, one per free slot.
    fn release_slots(&self, consumed: usize) {
        let mut wl = WakeList::new();
        loop {
            let again = {
                let mut st = self.lock();
                st.consumed_seen = consumed;
                let mut free = self.cap.saturating_sub(Self::occupied(&st));
                while free > 0 && !wl.is_full() {
                    match st.waiters.pop_front() {
                        Some(w) => wl.push(w.waker),
                        None => break,
                    }
                    free -= 1;
                }
                self.want_slots
                    .store(!st.waiters.is_empty(), Ordering::SeqCst);
                free > 0 && !st.waiters.is_empty()
            };
            wl.wake_all();
            if !again {
                return;
            }
        }
    }

    /// A `recv` that parked is dropped: forget its waker.
    pub(super) fn unpark_receiver(&self) {
        let old = self.lock().rx_waker.take();
        drop(old);
    }

    /// The receiver closes the channel: senders fail from now on and every
    /// parked one wakes to see it. Returns the queued messages when `drain`
    /// (the receiver is being dropped), for the caller to drop unlocked.
    pub(super) fn close_rx(&self, drain: bool) -> VecDeque<T> {
        let (waiters, old, queue) = {
            let mut st = self.lock();
            st.rx_closed = true;
            let queue = if drain {
                mem::take(&mut st.queue)
            } else {
                VecDeque::new()
            };
            (mem::take(&mut st.waiters), st.rx_waker.take(), queue)
        };
        self.want_slots.store(false, Ordering::SeqCst);
        drop(old);
        for w in waiters {
            w.waker.wake();
        }
        queue
    }
}
