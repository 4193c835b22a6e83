//! TCP on both backends: accept/connect, large echoes, `incoming()`,
//! vectored I/O, half-close, split halves, socket options, error paths, and
//! many connections at once.
mod common;

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

use common::{on_both, pattern};
use futures_util::StreamExt;
use uringio::net::{TcpListener, TcpStream};

/// Reads until end of stream, returning everything read.
async fn read_to_end(s: &TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (res, buf) = s.read(Vec::with_capacity(64 * 1024)).await;
        let n = res?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf);
    }
}

/// Reads exactly `n` bytes.
async fn read_exact(s: &TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (res, buf) = s.read(Vec::with_capacity(n - out.len())).await;
        match res? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => out.extend_from_slice(&buf),
        }
    }
    Ok(out)
}

/// Echoes everything back until the peer half-closes, then half-closes.
async fn echo(s: TcpStream) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (res, b) = s.read(buf).await;
        let n = res.expect("echo read");
        if n == 0 {
            break;
        }
        let (res, b) = s.write_all(b).await;
        res.expect("echo write");
        buf = b;
    }
    s.shutdown(Shutdown::Write).expect("echo shutdown");
}

/// A listener on a free loopback port whose accepted connections are
/// echoed, each in its own task. The accept loop ends with the test's loop.
fn spawn_echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    uringio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.expect("accept");
            uringio::spawn(echo(s)).detach();
        }
    })
    .detach();
    addr
}

#[test]
fn accept_connect_and_addresses() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let laddr = l.local_addr().unwrap();
        assert_eq!(laddr.ip().to_string(), "127.0.0.1");
        assert_ne!(laddr.port(), 0);

        let connect = uringio::spawn(async move { TcpStream::connect(laddr).await });
        let (server, from) = l.accept().await.unwrap();
        let client = connect.await.unwrap().unwrap();

        assert_eq!(client.peer_addr().unwrap(), laddr);
        assert_eq!(server.local_addr().unwrap(), laddr);
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        assert_eq!(from, client.local_addr().unwrap());
    });
}

#[test]
fn connect_accepts_hostname_strings() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accept = uringio::spawn(async move { l.accept().await.map(|(s, _)| s) });
        let c = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let s = accept.await.unwrap().unwrap();
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
    });
}

#[test]
fn echo_large_payload_every_byte() {
    const N: usize = 8 * 1024 * 1024;
    on_both(60, |_| async {
        let addr = spawn_echo_server();
        let data = pattern(N, 0x9e37_79b9);
        let c = Rc::new(TcpStream::connect(addr).await.unwrap());
        // Write and read at the same time: the echo would deadlock on full
        // socket buffers otherwise.
        let w = c.clone();
        let expected = data.clone();
        let writer = uringio::spawn(async move {
            let (res, buf) = w.write_all(data).await;
            res.unwrap();
            assert_eq!(buf.len(), N, "write_all hands the buffer back whole");
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_to_end(&c).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), N);
        if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
            panic!("echoed byte {i} differs");
        }
    });
}

