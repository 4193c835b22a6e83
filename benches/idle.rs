//! Memory per idle connection: a server holds N connections that send
//! nothing; its resident set (VmRSS) is read before and after they open.
//!
//! ```text
//! cargo bench --bench idle                 # 10,000 connections
//! IDLE_CONNS=2000 cargo bench --bench idle
//! ```
//! Each server runs in its own process (this binary re-run with
//! `--server KIND`), so its RSS is its own. Servers: the transport layer's
//! Protocol echo on io_uring and on epoll, the raw-op echo (16 KiB read
//! buffer per connection, as `examples/echo_server`), and tokio
//! `current_thread` with a 4 KiB read buffer per connection.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uringio::{Backend, Runner};

const KINDS: [&str; 4] = ["uring-proto", "epoll-proto", "uring-ops", "tokio"];

fn raise_fd_limit() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("setrlimit");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

struct Echo(Option<uringio::transport::Transport>);

impl uringio::transport::Protocol for Echo {
    fn connection_made(&mut self, t: uringio::transport::Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
}

/// Runs one server until stdin closes; prints its address first.
fn server(kind: &str) {
    raise_fd_limit();
    let say = |addr: std::net::SocketAddr| {
        println!("{addr}");
        std::io::stdout().flush().expect("stdout");
    };
    // The parent closes our stdin to stop us.
    let stdin_closed = || {
        std::thread::spawn(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
            std::process::exit(0);
        });
    };
    match kind {
        "uring-proto" | "epoll-proto" | "uring-ops" => {
            let backend = if kind == "epoll-proto" {
                Backend::Epoll
            } else {
                Backend::IoUring
            };
            let mut r = Runner::builder().backend(backend).build().expect("loop");
            r.run(async move {
                if kind == "uring-ops" {
                    let l = uringio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                    say(l.local_addr().expect("addr"));
                    stdin_closed();
                    loop {
                        let (s, _) = l.accept().await.expect("accept");
                        uringio::spawn(async move {
                            let mut buf = Vec::with_capacity(16 * 1024);
                            loop {
                                buf.clear();
                                let (res, b) = s.read(buf).await;
                                buf = b;
                                if !matches!(res, Ok(n) if n > 0) {
                                    return;
                                }
                                let (res, b) = s.write_all(buf).await;
                                buf = b;
                                if res.is_err() {
                                    return;
                                }
                            }
                        })
                        .detach();
                    }
                }
                let s = uringio::transport::create_server(|| Echo(None), "127.0.0.1:0")
                    .await
                    .expect("server");
                say(s.local_addrs()[0]);
                stdin_closed();
                s.serve_forever().await;
            });
        }
        "tokio" => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                say(l.local_addr().expect("addr"));
                stdin_closed();
                loop {
                    let (mut s, _) = l.accept().await.expect("accept");
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(n) if n > 0 => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                                _ => return,
                            }
                        }
                    });
                }
            });
        }
        other => panic!("unknown server {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--server") {
        return server(&args[i + 1]);
    }
    raise_fd_limit();
    let conns: usize = std::env::var("IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let exe = std::env::current_exe().expect("current_exe");
    println!("idle: {conns} idle connections per server; server RSS before and after");
    println!("| server | RSS before (KiB) | RSS after (KiB) | bytes per connection |");
    println!("|---|---|---|---|");
    for kind in KINDS {
        let mut child = Command::new(&exe)
            .args(["--server", kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address");
        let addr: std::net::SocketAddr = line.trim().parse().expect("address");
        std::thread::sleep(Duration::from_millis(200));
        let before = rss_kib(child.id());
        let mut open = Vec::with_capacity(conns);
        for _ in 0..conns {
            let s = std::net::TcpStream::connect(addr).expect("connect");
            open.push(s);
        }
        // One echo on the last connection proves the server is serving;
        // then let it settle.
        {
            use std::io::Read;
            let s = open.last_mut().expect("a connection");
            s.write_all(b"ping").expect("ping");
            let mut b = [0u8; 4];
            s.read_exact(&mut b).expect("pong");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = rss_kib(child.id());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            after = rss_kib(child.id());
        }
        let per = (after.saturating_sub(before) * 1024) as f64 / conns as f64;
        println!("| {kind} | {before} | {after} | {per:.0} |");
        drop(open);
        drop(child.stdin.take());
        let _ = child.wait();
    }
}
