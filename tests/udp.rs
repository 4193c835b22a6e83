//! UDP on both backends: unconnected and connected datagrams, message
//! boundaries, truncation into a small buffer, and error paths.
mod common;

use std::io;
use std::time::Duration;

use common::on_both;
use uringio::net::UdpSocket;

fn pair() -> (UdpSocket, UdpSocket) {
    (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    )
}

#[test]
fn send_to_recv_from() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let a_addr = a.local_addr().unwrap();
        let b_addr = b.local_addr().unwrap();
        let (res, buf) = a.send_to(b"ping".to_vec(), b_addr).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(buf, b"ping", "send_to hands the buffer back");
        let (res, buf) = b.recv_from(Vec::with_capacity(64)).await;
        let (n, from) = res.unwrap();
        assert_eq!(n, 4);
        assert_eq!(&buf[..], b"ping");
        assert_eq!(from, a_addr);
        // And back.
        let (res, _) = b.send_to(b"pong!".to_vec(), from).await;
        assert_eq!(res.unwrap(), 5);
        let (res, buf) = a.recv_from(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap(), (5, b_addr));
        assert_eq!(&buf[..], b"pong!");
    });
}

#[test]
fn datagram_boundaries_are_kept() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let b_addr = b.local_addr().unwrap();
        for i in 1..=20u8 {
            let (res, _) = a.send_to(vec![i; i as usize * 10], b_addr).await;
            res.unwrap();
        }
        for i in 1..=20u8 {
            let (res, buf) = b.recv_from(Vec::with_capacity(1024)).await;
            let (n, _) = res.unwrap();
            assert_eq!(n, i as usize * 10, "one recv, one datagram");
            assert!(buf.iter().all(|&x| x == i));
        }
    });
}

#[test]
fn recv_waits_for_a_datagram() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let b_addr = b.local_addr().unwrap();
        let recv = uringio::spawn(async move {
            let (res, buf) = b.recv_from(Vec::with_capacity(16)).await;
            (res.unwrap().0, buf)
        });
        // Let the receive get in flight before anything is sent.
        uringio::sleep(Duration::from_millis(20)).await;
        assert!(!recv.is_finished());
        let (res, _) = a.send_to(b"late".to_vec(), b_addr).await;
        res.unwrap();
        let (n, buf) = recv.await.unwrap();
        assert_eq!((n, &buf[..]), (4, &b"late"[..]));
    });
}

#[test]
fn large_datagram() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let (res, _) = a.send_to(data.clone(), b.local_addr().unwrap()).await;
        assert_eq!(res.unwrap(), data.len());
        let (res, buf) = b.recv_from(Vec::with_capacity(65_536)).await;
        assert_eq!(res.unwrap().0, data.len());
        assert!(buf == data);
    });
}

#[test]
fn connect_send_recv() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let a_addr = a.local_addr().unwrap();
        let b_addr = b.local_addr().unwrap();
        a.connect(b_addr).unwrap();
        b.connect(a_addr).unwrap();
        assert_eq!(a.peer_addr().unwrap(), b_addr);

        let (res, _) = a.send(b"hello".to_vec()).await;
        assert_eq!(res.unwrap(), 5);
        let (res, buf) = b.recv(Vec::with_capacity(32)).await;
        assert_eq!(res.unwrap(), 5);
        assert_eq!(&buf[..], b"hello");

        // A connected socket only hears from its peer: a stranger's datagram
        // is filtered out by the kernel.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (res, _) = stranger.send_to(b"noise".to_vec(), b_addr).await;
        res.unwrap();
        let (res, _) = a.send(b"signal".to_vec()).await;
        res.unwrap();
        let (res, buf) = b.recv(Vec::with_capacity(32)).await;
        assert_eq!(res.unwrap(), 6);
        assert_eq!(&buf[..], b"signal");
    });
}

#[test]
fn send_without_connect_fails() {
    on_both(10, |_| async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (res, _) = a.send(b"to nobody".to_vec()).await;
        let err = res.unwrap_err();
        // Linux: EDESTADDRREQ.
        assert_eq!(err.raw_os_error(), Some(libc::EDESTADDRREQ), "{err:?}");
        assert!(a.peer_addr().is_err());
    });
}

#[test]
fn small_buffer_truncates_and_drops_the_rest() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let b_addr = b.local_addr().unwrap();
        let big: Vec<u8> = (0..100u8).collect();
        let (res, _) = a.send_to(big.clone(), b_addr).await;
        res.unwrap();
        let (res, _) = a.send_to(b"next".to_vec(), b_addr).await;
        res.unwrap();

        // recv_from: the first 10 bytes, the sender, and the rest is gone.
        let (res, buf) = b.recv_from(Vec::with_capacity(10)).await;
        let (n, from) = res.unwrap();
        assert_eq!(n, 10);
        assert_eq!(from, a.local_addr().unwrap());
        assert_eq!(&buf[..], &big[..10]);
        // The next receive gets the next datagram, not the tail.
        let (res, buf) = b.recv_from(Vec::with_capacity(64)).await;
        assert_eq!(res.unwrap().0, 4);
        assert_eq!(&buf[..], b"next");

        // Same through connected recv.
        b.connect(a.local_addr().unwrap()).unwrap();
        let (res, _) = a.send_to(big.clone(), b_addr).await;
        res.unwrap();
        let (res, buf) = b.recv(Vec::with_capacity(7)).await;
        assert_eq!(res.unwrap(), 7);
        assert_eq!(&buf[..], &big[..7]);

        // A recv into a partly filled buffer appends after the bytes there.
        let (res, _) = a.send_to(b"tail".to_vec(), b_addr).await;
        res.unwrap();
        let mut v = Vec::with_capacity(6);
        v.extend_from_slice(b"he");
        let (res, buf) = b.recv(v).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(&buf[..], b"hetail");
    });
}

#[test]
fn recv_into_full_buffer_is_invalid_input() {
    on_both(10, |_| async {
        let (a, b) = pair();
        let (res, _) = a.send_to(b"x".to_vec(), b.local_addr().unwrap()).await;
        res.unwrap();
        let (res, buf) = b.recv_from(vec![0u8; 4]).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(buf, vec![0u8; 4]);
        let (res, _) = b.recv(Vec::new()).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        // The datagram is still queued.
        let (res, buf) = b.recv_from(Vec::with_capacity(4)).await;
        assert_eq!(res.unwrap().0, 1);
        assert_eq!(&buf[..], b"x");
    });
}

#[test]
fn connected_to_closed_port_reports_refused() {
    on_both(10, |_| async {
        // A port with nobody on it: bind, learn, close.
        let dead = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(dead).unwrap();
        let (res, _) = a.send(b"anyone?".to_vec()).await;
        res.unwrap();
        // The ICMP port-unreachable comes back as ECONNREFUSED on the next
        // receive of a connected socket.
        let (res, _) = a.recv(Vec::with_capacity(16)).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err:?}");
    });
}

#[test]
fn ipv6_loopback() {
    on_both(10, |_| async {
        let Ok(a) = UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        };
        let b = UdpSocket::bind("[::1]:0").unwrap();
        let (res, _) = a.send_to(b"six".to_vec(), b.local_addr().unwrap()).await;
        res.unwrap();
        let (res, buf) = b.recv_from(Vec::with_capacity(8)).await;
        let (n, from) = res.unwrap();
        assert_eq!(n, 3);
        assert_eq!(from, a.local_addr().unwrap());
        assert!(from.is_ipv6());
        assert_eq!(&buf[..], b"six");
    });
}
