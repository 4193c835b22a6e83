//! Sync primitives, queue and cross-thread channel: uringio on io_uring,
//! uringio on epoll, and tokio (`current_thread` + `LocalSet`, `tokio::sync`),
//! same workloads, same run, alternating, medians.
//!
//! ```text
//! cargo bench --bench sync
//! BENCH_SCALE=0.1 BENCH_REPS=1 cargo bench --bench sync   # quick look
//! ```
//!
//! `BENCH_SCALE` (float, default 1.0) scales every iteration count;
//! `BENCH_REPS` (default 3) is how many times each cell is measured (the
//! median is printed). CPU time is the whole process's user + system time
//! (`/proc/self/stat`, 10 ms ticks) over the measured part, so for the
//! cross-thread rows it adds up both threads.
//!
//! Rows:
//! 1. uncontended `sync::Lock` lock/unlock (tokio: `sync::Mutex`)
//! 2. two tasks contending on a `Lock`, each holding it across a `yield_now`
//! 3. `Semaphore` acquire/release
//! 4. `queue::Queue(100)`, one producer and one consumer task
//!    (tokio: `mpsc::channel(100)`)
//! 5. `channel::bounded` between two loops pinned to CPU 0 and CPU 1
//!    (tokio: `mpsc::channel` between two `current_thread` runtimes pinned
//!    the same way), with capacity 1024 and 100

use std::future::Future;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use uringio::Backend;

// ---- measuring ---------------------------------------------------------------

/// One measurement: wall-clock and process CPU time of the measured part.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// User + system time of the whole process so far (exited threads included).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends at the last ')': state is
    // field 3, utime 14, stime 15 (in USER_HZ ticks, 100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Measures `f` (the setup it needs is done before calling).
fn timed(f: impl FnOnce()) -> Sample {
    let c0 = process_cpu();
    let t0 = Instant::now();
    f();
    Sample {
        wall: t0.elapsed(),
        cpu: process_cpu().saturating_sub(c0),
    }
}

fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        // Best effort: on a machine with fewer CPUs the row still runs.
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn reps() -> usize {
    std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1)
}

// ---- the runtimes ------------------------------------------------------------

/// A uringio loop on `backend`, or `None` (reported once) if it cannot be set up.
fn uring_runner(backend: Backend) -> Option<uringio::Runner> {
    match uringio::Runner::builder().backend(backend).build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("uringio {backend:?} unavailable: {e}");
            None
        }
    }
}

