//! Cancellation on both backends: thousands of reads dropped at once and
//! the loop keeps serving, `driver::Canceller`, `Task::cancel` of a task
//! blocked in I/O, dropped `incoming()` streams, and dropped ops that must
//! neither leak descriptors nor touch a descriptor number reused after them.
//!
//! These tests count the process's open descriptors, so they take a lock
//! and run one at a time.
mod common;

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use common::{TempDir, on_both, open_fds};
use futures_util::StreamExt;
use futures_util::future::join_all;
use uringio::driver::{Cancellable, Canceller};
use uringio::net::{TcpListener, TcpStream};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` connected pairs (client, server), both ends ours.
async fn pairs(l: &TcpListener, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let addr = l.local_addr().unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        out.push((c, s));
    }
    out
}

async fn echo_round_trip(addr: SocketAddr, msg: &[u8]) {
    let c = TcpStream::connect(addr).await.unwrap();
    let (res, _) = c.write_all(msg.to_vec()).await;
    res.unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    loop {
        let (res, buf) = c.read(Vec::with_capacity(4096)).await;
        if res.unwrap() == 0 {
            break;
        }
        got.extend_from_slice(&buf);
    }
    assert_eq!(got, msg);
}

/// An echo server on `l`, one task per connection.
fn serve_echo(l: TcpListener) -> uringio::Task<()> {
    uringio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            uringio::spawn(async move {
                loop {
                    let (res, buf) = s.read(Vec::with_capacity(4096)).await;
                    match res {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let (res, _) = s.write_all(buf).await;
                            if res.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            })
            .detach();
        }
    })
}

/// Lets the loop go round a few times (submit, reap, run callbacks).
async fn settle() {
    for _ in 0..5 {
        uringio::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn thousands_of_dropped_reads_then_keep_serving() {
    const N: usize = 2000;
    let _g = serial();
    on_both(60, |b| async move {
        let fds_before = open_fds();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let conns = pairs(&l, N).await;
        drop(l);

        // 1. N reads on idle sockets, all dropped at once by a timeout.
        let reads = join_all(conns.iter().map(|(c, _)| c.read(Vec::with_capacity(64))));
        let r = uringio::timeout(Duration::from_millis(50), reads).await;
        assert!(r.is_err(), "idle reads cannot complete");

        // 2. N tasks blocked in reads, cancelled with Task::cancel.
        let conns: Vec<(Rc<TcpStream>, TcpStream)> =
            conns.into_iter().map(|(c, s)| (Rc::new(c), s)).collect();
        let tasks: Vec<_> = conns
            .iter()
            .map(|(c, _)| {
                let c = c.clone();
                uringio::spawn(async move {
                    let (res, _) = c.read(Vec::with_capacity(64)).await;
                    res.map(|_| ())
                })
            })
            .collect();
        settle().await;
        for t in &tasks {
            assert!(t.cancel(), "task finished on an idle socket");
        }
        for t in tasks {
            assert!(t.await.unwrap_err().is_cancelled());
        }

        // 3. The loop keeps serving: a new echo server and connections.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = serve_echo(l);
        for i in 0..5u8 {
            echo_round_trip(addr, &[i; 1000]).await;
        }

        // 4. The old sockets lost nothing to the cancelled reads: bytes sent
        // now arrive whole.
        for (i, (c, s)) in conns.iter().enumerate() {
            let msg = (i as u32).to_be_bytes().to_vec();
            let (res, _) = s.write_all(msg.clone()).await;
            res.unwrap();
            let (res, buf) = c.read(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, msg, "connection {i}");
        }

        // 5. Everything closed: no descriptor leaked.
        server.cancel();
        let _ = server.await;
        drop(conns);
        settle().await;
        assert_eq!(open_fds(), fds_before, "{b}: descriptors leaked");
    });
}

#[test]
fn canceller_on_idle_read_gives_ecanceled_and_buffer() {
    let _g = serial();
    on_both(10, |_| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = pairs(&l, 1).await;
        let (c, s) = p.pop().unwrap();
        let c = Rc::new(c);
        let canceller = Canceller::new();
        assert!(!canceller.is_cancelled());
        let task = {
            let c = c.clone();
            let k = canceller.clone();
            uringio::spawn(async move {
                let mut buf = Vec::with_capacity(32);
                buf.extend_from_slice(b"keep");
                c.read(buf).with_canceller(&k).await
            })
        };
        settle().await;
        assert!(!task.is_finished());
        canceller.cancel();
        assert!(canceller.is_cancelled());
        let (res, buf) = task.await.unwrap();
        let err = res.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECANCELED), "{err:?}");
        assert_eq!(buf, b"keep", "the buffer comes back as it was");
        assert!(buf.capacity() >= 32);

        // The socket still works and nothing was eaten.
        let (res, _) = s.write_all(b"after".to_vec()).await;
        res.unwrap();
        let (res, buf) = c.read(Vec::with_capacity(32)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"after");
    });
}

#[test]
fn canceller_after_data_arrived_gives_the_data() {
    let _g = serial();
    on_both(10, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = pairs(&l, 1).await;
        let (c, s) = p.pop().unwrap();
        let canceller = Canceller::new();
        let mut read = pin!(c.read(Vec::with_capacity(32)).with_canceller(&canceller));
        // Put the read in flight.
        assert!(futures_util::poll!(read.as_mut()).is_pending());
        // The data arrives and the loop goes round (the kernel completes
        // the read on io_uring) without the read being polled.
        let (res, _) = s.write_all(b"first".to_vec()).await;
        res.unwrap();
        settle().await;
        // Cancelling now must not lose the bytes.
        canceller.cancel();
        let (res, buf) = read.await;
        assert_eq!(res.unwrap_or_else(|e| panic!("{b}: {e:?}")), 5);
        assert_eq!(buf, b"first");
    });
}

#[test]
fn canceller_fired_before_first_poll_and_many_ops() {
    let _g = serial();
    on_both(10, |_| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let conns = pairs(&l, 50).await;
        // Fired first: the op never starts.
        let early = Canceller::new();
        early.cancel();
        let (res, buf) = conns[0]
            .0
            .read(Vec::with_capacity(8))
            .with_canceller(&early)
            .await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        assert_eq!(buf.capacity(), 8);

        // One token, many ops in flight.
        let k = Canceller::new();
        let reads = join_all(
            conns
                .iter()
                .map(|(c, _)| c.read(Vec::with_capacity(8)).with_canceller(&k)),
        );
        let k2 = k.clone();
        uringio::get_running_loop().call_later(Duration::from_millis(20), move || k2.cancel());
        let results = reads.await;
        assert_eq!(results.len(), 50);
        for (res, _) in results {
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        }
    });
}

#[test]
fn task_cancel_while_blocked_in_read() {
    let _g = serial();
    on_both(10, |_| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = pairs(&l, 1).await;
        let (c, s) = p.pop().unwrap();
        let c = Rc::new(c);
        let t = {
            let c = c.clone();
            uringio::spawn(async move {
                let (res, buf) = c.read(Vec::with_capacity(16)).await;
                (res.map(|_| ()), buf)
            })
        };
        settle().await;
        assert!(!t.is_finished());
        assert!(t.cancel());
        let err = t.await.unwrap_err();
        assert!(err.is_cancelled() && !err.is_panic());
        // The cancelled read is gone for good: data sent now is read whole
        // by the next read.
        let (res, _) = s.write_all(b"later".to_vec()).await;
        res.unwrap();
        let (res, buf) = c.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(buf, b"later");
        // Cancelling a finished task says so.
        let done = uringio::spawn(async { 1 });
        settle().await;
        assert!(done.is_finished());
        assert!(!done.cancel());
        assert_eq!(done.await.unwrap(), 1);
    });
}

#[test]
fn dropping_incoming_stream() {
    let _g = serial();
    on_both(20, |b| async move {
        let fds_before = open_fds();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        {
            let mut inc = l.incoming();
            // Arm it (multishot accept on io_uring), take one connection.
            let c0 = std::net::TcpStream::connect(addr).unwrap();
            let s0 = inc.next().await.unwrap().unwrap();
            assert_eq!(s0.peer_addr().unwrap(), c0.local_addr().unwrap());
            // More connections arrive while nobody takes them.
            let _more: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            settle().await;
        } // the stream and those clients drop here
        settle().await;
        // The listener still accepts: skip connections the dropped stream
        // may have left in the backlog, until our marked one comes.
        let client = uringio::spawn(async move {
            let c = TcpStream::connect(addr).await.unwrap();
            let (res, _) = c.write_all(b"marked".to_vec()).await;
            res.unwrap();
            c
        });
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (res, buf) = s.read(Vec::with_capacity(16)).await;
            if res.is_ok() && buf == b"marked" {
                break;
            }
        }
        drop(client.await.unwrap());
        // A new incoming() works after the old one was dropped.
        let c = std::net::TcpStream::connect(addr).unwrap();
        let s = l.incoming().next().await.unwrap().unwrap();
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
        drop((s, c, l));
        settle().await;
        assert_eq!(open_fds(), fds_before, "{b}: descriptors leaked");
    });
}

#[test]
fn dropped_accept_that_completed_does_not_leak_its_fd() {
    let _g = serial();
    on_both(10, |b| async move {
        let fds_before = open_fds();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client;
        {
            let mut acc = pin!(l.accept());
            assert!(futures_util::poll!(acc.as_mut()).is_pending());
            settle().await; // submitted
            client = std::net::TcpStream::connect(addr).unwrap();
            settle().await; // the kernel accepted it
        } // dropped without being polled again
        settle().await;
        if b == uringio::Backend::IoUring {
            // The kernel accepted it, so the fd was closed: the client sees
            // EOF. (On epoll the connection simply waits in the backlog.)
            use std::io::Read;
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut byte = [0u8; 1];
            assert_eq!((&client).read(&mut byte).unwrap(), 0);
        }
        drop(client);
        drop(l);
        settle().await;
        assert_eq!(open_fds(), fds_before, "{b}: an accepted fd leaked");
    });
}

#[test]
fn dropped_open_does_not_leak_its_fd() {
    let _g = serial();
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("cancel-open-{b}"));
        let path = dir.path("f");
        std::fs::write(&path, b"x").unwrap();
        let fds_before = open_fds();
        for _ in 0..20 {
            let mut open = pin!(uringio::fs::File::open(&path));
            let _ = futures_util::poll!(open.as_mut());
            settle().await; // the kernel or the pool opened it
        }
        settle().await;
        assert_eq!(open_fds(), fds_before, "{b}: opened fds leaked");
    });
}

#[test]
fn dropped_write_never_reaches_a_reused_fd_number() {
    let _g = serial();
    on_both(10, |b| async move {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c1 = TcpStream::connect(addr).await.unwrap();
        let (_s1, _) = l.accept().unwrap();
        {
            let mut w = pin!(c1.write(b"not for you".to_vec()));
            // Queued, then dropped before the loop went round.
            let _ = futures_util::poll!(w.as_mut());
        }
        drop(c1);
        // A new connection, most likely on the same fd number.
        let _c2 = std::net::TcpStream::connect(addr).unwrap();
        let (s2, _) = l.accept().unwrap();
        settle().await;
        s2.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 32];
        use std::io::Read;
        match (&s2).read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!(
                "{b}: the second connection received {:?}",
                other.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            ),
        }
    });
}

#[test]
fn dropped_file_write_never_reaches_a_reused_fd_number() {
    let _g = serial();
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("cancel-reuse-{b}"));
        std::fs::write(dir.path("other"), b"untouched").unwrap();
        for _ in 0..20 {
            let f = uringio::fs::File::create(dir.path("mine")).await.unwrap();
            {
                let mut w = pin!(f.write_at(b"XXXX".to_vec(), 0));
                let _ = futures_util::poll!(w.as_mut());
            }
            drop(f);
            let other = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.path("other"))
                .unwrap();
            settle().await;
            drop(other);
            assert_eq!(
                std::fs::read(dir.path("other")).unwrap(),
                b"untouched",
                "{b}: a dropped write landed in another file"
            );
        }
    });
}

#[test]
fn dropped_connect_and_reads_under_timeout_loop() {
    // Many short timeouts around reads and connects, in a loop: no panics,
    // no leaks, and the loop stays responsive.
    let _g = serial();
    on_both(30, |b| async move {
        let fds_before = open_fds();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut p = pairs(&l, 1).await;
        let (c, s) = p.pop().unwrap();
        for i in 0..200u32 {
            let r =
                uringio::timeout(Duration::from_micros(50), c.read(Vec::with_capacity(8))).await;
            if let Ok((res, buf)) = r {
                panic!("read {i} on an idle socket returned {res:?} {buf:?}");
            }
            let _ = uringio::timeout(Duration::from_micros(50), TcpStream::connect(addr)).await;
        }
        // Drain whatever connections got through, then check the pair.
        let drain = uringio::spawn(async move {
            loop {
                let _ = l.accept().await;
            }
        });
        let (res, _) = s.write_all(b"ok".to_vec()).await;
        res.unwrap();
        let (res, buf) = c.read(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap(), 2);
        assert_eq!(buf, b"ok");
        drain.cancel();
        let _ = drain.await;
        drop((c, s));
        settle().await;
        assert_eq!(open_fds(), fds_before, "{b}: descriptors leaked");
    });
}

#[test]
fn dropped_file_reads_on_both_backends() {
    // File reads dropped mid-flight (on the pool on epoll): the loop goes
    // on, the buffers are freed safely, later reads work.
    let _g = serial();
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("cancel-file-{b}"));
        let path = dir.path("data");
        std::fs::write(&path, vec![5u8; 1 << 20]).unwrap();
        let f = uringio::fs::File::open(&path).await.unwrap();
        for _ in 0..10 {
            let reads = join_all((0..64).map(|i| f.read_at(Vec::with_capacity(16384), i * 16384)));
            let mut reads = pin!(reads);
            let _ = futures_util::poll!(reads.as_mut());
        }
        let (res, buf) = f.read_exact_at(Vec::with_capacity(1 << 20), 0).await;
        res.unwrap();
        assert!(buf.iter().all(|&x| x == 5));
        f.close().await.unwrap();
    });
}

#[test]
fn dropping_a_runner_with_tasks_blocked_in_io() {
    let _g = serial();
    for b in common::backends() {
        let dir = TempDir::new(&format!("cancel-runner-{b}"));
        std::fs::write(dir.path("f"), vec![1u8; 1 << 20]).unwrap();
        let fds_before = open_fds();
        let t0 = std::time::Instant::now();
        {
            let mut r = common::runner(b);
            let path = dir.path("f");
            r.run(async move {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                for (c, s) in pairs(&l, 300).await {
                    uringio::spawn(async move {
                        let _peer = s;
                        let _ = c.read(Vec::with_capacity(64)).await;
                    })
                    .detach();
                }
                // A pending accept, and file reads in flight (the pool on
                // epoll).
                uringio::spawn(async move {
                    let _ = l.accept().await;
                })
                .detach();
                let f = Rc::new(uringio::fs::File::open(&path).await.unwrap());
                for i in 0..32u64 {
                    let f = f.clone();
                    uringio::spawn(async move {
                        loop {
                            let (res, _) = f.read_at(Vec::with_capacity(32768), i * 32768).await;
                            res.unwrap();
                        }
                    })
                    .detach();
                }
                settle().await;
            });
        } // the runner drops: every task is cancelled, the driver settles
        assert!(t0.elapsed() < Duration::from_secs(10), "{b}: slow shutdown");
        assert_eq!(open_fds(), fds_before, "{b}: descriptors leaked");
    }
}

#[test]
fn in_flight_socket_ops_survive_being_moved() {
    // Socket reads and writes keep their data inline in the future (no
    // allocation per op); the kernel only ever sees the buffer's heap
    // storage. Moving the futures while in flight must not matter.
    let _g = serial();
    on_both(10, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = pairs(&l, 8).await;
        let mut reads = Vec::new();
        for (c, _) in &p {
            let mut r = c.read(Vec::with_capacity(64));
            assert!(futures_util::poll!(&mut r).is_pending());
            reads.push(r);
        }
        // Move every in-flight read: into a box, then a Vec that grows.
        let mut moved: Vec<Box<_>> = Vec::with_capacity(1);
        for r in reads {
            moved.push(Box::new(r));
        }
        for (i, (_, s)) in p.iter().enumerate() {
            let msg = format!("message {i}");
            let w = s.write_all(msg.clone().into_bytes());
            let w = std::pin::pin!(w);
            let (res, _) = w.await;
            res.unwrap();
        }
        for (i, r) in moved.into_iter().enumerate() {
            let (res, buf) = (*r).await;
            let n = res.unwrap_or_else(|e| panic!("{b}: {e:?}"));
            assert_eq!(&buf[..n], format!("message {i}").as_bytes());
        }
    });
}

#[test]
fn in_flight_write_survives_being_moved() {
    let _g = serial();
    on_both(10, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = pairs(&l, 1).await;
        let (c, s) = p.pop().unwrap();
        // Fill the socket buffers so the next write has to wait.
        let data = common::pattern(16 << 20, 7);
        let mut w = c.write(data.clone());
        let first = futures_util::poll!(&mut w);
        let w = Box::new(w);
        let reader = uringio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < (16 << 20) {
                let (res, buf) = s.read(Vec::with_capacity(1 << 20)).await;
                match res.unwrap() {
                    0 => break,
                    _ => got.extend_from_slice(&buf),
                }
            }
            got
        });
        let (res, buf) = match first {
            std::task::Poll::Ready(r) => {
                drop(w);
                r
            }
            std::task::Poll::Pending => (*w).await,
        };
        let n = res.unwrap_or_else(|e| panic!("{b}: {e:?}"));
        assert!(n > 0);
        assert_eq!(buf, data);
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), n);
        assert_eq!(got, data[..n]);
    });
}

/// Linked chains dropped in flight (read → LINK_TIMEOUT on idle sockets,
/// write → fsync with big buffers), hundreds at a time: the buffers stay
/// alive until every CQE of the chain is in, the cancellation backlog
/// drains, and the sockets keep working.
#[test]
fn dropped_linked_ops_in_flight() {
    let _g = serial();
    on_both(30, |b| async move {
        let fds = open_fds();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = pairs(&l, 50).await;
        for round in 0..4 {
            let mut reads = Vec::new();
            for (_, s) in &p {
                let mut r =
                    Box::pin(s.read_timeout(Vec::with_capacity(64), Duration::from_secs(30)));
                assert!(futures_util::poll!(r.as_mut()).is_pending());
                reads.push(r);
            }
            if round % 2 == 1 {
                settle().await; // submitted (io_uring), then dropped
            }
            drop(reads);
        }
        // Timeouts that fire while their chain is being dropped.
        for _ in 0..3 {
            let mut reads = Vec::new();
            for (_, s) in &p {
                let mut r =
                    Box::pin(s.read_timeout(Vec::with_capacity(64), Duration::from_millis(1)));
                let _ = futures_util::poll!(r.as_mut());
                reads.push(r);
            }
            uringio::sleep(Duration::from_millis(1)).await;
            drop(reads);
        }
        let dir = TempDir::new(&format!("cancel-linked-{b}"));
        let f = uringio::fs::File::create(dir.path("f")).await.unwrap();
        for i in 0..8u64 {
            let mut w = Box::pin(f.write_all_at_sync(
                vec![i as u8; 4 << 20],
                i << 22,
                uringio::fs::SyncKind::All,
            ));
            let _ = futures_util::poll!(w.as_mut());
            if i % 2 == 1 {
                uringio::sleep(Duration::from_millis(1)).await;
            }
            drop(w);
        }
        settle().await;
        // Everything still works: each socket carries a message through.
        for (i, (c, s)) in p.iter().enumerate() {
            let msg = format!("after {i}");
            let (r, _) = c.write_all(msg.clone().into_bytes()).await;
            r.unwrap();
            let (r, buf) = s
                .read_timeout(Vec::with_capacity(64), Duration::from_secs(5))
                .await;
            let n = r.unwrap_or_else(|e| panic!("{b}: {e:?}"));
            assert_eq!(&buf[..n], msg.as_bytes(), "{b}: nothing stale or lost");
        }
        let ((w, _), s) = f
            .write_all_at_sync(b"end".to_vec(), 0, uringio::fs::SyncKind::Data)
            .await;
        w.unwrap();
        s.unwrap();
        if b == uringio::Backend::IoUring {
            common::until(|| uringio::driver::stats().cancels_in_flight == 0).await;
        }
        f.close().await.unwrap();
        drop(p);
        drop(l);
        assert_eq!(open_fds(), fds, "{b}: no fd leaked");
    });
}

/// A chain dropped before the loop submitted it never reaches the kernel:
/// no write lands in a file whose fd number was reused.
#[test]
fn dropped_unsubmitted_chain_never_reaches_a_reused_fd_number() {
    let _g = serial();
    if !common::io_uring_or_skip("io_uring test") {
        return;
    }
    let mut r = common::runner(uringio::Backend::IoUring);
    r.run(async {
        uringio::timeout(Duration::from_secs(10), async {
            let dir = TempDir::new("cancel-chain-reuse");
            std::fs::write(dir.path("other"), b"untouched").unwrap();
            for _ in 0..20 {
                let f = uringio::fs::File::create(dir.path("mine")).await.unwrap();
                {
                    let mut w =
                        pin!(f.write_all_at_sync(b"XXXX".to_vec(), 0, uringio::fs::SyncKind::Data));
                    let _ = futures_util::poll!(w.as_mut());
                }
                drop(f);
                let other = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.path("other"))
                    .unwrap();
                settle().await;
                drop(other);
                assert_eq!(std::fs::read(dir.path("other")).unwrap(), b"untouched");
                assert!(std::fs::read(dir.path("mine")).unwrap().is_empty());
            }
        })
        .await
        .expect("timed out")
    });
}

#[test]
fn dropped_fixed_and_direct_ops_in_flight() {
    // read_fixed_at / write_fixed_at / O_DIRECT reads dropped mid-flight:
    // their FixedBufs return to the pool (and AlignedBufs are freed) only
    // once the kernel or the pool thread is done; the pool is whole again
    // afterwards and later ops see the right bytes.
    let _g = serial();
    on_both(20, |b| async move {
        use uringio::buf::{AlignedBuf, FixedBufPool};
        let dir = TempDir::new(&format!("cancel-fixed-{b}"));
        let path = dir.path("data");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let f = uringio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .await
            .unwrap();
        let pool = FixedBufPool::new(32, 16384).unwrap();
        for round in 0..10u64 {
            // Buffers of the previous round's dropped ops come back as
            // the kernel finishes with them: wait for them.
            let mut bufs = Vec::new();
            for _ in 0..32 {
                bufs.push(pool.next().await);
            }
            let wbufs = bufs.split_off(16);
            let reads = join_all(
                bufs.into_iter()
                    .zip(0u64..)
                    .map(|(buf, i)| f.read_fixed_at(buf, i * 16384)),
            );
            let writes = join_all(wbufs.into_iter().zip(0u64..).map(|(mut buf, i)| {
                buf.resize(16384, 7).unwrap();
                f.write_fixed_at(buf, (16 + i) * 16384 + round)
            }));
            let mut both = pin!(futures_util::future::join(reads, writes));
            let _ = futures_util::poll!(both.as_mut());
            assert_eq!(pool.available(), 0);
        } // dropped in flight
        common::until(|| pool.available() == 32).await;
        let (res, buf) = f.read_fixed_at(pool.try_next().unwrap(), 0).await;
        assert_eq!(res.unwrap(), 16384);
        assert!(buf.iter().all(|&x| x == 7));
        drop(buf);
        // A pool dropped while its buffers are in dropped ops.
        let short = FixedBufPool::new(4, 4096).unwrap();
        {
            let reads =
                join_all((0..4u64).map(|i| f.read_fixed_at(short.try_next().unwrap(), i * 4096)));
            let mut reads = pin!(reads);
            let _ = futures_util::poll!(reads.as_mut());
            drop(short);
        }
        f.close().await.unwrap();

        // O_DIRECT reads into AlignedBufs, dropped in flight.
        let d = uringio::fs::OpenOptions::new()
            .read(true)
            .direct(true)
            .open(&path)
            .await;
        let Ok(d) = d else {
            eprintln!("SKIP cancel::dropped_fixed_and_direct_ops_in_flight: no O_DIRECT here");
            return;
        };
        for _ in 0..10 {
            let reads = join_all(
                (0..16u64).map(|i| d.read_at(AlignedBuf::new(65536, 4096).unwrap(), i * 65536)),
            );
            let mut reads = pin!(reads);
            let _ = futures_util::poll!(reads.as_mut());
        }
        let (res, buf) = d
            .read_exact_at(AlignedBuf::new(1 << 20, 4096).unwrap(), 0)
            .await;
        res.unwrap();
        assert!(buf.iter().all(|&x| x == 7));
        d.close().await.unwrap();
    });
}
