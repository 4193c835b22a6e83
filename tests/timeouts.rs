//! `timeout` / `timeout_at` / `Timeout::reschedule`, after CPython's
//! `test_timeouts.py` and `test_waitfor.py` (behaviour, not code).
//!
//! Semantics chosen where Rust and asyncio differ:
//! - Expiry drops the inner future (asyncio cancels it): whatever it held is
//!   released, in-flight I/O is cancelled, and no result is lost silently.
//! - A deadline already in the past: the inner future is still polled once.
//!   If it is ready at once its value is returned; if it would wait, the
//!   result is `Err(TimeoutError)` right away. This is asyncio's: with
//!   `asyncio.timeout(past)` the `TimeoutError` comes at the first `await`
//!   that suspends, and `wait_for(done_future, 0)` returns the result.
//! - When the inner future and the deadline become ready in the same loop
//!   iteration, the inner result wins (it is polled first).

mod common;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::on_both;
use uringio::error::TimeoutError;
use uringio::{sleep, sleep_until, timeout, timeout_at};

struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn expiry_cancels_the_inner_future() {
    on_both(10, |_| async {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let t0 = Instant::now();
        let r = timeout(Duration::from_millis(20), async move {
            let _f = DropFlag(d);
            sleep(Duration::from_secs(3600)).await;
            1
        })
        .await;
        assert_eq!(r, Err(TimeoutError));
        assert!(dropped.get(), "the inner future was dropped");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    });
}

#[test]
fn no_expiry_returns_the_value_promptly() {
    on_both(10, |_| async {
        let t0 = Instant::now();
        let r = timeout(Duration::from_secs(10), async {
            sleep(Duration::from_millis(5)).await;
            "value"
        })
        .await;
        assert_eq!(r, Ok("value"));
        assert!(t0.elapsed() < Duration::from_secs(2));
        // The dropped timeout's timer does not keep the loop busy or wake
        // anything later: a plain sleep still takes its time.
        let t1 = Instant::now();
        sleep(Duration::from_millis(10)).await;
        assert!(t1.elapsed() >= Duration::from_millis(10));
    });
}

