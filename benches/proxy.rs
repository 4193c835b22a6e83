//! TCP proxy benchmark: uringio `net::copy_bidirectional` on io_uring and
//! on epoll against tokio `current_thread` with
//! `tokio::io::copy_bidirectional`, same workload, same run.
//!
//! Each proxy is the `examples/tcp_proxy` logic on one core: a thread
//! pinned to CPU 0 running one loop with a listener; every accepted
//! connection gets a new connection to the echo backend and the two are
//! relayed with `copy_bidirectional` until both end. Every socket gets
//! `TCP_NODELAY`, on every proxy. The proxies run in this process, as
//! threads, so their CPU is the proxy thread's own clock
//! (`pthread_getcpuclockid`), read at the edges of the measured window,
//! plus the clocks of the io-wq workers its ring started (`iou-wrk-TID`
//! threads, pinned to CPU 0 like their owner): an io_uring `SPLICE` runs
//! there, not on the proxy thread (shown apart as "of it io-wq").
//!
//! Behind the proxy: one echo backend thread (a uringio io_uring loop, the
//! raw owned-buffer `read` + `write_all` echo of `benches/echo.rs`, 64 KiB
//! buffer) pinned to CPU 1. In front of it: one load client thread (a
//! uringio io_uring loop, the client of `benches/echo.rs`), also pinned to
//! CPU 1, with 64 connections each sending a message and waiting for the
//! whole echo before sending the next (ping-pong). Both the backend and
//! the client are the same for every proxy.
//!
//! Contenders:
//! - `uring`: uringio on io_uring, `CopyMode::Auto` (= `Buffered`: small
//!   reads from the loop's buffer ring with a multishot receive, sent
//!   straight from it; owned 64 KiB buffers once a direction's reads fill
//!   a ring buffer);
//! - `epoll`: uringio on epoll, `CopyMode::Auto` (= `Buffered`: owned
//!   64 KiB buffers);
//! - `tokio`: tokio `current_thread`, `tokio::io::copy_bidirectional`
//!   (its default 8 KiB buffers), the way tokio users write a proxy;
//! - floors (`raw-uring`, `raw-epoll`): the same relay with no runtime,
//!   on a bare io_uring (the `io-uring` crate directly) and on a bare
//!   edge-triggered epoll (see `raw_uring_proxy`, `raw_epoll_proxy`):
//!   what a runtime that cost nothing would reach;
//! - extra rows (`PROXY_EXTRAS=0` to skip): `uring-owned` (io_uring
//!   `Buffered` with the loop's buffer ring emulated, so every read is a
//!   `RECV` into the direction's own 64 KiB buffer: the path before the
//!   ring one) and `epoll-splice` (epoll with `CopyMode::Splice`) at
//!   every size, and at 64 KiB and more
//!   `uring-splice` (io_uring with `CopyMode::Splice`) and
//!   `tokio-64k` (`tokio::io::copy_bidirectional_with_sizes` with 64 KiB
//!   buffers, the same buffer size as uringio's).
//!
//! Reported per contender: messages per second (a message is one
//! ping-pong: `size` bytes through the proxy each way), the proxy thread's
//! CPU time per message, the load side's (client + backend, CPU 1) CPU
//! time per message, and the first two as ratios to `tokio`. Contenders
//! run round-robin (the first one rotates each round); the table gives
//! medians, and the ratios are medians of per-round ratios (each round's
//! contenders ran back to back, under the same machine conditions).
//!
//! Environment:
//! - `PROXY_SECS`   seconds measured per run (default 4)
//! - `PROXY_WARMUP` seconds of warm-up per run, not measured (default 1)
//! - `PROXY_ROUNDS` rounds of all contenders (default 5)
//! - `PROXY_SIZES`  message sizes in bytes, comma-separated
//!   (default `1024,65536`)
//! - `PROXY_CONNS`  connections (default 64)
//! - `PROXY_ONLY`   comma-separated subset of
//!   `uring,epoll,tokio,raw-uring,raw-epoll,uring-owned,epoll-splice,uring-splice,tokio-64k`
//! - `PROXY_EXTRAS` `0` to skip the extra rows
//! - `PROXY_QUIET_WAIT` seconds to wait before each run for other
//!   processes to use under 0.1 CPU (default 5; 0 to not wait). Runs that
//!   still saw other load are counted in a warning under the table.
//!
//! ```text
//! cargo bench --bench proxy
//! PROXY_ROUNDS=3 PROXY_SIZES=65536 PROXY_ONLY=uring,uring-splice,tokio cargo bench --bench proxy
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
use slab::Slab;
use uringio::net::CopyMode;
use uringio::{Backend, Runner};

