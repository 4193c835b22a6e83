//! A minimal HTTP/1.1 plaintext server for wrk-style comparisons: every
//! request gets the same `200 OK` with `Hello, World!`, keep-alive.
//!
//! ```text
//! cargo run --release --example http_hello -- [ADDR] [--cores N] [--pin] [--backend epoll|io_uring|auto]
//! ```
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
use uringio::channel;
use uringio::net::{TcpListener, TcpStream};
use uringio::{Backend, Runner};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const MAX_HEAD: usize = 8192;

fn usage() -> ! {
    eprintln!("usage: http_hello [ADDR] [--cores N] [--pin] [--backend epoll|io_uring|auto]");
    std::process::exit(2);
}

/// One parsed request: how many bytes it took, and whether the client
/// asked to close.
enum Parsed {
    Request { len: usize, close: bool },
    Incomplete,
    Bad,
}

/// Parses the request at the start of `buf`.
fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    if end > MAX_HEAD {
        return Parsed::Bad;
    }
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    if !request_line.ends_with(b" HTTP/1.1") && !request_line.ends_with(b" HTTP/1.0") {
        return Parsed::Bad;
    }
    let mut close = request_line.ends_with(b" HTTP/1.0");
    let mut body = 0usize;
    for l in lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => body = n,
                None => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Bad;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    let len = end + 4 + body;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    Parsed::Request { len, close }
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
        let mut used = 0;
        let mut close = false;
        loop {
            match parse(&inbuf[used..]) {
                Parsed::Request { len, close: c } => {
                    out.extend_from_slice(RESPONSE);
                    used += len;
                    if c {
                        close = true;
                        break;
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Bad => {
                    out.extend_from_slice(BAD);
                    close = true;
                    break;
                }
            }
        }
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

type Bound = (Mutex<Option<Result<SocketAddr, String>>>, Condvar);

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("default");
    let mut cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pin = false;
    let mut backend = Backend::Auto;
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
                let server = uringio::spawn(async move {
                    let mut incoming = listener.incoming();
                    while let Some(c) = incoming.next().await {
                        match c {
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
    use super::*;

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
