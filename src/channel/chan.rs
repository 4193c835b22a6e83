//! The state both ends of a channel share: where messages wait, who is
//! parked, and who has gone. How to send, park, wake and close.
//!
//! # Storage
//!
//! Messages travel through the lock-free queues of [`std::sync::mpsc`]
//! (crossbeam's algorithms, part of std since Rust 1.67): for a bounded
//! channel a ring of exactly `cap` slots allocated up front (nothing is
//! allocated per message, and senders and receiver share no lock), for an
//! unbounded one a list of blocks of slots. They give us, in safe code, a
//! non-blocking `try_send` / `try_recv`; everything async is done here:
//! parking, waking, closing and cancellation. Only their non-blocking
//! methods are used; no thread ever blocks inside them.
//!
//! # Parking and waking
//!
//! Each side has a `parked` flag beside a lock-protected waker store. The
//! flag is what the *other* side checks on its fast path, with one plain
//! load; the lock is taken only to park or to wake.
//!
//! - **Receiver.** Finding nothing, it stores its waker, raises
//!   `rx.parked`, then looks once more. A sender enqueues its message, then
//!   reads `rx.parked`; only if it is raised does it lower it and wake the
//!   receiver. So a busy receiver costs senders nothing, and however many
//!   messages arrive while it sleeps, it is woken once.
//! - **Senders** (bounded only). Finding the ring full, a sender joins the
//!   FIFO `tx.waiters`, raises `tx.parked`, then tries once more. After each
//!   message taken, the receiver reads `tx.parked`; if raised, it counts the
//!   freed slot and (once per batch) schedules a release at the end of its
//!   loop's iteration, which wakes as many waiters as slots were freed,
//!   oldest first, and lowers the flag once the list is empty. Off a loop
//!   the release happens at once.
//! - Each "enqueue or dequeue, then read the other side's flag" pairs with
//!   "raise the flag, then look again", with a `SeqCst` fence between the
//!   two steps on both sides: the store-then-load handshake (Dekker's). At
//!   least one side sees the other, so a parked end is never forgotten. The
//!   last `Sender` leaving (`senders` drops to 0, then the flag is read)
//!   pairs with a parking receiver the same way.
//!
//! # Cancellation
//!
//! A dropped `recv` takes its waker back. A dropped `send` leaves the
//! waiter list; if it had already been taken off it (woken for a slot it now
//! will not use), it passes the wake-up to the next waiter.
//!
//! # Closing
//!
//! `senders` counts live `Sender`s; the receiver sees the end once it is 0
//! and the queue is drained (it looks at the queue again after seeing 0, so
//! a message sent just before the last drop is not missed). The receiver
//! closing (or dropping) raises `rx_closed` and wakes every waiter; senders
//! check the flag before sending, and under the waiter lock before parking.
//! A send racing with the receiver's drop may still succeed; its message is
//! then dropped with the queue.
//!
//! # Rules
//!
//! Nothing user-defined runs under a lock: wakers are woken, and replaced
//! wakers dropped, after unlocking (a waker's or a message's `Drop` may drop
//! a `Sender` of this very channel). Poisoned locks are taken over: no user
//! code runs inside them, so a panic cannot break an invariant.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::task::{Poll, Waker};

use super::error::TrySendError;

/// Keeps a field off its neighbours' cache lines.
#[repr(align(128))]
struct Padded<T>(T);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared part of a channel.
pub(super) struct Chan<T> {
    queue: Queue<T>,
    /// Live `Sender` handles.
    senders: AtomicUsize,
    /// The receiver is gone or closed the channel.
    rx_closed: AtomicBool,
    rx: Padded<RxPark>,
    /// Shared with the deferred release callback (see `slot_freed`).
    tx: Arc<Padded<TxPark>>,
}

/// The sending side of the underlying queue.
enum Queue<T> {
    Bounded(mpsc::SyncSender<T>, usize),
    Unbounded(mpsc::Sender<T>),
}

