//! Behaviour of `uringio::queue`, after CPython's test_queues.py: order,
//! maxsize, task_done/join, shutdown, cancellation, streams.

mod common;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{run_bounded as run, settle};
use futures_util::StreamExt;
use uringio::error::{QueueFull, QueueShutDown};
use uringio::queue::{GetError, LifoQueue, PriorityQueue, PutError, Queue};
use uringio::{spawn, yield_now};

type Log = Rc<RefCell<Vec<i32>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn fifo_order() {
    run(async {
        let q = Queue::new(0);
        for i in [3, 1, 2] {
            q.put(i).await.unwrap();
        }
        assert_eq!(q.qsize(), 3);
        let mut out = vec![q.get().await.unwrap()];
        out.push(q.get_nowait().unwrap());
        out.push(q.get().await.unwrap());
        assert_eq!(out, vec![3, 1, 2]);
        assert!(q.empty());
    });
}

#[test]
fn lifo_order() {
    run(async {
        let q = LifoQueue::new(0);
        for i in [3, 1, 2] {
            q.put_nowait(i).unwrap();
        }
        let mut out = Vec::new();
        while let Ok(i) = q.get_nowait() {
            out.push(i);
        }
        assert_eq!(out, vec![2, 1, 3]);
    });
}

#[test]
fn priority_order_smallest_first() {
    run(async {
        let q = PriorityQueue::new(0);
        for (p, v) in [(3, "c"), (1, "a"), (4, "d"), (2, "b")] {
            q.put((p, v)).await.unwrap();
        }
        let mut out = Vec::new();
        while !q.empty() {
            out.push(q.get().await.unwrap().1);
        }
        assert_eq!(out, vec!["a", "b", "c", "d"]);
    });
}

#[test]
fn sizes_and_nowait_errors() {
    run(async {
        let q = Queue::new(2);
        assert_eq!(q.maxsize(), 2);
        assert!(q.empty() && !q.full());
        assert_eq!(q.get_nowait(), Err(GetError::Empty));
        q.put_nowait(String::from("a")).unwrap();
        q.put_nowait(String::from("b")).unwrap();
        assert!(q.full());
        assert_eq!(q.qsize(), 2);
        let e = q.put_nowait(String::from("c")).unwrap_err();
        assert!(e.is_full());
        assert_eq!(e.to_string(), QueueFull.to_string());
        assert_eq!(e.into_inner(), "c", "the item comes back");
        assert_eq!(q.qsize(), 2);
        // Unbounded is never full.
        let u = Queue::new(0);
        for i in 0..1000 {
            u.put_nowait(i).unwrap();
        }
        assert!(!u.full());
        assert_eq!(u.qsize(), 1000);
    });
}

#[test]
fn put_waits_while_full() {
    run(async {
        let q = Queue::new(1);
        q.put(0).await.unwrap();
        let t = {
            let q = q.clone();
            spawn(async move { q.put(1).await })
        };
        settle().await;
        assert!(!t.is_finished(), "put must wait while full");
        assert_eq!(q.get().await.unwrap(), 0);
        t.await.unwrap().unwrap();
        assert_eq!(q.get_nowait().unwrap(), 1);
    });
}

#[test]
fn get_waits_for_put() {
    run(async {
        let q: Queue<i32> = Queue::new(0);
        let t = {
            let q = q.clone();
            spawn(async move { q.get().await })
        };
        settle().await;
        assert!(!t.is_finished());
        q.put_nowait(7).unwrap();
        assert_eq!(t.await.unwrap(), Ok(7));
    });
}

#[test]
fn blocked_getters_are_served_fifo() {
    run(async {
        let q = Queue::new(0);
        let order = log();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(spawn(async move {
                let item = q.get().await.unwrap();
                order.borrow_mut().push(i * 10 + item);
            }));
            settle().await;
        }
        for item in 0..4 {
            q.put(item).await.unwrap();
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![0, 11, 22, 33]);
    });
}

#[test]
fn blocked_putters_are_served_fifo() {
    run(async {
        let q = Queue::new(1);
        q.put_nowait(-1).unwrap();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let q = q.clone();
            tasks.push(spawn(async move { q.put(i).await.unwrap() }));
            settle().await;
        }
        let mut out = Vec::new();
        for _ in 0..5 {
            out.push(q.get().await.unwrap());
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(out, vec![-1, 0, 1, 2, 3]);
    });
}

#[test]
fn woken_getter_robbed_by_get_nowait_keeps_its_place() {
    run(async {
        let q = Queue::new(0);
        let order = log();
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(spawn(async move {
                let item = q.get().await.unwrap();
                order.borrow_mut().push(i * 10 + item);
            }));
            settle().await;
        }
        q.put_nowait(1).unwrap(); // wakes getter 0 ...
        assert_eq!(q.get_nowait(), Ok(1)); // ... but we take the item first
        settle().await;
        assert!(order.borrow().is_empty());
        q.put_nowait(2).unwrap();
        q.put_nowait(3).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.borrow(), vec![2, 13]);
    });
}

