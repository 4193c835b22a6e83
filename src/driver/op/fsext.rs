//! More file ops: `sync_file_range`, `fadvise`, and positioned reads and
//! writes with per-op `RWF_*` flags (`preadv2`/`pwritev2` on epoll's
//! blocking pool, the SQE's `rw_flags` on io_uring).

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::rw::check_offset;
use super::{Mode, OpCode};
use crate::buf::{self, BufResult, IoBuf, IoBufMut};

/// The most one read or write moves (Linux's `MAX_RW_COUNT`).
const MAX_RW: usize = 0x7fff_f000;

fn cvt(r: libc::c_int) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `sync_file_range(fd, offset, nbytes, flags)`.
pub(crate) struct SyncRange {
    fd: RawFd,
    offset: u64,
    len: u64,
    flags: u32,
}

impl SyncRange {
    pub(crate) fn new(fd: RawFd, offset: u64, len: u64, flags: u32) -> SyncRange {
        SyncRange {
            fd,
            offset,
            len,
            flags,
        }
    }
}

impl OpCode for SyncRange {
    type Output = io::Result<()>;

    fn check(&self) -> io::Result<()> {
        super::rw::check_range(self.offset, self.len)?;
        // The SQE carries the length in 32 bits.
        if self.len > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "sync_range length {} is over 4 GiB - 1 (io_uring's limit); use 0 for \"to the end of the file\" or several calls",
                    self.len
                ),
            ));
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::SyncFileRange::new(types::Fd(self.fd), self.len as u32)
            .offset(self.offset)
            .flags(self.flags)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain system call on an fd.
        cvt(unsafe {
            libc::sync_file_range(
                self.fd,
                self.offset as libc::off64_t,
                self.len as libc::off64_t,
                self.flags,
            )
        })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `posix_fadvise(fd, offset, len, advice)`.
pub(crate) struct Fadvise {
    fd: RawFd,
    offset: u64,
    len: u64,
    advice: i32,
}

impl Fadvise {
    pub(crate) fn new(fd: RawFd, offset: u64, len: u64, advice: i32) -> Fadvise {
        Fadvise {
            fd,
            offset,
            len,
            advice,
        }
    }
}

impl OpCode for Fadvise {
    type Output = io::Result<()>;

    fn check(&self) -> io::Result<()> {
        super::rw::check_range(self.offset, self.len)?;
        if self.len > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fadvise length {} is over 4 GiB - 1 (io_uring's limit); use 0 for \"to the end of the file\"",
                    self.len
                ),
            ));
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Fadvise::new(types::Fd(self.fd), self.len as _, self.advice)
            .offset(self.offset)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain system call on an fd; it returns the error number
        // rather than setting errno.
        let r = unsafe {
            libc::posix_fadvise(
                self.fd,
                self.offset as libc::off_t,
                self.len as libc::off_t,
                self.advice,
            )
        };
        if r != 0 {
            Err(io::Error::from_raw_os_error(r))
        } else {
            Ok(0)
        }
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// A positioned read with `RWF_*` flags: `IORING_OP_READ` with `rw_flags`,
/// `preadv2` on the pool.
pub(crate) struct ReadFlags<B> {
    fd: RawFd,
    buf: B,
    iov: libc::iovec,
    offset: u64,
    flags: i32,
}

impl<B: IoBufMut> ReadFlags<B> {
    pub(crate) fn new(fd: RawFd, mut b: B, offset: u64, flags: i32) -> ReadFlags<B> {
        let (ptr, len) = buf::spare(&mut b);
        ReadFlags {
            fd,
            buf: b,
            iov: libc::iovec {
                iov_base: ptr.cast(),
                iov_len: len.min(MAX_RW),
            },
            offset,
            flags,
        }
    }
}

impl<B: IoBufMut> OpCode for ReadFlags<B> {
    type Output = BufResult<usize, B>;

    // The SQE points at the buffer's heap storage only.
    const MOVABLE: bool = true;

    fn check(&self) -> io::Result<()> {
        if self.iov.iov_len == 0 {
            return Err(super::rw::no_spare_capacity());
        }
        check_offset(self.offset)
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Read::new(
            types::Fd(self.fd),
            self.iov.iov_base.cast(),
            self.iov.iov_len as u32,
        )
        .offset(self.offset)
        .rw_flags(self.flags)
        .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: the iovec describes the buffer's spare capacity, owned by
        // this op while it runs.
        let r = unsafe {
            libc::preadv2(
                self.fd,
                &self.iov,
                1,
                self.offset as libc::off_t,
                self.flags,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(n) = res {
            buf::advance(&mut self.buf, n);
        }
        (res, self.buf)
    }
}

/// A positioned write with `RWF_*` flags (see [`ReadFlags`]).
pub(crate) struct WriteFlags<B> {
    fd: RawFd,
    buf: B,
    iov: libc::iovec,
    offset: u64,
    flags: i32,
}

impl<B: IoBuf> WriteFlags<B> {
    pub(crate) fn new(fd: RawFd, b: B, offset: u64, flags: i32) -> WriteFlags<B> {
        let (ptr, len) = buf::init(&b);
        WriteFlags {
            fd,
            buf: b,
            iov: libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len.min(MAX_RW),
            },
            offset,
            flags,
        }
    }
}

impl<B: IoBuf> OpCode for WriteFlags<B> {
    type Output = BufResult<usize, B>;

    // The SQE points at the buffer's heap storage only.
    const MOVABLE: bool = true;

    fn check(&self) -> io::Result<()> {
        check_offset(self.offset)
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Write::new(
            types::Fd(self.fd),
            self.iov.iov_base.cast_const().cast(),
            self.iov.iov_len as u32,
        )
        .offset(self.offset)
        .rw_flags(self.flags)
        .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: the iovec describes the buffer's initialised bytes.
        let r = unsafe {
            libc::pwritev2(
                self.fd,
                &self.iov,
                1,
                self.offset as libc::off_t,
                self.flags,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.buf)
    }
}

/// `copy_file_range(src, &off_in, dst, &off_out, len, 0)`, for `fs::copy`
/// on the blocking pool.
pub(crate) fn copy_file_range(
    src: std::os::fd::BorrowedFd<'_>,
    off_in: &mut i64,
    dst: std::os::fd::BorrowedFd<'_>,
    off_out: &mut i64,
    len: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: two open descriptors (borrowed for the call) and two offsets
    // the call may update, all valid for its duration.
    let r =
        unsafe { libc::copy_file_range(src.as_raw_fd(), off_in, dst.as_raw_fd(), off_out, len, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `sendfile(dst, src, &off, len)`, for `fs::copy`'s fallback.
pub(crate) fn sendfile(
    dst: std::os::fd::BorrowedFd<'_>,
    src: std::os::fd::BorrowedFd<'_>,
    off: &mut i64,
    len: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: two open descriptors and an offset the call may update.
    let r = unsafe { libc::sendfile64(dst.as_raw_fd(), src.as_raw_fd(), off, len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