fn on_uring<F: Future>(backend: Backend, fut: F) -> Option<Sample> {
    let mut runner = uring_runner(backend)?;
    Some(timed(|| {
        black_box(runner.run(fut));
    }))
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn on_tokio<F: Future>(fut: F) -> Sample {
    let rt = tokio_rt();
    let local = tokio::task::LocalSet::new();
    timed(|| {
        black_box(local.block_on(&rt, fut));
    })
}

// ---- rows 1-4: one loop ----------------------------------------------------------

async fn uring_lock(n: u64) {
    let lock = uringio::sync::Lock::new();
    for _ in 0..n {
        drop(black_box(lock.lock().await));
    }
}

async fn tokio_lock(n: u64) {
    let lock = tokio::sync::Mutex::new(());
    for _ in 0..n {
        drop(black_box(lock.lock().await));
    }
}

async fn uring_contended(n: u64) {
    let lock = Rc::new(uringio::sync::Lock::new());
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            uringio::spawn(async move {
                for _ in 0..n / 2 {
                    let _g = lock.lock().await;
                    uringio::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

async fn tokio_contended(n: u64) {
    let lock = Rc::new(tokio::sync::Mutex::new(()));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            tokio::task::spawn_local(async move {
                for _ in 0..n / 2 {
                    let _g = lock.lock().await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

async fn uring_semaphore(n: u64) {
    let sem = uringio::sync::Semaphore::new(1);
    for _ in 0..n {
        drop(black_box(sem.acquire().await));
    }
}

async fn tokio_semaphore(n: u64) {
    let sem = tokio::sync::Semaphore::new(1);
    for _ in 0..n {
        drop(black_box(sem.acquire().await.expect("open")));
    }
}

async fn uring_queue(n: u64) -> u64 {
    let q = uringio::queue::Queue::new(100);
    let q2 = q.clone();
    let producer = uringio::spawn(async move {
        for i in 0..n {
            q2.put(i).await.expect("queue open");
        }
    });
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(q.get().await.expect("queue open"));
    }
    producer.await.expect("producer");
    sum
}

async fn tokio_queue(n: u64) -> u64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let producer = tokio::task::spawn_local(async move {
        for i in 0..n {
            tx.send(i).await.expect("channel open");
        }
    });
    let mut sum = 0u64;
    while let Some(v) = rx.recv().await {
        sum = sum.wrapping_add(v);
    }
    producer.await.expect("producer");
    sum
}

// ---- row 5: two pinned loops ---------------------------------------------------

/// Producer loop on CPU 1, consumer loop on CPU 0; timing starts once both
/// loops exist.
fn uring_cross(backend: Backend, n: u64, cap: usize) -> Option<Sample> {
    // Probe first, so an unavailable backend does not strand a thread.
    drop(uring_runner(backend)?);
    let (tx, mut rx) = uringio::channel::bounded::<u64>(cap);
    let ready = Arc::new(Barrier::new(3));
    let r1 = ready.clone();
    let producer = thread::spawn(move || {
        pin(1);
        let mut rt = uring_runner(backend).expect("loop");
        r1.wait();
        rt.run(async move {
            for i in 0..n {
                tx.send(i).await.expect("receiver alive");
            }
        });
    });
    let r0 = ready.clone();
    let consumer = thread::spawn(move || {
        pin(0);
        let mut rt = uring_runner(backend).expect("loop");
        r0.wait();
        rt.run(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum = sum.wrapping_add(v);
            }
            sum
        })
    });
    let sample = timed(|| {
        ready.wait();
        producer.join().expect("producer");
        assert_eq!(
            consumer.join().expect("consumer"),
            n * n.saturating_sub(1) / 2
        );
    });
    Some(sample)
}

fn tokio_cross(n: u64, cap: usize) -> Sample {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(cap);
    let ready = Arc::new(Barrier::new(3));
    let r1 = ready.clone();
    let producer = thread::spawn(move || {
        pin(1);
        let rt = tokio_rt();
        r1.wait();
        rt.block_on(async move {
            for i in 0..n {
                tx.send(i).await.expect("receiver alive");
            }
        });
    });
    let r0 = ready.clone();
    let consumer = thread::spawn(move || {
        pin(0);
        let rt = tokio_rt();
        r0.wait();
        rt.block_on(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum = sum.wrapping_add(v);
            }
            sum
        })
    });
    timed(|| {
        ready.wait();
        producer.join().expect("producer");
        assert_eq!(
            consumer.join().expect("consumer"),
            n * n.saturating_sub(1) / 2
        );
    })
}

// ---- the table -------------------------------------------------------------------

struct Row {
    name: &'static str,
    ops: u64,
    uring: fn(Backend, u64) -> Option<Sample>,
    tokio: fn(u64) -> Sample,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "1 Lock uncontended",
            ops: 10_000_000,
            uring: |b, n| on_uring(b, uring_lock(n)),
            tokio: |n| on_tokio(tokio_lock(n)),
        },
        Row {
            name: "2 Lock 2 tasks + yield",
            ops: 1_000_000,
            uring: |b, n| on_uring(b, uring_contended(n)),
            tokio: |n| on_tokio(tokio_contended(n)),
        },
        Row {
            name: "3 Semaphore",
            ops: 10_000_000,
            uring: |b, n| on_uring(b, uring_semaphore(n)),
            tokio: |n| on_tokio(tokio_semaphore(n)),
        },
        Row {
            name: "4 Queue(100) 1p/1c",
            ops: 10_000_000,
            uring: |b, n| on_uring(b, uring_queue(n)),
            tokio: |n| on_tokio(tokio_queue(n)),
        },
        Row {
            name: "5 channel(1024) x-thread",
            ops: 10_000_000,
            uring: |b, n| uring_cross(b, n, 1024),
            tokio: |n| tokio_cross(n, 1024),
        },
        Row {
            name: "5 channel(100) x-thread",
            ops: 10_000_000,
            uring: |b, n| uring_cross(b, n, 100),
            tokio: |n| tokio_cross(n, 100),
        },
    ]
}

/// The median sample (by wall time).
fn median(mut v: Vec<Sample>) -> Option<Sample> {
    v.sort_by_key(|s| s.wall);
    v.get(v.len() / 2).copied()
}

fn ops_per_s(ops: u64, s: Sample) -> f64 {
    ops as f64 / s.wall.as_secs_f64()
}

fn cpu_ns(ops: u64, s: Sample) -> f64 {
    s.cpu.as_nanos() as f64 / ops as f64
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else {
        format!("{:.1}k", r / 1e3)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks rows by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scale = scale();
    let reps = reps();
    println!(
        "uringio sync/queue/channel vs tokio — BENCH_SCALE={scale} BENCH_REPS={reps}, median of reps"
    );
    println!("ops/s (higher is better), ratio = ops/s ÷ tokio's, cpu = process CPU ns per op");
    println!();
    println!(
        "| {:<26} | {:>9} | {:>16} | {:>6} | {:>7} | {:>16} | {:>6} | {:>7} | {:>16} | {:>7} |",
        "workload",
        "ops",
        "uringio io_uring",
        "ratio",
        "cpu ns",
        "uringio epoll",
        "ratio",
        "cpu ns",
        "tokio",
        "cpu ns"
    );
    println!(
        "|{:-<28}|{:->11}|{:->18}|{:->8}|{:->9}|{:->18}|{:->8}|{:->9}|{:->18}|{:->9}|",
        "", "", "", "", "", "", "", "", "", ""
    );
    for row in rows() {
        if filter
            .as_ref()
            .is_some_and(|f| !row.name.contains(f.as_str()))
        {
            continue;
        }
        // Single-loop rows run on CPU 0; the cross-thread rows pin their own
        // threads.
        pin(0);
        let ops = ((row.ops as f64 * scale) as u64).max(2);
        let (mut u, mut e, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            // Alternate the order so drift does not favour one runtime.
            let order: [u8; 3] = if rep % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for which in order {
                match which {
                    0 => u.extend((row.uring)(Backend::IoUring, ops)),
                    1 => e.extend((row.uring)(Backend::Epoll, ops)),
                    _ => t.push((row.tokio)(ops)),
                }
            }
        }
        let tokio = median(t).expect("tokio sample");
        let tokio_rate = ops_per_s(ops, tokio);
        let cell = |s: Option<Sample>| match s {
            Some(s) => (
                fmt_rate(ops_per_s(ops, s)),
                format!("{:.2}x", ops_per_s(ops, s) / tokio_rate),
                format!("{:.0}", cpu_ns(ops, s)),
            ),
            None => ("n/a".into(), "-".into(), "-".into()),
        };
        let (ur, ux, uc) = cell(median(u));
        let (er, ex, ec) = cell(median(e));
        println!(
            "| {:<26} | {:>9} | {:>16} | {:>6} | {:>7} | {:>16} | {:>6} | {:>7} | {:>16} | {:>7} |",
            row.name,
            ops,
            ur,
            ux,
            uc,
            er,
            ex,
            ec,
            fmt_rate(tokio_rate),
            format!("{:.0}", cpu_ns(ops, tokio)),
        );
    }
}
