mod common;

use std::time::Duration;

use common::on_both;
use uringio::net::{TcpListener, TcpStream};

#[test]
fn tcp_echo_round_trip() {
    on_both(10, |_| async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = uringio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            loop {
                let (res, buf) = s.read(Vec::with_capacity(4096)).await;
                let n = res.unwrap();
                if n == 0 {
                    break;
                }
                let (res, _) = s.write_all(buf).await;
                res.unwrap();
            }
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let (res, _) = c.write_all(b"hello uringio".to_vec()).await;
        res.unwrap();
        let (res, buf) = c.read(Vec::with_capacity(64)).await;
        assert_eq!(&buf[..res.unwrap()], b"hello uringio");
        c.shutdown(std::net::Shutdown::Write).unwrap();
        server.await.unwrap();
    });
}

#[test]
fn sleep_and_spawn() {
    on_both(5, |_| async {
        let t0 = std::time::Instant::now();
        let a = uringio::spawn(async {
            uringio::sleep(Duration::from_millis(20)).await;
            1
        });
        let b = uringio::spawn(async { 2 });
        assert_eq!(a.await.unwrap() + b.await.unwrap(), 3);
        assert!(t0.elapsed() >= Duration::from_millis(20));
    });
}
