//! Runners: `uringio::run` and `Runner`, after CPython's
//! `Lib/test/test_asyncio/test_runners.py` (behaviour, not code).

mod common;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{backends, runner};
use uringio::{Backend, Runner};

/// Sets its flag when dropped: tells when a task's future was dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        String::new()
    }
}

#[test]
fn run_returns_the_value() {
    assert_eq!(uringio::run(async { 42 }), 42);
    let v = uringio::run(async {
        let t = uringio::spawn(async { "from a task".to_string() });
        t.await.unwrap()
    });
    assert_eq!(v, "from a task");
}

#[test]
fn run_cancels_leftover_tasks_before_returning() {
    let dropped = Rc::new(Cell::new(false));
    let started = Rc::new(Cell::new(false));
    let (d, s) = (dropped.clone(), started.clone());
    let t0 = Instant::now();
    uringio::run(async move {
        let task = uringio::spawn(async move {
            let _flag = DropFlag(d);
            s.set(true);
            uringio::sleep(Duration::from_secs(3600)).await;
        });
        task.detach();
        // Let it start.
        uringio::yield_now().await;
        uringio::yield_now().await;
    });
    assert!(started.get(), "the task ran before run() ended");
    assert!(
        dropped.get(),
        "the leftover task's future is dropped before run() returns"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "run() did not wait");
}

#[test]
fn run_cancels_tasks_spawned_while_cancelling() {
    // asyncio.run cancels, then gathers the cancelled tasks; a task that
    // starts another while being cancelled must not outlive run() either.
    let second_dropped = Rc::new(Cell::new(false));
    let sd = second_dropped.clone();
    struct SpawnOnDrop(Option<Rc<Cell<bool>>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            if let Some(flag) = self.0.take() {
                // The flag is set when this (never polled) task's future is
                // dropped.
                let f = DropFlag(flag);
                uringio::spawn(async move {
                    let _f = f;
                    std::future::pending::<()>().await;
                })
                .detach();
            }
        }
    }
    uringio::run(async move {
        uringio::spawn(async move {
            let _g = SpawnOnDrop(Some(sd));
            std::future::pending::<()>().await;
        })
        .detach();
        uringio::yield_now().await;
    });
    assert!(second_dropped.get());
}

#[test]
fn run_propagates_a_panic_and_leaves_the_thread_usable() {
    let r = catch_unwind(|| uringio::run(async { panic!("boom in main") }));
    let p = r.unwrap_err();
    assert!(panic_text(&*p).contains("boom in main"));
    assert!(uringio::try_running_loop().is_none());
    // A new loop runs fine on the same thread.
    assert_eq!(uringio::run(async { 7 }), 7);
}

#[test]
fn runner_is_reusable_and_keeps_its_state() {
    for b in backends() {
        let mut r = runner(b);
        let counter = Rc::new(Cell::new(0u32));
        let c = counter.clone();
        // A task spawned in the first run, left pending, finishes in the
        // second: tasks live as long as the Runner.
        #[allow(clippy::async_yields_async)]
        let task = r.run(async move {
            uringio::spawn(async move {
                for _ in 0..3 {
                    c.set(c.get() + 1);
                    uringio::sleep(Duration::from_millis(5)).await;
                }
                "done"
            })
        });
        let seen_between = counter.get();
        assert!(seen_between <= 3);
        assert_eq!(r.run(task).unwrap(), "done");
        assert_eq!(counter.get(), 3);

        // Callbacks scheduled between runs run in the next one.
        let lp = r.event_loop();
        assert!(!lp.is_running());
        let hit = Rc::new(Cell::new(false));
        let h = hit.clone();
        lp.call_soon(move || h.set(true));
        r.run(async {
            assert!(uringio::get_running_loop().is_running());
            uringio::yield_now().await;
            uringio::yield_now().await;
        });
        assert!(
            hit.get(),
            "call_soon between runs ran in the next run on {b}"
        );
        assert_eq!(r.backend(), b);
    }
}

#[test]
fn runner_drop_cancels_tasks_left_by_earlier_runs() {
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let mut r = Runner::new().unwrap();
    r.run(async move {
        uringio::spawn(async move {
            let _f = DropFlag(d);
            std::future::pending::<()>().await
        })
        .detach();
        uringio::yield_now().await;
    });
    assert!(!dropped.get(), "still alive between runs");
    drop(r);
    assert!(dropped.get(), "dropped with the Runner");
}

