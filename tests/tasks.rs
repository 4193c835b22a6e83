//! Tasks: spawn, join, panics, cancellation, detaching, names, introspection,
//! scheduling order and debug mode, after CPython's `test_tasks.py` and
//! `test_base_events.py` (behaviour, not code).

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{on_both, runner};
use uringio::task::{self, TaskState};
use uringio::{Backend, Runner, sleep, spawn, yield_now};

struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

// ---- a logger capturing what debug mode reports ----

struct Capture;

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOGS.lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Trace);
    });
}

fn logged(needle: &str) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

// ---- spawn and join ----

#[test]
fn spawn_and_await() {
    on_both(10, |_| async {
        let t = spawn(async {
            sleep(Duration::from_millis(2)).await;
            40 + 2
        });
        assert!(!t.is_finished());
        assert_eq!(t.await.unwrap(), 42);
        // Tasks spawned from tasks.
        let outer = spawn(async { spawn(async { "inner" }).await.unwrap() });
        assert_eq!(outer.await.unwrap(), "inner");
    });
}

#[test]
fn join_error_on_panic_carries_the_payload() {
    on_both(10, |_| async {
        let t = spawn(async {
            yield_now().await;
            // A formatted message: the payload is a String.
            panic!("task boom {}", std::hint::black_box(7));
        });
        let e = t.await.unwrap_err();
        assert!(e.is_panic());
        assert!(!e.is_cancelled());
        assert_eq!(e.panic_message(), Some("task boom 7"));
        let p = e.into_panic();
        assert_eq!(p.downcast_ref::<String>().unwrap(), "task boom 7");

        // A non-string payload comes back as it was.
        let t = spawn(async { std::panic::panic_any(1234u32) });
        let e = t.await.unwrap_err();
        assert_eq!(e.panic_message(), None);
        assert_eq!(*e.into_panic().downcast::<u32>().unwrap(), 1234);
    });
}

#[test]
fn the_loop_keeps_running_after_a_panic() {
    on_both(10, |_| async {
        let bystander = spawn(async {
            let mut n = 0;
            for _ in 0..5 {
                sleep(Duration::from_millis(1)).await;
                n += 1;
            }
            n
        });
        let bad = spawn(async {
            sleep(Duration::from_millis(2)).await;
            panic!("only this task dies");
        });
        assert!(bad.await.unwrap_err().is_panic());
        assert_eq!(bystander.await.unwrap(), 5);
        // The loop itself still works.
        assert_eq!(spawn(async { 1 }).await.unwrap(), 1);
    });
}

// ---- cancellation ----

#[test]
fn cancel_a_sleeping_task() {
    on_both(10, |_| async {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let t = spawn(async move {
            let _f = DropFlag(d);
            sleep(Duration::from_secs(3600)).await;
            "never"
        });
        sleep(Duration::from_millis(2)).await;
        assert!(!t.is_finished());
        assert!(t.cancel(), "cancel of a pending task returns true");
        // Like asyncio, the cancellation takes effect when the loop gets to
        // the task, not inside cancel().
        yield_now().await;
        assert!(t.is_finished());
        assert!(t.is_cancelled());
        assert!(dropped.get(), "the future was dropped");
        let e = t.await.unwrap_err();
        assert!(e.is_cancelled());
        assert!(!e.is_panic());
    });
}

#[test]
fn cancel_before_the_first_poll() {
    on_both(10, |_| async {
        let polled = Rc::new(Cell::new(false));
        let p = polled.clone();
        let t = spawn(async move { p.set(true) });
        assert!(t.cancel());
        assert!(t.await.unwrap_err().is_cancelled());
        assert!(!polled.get(), "a task cancelled before it ran never runs");
    });
}

#[test]
fn cancel_after_finish_returns_false() {
    on_both(10, |_| async {
        let t = spawn(async { 3 });
        sleep(Duration::from_millis(1)).await;
        assert!(t.is_finished());
        assert!(!t.cancel());
        assert!(!t.is_cancelled());
        assert_eq!(t.await.unwrap(), 3);

        let t = spawn(async { panic!("finished by panicking") });
        sleep(Duration::from_millis(1)).await;
        assert!(!t.cancel());
        assert!(t.await.unwrap_err().is_panic());
    });
}

