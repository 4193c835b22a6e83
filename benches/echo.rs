//! Echo benchmark: uringio on io_uring, uringio on epoll and tokio
//! `current_thread`, same workload, same run.
//!
//! Each server runs on one thread pinned to CPU 0. The load comes from one
//! client thread pinned to CPU 1: a uringio loop on io_uring (the same
//! client for every server; `ECHO_CLIENT=tokio` uses a tokio client
//! instead) with 64 connections, each sending a message and waiting for the
//! whole echo before sending the next (ping-pong). Every accepted and
//! connecting socket gets `TCP_NODELAY`, on every server. monoio (another
//! io_uring runtime) runs the same echo loop as a fourth server, for
//! reference.
//!
//! Reported per server: echoed messages per second, the server thread's CPU
//! time per message (`CLOCK_THREAD_CPUTIME_ID` of the server thread, read at
//! the edges of the measured window) and both as a ratio to tokio. Servers
//! are run alternately, several rounds, and the medians are printed.
//!
//! Environment:
//! - `ECHO_SECS`   seconds measured per run (default 10)
//! - `ECHO_WARMUP` seconds of warm-up per run, not measured (default 1)
//! - `ECHO_SIZES`  message sizes in bytes, comma-separated (default 1024)
//! - `ECHO_ROUNDS` rounds of all servers, alternated (default 3)
//! - `ECHO_CONNS`  connections (default 64)
//! - `ECHO_ONLY`   comma-separated subset of
//!   `uring,epoll,uring-proto,epoll-proto,tokio,monoio` (the `-proto`
//!   servers use the transport layer: a `Protocol` echo), or `raw-uring`:
//!   the floor, an echo on a bare io_uring with no runtime at all (see
//!   `raw_uring_server`; only run when named), or `raw-epoll`: the same
//!   on a bare edge-triggered epoll (`raw_epoll_server`)
//! - `ECHO_CLIENT` `uringio` (default) or `tokio`: the load generator
//! - `ECHO_QUIET_WAIT` seconds to wait before each run for other processes
//!   to use under 0.1 CPU (default 30; 0 to not wait). Runs that still saw
//!   other load are counted in a warning under the table.
//! - `ECHO_RATE`   also run at these offered loads (total msgs/s,
//!   comma-separated), each connection paced by timers. At saturation both
//!   threads are always busy, so server CPU per message is just the inverse
//!   of throughput; below saturation the server idles and CPU per message
//!   shows what each runtime really spends (wake-ups included).
//! - `ECHO_RETRY`  re-run a run during which other processes used more
//!   than 0.1 CPU, up to this many times, keeping the least disturbed
//!   (default 0). On a machine shared with compilers this keeps the
//!   throughput columns meaningful.
//! - `ECHO_SATURATE` `0` to skip the saturating load (only the `ECHO_RATE`
//!   ones run)
//!
//! ```text
//! cargo bench --bench echo
//! ECHO_SECS=3 ECHO_SIZES=64,1024,16384 cargo bench --bench echo
//! ECHO_RATE=50000,150000 cargo bench --bench echo
//! ```

mod common;
use common::*;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::unix::thread::JoinHandleExt;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uringio::{Backend, Runner};

const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
/// Read buffer of every server, per connection.
const SERVER_BUF: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    UringIo,
    Epoll,
    UringProto,
    EpollProto,
    Tokio,
    Monoio,
    /// Not run unless `ECHO_ONLY` names it.
    RawUring,
    /// Not run unless `ECHO_ONLY` names it.
    RawEpoll,
}

impl Server {
    const ALL: [Server; 6] = [
        Server::UringIo,
        Server::Epoll,
        Server::UringProto,
        Server::EpollProto,
        Server::Tokio,
        Server::Monoio,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::RawUring => "bare io_uring, no runtime",
            Server::RawEpoll => "bare epoll, no runtime",
            Server::UringIo => "uringio io_uring",
            Server::Epoll => "uringio epoll",
            Server::UringProto => "uringio io_uring Protocol",
            Server::EpollProto => "uringio epoll Protocol",
            Server::Tokio => "tokio current_thread",
            Server::Monoio => "monoio io_uring",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Server::RawUring => "raw-uring",
            Server::RawEpoll => "raw-epoll",
            Server::UringIo => "uring",
            Server::Epoll => "epoll",
            Server::UringProto => "uring-proto",
            Server::EpollProto => "epoll-proto",
            Server::Tokio => "tokio",
            Server::Monoio => "monoio",
        }
    }
}