const PROXY_CPU: usize = 0;
const LOAD_CPU: usize = 1;
/// Read buffer of the echo backend, per connection.
const BACKEND_BUF: usize = 64 * 1024;
/// Extra rows run at this message size and above.
const EXTRAS_FROM: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proxy {
    Uring,
    Epoll,
    Tokio,
    /// Extra row: io_uring with `CopyMode::Splice`.
    UringSplice,
    /// Extra row: epoll with `CopyMode::Splice`.
    EpollSplice,
    /// Extra row: io_uring `Buffered` with the buffer ring emulated: a
    /// `RECV` per read into the direction's own buffer.
    UringOwned,
    /// Extra row: tokio with 64 KiB buffers.
    Tokio64k,
    /// Floor: the same relay on a bare io_uring, no runtime.
    RawUring,
    /// Floor: the same relay on a bare edge-triggered epoll, no runtime.
    RawEpoll,
}

impl Proxy {
    const MAIN: [Proxy; 5] = [
        Proxy::Uring,
        Proxy::Epoll,
        Proxy::Tokio,
        Proxy::RawUring,
        Proxy::RawEpoll,
    ];
    /// Extra rows at every size.
    const EXTRA: [Proxy; 2] = [Proxy::UringOwned, Proxy::EpollSplice];
    /// Extra rows at `EXTRAS_FROM` and above.
    const EXTRA_LARGE: [Proxy; 2] = [Proxy::UringSplice, Proxy::Tokio64k];

    fn name(self) -> &'static str {
        match self {
            Proxy::Uring => "uringio io_uring (Auto = Buffered)",
            Proxy::Epoll => "uringio epoll (Auto = Buffered)",
            Proxy::Tokio => "tokio current_thread (8 KiB)",
            Proxy::UringSplice => "uringio io_uring Splice",
            Proxy::EpollSplice => "uringio epoll Splice",
            Proxy::UringOwned => "uringio io_uring, own buffers only",
            Proxy::Tokio64k => "tokio current_thread, 64 KiB bufs",
            Proxy::RawUring => "bare io_uring, no runtime (floor)",
            Proxy::RawEpoll => "bare epoll, no runtime (floor)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Proxy::Uring => "uring",
            Proxy::Epoll => "epoll",
            Proxy::Tokio => "tokio",
            Proxy::UringSplice => "uring-splice",
            Proxy::EpollSplice => "epoll-splice",
            Proxy::UringOwned => "uring-owned",
            Proxy::Tokio64k => "tokio-64k",
            Proxy::RawUring => "raw-uring",
            Proxy::RawEpoll => "raw-epoll",
        }
    }
}

/// The CPU clock of any thread of this process by its id, for threads
/// that are not pthreads (io_uring's io-wq workers): the kernel's
/// `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`.
fn tid_clock(tid: i32) -> libc::clockid_t {
    (!tid << 3) | 4 | 2
}

/// CPU time of the io-wq workers (`iou-wrk-TID`) that thread `tid`'s
/// rings have started, by worker. io_uring runs an op it cannot complete
/// inline or by polling (a `SPLICE`, notably) on such a worker, pinned
/// like the thread that owns the ring: that CPU is the owner's work, but
/// not on the owner's clock.
fn workers_cpu(tid: i32) -> Vec<(i32, Duration)> {
    let name = format!("iou-wrk-{tid}");
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let wtid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec; a worker that exited makes this fail.
        let r = unsafe { libc::clock_gettime(tid_clock(wtid), &mut ts) };
        (r == 0).then(|| (wtid, Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)))
    })
    .collect()
}

/// A thread's CPU so far: its own clock, and its io-wq workers' clocks.
struct CpuSnap {
    own: Duration,
    workers: Vec<(i32, Duration)>,
}

fn cpu_snap(clock: libc::clockid_t, tid: i32) -> CpuSnap {
    CpuSnap {
        own: thread_cpu(clock),
        workers: workers_cpu(tid),
    }
}

