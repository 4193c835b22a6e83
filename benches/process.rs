//! Subprocess benchmark: uringio on io_uring, uringio on epoll and tokio
//! `current_thread` (`tokio::process`), same workloads, one run.
//!
//! Workloads:
//! - `spawn+wait seq`: 1,000 `/bin/true`, one after another;
//! - `spawn+wait x32`: 1,000 `/bin/true`, 32 at a time;
//! - `cat 256 MiB`: `communicate` of 256 MiB through `cat` (stdin in,
//!   stdout back), checked by length; `cat` runs on CPU 1 (`taskset`).
//!
//! The runtime thread is pinned to CPU 0 (children may run anywhere).
//! Contenders run round-robin for `PROC_ROUNDS` rounds (default 5); the
//! table gives medians and medians of per-round ratios to tokio.
//! `PROC_SPAWNS` (default 1000) and `PROC_MIB` (default 256) scale the
//! workloads.
//!
//! ```text
//! cargo bench --bench process
//! ```

mod common;
use common::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use uringio::{Backend, Runner};

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Uring,
    Epoll,
    Tokio,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Uring => "uringio io_uring",
            Who::Epoll => "uringio epoll",
            Who::Tokio => "tokio",
        }
    }
}

#[derive(Clone, Copy)]
enum Work {
    SpawnSeq(usize),
    SpawnPar(usize, usize),
    Cat(usize),
}

impl Work {
    fn label(self) -> String {
        match self {
            Work::SpawnSeq(n) => format!("spawn+wait {n} /bin/true, sequential"),
            Work::SpawnPar(n, k) => format!("spawn+wait {n} /bin/true, {k} at a time"),
            Work::Cat(b) => format!("communicate {} MiB through cat", b >> 20),
        }
    }
}

fn uringio_run(b: Backend, w: Work) -> Duration {
    let mut rt = Runner::builder().backend(b).build().expect("uringio loop");
    assert_eq!(rt.backend(), b);
    rt.run(async move {
        let t0 = Instant::now();
        match w {
            Work::SpawnSeq(n) => {
                for _ in 0..n {
                    let mut p = uringio::process::Command::new("/bin/true")
                        .spawn()
                        .expect("spawn");
                    assert!(p.wait().await.expect("wait").success());
                }
            }
            Work::SpawnPar(n, k) => {
                // k workers, each spawning and waiting its share in turn.
                let tasks: Vec<_> = (0..k)
                    .map(|i| {
                        let share = n / k + usize::from(i < n % k);
                        uringio::spawn(async move {
                            for _ in 0..share {
                                let mut p = uringio::process::Command::new("/bin/true")
                                    .spawn()
                                    .expect("spawn");
                                assert!(p.wait().await.expect("wait").success());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
            Work::Cat(bytes) => {
                // cat on the other CPU (the loop is pinned to CPU 0).
                let mut p = uringio::process::Command::new("taskset")
                    .args(["-c", "1", "cat"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn cat");
                let out = p
                    .communicate(Some(vec![0x5A; bytes]))
                    .await
                    .expect("communicate");
                assert_eq!(out.stdout.len(), bytes);
            }
        }
        t0.elapsed()
    })
}

fn tokio_run(w: Work) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let t0 = Instant::now();
        match w {
            Work::SpawnSeq(n) => {
                for _ in 0..n {
                    let mut c = tokio::process::Command::new("/bin/true")
                        .spawn()
                        .expect("spawn");
                    assert!(c.wait().await.expect("wait").success());
                }
            }
            Work::SpawnPar(n, k) => {
                let tasks: Vec<_> = (0..k)
                    .map(|i| {
                        let share = n / k + usize::from(i < n % k);
                        tokio::task::spawn_local(async move {
                            for _ in 0..share {
                                let mut c = tokio::process::Command::new("/bin/true")
                                    .spawn()
                                    .expect("spawn");
                                assert!(c.wait().await.expect("wait").success());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            }
            Work::Cat(bytes) => {
                use tokio::io::AsyncWriteExt;
                let mut c = tokio::process::Command::new("taskset")
                    .args(["-c", "1", "cat"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn cat");
                let mut stdin = c.stdin.take().expect("stdin");
                let input = vec![0x5A; bytes];
                let feed = tokio::task::spawn_local(async move {
                    stdin.write_all(&input).await.expect("write");
                    drop(stdin);
                });
                let out = c.wait_with_output().await.expect("wait_with_output");
                feed.await.expect("feed");
                assert_eq!(out.stdout.len(), bytes);
            }
        }
        t0.elapsed()
    })
}

fn main() {
    let mut set = CpuSet::new();
    set.set(0).expect("cpu 0");
    let _ = sched_setaffinity(Pid::from_raw(0), &set);
    let rounds: usize = env_num("PROC_ROUNDS", 5usize).max(1);
    let spawns: usize = env_num("PROC_SPAWNS", 1000usize);
    let mib: usize = env_num("PROC_MIB", 256usize);
    let who = [Who::Uring, Who::Epoll, Who::Tokio];
    let works = [
        Work::SpawnSeq(spawns),
        Work::SpawnPar(spawns, 32),
        Work::Cat(mib << 20),
    ];
    println!("process: {rounds} rounds, runtime thread on CPU 0");
    for w in works {
        // times[who][round]
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); who.len()];
        for round in 0..rounds {
            for i in 0..who.len() {
                let idx = (i + round) % who.len();
                let d = match who[idx] {
                    Who::Uring => uringio_run(Backend::IoUring, w),
                    Who::Epoll => uringio_run(Backend::Epoll, w),
                    Who::Tokio => tokio_run(w),
                };
                eprintln!(
                    "  {}  round {}  {:<17} {:>8.1} ms",
                    w.label(),
                    round + 1,
                    who[idx].name(),
                    d.as_secs_f64() * 1e3
                );
                times[idx].push(d.as_secs_f64());
            }
        }
        let t = who.len() - 1;
        println!();
        println!("{}", w.label());
        println!("| runtime | time (median) | speed ÷ tokio (median of per-round ratios) |");
        println!("|---|---|---|");
        for (i, x) in who.iter().enumerate() {
            let ratio = median((0..rounds).map(|r| times[t][r] / times[i][r]).collect());
            let rate = match w {
                Work::Cat(b) => format!(
                    "{:.0} ms ({:.0} MB/s)",
                    median(times[i].clone()) * 1e3,
                    b as f64 / median(times[i].clone()) / 1e6
                ),
                Work::SpawnSeq(n) | Work::SpawnPar(n, _) => format!(
                    "{:.0} ms ({:.0} spawns/s)",
                    median(times[i].clone()) * 1e3,
                    n as f64 / median(times[i].clone())
                ),
            };
            println!("| {} | {} | {:.2} |", x.name(), rate, ratio);
        }
    }
}
