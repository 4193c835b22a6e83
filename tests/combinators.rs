//! `gather`, `gather!`, `wait`, `as_completed`, `shield`.
//! Behaviour ported from CPython's test_tasks.py.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use uringio::future::Promise;
use uringio::task::{ReturnWhen, as_completed, gather, shield, wait};

/// Runs `f` on a fresh loop, failing the test if it takes over 5 s.
fn run_test<F: Future<Output = ()>>(f: F) {
    uringio::run(async {
        uringio::timeout(Duration::from_secs(5), f)
            .await
            .expect("test timed out")
    })
}

/// Yields to the loop `n` times.
async fn yields(n: usize) {
    for _ in 0..n {
        uringio::yield_now().await;
    }
}

/// Yields until `cond` holds (the 5 s test timeout bounds it).
async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        uringio::yield_now().await;
    }
}

// ---- gather ----------------------------------------------------------------

#[test]
fn gather_keeps_input_order() {
    run_test(async {
        let finished = Rc::new(RefCell::new(Vec::new()));
        // The first future finishes last.
        let futs = (0..5).map(|i| {
            let finished = finished.clone();
            async move {
                yields(5 - i).await;
                finished.borrow_mut().push(i);
                i * 10
            }
        });
        assert_eq!(gather(futs).await, [0, 10, 20, 30, 40]);
        assert_eq!(*finished.borrow(), [4, 3, 2, 1, 0]);
    });
}

#[test]
fn gather_runs_concurrently() {
    run_test(async {
        // Each future waits for the next one's signal: only concurrent
        // polling can finish this.
        let promises: Vec<Promise<()>> = (0..4).map(|_| Promise::new()).collect();
        let futs = (0..4).map(|i| {
            let ps = promises.clone();
            async move {
                if i + 1 < ps.len() {
                    ps[i + 1].wait().await.unwrap();
                }
                ps[i].set_result(()).unwrap();
                i
            }
        });
        assert_eq!(gather(futs).await, [0, 1, 2, 3]);
    });
}

#[test]
fn gather_empty() {
    run_test(async {
        let none: Vec<std::future::Ready<u8>> = Vec::new();
        assert!(gather(none).await.is_empty());
    });
}

#[test]
fn gather_borrows() {
    run_test(async {
        let data = [1, 2, 3];
        let total = Cell::new(0);
        let futs = data.iter().map(|x| {
            let total = &total;
            async move {
                uringio::yield_now().await;
                total.set(total.get() + x);
                *x
            }
        });
        assert_eq!(gather(futs).await, [1, 2, 3]);
        assert_eq!(total.get(), 6);
    });
}

#[test]
fn gather_many() {
    run_test(async {
        let futs = (0..2000u32).map(|i| async move {
            yields((i % 7) as usize).await;
            i
        });
        let out = gather(futs).await;
        assert_eq!(out, (0..2000).collect::<Vec<_>>());
    });
}

#[test]
fn gather_of_tasks() {
    run_test(async {
        let tasks: Vec<_> = (0..3).map(|i| uringio::spawn(async move { i })).collect();
        let out: Vec<i32> = gather(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(out, [0, 1, 2]);
    });
}

#[test]
fn gather_propagates_a_panic() {
    run_test(async {
        let t = uringio::spawn(async {
            gather([
                Box::pin(async { 1 }) as std::pin::Pin<Box<dyn Future<Output = i32>>>,
                Box::pin(async { panic!("in gather") }),
            ])
            .await
        });
        let e = t.await.unwrap_err();
        assert!(e.is_panic());
    });
}

#[test]
fn gather_macro_gives_a_tuple() {
    run_test(async {
        let (a, b, c) = uringio::gather!(
            async {
                yields(3).await;
                1u8
            },
            async { "two" },
            async {
                yields(1).await;
                3.0f64
            },
        )
        .await;
        assert_eq!((a, b, c), (1, "two", 3.0));
    });
}

#[test]
fn gather_macro_single_and_task_path() {
    run_test(async {
        let (x,) = uringio::task::gather!(async { 'x' }).await;
        assert_eq!(x, 'x');
    });
}

#[test]
fn gather_macro_runs_concurrently_and_borrows() {
    run_test(async {
        let p: Promise<i32> = Promise::new();
        let log = RefCell::new(Vec::new());
        let (a, ()) = uringio::gather!(
            async {
                let v = p.wait().await.unwrap();
                log.borrow_mut().push("waited");
                v
            },
            async {
                uringio::yield_now().await;
                log.borrow_mut().push("set");
                p.set_result(11).unwrap();
            }
        )
        .await;
        assert_eq!(a, 11);
        assert_eq!(*log.borrow(), ["set", "waited"]);
    });
}

// ---- as_completed ----------------------------------------------------------

#[test]
fn as_completed_yields_in_completion_order() {
    run_test(async {
        let ps: Vec<Promise<usize>> = (0..3).map(|_| Promise::new()).collect();
        let futs = ps.iter().map(|p| {
            let p = p.clone();
            async move { p.wait().await.unwrap() }
        });
        let setter = {
            let ps = ps.clone();
            uringio::spawn(async move {
                for i in [2, 0, 1] {
                    uringio::yield_now().await;
                    ps[i].set_result(i).unwrap();
                }
            })
        };
        let stream = as_completed(futs);
        assert_eq!(futures_core::Stream::size_hint(&stream), (3, Some(3)));
        let order: Vec<usize> = stream.collect().await;
        assert_eq!(order, [2, 0, 1]);
        setter.await.unwrap();
    });
}

#[test]
fn as_completed_by_yields() {
    run_test(async {
        let futs = [3usize, 0, 5, 1].map(|n| async move {
            yields(n).await;
            n
        });
        let order: Vec<usize> = as_completed(futs).collect().await;
        assert_eq!(order, [0, 1, 3, 5]);
    });
}

#[test]
fn as_completed_over_tasks() {
    run_test(async {
        let gate: Promise<()> = Promise::new();
        let g = gate.clone();
        let slow = uringio::spawn(async move {
            g.wait().await.unwrap();
            "slow"
        });
        let fast = uringio::spawn(async { "fast" });
        let mut s = as_completed([slow, fast]);
        assert_eq!(s.next().await.unwrap().unwrap(), "fast");
        gate.set_result(()).unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), "slow");
        assert!(s.next().await.is_none());
    });
}

