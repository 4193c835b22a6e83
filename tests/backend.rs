//! Backend selection and the driver's introspection: the io_uring probe's
//! fallback (simulated set-up errors, no process-wide environment changes),
//! `driver::stats()` and `driver::features()`.
mod common;

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use common::{backends, on_both, runner};
use futures_util::future::join_all;
use uringio::net::{TcpListener, TcpStream};
use uringio::{Backend, Runner};

fn simulated(backend: Backend, err: &str) -> io::Result<Runner> {
    Runner::builder()
        .backend(backend)
        .simulate_setup_error(err)
        .build()
}

/// A small TCP round trip, to show a loop really works.
async fn round_trip() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = uringio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (res, buf) = s.read(Vec::with_capacity(16)).await;
        res.unwrap();
        let (res, _) = s.write_all(buf).await;
        res.unwrap();
    });
    let c = TcpStream::connect(addr).await.unwrap();
    let (res, _) = c.write_all(b"ping".to_vec()).await;
    res.unwrap();
    let (res, buf) = c.read(Vec::with_capacity(16)).await;
    assert_eq!(res.unwrap(), 4);
    assert_eq!(buf, b"ping");
    t.await.unwrap();
}

#[test]
fn auto_falls_back_to_epoll_on_eperm() {
    let mut r = simulated(Backend::Auto, "EPERM").expect("EPERM must fall back, not fail");
    assert_eq!(r.backend(), Backend::Epoll);
    let why = r.fallback_reason().expect("a reason for the fallback");
    assert!(why.contains("EPERM"), "{why}");
    assert!(!r.features().io_uring);
    assert!(format!("{r:?}").contains("EPERM"));
    r.run(async {
        assert_eq!(uringio::get_running_loop().backend(), Backend::Epoll);
        assert!(!uringio::driver::features().io_uring);
        round_trip().await;
    });
}

#[test]
fn other_setup_refusals_fall_back_too() {
    for (err, needle) in [
        ("ENOSYS", "ENOSYS"),
        ("EINVAL", "EINVAL"),
        ("disabled", "io_uring_disabled"),
        ("memlock", "MEMLOCK"),
    ] {
        let mut r = simulated(Backend::Auto, err)
            .unwrap_or_else(|e| panic!("{err} must fall back, got {e}"));
        assert_eq!(r.backend(), Backend::Epoll, "{err}");
        let why = r.fallback_reason().unwrap();
        assert!(why.contains(needle), "{err}: {why}");
        r.run(round_trip());
    }
}

#[test]
fn explicit_io_uring_refused_is_a_clear_error() {
    let err = simulated(Backend::IoUring, "EPERM").unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err:?}");
    assert!(msg.contains("io_uring"), "{msg}");
    assert!(msg.contains("EPERM"), "{msg}");
}

#[test]
fn enomem_surfaces_instead_of_falling_back() {
    for b in [Backend::Auto, Backend::IoUring] {
        let err = simulated(b, "ENOMEM").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "{b}: {err:?}");
    }
}

#[test]
fn explicit_epoll_never_probes() {
    let r = simulated(Backend::Epoll, "ENOMEM").expect("epoll does not touch io_uring");
    assert_eq!(r.backend(), Backend::Epoll);
    assert_eq!(r.fallback_reason(), None);
}

#[test]
fn auto_picks_io_uring_where_it_works() {
    // Only meaningful when nobody forces a backend from outside.
    if std::env::var_os("URINGIO_BACKEND").is_some()
        || std::env::var_os("URINGIO_SIMULATE_SETUP_ERROR").is_some()
    {
        eprintln!("backend forced by the environment; skipping");
        return;
    }
    if !common::io_uring_or_skip("io_uring test") {
        common::assert_io_uring_refused_properly();
        return;
    }
    let r = Runner::builder().backend(Backend::Auto).build().unwrap();
    assert_eq!(r.backend(), Backend::IoUring, "{:?}", r.fallback_reason());
    assert_eq!(r.fallback_reason(), None);
}

#[test]
fn backend_display() {
    assert_eq!(Backend::IoUring.to_string(), "io_uring");
    assert_eq!(Backend::Epoll.to_string(), "epoll");
    assert_eq!(Backend::Auto.to_string(), "auto");
    assert_eq!(Backend::default(), Backend::Auto);
}

