//! Provided-buffer rings and multishot receive, on both backends and, on
//! io_uring, with the kernel ring and with the user-space emulation
//! (forced): echoes checked byte for byte, end of stream, dropping a
//! stream mid-flight, a ring far too small for its connections, chunks
//! dropped out of order, bad shapes.
mod common;

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use common::pattern;
use futures_util::StreamExt;
use uringio::buf::{BufRing, Chunk};
use uringio::net::{TcpListener, TcpStream};
use uringio::{Backend, Runner};

/// Each usable backend, and on io_uring both the kernel ring and the
/// forced emulation: `(backend, emulate)`.
#[track_caller]
fn configs() -> Vec<(Backend, bool)> {
    let mut v = Vec::new();
    for b in common::backends() {
        v.push((b, false));
        if b == Backend::IoUring {
            v.push((b, true));
        }
    }
    v
}

/// Runs `f(backend, emulate)` on a fresh loop for each config, bounded by
/// `secs` seconds each.
#[track_caller]
fn on_each<F, Fut>(secs: u64, f: F)
where
    F: Fn(Backend, bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for (b, emulate) in configs() {
        let mut r = Runner::builder()
            .backend(b)
            .emulate_buf_ring(emulate)
            .build()
            .unwrap_or_else(|e| panic!("cannot build a {b} loop: {e}"));
        r.run(async {
            uringio::timeout(Duration::from_secs(secs), f(b, emulate))
                .await
                .unwrap_or_else(|_| panic!("test timed out on {b} (emulate: {emulate})"))
        });
    }
}

/// The ring should be the kernel's exactly where the loop has the feature.
fn check_kind(ring: &BufRing, b: Backend, emulate: bool) {
    let f = uringio::driver::features();
    assert_eq!(ring.is_kernel(), f.buf_ring, "{b} emulate={emulate}");
    if b == Backend::Epoll || emulate {
        assert!(!ring.is_kernel());
        assert!(!f.buf_ring && !f.recv_multishot);
    }
    assert_eq!(ring.group_id().is_some(), ring.is_kernel());
}

async fn read_to_end(s: &TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (res, buf) = s.read(Vec::with_capacity(64 * 1024)).await;
        if res? == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf);
    }
}

/// A connected pair: (client, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let c = uringio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (s, _) = l.accept().await.unwrap();
    (c.await.unwrap(), s)
}

