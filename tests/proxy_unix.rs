//! `net::copy_bidirectional` with Unix stream sockets: Unix ⇄ Unix and
//! TCP ⇄ Unix (a TCP front to a Unix-socket upstream), half-close each
//! way, a transfer checked byte for byte. Both backends, every copy mode.
//! A copy dropped mid-transfer on Unix sockets is in
//! tests/proxy_unix_drop.rs (it counts descriptors, so it runs alone).

mod common;

use std::net::Shutdown;
use std::rc::Rc;

use common::{on_both, pattern};
use uringio::net::{self, CopyMode, TcpListener, TcpStream, UnixStream};

const MODES: [CopyMode; 3] = [CopyMode::Auto, CopyMode::Splice, CopyMode::Buffered];

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (c, a) = uringio::task::gather!(TcpStream::connect(addr), l.accept()).await;
    (c.unwrap(), a.unwrap().0)
}

/// Either kind of stream, for the helpers.
trait Stream {
    async fn put(&self, data: Vec<u8>);
    async fn get(&self, buf: Vec<u8>) -> (usize, Vec<u8>);
    fn close_write(&self);
}

impl Stream for TcpStream {
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

#[test]
fn unix_and_mixed_copies_propagate_half_close_each_way() {
    on_both(30, |_| async {
        for mode in MODES {
            // Unix ⇄ Unix: the client closes first.
            let (client, pa) = UnixStream::pair().unwrap();
            let (pb, server) = UnixStream::pair().unwrap();
            let proxy =
                uringio::spawn(async move { net::copy_bidirectional(&pa, &pb).mode(mode).await });
            client.put(b"hello".to_vec()).await;
            client.close_write();
            assert_eq!(read_to_end(&server).await, b"hello", "{mode:?}");
            server.put(b"world!".to_vec()).await;
            server.close_write();
            assert_eq!(read_to_end(&client).await, b"world!");
            assert_eq!(proxy.await.unwrap().unwrap(), (5, 6), "{mode:?}");

            // TCP front, Unix upstream: the upstream closes first.
            let (client, pa) = tcp_pair().await;
            let (pb, server) = UnixStream::pair().unwrap();
            let proxy =
                uringio::spawn(async move { net::copy_bidirectional(&pa, &pb).mode(mode).await });
            server.put(b"abc".to_vec()).await;
            server.close_write();
            assert_eq!(read_to_end(&client).await, b"abc", "{mode:?}");
            client.put(b"later".to_vec()).await;
            client.close_write();
            assert_eq!(read_to_end(&server).await, b"later");
            assert_eq!(proxy.await.unwrap().unwrap(), (5, 3), "{mode:?}");
        }
    });
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

#[test]
fn a_transfer_through_unix_sockets_arrives_byte_for_byte() {
    let pat = Rc::new(pattern(P, 5));
    on_both(120, |_| {
        let pat = pat.clone();
        async move {
            for mode in MODES {
                let total = 16 << 20;
                // TCP client → proxy → Unix upstream.
                let (client, pa) = tcp_pair().await;
                let (pb, server) = UnixStream::pair().unwrap();
                let proxy =
                    uringio::spawn(
                        async move { net::copy_bidirectional(&pa, &pb).mode(mode).await },
                    );
                let p2 = pat.clone();
                let sender = uringio::spawn(async move {
                    send_pattern(&client, total, &p2).await;
                    client.close_write();
                    client
                });
                check_pattern(&server, total, &pat).await;
                server.close_write();
                let client = sender.await.unwrap();
                assert!(read_to_end(&client).await.is_empty());
                assert_eq!(proxy.await.unwrap().unwrap(), (total as u64, 0), "{mode:?}");
            }
        }
    });
}