#[test]
fn many_chunked_writes_arrive_in_order() {
    on_both(30, |_| async {
        let addr = spawn_echo_server();
        let c = Rc::new(TcpStream::connect(addr).await.unwrap());
        let w = c.clone();
        let chunks: Vec<Vec<u8>> = (0..500u64).map(|i| pattern(1000 + i as usize, i)).collect();
        let expected: Vec<u8> = chunks.concat();
        let writer = uringio::spawn(async move {
            for ch in chunks {
                let (res, _) = w.write_all(ch).await;
                res.unwrap();
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_to_end(&c).await.unwrap();
        writer.await.unwrap();
        assert!(got == expected, "echoed stream differs from what was sent");
    });
}

#[test]
fn incoming_stream_many_connections() {
    const CONNS: usize = 64;
    on_both(30, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = uringio::spawn(async move {
            let mut inc = l.incoming();
            let mut handlers = Vec::new();
            for _ in 0..CONNS {
                let s = inc.next().await.expect("incoming ended").expect("accept");
                handlers.push(uringio::spawn(echo(s)));
            }
            for h in handlers {
                h.await.unwrap();
            }
        });
        let mut clients = Vec::new();
        for i in 0..CONNS {
            clients.push(uringio::spawn(async move {
                let c = TcpStream::connect(addr).await.unwrap();
                let msg = pattern(3000 + i, i as u64);
                let (res, _) = c.write_all(msg.clone()).await;
                res.unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_to_end(&c).await.unwrap(), msg);
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
    });
}

#[test]
fn connection_refused() {
    on_both(10, |_| async {
        // A port that was just free: bind, learn it, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err:?}");
    });
}

#[test]
fn readv_writev() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = uringio::spawn(async move {
            let c = TcpStream::connect(addr).await.unwrap();
            let bufs = vec![b"hello".to_vec(), b", ".to_vec(), b"world".to_vec()];
            let (res, bufs) = c.writev(bufs).await;
            assert_eq!(res.unwrap(), 12);
            assert_eq!(bufs.len(), 3, "writev hands every buffer back");
            // Now read a reply vectored.
            let mut got = Vec::new();
            while got.len() < 10 {
                let bufs = vec![Vec::with_capacity(3), Vec::with_capacity(100)];
                let (res, bufs) = c.readv(bufs).await;
                let n = res.unwrap();
                assert!(n > 0, "early EOF");
                assert_eq!(bufs[0].len() + bufs[1].len(), n);
                assert!(
                    bufs[1].is_empty() || bufs[0].len() == 3,
                    "filled out of order"
                );
                got.extend_from_slice(&bufs[0]);
                got.extend_from_slice(&bufs[1]);
            }
            assert_eq!(got, b"0123456789");
        });
        let (s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 12 {
            let bufs = vec![
                Vec::with_capacity(4),
                Vec::with_capacity(4),
                Vec::with_capacity(64),
            ];
            let (res, bufs) = s.readv(bufs).await;
            let n = res.unwrap();
            assert!(n > 0, "early EOF");
            assert_eq!(bufs.iter().map(Vec::len).sum::<usize>(), n);
            // Each buffer is full before the next one gets a byte.
            for w in bufs.windows(2) {
                assert!(w[1].is_empty() || w[0].len() == w[0].capacity());
            }
            for b in &bufs {
                got.extend_from_slice(b);
            }
        }
        assert_eq!(got, b"hello, world");
        let (res, _) = s
            .writev(vec![b"0123".to_vec(), Vec::new(), b"456789".to_vec()])
            .await;
        assert_eq!(res.unwrap(), 10);
        client.await.unwrap();
    });
}

#[test]
fn shutdown_write_gives_peer_eof_and_keeps_reading() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = uringio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let got = read_to_end(&s).await.unwrap();
            assert_eq!(got, b"bye");
            // Reads after EOF keep saying EOF.
            let (res, _) = s.read(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 0);
            // The other direction still works (half-close).
            let (res, _) = s.write_all(b"ack".to_vec()).await;
            res.unwrap();
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let (res, _) = c.write_all(b"bye".to_vec()).await;
        res.unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&c).await.unwrap(), b"ack");
        server.await.unwrap();
    });
}

#[test]
fn into_split_halves_in_two_tasks() {
    const N: usize = 2 * 1024 * 1024;
    on_both(30, |_| async {
        let addr = spawn_echo_server();
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        assert_eq!(r.peer_addr().unwrap(), addr);
        assert_eq!(w.peer_addr().unwrap(), addr);
        let data = pattern(N, 7);
        let expected = data.clone();
        let writer = uringio::spawn(async move {
            for chunk in data.chunks(100_000) {
                let (res, _) = w.write_all(chunk.to_vec()).await;
                res.unwrap();
            }
            w.shutdown().unwrap();
            w // keep the half alive until the reader is done
        });
        let reader = uringio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let (res, buf) = r.read(Vec::with_capacity(32 * 1024)).await;
                if res.unwrap() == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            got
        });
        let w = writer.await.unwrap();
        let got = reader.await.unwrap();
        drop(w);
        assert_eq!(got.len(), N);
        assert!(got == expected);
    });
}

