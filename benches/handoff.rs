//! Cross-core hand-off: the cost of waking another loop, by wake path.
//!
//! Two loops, one per thread, pinned to CPU 0 and CPU 1, pass closures
//! back and forth with `LoopHandle::call_soon_threadsafe`: a closure run
//! on loop A queues one on loop B, which queues the next on A, and so on
//! (a round trip is two hand-offs). `HANDOFF_CHAINS` such chains run at
//! once (default `1,32`): with one, every hand-off finds the other loop
//! parked and must wake it; with more, wake-ups batch.
//!
//! Paths compared, round-robin:
//! - `msg-ring`: io_uring loops waking each other with `IORING_OP_MSG_RING`
//!   (a CQE posted into the other ring, sent with the sender's next
//!   `io_uring_enter`);
//! - `uring-eventfd`: io_uring loops with `MSG_RING` off: an eventfd
//!   write, which completes the target ring's armed eventfd `READ`;
//! - `epoll`: epoll loops, eventfd writes;
//! - `tokio`: tokio `current_thread` runtimes passing the same closures
//!   through `Handle::spawn` (its cross-thread wake-up), for scale.
//!
//! Reported: round trips per second and CPU time (both threads' clocks)
//! per hand-off, medians of `HANDOFF_ROUNDS` (default 5) runs of
//! `HANDOFF_SECS` (default 2) seconds, ratios as medians of per-round
//! ratios to `uring-eventfd`.
//!
//! ```text
//! cargo bench --bench handoff
//! ```

mod common;
use common::*;

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use uringio::rt::{Builder, LoopHandle};
use uringio::{Backend, Runner};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    MsgRing,
    UringEventfd,
    Epoll,
    Tokio,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::MsgRing => "io_uring, MSG_RING",
            Path::UringEventfd => "io_uring, eventfd",
            Path::Epoll => "epoll, eventfd",
            Path::Tokio => "tokio current_thread, Handle::spawn",
        }
    }
}

/// Either loop kind's cross-thread entry.
#[derive(Clone)]
enum Remote {
    Uring(LoopHandle),
    Tokio(tokio::runtime::Handle),
}

impl Remote {
    fn send(&self, f: impl FnOnce() + Send + 'static) {
        match self {
            Remote::Uring(h) => h.call_soon_threadsafe(f),
            Remote::Tokio(h) => {
                h.spawn(async move { f() });
            }
        }
    }
}

