//! A TCP echo server: every byte received on a connection is written back.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR] [--backend epoll|io_uring|auto] [--api ops|protocol]
//! ```
//! `--api ops` (the default, the faster of the two today: see README's
//! benchmark table) runs a task per connection with owned-buffer `read` /
//! `write_all`; `--api protocol` serves through the transport layer
//! (`transport::create_server` with an echo `Protocol`).
//! `ADDR` defaults to `127.0.0.1:7000`. Without `--backend` the loop picks
//! io_uring when the kernel allows it and falls back to epoll otherwise
//! (`URINGIO_BACKEND` overrides that choice). Runs until killed; on SIGINT
//! or SIGTERM it stops cleanly: the loop cancels its in-flight ops and
//! waits for their completions, so the port is free the moment the process
//! is gone. (A process killed without that chance — SIGKILL — leaves the
//! kernel to tear the ring down in the background: an in-flight accept
//! keeps the listening socket open for a few more milliseconds.)

use std::io::Write;
use std::net::SocketAddr;

use futures_util::StreamExt;
use uringio::net::{TcpListener, TcpStream};
use uringio::{Backend, Runner};

/// Bytes read per `read` call.
const BUF_SIZE: usize = 16 * 1024;

/// How long to pause accepting when the process is out of descriptors.
const BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Errors that repeat on every accept until something is freed.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn usage() -> ! {
    eprintln!("usage: echo_server [ADDR] [--backend epoll|io_uring|auto] [--api ops|protocol]");
    std::process::exit(2);
}

/// Which layer serves the connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Ops,
    Protocol,
}

fn parse_args() -> (SocketAddr, Backend, Api) {
    let mut addr: SocketAddr = "127.0.0.1:7000".parse().expect("default address");
    let mut backend = Backend::Auto;
    let mut api = Api::Ops;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let api_value = match a.as_str() {
            "--api" => Some(args.next().unwrap_or_else(|| usage())),
            s if s.starts_with("--api=") => Some(s["--api=".len()..].to_string()),
            _ => None,
        };
        if let Some(v) = api_value {
            api = match v.as_str() {
                "ops" => Api::Ops,
                "protocol" => Api::Protocol,
                _ => usage(),
            };
            continue;
        }
        let value = match a.as_str() {
            "--backend" => args.next().unwrap_or_else(|| usage()),
            "-h" | "--help" => usage(),
            s if s.starts_with("--backend=") => s["--backend=".len()..].to_string(),
            s if s.starts_with('-') => usage(),
            s => {
                addr = s.parse().unwrap_or_else(|e| {
                    eprintln!("echo_server: bad address {s:?}: {e}");
                    std::process::exit(2);
                });
                continue;
            }
        };
        backend = match value.as_str() {
            "epoll" => Backend::Epoll,
            "io_uring" | "iouring" | "uring" => Backend::IoUring,
            "auto" => Backend::Auto,
            _ => usage(),
        };
    }
    (addr, backend, api)
}

/// The transport layer's echo: writes back what it receives.
struct EchoProtocol(Option<uringio::transport::Transport>);

impl uringio::transport::Protocol for EchoProtocol {
    fn connection_made(&mut self, t: uringio::transport::Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
    fn connection_lost(&mut self, _: Option<std::io::Error>) {
        self.0 = None;
    }
}

/// Echoes until the peer closes (or the connection fails).
async fn echo(stream: TcpStream) {
    // One buffer per connection, reused: reads fill its spare capacity, so
    // it is cleared before each read.
    let mut buf = Vec::with_capacity(BUF_SIZE);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
    }
}

fn main() {
    let (addr, backend, api) = parse_args();
    let mut runner = match Runner::builder().backend(backend).build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo_server: cannot start the loop: {e}");
            std::process::exit(1);
        }
    };
    match runner.fallback_reason() {
        Some(why) => println!("backend: {} (fell back: {why})", runner.backend()),
        None => println!("backend: {}", runner.backend()),
    }
    runner.run(async move {
        if api == Api::Protocol {
            // The server backs off on EMFILE itself and serves until the
            // loop stops.
            match uringio::transport::create_server(|| EchoProtocol(None), addr).await {
                Ok(server) => println!("listening on {} (protocol)", server.local_addrs()[0]),
                Err(e) => {
                    eprintln!("echo_server: cannot listen on {addr}: {e}");
                    std::process::exit(1);
                }
            }
            let mut int = uringio::signal::signal(libc::SIGINT);
            let mut term = uringio::signal::signal(libc::SIGTERM);
            futures_util::future::select(int.next(), term.next()).await;
            let _ = writeln!(std::io::stdout(), "echo_server: stopping");
            return;
        }
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo_server: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        println!("listening on {}", listener.local_addr().unwrap_or(addr));
        uringio::spawn(async move {
            let mut incoming = listener.incoming();
            // Out of descriptors (or memory), every accept fails at once
            // until connections close: back off instead of spinning, as
            // asyncio's servers do, and say so once per episode.
            let mut starved = false;
            while let Some(conn) = incoming.next().await {
                match conn {
                    Ok(stream) => {
                        if starved {
                            eprintln!("echo_server: accepting again");
                            starved = false;
                        }
                        // Small request/response traffic: send replies at once.
                        let _ = stream.set_nodelay(true);
                        uringio::spawn(echo(stream)).detach();
                    }
                    Err(e) if out_of_resources(&e) => {
                        if !starved {
                            eprintln!(
                                "echo_server: accept failed: {e}; retrying every {BACKOFF:?}"
                            );
                            starved = true;
                        }
                        uringio::sleep(BACKOFF).await;
                    }
                    // Anything else (a connection reset before it was
                    // accepted, ...): report and keep serving.
                    Err(e) => eprintln!("echo_server: accept failed: {e}"),
                }
            }
        })
        .detach();
        let mut int = uringio::signal::signal(libc::SIGINT);
        let mut term = uringio::signal::signal(libc::SIGTERM);
        futures_util::future::select(int.next(), term.next()).await;
        // Not `println!`: stdout may be a pipe nobody reads any more.
        let _ = writeln!(std::io::stdout(), "echo_server: stopping");
        // Returning ends `run`: the tasks (listener, connections) are
        // dropped, and dropping the runner waits for the kernel to hand
        // back everything still in flight.
    });
}
