//! A small fio-like tool: positioned file I/O at a fixed queue depth on
//! one uringio loop, so you can compare uringio with fio on your own disk.
//!
//! ```text
//! cargo run --release --example fio -- FILE [--rw randread|randwrite|read|write]
//!     [--bs 4k] [--qd 32] [--secs 10] [--size 1g] [--fsync N]
//!     [--backend auto|io_uring|epoll] [--cpu N] [--no-register]
//!     [--direct] [--fixed] [--eager]
//! ```
//! - Creates `FILE` (or extends it) to `--size` with non-zero data if it is
//!   missing or smaller, then runs `--qd` tasks, each issuing one op at a
//!   time at a block-aligned offset (random, or sequential from a shared
//!   cursor) for `--secs` seconds.
//! - `--fsync N`: after every `N` writes, one `fsync` (as fio's `fsync=N`);
//!   the writes' latency is what is reported.
//! - The file is registered with the ring (`File::register`) unless
//!   `--no-register`, as fio's `registerfiles`.
//! - `--cpu N` pins the loop's thread to CPU `N`.
//! - `--direct`: the run opens the file with `O_DIRECT`
//!   (`OpenOptions::direct`, fio's `direct=1`) and uses `buf::AlignedBuf`s
//!   aligned as the file needs (`File::dio_alignment`); `--bs` must be a
//!   multiple of its offset alignment.
//! - `--fixed`: registered buffers (fio's `fixedbufs`): one
//!   `buf::FixedBufPool` of `--qd` buffers, with `read_fixed_at` /
//!   `write_fixed_at` (`READ_FIXED`/`WRITE_FIXED` on io_uring, plain
//!   `pread`/`pwrite` on epoll). Works with and without `--direct`.
//! - `--eager`: each op is submitted as soon as it is queued
//!   (`driver::eager`, one `io_uring_enter` per op) instead of with the
//!   rest of the loop iteration's ops in one enter at its end (the
//!   default); nothing changes on epoll.
//! - Each task keeps one buffer for the whole run (writes write the same
//!   data over and over, as fio does).
//!
//! Prints a settings line and a result line of `key=value` fields: IOPS,
//! MB/s (10^6 bytes), CPU time per op over every thread of the process
//! (`CLOCK_PROCESS_CPUTIME_ID`: the loop, the epoll backend's pool threads
//! and io_uring's io-wq workers, which are threads of the process), and
//! latency p50/p99 from a log-linear histogram (≤ 1.6% error). Exit status
//! 2 on bad arguments, 1 on an I/O error.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::future::Future;

use uringio::buf::{AlignedBuf, FixedBuf, FixedBufPool, IoBuf, IoBufMut};
use uringio::fs::{File, OpenOptions, RegisteredFile};
use uringio::{Backend, BufResult, Runner, driver};

#[path = "support/histogram.rs"]
mod histogram;
use histogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rw {
    RandRead,
    RandWrite,
    Read,
    Write,
}

impl Rw {
    fn name(self) -> &'static str {
        match self {
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
        }
    }

    fn writes(self) -> bool {
        matches!(self, Rw::RandWrite | Rw::Write)
    }

    fn random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite)
    }
}

#[derive(Debug)]
struct Args {
    file: PathBuf,
    rw: Rw,
    bs: usize,
    qd: usize,
    secs: f64,
    size: u64,
    fsync: u64,
    backend: Backend,
    cpu: Option<usize>,
    register: bool,
    direct: bool,
    fixed: bool,
    eager: bool,
}

const USAGE: &str = "usage: fio FILE [--rw randread|randwrite|read|write] [--bs 4k] [--qd 32] \
[--secs 10] [--size 1g] [--fsync N] [--backend auto|io_uring|epoll] [--cpu N] [--no-register] \
[--direct] [--fixed] [--eager]";

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// `4096`, `4k`, `64K`, `1m`, `1g`, `2GiB`... (binary units).
fn parse_size(what: &str, s: &str) -> io::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| {
            bad(format!(
                "{what}: {s:?} is not a size (examples: 4096, 4k, 1m, 1g)"
            ))
        })
}

