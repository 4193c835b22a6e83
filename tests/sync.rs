//! Behaviour of `uringio::sync`, after CPython's test_locks.py: FIFO order,
//! cancellation while waiting, notify counts, barrier cycles.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use common::{run_bounded as run, settle};
use uringio::error::BrokenBarrierError;
use uringio::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, Semaphore};
use uringio::{spawn, yield_now};

type Log = Rc<RefCell<Vec<usize>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

// ---------------------------------------------------------------- Lock

#[test]
fn lock_basic() {
    run(async {
        let lock = Lock::new();
        assert!(!lock.locked());
        let g = lock.lock().await;
        assert!(lock.locked());
        assert!(lock.try_lock().is_none());
        drop(g);
        assert!(!lock.locked());
        let g = lock.try_lock().expect("free lock");
        assert!(lock.locked());
        drop(g);
        assert!(!lock.locked());
    });
}

#[test]
fn lock_waiters_are_served_fifo() {
    run(async {
        let lock = Rc::new(Lock::new());
        let order = log();
        let g = lock.lock().await;
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (lock, order) = (lock.clone(), order.clone());
            tasks.push(spawn(async move {
                let _g = lock.lock().await;
                order.borrow_mut().push(i);
                yield_now().await;
            }));
            settle().await;
        }
        drop(g);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4]);
        assert!(!lock.locked());
    });
}

#[test]
fn lock_handed_to_cancelled_waiter_goes_to_next() {
    run(async {
        let lock = Rc::new(Lock::new());
        let order = log();
        let g = lock.lock().await;
        let spawn_waiter = |i| {
            let (lock, order) = (lock.clone(), order.clone());
            spawn(async move {
                let _g = lock.lock().await;
                order.borrow_mut().push(i);
            })
        };
        let a = spawn_waiter(0);
        settle().await;
        let b = spawn_waiter(1);
        settle().await;
        // The release hands the lock to A; A is cancelled before it runs.
        drop(g);
        assert!(lock.locked(), "the lock is on its way to A");
        assert!(a.cancel());
        assert!(a.await.unwrap_err().is_cancelled());
        b.await.unwrap();
        assert_eq!(*order.borrow(), vec![1]);
        assert!(!lock.locked());
    });
}

#[test]
fn lock_cancelled_waiter_leaves_the_line() {
    run(async {
        let lock = Rc::new(Lock::new());
        let order = log();
        let g = lock.lock().await;
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (lock, order) = (lock.clone(), order.clone());
            tasks.push(spawn(async move {
                let _g = lock.lock().await;
                order.borrow_mut().push(i);
            }));
            settle().await;
        }
        tasks[1].cancel();
        settle().await;
        drop(g);
        for t in tasks {
            let _ = t.await;
        }
        assert_eq!(*order.borrow(), vec![0, 2]);
        assert!(!lock.locked());
    });
}

#[test]
fn lock_try_lock_cannot_steal_from_chosen_waiter() {
    run(async {
        let lock = Rc::new(Lock::new());
        let g = lock.lock().await;
        let got = Rc::new(Cell::new(false));
        let t = {
            let (lock, got) = (lock.clone(), got.clone());
            spawn(async move {
                let _g = lock.lock().await;
                got.set(true);
            })
        };
        settle().await;
        drop(g);
        assert!(lock.try_lock().is_none(), "barging try_lock");
        t.await.unwrap();
        assert!(got.get());
        assert!(lock.try_lock().is_some());
    });
}

#[test]
fn lock_timeout_while_waiting_loses_nothing() {
    run(async {
        let lock = Lock::new();
        let g = lock.lock().await;
        let r = uringio::timeout(Duration::from_millis(10), lock.lock()).await;
        assert!(r.is_err());
        drop(g);
        assert!(!lock.locked());
        let _g = lock.lock().await;
    });
}

// ---------------------------------------------------------------- Event

#[test]
fn event_wakes_every_waiter() {
    run(async {
        let ev = Rc::new(Event::new());
        assert!(!ev.is_set());
        let woken = Rc::new(Cell::new(0));
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let (ev, woken) = (ev.clone(), woken.clone());
                spawn(async move {
                    ev.wait().await;
                    woken.set(woken.get() + 1);
                })
            })
            .collect();
        settle().await;
        assert_eq!(woken.get(), 0);
        ev.set();
        assert!(ev.is_set());
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(woken.get(), 3);
        // Already set: returns at once.
        ev.wait().await;
    });
}

