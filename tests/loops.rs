//! Sockets and ops that meet more than one loop: created outside any loop,
//! used in one `Runner` and then another, an op polled in one loop and
//! awaited in the next. Both backends must behave the same and nothing may
//! hang or be lost (issue 8, defects 2 and 9).

mod common;

use std::future::Future;
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use uringio::net::{TcpListener, TcpStream};
use uringio::{Backend, Runner};

type Boxed<T> = Pin<Box<dyn Future<Output = T>>>;

/// Runs `f` on `r`, failing after `secs`.
fn bounded<T>(r: &mut Runner, secs: u64, f: impl Future<Output = T>) -> T {
    let b = r.backend();
    r.run(async move {
        uringio::timeout(Duration::from_secs(secs), f)
            .await
            .unwrap_or_else(|_| panic!("timed out on {b}"))
    })
}

/// Polls `fut` once, then lets the loop go round a few times so that what
/// it submitted reaches the kernel (or its wait for readiness is set up),
/// and returns whether it is still pending.
fn start_in(r: &mut Runner, fut: &mut Boxed<std::io::Result<usize>>) -> bool {
    r.run(async {
        let pending = std::future::poll_fn(|cx: &mut Context<'_>| {
            Poll::Ready(fut.as_mut().poll(cx).is_pending())
        })
        .await;
        for _ in 0..5 {
            uringio::yield_now().await;
        }
        pending
    })
}

