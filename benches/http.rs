//! HTTP benchmark: the `http_hello` example (uringio, io_uring and epoll)
//! against `http_hello_tokio` (the same server written the tokio way:
//! `current_thread`, `TcpListener`, a task per connection, `read_buf` into
//! a `Vec`, `write_all`; same response, same parser), each its own process,
//! loaded by `loadgen http` (also its own process). Same run, round-robin.
//!
//! Default mode (`HTTP_MODE=compare`): each server runs one core pinned to
//! CPU 0 (`--cores 1 --pin`); `loadgen` (a uringio io_uring loop) runs
//! pinned to CPU 1. For each connection count (`HTTP_CONNS`, default
//! `64,256`) a closed loop (every connection sends its next request when
//! the previous answer is in), then one paced run at 64 connections at
//! the same request rate for every server (`HTTP_RATE`, default half the
//! slowest server's closed-loop median), so CPU per request is compared
//! at equal load. Reported: requests/s, latency p50/p99 (from loadgen),
//! the server process's CPU time per request (`/proc/PID/stat`, every
//! thread, over loadgen's measured window), loadgen's own CPU per request,
//! and the first two as medians of per-round ratios to tokio.
//!
//! `HTTP_MODE=scaling`: 1 core against 2 on this machine: `http_hello`
//! (io_uring), `http_hello_tokio` and `tcp_proxy` (io_uring, in front of
//! `echo_server`, loaded by `loadgen echo` with 1 KiB ping-pongs) at
//! `--cores 1` (server pinned to CPU 0, load pinned to CPU 1) and
//! `--cores 2 --pin` (server threads on CPU 0 and 1, load unpinned: it
//! shares both CPUs with the server). Reported: throughput, server CPU
//! per message, load CPU per message, and ratios to the 1-core run.
//!
//! Environment:
//! - `HTTP_SECS` seconds measured per run (default 3; loadgen adds 0.5 s
//!   warm-up)
//! - `HTTP_ROUNDS` rounds (default 5)
//! - `HTTP_CONNS` comma-separated connection counts (default `64,256`)
//! - `HTTP_RATE` requests/s of the paced run (`0` to skip it)
//! - `HTTP_ONLY` comma-separated subset of
//!   `uring,uring-ms,epoll,tokio,raw-uring` (`uring-ms`, `http_hello --api
//!   multishot`, and `raw-uring`, the floor, run only when named)
//! - `HTTP_QUIET_WAIT` seconds to wait before each run for other processes
//!   to use under 0.1 CPU (default 5; 0 to not wait)
//!
//! The examples must be built first:
//! ```text
//! cargo build --release --examples && cargo bench --bench http
//! HTTP_MODE=scaling cargo bench --bench http
//! ```

mod common;
use common::*;

#[path = "../examples/support/http_parse.rs"]
mod http_parse;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER_CPU: usize = 0;
const LOAD_CPU: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Uring,
    Epoll,
    Tokio,
    /// `tcp_proxy` (io_uring) in front of `echo_server`.
    Proxy,
    /// `http_hello --api multishot` on io_uring.
    UringMs,
    /// The floor: a bare io_uring responder, no runtime (this bench's
    /// binary, re-run as `HTTP_SERVE=raw`).
    Raw,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Uring => "uring",
            Kind::Epoll => "epoll",
            Kind::Tokio => "tokio",
            Kind::Proxy => "proxy",
            Kind::Raw => "raw-uring",
            Kind::UringMs => "uring-ms",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Uring => "uringio http_hello ops, io_uring",
            Kind::Epoll => "uringio http_hello ops, epoll",
            Kind::Tokio => "tokio http_hello_tokio",
            Kind::Proxy => "uringio tcp_proxy, io_uring (1 KiB echo)",
            Kind::Raw => "bare io_uring, no runtime (floor)",
            Kind::UringMs => "uringio http_hello multishot, io_uring",
        }
    }
}

