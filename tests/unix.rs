//! Unix-domain sockets on both backends: path and abstract listeners,
//! `incoming()`, pairs, half-close, datagrams, descriptor passing
//! (`SCM_RIGHTS`, truncation, close-on-exec), error paths, a CPython
//! asyncio client, dropped ops, and descriptor leaks.
mod common;

use std::io::{self, Read as _, Seek, Write as _};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use common::{TempDir, on_both, open_fds, pattern};
use futures_util::StreamExt;
use uringio::driver::{Cancellable, Canceller};
use uringio::net::{UnixDatagram, UnixListener, UnixSocketAddr, UnixStream};

/// Tests that count open descriptors run one at a time, with every other
/// test here: a test running beside them would open and close its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An abstract name unique to this process and call.
fn abstract_name(tag: &str) -> UnixSocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    UnixSocketAddr::from_abstract_name(format!("uringio-test-{tag}-{}-{n}", std::process::id()))
        .unwrap()
}

async fn read_to_end(s: &UnixStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (res, buf) = s.read(Vec::with_capacity(64 * 1024)).await;
        if res? == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf);
    }
}

async fn read_exact(s: &UnixStream, n: usize) -> io::Result<Vec<u8>> {
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

/// Echoes until the peer half-closes, then half-closes.
async fn echo(s: UnixStream) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let (res, b) = s.read(buf).await;
        if res.expect("echo read") == 0 {
            break;
        }
        let (res, b) = s.write_all(b).await;
        res.expect("echo write");
        buf = b;
    }
    s.shutdown(Shutdown::Write).expect("echo shutdown");
}

fn spawn_echo_server(l: UnixListener) {
    uringio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.expect("accept");
            uringio::spawn(echo(s)).detach();
        }
    })
    .detach();
}

