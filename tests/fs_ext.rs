//! The rest of the file API on both backends: fallocate's named modes,
//! sync_range, fadvise, per-op RWF flags, try_clone / into_std, read_dir
//! and fs::copy.
mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;

use common::{TempDir, on_both};
use uringio::fs::{self, Advice, FallocateMode, File, OpenOptions, RwFlags, SyncRangeFlags};

async fn rw_file(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .await
        .unwrap()
}

/// The tests count the process's open descriptors (`try_clone_and_into_std`)
/// while others open files: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pipe_file() -> (File, std::os::fd::OwnedFd) {
    let (r, w) = nix::unistd::pipe().unwrap();
    (File::from_std(std::fs::File::from(r)), w)
}

fn invalid(e: io::Error, what: &str) {
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e:?}");
    assert!(e.to_string().contains(what), "{e} should name {what}");
}

/// Allocated 512-byte blocks of `path` (st_blocks).
fn blocks(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks()
}

#[test]
fn fallocate_modes() {
    let _serial = serial();
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fsx-falloc-{b}"));
        let path = dir.path("f");
        let f = rw_file(&path).await;
        let data = vec![0xAAu8; 1 << 20];
        let (r, _) = f.write_all_at(data, 0).await;
        r.unwrap();
        f.sync_all().await.unwrap();
        let full = blocks(&path);

        // PUNCH_HOLE | KEEP_SIZE: same size, zeros, fewer blocks.
        f.fallocate(
            64 << 10,
            256 << 10,
            FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE,
        )
        .await
        .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 1 << 20, "{b}");
        let got = std::fs::read(&path).unwrap();
        assert!(got[..64 << 10].iter().all(|&x| x == 0xAA), "{b}");
        assert!(got[64 << 10..320 << 10].iter().all(|&x| x == 0), "{b}");
        assert!(got[320 << 10..].iter().all(|&x| x == 0xAA), "{b}");
        assert!(blocks(&path) < full, "{b}: the hole freed blocks");

        // ZERO_RANGE inside: zeros, size kept; past the end it extends
        // unless KEEP_SIZE.
        f.fallocate(512 << 10, 4096, FallocateMode::ZERO_RANGE)
            .await
            .unwrap();
        let got = std::fs::read(&path).unwrap();
        assert!(got[512 << 10..(512 << 10) + 4096].iter().all(|&x| x == 0));
        assert_eq!(got[(512 << 10) + 4096], 0xAA);
        f.fallocate(1 << 20, 8192, FallocateMode::ZERO_RANGE)
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), (1 << 20) + 8192, "{b}");
        f.fallocate(
            2 << 20,
            8192,
            FallocateMode::ZERO_RANGE | FallocateMode::KEEP_SIZE,
        )
        .await
        .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), (1 << 20) + 8192, "{b}");

        // KEEP_SIZE allocates past the end without growing; empty() grows.
        let before = blocks(&path);
        f.fallocate(4 << 20, 1 << 20, FallocateMode::KEEP_SIZE)
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), (1 << 20) + 8192);
        assert!(blocks(&path) >= before + 2048, "{b}: 1 MiB allocated");
        f.fallocate(0, 3 << 20, FallocateMode::empty())
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 3 << 20, "{b}");

        // Impossible combinations: clear errors, nothing reaches the kernel.
        invalid(
            f.fallocate(0, 10, FallocateMode::PUNCH_HOLE)
                .await
                .unwrap_err(),
            "KEEP_SIZE",
        );
        invalid(
            f.fallocate(
                0,
                10,
                FallocateMode::PUNCH_HOLE | FallocateMode::KEEP_SIZE | FallocateMode::ZERO_RANGE,
            )
            .await
            .unwrap_err(),
            "ZERO_RANGE",
        );
        invalid(
            f.fallocate(
                0,
                4096,
                FallocateMode::COLLAPSE_RANGE | FallocateMode::KEEP_SIZE,
            )
            .await
            .unwrap_err(),
            "COLLAPSE_RANGE",
        );
        invalid(
            f.fallocate(0, 0, FallocateMode::empty()).await.unwrap_err(),
            "length is 0",
        );
        invalid(
            f.fallocate(0, 10, FallocateMode::from_bits_retain(0x4000))
                .await
                .unwrap_err(),
            "unknown bits",
        );
        assert_eq!(f.metadata().await.unwrap().len(), 3 << 20, "{b}");
        f.close().await.unwrap();
    });
}

