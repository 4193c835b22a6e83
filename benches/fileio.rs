//! File I/O benchmark: 4 KiB positioned ops at queue depth 32 on one
//! pinned core, uringio (io_uring and epoll) against tokio
//! `current_thread` (`spawn_blocking` + `pread`/`pwrite`, as tokio users
//! do: `tokio::fs::File` has no positioned read), monoio 0.2.4 (io_uring
//! driver, `File::read_at`), and fio's own io_uring engine when `fio` is
//! installed (skipped otherwise).
//!
//! Workloads (`FILEIO_WORK`: a comma-separated subset of `randread`,
//! `direct`, `randwrite`; default all):
//! - `randread`: buffered 4 KiB random reads, 32 in flight, on a file
//!   filled with data and read once so it sits in the page cache;
//! - `direct`: the same reads with `O_DIRECT` (from the device). uringio
//!   runs four ways on io_uring — `AlignedBuf` + `read_at`, registered
//!   buffers (`FixedBufPool` + `read_fixed_at`), and each of those
//!   "batched*": uringio submits ops on a direct file as soon as they are
//!   queued, so to measure the loop's default batching (one enter per
//!   iteration) the file is switched to O_DIRECT by `fcntl` after uringio
//!   took it, unknown to uringio — and once on epoll;
//!   tokio reads into an aligned window of a heap buffer, monoio likewise
//!   (a `slice_mut` of a `Vec`); fio with `direct=1`. Skipped (with a
//!   line saying so) when the file's filesystem refuses O_DIRECT, or with
//!   `FILEIO_DIRECT=0`;
//! - `randwrite+fsync`: buffered 4 KiB random writes, 32 in flight, an
//!   `fsync` after every `FILEIO_FSYNC` (default 32) writes, as fio's
//!   `fsync=N`.
//!
//! uringio registers the file (`File::register`, as fio's
//! `registerfiles`). fio runs with its best io_uring settings on the same
//! core (`ioengine=io_uring`, `iodepth=32`, `fixedbufs` for reads (fio 3.40
//! fails its syncs with it), `registerfiles`, no SQPOLL, no polled I/O,
//! `cpus_allowed=0`, and `invalidate=0`: by default fio drops the file's
//! page cache first), twice per round: default
//! batching and `iodepth_batch_submit=32`/`iodepth_batch_complete_max=32`;
//! "fio best" is the better of the two in each round.
//!
//! CPU per op is counted over every thread of the process
//! (`CLOCK_PROCESS_CPUTIME_ID`): io_uring's io-wq workers, the epoll
//! backend's pool and tokio's blocking pool are threads of the process.
//! For fio it is `getrusage(RUSAGE_CHILDREN)` across the run (every thread
//! of the fio process, its set-up included), not fio's own figure (which
//! leaves io-wq workers out).
//!
//! Contenders run round-robin for `FILEIO_ROUNDS` rounds (default 5), each
//! `FILEIO_SECS` seconds (default 2); the tables give medians and medians
//! of per-round ratios. `FILEIO_SIZE` (bytes, default 1 GiB) sizes the
//! file, `FILEIO_FILE` places it (default in the temp dir; removed at the
//! end unless `FILEIO_KEEP=1`). `FILEIO_QUIET` (seconds, default 3) waits
//! for the machine to be quiet before each run. `FILEIO_FIO` names the fio
//! binary (default `fio`): fio before 3.38 issues several syncs in a row
//! for `fsync=N` (it keeps issuing them until one completes), 3.38 and
//! later exactly one per N writes issued, as the in-process contenders do
//! (one per N writes completed); the bench prints which.
//!
//! ```text
//! flock /work/bench.lock cargo bench --bench fileio
//! ```

mod common;
use common::*;

use std::cell::Cell;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uringio::{Backend, Runner};

