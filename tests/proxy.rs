//! Proxying: `net::copy_bidirectional` (half-close, volume, resets, many
//! connections, dropped mid-transfer), `TcpStream::send_zc`, and
//! `net::splice` between sockets, pipes and files. Every test runs on both
//! backends, and the copy tests in both copy modes. Dropping a copy
//! mid-transfer is in tests/proxy_drop.rs (it counts descriptors).

mod common;

use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, pattern};
use uringio::buf::IoBuf;
use uringio::net::{self, CopyMode, TcpListener, TcpStream};

const MODES: [CopyMode; 2] = [CopyMode::Splice, CopyMode::Buffered];

/// A connected pair through a listener: (the connecting end, the accepted end).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (c, a) = uringio::task::gather!(TcpStream::connect(addr), l.accept()).await;
    (c.unwrap(), a.unwrap().0)
}

async fn read_to_end(s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let (r, b) = s.read(Vec::with_capacity(65536)).await;
        match r.unwrap() {
            0 => return out,
            _ => out.extend_from_slice(&b),
        }
    }
}

async fn write_all(s: &TcpStream, data: &[u8]) {
    let (r, _) = s.write_all(data.to_vec()).await;
    r.unwrap();
}

/// Sets SO_LINGER {on, 0}: closing then sends RST.
fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and option struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// client ⇄ (pa ⇄ copy ⇄ pb) ⇄ server: returns (client, pa, pb, server).
async fn chain() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let (client, pa) = pair().await;
    let (pb, server) = pair().await;
    (client, pa, pb, server)
}

#[test]
fn half_close_propagates_each_way() {
    on_both(20, |_| async {
        for mode in MODES {
            // The client closes first; the server answers after EOF.
            let (client, pa, pb, server) = chain().await;
            let proxy =
                uringio::spawn(async move { net::copy_bidirectional(&pa, &pb).mode(mode).await });
            write_all(&client, b"hello").await;
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_end(&server).await, b"hello");
            write_all(&server, b"world!").await;
            server.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_end(&client).await, b"world!");
            assert_eq!(proxy.await.unwrap().unwrap(), (5, 6), "{mode:?}");

            // The server closes first; the client still sends afterwards.
            let (client, pa, pb, server) = chain().await;
            let proxy =
                uringio::spawn(async move { net::copy_bidirectional(&pa, &pb).mode(mode).await });
            write_all(&server, b"abc").await;
            server.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_end(&client).await, b"abc");
            write_all(&client, b"later").await;
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_end(&server).await, b"later");
            assert_eq!(proxy.await.unwrap().unwrap(), (5, 3), "{mode:?}");
        }
    });
}

/// Sends `total` bytes of a fixed pattern (period `P`), checking the
/// echo-free sink side byte for byte.
const P: usize = 1_000_003;

async fn send_pattern(s: &TcpStream, total: usize, pat: &Rc<Vec<u8>>) {
    let mut sent = 0;
    while sent < total {
        let off = sent % P;
        let n = (total - sent).min(256 * 1024).min(P - off);
        let (r, _) = s.write_all(pat[off..off + n].to_vec()).await;
        r.unwrap();
        sent += n;
    }
}

async fn check_pattern(s: &TcpStream, total: usize, pat: &Rc<Vec<u8>>) {
    let mut got = 0;
    let mut buf = Vec::with_capacity(256 * 1024);
    loop {
        buf.clear();
        let (r, b) = s.read(buf).await;
        buf = b;
        let n = r.unwrap();
        if n == 0 {
            break;
        }
        let mut i = 0;
        while i < n {
            let off = (got + i) % P;
            let k = (n - i).min(P - off);
            assert!(
                buf[i..i + k] == pat[off..off + k],
                "bytes differ near offset {}",
                got + i
            );
            i += k;
        }
        got += n;
        assert!(got <= total, "more bytes than sent");
    }
    assert_eq!(got, total);
}

