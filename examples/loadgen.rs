//! A load generator for comparing servers, uringio or not.
//!
//! ```text
//! cargo run --release --example loadgen -- echo|http ADDR --conns N --size B --secs S
//!     [--rate R] [--server-pid PID] [--backend epoll|io_uring|auto]
//! ```
//! - `echo`: each connection writes `B` bytes and waits for all `B` back.
//! - `http`: each connection sends `GET / HTTP/1.1` (keep-alive) and reads
//!   one response (headers, then `Content-Length` bytes of body).
//!
//! Closed loop by default (each connection sends its next request as soon
//! as the previous answer is in); with `--rate R` the `N` connections
//! share a schedule of `R` requests per second and latency is measured
//! from each request's *scheduled* time, so a server that falls behind is
//! charged for the queueing it causes (no coordinated omission). The
//! first half second is a warm-up and is not counted.
//!
//! Prints one line: requests per second, latency p50/p99/p99.9 from a
//! log-linear histogram (≤ 1.6% error), and with `--server-pid` the
//! server process's CPU time (user + system, every thread, from
//! `/proc/PID/stat`) per request over the measured interval, and its own
//! (`client_cpu`, the same way). The same
//! figures for any server, so a tokio server and a uringio one compare
//! directly. Exit status 1 if no request completed.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use uringio::net::TcpStream;
use uringio::{Backend, Runner};

#[path = "support/histogram.rs"]
mod histogram;
use histogram::Histogram;

fn usage() -> ! {
    eprintln!(
        "usage: loadgen echo|http ADDR --conns N --size B --secs S [--rate R] [--server-pid PID] \
         [--backend epoll|io_uring|auto]"
    );
    std::process::exit(2);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Echo,
    Http,
}

struct Args {
    kind: Kind,
    addr: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    rate: Option<f64>,
    pid: Option<u32>,
    backend: Backend,
}

fn parse_args() -> Args {
    let mut pos = Vec::new();
    let (mut conns, mut size, mut secs) = (64usize, 1024usize, 5.0f64);
    let (mut rate, mut pid) = (None, None);
    let mut backend = Backend::Auto;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage())
        };
        match flag.as_str() {
            "--conns" => conns = value().parse().unwrap_or_else(|_| usage()),
            "--size" => size = value().parse().unwrap_or_else(|_| usage()),
            "--secs" => secs = value().parse().unwrap_or_else(|_| usage()),
            "--rate" => rate = Some(value().parse().unwrap_or_else(|_| usage())),
            "--server-pid" => pid = Some(value().parse().unwrap_or_else(|_| usage())),
            "--backend" => {
                backend = match value().as_str() {
                    "epoll" => Backend::Epoll,
                    "io_uring" | "iouring" | "uring" => Backend::IoUring,
                    "auto" => Backend::Auto,
                    _ => usage(),
                }
            }
            s if s.starts_with('-') => usage(),
            s => pos.push(s.to_string()),
        }
    }
    if pos.len() != 2 || conns == 0 || secs <= 0.0 {
        usage();
    }
    let kind = match pos[0].as_str() {
        "echo" => Kind::Echo,
        "http" => Kind::Http,
        _ => usage(),
    };
    let addr = pos[1].parse().unwrap_or_else(|e| {
        eprintln!("loadgen: bad address {:?}: {e}", pos[1]);
        std::process::exit(2);
    });
    if kind == Kind::Echo && size == 0 {
        usage();
    }
    Args {
        kind,
        addr,
        conns,
        size,
        secs,
        rate,
        pid,
        backend,
    }
}

/// The process's CPU time (user + system, all threads) in nanoseconds.
fn cpu_ns(pid: u32) -> std::io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after ")".
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

struct Shared {
    hist: RefCell<Histogram>,
    /// Requests completed in the measured interval.
    done: Cell<u64>,
    errors: Cell<u64>,
    measuring: Cell<bool>,
    stop: Cell<bool>,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: loadgen\r\n\r\n";

/// Reads one HTTP/1.1 response from `s`, keeping bytes past it in `buf`.
async fn read_response(s: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let total = end + 4 + content_length(&buf[..end]);
            while buf.len() < total {
                fill(s, buf).await?;
            }
            buf.drain(..total);
            return Ok(());
        }
        fill(s, buf).await?;
    }
}

