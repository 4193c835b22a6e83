//! Owned buffers at their edges, on both backends over real sockets and
//! files: reads into a `Slice` whose window starts past the initialised
//! bytes (the gap is zero-filled, never exposed uninitialised), nested
//! slices, vectored reads that fill only some buffers, `Overwrite` over a
//! `Box<[u8]>` or a full `Vec`, and the boundary cases of each buffer
//! contract.
//!
//! `URINGIO_BACKEND=epoll` (or `io_uring`) restricts these tests to that
//! backend, e.g. to run them under valgrind, which does not know io_uring:
//! `URINGIO_BACKEND=epoll valgrind --error-exitcode=1 target/debug/deps/buf-… --test-threads=1`.
mod common;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use common::TempDir;
use uringio::Backend;
use uringio::buf::{IoBuf, IoBufMut, Overwrite, Slice};
use uringio::fs::{File, OpenOptions};
use uringio::net::TcpStream;

/// The backends to run on: `common::backends()`, narrowed by
/// `URINGIO_BACKEND` when it names one.
fn backends() -> Vec<Backend> {
    let only = std::env::var("URINGIO_BACKEND").unwrap_or_default();
    common::backends()
        .into_iter()
        .filter(|b| match only.as_str() {
            "epoll" => *b == Backend::Epoll,
            "io_uring" => *b == Backend::IoUring,
            _ => true,
        })
        .collect()
}

/// Runs `f(backend)` on a fresh loop of each backend, bounded by `secs`.
fn on_each<F, Fut>(secs: u64, f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for b in backends() {
        let mut r = common::runner(b);
        r.run(async {
            uringio::timeout(Duration::from_secs(secs), f(b))
                .await
                .unwrap_or_else(|_| panic!("test timed out on {b}"))
        });
    }
}

/// A connected loopback TCP pair (must be called inside a loop).
fn pair() -> (TcpStream, TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (
        TcpStream::from_std(a).unwrap(),
        TcpStream::from_std(b).unwrap(),
    )
}

async fn send(s: &TcpStream, data: &[u8]) {
    let (res, _) = s.write_all(data.to_vec()).await;
    res.unwrap();
}

/// A file holding `data`, open for reading and writing.
async fn file_with(dir: &TempDir, name: &str, data: &[u8]) -> (File, std::path::PathBuf) {
    let path = dir.path(name);
    std::fs::write(&path, data).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .await
        .unwrap();
    (f, path)
}

/// Checks the audit case: `vec` came back from a read of `n` bytes of
/// `data` into its window `begin..`: its length covers exactly the gap and
/// the data, the gap is zero. (Branching on every byte is what lets
/// valgrind see an uninitialised one.)
fn assert_gap_then_data(vec: &[u8], begin: usize, data: &[u8]) {
    assert_eq!(vec.len(), begin + data.len());
    assert!(vec[..begin].iter().all(|&b| b == 0), "gap not zero-filled");
    assert_eq!(&vec[begin..], data);
}

#[test]
fn slice_past_init_socket() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        send(&x, b"hello").await;
        let (res, slice) = y.read(Vec::with_capacity(64).slice(32..64)).await;
        let n = res.unwrap();
        assert_eq!(n, 5, "{b}");
        assert_eq!(&slice[..], b"hello");
        assert_gap_then_data(&slice.into_inner(), 32, b"hello");

        // End of stream: a 0-byte read leaves the Vec empty.
        drop(x);
        let (res, slice) = y.read(Vec::with_capacity(64).slice(32..64)).await;
        assert_eq!(res.unwrap(), 0, "{b}");
        assert_eq!(slice.bytes_init(), 0);
        assert_eq!(slice.into_inner().len(), 0, "{b}: EOF made bytes visible");
    });
}

