//! `fs::copy`: `copy_file_range` in a loop on the blocking pool, falling
//! back to `sendfile` and then to plain reads and writes where the
//! filesystems cannot (`EXDEV` before 5.3, `EINVAL`, `ENOSYS`,
//! `EOPNOTSUPP`, or a source like procfs that reports no bytes).
//!
//! Neither backend has an asynchronous `copy_file_range` (io_uring has no
//! opcode for it), so the copy runs on the loop's blocking pool in jobs of
//! [`CHUNK`] bytes each: the loop stays free, and a dropped `copy` future
//! stops after the chunk being copied.

use std::fs::File as StdFile;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Bytes copied per blocking-pool job.
pub const CHUNK: u64 = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    CopyFileRange,
    Sendfile,
    ReadWrite,
}

struct Job {
    src: StdFile,
    dst: StdFile,
    off: u64,
    how: How,
}

/// Errors after which the next method is tried (nothing was copied by
/// the failing call).
fn fall_back(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::EPERM)
            | Some(libc::EBADF)
    )
}

/// Copies up to `CHUNK` bytes; `Ok(true)` at the end of the source.
fn step(j: &mut Job) -> io::Result<bool> {
    let start = j.off;
    while j.off - start < CHUNK {
        let want = (CHUNK - (j.off - start)) as usize;
        let r = match j.how {
            How::CopyFileRange => {
                let mut off_in = j.off as libc::off64_t;
                let mut off_out = j.off as libc::off64_t;
                calls::copy_file_range(&j.src, &mut off_in, &j.dst, &mut off_out, want)
            }
            How::Sendfile => calls::sendfile(&j.dst, &j.src, j.off, want),
            How::ReadWrite => calls::read_write(&j.src, &j.dst, j.off, want),
        };
        match r {
            Ok(0) if j.off == 0 && j.how != How::ReadWrite => {
                // Special files (procfs, sysfs) report nothing to
                // copy_file_range/sendfile: read them instead.
                j.how = How::ReadWrite;
            }
            Ok(0) => return Ok(true),
            Ok(n) => j.off += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if fall_back(&e) && j.how == How::CopyFileRange => j.how = How::Sendfile,
            Err(e) if fall_back(&e) && j.how == How::Sendfile => j.how = How::ReadWrite,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The system calls (wrapped safely in the driver).
mod calls {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    use crate::driver::op::fsext;

    pub(super) fn copy_file_range(
        src: &File,
        off_in: &mut i64,
        dst: &File,
        off_out: &mut i64,
        len: usize,
    ) -> io::Result<usize> {
        fsext::copy_file_range(src.as_fd(), off_in, dst.as_fd(), off_out, len)
    }

    pub(super) fn sendfile(dst: &File, src: &File, off: u64, len: usize) -> io::Result<usize> {
        let mut o = off as i64;
        fsext::sendfile(dst.as_fd(), src.as_fd(), &mut o, len)
    }

    pub(super) fn read_write(src: &File, dst: &File, off: u64, len: usize) -> io::Result<usize> {
        let mut buf = vec![0u8; len.min(1 << 20)];
        let n = src.read_at(&mut buf, off)?;
        dst.write_all_at(&buf[..n], off)?;
        Ok(n)
    }
}

fn open_pair(from: &Path, to: &Path) -> io::Result<Job> {
    let src = StdFile::open(from)?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copy: the source {from:?} is not a regular file"),
        ));
    }
    let perm = meta.permissions().mode();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(perm)
        .open(to)?;
    let dmeta = dst.metadata()?;
    if dmeta.dev() == meta.dev() && dmeta.ino() == meta.ino() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copy: {from:?} and {to:?} are the same file"),
        ));
    }
    dst.set_len(0)?;
    // As std::fs::copy: the copy gets the source's permissions.
    if dmeta.is_file() {
        dst.set_permissions(meta.permissions())?;
    }
    Ok(Job {
        src,
        dst,
        off: 0,
        how: How::CopyFileRange,
    })
}

/// Copies the contents of `from` to `to` (created or truncated; it gets
/// `from`'s permission bits, as with `std::fs::copy`); returns the number
/// of bytes copied. Same file on both sides is an `InvalidInput` error
/// (rather than truncating it), as is a source that is not a regular
/// file.
pub async fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
    let el = crate::runtime::get_running_loop();
    let mut job = el.run_in_executor(move || open_pair(&from, &to)).await?;
    loop {
        let (j, r) = el
            .run_in_executor(move || {
                let r = step(&mut job);
                (job, r)
            })
            .await;
        job = j;
        if r? {
            return Ok(job.off);
        }
    }
}
