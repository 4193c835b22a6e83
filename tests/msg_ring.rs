//! Cross-core hand-off (`CoreContext::peers`) with each wake-up path:
//! io_uring with `IORING_OP_MSG_RING` (where probed), io_uring forced onto
//! the eventfd fallback (`Builder::msg_ring(false)`), and epoll. Closures
//! and connections go between cores and back; a loop that stops right
//! after queueing a `MSG_RING` still wakes its target. Loops ending with
//! hand-offs in flight are in tests/msg_ring_shutdown.rs (it counts
//! descriptors, so it runs alone).
mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use uringio::rt::{Builder, CoreContext};
use uringio::{Backend, Runner};

/// A way for loops to wake each other.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// io_uring, `MSG_RING` on (the default).
    MsgRing,
    /// io_uring, `MSG_RING` off: eventfd writes.
    UringEventfd,
    /// epoll: eventfd writes.
    Epoll,
}

impl Path {
    fn builder(self) -> Builder {
        match self {
            Path::MsgRing => Builder::new().backend(Backend::IoUring),
            Path::UringEventfd => Builder::new().backend(Backend::IoUring).msg_ring(false),
            Path::Epoll => Builder::new().backend(Backend::Epoll),
        }
    }
}

/// The paths this machine can run (io_uring halves skip visibly).
#[track_caller]
fn paths() -> Vec<Path> {
    common::backends()
        .into_iter()
        .flat_map(|b| match b {
            Backend::IoUring => vec![Path::MsgRing, Path::UringEventfd],
            _ => vec![Path::Epoll],
        })
        .collect()
}

/// `(msg_ring probed, MSG_RING wake-ups this loop sent)`.
fn msg_stats() -> (bool, u64) {
    (
        uringio::driver::features().msg_ring,
        uringio::driver::stats().msg_ring_wakes,
    )
}

/// Checks, per path, that the wake-ups went the way asked for.
fn check_path(path: Path, stats: &[(bool, u64)]) {
    let sent: u64 = stats.iter().map(|s| s.1).sum();
    match path {
        Path::MsgRing if stats.iter().all(|s| s.0) => {
            assert!(sent > 0, "MSG_RING is probed but no wake-up used it");
        }
        Path::MsgRing => common::report_skip("MSG_RING half (not probed on this kernel)"),
        Path::UringEventfd | Path::Epoll => assert_eq!(sent, 0, "{path:?} sent MSG_RINGs"),
    }
}

const ROUNDS: usize = 2000;

#[test]
fn closures_ping_pong_between_cores_on_every_wake_path() {
    for path in paths() {
        let (done_tx, done_rx) = uringio::channel::unbounded::<()>();
        let done_rx = Arc::new(std::sync::Mutex::new(Some(done_rx)));
        let outs = path
            .builder()
            .thread_per_core(2)
            .pin_cpus(true)
            .launch(move |core: CoreContext| {
                let done_tx = done_tx.clone();
                let done_rx = done_rx.clone();
                async move {
                    let other = core.peers[1 - core.id].clone();
                    if core.id == 1 {
                        // Serve until core 0 says it is done.
                        let mut rx = done_rx.lock().unwrap().take().expect("one receiver");
                        uringio::timeout(Duration::from_secs(30), rx.recv())
                            .await
                            .expect("core 0 finished in time")
                            .expect("done");
                        return (0, vec![msg_stats()]);
                    }
                    // Each round: a closure runs on core 1 and its result
                    // comes back here (a wake-up each way; both loops park
                    // in between).
                    let mut sum = 0usize;
                    for i in 0..ROUNDS {
                        sum += uringio::timeout(
                            Duration::from_secs(5),
                            other.spawn_with(move || async move { i * 2 }),
                        )
                        .await
                        .expect("round trip in time")
                        .expect("the closure ran");
                    }
                    // Plain callbacks, in a burst.
                    let n = Arc::new(AtomicUsize::new(0));
                    for _ in 0..ROUNDS {
                        let n = n.clone();
                        other.call_soon_threadsafe(move || {
                            n.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    uringio::timeout(Duration::from_secs(5), async {
                        while n.load(Ordering::SeqCst) < ROUNDS {
                            uringio::sleep(Duration::from_millis(1)).await;
                        }
                    })
                    .await
                    .expect("every callback ran");
                    done_tx.try_send(()).expect("core 1 listens");
                    (sum, vec![msg_stats()])
                }
            })
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(outs[0].0, (0..ROUNDS).map(|i| i * 2).sum::<usize>());
        let stats: Vec<_> = outs.iter().flat_map(|o| o.1.clone()).collect();
        check_path(path, &stats);
    }
}

/// An echo server on a plain thread: answers every connection until the
/// client closes.
fn echo_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..CONNS {
            let (mut s, _) = l.accept().unwrap();
            conns.push(std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 256];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => s.write_all(&buf[..n]).unwrap(),
                    }
                }
            }));
        }
        for c in conns {
            c.join().unwrap();
        }
    });
    (addr, h)
}

