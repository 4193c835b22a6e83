//! Linked ops on both backends: write → sync returning both results (and
//! the sync's ECANCELED when the write fails), reads with a deadline
//! (io_uring LINK_TIMEOUT; a loop timer on epoll), chains that stay whole
//! when the SQ is small, `driver::submit`/`eager`, and `Builder::entries`.
mod common;

use std::io;
use std::time::Duration;

use common::{TempDir, on_both};
use uringio::driver;
use uringio::fs::{File, OpenOptions, SyncKind};
use uringio::net::{TcpListener, TcpStream, UnixStream};
use uringio::{Backend, Runner};

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = uringio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (s, _) = l.accept().await.unwrap();
    (c.await.unwrap(), s)
}

#[test]
fn write_then_sync_returns_both_results() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("linked-ws-{b}"));
        let path = dir.path("f");
        let f = File::create(&path).await.unwrap();
        let data = common::pattern(1 << 20, 3);
        for (i, kind) in [SyncKind::Data, SyncKind::All].into_iter().enumerate() {
            let at = (i as u64) << 20;
            let ((w, buf), s) = f.write_all_at_sync(data.clone(), at, kind).await;
            w.unwrap_or_else(|e| panic!("{b}: write {e:?}"));
            s.unwrap_or_else(|e| panic!("{b}: sync {e:?}"));
            assert_eq!(buf, data, "{b}: the buffer comes back");
        }
        let ((w, buf), s) = f
            .write_at_sync(b"tail".to_vec(), 2 << 20, SyncKind::Data)
            .await;
        assert_eq!(w.unwrap(), 4, "{b}");
        s.unwrap();
        assert_eq!(buf, b"tail");
        // An empty buffer is a sync alone.
        let ((w, _), s) = f.write_all_at_sync(Vec::new(), 0, SyncKind::All).await;
        w.unwrap();
        s.unwrap();
        f.close().await.unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), (2 << 20) + 4, "{b}");
        assert_eq!(&on_disk[..1 << 20], &data[..], "{b}");
        assert_eq!(&on_disk[1 << 20..2 << 20], &data[..], "{b}");
        assert_eq!(&on_disk[2 << 20..], b"tail", "{b}");
    });
}

#[test]
fn failed_write_cancels_the_sync() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("linked-fail-{b}"));
        let path = dir.path("ro");
        std::fs::write(&path, b"original").unwrap();
        // Read-only: the write fails with EBADF, the linked sync never runs.
        let f = File::open(&path).await.unwrap();
        for kind in [SyncKind::Data, SyncKind::All] {
            let ((w, buf), s) = f.write_all_at_sync(b"new".to_vec(), 0, kind).await;
            let we = w.unwrap_err();
            assert_eq!(we.raw_os_error(), Some(libc::EBADF), "{b}: {we:?}");
            let se = s.unwrap_err();
            assert_eq!(se.raw_os_error(), Some(libc::ECANCELED), "{b}: {se:?}");
            assert_eq!(buf, b"new", "{b}: the buffer comes back");
            let ((w, _), s) = f.write_at_sync(b"new".to_vec(), 0, kind).await;
            assert_eq!(w.unwrap_err().raw_os_error(), Some(libc::EBADF), "{b}");
            assert_eq!(s.unwrap_err().raw_os_error(), Some(libc::ECANCELED), "{b}");
        }
        // A bad offset is refused before the kernel, the sync cancelled.
        let ((w, _), s) = f
            .write_all_at_sync(b"x".to_vec(), u64::MAX, SyncKind::Data)
            .await;
        assert_eq!(w.unwrap_err().kind(), io::ErrorKind::InvalidInput, "{b}");
        assert_eq!(s.unwrap_err().raw_os_error(), Some(libc::ECANCELED), "{b}");
        f.close().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"original");
    });
}