#[test]
fn sync_range_and_fadvise() {
    let _serial = serial();
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fsx-sync-{b}"));
        let path = dir.path("f");
        let f = rw_file(&path).await;
        let (r, _) = f.write_all_at(common::pattern(256 << 10, 5), 0).await;
        r.unwrap();
        f.sync_range(0, 0, SyncRangeFlags::WRITE).await.unwrap();
        f.sync_range(
            4096,
            64 << 10,
            SyncRangeFlags::WAIT_BEFORE | SyncRangeFlags::WRITE | SyncRangeFlags::WAIT_AFTER,
        )
        .await
        .unwrap();
        f.sync_range(0, 10, SyncRangeFlags::empty()).await.unwrap();
        for a in [
            Advice::Normal,
            Advice::Random,
            Advice::Sequential,
            Advice::WillNeed,
            Advice::DontNeed,
            Advice::NoReuse,
        ] {
            f.fadvise(0, 0, a)
                .await
                .unwrap_or_else(|e| panic!("{b} {a:?}: {e}"));
        }
        // Bad arguments: clear errors.
        invalid(
            f.sync_range(0, 10, SyncRangeFlags::from_bits_retain(0x80))
                .await
                .unwrap_err(),
            "unknown bits",
        );
        invalid(
            f.sync_range(0, 5 << 30, SyncRangeFlags::WRITE)
                .await
                .unwrap_err(),
            "4 GiB",
        );
        invalid(
            f.sync_range(u64::MAX, 1, SyncRangeFlags::WRITE)
                .await
                .unwrap_err(),
            "i64::MAX",
        );
        invalid(
            f.fadvise(i64::MAX as u64, 10, Advice::Normal)
                .await
                .unwrap_err(),
            "i64::MAX",
        );
        // A pipe: the kernel's ESPIPE, the same on both backends.
        let (p, _w) = pipe_file();
        let e = p.sync_range(0, 0, SyncRangeFlags::WRITE).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{b}: {e:?}");
        let e = p.fadvise(0, 0, Advice::Normal).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{b}: {e:?}");
        f.close().await.unwrap();
    });
}

#[test]
fn rwf_flags() {
    let _serial = serial();
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fsx-rwf-{b}"));
        let path = dir.path("f");
        let f = rw_file(&path).await;
        let data = common::pattern(8 << 20, 9);
        let (r, _) = f.write_all_at(data.clone(), 0).await;
        r.unwrap();
        f.sync_all().await.unwrap();

        // Cached: NOWAIT reads succeed.
        let (r, buf) = f
            .read_at_with(Vec::with_capacity(4096), 4096, RwFlags::NOWAIT)
            .await;
        assert_eq!(r.unwrap(), 4096, "{b}");
        assert_eq!(buf, data[4096..8192]);

        // Dropped from the page cache: NOWAIT says WouldBlock (EAGAIN).
        f.fadvise(0, 0, Advice::DontNeed).await.unwrap();
        let (r, buf) = f
            .read_at_with(Vec::with_capacity(4096), 6 << 20, RwFlags::NOWAIT)
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{b}: {e:?}");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(buf.is_empty());
        // Without the flag the same read waits for the disk.
        let (r, buf) = f
            .read_at_with(Vec::with_capacity(4096), 6 << 20, RwFlags::empty())
            .await;
        assert_eq!(r.unwrap(), 4096, "{b}");
        assert_eq!(buf, data[6 << 20..(6 << 20) + 4096]);
        // HIPRI is a hint: a buffered read still works.
        let (r, _) = f
            .read_at_with(Vec::with_capacity(16), 0, RwFlags::HIPRI)
            .await;
        assert_eq!(r.unwrap(), 16, "{b}");

        // Writes: DSYNC, SYNC, APPEND (the offset is ignored).
        let (r, _) = f.write_at_with(b"dsync".to_vec(), 0, RwFlags::DSYNC).await;
        assert_eq!(r.unwrap(), 5, "{b}");
        let (r, _) = f.write_at_with(b"sync".to_vec(), 5, RwFlags::SYNC).await;
        assert_eq!(r.unwrap(), 4, "{b}");
        let (r, _) = f.write_at_with(b"END".to_vec(), 0, RwFlags::APPEND).await;
        assert_eq!(r.unwrap(), 3, "{b}");
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..9], b"dsyncsync");
        assert_eq!(got.len(), (8 << 20) + 3, "{b}");
        assert_eq!(&got[8 << 20..], b"END");

        // Bad flags: clear errors, the buffer comes back.
        let (r, buf) = f
            .read_at_with(Vec::with_capacity(4), 0, RwFlags::DSYNC)
            .await;
        invalid(r.unwrap_err(), "writes only");
        assert_eq!(buf.capacity(), 4);
        let (r, _) = f
            .write_at_with(b"x".to_vec(), 0, RwFlags::from_bits_retain(0x4000))
            .await;
        invalid(r.unwrap_err(), "unknown bits");
        let (r, _) = f
            .read_at_with(Vec::with_capacity(4), u64::MAX, RwFlags::empty())
            .await;
        invalid(r.unwrap_err(), "i64::MAX");
        f.close().await.unwrap();
    });
}

