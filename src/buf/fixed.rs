//! Registered (fixed) buffers: [`FixedBufPool`] and the [`FixedBuf`]s it
//! hands out. See uring-sys-notes/registered-buffers.md.
//!
//! ## Ownership
//! The pool's memory is a set of [`AlignedBuf`]s owned by a shared `Pool`
//! (`Rc`). Each buffer is either *free* (its index in the pool's free list)
//! or *out*, held by exactly one [`FixedBuf`], which is then the only
//! thing that reads or writes that memory (through a raw pointer: the pool
//! never makes references into it). Dropping a `FixedBuf` puts its index
//! back and wakes the first task waiting in [`FixedBufPool::next`]. Each
//! `FixedBuf` holds the `Pool`, so the memory outlives every buffer handed
//! out, every op that owns one (an op dropped in flight keeps its data, and
//! so the `FixedBuf`, in the driver until the kernel is done), and the
//! `FixedBufPool` handles. The last of them empties the buffers' slots in
//! the ring's table and only then frees the memory.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use super::{AlignedBuf, IoBuf, IoBufMut};
use crate::driver::{self, Driver, fixedbuf};

/// The alignment of the buffers [`FixedBufPool::new`] makes (a page: right
/// for `O_DIRECT` on every local filesystem and block device).
const POOL_ALIGN: usize = 4096;

struct Pool {
    /// The memory; only ever reached through `FixedBuf`s' raw pointers
    /// while the pool lives.
    bufs: Box<[AlignedBuf]>,
    free: RefCell<Vec<u16>>,
    /// Tasks waiting in `next()`, first come first served: (id, waker).
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_id: Cell<u64>,
    /// The loop it belongs to (the allocation is kept, so the address is
    /// never reused by another driver while we compare with it).
    driver: Weak<Driver>,
    /// Its slots in the ring's table, if registered.
    reg: Option<fixedbuf::Registration>,
}

impl Pool {
    fn take(self: &Rc<Self>) -> Option<FixedBuf> {
        let idx = self.free.borrow_mut().pop()?;
        let b = &self.bufs[idx as usize];
        Some(FixedBuf {
            pool: self.clone(),
            idx,
            // Casting the address only: no reference into the bytes.
            ptr: NonNull::new(b.as_ptr() as *mut u8).expect("non-null allocation"),
            cap: b.capacity(),
            len: 0,
        })
    }

    fn wake_one(&self) {
        if self.free.borrow().is_empty() {
            return;
        }
        let w = self.waiters.borrow_mut().pop_front();
        if let Some((_, w)) = w {
            w.wake();
        }
    }

    fn give_back(&self, idx: u16) {
        self.free.borrow_mut().push(idx);
        self.wake_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Empty the slots before `bufs` (the memory) is freed.
        if let (Some(reg), Some(d)) = (&self.reg, self.driver.upgrade()) {
            fixedbuf::unregister(&d, reg);
        }
    }
}

/// A pool of buffers registered with the running loop's io_uring
/// (`IORING_REGISTER_BUFFERS2`/`_UPDATE`), for
/// [`File::read_fixed_at`](crate::fs::File::read_fixed_at) and
/// [`write_fixed_at`](crate::fs::File::write_fixed_at), whose
/// `READ_FIXED`/`WRITE_FIXED` skip mapping and pinning the user pages on
/// every op. On epoll (or a kernel without sparse buffer tables,
/// before 5.19) the pool is the same memory, unregistered, and the fixed
/// ops are plain `pread`/`pwrite` on it: same API, same results.
/// [`is_registered`](Self::is_registered) says which.
///
/// [`try_next`](Self::try_next) and [`next`](Self::next) hand out a
/// [`FixedBuf`], which goes back to the pool when dropped (in any order).
/// The buffers are [`AlignedBuf`]s ([`new`](Self::new) makes
/// page-aligned ones; [`from_bufs`](Self::from_bufs) takes yours), so a
/// pool serves `O_DIRECT` files too.
///
/// **Limits and memory.** A pool has 1 to 16384 buffers of 1 byte to
/// 1 GiB each (the kernel's limits; the same on both backends); all the
/// pools of one loop share the ring's table of 16384 slots, which grows as
/// pools are made (re-registering the live ones in place). Registered
/// memory is pinned, and the kernel charges it to the user's
/// `RLIMIT_MEMLOCK` (`ulimit -l`) unless the process has `CAP_IPC_LOCK` —
/// still so on current kernels (only the rings' own memory moved to the
/// memory cgroup, in 5.12). Past the limit, creation fails with an
/// `OutOfMemory` error that says so.
///
/// A pool is a cheap handle (`Clone` shares it), `!Send`, and belongs to
/// the loop it was made in: a [`FixedBuf`] given to a fixed op on another
/// loop is an `InvalidInput` error (a plain `read_at` with it works
/// anywhere: it is an ordinary buffer there).
///
/// ```no_run
/// use uringio::buf::FixedBufPool;
/// # async fn f(file: uringio::fs::File) -> std::io::Result<()> {
/// let pool = FixedBufPool::new(32, 4096)?;
/// let buf = pool.next().await; // waits while all 32 are out
/// let (res, buf) = file.read_fixed_at(buf, 0).await;
/// println!("{} bytes: {:?}", res?, &buf[..8]);
/// drop(buf); // back to the pool
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FixedBufPool {
    pool: Rc<Pool>,
}