/// Sends `n` bytes and reads them back at the same time.
async fn echo_round_trip(c: UnixStream, n: usize, seed: u64) {
    let c = Rc::new(c);
    let data = pattern(n, seed);
    let expected = data.clone();
    let w = c.clone();
    let writer = uringio::spawn(async move {
        for chunk in data.chunks(100_000) {
            let (res, _) = w.write_all(chunk.to_vec()).await;
            res.unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_end(&c).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), n);
    assert!(got == expected, "echoed bytes differ");
}

#[test]
fn echo_over_path_and_abstract_sockets() {
    let _serial = serial();
    const N: usize = 1024 * 1024;
    let dir = TempDir::new("unix-echo");
    on_both(30, |b| {
        let path = dir.path(&format!("echo-{b}.sock"));
        async move {
            let l = UnixListener::bind(&path).unwrap();
            assert_eq!(l.local_addr().unwrap().pathname(), Some(path.as_path()));
            spawn_echo_server(l);
            let c = UnixStream::connect(&path).await.unwrap();
            assert_eq!(c.peer_addr().unwrap().pathname(), Some(path.as_path()));
            assert!(c.local_addr().unwrap().is_unnamed());
            echo_round_trip(c, N, 1).await;

            let name = abstract_name("echo");
            let l = UnixListener::bind_addr(&name).unwrap();
            assert_eq!(l.local_addr().unwrap(), name);
            spawn_echo_server(l);
            let c = UnixStream::connect_addr(&name).await.unwrap();
            assert_eq!(c.peer_addr().unwrap(), name);
            echo_round_trip(c, N, 2).await;
            std::fs::remove_file(&path).unwrap();
        }
    });
}

#[test]
fn incoming_two_hundred_connections() {
    let _serial = serial();
    const CONNS: usize = 200;
    on_both(60, |_| async {
        let name = abstract_name("incoming");
        let l = UnixListener::bind_addr(&name).unwrap();
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
        let clients: Vec<_> = (0..CONNS)
            .map(|i| {
                let name = name.clone();
                uringio::spawn(async move {
                    let c = UnixStream::connect_addr(&name).await.unwrap();
                    let msg = pattern(500 + i, i as u64);
                    let (res, _) = c.write_all(msg.clone()).await;
                    res.unwrap();
                    // Everyone is connected before anyone closes.
                    assert_eq!(read_exact(&c, msg.len()).await.unwrap(), msg);
                    c.shutdown(Shutdown::Write).unwrap();
                    assert!(read_to_end(&c).await.unwrap().is_empty());
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        server.await.unwrap();
    });
}

#[test]
fn dropping_incoming_keeps_its_connections() {
    let _serial = serial();
    const CONNS: usize = 100;
    on_both(30, |b| async move {
        let name = abstract_name("keep");
        let l = UnixListener::bind_addr(&name).unwrap();
        let mut clients = Vec::new();
        for i in 0..CONNS as u32 {
            let c = UnixStream::connect_addr(&name).await.unwrap();
            let (res, _) = c.write_all(i.to_le_bytes().to_vec()).await;
            res.unwrap();
            clients.push(c);
        }
        let mut seen = [false; CONNS];
        let mut served = 0;
        while served < CONNS {
            // A fresh incoming() each time, dropped while it may hold more.
            let mut inc = l.incoming();
            let s = inc.next().await.unwrap().unwrap();
            uringio::yield_now().await;
            drop(inc);
            let (res, buf) = s.read(Vec::with_capacity(4)).await;
            assert_eq!(res.unwrap(), 4);
            let i = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            assert!(!seen[i], "{b}: connection {i} twice");
            seen[i] = true;
            served += 1;
        }
        assert!(seen.iter().all(|&x| x), "{b}: a connection was lost");
    });
}

#[test]
fn pair_half_close_and_peer_cred() {
    let _serial = serial();
    on_both(10, |_| async {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(a.peer_addr().unwrap().is_unnamed());
        let cred = a.peer_cred().unwrap();
        assert_eq!(cred.pid as u32, std::process::id());
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((cred.uid, cred.gid), (uid, gid));

        let (res, _) = a.write_all(b"bye".to_vec()).await;
        res.unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&b).await.unwrap(), b"bye");
        // EOF again, and the other direction still works.
        let (res, _) = b.read(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = b.writev(vec![b"a".to_vec(), b"ck".to_vec()]).await;
        assert_eq!(res.unwrap(), 3);
        b.shutdown(Shutdown::Write).unwrap();
        let (res, bufs) = a
            .readv(vec![Vec::with_capacity(1), Vec::with_capacity(8)])
            .await;
        assert_eq!(res.unwrap(), 3);
        assert_eq!((&bufs[0][..], &bufs[1][..]), (&b"a"[..], &b"ck"[..]));
        assert_eq!(read_to_end(&a).await.unwrap(), b"");
    });
}

#[test]
fn split_halves_in_two_tasks() {
    let _serial = serial();
    on_both(10, |_| async {
        let (a, b) = UnixStream::pair().unwrap();
        spawn_echo(b);
        let (r, w) = a.into_split();
        let data = pattern(300_000, 5);
        let expected = data.clone();
        let writer = uringio::spawn(async move {
            let (res, _) = w.write_all(data).await;
            res.unwrap();
            w.shutdown().unwrap();
            w
        });
        let mut got = Vec::new();
        loop {
            let (res, buf) = r.read(Vec::with_capacity(8192)).await;
            if res.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&buf);
        }
        drop(writer.await.unwrap());
        assert!(got == expected);
    });
}

fn spawn_echo(s: UnixStream) {
    uringio::spawn(echo(s)).detach();
}

#[test]
fn datagrams_with_addresses() {
    let _serial = serial();
    let dir = TempDir::new("unix-dgram");
    on_both(10, |b| {
        let pa = dir.path(&format!("a-{b}.sock"));
        let pb = dir.path(&format!("b-{b}.sock"));
        async move {
            let a = UnixDatagram::bind(&pa).unwrap();
            let bsock = UnixDatagram::bind(&pb).unwrap();
            let (res, buf) = a.send_to(b"ping".to_vec(), &pb).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"ping");
            let (res, buf) = bsock.recv_from(Vec::with_capacity(64)).await;
            let (n, from) = res.unwrap();
            assert_eq!((n, &buf[..]), (4, &b"ping"[..]));
            assert_eq!(from.pathname(), Some(pa.as_path()));
            let (res, _) = bsock.send_to_addr(b"pong!".to_vec(), &from).await;
            assert_eq!(res.unwrap(), 5);
            let (res, buf) = a.recv_from(Vec::with_capacity(64)).await;
            assert_eq!(res.unwrap().0, 5);
            assert_eq!(&buf[..], b"pong!");

            // An unbound sender shows up unnamed; abstract names work.
            let u = UnixDatagram::unbound().unwrap();
            let (res, _) = u.send_to(b"anon".to_vec(), &pb).await;
            res.unwrap();
            let (res, _) = bsock.recv_from(Vec::with_capacity(64)).await;
            assert!(res.unwrap().1.is_unnamed());
            let name = abstract_name("dgram");
            let c = UnixDatagram::bind_addr(&name).unwrap();
            let (res, _) = a.send_to_addr(b"abs".to_vec(), &name).await;
            res.unwrap();
            let (res, buf) = c.recv_from(Vec::with_capacity(64)).await;
            assert_eq!(
                res.unwrap(),
                (3, UnixSocketAddr::from_pathname(&pa).unwrap())
            );
            assert_eq!(&buf[..], b"abs");

            // Connected: send/recv, peer_addr.
            u.connect(&pb).unwrap();
            assert_eq!(u.peer_addr().unwrap().pathname(), Some(pb.as_path()));
            let (res, _) = u.send(b"conn".to_vec()).await;
            res.unwrap();
            let (res, buf) = bsock.recv(Vec::with_capacity(64)).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(&buf[..], b"conn");

            // A bad destination is an error with the buffer handed back.
            let (res, buf) = a.send_to(b"x".to_vec(), "no\0nul").await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            assert_eq!(buf, b"x");
            let (res, _) = a.send_to(b"x".to_vec(), dir_missing(&pa)).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound);
            drop((a, bsock));
            std::fs::remove_file(&pa).unwrap();
            std::fs::remove_file(&pb).unwrap();
        }
    });
}

fn dir_missing(p: &std::path::Path) -> std::path::PathBuf {
    p.with_file_name("missing.sock")
}

#[test]
fn thousand_datagrams_on_a_pair_none_lost() {
    let _serial = serial();
    const N: usize = 1000;
    on_both(30, |_| async {
        let (a, b) = UnixDatagram::pair().unwrap();
        // Each datagram is 1–4 KiB: 1000 of them are far more than the
        // socket buffer holds, so the sender waits for the reader.
        let sender = uringio::spawn(async move {
            for i in 0..N {
                let msg = pattern(1024 + (i * 37) % 3072, i as u64);
                let (res, _) = a.send(msg).await;
                assert_eq!(res.unwrap(), 1024 + (i * 37) % 3072);
            }
            a
        });
        for i in 0..N {
            let (res, buf) = b.recv(Vec::with_capacity(8192)).await;
            let n = res.unwrap();
            assert_eq!(n, 1024 + (i * 37) % 3072, "datagram {i}: boundaries kept");
            assert!(buf == pattern(n, i as u64), "datagram {i} in order");
        }
        drop(sender.await.unwrap());
    });
}

/// An unbound sender whose receiver's queue is full (more than
/// `net.unix.max_dgram_qlen` datagrams waiting): `send_to` waits and
/// retries on both backends (io_uring completes such a send with
/// `EAGAIN` at once); every datagram arrives, in order.
#[test]
fn send_to_a_full_receiver_waits() {
    let _serial = serial();
    let qlen: usize = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10);
    let n = (qlen + 20).min(2000);
    on_both(30, |b| async move {
        let name = abstract_name("fullq");
        let r = UnixDatagram::bind_addr(&name).unwrap();
        let s = UnixDatagram::unbound().unwrap();
        let sender = uringio::spawn(async move {
            for i in 0..n as u32 {
                let (res, _) = s.send_to_addr(i.to_le_bytes().to_vec(), &name).await;
                assert_eq!(res.unwrap(), 4, "{b}: datagram {i}");
            }
        });
        // Let the queue fill up before anything is read.
        uringio::sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "{b}: the queue never filled");
        for i in 0..n as u32 {
            let (res, buf) = r.recv(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, i.to_le_bytes(), "{b}: in order");
            if i % 7 == 0 {
                uringio::sleep(Duration::from_millis(1)).await;
            }
        }
        sender.await.unwrap();
    });
}