const BS: usize = 4096;
const QD: usize = 32;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Who {
    Uring,
    /// O_DIRECT only: reads batched per loop iteration (see `Flavor`).
    UringBatched,
    /// Registered buffers (`read_fixed_at`): O_DIRECT and buffered reads.
    UringFixed,
    /// O_DIRECT only: both.
    UringFixedBatched,
    /// randwrite only: every Nth write linked to its fsync.
    UringLinked,
    Epoll,
    Tokio,
    Monoio,
    Fio,
    FioBatch,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Uring => "uringio io_uring",
            Who::UringBatched => "uringio io_uring batched*",
            Who::UringFixed => "uringio io_uring fixed bufs",
            Who::UringFixedBatched => "uringio fixed bufs batched*",
            Who::UringLinked => "uringio io_uring linked w+fsync",
            Who::Epoll => "uringio epoll",
            Who::Tokio => "tokio current_thread",
            Who::Monoio => "monoio io_uring",
            Who::Fio => "fio io_uring",
            Who::FioBatch => "fio io_uring batch 32",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Work {
    RandRead,
    /// O_DIRECT 4 KiB random reads.
    DirectRead,
    RandWriteFsync(u64),
}

impl Work {
    fn label(self) -> String {
        match self {
            Work::RandRead => "buffered 4 KiB randread, qd 32".into(),
            Work::DirectRead => "O_DIRECT 4 KiB randread, qd 32".into(),
            Work::RandWriteFsync(n) => {
                format!("buffered 4 KiB randwrite, qd 32, fsync every {n} writes")
            }
        }
    }
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    iops: f64,
    cpu_ns_per_op: f64,
}

struct Setup {
    path: PathBuf,
    size: u64,
    secs: f64,
}

impl Setup {
    fn blocks(&self) -> u64 {
        self.size / BS as u64
    }
}

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn children_cpu() -> Duration {
    // SAFETY: rusage is plain data; a valid out pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn next_rand(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Counts ops and tells tasks when to stop and when to fsync.
struct Counter {
    ops: Cell<u64>,
    writes: Cell<u64>,
    /// Writes issued (the linked variant counts here).
    issued: Cell<u64>,
}

impl Counter {
    fn new() -> Rc<Counter> {
        Rc::new(Counter {
            ops: Cell::new(0),
            writes: Cell::new(0),
            issued: Cell::new(0),
        })
    }

    /// One op done; whether an fsync is due now (every `n` writes).
    fn done(&self, fsync_every: Option<u64>) -> bool {
        self.ops.set(self.ops.get() + 1);
        match fsync_every {
            Some(n) => {
                let w = self.writes.get() + 1;
                self.writes.set(w);
                w % n == 0
            }
            None => false,
        }
    }
}

fn finish(ops: u64, wall: Duration, cpu: Duration) -> Run {
    Run {
        iops: ops as f64 / wall.as_secs_f64(),
        cpu_ns_per_op: cpu.as_nanos() as f64 / ops.max(1) as f64,
    }
}

fn fsync_of(w: Work) -> Option<u64> {
    match w {
        Work::RandRead | Work::DirectRead => None,
        Work::RandWriteFsync(n) => Some(n),
    }
}

/// A `BS` window of a `2 * BS` heap buffer starting on a `BS` boundary
/// (O_DIRECT wants the memory aligned too): `(buffer, offset)`.
fn aligned_window() -> (Vec<u8>, usize) {
    let v = vec![0u8; 2 * BS];
    let off = (BS - v.as_ptr() as usize % BS) % BS;
    (v, off)
}

/// How uringio reads in the O_DIRECT rows.
#[derive(Clone, Copy)]
struct Flavor {
    /// Registered buffers (`FixedBufPool` + `read_fixed_at`).
    fixed: bool,
    /// uringio submits ops on an O_DIRECT file as soon as they are queued
    /// (one enter each). To measure the loop's default for other files
    /// (every op of an iteration in one enter at its end), the file is
    /// opened without O_DIRECT, handed to uringio, and only then switched
    /// to O_DIRECT with `fcntl(F_SETFL)`: the kernel reads directly, but
    /// uringio does not know the file is direct.
    batched: bool,
}

/// Opens `path` for O_DIRECT reads, known to uringio (`direct(true)`) or
/// switched behind its back (`hidden`, see `Flavor::batched`).
async fn open_direct(path: &Path, hidden: bool) -> uringio::fs::File {
    if !hidden {
        return uringio::fs::OpenOptions::new()
            .read(true)
            .direct(true)
            .open(path)
            .await
            .expect("open O_DIRECT");
    }
    use std::os::fd::AsRawFd;
    let f = uringio::fs::File::from_std(std::fs::File::open(path).expect("open"));
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with plain integer arguments.
    let r = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_DIRECT)
    };
    assert_eq!(r, 0, "fcntl(F_SETFL, O_DIRECT)");
    assert!(f.dio_alignment().is_none());
    f
}