#[test]
fn cancelled_woken_getter_passes_item_on() {
    run(async {
        let q = Queue::new(0);
        let a = {
            let q = q.clone();
            spawn(async move { q.get().await })
        };
        settle().await;
        let b = {
            let q = q.clone();
            spawn(async move { q.get().await })
        };
        settle().await;
        q.put_nowait(5).unwrap(); // wakes a
        assert!(a.cancel()); // a never runs
        assert_eq!(b.await.unwrap(), Ok(5));
        assert!(a.await.unwrap_err().is_cancelled());
        assert!(q.empty());
    });
}

#[test]
fn cancelled_woken_putter_passes_slot_on() {
    run(async {
        let q = Queue::new(1);
        q.put_nowait(0).unwrap();
        let a = {
            let q = q.clone();
            spawn(async move { q.put(1).await })
        };
        settle().await;
        let b = {
            let q = q.clone();
            spawn(async move { q.put(2).await })
        };
        settle().await;
        assert_eq!(q.get_nowait(), Ok(0)); // wakes a
        assert!(a.cancel());
        b.await.unwrap().unwrap();
        assert_eq!(q.get_nowait(), Ok(2));
        assert!(q.empty());
    });
}

#[test]
fn cancelled_getter_with_timeout() {
    run(async {
        let q: Queue<i32> = Queue::new(0);
        assert!(
            uringio::timeout(Duration::from_millis(10), q.get())
                .await
                .is_err()
        );
        q.put_nowait(1).unwrap();
        assert_eq!(q.get().await, Ok(1));
    });
}

#[test]
fn task_done_and_join() {
    run(async {
        let q = Queue::new(0);
        // Nothing unfinished: join returns at once.
        q.join().await;
        for i in 0..3 {
            q.put_nowait(i).unwrap();
        }
        let worker = {
            let q = q.clone();
            spawn(async move {
                for _ in 0..3 {
                    q.get().await.unwrap();
                    yield_now().await;
                    q.task_done().unwrap();
                }
            })
        };
        let joiners: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                spawn(async move { q.join().await })
            })
            .collect();
        q.join().await;
        assert!(q.empty());
        worker.await.unwrap();
        for j in joiners {
            j.await.unwrap();
        }
    });
}

#[test]
fn join_waits_for_task_done_not_get() {
    run(async {
        let q = Queue::new(0);
        q.put_nowait(1).unwrap();
        q.get_nowait().unwrap();
        let r = uringio::timeout(Duration::from_millis(10), q.join()).await;
        assert!(r.is_err(), "the item was taken but not marked done");
        q.task_done().unwrap();
        q.join().await;
    });
}