/// A server running on its own pinned thread.
struct RunningServer {
    addr: SocketAddr,
    cpu_clock: libc::clockid_t,
    stop: Box<dyn FnOnce()>,
    thread: std::thread::JoinHandle<()>,
}

impl RunningServer {
    fn shutdown(self) {
        (self.stop)();
        self.thread.join().expect("server thread panicked");
    }
}

fn start_server(kind: Server) -> RunningServer {
    let (tx, rx) = mpsc::channel::<(SocketAddr, Box<dyn FnOnce() + Send>)>();
    let thread = std::thread::Builder::new()
        .name(format!("server-{}", kind.key()))
        .spawn(move || {
            pin_to(SERVER_CPU);
            match kind {
                Server::UringIo => uringio_server(Backend::IoUring, tx),
                Server::Epoll => uringio_server(Backend::Epoll, tx),
                Server::UringProto => uringio_protocol_server(Backend::IoUring, tx),
                Server::EpollProto => uringio_protocol_server(Backend::Epoll, tx),
                Server::Tokio => tokio_server(tx),
                Server::Monoio => monoio_server(tx),
                Server::RawUring => raw_uring_server(tx),
                Server::RawEpoll => raw_epoll_server(tx),
            }
        })
        .expect("spawn server thread");
    let (addr, stop) = rx.recv().expect("server failed to start");
    let mut cpu_clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (it is waiting in its loop) and joinable.
    let r = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut cpu_clock) };
    assert_eq!(r, 0, "pthread_getcpuclockid");
    RunningServer {
        addr,
        cpu_clock,
        stop: Box::new(stop),
        thread,
    }
}

/// The echo loop every owned-buffer server runs (uringio, monoio): read
/// into the buffer's spare capacity, write it all back, until EOF or error.
/// A macro because the two runtimes' read/write methods come from
/// different traits with the same shape.
macro_rules! echo_loop {
    ($s:ident) => {
        #[allow(unused_mut)]
        async move {
            let mut $s = $s;
            let mut buf = Vec::with_capacity(SERVER_BUF);
            loop {
                buf.clear();
                let (res, b) = $s.read(buf).await;
                buf = b;
                match res {
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
                let (res, b) = $s.write_all(buf).await;
                buf = b;
                if res.is_err() {
                    return;
                }
            }
        }
    };
}

type Ready = mpsc::Sender<(SocketAddr, Box<dyn FnOnce() + Send>)>;

fn uringio_server(backend: Backend, ready: Ready) {
    let mut rt = Runner::builder()
        .backend(backend)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a uringio loop on {backend}: {e}"));
    assert_eq!(rt.backend(), backend);
    let handle = rt.handle();
    rt.run(async move {
        let listener = uringio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        uringio::spawn(async move {
            let mut incoming = listener.incoming();
            while let Some(conn) = incoming.next().await {
                let Ok(s) = conn else { continue };
                s.set_nodelay(true).expect("TCP_NODELAY");
                uringio::spawn(echo_loop!(s)).detach();
            }
        })
        .detach();
        let stop = move || handle.stop();
        ready
            .send((addr, Box::new(stop)))
            .expect("main thread gone");
    });
    rt.run_forever();
}

/// The transport layer's echo: a `Protocol` that writes back what it gets.
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

fn uringio_protocol_server(backend: Backend, ready: Ready) {
    let mut rt = Runner::builder()
        .backend(backend)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a uringio loop on {backend}: {e}"));
    assert_eq!(rt.backend(), backend);
    let handle = rt.handle();
    rt.run(async move {
        let server = uringio::transport::create_server(|| EchoProtocol(None), "127.0.0.1:0")
            .await
            .expect("create_server");
        let addr = server.local_addrs()[0];
        std::mem::forget(server);
        let stop = move || handle.stop();
        ready
            .send((addr, Box::new(stop)))
            .expect("main thread gone");
    });
    rt.run_forever();
}

fn tokio_server(ready: Ready) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let stop = move || {
            let _ = stop_tx.send(());
        };
        ready
            .send((addr, Box::new(stop)))
            .expect("main thread gone");
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                conn = listener.accept() => {
                    let Ok((mut s, _)) = conn else { continue };
                    s.set_nodelay(true).expect("TCP_NODELAY");
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; SERVER_BUF];
                        loop {
                            let n = match s.read(&mut buf).await {
                                Ok(n) if n > 0 => n,
                                _ => return,
                            };
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        }
    });
}

