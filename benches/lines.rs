//! Line-protocol benchmark: each request is a line, each reply a line.
//!
//! Servers, each on one thread pinned to CPU 0, all in one run:
//! - `streams-uring` / `streams-epoll`: uringio `streams::start_server`,
//!   `readline` + `write` + `drain` per request;
//! - `proto-uring` / `proto-epoll`: uringio's transport layer, a
//!   `Protocol` that writes back every complete line it receives;
//! - `tokio`: tokio `current_thread`, `BufReader::read_line` +
//!   `write_all`.
//!
//! The load: one uringio client thread on io_uring pinned to CPU 1, 64
//! connections (`LINES_CONNS`), each sending one line and waiting for its
//! reply before the next (ping-pong). Servers run round-robin for
//! `LINES_ROUNDS` rounds (default 5); the table gives medians, and the
//! ratios are medians of per-round ratios (each round's servers ran
//! under the same conditions).
//!
//! Environment: `LINES_SECS` measured seconds per run (default 5),
//! `LINES_WARMUP` (default 1), `LINES_LEN` line length in bytes with its
//! newline (default 64), `LINES_ONLY` a comma-separated subset of the
//! server names.
//!
//! ```text
//! cargo bench --bench lines
//! ```

mod common;
use common::*;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::unix::thread::JoinHandleExt;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use uringio::{Backend, Runner};

const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    StreamsUring,
    StreamsEpoll,
    ProtoUring,
    ProtoEpoll,
    Tokio,
}

impl Server {
    const ALL: [Server; 5] = [
        Server::StreamsUring,
        Server::StreamsEpoll,
        Server::ProtoUring,
        Server::ProtoEpoll,
        Server::Tokio,
    ];
    fn name(self) -> &'static str {
        match self {
            Server::StreamsUring => "streams-uring",
            Server::StreamsEpoll => "streams-epoll",
            Server::ProtoUring => "proto-uring",
            Server::ProtoEpoll => "proto-epoll",
            Server::Tokio => "tokio",
        }
    }
}

type Ready = mpsc::Sender<(SocketAddr, Box<dyn FnOnce() + Send>)>;

struct Running {
    addr: SocketAddr,
    clock: libc::clockid_t,
    stop: Box<dyn FnOnce()>,
    thread: std::thread::JoinHandle<()>,
}

fn start(kind: Server) -> Running {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        pin_to(SERVER_CPU);
        match kind {
            Server::StreamsUring => streams_server(Backend::IoUring, tx),
            Server::StreamsEpoll => streams_server(Backend::Epoll, tx),
            Server::ProtoUring => proto_server(Backend::IoUring, tx),
            Server::ProtoEpoll => proto_server(Backend::Epoll, tx),
            Server::Tokio => tokio_server(tx),
        }
    });
    let (addr, stop) = rx.recv().expect("server failed to start");
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (waiting in its loop) and joinable.
    let r = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
    assert_eq!(r, 0, "pthread_getcpuclockid");
    Running {
        addr,
        clock,
        stop: Box::new(stop),
        thread,
    }
}

fn runner(backend: Backend) -> Runner {
    let rt = Runner::builder()
        .backend(backend)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a uringio loop on {backend}: {e}"));
    assert_eq!(rt.backend(), backend);
    rt
}

fn streams_server(backend: Backend, ready: Ready) {
    let mut rt = runner(backend);
    let handle = rt.handle();
    rt.run(async move {
        let server = uringio::streams::start_server(
            |mut r, w| async move {
                loop {
                    let line = r.readline().await?;
                    if line.is_empty() {
                        return Ok::<_, std::io::Error>(());
                    }
                    w.write(&line);
                    w.drain().await?;
                }
            },
            "127.0.0.1:0",
        )
        .await
        .expect("start_server");
        let addr = server.local_addrs()[0];
        std::mem::forget(server);
        ready
            .send((addr, Box::new(move || handle.stop())))
            .expect("main thread gone");
    });
    rt.run_forever();
}

/// Writes back every complete line; keeps a partial one for later.
struct LineProto {
    t: Option<uringio::transport::Transport>,
    partial: Vec<u8>,
}

impl uringio::transport::Protocol for LineProto {
    fn connection_made(&mut self, t: uringio::transport::Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = self.t.as_ref().expect("connected");
        let Some(last) = data.iter().rposition(|&b| b == b'\n') else {
            self.partial.extend_from_slice(data);
            return;
        };
        if self.partial.is_empty() {
            t.write(&data[..=last]);
        } else {
            self.partial.extend_from_slice(&data[..=last]);
            t.write(&self.partial);
            self.partial.clear();
        }
        self.partial.extend_from_slice(&data[last + 1..]);
    }
}

fn proto_server(backend: Backend, ready: Ready) {
    let mut rt = runner(backend);
    let handle = rt.handle();
    rt.run(async move {
        let server = uringio::transport::create_server(
            || LineProto {
                t: None,
                partial: Vec::new(),
            },
            "127.0.0.1:0",
        )
        .await
        .expect("create_server");
        let addr = server.local_addrs()[0];
        std::mem::forget(server);
        ready
            .send((addr, Box::new(move || handle.stop())))
            .expect("main thread gone");
    });
    rt.run_forever();
}