#[test]
fn try_clone_and_into_std() {
    let _serial = serial();
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fsx-clone-{b}"));
        let path = dir.path("f");
        let fds = common::open_fds();
        let f = rw_file(&path).await;
        let g = f.try_clone().unwrap();
        assert_ne!(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            std::os::fd::AsRawFd::as_raw_fd(&g)
        );
        // The clone is close-on-exec, like every uringio descriptor.
        let flags = nix::fcntl::fcntl(&g, nix::fcntl::F_GETFD).unwrap();
        assert!(flags & libc::FD_CLOEXEC != 0, "{b}");
        let (r, _) = f.write_all_at(b"shared".to_vec(), 0).await;
        r.unwrap();
        f.close().await.unwrap();
        // Still open through the clone.
        let (r, buf) = g.read_at(Vec::with_capacity(16), 0).await;
        assert_eq!(r.unwrap(), 6, "{b}");
        assert_eq!(buf, b"shared");
        // into_std: the same descriptor, usable with std.
        let raw = std::os::fd::AsRawFd::as_raw_fd(&g);
        let mut s = g.into_std();
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&s), raw);
        use std::io::{Read, Seek, Write};
        s.seek(io::SeekFrom::End(0)).unwrap();
        s.write_all(b"+std").unwrap();
        s.seek(io::SeekFrom::Start(0)).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        assert_eq!(all, "shared+std");
        drop(s);
        assert_eq!(common::open_fds(), fds, "{b}: nothing leaked");
    });
}

