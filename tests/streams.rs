//! Streams: asyncio's `StreamReader`/`StreamWriter` behaviour (ported from
//! the behaviour CPython's `test_asyncio/test_streams.py` checks), on both
//! backends, with CPython's asyncio as the peer both ways.

mod common;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{TempDir, on_both, pattern, run_bounded, settle, until};
use uringio::error::{IncompleteReadError, LimitOverrunError};
use uringio::streams::{self, StreamFeeder, StreamOptions, StreamReader, StreamWriter};

fn incomplete(e: &io::Error) -> &IncompleteReadError {
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    e.get_ref()
        .and_then(|e| e.downcast_ref::<IncompleteReadError>())
        .unwrap_or_else(|| panic!("not an IncompleteReadError: {e:?}"))
}

fn overrun(e: &io::Error) -> &LimitOverrunError {
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    e.get_ref()
        .and_then(|e| e.downcast_ref::<LimitOverrunError>())
        .unwrap_or_else(|| panic!("not a LimitOverrunError: {e:?}"))
}

/// Polls `f` once and drops it (a cancelled read).
async fn poll_once_and_drop<F: std::future::Future>(f: F) -> bool {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_ready())).await
}

// ---- the reader, fed by hand (no I/O) ----

#[test]
fn every_read_method_at_eof() {
    run_bounded(async {
        let mut r = StreamReader::new();
        r.feed_eof();
        assert!(r.at_eof());
        assert_eq!(r.read(10).await.unwrap(), b"");
        assert_eq!(r.readline().await.unwrap(), b"");
        assert_eq!(r.read_to_end().await.unwrap(), b"");
        let e = r.readexactly(3).await.unwrap_err();
        let i = incomplete(&e);
        assert_eq!((i.partial.as_slice(), i.expected), (&b""[..], Some(3)));
        let e = r.readuntil(b"\r\n").await.unwrap_err();
        assert_eq!(incomplete(&e).expected, None);
        assert_eq!(r.readexactly(0).await.unwrap(), b"");

        // With bytes left: each method gets them, then end of stream.
        let mut r = StreamReader::new();
        r.feed_data(b"line1\nrest");
        r.feed_eof();
        assert!(!r.at_eof());
        assert_eq!(r.readline().await.unwrap(), b"line1\n");
        assert_eq!(r.readline().await.unwrap(), b"rest");
        assert!(r.at_eof());

        let mut r = StreamReader::new();
        r.feed_data(b"abc");
        r.feed_eof();
        let e = r.readexactly(5).await.unwrap_err();
        assert_eq!(incomplete(&e).partial, b"abc");
        assert_eq!(incomplete(&e).expected, Some(5));
        assert!(r.at_eof(), "the partial bytes are consumed");

        let mut r = StreamReader::new();
        r.feed_data(b"no separator");
        r.feed_eof();
        let e = r.readuntil(b"!!").await.unwrap_err();
        assert_eq!(incomplete(&e).partial, b"no separator");

        let mut r = StreamReader::new();
        r.feed_data(b"12345");
        r.feed_eof();
        assert_eq!(r.read(2).await.unwrap(), b"12");
        assert_eq!(r.read_to_end().await.unwrap(), b"345");
    });
}