#[test]
fn run_forever_until_stop() {
    for b in backends() {
        let mut r = runner(b);
        let lp = r.event_loop();
        let ticks = Rc::new(Cell::new(0u32));
        let t = ticks.clone();
        let lp2 = lp.clone();
        r.run(async move {
            uringio::spawn(async move {
                loop {
                    t.set(t.get() + 1);
                    if t.get() == 5 {
                        lp2.stop();
                    }
                    uringio::sleep(Duration::from_millis(1)).await;
                }
            })
            .detach();
        });
        let t0 = Instant::now();
        r.run_forever();
        assert!(ticks.get() >= 5, "on {b}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!lp.is_running());

        // stop() from a timer callback.
        let lp3 = lp.clone();
        lp.call_later(Duration::from_millis(10), move || lp3.stop());
        let t0 = Instant::now();
        r.run_forever();
        assert!(t0.elapsed() >= Duration::from_millis(10));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn run_forever_stopped_from_another_thread() {
    for b in backends() {
        let mut r = runner(b);
        let h = r.handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.stop();
        });
        let t0 = Instant::now();
        r.run_forever();
        assert!(t0.elapsed() >= Duration::from_millis(15), "on {b}");
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
        let lp = r.event_loop();
        let hit = Rc::new(Cell::new(false));
        let h = hit.clone();
        lp.call_soon(move || h.set(true));
        lp.stop();
        // A watchdog, in case stop() was forgotten.
        let handle = r.handle();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let w = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !d2.load(std::sync::atomic::Ordering::Acquire) {
                if t0.elapsed() > Duration::from_secs(3) {
                    handle.stop();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        });
        r.run_forever();
        done.store(true, std::sync::atomic::Ordering::Release);
        let watchdog_fired = w.join().unwrap();
        assert!(
            !watchdog_fired,
            "stop() before run_forever() was lost on {b}"
        );
        assert!(hit.get(), "the callback ran in that one iteration on {b}");
    }
}

#[test]
fn stop_inside_run_does_not_spin() {
    // stop() only concerns run_forever; inside run(fut) it must not turn
    // the loop into a busy wait until fut completes.
    for b in backends() {
        let mut r = runner(b);
        let enters = r.run(async {
            uringio::get_running_loop().stop();
            let before = uringio::driver::stats().enter_calls;
            uringio::sleep(Duration::from_millis(50)).await;
            uringio::driver::stats().enter_calls - before
        });
        assert!(
            enters < 20,
            "{enters} driver waits during one 50 ms sleep on {b}: the loop spun"
        );
    }
}

#[test]
fn running_a_loop_inside_a_running_loop_panics() {
    let msg = uringio::run(async {
        let r = catch_unwind(AssertUnwindSafe(|| uringio::run(async { 1 })));
        let p = r.unwrap_err();
        // The outer loop is still fine.
        uringio::sleep(Duration::from_millis(1)).await;
        panic_text(&*p)
    });
    assert!(
        msg.contains("another loop is running"),
        "unclear message: {msg:?}"
    );

    // The same with an explicit second Runner.
    let msg = uringio::run(async {
        let mut inner = Runner::new().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| inner.run(async { 1 })));
        panic_text(&*r.unwrap_err())
    });
    assert!(msg.contains("another loop is running"), "{msg:?}");
}

#[test]
fn backend_is_the_one_chosen() {
    for b in backends() {
        let r = Runner::builder().backend(b).build().unwrap();
        assert_eq!(r.backend(), b);
        assert_eq!(r.fallback_reason(), None);
        let lp = r.event_loop();
        assert_eq!(lp.backend(), b);
    }
    let r = Runner::builder().backend(Backend::Auto).build().unwrap();
    assert_ne!(
        r.backend(),
        Backend::Auto,
        "Auto resolves to a real backend"
    );
    if r.backend() == Backend::IoUring {
        assert_eq!(r.fallback_reason(), None);
    } else if common::io_uring_unavailable().is_some() {
        common::assert_io_uring_refused_properly();
    }
}

#[test]
fn auto_falls_back_with_a_reason_but_explicit_io_uring_fails() {
    let r = Runner::builder()
        .backend(Backend::Auto)
        .simulate_setup_error("EPERM")
        .build()
        .unwrap();
    assert_eq!(r.backend(), Backend::Epoll);
    let why = r.fallback_reason().expect("a reason");
    assert!(why.contains("EPERM"), "{why}");
    let mut r = r;
    assert_eq!(r.run(async { 5 }), 5);

    let e = Runner::builder()
        .backend(Backend::IoUring)
        .simulate_setup_error("EPERM")
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);

    // Resource errors surface instead of falling back.
    let e = Runner::builder()
        .backend(Backend::Auto)
        .simulate_setup_error("ENOMEM")
        .build()
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOMEM));
}

#[test]
fn get_running_loop_only_inside_a_loop() {
    assert!(uringio::try_running_loop().is_none());
    let r = catch_unwind(uringio::get_running_loop);
    assert!(panic_text(&*r.unwrap_err()).contains("no uringio loop"));
    uringio::run(async {
        let lp = uringio::get_running_loop();
        assert!(lp.is_running());
    });
    assert!(uringio::try_running_loop().is_none());
}

#[test]
fn run_does_not_wait_for_sleeping_tasks() {
    let t0 = Instant::now();
    uringio::run(async {
        uringio::spawn(uringio::sleep(Duration::from_secs(30))).detach();
        uringio::sleep(Duration::from_millis(5)).await;
    });
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn callbacks_from_before_a_run_and_the_main_future_interleave_in_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut r = Runner::new().unwrap();
    let lp = r.event_loop();
    for i in 0..3 {
        let l = log.clone();
        lp.call_soon(move || l.borrow_mut().push(i));
    }
    let l = log.clone();
    r.run(async move {
        uringio::yield_now().await;
        l.borrow_mut().push(99);
    });
    assert_eq!(*log.borrow(), vec![0, 1, 2, 99]);
}