fn parse_num<T: std::str::FromStr>(what: &str, s: &str) -> io::Result<T> {
    s.trim()
        .parse()
        .map_err(|_| bad(format!("{what}: {s:?} is not a number")))
}

fn parse_args(argv: &[String]) -> io::Result<Args> {
    let mut file = None;
    let mut a = Args {
        file: PathBuf::new(),
        rw: Rw::RandRead,
        bs: 4096,
        qd: 32,
        secs: 10.0,
        size: 1 << 30,
        fsync: 0,
        backend: Backend::Auto,
        cpu: None,
        register: true,
        direct: false,
        fixed: false,
        eager: false,
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> io::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| bad(format!("{key} needs a value"))),
            }
        };
        match key {
            "--rw" => {
                let v = value()?;
                a.rw = match v.as_str() {
                    "randread" => Rw::RandRead,
                    "randwrite" => Rw::RandWrite,
                    "read" => Rw::Read,
                    "write" => Rw::Write,
                    _ => {
                        return Err(bad(format!(
                            "--rw: {v:?} is not one of randread, randwrite, read, write"
                        )));
                    }
                }
            }
            "--bs" => {
                let v = parse_size("--bs", &value()?)?;
                if v == 0 || v > 64 << 20 {
                    return Err(bad(format!("--bs: {v} is out of range 1..=64m")));
                }
                a.bs = v as usize;
            }
            "--qd" => {
                a.qd = parse_num("--qd", &value()?)?;
                if !(1..=4096).contains(&a.qd) {
                    return Err(bad(format!("--qd: {} is out of range 1..=4096", a.qd)));
                }
            }
            "--secs" => {
                a.secs = parse_num("--secs", &value()?)?;
                if !(a.secs > 0.0 && a.secs <= 86400.0) {
                    return Err(bad(format!(
                        "--secs: {} is out of range (0, 86400]",
                        a.secs
                    )));
                }
            }
            "--size" => a.size = parse_size("--size", &value()?)?,
            "--fsync" => a.fsync = parse_num("--fsync", &value()?)?,
            "--backend" => {
                let v = value()?;
                a.backend = match v.as_str() {
                    "auto" => Backend::Auto,
                    "io_uring" | "uring" => Backend::IoUring,
                    "epoll" => Backend::Epoll,
                    _ => {
                        return Err(bad(format!(
                            "--backend: {v:?} is not one of auto, io_uring, epoll"
                        )));
                    }
                }
            }
            "--cpu" => {
                let c: usize = parse_num("--cpu", &value()?)?;
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                if c >= 1024 {
                    return Err(bad(format!(
                        "--cpu: {c} is not a CPU of this machine ({n} CPUs)"
                    )));
                }
                a.cpu = Some(c);
            }
            "--no-register" => a.register = false,
            "--direct" => a.direct = true,
            "--fixed" => a.fixed = true,
            "--eager" => a.eager = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            k if k.starts_with('-') => return Err(bad(format!("unknown option {k:?}"))),
            f => {
                if file.is_some() {
                    return Err(bad(format!("a second FILE argument {f:?}")));
                }
                file = Some(PathBuf::from(f));
            }
        }
    }
    a.file = file.ok_or_else(|| bad("FILE is missing".into()))?;
    if a.size < a.bs as u64 {
        return Err(bad(format!(
            "--size ({}) is smaller than --bs ({})",
            a.size, a.bs
        )));
    }
    if a.fsync > 0 && !a.rw.writes() {
        return Err(bad("--fsync needs --rw write or randwrite".into()));
    }
    Ok(a)
}

/// Where each task's buffer comes from: a `Vec` (buffered I/O), an
/// `AlignedBuf` (`--direct`), or a registered pool (`--fixed`, either way).
enum Buffers {
    Plain,
    Aligned(usize),
    Fixed(FixedBufPool),
}

