//! Many ops dropped while in flight: what they leave behind must stay
//! bounded while the loop runs, and closing the loop must stay quick
//! (issue 8, defects 3 and 4). The long soak (a million dropped reads per
//! backend, RSS and time printed) is `#[ignore]`d:
//! `cargo test --release --test dropped_ops -- --ignored --nocapture`.

mod common;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use uringio::net::TcpStream;
use uringio::{Backend, Runner};

type ReadFut<'a> = Pin<Box<dyn Future<Output = uringio::BufResult<usize, Vec<u8>>> + 'a>>;

/// `n` idle connections (nothing is ever sent on them), with their peers.
fn idle_conns(n: usize) -> (Vec<TcpStream>, Vec<std::net::TcpStream>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let mut ours = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..n {
        peers.push(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
        let (s, _) = l.accept().unwrap();
        ours.push(TcpStream::from_std(s).unwrap());
    }
    (ours, peers)
}

/// Starts a read on each connection, lets the loop submit them (they wait:
/// no data), then drops them all. Returns after `rounds` rounds.
async fn drop_reads(conns: &[TcpStream], rounds: usize) {
    for _ in 0..rounds {
        let mut futs: Vec<ReadFut<'_>> = conns
            .iter()
            .map(|c| {
                let f = c.read(Vec::with_capacity(64));
                Box::pin(f) as ReadFut<'_>
            })
            .collect();
        std::future::poll_fn(|cx: &mut Context<'_>| {
            for f in futs.iter_mut() {
                assert!(f.as_mut().poll(cx).is_pending(), "an idle read completed");
            }
            Poll::Ready(())
        })
        .await;
        // One loop iteration: the reads reach the kernel (or wait for
        // readiness), then they are dropped.
        uringio::yield_now().await;
        drop(futs);
    }
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf is always safe to call.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn dropped_reads_leave_no_backlog_while_running() {
    common::on_both(60, |b| async move {
        let (conns, _peers) = idle_conns(64);
        let mut peak = 0;
        for _ in 0..50 {
            drop_reads(&conns, 20).await;
            let s = uringio::driver::stats();
            peak = peak.max(s.cancels_in_flight.max(s.readiness_waiters));
        }
        // 64 000 reads dropped in all; what is left over at any time stays
        // within a few iterations' worth, far below that.
        assert!(peak <= 4 * 1024, "{b}: backlog peaked at {peak}");
        // Once the loop goes round without new drops, nothing is left.
        for _ in 0..200 {
            let s = uringio::driver::stats();
            if s.cancels_in_flight == 0 && s.readiness_waiters == 0 {
                break;
            }
            uringio::sleep(Duration::from_millis(1)).await;
        }
        let s = uringio::driver::stats();
        assert_eq!((s.cancels_in_flight, s.readiness_waiters), (0, 0), "{b}");
        // The connections still work.
        let (res, buf) = conns[0]
            .read(Vec::with_capacity(8))
            .with_peer_write(&_peers[0])
            .await;
        assert_eq!(res.unwrap(), 2);
        assert_eq!(buf, b"ok");
    });
}

/// Writes "ok" on the peer once the read is waiting.
trait WithPeerWrite: Future + Sized {
    fn with_peer_write(self, peer: &std::net::TcpStream) -> impl Future<Output = Self::Output>;
}

impl<F: Future> WithPeerWrite for F {
    async fn with_peer_write(self, peer: &std::net::TcpStream) -> F::Output {
        use std::io::Write;
        let mut peer = peer.try_clone().unwrap();
        let mut fut = std::pin::pin!(self);
        let mut wrote = false;
        std::future::poll_fn(|cx| {
            let r = fut.as_mut().poll(cx);
            if r.is_pending() && !wrote {
                wrote = true;
                peer.write_all(b"ok").unwrap();
                cx.waker().wake_by_ref();
            }
            r
        })
        .await
    }
}

#[test]
fn a_waiting_read_dropped_on_an_idle_socket_leaves_no_waker() {
    common::on_both(10, |b| async move {
        let (conns, _peers) = idle_conns(1);
        for _ in 0..1000 {
            let mut f = Box::pin(conns[0].read(Vec::with_capacity(16)));
            let pending =
                std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await;
            assert!(pending);
            drop(f);
        }
        // On epoll each read waited for readiness and was dropped: none of
        // their wakers may stay behind on the idle socket.
        assert_eq!(uringio::driver::stats().readiness_waiters, 0, "{b}");
    });
}

#[test]
fn dropping_a_runner_with_thousands_of_cancelled_reads_is_quick() {
    for b in common::backends() {
        let (conns, _peers) = idle_conns(256);
        let mut r = common::runner(b);
        r.run(async {
            // Tasks blocked in reads at shutdown, and dropped reads in
            // flight: the Runner's drop cancels and reaps them all.
            for c in conns.iter().take(128) {
                let c = c.as_raw_fd_clone();
                uringio::spawn(async move {
                    let (_res, _buf) = c.read(Vec::with_capacity(64)).await;
                })
                .detach();
            }
            drop_reads(&conns[128..], 40).await;
        });
        let t0 = Instant::now();
        drop(r);
        let took = t0.elapsed();
        // Target well under a second; the bound only guards against hangs.
        assert!(
            took < Duration::from_secs(5),
            "{b}: Runner drop took {took:?}"
        );
        drop(conns);
    }
}

/// A second handle on the same connection (the test keeps the first).
trait CloneFd {
    fn as_raw_fd_clone(&self) -> TcpStream;
}

impl CloneFd for TcpStream {
    fn as_raw_fd_clone(&self) -> TcpStream {
        use std::os::fd::{AsFd, OwnedFd};
        let fd: OwnedFd = self.as_fd().try_clone_to_owned().unwrap();
        TcpStream::from_std(std::net::TcpStream::from(fd)).unwrap()
    }
}

/// One backend's soak: a million dropped in-flight reads, then the Runner
/// dropped. Prints RSS growth and times; returns them.
fn soak(b: Backend) -> (u64, Duration, Duration) {
    const CONNS: usize = 100;
    const TOTAL: usize = 1_000_000;
    let (conns, _peers) = idle_conns(CONNS);
    let mut r: Runner = common::runner(b);
    // Warm up (allocator, slab, epoll table) before measuring.
    r.run(drop_reads(&conns, 10));
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut rss_peak = rss0;
    r.run(async {
        for _ in 0..TOTAL / CONNS / 100 {
            drop_reads(&conns, 100).await;
            rss_peak = rss_peak.max(rss_bytes());
        }
    });
    let took = t0.elapsed();
    let growth = rss_peak.saturating_sub(rss0);
    let t1 = Instant::now();
    drop(r);
    let drop_took = t1.elapsed();
    println!(
        "soak {b}: {TOTAL} dropped in-flight reads in {took:.2?} ({:.0} ns each), RSS growth {:.1} MB, Runner drop {drop_took:.2?}",
        took.as_nanos() as f64 / TOTAL as f64,
        growth as f64 / 1e6,
    );
    (growth, took, drop_took)
}

#[test]
#[ignore = "soak: run with --release --ignored --nocapture"]
fn soak_a_million_dropped_reads() {
    for b in common::backends() {
        let (growth, took, drop_took) = soak(b);
        assert!(growth < 16 << 20, "{b}: RSS grew {growth} B");
        assert!(took < Duration::from_secs(3), "{b}: took {took:?}");
        assert!(
            drop_took < Duration::from_secs(1),
            "{b}: drop took {drop_took:?}"
        );
    }
}
