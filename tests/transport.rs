//! Transports and protocols on both backends: servers and connections,
//! half-close, flow control both ways, abort, panics in callbacks, many
//! connections, and CPython's asyncio as the peer both ways.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, pattern};
use uringio::transport::{self, Protocol, Transport};

/// Echoes everything; on EOF keeps the write side open if `half_close`,
/// writes `bye` and closes.
#[derive(Default)]
struct Echo {
    t: Option<Transport>,
    half_close: bool,
    received: usize,
    lost: Rc<Cell<u32>>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.received += data.len();
        self.t.as_ref().unwrap().write(data);
    }
    fn eof_received(&mut self) -> bool {
        if self.half_close {
            let t = self.t.as_ref().unwrap();
            t.write(b"bye");
            t.close();
            true
        } else {
            false
        }
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        assert!(exc.is_none(), "unexpected error: {exc:?}");
        self.lost.set(self.lost.get() + 1);
        self.t = None;
    }
}

/// Collects what arrives; records EOF and loss.
#[derive(Default)]
struct Sink {
    t: Option<Transport>,
    data: Vec<u8>,
    eof: bool,
    keep_open: bool,
    lost: Option<Option<io::ErrorKind>>,
    paused: u32,
    resumed: u32,
}

impl Protocol for Sink {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.data.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.eof = true;
        self.keep_open
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.lost = Some(exc.map(|e| e.kind()));
        self.t = None;
    }
    fn pause_writing(&mut self) {
        self.paused += 1;
    }
    fn resume_writing(&mut self) {
        self.resumed += 1;
    }
}

async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        uringio::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn echo_server_with_half_close_from_std_clients() {
    on_both(20, |_| async {
        let lost = Rc::new(Cell::new(0));
        let l2 = lost.clone();
        let server = transport::create_server(
            move || Echo {
                half_close: true,
                lost: l2.clone(),
                ..Echo::default()
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let addr = server.local_addrs()[0];
        assert!(server.is_serving());
        let client = uringio::get_running_loop().run_in_executor(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let msg = pattern(300_000, 1);
            let w = {
                let mut s = s.try_clone().unwrap();
                let msg = msg.clone();
                std::thread::spawn(move || {
                    s.write_all(&msg).unwrap();
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                })
            };
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            w.join().unwrap();
            assert_eq!(&back[..msg.len()], &msg[..]);
            assert_eq!(&back[msg.len()..], b"bye");
        });
        client.await;
        until(|| lost.get() == 1).await;
        server.close();
        assert!(!server.is_serving());
        server.wait_closed().await;
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening"
        );
    });
}

#[test]
fn create_connection_eof_received_false_closes_and_true_keeps_writing() {
    on_both(20, |_| async {
        for keep_open in [false, true] {
            let server = transport::create_server(
                || Echo {
                    half_close: true,
                    ..Echo::default()
                },
                "127.0.0.1:0",
            )
            .await
            .unwrap();
            let addr = server.local_addrs()[0];
            let (t, p) = transport::create_connection(
                || Sink {
                    keep_open,
                    ..Sink::default()
                },
                addr,
            )
            .await
            .unwrap();
            assert!(t.can_write_eof());
            assert_eq!(t.peername().unwrap().as_inet(), Some(addr));
            t.write(b"hello ");
            t.write_owned(b"world".to_vec());
            t.write_eof();
            until(|| p.borrow().eof).await;
            if keep_open {
                // Still open for writing after the peer's EOF, until we
                // close (nothing goes out after our own write_eof).
                uringio::sleep(Duration::from_millis(20)).await;
                assert!(p.borrow().lost.is_none());
                assert!(!t.is_closing());
                t.close();
            }
            until(|| p.borrow().lost.is_some()).await;
            let p = p.borrow();
            assert_eq!(p.data, b"hello worldbye");
            assert!(p.eof);
            assert_eq!(p.lost, Some(None));
            assert!(t.is_closing());
            server.close();
        }
    });
}

