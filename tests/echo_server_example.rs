//! The `echo_server` example as a user runs it: its own process, on each
//! backend, driven by CPython's asyncio streams, then stopped with SIGTERM.
//! It must echo every byte (half-close included), exit 0 on SIGTERM, and
//! leave its port free at once (no in-flight accept keeping the listener
//! alive after the process is gone).
mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps the child on drop, whatever happened. Holds the
/// child's stdout open so its last words never hit a closed pipe.
struct Guard(Child, Option<BufReader<std::process::ChildStdout>>);

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

/// Starts the example on a free port; returns it with the port.
fn start(backend: &str, fd_limit: Option<u32>) -> (Guard, u16) {
    start_with(backend, fd_limit, &[])
}

/// [`start`] with extra arguments (`--api protocol`).
fn start_with(backend: &str, fd_limit: Option<u32>, extra: &[&str]) -> (Guard, u16) {
    let mut cmd = match fd_limit {
        // `exec` keeps the pid: the signal goes to the server itself.
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(example());
            c
        }
        None => Command::new(example()),
    };
    let child = cmd
        .args(["127.0.0.1:0", "--backend", backend])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo_server");
    let mut g = Guard(child, None);
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
        if backend == "auto"
            && line.starts_with("backend:")
            && std::env::var_os("URINGIO_BACKEND").is_none()
        {
            match common::io_uring_unavailable() {
                None => assert_eq!(line.trim(), "backend: io_uring", "{backend}"),
                Some(why) => assert_eq!(
                    line.trim(),
                    format!("backend: epoll (fell back: {why})"),
                    "{backend}"
                ),
            }
        }
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            let a = a.trim_end_matches(" (protocol)");
            port = Some(a.rsplit(':').next().unwrap().parse::<u16>().unwrap());
        }
    }
    g.1 = Some(out);
    (g, port.unwrap())
}

/// SIGTERM, then the exit status (bounded) and what it wrote to stderr.
fn stop(mut g: Guard, backend: &str) -> String {
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
    std::io::Read::read_to_string(g.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        status.success(),
        "{backend}: exit status {status}; stderr: {err}"
    );
    err
}

fn run(backend: &str) {
    run_with(backend, &[]);
}

fn run_with(backend: &str, extra: &[&str]) {
    let (g, port) = start_with(backend, None, extra);
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
    stop(g, backend);
    // The port is free the moment the process is gone.
    std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("{backend}: port {port} still busy after exit: {e}"));
}

/// Out of descriptors, the server must neither spin nor flood its log:
/// it backs off, and accepts again once connections close.
fn run_out_of_fds(backend: &str) {
    use std::io::{Read, Write};
    let (g, port) = start(backend, Some(48));
    // More connections than the server has descriptors for; the kernel
    // completes them all (backlog), the server cannot accept them all.
    let conns: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(conns);
    // Once they are gone the server serves again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.write_all(b"again").unwrap();
        let mut buf = [0u8; 5];
        if s.read_exact(&mut buf).is_ok() {
            assert_eq!(&buf, b"again");
            break;
        }
        assert!(Instant::now() < deadline, "{backend}: never accepted again");
    }
    let err = stop(g, backend);
    assert!(
        err.contains("Too many open files"),
        "{backend}: no EMFILE reported: {err}"
    );
    // A spinning accept loop logs millions of lines in that time.
    assert!(
        err.lines().count() < 20,
        "{backend}: log flooded: {} lines",
        err.lines().count()
    );
}

#[test]
fn echo_server_example_backs_off_when_out_of_fds_io_uring() {
    if !common::io_uring_or_skip("io_uring test") {
        return;
    }
    run_out_of_fds("io_uring");
}

#[test]
fn echo_server_example_backs_off_when_out_of_fds_epoll() {
    run_out_of_fds("epoll");
}

#[test]
fn echo_server_example_on_io_uring() {
    if !common::io_uring_or_skip("io_uring test") {
        refused("io_uring");
        return;
    }
    run("io_uring");
}

/// Where io_uring is refused, `--backend io_uring` is a clear error at
/// start-up, never a silent fallback.
fn refused(backend: &str) {
    let out = Command::new(example())
        .args(["127.0.0.1:0", "--backend", backend])
        .output()
        .expect("start echo_server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{backend}: started anyway: {err}");
    assert!(err.contains("io_uring"), "{backend}: {err}");
    assert!(
        err.contains(common::io_uring_unavailable().unwrap()),
        "{backend}: the reason is missing: {err}"
    );
}

/// `--backend auto` (the default) serves on whatever the kernel allows;
/// where io_uring is refused it says so and serves on epoll.
#[test]
fn echo_server_example_on_auto() {
    run("auto");
}

#[test]
fn echo_server_example_on_epoll() {
    run("epoll");
}

/// `--api protocol`: the same clients, served by the transport layer.
#[test]
fn echo_server_example_protocol_api() {
    for b in common::backends() {
        run_with(&b.to_string(), &["--api", "protocol"]);
    }
}
