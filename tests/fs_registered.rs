//! Registered files (`File::register`) on both backends: reads and writes
//! through the slot, closing that really closes (slot emptied, file
//! released), more files than the table holds, slot reuse, ops dropped in
//! flight.
mod common;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::{TempDir, on_both, pattern};
use uringio::Backend;
use uringio::driver;
use uringio::fs::{self, File, OpenOptions};

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

/// Whether someone still holds the open file description `path` was
/// `flock`ed through: a fresh open cannot take the lock then.
fn lock_is_free(path: &std::path::Path) -> bool {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: plain flock on a valid fd.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    r == 0
}

fn expect_registered(b: Backend) -> bool {
    b == Backend::IoUring && driver::features().fixed_files > 0
}

/// Polls `f` once (so its SQE is queued, or its pool job sent).
struct PollOnce<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for PollOnce<'_, F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.0.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    }
}

#[test]
fn reads_and_writes_through_the_slot() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("freg-rw-{b}"));
        let path = dir.path("a.bin");
        let before = driver::stats().registered_files;
        let f = rw_file(&path).await.register();
        assert_eq!(f.is_registered(), expect_registered(b), "{b}");
        if f.is_registered() {
            assert_eq!(driver::stats().registered_files, before + 1);
        }
        let data = pattern(256 * 1024, 7);
        let (res, _) = f.write_all_at(data.clone(), 0).await;
        res.unwrap();
        let (res, _) = f.write_at(b"HELLO".to_vec(), 10).await;
        assert_eq!(res.unwrap(), 5);
        f.sync_data().await.unwrap();
        f.sync_all().await.unwrap();
        let mut want = data.clone();
        want[10..15].copy_from_slice(b"HELLO");

        let (res, buf) = f.read_exact_at(Vec::with_capacity(want.len()), 0).await;
        res.unwrap();
        assert!(buf == want, "{b}: read_exact_at through the slot");
        let (res, buf) = f.read_at(Vec::with_capacity(100), 5).await;
        assert_eq!(res.unwrap(), 100);
        assert_eq!(&buf[..], &want[5..105]);
        // Vectored, both ways.
        let (res, _) = f
            .writev_at(vec![b"ab".to_vec(), b"cde".to_vec()], 1000)
            .await;
        assert_eq!(res.unwrap(), 5);
        want[1000..1005].copy_from_slice(b"abcde");
        let (res, bufs) = f
            .readv_at(vec![Vec::with_capacity(3), Vec::with_capacity(4)], 999)
            .await;
        assert_eq!(res.unwrap(), 7);
        assert_eq!(&bufs[0][..], &want[999..1002]);
        assert_eq!(&bufs[1][..], &want[1002..1006]);
        // End of file and the past-i64::MAX error, as for a plain File.
        let (res, _) = f.read_at(Vec::with_capacity(8), 1 << 30).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = f.read_at(Vec::with_capacity(8), u64::MAX).await;
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        let (res, _) = f
            .read_exact_at(Vec::with_capacity(64), want.len() as u64 - 10)
            .await;
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        // Deref reaches the rest of File.
        assert_eq!(f.metadata().await.unwrap().len(), want.len() as u64);
        f.close().await.unwrap();
        assert_eq!(driver::stats().registered_files, before);
        assert!(std::fs::read(&path).unwrap() == want);
    });
}

