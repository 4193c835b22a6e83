//! The rest of a storage engineer's file API: linked write → sync, reads
//! with a deadline, per-op `RWF_*` flags, `sync_file_range`, `fadvise`,
//! `fallocate` with named modes, `try_clone` and `into_std`.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use bitflags::bitflags;

use super::File;
use crate::BufResult;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::op::Op;
use crate::driver::op::fixed::{read_segment, write_segment};
use crate::driver::op::fs as ops;
use crate::driver::op::fsext;
use crate::driver::op::link;

pub use crate::driver::op::link::SyncKind;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

bitflags! {
    /// `openat2(2)` path-resolution restrictions, for
    /// [`OpenOptions::resolve`](super::OpenOptions::resolve).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ResolveFlags: u64 {
        /// No crossing of mount points (bind mounts included): `EXDEV`.
        const NO_XDEV = libc::RESOLVE_NO_XDEV;
        /// No `/proc/PID/fd`-style magic links: `ELOOP`.
        const NO_MAGICLINKS = libc::RESOLVE_NO_MAGICLINKS;
        /// No symlinks at all (implies `NO_MAGICLINKS`): `ELOOP`.
        const NO_SYMLINKS = libc::RESOLVE_NO_SYMLINKS;
        /// The path must stay beneath the starting directory (no `..`
        /// above it, no absolute paths, no symlink leading out): `EXDEV`.
        const BENEATH = libc::RESOLVE_BENEATH;
        /// Resolve as if the starting directory were `/` (a chroot for
        /// this one lookup).
        const IN_ROOT = libc::RESOLVE_IN_ROOT;
        /// Only from the dentry cache, else `EAGAIN` (5.12).
        const CACHED = libc::RESOLVE_CACHED;
    }
}

bitflags! {
    /// How [`File::fallocate`] changes the file (`FALLOC_FL_*`).
    ///
    /// [`FallocateMode::empty()`] allocates the range and extends the file
    /// if the range ends past it (plain `fallocate`). Combinations the
    /// kernel always refuses are an `InvalidInput` error naming them,
    /// before anything reaches the kernel; whether a filesystem supports a
    /// mode is its own answer (`EOPNOTSUPP`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FallocateMode: i32 {
        /// Allocate without changing the file size (`FALLOC_FL_KEEP_SIZE`).
        const KEEP_SIZE = libc::FALLOC_FL_KEEP_SIZE;
        /// Deallocate the range: it reads as zeros afterwards, the size
        /// stays (`FALLOC_FL_PUNCH_HOLE`; must come with `KEEP_SIZE`).
        const PUNCH_HOLE = libc::FALLOC_FL_PUNCH_HOLE;
        /// Remove the range, shifting what follows down
        /// (`FALLOC_FL_COLLAPSE_RANGE`; alone; block-aligned).
        const COLLAPSE_RANGE = libc::FALLOC_FL_COLLAPSE_RANGE;
        /// Zero the range (allocated, reads as zeros); extends the file
        /// unless with `KEEP_SIZE` (`FALLOC_FL_ZERO_RANGE`).
        const ZERO_RANGE = libc::FALLOC_FL_ZERO_RANGE;
        /// Insert a hole at the offset, shifting what follows up
        /// (`FALLOC_FL_INSERT_RANGE`; alone; block-aligned).
        const INSERT_RANGE = libc::FALLOC_FL_INSERT_RANGE;
        /// Unshare shared (reflinked) blocks of the range
        /// (`FALLOC_FL_UNSHARE_RANGE`).
        const UNSHARE_RANGE = libc::FALLOC_FL_UNSHARE_RANGE;
    }
}