/// CPU used between two snapshots: `(own, io-wq workers)`. A worker
/// started during the window counts from zero; one that exited during it
/// is lost (io-wq workers live on while busy, so this is small).
fn cpu_used(a: &CpuSnap, b: &CpuSnap) -> (Duration, Duration) {
    let workers = b
        .workers
        .iter()
        .map(|&(w, t)| {
            let t0 = a
                .workers
                .iter()
                .find(|&&(w0, _)| w0 == w)
                .map_or(Duration::ZERO, |&(_, t0)| t0);
            t.saturating_sub(t0)
        })
        .sum();
    (b.own - a.own, workers)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The CPU clock of a running thread of this process.
fn clock_of<T>(thread: &std::thread::JoinHandle<T>) -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is alive (waiting in its loop) and joinable.
    let r = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &mut clock) };
    assert_eq!(r, 0, "pthread_getcpuclockid");
    clock
}

type Ready = mpsc::Sender<(SocketAddr, Box<dyn FnOnce() + Send>)>;

/// A loop running on its own pinned thread: a proxy, or the backend.
struct Running {
    addr: SocketAddr,
    clock: libc::clockid_t,
    tid: i32,
    stop: Box<dyn FnOnce()>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    fn shutdown(self) {
        (self.stop)();
        self.thread
            .join()
            .expect("proxy or backend thread panicked");
    }
}

fn start_on(cpu: usize, name: String, body: impl FnOnce(Ready) + Send + 'static) -> Running {
    let (tx, rx) = mpsc::channel();
    let (tid_tx, tid_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            pin_to(cpu);
            tid_tx.send(gettid()).expect("main thread gone");
            body(tx)
        })
        .expect("spawn thread");
    let tid = tid_rx.recv().expect("thread failed to start");
    let (addr, stop) = rx.recv().expect("proxy or backend failed to start");
    let clock = clock_of(&thread);
    Running {
        addr,
        clock,
        tid,
        stop,
        thread,
    }
}

fn start_proxy(kind: Proxy, upstream: SocketAddr) -> Running {
    start_on(
        PROXY_CPU,
        format!("proxy-{}", kind.key()),
        move |ready| match kind {
            Proxy::Uring => uringio_proxy(Backend::IoUring, CopyMode::Auto, upstream, ready),
            Proxy::Epoll => uringio_proxy(Backend::Epoll, CopyMode::Auto, upstream, ready),
            Proxy::UringSplice => {
                uringio_proxy(Backend::IoUring, CopyMode::Splice, upstream, ready)
            }
            Proxy::EpollSplice => uringio_proxy(Backend::Epoll, CopyMode::Splice, upstream, ready),
            Proxy::UringOwned => {
                uringio_proxy_with(Backend::IoUring, CopyMode::Buffered, true, upstream, ready)
            }
            Proxy::Tokio => tokio_proxy(None, upstream, ready),
            Proxy::Tokio64k => tokio_proxy(Some(64 * 1024), upstream, ready),
            Proxy::RawUring => raw_uring_proxy(upstream, ready),
            Proxy::RawEpoll => raw_epoll_proxy(upstream, ready),
        },
    )
}

/// The `examples/tcp_proxy` relay on one core: accept, connect to the
/// upstream, `copy_bidirectional` until both directions end.
fn uringio_proxy(backend: Backend, mode: CopyMode, upstream: SocketAddr, ready: Ready) {
    uringio_proxy_with(backend, mode, false, upstream, ready)
}

