//! `http_hello` written the way tokio users write it, for comparisons:
//! the same fixed response and the same pipelining-safe parser
//! (`examples/support/http_parse.rs`), on tokio `current_thread`.
//!
//! ```text
//! cargo run --release --example http_hello_tokio -- [ADDR] [--cores N] [--pin]
//! ```
//! One `current_thread` runtime per thread (`--cores N`, default 1), each
//! with its own `SO_REUSEPORT` listener on ADDR (default
//! `127.0.0.1:8080`; port 0 is joined by every thread); `--pin` pins
//! thread `i` to CPU `i`. Per connection: `tokio::spawn`, `read_buf` into a
//! `Vec`, answer every complete request read so far, one `write_all`.
//! Prints `listening on ADDR (N cores)`; stops on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::mpsc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[path = "support/http_parse.rs"]
mod http_parse;

fn usage() -> ! {
    eprintln!("usage: http_hello_tokio [ADDR] [--cores N] [--pin]");
    std::process::exit(2);
}

async fn serve_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut inbuf: Vec<u8> = Vec::with_capacity(16384);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16384);
        }
        match s.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (used, close) = http_parse::answer(&inbuf, &mut out);
        inbuf.drain(..used);
        if !out.is_empty() {
            let r = s.write_all(&out).await;
            out.clear();
            if r.is_err() {
                return;
            }
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("default");
    let mut cores = 1usize;
    let mut pin = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cores" => {
                cores = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "--pin" => pin = true,
            s if s.starts_with('-') => usage(),
            s => addr = s.parse().unwrap_or_else(|_| usage()),
        }
    }
    // Blocked in every thread (they inherit the mask); this one waits for
    // them.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    let _ = set.thread_block();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (bound_tx, bound_rx) = mpsc::channel::<SocketAddr>();
    let mut threads = Vec::new();
    for id in 0..cores {
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let bound_tx = bound_tx.clone();
        threads.push(std::thread::spawn(move || {
            if pin {
                let mut set = nix::sched::CpuSet::new();
                if set.set(id % cpus).is_ok() {
                    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                // Thread 0 binds ADDR; the others join the port it got.
                let at = if id == 0 {
                    addr
                } else {
                    rx.recv().expect("bound")
                };
                let l = listener(at).unwrap_or_else(|e| {
                    eprintln!("http_hello_tokio: cannot listen on {at}: {e}");
                    std::process::exit(1);
                });
                let _ = bound_tx.send(l.local_addr().expect("local_addr"));
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            tokio::spawn(serve_conn(s));
                        }
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
            });
        }));
        if id == 0 {
            let a = bound_rx.recv().expect("thread 0 bound");
            println!("listening on {a} ({cores} cores)");
            addr = a;
        } else {
            let _ = tx.send(addr);
            let _ = bound_rx.recv();
        }
    }
    let _ = set.wait();
    println!("http_hello_tokio: stopped");
    std::process::exit(0);
}
