//! Files on owned buffers: positioned reads and writes, sync, metadata
//! (statx), and the path operations.
//!
//! On io_uring every call is an SQE; on epoll they run on the loop's
//! blocking pool (regular files are always "ready" to epoll).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::BufResult;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::Cancellable;
use crate::driver::op::fixed::{Refuse, read_segment, write_segment};
use crate::driver::op::fs as ops;
use crate::driver::op::link::eager_if;
use crate::driver::op::rw::{Read, ReadV, Write, WriteV};
use crate::driver::op::{FixedFd, Op};
use crate::runtime::context;

mod copy;
mod dir;
mod direct;
mod ext;
mod registered;

pub use copy::copy;
pub use dir::{DirEntry, ReadDir, read_dir};
pub use direct::{DioAlignment, DioSource};
pub use ext::{Advice, FallocateMode, ResolveFlags, RwFlags, SyncKind, SyncRangeFlags};
pub use registered::RegisteredFile;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {p:?} contains a NUL byte"),
        )
    })
}

/// Options for opening a file, as `std::fs::OpenOptions`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: i32,
    direct: bool,
    resolve: ResolveFlags,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenOptions {
    /// All options off; mode 0o666 (before umask).
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o666,
            custom_flags: 0,
            resolve: ResolveFlags::empty(),
            direct: false,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Open for appending (implies write).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Truncate to zero length (needs write).
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Create if missing (needs write or append).
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Create, failing if it exists (needs write or append).
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    /// The permission bits for a created file.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// How the path may be resolved (`openat2(2)`'s `RESOLVE_*`): e.g.
    /// [`ResolveFlags::BENEATH`] refuses a path that leaves the starting
    /// directory (`..`, absolute paths, symlinks pointing out) with `EXDEV`,
    /// [`ResolveFlags::NO_SYMLINKS`] refuses any symlink with `ELOOP`.
    /// Relative paths start at the current directory. Empty (the default):
    /// a plain `openat`. `IORING_OP_OPENAT2` on io_uring, the `openat2`
    /// system call on the blocking pool on epoll (Linux 5.6).
    pub fn resolve(&mut self, flags: ResolveFlags) -> &mut Self {
        self.resolve = flags;
        self
    }

    /// Extra `open(2)` flags, e.g. `libc::O_DIRECT`.
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    /// Direct I/O (`O_DIRECT`): reads and writes bypass the page cache,
    /// and must be aligned (see [`File::dio_alignment`]; misaligned ones
    /// are refused with `InvalidInput` before reaching the kernel). Use
    /// [`AlignedBuf`](crate::buf::AlignedBuf) or a
    /// [`FixedBufPool`](crate::buf::FixedBufPool) for the buffers.
    ///
    /// On io_uring, reads and writes on a direct file are submitted to the
    /// kernel as soon as they are first polled (as if wrapped in
    /// [`driver::eager`](crate::driver::eager)), not with the rest of the
    /// loop iteration's ops: the device starts on each at once (1.04–1.2×
    /// the IOPS for 4 KiB random reads at queue depth 32 on a virtio disk,
    /// benches/fileio.rs). Results are the same; only the timing of the
    /// `io_uring_enter` calls changes.
    pub fn direct(&mut self, on: bool) -> &mut Self {
        self.direct = on;
        self
    }

    fn flags(&self) -> io::Result<i32> {
        let acc = match (self.read, self.write || self.append) {
            (true, false) => libc::O_RDONLY,
            (false, true) => libc::O_WRONLY,
            (true, true) => libc::O_RDWR,
            (false, false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "OpenOptions: neither read nor write nor append is set",
                ));
            }
        };
        let writing = self.write || self.append;
        if (self.truncate || self.create || self.create_new) && !writing {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "OpenOptions: truncate/create/create_new need write or append",
            ));
        }
        if self.truncate && self.append {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "OpenOptions: truncate and append together",
            ));
        }
        let mut f = acc | self.custom_flags;
        if self.direct {
            f |= libc::O_DIRECT;
        }
        if self.append {
            f |= libc::O_APPEND;
        }
        if self.truncate {
            f |= libc::O_TRUNC;
        }
        if self.create_new {
            f |= libc::O_CREAT | libc::O_EXCL;
        } else if self.create {
            f |= libc::O_CREAT;
        }
        Ok(f)
    }

    /// Opens `path` (`openat`).
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let flags = self.flags()?;
        let p = cpath(path.as_ref())?;
        let op = if self.resolve.is_empty() {
            ops::OpenAt::new(p, flags, self.mode)
        } else {
            ops::OpenAt::with_resolve(p, flags, self.mode, self.resolve.bits())
        };
        let fd = Op::new(op).await?;
        let dio = direct::learn(&fd, flags).await;
        Ok(File { fd: Some(fd), dio })
    }
}