#[test]
fn as_completed_empty() {
    run_test(async {
        let none: Vec<std::future::Ready<()>> = Vec::new();
        let mut s = as_completed(none);
        assert!(s.next().await.is_none());
    });
}

// ---- wait ------------------------------------------------------------------

/// A task that returns `v` once `gate` is set.
fn gated<T: 'static>(gate: &Promise<()>, v: T) -> uringio::Task<T> {
    let gate = gate.clone();
    uringio::spawn(async move {
        gate.wait().await.unwrap();
        v
    })
}

#[test]
fn wait_all_completed() {
    run_test(async {
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                uringio::spawn(async move {
                    yields(3 - i).await;
                    i
                })
            })
            .collect();
        let (done, pending) = wait(tasks, ReturnWhen::AllCompleted, None).await;
        assert!(pending.is_empty());
        assert_eq!(done.len(), 3);
        let mut vals = Vec::new();
        for t in done {
            vals.push(t.await.unwrap());
        }
        assert_eq!(vals, [0, 1, 2], "done keeps input order");
    });
}

#[test]
fn wait_first_completed() {
    run_test(async {
        let never = Promise::new();
        let soon = Promise::new();
        let tasks = vec![gated(&never, 'a'), gated(&soon, 'b'), gated(&never, 'c')];
        let opener = {
            let soon = soon.clone();
            uringio::spawn(async move {
                yields(2).await;
                soon.set_result(()).unwrap();
            })
        };
        let (done, pending) = wait(tasks, ReturnWhen::FirstCompleted, None).await;
        assert_eq!(done.len(), 1);
        assert_eq!(pending.len(), 2);
        assert!(done[0].is_finished());
        // The pending tasks were not cancelled and still complete.
        assert!(
            pending
                .iter()
                .all(|t| !t.is_finished() && !t.is_cancelled())
        );
        never.set_result(()).unwrap();
        for t in pending {
            assert!(t.await.is_ok());
        }
        // A done task still holds its value.
        let mut done = done;
        assert_eq!(done.pop().unwrap().await.unwrap(), 'b');
        opener.await.unwrap();
    });
}

#[test]
fn wait_first_completed_returns_at_once_if_one_is_done() {
    run_test(async {
        let never = Promise::new();
        let ready = uringio::spawn(async { 1 });
        yields(2).await;
        assert!(ready.is_finished());
        let tasks = vec![gated(&never, 0), ready];
        let (done, pending) = wait(tasks, ReturnWhen::FirstCompleted, None).await;
        assert_eq!((done.len(), pending.len()), (1, 1));
        for t in done {
            assert_eq!(t.await.unwrap(), 1);
        }
        for t in pending {
            t.cancel();
        }
    });
}