/// The `Content-Length` of a response head (0 if absent or unreadable).
fn content_length(head: &[u8]) -> usize {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .find_map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            (l.len() >= NAME.len() && l[..NAME.len()].eq_ignore_ascii_case(NAME))
                .then(|| std::str::from_utf8(l[NAME.len()..].trim_ascii()).ok())
                .flatten()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Appends what the next read returns to `buf` (in place: no copy).
async fn fill(s: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut b = std::mem::take(buf);
    if b.capacity() - b.len() < 4096 {
        b.reserve(16384);
    }
    let (r, b) = s.read(b).await;
    *buf = b;
    if r? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

async fn conn(a: Rc<Args>, sh: Rc<Shared>, period: Option<Duration>, offset: Duration) {
    let s = match TcpStream::connect(a.addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadgen: connect {}: {e}", a.addr);
            sh.errors.set(sh.errors.get() + 1);
            return;
        }
    };
    let _ = s.set_nodelay(true);
    let msg: Vec<u8> = match a.kind {
        Kind::Echo => (0..a.size).map(|i| i as u8).collect(),
        Kind::Http => REQUEST.to_vec(),
    };
    let mut out = msg.clone();
    let mut inbuf = Vec::new();
    let mut rbuf = Vec::with_capacity(a.size.max(16384));
    let mut next = Instant::now() + offset;
    while !sh.stop.get() {
        let start = match period {
            Some(p) => {
                uringio::sleep_until(next).await;
                let t = next;
                next += p;
                t
            }
            None => Instant::now(),
        };
        let (r, b) = s.write_all(out).await;
        out = b;
        if r.is_err() {
            sh.errors.set(sh.errors.get() + 1);
            return;
        }
        let ok = match a.kind {
            Kind::Echo => {
                let mut got = 0;
                let mut ok = true;
                while got < a.size {
                    rbuf.clear();
                    let (r, b) = s.read(rbuf).await;
                    rbuf = b;
                    match r {
                        Ok(0) | Err(_) => {
                            ok = false;
                            break;
                        }
                        Ok(n) => got += n,
                    }
                }
                ok
            }
            Kind::Http => read_response(&s, &mut inbuf).await.is_ok(),
        };
        if !ok {
            sh.errors.set(sh.errors.get() + 1);
            return;
        }
        if sh.measuring.get() {
            sh.hist
                .borrow_mut()
                .record(start.elapsed().as_nanos() as u64);
            sh.done.set(sh.done.get() + 1);
        }
    }
}

fn main() {
    let args = Rc::new(parse_args());
    let mut runner = Runner::builder()
        .backend(args.backend)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("loadgen: cannot start the loop: {e}");
            std::process::exit(1);
        });
    let sh = Rc::new(Shared {
        hist: RefCell::new(Histogram::new()),
        done: Cell::new(0),
        errors: Cell::new(0),
        measuring: Cell::new(false),
        stop: Cell::new(false),
    });
    let (elapsed, cpu, me) = runner.run({
        let (args, sh) = (args.clone(), sh.clone());
        async move {
            let period = args
                .rate
                .map(|r| Duration::from_secs_f64(args.conns as f64 / r.max(1e-3)));
            let tasks: Vec<_> = (0..args.conns)
                .map(|i| {
                    let offset =
                        period.map_or(Duration::ZERO, |p| p * i as u32 / args.conns as u32);
                    uringio::spawn(conn(args.clone(), sh.clone(), period, offset))
                })
                .collect();
            uringio::sleep(Duration::from_millis(500)).await;
            let cpu0 = args.pid.map(cpu_ns);
            let me0 = cpu_ns(std::process::id());
            let t0 = Instant::now();
            sh.measuring.set(true);
            uringio::sleep(Duration::from_secs_f64(args.secs)).await;
            sh.measuring.set(false);
            let elapsed = t0.elapsed();
            let cpu1 = args.pid.map(cpu_ns);
            let me = cpu_ns(std::process::id())
                .and_then(|b| me0.map(|a| b.saturating_sub(a)))
                .ok();
            sh.stop.set(true);
            for t in tasks {
                t.cancel();
            }
            let cpu = match (cpu0, cpu1) {
                (Some(Ok(a)), Some(Ok(b))) => Some(Ok(b.saturating_sub(a))),
                (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e)),
                _ => None,
            };
            (elapsed, cpu, me)
        }
    });
    let done = sh.done.get();
    let h = sh.hist.borrow();
    let unit = if args.kind == Kind::Http {
        "req/s"
    } else {
        "msgs/s"
    };
    let rate = done as f64 / elapsed.as_secs_f64();
    let mut line = format!(
        "{} {} conns {} size {} secs {:.1}{}: {:.0} {unit} p50 {:.1}us p99 {:.1}us p99.9 {:.1}us errors {}",
        if args.kind == Kind::Http {
            "http"
        } else {
            "echo"
        },
        args.addr,
        args.conns,
        args.size,
        elapsed.as_secs_f64(),
        args.rate.map_or(String::new(), |r| format!(" rate {r}")),
        rate,
        h.quantile(0.50) as f64 / 1e3,
        h.quantile(0.99) as f64 / 1e3,
        h.quantile(0.999) as f64 / 1e3,
        sh.errors.get(),
    );
    match cpu {
        Some(Ok(ns)) if done > 0 => {
            line += &format!(
                " server_cpu {:.0} ns/msg ({:.2} s)",
                ns as f64 / done as f64,
                ns as f64 / 1e9
            )
        }
        Some(Ok(_)) => line += " server_cpu n/a",
        Some(Err(e)) => line += &format!(" server_cpu error ({e})"),
        None => {}
    }
    if let Some(ns) = me.filter(|_| done > 0) {
        line += &format!(" client_cpu {:.0} ns/msg", ns as f64 / done as f64);
    }
    println!("{line}");
    if done == 0 {
        std::process::exit(1);
    }
}