#[test]
fn a_large_transfer_arrives_byte_for_byte() {
    let pat = Rc::new(pattern(P, 7));
    on_both(120, |_| {
        let pat = pat.clone();
        async move {
            for (mode, total) in [
                (CopyMode::Auto, 256 << 20),
                (CopyMode::Splice, 32 << 20),
                (CopyMode::Buffered, 32 << 20),
            ] {
                let (client, pa, pb, server) = chain().await;
                let proxy =
                    uringio::spawn(
                        async move { net::copy_bidirectional(&pa, &pb).mode(mode).await },
                    );
                let p2 = pat.clone();
                let sender = uringio::spawn(async move {
                    send_pattern(&client, total, &p2).await;
                    client.shutdown(Shutdown::Write).unwrap();
                    client
                });
                check_pattern(&server, total, &pat).await;
                server.shutdown(Shutdown::Write).unwrap();
                let client = sender.await.unwrap();
                assert!(read_to_end(&client).await.is_empty());
                assert_eq!(proxy.await.unwrap().unwrap(), (total as u64, 0));
            }
        }
    });
}

#[test]
fn a_resetting_upstream_ends_the_copy_with_an_error() {
    on_both(20, |_| async {
        for mode in MODES {
            let (client, pa, pb, server) = chain().await;
            let proxy =
                uringio::spawn(async move { net::copy_bidirectional(&pa, &pb).mode(mode).await });
            write_all(&client, b"request").await;
            let (r, b) = server.read(Vec::with_capacity(64)).await;
            assert_eq!(&b[..r.unwrap()], b"request");
            linger_zero(&server);
            drop(server);
            let r = proxy.await.unwrap();
            let e = r.expect_err("a reset upstream is an error");
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{mode:?}: {e:?}"
            );
            drop(client);
        }
    });
}

