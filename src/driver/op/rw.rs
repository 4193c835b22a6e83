//! Reads and writes on any fd: `Read`/`Write` (recv/send on sockets,
//! read/pread and write/pwrite elsewhere) and their vectored forms. Used by
//! `net` and `fs` alike.
//!
//! Sends always carry `MSG_NOSIGNAL`: a peer that went away gives `EPIPE`,
//! never a `SIGPIPE` that would kill the process.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{FixedFd, Mode, OpCode};
use crate::buf::{self, IoBuf, IoBufMut};
use crate::driver::Driver;

/// Builds an SQE naming the fd, or its registered-file slot when there is
/// one (the builder then sets `IOSQE_FIXED_FILE`).
macro_rules! on_target {
    ($fixed:expr, $fd:expr, |$t:ident| $e:expr) => {
        match $fixed {
            Some(f) => {
                let $t = types::Fixed(f.slot);
                $e
            }
            None => {
                let $t = types::Fd($fd);
                $e
            }
        }
    };
}

/// The most one read or write moves (Linux's `MAX_RW_COUNT`); larger
/// buffers are done in several ops (`write_all`) or partially.
pub(crate) const MAX_RW: usize = 0x7fff_f000;

/// Refuses a file offset the kernel would read as negative: io_uring takes
/// -1 as "the current position" (a write would land elsewhere), pread and
/// pwrite say `EINVAL`. Both backends give this error instead.
pub(crate) fn check_offset(offset: u64) -> io::Result<()> {
    if offset > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file offset {offset} is past i64::MAX"),
        ));
    }
    Ok(())
}

/// Refuses a file range `offset..offset + len` that does not fit in i64
/// (a positional loop would step past i64::MAX).
pub(crate) fn check_range(offset: u64, len: u64) -> io::Result<()> {
    check_offset(offset)?;
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file range {offset}..+{len} ends past i64::MAX"),
        )),
    }
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// How epoll runs a read or write: sockets, pipes and other pollable fds
/// (no offset) wait for readiness; positioned file I/O goes to the pool.
fn rw_mode(fd: RawFd, socket: bool, offset: Option<u64>, write: bool) -> Mode {
    match (socket || offset.is_none(), write) {
        (true, false) => Mode::Readable(fd),
        (true, true) => Mode::Writable(fd),
        (false, _) => Mode::Blocking,
    }
}

/// `recv(fd, ptr, len, 0)` as a bare system call. glibc's `recv` and
/// `send` are thread-cancellation points and, in a multi-threaded process,
/// switch asynchronous cancellation on and off around every call (≈2% of
/// an epoll echo server's CPU); Rust never cancels threads, so uringio
/// makes the system call directly.
///
/// # Safety
/// `ptr..ptr+len` must be writable memory owned by the caller.
pub(crate) unsafe fn raw_recv(fd: RawFd, ptr: *mut u8, len: usize) -> isize {
    // SAFETY: recvfrom with null address arguments is recv; the caller
    // vouches for the buffer.
    unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            ptr,
            len,
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        ) as isize
    }
}

/// `send(fd, ptr, len, MSG_NOSIGNAL)` as a bare system call (see
/// [`raw_recv`]).
///
/// # Safety
/// `ptr..ptr+len` must be readable memory owned by the caller.
pub(crate) unsafe fn raw_send(fd: RawFd, ptr: *const u8, len: usize) -> isize {
    // SAFETY: sendto with a null address is send; the caller vouches for
    // the buffer.
    unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            ptr,
            len,
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        ) as isize
    }
}

/// Reads into a buffer's spare capacity: `recv` on sockets, `read`/`pread`
/// on other fds.
pub(crate) struct Read<B> {
    fd: RawFd,
    buf: B,
    ptr: *mut u8,
    len: usize,
    offset: Option<u64>,
    socket: bool,
    /// A stream socket: a short read means it was drained.
    stream: bool,
    /// The fd's registered-file slot, if it has one.
    fixed: Option<FixedFd>,
    /// A positioned read from a regular file not opened with `O_DIRECT`:
    /// on epoll it first tries `preadv2(RWF_NOWAIT)` on the loop thread.
    nowait: bool,
    /// Bytes that attempt read (the pool reads the rest).
    pre: usize,
}

impl<B: IoBufMut> Read<B> {
    pub(crate) fn new(fd: RawFd, mut buf: B, offset: Option<u64>, socket: bool) -> Read<B> {
        let (ptr, len) = buf::spare(&mut buf);
        let len = len.min(MAX_RW);
        Read {
            fd,
            buf,
            ptr,
            len,
            offset,
            socket,
            stream: false,
            fixed: None,
            nowait: false,
            pre: 0,
        }
    }