impl std::fmt::Debug for FixedBufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedBufPool")
            .field("buffers", &self.len())
            .field("available", &self.available())
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl FixedBufPool {
    /// A pool of `count` buffers of `size` bytes, page-aligned and zeroed,
    /// registered with the running loop's ring.
    ///
    /// # Errors
    /// `InvalidInput` if `count` is not in `1..=16384`, `size` not in
    /// `1..=1 GiB`, or the ring's table has no room left for `count` more;
    /// `OutOfMemory` if the memory cannot be allocated, or pinned within
    /// `RLIMIT_MEMLOCK`; another error outside a running loop or if the
    /// kernel refuses the registration (the message says why).
    pub fn new(count: usize, size: usize) -> io::Result<FixedBufPool> {
        check_count(count)?;
        check_size(size)?;
        let bufs = (0..count)
            .map(|_| AlignedBuf::new(size, POOL_ALIGN))
            .collect::<io::Result<Vec<_>>>()?;
        FixedBufPool::from_bufs(bufs)
    }

    /// A pool over your buffers (say, aligned to a file's
    /// [`dio_alignment`](crate::fs::File::dio_alignment)). Their contents
    /// are kept, but each buffer is handed out empty (length 0).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_bufs(bufs: impl IntoIterator<Item = AlignedBuf>) -> io::Result<FixedBufPool> {
        let bufs: Box<[AlignedBuf]> = bufs.into_iter().collect();
        check_count(bufs.len())?;
        for b in bufs.iter() {
            check_size(b.capacity())?;
        }
        let d = driver::current().ok_or_else(|| {
            io::Error::other("FixedBufPool created outside a running uringio loop")
        })?;
        let iovs: Vec<(usize, usize)> = bufs
            .iter()
            .map(|b| (b.as_ptr() as usize, b.capacity()))
            .collect();
        let reg = fixedbuf::register(&d, &iovs)?;
        // Handed out from the end: buffer 0 first.
        let free = (0..bufs.len() as u16).rev().collect();
        Ok(FixedBufPool {
            pool: Rc::new(Pool {
                bufs,
                free: RefCell::new(free),
                waiters: RefCell::new(VecDeque::new()),
                next_id: Cell::new(0),
                driver: Rc::downgrade(&d),
                reg,
            }),
        })
    }

    /// A free buffer (length 0), or `None` if all are out.
    pub fn try_next(&self) -> Option<FixedBuf> {
        self.pool.take()
    }

    /// A free buffer (length 0), waiting until one is dropped if all are
    /// out. Waiting tasks are served in order; dropping the future gives
    /// up its turn without losing a wake-up.
    pub fn next(&self) -> NextBuf {
        NextBuf {
            pool: self.pool.clone(),
            id: None,
        }
    }

    /// How many buffers the pool has.
    pub fn len(&self) -> usize {
        self.pool.bufs.len()
    }

    /// Whether the pool has no buffers (never: pools have at least one).
    pub fn is_empty(&self) -> bool {
        self.pool.bufs.is_empty()
    }

    /// How many buffers are free right now.
    pub fn available(&self) -> usize {
        self.pool.free.borrow().len()
    }

    /// `true` if the buffers are in the ring's registered-buffer table
    /// (fixed ops use `READ_FIXED`/`WRITE_FIXED`); `false` on epoll or
    /// without kernel support, where fixed ops are plain reads and writes.
    pub fn is_registered(&self) -> bool {
        self.pool.reg.as_ref().is_some_and(|r| r.ok.get())
    }
}

fn check_count(count: usize) -> io::Result<()> {
    if count == 0 || count > fixedbuf::MAX_TABLE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a FixedBufPool has 1..={} buffers, got {count}",
                fixedbuf::MAX_TABLE
            ),
        ));
    }
    Ok(())
}

fn check_size(size: usize) -> io::Result<()> {
    if size == 0 || size > fixedbuf::MAX_BUF {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a FixedBuf has 1..=1073741824 bytes (1 GiB), got {size}"),
        ));
    }
    Ok(())
}

/// The future of [`FixedBufPool::next`].
#[must_use = "futures do nothing unless awaited"]
pub struct NextBuf {
    pool: Rc<Pool>,
    /// Our place in the waiters' queue, once we wait.
    id: Option<u64>,
}

impl std::fmt::Debug for NextBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextBuf")
            .field("waiting", &self.id)
            .finish()
    }
}