fn uringio_direct_run(b: Backend, s: &Setup, fl: Flavor) -> Run {
    use uringio::buf::{AlignedBuf, FixedBufPool};
    let mut rt = Runner::builder().backend(b).build().expect("uringio loop");
    rt.run(async {
        let f = open_direct(&s.path, fl.batched).await;
        let align = f.dio_alignment().map_or(4096, |a| a.mem as usize);
        let f = Rc::new(f.register());
        let pool = fl.fixed.then(|| {
            let bufs = (0..QD).map(|_| AlignedBuf::new(BS, align.max(4096)).unwrap());
            FixedBufPool::from_bufs(bufs).expect("fixed buffers")
        });
        let c = Counter::new();
        let blocks = s.blocks();
        let deadline = Instant::now() + Duration::from_secs_f64(s.secs);
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..QD as u64)
            .map(|i| {
                let (f, c, pool) = (f.clone(), c.clone(), pool.clone());
                uringio::spawn(async move {
                    let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut fixed = match &pool {
                        Some(p) => Some(p.next().await),
                        None => None,
                    };
                    let mut plain = AlignedBuf::new(BS, align).unwrap();
                    while Instant::now() < deadline {
                        let pos = (next_rand(&mut x) % blocks) * BS as u64;
                        let n = if let Some(mut buf) = fixed.take() {
                            buf.clear();
                            let (res, buf) = f.read_fixed_at(buf, pos).await;
                            fixed = Some(buf);
                            res
                        } else {
                            plain.clear();
                            let (res, buf) = f.read_at(plain, pos).await;
                            plain = buf;
                            res
                        };
                        assert_eq!(n.expect("uringio O_DIRECT read"), BS);
                        c.done(None);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        finish(c.ops.get(), t0.elapsed(), process_cpu() - cpu0)
    })
}

/// `linked`: every Nth write (counted when issued, as fio does) is a
/// `write_at_sync`: the write and an `fsync` linked in one submission.
fn uringio_run(b: Backend, s: &Setup, w: Work, linked: bool, fixed: bool) -> Run {
    let mut rt = Runner::builder().backend(b).build().expect("uringio loop");
    rt.run(async {
        let f = uringio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&s.path)
            .await
            .expect("open");
        let f = Rc::new(f.register());
        // Registered buffers for reads (`read_fixed_at`), one per task.
        let pool = fixed.then(|| Rc::new(uringio::buf::FixedBufPool::new(QD, BS).expect("pool")));
        let c = Counter::new();
        let blocks = s.blocks();
        let deadline = Instant::now() + Duration::from_secs_f64(s.secs);
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..QD as u64)
            .map(|i| {
                let (f, c, pool) = (f.clone(), c.clone(), pool.clone());
                uringio::spawn(async move {
                    let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    if let Some(pool) = pool {
                        let mut fb = Some(pool.next().await);
                        while Instant::now() < deadline {
                            let pos = (next_rand(&mut x) % blocks) * BS as u64;
                            let mut b = fb.take().expect("the task's buffer");
                            b.clear();
                            let (res, b) = f.read_fixed_at(b, pos).await;
                            fb = Some(b);
                            assert_eq!(res.expect("uringio fixed read"), BS);
                            c.done(None);
                        }
                        return;
                    }
                    let mut buf = if w == Work::RandRead {
                        Vec::with_capacity(BS)
                    } else {
                        vec![0x5a; BS]
                    };
                    while Instant::now() < deadline {
                        let pos = (next_rand(&mut x) % blocks) * BS as u64;
                        if linked {
                            let n = fsync_of(w).expect("linked is for writes");
                            let issued = c.issued.get() + 1;
                            c.issued.set(issued);
                            let (res, b) = if issued % n == 0 {
                                let ((res, b), sync) =
                                    f.write_at_sync(buf, pos, uringio::fs::SyncKind::All).await;
                                sync.expect("linked fsync");
                                (res, b)
                            } else {
                                f.write_at(buf, pos).await
                            };
                            buf = b;
                            assert_eq!(res.expect("uringio write"), BS);
                            c.done(None);
                            continue;
                        }
                        let (res, b) = if w == Work::RandRead {
                            buf.clear();
                            f.read_at(buf, pos).await
                        } else {
                            f.write_at(buf, pos).await
                        };
                        buf = b;
                        assert_eq!(res.expect("uringio op"), BS);
                        if c.done(fsync_of(w)) {
                            f.sync_all().await.expect("fsync");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        finish(c.ops.get(), t0.elapsed(), process_cpu() - cpu0)
    })
}

fn tokio_run(s: &Setup, w: Work) -> Run {
    use std::os::unix::fs::OpenOptionsExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let direct = w == Work::DirectRead;
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(!direct)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(&s.path)
            .expect("open"),
    );
    let blocks = s.blocks();
    let secs = s.secs;
    rt.block_on(async move {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let c = Counter::new();
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let cpu0 = process_cpu();
                let t0 = Instant::now();
                let tasks: Vec<_> = (0..QD as u64)
                    .map(|i| {
                        let (f, c) = (file.clone(), c.clone());
                        tokio::task::spawn_local(async move {
                            let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                            // An aligned window for O_DIRECT (harmless
                            // otherwise).
                            let (mut buf, off) = aligned_window();
                            buf.fill(0x5a);
                            while Instant::now() < deadline {
                                let pos = (next_rand(&mut x) % blocks) * BS as u64;
                                let f2 = f.clone();
                                let (n, b) = tokio::task::spawn_blocking(move || {
                                    let win = &mut buf[off..off + BS];
                                    let n = if fsync_of(w).is_some() {
                                        f2.write_at(win, pos)
                                    } else {
                                        f2.read_at(win, pos)
                                    };
                                    (n, buf)
                                })
                                .await
                                .expect("blocking task");
                                buf = b;
                                assert_eq!(n.expect("tokio op"), BS);
                                if c.done(fsync_of(w)) {
                                    let f2 = f.clone();
                                    tokio::task::spawn_blocking(move || f2.sync_all())
                                        .await
                                        .expect("blocking task")
                                        .expect("fsync");
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
                finish(c.ops.get(), t0.elapsed(), process_cpu() - cpu0)
            })
            .await
    })
}

fn monoio_run(s: &Setup, w: Work) -> Run {
    use std::os::unix::fs::OpenOptionsExt;
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    let direct = w == Work::DirectRead;
    rt.block_on(async {
        let f = monoio::fs::OpenOptions::new()
            .read(true)
            .write(!direct)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(&s.path)
            .await
            .expect("open");
        let f = Rc::new(f);
        let c = Counter::new();
        let blocks = s.blocks();
        let deadline = Instant::now() + Duration::from_secs_f64(s.secs);
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..QD as u64)
            .map(|i| {
                let (f, c) = (f.clone(), c.clone());
                monoio::spawn(async move {
                    let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut buf = if w == Work::RandRead {
                        Vec::with_capacity(BS)
                    } else {
                        vec![0x5a; BS]
                    };
                    let (mut window, off) = aligned_window();
                    while Instant::now() < deadline {
                        let pos = (next_rand(&mut x) % blocks) * BS as u64;
                        let res = if direct {
                            // The aligned window of a zeroed Vec (its
                            // length covers it: set_init stays in bounds).
                            use monoio::buf::IoBufMut;
                            let (res, sl) = f.read_at(window.slice_mut(off..off + BS), pos).await;
                            window = sl.into_inner();
                            res
                        } else if w == Work::RandRead {
                            buf.clear();
                            let (res, b) = f.read_at(buf, pos).await;
                            buf = b;
                            res
                        } else {
                            let (res, b) = f.write_at(buf, pos).await;
                            buf = b;
                            res
                        };
                        assert_eq!(res.expect("monoio op"), BS);
                        if c.done(fsync_of(w)) {
                            f.sync_all().await.expect("fsync");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        finish(c.ops.get(), t0.elapsed(), process_cpu() - cpu0)
    })
}

/// The fio binary: `FILEIO_FIO`, default `fio` from `PATH`.
fn fio_bin() -> String {
    std::env::var("FILEIO_FIO").unwrap_or_else(|_| "fio".into())
}

/// fio's version string, if it runs.
fn fio_version() -> Option<String> {
    let o = Command::new(fio_bin()).arg("--version").output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The number after `"key" :` following `from` in fio's JSON.
fn json_num(s: &str, from: usize, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\" : ");
    let i = s[from..].find(&pat)? + from + pat.len();
    let end = s[i..].find([',', '\n', '}']).map_or(s.len(), |e| i + e);
    s[i..end].trim().parse().ok()
}

fn fio_run(s: &Setup, w: Work, batch: bool) -> Option<Run> {
    let rw = match w {
        Work::RandRead | Work::DirectRead => "randread",
        Work::RandWriteFsync(_) => "randwrite",
    };
    let mut cmd = Command::new(fio_bin());
    cmd.args([
        "--name=fileio",
        &format!("--filename={}", s.path.display()),
        &format!("--rw={rw}"),
        "--bs=4k",
        "--iodepth=32",
        "--ioengine=io_uring",
        "--registerfiles",
        "--sqthread_poll=0",
        "--hipri=0",
        if w == Work::DirectRead {
            "--direct=1"
        } else {
            "--direct=0"
        },
        // fio drops the file's page cache before a run by default: the
        // reads would come from the disk (and the next contender's too).
        "--invalidate=0",
        "--cpus_allowed=0",
        "--norandommap",
        "--randrepeat=0",
        "--time_based",
        &format!("--runtime={}ms", (s.secs * 1000.0) as u64),
        &format!("--size={}", s.size),
        "--output-format=json",
    ]);
    match fsync_of(w) {
        // Not for the writes: fio 3.40 reuses a write's SQE for the sync
        // without clearing its buf_index, and the kernel refuses that
        // FSYNC (EINVAL). The in-process contenders write from plain
        // buffers too.
        Some(n) => {
            cmd.arg(format!("--fsync={n}"));
        }
        None => {
            cmd.arg("--fixedbufs");
        }
    }
    if batch {
        cmd.args([
            "--iodepth_batch_submit=32",
            "--iodepth_batch_complete_max=32",
        ]);
    }
    let cpu0 = children_cpu();
    let out = cmd.output().ok()?;
    let cpu = children_cpu() - cpu0;
    if !out.status.success() {
        eprintln!(
            "  fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let js = String::from_utf8_lossy(&out.stdout);
    let sec = js.find(if fsync_of(w).is_none() {
        "\"read\" : {"
    } else {
        "\"write\" : {"
    })?;
    let iops = json_num(&js, sec, "iops")?;
    let ios = json_num(&js, sec, "total_ios")?;
    Some(Run {
        iops,
        cpu_ns_per_op: cpu.as_nanos() as f64 / ios.max(1.0),
    })
}

/// Makes `path` `size` bytes of non-zero data, then reads it once so it
/// is in the page cache.
fn prepare(path: &Path, size: u64) {
    let ok = std::fs::metadata(path).is_ok_and(|m| m.len() == size);
    if !ok {
        eprintln!("fileio: writing {} ({} MiB)", path.display(), size >> 20);
        let f = std::fs::File::create(path).expect("create the bench file");
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut chunk = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < size {
            for w in chunk.chunks_mut(8) {
                w.copy_from_slice(&next_rand(&mut x).to_le_bytes());
            }
            let n = (chunk.len() as u64).min(size - pos) as usize;
            f.write_all_at(&chunk[..n], pos).expect("fill");
            pos += n as u64;
        }
        f.sync_all().expect("fsync");
    }
    let f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < size {
        let n = f.read_at(&mut buf, pos).expect("warm the cache");
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
}

/// `fio-3.33` → true (older than 3.38).
fn old_fio_sync(v: &str) -> bool {
    let v = v.trim_start_matches("fio-");
    let mut it = v.split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (maj, min) < (3, 38)
}

/// Whether `path`'s filesystem takes O_DIRECT.
fn direct_ok(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

fn main() {
    pin_to(0);
    let rounds: usize = env_num("FILEIO_ROUNDS", 5usize).max(1);
    let secs: f64 = env_num("FILEIO_SECS", 2.0f64);
    let size: u64 = env_num("FILEIO_SIZE", 1u64 << 30);
    let size = (size / BS as u64).max(QD as u64) * BS as u64;
    let fsync_n: u64 = env_num("FILEIO_FSYNC", 32u64).max(1);
    let quiet = Duration::from_secs(env_num("FILEIO_QUIET", 3u64));
    let path = std::env::var_os("FILEIO_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("uringio-fileio-{size}.bin")));
    // FILEIO_WORK: a comma-separated subset of randread, direct, randwrite
    // (default: all three). FILEIO_DIRECT=0 drops the O_DIRECT rows.
    let work_env = std::env::var("FILEIO_WORK").unwrap_or_default();
    let want = |name: &str| work_env.is_empty() || work_env.split(',').any(|w| w.trim() == name);
    let direct = std::env::var("FILEIO_DIRECT").map_or(true, |v| v != "0") && want("direct");
    let setup = Setup {
        path: path.clone(),
        size,
        secs,
    };
    prepare(&path, size);
    let fio_ver = fio_version();
    let fio = fio_ver.is_some();
    match &fio_ver {
        None => println!("fileio: `{}` does not run: its rows are skipped", fio_bin()),
        Some(v) => {
            println!("fileio: fio is {} ({})", v, fio_bin());
            // fio before 3.38 (commit 704a8cfe) keeps issuing syncs while
            // io_issues[WRITE] % N == 0 until a sync completes: several in
            // a row per N writes, not one.
            if fsync_n > 1 && old_fio_sync(v) {
                println!(
                    "fileio: note: this fio is older than 3.38: its fsync=N issues several syncs in a \
                     row per N writes (the in-process contenders issue one); set FILEIO_FIO to fio \
                     >= 3.38 for the same workload"
                );
            }
        }
    }
    println!(
        "fileio: {rounds} rounds of {secs} s, file {} MiB, 4 KiB ops, qd 32, CPU 0",
        size >> 20
    );
    let mut works = Vec::new();
    if want("randread") {
        works.push(Work::RandRead);
    }
    if direct {
        if direct_ok(&path) {
            works.push(Work::DirectRead);
        } else {
            println!(
                "fileio: {} refuses O_DIRECT (tmpfs?): the O_DIRECT rows are skipped; set \
                 FILEIO_FILE to a path on a disk filesystem",
                path.display()
            );
        }
    }
    if want("randwrite") {
        works.push(Work::RandWriteFsync(fsync_n));
    }
    for w in works {
        let mut who = vec![Who::Uring];
        if w == Work::DirectRead {
            who.extend([Who::UringBatched, Who::UringFixed, Who::UringFixedBatched]);
        }
        if w == Work::RandRead {
            who.push(Who::UringFixed);
        }
        if fsync_of(w).is_some() {
            who.push(Who::UringLinked);
        }
        who.extend([Who::Epoll, Who::Tokio, Who::Monoio]);
        if fio {
            who.extend([Who::Fio, Who::FioBatch]);
        }
        // runs[who][round]
        let mut runs: Vec<Vec<Option<Run>>> = vec![Vec::new(); who.len()];
        for round in 0..rounds {
            // Each round starts with the whole file in the page cache and
            // nothing dirty (not measured).
            let _ = std::fs::File::open(&path).and_then(|f| f.sync_all());
            prepare(&path, size);
            for i in 0..who.len() {
                let idx = (i + round) % who.len();
                wait_for_quiet(quiet);
                let fl = |fixed, batched| Flavor { fixed, batched };
                let r = match who[idx] {
                    _ if w == Work::DirectRead
                        && matches!(
                            who[idx],
                            Who::Uring
                                | Who::UringBatched
                                | Who::UringFixed
                                | Who::UringFixedBatched
                                | Who::Epoll
                        ) =>
                    {
                        let (b, fl) = match who[idx] {
                            Who::Uring => (Backend::IoUring, fl(false, false)),
                            Who::UringBatched => (Backend::IoUring, fl(false, true)),
                            Who::UringFixed => (Backend::IoUring, fl(true, false)),
                            Who::UringFixedBatched => (Backend::IoUring, fl(true, true)),
                            _ => (Backend::Epoll, fl(false, false)),
                        };
                        Some(uringio_direct_run(b, &setup, fl))
                    }
                    Who::Uring => Some(uringio_run(Backend::IoUring, &setup, w, false, false)),
                    Who::UringLinked => Some(uringio_run(Backend::IoUring, &setup, w, true, false)),
                    Who::UringFixed => Some(uringio_run(Backend::IoUring, &setup, w, false, true)),
                    Who::UringBatched | Who::UringFixedBatched => unreachable!(),
                    Who::Epoll => Some(uringio_run(Backend::Epoll, &setup, w, false, false)),
                    Who::Tokio => Some(tokio_run(&setup, w)),
                    Who::Monoio => Some(monoio_run(&setup, w)),
                    Who::Fio => fio_run(&setup, w, false),
                    Who::FioBatch => fio_run(&setup, w, true),
                };
                match r {
                    Some(r) => eprintln!(
                        "  {}  round {}  {:<22} {:>9.0} IOPS {:>7.0} ns CPU/op",
                        w.label(),
                        round + 1,
                        who[idx].name(),
                        r.iops,
                        r.cpu_ns_per_op
                    ),
                    None => eprintln!(
                        "  {}  round {}  {:<22} failed",
                        w.label(),
                        round + 1,
                        who[idx].name()
                    ),
                }
                runs[idx].push(r);
            }
        }
        report(w, &who, &runs);
    }
    if std::env::var("FILEIO_KEEP").map_or(true, |v| v != "1") {
        let _ = std::fs::remove_file(&path);
    }
}

fn report(w: Work, who: &[Who], runs: &[Vec<Option<Run>>]) {
    let rounds = runs[0].len();
    let pos = |x: Who| who.iter().position(|&y| y == x);
    // "fio best": per round, the better fio variant.
    let fio_best: Vec<Option<Run>> = (0..rounds)
        .map(|r| {
            [pos(Who::Fio), pos(Who::FioBatch)]
                .into_iter()
                .flatten()
                .filter_map(|i| runs[i][r])
                .max_by(|a, b| a.iops.total_cmp(&b.iops))
        })
        .collect();
    let iops_of = |v: &[Option<Run>]| median(v.iter().flatten().map(|r| r.iops).collect());
    let cpu_of = |v: &[Option<Run>]| median(v.iter().flatten().map(|r| r.cpu_ns_per_op).collect());
    println!();
    println!("{}", w.label());
    println!("| runtime | IOPS (median) | CPU ns/op, all threads (median) |");
    println!("|---|---|---|");
    for (i, x) in who.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} |",
            x.name(),
            iops_of(&runs[i]),
            cpu_of(&runs[i])
        );
    }
    if pos(Who::Fio).is_some() {
        println!(
            "| fio best (per round) | {:.0} | {:.0} |",
            iops_of(&fio_best),
            cpu_of(&fio_best)
        );
    }
    let ratio = |a: &[Option<Run>], b: &[Option<Run>]| -> (f64, Vec<f64>) {
        let per: Vec<f64> = a
            .iter()
            .zip(b)
            .filter_map(|(x, y)| Some(x.as_ref()?.iops / y.as_ref()?.iops))
            .collect();
        (median(per.clone()), per)
    };
    println!();
    println!("| ratio (IOPS) | median of per-round ratios | per round |");
    println!("|---|---|---|");
    let u = &runs[pos(Who::Uring).unwrap()];
    let e = &runs[pos(Who::Epoll).unwrap()];
    let t = &runs[pos(Who::Tokio).unwrap()];
    let m = &runs[pos(Who::Monoio).unwrap()];
    type Pair<'a> = (&'a str, &'a [Option<Run>], &'a [Option<Run>]);
    let mut pairs: Vec<Pair> = vec![
        ("uringio io_uring ÷ monoio", u, m),
        ("uringio io_uring ÷ tokio", u, t),
        ("uringio epoll ÷ tokio", e, t),
    ];
    let opt = |x: Who| pos(x).map(|i| &runs[i][..]);
    if let Some(uf) = opt(Who::UringFixed) {
        pairs.push(("uringio fixed bufs ÷ monoio", uf, m));
        pairs.push(("uringio fixed bufs ÷ tokio", uf, t));
    }
    if let Some(ul) = opt(Who::UringLinked) {
        pairs.push(("uringio linked ÷ uringio", ul, u));
    }
    if let Some(ub) = opt(Who::UringBatched) {
        pairs.push(("uringio (direct: eager) ÷ batched*", u, ub));
    }
    if let (Some(uf), Some(ufb)) = (opt(Who::UringFixed), opt(Who::UringFixedBatched)) {
        pairs.push(("uringio fixed bufs ÷ fixed batched*", uf, ufb));
    }
    if pos(Who::Fio).is_some() {
        pairs.push(("uringio io_uring ÷ fio best", u, &fio_best));
        for x in [
            Who::UringFixed,
            Who::UringBatched,
            Who::UringFixedBatched,
            Who::UringLinked,
        ] {
            if let Some(r) = opt(x) {
                pairs.push((
                    match x {
                        Who::UringFixed => "uringio fixed bufs ÷ fio best",
                        Who::UringBatched => "uringio batched* ÷ fio best",
                        Who::UringLinked => "uringio linked ÷ fio best",
                        _ => "uringio fixed batched* ÷ fio best",
                    },
                    r,
                    &fio_best,
                ));
            }
        }
        pairs.push(("monoio ÷ fio best", m, &fio_best));
    }
    for (label, a, b) in pairs {
        let (med, per) = ratio(a, b);
        let per: Vec<String> = per.iter().map(|r| format!("{r:.2}")).collect();
        println!("| {label} | {med:.2} | {} |", per.join(" "));
    }
}
