//! `read_dir`: a directory's entries, read on the blocking pool.
//!
//! The kernel has no asynchronous `getdents` (io_uring has no opcode for
//! it), so on both backends a pool thread reads the directory, a batch of
//! entries per job ([`BATCH`]), each entry's type from the directory
//! itself (`d_type`; an `lstat` only where the filesystem leaves it
//! unknown, still on the pool thread). The loop then hands entries out
//! one by one without another hop.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Entries read per blocking-pool job.
pub const BATCH: usize = 512;

/// One entry of a directory (never `.` or `..`).
#[derive(Debug, Clone)]
pub struct DirEntry {
    path: PathBuf,
    name: OsString,
    file_type: std::fs::FileType,
    ino: u64,
}

impl DirEntry {
    /// The directory's path joined with the entry's name.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The entry's name.
    pub fn file_name(&self) -> OsString {
        self.name.clone()
    }

    /// The entry's type (symlinks are not followed), as read with the
    /// directory.
    pub fn file_type(&self) -> std::fs::FileType {
        self.file_type
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The entry's metadata, not following a symlink (`statx`).
    pub async fn metadata(&self) -> io::Result<super::Metadata> {
        super::symlink_metadata(&self.path).await
    }
}

type Batch = (Option<std::fs::ReadDir>, Vec<io::Result<DirEntry>>);

/// A directory being read: [`next_entry`](Self::next_entry), or use it as
/// a `Stream` of `io::Result<DirEntry>`. Dropping it mid-way is fine (a
/// batch being read finishes on the pool and is discarded).
pub struct ReadDir {
    /// The open directory, while no job has it; `None` at the end.
    dir: Option<std::fs::ReadDir>,
    ready: VecDeque<io::Result<DirEntry>>,
    job: Option<Pin<Box<dyn Future<Output = Batch>>>>,
    done: bool,
}

impl std::fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDir")
            .field("buffered", &self.ready.len())
            .field("done", &self.done)
            .finish()
    }
}

fn read_batch(mut dir: std::fs::ReadDir) -> Batch {
    let mut out = Vec::with_capacity(BATCH);
    while out.len() < BATCH {
        match dir.next() {
            None => return (None, out),
            Some(Ok(e)) => {
                use std::os::unix::fs::DirEntryExt;
                let item = e.file_type().map(|file_type| DirEntry {
                    path: e.path(),
                    name: e.file_name(),
                    file_type,
                    ino: e.ino(),
                });
                out.push(item);
            }
            Some(Err(err)) => {
                out.push(Err(err));
                return (None, out);
            }
        }
    }
    (Some(dir), out)
}

/// Opens directory `path` and reads its first batch of entries on the
/// blocking pool. A path that is not a directory is the usual error
/// (`NotADirectory`/`ENOTDIR`, `NotFound`).
pub async fn read_dir(path: impl AsRef<Path>) -> io::Result<ReadDir> {
    let path = path.as_ref().to_path_buf();
    let el = crate::runtime::get_running_loop();
    let (dir, first) = el
        .run_in_executor(move || -> io::Result<Batch> { Ok(read_batch(std::fs::read_dir(path)?)) })
        .await?;
    Ok(ReadDir {
        done: dir.is_none(),
        dir,
        ready: first.into(),
        job: None,
    })
}

impl ReadDir {
    /// The next entry; `Ok(None)` at the end. An error reading the
    /// directory ends it.
    pub async fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        std::future::poll_fn(|cx| self.poll_entry(cx)).await
    }

    fn poll_entry(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<DirEntry>>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Poll::Ready(e.map(Some));
            }
            if self.job.is_none() {
                let Some(dir) = self.dir.take() else {
                    self.done = true;
                    return Poll::Ready(Ok(None));
                };
                let el = crate::runtime::get_running_loop();
                self.job = Some(Box::pin(el.run_in_executor(move || read_batch(dir))));
            }
            let job = self.job.as_mut().expect("job");
            let (dir, batch) = std::task::ready!(job.as_mut().poll(cx));
            self.job = None;
            self.dir = dir;
            self.ready.extend(batch);
            if self.ready.is_empty() && self.dir.is_none() {
                self.done = true;
                return Poll::Ready(Ok(None));
            }
        }
    }
}

impl futures_core::Stream for ReadDir {
    type Item = io::Result<DirEntry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_entry(cx).map(Result::transpose)
    }
}