#[test]
fn cancelling_a_task_does_not_cancel_a_task_it_awaits() {
    // Awaiting a Task and then being dropped only drops the handle, and a
    // dropped handle detaches: unlike asyncio, where cancelling the awaiter
    // cancels the awaited task, the inner task runs on. (Use
    // TaskGroup for structured cancellation.)
    on_both(10, |_| async {
        let inner_done = Rc::new(Cell::new(false));
        let i2 = inner_done.clone();
        let outer = spawn(async move {
            spawn(async move {
                sleep(Duration::from_millis(10)).await;
                i2.set(true);
            })
            .await
            .unwrap();
        });
        sleep(Duration::from_millis(1)).await;
        assert!(outer.cancel());
        assert!(outer.await.unwrap_err().is_cancelled());
        sleep(Duration::from_millis(30)).await;
        assert!(inner_done.get());
    });
}

#[test]
fn dropping_a_task_detaches_it() {
    on_both(10, |_| async {
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let t = spawn(async move {
            sleep(Duration::from_millis(5)).await;
            d.set(true);
        });
        drop(t);
        sleep(Duration::from_millis(30)).await;
        assert!(done.get(), "a detached task still completes");
    });
}

// ---- names, ids, introspection ----

#[test]
fn builder_names_tasks() {
    on_both(10, |_| async {
        let t = task::Builder::new()
            .name("worker-1")
            .spawn(async { task::current_task() });
        assert_eq!(t.name(), Some("worker-1"));
        let id = t.id();
        assert_eq!(t.await.unwrap(), Some(id));
        let unnamed = spawn(async {});
        assert_eq!(unnamed.name(), None);
        unnamed.await.unwrap();
    });
}

#[test]
fn current_task_and_unique_ids() {
    on_both(10, |_| async {
        // The main future of run() is not a task.
        assert_eq!(task::current_task(), None);
        let ts: Vec<_> = (0..10)
            .map(|_| spawn(async { task::current_task() }))
            .collect();
        let mut ids = Vec::new();
        for t in ts {
            let id = t.id();
            assert_eq!(t.await.unwrap(), Some(id));
            ids.push(id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10);
    });
    assert_eq!(task::current_task(), None);
}

#[test]
fn all_tasks_lists_live_tasks_with_names_and_states() {
    on_both(10, |_| async {
        assert!(task::all_tasks().is_empty());
        let a = task::Builder::new()
            .name("sleeper-a")
            .spawn(sleep(Duration::from_secs(3600)));
        let b = task::Builder::new()
            .name("sleeper-b")
            .spawn(sleep(Duration::from_secs(3600)));
        // Not run yet: scheduled.
        let all = task::all_tasks();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|i| i.state == TaskState::Scheduled));
        sleep(Duration::from_millis(1)).await;
        let all = task::all_tasks();
        let mut names: Vec<_> = all.iter().filter_map(|i| i.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["sleeper-a", "sleeper-b"]);
        assert!(all.iter().all(|i| i.state == TaskState::Waiting));
        assert!(all.iter().any(|i| i.id == a.id()));

        // A task looking at itself sees itself running.
        let me = task::Builder::new().name("looker").spawn(async {
            let me = task::current_task().unwrap();
            task::all_tasks()
                .into_iter()
                .find(|i| i.id == me)
                .map(|i| i.state)
        });
        assert_eq!(me.await.unwrap(), Some(TaskState::Running));

        // Finished and cancelled tasks leave the list.
        a.cancel();
        b.cancel();
        let _ = a.await;
        let _ = b.await;
        assert!(task::all_tasks().is_empty());
    });
}

// ---- scheduling order ----

#[test]
fn yield_now_interleaves_in_spawn_order() {
    on_both(10, |_| async {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut ts = Vec::new();
        for name in ["a", "b", "c"] {
            let l = log.clone();
            ts.push(spawn(async move {
                for i in 0..3 {
                    l.borrow_mut().push(format!("{name}{i}"));
                    yield_now().await;
                }
            }));
        }
        for t in ts {
            t.await.unwrap();
        }
        assert_eq!(
            *log.borrow(),
            ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
        );
    });
}