#[test]
fn event_clear_after_set_still_releases_notified_waiters() {
    run(async {
        let ev = Rc::new(Event::new());
        let t = {
            let ev = ev.clone();
            spawn(async move { ev.wait().await })
        };
        settle().await;
        ev.set();
        ev.clear();
        assert!(!ev.is_set());
        t.await.unwrap();
        // A new waiter blocks again.
        let r = uringio::timeout(Duration::from_millis(10), ev.wait()).await;
        assert!(r.is_err());
    });
}

#[test]
fn event_cancelled_waiter() {
    run(async {
        let ev = Rc::new(Event::new());
        let a = {
            let ev = ev.clone();
            spawn(async move { ev.wait().await })
        };
        let b = {
            let ev = ev.clone();
            spawn(async move { ev.wait().await })
        };
        settle().await;
        a.cancel();
        settle().await;
        ev.set();
        b.await.unwrap();
        assert!(a.await.unwrap_err().is_cancelled());
    });
}

// ---------------------------------------------------------------- Condition

/// Spawns `n` tasks that wait on `cond` once and count their wake-ups.
fn spawn_cond_waiters(
    cond: &Rc<Condition>,
    n: usize,
    woken: &Rc<Cell<usize>>,
) -> Vec<uringio::Task<()>> {
    (0..n)
        .map(|_| {
            let (cond, woken) = (cond.clone(), woken.clone());
            spawn(async move {
                let g = cond.lock().await;
                let _g = cond.wait(g).await;
                woken.set(woken.get() + 1);
            })
        })
        .collect()
}

#[test]
fn condition_notify_wakes_exactly_n() {
    run(async {
        let cond = Rc::new(Condition::new());
        let woken = Rc::new(Cell::new(0));
        let tasks = spawn_cond_waiters(&cond, 4, &woken);
        settle().await;
        assert_eq!(woken.get(), 0);
        assert!(!cond.locked(), "waiters released the lock");

        let g = cond.lock().await;
        cond.notify(1);
        drop(g);
        settle().await;
        assert_eq!(woken.get(), 1);

        let g = cond.lock().await;
        cond.notify(2);
        drop(g);
        settle().await;
        assert_eq!(woken.get(), 3);

        cond.notify(0);
        settle().await;
        assert_eq!(woken.get(), 3);

        let g = cond.lock().await;
        cond.notify(10);
        drop(g);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(woken.get(), 4);
    });
}

#[test]
fn condition_notify_all_and_fifo() {
    run(async {
        let cond = Rc::new(Condition::new());
        let order = log();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (cond, order) = (cond.clone(), order.clone());
            tasks.push(spawn(async move {
                let g = cond.lock().await;
                let _g = cond.wait(g).await;
                order.borrow_mut().push(i);
            }));
            settle().await;
        }
        let g = cond.lock().await;
        cond.notify_all();
        drop(g);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3]);
    });
}

#[test]
fn condition_wait_reacquires_the_lock() {
    run(async {
        let cond = Rc::new(Condition::new());
        let t = {
            let cond = cond.clone();
            spawn(async move {
                let g = cond.lock().await;
                let g = cond.wait(g).await;
                assert!(cond.locked());
                drop(g);
            })
        };
        settle().await;
        let g = cond.lock().await;
        cond.notify(1);
        settle().await;
        // The waiter is notified but cannot run on until we unlock.
        assert!(!t.is_finished());
        drop(g);
        t.await.unwrap();
        assert!(!cond.locked());
    });
}

#[test]
fn condition_wait_for_predicate() {
    run(async {
        let cond = Rc::new(Condition::new());
        let value = Rc::new(Cell::new(0));
        let t = {
            let (cond, value) = (cond.clone(), value.clone());
            spawn(async move {
                let g = cond.lock().await;
                let _g = cond.wait_for(g, || value.get() >= 3).await;
                value.get()
            })
        };
        for i in 1..=3 {
            settle().await;
            assert!(!t.is_finished());
            let g = cond.lock().await;
            value.set(i);
            cond.notify_all();
            drop(g);
        }
        assert_eq!(t.await.unwrap(), 3);
        // Predicate already true: no waiting at all.
        let g = cond.lock().await;
        let _g = cond.wait_for(g, || true).await;
    });
}

