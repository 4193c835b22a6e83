//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::panic::Location;
use std::sync::OnceLock;
use std::time::Duration;

use uringio::{Backend, Runner};

/// Why io_uring cannot run in this process, or `None` where it can. Probed
/// once, by building an explicit `Backend::IoUring` loop: a set-up refusal
/// (seccomp's `EPERM`, `ENOSYS`, `kernel.io_uring_disabled`, a missing
/// opcode, `URINGIO_SIMULATE_SETUP_ERROR`) is an `Unsupported` error. Any
/// other error keeps io_uring in [`backends()`], so `runner` reports it as
/// the failure it is.
pub fn io_uring_unavailable() -> Option<&'static str> {
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    PROBE
        .get_or_init(
            || match Runner::builder().backend(Backend::IoUring).build() {
                Ok(_) => None,
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    let msg = e.to_string();
                    let why = msg
                        .strip_prefix("io_uring was asked for but is unavailable: ")
                        .unwrap_or(&msg);
                    Some(why.to_string())
                }
                Err(_) => None,
            },
        )
        .as_deref()
}

/// Prints, past the test harness's output capture, the line that says the
/// io_uring `part` (`"io_uring half"`, `"io_uring test"`) of the calling
/// test did not run here:
/// `SKIP tcp::read_write (tests/tcp.rs:42): io_uring half (io_uring unavailable: …)`.
#[track_caller]
pub fn report_skip(part: &str) {
    let at = Location::caller();
    let why = io_uring_unavailable().unwrap_or("?");
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(n) if n != "main" => format!("{}::{n} ", env!("CARGO_CRATE_NAME")),
        _ => format!("{} ", env!("CARGO_CRATE_NAME")),
    };
    let line = format!(
        "SKIP {test}({}:{}): {part} (io_uring unavailable: {why})\n",
        at.file(),
        at.line()
    );
    // `eprintln!` would be captured (and dropped) for a passing test; a
    // direct write to the stderr handle is not.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `true` where io_uring runs here. Elsewhere it prints the `SKIP` line
/// for the calling test (`part` of it) and returns `false`: the way an
/// io_uring-only test or section bows out, visibly.
#[track_caller]
pub fn io_uring_or_skip(part: &str) -> bool {
    if io_uring_unavailable().is_none() {
        return true;
    }
    report_skip(part);
    false
}

/// Where io_uring is refused, the refusal must be the documented one: an
/// explicit `Backend::IoUring` is an `Unsupported` error naming the reason,
/// and `Backend::Auto` falls back to epoll saying the same reason.
pub fn assert_io_uring_refused_properly() {
    let why = io_uring_unavailable().expect("io_uring is refused here");
    assert!(
        [
            "EPERM",
            "EACCES",
            "ENOSYS",
            "EINVAL",
            "io_uring_disabled",
            "MEMLOCK",
            "IORING_"
        ]
        .iter()
        .any(|k| why.contains(k)),
        "not a documented set-up refusal: {why}"
    );
    let e = Runner::builder()
        .backend(Backend::IoUring)
        .build()
        .expect_err("io_uring is refused here");
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e:?}");
    assert!(e.to_string().contains(why), "{e}");
    if std::env::var_os("URINGIO_BACKEND").is_none() {
        let r = Runner::builder().backend(Backend::Auto).build().unwrap();
        assert_eq!(r.backend(), Backend::Epoll);
        assert_eq!(r.fallback_reason(), Some(why));
    }
}

/// The backends this machine can run, in the order tests use them: the
/// io_uring half is left out, with a visible `SKIP` line naming the calling
/// test, where io_uring is refused (a container's seccomp profile, an old
/// kernel). Every I/O test loops over this (`for b in common::backends()`)
/// or goes through [`on_both`].
#[track_caller]
pub fn backends() -> Vec<Backend> {
    if io_uring_or_skip("io_uring half") {
        vec![Backend::IoUring, Backend::Epoll]
    } else {
        vec![Backend::Epoll]
    }
}

/// A loop on `b` (panics if `b` cannot be built: go through [`backends()`]).
pub fn runner(b: Backend) -> Runner {
    Runner::builder()
        .backend(b)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a {b} loop: {e}"))
}

/// Runs `f(backend)` on a fresh loop of each usable backend (see
/// [`backends()`]), failing if one run takes longer than `secs` seconds.
#[track_caller]
pub fn on_both<F, Fut>(secs: u64, f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for b in backends() {
        let mut r = runner(b);
        assert_eq!(r.backend(), b);
        r.run(async {
            uringio::timeout(Duration::from_secs(secs), f(b))
                .await
                .unwrap_or_else(|_| panic!("test timed out on {b}"))
        });
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "uringio-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs `f` on a fresh default loop, failing the test if it takes over
/// 5 s (for tests that do no I/O, so one backend says it all).
pub fn run_bounded<F: Future>(f: F) -> F::Output {
    uringio::run(async {
        uringio::timeout(Duration::from_secs(5), f)
            .await
            .expect("test timed out")
    })
}

/// Lets every other ready task run for a while.
pub async fn settle() {
    for _ in 0..20 {
        uringio::yield_now().await;
    }
}

/// Yields until `cond` holds (the caller's time bound ends it otherwise).
pub async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        uringio::yield_now().await;
    }
}

/// `n` bytes of a pseudo-random pattern (xorshift), so a misplaced or
/// repeated chunk cannot go unnoticed.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A child process killed and reaped on drop, whatever happened (for tests
/// that run an example as its own process).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example binary `name`, as plain `cargo test` builds it next to the
/// test binaries; panics if it is missing or older than its source.
pub fn example(name: &str) -> std::path::PathBuf {
    use std::path::PathBuf;
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("examples").join(name);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
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