/// As [`uringio_proxy`]; `no_ring`: the loop's buffer ring emulated in
/// user space, so a buffered copy on io_uring reads into its own buffers
/// (`RECV` per read), as it did before reading from the kernel ring.
fn uringio_proxy_with(
    backend: Backend,
    mode: CopyMode,
    no_ring: bool,
    upstream: SocketAddr,
    ready: Ready,
) {
    let mut rt = Runner::builder()
        .backend(backend)
        .emulate_buf_ring(no_ring)
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
                let Ok(client) = conn else { continue };
                uringio::spawn(async move {
                    let Ok(up) = uringio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    client.set_nodelay(true).expect("TCP_NODELAY");
                    up.set_nodelay(true).expect("TCP_NODELAY");
                    let _ = uringio::net::copy_bidirectional(&client, &up)
                        .mode(mode)
                        .await;
                })
                .detach();
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

/// A tokio `current_thread` proxy: accept, connect, `copy_bidirectional`
/// (or `copy_bidirectional_with_sizes` when `buf` is given).
fn tokio_proxy(buf: Option<usize>, upstream: SocketAddr, ready: Ready) {
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
                    let Ok((mut client, _)) = conn else { continue };
                    tokio::spawn(async move {
                        let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        client.set_nodelay(true).expect("TCP_NODELAY");
                        up.set_nodelay(true).expect("TCP_NODELAY");
                        let _ = match buf {
                            None => tokio::io::copy_bidirectional(&mut client, &mut up).await,
                            Some(n) => {
                                tokio::io::copy_bidirectional_with_sizes(
                                    &mut client, &mut up, n, n,
                                )
                                .await
                            }
                        };
                    });
                }
            }
        }
    });
}

/// How a bare proxy learns to stop: an eventfd it waits on with the
/// sockets (written by the stop closure from the main thread).
fn stop_eventfd() -> (std::os::fd::OwnedFd, Box<dyn FnOnce() + Send>) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: eventfd has no memory preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let w = fd.try_clone().expect("dup eventfd");
    let stop = move || {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
        unsafe { libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 8) };
    };
    (fd, Box::new(stop))
}

fn set_nodelay(fd: std::os::fd::RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "TCP_NODELAY");
}

/// One direction of a bare proxy's connection pair: bytes from `src`
/// land in `buf[..len]`, `buf[sent..len]` is still to go to `dst`.
struct RawDir {
    buf: Box<[u8]>,
    len: usize,
    sent: usize,
    done: bool,
}

/// A proxied connection of a bare proxy: the client, the upstream, and
/// one direction each way (0: client → upstream, 1: upstream → client).
struct RawPair {
    fds: [std::os::fd::OwnedFd; 2],
    dirs: [RawDir; 2],
    /// Ops (io_uring) the kernel still has for this pair.
    inflight: u32,
}

impl RawPair {
    fn new(client: std::os::fd::OwnedFd, up: std::os::fd::OwnedFd) -> Box<RawPair> {
        let dir = || RawDir {
            buf: vec![0u8; RAW_BUF].into_boxed_slice(),
            len: 0,
            sent: 0,
            done: false,
        };
        Box::new(RawPair {
            fds: [client, up],
            dirs: [dir(), dir()],
            inflight: 0,
        })
    }
}

/// The bare proxies' buffer per direction (the size uringio's copy uses).
const RAW_BUF: usize = 64 * 1024;

