//! Process pipes as streams, `communicate`, `create_subprocess_exec` /
//! `create_subprocess_shell`, on both backends (the behaviour CPython's
//! test_asyncio/test_subprocess.py checks, with real processes).

mod common;

use std::io;
use std::time::Duration;

use common::{on_both, pattern};
use uringio::process::{self, Command, Stdio};

#[test]
fn echo_through_cat_with_the_pipe_streams() {
    on_both(20, |_| async {
        let mut p = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = p.stdin.take().unwrap();
        let mut stdout = p.stdout.take().unwrap();
        assert!(p.stderr.is_none());
        for i in 0..20 {
            stdin.write(format!("line {i}\n").as_bytes());
            stdin.drain().await.unwrap();
            assert_eq!(
                stdout.readline().await.unwrap(),
                format!("line {i}\n").as_bytes()
            );
        }
        // Closing stdin ends cat.
        drop(stdin);
        assert_eq!(stdout.read_to_end().await.unwrap(), b"");
        let st = p.wait().await.unwrap();
        assert!(st.success());
        assert_eq!(p.returncode(), Some(0));
    });
}

#[test]
fn communicate_ten_mib_each_way_without_deadlock() {
    on_both(60, |_| async {
        // The child echoes stdin to stdout and to stderr: 10 MiB on each
        // pipe, far more than a pipe holds, so all three must move at once.
        let mut p = process::create_subprocess_shell(
            "tee /dev/stderr",
            Stdio::piped(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .unwrap();
        let input = pattern(10 << 20, 9);
        let out = p.communicate(Some(input.clone())).await.unwrap();
        assert!(out.status.success());
        assert!(
            out.stdout == input,
            "stdout differs ({} bytes)",
            out.stdout.len()
        );
        assert!(
            out.stderr == input,
            "stderr differs ({} bytes)",
            out.stderr.len()
        );
        assert_eq!(p.returncode(), Some(0));
        // communicate took the pipes.
        assert!(p.stdin.is_none() && p.stdout.is_none() && p.stderr.is_none());
    });
}

#[test]
fn a_child_closing_stdin_early_is_handled() {
    on_both(20, |_| async {
        // communicate: the child never reads; BrokenPipe is swallowed.
        let mut p = process::create_subprocess_shell(
            "exec 0<&-; echo done",
            Stdio::piped(),
            Stdio::piped(),
            Stdio::null(),
        )
        .await
        .unwrap();
        let out = p.communicate(Some(vec![7u8; 4 << 20])).await.unwrap();
        assert_eq!(out.stdout, b"done\n");
        assert!(out.status.success());

        // Writing directly: drain reports BrokenPipe.
        let mut p = process::create_subprocess_exec(
            "true",
            [] as [&str; 0],
            Stdio::piped(),
            Stdio::null(),
            Stdio::null(),
        )
        .await
        .unwrap();
        p.wait().await.unwrap();
        let w = p.stdin.take().unwrap();
        let mut err = None;
        for _ in 0..100 {
            w.write(&[1u8; 65536]);
            if let Err(e) = w.drain().await {
                err = Some(e);
                break;
            }
            uringio::sleep(Duration::from_millis(1)).await;
        }
        let e = err.expect("writing to a dead child's stdin never failed");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
    });
}

#[test]
fn shell_and_exec_return_codes_and_output() {
    on_both(20, |_| async {
        let mut p = process::create_subprocess_shell(
            "echo $((6*7)); exit 3",
            Stdio::null(),
            Stdio::piped(),
            Stdio::null(),
        )
        .await
        .unwrap();
        let out = p.communicate(None).await.unwrap();
        assert_eq!(out.stdout, b"42\n");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(p.returncode(), Some(3));

        let mut p = process::create_subprocess_exec(
            "printf",
            ["a\\nbb\\nccc"],
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .unwrap();
        let mut lines = Vec::new();
        let out = p.stdout.as_mut().unwrap();
        loop {
            let l = out.readline().await.unwrap();
            if l.is_empty() {
                break;
            }
            lines.push(l);
        }
        assert_eq!(
            lines,
            vec![b"a\n".to_vec(), b"bb\n".to_vec(), b"ccc".to_vec()]
        );
        assert_eq!(p.stderr.as_mut().unwrap().read_to_end().await.unwrap(), b"");
        assert!(p.wait().await.unwrap().success());

        // Killed: a negative returncode.
        let mut p = process::create_subprocess_exec(
            "sleep",
            ["30"],
            Stdio::null(),
            Stdio::piped(),
            Stdio::null(),
        )
        .await
        .unwrap();
        p.kill().unwrap();
        let out = p.communicate(None).await.unwrap();
        assert!(out.stdout.is_empty());
        assert_eq!(p.returncode(), Some(-libc::SIGKILL));
    });
}

#[test]
fn a_flooding_child_is_paused_not_buffered_without_bound() {
    on_both(30, |_| async {
        let mut p = Command::new("head")
            .args(["-c", "67108864", "/dev/zero"])
            .stdout(Stdio::piped())
            .limit(16 * 1024)
            .spawn()
            .unwrap();
        let mut out = p.stdout.take().unwrap();
        for _ in 0..20 {
            uringio::sleep(Duration::from_millis(5)).await;
        }
        // The child is blocked on a full pipe; we hold at most about twice
        // the limit (plus one receive).
        assert!(
            out.buffered() <= 2 * 16 * 1024 + 256 * 1024,
            "holds {}",
            out.buffered()
        );
        assert!(
            p.try_wait().unwrap().is_none(),
            "the child should be blocked, not done"
        );
        let mut total = 0usize;
        loop {
            let c = out.read(1 << 20).await.unwrap();
            if c.is_empty() {
                break;
            }
            assert!(c.iter().all(|&b| b == 0));
            total += c.len();
        }
        assert_eq!(total, 64 << 20);
        assert!(p.wait().await.unwrap().success());
    });
}

#[test]
fn many_children_with_pipes_at_once() {
    on_both(60, |_| async {
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            tasks.push(uringio::spawn(async move {
                let mut p = process::create_subprocess_exec(
                    "cat",
                    [] as [&str; 0],
                    Stdio::piped(),
                    Stdio::piped(),
                    Stdio::null(),
                )
                .await
                .unwrap();
                let input = format!("child {i}\n").repeat(1000).into_bytes();
                let out = p.communicate(Some(input.clone())).await.unwrap();
                assert_eq!(out.stdout, input);
                assert!(out.status.success());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn bad_input_is_a_clear_error() {
    on_both(20, |_| async {
        // Input for a child whose stdin is not piped.
        let mut p = process::create_subprocess_exec(
            "true",
            [] as [&str; 0],
            Stdio::null(),
            Stdio::null(),
            Stdio::null(),
        )
        .await
        .unwrap();
        let e = p.communicate(Some(b"x".to_vec())).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        p.wait().await.unwrap();
        // A missing program.
        let e = process::create_subprocess_exec(
            "/nonexistent/uringio-program",
            [] as [&str; 0],
            Stdio::piped(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    });
    // Piped stdio outside a loop: an error, and the child is not left
    // running (it is killed and reaped).
    let e = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_err();
    assert!(e.to_string().contains("running loop"), "{e}");
}
