//! File and path ops: openat, statx, fsync, fallocate, ftruncate, close,
//! unlinkat, renameat, mkdirat. On epoll they all run on the blocking pool.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use super::{FixedFd, Mode, OpCode};
use crate::driver::Driver;

fn cvt(r: libc::c_int) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// The kernel's `struct open_how` (linux/openat2.h): three u64s.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat(AT_FDCWD, path, flags, mode)`, or `openat2` with `RESOLVE_*`
/// flags when any are given.
pub(crate) struct OpenAt {
    path: CString,
    flags: i32,
    mode: u32,
    /// For `openat2`: boxed so the kernel reads it at a stable address
    /// while the SQE is in flight (it is copied at submission, but the
    /// op's data moves only inside its box anyway).
    how: Option<Box<OpenHow>>,
}

impl OpenAt {
    pub(crate) fn new(path: CString, flags: i32, mode: u32) -> OpenAt {
        OpenAt {
            path,
            flags: flags | libc::O_CLOEXEC,
            mode,
            how: None,
        }
    }

    /// `openat2(2)` with `resolve` (`RESOLVE_*` bits, non-zero).
    /// `openat2` refuses a mode without `O_CREAT`/`O_TMPFILE`, so the mode
    /// goes only with those.
    pub(crate) fn with_resolve(path: CString, flags: i32, mode: u32, resolve: u64) -> OpenAt {
        let flags = flags | libc::O_CLOEXEC;
        let creating = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
        OpenAt {
            path,
            flags,
            mode,
            how: Some(Box::new(OpenHow {
                flags: flags as u32 as u64,
                mode: if creating { u64::from(mode) } else { 0 },
                resolve,
            })),
        }
    }
}

impl OpCode for OpenAt {
    type Output = io::Result<OwnedFd>;

    fn sqe(&mut self) -> squeue::Entry {
        match &self.how {
            // `types::OpenHow` is a transparent wrapper of the kernel's
            // `open_how` (three u64s), the same layout as ours.
            Some(how) => opcode::OpenAt2::new(
                types::Fd(libc::AT_FDCWD),
                self.path.as_ptr(),
                (&**how as *const OpenHow).cast::<types::OpenHow>(),
            )
            .build(),
            None => opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
                .flags(self.flags)
                .mode(self.mode)
                .build(),
        }
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        if let Some(how) = &self.how {
            // SAFETY: a valid C string path and an `open_how` of the size
            // passed; the kernel only reads both.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    self.path.as_ptr(),
                    &**how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            return if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            };
        }
        // SAFETY: a valid C string path.
        cvt(unsafe { libc::open(self.path.as_ptr(), self.flags, self.mode) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        // SAFETY: a fresh descriptor from the kernel.
        res.map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    fn discard_result(res: i32) {
        super::net::close_unclaimed(res);
    }
}

/// What `statx` asks for: the basic fields and birth time, plus the
/// direct-I/O alignment (`STATX_DIOALIGN`, 6.1; older kernels ignore it).
const STATX_MASK: u32 = libc::STATX_ALL | libc::STATX_DIOALIGN;

/// `statx` of an open fd (`AT_EMPTY_PATH`) or of a path.
pub(crate) struct Statx {
    fd: RawFd,
    path: CString,
    flags: i32,
    buf: Box<libc::statx>,
}

impl Statx {
    pub(crate) fn fd(fd: RawFd) -> Statx {
        Statx {
            fd,
            path: CString::default(),
            flags: libc::AT_EMPTY_PATH,
            // SAFETY: statx is plain data.
            buf: Box::new(unsafe { mem::zeroed() }),
        }
    }

    pub(crate) fn path(path: CString, follow: bool) -> Statx {
        Statx {
            fd: libc::AT_FDCWD,
            path,
            flags: if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW },
            // SAFETY: statx is plain data.
            buf: Box::new(unsafe { mem::zeroed() }),
        }
    }
}

impl OpCode for Statx {
    type Output = io::Result<libc::statx>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Statx::new(
            types::Fd(self.fd),
            self.path.as_ptr(),
            (&mut *self.buf as *mut libc::statx).cast(),
        )
        .flags(self.flags)
        .mask(STATX_MASK)
        .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: valid path and output buffer.
        cvt(unsafe {
            libc::statx(
                self.fd,
                self.path.as_ptr(),
                self.flags,
                STATX_MASK,
                &mut *self.buf,
            )
        })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| *self.buf)
    }
}

/// `fsync` / `fdatasync`.
pub(crate) struct Fsync {
    fd: RawFd,
    data: bool,
    /// The file's registered-file slot, if it has one.
    fixed: Option<FixedFd>,
}