#[test]
fn stats_count_driver_waits() {
    on_both(10, |b| async move {
        let s0 = uringio::driver::stats();
        for _ in 0..5 {
            uringio::sleep(Duration::from_millis(1)).await;
        }
        let s1 = uringio::driver::stats();
        assert!(
            s1.enter_calls >= s0.enter_calls + 5,
            "{b}: {s0:?} -> {s1:?}"
        );
        assert_eq!(s1.cq_overflows, 0);
        if b == Backend::IoUring {
            round_trip().await;
            let s2 = uringio::driver::stats();
            assert!(s2.sqes_submitted > s1.sqes_submitted, "{s1:?} -> {s2:?}");
            assert!(s2.cqes_reaped > s1.cqes_reaped, "{s1:?} -> {s2:?}");
            assert_eq!(s2.blocking_ops, 0, "io_uring never uses the pool for ops");
        }
    });
}

#[test]
fn many_ops_awaited_together_share_one_enter() {
    const N: usize = 64;
    on_both(20, |b| async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut pairs = Vec::new();
        for _ in 0..N {
            let c = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            let (res, _) = s.write_all(b"x".to_vec()).await;
            res.unwrap();
            pairs.push((c, s));
        }
        let s0 = uringio::driver::stats();
        let results = join_all(pairs.iter().map(|(c, _)| c.read(Vec::with_capacity(4)))).await;
        let s1 = uringio::driver::stats();
        for (res, buf) in results {
            assert_eq!(res.unwrap(), 1);
            assert_eq!(buf, b"x");
        }
        let enters = s1.enter_calls - s0.enter_calls;
        // All reads are queued in one poll and go to the kernel together.
        assert!(
            enters <= 4,
            "{b}: {enters} driver calls for {N} ready reads"
        );
        if b == Backend::IoUring {
            assert!(s1.sqes_submitted - s0.sqes_submitted >= N as u64);
            assert!(s1.cqes_reaped - s0.cqes_reaped >= N as u64);
        }
        for (c, _) in &pairs {
            c.shutdown(Shutdown::Both).unwrap();
        }
    });
}

#[test]
fn epoll_counts_blocking_file_ops() {
    let mut r = runner(Backend::Epoll);
    r.run(async {
        let dir = common::TempDir::new("backend-pool");
        let s0 = uringio::driver::stats();
        uringio::fs::write(dir.path("f"), "data").await.unwrap();
        let got = uringio::fs::read(dir.path("f")).await.unwrap();
        assert_eq!(got, b"data");
        let s1 = uringio::driver::stats();
        assert!(s1.blocking_ops > s0.blocking_ops, "{s0:?} -> {s1:?}");
    });
}

#[test]
fn features() {
    on_both(10, |b| async move {
        let f = uringio::driver::features();
        assert!(!f.kernel.is_empty());
        assert!(
            f.kernel.chars().next().unwrap().is_ascii_digit(),
            "{}",
            f.kernel
        );
        assert_eq!(f.io_uring, b == Backend::IoUring);
        let from_loop = uringio::get_running_loop().features();
        assert_eq!(from_loop.io_uring, f.io_uring);
        assert_eq!(from_loop.sq_entries, f.sq_entries);
        if b == Backend::IoUring {
            assert!(f.sq_entries >= 8);
            assert!(f.cq_entries >= f.sq_entries);
            assert!(f.ext_arg, "required for the loop's timed waits");
            // Flags kept plus flags dropped are the ones asked for.
            for flag in &f.dropped_flags {
                assert!(
                    !f.setup_flags.contains(flag),
                    "{flag} both kept and dropped"
                );
            }
        } else {
            assert_eq!(f.sq_entries, 0);
            assert!(!f.multishot_accept && !f.buf_ring && !f.send_zc);
            assert!(f.setup_flags.is_empty());
        }
    });
}

#[test]
fn builder_entries_are_rounded() {
    if !common::io_uring_or_skip("io_uring test") {
        common::assert_io_uring_refused_properly();
        return;
    }
    for (asked, sq) in [(3u32, 8u32), (64, 64), (100, 128)] {
        let r = Runner::builder()
            .backend(Backend::IoUring)
            .entries(asked)
            .build()
            .unwrap();
        assert_eq!(r.features().sq_entries, sq, "entries({asked})");
    }
}

