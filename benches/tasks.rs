//! Task-system micro-benchmarks: uringio on io_uring, uringio on epoll and
//! tokio `current_thread` + `LocalSet`, same workloads, same run.
//!
//! ```text
//! cargo bench --bench tasks              # full size
//! BENCH_SCALE=0.1 cargo bench --bench tasks
//! ```
//! Workloads (counts × `BENCH_SCALE`):
//! - `spawn+join`: 1,000,000 empty tasks, spawned and joined in batches of
//!   1,024;
//! - `call_soon`: 1,000,000 callbacks (tokio: `spawn_local` of a trivial
//!   future, its handle dropped);
//! - `sleeps`: 100,000 concurrent sleeps of 0–100 ms (xorshift), all joined.
//!   Wall time is bounded below by the longest sleep, so the ratio is taken
//!   on the thread's CPU time for this row;
//! - `ping-pong`: 1,000,000 round trips between two tasks over one-shot
//!   values (uringio: `Promise`; tokio: `tokio::sync::oneshot`).
//!
//! Each cell is the median of `BENCH_REPS` (default 3) runs, the three
//! contenders alternating.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use uringio::{Backend, Promise, Runner};

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

fn count(base: usize) -> usize {
    ((base as f64 * scale()) as usize).max(1)
}

/// CPU time of the calling thread (user + system).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn measure(f: impl FnOnce()) -> Sample {
    let (w, c) = (Instant::now(), thread_cpu());
    f();
    Sample {
        wall: w.elapsed(),
        cpu: thread_cpu() - c,
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    SpawnJoin,
    CallSoon,
    Sleeps,
    PingPong,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::SpawnJoin => "spawn+join",
            Work::CallSoon => "call_soon",
            Work::Sleeps => "sleeps 0-100ms",
            Work::PingPong => "ping-pong",
        }
    }

    fn ops(self) -> usize {
        match self {
            Work::Sleeps => count(100_000),
            _ => count(1_000_000),
        }
    }
}

const BATCH: usize = 1024;

// ---- uringio ----

#[derive(Clone)]
struct Ping {
    reply: Promise<()>,
    next: Promise<Option<Ping>>,
}

