//! Storage buffers on both backends: `AlignedBuf` and `O_DIRECT` round
//! trips, the misaligned-request refusal, `FixedBufPool` (exhaustion,
//! return, waiting, two pools, table growth, pools dropped with buffers
//! out, the wrong loop), the `unsafe` `IoBuf` impls at their boundaries,
//! and the `RLIMIT_MEMLOCK` refusal.
mod common;

use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use common::{TempDir, on_both, pattern};
use uringio::Backend;
use uringio::buf::{AlignedBuf, FixedBuf, FixedBufPool, IoBuf, IoBufMut};
use uringio::fs::{DioSource, File, OpenOptions};

/// A temp dir whose filesystem takes `O_DIRECT` (tmpfs refuses it before
/// 6.6): the system temp dir, else cargo's target tmp dir. `None`, with a
/// visible SKIP line, if neither does.
fn direct_dir(tag: &str) -> Option<TempDir> {
    let candidates = [
        TempDir::new(tag),
        TempDir(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("uringio-{tag}-{}", std::process::id())),
        ),
    ];
    for d in candidates {
        let _ = std::fs::create_dir_all(&d.0);
        use std::os::unix::fs::OpenOptionsExt;
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(d.path("probe"))
            .is_ok();
        if ok {
            return Some(d);
        }
    }
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(
        format!("SKIP storage_bufs ({tag}): no temp dir here takes O_DIRECT\n").as_bytes(),
    );
    None
}

async fn open_direct(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .direct(true)
        .open(path)
        .await
        .unwrap()
}

fn assert_invalid(e: &io::Error, words: &[&str]) {
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
}

#[test]
fn o_direct_round_trip_with_aligned_bufs() {
    let Some(dir) = direct_dir("dio") else { return };
    on_both(20, |b| {
        let path = dir.path(&format!("aligned-{b}"));
        async move {
            let f = open_direct(&path).await;
            let a = f.dio_alignment().expect("opened with direct(true)");
            assert!(
                a.mem.is_power_of_two() && a.offset.is_power_of_two(),
                "{a:?}"
            );
            // The kernel here (6.1+ on ext4/xfs) reports STATX_DIOALIGN, and
            // Metadata shows the same numbers.
            let m = f.metadata().await.unwrap();
            if a.source == DioSource::Statx {
                assert_eq!(m.dio_mem_align(), Some(a.mem));
                assert_eq!(m.dio_offset_align(), Some(a.offset));
            }
            let align = (a.mem.max(a.offset) as usize).max(4096);
            let data = pattern(64 * 1024, 1);
            let w = AlignedBuf::from_slice(&data, align).unwrap();
            let (res, w) = f.write_all_at(w, 4096).await;
            res.unwrap();
            assert_eq!(&w[..], &data[..]);
            let r = AlignedBuf::new(64 * 1024, align).unwrap();
            let (res, r) = f.read_exact_at(r, 4096).await;
            res.unwrap();
            assert_eq!(&r[..], &data[..]);
            // read_at fills the spare capacity and stops at the end.
            let (res, r2) = f
                .read_at(AlignedBuf::new(128 * 1024, align).unwrap(), 4096)
                .await;
            assert_eq!(res.unwrap(), 64 * 1024);
            assert_eq!(&r2[..], &data[..]);
            // Past the end: Ok(0), buffer untouched.
            let (res, r3) = f
                .read_at(AlignedBuf::new(4096, align).unwrap(), 1 << 20)
                .await;
            assert_eq!(res.unwrap(), 0);
            assert!(r3.is_empty());
            // Vectored, two aligned buffers.
            let halves = vec![
                AlignedBuf::from_slice(&data[..8192], align).unwrap(),
                AlignedBuf::from_slice(&data[8192..16384], align).unwrap(),
            ];
            let (res, _) = f.writev_at(halves, 0).await;
            assert_eq!(res.unwrap(), 16384);
            let bufs = vec![
                AlignedBuf::new(4096, align).unwrap(),
                AlignedBuf::new(12288, align).unwrap(),
            ];
            let (res, bufs) = f.readv_at(bufs, 0).await;
            assert_eq!(res.unwrap(), 16384);
            assert_eq!(&bufs[0][..], &data[..4096]);
            assert_eq!(&bufs[1][..], &data[4096..16384]);
            // read_exact_at over the end of a file whose size is not a
            // multiple of the alignment: UnexpectedEof, bytes kept.
            f.set_len(4096 + 100).await.unwrap();
            let (res, r) = f
                .read_exact_at(AlignedBuf::new(8192, align).unwrap(), 0)
                .await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(r.len(), 4196);
            assert_eq!(&r[..4096], &data[..4096]);
            f.close().await.unwrap();
        }
    });
}