    /// Marks a positioned read from a buffered (not `O_DIRECT`) file: the
    /// epoll backend may serve it from the page cache on the loop thread.
    /// (An `O_DIRECT` read with `RWF_NOWAIT` still waits for the device.)
    pub(crate) fn nowait(mut self, on: bool) -> Read<B> {
        self.nowait = on && !self.socket && self.offset.is_some();
        self
    }

    /// Names the fd by its registered-file slot on io_uring.
    pub(crate) fn fixed(mut self, fixed: Option<FixedFd>) -> Read<B> {
        self.fixed = fixed;
        self
    }

    /// Marks the fd as a stream socket (TCP, Unix stream), where a short
    /// read means the socket was drained.
    pub(crate) fn stream(mut self) -> Read<B> {
        self.stream = true;
        self
    }
}

impl<B: IoBufMut> OpCode for Read<B> {
    type Output = crate::buf::BufResult<usize, B>;

    // The SQE points at the buffer's heap storage and nothing else.
    const MOVABLE: bool = true;

    fn bind_fixed(&mut self, driver: &Driver) {
        self.fixed = FixedFd::on(self.fixed, driver);
    }

    fn check(&self) -> io::Result<()> {
        if self.len == 0 {
            return Err(super::rw::no_spare_capacity());
        }
        self.offset.map_or(Ok(()), check_offset)
    }

    fn sqe(&mut self) -> squeue::Entry {
        if self.socket {
            on_target!(self.fixed, self.fd, |t| opcode::Recv::new(
                t,
                self.ptr,
                self.len as u32
            )
            .build())
        } else {
            on_target!(self.fixed, self.fd, |t| opcode::Read::new(
                t,
                self.ptr,
                self.len as u32
            )
            .offset(self.offset.unwrap_or(u64::MAX))
            .build())
        }
    }

    fn mode(&self) -> Mode {
        rw_mode(self.fd, self.socket, self.offset, false)
    }

    fn tries_nonblocking(&self) -> bool {
        self.nowait
    }

    fn try_nonblocking(&mut self) -> Option<io::Result<usize>> {
        let off = self.offset.filter(|_| self.nowait)?;
        let iov = libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        };
        // SAFETY: the iovec describes the buffer's spare capacity, owned by
        // this op; RWF_NOWAIT returns EAGAIN rather than wait for I/O.
        let r = unsafe { libc::preadv2(self.fd, &iov, 1, off as libc::off_t, libc::RWF_NOWAIT) };
        match r {
            // Not all of it was cached (or this is the end of the file): the
            // pool reads the rest, as one pread would have.
            n if n > 0 && (n as usize) < self.len => {
                self.pre = n as usize;
                None
            }
            // All of it, or end of file at `off`.
            n if n >= 0 => Some(Ok(n as usize)),
            // EAGAIN (not cached), EOPNOTSUPP (no RWF_NOWAIT here) or any
            // error: the pool's plain pread gives the answer.
            _ => None,
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        let pre = self.pre;
        if pre > 0 {
            let off = self.offset.unwrap_or(0) + pre as u64;
            // SAFETY: the rest of the buffer's spare capacity, owned by
            // this op for the duration.
            let r = unsafe {
                libc::pread(
                    self.fd,
                    self.ptr.add(pre).cast(),
                    self.len - pre,
                    off as libc::off_t,
                )
            };
            // An error after some bytes were read reports those bytes, as a
            // single pread would.
            return Ok(pre + cvt(r).unwrap_or(0));
        }
        // SAFETY: ptr/len describe the buffer's spare capacity, owned by this
        // op for the duration.
        let r = unsafe {
            if self.socket {
                raw_recv(self.fd, self.ptr, self.len)
            } else if let Some(off) = self.offset {
                libc::pread(self.fd, self.ptr.cast(), self.len, off as libc::off_t)
            } else {
                libc::read(self.fd, self.ptr.cast(), self.len)
            }
        };
        cvt(r)
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(n) = res {
            buf::advance(&mut self.buf, n);
        }
        (res, self.buf)
    }

    fn stream_read_len(&self) -> Option<usize> {
        self.stream.then_some(self.len)
    }
}

/// Writes a buffer's initialised bytes: `send(MSG_NOSIGNAL)` on sockets,
/// `write`/`pwrite` on other fds.
pub(crate) struct Write<B> {
    fd: RawFd,
    buf: B,
    ptr: *const u8,
    len: usize,
    offset: Option<u64>,
    socket: bool,
    /// The fd's registered-file slot, if it has one.
    fixed: Option<FixedFd>,
}