impl FallocateMode {
    /// Refuses combinations the kernel never accepts, with a message that
    /// names them.
    fn check(self) -> io::Result<()> {
        let unknown = self.bits() & !FallocateMode::all().bits();
        if unknown != 0 {
            return Err(invalid(format!(
                "fallocate mode has unknown bits {unknown:#x}"
            )));
        }
        if self.contains(Self::PUNCH_HOLE) && !self.contains(Self::KEEP_SIZE) {
            return Err(invalid(
                "fallocate: PUNCH_HOLE must be combined with KEEP_SIZE".into(),
            ));
        }
        if self.contains(Self::PUNCH_HOLE) && self.contains(Self::ZERO_RANGE) {
            return Err(invalid(
                "fallocate: PUNCH_HOLE and ZERO_RANGE together".into(),
            ));
        }
        for alone in [Self::COLLAPSE_RANGE, Self::INSERT_RANGE] {
            if self.contains(alone) && self != alone {
                return Err(invalid(format!(
                    "fallocate: {alone:?} cannot be combined with other modes ({self:?})"
                )));
            }
        }
        Ok(())
    }
}

/// Advice for [`File::fadvise`] (`POSIX_FADV_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// No special treatment (the default).
    Normal,
    /// Random access: read-ahead off.
    Random,
    /// Sequential access: read-ahead doubled.
    Sequential,
    /// The range will be needed soon: start reading it into the page cache.
    WillNeed,
    /// The range will not be needed: drop its clean pages from the page
    /// cache (dirty pages are written back first only by a sync).
    DontNeed,
    /// The data will be accessed once (a no-op on Linux).
    NoReuse,
}

impl Advice {
    fn raw(self) -> i32 {
        match self {
            Advice::Normal => libc::POSIX_FADV_NORMAL,
            Advice::Random => libc::POSIX_FADV_RANDOM,
            Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
            Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
            Advice::DontNeed => libc::POSIX_FADV_DONTNEED,
            Advice::NoReuse => libc::POSIX_FADV_NOREUSE,
        }
    }
}

bitflags! {
    /// What [`File::sync_range`] does (`SYNC_FILE_RANGE_*`). Empty does
    /// nothing.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SyncRangeFlags: u32 {
        /// Wait for write-out already under way in the range first.
        const WAIT_BEFORE = libc::SYNC_FILE_RANGE_WAIT_BEFORE;
        /// Start write-out of the range's dirty pages.
        const WRITE = libc::SYNC_FILE_RANGE_WRITE;
        /// Wait for the write-out to finish.
        const WAIT_AFTER = libc::SYNC_FILE_RANGE_WAIT_AFTER;
    }
}

bitflags! {
    /// Per-op flags for [`File::read_at_with`] / [`File::write_at_with`]
    /// (`RWF_*`, as `preadv2`/`pwritev2` take them). See
    /// `uring-sys-notes/rwf-flags.md`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct RwFlags: i32 {
        /// High priority: poll for completion where the device has poll
        /// queues (`RWF_HIPRI`). Only meaningful for O_DIRECT I/O with
        /// polling set up; uringio's rings are not `IORING_SETUP_IOPOLL`
        /// (which would refuse the flag), so on io_uring it is dropped
        /// before submission. A hint on both backends.
        const HIPRI = libc::RWF_HIPRI;
        /// This write is durable like an `O_DSYNC` write (`RWF_DSYNC`).
        const DSYNC = libc::RWF_DSYNC;
        /// This write is durable like an `O_SYNC` write (`RWF_SYNC`).
        const SYNC = libc::RWF_SYNC;
        /// Fail with `WouldBlock` (`EAGAIN`) rather than wait: a buffered
        /// read of pages not in the page cache, a write that would block
        /// (`RWF_NOWAIT`, 4.14 reads / 5.9 writes).
        const NOWAIT = libc::RWF_NOWAIT;
        /// Append, ignoring the offset, even without `O_APPEND`
        /// (`RWF_APPEND`, 4.16; writes only).
        const APPEND = libc::RWF_APPEND;
    }
}