#[test]
fn read_dir_10000_entries() {
    let _serial = serial();
    on_both(60, |b| async move {
        let dir = TempDir::new(&format!("fsx-dir-{b}"));
        let n = 10_000;
        for i in 0..n {
            std::fs::write(dir.path(&format!("e{i:05}")), b"").unwrap();
        }
        std::fs::create_dir(dir.path("sub")).unwrap();
        let mut seen = vec![false; n];
        let mut rd = fs::read_dir(&dir.0).await.unwrap();
        let mut subdirs = 0;
        let mut count = 0;
        while let Some(e) = rd.next_entry().await.unwrap() {
            count += 1;
            let name = e.file_name().into_string().unwrap();
            assert_eq!(e.path(), dir.0.join(&name));
            if name == "sub" {
                assert!(e.file_type().is_dir());
                subdirs += 1;
                continue;
            }
            assert!(e.file_type().is_file(), "{name}");
            let i: usize = name[1..].parse().unwrap();
            assert!(!seen[i], "{b}: {name} twice");
            seen[i] = true;
            if i == 7 {
                let m = e.metadata().await.unwrap();
                assert_eq!(m.ino(), e.ino());
                assert!(m.is_file());
            }
        }
        assert_eq!(count, n + 1, "{b}");
        assert_eq!(subdirs, 1);
        assert!(seen.iter().all(|&s| s), "{b}: every name once");
        assert!(rd.next_entry().await.unwrap().is_none(), "{b}: stays ended");
        // As a stream, dropped half-way.
        use futures_util::StreamExt;
        let mut rd = fs::read_dir(&dir.0).await.unwrap();
        let first: Vec<_> = (&mut rd).take(600).collect().await;
        assert_eq!(first.len(), 600);
        assert!(first.iter().all(|e| e.is_ok()));
        drop(rd);
        // Errors.
        let e = fs::read_dir(dir.path("missing")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{b}");
        let e = fs::read_dir(dir.path("e00001")).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{b}");
        // Cleanup through the API as well.
        for i in 0..100 {
            fs::remove_file(dir.path(&format!("e{i:05}")))
                .await
                .unwrap();
        }
        let mut rd = fs::read_dir(&dir.0).await.unwrap();
        let mut left = 0;
        while rd.next_entry().await.unwrap().is_some() {
            left += 1;
        }
        assert_eq!(left, n - 100 + 1, "{b}");
    });
}

#[test]
fn copy_64_mib() {
    let _serial = serial();
    on_both(60, |b| async move {
        let dir = TempDir::new(&format!("fsx-copy-{b}"));
        let src = dir.path("src");
        let dst = dir.path("dst");
        let data = common::pattern(64 << 20, 17);
        std::fs::write(&src, &data).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
        // An existing, longer destination is truncated.
        std::fs::write(&dst, vec![1u8; (64 << 20) + 100]).unwrap();
        let n = fs::copy(&src, &dst).await.unwrap();
        assert_eq!(n, 64 << 20, "{b}");
        let got = std::fs::read(&dst).unwrap();
        assert_eq!(got.len(), data.len(), "{b}");
        assert!(got == data, "{b}: byte for byte");
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{b}: permissions kept");
        // Empty file; a procfs file (copy_file_range reports nothing).
        std::fs::write(dir.path("empty"), b"").unwrap();
        assert_eq!(
            fs::copy(dir.path("empty"), dir.path("e2")).await.unwrap(),
            0
        );
        let n = fs::copy("/proc/self/status", dir.path("status"))
            .await
            .unwrap();
        assert!(n > 0, "{b}: procfs read through the fallback");
        assert!(
            std::fs::read_to_string(dir.path("status"))
                .unwrap()
                .contains("Name:")
        );
        // Errors: same file, missing source, directory source.
        let e = fs::copy(&src, &src).await.unwrap_err();
        invalid(e, "same file");
        assert_eq!(std::fs::read(&src).unwrap().len(), 64 << 20, "untouched");
        let e = fs::copy(dir.path("nope"), dir.path("x")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = fs::copy(&dir.0, dir.path("x")).await.unwrap_err();
        invalid(e, "not a regular file");
    });
}

#[test]
fn openat2_resolve_flags() {
    let _serial = serial();
    // BENEATH refuses `..` and absolute paths (EXDEV); NO_SYMLINKS refuses a
    // symlink (ELOOP); allowed opens work, with and without O_CREAT (whose
    // mode openat2 takes only with O_CREAT), on both backends.
    let dir = TempDir::new("openat2");
    std::fs::create_dir(dir.path("sub")).unwrap();
    std::fs::write(dir.path("sub/inside"), b"in").unwrap();
    std::fs::write(dir.path("outside"), b"out").unwrap();
    std::os::unix::fs::symlink("inside", dir.path("sub/link")).unwrap();
    let root = dir.path("");
    on_both(20, move |b| {
        let root = root.clone();
        async move {
            use uringio::fs::ResolveFlags;
            let mut o = OpenOptions::new();
            o.read(true).resolve(ResolveFlags::NO_SYMLINKS);
            let e = o.open(root.join("sub/link")).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{b}: {e}");
            let f = o.open(root.join("sub/inside")).await.unwrap();
            let (res, buf) = f.read_at(Vec::with_capacity(8), 0).await;
            assert_eq!(res.unwrap(), 2);
            assert_eq!(buf, b"in");
            f.close().await.unwrap();

            let mut beneath = OpenOptions::new();
            beneath.read(true).resolve(ResolveFlags::BENEATH);
            let e = beneath.open(root.join("outside")).await.unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EXDEV),
                "{b}: absolute path: {e}"
            );
            // Relative paths start at the current directory (cargo runs
            // tests in the package root).
            let f = beneath.open("Cargo.toml").await.unwrap();
            f.close().await.unwrap();
            let e = beneath
                .open("../../../../../../etc/passwd")
                .await
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{b}: ..: {e}");

            // O_CREAT with a mode through openat2.
            let mut c = OpenOptions::new();
            c.write(true)
                .create(true)
                .mode(0o640)
                .resolve(ResolveFlags::NO_SYMLINKS);
            let name = root.join(format!("created-{b}"));
            let f = c.open(&name).await.unwrap();
            f.close().await.unwrap();
            let m = std::fs::metadata(&name).unwrap().permissions().mode() & 0o777;
            assert_eq!(m & !0o640, 0, "{b}: mode {m:o}");
        }
    });
}