#[test]
fn slice_past_init_file() {
    on_each(10, |b| async move {
        let dir = TempDir::new(&format!("buf-file-{b}"));
        let data = common::pattern(20, 1);
        let (f, _) = file_with(&dir, "a", &data).await;
        let (res, slice) = f.read_at(Vec::with_capacity(64).slice(32..64), 0).await;
        assert_eq!(res.unwrap(), 20, "{b}");
        assert_gap_then_data(&slice.into_inner(), 32, &data);

        // At end of file: nothing changes.
        let (res, slice) = f.read_at(Vec::with_capacity(64).slice(32..64), 20).await;
        assert_eq!(res.unwrap(), 0, "{b}");
        assert_eq!(slice.into_inner().len(), 0, "{b}: EOF made bytes visible");

        // read_exact_at keeps filling the window after the first read.
        let data = common::pattern(100, 2);
        let (f, _) = file_with(&dir, "b", &data).await;
        let (res, slice) = f
            .read_exact_at(Vec::with_capacity(64).slice(16..48), 10)
            .await;
        res.unwrap();
        assert_gap_then_data(&slice.into_inner(), 16, &data[10..42]);
        f.close().await.unwrap();
    });
}

#[test]
fn slice_over_partly_initialised_vec() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        // Initialised up to 40, inside the window 32..64: the read lands at
        // 40 and nothing before it is touched.
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[9u8; 40]);
        send(&x, b"abc").await;
        let (res, slice) = y.read(v.slice(32..64)).await;
        assert_eq!(res.unwrap(), 3, "{b}");
        assert_eq!(&slice[..], b"\x09\x09\x09\x09\x09\x09\x09\x09abc");
        let v = slice.into_inner();
        assert_eq!(v.len(), 43);
        assert_eq!(&v[..40], &[9u8; 40]);
        assert_eq!(&v[40..], b"abc");

        // Initialised past the window's end: no spare room, a clear error.
        let v = vec![1u8; 64];
        let (res, slice) = y.read(v.slice(8..16)).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{b}");
        assert!(err.to_string().contains("spare capacity"), "{err}");
        assert_eq!(slice.into_inner(), vec![1u8; 64]);
    });
}

#[test]
fn nested_slices() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        let dir = TempDir::new(&format!("buf-nested-{b}"));
        let data = common::pattern(5, 3);
        let (f, _) = file_with(&dir, "a", &data).await;
        send(&x, &data).await;

        // The window is 24..56 of the Vec (8 + 16 .. 8 + 48).
        let nested = || Vec::with_capacity(64).slice(8..64).slice(16..48);
        let (res, outer) = y.read(nested()).await;
        assert_eq!(res.unwrap(), 5, "{b}");
        let inner: Slice<Vec<u8>> = outer.into_inner();
        assert_eq!(inner.bytes_init(), 16 + 5);
        assert_gap_then_data(&inner.into_inner(), 24, &data);

        let (res, outer) = f.read_at(nested(), 0).await;
        assert_eq!(res.unwrap(), 5, "{b}");
        assert_gap_then_data(&outer.into_inner().into_inner(), 24, &data);

        // EOF through two slices: still nothing visible.
        let (res, outer) = f.read_at(nested(), 5).await;
        assert_eq!(res.unwrap(), 0);
        assert_eq!(outer.into_inner().into_inner().len(), 0);
    });
}

