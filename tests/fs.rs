//! Files and paths on both backends (io_uring SQEs; the blocking pool on
//! epoll): positioned and vectored I/O, sync, allocation, truncation,
//! metadata, open options, the path functions and their errors.
mod common;

use std::io;
use std::time::{Duration, SystemTime};

use common::{TempDir, on_both};
use uringio::fs::{self, File, OpenOptions};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32) as u8
                ^ (i >> 12) as u8
        })
        .collect()
}

#[test]
fn create_write_read_at() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fs-rw-{b}"));
        let path = dir.path("a.bin");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        let (res, buf) = f.write_at(b"hello world".to_vec(), 0).await;
        assert_eq!(res.unwrap(), 11);
        assert_eq!(buf, b"hello world");
        // Overwrite in the middle; write past the end leaves a hole of zeros.
        let (res, _) = f.write_at(b"WORLD".to_vec(), 6).await;
        assert_eq!(res.unwrap(), 5);
        let (res, _) = f.write_at(b"!".to_vec(), 15).await;
        assert_eq!(res.unwrap(), 1);

        let (res, buf) = f.read_at(Vec::with_capacity(64), 0).await;
        assert_eq!(res.unwrap(), 16);
        assert_eq!(&buf[..], b"hello WORLD\0\0\0\0!");
        let (res, buf) = f.read_at(Vec::with_capacity(3), 6).await;
        assert_eq!(res.unwrap(), 3);
        assert_eq!(&buf[..], b"WOR");
        // At and past the end: 0, not an error.
        let (res, _) = f.read_at(Vec::with_capacity(8), 16).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = f.read_at(Vec::with_capacity(8), 1 << 30).await;
        assert_eq!(res.unwrap(), 0);
        // Appends after the initialised bytes of the buffer.
        let mut v = Vec::with_capacity(10);
        v.extend_from_slice(b">>");
        let (res, buf) = f.read_at(v, 0).await;
        assert_eq!(res.unwrap(), 8);
        assert_eq!(&buf[..], b">>hello WO");

        assert_eq!(f.metadata().await.unwrap().len(), 16);
        f.close().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello WORLD\0\0\0\0!");
    });
}

#[test]
fn read_into_full_buffer_is_invalid_input() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-full-{b}"));
        let path = dir.path("x");
        std::fs::write(&path, b"abc").unwrap();
        let f = File::open(&path).await.unwrap();
        let (res, buf) = f.read_at(vec![9u8; 4], 0).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(buf, vec![9u8; 4]);
        let (res, _) = f.readv_at(vec![vec![1u8; 2], Vec::new()], 0).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn write_all_at_and_read_exact_at_large() {
    const N: usize = 4 * 1024 * 1024 + 123;
    on_both(30, |b| async move {
        let dir = TempDir::new(&format!("fs-big-{b}"));
        let f = File::create(dir.path("big")).await.unwrap();
        let data = pattern(N, 3);
        let (res, back) = f.write_all_at(data.clone(), 1000).await;
        res.unwrap();
        assert_eq!(back.len(), N);
        f.sync_all().await.unwrap();
        f.close().await.unwrap();

        let f = File::open(dir.path("big")).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), (N + 1000) as u64);
        let (res, buf) = f.read_exact_at(Vec::with_capacity(N), 1000).await;
        res.unwrap();
        assert!(buf == data, "read back differs");
        let (res, head) = f.read_exact_at(Vec::with_capacity(1000), 0).await;
        res.unwrap();
        assert!(head.iter().all(|&x| x == 0));
    });
}

#[test]
fn read_exact_at_short_is_unexpected_eof() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-short-{b}"));
        let path = dir.path("short");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = File::open(&path).await.unwrap();
        let (res, buf) = f.read_exact_at(Vec::with_capacity(8), 4).await;
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err:?}");
        // The bytes that were there stay in the buffer.
        assert_eq!(&buf[..], b"456789");
        // Exactly to the end is fine.
        let (res, buf) = f.read_exact_at(Vec::with_capacity(6), 4).await;
        res.unwrap();
        assert_eq!(&buf[..], b"456789");
    });
}

