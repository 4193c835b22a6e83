//! Files in the ring's registered-file table ([`File::register`]).
//!
//! A registered file's ops on io_uring name its slot (`IOSQE_FIXED_FILE`)
//! and the kernel skips the per-op `fget`/`fput` (an atomic reference
//! count on the `struct file`). The slot belongs to the ring of the loop
//! that was running when the file was registered; ops polled on another
//! loop, and every op on epoll, name the fd as usual: same results.
//!
//! The registration owns the [`File`] and is `!Send` (the table is the
//! ring's, and rings are per thread). Its ops borrow it, so none can
//! outlive it; closing it (drop, [`RegisteredFile::close`],
//! [`RegisteredFile::unregister`]) empties the slot before the fd is
//! closed or handed back, so the table never keeps a closed file alive and
//! a slot is reused only once it is empty.

use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::{Rc, Weak};

use super::File;
use crate::BufResult;
use crate::buf::{FixedBuf, IoBuf, IoBufMut};
use crate::driver::op::FixedFd;
use crate::driver::op::Op;
use crate::driver::op::fixed::{ReadFixed, Refuse, WriteFixed, read_segment, write_segment};
use crate::driver::op::fs as ops;
use crate::driver::op::link::eager_if;
use crate::driver::op::rw::{Read, ReadV, Write, WriteV};
use crate::driver::{self, Cancellable, Driver};

/// A [`File`] put in the current loop's registered-file table, so that its
/// reads, writes and syncs on io_uring skip the kernel's per-op file lookup
/// (see [`File::register`]).
///
/// Everything else a `File` offers is reachable through `Deref`. When the
/// table is full or absent (epoll, an old kernel, registration outside a
/// loop) the file is simply not registered ([`is_registered`] says so) and
/// works the same, naming its fd.
///
/// [`is_registered`]: RegisteredFile::is_registered
#[derive(Debug)]
pub struct RegisteredFile {
    file: File,
    /// The slot, and the driver whose ring holds it (weak: a ring that is
    /// gone took its table with it; the allocation it keeps makes the
    /// address a unique name for that driver meanwhile).
    slot: Option<(u32, Weak<Driver>)>,
    /// The slot is in a ring of this thread.
    _thread: PhantomData<Rc<()>>,
}

impl File {
    /// Puts the file in the current loop's registered-file table (io_uring,
    /// `IORING_REGISTER_FILES_UPDATE`, one system call): from then on its
    /// ops on that loop name the table slot and the kernel skips looking
    /// the fd up and counting a reference on every op, about 0.1 µs each.
    /// Worth it for a file that serves many ops; closing costs a second
    /// system call.
    ///
    /// Never fails: with no free slot (the table holds
    /// [`Features::fixed_files`](crate::driver::Features::fixed_files)
    /// files), on the epoll backend, or outside a running loop the file is
    /// returned unregistered and behaves exactly the same.
    pub fn register(self) -> RegisteredFile {
        let fd = self.raw();
        let slot = if fd < 0 {
            None
        } else {
            driver::with_current(|d| {
                if !d.is_uring() {
                    return None;
                }
                d.register_file(fd).map(|s| (s, Rc::downgrade(d)))
            })
            .flatten()
        };
        RegisteredFile {
            file: self,
            slot,
            _thread: PhantomData,
        }
    }
}

impl RegisteredFile {
    /// Whether the file got a slot in a ring's table.
    pub fn is_registered(&self) -> bool {
        self.slot.is_some()
    }

    /// The slot to name, checked at submission against the ring the op
    /// goes to.
    fn fixed(&self) -> Option<FixedFd> {
        self.slot.as_ref().map(|(slot, d)| FixedFd {
            slot: *slot,
            driver: d.as_ptr(),
        })
    }

    fn fd(&self) -> RawFd {
        self.file.raw()
    }

    /// Empties the slot (before the fd may close).
    fn release(&mut self) {
        if let Some((slot, d)) = self.slot.take() {
            if let Some(d) = d.upgrade() {
                d.unregister_file(slot);
            }
        }
    }

    /// Gives the slot back and returns the plain file.
    pub fn unregister(mut self) -> File {
        self.release();
        let file = std::mem::replace(
            &mut self.file,
            File {
                fd: None,
                dio: None,
            },
        );
        drop(self);
        file
    }