#[test]
fn condition_with_shared_lock() {
    run(async {
        let lock = Rc::new(Lock::new());
        let c1 = Rc::new(Condition::with_lock(lock.clone()));
        let c2 = Condition::with_lock(lock.clone());
        let g = c1.lock().await;
        assert!(lock.locked());
        assert!(c2.locked());
        assert!(c2.try_lock().is_none());
        // A guard taken through one condition can wait on the other.
        let t = {
            let c1 = c1.clone();
            spawn(async move {
                let g = c1.lock().await;
                drop(c1.wait(g).await);
            })
        };
        settle().await;
        // A wait future dropped before it is polled releases the lock.
        drop(c2.wait(g));
        settle().await;
        // The task got the lock, then gave it up to wait on c1.
        assert!(!lock.locked());
        let g = lock.lock().await;
        c1.notify(1);
        drop(g);
        t.await.unwrap();
        assert!(!lock.locked());
    });
}

#[test]
#[should_panic(expected = "different lock")]
fn condition_wait_with_foreign_guard_panics() {
    run(async {
        let cond = Condition::new();
        let other = Lock::new();
        let g = other.lock().await;
        drop(cond.wait(g).await);
    });
}

#[test]
fn condition_notified_then_cancelled_passes_notification_on() {
    run(async {
        let cond = Rc::new(Condition::new());
        let order = log();
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (cond, order) = (cond.clone(), order.clone());
            tasks.push(spawn(async move {
                let g = cond.lock().await;
                let _g = cond.wait(g).await;
                order.borrow_mut().push(i);
            }));
            settle().await;
        }
        cond.notify(1); // chooses waiter 0 ...
        assert!(tasks[0].cancel()); // ... which is cancelled before it runs
        let b = tasks.pop().unwrap();
        b.await.unwrap();
        assert_eq!(*order.borrow(), vec![1]);
        assert!(!cond.locked());
    });
}

#[test]
fn condition_cancelled_while_reacquiring_passes_notification_on() {
    run(async {
        let cond = Rc::new(Condition::new());
        let order = log();
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (cond, order) = (cond.clone(), order.clone());
            tasks.push(spawn(async move {
                let g = cond.lock().await;
                let _g = cond.wait(g).await;
                order.borrow_mut().push(i);
            }));
            settle().await;
        }
        let g = cond.lock().await;
        cond.notify(1);
        settle().await; // waiter 0 now queues for the lock
        assert!(tasks[0].cancel());
        settle().await;
        drop(g);
        let b = tasks.pop().unwrap();
        b.await.unwrap();
        assert_eq!(*order.borrow(), vec![1]);
        assert!(!cond.locked());
    });
}

// ---------------------------------------------------------------- Semaphore

#[test]
fn semaphore_counts() {
    run(async {
        let sem = Semaphore::new(2);
        assert_eq!(sem.available_permits(), 2);
        assert!(!sem.locked());
        let p1 = sem.acquire().await;
        let p2 = sem.try_acquire().expect("second permit");
        assert_eq!(sem.available_permits(), 0);
        assert!(sem.locked());
        assert!(sem.try_acquire().is_none());
        drop(p1);
        assert_eq!(sem.available_permits(), 1);
        p2.forget();
        assert_eq!(sem.available_permits(), 1);
        sem.release();
        sem.release(); // unbounded: past the initial value is fine
        assert_eq!(sem.available_permits(), 3);
        let z = Semaphore::new(0);
        assert!(z.locked());
        let r = uringio::timeout(Duration::from_millis(10), z.acquire()).await;
        assert!(r.is_err());
        assert_eq!(z.available_permits(), 0);
    });
}

#[test]
fn semaphore_waiters_are_served_fifo() {
    run(async {
        let sem = Rc::new(Semaphore::new(0));
        let order = log();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (sem, order) = (sem.clone(), order.clone());
            tasks.push(spawn(async move {
                sem.acquire().await.forget();
                order.borrow_mut().push(i);
            }));
            settle().await;
        }
        sem.release();
        settle().await;
        assert_eq!(*order.borrow(), vec![0]);
        sem.release();
        sem.release();
        sem.release();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3]);
        assert_eq!(sem.available_permits(), 0);
    });
}