#[test]
fn o_direct_round_trip_with_fixed_bufs() {
    let Some(dir) = direct_dir("dio-fixed") else {
        return;
    };
    on_both(20, |b| {
        let path = dir.path(&format!("fixed-{b}"));
        async move {
            let f = open_direct(&path).await;
            let pool = FixedBufPool::new(4, 16384).unwrap();
            assert_eq!(pool.is_registered(), b == Backend::IoUring, "{b}");
            assert_eq!((pool.len(), pool.available()), (4, 4));
            let data = pattern(16384 * 3, 2);
            for (i, chunk) in data.chunks(16384).enumerate() {
                let mut w = pool.try_next().unwrap();
                assert!(w.is_empty());
                w.extend_from_slice(chunk).unwrap();
                let (res, w) = f.write_fixed_at(w, (i * 16384) as u64).await;
                assert_eq!(res.unwrap(), 16384);
                assert_eq!(&w[..], chunk);
            }
            assert_eq!(pool.available(), 4);
            for (i, chunk) in data.chunks(16384).enumerate().rev() {
                let r = pool.next().await;
                let (res, r) = f.read_fixed_at(r, (i * 16384) as u64).await;
                assert_eq!(res.unwrap(), 16384);
                assert_eq!(&r[..], chunk);
            }
            // A FixedBuf is an ordinary buffer for the other ops too.
            let (res, r) = f.read_exact_at(pool.try_next().unwrap(), 16384).await;
            res.unwrap();
            assert_eq!(&r[..], &data[16384..32768]);
            // Past the end: Ok(0).
            let (res, r) = f.read_fixed_at(r.into_empty(), 1 << 20).await;
            assert_eq!(res.unwrap(), 0);
            assert!(r.is_empty());
            f.close().await.unwrap();
            // And on a buffered file, at any offset.
            let g = File::create(path.with_extension("buffered")).await.unwrap();
            let mut w = pool.try_next().unwrap();
            w.extend_from_slice(b"hello fixed").unwrap();
            let (res, _) = g.write_fixed_at(w, 3).await;
            assert_eq!(res.unwrap(), 11);
            g.close().await.unwrap();
            assert_eq!(
                std::fs::read(path.with_extension("buffered")).unwrap(),
                b"\0\0\0hello fixed"
            );
        }
    });
}

/// Helper: a FixedBuf emptied (length 0) for a new read.
trait IntoEmpty {
    fn into_empty(self) -> Self;
}

impl IntoEmpty for FixedBuf {
    fn into_empty(mut self) -> FixedBuf {
        self.clear();
        self
    }
}

