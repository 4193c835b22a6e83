//! The `echo_server` example as a user runs it: its own process, on each
//! backend, driven by CPython's asyncio streams, then stopped with SIGTERM.
//! It must echo every byte (half-close included), exit 0 on SIGTERM, and
//! leave its port free at once (no in-flight accept keeping the listener
//! alive after the process is gone).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps the child on drop, whatever happened.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo test` builds the examples next to the test binaries' directory.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("examples").join("echo_server");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/echo_server.rs");
    let built = std::fs::metadata(&p).and_then(|m| m.modified());
    let edited = std::fs::metadata(&src).and_then(|m| m.modified()).unwrap();
    match built {
        Ok(t) if t >= edited => p,
        _ => panic!(
            "{} is missing or older than its source: plain `cargo test` builds the \
             examples (a `--test` filter does not; run `cargo build --examples`)",
            p.display()
        ),
    }
}

const CLIENT: &str = r#"
import asyncio, os, sys
async def one(port, i):
    r, w = await asyncio.open_connection('127.0.0.1', port)
    data = os.urandom(256 * 1024 + i)
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
    await asyncio.wait_for(asyncio.gather(*(one(port, i) for i in range(20))), 20)
    print("ok")
asyncio.run(main(int(sys.argv[1])))
"#;

fn run(backend: &str) {
    let child = Command::new(example())
        .args(["127.0.0.1:0", "--backend", backend])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start echo_server");
    let mut g = Guard(child);
    let mut out = BufReader::new(g.0.stdout.take().unwrap());
    let mut port = None;
    let mut line = String::new();
    while port.is_none() {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "echo_server exited early"
        );
        if backend != "auto" && line.starts_with("backend:") {
            assert!(line.contains(backend), "{backend}: {line}");
        }
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            port = Some(a.rsplit(':').next().unwrap().parse::<u16>().unwrap());
        }
    }
    let port = port.unwrap();

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
    assert!(status.success(), "{backend}: exit status {status}");
    // The port is free the moment the process is gone.
    std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("{backend}: port {port} still busy after exit: {e}"));
}

#[test]
fn echo_server_example_on_io_uring() {
    run("io_uring");
}

#[test]
fn echo_server_example_on_epoll() {
    run("epoll");
}
