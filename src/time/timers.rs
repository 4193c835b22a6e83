//! The loop's timer structure: an ordered map from deadline to what to do.
//!
//! No timer costs an SQE: the loop sleeps in its one `io_uring_enter` (or
//! `epoll_wait`) until the earliest deadline, then fires everything due.
//! Keys are `(deadline, sequence)`, so timers with the same deadline fire in
//! the order they were set.

use std::collections::BTreeMap;
use std::task::Waker;
use std::time::Instant;

pub(crate) type TimerKey = (Instant, u64);

pub(crate) enum Entry {
    Waker(Option<Waker>),
    Call(Box<dyn FnOnce()>),
}

/// What firing returned: wake these, call those (with the timers released).
pub(crate) enum Due {
    Wake(Waker),
    Call(Box<dyn FnOnce()>),
}

impl Due {
    pub(crate) fn run(self) {
        match self {
            Due::Wake(w) => w.wake(),
            Due::Call(f) => f(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<TimerKey, Entry>,
    seq: u64,
}

impl Timers {
    fn key(&mut self, at: Instant) -> TimerKey {
        self.seq += 1;
        (at, self.seq)
    }

    pub(crate) fn insert_waker(&mut self, at: Instant, w: Waker) -> TimerKey {
        let k = self.key(at);
        self.map.insert(k, Entry::Waker(Some(w)));
        k
    }

    pub(crate) fn insert_call(&mut self, at: Instant, f: Box<dyn FnOnce()>) -> TimerKey {
        let k = self.key(at);
        self.map.insert(k, Entry::Call(f));
        k
    }

    /// Refreshes a timer's waker; false if the timer already fired.
    pub(crate) fn update_waker(&mut self, k: TimerKey, w: &Waker) -> bool {
        match self.map.get_mut(&k) {
            Some(Entry::Waker(slot)) => {
                match slot {
                    Some(old) if old.will_wake(w) => {}
                    _ => *slot = Some(w.clone()),
                }
                true
            }
            Some(Entry::Call(_)) => true,
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, k: TimerKey) -> bool {
        self.map.remove(&k).is_some()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|(k, _)| k.0)
    }

    /// Removes every timer due at `now`, in deadline order.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Entry::Waker(Some(w)) => out.push(Due::Wake(w)),
                Entry::Waker(None) => {}
                Entry::Call(f) => out.push(Due::Call(f)),
            }
        }
        out
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}
