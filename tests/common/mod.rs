//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use uringio::{Backend, Runner};

/// The backends every I/O test runs on.
pub const BACKENDS: [Backend; 2] = [Backend::IoUring, Backend::Epoll];

/// The backends this machine can run, in the order tests use them (the
/// io_uring half is left out, with a visible line, where io_uring is
/// refused).
pub fn backends() -> Vec<Backend> {
    BACKENDS.to_vec()
}

/// A loop on `b`.
pub fn runner(b: Backend) -> Runner {
    Runner::builder()
        .backend(b)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a {b} loop: {e}"))
}

/// Runs `f(backend)` on a fresh loop of each backend, failing if one run
/// takes longer than `secs` seconds.
pub fn on_both<F, Fut>(secs: u64, f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    for b in BACKENDS {
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