#[test]
fn introspection_outside_a_loop_panics() {
    assert!(std::panic::catch_unwind(uringio::driver::stats).is_err());
    assert!(std::panic::catch_unwind(uringio::driver::features).is_err());
}

#[test]
fn a_loop_inside_a_running_loop_is_refused() {
    for b in backends() {
        let mut outer = runner(b);
        outer.run(async move {
            let mut inner = runner(b);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.run(async {})));
            let msg = r.unwrap_err();
            let msg = msg
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| msg.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            assert!(msg.contains("another loop"), "{b}: {msg}");
        });
    }
}

/// The raw-SQE escape hatch: a NOP completes with 0 on io_uring and the
/// keep-alive value comes back; on epoll it is a clear `Unsupported`.
#[test]
fn submit_raw_nop() {
    on_both(5, |b| async move {
        let keep = vec![1u8, 2, 3];
        let sqe = io_uring::opcode::Nop::new().build();
        // SAFETY: a NOP points at no memory.
        let (res, keep) = unsafe { uringio::driver::submit_raw(sqe, keep) }.await;
        assert_eq!(keep, vec![1, 2, 3]);
        match b {
            uringio::Backend::IoUring => assert_eq!(res.unwrap(), 0),
            _ => assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::Unsupported),
        }
    });
}

/// `examples/no_io_uring` (built by plain `cargo test`), or `None` with a
/// visible line when a `--test` filter left it unbuilt.
fn launcher() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("examples").join("no_io_uring");
    if p.exists() {
        return Some(p);
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIP backend::{}: {} is not built (plain `cargo test` or `cargo build --examples` builds it)",
        std::thread::current().name().unwrap_or("?"),
        p.display()
    );
    None
}

/// A container's seccomp profile, for real: this test binary re-run under
/// `examples/no_io_uring` (io_uring_setup refused with EPERM, then ENOSYS)
/// passes a two-backend test by running its epoll half, and says on
/// stderr, past the output capture, that the io_uring half did not run.
#[test]
fn io_uring_refused_by_seccomp_skips_visibly() {
    let Some(launcher) = launcher() else { return };
    let exe = std::env::current_exe().unwrap();
    for (errno, reason) in [
        ("EPERM", "io_uring_setup: EPERM (seccomp?)"),
        ("ENOSYS", "io_uring_setup: ENOSYS (kernel without io_uring)"),
    ] {
        let out = std::process::Command::new(&launcher)
            .args(["--errno", errno])
            .arg(&exe)
            .args(["--exact", "submit_raw_nop", "--test-threads", "1"])
            .env_remove("URINGIO_BACKEND")
            .env_remove("URINGIO_SIMULATE_SETUP_ERROR")
            .output()
            .expect("run the test binary under no_io_uring");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{errno}: {}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(stdout.contains("1 passed"), "{errno}: {stdout}");
        let skip = format!("io_uring half (io_uring unavailable: {reason})");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("SKIP ")).collect();
        assert_eq!(lines.len(), 1, "{errno}: one SKIP line expected: {stderr}");
        assert!(
            lines[0].starts_with("SKIP backend::submit_raw_nop (tests/backend.rs:")
                && lines[0].ends_with(&skip),
            "{errno}: {}",
            lines[0]
        );
    }
}
/// Whether the missing-opcode simulations can say anything here: they set
/// a real ring up, so io_uring must work and Auto must not be forced.
fn real_ring_available() -> bool {
    if std::env::var_os("URINGIO_BACKEND").is_some()
        || !common::backends().contains(&Backend::IoUring)
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIP backend::{}: io_uring test (io_uring unavailable or the backend forced)",
            std::thread::current().name().unwrap_or("?")
        );
        return false;
    }
    true
}

#[test]
fn auto_falls_back_when_a_required_opcode_is_missing() {
    if !real_ring_available() {
        return;
    }
    for sim in ["missing-opcode:IORING_OP_RECV", "missing-opcode:poll_add"] {
        let mut r = simulated(Backend::Auto, sim).unwrap_or_else(|e| panic!("{sim}: {e}"));
        assert_eq!(r.backend(), Backend::Epoll, "{sim}");
        let why = r.fallback_reason().expect("a reason");
        let want = if sim.ends_with("RECV") {
            "opcode IORING_OP_RECV missing"
        } else {
            "opcode IORING_OP_POLL_ADD missing"
        };
        assert!(why.contains(want), "{sim}: {why}");
        r.run(round_trip());
    }
}