impl RwFlags {
    fn check(self, write: bool) -> io::Result<()> {
        let unknown = self.bits() & !RwFlags::all().bits();
        if unknown != 0 {
            return Err(invalid(format!("RwFlags has unknown bits {unknown:#x}")));
        }
        if !write && self.intersects(Self::DSYNC | Self::SYNC | Self::APPEND) {
            return Err(invalid(format!(
                "RwFlags {:?} apply to writes only",
                self & (Self::DSYNC | Self::SYNC | Self::APPEND)
            )));
        }
        Ok(())
    }

    /// The bits that go to the kernel on this loop's backend.
    fn raw(self) -> i32 {
        let uring = crate::driver::with_current(|d| d.is_uring()).unwrap_or(false);
        if uring {
            (self - Self::HIPRI).bits()
        } else {
            self.bits()
        }
    }
}

impl File {
    /// Writes all of `buf` at `pos`, then syncs the file, linked: on
    /// io_uring the write and the `fdatasync` ([`SyncKind::Data`]) or
    /// `fsync` ([`SyncKind::All`]) go to the kernel in one submission,
    /// the sync starting only once the write succeeded in full; on epoll
    /// both run in one blocking-pool job. Returns both results: the
    /// write's (with the buffer) and the sync's, which is `ECANCELED`
    /// when the write failed. A short write is completed by further
    /// writes and the sync then sent on its own. Dropped in flight, the
    /// chain is cancelled and its buffer kept until the kernel is done.
    pub async fn write_all_at_sync<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
        kind: SyncKind,
    ) -> (BufResult<(), B>, io::Result<()>) {
        if let Some(e) = self.misaligned("write_all_at_sync", pos, || vec![write_segment(&buf)]) {
            return ((Err(e), buf), Err(crate::driver::op::ecanceled()));
        }
        let ((res, b), sync) = link::write_sync(self.raw(), buf, pos, true, kind).await;
        ((res.map(|_| ()), b), sync)
    }

    /// One write of `buf` at `pos` linked to a sync, as
    /// [`write_all_at_sync`](Self::write_all_at_sync) but with a single
    /// write: when it is short (fewer bytes than `buf` holds) the sync is
    /// not run and reports `ECANCELED`, as io_uring's link does.
    pub async fn write_at_sync<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
        kind: SyncKind,
    ) -> (BufResult<usize, B>, io::Result<()>) {
        if let Some(e) = self.misaligned("write_at_sync", pos, || vec![write_segment(&buf)]) {
            return ((Err(e), buf), Err(crate::driver::op::ecanceled()));
        }
        link::write_sync(self.raw(), buf, pos, false, kind).await
    }

    /// Reads at `pos` like [`read_at`](Self::read_at), giving up after
    /// `timeout`: a `TimedOut` error, with the buffer. On io_uring the
    /// deadline is an `IORING_OP_LINK_TIMEOUT` linked to the read (no
    /// timer of the loop); on epoll a loop timer. A read of a regular file
    /// cannot be interrupted once the kernel (or epoll's blocking pool)
    /// runs it, so on regular files the deadline rarely matters: it is for
    /// files whose reads wait (FIFOs opened as files, devices), and the
    /// same method on sockets (`TcpStream::read_timeout`) is where it
    /// earns its keep.
    pub async fn read_at_timeout<B: IoBufMut>(
        &self,
        buf: B,
        pos: u64,
        timeout: Duration,
    ) -> BufResult<usize, B> {
        if let Some(e) = self.misaligned("read_at_timeout", pos, || vec![read_segment(&buf)]) {
            return (Err(e), buf);
        }
        let op = crate::driver::op::rw::Read::new(self.raw(), buf, Some(pos), false);
        link::with_timeout(op, timeout).await
    }

    /// Reads at `pos` with per-op flags (`preadv2`): e.g.
    /// [`RwFlags::NOWAIT`] fails with `WouldBlock` instead of waiting for
    /// pages not in the page cache. Write-only flags are an
    /// `InvalidInput` error.
    pub async fn read_at_with<B: IoBufMut>(
        &self,
        buf: B,
        pos: u64,
        flags: RwFlags,
    ) -> BufResult<usize, B> {
        if let Err(e) = flags.check(false) {
            return (Err(e), buf);
        }
        if let Some(e) = self.misaligned("read_at_with", pos, || vec![read_segment(&buf)]) {
            return (Err(e), buf);
        }
        crate::driver::op::link::eager_if(
            self.eager(),
            Op::new(fsext::ReadFlags::new(self.raw(), buf, pos, flags.raw())),
        )
        .await
    }

    /// Writes `buf` at `pos` with per-op flags (`pwritev2`): e.g.
    /// [`RwFlags::DSYNC`] makes this one write durable, [`RwFlags::APPEND`]
    /// appends whatever `pos` says. May write fewer bytes than `buf` holds.
    pub async fn write_at_with<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
        flags: RwFlags,
    ) -> BufResult<usize, B> {
        if let Err(e) = flags.check(true) {
            return (Err(e), buf);
        }
        if let Some(e) = self.misaligned("write_at_with", pos, || vec![write_segment(&buf)]) {
            return (Err(e), buf);
        }
        crate::driver::op::link::eager_if(
            self.eager(),
            Op::new(fsext::WriteFlags::new(self.raw(), buf, pos, flags.raw())),
        )
        .await
    }

    /// `sync_file_range(offset, len, flags)`: starts and/or waits for
    /// write-out of a range's dirty pages. `len` 0 means "to the end of
    /// the file". Not a durability guarantee (no metadata, no disk cache
    /// flush): see `sync_file_range(2)`. On io_uring
    /// `IORING_OP_SYNC_FILE_RANGE`, whose length field is 32 bits: a
    /// longer `len` is an `InvalidInput` error on both backends.
    pub async fn sync_range(&self, offset: u64, len: u64, flags: SyncRangeFlags) -> io::Result<()> {
        let unknown = flags.bits() & !SyncRangeFlags::all().bits();
        if unknown != 0 {
            return Err(invalid(format!(
                "SyncRangeFlags has unknown bits {unknown:#x}"
            )));
        }
        Op::new(fsext::SyncRange::new(self.raw(), offset, len, flags.bits())).await
    }

    /// `posix_fadvise(offset, len, advice)` (`IORING_OP_FADVISE` on
    /// io_uring). `len` 0 means "to the end of the file"; the length
    /// is limited to 4 GiB - 1 as for [`sync_range`](Self::sync_range).
    pub async fn fadvise(&self, offset: u64, len: u64, advice: Advice) -> io::Result<()> {
        Op::new(fsext::Fadvise::new(self.raw(), offset, len, advice.raw())).await
    }

    /// `fallocate(mode, offset, len)`: [`FallocateMode::empty()`]
    /// allocates and extends; see [`FallocateMode`] for the others. A
    /// zero `len` or an impossible mode combination is an `InvalidInput`
    /// error.
    pub async fn fallocate(&self, offset: u64, len: u64, mode: FallocateMode) -> io::Result<()> {
        mode.check()?;
        if len == 0 {
            return Err(invalid("fallocate length is 0".into()));
        }
        Op::new(ops::Fallocate::new(self.raw(), mode.bits(), offset, len)).await
    }

    /// A new `File` on a duplicate of the descriptor (`F_DUPFD_CLOEXEC`):
    /// it shares the open file (offset, flags, locks) and stays open when
    /// this one is closed.
    pub fn try_clone(&self) -> io::Result<File> {
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| io::Error::other("file is closed"))?
            .try_clone()?;
        Ok(File {
            fd: Some(fd),
            dio: self.dio,
        })
    }

    /// The `std::fs::File` on the same descriptor. Sound without waiting:
    /// every op on a `File` borrows it, so none can be in flight once it
    /// is given by value (an op whose future was dropped in flight was
    /// either never submitted or holds its own reference to the open
    /// file in the kernel).
    pub fn into_std(mut self) -> std::fs::File {
        let fd: OwnedFd = self.fd.take().expect("an open File always has its fd");
        std::fs::File::from(fd)
    }
}
