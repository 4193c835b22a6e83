//! `Promise<T>` (asyncio.Future): states, waiting, done-callbacks.
//! Behaviour ported from CPython's test_futures.py.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use common::{run_bounded as run_test, until};
use uringio::error::{CancelledError, InvalidStateError};
use uringio::future::Promise;

#[test]
fn initial_state() {
    run_test(async {
        let p: Promise<i32> = Promise::new();
        assert!(!p.done());
        assert!(!p.cancelled());
        assert_eq!(p.result(), Err(InvalidStateError));
    });
}

#[test]
fn set_result_then_result() {
    run_test(async {
        let p = Promise::new();
        p.set_result(42).unwrap();
        assert!(p.done());
        assert!(!p.cancelled());
        assert_eq!(p.result(), Ok(42));
        // The value can be read again.
        assert_eq!(p.result(), Ok(42));
    });
}

#[test]
fn second_set_result_is_invalid_state() {
    run_test(async {
        let p = Promise::new();
        p.set_result(1).unwrap();
        assert_eq!(p.set_result(2), Err(InvalidStateError));
        assert_eq!(p.result(), Ok(1));
        // Cancelling a done promise does nothing.
        assert!(!p.cancel());
        assert!(!p.cancelled());
    });
}

#[test]
fn cancel_states() {
    run_test(async {
        let p: Promise<String> = Promise::new();
        assert!(p.cancel());
        assert!(p.done());
        assert!(p.cancelled());
        assert_eq!(p.result(), Err(InvalidStateError));
        assert!(!p.cancel(), "second cancel reports false");
        assert_eq!(p.set_result("late".into()), Err(InvalidStateError));
    });
}

#[test]
fn clones_share_state() {
    run_test(async {
        let p = Promise::new();
        let q = p.clone();
        q.set_result('x').unwrap();
        assert_eq!(p.result(), Ok('x'));
    });
}

#[test]
fn many_waiters_each_get_a_clone() {
    run_test(async {
        let p: Promise<Rc<str>> = Promise::new();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                uringio::spawn(async move { p.wait().await })
            })
            .collect();
        uringio::yield_now().await;
        p.set_result("v".into()).unwrap();
        for w in waiters {
            assert_eq!(&*w.await.unwrap().unwrap(), "v");
        }
    });
}

#[test]
fn wait_on_done_promise_returns_at_once() {
    run_test(async {
        let p = Promise::new();
        p.set_result(5u8).unwrap();
        assert_eq!(p.wait().await, Ok(5));
        // A promise is awaitable directly, by value or by reference.
        assert_eq!((&p).await, Ok(5));
        assert_eq!(p.await, Ok(5));
    });
}

#[test]
fn cancel_wakes_waiters_with_cancelled_error() {
    run_test(async {
        let p: Promise<u32> = Promise::new();
        let w = uringio::spawn({
            let p = p.clone();
            async move { p.await }
        });
        uringio::yield_now().await;
        assert!(p.cancel());
        assert_eq!(w.await.unwrap(), Err(CancelledError));
        assert_eq!(p.wait().await, Err(CancelledError));
    });
}

#[test]
fn dropped_waiter_does_not_disturb_others() {
    run_test(async {
        let p: Promise<u32> = Promise::new();
        // This waiter registers, then is dropped by its timeout.
        assert!(
            uringio::timeout(Duration::from_millis(1), p.wait())
                .await
                .is_err()
        );
        let w = uringio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        uringio::yield_now().await;
        p.set_result(9).unwrap();
        assert_eq!(w.await.unwrap(), Ok(9));
    });
}

#[test]
fn callbacks_are_scheduled_not_inline() {
    run_test(async {
        let p = Promise::new();
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        p.add_done_callback(move |p| {
            assert_eq!(p.result(), Ok(3));
            r.set(true);
        });
        p.set_result(3).unwrap();
        assert!(!ran.get(), "callback must not run inside set_result");
        until(|| ran.get()).await;
    });
}

#[test]
fn callbacks_run_in_the_order_added() {
    run_test(async {
        let p = Promise::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        for i in 0..5 {
            let log = log.clone();
            p.add_done_callback(move |_| log.borrow_mut().push(i));
        }
        p.set_result(()).unwrap();
        until(|| log.borrow().len() == 5).await;
        assert_eq!(*log.borrow(), [0, 1, 2, 3, 4]);
    });
}

#[test]
fn callback_added_after_done_is_scheduled() {
    run_test(async {
        let p = Promise::new();
        p.set_result(1).unwrap();
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        p.add_done_callback(move |_| r.set(true));
        assert!(!ran.get(), "callback must not run inside add_done_callback");
        until(|| ran.get()).await;
    });
}

#[test]
fn callbacks_run_on_cancel() {
    run_test(async {
        let p: Promise<i32> = Promise::new();
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        p.add_done_callback(move |p| s.set(Some(p.cancelled())));
        p.cancel();
        until(|| seen.get().is_some()).await;
        assert_eq!(seen.get(), Some(true));
    });
}

#[test]
fn callbacks_run_once() {
    run_test(async {
        let p = Promise::new();
        let count = Rc::new(Cell::new(0));
        let c = count.clone();
        p.add_done_callback(move |_| c.set(c.get() + 1));
        p.set_result(0).unwrap();
        assert!(!p.cancel());
        assert!(p.set_result(1).is_err());
        until(|| count.get() == 1).await;
        for _ in 0..3 {
            uringio::yield_now().await;
        }
        assert_eq!(count.get(), 1);
    });
}

#[test]
fn outside_a_loop_callbacks_run_inline() {
    let p = Promise::new();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    p.add_done_callback(move |_| r.set(true));
    p.set_result(1).unwrap();
    assert!(ran.get());
}

#[test]
fn debug_shows_state() {
    let p: Promise<i32> = Promise::new();
    assert!(format!("{p:?}").contains("pending"));
    p.cancel();
    assert!(format!("{p:?}").contains("cancelled"));
}
