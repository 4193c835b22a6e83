//! The `http_hello` example as its own process (2 cores), on each
//! backend: pipelined requests (several in one write, one split across
//! writes) get their responses in order on one keep-alive connection,
//! `Connection: close` closes, `loadgen http` drives it, SIGTERM stops it.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

fn read_exactly(s: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

#[test]
fn http_hello_answers_pipelined_requests_in_order_on_both_backends() {
    for (b, api) in common::backends()
        .into_iter()
        .flat_map(|b| [(b, "ops"), (b, "multishot")])
    {
        let backend = b.to_string();
        let mut child = Command::new(common::example("http_hello"))
            .args([
                "127.0.0.1:0",
                "--cores",
                "2",
                "--backend",
                &backend,
                "--api",
                api,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut g = common::ChildGuard(child);
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.split_whitespace().next())
            .unwrap_or_else(|| panic!("{backend}: {line}"))
            .to_string();

        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Three in one write (one with a body), then one split in two.
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(read_exactly(&mut s, 3 * RESPONSE.len()), RESPONSE.repeat(3));
        s.write_all(b"GET /4 HTTP/1.1\r\nHo").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b"st: b\r\n\r\n").unwrap();
        assert_eq!(read_exactly(&mut s, RESPONSE.len()), RESPONSE);
        // Connection: close answers, then closes.
        s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, RESPONSE);

        // loadgen speaks HTTP to it.
        let lg = Command::new(common::example("loadgen"))
            .args(["http", &addr, "--conns", "4", "--secs", "0.3"])
            .output()
            .unwrap();
        let l = String::from_utf8_lossy(&lg.stdout);
        assert!(
            lg.status.success() && l.contains("req/s") && l.contains("errors 0"),
            "{backend}: {l}"
        );

        let pid = nix::unistd::Pid::from_raw(g.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(st) = g.0.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{backend}: no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "{backend}: {status}");
    }
}