#[test]
fn closing_really_closes_and_slots_are_reused() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("freg-close-{b}"));
        let before = driver::stats().registered_files;
        for (i, how) in ["drop", "close", "unregister"].iter().enumerate() {
            let path = dir.path(&format!("{how}.bin"));
            let f = rw_file(&path).await.register();
            // SAFETY: plain flock on the file's valid fd.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            assert_eq!(r, 0);
            assert!(!lock_is_free(&path));
            let (res, _) = f.write_all_at(pattern(4096, i as u64), 0).await;
            res.unwrap();
            match *how {
                "drop" => drop(f),
                "close" => f.close().await.unwrap(),
                _ => {
                    let plain = f.unregister();
                    assert_eq!(driver::stats().registered_files, before);
                    // The plain file still works, naming its fd.
                    let (res, buf) = plain.read_at(Vec::with_capacity(4096), 0).await;
                    assert_eq!(res.unwrap(), 4096);
                    assert!(buf == pattern(4096, i as u64));
                    assert!(!lock_is_free(&path), "unregister must not close");
                    drop(plain);
                }
            }
            // Slot emptied and the file description released: the ring's
            // table holds no reference that would keep the lock.
            assert_eq!(driver::stats().registered_files, before, "{b} {how}");
            assert!(lock_is_free(&path), "{b} {how}: file still open");
        }
        // A reused slot names the new file, never the old one.
        let a = dir.path("a.bin");
        let c = dir.path("c.bin");
        std::fs::write(&a, b"AAAA").unwrap();
        std::fs::write(&c, b"CCCC").unwrap();
        for _ in 0..3 {
            let fa = File::open(&a).await.unwrap().register();
            let (res, buf) = fa.read_at(Vec::with_capacity(4), 0).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(&buf[..], b"AAAA");
            drop(fa);
            let fc = File::open(&c).await.unwrap().register();
            let (res, buf) = fc.read_at(Vec::with_capacity(4), 0).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(&buf[..], b"CCCC", "{b}: a reused slot read the old file");
        }
    });
}

#[test]
fn more_files_than_the_table_holds() {
    on_both(60, |b| async move {
        let dir = TempDir::new(&format!("freg-many-{b}"));
        let path = dir.path("m.bin");
        let data = pattern(64 * 1024, 3);
        std::fs::write(&path, &data).unwrap();
        let table = driver::features().fixed_files as usize;
        let before = driver::stats().registered_files as usize;
        // Enough files to fill the table (whatever else uses it) and more;
        // bounded by the fd limit.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let room = (lim.rlim_cur as usize).saturating_sub(common::open_fds() + 64);
        let n = (table + 20).min(room).max(20);
        if n < table + 1 {
            eprintln!(
                "NOTE more_files_than_the_table_holds: fd limit allows {n} files, table {table}"
            );
        }
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            files.push(File::open(&path).await.unwrap().register());
        }
        let registered = files.iter().filter(|f| f.is_registered()).count();
        if b == Backend::IoUring && table > 0 {
            assert_eq!(registered, (table - before).min(n), "{b}");
            assert_eq!(
                driver::stats().registered_files as usize,
                before + registered
            );
        } else {
            assert_eq!(registered, 0);
        }
        // Registered or not, every file reads what is there.
        let mut checked = 0;
        for (i, f) in files.iter().enumerate() {
            if i % 97 != 0 && i + 25 < n {
                continue;
            }
            let off = (i * 4096) % data.len();
            let (res, buf) = f.read_at(Vec::with_capacity(4096), off as u64).await;
            assert_eq!(res.unwrap(), 4096);
            assert!(buf[..] == data[off..off + 4096], "{b}: file {i}");
            checked += 1;
        }
        assert!(checked >= n.min(20));
        // Freed slots go to the next files.
        files.truncate(n / 2);
        let again = File::open(&path).await.unwrap().register();
        assert_eq!(again.is_registered(), b == Backend::IoUring && table > 0);
        drop(again);
        drop(files);
        assert_eq!(driver::stats().registered_files as usize, before);
    });
}

