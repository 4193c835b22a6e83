//! Dropping `net::copy_bidirectional` mid-transfer loses no byte and
//! leaks no descriptor, on both backends and in both copy modes. Its own
//! test binary: it counts this process's open descriptors, which tests
//! running beside it would change.

mod common;

use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, pattern};
use uringio::net::{self, CopyMode, TcpListener, TcpStream};

const MODES: [CopyMode; 2] = [CopyMode::Splice, CopyMode::Buffered];
const P: usize = 1_000_003;

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (c, a) = uringio::task::gather!(TcpStream::connect(addr), l.accept()).await;
    (c.unwrap(), a.unwrap().0)
}

async fn chain() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let (client, pa) = pair().await;
    let (pb, server) = pair().await;
    (client, pa, pb, server)
}

async fn write_all(s: &TcpStream, data: &[u8]) {
    let (r, _) = s.write_all(data.to_vec()).await;
    r.unwrap();
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

/// Dropping the copy mid-transfer loses nothing: a new copy on the same
/// sockets picks up the bytes handed back, and the upstream gets every
/// byte once, in order. No descriptor is left behind.
#[test]
fn dropping_the_copy_mid_transfer_loses_no_byte_and_leaks_no_fd() {
    let pat = Rc::new(pattern(P, 11));
    on_both(60, |_| {
        let pat = pat.clone();
        async move {
            // Warm the loop (ring, buffer ring, blocking pool) first.
            {
                let (c, a) = pair().await;
                write_all(&c, b"x").await;
                let _ = a.read(Vec::with_capacity(4)).await;
            }
            common::settle().await;
            let before = common::open_fds();
            for mode in MODES {
                let total = 24 << 20;
                let (client, pa, pb, server) = chain().await;
                let p2 = pat.clone();
                let sender = uringio::spawn(async move {
                    send_pattern(&client, total, &p2).await;
                    client.shutdown(Shutdown::Write).unwrap();
                    client
                });
                let p3 = pat.clone();
                let checker = uringio::spawn(async move {
                    check_pattern(&server, total, &p3).await;
                    server.shutdown(Shutdown::Write).unwrap();
                    server
                });
                let (pa, pb) = (Rc::new(pa), Rc::new(pb));
                let mut moved = 0u64;
                let mut cuts = 0;
                // Cut the copy short many times, at varying points.
                for i in 0..40u64 {
                    let cut = Duration::from_micros(200 + (i * 337) % 3000);
                    let copy = net::copy_bidirectional(&pa, &pb).mode(mode);
                    if let Ok(r) = uringio::timeout(cut, copy).await {
                        let (ab, _) = r.unwrap();
                        moved += ab;
                        break;
                    }
                    cuts += 1;
                }
                // Then let one run to the end.
                let (ab, ba) = net::copy_bidirectional(&pa, &pb).mode(mode).await.unwrap();
                moved += ab;
                assert_eq!(ba, 0);
                assert!(moved <= total as u64);
                assert!(cuts > 0, "{mode:?}: the copy was never cut short");
                let server = checker.await.unwrap();
                let client = sender.await.unwrap();
                assert!(read_to_end(&client).await.is_empty());
                drop((client, server, pa, pb));
            }
            // Pipes and sockets closed: back to where we started (give
            // cancelled ops a moment to complete).
            for _ in 0..200 {
                if common::open_fds() <= before {
                    break;
                }
                uringio::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(common::open_fds(), before, "descriptors leaked");
        }
    });
}
