//! transport::subprocess_exec / subprocess_shell with a SubprocessProtocol,
//! on both backends: data through the pipes, the order of callbacks,
//! flow control against a flooding child, close() killing the child.

mod common;

use std::cell::RefCell;
use std::io;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, pattern, until};
use uringio::transport::{self, SubprocessProtocol, SubprocessTransport};

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Lost(i32, Option<io::ErrorKind>),
    Exited(Option<i32>),
    ConnLost,
}

#[derive(Default)]
struct Rec {
    t: Option<SubprocessTransport>,
    out: Vec<u8>,
    err: Vec<u8>,
    events: Vec<Ev>,
    /// Written to stdin in connection_made, then stdin is closed.
    input: Option<Vec<u8>>,
    /// Pause reading stdout in connection_made.
    pause: bool,
}

impl SubprocessProtocol for Rec {
    fn connection_made(&mut self, t: SubprocessTransport) {
        self.events.push(Ev::Made);
        if let Some(data) = self.input.take() {
            let stdin = t.get_pipe_transport(0).expect("stdin pipe");
            stdin.write_owned(data);
            stdin.close();
        }
        if self.pause {
            t.get_pipe_transport(1)
                .expect("stdout pipe")
                .pause_reading();
        }
        self.t = Some(t);
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        assert_eq!(self.events.first(), Some(&Ev::Made));
        match fd {
            1 => self.out.extend_from_slice(data),
            2 => self.err.extend_from_slice(data),
            _ => panic!("data on fd {fd}"),
        }
    }
    fn pipe_connection_lost(&mut self, fd: i32, exc: Option<io::Error>) {
        self.events.push(Ev::Lost(fd, exc.map(|e| e.kind())));
    }
    fn process_exited(&mut self) {
        let rc = self.t.as_ref().and_then(|t| t.get_returncode());
        self.events.push(Ev::Exited(rc));
    }
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        assert!(exc.is_none());
        self.events.push(Ev::ConnLost);
        // Let go of the transport (the test keeps its own handle).
        self.t = None;
    }
}

fn finished(p: &Rc<RefCell<Rec>>) -> bool {
    p.borrow().events.contains(&Ev::ConnLost)
}

/// The pipes' losses (in any order) then process_exited then
/// connection_lost, last.
fn assert_order(events: &[Ev], pipes: &[i32], rc: i32) {
    assert_eq!(events.first(), Some(&Ev::Made), "{events:?}");
    let n = events.len();
    assert_eq!(
        &events[n - 2..],
        &[Ev::Exited(Some(rc)), Ev::ConnLost],
        "{events:?}"
    );
    let mut lost: Vec<i32> = events[1..n - 2]
        .iter()
        .map(|e| match e {
            Ev::Lost(fd, _) => *fd,
            other => panic!("unexpected {other:?} in {events:?}"),
        })
        .collect();
    lost.sort();
    assert_eq!(lost, pipes, "{events:?}");
}