const CONNS: usize = 40;

#[test]
fn connections_are_handed_to_another_core_and_served_there_on_every_wake_path() {
    for path in paths() {
        let (addr, server) = echo_server();
        let (done_tx, done_rx) = uringio::channel::unbounded::<()>();
        let done_rx = Arc::new(std::sync::Mutex::new(Some(done_rx)));
        let outs = path
            .builder()
            .thread_per_core(2)
            .launch(move |core: CoreContext| {
                let done_tx = done_tx.clone();
                let done_rx = done_rx.clone();
                async move {
                    if core.id == 1 {
                        let mut rx = done_rx.lock().unwrap().take().expect("one receiver");
                        uringio::timeout(Duration::from_secs(30), rx.recv())
                            .await
                            .expect("core 0 finished in time")
                            .expect("done");
                        return (Vec::new(), msg_stats());
                    }
                    // Core 0 connects; core 1 gets each connection (a
                    // std socket is Send), talks on it and answers.
                    let other = core.peers[1].clone();
                    let mut answers = Vec::new();
                    for i in 0..CONNS {
                        let s = std::net::TcpStream::connect(addr).expect("connect");
                        let r = other.spawn_with(move || async move {
                            let s = uringio::net::TcpStream::from_std(s).expect("from_std");
                            let msg = format!("hello {i} from core 1");
                            let (r, _) = s.write_all(msg.clone().into_bytes()).await;
                            r.expect("write");
                            let mut got = Vec::with_capacity(64);
                            while got.len() < msg.len() {
                                let (r, b) = s.read(got).await;
                                got = b;
                                assert!(r.expect("read") > 0, "echo closed early");
                            }
                            let me = std::thread::current().name().map(str::to_string);
                            (String::from_utf8(got).unwrap(), me)
                        });
                        answers.push(
                            uringio::timeout(Duration::from_secs(5), r)
                                .await
                                .expect("hand-off answered in time")
                                .expect("served"),
                        );
                    }
                    done_tx.try_send(()).expect("core 1 listens");
                    (answers, msg_stats())
                }
            })
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        server.join().unwrap();
        for (i, (text, thread)) in outs[0].0.iter().enumerate() {
            assert_eq!(text, &format!("hello {i} from core 1"));
            assert_eq!(thread.as_deref(), Some("uringio-core-1"));
        }
        check_path(path, &[outs[0].1, outs[1].1]);
    }
}

#[test]
fn a_loop_that_stops_running_right_after_a_hand_off_still_wakes_the_target() {
    for path in paths() {
        let (htx, hrx) = std::sync::mpsc::channel();
        let target = std::thread::spawn(move || {
            let mut r: Runner = path.builder().build().expect("loop");
            htx.send(r.handle()).unwrap();
            // Parked: nothing to do until someone wakes it.
            r.run_forever();
        });
        let other = hrx.recv().unwrap();
        let mut me: Runner = path.builder().build().expect("loop");
        for round in 0..20 {
            // Give the target time to park (not needed for correctness:
            // this only makes the parked case the usual one).
            std::thread::sleep(Duration::from_millis(5));
            let ran = Arc::new(AtomicBool::new(false));
            let r2 = ran.clone();
            // The loop queues the wake-up and stops running at once; on
            // io_uring with MSG_RING the message still sits in its ring.
            let o = other.clone();
            me.run(async move {
                o.call_soon_threadsafe(move || r2.store(true, Ordering::SeqCst));
            });
            let t0 = Instant::now();
            while !ran.load(Ordering::SeqCst) {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "{path:?}: round {round}: the parked target was never woken"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mine = me.run(async { msg_stats() });
        other.stop();
        target.join().unwrap();
        check_path(path, &[mine]);
    }
}