#[test]
fn misaligned_direct_requests_are_refused_before_the_kernel() {
    let Some(dir) = direct_dir("dio-misaligned") else {
        return;
    };
    on_both(20, |b| {
        let path = dir.path(&format!("mis-{b}"));
        async move {
            let f = open_direct(&path).await;
            let a = f.dio_alignment().unwrap();
            let off = a.offset.to_string();
            let mem = a.mem.to_string();
            let align = 4096usize.max(a.offset as usize);
            let good = pattern(align, 3);
            let (res, _) = f
                .write_all_at(AlignedBuf::from_slice(&good, align).unwrap(), 0)
                .await;
            res.unwrap();

            // Offset.
            let (res, buf) = f.read_at(AlignedBuf::new(align, align).unwrap(), 100).await;
            assert_invalid(&res.unwrap_err(), &["O_DIRECT read_at", "offset 100", &off]);
            assert!(buf.is_empty(), "{b}: the buffer comes back untouched");
            let (res, _) = f
                .write_at(AlignedBuf::from_slice(&good, align).unwrap(), 1)
                .await;
            assert_invalid(&res.unwrap_err(), &["write_at", "offset 1 ", &off]);
            // Address: a window starting one byte in.
            if a.mem > 1 {
                let s = AlignedBuf::new(align * 2, align)
                    .unwrap()
                    .slice(1..align + 1);
                let (res, s) = f.read_at(s, 0).await;
                assert_invalid(&res.unwrap_err(), &["read_at", "address", &mem]);
                assert_eq!(s.into_inner().len(), 0);
                let (res, _) = f
                    .read_exact_at(
                        AlignedBuf::new(align * 2, align)
                            .unwrap()
                            .slice(1..align + 1),
                        0,
                    )
                    .await;
                assert_invalid(&res.unwrap_err(), &["read_exact_at", "address"]);
            }
            // Length.
            let (res, _) = f.read_at(AlignedBuf::new(1000, align).unwrap(), 0).await;
            assert_invalid(&res.unwrap_err(), &["read_at", "length 1000", &off]);
            let (res, _) = f
                .write_all_at(AlignedBuf::from_slice(&good[..100], align).unwrap(), 0)
                .await;
            assert_invalid(&res.unwrap_err(), &["write_all_at", "length 100", &off]);
            // Vectored: one bad segment spoils the request.
            let (res, _) = f
                .readv_at(
                    vec![
                        AlignedBuf::new(align, align).unwrap(),
                        AlignedBuf::new(100, align).unwrap(),
                    ],
                    0,
                )
                .await;
            assert_invalid(&res.unwrap_err(), &["readv_at", "length 100"]);
            let (res, _) = f
                .writev_at(vec![AlignedBuf::from_slice(&good, align).unwrap()], 7)
                .await;
            assert_invalid(&res.unwrap_err(), &["writev_at", "offset 7"]);
            // Fixed buffers.
            let pool = FixedBufPool::new(2, align).unwrap();
            let (res, r) = f.read_fixed_at(pool.try_next().unwrap(), 512 + 1).await;
            assert_invalid(&res.unwrap_err(), &["read_fixed_at", "offset"]);
            assert!(r.is_empty());
            let mut w = pool.try_next().unwrap();
            w.extend_from_slice(&good[..100]).unwrap();
            let (res, _) = f.write_fixed_at(w, 0).await;
            assert_invalid(&res.unwrap_err(), &["write_fixed_at", "length 100"]);
            // Nothing reached the file.
            f.close().await.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), good);

            // The same requests on a buffered file are fine.
            let g = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .await
                .unwrap();
            assert!(g.dio_alignment().is_none());
            let (res, _) = g.write_at(b"xyz".to_vec(), 1).await;
            assert_eq!(res.unwrap(), 3);
            let (res, buf) = g.read_at(Vec::with_capacity(10), 1).await;
            assert_eq!(res.unwrap(), 10);
            assert_eq!(&buf[..3], b"xyz");
            g.close().await.unwrap();
        }
    });
}

#[test]
fn from_std_learns_o_direct() {
    let Some(dir) = direct_dir("dio-std") else {
        return;
    };
    on_both(10, |b| {
        let path = dir.path(&format!("std-{b}"));
        async move {
            use std::os::unix::fs::OpenOptionsExt;
            let std_file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .unwrap();
            let f = File::from_std(std_file);
            assert!(f.dio_alignment().is_some());
            let (res, _) = f.read_at(AlignedBuf::new(4096, 4096).unwrap(), 3).await;
            assert_invalid(&res.unwrap_err(), &["offset 3"]);
            let plain = File::from_std(std::fs::File::open(&path).unwrap());
            assert!(plain.dio_alignment().is_none());
        }
    });
}

#[test]
fn pool_exhaustion_waiting_and_return() {
    on_both(10, |_b| async move {
        let pool = FixedBufPool::new(2, 4096).unwrap();
        let a = pool.try_next().unwrap();
        let c = pool.try_next().unwrap();
        assert_ne!(a.index(), c.index());
        assert!(a.is_from(&pool));
        assert!(pool.try_next().is_none());
        assert_eq!(pool.available(), 0);
        // Two waiters, served in order as buffers come back.
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for who in 0..2 {
            let (pool, order) = (pool.clone(), order.clone());
            tasks.push(uringio::spawn(async move {
                let buf = pool.next().await;
                order.borrow_mut().push((who, buf.index()));
                buf
            }));
        }
        common::settle().await;
        assert!(order.borrow().is_empty(), "nobody got a buffer yet");
        let ai = a.index();
        drop(a);
        common::until(|| order.borrow().len() == 1).await;
        assert_eq!(order.borrow()[0], (0, ai));
        // A waiter dropped while queued gives up its place...
        let mut third = Box::pin(pool.next());
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        drop(third);
        let ci = c.index();
        drop(c);
        common::until(|| order.borrow().len() == 2).await;
        assert_eq!(order.borrow()[1], (1, ci));
        let bufs: Vec<FixedBuf> = futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(pool.available(), 0);
        drop(bufs);
        assert_eq!(pool.available(), 2);
        // ...and one woken but dropped before taking passes the turn on.
        let x = pool.try_next().unwrap();
        let y = pool.try_next().unwrap();
        let mut w1 = Box::pin(pool.next());
        let w2 = {
            let pool = pool.clone();
            uringio::spawn(async move { pool.next().await.index() })
        };
        assert!(futures_util::poll!(w1.as_mut()).is_pending());
        common::settle().await; // w2 queues behind w1
        let xi = x.index();
        drop(x); // wakes w1, which is dropped without polling
        drop(w1);
        assert_eq!(w2.await.unwrap(), xi);
        drop(y);
        assert_eq!(pool.available(), 2);
        // A buffer comes back empty, whatever it held.
        let mut z = pool.try_next().unwrap();
        z.extend_from_slice(b"left over").unwrap();
        drop(z);
        let z = pool.try_next().unwrap();
        assert!(z.is_empty());
        assert_eq!(z.capacity(), 4096);
    });
}