/// monoio (another io_uring runtime, thread-per-core, owned buffers) with
/// its defaults, for reference: the same read + write_all echo loop.
fn monoio_server(ready: Ready) {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime (io_uring)");
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        ready
            .send((addr, Box::new(move || flag.store(true, Ordering::SeqCst))))
            .expect("main thread gone");
        monoio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                s.set_nodelay(true).expect("TCP_NODELAY");
                monoio::spawn(echo_loop!(s));
            }
        });
        // No cross-thread stop in monoio's API: look at a flag now and then.
        while !stop.load(Ordering::SeqCst) {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// The epoll floor: an echo on a bare edge-triggered epoll, no runtime,
/// no tasks, no wakers, no allocation per message, one thread-wide
/// receive buffer. Per readiness event: `recv` until a short read (the
/// socket is then drained; the next edge says when to read again), each
/// chunk sent straight back with `send` (a send the socket cannot take
/// whole — never, at these sizes — is finished blocking-free by spinning
/// on it, which a runtime would not do: the floor only has to be right
/// for echo traffic). One `epoll_wait` per iteration, 1024 events at most.
fn raw_epoll_server(ready: Ready) {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    const LISTENER: u64 = u64::MAX;
    const STOP: u64 = u64::MAX - 1;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local_addr");
    let stop = nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
        .expect("eventfd");
    // SAFETY: plain syscall; checked below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    // SAFETY: a fresh descriptor we own.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let add = |fd: i32, token: u64, events: i32| {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd, open fd, valid event pointer.
        let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(r, 0, "epoll_ctl");
    };
    add(listener.as_raw_fd(), LISTENER, libc::EPOLLIN);
    // Watched through a duplicate: the stop closure closes its own
    // descriptor right after writing, and a closed file leaves epoll
    // together with its pending event.
    let stop_watch = stop.as_fd().try_clone_to_owned().expect("dup eventfd");
    add(stop_watch.as_raw_fd(), STOP, libc::EPOLLIN);
    ready
        .send((
            addr,
            Box::new(move || {
                let _ = stop.write(1);
            }),
        ))
        .expect("main thread gone");
    let mut conns: Vec<Option<OwnedFd>> = Vec::new();
    let mut buf = vec![0u8; SERVER_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: the events buffer is valid for its length.
        let n = unsafe {
            libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1)
        };
        for ev in &events[..n.max(0) as usize] {
            match ev.u64 {
                STOP => return,
                LISTENER => {
                    while let Ok((s, _)) = listener.accept() {
                        s.set_nodelay(true).expect("TCP_NODELAY");
                        s.set_nonblocking(true).expect("nonblocking");
                        let fd = OwnedFd::from(s);
                        let i = fd.as_raw_fd() as usize;
                        add(
                            fd.as_raw_fd(),
                            i as u64,
                            libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET,
                        );
                        if conns.len() <= i {
                            conns.resize_with(i + 1, || None);
                        }
                        conns[i] = Some(fd);
                    }
                }
                i => {
                    let i = i as usize;
                    let Some(fd) = conns[i].as_ref().map(|f| f.as_raw_fd()) else {
                        continue;
                    };
                    let mut close = false;
                    loop {
                        // SAFETY: buf is writable for its length; fd is open.
                        // Bare system calls, as uringio makes them (glibc's
                        // recv/send toggle thread cancellation around each).
                        let r = unsafe {
                            libc::syscall(
                                libc::SYS_recvfrom,
                                fd,
                                buf.as_mut_ptr(),
                                buf.len(),
                                0,
                                0usize,
                                0usize,
                            )
                        };
                        if r <= 0 {
                            close = r == 0
                                || std::io::Error::last_os_error().kind()
                                    != std::io::ErrorKind::WouldBlock;
                            break;
                        }
                        let len = r as usize;
                        let mut sent = 0;
                        while sent < len {
                            // SAFETY: buf[sent..len] is readable; fd is open.
                            let w = unsafe {
                                libc::syscall(
                                    libc::SYS_sendto,
                                    fd,
                                    buf[sent..len].as_ptr(),
                                    len - sent,
                                    libc::MSG_NOSIGNAL,
                                    0usize,
                                    0usize,
                                )
                            };
                            if w < 0 {
                                if std::io::Error::last_os_error().kind()
                                    != std::io::ErrorKind::WouldBlock
                                {
                                    close = true;
                                    break;
                                }
                                continue;
                            }
                            sent += w as usize;
                        }
                        if close || len < buf.len() {
                            break;
                        }
                    }
                    if close {
                        conns[i] = None;
                    }
                }
            }
        }
    }
}