/// The floor a runtime is measured against: the same relay on a bare
/// io_uring, no runtime, no tasks, no wakers, no allocation per message.
/// Per connection pair and direction one `RECV` into the direction's
/// 64 KiB buffer, then `SEND`s of what it got until all is sent, then the
/// next `RECV`; end of stream shuts the other side's write half down.
/// Every SQE queued in an iteration is submitted, and completions waited
/// for, in one `io_uring_enter` (`SINGLE_ISSUER | DEFER_TASKRUN`, as
/// uringio's ring). Connecting upstream is a blocking `connect` (done
/// before the measured window).
fn raw_uring_proxy(upstream: SocketAddr, ready: Ready) {
    use io_uring::{IoUring, opcode, squeue, types};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ACCEPT: u64 = 0;
    const STOP: u64 = 1;
    const RECV: u64 = 2;
    const SEND: u64 = 3;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (stopfd, stop) = stop_eventfd();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)
        .expect("io_uring");
    // Pairs live in a slab of boxes; one is freed only once the kernel
    // has none of its ops, so every buffer an SQE names outlives the op.
    let mut pairs: Slab<Box<RawPair>> = Slab::new();
    let mut stop_buf = [0u8; 8];
    let ud = |kind: u64, pair: usize, dir: usize| kind | (dir as u64) << 2 | (pair as u64) << 3;
    let recv = |i: usize, d: usize, p: &mut RawPair| {
        let dir = &mut p.dirs[d];
        p.inflight += 1;
        opcode::Recv::new(
            types::Fd(p.fds[d].as_raw_fd()),
            dir.buf.as_mut_ptr(),
            RAW_BUF as u32,
        )
        .build()
        .user_data(ud(RECV, i, d))
    };
    let send = |i: usize, d: usize, p: &mut RawPair| {
        let dir = &p.dirs[d];
        p.inflight += 1;
        opcode::Send::new(
            types::Fd(p.fds[1 - d].as_raw_fd()),
            dir.buf[dir.sent..dir.len].as_ptr(),
            (dir.len - dir.sent) as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(ud(SEND, i, d))
    };
    let accept = || {
        opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT)
    };
    let mut queue: Vec<squeue::Entry> = vec![
        accept(),
        opcode::Read::new(types::Fd(stopfd.as_raw_fd()), stop_buf.as_mut_ptr(), 8)
            .build()
            .user_data(STOP),
    ];
    ready.send((addr, stop)).expect("main thread gone");
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(1024);
    'run: loop {
        for e in queue.drain(..) {
            // SAFETY: every SQE points into a pair's boxed buffers, freed
            // only when no op of the pair is in flight (above), or into
            // `stop_buf`, which outlives the ring (dropped first below).
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
        for (u, res) in done.drain(..) {
            let (kind, d, i) = (u & 3, (u >> 2 & 1) as usize, (u >> 3) as usize);
            match kind {
                STOP => break 'run,
                ACCEPT => {
                    queue.push(accept());
                    if res < 0 {
                        continue;
                    }
                    // SAFETY: a new descriptor the kernel gave us.
                    let client = unsafe { OwnedFd::from_raw_fd(res) };
                    let Ok(up) = std::net::TcpStream::connect(upstream) else {
                        continue;
                    };
                    let up = OwnedFd::from(up);
                    set_nodelay(client.as_raw_fd());
                    set_nodelay(up.as_raw_fd());
                    let e = pairs.vacant_entry();
                    let i = e.key();
                    let p = e.insert(RawPair::new(client, up));
                    queue.push(recv(i, 0, p));
                    queue.push(recv(i, 1, p));
                }
                _ => {
                    let p = &mut pairs[i];
                    p.inflight -= 1;
                    let dir = &mut p.dirs[d];
                    if kind == RECV && res > 0 {
                        dir.len = res as usize;
                        dir.sent = 0;
                        queue.push(send(i, d, p));
                    } else if kind == SEND && res > 0 {
                        dir.sent += res as usize;
                        if dir.sent < dir.len {
                            queue.push(send(i, d, p));
                        } else {
                            queue.push(recv(i, d, p));
                        }
                    } else {
                        // End of stream or an error: FIN the other way.
                        dir.done = true;
                        // SAFETY: shutdown on a socket we own.
                        unsafe { libc::shutdown(p.fds[1 - d].as_raw_fd(), libc::SHUT_WR) };
                        if p.dirs.iter().all(|d| d.done) && p.inflight == 0 {
                            pairs.remove(i);
                        }
                    }
                }
            }
        }
    }
    // Cancels and waits for everything in flight, then the buffers go.
    drop(ring);
    drop(pairs);
    drop(listener);
}