#[test]
fn pool_shapes_are_checked() {
    on_both(10, |_b| async move {
        for (n, size) in [(0, 4096), (16385, 1), (1, 0), (1, (1 << 30) + 1)] {
            let e = FixedBufPool::new(n, size).unwrap_err();
            assert_invalid(&e, &["FixedBuf"]);
        }
        let e = FixedBufPool::from_bufs(Vec::new()).unwrap_err();
        assert_invalid(&e, &["1..=16384"]);
        // Pools over caller's aligned buffers, of different sizes.
        let p = FixedBufPool::from_bufs([
            AlignedBuf::new(512, 512).unwrap(),
            AlignedBuf::from_slice(b"kept", 64).unwrap(),
        ])
        .unwrap();
        let caps: Vec<usize> = [p.try_next().unwrap(), p.try_next().unwrap()]
            .iter()
            .map(|b| b.capacity())
            .collect();
        assert_eq!(caps, vec![512, 64]);
    });
}

#[test]
fn two_pools_growth_and_big_pools() {
    let dir = TempDir::new("fixed-pools");
    on_both(30, |b| {
        let path = dir.path(&format!("pools-{b}"));
        async move {
            let data = pattern(1 << 20, 4);
            std::fs::write(&path, &data).unwrap();
            let f = File::open(&path).await.unwrap();
            // 40 + 40 slots: the table (64 at first) grows under pool `a`,
            // which is re-registered in place; then a pool of 300 (more
            // than one update call).
            let a = FixedBufPool::new(40, 4096).unwrap();
            let ra = a.try_next().unwrap();
            let pending = f.read_fixed_at(ra, 0);
            let c = FixedBufPool::new(40, 4096).unwrap();
            let big = FixedBufPool::new(300, 4096).unwrap();
            for p in [&a, &c, &big] {
                assert_eq!(p.is_registered(), b == Backend::IoUring);
            }
            let (res, ra) = pending.await;
            assert_eq!(res.unwrap(), 4096);
            assert_eq!(&ra[..], &data[..4096]);
            drop(ra);
            let mut held = Vec::new();
            for (k, p) in [&a, &c, &big].into_iter().enumerate() {
                for _ in 0..p.len() {
                    held.push(p.try_next().unwrap());
                }
                // Read with the last buffer of each pool.
                let r = held.pop().unwrap();
                let at = (k as u64 + 1) * 8192;
                let (res, r) = f.read_fixed_at(r, at).await;
                assert_eq!(res.unwrap(), 4096);
                assert_eq!(&r[..], &data[at as usize..at as usize + 4096]);
            }
            drop(held);
            // Pools dropped in any order; their slots come back and new
            // pools use them.
            drop(c);
            drop(a);
            let d = FixedBufPool::new(64, 4096).unwrap();
            let r = d.try_next().unwrap();
            let (res, r) = f.read_fixed_at(r, 4096).await;
            assert_eq!(res.unwrap(), 4096);
            assert_eq!(&r[..], &data[4096..8192]);
            drop(big);
            f.close().await.unwrap();
        }
    });
}