#[test]
fn split_halves_close_socket_when_both_dropped() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let (r, w) = c.into_split();
        drop(w);
        // Dropping the write half alone does not close or shut down: the
        // peer sees no EOF yet, and can still write to us.
        let (res, _) = s.write_all(b"x".to_vec()).await;
        res.unwrap();
        let (res, buf) = r.read(Vec::with_capacity(4)).await;
        assert_eq!(res.unwrap(), 1);
        assert_eq!(buf, b"x");
        drop(r);
        // Both halves gone: the socket closed, the peer sees EOF.
        assert!(read_to_end(&s).await.unwrap().is_empty());
    });
}

#[test]
fn set_nodelay_round_trips() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());
        c.set_nodelay(false).unwrap();
        assert!(!c.nodelay().unwrap());
    });
}

#[test]
fn read_into_full_vec_is_invalid_input() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        // Data is waiting, so a false "0 = EOF" would be easy to get.
        let (res, _) = s.write_all(b"data".to_vec()).await;
        res.unwrap();

        let full = vec![7u8; 16];
        let (res, buf) = c.read(full).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("spare capacity"), "{err}");
        assert_eq!(buf, vec![7u8; 16], "the buffer comes back untouched");

        let (res, buf) = c.read(Vec::new()).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(buf.is_empty());

        let (res, bufs) = c.readv(vec![vec![1u8; 4], Vec::new()]).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "readv: {err:?}");
        assert_eq!(bufs[0], vec![1u8; 4]);

        // The data is still there for a proper read.
        let (res, buf) = c.read(Vec::with_capacity(16)).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"data");
    });
}

#[test]
fn write_to_closed_peer_is_an_error_not_sigpipe() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        drop(s);
        let is_gone = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        };
        // The first writes may still be accepted into the send buffer (the
        // RST comes back in answer); sooner or later one must fail.
        let mut err = None;
        for _ in 0..1000 {
            let (res, _) = c.write(vec![0u8; 64 * 1024]).await;
            if let Err(e) = res {
                err = Some(e);
                break;
            }
            uringio::yield_now().await;
        }
        let err = err.expect("writes to a closed peer kept succeeding");
        assert!(is_gone(&err), "{err:?}");
        // The vectored path (sendmsg) must not raise SIGPIPE either.
        let (res, _) = c.writev(vec![vec![1u8; 100], vec![2u8; 100]]).await;
        let err = res.unwrap_err();
        assert!(is_gone(&err), "{err:?}");
        let (res, _) = c.write_all(vec![3u8; 10]).await;
        let err = res.unwrap_err();
        assert!(is_gone(&err), "{err:?}");
    });
}