impl<B: IoBuf> Write<B> {
    pub(crate) fn new(fd: RawFd, buf: B, offset: Option<u64>, socket: bool) -> Write<B> {
        let (ptr, len) = buf::init(&buf);
        let len = len.min(MAX_RW);
        Write {
            fd,
            buf,
            ptr,
            len,
            offset,
            socket,
            fixed: None,
        }
    }

    /// Names the fd by its registered-file slot on io_uring.
    pub(crate) fn fixed(mut self, fixed: Option<FixedFd>) -> Write<B> {
        self.fixed = fixed;
        self
    }
}

impl<B: IoBuf> OpCode for Write<B> {
    type Output = crate::buf::BufResult<usize, B>;

    // The SQE points at the buffer's heap storage and nothing else.
    const MOVABLE: bool = true;

    fn bind_fixed(&mut self, driver: &Driver) {
        self.fixed = FixedFd::on(self.fixed, driver);
    }

    fn check(&self) -> io::Result<()> {
        self.offset.map_or(Ok(()), check_offset)
    }

    fn sqe(&mut self) -> squeue::Entry {
        if self.socket {
            on_target!(self.fixed, self.fd, |t| opcode::Send::new(
                t,
                self.ptr,
                self.len as u32
            )
            .flags(libc::MSG_NOSIGNAL)
            .build())
        } else {
            on_target!(self.fixed, self.fd, |t| opcode::Write::new(
                t,
                self.ptr,
                self.len as u32
            )
            .offset(self.offset.unwrap_or(u64::MAX))
            .build())
        }
    }

    fn mode(&self) -> Mode {
        rw_mode(self.fd, self.socket, self.offset, true)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: ptr/len describe the buffer's initialised bytes.
        let r = unsafe {
            if self.socket {
                raw_send(self.fd, self.ptr, self.len)
            } else if let Some(off) = self.offset {
                libc::pwrite(self.fd, self.ptr.cast(), self.len, off as libc::off_t)
            } else {
                libc::write(self.fd, self.ptr.cast(), self.len)
            }
        };
        cvt(r)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.buf)
    }
}

/// Vectored read into several buffers' spare capacity, in order.
pub(crate) struct ReadV<B> {
    fd: RawFd,
    bufs: Vec<B>,
    iov: Vec<libc::iovec>,
    offset: Option<u64>,
    socket: bool,
    /// The file's registered-file slot, if it has one.
    fixed: Option<FixedFd>,
}

impl<B: IoBufMut> ReadV<B> {
    pub(crate) fn new(fd: RawFd, mut bufs: Vec<B>, offset: Option<u64>, socket: bool) -> ReadV<B> {
        let iov = bufs
            .iter_mut()
            .map(|b| {
                let (p, l) = buf::spare(b);
                libc::iovec {
                    iov_base: p.cast(),
                    iov_len: l,
                }
            })
            .collect();
        ReadV {
            fd,
            bufs,
            iov,
            offset,
            socket,
            fixed: None,
        }
    }

    /// Names the fd by its registered-file slot on io_uring.
    pub(crate) fn fixed(mut self, fixed: Option<FixedFd>) -> ReadV<B> {
        self.fixed = fixed;
        self
    }
}

impl<B: IoBufMut> OpCode for ReadV<B> {
    type Output = crate::buf::BufResult<usize, Vec<B>>;

    fn check(&self) -> io::Result<()> {
        // Zero spare capacity would read 0 bytes: a false end of stream.
        if self.iov.iter().all(|v| v.iov_len == 0) {
            return Err(super::rw::no_spare_capacity());
        }
        self.offset.map_or(Ok(()), check_offset)
    }

    fn bind_fixed(&mut self, driver: &Driver) {
        self.fixed = FixedFd::on(self.fixed, driver);
    }

    fn sqe(&mut self) -> squeue::Entry {
        on_target!(self.fixed, self.fd, |t| opcode::Readv::new(
            t,
            self.iov.as_ptr(),
            self.iov.len() as u32
        )
        .offset(self.offset.unwrap_or(u64::MAX))
        .build())
    }

    fn mode(&self) -> Mode {
        rw_mode(self.fd, self.socket, self.offset, false)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: the iovecs describe the buffers' spare capacity.
        let r = unsafe {
            match self.offset {
                Some(off) => libc::preadv(
                    self.fd,
                    self.iov.as_ptr(),
                    self.iov.len() as i32,
                    off as libc::off_t,
                ),
                None => libc::readv(self.fd, self.iov.as_ptr(), self.iov.len() as i32),
            }
        };
        cvt(r)
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(mut n) = res {
            for (b, iov) in self.bufs.iter_mut().zip(&self.iov) {
                let k = n.min(iov.iov_len);
                buf::advance(b, k);
                n -= k;
                if n == 0 {
                    break;
                }
            }
        }
        (res, self.bufs)
    }
}