#[test]
fn pool_dropped_while_buffers_are_out() {
    let dir = TempDir::new("fixed-drop-pool");
    on_both(10, |b| {
        let path = dir.path(&format!("f-{b}"));
        async move {
            let data = pattern(16384, 5);
            std::fs::write(&path, &data).unwrap();
            let f = File::open(&path).await.unwrap();
            let pool = FixedBufPool::new(2, 8192).unwrap();
            let x = pool.try_next().unwrap();
            let y = pool.try_next().unwrap();
            drop(pool);
            // The buffers still work (the pool's memory and slots live on).
            let (res, x) = f.read_fixed_at(x, 0).await;
            assert_eq!(res.unwrap(), 8192);
            assert_eq!(&x[..], &data[..8192]);
            drop(x);
            let op = f.read_fixed_at(y, 8192);
            let (res, y) = op.await;
            assert_eq!(res.unwrap(), 8192);
            assert_eq!(&y[..], &data[8192..]);
            drop(y); // the last one: slots emptied, memory freed
            let again = FixedBufPool::new(2, 8192).unwrap();
            let (res, z) = f.read_fixed_at(again.try_next().unwrap(), 0).await;
            assert_eq!(res.unwrap(), 8192);
            assert_eq!(&z[..], &data[..8192]);
        }
    });
}

#[test]
fn fixed_buf_on_another_loop_is_an_error() {
    let dir = TempDir::new("fixed-other-loop");
    let path = dir.path("f");
    std::fs::write(&path, pattern(8192, 6)).unwrap();
    for b in common::backends() {
        let mut first = common::runner(b);
        let (pool, buf) = first.run(async {
            let pool = FixedBufPool::new(2, 4096).unwrap();
            let buf = pool.try_next().unwrap();
            (pool, buf)
        });
        let p = path.clone();
        let mut second = common::runner(b);
        let buf = second.run(async move {
            let f = File::open(&p).await.unwrap();
            let (res, buf) = f.read_fixed_at(buf, 0).await;
            assert_invalid(&res.unwrap_err(), &["another loop", "FixedBufPool"]);
            let (res, buf) = f.write_fixed_at(buf, 0).await;
            assert_invalid(&res.unwrap_err(), &["another loop"]);
            // As a plain buffer it works anywhere.
            let (res, buf) = f.read_at(buf, 0).await;
            assert_eq!(res.unwrap(), 4096);
            buf
        });
        drop(second);
        // Back on its own loop it works; and after that loop is gone, a
        // new loop (maybe at the same address) still refuses it.
        let p = path.clone();
        let buf = first.run(async move {
            let f = File::open(&p).await.unwrap();
            let (res, buf) = f.read_fixed_at(buf.into_empty(), 0).await;
            assert_eq!(res.unwrap(), 4096);
            buf
        });
        drop(first);
        let mut third = common::runner(b);
        let p = path.clone();
        third.run(async move {
            let f = File::open(&p).await.unwrap();
            let (res, _buf) = f.read_fixed_at(buf.into_empty(), 0).await;
            assert_invalid(&res.unwrap_err(), &["another loop"]);
        });
        drop(pool);
    }
}