/// A connected pair: a std stream for the test to drive, and the other end
/// for uringio.
fn std_pair(l: &StdListener) -> (std::net::TcpStream, std::net::TcpStream) {
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Like [`std_pair`], with our end moved to the lowest free descriptor
/// number at or above `base` (each test its own base, far above what
/// other tests running in parallel use), so a socket closed there is
/// reliably followed by one with the same number.
fn std_pair_at(l: &StdListener, base: i32) -> (std::net::TcpStream, std::net::TcpStream) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (a, b) = std_pair(l);
    // SAFETY: plain fcntl on a descriptor we own; the result is checked.
    let fd = unsafe { libc::fcntl(b.as_raw_fd(), libc::F_DUPFD_CLOEXEC, base) };
    assert!(fd >= base, "F_DUPFD: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    let moved = std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    drop(b);
    (a, moved)
}

async fn read_some(s: &TcpStream, cap: usize) -> Vec<u8> {
    let (res, buf) = s.read(Vec::with_capacity(cap)).await;
    res.unwrap();
    buf
}

#[test]
fn socket_made_outside_a_loop_then_closed_does_not_hang_its_fd_successor() {
    for b in common::backends() {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let mut r = common::runner(b);
        for round in 0..3 {
            // Made before the loop runs: no loop is current.
            let (mut peer, ours) = std_pair_at(&l, 700);
            let s = TcpStream::from_std(ours).unwrap();
            let fd = s.as_raw_fd();
            bounded(&mut r, 5, async {
                let reader = uringio::spawn(async move {
                    let got = read_some(&s, 16).await;
                    drop(s); // closes `fd` inside the loop
                    got
                });
                uringio::sleep(Duration::from_millis(5)).await;
                peer.write_all(b"one").unwrap();
                assert_eq!(reader.await.unwrap(), b"one", "round {round} on {b}");
            });
            // The next connection gets the same fd number, and its read must
            // wake when data arrives after it started waiting.
            let (mut peer2, ours2) = std_pair_at(&l, 700);
            assert_eq!(ours2.as_raw_fd(), fd, "fd number reused (test premise)");
            let s2 = TcpStream::from_std(ours2).unwrap();
            bounded(&mut r, 5, async {
                let reader = uringio::spawn(async move { read_some(&s2, 16).await });
                uringio::sleep(Duration::from_millis(5)).await;
                peer2.write_all(b"two").unwrap();
                assert_eq!(reader.await.unwrap(), b"two", "round {round} on {b}");
            });
        }
    }
}

#[test]
fn socket_used_in_one_runner_and_closed_in_another() {
    for b in common::backends() {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let mut first = common::runner(b);
        let mut second = common::runner(b);
        let (mut peer, ours) = std_pair_at(&l, 800);
        // Created inside `first`, and waited on there (so it is
        // registered with `first`'s driver).
        let s = first.run(async { TcpStream::from_std(ours).unwrap() });
        let fd = s.as_raw_fd();
        let s = bounded(&mut first, 5, async move {
            let s = std::rc::Rc::new(s);
            let s2 = s.clone();
            let reader = uringio::spawn(async move { read_some(&s2, 16).await });
            uringio::sleep(Duration::from_millis(5)).await;
            peer.write_all(b"a").unwrap();
            assert_eq!(reader.await.unwrap(), b"a");
            (std::rc::Rc::try_unwrap(s).ok().unwrap(), peer)
        });
        let (s, mut peer) = s;
        // Used in `second`, then dropped outside any loop.
        bounded(&mut second, 5, async {
            let reader = read_some(&s, 16);
            let writer = async {
                uringio::sleep(Duration::from_millis(5)).await;
                peer.write_all(b"b").unwrap();
            };
            let (got, ()) = uringio::task::gather!(reader, writer).await;
            assert_eq!(got, b"b");
        });
        drop(s);
        // A new socket with the same fd number, waited on in both loops.
        for r in [&mut first, &mut second] {
            let (mut peer3, ours3) = std_pair_at(&l, 800);
            assert_eq!(ours3.as_raw_fd(), fd, "fd number reused (test premise)");
            let s3 = TcpStream::from_std(ours3).unwrap();
            bounded(r, 5, async {
                let reader = uringio::spawn(async move { read_some(&s3, 16).await });
                uringio::sleep(Duration::from_millis(5)).await;
                peer3.write_all(b"c").unwrap();
                assert_eq!(reader.await.unwrap(), b"c", "on {b}");
            });
        }
    }
}

/// The pairs of loops an op can move between: each backend to itself and,
/// where io_uring runs, across.
fn loop_pairs() -> Vec<(Backend, Backend)> {
    let bs = common::backends();
    let mut v = Vec::new();
    for &a in &bs {
        for &b in &bs {
            v.push((a, b));
        }
    }
    v
}

#[test]
fn socket_read_polled_in_one_runner_completes_in_another() {
    for (a, b) in loop_pairs() {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let (mut peer, ours) = std_pair(&l);
        let s = std::rc::Rc::new(TcpStream::from_std(ours).unwrap());
        let mut first = common::runner(a);
        let mut second = common::runner(b);
        let s2 = s.clone();
        let mut fut: Boxed<std::io::Result<usize>> = Box::pin(async move {
            let (res, buf) = s2.read(Vec::with_capacity(64)).await;
            assert_eq!(&buf[..], b"late data");
            res
        });
        assert!(
            start_in(&mut first, &mut fut),
            "{a}->{b}: nothing to read yet"
        );
        peer.write_all(b"late data").unwrap();
        let n = bounded(&mut second, 5, fut).unwrap();
        assert_eq!(n, 9, "{a}->{b}");
        // Nothing was lost or duplicated: the stream goes on in order.
        peer.write_all(b"more").unwrap();
        let got = bounded(&mut second, 5, read_some(&s, 64));
        assert_eq!(got, b"more", "{a}->{b}");
        // And the first loop still serves the socket too.
        peer.write_all(b"again").unwrap();
        let got = bounded(&mut first, 5, read_some(&s, 64));
        assert_eq!(got, b"again", "{a}->{b}");
    }
}

#[test]
fn read_that_completed_in_the_first_runner_is_handed_over_not_lost() {
    for (a, b) in loop_pairs() {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let (mut peer, ours) = std_pair(&l);
        let s = std::rc::Rc::new(TcpStream::from_std(ours).unwrap());
        let mut first = common::runner(a);
        let mut second = common::runner(b);
        let s2 = s.clone();
        let mut fut: Boxed<std::io::Result<usize>> = Box::pin(async move {
            let (res, buf) = s2.read(Vec::with_capacity(64)).await;
            assert_eq!(&buf[..], b"early");
            res
        });
        assert!(start_in(&mut first, &mut fut));
        // The data arrives while the first loop is still the op's: on
        // io_uring the first ring may complete the read before the op
        // moves; it must come across with its bytes.
        peer.write_all(b"early").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        first.run(async {
            for _ in 0..5 {
                uringio::yield_now().await;
            }
        });
        assert_eq!(bounded(&mut second, 5, fut).unwrap(), 5, "{a}->{b}");
    }
}

#[test]
fn file_read_polled_in_one_runner_completes_in_another() {
    let dir = common::TempDir::new("loops-file");
    let path = dir.path("f");
    std::fs::write(&path, common::pattern(1 << 16, 7)).unwrap();
    for (a, b) in loop_pairs() {
        // `read_at` of a cached file may finish at its first poll (epoll
        // serves it on the loop thread); `readv_at` goes to the pool on
        // epoll, so one op surely moves between loops in flight.
        for vectored in [false, true] {
            let mut first = common::runner(a);
            let mut second = common::runner(b);
            let f = std::rc::Rc::new(
                bounded(&mut first, 5, uringio::fs::File::open(path.clone())).unwrap(),
            );
            let f2 = f.clone();
            let mut fut: Boxed<std::io::Result<usize>> = Box::pin(async move {
                let (res, buf) = if vectored {
                    let (res, mut bufs) = f2.readv_at(vec![Vec::with_capacity(1 << 16)], 0).await;
                    (res, bufs.pop().unwrap())
                } else {
                    f2.read_at(Vec::with_capacity(1 << 16), 0).await
                };
                let n = *res.as_ref().unwrap();
                assert_eq!(&buf[..], &common::pattern(1 << 16, 7)[..n]);
                res
            });
            // It may already be done in the first loop, or still queued:
            // either way the second loop hands over its result.
            let pending = start_in(&mut first, &mut fut);
            if !pending {
                assert!(!vectored || a == uringio::Backend::IoUring, "{a}->{b}");
                continue;
            }
            let n = bounded(&mut second, 5, fut).unwrap();
            assert!(n > 0, "{a}->{b}");
            drop(f);
        }
    }
}

#[test]
fn listener_bound_before_the_loop_accepts_in_two_runners() {
    for b in common::backends() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for _ in 0..2 {
            let mut r = common::runner(b);
            bounded(&mut r, 5, async {
                let accept = l.accept();
                let connect = async {
                    uringio::sleep(Duration::from_millis(5)).await;
                    TcpStream::connect(addr).await.unwrap()
                };
                let (acc, _c) = uringio::task::gather!(accept, connect).await;
                acc.unwrap();
            });
        }
    }
}

#[test]
fn a_main_future_spinning_on_yield_now_still_sees_io() {
    // Nothing but the main future is ready; the I/O it waits for comes
    // from another thread. The loop must still look at I/O now and then.
    for b in common::backends() {
        let mut r = common::runner(b);
        bounded(&mut r, 10, async {
            let (rd, wr) = std::os::unix::net::UnixStream::pair().unwrap();
            let rd = uringio::net::UnixStream::from_std(rd).unwrap();
            let done = std::rc::Rc::new(std::cell::Cell::new(false));
            let d = done.clone();
            let reader = uringio::spawn(async move {
                let (res, _) = rd.read(Vec::with_capacity(8)).await;
                d.set(true);
                res.unwrap()
            });
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                (&wr).write_all(b"x").unwrap();
                wr
            });
            while !done.get() {
                uringio::yield_now().await;
            }
            assert_eq!(reader.await.unwrap(), 1);
            drop(writer.join().unwrap());
        });
    }
}
