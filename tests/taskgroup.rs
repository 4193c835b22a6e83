//! `TaskGroup` (asyncio.TaskGroup): structured concurrency.
//! Behaviour ported from CPython's test_taskgroups.py.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use common::{run_bounded as run_test, until};
use uringio::error::TaskFailure;
use uringio::future::Promise;
use uringio::task::{GroupTaskError, TaskGroup};

/// Sets its flag when dropped: tells that a task's future was dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A future that never finishes by itself (30 s, far past the test
/// timeout) and raises `flag` when it is dropped.
fn forever<E>(flag: &Rc<Cell<bool>>) -> impl Future<Output = Result<(), E>> + 'static {
    let guard = DropFlag(flag.clone());
    async move {
        let _guard = guard;
        uringio::sleep(Duration::from_secs(30)).await;
        Ok(())
    }
}

#[test]
fn all_tasks_succeed() {
    run_test(async {
        let mut tg = TaskGroup::<String>::new();
        let a = tg.spawn(async {
            uringio::sleep(Duration::from_millis(2)).await;
            Ok(1)
        });
        let b = tg.spawn(async {
            uringio::yield_now().await;
            Ok("two")
        });
        tg.join().await.unwrap();
        assert!(a.is_finished() && b.is_finished());
        assert_ne!(a.id().unwrap(), b.id().unwrap());
        assert_eq!(a.await, Ok(1));
        assert_eq!(b.await, Ok("two"));
    });
}

#[test]
fn empty_group_joins_at_once() {
    run_test(async {
        let mut tg = TaskGroup::<()>::new();
        assert!(tg.is_empty());
        tg.join().await.unwrap();
    });
}

#[test]
fn first_error_cancels_siblings() {
    run_test(async {
        let mut tg = TaskGroup::new();
        let dropped = Rc::new(Cell::new(false));
        let slow = tg.spawn(forever(&dropped));
        let bad = tg.spawn(async {
            uringio::yield_now().await;
            Err::<(), _>("boom")
        });
        let err = tg.join().await.unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err.errors().copied().collect::<Vec<_>>(), ["boom"]);
        assert!(dropped.get(), "the sibling's future was dropped");
        assert_eq!(slow.await, Err(GroupTaskError::Cancelled));
        assert_eq!(bad.await, Err(GroupTaskError::Failed));
    });
}

#[test]
fn errors_in_the_same_step_are_all_collected() {
    run_test(async {
        let mut tg = TaskGroup::new();
        let gate = Promise::new();
        for i in 0..2 {
            let gate = gate.clone();
            tg.spawn(async move {
                gate.wait().await.unwrap();
                Err::<(), _>(i)
            });
        }
        let dropped = Rc::new(Cell::new(false));
        tg.spawn(forever(&dropped));
        tg.spawn(async move {
            uringio::yield_now().await;
            gate.set_result(()).unwrap();
            Ok(())
        });
        let err = tg.join().await.unwrap_err();
        let mut got: Vec<i32> = err.errors().copied().collect();
        got.sort();
        assert_eq!(got, [0, 1]);
        assert!(dropped.get());
    });
}

#[test]
fn panic_is_collected_and_cancels_siblings() {
    run_test(async {
        let mut tg = TaskGroup::<String>::new();
        let dropped = Rc::new(Cell::new(false));
        tg.spawn(forever(&dropped));
        let p = tg.spawn(async {
            uringio::yield_now().await;
            if true {
                panic!("kaboom");
            }
            Ok(())
        });
        let err = tg.join().await.unwrap_err();
        assert_eq!(err.len(), 1);
        match &err.errors[0] {
            TaskFailure::Panic(payload) => {
                assert_eq!(payload.message(), Some("kaboom"));
                assert!(payload.is::<&str>());
            }
            TaskFailure::Error(e) => panic!("expected a panic, got error {e}"),
        }
        assert!(err.to_string().contains("kaboom"));
        assert!(dropped.get());
        assert_eq!(p.await, Err(GroupTaskError::Panicked));
    });
}

#[test]
fn error_and_panic_both_collected() {
    run_test(async {
        let mut tg = TaskGroup::new();
        let gate = Promise::new();
        let g = gate.clone();
        tg.spawn(async move {
            g.wait().await.unwrap();
            Err::<(), _>("plain")
        });
        let g = gate.clone();
        tg.spawn(async move {
            g.wait().await.unwrap();
            panic!("loud");
            #[allow(unreachable_code)]
            Ok(())
        });
        tg.spawn(async move {
            gate.set_result(()).unwrap();
            Ok(())
        });
        let err = tg.join().await.unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err.errors().count(), 1);
        assert!(
            err.errors
                .iter()
                .any(|f| matches!(f, TaskFailure::Panic(_)))
        );
    });
}

#[test]
fn dropping_an_unjoined_group_cancels_its_tasks() {
    run_test(async {
        let dropped = Rc::new(Cell::new(false));
        let tg = TaskGroup::<()>::new();
        let t = tg.spawn(forever::<()>(&dropped));
        uringio::yield_now().await;
        drop(tg);
        until(|| dropped.get()).await;
        assert_eq!(t.await, Err(GroupTaskError::Cancelled));
    });
}