#[test]
fn explicit_io_uring_with_a_missing_opcode_is_a_clear_error() {
    if !real_ring_available() {
        return;
    }
    let err = simulated(Backend::IoUring, "missing-opcode:IORING_OP_RECV").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err:?}");
    assert!(
        err.to_string().contains("opcode IORING_OP_RECV missing"),
        "{err}"
    );
}

#[test]
fn shutdown_opcode_is_not_required() {
    if !real_ring_available() {
        return;
    }
    // No SQE uses IORING_OP_SHUTDOWN (shutdown is a plain system call).
    let mut r = simulated(Backend::Auto, "missing-opcode:IORING_OP_SHUTDOWN").unwrap();
    assert_eq!(r.backend(), Backend::IoUring, "{:?}", r.fallback_reason());
    assert_eq!(r.fallback_reason(), None);
    r.run(async {
        round_trip().await;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let (res, _) = s.read(Vec::with_capacity(4)).await;
        assert_eq!(res.unwrap(), 0, "shutdown reached the peer");
    });
}

#[test]
fn a_missing_optional_opcode_keeps_io_uring() {
    if !real_ring_available() {
        return;
    }
    let mut r = simulated(Backend::Auto, "missing-opcode:IORING_OP_FTRUNCATE").unwrap();
    assert_eq!(r.backend(), Backend::IoUring, "{:?}", r.fallback_reason());
    assert!(!r.features().ftruncate, "the feature is off");
    r.run(async {
        // set_len then takes the pool path, and works.
        let dir = common::TempDir::new("probe-ftruncate");
        let f = uringio::fs::File::create(dir.path("a")).await.unwrap();
        f.set_len(1234).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 1234);
        f.close().await.unwrap();
    });
}

/// The child half of `small_memlock_limit_falls_back_with_a_reason`.
#[test]
#[ignore = "run by small_memlock_limit_falls_back_with_a_reason in a child"]
fn memlock_ring_child() {
    if std::env::var_os("URINGIO_RING_MEMLOCK_CHILD").is_none() {
        return;
    }
    let r = Runner::builder().entries(4096).build().unwrap();
    let why = r.fallback_reason().unwrap_or("none").to_string();
    println!("BACKEND={} WHY={why}", r.backend());
    match Runner::builder()
        .entries(4096)
        .backend(Backend::IoUring)
        .build()
    {
        Ok(_) => println!("EXPLICIT=ok"),
        Err(e) => println!("EXPLICIT-ERR={e}"),
    }
}

#[test]
fn small_memlock_limit_falls_back_with_a_reason() {
    // Without CAP_IPC_LOCK the ring's own memory is charged to
    // RLIMIT_MEMLOCK on current kernels: a tiny limit must make Auto fall
    // back to epoll with a reason naming the limit (not fail with a bare
    // ENOMEM), and an explicit io_uring request fail clearly.
    if !common::io_uring_or_skip("io_uring test (ring memlock)") {
        return;
    }
    let have = |t: &str| {
        std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("setpriv") || !have("prlimit") {
        eprintln!("SKIP backend::small_memlock_limit_falls_back_with_a_reason: no setpriv/prlimit");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock"])
        .arg("prlimit")
        .arg("--memlock=4096:4096")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "memlock_ring_child", "--ignored", "--nocapture"])
        .env("URINGIO_RING_MEMLOCK_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    if stdout.contains("BACKEND=io_uring") {
        // A kernel that does not charge the ring to the limit: nothing to check.
        eprintln!(
            "SKIP backend::small_memlock_limit_falls_back_with_a_reason: ring not charged to RLIMIT_MEMLOCK here"
        );
        return;
    }
    assert!(stdout.contains("BACKEND=epoll"), "{stdout}\n{stderr}");
    assert!(stdout.contains("WHY=RLIMIT_MEMLOCK"), "{stdout}\n{stderr}");
    assert!(stdout.contains("EXPLICIT-ERR="), "{stdout}\n{stderr}");
    assert!(stdout.contains("RLIMIT_MEMLOCK"), "{stdout}");
}
