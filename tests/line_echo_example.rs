//! The `line_echo` example (streams) as a user runs it: its own process
//! on each backend, CPython's asyncio as the client, stopped by SIGTERM.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = r#"
import asyncio, sys
async def one(port, i):
    r, w = await asyncio.open_connection('127.0.0.1', port)
    for k in range(50):
        w.write(b"hello %d from %d\n" % (k, i))
        await w.drain()
        assert await r.readline() == b"HELLO %d FROM %d\n" % (k, i)
    # A line over the server's 64 KiB limit is refused, the connection goes on.
    w.write(b"x" * (200 * 1024) + b"\nafter\n")
    await w.drain()
    assert await r.readline() == b"line too long\n"
    rest = b""
    while not rest.endswith(b"AFTER\n"):
        rest += await r.readline()
    w.write_eof()
    assert await r.read() == b""
    w.close()
    await w.wait_closed()
async def main(port):
    await asyncio.wait_for(asyncio.gather(*(one(port, i) for i in range(10))), 20)
    print("ok")
asyncio.run(main(int(sys.argv[1])))
"#;

fn run(backend: &str) {
    let child = Command::new(common::example("line_echo"))
        .args(["127.0.0.1:0", backend])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start line_echo");
    let mut g = common::ChildGuard(child);
    let mut out = BufReader::new(g.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().trim_end_matches(']').parse().ok())
        .unwrap_or_else(|| panic!("{backend}: unexpected first line {line:?}"));
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
    let pid = nix::unistd::Pid::from_raw(g.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = g.0.try_wait().unwrap() {
            assert!(s.success(), "{backend}: exit status {s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn line_echo_serves_cpython_clients_on_both_backends() {
    for b in common::backends() {
        run(&b.to_string());
    }
}