#[test]
fn two_hundred_concurrent_connections() {
    const CONNS: usize = 200;
    on_both(60, |_| async {
        let addr = spawn_echo_server();
        let clients: Vec<_> = (0..CONNS)
            .map(|i| {
                uringio::spawn(async move {
                    let c = TcpStream::connect(addr).await.unwrap();
                    let msg = pattern(1024 + i, 1000 + i as u64);
                    let (res, _) = c.write_all(msg.clone()).await;
                    res.unwrap();
                    // Hold every connection open until all are established
                    // and echoing: read the echo before closing.
                    let got = read_exact(&c, msg.len()).await.unwrap();
                    assert!(got == msg, "connection {i} got someone else's bytes");
                    c.shutdown(Shutdown::Write).unwrap();
                    assert!(read_to_end(&c).await.unwrap().is_empty());
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
    });
}

#[test]
fn bind_reuseport_twice() {
    on_both(10, |_| async {
        let a = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        let b = TcpListener::bind_reuseport(addr).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        // Without SO_REUSEPORT the port is taken.
        let err = TcpListener::bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    });
}

/// Data and FIN arrive together: the read that returns the data is short,
/// and the next read must see end of stream at once (no further input edge
/// will come on epoll).
#[test]
fn short_read_then_eof_that_arrived_with_the_data() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for round in 0..20u8 {
            let peer = std::thread::spawn(move || {
                use std::io::Write;
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(&[round; 100]).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s
            });
            let (s, _) = l.accept().await.unwrap();
            // Let data and FIN both land before the first read.
            uringio::sleep(std::time::Duration::from_millis(2)).await;
            let mut got = Vec::new();
            loop {
                let (res, buf) = s.read(Vec::with_capacity(4096)).await;
                if res.unwrap() == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, vec![round; 100]);
            drop(peer.join().unwrap());
        }
    });
}

/// Sockets that keep being used go into io_uring's registered-file table;
/// their data stays right, slots are reused by later connections, and
/// dropping a registered socket still closes it (the peer sees EOF at once).
#[test]
fn busy_sockets_are_registered_and_still_close() {
    on_both(20, |b| async move {
        let uring = uringio::driver::features().io_uring;
        let table = uringio::driver::features().fixed_files;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for round in 0..3u64 {
            let mut pairs = Vec::new();
            for _ in 0..10 {
                let c = uringio::spawn(async move { TcpStream::connect(addr).await });
                let (s, _) = l.accept().await.unwrap();
                pairs.push((c.await.unwrap().unwrap(), s));
            }
            // 40 round trips per connection, each with its own bytes.
            for i in 0..40u64 {
                for (k, (c, s)) in pairs.iter().enumerate() {
                    let msg = pattern(100 + k, round * 1000 + i * 10 + k as u64);
                    let (res, _) = c.write_all(msg.clone()).await;
                    res.unwrap();
                    let got = read_exact(s, msg.len()).await.unwrap();
                    assert_eq!(got, msg, "{b}: round {round} message {i} conn {k}");
                    let (res, _) = s.write_all(got).await;
                    res.unwrap();
                    let back = read_exact(c, msg.len()).await.unwrap();
                    assert_eq!(back, msg, "{b}: echo, round {round} message {i} conn {k}");
                }
            }
            let registered = uringio::driver::stats().registered_files;
            if uring && table >= 20 {
                assert_eq!(registered, 20, "{b}: both ends of 10 busy connections");
            } else if !uring {
                assert_eq!(registered, 0, "{b}: epoll has no file table");
            }
            // Dropping one end must close the socket right away, registered
            // or not: the other end reads EOF.
            for (c, s) in pairs {
                drop(s);
                let (res, _) = c.read(Vec::with_capacity(16)).await;
                assert_eq!(res.unwrap(), 0, "{b}: EOF after the peer was dropped");
            }
            assert_eq!(uringio::driver::stats().registered_files, 0, "{b}");
        }
    });
}

#[test]
fn dropping_incoming_keeps_the_connections_it_already_took() {
    const CONNS: usize = 2000;
    on_both(60, |b| async move {
        use std::io::{Read, Write};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Clients on a thread: each connects, sends its number, and waits
        // for it back (a connection closed by the server fails the echo).
        let clients = std::thread::spawn(move || {
            let mut socks = Vec::new();
            for i in 0..CONNS as u32 {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(&i.to_le_bytes()).unwrap();
                socks.push(s);
            }
            let mut ok = 0;
            for (i, mut s) in socks.into_iter().enumerate() {
                s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                    .unwrap();
                let mut back = [0u8; 4];
                if s.read_exact(&mut back).is_ok() && back == (i as u32).to_le_bytes() {
                    ok += 1;
                }
            }
            ok
        });
        let mut seen = vec![false; CONNS];
        let mut served = 0;
        async fn serve(s: TcpStream, seen: &mut [bool]) {
            let (res, buf) = s.read(Vec::with_capacity(4)).await;
            assert_eq!(res.unwrap(), 4);
            let i = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            assert!(!seen[i], "connection {i} twice");
            seen[i] = true;
            let (res, _) = s.write_all(buf).await;
            res.unwrap();
        }
        // Take a few through incoming(), let it run ahead (on io_uring the
        // multishot accept queues connections in its slot), then drop it
        // while it holds some, several times over.
        while served < CONNS / 2 {
            let mut inc = l.incoming();
            for _ in 0..10 {
                let s = inc.next().await.unwrap().unwrap();
                serve(s, &mut seen).await;
                served += 1;
            }
            for _ in 0..3 {
                uringio::yield_now().await;
            }
            drop(inc);
        }
        // The rest through accept(): every connection is still there.
        while served < CONNS {
            let (s, _) = l.accept().await.unwrap();
            serve(s, &mut seen).await;
            served += 1;
        }
        assert!(seen.iter().all(|&x| x), "{b}: a connection was lost");
        let ok = uringio::get_running_loop()
            .run_in_executor(move || clients.join().unwrap())
            .await;
        assert_eq!(ok, CONNS, "{b}: clients that got their echo");
    });
}

/// Host names resolve (on the blocking pool): `localhost` works offline
/// through /etc/hosts, in each accepted form.
#[test]
fn connect_resolves_localhost() {
    on_both(20, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepts = uringio::spawn(async move {
            for _ in 0..3 {
                l.accept().await.unwrap();
            }
        });
        // `localhost` may resolve to ::1 first, where nothing listens:
        // connect then tries the next address.
        let a = TcpStream::connect(format!("localhost:{port}"))
            .await
            .unwrap();
        let c = TcpStream::connect(("localhost", port)).await.unwrap();
        let host = String::from("localhost");
        let d = TcpStream::connect((host, port)).await.unwrap();
        for s in [&a, &c, &d] {
            assert_eq!(s.peer_addr().unwrap().port(), port, "{b}");
        }
        accepts.await.unwrap();
        let e = TcpStream::connect("localhost").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{b}: {e}");
        let e = TcpStream::connect("localhost:http").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{b}: {e}");
    });
}

