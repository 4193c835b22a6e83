//! Storage ops: positioned reads and writes on registered buffers
//! (`READ_FIXED`/`WRITE_FIXED`), the wrapper that refuses a misaligned
//! `O_DIRECT` request before it reaches the kernel, and the logical block
//! size of a block device.
//!
//! | op | io_uring | epoll |
//! |---|---|---|
//! | [`ReadFixed`] | `READ_FIXED` on the buffer's slot; `READ` when its pool is not registered with this ring | `pread` on the pool |
//! | [`WriteFixed`] | `WRITE_FIXED`; `WRITE` likewise | `pwrite` on the pool |
//! | [`Refuse`] | the inner op, or its error at once | the same |

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::rw::{MAX_RW, check_offset, no_spare_capacity};
use super::{FixedFd, Mode, OpCode};
use crate::buf::{self, FixedBuf, IoBuf};
use crate::driver::Driver;

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `pread` into a [`FixedBuf`]'s spare capacity.
pub(crate) struct ReadFixed {
    fd: RawFd,
    buf: FixedBuf,
    ptr: *mut u8,
    len: usize,
    offset: u64,
    /// The buffer's slot in the ring it runs on (set at submission).
    slot: Option<u16>,
    /// The file's registered-file slot, if it has one in that ring.
    file: Option<FixedFd>,
    /// A buffered (not `O_DIRECT`) file: on epoll, first try
    /// `preadv2(RWF_NOWAIT)` on the loop thread (as `rw::Read`).
    nowait: bool,
    /// Bytes that attempt read (the pool reads the rest).
    pre: usize,
}

impl ReadFixed {
    pub(crate) fn new(fd: RawFd, mut buf: FixedBuf, offset: u64) -> ReadFixed {
        let (ptr, len) = buf::spare(&mut buf);
        ReadFixed {
            fd,
            buf,
            ptr,
            len: len.min(MAX_RW),
            offset,
            slot: None,
            file: None,
            nowait: false,
            pre: 0,
        }
    }

    /// Names the file by its registered-file slot on io_uring.
    pub(crate) fn fixed_file(mut self, file: Option<FixedFd>) -> Self {
        self.file = file;
        self
    }

    /// Marks a read from a buffered (not `O_DIRECT`) file: the epoll
    /// backend may serve it from the page cache on the loop thread.
    pub(crate) fn nowait(mut self, on: bool) -> Self {
        self.nowait = on;
        self
    }
}

impl OpCode for ReadFixed {
    type Output = crate::buf::BufResult<usize, FixedBuf>;

    // The SQE points at the pool's heap memory and nothing else.
    const MOVABLE: bool = true;

    fn check(&self) -> io::Result<()> {
        if self.len == 0 {
            return Err(no_spare_capacity());
        }
        check_offset(self.offset)
    }

    fn check_on(&self, driver: &Driver) -> io::Result<()> {
        self.buf.check_loop(driver)
    }

    fn bind_fixed(&mut self, driver: &Driver) {
        self.slot = self.buf.slot_on(driver);
        self.file = FixedFd::on(self.file, driver);
    }