/// The receiver's parking spot.
struct RxPark {
    parked: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// Where senders wait for a free slot.
struct TxPark {
    parked: AtomicBool,
    waiters: Mutex<Waiters>,
    /// Slots freed since the last release (while senders were parked).
    freed: AtomicUsize,
    /// A release is scheduled on the receiver's loop.
    scheduled: AtomicBool,
}

impl TxPark {
    /// Wakes as many parked senders as slots were freed (at least one),
    /// oldest first.
    fn release(&self) {
        // Lower the flag first: a slot freed from now on schedules anew.
        self.scheduled.store(false, Ordering::SeqCst);
        let n = self.freed.swap(0, Ordering::SeqCst).max(1);
        let woken: Vec<Waiter> = {
            let mut ws = lock(&self.waiters);
            let k = n.min(ws.list.len());
            let w = ws.list.drain(..k).collect();
            if ws.list.is_empty() {
                self.parked.store(false, Ordering::SeqCst);
            }
            w
        };
        for w in woken {
            w.waker.wake();
        }
    }
}

/// Runs a release when dropped: by the loop's callback, or, if the loop
/// closes before running it, by the callback's drop (nobody is forgotten).
struct Release(Arc<Padded<TxPark>>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.0.release();
    }
}

struct Waiters {
    /// Oldest first.
    list: VecDeque<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    waker: Waker,
}

/// The receiving side of the underlying queue, owned by the `Receiver`.
pub(super) struct Cursor<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Chan<T> {
    /// A channel holding at most `cap` messages (`None`: unbounded), and the
    /// receiver's end of its queue.
    pub(super) fn new(cap: Option<usize>) -> (Chan<T>, Cursor<T>) {
        let (queue, rx) = match cap {
            Some(cap) => {
                let (tx, rx) = mpsc::sync_channel(cap);
                (Queue::Bounded(tx, cap), rx)
            }
            None => {
                let (tx, rx) = mpsc::channel();
                (Queue::Unbounded(tx), rx)
            }
        };
        let chan = Chan {
            queue,
            senders: AtomicUsize::new(1),
            rx_closed: AtomicBool::new(false),
            rx: Padded(RxPark {
                parked: AtomicBool::new(false),
                waker: Mutex::new(None),
            }),
            tx: Arc::new(Padded(TxPark {
                parked: AtomicBool::new(false),
                waiters: Mutex::new(Waiters {
                    list: VecDeque::new(),
                    next_id: 0,
                }),
                freed: AtomicUsize::new(0),
                scheduled: AtomicBool::new(false),
            })),
        };
        (chan, Cursor { rx })
    }

    /// The capacity, `None` when unbounded.
    pub(super) fn capacity(&self) -> Option<usize> {
        match &self.queue {
            Queue::Bounded(_, cap) => Some(*cap),
            Queue::Unbounded(_) => None,
        }
    }

    // ----- senders -----------------------------------------------------------

