//! Real peers: CPython's asyncio on the other end of our sockets, on both
//! backends. Each child is killed and reaped when its guard drops, even if
//! the test fails or times out.
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::Shutdown;
use std::process::{Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, pattern};
use futures_util::StreamExt;
use uringio::net::{TcpListener, TcpStream, UdpSocket};

/// A python child, killed and waited for on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(script: &str, args: &[String]) -> Child {
    let c = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    Child(c)
}

impl Child {
    /// Waits for the exit without blocking the loop.
    async fn exit(&mut self) -> ExitStatus {
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            uringio::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// The first line python prints (a port), read on the blocking pool.
    async fn first_line(&mut self) -> String {
        let out = self.0.stdout.take().unwrap();
        let (line, out) = uringio::get_running_loop()
            .run_in_executor(move || {
                let mut r = BufReader::new(out);
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                (line, r)
            })
            .await;
        // Keep the pipe open: python may still write to it.
        self.0.stdout = Some(out.into_inner());
        line
    }
}

const PY_ECHO_CLIENT: &str = r#"
import asyncio, random, sys

async def one(port, i, n):
    r, w = await asyncio.open_connection('127.0.0.1', port)
    data = random.Random(i).randbytes(n)
    async def send():
        k = 0
        sizes = random.Random(1000 + i)
        while k < n:
            step = sizes.randint(1, 100000)
            w.write(data[k:k + step])
            await w.drain()
            k += step
        w.write_eof()
    t = asyncio.create_task(send())
    got = await r.read()
    await t
    w.close()
    await w.wait_closed()
    if got != data:
        bad = next((j for j in range(min(len(got), n)) if got[j] != data[j]), min(len(got), n))
        raise SystemExit(f"connection {i}: got {len(got)} bytes of {n}, first difference at {bad}")

async def main():
    port, conns, n = map(int, sys.argv[1:4])
    await asyncio.gather(*(one(port, i, n) for i in range(conns)))
    print("OK", conns, flush=True)

asyncio.run(main())
"#;

const PY_ECHO_SERVER: &str = r#"
import asyncio

async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.write_eof()
    await w.drain()
    w.close()

async def main():
    srv = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()

asyncio.run(main())
"#;

const PY_UDP_SERVER: &str = r#"
import asyncio

class Reverse(asyncio.DatagramProtocol):
    def connection_made(self, t):
        self.t = t
    def datagram_received(self, data, addr):
        self.t.sendto(data[::-1], addr)

async def main():
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(Reverse, local_addr=('127.0.0.1', 0))
    print(t.get_extra_info('sockname')[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// Echoes one connection until EOF, then half-closes.
async fn echo(s: TcpStream) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (res, b) = s.read(buf).await;
        if res.expect("read from python") == 0 {
            break;
        }
        let (res, b) = s.write_all(b).await;
        res.expect("write to python");
        buf = b;
    }
    s.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn python_asyncio_clients_against_our_echo_server() {
    const CONNS: usize = 8;
    const BYTES: usize = 1 << 20;
    on_both(60, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = uringio::spawn(async move {
            let mut inc = l.incoming();
            let mut conns = Vec::new();
            for _ in 0..CONNS {
                let s = inc.next().await.unwrap().unwrap();
                conns.push(uringio::spawn(echo(s)));
            }
            for c in conns {
                c.await.unwrap();
            }
        });
        let mut py = python(
            PY_ECHO_CLIENT,
            &[port.to_string(), CONNS.to_string(), BYTES.to_string()],
        );
        let status = py.exit().await;
        assert!(
            status.success(),
            "{b}: python client failed: {}",
            py.stderr()
        );
        let mut out = String::new();
        py.0.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.trim(), format!("OK {CONNS}"));
        server.await.unwrap();
    });
}

