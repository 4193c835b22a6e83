//! The loop's timer structure: an ordered map from deadline to what to do.
//!
//! No timer costs an SQE: the loop sleeps in its one `io_uring_enter` (or
//! `epoll_wait`) until the earliest deadline, then fires everything due.
//! Keys are `(deadline, sequence)`, so timers with the same deadline fire in
//! the order they were set.
//!
//! The loop wakes on a grid of [`GRANULARITY`] (1 ms, as epoll's timeout and
//! tokio's wheel): [`Timers::next_deadline`] rounds the earliest deadline up
//! to the next grid point, so timers a few microseconds apart fire in one
//! wake-up instead of one each. A timer never fires early; it may fire up to
//! one granularity late.

use std::collections::BTreeMap;
use std::task::Waker;
use std::time::{Duration, Instant};

/// The resolution the loop sleeps with (see the module docs).
pub(crate) const GRANULARITY: Duration = Duration::from_millis(1);

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

pub(crate) struct Timers {
    map: BTreeMap<TimerKey, Entry>,
    seq: u64,
    /// The origin of the wake-up grid.
    origin: Instant,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            map: BTreeMap::new(),
            seq: 0,
            origin: Instant::now(),
        }
    }
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

    /// When the loop should wake for the earliest timer: its deadline
    /// rounded up to the wake-up grid.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let at = self.map.first_key_value()?.0.0;
        let Some(since) = at.checked_duration_since(self.origin) else {
            return Some(at);
        };
        let g = GRANULARITY.as_nanos();
        let up = since.as_nanos().div_ceil(g).saturating_mul(g);
        // Far-future deadlines (past u64 nanoseconds from the origin) are
        // not rounded: the loop only needs to wake no earlier than `at`.
        match u64::try_from(up) {
            Ok(up) => Some(
                self.origin
                    .checked_add(Duration::from_nanos(up))
                    .unwrap_or(at),
            ),
            Err(_) => Some(at),
        }
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
