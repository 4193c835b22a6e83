//! Time and the loop's low-level methods on both backends: sleep, timeout,
//! interval, call_soon/call_later/call_at and their handles, stop and
//! run_forever, the cross-thread entry points, run_in_executor and
//! getaddrinfo. Assertions only use lower bounds and orderings, never
//! exact durations.
mod common;

use std::cell::{Cell, RefCell};
use std::future::pending;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{backends, on_both, runner};
use futures_util::StreamExt;
use uringio::error::TimeoutError;

const MS: Duration = Duration::from_millis(1);

/// A shared log of what ran, in order.
#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.borrow_mut().push(s.into());
    }
    fn get(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

#[test]
fn sleep_and_sleep_until() {
    on_both(10, |_| async {
        let t0 = Instant::now();
        uringio::sleep(20 * MS).await;
        assert!(t0.elapsed() >= 20 * MS);

        let target = Instant::now() + 15 * MS;
        let s = uringio::sleep_until(target);
        assert_eq!(s.deadline(), target);
        s.await;
        assert!(Instant::now() >= target);

        // Zero and past deadlines return at once.
        uringio::sleep(Duration::ZERO).await;
        uringio::sleep_until(t0).await;

        // Many sleeps at once wake in deadline order.
        let log = Log::default();
        let tasks: Vec<_> = [30u64, 10, 20, 0, 25]
            .into_iter()
            .map(|ms| {
                let log = log.clone();
                uringio::spawn(async move {
                    uringio::sleep(Duration::from_millis(ms)).await;
                    log.push(ms.to_string());
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.get(), ["0", "10", "20", "25", "30"]);
    });
}

#[test]
fn sleep_reset_moves_the_deadline() {
    on_both(10, |_| async {
        let t0 = Instant::now();
        let mut s = Box::pin(uringio::sleep(Duration::from_secs(3600)));
        // Register the far deadline, then pull it in.
        assert!(futures_util::poll!(s.as_mut()).is_pending());
        s.as_mut().reset(Instant::now() + 10 * MS);
        s.await;
        assert!(t0.elapsed() >= 10 * MS);
        assert!(t0.elapsed() < Duration::from_secs(3000));
    });
}

#[test]
fn timeout_fires_and_drops_the_inner_future() {
    struct SetOnDrop(Rc<Cell<bool>>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    on_both(10, |_| async {
        let dropped = Rc::new(Cell::new(false));
        let guard = SetOnDrop(dropped.clone());
        let t0 = Instant::now();
        let r = uringio::timeout(20 * MS, async move {
            let _g = guard;
            pending::<()>().await;
        })
        .await;
        assert_eq!(r, Err(TimeoutError));
        assert!(t0.elapsed() >= 20 * MS);
        assert!(dropped.get(), "the inner future must be dropped on timeout");

        // The error reads well and converts into io::Error(TimedOut).
        let e: std::io::Error = TimeoutError.into();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(!TimeoutError.to_string().is_empty());
    });
}

#[test]
fn timeout_does_not_fire_when_fast() {
    on_both(10, |_| async {
        let r = uringio::timeout(Duration::from_secs(30), async { 5 }).await;
        assert_eq!(r, Ok(5));
        let r = uringio::timeout(Duration::from_secs(30), async {
            uringio::sleep(5 * MS).await;
            "slept"
        })
        .await;
        assert_eq!(r, Ok("slept"));
        // A ready future wins even with a zero timeout: it is polled first.
        assert_eq!(uringio::timeout(Duration::ZERO, async { 1 }).await, Ok(1));
        // The abandoned timers do not keep anything waiting: a later short
        // sleep still ends on time relative to the 30 s ones.
        let t0 = Instant::now();
        uringio::sleep(5 * MS).await;
        assert!(t0.elapsed() < Duration::from_secs(20));
    });
}

#[test]
fn timeout_at_and_reschedule() {
    on_both(10, |_| async {
        // A deadline in the past: a pending future times out at once.
        let past = Instant::now();
        assert_eq!(
            uringio::timeout_at(past, pending::<()>()).await,
            Err(TimeoutError)
        );
        let deadline = Instant::now() + 15 * MS;
        let t = uringio::timeout_at(deadline, pending::<()>());
        assert_eq!(t.deadline(), deadline);
        assert_eq!(t.await, Err(TimeoutError));
        assert!(Instant::now() >= deadline);

        // reschedule pushes the deadline out.
        let mut t = Box::pin(uringio::timeout(5 * MS, async {
            uringio::sleep(40 * MS).await;
            "done"
        }));
        let later = Instant::now() + Duration::from_secs(20);
        t.as_mut().reschedule(later);
        assert_eq!(t.deadline(), later);
        assert_eq!(t.await, Ok("done"));
    });
}

#[test]
fn interval_ticks_as_a_stream() {
    on_both(10, |_| async {
        let period = 10 * MS;
        let t0 = Instant::now();
        let mut iv = uringio::time::interval(period);
        assert_eq!(iv.period(), period);
        let ticks: Vec<Instant> = (&mut iv).take(5).collect().await;
        assert_eq!(ticks.len(), 5);
        // The first tick is at once; the next ones on the period's grid
        // (scheduled times), never early. On a loaded machine the loop may
        // be late and skip some, so gaps are whole periods, not exactly one.
        assert!(ticks[0] >= t0 && ticks[0] - t0 < period);
        let on_grid = |a: Instant, b: Instant| b > a && (b - a).as_nanos() % period.as_nanos() == 0;
        for w in ticks.windows(2) {
            assert!(on_grid(w[0], w[1]), "{:?}", w[1] - w[0]);
        }
        assert!(Instant::now() >= ticks[4]);
        assert!(t0.elapsed() >= 4 * period);

        // Missed ticks are skipped: after blocking the loop for 5.5
        // periods, the overdue tick comes once and the one after it is in
        // the future again, on the grid.
        let first = iv.tick().await;
        std::thread::sleep(5 * period + period / 2); // block the loop
        let late = iv.tick().await;
        let next = iv.tick().await;
        assert!(on_grid(first, late) && on_grid(late, next));
        assert!(next - first >= 6 * period, "missed ticks were not skipped");
        assert!(Instant::now() >= next);
    });
}

#[test]
#[should_panic(expected = "non-zero")]
fn interval_of_zero_panics() {
    let _ = uringio::time::interval(Duration::ZERO);
}

#[test]
fn call_soon_runs_fifo_after_ready_tasks() {
    on_both(10, |_| async {
        let el = uringio::get_running_loop();
        assert!(el.is_running());
        let log = Log::default();
        for i in 0..10 {
            let log = log.clone();
            el.call_soon(move || log.push(format!("cb{i}")));
        }
        // A task spawned after the callbacks still runs before them: ready
        // tasks go first in an iteration.
        let l = log.clone();
        uringio::spawn(async move { l.push("task") }).detach();
        // A callback that schedules another: that one runs on a later
        // iteration, after those queued before it.
        let (l, el2) = (log.clone(), el.clone());
        el.call_soon(move || {
            l.push("outer");
            let l2 = l.clone();
            el2.call_soon(move || l2.push("inner"));
        });
        let l = log.clone();
        el.call_soon(move || l.push("last"));
        uringio::sleep(5 * MS).await;
        let mut want = vec!["task".to_string()];
        want.extend((0..10).map(|i| format!("cb{i}")));
        want.extend(["outer", "last", "inner"].map(String::from));
        assert_eq!(log.get(), want);
    });
}

#[test]
fn handle_cancel() {
    on_both(10, |_| async {
        let el = uringio::get_running_loop();
        let log = Log::default();
        let l = log.clone();
        let h = el.call_soon(move || l.push("cancelled one"));
        let l = log.clone();
        let _keep = el.call_soon(move || l.push("kept"));
        assert!(!h.cancelled());
        h.cancel();
        assert!(h.cancelled());
        uringio::sleep(2 * MS).await;
        assert_eq!(log.get(), ["kept"]);
    });
}

#[test]
fn call_later_call_at_order_and_timer_handle_cancel() {
    on_both(10, |_| async {
        let el = uringio::get_running_loop();
        let log = Log::default();
        let now = el.time();
        let mk = |s: &'static str| {
            let l = log.clone();
            move || l.push(s)
        };
        el.call_later(30 * MS, mk("30"));
        el.call_later(10 * MS, mk("10"));
        el.call_later(20 * MS, mk("20"));
        // Same deadline: in the order they were set.
        let at = now + 15 * MS;
        el.call_at(at, mk("15a"));
        let h15 = el.call_at(at, mk("15b"));
        assert_eq!(h15.when(), at);
        el.call_at(at, mk("15c"));
        // Cancelled before it is due: never runs.
        let gone = el.call_later(5 * MS, mk("cancelled"));
        assert!(gone.when() >= now + 5 * MS);
        gone.cancel();
        assert!(gone.cancelled());
        // One callback cancelling a later one.
        let victim = el.call_later(25 * MS, mk("victim"));
        let v = victim.clone();
        el.call_later(12 * MS, move || v.cancel());
        // Past deadlines run soon.
        el.call_at(now - 10 * MS, mk("past"));

        uringio::sleep(50 * MS).await;
        assert_eq!(log.get(), ["past", "10", "15a", "15b", "15c", "20", "30"]);
        assert!(el.time() >= now + 30 * MS);
        // Cancelling after it ran is harmless.
        h15.cancel();
    });
}

#[test]
fn stop_and_run_forever() {
    for b in backends() {
        let mut r = runner(b);
        let el = r.event_loop();
        assert!(!el.is_running());
        let log = Log::default();
        // A task spawned in a run() stays on the loop for run_forever().
        let l = log.clone();
        r.run(async move {
            uringio::spawn(async move {
                uringio::sleep(10 * MS).await;
                l.push("task");
                uringio::get_running_loop().stop();
            })
            .detach();
        });
        let l = log.clone();
        let el2 = el.clone();
        el.call_soon(move || {
            assert!(el2.is_running());
            l.push("callback");
        });
        r.run_forever();
        assert!(!el.is_running());
        assert_eq!(log.get(), ["callback", "task"], "{b}");

        // Again, stopped by a timer callback; the loop is reusable.
        let el2 = el.clone();
        el.call_later(5 * MS, move || el2.stop());
        let t0 = Instant::now();
        r.run_forever();
        assert!(t0.elapsed() >= 5 * MS);
        assert_eq!(r.run(async { 7 }), 7);
    }
}

#[test]
fn loop_handle_stop_from_another_thread() {
    for b in backends() {
        let mut r = runner(b);
        let h = r.handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(20 * MS);
            h.stop();
        });
        // Nothing is scheduled: the loop sleeps until the handle wakes it.
        r.run_forever();
        t.join().unwrap();
    }
}

#[test]
fn stop_before_run_forever_runs_one_iteration() {
    // asyncio: "If stop() is called before run_forever() is called, the
    // loop will poll the I/O selector once with a timeout of zero, run all
    // callbacks scheduled ... and then exit."
    for b in backends() {
        let mut r = runner(b);
        let h = r.handle();
        // Safety net so a failure cannot hang the test run.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let guard = std::thread::spawn(move || {
            if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
                h.stop();
            }
        });
        let ran = Rc::new(Cell::new(false));
        let el = r.event_loop();
        let flag = ran.clone();
        el.call_soon(move || flag.set(true));
        el.stop();
        let t0 = Instant::now();
        r.run_forever();
        let took = t0.elapsed();
        let _ = done_tx.send(());
        guard.join().unwrap();
        assert!(ran.get(), "{b}");
        assert!(
            took < Duration::from_secs(1),
            "{b}: run_forever ignored stop()"
        );
    }
}