#[test]
fn read_timeout_expires_and_loses_nothing() {
    on_both(20, |b| async move {
        let (c, s) = tcp_pair().await;
        let t0 = std::time::Instant::now();
        let (res, buf) = s
            .read_timeout(Vec::with_capacity(64), Duration::from_millis(50))
            .await;
        let e = res.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{b}: {e:?}");
        assert!(buf.is_empty(), "{b}");
        assert!(t0.elapsed() >= Duration::from_millis(45), "{b}: too early");
        // The socket is fine afterwards and the next bytes arrive whole.
        let (r, _) = c.write_all(b"hello".to_vec()).await;
        r.unwrap();
        let (res, buf) = s.read_timeout(buf, Duration::from_secs(5)).await;
        assert_eq!(res.unwrap(), 5, "{b}");
        assert_eq!(buf, b"hello");
        // The read half of a split stream too.
        let (rh, _wh) = s.into_split();
        let (res, _) = rh
            .read_timeout(Vec::with_capacity(8), Duration::from_millis(20))
            .await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::TimedOut, "{b}");

        // Unix stream sockets too.
        let (x, y) = UnixStream::pair().unwrap();
        let (res, buf) = x
            .read_timeout(Vec::with_capacity(8), Duration::from_millis(20))
            .await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::TimedOut, "{b}");
        let (r, _) = y.write_all(b"u".to_vec()).await;
        r.unwrap();
        let (res, buf) = x.read_timeout(buf, Duration::from_secs(5)).await;
        assert_eq!(res.unwrap(), 1, "{b}");
        assert_eq!(buf, b"u");
    });
}

#[test]
fn read_timeout_completes_before_the_deadline() {
    on_both(20, |b| async move {
        let (c, s) = tcp_pair().await;
        let w = uringio::spawn(async move {
            uringio::sleep(Duration::from_millis(20)).await;
            let (r, _) = c.write_all(b"in time".to_vec()).await;
            r.unwrap();
            c
        });
        let (res, buf) = s
            .read_timeout(Vec::with_capacity(64), Duration::from_secs(10))
            .await;
        assert_eq!(res.unwrap(), 7, "{b}");
        assert_eq!(buf, b"in time");
        let _c = w.await.unwrap();
        // Regular files: the read completes (a file read is never cut).
        let dir = TempDir::new(&format!("linked-rt-{b}"));
        let p = dir.path("f");
        std::fs::write(&p, b"file data").unwrap();
        let f = File::open(&p).await.unwrap();
        let (res, buf) = f
            .read_at_timeout(Vec::with_capacity(64), 5, Duration::from_secs(5))
            .await;
        assert_eq!(res.unwrap(), 4, "{b}");
        assert_eq!(buf, b"data");
        f.close().await.unwrap();
    });
}