    /// The plain file (its ops name the fd).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// As [`File::read_at`], naming the slot.
    pub fn read_at<B: IoBufMut>(
        &self,
        buf: B,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        let err = self
            .file
            .misaligned("read_at", pos, || vec![read_segment(&buf)]);
        eager_if(
            self.file.eager(),
            Op::new(Refuse::new(
                Read::new(self.fd(), buf, Some(pos), false)
                    .fixed(self.fixed())
                    .nowait(self.file.buffered()),
                err,
            )),
        )
    }

    /// As [`File::read_exact_at`], naming the slot.
    pub async fn read_exact_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        super::read_exact(&self.file, self.fixed(), buf, pos).await
    }

    /// As [`File::write_at`], naming the slot.
    pub fn write_at<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, B>> + '_ {
        let err = self
            .file
            .misaligned("write_at", pos, || vec![write_segment(&buf)]);
        eager_if(
            self.file.eager(),
            Op::new(Refuse::new(
                Write::new(self.fd(), buf, Some(pos), false).fixed(self.fixed()),
                err,
            )),
        )
    }

    /// As [`File::write_all_at`], naming the slot.
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        if let Some(e) = super::direct::check_write_all(&self.file, &buf, pos) {
            return (Err(e), buf);
        }
        crate::driver::op::rw::write_all_eager(
            self.fd(),
            buf,
            Some(pos),
            false,
            self.fixed(),
            self.file.eager(),
        )
        .await
    }

    /// As [`File::readv_at`], naming the slot.
    pub fn readv_at<B: IoBufMut>(
        &self,
        bufs: Vec<B>,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        let err = self
            .file
            .misaligned("readv_at", pos, || bufs.iter().map(read_segment).collect());
        eager_if(
            self.file.eager(),
            Op::new(Refuse::new(
                ReadV::new(self.fd(), bufs, Some(pos), false).fixed(self.fixed()),
                err,
            )),
        )
    }

    /// As [`File::writev_at`], naming the slot.
    pub fn writev_at<B: IoBuf>(
        &self,
        bufs: Vec<B>,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, Vec<B>>> + '_ {
        let err = self.file.misaligned("writev_at", pos, || {
            bufs.iter().map(write_segment).collect()
        });
        eager_if(
            self.file.eager(),
            Op::new(Refuse::new(
                WriteV::new(self.fd(), bufs, Some(pos), false).fixed(self.fixed()),
                err,
            )),
        )
    }

    /// As [`File::read_fixed_at`], naming the file's slot too: on io_uring
    /// a `READ_FIXED` with `IOSQE_FIXED_FILE` (fio's `fixedbufs` +
    /// `registerfiles`), so the kernel neither maps the buffer's pages nor
    /// takes a file reference per op. Same results and errors.
    pub fn read_fixed_at(
        &self,
        buf: FixedBuf,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, FixedBuf>> + '_ {
        let err = self
            .file
            .misaligned("read_fixed_at", pos, || vec![read_segment(&buf)]);
        eager_if(
            self.file.eager(),
            Op::new(Refuse::new(
                ReadFixed::new(self.fd(), buf, pos)
                    .fixed_file(self.fixed())
                    .nowait(self.file.buffered()),
                err,
            )),
        )
    }

    /// As [`File::write_fixed_at`], naming the file's slot too (see
    /// [`read_fixed_at`](Self::read_fixed_at)).
    pub fn write_fixed_at(
        &self,
        buf: FixedBuf,
        pos: u64,
    ) -> impl Cancellable<Output = BufResult<usize, FixedBuf>> + '_ {
        let err = self
            .file
            .misaligned("write_fixed_at", pos, || vec![write_segment(&buf)]);
        eager_if(
            self.file.eager(),
            Op::new(Refuse::new(
                WriteFixed::new(self.fd(), buf, pos).fixed_file(self.fixed()),
                err,
            )),
        )
    }

    /// As [`File::sync_all`], naming the slot.
    pub async fn sync_all(&self) -> io::Result<()> {
        Op::new(ops::Fsync::new(self.fd(), false).fixed(self.fixed())).await
    }

    /// As [`File::sync_data`], naming the slot.
    pub async fn sync_data(&self) -> io::Result<()> {
        Op::new(ops::Fsync::new(self.fd(), true).fixed(self.fixed())).await
    }

    /// Gives the slot back, then closes the file, reporting the close
    /// error if there is one.
    pub async fn close(self) -> io::Result<()> {
        self.unregister().close().await
    }
}

impl Deref for RegisteredFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

impl AsRawFd for RegisteredFile {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl AsFd for RegisteredFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for RegisteredFile {
    fn drop(&mut self) {
        // The table's reference goes first; then `file` closes the fd.
        self.release();
    }
}