#[test]
fn loop_handle_stop_outside_run_forever_does_not_spin() {
    for b in backends() {
        let mut r = runner(b);
        r.handle().stop();
        let calls = r.run(async {
            let before = uringio::driver::stats().enter_calls;
            uringio::sleep(50 * MS).await;
            uringio::driver::stats().enter_calls - before
        });
        assert!(calls < 100, "{b}: {calls} driver waits for one 50 ms sleep");
    }
}

#[test]
fn call_soon_threadsafe_wakes_a_sleeping_loop() {
    on_both(10, |_| async {
        let handle = uringio::get_running_loop().handle();
        let loop_thread = std::thread::current().id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t0 = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(30 * MS);
            handle.call_soon_threadsafe(move || {
                let _ = tx.send(std::thread::current().id());
            });
        });
        // Nothing else is scheduled (the on_both timeout is seconds away):
        // only the cross-thread wake-up can end this wait early.
        let ran_on = rx.await.unwrap();
        assert_eq!(ran_on, loop_thread, "the callback runs on the loop thread");
        assert!(t0.elapsed() >= 30 * MS);
        assert!(t0.elapsed() < Duration::from_secs(5));
        uringio::get_running_loop()
            .run_in_executor(move || t.join().unwrap())
            .await;
    });
}