/// Vectored write of several buffers' initialised bytes, in order
/// (`sendmsg(MSG_NOSIGNAL)` on sockets).
pub(crate) struct WriteV<B> {
    fd: RawFd,
    bufs: Vec<B>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    offset: Option<u64>,
    socket: bool,
    /// The file's registered-file slot, if it has one (files only).
    fixed: Option<FixedFd>,
}

impl<B: IoBuf> WriteV<B> {
    pub(crate) fn new(fd: RawFd, bufs: Vec<B>, offset: Option<u64>, socket: bool) -> WriteV<B> {
        let iov = bufs
            .iter()
            .map(|b| {
                let (p, l) = buf::init(b);
                libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: l,
                }
            })
            .collect();
        WriteV {
            fd,
            bufs,
            iov,
            // SAFETY: msghdr is plain data; zero is a valid empty header.
            msg: unsafe { mem::zeroed() },
            offset,
            socket,
            fixed: None,
        }
    }

    /// Names the fd by its registered-file slot on io_uring.
    pub(crate) fn fixed(mut self, fixed: Option<FixedFd>) -> WriteV<B> {
        self.fixed = fixed;
        self
    }

    fn fill_msg(&mut self) {
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
    }
}

impl<B: IoBuf> OpCode for WriteV<B> {
    type Output = crate::buf::BufResult<usize, Vec<B>>;

    fn bind_fixed(&mut self, driver: &Driver) {
        self.fixed = FixedFd::on(self.fixed, driver);
    }

    fn check(&self) -> io::Result<()> {
        self.offset.map_or(Ok(()), check_offset)
    }

    fn sqe(&mut self) -> squeue::Entry {
        if self.socket {
            self.fill_msg();
            opcode::SendMsg::new(types::Fd(self.fd), &self.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        } else {
            on_target!(self.fixed, self.fd, |t| opcode::Writev::new(
                t,
                self.iov.as_ptr(),
                self.iov.len() as u32
            )
            .offset(self.offset.unwrap_or(u64::MAX))
            .build())
        }
    }

    fn mode(&self) -> Mode {
        rw_mode(self.fd, self.socket, self.offset, true)
    }

    fn perform(&mut self) -> io::Result<usize> {
        let r = if self.socket {
            self.fill_msg();
            // SAFETY: msg points at our iovecs, which describe initialised bytes.
            unsafe { libc::sendmsg(self.fd, &self.msg, libc::MSG_NOSIGNAL) }
        } else {
            // SAFETY: the iovecs describe the buffers' initialised bytes.
            unsafe {
                match self.offset {
                    Some(off) => libc::pwritev(
                        self.fd,
                        self.iov.as_ptr(),
                        self.iov.len() as i32,
                        off as libc::off_t,
                    ),
                    None => libc::writev(self.fd, self.iov.as_ptr(), self.iov.len() as i32),
                }
            }
        };
        cvt(r)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.bufs)
    }
}

/// Writes all of `buf`'s initialised bytes, one `Write` op after another
/// (at `offset` and on, or at the fd's position / on the socket).
pub(crate) async fn write_all<B: IoBuf>(
    fd: RawFd,
    buf: B,
    offset: Option<u64>,
    socket: bool,
    fixed: Option<FixedFd>,
) -> crate::buf::BufResult<(), B> {
    write_all_eager(fd, buf, offset, socket, fixed, false).await
}

/// As [`write_all`], each write submitted at once when `eager` (see
/// `link::eager_if`).
pub(crate) async fn write_all_eager<B: IoBuf>(
    fd: RawFd,
    mut buf: B,
    offset: Option<u64>,
    socket: bool,
    fixed: Option<FixedFd>,
    eager: bool,
) -> crate::buf::BufResult<(), B> {
    let total = buf.bytes_init();
    if let Some(o) = offset {
        if let Err(e) = check_range(o, total as u64) {
            return (Err(e), buf);
        }
    }
    let mut done = 0;
    while done < total {
        // Cannot overflow: the whole range fits in i64 (checked above).
        let at = offset.map(|o| o + done as u64);
        let (res, slice) = super::link::eager_if(
            eager,
            super::Op::new(Write::new(fd, buf.slice(done..total), at, socket).fixed(fixed)),
        )
        .await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let what = if socket { "socket" } else { "file" };
                return (
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("the {what} accepted no bytes"),
                    )),
                    buf,
                );
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// The error for a read into a buffer with no room left.
pub(crate) fn no_spare_capacity() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "read buffer has no spare capacity (len == capacity): pass Vec::with_capacity(n), clear() it, or wrap it in buf::Overwrite",
    )
}
