//! Thread-per-core launcher: one pinned loop per thread, peers reachable
//! through their `LoopHandle`s.
mod common;

use std::time::Duration;

use common::backends;
use uringio::rt::{Builder, CoreContext};

#[test]
fn launch_runs_one_loop_per_thread_and_returns_in_id_order() {
    for b in backends() {
        let outs = Builder::new()
            .backend(b)
            .thread_per_core(3)
            .pin_cpus(true)
            .launch(move |core: CoreContext| async move {
                assert_eq!(core.peers.len(), 3);
                let backend = uringio::get_running_loop().backend();
                let name = std::thread::current().name().map(str::to_string);
                (core.id, backend, name)
            })
            .unwrap();
        assert_eq!(outs.len(), 3);
        for (i, (id, backend, name)) in outs.into_iter().enumerate() {
            assert_eq!(id, i);
            assert_eq!(backend, b);
            assert_eq!(name.as_deref(), Some(format!("uringio-core-{i}").as_str()));
        }
    }
}

#[test]
fn peers_run_work_for_each_other() {
    for b in backends() {
        // A loop stops serving once its own future is done: each core waits
        // until both have their answer.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let outs = Builder::new()
            .backend(b)
            .thread_per_core(2)
            .launch(move |core: CoreContext| {
                let done = done.clone();
                async move {
                    let other = core.peers[1 - core.id].clone();
                    let me = core.id;
                    // Ask the other loop to sleep a little and say who it is.
                    let remote = other.spawn_with(move || async move {
                        uringio::sleep(Duration::from_millis(5)).await;
                        (me, std::thread::current().name().map(str::to_string))
                    });
                    let answer = uringio::timeout(Duration::from_secs(5), remote)
                        .await
                        .expect("peer answered in time")
                        .expect("peer task finished");
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    uringio::timeout(Duration::from_secs(5), async {
                        while done.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                            uringio::sleep(Duration::from_millis(1)).await;
                        }
                    })
                    .await
                    .expect("both cores answered");
                    answer
                }
            })
            .unwrap();
        assert_eq!(outs[0], (0, Some("uringio-core-1".to_string())));
        assert_eq!(outs[1], (1, Some("uringio-core-0".to_string())));
    }
}

#[test]
fn channels_between_cores() {
    for b in backends() {
        let (tx, rx) = uringio::channel::bounded::<u64>(16);
        let rx = std::sync::Mutex::new(Some(rx));
        let tx = std::sync::Mutex::new(Some(tx));
        let outs = Builder::new()
            .backend(b)
            .thread_per_core(2)
            .launch(move |core: CoreContext| {
                let tx = if core.id == 0 {
                    tx.lock().unwrap().take()
                } else {
                    None
                };
                let rx = if core.id == 1 {
                    rx.lock().unwrap().take()
                } else {
                    None
                };
                async move {
                    if let Some(tx) = tx {
                        for i in 0..10_000u64 {
                            tx.send(i).await.unwrap();
                        }
                        0
                    } else {
                        let mut rx = rx.expect("core 1 has the receiver");
                        let mut sum = 0;
                        while let Some(v) = uringio::timeout(Duration::from_secs(5), rx.recv())
                            .await
                            .unwrap()
                        {
                            sum += v;
                        }
                        sum
                    }
                }
            })
            .unwrap();
        assert_eq!(outs[1], (0..10_000u64).sum::<u64>());
    }
}

#[test]
fn a_panicking_core_is_an_error() {
    let r = Builder::new()
        .backend(uringio::Backend::Epoll)
        .thread_per_core(2)
        .launch(|core: CoreContext| async move {
            if core.id == 1 {
                panic!("core 1 fails");
            }
            core.id
        });
    assert!(r.is_err());
}

#[test]
fn pinned_threads_run_on_their_own_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let outs = Builder::new()
        .backend(uringio::Backend::Epoll)
        .thread_per_core(2)
        .pin_cpus(true)
        .launch(|core: CoreContext| async move {
            let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
            let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect();
            (core.id, allowed)
        })
        .unwrap();
    for (id, allowed) in outs {
        assert_eq!(allowed, vec![id % cpus], "thread {id} pinned to its CPU");
    }
}