#[test]
fn semaphore_permit_handed_to_cancelled_waiter_goes_to_next() {
    run(async {
        let sem = Rc::new(Semaphore::new(1));
        let order = log();
        let p = sem.acquire().await;
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (sem, order) = (sem.clone(), order.clone());
            tasks.push(spawn(async move {
                let _p = sem.acquire().await;
                order.borrow_mut().push(i);
            }));
            settle().await;
        }
        drop(p); // handed to waiter 0
        assert_eq!(sem.available_permits(), 0);
        assert!(sem.try_acquire().is_none(), "barging try_acquire");
        assert!(tasks[0].cancel());
        let b = tasks.pop().unwrap();
        b.await.unwrap();
        assert_eq!(*order.borrow(), vec![1]);
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn semaphore_cancelled_waiter_leaves_the_line() {
    run(async {
        let sem = Rc::new(Semaphore::new(0));
        let a = {
            let sem = sem.clone();
            spawn(async move { sem.acquire().await.forget() })
        };
        settle().await;
        a.cancel();
        settle().await;
        sem.release();
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn bounded_semaphore_release_past_initial_value_fails() {
    run(async {
        let sem = BoundedSemaphore::new(2);
        assert!(sem.release().is_err());
        assert_eq!(sem.available_permits(), 2);
        let p = sem.acquire().await;
        assert_eq!(sem.available_permits(), 1);
        drop(p);
        assert_eq!(sem.available_permits(), 2);
        sem.acquire().await.forget();
        sem.try_acquire().unwrap().forget();
        assert!(sem.locked());
        sem.release().unwrap();
        sem.release().unwrap();
        let e = sem.release().unwrap_err();
        assert!(e.message().contains("too many"));
        assert_eq!(sem.available_permits(), 2);
        // A permit given back by hand already: dropping it keeps the bound.
        let p = sem.acquire().await;
        sem.release().unwrap();
        drop(p);
        assert_eq!(sem.available_permits(), 2);
    });
}

#[test]
fn bounded_semaphore_release_wakes_waiter() {
    run(async {
        let sem = Rc::new(BoundedSemaphore::new(1));
        sem.acquire().await.forget();
        let t = {
            let sem = sem.clone();
            spawn(async move { sem.acquire().await.forget() })
        };
        settle().await;
        sem.release().unwrap();
        t.await.unwrap();
        assert_eq!(sem.available_permits(), 0);
    });
}

// ---------------------------------------------------------------- Barrier

fn spawn_barrier_waiters(
    barrier: &Rc<Barrier>,
    n: usize,
) -> Vec<uringio::Task<Result<usize, BrokenBarrierError>>> {
    (0..n)
        .map(|_| {
            let b = barrier.clone();
            spawn(async move { b.wait().await })
        })
        .collect()
}

#[test]
fn barrier_gives_distinct_indices_each_cycle() {
    run(async {
        let barrier = Rc::new(Barrier::new(3));
        assert_eq!(barrier.parties(), 3);
        for _cycle in 0..3 {
            let tasks = spawn_barrier_waiters(&barrier, 2);
            settle().await;
            assert_eq!(barrier.n_waiting(), 2);
            let mine = barrier.wait().await.unwrap();
            let mut idx = vec![mine];
            for t in tasks {
                idx.push(t.await.unwrap().unwrap());
            }
            idx.sort();
            assert_eq!(idx, vec![0, 1, 2]);
            assert_eq!(barrier.n_waiting(), 0);
        }
        assert!(!barrier.broken());
    });
}

#[test]
fn barrier_indices_follow_arrival_order() {
    run(async {
        let barrier = Rc::new(Barrier::new(4));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.extend(spawn_barrier_waiters(&barrier, 1));
            settle().await;
        }
        assert_eq!(barrier.wait().await, Ok(3));
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Ok(i));
        }
    });
}

#[test]
fn barrier_with_one_party_never_blocks() {
    run(async {
        let barrier = Barrier::new(1);
        assert_eq!(barrier.wait().await, Ok(0));
        assert_eq!(barrier.wait().await, Ok(0));
    });
}

#[test]
fn barrier_abort_breaks_every_waiter() {
    run(async {
        let barrier = Rc::new(Barrier::new(4));
        let tasks = spawn_barrier_waiters(&barrier, 3);
        settle().await;
        assert_eq!(barrier.n_waiting(), 3);
        barrier.abort();
        assert!(barrier.broken());
        for t in tasks {
            assert_eq!(t.await.unwrap(), Err(BrokenBarrierError));
        }
        assert_eq!(barrier.wait().await, Err(BrokenBarrierError));
        assert_eq!(barrier.n_waiting(), 0);
        // Reset makes it usable again.
        barrier.reset();
        assert!(!barrier.broken());
        let tasks = spawn_barrier_waiters(&barrier, 3);
        settle().await;
        assert_eq!(barrier.wait().await, Ok(3));
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
    });
}

#[test]
fn barrier_reset_breaks_current_waiters_only() {
    run(async {
        let barrier = Rc::new(Barrier::new(3));
        let tasks = spawn_barrier_waiters(&barrier, 2);
        settle().await;
        barrier.reset();
        assert!(!barrier.broken());
        assert_eq!(barrier.n_waiting(), 0);
        for t in tasks {
            assert_eq!(t.await.unwrap(), Err(BrokenBarrierError));
        }
        let tasks = spawn_barrier_waiters(&barrier, 2);
        settle().await;
        assert_eq!(barrier.wait().await, Ok(2));
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
    });
}

#[test]
fn barrier_cancelled_waiter_leaves_and_indices_stay_distinct() {
    run(async {
        let barrier = Rc::new(Barrier::new(3));
        let mut tasks = spawn_barrier_waiters(&barrier, 2);
        settle().await;
        assert_eq!(barrier.n_waiting(), 2);
        let first = tasks.remove(0);
        first.cancel();
        settle().await;
        assert_eq!(barrier.n_waiting(), 1);
        tasks.extend(spawn_barrier_waiters(&barrier, 1));
        settle().await;
        assert_eq!(barrier.n_waiting(), 2);
        let mut idx = vec![barrier.wait().await.unwrap()];
        for t in tasks {
            idx.push(t.await.unwrap().unwrap());
        }
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2]);
    });
}