#[test]
fn nested_inner_expires_first() {
    on_both(10, |_| async {
        let t0 = Instant::now();
        let r = timeout(Duration::from_secs(5), async {
            let inner = timeout(Duration::from_millis(10), sleep(Duration::from_secs(3600))).await;
            assert_eq!(inner, Err(TimeoutError));
            "outer body continued"
        })
        .await;
        assert_eq!(r, Ok("outer body continued"));
        assert!(t0.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn nested_outer_expires_first() {
    on_both(10, |_| async {
        let inner_done = Rc::new(Cell::new(false));
        let dropped = Rc::new(Cell::new(false));
        let (i2, d2) = (inner_done.clone(), dropped.clone());
        let t0 = Instant::now();
        let r = timeout(Duration::from_millis(10), async move {
            let _f = DropFlag(d2);
            let inner = timeout(Duration::from_secs(5), sleep(Duration::from_secs(3600))).await;
            i2.set(true);
            inner
        })
        .await;
        assert_eq!(r, Err(TimeoutError), "the outer timeout fired");
        assert!(!inner_done.get(), "the inner timeout never completed");
        assert!(dropped.get());
        assert!(t0.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn nested_same_deadline_the_inner_one_reports() {
    // Both fire in the same iteration: the inner timeout returns its
    // error to the body, which finishes before the outer one looks.
    on_both(10, |_| async {
        let at = Instant::now() + Duration::from_millis(10);
        let r = timeout_at(at, async move {
            timeout_at(at, sleep(Duration::from_secs(3600))).await
        })
        .await;
        assert_eq!(r, Ok(Err(TimeoutError)));
    });
}

#[test]
fn past_deadline_with_a_pending_future_expires_at_once() {
    on_both(10, |_| async {
        let past = Instant::now() - Duration::from_secs(1);
        let polled = Rc::new(Cell::new(0u32));
        let p = polled.clone();
        let t0 = Instant::now();
        let r = timeout_at(past, async move {
            p.set(p.get() + 1);
            sleep(Duration::from_secs(3600)).await;
        })
        .await;
        assert_eq!(r, Err(TimeoutError));
        assert_eq!(polled.get(), 1, "polled once, up to its first suspension");
        assert!(t0.elapsed() < Duration::from_millis(500));

        // The same for a zero duration, and for a body that only yields.
        let r = timeout(Duration::ZERO, uringio::yield_now()).await;
        assert_eq!(r, Err(TimeoutError));
    });
}

#[test]
fn past_deadline_with_a_ready_future_returns_its_value() {
    on_both(10, |_| async {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(timeout_at(past, async { 5 }).await, Ok(5));
        assert_eq!(timeout(Duration::ZERO, async { 6 }).await, Ok(6));
        // A finished task is ready too.
        let t = uringio::spawn(async { 7 });
        sleep(Duration::from_millis(1)).await;
        assert_eq!(timeout(Duration::ZERO, t).await.map(Result::unwrap), Ok(7));
    });
}

#[test]
fn inner_ready_at_the_deadline_wins() {
    on_both(10, |_| async {
        let at = Instant::now() + Duration::from_millis(10);
        assert_eq!(timeout_at(at, sleep_until(at)).await, Ok(()));
    });
}

#[test]
fn reschedule_extends_and_shortens() {
    on_both(10, |_| async {
        // Extend a deadline that would otherwise expire.
        let mut t = timeout(Duration::from_millis(20), sleep(Duration::from_millis(60)));
        std::future::poll_fn(|cx| {
            assert!(Pin::new(&mut t).poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let later = Instant::now() + Duration::from_secs(5);
        t.reschedule(later);
        assert_eq!(t.deadline(), later);
        let t0 = Instant::now();
        assert_eq!(t.await, Ok(()));
        assert!(t0.elapsed() >= Duration::from_millis(30));

        // Shorten a long one while it waits.
        let mut t = timeout(Duration::from_secs(3600), sleep(Duration::from_secs(3600)));
        std::future::poll_fn(|cx| {
            assert!(Pin::new(&mut t).poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let t0 = Instant::now();
        t.reschedule(Instant::now() + Duration::from_millis(10));
        assert_eq!(t.await, Err(TimeoutError));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(10) && took < Duration::from_secs(2));

        // Into the past: expires at the next poll.
        let mut t = timeout(Duration::from_secs(3600), std::future::pending::<()>());
        t.reschedule(Instant::now() - Duration::from_millis(1));
        assert_eq!(t.await, Err(TimeoutError));
    });
}

#[test]
fn timeout_error_is_an_io_timed_out() {
    let e: std::io::Error = TimeoutError.into();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(e.get_ref().unwrap().is::<TimeoutError>());
    assert!(!TimeoutError.to_string().is_empty());
}

#[test]
fn expired_read_leaves_the_socket_usable() {
    // The timed-out read is cancelled in the driver; a datagram sent later
    // is received by the next read, not swallowed by the cancelled one.
    on_both(10, |_| async {
        let a = uringio::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = uringio::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b_addr = b.local_addr().unwrap();
        let r = timeout(Duration::from_millis(10), b.recv(Vec::with_capacity(64))).await;
        assert!(r.is_err());
        let (res, _) = a.send_to(b"after".to_vec(), b_addr).await;
        res.unwrap();
        let (res, buf) = timeout(Duration::from_secs(5), b.recv(Vec::with_capacity(64)))
            .await
            .expect("the datagram arrives");
        assert_eq!(&buf[..res.unwrap()], b"after");
    });
}

#[test]
fn a_task_cancelled_inside_a_timeout_is_cancelled_not_timed_out() {
    on_both(10, |_| async {
        let t = uringio::spawn(async {
            timeout(Duration::from_secs(3600), sleep(Duration::from_secs(3600))).await
        });
        sleep(Duration::from_millis(5)).await;
        assert!(t.cancel());
        let e = t.await.unwrap_err();
        assert!(e.is_cancelled());
    });
}