impl Fsync {
    pub(crate) fn new(fd: RawFd, data: bool) -> Fsync {
        Fsync {
            fd,
            data,
            fixed: None,
        }
    }

    /// Names the fd by its registered-file slot on io_uring.
    pub(crate) fn fixed(mut self, fixed: Option<FixedFd>) -> Fsync {
        self.fixed = fixed;
        self
    }
}

impl OpCode for Fsync {
    type Output = io::Result<()>;

    fn bind_fixed(&mut self, driver: &Driver) {
        self.fixed = FixedFd::on(self.fixed, driver);
    }

    fn sqe(&mut self) -> squeue::Entry {
        let flags = if self.data {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        match self.fixed {
            Some(f) => opcode::Fsync::new(types::Fixed(f.slot))
                .flags(flags)
                .build(),
            None => opcode::Fsync::new(types::Fd(self.fd)).flags(flags).build(),
        }
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain syscall.
        cvt(unsafe {
            if self.data {
                libc::fdatasync(self.fd)
            } else {
                libc::fsync(self.fd)
            }
        })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `fallocate(fd, mode, offset, len)`.
pub(crate) struct Fallocate {
    fd: RawFd,
    mode: i32,
    offset: u64,
    len: u64,
}

impl Fallocate {
    pub(crate) fn new(fd: RawFd, mode: i32, offset: u64, len: u64) -> Fallocate {
        Fallocate {
            fd,
            mode,
            offset,
            len,
        }
    }
}

impl OpCode for Fallocate {
    type Output = io::Result<()>;

    fn check(&self) -> io::Result<()> {
        super::rw::check_range(self.offset, self.len)?;
        super::rw::check_offset(self.len)
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Fallocate::new(types::Fd(self.fd), self.len)
            .offset(self.offset)
            .mode(self.mode)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain syscall.
        cvt(unsafe { libc::fallocate(self.fd, self.mode, self.offset as i64, self.len as i64) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `ftruncate` (an SQE since 6.9; on older rings the caller uses the pool).
pub(crate) struct Ftruncate {
    fd: RawFd,
    len: u64,
}

impl Ftruncate {
    pub(crate) fn new(fd: RawFd, len: u64) -> Ftruncate {
        Ftruncate { fd, len }
    }
}

impl OpCode for Ftruncate {
    type Output = io::Result<()>;

    fn check(&self) -> io::Result<()> {
        super::rw::check_offset(self.len)
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Ftruncate::new(types::Fd(self.fd), self.len).build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: plain syscall.
        cvt(unsafe { libc::ftruncate(self.fd, self.len as i64) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `close`, reporting the error (`File::close().await`).
pub(crate) struct Close {
    fd: RawFd,
}

impl Close {
    /// Takes ownership of `fd`: it is closed whatever happens.
    pub(crate) fn new(fd: OwnedFd) -> Close {
        use std::os::fd::IntoRawFd;
        Close {
            fd: fd.into_raw_fd(),
        }
    }
}

impl OpCode for Close {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Close::new(types::Fd(self.fd)).build()
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: we own the fd (taken in `new`).
        cvt(unsafe { libc::close(self.fd) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `unlinkat` (a file, or with `dir` an empty directory).
pub(crate) struct Unlink {
    path: CString,
    dir: bool,
}

impl Unlink {
    pub(crate) fn new(path: CString, dir: bool) -> Unlink {
        Unlink { path, dir }
    }
}

impl OpCode for Unlink {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(if self.dir { libc::AT_REMOVEDIR } else { 0 })
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        let flags = if self.dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: a valid C string path.
        cvt(unsafe { libc::unlinkat(libc::AT_FDCWD, self.path.as_ptr(), flags) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `renameat`.
pub(crate) struct Rename {
    from: CString,
    to: CString,
}

impl Rename {
    pub(crate) fn new(from: CString, to: CString) -> Rename {
        Rename { from, to }
    }
}

impl OpCode for Rename {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            self.from.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            self.to.as_ptr(),
        )
        .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: valid C string paths.
        cvt(unsafe {
            libc::renameat(
                libc::AT_FDCWD,
                self.from.as_ptr(),
                libc::AT_FDCWD,
                self.to.as_ptr(),
            )
        })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `mkdirat`.
pub(crate) struct MkDir {
    path: CString,
    mode: u32,
}

impl MkDir {
    pub(crate) fn new(path: CString, mode: u32) -> MkDir {
        MkDir { path, mode }
    }
}

impl OpCode for MkDir {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .mode(self.mode)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Blocking
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: a valid C string path.
        cvt(unsafe { libc::mkdirat(libc::AT_FDCWD, self.path.as_ptr(), self.mode) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}