/// A pipe: (read end, write end).
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two fresh descriptors we own.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    // SAFETY: F_GETFD on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0);
    flags & libc::FD_CLOEXEC != 0
}

#[test]
fn pass_a_pipe_and_a_file() {
    let _serial = serial();
    let dir = TempDir::new("unix-fds");
    on_both(10, |b| {
        let fpath = dir.path(&format!("file-{b}"));
        async move {
            let before = open_fds();
            {
                let (x, y) = UnixStream::pair().unwrap();
                let (mut pr, pw) = pipe();
                std::fs::write(&fpath, b"file contents").unwrap();
                let file = std::fs::File::open(&fpath).unwrap();
                let (res, _) = x
                    .send_with_fds(b"fds!".to_vec(), &[pw.as_fd(), file.as_fd()])
                    .await;
                assert_eq!(res.unwrap(), 4);
                // Ours can close at once: the message holds its own.
                drop((pw, file));
                let (res, buf) = y.recv_with_fds(Vec::with_capacity(16), 4).await;
                let (n, fds) = res.unwrap();
                assert_eq!((n, &buf[..]), (4, &b"fds!"[..]));
                assert_eq!(fds.len(), 2);
                assert!(fds.iter().all(is_cloexec), "{b}: MSG_CMSG_CLOEXEC");
                let mut it = fds.into_iter();
                let mut w = std::fs::File::from(it.next().unwrap());
                let mut f = std::fs::File::from(it.next().unwrap());
                w.write_all(b"through the pipe").unwrap();
                drop(w);
                let mut got = String::new();
                pr.read_to_string(&mut got).unwrap();
                assert_eq!(got, "through the pipe");
                f.rewind().unwrap();
                got.clear();
                f.read_to_string(&mut got).unwrap();
                assert_eq!(got, "file contents");

                // A plain read after fds with no fds waiting: just data.
                let (res, _) = x.write_all(b"plain".to_vec()).await;
                res.unwrap();
                let (res, buf) = y.recv_with_fds(Vec::with_capacity(16), 4).await;
                let (n, fds) = res.unwrap();
                assert_eq!((n, &buf[..], fds.len()), (5, &b"plain"[..], 0));

                // Datagrams too, an empty one included.
                let (da, db) = UnixDatagram::pair().unwrap();
                let (res, _) = da.send_with_fds(Vec::new(), &[pr.as_fd()]).await;
                assert_eq!(res.unwrap(), 0);
                let (res, _) = db.recv_with_fds(Vec::with_capacity(4), 1).await;
                let (n, fds) = res.unwrap();
                assert_eq!((n, fds.len()), (0, 1));
            }
            std::fs::remove_file(&fpath).unwrap();
            assert_eq!(open_fds(), before, "{b}: descriptors leaked");
        }
    });
}

