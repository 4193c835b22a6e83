//! `net::copy_bidirectional` on Unix stream sockets dropped mid-transfer:
//! the bytes go back to the Unix source, nothing is lost, no descriptor
//! leaks. Alone in its binary: it counts the process's descriptors.

mod common;

use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, pattern};
use uringio::net::{self, CopyMode, UnixStream};

/// Either kind of stream, for the helpers.
trait Stream {
    async fn put(&self, data: Vec<u8>);
    async fn get(&self, buf: Vec<u8>) -> (usize, Vec<u8>);
    fn close_write(&self);
}

impl Stream for UnixStream {
    async fn put(&self, data: Vec<u8>) {
        self.write_all(data).await.0.unwrap();
    }
    async fn get(&self, buf: Vec<u8>) -> (usize, Vec<u8>) {
        let (r, b) = self.read(buf).await;
        (r.unwrap(), b)
    }
    fn close_write(&self) {
        self.shutdown(Shutdown::Write).unwrap();
    }
}

async fn read_to_end(s: &impl Stream) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let (n, b) = s.get(Vec::with_capacity(65536)).await;
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b);
    }
}

const P: usize = 1_000_003;

async fn send_pattern(s: &impl Stream, total: usize, pat: &[u8]) {
    let mut sent = 0;
    while sent < total {
        let off = sent % P;
        let n = (total - sent).min(256 * 1024).min(P - off);
        s.put(pat[off..off + n].to_vec()).await;
        sent += n;
    }
}

async fn check_pattern(s: &impl Stream, total: usize, pat: &[u8]) {
    let mut got = 0;
    let mut buf = Vec::with_capacity(256 * 1024);
    loop {
        buf.clear();
        let (n, b) = s.get(buf).await;
        buf = b;
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

/// Dropping the copy mid-transfer on Unix sockets loses nothing: the
/// bytes read and not written go back to the Unix source, and the next
/// copy delivers them first. No descriptor is left behind.
#[test]
fn dropping_a_unix_copy_mid_transfer_loses_no_byte_and_leaks_no_fd() {
    let pat = Rc::new(pattern(P, 13));
    on_both(60, |_| {
        let pat = pat.clone();
        async move {
            {
                let (a, b) = UnixStream::pair().unwrap();
                a.put(b"x".to_vec()).await;
                let _ = b.get(Vec::with_capacity(4)).await;
            }
            common::settle().await;
            let before = common::open_fds();
            for mode in [CopyMode::Splice, CopyMode::Buffered] {
                let total = 8 << 20;
                let (client, pa) = UnixStream::pair().unwrap();
                let (pb, server) = UnixStream::pair().unwrap();
                let p2 = pat.clone();
                let sender = uringio::spawn(async move {
                    send_pattern(&client, total, &p2).await;
                    client.close_write();
                    client
                });
                let p3 = pat.clone();
                let checker = uringio::spawn(async move {
                    check_pattern(&server, total, &p3).await;
                    server.close_write();
                    server
                });
                let (pa, pb) = (Rc::new(pa), Rc::new(pb));
                let mut moved = 0u64;
                let mut cuts = 0;
                for i in 0..30u64 {
                    let cut = Duration::from_micros(200 + (i * 337) % 3000);
                    let copy = net::copy_bidirectional(&pa, &pb).mode(mode);
                    if let Ok(r) = uringio::timeout(cut, copy).await {
                        moved += r.unwrap().0;
                        break;
                    }
                    cuts += 1;
                }
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