#[test]
fn a_refusing_upstream_is_a_connect_error() {
    on_both(10, |_| async {
        // A port nobody listens on: bind, note, close.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = TcpStream::connect(addr).await.expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn a_client_resetting_mid_transfer_ends_the_copy() {
    let pat = Rc::new(pattern(P, 3));
    on_both(30, |_| {
        let pat = pat.clone();
        async move {
            for mode in MODES {
                let (client, pa, pb, server) = chain().await;
                let proxy =
                    uringio::spawn(
                        async move { net::copy_bidirectional(&pa, &pb).mode(mode).await },
                    );
                // The server streams towards the client, which reads a
                // little and resets.
                let p2 = pat.clone();
                let streamer = uringio::spawn(async move {
                    let mut sent = 0usize;
                    loop {
                        let off = sent % P;
                        let (r, _) = server.write(pat_chunk(&p2, off)).await;
                        match r {
                            Ok(n) => sent += n,
                            Err(_) => return sent,
                        }
                    }
                });
                let (r, _) = client.read(Vec::with_capacity(4096)).await;
                assert!(r.unwrap() > 0);
                linger_zero(&client);
                drop(client);
                let r = proxy.await.unwrap();
                assert!(r.is_err(), "{mode:?}: {r:?}");
                // With the proxy gone, the upstream sees its end.
                let sent = uringio::timeout(Duration::from_secs(10), streamer)
                    .await
                    .expect("the upstream's writes end")
                    .unwrap();
                assert!(sent > 0);
            }
        }
    });
}

fn pat_chunk(p: &Rc<Vec<u8>>, off: usize) -> Vec<u8> {
    p[off..(off + 65536).min(P)].to_vec()
}

#[test]
fn a_thousand_concurrent_proxied_connections() {
    on_both(60, |_| async {
        for mode in MODES {
            let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
            let up_addr = upstream.local_addr().unwrap();
            let front = TcpListener::bind("127.0.0.1:0").unwrap();
            let front_addr = front.local_addr().unwrap();
            // Echo upstream.
            let echo = uringio::spawn(async move {
                loop {
                    let (s, _) = upstream.accept().await.unwrap();
                    let _echo = uringio::spawn(async move {
                        loop {
                            let (r, b) = s.read(Vec::with_capacity(4096)).await;
                            match r {
                                Ok(0) | Err(_) => {
                                    let _ = s.shutdown(Shutdown::Write);
                                    return;
                                }
                                Ok(_) => {
                                    if s.write_all(b).await.0.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
            let proxy = uringio::spawn(async move {
                loop {
                    let (c, _) = front.accept().await.unwrap();
                    let _conn = uringio::spawn(async move {
                        let u = TcpStream::connect(up_addr).await.unwrap();
                        net::copy_bidirectional(&c, &u).mode(mode).await
                    });
                }
            });
            let clients: Vec<_> = (0..1000u64)
                .map(|i| {
                    uringio::spawn(async move {
                        let c = TcpStream::connect(front_addr).await.unwrap();
                        let msg = pattern(1024, i);
                        write_all(&c, &msg).await;
                        c.shutdown(Shutdown::Write).unwrap();
                        assert_eq!(read_to_end(&c).await, msg);
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
            proxy.cancel();
            echo.cancel();
            let _ = proxy.await;
            let _ = echo.await;
        }
    });
}

#[test]
fn send_zc_hands_the_buffer_back_only_when_it_may_be_reused() {
    on_both(20, |b| async move {
        let (c, a) = pair().await;
        if b == uringio::Backend::IoUring {
            let f = uringio::driver::features();
            eprintln!("send_zc: SEND_ZC supported: {}", f.send_zc);
        }
        let reader = uringio::spawn(async move { read_to_end(&a).await });
        // One buffer, rewritten after every send: the peer must see each
        // round's contents, never a later round's.
        let mut buf = vec![0u8; 100_000];
        let mut expect = Vec::new();
        for round in 0..50u8 {
            buf.iter_mut().for_each(|x| *x = round);
            let mut off = 0;
            while off < buf.len() {
                let (r, back) = c.send_zc(buf.slice(off..)).await;
                off += r.unwrap();
                // Reused at once (rewritten next round): the kernel is
                // done with it.
                buf = back.into_inner();
            }
            expect.extend(std::iter::repeat_n(round, buf.len()));
        }
        // Dropped sends in flight are sound (the buffer waits in the
        // driver for the notification).
        for _ in 0..20 {
            let f = c.send_zc(vec![7u8; 1 << 20]);
            let _ = uringio::timeout(Duration::from_micros(10), f).await;
        }
        c.shutdown(Shutdown::Write).unwrap();
        let got = reader.await.unwrap();
        assert!(got.len() >= expect.len());
        assert_eq!(&got[..expect.len()], &expect[..]);
        assert!(got[expect.len()..].iter().all(|&x| x == 7));
    });
}

#[test]
fn splice_moves_bytes_between_a_socket_a_pipe_and_a_file() {
    on_both(20, |_| async {
        let dir = common::TempDir::new("splice");
        let data = pattern(200_000, 5);
        let (c, a) = pair().await;
        let (pr, pw) = std::io::pipe().unwrap();
        let file = std::fs::File::create(dir.path("out")).unwrap();

        // socket → pipe → file
        write_all(&c, &data).await;
        c.shutdown(Shutdown::Write).unwrap();
        let mut total = 0;
        loop {
            let n = net::splice(&a, &pw, 65536).await.unwrap();
            if n == 0 {
                break;
            }
            let mut left = n;
            while left > 0 {
                let k = net::splice(&pr, &file, left).await.unwrap();
                assert!(k > 0);
                left -= k;
            }
            total += n;
        }
        assert_eq!(total, data.len());
        drop(file);
        assert_eq!(std::fs::read(dir.path("out")).unwrap(), data);

        // file → pipe → socket
        let file = std::fs::File::open(dir.path("out")).unwrap();
        let reader = uringio::spawn(async move { read_to_end(&c).await });
        let mut total = 0;
        loop {
            let n = net::splice(&file, &pw, 65536).await.unwrap();
            if n == 0 {
                break;
            }
            let mut left = n;
            while left > 0 {
                left -= net::splice(&pr, &a, left).await.unwrap();
            }
            total += n;
        }
        assert_eq!(total, data.len());
        a.shutdown(Shutdown::Write).unwrap();
        assert_eq!(reader.await.unwrap(), data);

        // socket → socket (through a pipe made for the call)
        let (c1, a1) = pair().await;
        let (c2, a2) = pair().await;
        write_all(&c1, &data[..70_000]).await;
        c1.shutdown(Shutdown::Write).unwrap();
        let reader = uringio::spawn(async move { read_to_end(&c2).await });
        let mut total = 0;
        loop {
            let n = net::splice(&a1, &a2, 1 << 20).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 70_000);
        a2.shutdown(Shutdown::Write).unwrap();
        assert_eq!(reader.await.unwrap(), &data[..70_000]);

        // A zero length moves nothing; what splice(2) refuses is the same
        // error on both backends.
        assert_eq!(net::splice(&pr, &pw, 0).await.unwrap(), 0);
        use std::io::Write;
        (&pw).write_all(b"0123456789").unwrap();
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path("out"))
            .unwrap();
        let e = net::splice(&pr, &appended, 10)
            .await
            .expect_err("splice(2) refuses O_APPEND files");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e:?}");
    });
}

/// Sends `total` bytes of `pat` in small writes (1–300 bytes), pausing
/// now and then, so a relaying copy sees small reads (on io_uring:
/// chunks from the loop's buffer ring), then shuts the write half down.
async fn send_small(s: &TcpStream, total: usize, pat: &Rc<Vec<u8>>) {
    let mut sent = 0;
    let mut i = 0usize;
    while sent < total {
        let n = (1 + (i * 97) % 300).min(total - sent);
        write_all(s, &pat[sent..sent + n]).await;
        sent += n;
        i += 1;
        if i % 16 == 0 {
            uringio::sleep(Duration::from_micros(300)).await;
        }
    }
    s.shutdown(Shutdown::Write).unwrap();
}

/// Small messages both ways through a copy cut short many times (a new
/// copy on the same sockets each time): every byte arrives once, in
/// order, each way. On io_uring the buffered copy reads small messages
/// from the loop's buffer ring and sends straight from it; what a cut
/// copy had read and not sent is handed back (ring chunks held, a send
/// in flight, chunks still in the dropped receive).
#[test]
fn cutting_a_copy_of_small_messages_loses_no_byte() {
    on_both(60, |_| async move {
        let total = 200_000;
        let pat_a = Rc::new(pattern(total, 3));
        let pat_b = Rc::new(pattern(total, 5));
        let (client, pa, pb, server) = chain().await;
        let (client, server) = (Rc::new(client), Rc::new(server));
        let tasks = [
            (client.clone(), server.clone(), pat_a.clone()),
            (server.clone(), client.clone(), pat_b.clone()),
        ]
        .map(|(from, to, pat)| {
            uringio::spawn(async move {
                let (_, got) =
                    uringio::task::gather!(send_small(&from, total, &pat), read_to_end(&to)).await;
                got
            })
        });
        let mut moved = (0u64, 0u64);
        let mut cuts = 0;
        let mut finished = false;
        for i in 0..200u64 {
            let cut = Duration::from_micros(100 + (i * 211) % 900);
            let copy = net::copy_bidirectional(&pa, &pb).mode(CopyMode::Buffered);
            match uringio::timeout(cut, copy).await {
                Ok(r) => {
                    let (ab, ba) = r.unwrap();
                    moved = (moved.0 + ab, moved.1 + ba);
                    finished = true;
                    break;
                }
                Err(_) => cuts += 1,
            }
        }
        if !finished {
            let (ab, ba) = net::copy_bidirectional(&pa, &pb)
                .mode(CopyMode::Buffered)
                .await
                .unwrap();
            moved = (moved.0 + ab, moved.1 + ba);
        }
        assert!(cuts > 0, "the copy was never cut short");
        let [ta, tb] = tasks;
        let (got_b, got_a) = (ta.await.unwrap(), tb.await.unwrap());
        // `got_b`: what reached the server (client → server), and back.
        assert!(got_b == *pat_a, "client → server bytes differ");
        assert!(got_a == *pat_b, "server → client bytes differ");
        assert!(moved.0 <= total as u64 && moved.1 <= total as u64);
    });
}