#[test]
fn echo_through_cat_in_order() {
    on_both(20, |_| async {
        let data = pattern(1 << 20, 11);
        let (t, p) = transport::subprocess_exec(
            || Rec {
                input: Some(data.clone()),
                ..Rec::default()
            },
            "cat",
            std::iter::empty::<&str>(),
            Stdio::piped(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .unwrap();
        assert!(t.get_pid() > 0);
        assert!(t.get_pipe_transport(0).is_some());
        assert!(t.get_pipe_transport(3).is_none());
        assert!(t.get_pipe_transport(-1).is_none());
        until(|| finished(&p)).await;
        let r = p.borrow();
        assert!(
            r.out == data,
            "cat echoed {} of {} bytes",
            r.out.len(),
            data.len()
        );
        assert!(r.err.is_empty());
        assert_order(&r.events, &[0, 1, 2], 0);
        assert!(r.events.contains(&Ev::Lost(0, None)), "{:?}", r.events);
        assert_eq!(t.get_returncode(), Some(0));
        // Finished: signalling is ProcessLookupError, as asyncio.
        assert_eq!(t.kill().unwrap_err().raw_os_error(), Some(libc::ESRCH));
    });
}

#[test]
fn shell_with_stdout_and_stderr() {
    on_both(20, |_| async {
        let (t, p) = transport::subprocess_shell(
            Rec::default,
            "echo out; echo err >&2; exit 3",
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .unwrap();
        assert!(t.get_pipe_transport(0).is_none());
        until(|| finished(&p)).await;
        let r = p.borrow();
        assert_eq!(r.out, b"out\n");
        assert_eq!(r.err, b"err\n");
        assert_order(&r.events, &[1, 2], 3);
        assert_eq!(t.get_returncode(), Some(3));
    });
}

#[test]
fn no_pipes_still_reports_the_exit() {
    on_both(20, |_| async {
        let (t, p) = transport::subprocess_exec(
            Rec::default,
            "/bin/false",
            std::iter::empty::<&str>(),
            Stdio::null(),
            Stdio::null(),
            Stdio::null(),
        )
        .await
        .unwrap();
        let mut i = 0u64;
        while !finished(&p) {
            i += 1;
            if i % 200000 == 0 {
                eprintln!(
                    "{:?} {:?} {:?}",
                    p.borrow().events,
                    t.get_returncode(),
                    uringio::driver::stats()
                );
            }
            uringio::yield_now().await;
        }
        until(|| finished(&p)).await;
        assert_order(&p.borrow().events, &[], 1);
        assert_eq!(t.get_returncode(), Some(1));
    });
}

#[test]
fn signals_through_the_transport() {
    on_both(20, |_| async {
        let (t, p) = transport::subprocess_exec(
            Rec::default,
            "sleep",
            ["30"],
            Stdio::null(),
            Stdio::piped(),
            Stdio::null(),
        )
        .await
        .unwrap();
        t.terminate().unwrap();
        until(|| finished(&p)).await;
        assert_order(&p.borrow().events, &[1], -libc::SIGTERM);
        assert_eq!(t.get_returncode(), Some(-15));
    });
}

#[test]
fn close_kills_a_running_child() {
    on_both(20, |_| async {
        let (t, p) = transport::subprocess_exec(
            Rec::default,
            "sleep",
            ["30"],
            Stdio::piped(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .unwrap();
        let pid = t.get_pid();
        assert!(!t.is_closing());
        t.close();
        assert!(t.is_closing());
        until(|| finished(&p)).await;
        assert_order(&p.borrow().events, &[0, 1, 2], -libc::SIGKILL);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
                // The pid may be reused by now; it is not our zombie anyway.
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                !s.contains(") Z ")
            }
        );
        t.close();
    });
}

#[test]
fn stdin_closed_early_gives_broken_pipe() {
    on_both(20, |_| async {
        let (_t, p) = transport::subprocess_exec(
            || Rec {
                input: Some(vec![7u8; 4 << 20]),
                ..Rec::default()
            },
            "/bin/true",
            std::iter::empty::<&str>(),
            Stdio::piped(),
            Stdio::null(),
            Stdio::null(),
        )
        .await
        .unwrap();
        until(|| finished(&p)).await;
        let r = p.borrow();
        assert_order(&r.events, &[0], 0);
        assert!(
            r.events
                .contains(&Ev::Lost(0, Some(io::ErrorKind::BrokenPipe))),
            "{:?}",
            r.events
        );
    });
}

#[test]
fn a_flooding_child_is_paused_not_buffered() {
    on_both(30, |_| async {
        const TOTAL: usize = 16 << 20;
        let (t, p) = transport::subprocess_exec(
            || Rec {
                pause: true,
                ..Rec::default()
            },
            "head",
            ["-c", &TOTAL.to_string(), "/dev/zero"],
            Stdio::null(),
            Stdio::piped(),
            Stdio::null(),
        )
        .await
        .unwrap();
        let stdout = t.get_pipe_transport(1).unwrap();
        assert!(!stdout.is_reading());
        // Paused: nothing is read, the pipe fills and the child blocks in
        // its write (it cannot finish 16 MiB into a 64 KiB pipe).
        uringio::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.borrow().out.len(), 0);
        assert_eq!(t.get_returncode(), None, "the child must be blocked");
        let st = std::fs::read_to_string(format!("/proc/{}/stat", t.get_pid())).unwrap();
        assert!(st.contains(") S "), "blocked in write: {st}");
        // Reading again, in steps: pause once 1 MiB more arrived.
        let mut seen = 0;
        while !finished(&p) {
            stdout.resume_reading();
            let goal = seen + (1 << 20);
            until(|| p.borrow().out.len() >= goal.min(TOTAL) || finished(&p)).await;
            stdout.pause_reading();
            seen = p.borrow().out.len();
            if seen >= TOTAL {
                stdout.resume_reading();
                until(|| finished(&p)).await;
            }
        }
        let r = p.borrow();
        assert_eq!(r.out.len(), TOTAL);
        assert!(r.out.iter().all(|b| *b == 0));
        assert_order(&r.events, &[1], 0);
    });
}

#[test]
fn exec_errors() {
    on_both(20, |_| async {
        let e = transport::subprocess_exec(
            Rec::default,
            "/nonexistent/uringio-nope",
            std::iter::empty::<&str>(),
            Stdio::piped(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .err()
        .expect("spawn fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    });
}
