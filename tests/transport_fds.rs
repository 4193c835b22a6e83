//! No descriptor outlives its connection or its server. Its own test
//! binary: it counts this process's open descriptors, which tests running
//! beside it would change.

mod common;

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::on_both;
use uringio::transport::{self, Protocol, Transport};

#[derive(Default)]
struct Echo {
    t: Option<Transport>,
    lost: Rc<Cell<u32>>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data);
    }
    fn connection_lost(&mut self, _exc: Option<io::Error>) {
        self.lost.set(self.lost.get() + 1);
        self.t = None;
    }
}

#[derive(Default)]
struct Sink {
    lost: Option<Option<io::ErrorKind>>,
}

impl Protocol for Sink {
    fn data_received(&mut self, _: &[u8]) {}
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.lost = Some(exc.map(|e| e.kind()));
    }
}

async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        uringio::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn no_descriptor_outlives_its_connection_or_server() {
    on_both(30, |_| async {
        // Let the loop make its own descriptors (ring, buffer ring) first.
        let warm = transport::create_server(Echo::default, "127.0.0.1:0")
            .await
            .unwrap();
        let (t, p) = transport::create_connection(Sink::default, warm.local_addrs()[0])
            .await
            .unwrap();
        t.write_eof();
        until(|| p.borrow().lost.is_some()).await;
        warm.close();
        warm.wait_closed().await;
        uringio::sleep(Duration::from_millis(20)).await;
        let before = common::open_fds();
        let lost = Rc::new(Cell::new(0));
        let l2 = lost.clone();
        let server = transport::create_server(
            move || Echo {
                lost: l2.clone(),
                ..Echo::default()
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let addr = server.local_addrs()[0];
        for i in 0..200u32 {
            let (t, p) = transport::create_connection(Sink::default, addr)
                .await
                .unwrap();
            t.write(&i.to_le_bytes());
            if i % 2 == 0 {
                t.write_eof();
                until(|| p.borrow().lost.is_some()).await;
            } else {
                t.abort();
            }
        }
        until(|| lost.get() == 200).await;
        server.close();
        server.wait_closed().await;
        // Tasks let go of their sockets at their next poll.
        for _ in 0..100 {
            if common::open_fds() <= before {
                break;
            }
            uringio::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            common::open_fds() <= before,
            "{} fds open, {before} before",
            common::open_fds()
        );
    });
}