/// The same floor on a bare edge-triggered epoll: non-blocking sockets,
/// one `epoll_wait` per iteration; on an edge, each direction from that
/// socket `recv`s into its 64 KiB buffer and `send`s it on until the
/// source says `EAGAIN` (or the destination does: then it waits for the
/// destination's writable edge before reading more). Accepting and
/// connecting upstream are blocking calls on a readable listener (before
/// the measured window).
fn raw_epoll_proxy(upstream: SocketAddr, ready: Ready) {
    use std::os::fd::{AsRawFd, OwnedFd};
    const LISTENER: u64 = u64::MAX;
    const STOP: u64 = u64::MAX - 1;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local_addr");
    let (stopfd, stop) = stop_eventfd();
    // SAFETY: epoll_create1 has no memory preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    // SAFETY: `ep` is the new epoll descriptor, owned from here on.
    let ep = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ep) };
    let add = |fd: i32, token: u64, events: u32| {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid descriptors and event struct.
        let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(r, 0, "epoll_ctl");
    };
    add(listener.as_raw_fd(), LISTENER, libc::EPOLLIN as u32);
    add(stopfd.as_raw_fd(), STOP, libc::EPOLLIN as u32);
    ready.send((addr, stop)).expect("main thread gone");
    let mut pairs: Slab<Box<RawPair>> = Slab::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    // Moves what it can in direction `d` of `p`; true when the pair is
    // finished (both directions ended).
    fn pump(p: &mut RawPair, d: usize) -> bool {
        let (src, dst) = (p.fds[d].as_raw_fd(), p.fds[1 - d].as_raw_fd());
        let dir = &mut p.dirs[d];
        while !dir.done {
            if dir.sent == dir.len {
                // SAFETY: recv into our own buffer.
                let n = unsafe { libc::recv(src, dir.buf.as_mut_ptr().cast(), RAW_BUF, 0) };
                if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
                {
                    break;
                }
                if n <= 0 {
                    dir.done = true;
                    // SAFETY: shutdown on a socket we own.
                    unsafe { libc::shutdown(dst, libc::SHUT_WR) };
                    break;
                }
                dir.len = n as usize;
                dir.sent = 0;
            }
            // SAFETY: send from initialised bytes of our own buffer.
            let n = unsafe {
                libc::send(
                    dst,
                    dir.buf[dir.sent..].as_ptr().cast(),
                    dir.len - dir.sent,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                    break;
                }
                dir.done = true;
                break;
            }
            dir.sent += n as usize;
        }
        p.dirs.iter().all(|d| d.done)
    }
    'run: loop {
        // SAFETY: `events` is a valid array of that many entries.
        let n = unsafe {
            libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1)
        };
        if n < 0 {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINTR)
            );
            continue;
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            match token {
                STOP => break 'run,
                LISTENER => {
                    while let Ok((client, _)) = listener.accept() {
                        let Ok(up) = std::net::TcpStream::connect(upstream) else {
                            continue;
                        };
                        client.set_nonblocking(true).expect("nonblocking");
                        up.set_nonblocking(true).expect("nonblocking");
                        let (client, up) = (OwnedFd::from(client), OwnedFd::from(up));
                        set_nodelay(client.as_raw_fd());
                        set_nodelay(up.as_raw_fd());
                        let i = pairs.insert(RawPair::new(client, up));
                        let et = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET)
                            as u32;
                        for s in 0..2 {
                            add(pairs[i].fds[s].as_raw_fd(), (i as u64) << 1 | s as u64, et);
                        }
                    }
                }
                _ => {
                    let (i, s) = ((token >> 1) as usize, (token & 1) as usize);
                    let Some(p) = pairs.get_mut(i) else { continue };
                    let mut finished = false;
                    if ev.events
                        & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR)
                            as u32
                        != 0
                    {
                        // Readable: the direction from this socket.
                        finished |= pump(p, s);
                    }
                    if ev.events & libc::EPOLLOUT as u32 != 0 {
                        // Writable: the direction into this socket.
                        finished |= pump(p, 1 - s);
                    }
                    if finished {
                        // Closing the descriptors takes them out of epoll.
                        pairs.remove(i);
                    }
                }
            }
        }
    }
}

