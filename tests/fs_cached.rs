//! Cached file reads on both backends. On epoll a read first tries
//! `preadv2(RWF_NOWAIT)` on the loop thread and goes to the pool only for
//! what the page cache does not hold: same results as a plain pread
//! (short reads at the end of the file included), and a task reading a
//! cached file in a loop still lets the others run.
mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::{TempDir, on_both, pattern};
use uringio::Backend;
use uringio::driver;
use uringio::fs::{File, OpenOptions};

#[test]
fn cached_reads_match_pread() {
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fcache-{b}"));
        let path = dir.path("c.bin");
        let data = pattern(300_000, 5);
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).await.unwrap();
        let before = driver::stats();
        for (off, len) in [
            (0usize, 4096usize),
            (1, 1),
            (4095, 2),
            (123_457, 65_536),
            (299_000, 4096), // crosses the end: 1000 bytes
            (300_000, 10),   // at the end: 0
            (400_000, 10),   // past the end: 0
            (0, 1 << 20),    // the whole file, buffer larger
        ] {
            let (res, buf) = f.read_at(Vec::with_capacity(len), off as u64).await;
            let want = &data[off.min(data.len())..(off + len).min(data.len())];
            assert_eq!(res.unwrap(), want.len(), "{b} at {off}+{len}");
            assert!(&buf[..] == want, "{b} at {off}+{len}");
        }
        let (res, buf) = f.read_exact_at(Vec::with_capacity(data.len()), 0).await;
        res.unwrap();
        assert!(buf == data);
        let after = driver::stats();
        if b == Backend::Epoll {
            assert!(after.nonblocking_ops > before.nonblocking_ops, "{b}");
        } else {
            assert_eq!(after.nonblocking_ops, before.nonblocking_ops);
        }
        // A file opened for writing, read after it was written.
        let g = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path("w.bin"))
            .await
            .unwrap();
        let (res, _) = g.write_all_at(data[..10_000].to_vec(), 0).await;
        res.unwrap();
        let (res, buf) = g.read_at(Vec::with_capacity(20_000), 0).await;
        assert_eq!(res.unwrap(), 10_000);
        assert!(buf[..] == data[..10_000]);
        // Errors are the pool's: reading a write-only file.
        let h = OpenOptions::new()
            .write(true)
            .open(dir.path("w.bin"))
            .await
            .unwrap();
        let (res, _) = h.read_at(Vec::with_capacity(16), 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF), "{b}");
    });
}

#[test]
fn a_task_reading_a_cached_file_lets_others_run() {
    on_both(30, |b| async move {
        let dir = TempDir::new(&format!("fcache-fair-{b}"));
        let path = dir.path("f.bin");
        std::fs::write(&path, pattern(1 << 20, 1)).unwrap();
        let f = File::open(&path).await.unwrap();
        let ticks = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        let t = {
            let (ticks, stop) = (ticks.clone(), stop.clone());
            uringio::spawn(async move {
                while !stop.get() {
                    ticks.set(ticks.get() + 1);
                    uringio::yield_now().await;
                }
            })
        };
        uringio::yield_now().await;
        let mut buf = Vec::with_capacity(4096);
        let mut seen_progress = false;
        for i in 0..20_000u64 {
            let before = ticks.get();
            buf.clear();
            let (res, b2) = f.read_at(buf, (i * 4096) % (1 << 20)).await;
            buf = b2;
            assert_eq!(res.unwrap(), 4096);
            if ticks.get() > before {
                seen_progress = true;
            }
        }
        stop.set(true);
        t.await.unwrap();
        assert!(seen_progress, "{b}: the other task never ran");
        assert!(
            ticks.get() > 10,
            "{b}: the other task ran {} times",
            ticks.get()
        );
    });
}

#[test]
fn cached_fixed_reads_match_pread() {
    // `read_fixed_at` on a buffered file: on epoll the page cache serves
    // it on the loop thread too (RWF_NOWAIT), with pread's results (short
    // at the end, 0 past it, EBADF on a write-only file); plain and
    // registered files alike.
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fcache-fixed-{b}"));
        let path = dir.path("c.bin");
        let data = pattern(300_000, 9);
        std::fs::write(&path, &data).unwrap();
        let pool = uringio::buf::FixedBufPool::new(2, 65_536).unwrap();
        let plain = File::open(&path).await.unwrap();
        let reg = File::open(&path).await.unwrap().register();
        let before = driver::stats();
        for (off, want_len) in [
            (0usize, 65_536usize),
            (123_457, 65_536),
            (299_000, 1000),
            (300_000, 0),
            (400_000, 0),
        ] {
            for which in ["plain", "registered"] {
                let buf = pool.next().await;
                let (res, buf) = if which == "plain" {
                    plain.read_fixed_at(buf, off as u64).await
                } else {
                    reg.read_fixed_at(buf, off as u64).await
                };
                assert_eq!(res.unwrap(), want_len, "{b} {which} at {off}");
                assert!(buf[..] == data[off.min(data.len())..][..want_len], "{b}");
            }
        }
        let after = driver::stats();
        if b == Backend::Epoll {
            // All but the two reads that cross the end (short: the pool
            // reads the rest).
            let n = after.nonblocking_ops - before.nonblocking_ops;
            assert_eq!(n, 8, "{b}");
        } else {
            assert_eq!(after.nonblocking_ops, before.nonblocking_ops);
        }
        let h = OpenOptions::new().write(true).open(&path).await.unwrap();
        let (res, _) = h.read_fixed_at(pool.next().await, 0).await;
        assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EBADF), "{b}");
    });
}

#[test]
fn cached_read_at_is_served_inline_on_epoll() {
    // Regression: `read_at` (plain and registered) is wrapped in the
    // O_DIRECT alignment check; the wrapper must keep the page-cache path.
    on_both(20, |b| async move {
        let dir = TempDir::new(&format!("fcache-inline-{b}"));
        let path = dir.path("c.bin");
        let data = pattern(65_536, 4);
        std::fs::write(&path, &data).unwrap();
        let plain = File::open(&path).await.unwrap();
        let reg = File::open(&path).await.unwrap().register();
        let before = driver::stats().nonblocking_ops;
        for off in [0u64, 4096, 60_000] {
            let (res, buf) = plain.read_at(Vec::with_capacity(4096), off).await;
            let want = &data[off as usize..(off as usize + 4096).min(data.len())];
            assert_eq!(res.unwrap(), want.len());
            assert!(&buf[..] == want);
            let (res, buf) = reg.read_at(Vec::with_capacity(4096), off).await;
            assert_eq!(res.unwrap(), want.len());
            assert!(&buf[..] == want);
        }
        let n = driver::stats().nonblocking_ops - before;
        let want = if b == Backend::Epoll { 6 } else { 0 };
        assert_eq!(n, want, "{b}");
    });
}