#[test]
fn call_soon_threadsafe_from_many_threads() {
    const THREADS: usize = 4;
    const EACH: usize = 1000;
    on_both(20, |_| async {
        let handle = uringio::get_running_loop().handle();
        let seen: Rc<RefCell<Vec<Vec<usize>>>> = Rc::new(RefCell::new(vec![Vec::new(); THREADS]));
        let done = Arc::new(AtomicUsize::new(0));
        // The callbacks are Send, so they report through a channel the loop
        // drains; per-thread FIFO order must hold.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let handle = handle.clone();
                let tx = tx.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let tx = tx.clone();
                        let done = done.clone();
                        handle.call_soon_threadsafe(move || {
                            tx.send((t, i)).unwrap();
                            done.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        drop(tx);
        for _ in 0..THREADS * EACH {
            let (t, i) = rx.recv().await.unwrap();
            seen.borrow_mut()[t].push(i);
        }
        for (t, v) in seen.borrow().iter().enumerate() {
            assert_eq!(v.len(), EACH);
            assert!(v.windows(2).all(|w| w[0] < w[1]), "thread {t} out of order");
        }
        assert_eq!(done.load(Ordering::Relaxed), THREADS * EACH);
        uringio::get_running_loop()
            .run_in_executor(move || threads.into_iter().for_each(|t| t.join().unwrap()))
            .await;
    });
}

#[test]
fn loop_handle_spawn_from_another_thread() {
    on_both(10, |_| async {
        let handle = uringio::get_running_loop().handle();
        let loop_thread = std::thread::current().id();
        // One RemoteTask awaited by another thread (it blocks on it), one
        // sent back and awaited on this loop.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = std::thread::spawn(move || {
            let r1 = handle.spawn(async move {
                assert_eq!(std::thread::current().id(), loop_thread);
                40 + 2
            });
            let r2 = handle.spawn(async { "from the loop" });
            tx.send(r2).unwrap();
            r1.block()
        });
        let r2 = rx.await.unwrap();
        assert_eq!(r2.await.unwrap(), "from the loop");
        let r1 = uringio::get_running_loop()
            .run_in_executor(move || t.join().unwrap())
            .await;
        assert_eq!(r1.unwrap(), 42);

        // A remote future that panics gives a panic JoinError.
        let handle = uringio::get_running_loop().handle();
        let r = handle.spawn(async {
            panic!("remote boom");
        });
        let err = r.await.unwrap_err();
        assert!(err.is_panic());
    });
}