#[test]
fn readv_short_read_fills_buffers_in_order() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        let dir = TempDir::new(&format!("buf-readv-{b}"));
        let data = common::pattern(10, 4);
        let (f, _) = file_with(&dir, "a", &data).await;
        send(&x, &data).await;

        // 10 bytes into 4 + 4 + 8 of room: the third buffer gets 2.
        let bufs = vec![
            Vec::with_capacity(4),
            Vec::with_capacity(4),
            Vec::with_capacity(8),
        ];
        let (res, bufs) = y.readv(bufs).await;
        assert_eq!(res.unwrap(), 10, "{b}");
        assert_eq!(bufs[0], &data[..4]);
        assert_eq!(bufs[1], &data[4..8]);
        assert_eq!(bufs[2], &data[8..]);

        // Windows past the initialised bytes: each filled one gets its gap
        // zeroed; the one the read did not reach stays empty.
        let windows = || {
            (0..3)
                .map(|_| Vec::with_capacity(8).slice(4..8))
                .collect::<Vec<_>>()
        };
        let check = |bufs: Vec<Slice<Vec<u8>>>| {
            let v: Vec<Vec<u8>> = bufs.into_iter().map(Slice::into_inner).collect();
            assert_gap_then_data(&v[0], 4, &data[..4]);
            assert_gap_then_data(&v[1], 4, &data[4..6]);
            assert_eq!(v[2].len(), 0, "a buffer the read did not reach grew");
        };
        send(&x, &data[..6]).await;
        let (res, bufs) = y.readv(windows()).await;
        assert_eq!(res.unwrap(), 6, "{b}");
        check(bufs);
        // The file has 10 bytes: 6 of them are left from 4 on.
        let (res, bufs) = f.readv_at(windows(), 4).await;
        assert_eq!(res.unwrap(), 6, "{b}");
        let v: Vec<Vec<u8>> = bufs.into_iter().map(Slice::into_inner).collect();
        assert_gap_then_data(&v[0], 4, &data[4..8]);
        assert_gap_then_data(&v[1], 4, &data[8..10]);
        assert_eq!(v[2].len(), 0);

        // A zero-room buffer in the middle is skipped, not advanced.
        send(&x, &data[..6]).await;
        let bufs = vec![
            Vec::with_capacity(4).slice(..),
            Vec::with_capacity(8).slice(8..8),
            Vec::with_capacity(8).slice(..),
        ];
        let (res, bufs) = y.readv(bufs).await;
        assert_eq!(res.unwrap(), 6, "{b}");
        let v: Vec<Vec<u8>> = bufs.into_iter().map(Slice::into_inner).collect();
        assert_eq!(v[0], &data[..4]);
        assert_eq!(v[1].len(), 0);
        assert_eq!(v[2], &data[4..6]);
    });
}

#[test]
fn overwrite_socket_read_and_echo() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        send(&x, b"hey").await;
        let boxed: Box<[u8]> = vec![0xAA; 16].into_boxed_slice();
        let (res, ow) = y.read(Overwrite::new(boxed)).await;
        assert_eq!(res.unwrap(), 3, "{b}");
        assert_eq!(ow.filled(), 3);
        assert_eq!(&ow[..], b"hey");
        // Straight back out: a write sends exactly what was read.
        let (res, mut ow) = y.write_all(ow).await;
        res.unwrap();
        let (res, echoed) = x.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 3);
        assert_eq!(echoed, b"hey");

        // A second read appends after what was filled; clear() starts over.
        send(&x, b"12").await;
        let (res, o) = y.read(ow).await;
        assert_eq!(res.unwrap(), 2);
        assert_eq!(&o[..], b"hey12");
        ow = o;
        ow.clear();
        assert!(ow.is_empty());
        send(&x, b"Z").await;
        let (res, ow) = y.read(ow).await;
        assert_eq!(res.unwrap(), 1);
        assert_eq!(&ow[..], b"Z");
        let boxed = ow.into_inner();
        assert_eq!(&boxed[..5], b"Zey12");
        assert_eq!(&boxed[5..], &[0xAA; 11]);

        // A full Vec, through the provided method: its length never shrinks.
        send(&x, b"ab").await;
        let (res, ow) = y.read(vec![7u8; 8].overwrite()).await;
        assert_eq!(res.unwrap(), 2, "{b}");
        assert_eq!(&ow[..], b"ab");
        assert_eq!(ow.into_inner(), b"ab\x07\x07\x07\x07\x07\x07");

        // A Vec with room past its length: filled bytes may pass the old
        // length, which then grows to cover them.
        let mut v = Vec::with_capacity(8);
        v.push(1u8);
        send(&x, b"abcde").await;
        let (res, ow) = y.read(v.overwrite()).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(ow.into_inner(), b"abcde");

        // At end of stream nothing is filled.
        drop(x);
        let (res, ow) = y.read(vec![3u8; 4].overwrite()).await;
        assert_eq!(res.unwrap(), 0);
        assert_eq!(ow.filled(), 0);
        assert_eq!(ow.into_inner(), vec![3u8; 4]);
    });
}