#[test]
fn dropped_in_flight_then_closed() {
    on_both(30, |b| async move {
        let dir = TempDir::new(&format!("freg-drop-{b}"));
        let path = dir.path("d.bin");
        let data = pattern(1 << 20, 9);
        std::fs::write(&path, &data).unwrap();
        let before = driver::stats().registered_files;
        for round in 0..4 {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .await
                .unwrap()
                .register();
            {
                // Reads and writes started, some submitted by a loop turn,
                // then dropped with the file right after.
                let mut reads: Vec<_> = (0..32)
                    .map(|i| Box::pin(f.read_at(Vec::with_capacity(32 * 1024), i * 32 * 1024)))
                    .collect();
                let mut writes: Vec<_> = (0..8)
                    .map(|i| {
                        let at = i * 4096;
                        let chunk = data[at..at + 4096].to_vec();
                        Box::pin(f.write_at(chunk, at as u64))
                    })
                    .collect();
                for r in reads.iter_mut() {
                    if let Some((res, buf)) = (PollOnce(r.as_mut())).await {
                        assert!(res.is_ok(), "{res:?}");
                        drop(buf);
                    }
                }
                for w in writes.iter_mut() {
                    let _ = PollOnce(w.as_mut()).await;
                }
                if round % 2 == 1 {
                    uringio::yield_now().await;
                }
            }
            drop(f);
            assert_eq!(
                driver::stats().registered_files,
                before,
                "{b} round {round}"
            );
        }
        // The loop keeps working, and the file holds what was written.
        let f = File::open(&path).await.unwrap().register();
        let (res, buf) = f.read_exact_at(Vec::with_capacity(data.len()), 0).await;
        res.unwrap();
        assert!(buf == data, "{b}: the dropped writes wrote the same bytes");
        drop(f);
        fs::remove_file(&path).await.unwrap();
    });
}

#[test]
fn fixed_buffers_through_the_slot() {
    // `RegisteredFile::read_fixed_at`/`write_fixed_at` name both the
    // buffer's and the file's slot. Proof that the file's slot is named:
    // after `dup2` makes the fd number refer to another file, ops through
    // the slot still reach the registered file (io_uring), while plain fd
    // ops (epoll, or no slot) reach the other one.
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("freg-fixed-{b}"));
        let (pa, pb) = (dir.path("a.bin"), dir.path("b.bin"));
        std::fs::write(&pa, pattern(8192, 1)).unwrap();
        std::fs::write(&pb, pattern(8192, 2)).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pa)
            .await
            .unwrap()
            .register();
        let pool = uringio::buf::FixedBufPool::new(2, 4096).unwrap();
        // Before the swap: both reach a.bin.
        let (res, buf) = f.read_fixed_at(pool.next().await, 4096).await;
        assert_eq!(res.unwrap(), 4096);
        assert_eq!(&buf[..], &pattern(8192, 1)[4096..]);
        drop(buf);

        let other = std::fs::File::open(&pb).unwrap();
        // SAFETY: plain dup2 onto an fd this test owns (through `f`).
        let r = unsafe { libc::dup2(other.as_raw_fd(), f.as_raw_fd()) };
        assert!(r >= 0);
        let slot = f.is_registered();
        let (want, name) = if slot {
            (pattern(8192, 1), "a.bin")
        } else {
            (pattern(8192, 2), "b.bin")
        };
        let (res, buf) = f.read_fixed_at(pool.next().await, 0).await;
        assert_eq!(res.unwrap(), 4096);
        assert!(
            buf[..] == want[..4096],
            "{b}: read_fixed_at should read {name}"
        );
        drop(buf);

        // A write through the slot lands in a.bin; the fd now names a
        // read-only b.bin, so without a slot it is EBADF.
        let mut w = pool.next().await;
        w.extend_from_slice(&[0xEE; 4096]).unwrap();
        let (res, w) = f.write_fixed_at(w, 0).await;
        if slot {
            assert_eq!(res.unwrap(), 4096);
            let (res, r) = f.read_fixed_at(pool.next().await, 0).await;
            assert_eq!(res.unwrap(), 4096);
            assert!(r.iter().all(|&x| x == 0xEE));
        } else {
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF), "{b}");
        }
        drop(w);
        drop(f);
        drop(other);
        let a = std::fs::read(&pa).unwrap();
        assert_eq!(a[0] == 0xEE, slot, "{b}");
        assert_eq!(std::fs::read(&pb).unwrap(), pattern(8192, 2));
    });
}