/// The floor a runtime is measured against: an echo on a bare io_uring,
/// no runtime, no tasks, no wakers, no allocation per message. Per
/// message one `RECV` into the connection's buffer and one `SEND` back;
/// everything queued is submitted, and completions waited for, in one
/// `io_uring_enter` per iteration (`SINGLE_ISSUER | DEFER_TASKRUN`, as
/// uringio's ring). What remains is the kernel's TCP work and the least a
/// completion loop can add to it.
fn raw_uring_server(ready: Ready) {
    use io_uring::{IoUring, opcode, squeue, types};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ACCEPT: u64 = 0;
    const RECV: u64 = 1;
    const SEND: u64 = 2;
    const STOP: u64 = 3;
    struct Conn {
        fd: OwnedFd,
        buf: &'static mut [u8],
        len: usize,
        sent: usize,
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let stop = nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
        .expect("eventfd");
    let stop_fd = stop.as_raw_fd();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)
        .expect("io_uring");
    // Buffers the kernel may still write when the ring goes are leaked,
    // never freed under it (a benchmark process ends soon after).
    let stop_buf: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut queue: Vec<squeue::Entry> = vec![
        opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT),
        opcode::Read::new(types::Fd(stop_fd), stop_buf.as_mut_ptr(), 8)
            .build()
            .user_data(STOP),
    ];
    ready
        .send((
            addr,
            Box::new(move || {
                let _ = stop.write(1);
            }),
        ))
        .expect("main thread gone");
    let recv = |i: usize, c: &mut Conn| {
        opcode::Recv::new(
            types::Fd(c.fd.as_raw_fd()),
            c.buf.as_mut_ptr(),
            c.buf.len() as u32,
        )
        .build()
        .user_data(RECV | (i as u64) << 2)
    };
    let send = |i: usize, c: &Conn| {
        opcode::Send::new(
            types::Fd(c.fd.as_raw_fd()),
            c.buf[c.sent..].as_ptr(),
            (c.len - c.sent) as u32,
        )
        .build()
        .user_data(SEND | (i as u64) << 2)
    };
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(1024);
    loop {
        for e in queue.drain(..) {
            // SAFETY: every SQE points into a connection's leaked buffer or
            // the leaked stop buffer, which live for the rest of the process.
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
                        let mut c = Conn {
                            fd,
                            buf: Box::leak(vec![0u8; SERVER_BUF].into_boxed_slice()),
                            len: 0,
                            sent: 0,
                        };
                        queue.push(recv(conns.len(), &mut c));
                        conns.push(Some(c));
                    }
                    queue.push(
                        opcode::Accept::new(
                            types::Fd(listener.as_raw_fd()),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        )
                        .build()
                        .user_data(ACCEPT),
                    );
                }
                RECV => {
                    let Some(c) = conns[i].as_mut() else { continue };
                    if res <= 0 {
                        conns[i] = None;
                        continue;
                    }
                    c.len = res as usize;
                    c.sent = 0;
                    queue.push(send(i, c));
                }
                SEND => {
                    let Some(c) = conns[i].as_mut() else { continue };
                    if res < 0 {
                        conns[i] = None;
                        continue;
                    }
                    c.sent += res as usize;
                    if c.sent < c.len {
                        queue.push(send(i, c));
                    } else {
                        queue.push(recv(i, c));
                    }
                }
                _ => {
                    // Stop: the connections' descriptors close with `conns`
                    // (their buffers stay leaked).
                    return;
                }
            }
        }
    }
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    msgs_per_sec: f64,
    cpu_ns_per_msg: f64,
    /// The load client's CPU time per message.
    client_ns_per_msg: f64,
    /// CPU used by other processes during the window, in CPUs (0.0–2.0).
    others: f64,
}