#[test]
fn io_buf_impls_at_their_boundaries() {
    let dir = TempDir::new("fixed-bounds");
    on_both(10, |b| {
        let path = dir.path(&format!("f-{b}"));
        async move {
            let data = pattern(8192, 7);
            std::fs::write(&path, &data).unwrap();
            let f = File::open(&path).await.unwrap();
            let pool = FixedBufPool::new(1, 4096).unwrap();

            // Full: no spare capacity is an InvalidInput error, buffer back.
            let mut full = AlignedBuf::new(16, 8).unwrap();
            full.resize(16, 9).unwrap();
            let (res, full) = f.read_at(full, 0).await;
            assert_invalid(&res.unwrap_err(), &["spare capacity"]);
            assert_eq!(&full[..], &[9u8; 16]);
            let mut fb = pool.try_next().unwrap();
            fb.resize(4096, 1).unwrap();
            let (res, mut fb) = f.read_fixed_at(fb, 0).await;
            assert_invalid(&res.unwrap_err(), &["spare capacity"]);
            assert_eq!(fb.len(), 4096);
            assert!(fb.resize(4097, 0).is_err());
            assert!(fb.extend_from_slice(b"x").is_err());
            // Overwrite offers the whole capacity again.
            let (res, o) = f.read_at(full.overwrite(), 100).await;
            assert_eq!(res.unwrap(), 16);
            assert_eq!(&o[..], &data[100..116]);

            // Empty: a write of nothing writes nothing.
            let g = OpenOptions::new().write(true).open(&path).await.unwrap();
            let (res, _) = g.write_at(AlignedBuf::new(8, 8).unwrap(), 0).await;
            assert_eq!(res.unwrap(), 0);
            fb.clear();
            let (res, fb) = g.write_fixed_at(fb, 0).await;
            assert_eq!(res.unwrap(), 0);

            // A window past the data: the gap is zero-filled, the data
            // stays contiguous.
            let mut a = AlignedBuf::new(64, 64).unwrap();
            a.extend_from_slice(b"ab").unwrap();
            let (res, s) = f.read_at(a.slice(32..48), 0).await;
            assert_eq!(res.unwrap(), 16);
            let a = s.into_inner();
            assert_eq!(a.len(), 48);
            assert_eq!(&a[..2], b"ab");
            assert!(a[2..32].iter().all(|&x| x == 0));
            assert_eq!(&a[32..48], &data[..16]);
            // A FixedBuf slice too (through the plain ops).
            let (res, s) = f.read_at(fb.slice(4000..4096), 0).await;
            assert_eq!(res.unwrap(), 96);
            let fb = s.into_inner();
            assert_eq!(fb.len(), 4096);
            assert_eq!(&fb[4000..], &data[..96]);
            drop(fb);

            // A slice past the end panics (before any I/O).
            let r = std::panic::catch_unwind(|| AlignedBuf::new(8, 8).unwrap().slice(4..9));
            assert!(r.is_err());
            let fb = pool.try_next().unwrap();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fb.slice(..=4096)));
            assert!(r.is_err()); // fb went back to the pool as it unwound
            assert_eq!(pool.available(), 1);

            // Moved while in flight: the op's data moves, the memory not.
            let r = pool.try_next().unwrap();
            let (res, r) = {
                let mut op = Box::pin(f.read_fixed_at(r, 4096));
                let first = futures_util::poll!(op.as_mut());
                let moved = Box::new(op);
                match first {
                    std::task::Poll::Ready(out) => out,
                    std::task::Poll::Pending => (*moved).await,
                }
            };
            assert_eq!(res.unwrap(), 4096);
            assert_eq!(&r[..], &data[4096..]);
            let a = AlignedBuf::new(4096, 512).unwrap();
            let mut op = Box::pin(f.read_at(a, 0));
            let first = futures_util::poll!(op.as_mut());
            let moved = vec![op];
            let (res, a) = match first {
                std::task::Poll::Ready(out) => {
                    drop(moved);
                    out
                }
                std::task::Poll::Pending => moved.into_iter().next().unwrap().await,
            };
            assert_eq!(res.unwrap(), 4096);
            assert_eq!(&a[..], &data[..4096]);
            // AlignedBuf is Send: fill one on another thread.
            let a = std::thread::spawn(move || {
                let mut a = a;
                a.truncate(10);
                a
            })
            .join()
            .unwrap();
            assert_eq!(a.len(), 10);
            // set_init through the trait is clamped and never shrinks.
            let mut a = a;
            // SAFETY: (test) every byte of an AlignedBuf is initialised
            // memory; the claim is clamped to the capacity.
            unsafe { a.set_init(1 << 20) };
            assert_eq!(a.len(), 4096);
            assert_eq!(a.bytes_total(), 4096);
            g.close().await.unwrap();
            f.close().await.unwrap();
        }
    });
}

/// The child half of `memlock_refusal_is_a_clear_error`: run only by it.
#[test]
#[ignore = "run by memlock_refusal_is_a_clear_error in a child with a small RLIMIT_MEMLOCK"]
fn memlock_child() {
    if std::env::var_os("URINGIO_MEMLOCK_CHILD").is_none() {
        return;
    }
    let mut r = common::runner(Backend::IoUring);
    r.run(async {
        // 4 MiB pinned against a 1 MiB limit (the ring's own memory, also
        // charged to it on current kernels, fits).
        let e = FixedBufPool::new(64, 64 * 1024).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("RLIMIT_MEMLOCK"), "{msg}");
        assert!(msg.contains("1048576 bytes"), "{msg}");
        // Refused whole: nothing stays pinned (the kernel registers buffer
        // by buffer; the ones it took before refusing are emptied again).
        let st = std::fs::read_to_string("/proc/self/status").unwrap();
        let pinned = st.lines().find(|l| l.starts_with("VmPin:")).unwrap();
        assert!(pinned.ends_with(" 0 kB"), "{pinned}");
        println!("MEMLOCK-REFUSED: {msg}");
    });
}

