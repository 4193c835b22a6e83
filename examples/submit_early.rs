//! Does submitting each op at once help O_DIRECT random reads?
//!
//! 32 tasks each loop on 4 KiB O_DIRECT reads at random aligned offsets
//! of a 1 GiB file (queue depth 32), on an io_uring loop pinned to CPU 0,
//! in two modes run round-robin:
//! - `batch`: the default — every SQE queued in a loop iteration goes to
//!   the kernel in the one `io_uring_enter` that ends the iteration;
//! - `eager`: each read is wrapped in `driver::eager`, so it is submitted
//!   (`io_uring_enter`, no wait) as soon as it is first polled.
//!
//! Prints IOPS, CPU per read (every thread of the process, from
//! `/proc/self/stat`) and enters per read for each round, and the median
//! of the per-round eager/batch ratios.
//!
//! ```text
//! cargo run --release --example submit_early -- [FILE] (env: SECS=3 ROUNDS=5 QD=32)
//! ```
//! FILE defaults to `/tmp/uringio-odirect-1g` (created if missing; it must
//! be on a filesystem with O_DIRECT, not tmpfs).

#[path = "../benches/common/mod.rs"]
mod common;

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use uringio::buf::{IoBuf, Overwrite};
use uringio::fs::OpenOptions;
use uringio::{Backend, Runner, driver};

const FILE_SIZE: u64 = 1 << 30;
const BS: usize = 4096;

fn ensure_file(path: &str) {
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == FILE_SIZE {
        return;
    }
    eprintln!("creating {path} (1 GiB)...");
    let mut f = std::fs::File::create(path).expect("create the test file");
    let chunk = common_pattern(1 << 20);
    for _ in 0..(FILE_SIZE >> 20) {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

fn common_pattern(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 4 KiB window of an 8 KiB heap buffer that starts on a 4 KiB boundary
/// (O_DIRECT wants the memory aligned too), offered whole to reads.
fn aligned_buf() -> Overwrite<uringio::buf::Slice<Box<[u8]>>> {
    let b = vec![0u8; 2 * BS].into_boxed_slice();
    let addr = b.as_ptr() as usize;
    let off = (BS - addr % BS) % BS;
    Overwrite::new(b.slice(off..off + BS))
}

struct Round {
    iops: f64,
    cpu_ns: f64,
    enters_per_op: f64,
}

fn run(path: &str, eager: bool, secs: u64, qd: usize) -> Round {
    let mut r = Runner::builder()
        .backend(Backend::IoUring)
        .build()
        .expect("an io_uring loop");
    let path = path.to_string();
    r.run(async move {
        let f = Rc::new(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .await
                .expect("open O_DIRECT"),
        );
        let done = Rc::new(Cell::new(0u64));
        let (_, cpu0) = common::machine_and_self_ticks();
        let s0 = driver::stats();
        let t0 = Instant::now();
        let stop = t0 + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for t in 0..qd {
            let f = f.clone();
            let done = done.clone();
            tasks.push(uringio::spawn(async move {
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ ((t as u64 + 1) << 32);
                let mut buf = aligned_buf();
                let blocks = FILE_SIZE / BS as u64;
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x % blocks) * BS as u64;
                    buf.clear();
                    let (res, b) = if eager {
                        driver::eager(f.read_at(buf, at)).await
                    } else {
                        f.read_at(buf, at).await
                    };
                    assert_eq!(res.expect("O_DIRECT read"), BS);
                    buf = b;
                    done.set(done.get() + 1);
                    if Instant::now() >= stop {
                        break;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let el = t0.elapsed().as_secs_f64();
        let (_, cpu1) = common::machine_and_self_ticks();
        let s1 = driver::stats();
        let n = done.get() as f64;
        Round {
            iops: n / el,
            cpu_ns: (cpu1 - cpu0) as f64 / common::ticks_per_sec() * 1e9 / n,
            enters_per_op: (s1.enter_calls - s0.enter_calls) as f64 / n,
        }
    })
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/uringio-odirect-1g".into());
    let secs: u64 = common::env_num("SECS", 3);
    let rounds: usize = common::env_num("ROUNDS", 5);
    let qd: usize = common::env_num("QD", 32);
    ensure_file(&path);
    common::pin_to(0);
    println!(
        "O_DIRECT 4 KiB randread, qd {qd}, 1 GiB file {path}, {secs} s per run, {rounds} rounds"
    );
    println!(
        "{:>5} {:>6} {:>10} {:>12} {:>12}",
        "round", "mode", "IOPS", "CPU ns/read", "enters/read"
    );
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let (mut bi, mut ei) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        common::wait_for_quiet(Duration::from_secs(5));
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut res = [None, None];
        for eager in order {
            let r = run(&path, eager, secs, qd);
            println!(
                "{:>5} {:>6} {:>10.0} {:>12.0} {:>12.3}",
                round,
                if eager { "eager" } else { "batch" },
                r.iops,
                r.cpu_ns,
                r.enters_per_op
            );
            res[usize::from(eager)] = Some(r);
        }
        let (b, e) = (res[0].take().unwrap(), res[1].take().unwrap());
        ratios.push(e.iops / b.iops);
        cpu_ratios.push(e.cpu_ns / b.cpu_ns);
        bi.push(b.iops);
        ei.push(e.iops);
    }
    println!(
        "median IOPS: batch {:.0}, eager {:.0}; eager/batch IOPS {:.3}x (median of per-round ratios), CPU/read {:.3}x",
        common::median(bi),
        common::median(ei),
        common::median(ratios),
        common::median(cpu_ratios)
    );
}