#[test]
fn task_done_too_many_times_is_an_error() {
    run(async {
        let q = Queue::new(0);
        assert!(q.task_done().is_err());
        q.put_nowait(1).unwrap();
        q.task_done().unwrap();
        let e = q.task_done().unwrap_err();
        assert!(e.message().contains("too many"));
        let e: io::Error = e.into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn shutdown_wakes_blocked_getters_and_putters() {
    run(async {
        let empty: Queue<i32> = Queue::new(1);
        let getters: Vec<_> = (0..2)
            .map(|_| {
                let q = empty.clone();
                spawn(async move { q.get().await })
            })
            .collect();
        let full = Queue::new(1);
        full.put_nowait(0).unwrap();
        let putters: Vec<_> = (1..3)
            .map(|i| {
                let q = full.clone();
                spawn(async move { q.put(i).await })
            })
            .collect();
        settle().await;
        empty.shutdown(false);
        full.shutdown(false);
        assert!(empty.is_shut_down());
        for g in getters {
            assert_eq!(g.await.unwrap(), Err(QueueShutDown));
        }
        for p in putters {
            assert_eq!(p.await.unwrap(), Err(QueueShutDown));
        }
        // Left-over items still drain, then gets fail.
        assert_eq!(full.qsize(), 1);
        assert_eq!(full.get().await, Ok(0));
        assert_eq!(full.get().await, Err(QueueShutDown));
        assert_eq!(full.get_nowait(), Err(GetError::ShutDown));
    });
}

#[test]
fn put_after_shutdown_fails() {
    run(async {
        let q = Queue::new(0);
        q.put_nowait(1).unwrap();
        q.shutdown(false);
        assert_eq!(q.put(2).await, Err(QueueShutDown));
        match q.put_nowait(3) {
            Err(PutError::ShutDown(3)) => {}
            other => panic!("expected ShutDown(3), got {other:?}"),
        }
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get_nowait(), Ok(1));
        assert_eq!(q.get_nowait(), Err(GetError::ShutDown));
        let e: io::Error = q.put_nowait(4).unwrap_err().into();
        assert!(e.get_ref().unwrap().is::<QueueShutDown>());
    });
}

#[test]
fn shutdown_immediate_empties_queue_and_releases_join() {
    run(async {
        let q = Queue::new(0);
        for i in 0..3 {
            q.put_nowait(i).unwrap();
        }
        let joiner = {
            let q = q.clone();
            spawn(async move { q.join().await })
        };
        settle().await;
        assert!(!joiner.is_finished());
        q.shutdown(true);
        assert!(q.empty());
        joiner.await.unwrap();
        assert_eq!(q.get().await, Err(QueueShutDown));
        assert_eq!(q.get_nowait(), Err(GetError::ShutDown));
        assert!(q.task_done().is_err(), "the drained items count as done");
    });
}

#[test]
fn shutdown_immediate_keeps_join_waiting_for_taken_items() {
    run(async {
        let q = PriorityQueue::new(0);
        q.put_nowait(1).unwrap();
        q.put_nowait(2).unwrap();
        assert_eq!(q.get_nowait(), Ok(1)); // taken, not yet done
        q.shutdown(true);
        let r = uringio::timeout(Duration::from_millis(10), q.join()).await;
        assert!(r.is_err());
        q.task_done().unwrap();
        q.join().await;
    });
}

#[test]
fn shutdown_immediate_wakes_blocked_putters() {
    run(async {
        let q = LifoQueue::new(1);
        q.put_nowait(0).unwrap();
        let p = {
            let q = q.clone();
            spawn(async move { q.put(1).await })
        };
        settle().await;
        q.shutdown(true);
        assert_eq!(p.await.unwrap(), Err(QueueShutDown));
        assert!(q.empty());
    });
}

#[test]
fn stream_yields_items_until_shutdown() {
    run(async {
        let q = Queue::new(2);
        let producer = {
            let q = q.clone();
            spawn(async move {
                for i in 0..10 {
                    q.put(i).await.unwrap();
                }
                q.shutdown(false);
            })
        };
        let items: Vec<i32> = q.stream().collect().await;
        assert_eq!(items, (0..10).collect::<Vec<_>>());
        producer.await.unwrap();
        let mut s = q.stream();
        assert_eq!(s.next().await, None);
        assert!(futures_util::stream::FusedStream::is_terminated(&s));
    });
}

#[test]
fn stream_outlives_the_queue_handle() {
    run(async {
        let q = LifoQueue::new(0);
        for i in 0..3 {
            q.put_nowait(i).unwrap();
        }
        q.shutdown(false);
        let s = q.stream();
        drop(q);
        assert_eq!(s.collect::<Vec<_>>().await, vec![2, 1, 0]);
    });
}

#[test]
fn dropped_stream_passes_wake_up_on() {
    run(async {
        let q = Queue::new(0);
        let a = {
            let q = q.clone();
            spawn(async move {
                let mut s = q.stream();
                s.next().await
            })
        };
        settle().await;
        let b = {
            let q = q.clone();
            spawn(async move { q.get().await })
        };
        settle().await;
        q.put_nowait(9).unwrap();
        assert!(a.cancel());
        assert_eq!(b.await.unwrap(), Ok(9));
    });
}

#[test]
fn get_error_conversions() {
    let e: GetError = uringio::error::QueueEmpty.into();
    assert_eq!(e, GetError::Empty);
    let e: GetError = QueueShutDown.into();
    assert_eq!(e, GetError::ShutDown);
    let io: io::Error = GetError::Empty.into();
    assert_eq!(io.kind(), io::ErrorKind::WouldBlock);
    let full: io::Error = PutError::Full(1).into();
    assert!(full.get_ref().unwrap().is::<QueueFull>());
    assert_eq!(format!("{:?}", PutError::ShutDown(1)), "ShutDown(..)");
}

#[test]
fn no_item_or_wake_up_lost_under_cancellation_churn() {
    run(async {
        let q = Queue::new(2);
        let got = log();
        let consumers: Vec<_> = (0..8)
            .map(|_| {
                let (q, got) = (q.clone(), got.clone());
                spawn(async move {
                    while let Ok(item) = q.get().await {
                        got.borrow_mut().push(item);
                        yield_now().await;
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                spawn(async move {
                    for i in 0..25 {
                        q.put(p * 100 + i).await.unwrap();
                    }
                })
            })
            .collect();
        for (i, c) in consumers.iter().enumerate() {
            yield_now().await;
            if i % 2 == 0 {
                c.cancel();
            }
        }
        for p in producers {
            p.await.unwrap();
        }
        q.shutdown(false);
        for c in consumers {
            let _ = c.await;
        }
        let mut got = got.borrow().clone();
        got.sort();
        let mut want: Vec<i32> = (0..4)
            .flat_map(|p| (0..25).map(move |i| p * 100 + i))
            .collect();
        want.sort();
        assert_eq!(got, want);
    });
}