struct Settings {
    secs: f64,
    warmup: f64,
    conns: usize,
    /// How long to wait for other processes to go quiet before each run.
    quiet_wait: Duration,
    /// Re-runs of a disturbed run (`ECHO_RETRY`).
    retries: usize,
}

/// How hard the client pushes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Load {
    /// Every connection sends its next message as soon as the echo is back.
    Saturate,
    /// Messages per second offered in total, spread evenly over the
    /// connections (still one message in flight per connection).
    Rate(f64),
}

/// The load generator: a uringio loop on io_uring (the default), or tokio
/// `current_thread` (`ECHO_CLIENT=tokio`), to show the client is not what
/// decides the ratios.
enum Client {
    UringIo(Runner),
    Tokio(tokio::runtime::Runtime),
}

impl Client {
    fn name(&self) -> &'static str {
        match self {
            Client::UringIo(_) => "uringio io_uring",
            Client::Tokio(_) => "tokio current_thread",
        }
    }
}

/// With a rate: connection `i`'s period, and a first slot that spreads the
/// connections evenly over it.
fn pace_of(load: Load, i: usize, conns: usize, start: Instant) -> Option<(Duration, Instant)> {
    match load {
        Load::Saturate => None,
        Load::Rate(r) => {
            let period = Duration::from_secs_f64(conns as f64 / r);
            Some((period, start + period.mul_f64(i as f64 / conns as f64)))
        }
    }
}

/// Moves a pacing slot on; a connection that fell behind drops the missed
/// slots rather than bursting.
fn next_slot(pace: &mut (Duration, Instant)) {
    pace.1 += pace.0;
    let now = Instant::now();
    if pace.1 < now {
        pace.1 = now;
    }
}

/// Warms up, then measures one window: messages counted by the client's
/// connections, the server thread's CPU, the client's own CPU, and what
/// other processes used. `sleep` is the client runtime's timer.
async fn measure_window<F: std::future::Future<Output = ()>>(
    sleep: impl Fn(Duration) -> F,
    count: &Cell<u64>,
    server_clock: libc::clockid_t,
    s: &Settings,
) -> Sample {
    sleep(Duration::from_secs_f64(s.warmup)).await;
    let me = libc::CLOCK_THREAD_CPUTIME_ID;
    let (m0, s0) = machine_and_self_ticks();
    let (n0, cpu0, c0, t0) = (
        count.get(),
        thread_cpu(server_clock),
        thread_cpu(me),
        Instant::now(),
    );
    sleep(Duration::from_secs_f64(s.secs)).await;
    let (n1, cpu1, c1, t1) = (
        count.get(),
        thread_cpu(server_clock),
        thread_cpu(me),
        Instant::now(),
    );
    let (m1, s1) = machine_and_self_ticks();
    let msgs = (n1 - n0) as f64;
    let secs = (t1 - t0).as_secs_f64();
    let other_ticks = (m1 - m0).saturating_sub(s1 - s0) as f64;
    Sample {
        msgs_per_sec: msgs / secs,
        cpu_ns_per_msg: (cpu1 - cpu0).as_nanos() as f64 / msgs.max(1.0),
        client_ns_per_msg: (c1 - c0).as_nanos() as f64 / msgs.max(1.0),
        others: other_ticks / ticks_per_sec() / secs,
    }
}

/// Drives `server` with the ping-pong load for one run.
fn run_load(
    client: &mut Client,
    server: &RunningServer,
    size: usize,
    load: Load,
    s: &Settings,
) -> Sample {
    match client {
        Client::UringIo(rt) => run_load_uringio(rt, server, size, load, s),
        Client::Tokio(rt) => run_load_tokio(rt, server, size, load, s),
    }
}