#[test]
fn memlock_refusal_is_a_clear_error() {
    if !common::io_uring_or_skip("io_uring test (memlock accounting)") {
        return;
    }
    let have = |t: &str| {
        std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("setpriv") || !have("prlimit") {
        use std::io::Write;
        let _ = std::io::stderr().lock().write_all(
            b"SKIP storage_bufs::memlock_refusal_is_a_clear_error: no setpriv/prlimit\n",
        );
        return;
    }
    // Without CAP_IPC_LOCK (dropped from the bounding set, so the exec'd
    // child does not get it even as root) and a 1 MiB RLIMIT_MEMLOCK.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock"])
        .arg("prlimit")
        .arg("--memlock=1048576:1048576")
        .arg("--")
        .arg(exe)
        .args(["--exact", "memlock_child", "--ignored", "--nocapture"])
        .env("URINGIO_MEMLOCK_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("MEMLOCK-REFUSED"), "{stdout}\n{stderr}");
}

#[test]
fn linked_and_flagged_ops_check_direct_alignment_too() {
    // write_at_sync / write_all_at_sync / read_at_timeout / read_at_with /
    // write_at_with on an O_DIRECT file refuse a misaligned request the same
    // way (nothing reaches the kernel; a refused write's sync is ECANCELED),
    // aligned ones go through, and try_clone keeps the alignment.
    let Some(dir) = direct_dir("dio-linked") else {
        return;
    };
    on_both(20, |b| {
        let path = dir.path(&format!("linked-{b}"));
        async move {
            use std::time::Duration;
            use uringio::fs::{RwFlags, SyncKind};
            let f = open_direct(&path).await;
            let a = f.dio_alignment().unwrap();
            let align = 4096usize.max(a.offset as usize);
            let good = pattern(align, 9);
            let ((res, _), sync) = f
                .write_all_at_sync(
                    AlignedBuf::from_slice(&good, align).unwrap(),
                    0,
                    SyncKind::Data,
                )
                .await;
            res.unwrap();
            sync.unwrap();

            let ((res, _), sync) = f.write_at_sync(b"abc".to_vec(), 0, SyncKind::All).await;
            assert_invalid(
                &res.unwrap_err(),
                &["O_DIRECT write_at_sync", "multiple of"],
            );
            assert_eq!(sync.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
            let ((res, _), sync) = f
                .write_all_at_sync(
                    AlignedBuf::from_slice(&good, align).unwrap(),
                    7,
                    SyncKind::Data,
                )
                .await;
            assert_invalid(&res.unwrap_err(), &["write_all_at_sync", "offset 7"]);
            assert_eq!(sync.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
            let (res, buf) = f
                .read_at_timeout(
                    AlignedBuf::new(align, align).unwrap(),
                    3,
                    Duration::from_secs(5),
                )
                .await;
            assert_invalid(&res.unwrap_err(), &["read_at_timeout", "offset 3"]);
            assert!(buf.is_empty());
            let (res, _) = f
                .read_at_with(AlignedBuf::new(align, align).unwrap(), 5, RwFlags::empty())
                .await;
            assert_invalid(&res.unwrap_err(), &["read_at_with", "offset 5"]);
            let (res, _) = f.write_at_with(b"x".to_vec(), 0, RwFlags::DSYNC).await;
            assert_invalid(
                &res.unwrap_err(),
                &["O_DIRECT write_at_with", "multiple of"],
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                good,
                "{b}: nothing reached the file"
            );

            // Aligned requests go through; a clone is direct too.
            let (res, buf) = f
                .read_at_timeout(
                    AlignedBuf::new(align, align).unwrap(),
                    0,
                    Duration::from_secs(5),
                )
                .await;
            assert_eq!(res.unwrap(), align);
            assert_eq!(&buf[..], &good[..]);
            let c = f.try_clone().unwrap();
            assert_eq!(c.dio_alignment(), f.dio_alignment());
            let (res, _) = c
                .read_at_with(AlignedBuf::new(align, align).unwrap(), 1, RwFlags::empty())
                .await;
            assert_invalid(&res.unwrap_err(), &["read_at_with", "offset 1"]);
            c.close().await.unwrap();
            f.close().await.unwrap();
        }
    });
}

#[test]
fn registered_direct_files_check_alignment() {
    // A registered O_DIRECT file refuses misaligned requests like the plain
    // file does, and aligned ones round-trip through its slot.
    let Some(dir) = direct_dir("dio-registered") else {
        return;
    };
    on_both(20, |b| {
        let path = dir.path(&format!("reg-{b}"));
        async move {
            let f = open_direct(&path).await;
            let a = f.dio_alignment().unwrap();
            let align = 4096usize.max(a.offset as usize);
            let good = pattern(align, 11);
            let r = f.register();
            let (res, _) = r
                .write_all_at(AlignedBuf::from_slice(&good, align).unwrap(), 0)
                .await;
            res.unwrap();
            let (res, _) = r.read_at(AlignedBuf::new(align, align).unwrap(), 9).await;
            assert_invalid(&res.unwrap_err(), &["O_DIRECT read_at", "offset 9"]);
            let (res, _) = r.write_at(b"abc".to_vec(), 0).await;
            assert_invalid(&res.unwrap_err(), &["O_DIRECT write_at"]);
            let (res, _) = r
                .write_all_at(AlignedBuf::from_slice(&good, align).unwrap(), 3)
                .await;
            assert_invalid(&res.unwrap_err(), &["write_all_at", "offset 3"]);
            let (res, _) = r
                .readv_at(vec![AlignedBuf::new(align, align).unwrap()], 1)
                .await;
            assert_invalid(&res.unwrap_err(), &["readv_at", "offset 1"]);
            let (res, buf) = r
                .read_exact_at(AlignedBuf::new(align, align).unwrap(), 0)
                .await;
            res.unwrap();
            assert_eq!(&buf[..], &good[..], "{b}");
            r.close().await.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), good);
        }
    });
}

/// Polls `f` once; `Some(output)` if it finished.
fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let w = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(w);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[test]
fn direct_ops_are_submitted_at_once() {
    // On io_uring, an op on an O_DIRECT file goes to the kernel when it is
    // first polled (one enter, no wait), not at the end of the loop
    // iteration; a buffered file's op waits for the iteration's enter.
    // Same results on both backends either way.
    let Some(dir) = direct_dir("dio-eager") else {
        return;
    };
    on_both(20, |b| {
        let dir = &dir;
        async move {
            let path = dir.path(&format!("eager-{b}"));
            let data = pattern(8192, 5);
            std::fs::write(&path, &data).unwrap();
            let direct = open_direct(&path).await;
            let plain = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .await
                .unwrap();
            let reg = open_direct(&path).await.register();
            let pool = FixedBufPool::new(1, 4096).unwrap();
            let uring = b == Backend::IoUring;
            let sub = || uringio::driver::stats().sqes_submitted;

            // Each direct op: submitted by its first poll (io_uring).
            let s0 = sub();
            let mut op = direct.read_at(AlignedBuf::new(4096, 4096).unwrap(), 4096);
            assert!(poll_once(&mut op).is_none());
            assert_eq!(sub() - s0, u64::from(uring), "{b}: read_at on O_DIRECT");
            let (res, buf) = op.await;
            assert_eq!(res.unwrap(), 4096);
            assert_eq!(&buf[..], &data[4096..]);

            let s0 = sub();
            let mut op = reg.read_fixed_at(pool.next().await, 0);
            assert!(poll_once(&mut op).is_none());
            assert_eq!(
                sub() - s0,
                u64::from(uring),
                "{b}: read_fixed_at, registered"
            );
            let (res, buf) = op.await;
            assert_eq!(res.unwrap(), 4096);
            assert_eq!(&buf[..], &data[..4096]);
            drop(buf);

            let w = AlignedBuf::from_slice(&[9u8; 4096], 4096).unwrap();
            let s0 = sub();
            let mut op = Box::pin(direct.write_all_at(w, 0));
            assert!(poll_once(&mut op).is_none());
            assert_eq!(
                sub() - s0,
                u64::from(uring),
                "{b}: write_all_at on O_DIRECT"
            );
            let (res, _) = op.await;
            res.unwrap();

            // A buffered read waits for the end of the iteration (epoll
            // may finish it inline from the page cache instead).
            let s0 = sub();
            let mut op = plain.read_at(Vec::with_capacity(4096), 0);
            let first = poll_once(&mut op);
            assert_eq!(sub() - s0, 0, "{b}: buffered read_at submitted early");
            let (res, buf) = match first {
                Some(r) => r,
                None => op.await,
            };
            assert_eq!(res.unwrap(), 4096);
            assert!(buf.iter().all(|&x| x == 9), "{b}");
        }
    });
}