/// An open file. Reads and writes take an offset (`pread`/`pwrite`), so one
/// file can serve many concurrent ops.
///
/// Offsets are `u64` but files end at `i64::MAX`: an offset past it (and,
/// for the loops `read_exact_at` / `write_all_at` and for `fallocate`, a
/// range ending past it) is an `InvalidInput` error on both backends,
/// before anything reaches the kernel (io_uring would read an offset of
/// `u64::MAX` as "the current position").
#[derive(Debug)]
pub struct File {
    fd: Option<OwnedFd>,
    /// The alignment direct I/O needs, for a file opened with `O_DIRECT`.
    dio: Option<DioAlignment>,
}

impl File {
    /// Opens `path` read-only.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Creates (or truncates) `path` for writing.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Takes over a std file.
    pub fn from_std(f: std::fs::File) -> File {
        let fd = OwnedFd::from(f);
        let dio = direct::learn_now(&fd);
        File { fd: Some(fd), dio }
    }

    /// Not opened with `O_DIRECT`: on epoll a read is first tried on the
    /// loop thread with `RWF_NOWAIT` (served from the page cache without a
    /// trip to the pool). An `O_DIRECT` read with `RWF_NOWAIT` would wait
    /// for the device, so those always go to the pool.
    fn buffered(&self) -> bool {
        self.dio.is_none()
    }

    /// Opened with `O_DIRECT`: its reads and writes are submitted to the
    /// kernel as soon as they are queued (`driver::eager`), not with the
    /// rest of the loop iteration's ops. A direct request goes to the
    /// device at once, so the sooner it is submitted the sooner the device
    /// works on it: measured on a virtio disk, 4 KiB random reads at
    /// queue depth 32 went 1.04–1.2× faster (benches/fileio.rs). Buffered ops
    /// mostly finish inside the submission (page cache), where one enter
    /// for many ops is what wins.
    pub(super) fn eager(&self) -> bool {
        self.dio.is_some()
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Reads at `pos` into `buf`'s spare capacity; `Ok(0)` at end of file.
    pub fn read_at<B: IoBufMut>(
        &self,
        buf: B,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        let err = self.misaligned("read_at", pos, || vec![read_segment(&buf)]);
        eager_if(
            self.eager(),
            Op::new(Refuse::new(
                Read::new(self.raw(), buf, Some(pos), false).nowait(self.buffered()),
                err,
            )),
        )
    }

    /// Fills `buf`'s spare capacity from `pos`; end of file first is an
    /// `UnexpectedEof` error (the bytes read stay in `buf`).
    pub async fn read_exact_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        read_exact(self, None, buf, pos).await
    }