/// One task's buffer, kept for the whole run.
enum Buf {
    Plain(Vec<u8>),
    Aligned(AlignedBuf),
    Fixed(FixedBuf),
}

impl Buffers {
    /// `align`: the memory alignment the file needs (`--direct`).
    fn new(a: &Args, align: Option<usize>) -> io::Result<Buffers> {
        Ok(if a.fixed {
            // Page-aligned at least: right for O_DIRECT everywhere.
            let al = align.unwrap_or(4096).max(4096);
            let bufs = (0..a.qd)
                .map(|_| AlignedBuf::new(a.bs, al))
                .collect::<io::Result<Vec<_>>>()?;
            Buffers::Fixed(FixedBufPool::from_bufs(bufs)?)
        } else if let Some(al) = align {
            Buffers::Aligned(al)
        } else {
            Buffers::Plain
        })
    }

    fn registered(&self) -> bool {
        matches!(self, Buffers::Fixed(p) if p.is_registered())
    }

    /// A task's buffer of `bs` bytes: for reads empty, for writes full of
    /// data.
    async fn take(&self, bs: usize, write: bool, seed: u64) -> io::Result<Buf> {
        let data = || fill_pattern(bs, seed);
        Ok(match self {
            Buffers::Plain if write => Buf::Plain(data()),
            Buffers::Plain => Buf::Plain(Vec::with_capacity(bs)),
            Buffers::Aligned(al) => {
                let mut b = AlignedBuf::new(bs, *al)?;
                if write {
                    b.extend_from_slice(&data())?;
                }
                Buf::Aligned(b)
            }
            Buffers::Fixed(pool) => {
                let mut b = pool.next().await;
                if write {
                    b.extend_from_slice(&data())?;
                }
                Buf::Fixed(b)
            }
        })
    }
}

fn fill_pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let k = (n - v.len()).min(8);
        v.extend_from_slice(&b[..k]);
    }
    v
}

/// CPU time of every thread of this process, dead ones included.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Shared {
    args: Args,
    file: Target,
    bufs: Buffers,
    blocks: u64,
    deadline: Cell<Option<Instant>>,
    /// Sequential cursor (in blocks).
    cursor: Cell<u64>,
    writes: Cell<u64>,
    fsyncs: Cell<u64>,
    ops: Cell<u64>,
    bytes: Cell<u64>,
    hist: RefCell<Histogram>,
    error: RefCell<Option<io::Error>>,
}

/// One read or write of the task's buffer at block `blk`; gives the
/// buffer back.
async fn one_op(sh: &Shared, buf: Buf, blk: u64) -> (io::Result<()>, Buf) {
    let pos = blk * sh.args.bs as u64;
    let (f, write) = (&sh.file, sh.args.rw.writes());
    match buf {
        Buf::Plain(mut b) => {
            let (r, b) = if write {
                submit(sh, f.write_all_at(b, pos)).await
            } else {
                b.clear();
                submit(sh, f.read_exact_at(b, pos)).await
            };
            (r, Buf::Plain(b))
        }
        Buf::Aligned(mut b) => {
            let (r, b) = if write {
                submit(sh, f.write_all_at(b, pos)).await
            } else {
                b.clear();
                submit(sh, f.read_exact_at(b, pos)).await
            };
            (r, Buf::Aligned(b))
        }
        Buf::Fixed(mut b) => {
            let want = b.capacity();
            let (r, b) = if write {
                submit(sh, f.write_fixed_at(b, pos)).await
            } else {
                b.clear();
                submit(sh, f.read_fixed_at(b, pos)).await
            };
            let r = match r {
                Ok(n) if n == want => Ok(()),
                Ok(n) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "a short {} at {pos}: {n} of {want} bytes",
                        sh.args.rw.name()
                    ),
                )),
                Err(e) => Err(e),
            };
            (r, Buf::Fixed(b))
        }
    }
}

