//! process::Command / Process on both backends: exit codes, signals,
//! waiting (WAITID and the pidfd-poll fallback), no zombies, no reaping of
//! children that are not ours, exec errors.
//!
//! Tests run in parallel threads of one process, so each looks only at
//! its own children: `/proc/thread-self/children` lists the children of
//! the calling thread (the loop runs on it), and nothing here installs a
//! signal handler or waits for "any child".

mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{TempDir, backends, on_both};
use uringio::Backend;
use uringio::process::Command;

/// The state letter of `pid` if it is still a child of this process
/// (`Z` for a zombie), `None` once it is gone (reaped).
fn child_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid: u32 = it.next()?.parse().ok()?;
    (ppid == std::process::id()).then_some(state)
}

/// The children of the calling thread.
fn my_children() -> Vec<u32> {
    std::fs::read_to_string("/proc/thread-self/children")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Waits (on the loop) until `pid` is no child of ours any more.
async fn until_reaped(pid: u32) {
    while child_state(pid).is_some() {
        uringio::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (on the loop) until `pid` has exited and is a zombie.
async fn until_zombie(pid: u32) {
    while child_state(pid) != Some('Z') {
        uringio::sleep(Duration::from_millis(2)).await;
    }
}

/// Blocks (off any loop) until `pid` is reaped, or panics after `secs`.
fn block_until_reaped(pid: u32, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while child_state(pid).is_some() {
        assert!(Instant::now() < end, "child {pid} was not reaped");
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn exit_codes() {
    let mut t = Command::new("/bin/true").spawn().unwrap();
    let mut f = Command::new("/bin/false").spawn().unwrap();
    let mut s = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
    assert_eq!(t.returncode(), None);
    assert!(t.wait().await.unwrap().success());
    assert_eq!(f.wait().await.unwrap().code(), Some(1));
    assert_eq!(s.wait().await.unwrap().code(), Some(7));
    assert_eq!(
        (t.returncode(), f.returncode(), s.returncode()),
        (Some(0), Some(1), Some(7))
    );
    // Repeatable: the cached status.
    assert_eq!(s.wait().await.unwrap().code(), Some(7));
    assert_eq!(s.try_wait().unwrap().and_then(|s| s.code()), Some(7));
    for p in [&t, &f, &s] {
        assert_eq!(child_state(p.pid()), None, "reaped");
    }
}

async fn signals() {
    let mut k = Command::new("sleep").arg("30").spawn().unwrap();
    let mut t = Command::new("sleep").arg("30").spawn().unwrap();
    let mut u = Command::new("sleep").arg("30").spawn().unwrap();
    k.kill().unwrap();
    t.terminate().unwrap();
    u.send_signal(libc::SIGUSR1).unwrap();
    assert_eq!(k.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    t.wait().await.unwrap();
    u.wait().await.unwrap();
    assert_eq!(k.returncode(), Some(-9));
    assert_eq!(t.returncode(), Some(-15));
    assert_eq!(u.returncode(), Some(-libc::SIGUSR1));
    // Signalling a finished child does nothing, as asyncio.
    k.kill().unwrap();
    t.send_signal(libc::SIGTERM).unwrap();
}

#[test]
fn exit_codes_on_both() {
    on_both(10, |_| exit_codes());
}

#[test]
fn kill_terminate_send_signal_give_negative_returncodes() {
    on_both(10, |_| signals());
}

#[test]
fn bad_signal_number_is_an_error_and_the_child_is_left_running() {
    on_both(10, |_| async {
        let mut p = Command::new("sleep").arg("30").spawn().unwrap();
        let e = p.send_signal(1000).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert_eq!(p.try_wait().unwrap(), None);
        p.kill().unwrap();
        assert_eq!(p.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    });
}

#[test]
fn wait_on_a_child_that_exited_before_anyone_waited() {
    on_both(10, |_| async {
        let mut p = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        until_zombie(p.pid()).await;
        assert_eq!(p.returncode(), None, "not seen yet");
        assert_eq!(p.wait().await.unwrap().code(), Some(3));
        assert_eq!(child_state(p.pid()), None);
        // try_wait on an exited child reaps it too.
        let mut q = Command::new("/bin/true").spawn().unwrap();
        until_zombie(q.pid()).await;
        assert!(q.try_wait().unwrap().unwrap().success());
        assert_eq!(q.returncode(), Some(0));
        assert_eq!(child_state(q.pid()), None);
    });
}

#[test]
fn try_wait_on_a_running_child_is_none() {
    on_both(10, |_| async {
        let mut p = Command::new("sleep").arg("30").spawn().unwrap();
        assert_eq!(p.try_wait().unwrap(), None);
        assert_eq!(p.returncode(), None);
        p.kill().unwrap();
        p.wait().await.unwrap();
        assert_eq!(p.returncode(), Some(-9));
    });
}

#[test]
fn wait_is_cancel_safe() {
    on_both(10, |_| async {
        let mut p = Command::new("sleep").arg("0.2").spawn().unwrap();
        // A wait dropped in flight (timed out), several times over...
        for _ in 0..3 {
            let r = uringio::timeout(Duration::from_millis(5), p.wait()).await;
            assert!(r.is_err(), "sleep 0.2 exited within 5 ms?");
        }
        // ...loses nothing.
        assert!(p.wait().await.unwrap().success());
        // And one dropped after the child exited, before it was polled.
        let mut q = Command::new("/bin/true").spawn().unwrap();
        let _ = uringio::timeout(Duration::from_millis(0), q.wait()).await;
        // (That first poll may have reaped it already.)
        while matches!(child_state(q.pid()), Some(s) if s != 'Z') {
            uringio::sleep(Duration::from_millis(2)).await;
        }
        assert!(q.wait().await.unwrap().success());
    });
}

#[test]
fn two_hundred_children_at_once() {
    on_both(30, |_| async {
        let mut procs: Vec<_> = (0..200)
            .map(|i| {
                Command::new("sh")
                    .args(["-c", &format!("exit {}", i % 50)])
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<u32> = procs.iter().map(|p| p.pid()).collect();
        let tasks: Vec<_> = procs
            .drain(..)
            .map(|mut p| uringio::spawn(async move { p.wait().await.unwrap().code() }))
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(i as i32 % 50));
        }
        for pid in pids {
            assert_eq!(child_state(pid), None, "child {pid} left behind");
        }
        assert!(my_children().is_empty(), "{:?}", my_children());
    });
}

#[test]
fn kill_on_drop_kills_and_reaps() {
    on_both(10, |_| async {
        let p = Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = p.pid();
        drop(p);
        until_reaped(pid).await;
    });
}

#[test]
fn a_dropped_process_is_reaped_in_the_background() {
    on_both(10, |_| async {
        // Exits on its own after the drop.
        let p = Command::new("sleep").arg("0.05").spawn().unwrap();
        let pid = p.pid();
        drop(p);
        assert!(child_state(pid).is_some());
        until_reaped(pid).await;
        // Dropped without kill_on_drop: it keeps running until killed,
        // then it is reaped too.
        let p = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = p.pid();
        drop(p);
        uringio::sleep(Duration::from_millis(20)).await;
        let st = child_state(pid);
        assert!(matches!(st, Some(s) if s != 'Z'), "still running: {st:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        until_reaped(pid).await;
        // A dropped wait in flight does not get in the way.
        let mut p = Command::new("sleep").arg("0.05").spawn().unwrap();
        let _ = uringio::timeout(Duration::from_millis(1), p.wait()).await;
        let pid = p.pid();
        drop(p);
        until_reaped(pid).await;
        assert!(my_children().is_empty(), "{:?}", my_children());
    });
}

#[test]
fn children_outlive_their_loop_and_are_still_reaped() {
    for b in backends() {
        // Dropped after the loop is gone...
        let mut r = common::runner(b);
        let p = r.run(async { Command::new("sleep").arg("0.05").spawn().unwrap() });
        drop(r);
        let pid = p.pid();
        drop(p);
        block_until_reaped(pid, 5);
        // ...dropped inside the loop, still running when it shuts down...
        let mut r = common::runner(b);
        let pid = r.run(async {
            let p = Command::new("sleep").arg("0.1").spawn().unwrap();
            let pid = p.pid();
            drop(p);
            pid
        });
        drop(r);
        block_until_reaped(pid, 5);
        // ...and spawned outside any loop, never waited.
        let p = Command::new("/bin/true").spawn().unwrap();
        let pid = p.pid();
        drop(p);
        block_until_reaped(pid, 5);
        assert!(my_children().is_empty(), "{b}: {:?}", my_children());
    }
}

#[test]
fn a_child_spawned_with_std_is_not_reaped_by_the_runtime() {
    for b in backends() {
        let mut std_child = std::process::Command::new("sh")
            .args(["-c", "exit 5"])
            .spawn()
            .unwrap();
        let pid = std_child.id();
        let mut r = common::runner(b);
        r.run(async {
            uringio::timeout(Duration::from_secs(10), async {
                // Process work of our own while the std child exits:
                // waits, a dropped child, a kill.
                let mut p = Command::new("/bin/true").spawn().unwrap();
                p.wait().await.unwrap();
                drop(Command::new("/bin/false").spawn().unwrap());
                until_zombie(pid).await;
                let mut k = Command::new("sleep").arg("30").spawn().unwrap();
                k.kill().unwrap();
                k.wait().await.unwrap();
                uringio::sleep(Duration::from_millis(20)).await;
            })
            .await
            .expect("timed out");
        });
        drop(r);
        assert_eq!(child_state(pid), Some('Z'), "{b}: still std's to reap");
        assert_eq!(std_child.wait().unwrap().code(), Some(5), "{b}");
    }
}

/// Each spawn error leaves this thread with the children it had.
fn assert_spawn_error(cmd: &mut Command, kind: io::ErrorKind) {
    let before = my_children();
    let e = cmd.spawn().unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(my_children(), before, "a dead child was left behind");
}

#[test]
fn exec_errors_leave_no_child_behind() {
    on_both(10, |_| async {
        assert_spawn_error(
            &mut Command::new("/nonexistent/uringio-no-such-program"),
            io::ErrorKind::NotFound,
        );
        assert_spawn_error(
            &mut Command::new("uringio-no-such-program-in-path"),
            io::ErrorKind::NotFound,
        );
        let dir = TempDir::new("proc-noexec");
        let f = dir.path("not-executable");
        std::fs::write(&f, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_spawn_error(&mut Command::new(&f), io::ErrorKind::PermissionDenied);
        assert_spawn_error(
            Command::new("/bin/true").current_dir("/nonexistent/uringio-no-such-dir"),
            io::ErrorKind::NotFound,
        );
        assert!(my_children().is_empty(), "{:?}", my_children());
    });
}

#[test]
fn command_builder_options_reach_the_child() {
    on_both(10, |_| async {
        let dir = TempDir::new("proc-env");
        let mut p = Command::new("sh")
            .args(["-c", "test \"$A\" = 1 && test -z \"$B\" && test \"$(pwd)\" = \"$D\" && test \"$(ps -o pgid= -p $$ | tr -d ' ')\" = \"$$\""])
            .env("A", "1")
            .env("B", "2")
            .env_remove("B")
            .env("D", &dir.0)
            .current_dir(&dir.0)
            .process_group(0)
            .spawn()
            .unwrap();
        let st = p.wait().await.unwrap();
        assert!(st.success(), "{st:?}");
        let mut q = Command::new("/bin/sh")
            .args(["-c", "test -z \"$HOME\" && test \"$X\" = 1"])
            .env_clear()
            .envs([("X", "1")])
            .spawn()
            .unwrap();
        assert!(q.wait().await.unwrap().success());
    });
}

/// The io_uring loop with `IORING_OP_WAITID` (where the kernel has it)
/// and with it simulated missing (the pidfd poll fallback) both run the
/// same work; epoll is covered by the tests above.
#[test]
fn waitid_and_the_poll_fallback() {
    if !backends().contains(&Backend::IoUring) || std::env::var_os("URINGIO_BACKEND").is_some() {
        common::report_skip("io_uring test");
        return;
    }
    let mut r = common::runner(Backend::IoUring);
    let kernel_has_it = r.features().waitid;
    let rel = r.features().kernel.clone();
    let mut v = rel.split(|c: char| !c.is_ascii_digit());
    let major: u32 = v.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = v.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if (major, minor) >= (6, 7) {
        assert!(kernel_has_it, "kernel {rel} should have IORING_OP_WAITID");
    }
    let mut fb = uringio::Runner::builder()
        .backend(Backend::IoUring)
        .simulate_setup_error("missing-opcode:IORING_OP_WAITID")
        .build()
        .unwrap();
    assert_eq!(fb.backend(), Backend::IoUring, "WAITID is optional");
    assert!(!fb.features().waitid);
    for (name, r) in [("waitid", &mut r), ("poll fallback", &mut fb)] {
        r.run(async {
            uringio::timeout(Duration::from_secs(10), async {
                let before = uringio::driver::stats();
                exit_codes().await;
                signals().await;
                let after = uringio::driver::stats();
                assert!(after.sqes_submitted > before.sqes_submitted, "{name}");
            })
            .await
            .unwrap_or_else(|_| panic!("{name}: timed out"));
        });
    }
    if !kernel_has_it {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr().lock(),
            b"NOTE process::waitid_and_the_poll_fallback: kernel without IORING_OP_WAITID; both runs used the poll\n",
        );
    }
}