#[test]
fn overwrite_file_read_at_and_write_back() {
    on_each(10, |b| async move {
        let dir = TempDir::new(&format!("buf-ow-file-{b}"));
        let data = common::pattern(32, 5);
        let (f, path) = file_with(&dir, "a", &data).await;
        let boxed: Box<[u8]> = vec![0u8; 8].into_boxed_slice();
        let (res, ow) = f.read_at(boxed.overwrite(), 4).await;
        assert_eq!(res.unwrap(), 8, "{b}");
        assert_eq!(&ow[..], &data[4..12]);
        // Write those 8 bytes back at 24.
        let (res, ow) = f.write_all_at(ow, 24).await;
        res.unwrap();
        let mut want = data.clone();
        want.copy_within(4..12, 24);
        assert_eq!(std::fs::read(&path).unwrap(), want);

        // read_exact_at fills the whole capacity.
        let mut ow = ow;
        ow.clear();
        let (res, ow) = f.read_exact_at(ow, 0).await;
        res.unwrap();
        assert_eq!(&ow[..], &want[..8]);
        // Near the end: a short read fills only what the file has.
        let mut ow = ow;
        ow.clear();
        let (res, ow) = f.read_at(ow, 30).await;
        assert_eq!(res.unwrap(), 2);
        assert_eq!(&ow[..], &want[30..]);
        // writev_at of Overwrites sends the filled bytes only.
        let (res, _) = f.writev_at(vec![ow], 0).await;
        assert_eq!(res.unwrap(), 2);
        assert_eq!(&std::fs::read(&path).unwrap()[..2], &want[30..]);
        f.close().await.unwrap();
    });
}

#[test]
fn boundary_buffers() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        let dir = TempDir::new(&format!("buf-edge-{b}"));
        let (f, _) = file_with(&dir, "a", b"0123456789").await;
        send(&x, b"q").await;
        let invalid = |r: io::Result<usize>| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{b}: {e}");
        };

        // Empty buffers: nothing to read into.
        let (res, v) = y.read(Vec::new()).await;
        invalid(res);
        assert!(v.is_empty());
        let (res, v) = f.read_at(Vec::new(), 0).await;
        invalid(res);
        assert!(v.is_empty());
        let empty: Box<[u8]> = Box::new([]);
        let (res, ow) = y.read(empty.overwrite()).await;
        invalid(res);
        assert_eq!(ow.filled(), 0);
        // Full buffers.
        let (res, v) = f.read_at(vec![5u8; 4], 0).await;
        invalid(res);
        assert_eq!(v, vec![5u8; 4]);
        let full: Box<[u8]> = Box::new([5u8; 4]);
        let (res, bx) = f.read_at(full, 0).await;
        invalid(res);
        assert_eq!(&bx[..], &[5u8; 4]);
        // An empty window, and an empty window at the very end.
        let (res, s) = y.read(Vec::with_capacity(8).slice(4..4)).await;
        invalid(res);
        assert_eq!(s.into_inner().len(), 0);
        let (res, s) = f.read_at(Vec::with_capacity(8).slice(8..), 0).await;
        invalid(res);
        assert_eq!(s.into_inner().len(), 0);
        // A one-byte window at the very end of the capacity.
        let v = Vec::with_capacity(8);
        let cap = v.capacity();
        let (res, s) = y.read(v.slice(cap - 1..cap)).await;
        assert_eq!(res.unwrap(), 1, "{b}");
        assert_gap_then_data(&s.into_inner(), cap - 1, b"q");
        let v = Vec::with_capacity(8);
        let cap = v.capacity();
        let (res, s) = f.read_at(v.slice(cap - 1..), 3).await;
        assert_eq!(res.unwrap(), 1, "{b}");
        assert_gap_then_data(&s.into_inner(), cap - 1, b"3");
        // Writing empty buffers is fine and sends nothing.
        let (res, _) = f.write_at(Vec::new(), 0).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = f.write_at(Vec::with_capacity(8).slice(2..6), 0).await;
        assert_eq!(res.unwrap(), 0);
        assert_eq!(std::fs::read(dir.path("a")).unwrap(), b"0123456789");
    });
}