#[test]
fn truncated_descriptors_are_closed_and_reported() {
    let _serial = serial();
    on_both(10, |b| async move {
        let before = open_fds();
        {
            let (x, y) = UnixStream::pair().unwrap();
            let (pr, pw) = pipe();
            let (res, _) = x
                .send_with_fds(b"three".to_vec(), &[pr.as_fd(), pw.as_fd(), pr.as_fd()])
                .await;
            res.unwrap();
            let (res, buf) = y.recv_with_fds(Vec::with_capacity(16), 1).await;
            let err = res.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{b}: {err}");
            assert!(err.to_string().contains("MSG_CTRUNC"), "{err}");
            assert_eq!(&buf[..], b"three", "the bytes are in the buffer");
            // No descriptors at all wanted: same report, nothing kept.
            let (res, _) = x.send_with_fds(b"1".to_vec(), &[pr.as_fd()]).await;
            res.unwrap();
            let (res, buf) = y.recv_with_fds(Vec::with_capacity(16), 0).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidData);
            assert_eq!(&buf[..], b"1");
            // The stream goes on.
            let (res, _) = x.write_all(b"more".to_vec()).await;
            res.unwrap();
            assert_eq!(read_exact(&y, 4).await.unwrap(), b"more");
        }
        assert_eq!(open_fds(), before, "{b}: descriptors leaked");
    });
}

#[test]
fn bad_fd_passing_arguments() {
    let _serial = serial();
    on_both(10, |_| async {
        let (x, _y) = UnixStream::pair().unwrap();
        let (pr, _pw) = pipe();
        let (res, _) = x.send_with_fds(Vec::new(), &[pr.as_fd()]).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("at least one byte"), "{err}");
        let many = vec![pr.as_fd(); 254];
        let (res, _) = x.send_with_fds(b"x".to_vec(), &many).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("253"), "{err}");
    });
}

