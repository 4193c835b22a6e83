//! Helpers every benchmark shares: pinning, environment settings, CPU
//! clocks, the machine's other load, medians.
#![allow(dead_code)] // each bench uses a subset

use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// Pins the calling thread to CPU `cpu` (a warning if it cannot).
pub fn pin_to(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu index");
    if let Err(e) = sched_setaffinity(Pid::from_raw(0), &set) {
        eprintln!("bench: cannot pin to CPU {cpu}: {e} (results will be noisier)");
    }
}

/// The number in environment variable `name`, or `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

/// CPU time consumed so far by a thread of this process.
pub fn thread_cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id from pthread_getcpuclockid and a valid timespec.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0, "clock_gettime on the server thread's CPU clock");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (ticks) used by the whole machine and by this process, from
/// `/proc`: the difference tells whether something else ran during a
/// measurement (on a shared 2-core machine that skews throughput badly).
pub fn machine_and_self_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = cpu.iter().take(8).sum::<u64>()
        - cpu.get(3).copied().unwrap_or(0)
        - cpu.get(4).copied().unwrap_or(0);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let after = me.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let mine = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    (busy, mine)
}

/// Waits (up to `limit`) until other processes use less than 0.1 CPU over
/// half a second: on a shared 2-core machine a neighbour's burst halves
/// the throughput of the run it lands in.
pub fn wait_for_quiet(limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let t0 = Instant::now();
    let mut warned = false;
    loop {
        let (m0, s0) = machine_and_self_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let (m1, s1) = machine_and_self_ticks();
        let others = (m1 - m0).saturating_sub(s1 - s0) as f64 / ticks_per_sec() / 0.5;
        if others < 0.1 || t0.elapsed() >= limit {
            return;
        }
        if !warned {
            eprintln!(
                "  (other processes use {others:.2} CPUs; waiting up to {limit:?} for quiet)"
            );
            warned = true;
        }
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The median of `v` (NaN if empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Lets the calling thread run on every CPU again (undoes [`pin_to`]).
pub fn unpin() {
    let mut set = CpuSet::new();
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in 0..n.min(CpuSet::count()) {
        let _ = set.set(cpu);
    }
    if let Err(e) = sched_setaffinity(Pid::from_raw(0), &set) {
        eprintln!("bench: cannot unpin: {e}");
    }
}
