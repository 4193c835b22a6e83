//! Files at the limits, on both backends. Offsets at the edge of `i64`:
//! io_uring reads an offset of -1 (`u64::MAX`) as "the current position"
//! and pread/pwrite say `EINVAL`, so uringio refuses offsets past
//! `i64::MAX` itself, the same way on both, before anything reaches the
//! kernel. File times before 1970.
mod common;

use std::io;
use std::time::Duration;

use common::TempDir;
use uringio::Backend;
use uringio::buf::IoBuf;
use uringio::fs::{self, OpenOptions};

const CONTENT: &[u8] = b"0123456789";

fn refused<T: std::fmt::Debug>(b: Backend, what: &str, res: io::Result<T>, needle: &str) {
    let e = res.expect_err(&format!("{b}: {what} was accepted"));
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{b}: {what}: {e}");
    assert!(e.to_string().contains(needle), "{b}: {what}: {e}");
}

#[test]
fn offsets_past_i64_max_are_refused() {
    for b in common::backends() {
        let mut r = common::runner(b);
        r.run(async {
            uringio::timeout(Duration::from_secs(20), async {
                let dir = TempDir::new(&format!("offsets-{b}"));
                let path = dir.path("a");
                std::fs::write(&path, CONTENT).unwrap();
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .await
                    .unwrap();
                for off in [u64::MAX, i64::MAX as u64 + 1, u64::MAX - 7] {
                    let msg = format!("file offset {off} is past i64::MAX");
                    let (res, buf) = f.write_at(b"XY".to_vec(), off).await;
                    refused(b, "write_at", res, &msg);
                    assert_eq!(buf, b"XY", "the buffer comes back");
                    let (res, buf) = f.read_at(Vec::with_capacity(8), off).await;
                    refused(b, "read_at", res, &msg);
                    assert!(buf.is_empty());
                    let (res, _) = f.readv_at(vec![Vec::with_capacity(4)], off).await;
                    refused(b, "readv_at", res, &msg);
                    let (res, _) = f.writev_at(vec![b"XY".to_vec()], off).await;
                    refused(b, "writev_at", res, &msg);
                    let (res, _) = f.write_all_at(b"XY".to_vec(), off).await;
                    refused(b, "write_all_at", res, &msg);
                    let (res, _) = f.read_exact_at(Vec::with_capacity(4), off).await;
                    refused(b, "read_exact_at", res, &msg);
                    refused(
                        b,
                        "fallocate",
                        f.fallocate(off, 1, fs::FallocateMode::empty()).await,
                        &msg,
                    );
                    refused(b, "set_len", f.set_len(off).await, &msg);
                }
                // Ranges a loop would run past i64::MAX on.
                let near = i64::MAX as u64 - 2;
                let (res, _) = f.write_all_at(b"0123456789".to_vec(), near).await;
                refused(b, "write_all_at near the end", res, "past i64::MAX");
                let (res, _) = f.read_exact_at(Vec::with_capacity(10), near).await;
                refused(b, "read_exact_at near the end", res, "past i64::MAX");
                let (res, _) = f
                    .read_exact_at(Vec::with_capacity(10).slice(5..), near)
                    .await;
                refused(
                    b,
                    "read_exact_at of a slice near the end",
                    res,
                    "past i64::MAX",
                );
                refused(
                    b,
                    "fallocate near the end",
                    f.fallocate(near, 10, fs::FallocateMode::empty()).await,
                    "past i64::MAX",
                );
                refused(
                    b,
                    "fallocate with a huge length",
                    f.fallocate(0, u64::MAX, fs::FallocateMode::empty()).await,
                    "past i64::MAX",
                );
                // Nothing was written anywhere.
                assert_eq!(std::fs::read(&path).unwrap(), CONTENT, "{b}");
                // A large offset that fits is passed on (and finds nothing).
                let (res, _) = f.read_at(Vec::with_capacity(4), 1 << 40).await;
                assert_eq!(res.unwrap(), 0, "{b}");
                f.close().await.unwrap();
            })
            .await
            .unwrap_or_else(|_| panic!("timed out on {b}"))
        });
    }
}

/// Just below i64::MAX the kernel decides (the file system's maximum size):
/// both backends must give the same answer.
#[test]
fn offsets_just_below_i64_max_agree_on_both_backends() {
    type Seen = Vec<(String, Result<usize, io::ErrorKind>)>;
    let mut per_backend: Vec<(Backend, Seen)> = Vec::new();
    for b in common::backends() {
        let mut r = common::runner(b);
        let seen = r.run(async {
            uringio::timeout(Duration::from_secs(20), async {
                let dir = TempDir::new(&format!("offsets-near-{b}"));
                let path = dir.path("a");
                std::fs::write(&path, CONTENT).unwrap();
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .await
                    .unwrap();
                let mut seen: Seen = Vec::new();
                let k = |r: io::Result<usize>| r.map_err(|e| e.kind());
                for off in [i64::MAX as u64 - 3, i64::MAX as u64] {
                    let (res, _) = f.write_at(b"XY".to_vec(), off).await;
                    seen.push((format!("write_at {off}"), k(res)));
                    let (res, _) = f.writev_at(vec![b"XY".to_vec()], off).await;
                    seen.push((format!("writev_at {off}"), k(res)));
                    let (res, _) = f.read_at(Vec::with_capacity(8), off).await;
                    seen.push((format!("read_at {off}"), k(res)));
                    let (res, _) = f.readv_at(vec![Vec::with_capacity(8)], off).await;
                    seen.push((format!("readv_at {off}"), k(res)));
                }
                f.close().await.unwrap();
                // Whatever the kernel said, the file's first bytes are intact.
                assert_eq!(&std::fs::read(&path).unwrap()[..10], CONTENT, "{b}");
                seen
            })
            .await
            .unwrap_or_else(|_| panic!("timed out on {b}"))
        });
        per_backend.push((b, seen));
    }
    for w in per_backend.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{} and {} disagree", w[0].0, w[1].0);
    }
    eprintln!("near i64::MAX: {:?}", per_backend.first().map(|p| &p.1));
}

/// A file's times come from the file system: one before 1970 (negative
/// seconds) is a valid time, not a panic.
#[test]
fn file_times_before_1970() {
    common::on_both(20, |b| async move {
        let dir = TempDir::new(&format!("times-{b}"));
        let path = dir.path("old");
        let f = std::fs::File::create(&path).unwrap();
        let long_ago = std::time::UNIX_EPOCH - Duration::from_secs(86400 * 365 * 10 + 7);
        f.set_modified(long_ago).unwrap();
        drop(f);
        let m = uringio::fs::metadata(&path).await.unwrap();
        assert_eq!(m.modified(), long_ago, "{b}");
    });
}
