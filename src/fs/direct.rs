//! Direct I/O (`O_DIRECT`) and registered buffers on files: the alignment a
//! file needs, learned once when it is opened, the check that refuses a
//! misaligned request before it reaches the kernel, and
//! [`File::read_fixed_at`] / [`File::write_fixed_at`]. See
//! uring-sys-notes/o-direct.md and registered-buffers.md.
//!
//! ## Where the alignment comes from
//! 1. `statx` with `STATX_DIOALIGN` (6.1; ext4, xfs, f2fs, block devices,
//!    and more since): `stx_dio_mem_align` for buffer addresses,
//!    `stx_dio_offset_align` for file offsets and segment lengths.
//! 2. Otherwise, for a block device, its logical block size (`BLKSSZGET`)
//!    for both.
//! 3. Otherwise `st_blksize` when it is a power of two in 512..=4096, else
//!    512, for both. On a local filesystem `st_blksize` is the filesystem
//!    block, a multiple of the device's logical block size: this can refuse
//!    a 512-aligned request the disk would take, never let through one it
//!    would refuse for alignment ([`DioSource::Fallback`] says it was
//!    guessed).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::{File, Metadata};
use crate::BufResult;
use crate::buf::{FixedBuf, IoBuf};
use crate::driver::Cancellable;
use crate::driver::op::Op;
use crate::driver::op::fixed::{ReadFixed, Refuse, WriteFixed, read_segment, write_segment};

/// Where a file's [`DioAlignment`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DioSource {
    /// `statx`'s `STATX_DIOALIGN` (Linux 6.1+): exact.
    Statx,
    /// The block device's logical block size (`BLKSSZGET`).
    BlockDevice,
    /// A conservative guess (`st_blksize`, or 512): the kernel did not
    /// report the alignment.
    Fallback,
}

/// The alignment direct I/O on a file needs (see
/// [`File::dio_alignment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DioAlignment {
    /// Buffer addresses must be multiples of this.
    pub mem: u32,
    /// File offsets and the length of each buffer (segment) must be
    /// multiples of this.
    pub offset: u32,
    /// Where these numbers came from.
    pub source: DioSource,
}

impl DioAlignment {
    fn from_stat(st: Option<&libc::statx>, fd: RawFd) -> DioAlignment {
        if let Some(st) = st {
            let (m, o) = (st.stx_dio_mem_align, st.stx_dio_offset_align);
            if st.stx_mask & libc::STATX_DIOALIGN != 0 && m.is_power_of_two() && o.is_power_of_two()
            {
                return DioAlignment {
                    mem: m,
                    offset: o,
                    source: DioSource::Statx,
                };
            }
        }
        let blk = st.is_none_or(|st| u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFBLK);
        if blk {
            if let Some(n) = crate::driver::op::fixed::logical_block_size(fd) {
                if n.is_power_of_two() {
                    return DioAlignment {
                        mem: n,
                        offset: n,
                        source: DioSource::BlockDevice,
                    };
                }
            }
        }
        let n = st
            .map(|s| s.stx_blksize)
            .filter(|b| b.is_power_of_two() && (512..=4096).contains(b))
            .unwrap_or(512);
        DioAlignment {
            mem: n,
            offset: n,
            source: DioSource::Fallback,
        }
    }

    fn why(&self) -> &'static str {
        match self.source {
            DioSource::Statx => "STATX_DIOALIGN",
            DioSource::BlockDevice => "the device's logical block size",
            DioSource::Fallback => "st_blksize; the kernel did not report STATX_DIOALIGN",
        }
    }

    /// The error for a request at `pos` over `segs` (address, length), if
    /// it is misaligned.
    fn check(&self, what: &str, pos: u64, segs: &[(usize, usize)]) -> Option<io::Error> {
        let (mem, off) = (self.mem as usize, self.offset as usize);
        let bad = |msg: String| {
            Some(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("O_DIRECT {what}: {msg} ({})", self.why()),
            ))
        };
        if pos % u64::from(self.offset) != 0 {
            return bad(format!(
                "file offset {pos} is not a multiple of {off}, the file's offset alignment"
            ));
        }
        for &(addr, len) in segs {
            if addr % mem != 0 {
                return bad(format!(
                    "buffer address {addr:#x} is not a multiple of {mem}, the file's memory \
                     alignment (use buf::AlignedBuf)"
                ));
            }
            if len % off != 0 {
                return bad(format!(
                    "length {len} is not a multiple of {off}, the file's offset alignment"
                ));
            }
        }
        None
    }
}

/// The alignment of a file just opened with `flags` (`None` without
/// `O_DIRECT`), from an async `statx`.
pub(super) async fn learn(fd: &OwnedFd, flags: i32) -> Option<DioAlignment> {
    if flags & libc::O_DIRECT == 0 {
        return None;
    }
    let raw = fd.as_raw_fd();
    let st = Op::new(crate::driver::op::fs::Statx::fd(raw)).await.ok();
    Some(DioAlignment::from_stat(st.as_ref(), raw))
}