/// The echo backend: a uringio io_uring loop, owned-buffer `read` +
/// `write_all` per connection (the `uring` server of `benches/echo.rs`).
fn start_backend() -> Running {
    start_on(LOAD_CPU, "echo-backend".into(), |ready| {
        let mut rt = Runner::builder()
            .backend(Backend::IoUring)
            .build()
            .expect("the echo backend needs io_uring");
        let handle = rt.handle();
        rt.run(async move {
            let listener = uringio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            uringio::spawn(async move {
                let mut incoming = listener.incoming();
                while let Some(conn) = incoming.next().await {
                    let Ok(s) = conn else { continue };
                    s.set_nodelay(true).expect("TCP_NODELAY");
                    uringio::spawn(async move {
                        let mut buf = Vec::with_capacity(BACKEND_BUF);
                        loop {
                            buf.clear();
                            let (res, b) = s.read(buf).await;
                            buf = b;
                            match res {
                                Ok(n) if n > 0 => {}
                                _ => return,
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
            })
            .detach();
            let stop = move || handle.stop();
            ready
                .send((addr, Box::new(stop)))
                .expect("main thread gone");
        });
        rt.run_forever();
    })
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    msgs_per_sec: f64,
    /// The proxy's CPU time per message: its thread and its io-wq
    /// workers.
    proxy_ns_per_msg: f64,
    /// Of which io-wq workers.
    iowq_ns_per_msg: f64,
    /// The load side's (client and backend threads, CPU 1) CPU time per
    /// message.
    load_ns_per_msg: f64,
    /// CPU used by other processes during the window, in CPUs (0.0–2.0).
    others: f64,
}

struct Settings {
    secs: f64,
    warmup: f64,
    conns: usize,
    quiet_wait: Duration,
}

/// Drives `proxy` with the ping-pong load for one run, from the client
/// loop (on this thread, pinned to CPU 1).
fn run_load(
    client: &mut Runner,
    proxy: &Running,
    backend: &Running,
    size: usize,
    s: &Settings,
) -> Sample {
    let addr = proxy.addr;
    let (proxy_clock, proxy_tid) = (proxy.clock, proxy.tid);
    let (backend_clock, backend_tid) = (backend.clock, backend.tid);
    let me = (libc::CLOCK_THREAD_CPUTIME_ID, gettid());
    client.run(async move {
        let count = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let mut streams = Vec::with_capacity(s.conns);
        for _ in 0..s.conns {
            let c = uringio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the proxy");
            c.set_nodelay(true).expect("TCP_NODELAY");
            streams.push(c);
        }
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|c| {
                let count = count.clone();
                let stop = stop.clone();
                uringio::spawn(async move {
                    let mut out = vec![0xA5u8; size];
                    let mut back = Vec::with_capacity(size);
                    while !stop.get() {
                        let (res, b) = c.write_all(out).await;
                        out = b;
                        res.expect("client write");
                        back.clear();
                        while back.len() < size {
                            let (res, b) = c.read(back).await;
                            back = b;
                            match res {
                                Ok(0) => panic!("the proxy closed the connection"),
                                Ok(_) => {}
                                Err(e) => panic!("client read: {e}"),
                            }
                        }
                        count.set(count.get() + 1);
                    }
                })
            })
            .collect();

        uringio::sleep(Duration::from_secs_f64(s.warmup)).await;
        let (m0, s0) = machine_and_self_ticks();
        let (n0, p0, c0, b0, t0) = (
            count.get(),
            cpu_snap(proxy_clock, proxy_tid),
            cpu_snap(me.0, me.1),
            cpu_snap(backend_clock, backend_tid),
            Instant::now(),
        );
        uringio::sleep(Duration::from_secs_f64(s.secs)).await;
        let (n1, p1, c1, b1, t1) = (
            count.get(),
            cpu_snap(proxy_clock, proxy_tid),
            cpu_snap(me.0, me.1),
            cpu_snap(backend_clock, backend_tid),
            Instant::now(),
        );
        let (m1, s1) = machine_and_self_ticks();
        stop.set(true);
        for t in tasks {
            t.await.expect("client task");
        }
        let msgs = ((n1 - n0) as f64).max(1.0);
        let secs = (t1 - t0).as_secs_f64();
        let (proxy_own, proxy_wq) = cpu_used(&p0, &p1);
        let load = {
            let (c, cw) = cpu_used(&c0, &c1);
            let (b, bw) = cpu_used(&b0, &b1);
            c + cw + b + bw
        };
        Sample {
            msgs_per_sec: msgs / secs,
            proxy_ns_per_msg: (proxy_own + proxy_wq).as_nanos() as f64 / msgs,
            iowq_ns_per_msg: proxy_wq.as_nanos() as f64 / msgs,
            load_ns_per_msg: load.as_nanos() as f64 / msgs,
            others: (m1 - m0).saturating_sub(s1 - s0) as f64 / ticks_per_sec() / secs,
        }
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let settings = Settings {
        secs: env_num("PROXY_SECS", 4.0),
        warmup: env_num("PROXY_WARMUP", 1.0),
        conns: env_num("PROXY_CONNS", 64usize),
        quiet_wait: Duration::from_secs_f64(env_num("PROXY_QUIET_WAIT", 5.0)),
    };
    let rounds: usize = env_num("PROXY_ROUNDS", 5usize).max(1);
    let sizes: Vec<usize> = std::env::var("PROXY_SIZES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .expect("PROXY_SIZES: comma-separated byte counts")
                })
                .collect()
        })
        .unwrap_or_else(|| vec![1024, 64 * 1024]);
    let extras = env_num("PROXY_EXTRAS", 1u32) != 0;
    let only = std::env::var("PROXY_ONLY")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let chosen = |p: &Proxy| {
        only.as_ref()
            .is_none_or(|v| v.split(',').any(|k| k.trim() == p.key()))
    };

    pin_to(LOAD_CPU);
    let backend = start_backend();
    let mut client = Runner::builder()
        .backend(Backend::IoUring)
        .build()
        .expect("the load client needs io_uring");
    println!(
        "proxy: {} connections, ping-pong, {}s measured (+{}s warm-up) per run, {} round(s); \
         proxy on CPU {PROXY_CPU}; uringio io_uring client and echo backend on CPU {LOAD_CPU}",
        settings.conns, settings.secs, settings.warmup, rounds
    );

    for &size in &sizes {
        let mut proxies: Vec<Proxy> = Proxy::MAIN.into_iter().filter(chosen).collect();
        if extras {
            proxies.extend(Proxy::EXTRA.into_iter().filter(chosen));
            if size >= EXTRAS_FROM {
                proxies.extend(Proxy::EXTRA_LARGE.into_iter().filter(chosen));
            }
        }
        measure(&mut client, &proxies, &backend, size, rounds, &settings);
    }
    backend.shutdown();
}

/// Runs every proxy `rounds` times at one message size and prints the
/// table.
fn measure(
    client: &mut Runner,
    proxies: &[Proxy],
    backend: &Running,
    size: usize,
    rounds: usize,
    settings: &Settings,
) {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); proxies.len()];
    let mut busy_runs = 0;
    for round in 0..rounds {
        // Rotate the starting proxy each round so none always goes first.
        for i in 0..proxies.len() {
            let idx = (i + round) % proxies.len();
            let kind = proxies[idx];
            wait_for_quiet(settings.quiet_wait);
            let proxy = start_proxy(kind, backend.addr);
            let s = run_load(client, &proxy, backend, size, settings);
            proxy.shutdown();
            eprintln!(
                "  {size:>6} B  round {}  {:<34} {:>9.0} msgs/s  proxy {:>7.0} ns/msg \
                 (io-wq {:>6.0})  load {:>7.0} ns/msg  other processes {:.2} CPUs",
                round + 1,
                kind.name(),
                s.msgs_per_sec,
                s.proxy_ns_per_msg,
                s.iowq_ns_per_msg,
                s.load_ns_per_msg,
                s.others
            );
            if s.others > 0.1 {
                busy_runs += 1;
            }
            samples[idx].push(s);
        }
    }
    let tokio = proxies.iter().position(|&p| p == Proxy::Tokio);
    println!();
    println!(
        "message size {size} B through the proxy and back, {} connections \
         (medians of {rounds}; ratios: medians of per-round ratios)",
        settings.conns
    );
    println!(
        "| {:<34} | {:>9} | {:>16} | {:>12} | {:>14} | {:>11} | {:>15} |",
        "proxy",
        "msgs/s",
        "proxy CPU ns/msg",
        "of it io-wq",
        "msgs/s ÷ tokio",
        "CPU ÷ tokio",
        "load CPU ns/msg"
    );
    println!(
        "|{:-<36}|{:->11}|{:->18}|{:->14}|{:->16}|{:->13}|{:->17}|",
        "", "", "", "", "", "", ""
    );
    for (i, kind) in proxies.iter().enumerate() {
        let med = |f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
        let ratio = |f: fn(&Sample) -> f64| match tokio {
            Some(t) => format!(
                "{:.2}",
                median(
                    samples[i]
                        .iter()
                        .zip(&samples[t])
                        .map(|(a, b)| f(a) / f(b))
                        .collect()
                )
            ),
            None => "-".into(),
        };
        println!(
            "| {:<34} | {:>9.0} | {:>16.0} | {:>12.0} | {:>14} | {:>11} | {:>15.0} |",
            kind.name(),
            med(|s| s.msgs_per_sec),
            med(|s| s.proxy_ns_per_msg),
            med(|s| s.iowq_ns_per_msg),
            ratio(|s| s.msgs_per_sec),
            ratio(|s| s.proxy_ns_per_msg),
            med(|s| s.load_ns_per_msg),
        );
    }
    if busy_runs > 0 {
        println!(
            "warning: other processes used more than 0.1 CPU during {busy_runs} of {} run(s): \
             throughput is skewed there (CPU per message much less so)",
            rounds * proxies.len()
        );
    }
    println!();
}