impl Future for NextBuf {
    type Output = FixedBuf;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FixedBuf> {
        let this = self.get_mut();
        let queued = this.id.and_then(|id| {
            let w = this.pool.waiters.borrow();
            w.iter().position(|(i, _)| *i == id)
        });
        // Waiters are served in order: a new one only if nobody waits, a
        // queued one at the front, one woken (popped from the queue) now.
        let may_take = match (this.id, queued) {
            (None, _) => this.pool.waiters.borrow().is_empty(),
            (Some(_), None) => true,
            (Some(_), Some(i)) => i == 0,
        };
        if may_take {
            if let Some(b) = this.pool.take() {
                if let Some(i) = queued {
                    this.pool.waiters.borrow_mut().remove(i);
                }
                this.id = None;
                // More free buffers: the next waiter may go too.
                this.pool.wake_one();
                return Poll::Ready(b);
            }
        }
        let mut w = this.pool.waiters.borrow_mut();
        match queued {
            Some(i) => w[i].1.clone_from(cx.waker()),
            None => {
                // Woken and popped (or new): back in line, at the front if
                // we had been woken, so the order holds.
                let id = this.pool.next_id.get();
                this.pool.next_id.set(id + 1);
                if this.id.is_some() {
                    w.push_front((id, cx.waker().clone()));
                } else {
                    w.push_back((id, cx.waker().clone()));
                }
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for NextBuf {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut w = self.pool.waiters.borrow_mut();
        match w.iter().position(|(i, _)| *i == id) {
            Some(i) => {
                w.remove(i);
            }
            None => {
                // Woken for a buffer we will not take: pass the turn on.
                drop(w);
                self.pool.wake_one();
            }
        }
    }
}

/// One buffer of a [`FixedBufPool`], out of the pool until dropped.
///
/// Like an [`AlignedBuf`]: a length (the data, what [`Deref`] shows and a
/// write sends) within a fixed capacity (what a read may fill). It starts
/// empty (length 0) each time it is handed out; its memory keeps whatever
/// the last user left there (it is zeroed only when the pool is made).
/// Besides the fixed ops, it works as an ordinary owned buffer with every
/// op (`read_at`, `write`, …). `!Send`.
pub struct FixedBuf {
    pool: Rc<Pool>,
    idx: u16,
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

impl FixedBuf {
    /// Its index in the pool (`0..pool.len()`).
    pub fn index(&self) -> usize {
        self.idx as usize
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// How many bytes are data (what a write sends).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length to 0.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the length to `len`; does nothing if it is not shorter.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Sets the length to `new_len`: bytes added are set to `value`.
    ///
    /// # Errors
    /// `InvalidInput` if `new_len` is past the capacity.
    pub fn resize(&mut self, new_len: usize, value: u8) -> io::Result<()> {
        if new_len > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "FixedBuf::resize to {new_len} bytes past its capacity of {}",
                    self.cap
                ),
            ));
        }
        if new_len > self.len {
            // SAFETY: len < new_len <= cap: within the buffer, which this
            // FixedBuf alone may touch while it is out (module docs).
            unsafe {
                std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), value, new_len - self.len)
            };
        }
        self.len = new_len;
        Ok(())
    }

    /// Appends `data` after the current length.
    ///
    /// # Errors
    /// `InvalidInput` (and nothing is copied) if it does not fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > self.cap - self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "FixedBuf: {} more bytes do not fit ({} of {} used)",
                    data.len(),
                    self.len,
                    self.cap
                ),
            ));
        }
        // SAFETY: len + data.len() <= cap, memory only this FixedBuf
        // touches; `data` cannot overlap it (we are borrowed mutably).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            )
        };
        self.len += data.len();
        Ok(())
    }

    /// Whether the buffer belongs to `pool`.
    pub fn is_from(&self, pool: &FixedBufPool) -> bool {
        Rc::ptr_eq(&self.pool, &pool.pool)
    }

    /// `Ok` if fixed ops with this buffer may run on `driver` (the loop
    /// its pool was made in); an `InvalidInput` error otherwise.
    pub(crate) fn check_loop(&self, driver: &Driver) -> io::Result<()> {
        if std::ptr::eq(self.pool.driver.as_ptr(), driver) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a FixedBuf from another loop's FixedBufPool was given to a fixed op: a \
                 pool's buffers work with read_fixed_at/write_fixed_at only on the loop \
                 the pool was made in",
            ))
        }
    }

    /// The buffer's slot in `driver`'s registered-buffer table, if it is
    /// registered there.
    pub(crate) fn slot_on(&self, driver: &Driver) -> Option<u16> {
        if !std::ptr::eq(self.pool.driver.as_ptr(), driver) {
            return None;
        }
        let reg = self.pool.reg.as_ref().filter(|r| r.ok.get())?;
        u16::try_from(reg.base + u32::from(self.idx)).ok()
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.pool.give_back(self.idx);
    }
}

impl std::fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.idx)
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .finish()
    }
}

impl Deref for FixedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= cap bytes of the pool's buffer, all initialised
        // (zeroed when the pool was made), touched by no one else while
        // this FixedBuf is out.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we are borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for FixedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

// SAFETY: the pool's buffer is `cap` bytes of heap memory, all initialised,
// which stays allocated and in place while this FixedBuf lives (it holds
// the pool) and which nothing else touches meanwhile; `len <= cap`.
unsafe impl IoBuf for FixedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.cap
    }
}

// SAFETY: as above; the whole capacity is writable, and `set_init` never
// takes the length past it.
unsafe impl IoBufMut for FixedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = self.len.max(pos.min(self.cap));
    }
}