fn run_load_uringio(
    client: &mut Runner,
    server: &RunningServer,
    size: usize,
    load: Load,
    s: &Settings,
) -> Sample {
    let addr = server.addr;
    let clock = server.cpu_clock;
    client.run(async move {
        let count = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut streams = Vec::with_capacity(s.conns);
        for _ in 0..s.conns {
            let c = uringio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the server");
            c.set_nodelay(true).expect("TCP_NODELAY");
            streams.push(c);
        }
        let start = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let count = count.clone();
                let stop = stop.clone();
                let mut pace = pace_of(load, i, s.conns, start);
                uringio::spawn(async move {
                    let mut out = vec![0xA5u8; size];
                    let mut back = Vec::with_capacity(size);
                    while !stop.get() {
                        if let Some(p) = &mut pace {
                            uringio::sleep_until(p.1).await;
                            next_slot(p);
                        }
                        let (res, b) = c.write_all(out).await;
                        out = b;
                        res.expect("client write");
                        back.clear();
                        while back.len() < size {
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
                })
            })
            .collect();
        let sample = measure_window(uringio::sleep, &count, clock, s).await;
        stop.set(true);
        for t in tasks {
            t.await.expect("client task");
        }
        sample
    })
}

fn run_load_tokio(
    rt: &mut tokio::runtime::Runtime,
    server: &RunningServer,
    size: usize,
    load: Load,
    s: &Settings,
) -> Sample {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.addr;
    let clock = server.cpu_clock;
    let local = tokio::task::LocalSet::new();
    local.block_on(rt, async move {
        let count = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut streams = Vec::with_capacity(s.conns);
        for _ in 0..s.conns {
            let c = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the server");
            c.set_nodelay(true).expect("TCP_NODELAY");
            streams.push(c);
        }
        let start = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                let count = count.clone();
                let stop = stop.clone();
                let mut pace = pace_of(load, i, s.conns, start);
                tokio::task::spawn_local(async move {
                    let out = vec![0xA5u8; size];
                    let mut back = vec![0u8; size];
                    while !stop.get() {
                        if let Some(p) = &mut pace {
                            tokio::time::sleep_until(p.1.into()).await;
                            next_slot(p);
                        }
                        c.write_all(&out).await.expect("client write");
                        c.read_exact(&mut back).await.expect("client read");
                        count.set(count.get() + 1);
                    }
                })
            })
            .collect();
        let sample = measure_window(tokio::time::sleep, &count, clock, s).await;
        stop.set(true);
        for t in tasks {
            t.await.expect("client task");
        }
        sample
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let settings = Settings {
        secs: env_num("ECHO_SECS", 10.0),
        warmup: env_num("ECHO_WARMUP", 1.0),
        conns: env_num("ECHO_CONNS", 64usize),
        quiet_wait: Duration::from_secs_f64(env_num("ECHO_QUIET_WAIT", 30.0)),
        retries: env_num("ECHO_RETRY", 0usize),
    };
    let rounds: usize = env_num("ECHO_ROUNDS", 3usize).max(1);
    let sizes: Vec<usize> = std::env::var("ECHO_SIZES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .expect("ECHO_SIZES: comma-separated byte counts")
                })
                .collect()
        })
        .unwrap_or_else(|| vec![1024]);
    let mut loads = Vec::new();
    if env_num("ECHO_SATURATE", 1u32) != 0 {
        loads.push(Load::Saturate);
    }
    if let Ok(v) = std::env::var("ECHO_RATE") {
        loads.extend(v.split(',').filter(|x| !x.trim().is_empty()).map(|x| {
            Load::Rate(
                x.trim()
                    .parse()
                    .expect("ECHO_RATE: comma-separated messages per second"),
            )
        }));
    }
    let servers: Vec<Server> = match std::env::var("ECHO_ONLY") {
        Ok(v) if !v.trim().is_empty() => Server::ALL
            .into_iter()
            .chain([Server::RawUring, Server::RawEpoll])
            .filter(|s| v.split(',').any(|k| k.trim() == s.key()))
            .collect(),
        _ => Server::ALL.to_vec(),
    };

    pin_to(CLIENT_CPU);
    let mut client = match std::env::var("ECHO_CLIENT").as_deref() {
        Ok("tokio") => Client::Tokio(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime for the client"),
        ),
        Ok("uringio") | Ok("") | Err(_) => Client::UringIo(
            Runner::builder()
                .backend(Backend::IoUring)
                .build()
                .expect("the load client needs io_uring"),
        ),
        Ok(other) => panic!("ECHO_CLIENT: `uringio` or `tokio`, not `{other}`"),
    };
    println!(
        "echo: {} connections, ping-pong, {}s measured (+{}s warm-up) per run, {} round(s); \
         server on CPU {SERVER_CPU}, {} client on CPU {CLIENT_CPU}",
        settings.conns,
        settings.secs,
        settings.warmup,
        rounds,
        client.name()
    );

    for &size in &sizes {
        for &load in &loads {
            measure(&mut client, &servers, size, load, rounds, &settings);
        }
    }
}