#[test]
fn reads_wait_for_data_across_chunk_boundaries() {
    run_bounded(async {
        let mut r = StreamReader::new();
        // The separator split over two feeds.
        r.feed_data(b"head\r");
        assert!(!poll_once_and_drop(r.readuntil(b"\r\n")).await);
        r.feed_data(b"\nbody");
        assert_eq!(r.readuntil(b"\r\n").await.unwrap(), b"head\r\n");
        // readexactly across three feeds.
        assert!(!poll_once_and_drop(r.readexactly(10)).await);
        r.feed_data(b"12");
        assert!(!poll_once_and_drop(r.readexactly(10)).await);
        r.feed_data(b"345678");
        assert_eq!(r.readexactly(10).await.unwrap(), b"body123456");
        // read(n) returns what is there, not n.
        assert_eq!(r.read(100).await.unwrap(), b"78");
        assert_eq!(r.buffered(), 0);
        // A multi-byte separator that overlaps itself.
        r.feed_data(b"xaab");
        r.feed_data(b"aabx");
        assert_eq!(r.readuntil(b"aabaab").await.unwrap(), b"xaabaab");
        assert_eq!(r.read(1).await.unwrap(), b"x");
        // An empty separator is bad input.
        let e = r.readuntil(b"").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn limit_overrun_leaves_the_data_and_the_caller_recovers() {
    run_bounded(async {
        // Separator found, but past the limit.
        let mut r = StreamReader::with_limit(5);
        r.feed_data(b"0123456789\nnext\n");
        let e = r.readline().await.unwrap_err();
        assert_eq!(overrun(&e).consumed, 10);
        assert_eq!(r.buffered(), 16, "the data stays in the buffer");
        // Recovery: skip the long line, go on.
        assert_eq!(r.read(11).await.unwrap(), b"0123456789\n");
        assert_eq!(r.readline().await.unwrap(), b"next\n");

        // Separator not found and the buffer is past the limit.
        let mut r = StreamReader::with_limit(4);
        r.feed_data(b"abcdefgh");
        let e = r.readuntil(b"!").await.unwrap_err();
        assert!(overrun(&e).consumed > 4);
        assert_eq!(r.buffered(), 8);
        assert_eq!(r.read(8).await.unwrap(), b"abcdefgh");

        // At the limit exactly is fine (the separator may end past it).
        let mut r = StreamReader::with_limit(5);
        r.feed_data(b"12345\n");
        assert_eq!(r.readline().await.unwrap(), b"12345\n");
        r.feed_data(b"12345\r\n");
        assert_eq!(r.readuntil(b"\r\n").await.unwrap(), b"12345\r\n");

        // The lines stream reports the overrun and can go on after the
        // caller skips.
        let mut r = StreamReader::with_limit(3);
        r.feed_data(b"ok\ntoolong\nfin\n");
        r.feed_eof();
        let mut got = Vec::new();
        loop {
            let item = next(&mut r.lines()).await;
            match item {
                None => break,
                Some(Ok(l)) => got.push(l),
                Some(Err(e)) => {
                    let n = overrun(&e).consumed;
                    r.read(n + 1).await.unwrap();
                    got.push(b"<skipped>".to_vec());
                }
            }
        }
        assert_eq!(
            got,
            vec![b"ok\n".to_vec(), b"<skipped>".to_vec(), b"fin\n".to_vec()]
        );
    });
}

/// The next item of a stream.
async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

#[test]
fn errors_come_after_the_buffered_bytes_and_streams_end() {
    run_bounded(async {
        let mut r = StreamReader::new();
        r.feed_data(b"kept\n");
        r.set_exception(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(r.readline().await.unwrap(), b"kept\n");
        let e = r.readline().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(
            r.exception().unwrap().kind(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            r.read(1).await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );

        // The chunk stream: chunks, then the error once, then the end.
        let mut r = StreamReader::with_limit(4);
        r.feed_data(b"0123456789");
        r.set_exception(io::Error::from(io::ErrorKind::BrokenPipe));
        let mut chunks = Vec::new();
        while let Some(c) = next(&mut r).await {
            chunks.push(c.map_err(|e| e.kind()));
        }
        assert_eq!(
            chunks,
            vec![
                Ok(b"0123".to_vec()),
                Ok(b"4567".to_vec()),
                Ok(b"89".to_vec()),
                Err(io::ErrorKind::BrokenPipe)
            ]
        );

        // lines(): every line, the last without its newline, then the end.
        let mut r = StreamReader::new();
        r.feed_data(b"a\nbb\n");
        r.feed_data(b"ccc");
        r.feed_eof();
        let mut lines = Vec::new();
        let mut ls = r.lines();
        while let Some(l) = next(&mut ls).await {
            lines.push(l.unwrap());
        }
        assert_eq!(
            lines,
            vec![b"a\n".to_vec(), b"bb\n".to_vec(), b"ccc".to_vec()]
        );
    });
}

#[test]
fn a_cancelled_read_loses_no_bytes() {
    run_bounded(async {
        let mut r = StreamReader::new();
        r.feed_data(b"par");
        assert!(!poll_once_and_drop(r.readline()).await);
        assert!(!poll_once_and_drop(r.readexactly(6)).await);
        assert!(!poll_once_and_drop(r.readuntil(b"##")).await);
        r.feed_data(b"tial\n");
        assert_eq!(r.readline().await.unwrap(), b"partial\n");

        // Cancelled by a timeout while waiting, in a task.
        r.feed_data(b"abc");
        let t = uringio::timeout(Duration::from_millis(20), r.readexactly(6)).await;
        assert!(t.is_err());
        r.feed_data(b"def");
        assert_eq!(r.readexactly(6).await.unwrap(), b"abcdef");
    });
}

#[test]
#[should_panic(expected = "limit must be > 0")]
fn a_zero_limit_is_refused() {
    let _ = StreamReader::with_limit(0);
}

/// A seeded xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The reference model: asyncio's documented semantics over a plain
/// byte vector that holds the whole input.
struct Model {
    data: Vec<u8>,
    pos: usize,
    limit: usize,
}

#[derive(Debug, PartialEq)]
enum Out {
    Bytes(Vec<u8>),
    Incomplete(Vec<u8>, Option<usize>),
    Overrun(usize),
}

impl Model {
    fn readexactly(&mut self, n: usize) -> Out {
        let rest = &self.data[self.pos..];
        if rest.len() >= n {
            self.pos += n;
            Out::Bytes(rest[..n].to_vec())
        } else {
            self.pos = self.data.len();
            Out::Incomplete(rest.to_vec(), Some(n))
        }
    }
    fn readuntil(&mut self, sep: &[u8]) -> Out {
        let rest = &self.data[self.pos..];
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(i) if i > self.limit => Out::Overrun(i),
            Some(i) => {
                self.pos += i + sep.len();
                Out::Bytes(rest[..i + sep.len()].to_vec())
            }
            None if rest.len() + 1 - sep.len().min(rest.len() + 1) > self.limit => {
                // Where the search stopped depends on the chunking; only the
                // kind of error is compared for this case.
                Out::Overrun(usize::MAX)
            }
            None => {
                self.pos = self.data.len();
                Out::Incomplete(rest.to_vec(), None)
            }
        }
    }
}

/// Feeds `r` the rest of the input in random chunks, as a transport
/// would, whenever a read waits.
struct Feeder {
    data: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Feeder {
    /// Polls `fut` to completion, feeding the next chunk (then EOF) each
    /// time it is pending: reads see the separator split anywhere.
    fn drive<T>(
        &mut self,
        r: &StreamFeeder,
        rng: &mut Rng,
        fut: impl std::future::Future<Output = T>,
    ) -> T {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            if self.pos < self.data.len() {
                let n = (1 + rng.below(40) as usize).min(self.data.len() - self.pos);
                r.feed_data(&self.data[self.pos..self.pos + n]);
                self.pos += n;
            } else {
                assert!(!self.eof, "a read still waits after end of stream");
                r.feed_eof();
                self.eof = true;
            }
        }
    }
}

#[test]
fn random_chunks_match_the_reference_model() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for round in 0..500 {
        let limit = 1 + rng.below(64) as usize;
        // A small alphabet, so that separators occur.
        let len = rng.below(600) as usize;
        let data: Vec<u8> = (0..len).map(|_| b"ab\n"[rng.below(3) as usize]).collect();
        let mut r = StreamReader::with_limit(limit);
        let f = r.feeder();
        let mut feeder = Feeder {
            data: data.clone(),
            pos: 0,
            eof: false,
        };
        let mut m = Model {
            data: data.clone(),
            pos: 0,
            limit,
        };
        for step in 0..60 {
            let op = rng.below(4);
            let (got, want) = match op {
                0 => {
                    let n = rng.below(20) as usize;
                    let res = feeder.drive(&f, &mut rng, r.readexactly(n));
                    let got = match res {
                        Ok(b) => Out::Bytes(b),
                        Err(e) => {
                            let i = incomplete(&e);
                            Out::Incomplete(i.partial.clone(), i.expected)
                        }
                    };
                    (got, m.readexactly(n))
                }
                k => {
                    let sep: &[u8] = match k {
                        1 => b"\n",
                        2 => b"ab",
                        _ => b"a\nb",
                    };
                    let res = feeder.drive(&f, &mut rng, r.readuntil(sep));
                    let got = match res {
                        Ok(b) => Out::Bytes(b),
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                            overrun(&e);
                            Out::Overrun(0)
                        }
                        Err(e) => {
                            let i = incomplete(&e);
                            Out::Incomplete(i.partial.clone(), i.expected)
                        }
                    };
                    let want = match m.readuntil(sep) {
                        // When the reader notices an overrun depends on
                        // the chunking: compare only that it is one.
                        Out::Overrun(_) => Out::Overrun(0),
                        other => other,
                    };
                    if want == Out::Overrun(0) && got == Out::Overrun(0) {
                        // Recover as a caller would: skip through the
                        // separator (or everything), on both sides.
                        let rest = &m.data[m.pos..];
                        let skip = rest
                            .windows(sep.len())
                            .position(|w| w == sep)
                            .map_or(rest.len(), |i| i + sep.len());
                        m.pos += skip;
                        let mut skipped = 0;
                        while skipped < skip {
                            let c = feeder.drive(&f, &mut rng, r.read(skip - skipped));
                            let c = c.unwrap();
                            assert!(!c.is_empty(), "end of stream while skipping");
                            skipped += c.len();
                        }
                    }
                    (got, want)
                }
            };
            assert_eq!(got, want, "round {round} step {step} limit {limit} op {op}");
        }
    }
}

// ---- over real connections, both backends ----

type Pairs = Rc<RefCell<Vec<(StreamReader, StreamWriter)>>>;

/// A server whose handler parks each pair in `pairs` for the test.
async fn parking_server(opts: &StreamOptions) -> (uringio::transport::Server, Pairs) {
    let pairs: Pairs = Rc::default();
    let p = pairs.clone();
    let server = streams::start_server_with(
        move |r, w| {
            p.borrow_mut().push((r, w));
            async {}
        },
        "127.0.0.1:0",
        opts,
    )
    .await
    .unwrap();
    (server, pairs)
}

async fn line_echo(mut r: StreamReader, w: StreamWriter) -> io::Result<()> {
    loop {
        let line = r.readline().await?;
        if line.is_empty() {
            return Ok(());
        }
        w.write(&line);
        w.drain().await?;
    }
}

#[test]
fn line_echo_over_tcp_with_every_read_method() {
    on_both(20, |_| async {
        let server = streams::start_server(line_echo, "127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let (mut r, w) = streams::open_connection(addr).await.unwrap();
        assert_eq!(w.peername().unwrap().as_inet(), Some(addr));
        assert!(w.can_write_eof());
        // Many writes before one drain.
        for i in 0..100 {
            w.write(format!("line {i}\n").as_bytes());
        }
        w.writelines([b"a\n".as_slice(), b"b\n"]);
        w.drain().await.unwrap();
        for i in 0..100 {
            assert_eq!(
                r.readline().await.unwrap(),
                format!("line {i}\n").as_bytes()
            );
        }
        assert_eq!(r.readexactly(2).await.unwrap(), b"a\n");
        assert_eq!(r.readuntil(b"\n").await.unwrap(), b"b\n");
        // Half-close: the server sees end of stream, ends, and we see ours.
        w.write(b"last\n");
        w.write_eof();
        assert_eq!(r.read_to_end().await.unwrap(), b"last\n");
        assert!(r.at_eof());
        w.close();
        w.wait_closed().await;
        assert!(w.is_closing());
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn drain_waits_for_a_peer_that_does_not_read_and_loses_nothing() {
    on_both(30, |_| async {
        let (server, pairs) = parking_server(&StreamOptions::new()).await;
        let addr = server.local_addrs()[0];
        let (_r, w) = streams::open_connection(addr).await.unwrap();
        until(|| !pairs.borrow().is_empty()).await;
        let data = pattern(32 << 20, 7);
        w.write(&data);
        let w = Rc::new(w);
        let drained = Rc::new(std::cell::Cell::new(false));
        let d = {
            let w = w.clone();
            let drained = drained.clone();
            uringio::spawn(async move {
                w.drain().await.unwrap();
                drained.set(true);
            })
        };
        settle().await;
        uringio::sleep(Duration::from_millis(50)).await;
        // 32 MiB cannot fit in the kernel's buffers and the peer's bounded
        // reader: the writer is paused.
        assert!(
            !drained.get(),
            "drain returned while the peer reads nothing"
        );
        assert!(w.get_write_buffer_size() > 64 * 1024);
        // The server's reader stopped at about twice its limit.
        let (mut sr, _sw) = pairs.borrow_mut().pop().unwrap();
        assert!(sr.buffered() <= 2 * streams::DEFAULT_LIMIT + 256 * 1024);
        // A drain dropped mid-way loses nothing either.
        assert!(!poll_once_and_drop(w.drain()).await);
        // Now read everything: drain completes, every byte in order.
        let got = sr.readexactly(data.len()).await.unwrap();
        assert!(got == data, "data differs");
        d.await.unwrap();
        assert!(drained.get());
        server.close();
    });
}

#[test]
fn a_fast_sender_is_bounded_by_the_readers_limit() {
    on_both(30, |_| async {
        let opts = StreamOptions::new().limit(16 * 1024);
        let (server, pairs) = parking_server(&opts).await;
        let addr = server.local_addrs()[0];
        let (_cr, cw) = streams::open_connection(addr).await.unwrap();
        until(|| !pairs.borrow().is_empty()).await;
        let (mut sr, _sw) = pairs.borrow_mut().pop().unwrap();
        let data = pattern(8 << 20, 3);
        cw.write(&data);
        // Give the sender every chance to overrun the reader.
        for _ in 0..20 {
            settle().await;
            uringio::sleep(Duration::from_millis(5)).await;
        }
        let held = sr.buffered();
        assert!(
            held <= 2 * 16 * 1024 + 256 * 1024,
            "reader holds {held} bytes"
        );
        // Reading resumes the transport; everything arrives.
        let mut got = Vec::new();
        while got.len() < data.len() {
            let c = sr.read(1 << 20).await.unwrap();
            assert!(!c.is_empty());
            assert!(sr.buffered() <= 2 * 16 * 1024 + 256 * 1024);
            got.extend(c);
        }
        assert!(got == data);
        server.close();
    });
}

#[test]
fn drain_reports_a_lost_connection() {
    on_both(20, |_| async {
        let (server, pairs) = parking_server(&StreamOptions::new()).await;
        let addr = server.local_addrs()[0];
        let (mut r, w) = streams::open_connection(addr).await.unwrap();
        until(|| !pairs.borrow().is_empty()).await;
        // The peer aborts: we see end of stream or a reset, and drain fails.
        let (_sr, sw) = pairs.borrow_mut().pop().unwrap();
        sw.transport().abort();
        drop(sw);
        let _ = r.read_to_end().await;
        let mut failed = false;
        for _ in 0..200 {
            w.write(&[0u8; 4096]);
            if w.drain().await.is_err() {
                failed = true;
                break;
            }
            uringio::sleep(Duration::from_millis(2)).await;
        }
        assert!(failed, "drain never reported the reset connection");
        // After close, drain says the connection is lost.
        w.close();
        w.wait_closed().await;
        assert!(w.drain().await.is_err());
        server.close();
    });
}

#[test]
fn dropping_the_writer_closes_after_flushing() {
    on_both(20, |_| async {
        let server = streams::start_server(
            |_r, w| async move {
                w.write(b"hello ");
                w.write(b"world");
                // w dropped here: flushed, then closed.
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let (mut r, _w) = streams::open_connection(server.local_addrs()[0])
            .await
            .unwrap();
        assert_eq!(r.read_to_end().await.unwrap(), b"hello world");
        server.close();
    });
}

#[test]
fn a_handler_error_is_reported_and_closes_the_connection() {
    on_both(20, |_| async {
        let reported = Rc::new(RefCell::new(Vec::<String>::new()));
        let rep = reported.clone();
        uringio::get_running_loop().set_exception_handler(move |ctx| {
            rep.borrow_mut().push(ctx.message.clone());
        });
        let server = streams::start_server(
            |mut r, w| async move {
                let line = r.readline().await?;
                if line != b"good\n" {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request"));
                }
                w.write(b"fine\n");
                // Keep the writer: the connection stays open.
                std::mem::forget(w);
                Ok(())
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let (mut r, w) = streams::open_connection(server.local_addrs()[0])
            .await
            .unwrap();
        w.write(b"bad\n");
        assert_eq!(r.read_to_end().await.unwrap(), b"");
        until(|| !reported.borrow().is_empty()).await;
        assert!(
            reported.borrow()[0].contains("bad request"),
            "{:?}",
            reported.borrow()
        );
        server.close();
    });
}

#[test]
fn many_connections_through_one_stream_server() {
    on_both(30, |_| async {
        let server = streams::start_server(line_echo, "127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            tasks.push(uringio::spawn(async move {
                let (mut r, w) = streams::open_connection(addr).await.unwrap();
                for k in 0..5 {
                    w.write(format!("{i}:{k}\n").as_bytes());
                    w.drain().await.unwrap();
                    assert_eq!(r.readline().await.unwrap(), format!("{i}:{k}\n").as_bytes());
                }
                w.close();
                w.wait_closed().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn unix_sockets_path_and_abstract() {
    on_both(20, |_| async {
        let dir = TempDir::new("streams-unix");
        let path = dir.path("s.sock");
        let server = streams::start_unix_server(line_echo, &path).await.unwrap();
        let (mut r, w) = streams::open_unix_connection(&path).await.unwrap();
        w.write(b"over a path\n");
        assert_eq!(r.readline().await.unwrap(), b"over a path\n");
        w.close();
        w.wait_closed().await;
        server.close();
        server.wait_closed().await;
        assert!(!path.exists(), "the socket file is removed on close");

        let name = format!(
            "uringio-streams-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = uringio::net::UnixSocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = streams::start_unix_server_addr(line_echo, &addr, &StreamOptions::new())
            .await
            .unwrap();
        let (mut r, w) = streams::open_unix_connection_addr(&addr, &StreamOptions::new())
            .await
            .unwrap();
        w.write(b"abstract\n");
        assert_eq!(r.readline().await.unwrap(), b"abstract\n");
        drop(w);
        server.close();
    });
}

#[test]
fn bad_options_and_addresses_are_clear_errors() {
    on_both(20, |_| async {
        let e = streams::open_connection_with("127.0.0.1:1", &StreamOptions::new().limit(0))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Nobody listens on a fresh port.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = streams::open_connection(("127.0.0.1", port))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let e = streams::open_unix_connection("/nonexistent/uringio.sock")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    });
}

/// Runs a Python script on the blocking pool; its stdout.
async fn python(script: String) -> String {
    let out = uringio::get_running_loop()
        .run_in_executor(move || {
            std::process::Command::new("python3")
                .args(["-c", &script])
                .output()
                .unwrap()
        })
        .await;
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cpython_open_connection_against_our_start_server_64_mib() {
    on_both(60, |_| async {
        // Our server: reads a length line, then that many bytes; sends
        // back their sum and the bytes reversed in 64 KiB blocks... kept
        // simple: echoes everything in readexactly-sized pieces.
        let server = streams::start_server(
            |mut r, w| async move {
                let header = r.readline().await?;
                let n: usize = std::str::from_utf8(&header)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let mut left = n;
                while left > 0 {
                    let k = left.min(1 << 16);
                    let chunk = r.readexactly(k).await?;
                    w.write(&chunk);
                    w.drain().await?;
                    left -= k;
                }
                w.write(b"done\n");
                w.drain().await?;
                Ok::<_, io::Error>(())
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let port = server.local_addrs()[0].port();
        let out = python(format!(
            r#"
import asyncio, hashlib
async def main():
    r, w = await asyncio.open_connection("127.0.0.1", {port})
    data = bytes(range(256)) * (64 * 4096)
    async def send():
        w.write(b"%d\n" % len(data))
        for i in range(0, len(data), 1 << 20):
            w.write(data[i:i + (1 << 20)])
            await w.drain()
    t = asyncio.ensure_future(send())
    back = await r.readexactly(len(data))
    await t
    assert back == data
    assert await r.readline() == b"done\n"
    w.close()
    await w.wait_closed()
    print("ok")
asyncio.run(asyncio.wait_for(main(), 50))
"#
        ))
        .await;
        assert_eq!(out.trim(), "ok");
        server.close();
    });
}

#[test]
fn our_open_connection_against_cpython_start_server_64_mib() {
    on_both(60, |_| async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let script = format!(
            r#"
import asyncio, sys
async def handle(r, w):
    while True:
        line = await r.readline()
        if not line:
            break
        n = int(line)
        data = await r.readexactly(n)
        w.write(b"%d\n" % sum(data[::4096]))
        w.write(data)
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", {port})
    print("ready", flush=True)
    async with srv:
        await asyncio.sleep(50)
asyncio.run(main())
"#
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        uringio::get_running_loop()
            .run_in_executor(move || {
                use std::io::Read;
                let mut b = [0u8; 6];
                let mut s = stdout;
                s.read_exact(&mut b).unwrap();
            })
            .await;
        let (mut r, w) = streams::open_connection(("127.0.0.1", port)).await.unwrap();
        let data = Rc::new(pattern(64 << 20, 11));
        let want_sum: u64 = data.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        w.write(format!("{}\n", data.len()).as_bytes());
        let writing = {
            let data = data.clone();
            uringio::spawn(async move {
                for c in data.chunks(1 << 20) {
                    w.write(c);
                    w.drain().await.unwrap();
                }
                w
            })
        };
        let line = r.readline().await.unwrap();
        assert_eq!(
            std::str::from_utf8(&line)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap(),
            want_sum
        );
        let back = r.readexactly(data.len()).await.unwrap();
        assert!(back == *data, "data differs");
        let w = writing.await.unwrap();
        w.write_eof();
        assert_eq!(r.read_to_end().await.unwrap(), b"");
        let _ = child.kill();
        let _ = child.wait();
    });
}

#[test]
fn a_read_cancelled_on_a_socket_loses_nothing() {
    on_both(20, |_| async {
        let (server, pairs) = parking_server(&StreamOptions::new()).await;
        let (_cr, cw) = streams::open_connection(server.local_addrs()[0])
            .await
            .unwrap();
        until(|| !pairs.borrow().is_empty()).await;
        let (mut sr, _sw) = pairs.borrow_mut().pop().unwrap();
        cw.write(b"par");
        cw.drain().await.unwrap();
        until(|| sr.buffered() == 3).await;
        assert!(
            uringio::timeout(Duration::from_millis(30), sr.readline())
                .await
                .is_err()
        );
        assert!(
            uringio::timeout(Duration::from_millis(30), sr.readexactly(10))
                .await
                .is_err()
        );
        cw.write(b"tial\nmore");
        cw.drain().await.unwrap();
        assert_eq!(sr.readline().await.unwrap(), b"partial\n");
        assert_eq!(sr.readexactly(4).await.unwrap(), b"more");
        server.close();
    });
}

#[test]
fn reads_bigger_than_the_limit_complete() {
    on_both(30, |_| async {
        let opts = StreamOptions::new().limit(1024);
        let data = Rc::new(pattern(4 << 20, 5));
        let d = data.clone();
        let server = streams::start_server(
            move |_r, w| {
                let d = d.clone();
                async move {
                    w.write(&d);
                    w.write(&d);
                    w.drain().await.unwrap();
                }
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let (mut r, _w) = streams::open_connection_with(server.local_addrs()[0], &opts)
            .await
            .unwrap();
        // Far more than twice the limit: the reader keeps the transport
        // reading until it has what it waits for.
        let first = r.readexactly(data.len()).await.unwrap();
        assert!(first == *data);
        let rest = r.read_to_end().await.unwrap();
        assert!(rest == *data);
        server.close();
    });
}