#[test]
fn slice_out_of_capacity_panics_clearly() {
    let cases: Vec<fn()> = vec![
        || drop(Vec::<u8>::with_capacity(8).slice(9..9)),
        || {
            let (a, b) = (4, 2);
            drop(Vec::<u8>::with_capacity(8).slice(a..b))
        },
        || drop(Vec::<u8>::with_capacity(8).slice(..=usize::MAX)),
        || {
            drop(Vec::<u8>::with_capacity(8).slice((
                std::ops::Bound::Excluded(usize::MAX),
                std::ops::Bound::Unbounded,
            )))
        },
        || drop(Vec::<u8>::with_capacity(8).slice(2..6).slice(0..5)),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let err = std::panic::catch_unwind(case).expect_err(&format!("case {i} did not panic"));
        let msg = err
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| err.downcast_ref::<&str>().unwrap_or(&"").to_string());
        assert!(
            msg.contains("out of a buffer of capacity"),
            "case {i}: {msg}"
        );
    }
    // The edges themselves are fine.
    let v = Vec::<u8>::with_capacity(8);
    let cap = v.capacity();
    assert_eq!(v.slice(cap..cap).bytes_total(), 0);
}

#[test]
fn buffers_moved_between_polls_and_ops() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        // A read in flight (pending), its future moved (boxed, then moved
        // into a Vec) before the data arrives.
        let fut: Pin<Box<dyn Future<Output = _>>> =
            Box::pin(y.read(Vec::with_capacity(64).slice(32..64)));
        let mut held = vec![fut];
        assert!(futures_util::poll!(held[0].as_mut()).is_pending());
        let mut moved = held.pop().unwrap();
        send(&x, b"moved").await;
        let (res, s): (io::Result<usize>, Slice<Vec<u8>>) = (&mut moved).await;
        assert_eq!(res.unwrap(), 5, "{b}");
        // The buffer moves out of one op and into the next, many times.
        let mut buf = Overwrite::new(s.into_inner());
        for i in 0..8u8 {
            send(&x, &[i]).await;
            let (res, back) = y.read(buf).await;
            assert_eq!(res.unwrap(), 1);
            let moved_box = Box::new(back);
            buf = *moved_box;
        }
        assert_eq!(&buf[..], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let v = buf.into_inner();
        assert_eq!(&v[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&v[8..32], &[0u8; 24]);
        assert_eq!(&v[32..], b"moved");
    });
}

#[test]
fn ops_dropped_mid_flight_release_buffers_safely() {
    on_each(10, |b| async move {
        let (x, y) = pair();
        let dir = TempDir::new(&format!("buf-drop-{b}"));
        let data = common::pattern(4096, 6);
        let (f, _) = file_with(&dir, "a", &data).await;
        for _ in 0..4 {
            // A socket read with no data: in flight, then dropped.
            let mut r = Box::pin(y.read(Vec::with_capacity(64).slice(32..64)));
            assert!(futures_util::poll!(r.as_mut()).is_pending());
            drop(r);
            let mut r = Box::pin(y.read(vec![1u8; 32].into_boxed_slice().overwrite()));
            assert!(futures_util::poll!(r.as_mut()).is_pending());
            drop(r);
            // File reads, dropped after their first poll (on epoll they sit
            // on the blocking pool; on io_uring they may have completed).
            let mut r = Box::pin(f.read_at(Vec::with_capacity(4096).slice(100..4096), 0));
            let _ = futures_util::poll!(r.as_mut());
            drop(r);
            let mut r = Box::pin(f.read_at(vec![0u8; 4096].overwrite(), 0));
            let _ = futures_util::poll!(r.as_mut());
            drop(r);
        }
        // Let the cancellations and the pool finish, then check the loop
        // and the socket still work.
        uringio::sleep(Duration::from_millis(20)).await;
        send(&x, b"after").await;
        let (res, s) = y.read(Vec::with_capacity(64).slice(32..64)).await;
        assert_eq!(res.unwrap(), 5, "{b}");
        assert_gap_then_data(&s.into_inner(), 32, b"after");
        let (res, ow) = f.read_at(vec![0u8; 16].overwrite(), 0).await;
        assert_eq!(res.unwrap(), 16);
        assert_eq!(&ow[..], &data[..16]);
    });
}