/// The alignment of a file opened elsewhere, if it has `O_DIRECT` (a
/// synchronous `fcntl` and `statx`).
pub(super) fn learn_now(fd: &OwnedFd) -> Option<DioAlignment> {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
    if flags & libc::O_DIRECT == 0 {
        return None;
    }
    let raw = fd.as_raw_fd();
    let st = crate::driver::op::fixed::statx_now(raw).ok();
    Some(DioAlignment::from_stat(st.as_ref(), raw))
}

impl File {
    /// The alignment direct I/O on this file needs, if it was opened with
    /// `O_DIRECT` ([`OpenOptions::direct`](super::OpenOptions::direct) or
    /// the flag in `custom_flags`, or a std file with it); learned once,
    /// at open (see [`DioSource`]).
    ///
    /// On such a file every read and write (`read_at`, `write_at`,
    /// `read_exact_at`, `write_all_at`, `readv_at`, `writev_at`,
    /// `read_fixed_at`, `write_fixed_at`) whose file offset, buffer
    /// address or buffer length (for reads, the spare capacity it would
    /// fill) is not a multiple of the alignment fails with an
    /// `InvalidInput` error naming it, on both backends, before anything
    /// reaches the kernel. A read at the end of the file may return fewer
    /// bytes than asked; `read_exact_at` then reports `UnexpectedEof`.
    pub fn dio_alignment(&self) -> Option<DioAlignment> {
        self.dio
    }

    /// The error for a misaligned direct request, if this file is direct
    /// and the request is misaligned. `segs` is only called for direct
    /// files.
    pub(super) fn misaligned(
        &self,
        what: &str,
        pos: u64,
        segs: impl FnOnce() -> Vec<(usize, usize)>,
    ) -> Option<io::Error> {
        let a = self.dio?;
        a.check(what, pos, &segs())
    }

    /// For `read_exact_at`: a direct read that came back `n` bytes short of
    /// a multiple of the alignment hit the end of the file (the next
    /// request could not be aligned).
    pub(super) fn dio_short(&self, n: usize) -> bool {
        self.dio.is_some_and(|a| n % a.offset as usize != 0)
    }

    /// Reads at `pos` into `buf`'s spare capacity, like
    /// [`read_at`](Self::read_at), with `IORING_OP_READ_FIXED` when `buf`'s
    /// pool is registered with this loop's ring (the kernel skips mapping
    /// the pages); a plain read otherwise (epoll: `pread` on the blocking
    /// pool). `Ok(0)` at end of file.
    ///
    /// # Errors
    /// `InvalidInput` if `buf` has no spare capacity, if its pool was made
    /// in another loop, or (on an `O_DIRECT` file) if the request is
    /// misaligned (see [`dio_alignment`](Self::dio_alignment)).
    pub fn read_fixed_at(
        &self,
        buf: FixedBuf,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, FixedBuf>> + '_ {
        let err = self.misaligned("read_fixed_at", pos, || vec![read_segment(&buf)]);
        crate::driver::op::link::eager_if(
            self.eager(),
            Op::new(Refuse::new(
                ReadFixed::new(self.raw(), buf, pos).nowait(self.buffered()),
                err,
            )),
        )
    }

    /// Writes `buf`'s data at `pos` (maybe not all), like
    /// [`write_at`](Self::write_at), with `IORING_OP_WRITE_FIXED` when
    /// `buf`'s pool is registered with this loop's ring; a plain write
    /// otherwise.
    ///
    /// # Errors
    /// As [`read_fixed_at`](Self::read_fixed_at).
    pub fn write_fixed_at(
        &self,
        buf: FixedBuf,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, FixedBuf>> + '_ {
        let err = self.misaligned("write_fixed_at", pos, || vec![write_segment(&buf)]);
        crate::driver::op::link::eager_if(
            self.eager(),
            Op::new(Refuse::new(WriteFixed::new(self.raw(), buf, pos), err)),
        )
    }
}

/// For `write_all_at`: the refusal of a misaligned direct write of `buf`.
pub(super) fn check_write_all<B: IoBuf>(f: &File, buf: &B, pos: u64) -> Option<io::Error> {
    f.misaligned("write_all_at", pos, || vec![write_segment(buf)])
}

/// For `read_exact_at`: the refusal of a misaligned direct read into `buf`.
pub(super) fn check_read_exact<B: IoBuf>(f: &File, buf: &B, pos: u64) -> Option<io::Error> {
    f.misaligned("read_exact_at", pos, || vec![read_segment(buf)])
}

impl Metadata {
    /// The alignment direct I/O needs for buffer addresses
    /// (`stx_dio_mem_align`), where the kernel reports `STATX_DIOALIGN`
    /// (6.1+, and the filesystem supports it); `None` otherwise. `Some(0)`
    /// means the file does not support direct I/O.
    pub fn dio_mem_align(&self) -> Option<u32> {
        (self.0.stx_mask & libc::STATX_DIOALIGN != 0).then_some(self.0.stx_dio_mem_align)
    }

    /// The alignment direct I/O needs for file offsets and segment lengths
    /// (`stx_dio_offset_align`), where the kernel reports it; as
    /// [`dio_mem_align`](Self::dio_mem_align).
    pub fn dio_offset_align(&self) -> Option<u32> {
        (self.0.stx_mask & libc::STATX_DIOALIGN != 0).then_some(self.0.stx_dio_offset_align)
    }
}