/// Awaits an op, submitting it at once with `--eager` (`driver::eager`).
async fn submit<F: Future>(sh: &Shared, op: F) -> F::Output {
    let op = std::pin::pin!(op);
    if sh.args.eager {
        driver::eager(op).await
    } else {
        op.await
    }
}

async fn worker(sh: Rc<Shared>, id: u64) {
    let mut x = (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let deadline = sh.deadline.get().expect("deadline set");
    let mut buf = match sh.bufs.take(sh.args.bs, sh.args.rw.writes(), x).await {
        Ok(b) => Some(b),
        Err(e) => {
            sh.error.borrow_mut().get_or_insert(e);
            return;
        }
    };
    loop {
        let blk = if sh.args.rw.random() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % sh.blocks
        } else {
            let c = sh.cursor.get();
            sh.cursor.set(c + 1);
            c % sh.blocks
        };
        let t0 = Instant::now();
        let (r, b) = one_op(&sh, buf.take().expect("the task's buffer"), blk).await;
        buf = Some(b);
        let t1 = Instant::now();
        match r {
            Ok(()) => {
                sh.ops.set(sh.ops.get() + 1);
                sh.bytes.set(sh.bytes.get() + sh.args.bs as u64);
                sh.hist.borrow_mut().record((t1 - t0).as_nanos() as u64);
            }
            Err(e) => {
                sh.error.borrow_mut().get_or_insert(e);
                return;
            }
        }
        if sh.args.fsync > 0 {
            let w = sh.writes.get() + 1;
            sh.writes.set(w);
            if w % sh.args.fsync == 0 {
                if let Err(e) = sh.file.sync_all().await {
                    sh.error.borrow_mut().get_or_insert(e);
                    return;
                }
                sh.fsyncs.set(sh.fsyncs.get() + 1);
            }
        }
        if t1 >= deadline {
            return;
        }
    }
}

/// Makes `file` at least `size` bytes of non-zero data (holes would read
/// as the shared zero page, not as file data).
async fn prepare(a: &Args) -> io::Result<Target> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(&a.file)
        .await?;
    let len = f.metadata().await?.len();
    if len < a.size {
        eprintln!(
            "fio: filling {} from {} to {} bytes",
            a.file.display(),
            len,
            a.size
        );
        const CHUNK: u64 = 1 << 20;
        let mut pos = len;
        while pos < a.size {
            let n = CHUNK.min(a.size - pos) as usize;
            let (res, _) = f.write_all_at(fill_pattern(n, pos), pos).await;
            res?;
            pos += n as u64;
        }
        f.sync_data().await?;
    }
    let f = if a.direct {
        drop(f);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .direct(true)
            .open(&a.file)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("--direct: open with O_DIRECT: {e}")))?;
        let al = f.dio_alignment().expect("opened with O_DIRECT");
        if a.bs % al.offset as usize != 0 {
            return Err(bad(format!(
                "--bs: {} is not a multiple of {}, the O_DIRECT offset alignment of {}",
                a.bs,
                al.offset,
                a.file.display()
            )));
        }
        f
    } else {
        f
    };
    Ok(if a.register {
        Target::Registered(f.register())
    } else {
        Target::Plain(f)
    })
}

/// The file, registered with the ring (fio's `registerfiles`) or not.
enum Target {
    Registered(RegisteredFile),
    Plain(File),
}

impl Target {
    fn is_registered(&self) -> bool {
        matches!(self, Target::Registered(f) if f.is_registered())
    }

    fn file(&self) -> &File {
        match self {
            Target::Registered(f) => f,
            Target::Plain(f) => f,
        }
    }