/// An example binary, built and not older than its source.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("examples").join(name);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let built = std::fs::metadata(&p).and_then(|m| m.modified());
    let edited = std::fs::metadata(&src)
        .and_then(|m| m.modified())
        .expect("example source");
    match built {
        Ok(t) if t >= edited => p,
        _ => panic!(
            "{} is missing or older than its source: run `cargo build --release --examples` first",
            p.display()
        ),
    }
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin args` (an example, or this bench's own binary for
/// `"self"`), waits for its `listening on ADDR` line.
fn start(bin: &str, args: &[String]) -> (Proc, String) {
    let path = if bin == "self" {
        std::env::current_exe().expect("current_exe")
    } else {
        example(bin)
    };
    let mut child = Command::new(path)
        .args(args)
        .env("HTTP_SERVE", if bin == "self" { "raw" } else { "" })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let p = Proc(child);
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).expect("read server stdout") == 0 {
            panic!("{bin} exited before listening");
        }
        if let Some(rest) = line.trim().strip_prefix("listening on ") {
            let addr = rest.split_whitespace().next().expect("address").to_string();
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return (p, addr);
        }
    }
}

/// One measured run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    server_ns: f64,
    load_ns: f64,
}

fn field(line: &str, before: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == before)
        .and_then(|i| words.get(i + 1))
        .map(|v| v.trim_end_matches("us"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {before:?} in loadgen output: {line}"))
}

fn field_after(line: &str, value_then: &str) -> f64 {
    // "<value> req/s": the word before `value_then`.
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == value_then)
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| words[i].parse().ok())
        .unwrap_or_else(|| panic!("no {value_then:?} in loadgen output: {line}"))
}

struct Settings {
    secs: f64,
    quiet_wait: Duration,
}

/// Runs `kind` on `cores` cores under one loadgen run.
fn run_one(kind: Kind, cores: usize, conns: usize, rate: Option<f64>, s: &Settings) -> Sample {
    wait_for_quiet(s.quiet_wait);
    let spread = cores > 1;
    // The load side (loadgen, and the proxy's echo backend) runs where
    // this thread is allowed to: CPU 1, or every CPU when the server
    // spreads over all of them. The servers pin their own threads.
    if spread {
        unpin();
    } else {
        pin_to(LOAD_CPU);
    }
    let c = cores.to_string();
    let mut server_args = vec![
        "127.0.0.1:0".to_string(),
        "--cores".into(),
        c,
        "--pin".into(),
    ];
    let mut _backend = None;
    let (bin, mode) = match kind {
        Kind::Uring | Kind::UringMs => ("http_hello", "http"),
        Kind::Epoll => ("http_hello", "http"),
        Kind::Tokio => ("http_hello_tokio", "http"),
        Kind::Proxy => ("tcp_proxy", "echo"),
        Kind::Raw => ("self", "http"),
    };
    match kind {
        Kind::Uring => server_args.extend([
            "--backend".into(),
            "io_uring".into(),
            "--api".into(),
            "ops".into(),
        ]),
        Kind::UringMs => server_args.extend([
            "--backend".into(),
            "io_uring".into(),
            "--api".into(),
            "multishot".into(),
        ]),
        Kind::Epoll => server_args.extend([
            "--backend".into(),
            "epoll".into(),
            "--api".into(),
            "ops".into(),
        ]),
        Kind::Tokio | Kind::Raw => {}
        Kind::Proxy => {
            let (p, up) = start(
                "echo_server",
                &["127.0.0.1:0".into(), "--backend".into(), "io_uring".into()],
            );
            _backend = Some(p);
            server_args.insert(1, up);
            server_args.extend(["--backend".into(), "io_uring".into()]);
        }
    }
    let (server, addr) = start(bin, &server_args);
    const { assert!(SERVER_CPU == 0, "the servers' --pin puts core 0 on CPU 0") };
    let mut cmd = Command::new(example("loadgen"));
    cmd.args([
        mode,
        &addr,
        "--conns",
        &conns.to_string(),
        "--size",
        "1024",
        "--secs",
        &s.secs.to_string(),
        "--server-pid",
        &server.0.id().to_string(),
        "--backend",
        "io_uring",
    ]);
    if let Some(r) = rate {
        cmd.args(["--rate", &format!("{r:.0}")]);
    }
    let out = cmd.output().expect("run loadgen");
    drop(server);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        panic!(
            "loadgen failed: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let unit = if mode == "http" { "req/s" } else { "msgs/s" };
    Sample {
        per_sec: field_after(&line, unit),
        p50_us: field(&line, "p50"),
        p99_us: field(&line, "p99"),
        server_ns: field(&line, "server_cpu"),
        load_ns: field(&line, "client_cpu"),
    }
}

fn ratio(a: &[Sample], b: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect())
}

/// Runs every server `rounds` times (the first one rotating) and prints
/// one table; returns the samples per server.
fn compare(
    kinds: &[Kind],
    conns: usize,
    rate: Option<f64>,
    rounds: usize,
    s: &Settings,
) -> Vec<Vec<Sample>> {
    let mut samples = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for i in 0..kinds.len() {
            let idx = (i + round) % kinds.len();
            let x = run_one(kinds[idx], 1, conns, rate, s);
            eprintln!(
                "  {conns:>4} conns{}  round {}  {:<32} {:>8.0} req/s  server {:>6.0} ns/req  \
                 loadgen {:>6.0} ns/req  p50 {:>7.1} us  p99 {:>8.1} us",
                rate.map_or(String::new(), |r| format!(" @{r:.0}/s")),
                round + 1,
                kinds[idx].name(),
                x.per_sec,
                x.server_ns,
                x.load_ns,
                x.p50_us,
                x.p99_us
            );
            samples[idx].push(x);
        }
    }
    let tokio = kinds.iter().position(|&k| k == Kind::Tokio);
    println!();
    println!(
        "{conns} connections, {} (medians of {rounds}; ratios: medians of per-round ratios)",
        match rate {
            Some(r) => format!("paced at {r:.0} req/s"),
            None => "closed loop".into(),
        }
    );
    println!(
        "| server | req/s | server CPU ns/req | req/s ÷ tokio | CPU ÷ tokio | p50 µs | p99 µs | loadgen CPU ns/req |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, k) in kinds.iter().enumerate() {
        let med = |f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
        let rt = |f: fn(&Sample) -> f64| {
            tokio.map_or("-".into(), |t| {
                format!("{:.2}", ratio(&samples[i], &samples[t], f))
            })
        };
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {:.1} | {:.1} | {:.0} |",
            k.name(),
            med(|x| x.per_sec),
            med(|x| x.server_ns),
            rt(|x| x.per_sec),
            rt(|x| x.server_ns),
            med(|x| x.p50_us),
            med(|x| x.p99_us),
            med(|x| x.load_ns),
        );
    }
    println!();
    samples
}

/// 1 core against 2 for each server, round-robin.
fn scaling(kinds: &[Kind], conns: usize, rounds: usize, s: &Settings) {
    let runs: Vec<(Kind, usize)> = kinds.iter().flat_map(|&k| [(k, 1), (k, 2)]).collect();
    let mut samples = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        for i in 0..runs.len() {
            let idx = (i + round) % runs.len();
            let (k, cores) = runs[idx];
            let x = run_one(k, cores, conns, None, s);
            eprintln!(
                "  round {}  {:<40} {cores} core(s) {:>8.0} /s  server {:>6.0} ns/msg  \
                 load {:>6.0} ns/msg  p99 {:>8.1} us",
                round + 1,
                k.name(),
                x.per_sec,
                x.server_ns,
                x.load_ns,
                x.p99_us
            );
            samples[idx].push(x);
        }
    }
    println!();
    println!(
        "{conns} connections, closed loop, 1 core (server CPU 0, load CPU 1) against 2 \
         (server on CPU 0 and 1, load unpinned); medians of {rounds}, ratios: medians of per-round ratios"
    );
    println!(
        "| server | cores | msgs/s | server CPU ns/msg | load CPU ns/msg | msgs/s ÷ 1 core | server CPU/msg ÷ 1 core |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, &(k, cores)) in runs.iter().enumerate() {
        let one = runs
            .iter()
            .position(|&(k1, c1)| k1 == k && c1 == 1)
            .expect("1-core run");
        let med = |f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
        println!(
            "| {} | {cores} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            k.name(),
            med(|x| x.per_sec),
            med(|x| x.server_ns),
            med(|x| x.load_ns),
            ratio(&samples[i], &samples[one], |x| x.per_sec),
            ratio(&samples[i], &samples[one], |x| x.server_ns),
        );
    }
    println!();
}

/// The floor a runtime is measured against: `http_hello` on a bare
/// io_uring, no runtime, no tasks, no wakers, no allocation per request.
/// Per connection one `RECV` into its buffer, the same parser and
/// response as the servers compared, one `SEND` of the responses; every
/// SQE queued in an iteration is submitted, and completions waited for,
/// in one `io_uring_enter` (`SINGLE_ISSUER | DEFER_TASKRUN`, as uringio's
/// ring). Runs on CPU 0 until killed.
fn raw_uring_server() {
    use io_uring::{IoUring, opcode, squeue, types};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ACCEPT: u64 = 0;
    const RECV: u64 = 1;
    const SEND: u64 = 2;
    const BUF: usize = 16384;
    struct Conn {
        fd: OwnedFd,
        /// Request bytes read and not yet answered: `inbuf[..len]`.
        inbuf: Box<[u8]>,
        len: usize,
        out: Vec<u8>,
        sent: usize,
        close: bool,
    }
    pin_to(SERVER_CPU);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local_addr")
    );
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)
        .expect("io_uring");
    // Connections are never freed while the process lives (a closed one
    // keeps its slot), so every buffer an SQE names outlives the ring.
    let mut conns: Vec<Option<Box<Conn>>> = Vec::new();
    let accept = || {
        opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT)
    };
    let recv = |i: usize, c: &mut Conn| {
        opcode::Recv::new(
            types::Fd(c.fd.as_raw_fd()),
            c.inbuf[c.len..].as_mut_ptr(),
            (BUF - c.len) as u32,
        )
        .build()
        .user_data(RECV | (i as u64) << 2)
    };
    let send = |i: usize, c: &Conn| {
        opcode::Send::new(
            types::Fd(c.fd.as_raw_fd()),
            c.out[c.sent..].as_ptr(),
            (c.out.len() - c.sent) as u32,
        )
        .build()
        .user_data(SEND | (i as u64) << 2)
    };
    let mut queue: Vec<squeue::Entry> = vec![accept()];
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(4096);
    loop {
        for e in queue.drain(..) {
            // SAFETY: every SQE points into a connection's buffers, boxed
            // and never freed or moved while the process lives (above).
            while unsafe { ring.submission().push(&e) }.is_err() {
                ring.submit().expect("submit");
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (ud, res) in done.drain(..) {
            let i = (ud >> 2) as usize;
            match ud & 3 {
                ACCEPT => {
                    if res >= 0 {
                        // SAFETY: a new descriptor the kernel gave us.
                        let fd = unsafe { OwnedFd::from_raw_fd(res) };
                        let one: libc::c_int = 1;
                        // SAFETY: a valid socket and a c_int option value.
                        unsafe {
                            libc::setsockopt(
                                fd.as_raw_fd(),
                                libc::IPPROTO_TCP,
                                libc::TCP_NODELAY,
                                (&one as *const libc::c_int).cast(),
                                std::mem::size_of::<libc::c_int>() as u32,
                            )
                        };
                        let mut c = Box::new(Conn {
                            fd,
                            inbuf: vec![0u8; BUF].into_boxed_slice(),
                            len: 0,
                            out: Vec::with_capacity(4096),
                            sent: 0,
                            close: false,
                        });
                        queue.push(recv(conns.len(), &mut c));
                        conns.push(Some(c));
                    }
                    queue.push(accept());
                }
                RECV => {
                    let Some(c) = conns[i].as_mut() else { continue };
                    if res <= 0 {
                        // Closed: keep the box (an SQE may not name it
                        // any more, but this floor does not bother).
                        std::mem::forget(conns[i].take());
                        continue;
                    }
                    c.len += res as usize;
                    let (used, close) = http_parse::answer(&c.inbuf[..c.len], &mut c.out);
                    c.inbuf.copy_within(used..c.len, 0);
                    c.len -= used;
                    c.close = close;
                    if c.len == BUF {
                        c.close = true;
                    }
                    if c.out.is_empty() {
                        queue.push(recv(i, c));
                    } else {
                        c.sent = 0;
                        queue.push(send(i, c));
                    }
                }
                _ => {
                    let Some(c) = conns[i].as_mut() else { continue };
                    if res < 0 {
                        std::mem::forget(conns[i].take());
                        continue;
                    }
                    c.sent += res as usize;
                    if c.sent < c.out.len() {
                        queue.push(send(i, c));
                    } else if c.close {
                        std::mem::forget(conns[i].take());
                    } else {
                        c.out.clear();
                        queue.push(recv(i, c));
                    }
                }
            }
        }
    }
}

fn main() {
    if std::env::var("HTTP_SERVE").is_ok_and(|v| v == "raw") {
        raw_uring_server();
        return;
    }
    let s = Settings {
        secs: env_num("HTTP_SECS", 3.0),
        quiet_wait: Duration::from_secs_f64(env_num("HTTP_QUIET_WAIT", 5.0)),
    };
    let rounds: usize = env_num("HTTP_ROUNDS", 5usize).max(1);
    let conns: Vec<usize> = std::env::var("HTTP_CONNS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .expect("HTTP_CONNS: comma-separated counts")
                })
                .collect()
        })
        .unwrap_or_else(|| vec![64, 256]);
    let only = std::env::var("HTTP_ONLY")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let chosen = |k: &Kind| {
        only.as_ref()
            .is_none_or(|v| v.split(',').any(|x| x.trim() == k.key()))
    };
    let mode = std::env::var("HTTP_MODE").unwrap_or_else(|_| "compare".into());
    println!(
        "http: {}s measured per run (+0.5 s loadgen warm-up), {rounds} round(s); mode {mode}",
        s.secs
    );
    match mode.as_str() {
        "compare" => {
            let all = [
                Kind::Uring,
                Kind::UringMs,
                Kind::Epoll,
                Kind::Tokio,
                Kind::Raw,
            ];
            let kinds: Vec<Kind> = all
                .into_iter()
                .filter(|k| {
                    if matches!(k, Kind::Raw | Kind::UringMs) {
                        only.as_ref().is_some_and(|_| chosen(k))
                    } else {
                        chosen(k)
                    }
                })
                .collect();
            let mut slowest = f64::INFINITY;
            for &n in &conns {
                let samples = compare(&kinds, n, None, rounds, &s);
                for v in &samples {
                    slowest = slowest.min(median(v.iter().map(|x| x.per_sec).collect()));
                }
            }
            let rate: f64 = env_num("HTTP_RATE", (slowest / 2.0 / 1000.0).round() * 1000.0);
            if rate > 0.0 {
                compare(&kinds, 64, Some(rate), rounds, &s);
            }
        }
        "scaling" => {
            let kinds: Vec<Kind> = [Kind::Uring, Kind::Tokio, Kind::Proxy]
                .into_iter()
                .filter(|k| only.is_none() || chosen(k))
                .collect();
            scaling(&kinds, conns[0], rounds, &s);
        }
        m => panic!("HTTP_MODE={m:?}: compare or scaling"),
    }
}