#[test]
fn readv_at_writev_at() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-vec-{b}"));
        let path = dir.path("v");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(&path)
            .await
            .unwrap();
        let (res, bufs) = f
            .writev_at(vec![b"abc".to_vec(), Vec::new(), b"defgh".to_vec()], 2)
            .await;
        assert_eq!(res.unwrap(), 8);
        assert_eq!(bufs.len(), 3);
        let bufs = vec![
            Vec::with_capacity(1),
            Vec::with_capacity(4),
            Vec::with_capacity(100),
        ];
        let (res, bufs) = f.readv_at(bufs, 1).await;
        assert_eq!(res.unwrap(), 9);
        assert_eq!(&bufs[0][..], b"\0");
        assert_eq!(&bufs[1][..], b"abcd");
        assert_eq!(&bufs[2][..], b"efgh");
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abcdefgh");
    });
}

#[test]
fn sync_fallocate_set_len_metadata() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fs-meta-{b}"));
        let path = dir.path("m");
        let before = SystemTime::now() - Duration::from_secs(5);
        let f = File::create(&path).await.unwrap();
        let (res, _) = f.write_all_at(vec![1u8; 5000], 0).await;
        res.unwrap();
        f.sync_data().await.unwrap();
        f.sync_all().await.unwrap();

        let m = f.metadata().await.unwrap();
        assert!(m.is_file() && !m.is_dir() && !m.is_symlink());
        assert_eq!(m.len(), 5000);
        assert!(!m.is_empty());
        assert!(m.modified() >= before, "mtime {:?}", m.modified());
        assert!(m.blksize() > 0);
        let std_meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(m.ino(), std_meta.ino());
        assert_eq!(m.mode(), std_meta.mode());

        // fallocate mode 0 extends the file.
        f.fallocate(0, 1 << 20, fs::FallocateMode::empty())
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 1 << 20);
        // KEEP_SIZE allocates without changing the size.
        f.fallocate(1 << 20, 1 << 20, fs::FallocateMode::KEEP_SIZE)
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 1 << 20);
        // A bad mode is a clear error, not a panic.
        let err = f
            .fallocate(0, 10, fs::FallocateMode::from_bits_retain(-1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err:?}");

        f.set_len(100).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 100);
        f.set_len(3000).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 3000);
        f.close().await.unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 3000);
        assert!(data[..100].iter().all(|&x| x == 1));
        assert!(
            data[100..].iter().all(|&x| x == 0),
            "extension reads as zeros"
        );
    });
}

#[test]
fn write_to_read_only_file_fails() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-ro-{b}"));
        let path = dir.path("ro");
        std::fs::write(&path, b"keep").unwrap();
        let f = File::open(&path).await.unwrap();
        let (res, _) = f.write_at(b"oops".to_vec(), 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF));
        f.close().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    });
}

#[test]
fn open_options_append_truncate_create_new() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-opts-{b}"));
        let path = dir.path("o");
        std::fs::write(&path, b"start").unwrap();

        // append: every write lands at the end, whatever the offset says.
        let f = OpenOptions::new().append(true).open(&path).await.unwrap();
        let (res, _) = f.write_at(b"+one".to_vec(), 0).await;
        assert_eq!(res.unwrap(), 4);
        let (res, _) = f.write_all_at(b"+two".to_vec(), 0).await;
        res.unwrap();
        f.close().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"start+one+two");

        // create_new on an existing file.
        let err = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err:?}");
        // ... and on a new one.
        let fresh = dir.path("fresh");
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&fresh)
            .await
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(perm & 0o777, 0o600);
        f.close().await.unwrap();

        // truncate empties an existing file.
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 0);
        f.close().await.unwrap();

        // Without create, a missing file is NotFound.
        let err = OpenOptions::new()
            .write(true)
            .open(dir.path("missing"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    });
}

#[test]
fn open_options_bad_combinations() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-bad-{b}"));
        let path = dir.path("never");
        let cases: Vec<(&str, OpenOptions)> = vec![
            ("nothing", OpenOptions::new()),
            (
                "read+create",
                OpenOptions::new().read(true).create(true).clone(),
            ),
            (
                "read+truncate",
                OpenOptions::new().read(true).truncate(true).clone(),
            ),
            (
                "read+create_new",
                OpenOptions::new().read(true).create_new(true).clone(),
            ),
            (
                "append+truncate",
                OpenOptions::new().append(true).truncate(true).clone(),
            ),
        ];
        for (what, o) in cases {
            let err = o.open(&path).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{what}: {err:?}");
        }
        assert!(!path.exists(), "a rejected open must not create the file");
        // A path with a NUL byte is rejected before the kernel sees it.
        let err = File::open("/tmp/nul\0byte").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    });
}

