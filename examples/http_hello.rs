//! A minimal HTTP/1.1 plaintext server for wrk-style comparisons: every
//! request gets the same `200 OK` with `Hello, World!`, keep-alive.
//!
//! ```text
//! cargo run --release --example http_hello -- [ADDR] [--cores N] [--pin] [--backend epoll|io_uring|auto]
//!     [--api auto|ops|multishot]
//! ```
//! `--api ops`: a task per connection reading into its own buffer with
//! `read` and answering with `write_all`. `--api multishot`: one
//! `recv_multishot` per connection from a shared `BufRing` (1024 × 4 KiB
//! per core), parsed in place. `auto` (the default): multishot where the
//! kernel has multishot receive (io_uring, 6.0), ops elsewhere — at 256
//! connections multishot costs 0.89× the CPU per request of ops (README,
//! `benches/http.rs`).
//! Thread-per-core: each core runs its own loop and its own
//! `SO_REUSEPORT` listener on ADDR (default `127.0.0.1:8080`; port 0 is
//! joined by every core, as in `tcp_proxy`). The parser is
//! pipelining-safe: a read may hold several requests, or part of one;
//! each complete request (headers ended by an empty line; a
//! `Content-Length` body is skipped) gets one response, in order, and the
//! responses to everything read in one go leave in one write.
//! `Connection: close` closes after the response; a request head over
//! 8 KiB or a chunked body gets `400` and the connection closes. SIGINT or
//! SIGTERM stops every core.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use futures_util::StreamExt;
use uringio::buf::BufRing;
use uringio::channel;
use uringio::net::{TcpListener, TcpStream};
use uringio::{Backend, Runner};

#[path = "support/http_parse.rs"]
mod http_parse;

fn usage() -> ! {
    eprintln!(
        "usage: http_hello [ADDR] [--cores N] [--pin] [--backend epoll|io_uring|auto] \
         [--api auto|ops|multishot]"
    );
    std::process::exit(2);
}