fn uringio_run(b: Backend, w: Work) -> Sample {
    let mut r = Runner::builder()
        .backend(b)
        .build()
        .expect("cannot build the loop");
    assert_eq!(r.backend(), b);
    let n = w.ops();
    measure(|| {
        r.run(async move {
            match w {
                Work::SpawnJoin => {
                    let mut left = n;
                    let mut tasks = Vec::with_capacity(BATCH);
                    while left > 0 {
                        let k = left.min(BATCH);
                        tasks.extend((0..k).map(|_| uringio::spawn(async {})));
                        for t in tasks.drain(..) {
                            t.await.unwrap();
                        }
                        left -= k;
                    }
                }
                Work::CallSoon => {
                    let lp = uringio::get_running_loop();
                    let c = Rc::new(Cell::new(0usize));
                    for _ in 0..n {
                        let c = c.clone();
                        lp.call_soon(move || c.set(c.get() + 1));
                    }
                    while c.get() < n {
                        uringio::yield_now().await;
                    }
                }
                Work::Sleeps => {
                    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let ms = rng.next() % 101;
                            uringio::spawn(uringio::sleep(Duration::from_millis(ms)))
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
                Work::PingPong => {
                    let first: Promise<Option<Ping>> = Promise::new();
                    let mut rx = first.clone();
                    let pong = uringio::spawn(async move {
                        let mut rounds = 0usize;
                        while let Ok(Some(p)) = rx.wait().await {
                            p.reply.set_result(()).unwrap();
                            rx = p.next;
                            rounds += 1;
                        }
                        rounds
                    });
                    let mut tx = first;
                    for _ in 0..n {
                        let ping = Ping {
                            reply: Promise::new(),
                            next: Promise::new(),
                        };
                        tx.set_result(Some(ping.clone())).unwrap();
                        ping.reply.wait().await.unwrap();
                        tx = ping.next;
                    }
                    tx.set_result(None).unwrap();
                    assert_eq!(pong.await.unwrap(), n);
                }
            }
        })
    })
}

// ---- tokio ----

struct TPing {
    reply: tokio::sync::oneshot::Sender<()>,
    next: tokio::sync::oneshot::Receiver<TPing>,
}

fn tokio_run(w: Work) -> Sample {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let n = w.ops();
    measure(|| {
        local.block_on(&rt, async move {
            match w {
                Work::SpawnJoin => {
                    let mut left = n;
                    let mut tasks = Vec::with_capacity(BATCH);
                    while left > 0 {
                        let k = left.min(BATCH);
                        tasks.extend((0..k).map(|_| tokio::task::spawn_local(async {})));
                        for t in tasks.drain(..) {
                            t.await.unwrap();
                        }
                        left -= k;
                    }
                }
                Work::CallSoon => {
                    let c = Rc::new(Cell::new(0usize));
                    for _ in 0..n {
                        let c = c.clone();
                        drop(tokio::task::spawn_local(async move { c.set(c.get() + 1) }));
                    }
                    while c.get() < n {
                        tokio::task::yield_now().await;
                    }
                }
                Work::Sleeps => {
                    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let ms = rng.next() % 101;
                            tokio::task::spawn_local(tokio::time::sleep(Duration::from_millis(ms)))
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                }
                Work::PingPong => {
                    let (tx0, rx0) = tokio::sync::oneshot::channel::<TPing>();
                    let pong = tokio::task::spawn_local(async move {
                        let mut rx = rx0;
                        let mut rounds = 0usize;
                        while let Ok(p) = rx.await {
                            p.reply.send(()).unwrap();
                            rx = p.next;
                            rounds += 1;
                        }
                        rounds
                    });
                    let mut tx = tx0;
                    for _ in 0..n {
                        let (rtx, rrx) = tokio::sync::oneshot::channel();
                        let (ntx, nrx) = tokio::sync::oneshot::channel();
                        if tx
                            .send(TPing {
                                reply: rtx,
                                next: nrx,
                            })
                            .is_err()
                        {
                            panic!("pong task gone");
                        }
                        rrx.await.unwrap();
                        tx = ntx;
                    }
                    drop(tx);
                    assert_eq!(pong.await.unwrap(), n);
                }
            }
        })
    })
}

fn median(mut v: Vec<Sample>, cpu: bool) -> Duration {
    let key = |s: &Sample| if cpu { s.cpu } else { s.wall };
    v.sort_by_key(key);
    key(&v[v.len() / 2])
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks workloads.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "uringio task benchmarks, BENCH_SCALE={}, median of {reps}, ops/s (higher is better)",
        scale()
    );
    println!(
        "{:<16} {:>10} {:>16} {:>16} {:>16} {:>9} {:>9}",
        "workload", "ops", "uringio/io_uring", "uringio/epoll", "tokio", "uring×", "epoll×"
    );
    for w in [
        Work::SpawnJoin,
        Work::CallSoon,
        Work::Sleeps,
        Work::PingPong,
    ] {
        if !filter.is_empty() && !filter.iter().any(|f| w.name().contains(f.as_str())) {
            continue;
        }
        let (mut u, mut e, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            u.push(uringio_run(Backend::IoUring, w));
            e.push(uringio_run(Backend::Epoll, w));
            t.push(tokio_run(w));
        }
        let n = w.ops() as f64;
        // Sleeps: wall time is the longest sleep plus overhead; compare CPU.
        let cpu = w == Work::Sleeps;
        let ops = |v: &Vec<Sample>| n / median(v.clone(), cpu).as_secs_f64();
        let (ou, oe, ot) = (ops(&u), ops(&e), ops(&t));
        println!(
            "{:<16} {:>10} {:>16.0} {:>16.0} {:>16.0} {:>8.2}x {:>8.2}x{}",
            w.name(),
            w.ops(),
            ou,
            oe,
            ot,
            ou / ot,
            oe / ot,
            if cpu { "  (per CPU-second)" } else { "" }
        );
        if cpu {
            println!(
                "{:<16} {:>10} {:>14.1}ms {:>14.1}ms {:>14.1}ms",
                "  sleeps wall",
                "",
                median(u, false).as_secs_f64() * 1e3,
                median(e, false).as_secs_f64() * 1e3,
                median(t, false).as_secs_f64() * 1e3,
            );
        }
    }
}