#[test]
fn path_functions() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fs-paths-{b}"));
        let sub = dir.path("sub");
        fs::create_dir(&sub).await.unwrap();
        assert!(fs::metadata(&sub).await.unwrap().is_dir());
        let err = fs::create_dir(&sub).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);

        let a = sub.join("a.txt");
        fs::write(&a, "first").await.unwrap();
        assert_eq!(fs::read(&a).await.unwrap(), b"first");
        // write replaces (truncates) the old content.
        fs::write(&a, b"2".to_vec()).await.unwrap();
        assert_eq!(fs::read(&a).await.unwrap(), b"2");
        let m = fs::metadata(&a).await.unwrap();
        assert!(m.is_file());
        assert_eq!(m.len(), 1);

        // read of a file bigger than its first guess, and of an empty one.
        let big = pattern(300_000, 9);
        fs::write(dir.path("big"), big.clone()).await.unwrap();
        assert!(fs::read(dir.path("big")).await.unwrap() == big);
        fs::write(dir.path("empty"), Vec::new()).await.unwrap();
        assert!(fs::read(dir.path("empty")).await.unwrap().is_empty());

        // rename moves, replacing the target.
        let c = dir.path("c.txt");
        fs::write(&c, "old").await.unwrap();
        fs::rename(&a, &c).await.unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"2");

        // remove_dir refuses a non-empty directory.
        fs::write(sub.join("keep"), "k").await.unwrap();
        let err = fs::remove_dir(&sub).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::DirectoryNotEmpty, "{err:?}");
        // remove_file refuses a directory.
        let err = fs::remove_file(&sub).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory, "{err:?}");
        fs::remove_file(sub.join("keep")).await.unwrap();
        fs::remove_dir(&sub).await.unwrap();
        assert!(!sub.exists());
        fs::remove_file(&c).await.unwrap();
        assert!(!c.exists());

        // symlink_metadata sees the link, metadata its target.
        let link = dir.path("link");
        std::os::unix::fs::symlink(dir.path("big"), &link).unwrap();
        assert!(fs::symlink_metadata(&link).await.unwrap().is_symlink());
        let m = fs::metadata(&link).await.unwrap();
        assert!(m.is_file());
        assert_eq!(m.len(), 300_000);
    });
}

#[test]
fn missing_paths_are_not_found() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-missing-{b}"));
        let gone = dir.path("gone");
        let nf = |r: io::Result<()>, what: &str| {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{what}: {e:?}");
        };
        nf(File::open(&gone).await.map(drop), "File::open");
        nf(fs::read(&gone).await.map(drop), "fs::read");
        nf(fs::metadata(&gone).await.map(drop), "fs::metadata");
        nf(
            fs::symlink_metadata(&gone).await.map(drop),
            "symlink_metadata",
        );
        nf(fs::remove_file(&gone).await, "remove_file");
        nf(fs::remove_dir(&gone).await, "remove_dir");
        nf(fs::rename(&gone, dir.path("x")).await, "rename");
        nf(
            fs::create_dir(gone.join("child")).await,
            "create_dir in a missing parent",
        );
        nf(
            fs::write(gone.join("f"), "x").await,
            "fs::write in a missing parent",
        );
    });
}

#[test]
fn many_concurrent_reads_of_one_file() {
    const CHUNK: usize = 4096;
    const CHUNKS: usize = 128;
    on_both(30, |b| async move {
        let dir = TempDir::new(&format!("fs-conc-{b}"));
        let path = dir.path("c");
        let data = pattern(CHUNK * CHUNKS, 5);
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).await.unwrap();
        let f = &f;
        // Reversed order of offsets: each result must match its own offset.
        let reads = (0..CHUNKS).rev().map(|i| async move {
            let (res, buf) = f
                .read_exact_at(Vec::with_capacity(CHUNK), (i * CHUNK) as u64)
                .await;
            res.unwrap();
            (i, buf)
        });
        let results = futures_util::future::join_all(reads).await;
        assert_eq!(results.len(), CHUNKS);
        for (i, buf) in results {
            assert!(buf[..] == data[i * CHUNK..(i + 1) * CHUNK], "chunk {i}");
        }
    });
}

#[test]
fn from_std_file() {
    on_both(10, |b| async move {
        let dir = TempDir::new(&format!("fs-std-{b}"));
        let path = dir.path("s");
        std::fs::write(&path, b"from std").unwrap();
        let f = File::from_std(std::fs::File::open(&path).unwrap());
        let (res, buf) = f.read_at(Vec::with_capacity(32), 5).await;
        assert_eq!(res.unwrap(), 3);
        assert_eq!(&buf[..], b"std");
        f.close().await.unwrap();
    });
}
