//! The `loadgen` example drives any server and reports the same figures:
//! against the crate's `echo_server` (each backend) and against a CPython
//! asyncio echo server, it connects, counts messages, and reports the
//! server's CPU time for the PID it is given. Short runs: this checks the
//! tool, not the servers.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const PY_ECHO: &str = r#"
import asyncio
async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print("listening on 127.0.0.1:%d" % s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"#;

/// Starts a server that prints `listening on HOST:PORT`; returns it and
/// the port.
fn start(mut cmd: Command) -> (common::ChildGuard, u16) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let g = common::ChildGuard(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "server exited early");
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            let a = a.split_whitespace().next().unwrap();
            let port = a.rsplit(':').next().unwrap().parse().unwrap();
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in out.lines() {});
            return (g, port);
        }
    }
}

/// Runs loadgen against `port` with the server's PID; checks its line.
fn drive(port: u16, pid: u32, what: &str, extra: &[&str]) {
    let out = Command::new(common::example("loadgen"))
        .args(["echo", &format!("127.0.0.1:{port}")])
        .args(["--conns", "4", "--size", "512", "--secs", "0.5"])
        .args(["--server-pid", &pid.to_string()])
        .args(extra)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{what}: {line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        let mut it = line.split_whitespace();
        while let Some(w) = it.next() {
            if w == name {
                return it.next().unwrap().trim_end_matches("us").parse().unwrap();
            }
        }
        panic!("{what}: no {name} in {line:?}")
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let rate_at = words.iter().position(|w| *w == "msgs/s").expect("msgs/s");
    let rate: f64 = words[rate_at - 1].parse().unwrap();
    assert!(rate > 0.0, "{what}: {line}");
    assert_eq!(field("errors"), 0.0, "{what}: {line}");
    assert!(
        field("p50") > 0.0 && field("p99") >= field("p50"),
        "{what}: {line}"
    );
    // /proc counts CPU in clock ticks (10 ms): a light paced run may read
    // zero; a saturating one cannot.
    let cpu = field("server_cpu");
    if extra.is_empty() {
        assert!(cpu > 0.0, "{what}: no server CPU counted: {line}");
    }
}

#[test]
fn loadgen_drives_the_crate_echo_server_on_both_backends() {
    for b in common::backends() {
        let mut cmd = Command::new(common::example("echo_server"));
        cmd.args(["127.0.0.1:0", "--backend", &b.to_string()]);
        let (g, port) = start(cmd);
        drive(port, g.0.id(), &format!("echo_server/{b}"), &[]);
        // Paced.
        drive(
            port,
            g.0.id(),
            &format!("echo_server/{b} paced"),
            &["--rate", "400"],
        );
    }
}

#[test]
fn loadgen_drives_a_python_asyncio_echo_server() {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_ECHO]);
    let (g, port) = start(cmd);
    drive(port, g.0.id(), "python asyncio", &[]);
}
