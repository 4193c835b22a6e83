//! A thread-per-core TCP proxy: every connection to LISTEN is relayed to
//! UPSTREAM with `net::copy_bidirectional`.
//!
//! ```text
//! cargo run --release --example tcp_proxy -- LISTEN UPSTREAM [--cores N] [--pin]
//!     [--backend epoll|io_uring|auto] [--mode auto|splice|buffered] [--stats]
//! ```
//! Each of the N cores (default: every CPU) runs its own loop with its own
//! `SO_REUSEPORT` listener on LISTEN, so the kernel spreads connections
//! between cores and no connection ever moves between threads. `--pin`
//! pins core `i` to CPU `i`. `LISTEN` may have port 0: the first core
//! binds, the others join the port it got, and the address is printed
//! (`listening on ...`). Out of descriptors, accepting backs off (100 ms)
//! like `echo_server`. A connection to an upstream that refuses is closed.
//! `--stats` prints one line per second: connections open and accepted,
//! failed upstream connects, and bytes each way (client → upstream,
//! upstream → client) over the last second. SIGINT or SIGTERM stops every
//! core cleanly (exit status 0).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use uringio::channel;
use uringio::net::{self, CopyMode, TcpListener, TcpStream};
use uringio::{Backend, Runner};

const BACKOFF: Duration = Duration::from_millis(100);

fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn usage() -> ! {
    eprintln!(
        "usage: tcp_proxy LISTEN UPSTREAM [--cores N] [--pin] [--backend epoll|io_uring|auto] \
         [--mode auto|splice|buffered] [--stats]"
    );
    std::process::exit(2);
}

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    cores: usize,
    pin: bool,
    backend: Backend,
    mode: CopyMode,
    stats: bool,
}

fn parse_args() -> Args {
    let mut pos = Vec::new();
    let mut cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut pin, mut stats) = (false, false);
    let mut backend = Backend::Auto;
    let mut mode = CopyMode::Auto;
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
            "--cores" => cores = value().parse().unwrap_or_else(|_| usage()),
            "--pin" => pin = true,
            "--stats" => stats = true,
            "--backend" => {
                backend = match value().as_str() {
                    "epoll" => Backend::Epoll,
                    "io_uring" | "iouring" | "uring" => Backend::IoUring,
                    "auto" => Backend::Auto,
                    _ => usage(),
                }
            }
            "--mode" => {
                mode = match value().as_str() {
                    "auto" => CopyMode::Auto,
                    "splice" => CopyMode::Splice,
                    "buffered" => CopyMode::Buffered,
                    _ => usage(),
                }
            }
            s if s.starts_with('-') => usage(),
            s => pos.push(s.to_string()),
        }
    }
    if pos.len() != 2 || cores == 0 {
        usage();
    }
    let addr = |s: &str| -> SocketAddr {
        s.parse().unwrap_or_else(|e| {
            eprintln!("tcp_proxy: bad address {s:?}: {e}");
            std::process::exit(2);
        })
    };
    Args {
        listen: addr(&pos[0]),
        upstream: addr(&pos[1]),
        cores,
        pin,
        backend,
        mode,
        stats,
    }
}

/// The address the first core bound (or why it could not), for the others.
type Bound = (Mutex<Option<Result<SocketAddr, String>>>, Condvar);

/// Counters shared by every core.
#[derive(Default)]
struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    upstream_failed: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

/// Relays one connection, adding to the byte counters as it goes.
async fn relay(client: TcpStream, upstream: SocketAddr, mode: CopyMode, c: Arc<Counters>) {
    c.accepted.fetch_add(1, Relaxed);
    c.open.fetch_add(1, Relaxed);
    let up = match TcpStream::connect(upstream).await {
        Ok(u) => u,
        Err(_) => {
            c.upstream_failed.fetch_add(1, Relaxed);
            c.open.fetch_sub(1, Relaxed);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let mut copy = std::pin::pin!(net::copy_bidirectional(&client, &up).mode(mode));
    let mut seen = (0u64, 0u64);
    // Polled by hand so the counters move while bytes flow, not only at
    // the end of the connection.
    let _ = std::future::poll_fn(|cx| {
        let r = copy.as_mut().poll(cx);
        let now = copy.counts();
        c.to_upstream.fetch_add(now.0 - seen.0, Relaxed);
        c.to_client.fetch_add(now.1 - seen.1, Relaxed);
        seen = now;
        r
    })
    .await;
    c.open.fetch_sub(1, Relaxed);
}

async fn serve(listener: TcpListener, upstream: SocketAddr, mode: CopyMode, c: Arc<Counters>) {
    let mut incoming = listener.incoming();
    let mut starved = false;
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(s) => {
                starved = false;
                uringio::spawn(relay(s, upstream, mode, c.clone())).detach();
            }
            Err(e) if out_of_resources(&e) => {
                if !starved {
                    eprintln!("tcp_proxy: accept failed: {e}; retrying every {BACKOFF:?}");
                    starved = true;
                }
                uringio::sleep(BACKOFF).await;
            }
            Err(e) => eprintln!("tcp_proxy: accept failed: {e}"),
        }
    }
}

