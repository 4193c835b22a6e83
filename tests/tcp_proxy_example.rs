//! The `tcp_proxy` example as a user runs it: its own process (2 cores,
//! `--stats`), on each backend, in front of a CPython asyncio echo server,
//! driven by CPython asyncio clients (half-close included), then stopped
//! with SIGTERM (exit 0, port free). An upstream that refuses closes the
//! client's connection.
mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ECHO: &str = r#"
import asyncio, sys
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
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"#;

const CLIENT: &str = r#"
import asyncio, os, sys
async def one(port, i):
    r, w = await asyncio.open_connection('127.0.0.1', port)
    data = os.urandom(128 * 1024 + i)
    async def send():
        for k in range(0, len(data), 65536):
            w.write(data[k:k + 65536])
            await w.drain()
        w.write_eof()
    t = asyncio.create_task(send())
    got = await r.read(-1)
    await t
    w.close()
    await w.wait_closed()
    assert got == data, (i, len(got), len(data))
async def main(port):
    await asyncio.wait_for(asyncio.gather(*(one(port, i) for i in range(40))), 30)
    print("ok")
asyncio.run(main(int(sys.argv[1])))
"#;

/// Starts a process and reads lines from its stdout until `pick` finds
/// what it wants in one.
fn start<T>(
    mut cmd: Command,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> (common::ChildGuard, T, BufReader<std::process::ChildStdout>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let g = common::ChildGuard(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "{what} exited early");
        if let Some(v) = pick(line.trim()) {
            return (g, v, out);
        }
    }
}

fn proxy(
    backend: &str,
    upstream: u16,
) -> (
    common::ChildGuard,
    u16,
    BufReader<std::process::ChildStdout>,
) {
    let mut cmd = Command::new(common::example("tcp_proxy"));
    cmd.args([
        "127.0.0.1:0",
        &format!("127.0.0.1:{upstream}"),
        "--cores",
        "2",
        "--backend",
        backend,
        "--stats",
    ]);
    start(cmd, "tcp_proxy", |l| {
        let a = l.strip_prefix("listening on ")?;
        assert!(a.contains(backend), "{backend}: {l}");
        let a = a.split_whitespace().next()?;
        a.rsplit(':').next()?.parse().ok()
    })
}

fn stop(mut g: common::ChildGuard, backend: &str) -> String {
    let pid = nix::unistd::Pid::from_raw(g.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = g.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: no exit 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    g.0.stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "{backend}: exit status {status}; stderr: {err}"
    );
    err
}

#[test]
fn tcp_proxy_relays_python_clients_to_a_python_echo_on_both_backends() {
    let mut py = Command::new("python3");
    py.args(["-c", ECHO]);
    let (_echo, up_port, _o) = start(py, "python echo server", |l| l.parse::<u16>().ok());
    for b in common::backends() {
        let backend = b.to_string();
        let (g, port, mut out) = proxy(&backend, up_port);
        let client = Command::new("python3")
            .args(["-c", CLIENT, &port.to_string()])
            .output()
            .expect("python3 must be installed");
        assert!(
            client.status.success(),
            "{backend}: python client failed: {}",
            String::from_utf8_lossy(&client.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&client.stdout).trim(), "ok");
        // A stats line per second, counting what went through.
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0);
            if line.contains("accepted 40 ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend}: no stats line: {line}"
            );
        }
        assert!(line.starts_with("stats: open "), "{line}");
        stop(g, &backend);
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{backend}: port {port} still busy after exit: {e}"));
    }
}

#[test]
fn tcp_proxy_closes_clients_when_the_upstream_refuses() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for b in common::backends() {
        let backend = b.to_string();
        let (g, port, _out) = proxy(&backend, dead);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{backend}: the client connection is closed");
        stop(g, &backend);
    }
}