#[test]
fn close_flushes_then_connection_lost_is_scheduled_not_reentrant() {
    on_both(20, |_| async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (t, p) = transport::create_connection(Sink::default, addr)
            .await
            .unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let big = pattern(1 << 20, 3);
        t.write(&big);
        t.close();
        // Not from inside close(): connection_lost comes later.
        assert!(p.borrow().lost.is_none());
        assert!(t.is_closing());
        assert!(!t.is_reading());
        t.write(b"ignored after close");
        let got = uringio::get_running_loop()
            .run_in_executor(move || {
                let mut v = Vec::new();
                peer.read_to_end(&mut v).unwrap();
                v
            })
            .await;
        assert_eq!(got, big, "everything written before close() arrives");
        until(|| p.borrow().lost.is_some()).await;
        assert_eq!(p.borrow().lost, Some(None));
    });
}

#[test]
fn abort_drops_buffered_data_and_reports_loss() {
    on_both(20, |_| async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (t, p) = transport::create_connection(Sink::default, addr)
            .await
            .unwrap();
        let (peer, _) = l.accept().unwrap();
        // The peer never reads: a big write stays buffered.
        t.write(&vec![7u8; 32 << 20]);
        uringio::sleep(Duration::from_millis(20)).await;
        assert!(t.get_write_buffer_size() > 0);
        t.abort();
        assert!(p.borrow().lost.is_none(), "not re-entrant");
        until(|| p.borrow().lost.is_some()).await;
        assert_eq!(p.borrow().lost, Some(None));
        assert_eq!(t.get_write_buffer_size(), 0);
        drop(peer);
    });
}

/// Writes `total` bytes as fast as flow control allows.
struct Flood {
    t: Option<Transport>,
    left: usize,
    chunk: Vec<u8>,
    paused: bool,
    pauses: Rc<Cell<u32>>,
    max_buffer: Rc<Cell<usize>>,
}

impl Flood {
    fn pump(&mut self) {
        let t = self.t.clone().unwrap();
        while self.left > 0 && !self.paused {
            let n = self.chunk.len().min(self.left);
            t.write(&self.chunk[..n]);
            self.left -= n;
            self.max_buffer
                .set(self.max_buffer.get().max(t.get_write_buffer_size()));
            // pause_writing is scheduled, not called from write(): a
            // protocol that writes in a loop checks the buffer itself.
            if t.get_write_buffer_size() > t.get_write_buffer_limits().1 {
                break;
            }
        }
        if self.left == 0 {
            t.write_eof();
        }
    }
}

impl Protocol for Flood {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
        self.pump();
    }
    fn data_received(&mut self, _: &[u8]) {}
    fn pause_writing(&mut self) {
        self.paused = true;
        self.pauses.set(self.pauses.get() + 1);
    }
    fn resume_writing(&mut self) {
        self.paused = false;
        self.pump();
    }
    fn eof_received(&mut self) -> bool {
        true
    }
}

#[test]
fn a_peer_that_does_not_read_pauses_the_writer_and_bounds_memory() {
    on_both(30, |_| async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let pauses = Rc::new(Cell::new(0));
        let max_buffer = Rc::new(Cell::new(0));
        let (pa, mb) = (pauses.clone(), max_buffer.clone());
        let (t, _p) = transport::create_connection(
            move || Flood {
                t: None,
                left: 64 << 20,
                chunk: vec![1u8; 16 << 10],
                paused: false,
                pauses: pa,
                max_buffer: mb,
            },
            addr,
        )
        .await
        .unwrap();
        let (mut peer, _) = l.accept().unwrap();
        until(|| pauses.get() > 0).await;
        uringio::sleep(Duration::from_millis(50)).await;
        // Paused, and the buffer stays near the high-water mark while the
        // peer reads nothing.
        assert!(
            t.get_write_buffer_size() <= 64 * 1024 + 16 * 1024,
            "{}",
            t.get_write_buffer_size()
        );
        assert!(max_buffer.get() <= 64 * 1024 + 16 * 1024);
        // Now the peer reads everything: 64 MiB arrive, flow control
        // engaged again and again on the way.
        let n = uringio::get_running_loop()
            .run_in_executor(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0usize;
                loop {
                    match peer.read(&mut buf).unwrap() {
                        0 => return n,
                        k => n += k,
                    }
                }
            })
            .await;
        assert_eq!(n, 64 << 20);
        assert!(pauses.get() > 1, "flow control engaged once only");
        t.close();
    });
}