fn tokio_server(ready: Ready) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        ready
            .send((
                addr,
                Box::new(move || {
                    let _ = stop_tx.send(());
                }),
            ))
            .expect("main thread gone");
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                conn = listener.accept() => {
                    let Ok((s, _)) = conn else { continue };
                    s.set_nodelay(true).expect("TCP_NODELAY");
                    tokio::spawn(async move {
                        let (r, mut w) = s.into_split();
                        let mut r = BufReader::new(r);
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match r.read_line(&mut line).await {
                                Ok(n) if n > 0 => {}
                                _ => return,
                            }
                            if w.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        }
    });
}

struct Sample {
    per_sec: f64,
    cpu_ns: f64,
}

fn load(
    client: &mut Runner,
    srv: &Running,
    conns: usize,
    len: usize,
    secs: f64,
    warmup: f64,
) -> Sample {
    let addr = srv.addr;
    let clock = srv.clock;
    client.run(async move {
        let count = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let c = uringio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            c.set_nodelay(true).expect("TCP_NODELAY");
            let count = count.clone();
            let stop = stop.clone();
            tasks.push(uringio::spawn(async move {
                let mut out = vec![b'x'; len];
                *out.last_mut().expect("len > 0") = b'\n';
                let mut back = Vec::with_capacity(len);
                while !stop.get() {
                    let (res, b) = c.write_all(out).await;
                    out = b;
                    res.expect("client write");
                    back.clear();
                    while back.len() < len {
                        let (res, b) = c.read(back).await;
                        back = b;
                        match res {
                            Ok(0) => panic!("server closed the connection"),
                            Ok(_) => {}
                            Err(e) => panic!("client read: {e}"),
                        }
                    }
                    count.set(count.get() + 1);
                }
            }));
        }
        uringio::sleep(Duration::from_secs_f64(warmup)).await;
        let (n0, c0, t0) = (count.get(), thread_cpu(clock), Instant::now());
        uringio::sleep(Duration::from_secs_f64(secs)).await;
        let (n1, c1, t1) = (count.get(), thread_cpu(clock), Instant::now());
        stop.set(true);
        for t in tasks {
            t.await.expect("client task");
        }
        let n = (n1 - n0) as f64;
        Sample {
            per_sec: n / (t1 - t0).as_secs_f64(),
            cpu_ns: (c1 - c0).as_nanos() as f64 / n.max(1.0),
        }
    })
}

fn main() {
    let secs: f64 = env_num("LINES_SECS", 5.0);
    let warmup: f64 = env_num("LINES_WARMUP", 1.0);
    let rounds: usize = env_num("LINES_ROUNDS", 5usize).max(1);
    let conns: usize = env_num("LINES_CONNS", 64usize);
    let len: usize = env_num("LINES_LEN", 64usize).max(1);
    let servers: Vec<Server> = match std::env::var("LINES_ONLY") {
        Ok(v) if !v.trim().is_empty() => Server::ALL
            .into_iter()
            .filter(|s| v.split(',').any(|k| k.trim() == s.name()))
            .collect(),
        _ => Server::ALL.to_vec(),
    };
    pin_to(CLIENT_CPU);
    let mut client = runner(Backend::IoUring);
    println!(
        "lines: {conns} connections, {len}-byte lines, ping-pong, {secs}s (+{warmup}s warm-up) \
         per run, {rounds} rounds; server CPU {SERVER_CPU}, uringio client CPU {CLIENT_CPU}"
    );
    let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for i in 0..servers.len() {
            let idx = (i + round) % servers.len();
            let srv = start(servers[idx]);
            let s = load(&mut client, &srv, conns, len, secs, warmup);
            (srv.stop)();
            srv.thread.join().expect("server thread");
            eprintln!(
                "  round {}  {:<14} {:>10.0} req/s  server {:>6.0} ns/req",
                round + 1,
                servers[idx].name(),
                s.per_sec,
                s.cpu_ns
            );
            samples[idx].push(s);
        }
    }
    let base = |name: Server| servers.iter().position(|&s| s == name);
    // Medians of per-round ratios against `b`.
    let ratio = |i: usize, b: Option<usize>, f: &dyn Fn(&Sample) -> f64| -> String {
        match b {
            Some(b) => format!(
                "{:.2}",
                median(
                    (0..rounds)
                        .map(|r| f(&samples[i][r]) / f(&samples[b][r]))
                        .collect()
                )
            ),
            None => "-".into(),
        }
    };
    let tokio = base(Server::Tokio);
    println!();
    println!(
        "| server | req/s | server CPU ns/req | req/s ÷ tokio | CPU ÷ tokio | req/s ÷ proto (same backend) |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, s) in servers.iter().enumerate() {
        let proto = match s {
            Server::StreamsUring => base(Server::ProtoUring),
            Server::StreamsEpoll => base(Server::ProtoEpoll),
            _ => None,
        };
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} |",
            s.name(),
            median(samples[i].iter().map(|x| x.per_sec).collect()),
            median(samples[i].iter().map(|x| x.cpu_ns).collect()),
            ratio(i, tokio, &|x| x.per_sec),
            ratio(i, tokio, &|x| x.cpu_ns),
            ratio(i, proto, &|x| x.per_sec),
        );
    }
}