    /// Writes `buf`'s initialised bytes at `pos` (maybe not all).
    pub fn write_at<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        let err = self.misaligned("write_at", pos, || vec![write_segment(&buf)]);
        eager_if(
            self.eager(),
            Op::new(Refuse::new(
                Write::new(self.raw(), buf, Some(pos), false),
                err,
            )),
        )
    }

    /// Writes all of `buf`'s initialised bytes at `pos`.
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        if let Some(e) = direct::check_write_all(self, &buf, pos) {
            return (Err(e), buf);
        }
        crate::driver::op::rw::write_all_eager(
            self.raw(),
            buf,
            Some(pos),
            false,
            None,
            self.eager(),
        )
        .await
    }

    /// Vectored read at `pos`.
    pub fn readv_at<B: IoBufMut>(
        &self,
        bufs: Vec<B>,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        let err = self.misaligned("readv_at", pos, || bufs.iter().map(read_segment).collect());
        eager_if(
            self.eager(),
            Op::new(Refuse::new(
                ReadV::new(self.raw(), bufs, Some(pos), false),
                err,
            )),
        )
    }

    /// Vectored write at `pos`.
    pub fn writev_at<B: IoBuf>(
        &self,
        bufs: Vec<B>,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        let err = self.misaligned("writev_at", pos, || {
            bufs.iter().map(write_segment).collect()
        });
        eager_if(
            self.eager(),
            Op::new(Refuse::new(
                WriteV::new(self.raw(), bufs, Some(pos), false),
                err,
            )),
        )
    }

    /// Flushes data and metadata to the device (`fsync`).
    pub async fn sync_all(&self) -> io::Result<()> {
        Op::new(ops::Fsync::new(self.raw(), false)).await
    }

    /// Flushes data to the device (`fdatasync`).
    pub async fn sync_data(&self) -> io::Result<()> {
        Op::new(ops::Fsync::new(self.raw(), true)).await
    }

    /// Truncates or extends to `len` bytes.
    pub async fn set_len(&self, len: u64) -> io::Result<()> {
        crate::driver::op::rw::check_offset(len)?;
        let sqe_ok =
            context::current_driver().is_some_and(|d| !d.is_uring() || d.features.ftruncate);
        if sqe_ok {
            Op::new(ops::Ftruncate::new(self.raw(), len)).await
        } else {
            // Rings older than 6.9 have no FTRUNCATE: use the pool, on a
            // duplicate of the descriptor.
            let fd = self
                .fd
                .as_ref()
                .ok_or_else(|| io::Error::other("file is closed"))?
                .try_clone()?;
            let l = context::current().expect("set_len outside a uringio loop");
            let el = crate::runtime::EventLoop { inner: l };
            el.run_in_executor(move || {
                nix::unistd::ftruncate(&fd, len as i64).map_err(io::Error::from)
            })
            .await
        }
    }

    /// Size, type, times and permissions (`statx`).
    pub async fn metadata(&self) -> io::Result<Metadata> {
        Op::new(ops::Statx::fd(self.raw())).await.map(Metadata)
    }

    /// Closes the file, reporting the close error if there is one.
    pub async fn close(mut self) -> io::Result<()> {
        match self.fd.take() {
            Some(fd) => Op::new(ops::Close::new(fd)).await,
            None => Ok(()),
        }
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("file is open").as_fd()
    }
}

/// Fills `buf`'s spare capacity from `pos`, one read after another
/// (naming the registered-file slot `fixed` where it applies).
async fn read_exact<B: IoBufMut>(
    file: &File,
    fixed: Option<FixedFd>,
    mut buf: B,
    pos: u64,
) -> BufResult<(), B> {
    let want = buf.bytes_total().saturating_sub(buf.bytes_init()) as u64;
    if let Err(e) = crate::driver::op::rw::check_range(pos, want) {
        return (Err(e), buf);
    }
    if let Some(e) = direct::check_read_exact(file, &buf, pos) {
        return (Err(e), buf);
    }
    let mut pos = pos;
    while buf.bytes_init() < buf.bytes_total() {
        let before = buf.bytes_init();
        let (res, b) = eager_if(
            file.eager(),
            Op::new(
                Read::new(file.raw(), buf, Some(pos), false)
                    .fixed(fixed)
                    .nowait(file.buffered()),
            ),
        )
        .await;
        buf = b;
        match res {
            Ok(0) => {
                return (
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "end of file after {} of {} bytes",
                            before,
                            buf.bytes_total()
                        ),
                    )),
                    buf,
                );
            }
            Ok(n) if file.dio_short(n) && buf.bytes_init() < buf.bytes_total() => {
                // A direct read short of the alignment met the end.
                return (
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "end of file after {} of {} bytes",
                            buf.bytes_init(),
                            buf.bytes_total()
                        ),
                    )),
                    buf,
                );
            }
            Ok(n) => pos += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// File metadata from `statx`.