    async fn read_exact_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        match self {
            Target::Registered(f) => f.read_exact_at(buf, pos).await,
            Target::Plain(f) => f.read_exact_at(buf, pos).await,
        }
    }

    async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        match self {
            Target::Registered(f) => f.write_all_at(buf, pos).await,
            Target::Plain(f) => f.write_all_at(buf, pos).await,
        }
    }

    async fn read_fixed_at(&self, buf: FixedBuf, pos: u64) -> BufResult<usize, FixedBuf> {
        match self {
            Target::Registered(f) => f.read_fixed_at(buf, pos).await,
            Target::Plain(f) => f.read_fixed_at(buf, pos).await,
        }
    }

    async fn write_fixed_at(&self, buf: FixedBuf, pos: u64) -> BufResult<usize, FixedBuf> {
        match self {
            Target::Registered(f) => f.write_fixed_at(buf, pos).await,
            Target::Plain(f) => f.write_fixed_at(buf, pos).await,
        }
    }

    async fn sync_all(&self) -> io::Result<()> {
        match self {
            Target::Registered(f) => f.sync_all().await,
            Target::Plain(f) => f.sync_all().await,
        }
    }
}

fn pin(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .map_err(|_| bad(format!("--cpu: {cpu} is not a CPU of this machine")))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| bad(format!("--cpu: cannot run on CPU {cpu}: {e}")))
}

fn run(a: Args) -> io::Result<()> {
    if let Some(c) = a.cpu {
        pin(c)?;
    }
    let mut rt = Runner::builder().backend(a.backend).build()?;
    let backend = rt.backend();
    rt.run(async move {
        let file = prepare(&a).await?;
        let blocks = a.size / a.bs as u64;
        let align = file.file().dio_alignment().map(|al| al.mem as usize);
        let bufs = Buffers::new(&a, align)?;
        println!(
            "fio: file={} rw={} bs={} qd={} secs={} size={} fsync={} backend={} registered={} direct={} fixed={} fixed_registered={} eager={}",
            a.file.display(),
            a.rw.name(),
            a.bs,
            a.qd,
            a.secs,
            blocks * a.bs as u64,
            a.fsync,
            backend,
            if file.is_registered() { "yes" } else { "no" },
            if a.direct { "yes" } else { "no" },
            if a.fixed { "yes" } else { "no" },
            if bufs.registered() { "yes" } else { "no" },
            if a.eager { "yes" } else { "no" },
        );
        let qd = a.qd;
        let secs = a.secs;
        let sh = Rc::new(Shared {
            args: a,
            file,
            bufs,
            blocks,
            deadline: Cell::new(None),
            cursor: Cell::new(0),
            writes: Cell::new(0),
            fsyncs: Cell::new(0),
            ops: Cell::new(0),
            bytes: Cell::new(0),
            hist: RefCell::new(Histogram::new()),
            error: RefCell::new(None),
        });
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        sh.deadline.set(Some(t0 + Duration::from_secs_f64(secs)));
        let tasks: Vec<_> = (0..qd as u64)
            .map(|i| uringio::spawn(worker(sh.clone(), i)))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (process_cpu() - cpu0).as_nanos() as f64;
        if let Some(e) = sh.error.borrow_mut().take() {
            return Err(e);
        }
        let ops = sh.ops.get();
        let h = sh.hist.borrow();
        println!(
            "result: iops={:.0} mbps={:.1} cpu_ns_per_op={:.0} lat_p50_us={:.1} lat_p99_us={:.1} ops={} fsyncs={} secs={:.2}",
            ops as f64 / wall,
            sh.bytes.get() as f64 / wall / 1e6,
            if ops > 0 { cpu / ops as f64 } else { 0.0 },
            h.quantile(0.50) as f64 / 1e3,
            h.quantile(0.99) as f64 / 1e3,
            ops,
            sh.fsyncs.get(),
            wall,
        );
        if ops == 0 {
            return Err(io::Error::other("no op completed"));
        }
        Ok(())
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fio: error: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a) {
        eprintln!("fio: error: {e}");
        std::process::exit(if e.kind() == io::ErrorKind::InvalidInput {
            2
        } else {
            1
        });
    }
}