#[test]
fn call_soon_is_fifo_and_runs_after_ready_tasks() {
    on_both(10, |_| async {
        let lp = uringio::get_running_loop();
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let lp2 = lp.clone();
        let t = spawn(async move {
            for i in 0..3 {
                let l2 = l.clone();
                lp2.call_soon(move || l2.borrow_mut().push(format!("cb{i}")));
            }
            let l3 = l.clone();
            // Spawned after the callbacks were queued: as in asyncio (where
            // create_task schedules the first step with call_soon), its
            // first poll comes after them, in the next iteration.
            spawn(async move { l3.borrow_mut().push("task".to_string()) }).detach();
        });
        t.await.unwrap();
        sleep(Duration::from_millis(2)).await;
        assert_eq!(*log.borrow(), ["cb0", "cb1", "cb2", "task"]);

        // A cancelled handle does not run.
        let hit = Rc::new(Cell::new(false));
        let h = hit.clone();
        let handle = lp.call_soon(move || h.set(true));
        handle.cancel();
        sleep(Duration::from_millis(2)).await;
        assert!(!hit.get());
    });
}

#[test]
fn call_later_runs_in_deadline_order() {
    on_both(10, |_| async {
        let lp = uringio::get_running_loop();
        let log = Rc::new(RefCell::new(Vec::new()));
        for (i, ms) in [(0, 15u64), (1, 5), (2, 10), (3, 5)] {
            let l = log.clone();
            lp.call_later(Duration::from_millis(ms), move || l.borrow_mut().push(i));
        }
        let l = log.clone();
        let cancelled = lp.call_later(Duration::from_millis(1), move || l.borrow_mut().push(99));
        cancelled.cancel();
        sleep(Duration::from_millis(40)).await;
        // Equal deadlines keep their insertion order.
        assert_eq!(*log.borrow(), [1, 3, 2, 0]);
    });
}

// ---- unretrieved panics and debug mode ----

#[test]
fn unretrieved_panic_of_a_detached_task_reaches_the_exception_handler() {
    on_both(10, |_| async {
        let lp = uringio::get_running_loop();
        let seen: Rc<RefCell<Vec<uringio::runtime::ExceptionContext>>> = Rc::default();
        let s = seen.clone();
        lp.set_exception_handler(move |ctx| s.borrow_mut().push(ctx.clone()));

        // Detached before it panics.
        let t = task::Builder::new()
            .name("doomed")
            .spawn(async { panic!("nobody is listening") });
        let id = t.id();
        t.detach();
        sleep(Duration::from_millis(2)).await;
        {
            let seen = seen.borrow();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(
                seen[0].panic_message.as_deref(),
                Some("nobody is listening")
            );
            assert_eq!(seen[0].task_id, Some(id));
            assert!(seen[0].message.contains("never retrieved"));
        }

        // Handle dropped after the panic, without awaiting it.
        let t = spawn(async { panic!("dropped unread") });
        sleep(Duration::from_millis(2)).await;
        assert!(t.is_finished());
        drop(t);
        assert_eq!(seen.borrow().len(), 2);
        assert_eq!(
            seen.borrow()[1].panic_message.as_deref(),
            Some("dropped unread")
        );

        // A panic that was awaited is not reported.
        let t = spawn(async { panic!("retrieved") });
        assert!(t.await.is_err());
        sleep(Duration::from_millis(2)).await;
        assert_eq!(seen.borrow().len(), 2);
    });
}