#[derive(Clone, Copy)]
pub struct Metadata(libc::statx);

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("len", &self.len())
            .field("is_dir", &self.is_dir())
            .field("mode", &format_args!("{:o}", self.mode()))
            .finish()
    }
}

/// A statx time; times before 1970 (negative seconds) are fine, and one too
/// far out for `SystemTime` saturates to the epoch rather than panicking.
fn ts(t: libc::statx_timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.tv_nsec.min(999_999_999)));
    let secs = Duration::from_secs(t.tv_sec.unsigned_abs());
    let at = if t.tv_sec >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(secs)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(secs)
    };
    at.and_then(|a| a.checked_add(nanos))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Metadata {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.0.stx_size
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        u32::from(self.0.stx_mode) & libc::S_IFMT == libc::S_IFREG
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        u32::from(self.0.stx_mode) & libc::S_IFMT == libc::S_IFDIR
    }

    /// A symbolic link (only from [`symlink_metadata`]).
    pub fn is_symlink(&self) -> bool {
        u32::from(self.0.stx_mode) & libc::S_IFMT == libc::S_IFLNK
    }

    /// The permission bits and file type (`st_mode`).
    pub fn mode(&self) -> u32 {
        u32::from(self.0.stx_mode)
    }

    /// Last modification time.
    pub fn modified(&self) -> SystemTime {
        ts(self.0.stx_mtime)
    }

    /// Last access time.
    pub fn accessed(&self) -> SystemTime {
        ts(self.0.stx_atime)
    }

    /// Creation time, if the filesystem records it.
    pub fn created(&self) -> Option<SystemTime> {
        (self.0.stx_mask & libc::STATX_BTIME != 0).then(|| ts(self.0.stx_btime))
    }

    /// Preferred I/O block size.
    pub fn blksize(&self) -> u32 {
        self.0.stx_blksize
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.0.stx_ino
    }
}

/// Reads a whole file.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let f = File::open(path).await?;
    let size = f.metadata().await.map(|m| m.len() as usize).unwrap_or(0);
    let mut buf = Vec::with_capacity(size.max(4096) + 1);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(4096));
        }
        let pos = buf.len() as u64;
        let (res, b) = f.read_at(buf, pos).await;
        buf = b;
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    f.close().await?;
    Ok(buf)
}

/// Writes `data` to `path`, creating or truncating it.
pub async fn write(path: impl AsRef<Path>, data: impl Into<Vec<u8>>) -> io::Result<()> {
    let f = File::create(path).await?;
    let (res, _) = f.write_all_at(data.into(), 0).await;
    res?;
    f.close().await
}

/// Removes a file.
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    Op::new(ops::Unlink::new(cpath(path.as_ref())?, false)).await
}

/// Removes an empty directory.
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    Op::new(ops::Unlink::new(cpath(path.as_ref())?, true)).await
}

/// Renames `from` to `to`, replacing `to` if it exists.
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    Op::new(ops::Rename::new(cpath(from.as_ref())?, cpath(to.as_ref())?)).await
}

/// Creates a directory (mode 0o777 before umask).
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    Op::new(ops::MkDir::new(cpath(path.as_ref())?, 0o777)).await
}

/// Metadata of `path`, following symlinks.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    Op::new(ops::Statx::path(cpath(path.as_ref())?, true))
        .await
        .map(Metadata)
}

/// Metadata of `path` itself, not following a symlink.
pub async fn symlink_metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    Op::new(ops::Statx::path(cpath(path.as_ref())?, false))
        .await
        .map(Metadata)
}