#[test]
fn wait_first_exception_on_panic() {
    run_test(async {
        let never = Promise::new();
        let step = Promise::new();
        let ok = gated(&step, 1);
        let s = step.clone();
        let bad = uringio::spawn(async move {
            s.wait().await.unwrap();
            yields(3).await;
            panic!("first exception");
        });
        let blocked = gated(&never, 3);
        let opener = uringio::spawn(async move {
            step.set_result(()).unwrap();
        });
        let (done, pending) = wait(vec![ok, bad, blocked], ReturnWhen::FirstException, None).await;
        assert_eq!(done.len(), 2, "the ok task and the panicked one");
        assert_eq!(pending.len(), 1);
        let mut done = done.into_iter();
        assert_eq!(done.next().unwrap().await.unwrap(), 1);
        assert!(done.next().unwrap().await.unwrap_err().is_panic());
        opener.await.unwrap();
    });
}

#[test]
fn wait_first_exception_on_cancel() {
    run_test(async {
        let never = Promise::new();
        let a = gated(&never, 0);
        let b = gated(&never, 1);
        // The cancel takes effect when the loop next picks `a` up, while
        // `wait` is already waiting.
        assert!(a.cancel());
        let (done, pending) = wait(vec![a, b], ReturnWhen::FirstException, None).await;
        assert_eq!((done.len(), pending.len()), (1, 1));
        assert!(done[0].is_cancelled());
        for t in done {
            assert!(t.await.unwrap_err().is_cancelled());
        }
    });
}

#[test]
fn wait_first_exception_without_exception_waits_for_all() {
    run_test(async {
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                uringio::spawn(async move {
                    yields(i).await;
                    i
                })
            })
            .collect();
        let (done, pending) = wait(tasks, ReturnWhen::FirstException, None).await;
        assert_eq!((done.len(), pending.len()), (3, 0));
    });
}

#[test]
fn wait_timeout_returns_pending_uncancelled() {
    run_test(async {
        let gate = Promise::new();
        let tasks = vec![gated(&gate, 1), gated(&gate, 2)];
        let (done, pending) = wait(
            tasks,
            ReturnWhen::AllCompleted,
            Some(Duration::from_millis(5)),
        )
        .await;
        assert!(done.is_empty());
        assert_eq!(pending.len(), 2);
        assert!(pending.iter().all(|t| !t.is_cancelled()));
        gate.set_result(()).unwrap();
        let mut vals = Vec::new();
        for t in pending {
            vals.push(t.await.unwrap());
        }
        assert_eq!(vals, [1, 2]);
    });
}

#[test]
fn wait_timeout_not_needed() {
    run_test(async {
        let tasks = vec![uringio::spawn(async { 5 })];
        let (done, pending) = wait(
            tasks,
            ReturnWhen::AllCompleted,
            Some(Duration::from_secs(60)),
        )
        .await;
        assert_eq!((done.len(), pending.len()), (1, 0));
    });
}

#[test]
fn wait_empty() {
    run_test(async {
        let (done, pending) = wait(
            Vec::<uringio::Task<()>>::new(),
            ReturnWhen::AllCompleted,
            None,
        )
        .await;
        assert!(done.is_empty() && pending.is_empty());
    });
}

// ---- shield ----------------------------------------------------------------

#[test]
fn shield_passes_the_value_through() {
    run_test(async {
        let v = shield(async {
            yields(2).await;
            "inner"
        })
        .await;
        assert_eq!(v, "inner");
    });
}

#[test]
fn shield_survives_outer_cancellation() {
    run_test(async {
        let gate = Promise::new();
        let finished = Promise::new();
        let (g, f) = (gate.clone(), finished.clone());
        let outer = uringio::spawn(async move {
            shield(async move {
                g.wait().await.unwrap();
                f.set_result(42).unwrap();
            })
            .await
        });
        yields(2).await;
        assert!(outer.cancel());
        assert!(outer.await.unwrap_err().is_cancelled());
        assert!(!finished.done());
        gate.set_result(()).unwrap();
        assert_eq!(finished.wait().await, Ok(42), "the inner work still ran");
    });
}

#[test]
fn shield_survives_outer_timeout() {
    run_test(async {
        let gate = Promise::new();
        let finished = Rc::new(Cell::new(false));
        let (g, f) = (gate.clone(), finished.clone());
        let r = uringio::timeout(
            Duration::from_millis(1),
            shield(async move {
                g.wait().await.unwrap();
                f.set(true);
            }),
        )
        .await;
        assert!(r.is_err());
        gate.set_result(()).unwrap();
        until(|| finished.get()).await;
    });
}

#[test]
fn shield_resumes_a_panic_in_the_awaiter() {
    run_test(async {
        let t = uringio::spawn(async {
            shield(async {
                uringio::yield_now().await;
                panic!("shielded panic");
            })
            .await
        });
        let e = t.await.unwrap_err();
        assert_eq!(e.panic_message(), Some("shielded panic"));
    });
}