#[test]
fn debug_mode_reports_slow_polls_and_callbacks() {
    capture_logs();
    for b in common::backends() {
        let mut r = Runner::builder()
            .backend(b)
            .debug(true)
            .slow_callback_duration(Duration::from_millis(20))
            .build()
            .unwrap();
        assert!(r.event_loop().get_debug());
        let name = format!("slowpoke-{b}");
        let n2 = name.clone();
        r.run(async move {
            task::Builder::new()
                .name(n2)
                .spawn(async { std::thread::sleep(Duration::from_millis(40)) })
                .await
                .unwrap();
            // A quick task is not reported.
            task::Builder::new()
                .name("quick-one")
                .spawn(async {})
                .await
                .unwrap();
            let lp = uringio::get_running_loop();
            lp.call_soon(|| std::thread::sleep(Duration::from_millis(40)));
            sleep(Duration::from_millis(1)).await;
        });
        let lines = logged(&name);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("WARN"), "{lines:?}");
        assert!(lines[0].contains("took"), "{lines:?}");
        assert!(logged("quick-one").is_empty());
        assert!(!logged("executing a callback took").is_empty());
    }

    // Off by default (unless URINGIO_DEBUG is set); set_debug toggles it.
    if std::env::var_os("URINGIO_DEBUG").is_none() {
        let mut r = runner(Backend::Epoll);
        let lp = r.event_loop();
        assert!(!lp.get_debug());
        r.run(async {
            task::Builder::new()
                .name("slow-but-not-debug")
                .spawn(async { std::thread::sleep(Duration::from_millis(150)) })
                .await
                .unwrap();
        });
        assert!(logged("slow-but-not-debug").is_empty());
        lp.set_debug(true);
        assert!(lp.get_debug());
    }
}

#[test]
fn debug_mode_reports_tasks_pending_at_close() {
    capture_logs();
    let mut r = Runner::builder().debug(true).build().unwrap();
    r.run(async {
        task::Builder::new()
            .name("left-behind-42")
            .spawn(std::future::pending::<()>())
            .detach();
        yield_now().await;
    });
    drop(r);
    assert_eq!(logged("left-behind-42").len(), 1);
}

#[test]
fn many_tasks_finish() {
    on_both(20, |_| async {
        let t0 = Instant::now();
        let n = 10_000;
        let counter = Rc::new(Cell::new(0usize));
        let ts: Vec<_> = (0..n)
            .map(|i| {
                let c = counter.clone();
                spawn(async move {
                    if i % 2 == 0 {
                        yield_now().await;
                    }
                    c.set(c.get() + 1);
                    i
                })
            })
            .collect();
        let mut sum = 0;
        for t in ts {
            sum += t.await.unwrap();
        }
        assert_eq!(counter.get(), n);
        assert_eq!(sum, n * (n - 1) / 2);
        assert!(t0.elapsed() < Duration::from_secs(10));
    });
}

// ---- loop efficiency ----

#[test]
fn a_busy_loop_does_not_enter_the_kernel_every_iteration() {
    on_both(10, |b| async move {
        let before = uringio::driver::stats().enter_calls;
        let rounds = 10_000;
        // The main future of run() yields: one loop iteration each time
        // (ready tasks, by contrast, may be polled again in the same
        // iteration, up to the budget).
        for _ in 0..rounds {
            yield_now().await;
        }
        let enters = uringio::driver::stats().enter_calls - before;
        assert!(
            enters < rounds / 10,
            "{enters} driver parks for {rounds} iterations on {b}"
        );
    });
}

#[test]
fn a_busy_task_does_not_starve_io() {
    on_both(10, |b| async move {
        let busy = spawn(async {
            loop {
                yield_now().await;
            }
        });
        let rx = uringio::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = uringio::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            let (res, _) = tx.send_to(b"x".to_vec(), to).await;
            res.unwrap();
            let (res, _) = rx.recv(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 1);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "100 round trips took {:?} beside a busy task on {b}",
            t0.elapsed()
        );
        busy.cancel();
    });
}

#[test]
fn timers_microseconds_apart_share_a_wake_up() {
    on_both(10, |b| async move {
        let before = uringio::driver::stats().enter_calls;
        // 2,000 sleeps over 20 distinct milliseconds, each deadline a few
        // nanoseconds to microseconds after the previous one.
        let ts: Vec<_> = (0..2_000u64)
            .map(|i| spawn(sleep(Duration::from_millis(1 + i % 20))))
            .collect();
        let t0 = Instant::now();
        for t in ts {
            t.await.unwrap();
        }
        assert!(t0.elapsed() >= Duration::from_millis(19));
        let enters = uringio::driver::stats().enter_calls - before;
        assert!(enters < 200, "{enters} wake-ups for 20 distinct ms on {b}");
    });
}
