//! Durations and instants too far out for the clock, on both backends:
//! `Duration::MAX` (and `u64::MAX` seconds) in every timer API saturates to
//! `time::FAR_FUTURE` instead of panicking; the timer stays pending and
//! cancellable, a shorter one still wins, and the loop, parked with only a
//! far-future timer, stays responsive. Plus `interval` after a stall.
mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uringio::{get_running_loop, sleep, sleep_until, time, timeout, timeout_at};

const SHORT: Duration = Duration::from_millis(20);
const HUGE: [Duration; 3] = [
    Duration::MAX,
    Duration::from_secs(u64::MAX),
    Duration::from_secs(1 << 40),
];

/// Far-future instants a user could build: as far as the clock goes.
fn far_instants() -> Vec<Instant> {
    let now = Instant::now();
    let mut v = vec![now + time::FAR_FUTURE * 2];
    for secs in [1u64 << 40, 1 << 50, 1 << 62] {
        if let Some(t) = now.checked_add(Duration::from_secs(secs)) {
            v.push(t);
        }
    }
    v
}

#[test]
fn huge_sleep_and_timeout_stay_pending_and_cancel() {
    common::on_both(20, |b| async move {
        for d in HUGE {
            // The short timeout wins; dropping the sleep cancels it.
            assert!(timeout(SHORT, sleep(d)).await.is_err(), "{b} {d:?}");
            assert!(sleep(d).deadline() > Instant::now() + Duration::from_secs(86400));
            assert_eq!(timeout(d, async { 5 }).await, Ok(5), "{b}");
            assert_eq!(timeout(d, sleep(Duration::from_millis(1))).await, Ok(()));
            // A huge timeout around a pending future: the outer short one wins.
            let inner = timeout(d, std::future::pending::<()>());
            assert!(timeout(SHORT, inner).await.is_err(), "{b} {d:?}");
        }
        for t in far_instants() {
            assert!(timeout(SHORT, sleep_until(t)).await.is_err(), "{b}");
            assert_eq!(timeout_at(t, async { 7 }).await, Ok(7));
            let inner = timeout_at(t, std::future::pending::<()>());
            assert!(timeout(SHORT, inner).await.is_err(), "{b}");
        }
    });
}

#[test]
fn huge_call_later_and_call_at_never_fire_and_cancel() {
    common::on_both(20, |b| async move {
        let lp = get_running_loop();
        let fired = Rc::new(Cell::new(0));
        let mut handles = Vec::new();
        for d in HUGE {
            let f = fired.clone();
            let h = lp.call_later(d, move || f.set(f.get() + 1));
            assert!(
                h.when() > Instant::now() + Duration::from_secs(86400),
                "{b}"
            );
            handles.push(h);
        }
        for t in far_instants() {
            let f = fired.clone();
            handles.push(lp.call_at(t, move || f.set(f.get() + 1)));
        }
        // The loop keeps running short timers meanwhile.
        let t0 = Instant::now();
        sleep(SHORT).await;
        assert!(t0.elapsed() < Duration::from_secs(5), "{b}: loop stalled");
        assert_eq!(fired.get(), 0, "{b}");
        for h in &handles {
            h.cancel();
        }
        sleep(Duration::from_millis(2)).await;
        assert_eq!(fired.get(), 0, "{b}");
    });
}

#[test]
fn huge_interval_ticks_once_then_waits() {
    common::on_both(20, |b| async move {
        for d in HUGE {
            let mut iv = time::interval(d);
            let first = iv.tick().await;
            assert!(first <= Instant::now());
            assert!(timeout(SHORT, iv.tick()).await.is_err(), "{b} {d:?}");
        }
    });
}

/// With nothing but far-future timers, the loop parks with a (capped)
/// far-future wait: that must neither fail (an overflowing io_uring
/// timespec, an epoll timeout) nor miss a wake-up from another thread.
#[test]
fn loop_parked_on_far_future_timers_stays_responsive() {
    for b in common::backends() {
        let mut r = common::runner(b);
        let timed_out = Arc::new(AtomicBool::new(false));
        r.run(async {
            let lp = get_running_loop();
            // Only far-future timers are registered from here on.
            let _far = uringio::spawn(sleep(Duration::MAX));
            let _far_cb = lp.call_later(Duration::from_secs(u64::MAX), || {});
            let _far_iv = uringio::spawn(async {
                let mut iv = time::interval(Duration::MAX);
                loop {
                    iv.tick().await;
                }
            });
            let (tx, mut rx) = uringio::channel::bounded::<bool>(2);
            let tx2 = tx.clone();
            // The wake-up, 30 ms from now, from another thread.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let _ = tx.send_blocking(false);
            });
            // The bound on this test: a watchdog, 10 s out.
            let to = timed_out.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(10));
                to.store(true, Ordering::SeqCst);
                let _ = tx2.send_blocking(true);
            });
            let t0 = Instant::now();
            let from_watchdog = rx.recv().await.expect("a message");
            assert!(!from_watchdog, "{b}: the loop slept through the wake-up");
            assert!(t0.elapsed() < Duration::from_secs(5), "{b}");
            // And timers still work after that park.
            let t0 = Instant::now();
            sleep(Duration::from_millis(5)).await;
            assert!(t0.elapsed() < Duration::from_secs(5), "{b}");
        });
        assert!(!timed_out.load(Ordering::SeqCst), "{b}: watchdog fired");
    }
}

/// After a stall the interval fires one late tick, then goes back to its
/// grid in the future (missed ticks skipped, no burst), also with a period
/// so small that a stall spans millions of them.
#[test]
fn interval_after_a_stall_skips_without_bursting() {
    common::on_both(20, |b| async move {
        for period in [Duration::from_nanos(1), Duration::from_millis(1)] {
            let mut iv = time::interval(period);
            iv.tick().await;
            // A stall of the whole thread: millions of 1 ns periods missed
            // (too few to wrap a u32: the unit test in src/time covers
            // that), and the skip rule is the same.
            std::thread::sleep(Duration::from_millis(20));
            // Each tick's successor is computed while it is handed out, so
            // it lies after the moment that tick was asked for: the ticks
            // after the late one are never a burst of ticks in the past.
            let mut asked = Instant::now();
            let late = iv.tick().await;
            assert!(late < asked, "{b}: the late tick is the missed one");
            for _ in 0..20 {
                let before = Instant::now();
                let at = iv.tick().await;
                assert!(at > asked, "{b} {period:?}: a tick scheduled in the past");
                asked = before;
            }
        }
    });
}