/// Many chains at once on a ring with an 8-entry SQ: each chain must
/// reach the kernel whole (a split chain would run the sync or the
/// timeout unlinked: wrong results, `EINVAL` for a lone LINK_TIMEOUT).
#[test]
fn chains_stay_whole_on_a_small_sq() {
    for b in common::backends() {
        let mut r = Runner::builder().backend(b).entries(8).build().unwrap();
        r.run(async move {
            uringio::timeout(Duration::from_secs(10), async move {
                let dir = TempDir::new(&format!("linked-small-{b}"));
                let f = std::rc::Rc::new(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .open(dir.path("f"))
                        .await
                        .unwrap(),
                );
                let mut tasks = Vec::new();
                for i in 0..40u64 {
                    let f = f.clone();
                    tasks.push(uringio::spawn(async move {
                        let data = vec![i as u8; 4096];
                        let ((w, _), s) = f.write_all_at_sync(data, i * 4096, SyncKind::Data).await;
                        w.unwrap();
                        s.unwrap();
                    }));
                }
                // Read chains queued in one iteration behind 0..8 single
                // SQEs, so that some chain straddles the SQ's end.
                let mut pairs = Vec::new();
                for _ in 0..5 {
                    pairs.push(tcp_pair().await);
                }
                let pairs = std::rc::Rc::new(pairs);
                for pad in 0..8usize {
                    let mut singles = Vec::new();
                    for k in 0..pad {
                        let f = f.clone();
                        singles.push(uringio::spawn(async move {
                            let (r, _) = f.read_at(Vec::with_capacity(8), k as u64).await;
                            r.unwrap();
                        }));
                    }
                    let mut reads = Vec::new();
                    for i in 0..pairs.len() {
                        let p = pairs.clone();
                        reads.push(uringio::spawn(async move {
                            let d = if i % 2 == 0 {
                                Duration::from_millis(20)
                            } else {
                                Duration::from_secs(10)
                            };
                            p[i].1.read_timeout(Vec::with_capacity(16), d).await
                        }));
                    }
                    uringio::sleep(Duration::from_millis(40)).await;
                    for (i, (c, _)) in pairs.iter().enumerate() {
                        if i % 2 == 1 {
                            let (r, _) = c.write_all(vec![b'a' + i as u8]).await;
                            r.unwrap();
                        }
                    }
                    for (i, r) in reads.into_iter().enumerate() {
                        let (res, buf) = r.await.unwrap();
                        if i % 2 == 0 {
                            let e = res.unwrap_err();
                            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{b} {pad} {i}: {e:?}");
                        } else {
                            assert_eq!(res.unwrap(), 1, "{b} {pad} {i}");
                            assert_eq!(buf, [b'a' + i as u8]);
                        }
                    }
                    for t in singles {
                        t.await.unwrap();
                    }
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let data = std::fs::read(dir.path("f")).unwrap();
                assert_eq!(data.len(), 40 * 4096);
                for i in 0..40 {
                    assert!(data[i * 4096..(i + 1) * 4096].iter().all(|&x| x == i as u8));
                }
            })
            .await
            .expect("timed out")
        });
    }
}

#[test]
fn submit_now_and_eager() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("linked-submit-{b}"));
        let p = dir.path("f");
        std::fs::write(&p, common::pattern(64 << 10, 1)).unwrap();
        let f = File::open(&p).await.unwrap();
        // Nothing queued: nothing to submit.
        assert_eq!(driver::submit().unwrap(), 0, "{b}");
        let mut r1 = f.read_at(Vec::with_capacity(4096), 0);
        let mut r2 = f.read_at(Vec::with_capacity(4096), 4096);
        let p1 = futures_util::poll!(&mut r1);
        let p2 = futures_util::poll!(&mut r2);
        let before = driver::stats();
        let n = driver::submit().unwrap();
        let after = driver::stats();
        if b == Backend::IoUring {
            assert!(p1.is_pending() && p2.is_pending());
            assert_eq!(n, 2, "both queued reads go in now");
            assert_eq!(after.enter_calls, before.enter_calls + 1);
            assert_eq!(after.sqes_submitted, before.sqes_submitted + 2);
        } else {
            assert_eq!(n, 0, "epoll has nothing to submit");
        }
        // On epoll a cached read may finish at its first poll (served from
        // the page cache on the loop thread): not polled again then.
        let (a, _) = match p1 {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => (&mut r1).await,
        };
        let (c, _) = match p2 {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => (&mut r2).await,
        };
        assert_eq!(a.unwrap() + c.unwrap(), 8192);
        drop((r1, r2));
        // eager: the op goes in on its first poll.
        let (res, buf) = driver::eager(f.read_at(Vec::with_capacity(100), 10)).await;
        assert_eq!(res.unwrap(), 100, "{b}");
        assert_eq!(buf, common::pattern(64 << 10, 1)[10..110]);
        f.close().await.unwrap();
    });
}

#[test]
fn builder_entries_sets_and_checks_the_queue_sizes() {
    for n in [0u32, 32769, u32::MAX] {
        let e = Runner::builder().entries(n).build().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{n}: {e:?}");
        assert!(e.to_string().contains("entries"), "{e}");
    }
    if !common::io_uring_or_skip("io_uring test") {
        return;
    }
    for (n, sq) in [(1u32, 8u32), (8, 8), (100, 128), (256, 256), (4096, 4096)] {
        let r = Runner::builder()
            .backend(Backend::IoUring)
            .entries(n)
            .build()
            .unwrap();
        let f = r.features();
        assert_eq!(f.sq_entries, sq, "entries({n})");
        assert_eq!(f.cq_entries, sq * 4, "entries({n})");
    }
    // The largest the kernel allows: the CQ is clamped to its maximum.
    let r = Runner::builder()
        .backend(Backend::IoUring)
        .entries(32768)
        .build()
        .unwrap();
    assert_eq!(r.features().sq_entries, 32768);
    assert!(r.features().cq_entries >= 32768);
}