async fn serve_conn(s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut inbuf: Vec<u8> = Vec::with_capacity(16384);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16384);
        }
        let (r, b) = s.read(inbuf).await;
        inbuf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Answer every complete request read so far, in order.
        let (used, close) = http_parse::answer(&inbuf, &mut out);
        inbuf.drain(..used);
        if !out.is_empty() {
            let (r, b) = s.write_all(out).await;
            out = b;
            out.clear();
            if r.is_err() {
                return;
            }
        }
        if close {
            let _ = s.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

/// `serve_conn` with one multishot receive (`--api multishot`): on
/// io_uring the kernel picks a ring buffer as bytes arrive, so there is
/// no receive SQE per request; a chunk holding whole requests is parsed
/// in place.
async fn serve_conn_multishot(s: TcpStream, ring: BufRing) {
    let _ = s.set_nodelay(true);
    let mut chunks = s.recv_multishot(&ring);
    let mut inbuf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    while let Some(c) = chunks.next().await {
        let Ok(c) = c else { return };
        let close = if inbuf.is_empty() {
            let (used, close) = http_parse::answer(&c, &mut out);
            inbuf.extend_from_slice(&c[used..]);
            close
        } else {
            inbuf.extend_from_slice(&c);
            let (used, close) = http_parse::answer(&inbuf, &mut out);
            inbuf.drain(..used);
            close
        };
        // The ring buffer goes back before we wait on the write.
        drop(c);
        if !out.is_empty() {
            let (r, b) = s.write_all(out).await;
            out = b;
            out.clear();
            if r.is_err() {
                return;
            }
        }
        if close {
            let _ = s.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

type Bound = (Mutex<Option<Result<SocketAddr, String>>>, Condvar);

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("default");
    let mut cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pin = false;
    let mut backend = Backend::Auto;
    // None: multishot where the kernel has it (io_uring, 6.0), else ops.
    let mut multishot: Option<bool> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cores" => {
                cores = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--pin" => pin = true,
            "--api" => {
                multishot = match args.next().as_deref() {
                    Some("ops") => Some(false),
                    Some("multishot") => Some(true),
                    Some("auto") => None,
                    _ => usage(),
                }
            }
            "--backend" => {
                backend = match args.next().as_deref() {
                    Some("epoll") => Backend::Epoll,
                    Some("io_uring") => Backend::IoUring,
                    Some("auto") => Backend::Auto,
                    _ => usage(),
                }
            }
            s if s.starts_with('-') => usage(),
            s => addr = s.parse().unwrap_or_else(|_| usage()),
        }
    }
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&set),
        None,
    );
    let bound: Arc<Bound> = Default::default();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..cores.max(1))
        .map(|_| {
            let (t, r) = channel::unbounded::<()>();
            (t, Some(r))
        })
        .unzip();
    let (txs, rxs) = (Arc::new(txs), Arc::new(Mutex::new(rxs)));
    let r = Runner::builder()
        .backend(backend)
        .thread_per_core(cores)
        .pin_cpus(pin)
        .launch(move |core| {
            let bound = bound.clone();
            let txs = txs.clone();
            let mut stop = rxs.lock().unwrap()[core.id].take().expect("one per core");
            async move {
                let (lock, cv) = &*bound;
                let listener = if core.id == 0 {
                    let r = TcpListener::bind_reuseport(addr)
                        .and_then(|l| l.local_addr().map(|a| (l, a)));
                    *lock.lock().unwrap() = Some(match &r {
                        Ok((_, a)) => Ok(*a),
                        Err(e) => Err(e.to_string()),
                    });
                    cv.notify_all();
                    match r {
                        Ok((l, a)) => {
                            println!("listening on {a} ({cores} cores)");
                            l
                        }
                        Err(e) => {
                            eprintln!("http_hello: cannot listen on {addr}: {e}");
                            std::process::exit(1);
                        }
                    }
                } else {
                    let mut g = lock.lock().unwrap();
                    while g.is_none() {
                        g = cv.wait(g).unwrap();
                    }
                    let Some(Ok(a)) = g.clone() else { return };
                    drop(g);
                    TcpListener::bind_reuseport(a).unwrap_or_else(|e| {
                        eprintln!("http_hello: cannot listen on {a}: {e}");
                        std::process::exit(1);
                    })
                };
                let multishot =
                    multishot.unwrap_or_else(|| uringio::driver::features().recv_multishot);
                let server = uringio::spawn(async move {
                    let mut ring: Option<BufRing> = None;
                    let mut incoming = listener.incoming();
                    while let Some(c) = incoming.next().await {
                        match c {
                            Ok(s) if multishot => {
                                let ring = match &ring {
                                    Some(r) => r.clone(),
                                    None => ring
                                        .insert(BufRing::new(1024, 4096).expect("a buffer ring"))
                                        .clone(),
                                };
                                uringio::spawn(serve_conn_multishot(s, ring)).detach()
                            }
                            Ok(s) => uringio::spawn(serve_conn(s)).detach(),
                            Err(_) => uringio::sleep(std::time::Duration::from_millis(100)).await,
                        }
                    }
                });
                let _signals = (core.id == 0).then(|| {
                    uringio::spawn(async move {
                        let mut int = uringio::signal::signal(libc::SIGINT);
                        let mut term = uringio::signal::signal(libc::SIGTERM);
                        futures_util::future::select(int.next(), term.next()).await;
                        for t in txs.iter() {
                            let _ = t.try_send(());
                        }
                    })
                });
                let _ = stop.recv().await;
                server.cancel();
            }
        });
    match r {
        Ok(_) => {
            let _ = writeln!(std::io::stdout(), "http_hello: stopped");
        }
        Err(e) => {
            eprintln!("http_hello: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::http_parse::*;

    #[test]
    fn parses_pipelined_and_partial_requests() {
        let two =
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n";
        let Parsed::Request { len, close: false } = parse(two) else {
            panic!()
        };
        assert!(matches!(
            parse(&two[len..]),
            Parsed::Request { close: false, .. }
        ));
        assert!(matches!(parse(&two[..10]), Parsed::Incomplete));
        let body = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab";
        assert!(matches!(parse(body), Parsed::Incomplete));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
            Parsed::Request { close: true, .. }
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Bad
        ));
    }
}