struct Chain {
    a: Remote,
    b: Remote,
    trips: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// One round trip: to B, back to A, again.
fn hop(c: Arc<Chain>) {
    let c2 = c.clone();
    c.b.send(move || {
        let c3 = c2.clone();
        c2.a.send(move || {
            c3.trips.fetch_add(1, Ordering::Relaxed);
            if !c3.stop.load(Ordering::Relaxed) {
                hop(c3);
            }
        });
    });
}

/// A loop on its own thread pinned to `cpu`: its entry, its CPU clock and
/// a way to stop it.
struct Side {
    remote: Remote,
    clock: libc::clockid_t,
    stop: Box<dyn FnOnce()>,
    thread: std::thread::JoinHandle<()>,
}

fn start(path: Path, cpu: usize) -> Side {
    let (tx, rx) = mpsc::channel::<(Remote, Box<dyn FnOnce() + Send>)>();
    let thread = std::thread::spawn(move || {
        pin_to(cpu);
        match path {
            Path::Tokio => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio");
                let (stx, srx) = tokio::sync::oneshot::channel::<()>();
                tx.send((
                    Remote::Tokio(rt.handle().clone()),
                    Box::new(move || {
                        let _ = stx.send(());
                    }),
                ))
                .expect("main");
                rt.block_on(async move {
                    let _ = srx.await;
                });
            }
            _ => {
                let b = match path {
                    Path::MsgRing => Builder::new().backend(Backend::IoUring),
                    Path::UringEventfd => Builder::new().backend(Backend::IoUring).msg_ring(false),
                    _ => Builder::new().backend(Backend::Epoll),
                };
                let mut r: Runner = b.build().expect("loop");
                let h = r.handle();
                let h2 = h.clone();
                tx.send((Remote::Uring(h), Box::new(move || h2.stop())))
                    .expect("main");
                r.run_forever();
                if path == Path::MsgRing {
                    let (probed, sent) = r.run(async {
                        (
                            uringio::driver::features().msg_ring,
                            uringio::driver::stats().msg_ring_wakes,
                        )
                    });
                    assert!(!probed || sent > 0, "MSG_RING probed but not used");
                }
            }
        }
    });
    let (remote, stop) = rx.recv().expect("loop started");
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (running its loop) and joinable.
    let r = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
    assert_eq!(r, 0, "pthread_getcpuclockid");
    Side {
        remote,
        clock,
        stop,
        thread,
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    trips_per_sec: f64,
    cpu_ns_per_handoff: f64,
}

fn run(path: Path, chains: usize, secs: f64) -> Sample {
    let a = start(path, 0);
    let b = start(path, 1);
    let trips = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..chains {
        let c = Arc::new(Chain {
            a: a.remote.clone(),
            b: b.remote.clone(),
            trips: trips.clone(),
            stop: stop.clone(),
        });
        // Start each chain on A.
        a.remote.send(move || hop(c));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (n0, ca0, cb0, t0) = (
        trips.load(Ordering::Relaxed),
        thread_cpu(a.clock),
        thread_cpu(b.clock),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (n1, ca1, cb1, t1) = (
        trips.load(Ordering::Relaxed),
        thread_cpu(a.clock),
        thread_cpu(b.clock),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    for s in [a, b] {
        (s.stop)();
        s.thread.join().expect("loop thread");
    }
    let n = (n1 - n0).max(1) as f64;
    Sample {
        trips_per_sec: n / (t1 - t0).as_secs_f64(),
        cpu_ns_per_handoff: ((ca1 - ca0) + (cb1 - cb0)).as_nanos() as f64 / (2.0 * n),
    }
}

fn main() {
    let secs: f64 = env_num("HANDOFF_SECS", 2.0);
    let rounds: usize = env_num("HANDOFF_ROUNDS", 5usize).max(1);
    let quiet = Duration::from_secs_f64(env_num("HANDOFF_QUIET_WAIT", 5.0));
    let chains: Vec<usize> = std::env::var("HANDOFF_CHAINS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split(',')
                .map(|x| x.trim().parse().expect("HANDOFF_CHAINS"))
                .collect()
        })
        .unwrap_or_else(|| vec![1, 32]);
    let paths = [Path::MsgRing, Path::UringEventfd, Path::Epoll, Path::Tokio];
    println!(
        "handoff: loops on CPU 0 and CPU 1 passing closures, {secs}s per run, {rounds} round(s)"
    );
    for &k in &chains {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); paths.len()];
        for round in 0..rounds {
            for i in 0..paths.len() {
                let idx = (i + round) % paths.len();
                wait_for_quiet(quiet);
                let s = run(paths[idx], k, secs);
                eprintln!(
                    "  {k:>3} chains  round {}  {:<36} {:>9.0} round trips/s  {:>6.0} ns CPU/hand-off",
                    round + 1,
                    paths[idx].name(),
                    s.trips_per_sec,
                    s.cpu_ns_per_handoff
                );
                samples[idx].push(s);
            }
        }
        let base = paths
            .iter()
            .position(|&p| p == Path::UringEventfd)
            .expect("baseline");
        println!();
        println!(
            "{k} chain(s) in flight (medians of {rounds}; ratios: medians of per-round ratios to io_uring eventfd)"
        );
        println!("| path | round trips/s | CPU ns/hand-off | trips/s ÷ eventfd | CPU ÷ eventfd |");
        println!("|---|---|---|---|---|");
        for (i, p) in paths.iter().enumerate() {
            let med = |f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
            let ratio = |f: fn(&Sample) -> f64| {
                median(
                    samples[i]
                        .iter()
                        .zip(&samples[base])
                        .map(|(a, b)| f(a) / f(b))
                        .collect(),
                )
            };
            println!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.2} |",
                p.name(),
                med(|s| s.trips_per_sec),
                med(|s| s.cpu_ns_per_handoff),
                ratio(|s| s.trips_per_sec),
                ratio(|s| s.cpu_ns_per_handoff),
            );
        }
        println!();
    }
}