/// Runs every server `rounds` times under one load and prints the table.
fn measure(
    client: &mut Client,
    servers: &[Server],
    size: usize,
    load: Load,
    rounds: usize,
    settings: &Settings,
) {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
    let mut busy_runs = 0;
    let label = match load {
        Load::Saturate => "saturating".to_string(),
        Load::Rate(r) => format!("offered {r:.0} msgs/s"),
    };
    for round in 0..rounds {
        // Rotate the starting server each round so none always goes first.
        for i in 0..servers.len() {
            let idx = (i + round) % servers.len();
            let kind = servers[idx];
            let mut s: Option<Sample> = None;
            for attempt in 0..=settings.retries {
                wait_for_quiet(settings.quiet_wait);
                let srv = start_server(kind);
                let t = run_load(client, &srv, size, load, settings);
                srv.shutdown();
                let noisy = t.others > 0.1;
                if s.as_ref().is_none_or(|b| t.others < b.others) {
                    s = Some(t);
                }
                if !noisy {
                    break;
                }
                if attempt < settings.retries {
                    eprintln!(
                        "  (run of {} disturbed: other processes used {:.2} CPUs; again)",
                        kind.name(),
                        s.as_ref().map_or(0.0, |b| b.others)
                    );
                }
            }
            let s = s.expect("at least one run");
            eprintln!(
                "  {size:>6} B  {label}  round {}  {:<22} {:>10.0} msgs/s  server {:>6.0} ns/msg  \
                 client {:>6.0} ns/msg  other processes {:.2} CPUs",
                round + 1,
                kind.name(),
                s.msgs_per_sec,
                s.cpu_ns_per_msg,
                s.client_ns_per_msg,
                s.others
            );
            if s.others > 0.1 {
                busy_runs += 1;
            }
            samples[idx].push(s);
        }
    }
    let med: Vec<(f64, f64, f64)> = samples
        .iter()
        .map(|v| {
            (
                median(v.iter().map(|s| s.msgs_per_sec).collect()),
                median(v.iter().map(|s| s.cpu_ns_per_msg).collect()),
                median(v.iter().map(|s| s.client_ns_per_msg).collect()),
            )
        })
        .collect();
    let tokio = servers
        .iter()
        .position(|&s| s == Server::Tokio)
        .map(|i| med[i]);
    println!();
    println!(
        "message size {size} B, {label} (medians of {rounds}; ratios: medians of per-round ratios)"
    );
    println!(
        "| {:<22} | {:>10} | {:>17} | {:>14} | {:>11} | {:>17} |",
        "server",
        "msgs/s",
        "server CPU ns/msg",
        "msgs/s ÷ tokio",
        "CPU ÷ tokio",
        "client CPU ns/msg"
    );
    println!(
        "|{:-<24}|{:->12}|{:->19}|{:->16}|{:->13}|{:->19}|",
        "", "", "", "", "", ""
    );
    let tokio_idx = servers.iter().position(|&s| s == Server::Tokio);
    for (i, kind) in servers.iter().enumerate() {
        let (m, c, cl) = med[i];
        // Ratios are taken within each round (servers of one round ran
        // back to back, under the same machine conditions), then the
        // median of those is printed.
        let (rt, rc) = match (tokio, tokio_idx) {
            (Some(_), Some(t)) => {
                let per_round = |f: fn(&Sample) -> f64| {
                    median(
                        samples[i]
                            .iter()
                            .zip(&samples[t])
                            .map(|(a, b)| f(a) / f(b))
                            .collect(),
                    )
                };
                (
                    format!("{:.2}", per_round(|s| s.msgs_per_sec)),
                    format!("{:.2}", per_round(|s| s.cpu_ns_per_msg)),
                )
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "| {:<22} | {:>10.0} | {:>17.0} | {:>14} | {:>11} | {:>17.0} |",
            kind.name(),
            m,
            c,
            rt,
            rc,
            cl
        );
    }
    if busy_runs > 0 {
        println!(
            "warning: other processes used more than 0.1 CPU during {busy_runs} run(s): \
             throughput is skewed there (CPU per message much less so)"
        );
    }
    println!();
}