/// Writes `data` in pieces of `piece` bytes, then half-closes.
async fn send_all(s: &TcpStream, data: &[u8], piece: usize) {
    for part in data.chunks(piece) {
        let (r, _) = s.write_all(part.to_vec()).await;
        r.unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn echo_one_mib_byte_for_byte() {
    on_each(30, |b, emulate| async move {
        let data = Rc::new(pattern(1 << 20, 7));
        let (client, server) = pair().await;
        let ring = BufRing::new(16, 4096).unwrap();
        check_kind(&ring, b, emulate);
        let echo = uringio::spawn({
            let ring = ring.clone();
            async move {
                let mut chunks = server.recv_multishot(&ring);
                let mut n = 0;
                while let Some(c) = chunks.next().await {
                    let c = c.unwrap();
                    assert!(!c.is_empty() && c.len() <= 4096);
                    assert!(c.is_from(&ring));
                    n += 1;
                    let (r, _) = server.write_all(c.to_vec()).await;
                    r.unwrap();
                }
                server.shutdown(Shutdown::Write).unwrap();
                n
            }
        });
        let client = Rc::new(client);
        let writer = uringio::spawn({
            let (client, data) = (client.clone(), data.clone());
            async move { send_all(&client, &data, 64 * 1024).await }
        });
        let back = read_to_end(&client).await.unwrap();
        writer.await.unwrap();
        let chunks = echo.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(
            back == *data,
            "echoed bytes differ on {b} (emulate {emulate})"
        );
        assert!(chunks >= (1 << 20) / 4096, "{chunks} chunks");
        assert_eq!(ring.in_use(), 0);
    });
}

#[test]
fn eof_ends_the_stream() {
    on_each(10, |_, _| async move {
        let (client, server) = pair().await;
        let ring = BufRing::new(4, 64).unwrap();
        let (r, _) = client.write_all(b"hello".to_vec()).await;
        r.unwrap();
        drop(client);
        let mut chunks = server.recv_multishot(&ring);
        let mut got = Vec::new();
        while let Some(c) = chunks.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"hello");
        // Ended for good; a plain read after it sees the end too.
        assert!(chunks.next().await.is_none());
        drop(chunks);
        let (r, _) = server.read(Vec::with_capacity(8)).await;
        assert_eq!(r.unwrap(), 0);
        assert_eq!(ring.in_use(), 0);
    });
}

/// Takes chunks until at least `n` bytes came, then drops the stream.
async fn take_then_drop(s: &TcpStream, ring: &BufRing, n: usize, pause: bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunks = s.recv_multishot(ring);
    while got.len() < n {
        let c = chunks.next().await.expect("early end").unwrap();
        got.extend_from_slice(&c);
        if pause {
            // Let the receive run ahead (queue chunks, fill the ring).
            uringio::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(chunks);
    got
}

#[test]
fn dropping_the_stream_mid_flight_loses_nothing() {
    on_each(30, |b, emulate| async move {
        for phase in ["read", "readv", "recv_multishot"] {
            let data = Rc::new(pattern(512 * 1024, 11));
            let (client, server) = pair().await;
            let ring = BufRing::new(8, 1024).unwrap();
            let writer = uringio::spawn({
                let data = data.clone();
                async move { send_all(&client, &data, 16 * 1024).await }
            });
            let mut got = Vec::new();
            // Several drops, each while bytes keep coming.
            for _ in 0..4 {
                got.extend(take_then_drop(&server, &ring, 16 * 1024, true).await);
            }
            match phase {
                "read" => got.extend(read_to_end(&server).await.unwrap()),
                "readv" => loop {
                    let bufs = vec![Vec::with_capacity(100), Vec::with_capacity(3000)];
                    let (r, bufs) = server.readv(bufs).await;
                    if r.unwrap() == 0 {
                        break;
                    }
                    for v in bufs {
                        got.extend(v);
                    }
                },
                _ => {
                    let mut chunks = server.recv_multishot(&ring);
                    while let Some(c) = chunks.next().await {
                        got.extend_from_slice(&c.unwrap());
                    }
                }
            }
            writer.await.unwrap();
            assert_eq!(got.len(), data.len(), "{phase} on {b} (emulate {emulate})");
            assert!(
                got == *data,
                "{phase}: bytes out of order on {b} (emulate {emulate})"
            );
            assert_eq!(ring.in_use(), 0, "{phase}");
        }
    });
}

#[test]
fn dropping_a_stream_with_queued_chunks_keeps_them_for_read() {
    on_each(10, |_, _| async move {
        let (client, server) = pair().await;
        let ring = BufRing::new(8, 16).unwrap();
        let data = pattern(100, 3);
        let (r, _) = client.write_all(data.clone()).await;
        r.unwrap();
        drop(client);
        let mut chunks = server.recv_multishot(&ring);
        let first = chunks.next().await.unwrap().unwrap();
        // Give the receive time to take (and queue) more.
        uringio::sleep(Duration::from_millis(20)).await;
        drop(chunks);
        let mut got = first.to_vec();
        drop(first);
        // Small reads: partial copies out of kept chunks.
        loop {
            let (r, buf) = server.read(Vec::with_capacity(5)).await;
            if r.unwrap() == 0 {
                break;
            }
            got.extend(buf);
        }
        assert_eq!(got, data);
        assert_eq!(ring.in_use(), 0);
    });
}

#[test]
fn empty_ring_shared_by_64_senders_every_byte_in_order() {
    const CONNS: usize = 64;
    const EACH: usize = 64 * 1024;
    on_each(120, |b, emulate| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        // Two 64-byte buffers for 64 connections sending 4 MiB in all.
        let ring = BufRing::new(2, 64).unwrap();
        let before = uringio::driver::stats().buf_ring_empty;
        let started = std::time::Instant::now();
        let mut senders = Vec::new();
        for id in 0..CONNS {
            senders.push(uringio::spawn(async move {
                let s = TcpStream::connect(addr).await.unwrap();
                let mut msg = vec![id as u8];
                msg.extend(pattern(EACH, id as u64));
                send_all(&s, &msg, 4096).await;
            }));
        }
        let mut receivers = Vec::new();
        for _ in 0..CONNS {
            let (s, _) = l.accept().await.unwrap();
            let ring = ring.clone();
            receivers.push(uringio::spawn(async move {
                let mut got = Vec::with_capacity(EACH + 1);
                let mut chunks = s.recv_multishot(&ring);
                while let Some(c) = chunks.next().await {
                    let c = c.unwrap();
                    assert!(c.len() <= 64);
                    got.extend_from_slice(&c);
                    // Hold the buffer while the others run, so the ring
                    // runs empty on every path (holding it across the next
                    // receive instead could deadlock: see BufRing's docs).
                    uringio::yield_now().await;
                    drop(c);
                }
                got
            }));
        }
        let mut seen = [false; CONNS];
        for r in receivers {
            let got = r.await.unwrap();
            assert_eq!(got.len(), EACH + 1);
            let id = got[0] as usize;
            assert!(!seen[id]);
            seen[id] = true;
            assert!(
                got[1..] == pattern(EACH, id as u64)[..],
                "connection {id} garbled"
            );
        }
        for s in senders {
            s.await.unwrap();
        }
        let waits = uringio::driver::stats().buf_ring_empty - before;
        eprintln!(
            "empty ring, {b} (emulate {emulate}): 64 × 64 KiB through 2 × 64 B in {:?}, {waits} waits for a buffer",
            started.elapsed()
        );
        assert!(waits > 0, "the ring never ran empty");
        assert_eq!(ring.in_use(), 0);
    });
}

#[test]
fn chunks_dropped_out_of_order_are_reused_correctly() {
    on_each(20, |b, emulate| async move {
        let (client, server) = pair().await;
        let ring = BufRing::new(4, 16).unwrap();
        let data = Rc::new(pattern(64 * 1024, 5));
        let writer = uringio::spawn({
            let data = data.clone();
            async move { send_all(&client, &data, 1000).await }
        });
        let mut got = Vec::new();
        let mut chunks = server.recv_multishot(&ring);
        let mut expect_next: Option<Vec<u16>> = None;
        let mut batches = 0;
        let mut ended = false;
        while !ended {
            let mut held: Vec<Chunk> = Vec::new();
            while held.len() < 4 {
                match chunks.next().await {
                    Some(c) => held.push(c.unwrap()),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            for c in &held {
                got.extend_from_slice(c);
            }
            let bids: Vec<u16> = held.iter().map(Chunk::buffer_id).collect();
            if let Some(exp) = &expect_next {
                if held.len() == 4 {
                    // Buffers come back in ring order: the order they were dropped in.
                    assert_eq!(&bids, exp, "{b} emulate={emulate}");
                }
            }
            let mut uniq = bids.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(
                uniq.len(),
                bids.len(),
                "a buffer handed out twice: {bids:?}"
            );
            // Drop in the order 2, 0, 3, 1.
            let order = [2usize, 0, 3, 1];
            let mut slots: Vec<Option<Chunk>> = held.into_iter().map(Some).collect();
            let mut dropped = Vec::new();
            for &i in &order {
                if let Some(c) = slots.get_mut(i).and_then(Option::take) {
                    dropped.push(c.buffer_id());
                    drop(c);
                }
            }
            expect_next = Some(dropped);
            batches += 1;
        }
        writer.await.unwrap();
        assert!(got == *data, "bytes differ on {b} (emulate {emulate})");
        assert!(batches > 100);
        assert_eq!(ring.in_use(), 0);
    });
}

#[test]
fn chunks_outlive_the_stream_the_ring_handle_and_the_loop() {
    for (b, emulate) in configs() {
        let mut r = Runner::builder()
            .backend(b)
            .emulate_buf_ring(emulate)
            .build()
            .unwrap();
        let kept: Vec<Chunk> = r.run(async {
            let (client, server) = pair().await;
            let ring = BufRing::new(4, 8).unwrap();
            let (res, _) = client.write_all(b"abcdefghij".to_vec()).await;
            res.unwrap();
            drop(client);
            let mut chunks = server.recv_multishot(&ring);
            let mut kept = Vec::new();
            while let Some(c) = chunks.next().await {
                kept.push(c.unwrap());
            }
            kept
        });
        drop(r);
        let all: Vec<u8> = kept.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(all, b"abcdefghij");
        drop(kept);
    }
}

#[test]
fn bad_shapes_are_clear_errors() {
    for (b, emulate) in configs() {
        let mut r = Runner::builder()
            .backend(b)
            .emulate_buf_ring(emulate)
            .build()
            .unwrap();
        r.run(async {
            for (n, size) in [(3, 64), (0, 64), (4, 0), (65536, 1), (1 << 20, 16)] {
                let e = BufRing::new(n, size).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{n} × {size}: {e}");
                assert!(e.to_string().contains("BufRing"), "{e}");
            }
            let ring = BufRing::new(32768, 1).unwrap();
            assert_eq!(ring.entries(), 32768);
            assert_eq!(ring.buf_size(), 1);
        });
    }
    assert!(BufRing::new(4, 64).is_err(), "outside a loop");
    let e = Runner::builder().buf_ring(100, 4096).build().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_kernel_ring_refuses_another_loop() {
    if !common::io_uring_or_skip("io_uring test") {
        return;
    }
    let mut a = common::runner(Backend::IoUring);
    let ring = a.run(async { BufRing::new(4, 64).unwrap() });
    if !ring.is_kernel() {
        return;
    }
    let mut bl = common::runner(Backend::IoUring);
    bl.run(async {
        let (client, server) = pair().await;
        let (r, _) = client.write_all(b"x".to_vec()).await;
        r.unwrap();
        let mut chunks = server.recv_multishot(&ring);
        let e = chunks.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(chunks.next().await.is_none());
        drop(chunks);
        // The byte is still there.
        let (r, buf) = server.read(Vec::with_capacity(4)).await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(buf, b"x");
    });
}
