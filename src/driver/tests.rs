//! Driver tests that need a running loop, on both backends.

use std::net::Shutdown;
use std::time::Duration;

use crate::net::{TcpListener, TcpStream};
use crate::runtime::{Backend, Runner};

/// The backends these tests can run here. Where io_uring is refused (a
/// container's seccomp profile, an old kernel) its half is left out with a
/// visible line, written past the harness's output capture:
/// `SKIP uringio::driver::tests::x (src/driver/tests.rs:40): io_uring half (io_uring unavailable: …)`.
/// (The integration tests' `tests/common` does the same; a unit-test module
/// cannot reach it.)
#[track_caller]
fn backends() -> Vec<Backend> {
    use std::io::Write;
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let refused = PROBE.get_or_init(|| {
        match Runner::builder().backend(Backend::IoUring).build() {
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                let msg = e.to_string();
                let prefix = "io_uring was asked for but is unavailable: ";
                Some(msg.strip_prefix(prefix).unwrap_or(&msg).to_string())
            }
            // Anything else is a failure for `on_both` to report.
            _ => None,
        }
    });
    let Some(why) = refused else {
        return vec![Backend::IoUring, Backend::Epoll];
    };
    let at = std::panic::Location::caller();
    let thread = std::thread::current();
    let line = format!(
        "SKIP uringio::{} ({}:{}): io_uring half (io_uring unavailable: {why})\n",
        thread.name().unwrap_or("?"),
        at.file(),
        at.line()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    vec![Backend::Epoll]
}

#[track_caller]
fn on_both<F: std::future::Future<Output = ()>>(f: impl Fn() -> F) {
    for b in backends() {
        let mut r = Runner::builder()
            .backend(b)
            .build()
            .unwrap_or_else(|e| panic!("cannot build a {b} loop: {e}"));
        r.run(async {
            crate::timeout(Duration::from_secs(10), f())
                .await
                .unwrap_or_else(|_| panic!("timed out on {b}"))
        });
    }
}

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = crate::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (s, _) = l.accept().await.unwrap();
    (s, c.await.unwrap())
}

async fn read_some(s: &TcpStream, cap: usize) -> Vec<u8> {
    let (res, buf) = s.read(Vec::with_capacity(cap)).await;
    res.unwrap();
    buf
}

/// A short read marks the socket drained; data that arrives later, while
/// a read waits, must still be delivered.
#[test]
fn read_after_short_read_waits_for_new_data() {
    on_both(|| async {
        let (s, c) = pair().await;
        let c = std::rc::Rc::new(c);
        for round in 0..20u8 {
            let writer = crate::spawn({
                let c = c.clone();
                async move {
                    crate::sleep(Duration::from_millis(2)).await;
                    let (res, _) = c.write_all(vec![round; 100]).await;
                    res.unwrap();
                }
            });
            let got = read_some(&s, 4096).await;
            assert_eq!(got, vec![round; 100]);
            writer.await.unwrap();
        }
    });
}

/// Data that arrives between a short read and the next read (nobody
/// waiting) must not be missed.
#[test]
fn data_arriving_between_reads_is_seen() {
    on_both(|| async {
        let (s, c) = pair().await;
        let (res, _) = c.write_all(b"first".to_vec()).await;
        res.unwrap();
        assert_eq!(read_some(&s, 4096).await, b"first");
        let (res, _) = c.write_all(b"second".to_vec()).await;
        res.unwrap();
        crate::sleep(Duration::from_millis(20)).await;
        assert_eq!(read_some(&s, 4096).await, b"second");
    });
}

/// End of stream after a short read is reported, not waited on forever.
#[test]
fn eof_after_short_read() {
    on_both(|| async {
        let (s, c) = pair().await;
        let (res, _) = c.write_all(b"bye".to_vec()).await;
        res.unwrap();
        assert_eq!(read_some(&s, 4096).await, b"bye");
        c.shutdown(Shutdown::Write).unwrap();
        assert!(read_some(&s, 4096).await.is_empty());
    });
}

/// A full read (buffer filled) does not mark the socket drained: the rest
/// is read at once.
#[test]
fn full_read_then_rest() {
    on_both(|| async {
        let (s, c) = pair().await;
        let (res, _) = c.write_all(vec![7u8; 3000]).await;
        res.unwrap();
        crate::sleep(Duration::from_millis(10)).await;
        let mut total = 0;
        while total < 3000 {
            total += read_some(&s, 1000).await.len();
        }
        assert_eq!(total, 3000);
    });
}

fn drained(fd: i32) -> bool {
    super::with_current(|d| super::epoll_read_drained(d, fd)).expect("a loop")
}

/// On epoll a short stream read records that the socket is drained (so the
/// next read skips a futile attempt); the next input edge clears it.
#[test]
fn short_stream_read_marks_drained() {
    use std::os::fd::AsRawFd;
    let mut r = Runner::builder().backend(Backend::Epoll).build().unwrap();
    r.run(async {
        let (s, c) = pair().await;
        let fd = s.as_raw_fd();
        // The first read waits (registering the fd on epoll).
        let reader = async { read_some(&s, 4096).await };
        let writer = async {
            crate::sleep(Duration::from_millis(5)).await;
            let (res, _) = c.write_all(b"ping".to_vec()).await;
            res.unwrap();
        };
        let (got, ()) = futures_join(reader, writer).await;
        assert_eq!(got, b"ping");
        assert!(drained(fd), "a short read should mark the socket drained");
        let (res, _) = c.write_all(b"more".to_vec()).await;
        res.unwrap();
        crate::sleep(Duration::from_millis(10)).await;
        assert!(!drained(fd), "an input edge should clear the mark");
        assert_eq!(read_some(&s, 4096).await, b"more");
        // A read that fills the buffer leaves the socket possibly non-empty.
        let (res, _) = c.write_all(vec![1u8; 64]).await;
        res.unwrap();
        crate::sleep(Duration::from_millis(10)).await;
        assert_eq!(read_some(&s, 64).await.len(), 64);
        assert!(!drained(fd));
    });
}

/// Polls two futures to completion together.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.take().unwrap(), rb.take().unwrap())
}