    fn sqe(&mut self) -> squeue::Entry {
        match (self.slot, self.file) {
            (Some(i), Some(f)) => {
                opcode::ReadFixed::new(types::Fixed(f.slot), self.ptr, self.len as u32, i)
                    .offset(self.offset)
                    .build()
            }
            (Some(i), None) => {
                opcode::ReadFixed::new(types::Fd(self.fd), self.ptr, self.len as u32, i)
                    .offset(self.offset)
                    .build()
            }
            (None, Some(f)) => opcode::Read::new(types::Fixed(f.slot), self.ptr, self.len as u32)
                .offset(self.offset)
                .build(),
            (None, None) => opcode::Read::new(types::Fd(self.fd), self.ptr, self.len as u32)
                .offset(self.offset)
                .build(),
        }
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn tries_nonblocking(&self) -> bool {
        self.nowait
    }

    fn try_nonblocking(&mut self) -> Option<io::Result<usize>> {
        if !self.nowait {
            return None;
        }
        let iov = libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        };
        // SAFETY: the iovec describes the buffer's spare capacity, owned by
        // this op; RWF_NOWAIT returns EAGAIN rather than wait for I/O.
        let r = unsafe {
            libc::preadv2(
                self.fd,
                &iov,
                1,
                self.offset as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        match r {
            // Part of it was cached (or the end of the file is near): the
            // pool reads the rest, as one pread would have.
            n if n > 0 && (n as usize) < self.len => {
                self.pre = n as usize;
                None
            }
            // All of it, or end of file at the offset.
            n if n >= 0 => Some(Ok(n as usize)),
            // EAGAIN (not cached), EOPNOTSUPP or any error: the pool's
            // plain pread gives the answer.
            _ => None,
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        let pre = self.pre;
        if pre > 0 {
            // SAFETY: the rest of the buffer's spare capacity, owned by
            // this op for the duration.
            let r = unsafe {
                libc::pread(
                    self.fd,
                    self.ptr.add(pre).cast(),
                    self.len - pre,
                    (self.offset + pre as u64) as libc::off_t,
                )
            };
            // An error after some bytes were read reports those bytes, as
            // a single pread would.
            return Ok(pre + cvt(r).unwrap_or(0));
        }
        // SAFETY: ptr/len describe the buffer's spare capacity, owned by
        // this op for the duration.
        cvt(unsafe {
            libc::pread(
                self.fd,
                self.ptr.cast(),
                self.len,
                self.offset as libc::off_t,
            )
        })
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(n) = res {
            buf::advance(&mut self.buf, n);
        }
        (res, self.buf)
    }
}

/// `pwrite` of a [`FixedBuf`]'s data.
pub(crate) struct WriteFixed {
    fd: RawFd,
    buf: FixedBuf,
    ptr: *const u8,
    len: usize,
    offset: u64,
    slot: Option<u16>,
    file: Option<FixedFd>,
}

impl WriteFixed {
    pub(crate) fn new(fd: RawFd, buf: FixedBuf, offset: u64) -> WriteFixed {
        let (ptr, len) = buf::init(&buf);
        WriteFixed {
            fd,
            buf,
            ptr,
            len: len.min(MAX_RW),
            offset,
            slot: None,
            file: None,
        }
    }

    /// Names the file by its registered-file slot on io_uring.
    pub(crate) fn fixed_file(mut self, file: Option<FixedFd>) -> Self {
        self.file = file;
        self
    }
}

impl OpCode for WriteFixed {
    type Output = crate::buf::BufResult<usize, FixedBuf>;

    // The SQE points at the pool's heap memory and nothing else.
    const MOVABLE: bool = true;

    fn check(&self) -> io::Result<()> {
        check_offset(self.offset)
    }

    fn check_on(&self, driver: &Driver) -> io::Result<()> {
        self.buf.check_loop(driver)
    }

    fn bind_fixed(&mut self, driver: &Driver) {
        self.slot = self.buf.slot_on(driver);
        self.file = FixedFd::on(self.file, driver);
    }

    fn sqe(&mut self) -> squeue::Entry {
        match (self.slot, self.file) {
            (Some(i), Some(f)) => {
                opcode::WriteFixed::new(types::Fixed(f.slot), self.ptr, self.len as u32, i)
                    .offset(self.offset)
                    .build()
            }
            (Some(i), None) => {
                opcode::WriteFixed::new(types::Fd(self.fd), self.ptr, self.len as u32, i)
                    .offset(self.offset)
                    .build()
            }
            (None, Some(f)) => opcode::Write::new(types::Fixed(f.slot), self.ptr, self.len as u32)
                .offset(self.offset)
                .build(),
            (None, None) => opcode::Write::new(types::Fd(self.fd), self.ptr, self.len as u32)
                .offset(self.offset)
                .build(),
        }
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: ptr/len describe the buffer's initialised bytes, owned by
        // this op for the duration.
        cvt(unsafe {
            libc::pwrite(
                self.fd,
                self.ptr.cast(),
                self.len,
                self.offset as libc::off_t,
            )
        })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.buf)
    }
}

/// An op that is refused before it starts when `err` is set (a misaligned
/// `O_DIRECT` request): it then resolves at once with that error and its
/// buffers, on both backends. Otherwise it is the inner op.
pub(crate) struct Refuse<T> {
    op: T,
    err: Option<Box<(io::ErrorKind, String)>>,
}

impl<T: OpCode> Refuse<T> {
    pub(crate) fn new(op: T, err: Option<io::Error>) -> Refuse<T> {
        Refuse {
            op,
            err: err.map(|e| Box::new((e.kind(), e.to_string()))),
        }
    }
}

impl<T: OpCode> OpCode for Refuse<T> {
    type Output = T::Output;

    const MOVABLE: bool = T::MOVABLE;

    fn sqe(&mut self) -> squeue::Entry {
        self.op.sqe()
    }

    fn mode(&self) -> Mode {
        self.op.mode()
    }

    fn bind_fixed(&mut self, driver: &Driver) {
        self.op.bind_fixed(driver)
    }

    fn try_nonblocking(&mut self) -> Option<io::Result<usize>> {
        self.op.try_nonblocking()
    }

    fn tries_nonblocking(&self) -> bool {
        self.op.tries_nonblocking()
    }

    fn check(&self) -> io::Result<()> {
        match &self.err {
            Some(e) => Err(io::Error::new(e.0, e.1.clone())),
            None => self.op.check(),
        }
    }

    fn check_on(&self, driver: &Driver) -> io::Result<()> {
        self.op.check_on(driver)
    }

    fn perform(&mut self) -> io::Result<usize> {
        self.op.perform()
    }

    fn complete(self, res: io::Result<usize>, flags: u32) -> Self::Output {
        self.op.complete(res, flags)
    }

    fn discard_result(res: i32) {
        T::discard_result(res)
    }

    fn late_result(&mut self, res: i32) {
        self.op.late_result(res)
    }

    fn stream_read_len(&self) -> Option<usize> {
        self.op.stream_read_len()
    }
}

/// The segments (address, length) a read into `b` asks the kernel for:
/// its spare capacity, capped as a read caps it.
pub(crate) fn read_segment<B: IoBuf>(b: &B) -> (usize, usize) {
    let init = b.bytes_init().min(b.bytes_total());
    (
        b.stable_ptr() as usize + init,
        (b.bytes_total() - init).min(MAX_RW),
    )
}

/// The segment a write of `b` gives the kernel: its initialised bytes.
pub(crate) fn write_segment<B: IoBuf>(b: &B) -> (usize, usize) {
    (b.stable_ptr() as usize, b.bytes_init().min(MAX_RW))
}

/// `statx` of `fd` made now, with the direct-I/O alignment asked for.
pub(crate) fn statx_now(fd: RawFd) -> io::Result<libc::statx> {
    let mut st = super::fs::Statx::fd(fd);
    let r = st.perform();
    st.complete(r.map(|_| 0), 0)
}

/// The logical block size of a block device (`BLKSSZGET`), if `fd` is one.
pub(crate) fn logical_block_size(fd: RawFd) -> Option<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points
    // at a live local; on a non-block fd the ioctl fails without writing.
    let r = unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut size as *mut libc::c_int) };
    (r == 0 && size > 0).then_some(size as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::FixedBufPool;
    use crate::runtime::{Backend, Runner};

    #[test]
    fn registered_pools_build_fixed_sqes_and_others_plain_ones() {
        for b in [Backend::IoUring, Backend::Epoll] {
            let Ok(mut r) = Runner::builder().backend(b).build() else {
                continue; // io_uring refused here: nothing to check
            };
            r.run(async {
                let d = crate::driver::current().unwrap();
                let pool = FixedBufPool::new(2, 4096).unwrap();
                let mut rd = ReadFixed::new(0, pool.try_next().unwrap(), 0);
                rd.bind_fixed(&d);
                let mut wr = WriteFixed::new(0, pool.try_next().unwrap(), 0);
                wr.bind_fixed(&d);
                if d.is_uring() {
                    assert!(pool.is_registered());
                    assert_eq!(rd.sqe().get_opcode(), u32::from(opcode::ReadFixed::CODE));
                    assert_eq!(wr.sqe().get_opcode(), u32::from(opcode::WriteFixed::CODE));
                } else {
                    assert!(!pool.is_registered());
                    assert_eq!(rd.slot, None);
                    assert_eq!(wr.slot, None);
                }
            });
        }
    }
}