/// Pauses reading at once; counts what it got.
struct Lazy {
    t: Option<Transport>,
    got: usize,
}

impl Protocol for Lazy {
    fn connection_made(&mut self, t: Transport) {
        t.pause_reading();
        assert!(!t.is_reading());
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got += data.len();
    }
}

#[test]
fn pause_reading_fills_the_senders_kernel_buffer() {
    on_both(30, |_| async {
        let got = Rc::new(RefCell::new(None::<Rc<RefCell<Lazy>>>));
        let server = transport::create_server(|| Lazy { t: None, got: 0 }, "127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addrs()[0];
        // A non-blocking std sender: with the receiver paused, its sends
        // must hit EAGAIN once both kernel buffers are full.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nonblocking(true).unwrap();
        let chunk = vec![5u8; 64 << 10];
        let mut sent = 0usize;
        let mut blocked = false;
        for _ in 0..10_000 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Let the loop run: a receiver that kept reading would
                    // make room again.
                    uringio::sleep(Duration::from_millis(20)).await;
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(blocked, "the sender never blocked ({sent} bytes sent)");
        assert!(sent < 256 << 20);
        drop(got);
        server.close();
    });
}

#[test]
fn resume_reading_delivers_everything_held_back() {
    on_both(30, |_| async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (t, p) = transport::create_connection(|| Lazy { t: None, got: 0 }, addr)
            .await
            .unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let w = std::thread::spawn(move || {
            peer.write_all(&vec![9u8; 4 << 20]).unwrap();
        });
        uringio::sleep(Duration::from_millis(30)).await;
        assert_eq!(p.borrow().got, 0, "data_received while paused");
        t.resume_reading();
        until(|| p.borrow().got == 4 << 20).await;
        w.join().unwrap();
        t.close();
    });
}

/// Panics on the first byte it gets.
struct Bomb;

impl Protocol for Bomb {
    fn data_received(&mut self, _: &[u8]) {
        panic!("boom in data_received");
    }
}

#[test]
fn a_panicking_callback_is_reported_and_only_its_connection_is_aborted() {
    on_both(20, |_| async {
        let reported = Rc::new(RefCell::new(Vec::<String>::new()));
        let r2 = reported.clone();
        uringio::get_running_loop().set_exception_handler(move |ctx| {
            r2.borrow_mut().push(ctx.message.clone());
        });
        let bombs = transport::create_server(|| Bomb, "127.0.0.1:0")
            .await
            .unwrap();
        let echo = transport::create_server(Echo::default, "127.0.0.1:0")
            .await
            .unwrap();
        let (b_addr, e_addr) = (bombs.local_addrs()[0], echo.local_addrs()[0]);
        let r = uringio::get_running_loop()
            .run_in_executor(move || {
                let mut b = std::net::TcpStream::connect(b_addr).unwrap();
                b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                b.write_all(b"x").unwrap();
                let mut v = Vec::new();
                // Aborted: the peer sees the connection end.
                let _ = b.read_to_end(&mut v);
                let mut e = std::net::TcpStream::connect(e_addr).unwrap();
                e.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                e.write_all(b"still here").unwrap();
                let mut back = [0u8; 10];
                e.read_exact(&mut back).unwrap();
                back
            })
            .await;
        assert_eq!(&r, b"still here");
        until(|| !reported.borrow().is_empty()).await;
        let msgs = reported.borrow();
        assert!(msgs[0].contains("boom in data_received"), "{msgs:?}");
        bombs.close();
        echo.close();
    });
}