/// While a host name is being looked up the loop keeps running: with the
/// one blocking-pool thread held busy, a `localhost` connect waits (its
/// lookup is queued on the pool) while timers keep firing and a numeric
/// connect, which needs no lookup, goes through; released, it completes.
#[test]
fn name_lookup_runs_on_the_pool_not_the_loop() {
    for b in common::backends() {
        let mut r = uringio::Runner::builder()
            .backend(b)
            .blocking_threads(1)
            .build()
            .unwrap();
        r.run(async move {
            uringio::timeout(std::time::Duration::from_secs(20), async move {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                let accepts = uringio::spawn(async move {
                    for _ in 0..2 {
                        l.accept().await.unwrap();
                    }
                });
                let lp = uringio::get_running_loop();
                let (release, wait) = std::sync::mpsc::channel::<()>();
                let (started_tx, started) = std::sync::mpsc::channel::<()>();
                let blocker = lp.run_in_executor(move || {
                    started_tx.send(()).unwrap();
                    wait.recv().unwrap();
                });
                let blocker = uringio::spawn(blocker);
                // The pool thread is busy before the lookup is queued.
                while started.try_recv().is_err() {
                    uringio::sleep(std::time::Duration::from_millis(1)).await;
                }
                let by_name =
                    uringio::spawn(async move { TcpStream::connect(("localhost", port)).await });
                let mut ticks = 0;
                for _ in 0..10 {
                    uringio::sleep(std::time::Duration::from_millis(2)).await;
                    ticks += 1;
                }
                assert_eq!(ticks, 10);
                assert!(
                    !by_name.is_finished(),
                    "{b}: the lookup did not wait for the pool"
                );
                // Numeric: no lookup, no pool.
                let numeric = TcpStream::connect(format!("127.0.0.1:{port}"))
                    .await
                    .unwrap();
                assert!(!by_name.is_finished(), "{b}");
                release.send(()).unwrap();
                let s = by_name.await.unwrap().unwrap();
                assert_eq!(s.peer_addr().unwrap().port(), port);
                blocker.await.unwrap();
                accepts.await.unwrap();
                drop(numeric);
            })
            .await
            .unwrap_or_else(|_| panic!("test timed out on {b}"));
        });
    }
}