fn main() {
    let args = parse_args();
    // Block the stop signals before any thread starts: every core thread
    // inherits the mask, so a process-wide SIGTERM waits for the signalfd
    // of whichever core reads it first (see uringio::signal's docs).
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&set),
        None,
    );

    let counters = Arc::new(Counters::default());
    let stopping = Arc::new(AtomicBool::new(false));
    // The first core binds; the others join the port it got.
    let bound: Arc<Bound> = Default::default();
    let mut stop_txs = Vec::new();
    let mut stop_rxs = Vec::new();
    for _ in 0..args.cores {
        let (tx, rx) = channel::unbounded::<()>();
        stop_txs.push(tx);
        stop_rxs.push(Some(rx));
    }
    let stop_rxs = Arc::new(Mutex::new(stop_rxs));
    let stop_txs = Arc::new(stop_txs);

    if args.stats {
        let (c, stopping) = (counters.clone(), stopping.clone());
        std::thread::spawn(move || {
            let (mut up, mut down) = (0, 0);
            while !stopping.load(Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let (u, d) = (c.to_upstream.load(Relaxed), c.to_client.load(Relaxed));
                let _ = writeln!(
                    std::io::stdout(),
                    "stats: open {} accepted {} upstream_failed {} to_upstream {} B/s to_client {} B/s",
                    c.open.load(Relaxed),
                    c.accepted.load(Relaxed),
                    c.upstream_failed.load(Relaxed),
                    u - up,
                    d - down
                );
                (up, down) = (u, d);
            }
        });
    }

    let (listen, upstream, mode, cores) = (args.listen, args.upstream, args.mode, args.cores);
    let launched = {
        let counters = counters.clone();
        Runner::builder()
            .backend(args.backend)
            .thread_per_core(cores)
            .pin_cpus(args.pin)
            .launch(move |core| {
                let counters = counters.clone();
                let bound = bound.clone();
                let stop_txs = stop_txs.clone();
                let mut stop_rx = stop_rxs.lock().unwrap()[core.id]
                    .take()
                    .expect("one per core");
                async move {
                    let (lock, cv) = &*bound;
                    let listener = if core.id == 0 {
                        let r = TcpListener::bind_reuseport(listen);
                        let shared = match &r {
                            Ok(l) => l.local_addr().map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        *lock.lock().unwrap() = Some(shared.clone());
                        cv.notify_all();
                        match (r, shared) {
                            (Err(e), Ok(_)) => {
                                eprintln!("tcp_proxy: cannot listen on {listen}: {e}");
                                std::process::exit(1);
                            }
                            (Ok(l), Ok(a)) => {
                                let f = uringio::driver::features();
                                println!(
                                    "listening on {a} ({} cores, {})",
                                    cores,
                                    if f.io_uring { "io_uring" } else { "epoll" }
                                );
                                l
                            }
                            (_, Err(e)) => {
                                eprintln!("tcp_proxy: cannot listen on {listen}: {e}");
                                std::process::exit(1);
                            }
                        }
                    } else {
                        let mut g = lock.lock().unwrap();
                        while g.is_none() {
                            g = cv.wait(g).unwrap();
                        }
                        let addr = match g.clone().unwrap() {
                            Ok(a) => a,
                            Err(_) => return,
                        };
                        drop(g);
                        match TcpListener::bind_reuseport(addr) {
                            Ok(l) => l,
                            Err(e) => {
                                eprintln!(
                                    "tcp_proxy: core {}: cannot listen on {addr}: {e}",
                                    core.id
                                );
                                std::process::exit(1);
                            }
                        }
                    };
                    let server = uringio::spawn(serve(listener, upstream, mode, counters));
                    // Core 0 reads the stop signals and tells every core.
                    let signals = (core.id == 0).then(|| {
                        let txs = stop_txs.clone();
                        uringio::spawn(async move {
                            let mut int = uringio::signal::signal(libc::SIGINT);
                            let mut term = uringio::signal::signal(libc::SIGTERM);
                            futures_util::future::select(int.next(), term.next()).await;
                            for tx in txs.iter() {
                                let _ = tx.try_send(());
                            }
                        })
                    });
                    let _ = stop_rx.recv().await;
                    server.cancel();
                    drop(signals);
                    // Returning ends this core's loop: its connections are
                    // dropped and its in-flight ops cancelled and reaped.
                }
            })
    };
    stopping.store(true, Relaxed);
    match launched {
        Ok(_) => {
            let _ = writeln!(std::io::stdout(), "tcp_proxy: stopped");
        }
        Err(e) => {
            eprintln!("tcp_proxy: {e}");
            std::process::exit(1);
        }
    }
}