#[test]
fn a_thousand_connections_through_one_server() {
    on_both(60, |_| async {
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
        let mut tasks = Vec::new();
        for i in 0..1000u32 {
            tasks.push(uringio::spawn(async move {
                let (t, p) = transport::create_connection(Sink::default, addr)
                    .await
                    .unwrap();
                let msg = i.to_le_bytes().repeat(16);
                t.write(&msg);
                t.write_eof();
                let p2 = p.clone();
                until(move || p2.borrow().lost.is_some()).await;
                assert_eq!(p.borrow().data, msg);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        until(|| lost.get() == 1000).await;
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn buffer_limits_are_validated() {
    on_both(10, |_| async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (t, _p) = transport::create_connection(Sink::default, l.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(t.get_write_buffer_limits(), (16 * 1024, 64 * 1024));
        t.set_write_buffer_limits(Some(1000), Some(10)).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (10, 1000));
        let e = t.set_write_buffer_limits(Some(10), Some(1000)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        t.abort();
    });
}

/// A Buffered protocol: receives into its own fixed buffer.
struct Counter {
    buf: [u8; 100],
    total: Rc<Cell<usize>>,
    sum: Rc<Cell<u64>>,
}

impl transport::BufferedProtocol for Counter {
    fn get_buffer(&mut self, _hint: usize) -> &mut [u8] {
        &mut self.buf
    }
    fn buffer_updated(&mut self, n: usize) {
        self.total.set(self.total.get() + n);
        self.sum
            .set(self.sum.get() + self.buf[..n].iter().map(|&b| b as u64).sum::<u64>());
    }
}

#[test]
fn buffered_protocol_gets_every_byte_through_get_buffer() {
    on_both(20, |_| async {
        let total = Rc::new(Cell::new(0));
        let sum = Rc::new(Cell::new(0u64));
        let (t2, s2) = (total.clone(), sum.clone());
        let server = transport::create_server(
            move || {
                transport::Buffered(Counter {
                    buf: [0; 100],
                    total: t2.clone(),
                    sum: s2.clone(),
                })
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let data = pattern(1 << 20, 5);
        let expect: u64 = data.iter().map(|&b| b as u64).sum();
        let addr = server.local_addrs()[0];
        uringio::get_running_loop()
            .run_in_executor(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(&data).unwrap();
            })
            .await;
        until(|| total.get() == 1 << 20).await;
        assert_eq!(sum.get(), expect);
        server.close();
    });
}

#[test]
fn python_asyncio_client_against_our_server_and_our_client_against_python() {
    on_both(30, |_| async {
        // 1. CPython's asyncio client, our server (echo, half-close).
        let server = transport::create_server(
            || Echo {
                half_close: true,
                ..Echo::default()
            },
            "127.0.0.1:0",
        )
        .await
        .unwrap();
        let port = server.local_addrs()[0].port();
        let script = format!(
            r#"
import asyncio
async def main():
    r, w = await asyncio.open_connection("127.0.0.1", {port})
    data = bytes(range(256)) * 4096
    w.write(data)
    await w.drain()
    w.write_eof()
    back = await r.read()
    assert back == data + b"bye", len(back)
    w.close()
    await w.wait_closed()
    print("ok")
asyncio.run(asyncio.wait_for(main(), 20))
"#
        );
        let out = uringio::get_running_loop()
            .run_in_executor(move || {
                std::process::Command::new("python3")
                    .args(["-c", &script])
                    .output()
                    .unwrap()
            })
            .await;
        assert!(
            out.status.success() && out.stdout.starts_with(b"ok"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.close();

        // 2. Our client, CPython's asyncio server (upper-cases, then
        //    closes after EOF).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let script = format!(
            r#"
import asyncio, sys
async def handle(r, w):
    data = await r.read()
    w.write(data.upper())
    await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", {port})
    print("ready", flush=True)
    async with srv:
        await asyncio.sleep(15)
asyncio.run(main())
"#
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        uringio::get_running_loop()
            .run_in_executor(move || {
                let mut b = [0u8; 6];
                stdout.read_exact(&mut b).unwrap();
            })
            .await;
        let (t, p) = transport::create_connection(Sink::default, ("127.0.0.1", port))
            .await
            .unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
        t.write(&data);
        t.write_eof();
        until(|| p.borrow().lost.is_some()).await;
        assert_eq!(p.borrow().data, data.to_ascii_uppercase());
        let _ = child.kill();
        let _ = child.wait();
    });
}

/// Echoes datagrams back to their sender; counts errors.
#[derive(Default)]
struct UdpEcho {
    t: Option<transport::DatagramTransport>,
    got: Vec<(Vec<u8>, std::net::SocketAddr)>,
    echo: bool,
    errors: Vec<io::ErrorKind>,
    lost: bool,
}

impl transport::DatagramProtocol for UdpEcho {
    fn connection_made(&mut self, t: transport::DatagramTransport) {
        self.t = Some(t);
    }
    fn datagram_received(&mut self, data: &[u8], addr: std::net::SocketAddr) {
        if self.echo {
            self.t.as_ref().unwrap().sendto(data, Some(addr)).unwrap();
        }
        self.got.push((data.to_vec(), addr));
    }
    fn error_received(&mut self, exc: io::Error) {
        self.errors.push(exc.kind());
    }
    fn connection_lost(&mut self, _exc: Option<io::Error>) {
        self.lost = true;
        self.t = None;
    }
}

#[test]
fn datagram_endpoints_unconnected_and_connected_lose_nothing() {
    on_both(20, |_| async {
        let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (st, sp) = transport::create_datagram_endpoint(
            || UdpEcho {
                echo: true,
                ..UdpEcho::default()
            },
            Some(local),
            None::<std::net::SocketAddr>,
        )
        .await
        .unwrap();
        let server = st.sockname().unwrap();
        assert_eq!(st.peername(), None);
        // Connected client: sendto without an address goes to the remote.
        let (ct, cp) = transport::create_datagram_endpoint(
            UdpEcho::default,
            None::<std::net::SocketAddr>,
            Some(server),
        )
        .await
        .unwrap();
        assert_eq!(ct.peername(), Some(server));
        let other: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            ct.sendto(b"x", Some(other)).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            st.sendto(b"x", None).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // 1,000 datagrams in lock-step windows of 50, so no socket buffer
        // can overflow: every one comes back, in order, with its content.
        for w in 0..20u32 {
            for i in 0..50u32 {
                ct.sendto(&(w * 50 + i).to_le_bytes(), None).unwrap();
            }
            let want = ((w + 1) * 50) as usize;
            until(|| cp.borrow().got.len() == want).await;
        }
        let got: Vec<u32> = cp
            .borrow()
            .got
            .iter()
            .map(|(d, a)| {
                assert_eq!(*a, server);
                u32::from_le_bytes(d[..4].try_into().unwrap())
            })
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(sp.borrow().got.len(), 1000);
        ct.close();
        st.close();
        until(|| cp.borrow().lost && sp.borrow().lost).await;
        assert!(ct.is_closing());
        assert_eq!(
            ct.sendto(b"late", None).unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
    });
}

#[test]
fn connected_datagram_endpoint_reports_port_unreachable() {
    on_both(20, |_| async {
        // A port nobody listens on: the kernel answers with ICMP
        // port-unreachable, which a connected socket reports.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let (t, p) = transport::create_datagram_endpoint(
            UdpEcho::default,
            None::<std::net::SocketAddr>,
            Some(dead_addr),
        )
        .await
        .unwrap();
        for _ in 0..50 {
            t.sendto(b"anyone?", None).unwrap();
            uringio::sleep(Duration::from_millis(5)).await;
            if !p.borrow().errors.is_empty() {
                break;
            }
        }
        let errs = p.borrow().errors.clone();
        assert!(
            errs.contains(&io::ErrorKind::ConnectionRefused),
            "errors: {errs:?}"
        );
        // The endpoint goes on after an error.
        assert!(!t.is_closing());
        t.close();
    });
}

#[test]
fn datagram_options_reuse_port_and_broadcast() {
    on_both(20, |_| async {
        let opts = transport::DatagramOptions::new()
            .local_addr("127.0.0.1:0".parse().unwrap())
            .reuse_port(true)
            .allow_broadcast(true);
        let (a, _pa) = transport::create_datagram_endpoint_with(UdpEcho::default, &opts)
            .await
            .unwrap();
        let port = a.sockname().unwrap();
        let opts2 = transport::DatagramOptions::new()
            .local_addr(port)
            .reuse_port(true);
        let (b, _pb) = transport::create_datagram_endpoint_with(UdpEcho::default, &opts2)
            .await
            .unwrap();
        assert_eq!(b.sockname(), Some(port));
        let none = transport::DatagramOptions::new();
        let e = transport::create_datagram_endpoint_with(UdpEcho::default, &none).await;
        assert_eq!(e.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
        a.close();
        b.abort();
    });
}

#[test]
fn pipe_transports_read_and_write_with_flow_control() {
    on_both(20, |_| async {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (rt, rp) = transport::connect_read_pipe(Sink::default, r)
            .await
            .unwrap();
        let (wt, wp) = transport::connect_write_pipe(Sink::default, w)
            .await
            .unwrap();
        assert!(!wt.can_write_eof() || wt.can_write_eof());
        let data = pattern(4 << 20, 9);
        rt.pause_reading();
        wt.write(&data);
        // The reader is paused: the pipe fills and the writer pauses.
        until(|| wp.borrow().paused > 0).await;
        assert!(rp.borrow().data.is_empty());
        rt.resume_reading();
        wt.write_eof();
        until(|| rp.borrow().lost.is_some()).await;
        assert_eq!(rp.borrow().data, data);
        assert!(rp.borrow().eof);
        until(|| wp.borrow().lost.is_some()).await;
        assert_eq!(wp.borrow().lost, Some(None));
        assert!(wp.borrow().resumed > 0);
    });
}

#[test]
fn write_pipe_whose_reader_went_away_fails_with_broken_pipe() {
    on_both(20, |_| async {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let (t, p) = transport::connect_write_pipe(Sink::default, w)
            .await
            .unwrap();
        t.write(b"nobody reads this");
        until(|| p.borrow().lost.is_some()).await;
        assert_eq!(p.borrow().lost, Some(Some(io::ErrorKind::BrokenPipe)));
    });
}

/// Sends `total` bytes (flow-controlled) and checks what comes back.
struct RoundTrip {
    t: Option<Transport>,
    data: Rc<Vec<u8>>,
    sent: usize,
    paused: bool,
    back: Vec<u8>,
    lost: bool,
    pauses: u32,
}

impl RoundTrip {
    fn pump(&mut self) {
        let t = self.t.clone().unwrap();
        while self.sent < self.data.len() && !self.paused {
            let n = (256 << 10).min(self.data.len() - self.sent);
            t.write(&self.data[self.sent..self.sent + n]);
            self.sent += n;
            if t.get_write_buffer_size() > t.get_write_buffer_limits().1 {
                break;
            }
        }
        if self.sent == self.data.len() {
            t.write_eof();
        }
    }
}

impl Protocol for RoundTrip {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
        self.pump();
    }
    fn data_received(&mut self, data: &[u8]) {
        assert_eq!(
            data,
            &self.data[self.back.len()..self.back.len() + data.len()]
        );
        self.back.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        false
    }
    fn pause_writing(&mut self) {
        self.paused = true;
        self.pauses += 1;
    }
    fn resume_writing(&mut self) {
        self.paused = false;
        self.pump();
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        assert!(exc.is_none(), "{exc:?}");
        self.lost = true;
        self.t = None;
    }
}

/// An echo server that respects flow control as asyncio's examples do:
/// paused for writing, it pauses reading.
#[derive(Default)]
struct FlowEcho {
    t: Option<Transport>,
}

impl Protocol for FlowEcho {
    fn connection_made(&mut self, t: Transport) {
        self.t = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data);
    }
    fn pause_writing(&mut self) {
        self.t.as_ref().unwrap().pause_reading();
    }
    fn resume_writing(&mut self) {
        self.t.as_ref().unwrap().resume_reading();
    }
    fn eof_received(&mut self) -> bool {
        false
    }
}

#[test]
fn sixty_four_mib_each_way_with_flow_control_engaged() {
    on_both(60, |_| async {
        let server = transport::create_server(FlowEcho::default, "127.0.0.1:0")
            .await
            .unwrap();
        let data = Rc::new(pattern(64 << 20, 11));
        let d2 = data.clone();
        let (_t, p) = transport::create_connection(
            move || RoundTrip {
                t: None,
                data: d2,
                sent: 0,
                paused: false,
                back: Vec::new(),
                lost: false,
                pauses: 0,
            },
            server.local_addrs()[0],
        )
        .await
        .unwrap();
        until(|| p.borrow().lost).await;
        {
            let p = p.borrow();
            assert_eq!(p.back.len(), data.len());
            assert!(p.pauses > 0, "flow control never engaged");
        }
        server.close();
        server.wait_closed().await;
    });
}

#[test]
fn server_serve_forever_returns_on_close_and_listens_on_every_address() {
    on_both(20, |_| async {
        let server = transport::create_server(Echo::default, "localhost:0")
            .await
            .unwrap();
        let addrs = server.local_addrs();
        assert!(!addrs.is_empty());
        // Every resolved address serves, on one port.
        for a in &addrs {
            assert_eq!(a.port(), addrs[0].port());
            std::net::TcpStream::connect(a).unwrap();
        }
        let s2 = server.clone();
        let forever = uringio::spawn(async move { s2.serve_forever().await });
        uringio::sleep(Duration::from_millis(10)).await;
        assert!(!forever.is_finished());
        server.close();
        forever.await.unwrap();
        server.wait_closed().await;
        // reuse_port: two servers on one port.
        let opts = transport::ServerOptions::new().reuse_port(true).backlog(16);
        let a = transport::create_server_with(Echo::default, "127.0.0.1:0", &opts)
            .await
            .unwrap();
        let port = a.local_addrs()[0];
        let b = transport::create_server_with(Echo::default, port, &opts)
            .await
            .unwrap();
        assert_eq!(b.local_addrs()[0], port);
        // Without it, the port is taken: a clear error naming it.
        let e = transport::create_server(Echo::default, port)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&port.to_string()), "{e}");
        a.close();
        b.close();
    });
}

#[test]
fn unix_server_and_connection_path_and_abstract() {
    on_both(20, |_| async {
        let dir = common::TempDir::new("transport-unix");
        let path = dir.path("echo.sock");
        // A stale socket file from an earlier run is removed.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = transport::create_unix_server(
            || Echo {
                half_close: true,
                ..Echo::default()
            },
            &path,
        )
        .await
        .unwrap();
        assert!(server.local_addrs().is_empty());
        assert_eq!(server.sock_names().len(), 1);
        let (t, p) = transport::create_unix_connection(Sink::default, &path)
            .await
            .unwrap();
        assert!(matches!(t.peername(), Some(transport::SockAddr::Unix(_))));
        let data = pattern(1 << 20, 13);
        t.write(&data);
        t.write_eof();
        until(|| p.borrow().lost.is_some()).await;
        let mut want = data.clone();
        want.extend_from_slice(b"bye");
        assert_eq!(p.borrow().data, want);
        server.close();
        server.wait_closed().await;
        assert!(!path.exists(), "socket file left behind");

        // Not a socket: never removed, a clear error instead.
        std::fs::write(&path, b"precious").unwrap();
        let e = transport::create_unix_server(Echo::default, &path)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");

        // Abstract names.
        let name = format!("uringio-transport-{}", std::process::id());
        let addr = uringio::net::UnixSocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = transport::create_unix_server_addr(Echo::default, &addr)
            .await
            .unwrap();
        let (t, p) = transport::create_unix_connection_addr(Sink::default, &addr)
            .await
            .unwrap();
        t.write(b"abstract");
        t.write_eof();
        until(|| p.borrow().lost.is_some()).await;
        assert_eq!(p.borrow().data, b"abstract");
        server.close();
    });
}