    /// Sends `v` now, or gives it back.
    pub(super) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        if self.rx_closed.load(Ordering::SeqCst) {
            return Err(TrySendError::Closed(v));
        }
        match &self.queue {
            Queue::Bounded(q, _) => q.try_send(v).map_err(|e| match e {
                mpsc::TrySendError::Full(v) => TrySendError::Full(v),
                mpsc::TrySendError::Disconnected(v) => TrySendError::Closed(v),
            })?,
            // Never blocks: the list grows.
            Queue::Unbounded(q) => q.send(v).map_err(|e| TrySendError::Closed(e.0))?,
        }
        // Enqueued; now read the receiver's flag (handshake).
        fence(Ordering::SeqCst);
        self.wake_rx();
        Ok(())
    }

    /// Wakes the receiver if it is parked.
    fn wake_rx(&self) {
        let rx = &self.rx.0;
        if rx.parked.load(Ordering::Relaxed) && rx.parked.swap(false, Ordering::SeqCst) {
            let w = lock(&rx.waker).take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// One poll of a `send`: sends `v`, or parks the sender as `*id` (an id is
    /// given on first parking) with `waker` and hands `v` back as `Full`.
    pub(super) fn poll_send(
        &self,
        v: T,
        id: &mut Option<u64>,
        waker: &Waker,
    ) -> Result<(), TrySendError<T>> {
        let mut v = v;
        let mut parked = false;
        loop {
            match self.try_send(v) {
                Err(TrySendError::Full(back)) if !parked => {
                    // Park, then try once more: the retry re-reads the slot
                    // after raising `tx.parked`.
                    v = back;
                    if !self.park_sender(id, waker) {
                        return Err(TrySendError::Closed(v));
                    }
                    parked = true;
                }
                Err(TrySendError::Full(back)) => return Err(TrySendError::Full(back)),
                done => {
                    if let Some(id) = id.take() {
                        self.leave(id);
                    }
                    return done;
                }
            }
        }
    }

    /// Puts sender `*id` on the waiter list, or refreshes its waker. `false`
    /// if the receiver is gone (nobody would ever wake us).
    fn park_sender(&self, id: &mut Option<u64>, waker: &Waker) -> bool {
        let tx = &self.tx.0;
        let mut ws = lock(&tx.waiters);
        if self.rx_closed.load(Ordering::SeqCst) {
            return false;
        }
        let mut old = None;
        match *id {
            Some(id) => match ws.list.iter_mut().find(|w| w.id == id) {
                Some(w) if !w.waker.will_wake(waker) => {
                    old = Some(mem::replace(&mut w.waker, waker.clone()));
                }
                Some(_) => {}
                // Woken, but the slot went to someone else: keep our turn.
                None => ws.list.push_front(Waiter {
                    id,
                    waker: waker.clone(),
                }),
            },
            None => {
                let new = ws.next_id;
                ws.next_id += 1;
                *id = Some(new);
                ws.list.push_back(Waiter {
                    id: new,
                    waker: waker.clone(),
                });
            }
        }
        tx.parked.store(true, Ordering::SeqCst);
        drop(ws);
        // Flag raised; the caller now looks at the queue again (handshake).
        fence(Ordering::SeqCst);
        drop(old);
        true
    }

    /// Sender `id` is done (sent or failed): off the list if still on it.
    fn leave(&self, id: u64) {
        let tx = &self.tx.0;
        let mut ws = lock(&tx.waiters);
        let gone = ws
            .list
            .iter()
            .position(|w| w.id == id)
            .and_then(|pos| ws.list.remove(pos));
        if ws.list.is_empty() {
            tx.parked.store(false, Ordering::SeqCst);
        }
        drop(ws);
        drop(gone);
    }

    /// A `send` that parked as `id` is dropped unfinished. Still waiting: it
    /// leaves the list. Already woken for a slot: the next waiter gets that
    /// wake-up instead.
    pub(super) fn cancel_send(&self, id: u64) {
        let tx = &self.tx.0;
        let mut ws = lock(&tx.waiters);
        let (gone, next) = match ws.list.iter().position(|w| w.id == id) {
            Some(pos) => (ws.list.remove(pos), None),
            None => (None, ws.list.pop_front()),
        };
        if ws.list.is_empty() {
            tx.parked.store(false, Ordering::SeqCst);
        }
        drop(ws);
        drop(gone);
        if let Some(w) = next {
            w.waker.wake();
        }
    }

    /// `Sender::clone`.
    pub(super) fn add_sender(&self) {
        self.senders.fetch_add(1, Ordering::Relaxed);
    }

    /// `Sender::drop`: the last one wakes the receiver to see the end.
    pub(super) fn drop_sender(&self) {
        if self.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The count is 0; now read the receiver's flag (handshake).
            fence(Ordering::SeqCst);
            self.wake_rx();
        }
    }

    /// Is the receiving side gone or closed?
    pub(super) fn is_rx_closed(&self) -> bool {
        self.rx_closed.load(Ordering::SeqCst)
    }

    // ----- the receiver ------------------------------------------------------

    /// Takes the next message, if one is there.
    fn pop(&self, c: &mut Cursor<T>) -> Option<T> {
        let v = c.rx.try_recv().ok()?;
        if let Queue::Bounded(..) = self.queue {
            // A slot is free; now read the senders' flag (handshake).
            fence(Ordering::SeqCst);
            if self.tx.0.parked.load(Ordering::Relaxed) {
                self.slot_freed();
            }
        }
        Some(v)
    }

    /// A slot was freed while senders wait. Once half the channel is free
    /// the senders are woken at once (they refill it while the receiver
    /// drains the rest); before that, on a loop thread, the wake-up is
    /// deferred to the end of the loop's current iteration (a `call_soon`
    /// callback): one cross-thread wake-up per batch instead of one per
    /// message, and never later than the receiver's next trip round its
    /// loop. Off a loop (blocking receive) senders are woken at once.
    fn slot_freed(&self) {
        let tx = &self.tx;
        let freed = tx.0.freed.fetch_add(1, Ordering::SeqCst) + 1;
        let cap = self.capacity().unwrap_or(1);
        if freed >= (cap / 2).max(1) {
            // Half the channel is free: wake senders now, so they refill it
            // while we drain the rest (the two loops work in parallel).
            tx.0.release();
            return;
        }
        if tx.0.scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let guard = Release(Arc::clone(tx));
        match crate::runtime::try_running_loop() {
            Some(l) => {
                l.call_soon(move || drop(guard));
            }
            None => drop(guard),
        }
    }

    /// Every sender is gone or the receiver closed: nothing new will come.
    fn ended(&self) -> bool {
        self.senders.load(Ordering::SeqCst) == 0 || self.rx_closed.load(Ordering::SeqCst)
    }

    /// Receives without waiting: `Ready(None)` at the end, `Pending` if
    /// nothing is there now. With a `waker`, a `Pending` leaves it parked.
    pub(super) fn poll_recv(&self, c: &mut Cursor<T>, waker: Option<&Waker>) -> Poll<Option<T>> {
        if let Some(v) = self.pop(c) {
            return Poll::Ready(Some(v));
        }
        if let Some(w) = waker {
            self.park_rx(w);
            // Look again: a send that missed the flag is visible now.
            if let Some(v) = self.pop(c) {
                self.unpark_rx();
                return Poll::Ready(Some(v));
            }
        }
        if self.ended() {
            // What was sent before the last sender left is visible now.
            let v = self.pop(c);
            if waker.is_some() {
                self.unpark_rx();
            }
            return Poll::Ready(v);
        }
        Poll::Pending
    }

    /// Stores the receiver's waker and raises its flag.
    fn park_rx(&self, waker: &Waker) {
        let rx = &self.rx.0;
        let old = {
            let mut slot = lock(&rx.waker);
            match &*slot {
                Some(o) if o.will_wake(waker) => None,
                _ => slot.replace(waker.clone()),
            }
        };
        rx.parked.store(true, Ordering::SeqCst);
        // Flag raised; the caller now looks at the queue again (handshake).
        fence(Ordering::SeqCst);
        drop(old);
    }

    /// Takes the receiver's waker back (a `recv` is dropped or done).
    pub(super) fn unpark_rx(&self) {
        let rx = &self.rx.0;
        rx.parked.store(false, Ordering::SeqCst);
        let old = lock(&rx.waker).take();
        drop(old);
    }

    /// The receiver closes the channel: senders fail from now on and every
    /// parked one wakes to see it. Queued messages stay receivable.
    pub(super) fn close_rx(&self) {
        self.rx_closed.store(true, Ordering::SeqCst);
        let tx = &self.tx.0;
        let waiters = {
            let mut ws = lock(&tx.waiters);
            tx.parked.store(false, Ordering::SeqCst);
            mem::take(&mut ws.list)
        };
        for w in waiters {
            w.waker.wake();
        }
    }

    /// The receiver is dropped: close, then drop every queued message (here,
    /// with none of our locks held).
    pub(super) fn drop_rx(&self, c: &mut Cursor<T>) {
        self.close_rx();
        self.unpark_rx();
        while c.rx.try_recv().is_ok() {}
    }
}