#[test]
fn barrier_released_waiters_keep_their_result_after_abort() {
    run(async {
        let barrier = Rc::new(Barrier::new(2));
        let t = spawn_barrier_waiters(&barrier, 1).pop().unwrap();
        settle().await;
        assert_eq!(barrier.wait().await, Ok(1));
        barrier.abort(); // before the released waiter ran
        assert_eq!(t.await.unwrap(), Ok(0));
    });
}

#[test]
#[should_panic(expected = "parties")]
fn barrier_with_zero_parties_panics() {
    let _ = Barrier::new(0);
}

// ---------------------------------------------------------------- churn

#[test]
fn semaphore_loses_no_permit_under_cancellation_churn() {
    run(async {
        let sem = Rc::new(Semaphore::new(2));
        let done = Rc::new(Cell::new(0));
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (sem, done) = (sem.clone(), done.clone());
            tasks.push(spawn(async move {
                let _p = sem.acquire().await;
                for _ in 0..(i % 3) {
                    yield_now().await;
                }
                done.set(done.get() + 1);
            }));
        }
        // Cancel every third task, at different moments of its life.
        for (i, t) in tasks.iter().enumerate() {
            if i % 3 == 0 {
                t.cancel();
            }
            if i % 4 == 0 {
                yield_now().await;
            }
        }
        let mut cancelled = 0;
        for t in tasks {
            if t.await.is_err() {
                cancelled += 1;
            }
        }
        assert_eq!(done.get() + cancelled, 30);
        assert_eq!(sem.available_permits(), 2);
    });
}

struct Leave(Rc<Cell<bool>>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

#[test]
fn lock_is_free_after_cancellation_churn() {
    run(async {
        let lock = Rc::new(Lock::new());
        let inside = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for i in 0..30 {
            let (lock, inside) = (lock.clone(), inside.clone());
            tasks.push(spawn(async move {
                let _g = lock.lock().await;
                assert!(!inside.replace(true), "two tasks inside the lock");
                // Leaves (before the guard unlocks) even if cancelled here.
                let _leave = Leave(inside);
                for _ in 0..(i % 3) {
                    yield_now().await;
                }
            }));
        }
        for (i, t) in tasks.iter().enumerate() {
            if i % 3 == 1 {
                t.cancel();
            }
            if i % 5 == 0 {
                yield_now().await;
            }
        }
        for t in tasks {
            if let Err(e) = t.await {
                assert!(e.is_cancelled());
            }
        }
        assert!(!lock.locked());
    });
}