#[test]
fn remote_task_of_a_closed_loop_is_cancelled() {
    for b in backends() {
        let mut r = runner(b);
        let h = r.handle();
        // Spawned and started, then the loop closes with it pending.
        let started = h.spawn(pending::<()>());
        r.run(async { uringio::sleep(5 * MS).await });
        drop(r);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(started.block().map_err(|e| e.is_cancelled()));
        });
        let res = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(res, Ok(Err(true)), "{b}");
    }
}

#[test]
fn remote_task_never_run_by_a_closed_loop_is_cancelled() {
    for b in backends() {
        let r = runner(b);
        let h = r.handle();
        let never_started = h.spawn(async { 1 });
        drop(r);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(never_started.block().map_err(|e| e.is_cancelled()));
        });
        let res = rx.recv_timeout(Duration::from_secs(2));
        assert_eq!(res, Ok(Err(true)), "{b}: the RemoteTask hangs");
    }
}

#[test]
fn run_in_executor() {
    on_both(10, |_| async {
        let el = uringio::get_running_loop();
        let me = std::thread::current().id();
        let (v, tid) = el
            .run_in_executor(|| (6 * 7, std::thread::current().id()))
            .await;
        assert_eq!(v, 42);
        assert_ne!(tid, me, "runs off the loop thread");

        // Several at once, each blocking: the loop stays free meanwhile.
        let jobs: Vec<_> = (0..8u64)
            .map(|i| {
                el.run_in_executor(move || {
                    std::thread::sleep(20 * MS);
                    i * i
                })
            })
            .collect();
        let ticker = uringio::spawn(async {
            let mut n = 0;
            for _ in 0..3 {
                uringio::sleep(MS).await;
                n += 1;
            }
            n
        });
        let results = futures_util::future::join_all(jobs).await;
        assert_eq!(results, (0..8u64).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(ticker.await.unwrap(), 3);

        // A panic in the job is re-raised where it is awaited.
        let t = uringio::spawn(async {
            uringio::get_running_loop()
                .run_in_executor(|| -> u32 { panic!("in the pool") })
                .await
        });
        let err = t.await.unwrap_err();
        assert!(err.is_panic());
    });
}

#[test]
fn getaddrinfo() {
    on_both(20, |_| async {
        let el = uringio::get_running_loop();
        let addrs = el.getaddrinfo("localhost", 80).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.port() == 80), "{addrs:?}");
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");

        let addrs = el.getaddrinfo("127.0.0.1", 8080).await.unwrap();
        assert_eq!(addrs, ["127.0.0.1:8080".parse().unwrap()]);

        let err = el.getaddrinfo("no-such-host.invalid", 80).await;
        assert!(err.is_err(), "{err:?}");
    });
}