#[test]
fn error_paths() {
    let _serial = serial();
    let dir = TempDir::new("unix-err");
    on_both(10, |b| {
        let missing = dir.path("missing.sock");
        let regular = dir.path(&format!("regular-{b}"));
        let taken = dir.path(&format!("taken-{b}.sock"));
        let long = dir.path(&"x".repeat(120));
        async move {
            let e = UnixStream::connect(&missing).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{b}: {e:?}");
            std::fs::write(&regular, b"not a socket").unwrap();
            let e = UnixStream::connect(&regular).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{b}: {e:?}");
            let e = UnixStream::connect_addr(&abstract_name("nobody"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{b}: {e:?}");

            let l = UnixListener::bind(&taken).unwrap();
            let e = UnixListener::bind(&taken).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{b}: {e:?}");
            // A stale socket file (its listener gone) is still in the way.
            drop(l);
            let e = UnixListener::bind(&taken).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{b}: stale: {e:?}");
            let e = UnixDatagram::bind(&regular).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{b}: {e:?}");

            let e = UnixListener::bind(&long).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("too long"), "{e}");
            let e = UnixStream::connect(&long).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            let d = UnixDatagram::unbound().unwrap();
            assert_eq!(
                d.peer_addr().unwrap_err().kind(),
                io::ErrorKind::NotConnected
            );
            std::fs::remove_file(&regular).unwrap();
            std::fs::remove_file(&taken).unwrap();
        }
    });
}

/// A listener with a tiny accept queue: connects beyond it get `EAGAIN`
/// from the kernel and retry until the listener accepts.
#[test]
fn connect_waits_while_the_accept_queue_is_full() {
    let _serial = serial();
    on_both(20, |b| async move {
        let name = abstract_name("full");
        let std_l = std::os::unix::net::UnixListener::bind_addr(
            &std::os::unix::net::SocketAddr::try_from(&name).unwrap(),
        )
        .unwrap();
        // SAFETY: listen(2) on a descriptor we own.
        assert_eq!(unsafe { libc::listen(std_l.as_raw_fd(), 1) }, 0);
        let l = UnixListener::from_std(std_l).unwrap();
        let clients: Vec<_> = (0..6u8)
            .map(|i| {
                let name = name.clone();
                uringio::spawn(async move {
                    let c = UnixStream::connect_addr(&name).await.unwrap();
                    let (res, _) = c.write_all(vec![i]).await;
                    res.unwrap();
                    c
                })
            })
            .collect();
        uringio::sleep(Duration::from_millis(30)).await;
        let waiting = clients.iter().filter(|c| !c.is_finished()).count();
        assert!(waiting >= 3, "{b}: only {waiting} clients waited for room");
        let mut got = Vec::new();
        for _ in 0..6 {
            let (s, _) = l.accept().await.unwrap();
            got.push(read_exact(&s, 1).await.unwrap()[0]);
        }
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
        for c in clients {
            c.await.unwrap();
        }
    });
}

#[test]
fn python_asyncio_client_against_our_server() {
    let _serial = serial();
    let dir = TempDir::new("unix-py");
    on_both(30, |b| {
        let path = dir.path(&format!("py-{b}.sock"));
        async move {
            let l = UnixListener::bind(&path).unwrap();
            spawn_echo_server(l);
            let script = r#"
import asyncio, sys
async def main(path):
    total = 0
    for i in range(5):
        r, w = await asyncio.open_unix_connection(path)
        msg = bytes((i * 7 + k) % 251 for k in range(50_000 + i))
        w.write(msg)
        await w.drain()
        w.write_eof()
        got = await r.read()
        assert got == msg, (i, len(got))
        w.close()
        await w.wait_closed()
        total += len(got)
    print(total)
asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
"#;
            let p = path.clone();
            let out = uringio::get_running_loop()
                .run_in_executor(move || {
                    let child = Command::new("python3")
                        .arg("-c")
                        .arg(script)
                        .arg(&p)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("python3 must be installed");
                    child.wait_with_output().unwrap()
                })
                .await;
            assert!(
                out.status.success(),
                "{b}: python failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let total: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            assert_eq!(total, 5 * 50_000 + 10);
            std::fs::remove_file(&path).unwrap();
        }
    });
}

#[test]
fn dropped_and_cancelled_ops_lose_nothing_and_leak_nothing() {
    let _serial = serial();
    on_both(20, |b| async move {
        let before = open_fds();
        {
            let (x, y) = UnixStream::pair().unwrap();
            // Reads and fd receives dropped while waiting, many times.
            for _ in 0..50 {
                let r = uringio::timeout(Duration::from_micros(200), y.read(Vec::with_capacity(8)));
                assert!(r.await.is_err());
                let r = uringio::timeout(
                    Duration::from_micros(200),
                    y.recv_with_fds(Vec::with_capacity(8), 2),
                );
                assert!(r.await.is_err());
            }
            // Still works, fds included.
            let (pr, _pw) = pipe();
            let (res, _) = x.send_with_fds(b"ok".to_vec(), &[pr.as_fd()]).await;
            res.unwrap();
            let (res, _) = y.recv_with_fds(Vec::with_capacity(8), 2).await;
            assert_eq!(res.unwrap().1.len(), 1);

            // A canceller ends a waiting receive with ECANCELED and the buffer.
            let c = Canceller::new();
            let recv = y.recv_with_fds(Vec::with_capacity(8), 2).with_canceller(&c);
            let c2 = c.clone();
            let ((res, _), ()) = futures_util::join!(recv, async move {
                uringio::sleep(Duration::from_millis(5)).await;
                c2.cancel();
            });
            let e = res.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{b}: {e:?}");

            // A receive dropped just as its fds arrive: in flight in the
            // kernel, the message lands (sent by a plain sendmsg, outside
            // the loop), and the future goes before the loop sees the
            // completion. Whether the kernel completes the receive or the
            // cancel wins, nothing leaks.
            let mut delivered_to_dropped = 0;
            for _ in 0..20 {
                let mut f = Box::pin(y.recv_with_fds(Vec::with_capacity(8), 2));
                let w = futures_util::task::noop_waker();
                let _ = f.as_mut().poll(&mut std::task::Context::from_waker(&w));
                uringio::sleep(Duration::from_millis(1)).await; // submitted, waiting
                let iov = [std::io::IoSlice::new(b"z")];
                let fds = [pr.as_raw_fd()];
                let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
                nix::sys::socket::sendmsg::<nix::sys::socket::UnixAddr>(
                    x.as_raw_fd(),
                    &iov,
                    &cmsg,
                    nix::sys::socket::MsgFlags::empty(),
                    None,
                )
                .unwrap();
                drop(f);
                // Drain whatever the dropped op left behind.
                let r = uringio::timeout(
                    Duration::from_millis(5),
                    y.recv_with_fds(Vec::with_capacity(8), 2),
                )
                .await;
                match r {
                    Ok((res, _)) => assert_eq!(res.unwrap().1.len(), 1),
                    Err(_) => delivered_to_dropped += 1,
                }
            }
            eprintln!("{b}: {delivered_to_dropped}/20 messages went to a dropped receive");
            // Connects dropped while waiting for a full accept queue.
            let name = abstract_name("dropconn");
            let std_l = std::os::unix::net::UnixListener::bind_addr(
                &std::os::unix::net::SocketAddr::try_from(&name).unwrap(),
            )
            .unwrap();
            // SAFETY: listen(2) on a descriptor we own.
            assert_eq!(unsafe { libc::listen(std_l.as_raw_fd(), 0) }, 0);
            let mut held = Vec::new();
            for _ in 0..4 {
                let r = uringio::timeout(Duration::from_millis(5), UnixStream::connect_addr(&name))
                    .await;
                if let Ok(c) = r {
                    held.push(c.unwrap());
                }
            }
            drop((held, std_l));
        }
        // Let the driver reap the cancelled ops.
        uringio::sleep(Duration::from_millis(20)).await;
        assert_eq!(open_fds(), before, "{b}: descriptors leaked");
    });
}

#[test]
fn from_std_and_back() {
    let _serial = serial();
    on_both(10, |_| async {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = UnixStream::from_std(a).unwrap();
        let mut b = b;
        let (res, _) = a.write_all(b"std".to_vec()).await;
        res.unwrap();
        let mut got = [0u8; 3];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"std");
        let (x, y) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let x = UnixDatagram::from_std(x).unwrap();
        y.send(b"d").unwrap();
        let (res, buf) = x.recv(Vec::with_capacity(4)).await;
        assert_eq!((res.unwrap(), &buf[..]), (1, &b"d"[..]));
    });
}