#[test]
fn our_clients_against_python_asyncio_echo_server() {
    const CONNS: usize = 8;
    const BYTES: usize = 1 << 20;
    on_both(60, |b| async move {
        let mut py = python(PY_ECHO_SERVER, &[]);
        let line = py.first_line().await;
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{b}: python said {line:?}; stderr: {}", py.stderr()));
        let clients: Vec<_> = (0..CONNS)
            .map(|i| {
                uringio::spawn(async move {
                    let c = Rc::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
                    c.set_nodelay(true).unwrap();
                    let data = pattern(BYTES, i as u64);
                    let expected = data.clone();
                    let w = c.clone();
                    let writer = uringio::spawn(async move {
                        // Vectored and plain writes, in uneven pieces.
                        let mut rest = &data[..];
                        let mut k = 0usize;
                        while !rest.is_empty() {
                            let n = rest.len().min(1 + (k * 7919) % 90_000);
                            let (a, tail) = rest.split_at(n);
                            if k % 2 == 0 {
                                let (res, _) = w.write_all(a.to_vec()).await;
                                res.unwrap();
                            } else {
                                let half = a.len() / 2;
                                let mut bufs = vec![a[..half].to_vec(), a[half..].to_vec()];
                                // writev may be partial: finish with write_all.
                                let (res, back) = w.writev(bufs).await;
                                let done = res.unwrap();
                                bufs = back;
                                let all: Vec<u8> = bufs.concat();
                                let (res, _) = w.write_all(all[done..].to_vec()).await;
                                res.unwrap();
                            }
                            rest = tail;
                            k += 1;
                        }
                        w.shutdown(Shutdown::Write).unwrap();
                    });
                    let mut got = Vec::with_capacity(BYTES);
                    loop {
                        let (res, buf) = c.read(Vec::with_capacity(64 * 1024)).await;
                        if res.unwrap() == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf);
                    }
                    writer.await.unwrap();
                    assert_eq!(got.len(), BYTES, "connection {i}");
                    assert!(got == expected, "connection {i}: echo differs");
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        // The server is still alive and well (it only ends when killed).
        assert!(py.0.try_wait().unwrap().is_none(), "{b}: {}", py.stderr());
    });
}

#[test]
fn udp_against_python_asyncio_datagram_endpoint() {
    on_both(30, |b| async move {
        let mut py = python(PY_UDP_SERVER, &[]);
        let line = py.first_line().await;
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{b}: python said {line:?}; stderr: {}", py.stderr()));
        let peer = format!("127.0.0.1:{port}").parse().unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..50usize {
            let msg = pattern(1 + i * 97, i as u64);
            // Loopback UDP should not drop, but never hang on it: resend
            // after a while.
            let reply = loop {
                let (res, _) = s.send_to(msg.clone(), peer).await;
                res.unwrap();
                let r = uringio::timeout(
                    Duration::from_secs(2),
                    s.recv_from(Vec::with_capacity(8192)),
                )
                .await;
                if let Ok((res, buf)) = r {
                    let (n, from) = res.unwrap();
                    assert_eq!(from, peer);
                    assert_eq!(n, buf.len());
                    break buf;
                }
            };
            let mut rev = msg.clone();
            rev.reverse();
            assert_eq!(reply, rev, "{b}: datagram {i}");
        }
    });
}

#[test]
fn python_client_sees_our_half_close_and_close() {
    // We send a greeting, half-close, and read what python sends back
    // after seeing our EOF: asyncio's at_eof() must work against us.
    const PY: &str = r#"
import asyncio, sys
async def main():
    r, w = await asyncio.open_connection('127.0.0.1', int(sys.argv[1]))
    greeting = await r.read()          # until our FIN
    assert r.at_eof()
    w.write(b"got:" + greeting)
    await w.drain()
    w.close()
    await w.wait_closed()
asyncio.run(main())
"#;
    on_both(30, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut py = python(PY, &[port.to_string()]);
        let (s, peer) = l.accept().await.unwrap();
        assert!(peer.ip().is_loopback());
        let (res, _) = s.write_all(b"hello from uringio".to_vec()).await;
        res.unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        loop {
            let (res, buf) = s.read(Vec::with_capacity(256)).await;
            if res.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&buf);
        }
        assert_eq!(got, b"got:hello from uringio");
        let status = py.exit().await;
        assert!(status.success(), "{b}: {}", py.stderr());
    });
}