#[test]
fn cancelling_the_joiner_cancels_the_group() {
    run_test(async {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let started = Promise::new();
        let s = started.clone();
        let parent = uringio::spawn(async move {
            let mut tg = TaskGroup::<()>::new();
            tg.spawn(forever(&d));
            s.set_result(()).unwrap();
            tg.join().await
        });
        started.wait().await.unwrap();
        uringio::yield_now().await;
        assert!(parent.cancel());
        assert!(parent.await.unwrap_err().is_cancelled());
        until(|| dropped.get()).await;
    });
}

#[test]
fn timed_out_join_cancels_the_group() {
    run_test(async {
        let dropped = Rc::new(Cell::new(false));
        let mut tg = TaskGroup::<()>::new();
        tg.spawn(forever(&dropped));
        assert!(
            uringio::timeout(Duration::from_millis(1), tg.join())
                .await
                .is_err()
        );
        assert!(tg.is_aborting());
        until(|| dropped.get()).await;
        tg.join().await.unwrap();
    });
}

#[test]
fn spawn_after_failure_is_refused() {
    run_test(async {
        let mut tg = TaskGroup::new();
        tg.spawn(async { Err::<(), _>("first") });
        uringio::yield_now().await;
        uringio::yield_now().await;
        let polled = Rc::new(Cell::new(false));
        let p = polled.clone();
        let late = tg.spawn(async move {
            p.set(true);
            Ok(())
        });
        assert!(late.is_cancelled());
        assert!(late.is_finished());
        assert_eq!(late.id(), None);
        assert_eq!(late.await, Err(GroupTaskError::Cancelled));
        assert!(!polled.get(), "a refused future is never polled");
        assert_eq!(tg.join().await.unwrap_err().len(), 1);
    });
}

#[test]
fn spawn_after_join_is_refused() {
    run_test(async {
        let mut tg = TaskGroup::<()>::new();
        tg.spawn(async { Ok(()) });
        tg.join().await.unwrap();
        let polled = Rc::new(Cell::new(false));
        let p = polled.clone();
        let late = tg.spawn(async move {
            p.set(true);
            Ok(())
        });
        assert_eq!(late.await, Err(GroupTaskError::Cancelled));
        assert!(!polled.get());
        // Joining again is a no-op.
        tg.join().await.unwrap();
    });
}

#[test]
fn cancelling_one_task_does_not_fail_the_group() {
    run_test(async {
        let mut tg = TaskGroup::<()>::new();
        let dropped = Rc::new(Cell::new(false));
        let t = tg.spawn(forever(&dropped));
        let ok = tg.spawn(async {
            uringio::yield_now().await;
            Ok(7)
        });
        uringio::yield_now().await;
        assert!(t.cancel());
        tg.join().await.unwrap();
        assert!(dropped.get());
        assert!(t.is_cancelled());
        assert!(!t.cancel(), "already ended");
        assert_eq!(t.await, Err(GroupTaskError::Cancelled));
        assert_eq!(ok.await, Ok(7));
    });
}

#[test]
fn tasks_can_spawn_siblings_while_join_waits() {
    run_test(async {
        let mut tg = TaskGroup::<()>::new();
        let spawner = tg.spawner();
        let ran = Rc::new(Cell::new(0));
        let r = ran.clone();
        tg.spawn(async move {
            uringio::yield_now().await;
            let r2 = r.clone();
            let child = spawner.spawn(async move {
                uringio::sleep(Duration::from_millis(2)).await;
                r2.set(r2.get() + 1);
                Ok(())
            });
            drop(child);
            r.set(r.get() + 1);
            Ok(())
        });
        tg.join().await.unwrap();
        assert_eq!(ran.get(), 2, "join waited for the late sibling too");
    });
}

#[test]
fn explicit_abort_cancels_tasks() {
    run_test(async {
        let mut tg = TaskGroup::<()>::new();
        let dropped = Rc::new(Cell::new(false));
        tg.spawn(forever(&dropped));
        uringio::yield_now().await;
        tg.abort();
        tg.join().await.unwrap();
        assert!(dropped.get());
    });
}

#[test]
fn nested_group_cancelled_with_its_parent() {
    run_test(async {
        let mut outer = TaskGroup::<&'static str>::new();
        let inner_dropped = Rc::new(Cell::new(false));
        let d = inner_dropped.clone();
        outer.spawn(async move {
            let mut inner = TaskGroup::<&'static str>::new();
            inner.spawn(forever(&d));
            inner.join().await.map_err(|_| "inner failed")
        });
        outer.spawn(async {
            uringio::yield_now().await;
            uringio::yield_now().await;
            Err::<(), _>("outer boom")
        });
        let err = outer.join().await.unwrap_err();
        assert_eq!(err.errors().copied().collect::<Vec<_>>(), ["outer boom"]);
        // Dropping the inner group (with the cancelled outer task) requests
        // the cancellation of its task; the loop carries it out when it next
        // picks that task up, one iteration later.
        uringio::yield_now().await;
        assert!(inner_dropped.get(), "the inner group's task was cancelled");
    });
}

#[test]
fn nested_group_error_propagates() {
    run_test(async {
        let mut outer = TaskGroup::<String>::new();
        outer.spawn(async {
            let mut inner = TaskGroup::new();
            inner.spawn(async { Err::<(), _>(5) });
            inner
                .join()
                .await
                .map_err(|e| format!("inner: {:?}", e.errors().collect::<Vec<_>>()))
        });
        let err = outer.join().await.unwrap_err();
        assert_eq!(
            err.errors().cloned().collect::<Vec<_>>(),
            ["inner: [5]".to_string()]
        );
    });
}