#[test]
fn running_loop_accessors() {
    assert!(uringio::try_running_loop().is_none());
    assert!(std::panic::catch_unwind(uringio::get_running_loop).is_err());
    on_both(10, |b| async move {
        let el = uringio::try_running_loop().expect("inside a loop");
        assert!(el.is_running());
        assert_eq!(el.backend(), b);
        let a = el.time();
        uringio::yield_now().await;
        assert!(el.time() >= a);
        el.set_debug(true);
        assert!(el.get_debug());
        el.set_debug(false);
        assert!(!el.get_debug());
    });
}

#[test]
fn yield_now_interleaves_tasks() {
    on_both(10, |_| async {
        let log = Log::default();
        let tasks: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let log = log.clone();
                uringio::spawn(async move {
                    for i in 0..3 {
                        log.push(format!("{name}{i}"));
                        uringio::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            log.get(),
            ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
        );
    });
}

#[test]
fn yield_now_goes_once_round_the_loop() {
    // asyncio: `loop.call_soon(cb); await asyncio.sleep(0)` runs cb before
    // the task resumes, since the task's next step is queued behind it.
    on_both(10, |b| async move {
        let t = uringio::spawn(async {
            let ran = Rc::new(Cell::new(false));
            let r = ran.clone();
            uringio::get_running_loop().call_soon(move || r.set(true));
            uringio::yield_now().await;
            ran.get()
        });
        assert!(
            t.await.unwrap(),
            "{b}: yield_now returned before the callback ran"
        );
    });
}
