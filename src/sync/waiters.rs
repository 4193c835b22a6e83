//! A FIFO list of parked tasks, shared by every primitive in [`sync`](super)
//! and [`queue`](crate::queue).
//!
//! # State machine of one waiter
//! ```text
//!   push ──► Waiting(waker) ──notify(value)──► Notified(value) ──poll──► removed, value returned
//!                 │                                   │
//!               remove                              remove
//!                 ▼                                   ▼
//!        removed, None: nothing lost        removed, Some(value): the caller
//!                                           must pass the wake-up on
//! ```
//! A waiter is a node in a [`Slab`], linked into a doubly linked list while it
//! waits, so pushing, notifying the head and removing a cancelled waiter are
//! all O(1). The key a waiting future holds stays valid (and is not reused)
//! until that future itself removes the node, by polling it after it was
//! notified or by being dropped. A notified node is unlinked from the list but
//! keeps the value it was handed (a lock, a permit, a barrier index): this is
//! what makes direct hand-off cancellation-safe, because a future dropped
//! after it was chosen gets that value back from [`WaitList::remove`] and
//! gives it to the next waiter.
//!
//! Notifying returns the waker instead of calling it, so callers wake tasks
//! only after releasing their `RefCell` borrow: waking (or dropping a waker)
//! then can never re-enter a borrowed primitive.

use std::task::Waker;

use slab::Slab;

enum Slot<T> {
    Waiting(Waker),
    Notified(T),
}

struct Node<T> {
    prev: Option<usize>,
    next: Option<usize>,
    slot: Slot<T>,
}

/// FIFO list of waiters, each one handed a `T` when it is chosen.
pub(crate) struct WaitList<T> {
    nodes: Slab<Node<T>>,
    head: Option<usize>,
    tail: Option<usize>,
    waiting: usize,
}

impl<T> WaitList<T> {
    /// An empty list.
    pub(crate) fn new() -> Self {
        WaitList {
            nodes: Slab::new(),
            head: None,
            tail: None,
            waiting: 0,
        }
    }

    /// How many waiters are still waiting (notified ones not counted).
    pub(crate) fn len(&self) -> usize {
        self.waiting
    }

    /// Parks a new waiter at the back of the line; returns its key.
    pub(crate) fn push_back(&mut self, waker: Waker) -> usize {
        let key = self.nodes.insert(Node {
            prev: self.tail,
            next: None,
            slot: Slot::Waiting(waker),
        });
        match self.tail {
            Some(t) => self.nodes[t].next = Some(key),
            None => self.head = Some(key),
        }
        self.tail = Some(key);
        self.waiting += 1;
        key
    }

    /// Parks a waiter at the front of the line: for a waiter that was woken
    /// but found its resource taken, so it keeps its place.
    pub(crate) fn push_front(&mut self, waker: Waker) -> usize {
        let key = self.nodes.insert(Node {
            prev: None,
            next: self.head,
            slot: Slot::Waiting(waker),
        });
        match self.head {
            Some(h) => self.nodes[h].prev = Some(key),
            None => self.tail = Some(key),
        }
        self.head = Some(key);
        self.waiting += 1;
        key
    }

    /// Polls waiter `key`: its value if it was notified (the node is then
    /// freed and `key` must not be used again), else refreshes its waker.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker) -> Option<T> {
        match &mut self.nodes[key].slot {
            Slot::Waiting(w) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
                None
            }
            Slot::Notified(_) => match self.nodes.remove(key).slot {
                Slot::Notified(v) => Some(v),
                Slot::Waiting(_) => None,
            },
        }
    }

    /// Removes waiter `key` (its future is being dropped). Returns the value
    /// it had been handed, if it was already notified: the caller passes it on.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        if matches!(self.nodes[key].slot, Slot::Waiting(_)) {
            self.unlink(key);
        }
        match self.nodes.remove(key).slot {
            Slot::Notified(v) => Some(v),
            Slot::Waiting(_) => None,
        }
    }

    /// Hands `value` to the first waiter and returns its waker (call it after
    /// releasing any borrow), or gives `value` back if nobody waits.
    pub(crate) fn notify_one(&mut self, value: T) -> Result<Waker, T> {
        let Some(key) = self.head else {
            return Err(value);
        };
        self.unlink(key);
        match std::mem::replace(&mut self.nodes[key].slot, Slot::Notified(value)) {
            Slot::Waiting(w) => Ok(w),
            // Only waiting nodes are linked.
            Slot::Notified(_) => unreachable!("a notified waiter was still linked"),
        }
    }

    /// Notifies every waiter, front first; `value(i)` is what the `i`-th one
    /// gets. Returns their wakers, in the same order.
    pub(crate) fn notify_all(&mut self, mut value: impl FnMut(usize) -> T) -> Vec<Waker> {
        let mut wakers = Vec::with_capacity(self.waiting);
        let mut i = 0;
        while let Ok(w) = self.notify_one(value(i)) {
            wakers.push(w);
            i += 1;
        }
        wakers
    }

    fn unlink(&mut self, key: usize) {
        let (prev, next) = {
            let n = &mut self.nodes[key];
            (n.prev.take(), n.next.take())
        };
        match prev {
            Some(p) => self.nodes[p].next = next,
            None => self.head = next,
        }
        match next {
            Some(n) => self.nodes[n].prev = prev,
            None => self.tail = prev,
        }
        self.waiting -= 1;
    }
}

/// Wakes every waker in `wakers` (after the caller released its borrows).
pub(crate) fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_removal() {
        let w = Waker::noop();
        let mut l = WaitList::<u32>::new();
        let a = l.push_back(w.clone());
        let b = l.push_back(w.clone());
        let c = l.push_back(w.clone());
        assert_eq!(l.len(), 3);
        assert_eq!(l.remove(b), None);
        assert!(l.notify_one(1).is_ok());
        assert_eq!(l.poll(c, w), None);
        assert_eq!(l.poll(a, w), Some(1));
        assert!(l.notify_one(2).is_ok());
        assert!(l.notify_one(3).is_err());
        assert_eq!(l.remove(c), Some(2));
        let d = l.push_back(w.clone());
        let e = l.push_front(w.clone());
        let ws = l.notify_all(|i| i as u32 * 10);
        assert_eq!(ws.len(), 2);
        assert_eq!(l.poll(e, w), Some(0));
        assert_eq!(l.poll(d, w), Some(10));
        assert_eq!(l.len(), 0);
    }
}
