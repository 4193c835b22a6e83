//! Provided-buffer groups: the memory behind [`crate::buf::BufRing`].
//!
//! A group is `entries` buffers of `size` bytes in one allocation, each
//! named by its buffer id (`bid`, `0..entries`). A buffer is either *in the
//! ring* (free: the kernel, or on epoll the driver, may fill it) or *out*
//! (held by a [`RingEntry`], which the user sees as a
//! [`Chunk`](crate::buf::Chunk)). Dropping a `RingEntry` puts its buffer
//! back, in whatever order entries are dropped.
//!
//! ## Two ways to hand buffers out
//! - **Kernel ring** (io_uring with `IORING_REGISTER_PBUF_RING`, 5.19): an
//!   array of `io_uring_buf {addr, len, bid}` shared with the kernel, whose
//!   16-bit tail lives in entry 0's reserved field. The kernel consumes
//!   entries from its private head in ring order and reports the `bid` it
//!   used in the CQE flags. We give a buffer back by writing
//!   `{addr(bid), size, bid}` at `tail & mask` (never at index `bid`: after
//!   out-of-order returns the two differ) and publishing `tail + 1` with a
//!   release store. As many ring slots as buffers exist, so the tail can
//!   never lap the head.
//! - **Emulated** (epoll, or io_uring without the feature, or forced): a
//!   FIFO free list in user space; a receive takes a buffer only once its
//!   socket is readable, so idle connections hold none.
//!
//! ## Waiting for a buffer
//! A receive that finds the ring empty (`ENOBUFS` on io_uring, an empty
//! free list when emulated) waits in the group's FIFO of [`BufWaiter`]s;
//! each buffer put back wakes one waiter. On io_uring the group also
//! counts the buffers the kernel took (per CQE reaped, which the kernel
//! posts as it takes each buffer) and the *claims* of receives re-armed
//! after `ENOBUFS` whose first CQE has not come: a receive re-arms only if
//! it can claim a buffer still in the ring, else it waits. That closes the
//! race between the kernel finding the ring empty and the receive getting
//! in the queue (a buffer back meanwhile is seen as free), and keeps the
//! many receives woken by returning buffers from all re-arming at once for
//! the one buffer there is (a herd of `ENOBUFS`: measured 32 per chunk
//! with 64 connections on 2 buffers, 1 with claims).
//!
//! ## Lifetime
//! The memory lives as long as any handle: the `BufRing`s, every
//! `RingEntry`, and every receive the kernel still has (a dropped multishot
//! keeps the group alive in its slot until its last CQE). The last one
//! unregisters the ring from its io_uring (if that ring still exists) and
//! only then frees the memory: the kernel never sees a freed buffer.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::Waker;

use io_uring::types::BufRingEntry;

use super::{Backends, Driver};

/// The most buffers one group may have (the kernel's limit for a ring).
pub(crate) const MAX_ENTRIES: u32 = 32768;

/// Checks a group's shape: `entries` a power of two in `1..=32768`,
/// `size` in `1..=u32::MAX`, the whole within `isize::MAX`.
pub(crate) fn check_shape(entries: u32, size: usize) -> io::Result<()> {
    if entries == 0 || entries > MAX_ENTRIES || !entries.is_power_of_two() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("BufRing entries must be a power of two in 1..=32768, got {entries}"),
        ));
    }
    if size == 0 || size > u32::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("BufRing buffer size must be in 1..=4294967295 bytes, got {size}"),
        ));
    }
    match (entries as usize).checked_mul(size) {
        Some(total) if total <= isize::MAX as usize / 2 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("BufRing of {entries} × {size} bytes is too large"),
        )),
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 { 4096 } else { p as usize }
}

/// A zeroed allocation freed on drop (unless leaked).
struct Mem {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Mem {
    fn zeroed(size: usize, align: usize) -> io::Result<Mem> {
        let layout = Layout::from_size_align(size.max(1), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Mem { ptr, layout })
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The ring shared with the kernel.
struct KernelRing {
    /// The `io_uring_buf` array (page-aligned, as the kernel requires).
    ring: Mem,
    /// Our copy of the tail (the kernel only reads it).
    tail: Cell<u16>,
    bgid: u16,
    /// The driver whose ring it is registered with.
    driver: Weak<Driver>,
    driver_id: *const Driver,
}

/// A receive waiting for a buffer to come back (see the module docs).
#[derive(Default)]
pub(crate) struct BufWaiter {
    waker: RefCell<Option<Waker>>,
    /// In the group's queue.
    queued: Cell<bool>,
    /// Woken by a buffer coming back, and not yet acted on.
    notified: Cell<bool>,
}

impl BufWaiter {
    /// Takes the notification, if it has one.
    pub(crate) fn take_notified(&self) -> bool {
        self.notified.replace(false)
    }
}

/// One group of provided buffers (see the module docs).
pub(crate) struct BufGroup {
    /// The buffers' memory (`None` once leaked, see `Drop`).
    bufs: Option<Mem>,
    /// Its start.
    base: *mut u8,
    size: u32,
    entries: u32,
    kernel: Option<KernelRing>,
    /// Emulated: free buffer ids, taken from the front.
    free: RefCell<VecDeque<u16>>,
    waiters: RefCell<VecDeque<Rc<BufWaiter>>>,
    out: Cell<usize>,
    /// Kernel ring: buffers the kernel took (per CQEs reaped) and that
    /// have not come back.
    taken: Cell<usize>,
    /// Kernel ring: receives re-armed after `ENOBUFS` whose first CQE has
    /// not been seen, each counting on one buffer in the ring.
    reserved: Cell<usize>,
}

impl std::fmt::Debug for BufGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufGroup")
            .field("entries", &self.entries)
            .field("size", &self.size)
            .field("bgid", &self.bgid())
            .field("out", &self.out.get())
            .finish()
    }
}

impl BufGroup {
    /// A group of `entries` buffers of `size` bytes on `driver`: registered
    /// with its ring when it has [`Features::buf_ring`](super::Features),
    /// emulated otherwise.
    pub(crate) fn new(driver: &Rc<Driver>, entries: u32, size: usize) -> io::Result<Rc<BufGroup>> {
        check_shape(entries, size)?;
        let bufs = Mem::zeroed(entries as usize * size, 64)?;
        let mut group = BufGroup {
            base: bufs.ptr.as_ptr(),
            bufs: Some(bufs),
            size: size as u32,
            entries,
            kernel: None,
            free: RefCell::new(VecDeque::new()),
            waiters: RefCell::new(VecDeque::new()),
            out: Cell::new(0),
            taken: Cell::new(0),
            reserved: Cell::new(0),
        };
        if driver.features.buf_ring {
            let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
            let page = page_size();
            let ring = Mem::zeroed(ring_bytes.div_ceil(page) * page, page)?;
            let kr = KernelRing {
                ring,
                tail: Cell::new(0),
                bgid: 0,
                driver: Rc::downgrade(driver),
                driver_id: Rc::as_ptr(driver),
            };
            group.kernel = Some(kr);
            // Every buffer starts in the ring.
            for bid in 0..entries {
                group.push_kernel(bid as u16);
            }
            let addr = group
                .kernel
                .as_ref()
                .map_or(0, |k| k.ring.ptr.as_ptr() as u64);
            let bgid = match &mut *driver.inner.borrow_mut() {
                Backends::Uring(u) => u.register_buf_ring(addr, entries as u16)?,
                Backends::Epoll(_) => {
                    return Err(io::Error::other("a buffer ring needs io_uring"));
                }
            };
            if let Some(k) = &mut group.kernel {
                k.bgid = bgid;
            }
        } else {
            group.free = RefCell::new((0..entries).map(|b| b as u16).collect());
        }
        Ok(Rc::new(group))
    }

    /// Registered with an io_uring (else emulated).
    pub(crate) fn is_kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// The buffer-group id in the kernel, when registered.
    pub(crate) fn bgid(&self) -> Option<u16> {
        self.kernel.as_ref().map(|k| k.bgid)
    }

    /// Whether a kernel ring belongs to `driver` (an emulated one belongs
    /// to every loop).
    pub(crate) fn usable_on(&self, driver: &Rc<Driver>) -> bool {
        self.kernel
            .as_ref()
            .is_none_or(|k| std::ptr::eq(k.driver_id, Rc::as_ptr(driver)))
    }

    pub(crate) fn entries(&self) -> usize {
        self.entries as usize
    }

    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }

    /// Buffers out of the ring, held by entries.
    pub(crate) fn in_use(&self) -> usize {
        self.out.get()
    }

    /// A CQE naming one of this ring's buffers was reaped.
    pub(crate) fn kernel_took(&self) {
        self.taken.set(self.taken.get() + 1);
    }

    /// Kernel ring: claims one of the buffers in the ring (as far as the
    /// completions reaped so far tell; the kernel posts each buffer's CQE
    /// as it takes it) for a receive about to re-arm after `ENOBUFS`.
    /// Claims keep the receives woken by returning buffers from all
    /// re-arming at once (a thundering herd of `ENOBUFS`).
    pub(crate) fn try_reserve(&self) -> bool {
        let busy = self.taken.get() + self.reserved.get();
        if busy < self.entries as usize {
            self.reserved.set(self.reserved.get() + 1);
            true
        } else {
            false
        }
    }

    /// The re-armed receive saw its first completion (or went away): its
    /// claim ends; if buffers are still free, the next waiter tries.
    pub(crate) fn unreserve(&self) {
        self.reserved.set(self.reserved.get().saturating_sub(1));
        if self.taken.get() + self.reserved.get() < self.entries as usize {
            self.notify_one();
        }
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!((bid as u32) < self.entries);
        // SAFETY: bid < entries (checked by every caller), so the offset
        // stays inside the allocation of entries × size bytes.
        unsafe { self.base.add(bid as usize * self.size as usize) }
    }

    /// Writes `bid` at the kernel ring's tail and publishes it.
    fn push_kernel(&self, bid: u16) {
        let Some(k) = &self.kernel else { return };
        let t = k.tail.get();
        let idx = (t as u32 & (self.entries - 1)) as usize;
        let base = k.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: idx < entries and the ring allocation holds `entries`
        // io_uring_buf structs. The kernel only reads entries between its
        // head and the published tail, and this slot is past the tail
        // (there are as many slots as buffers, and `bid` is not in the
        // ring), so nothing reads it concurrently. Only addr/len/bid are
        // written, never entry 0's reserved field, which is the tail.
        unsafe {
            let e = &mut *base.add(idx);
            e.set_addr(self.buf_ptr(bid) as u64);
            e.set_len(self.size);
            e.set_bid(bid);
        }
        let t = t.wrapping_add(1);
        k.tail.set(t);
        // SAFETY: the tail is the u16 at offset 14 of entry 0 (2-aligned),
        // inside the allocation; the kernel reads it with an acquire load,
        // so the release store publishes the entry written above.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut().cast::<AtomicU16>();
            (*tail).store(t, Ordering::Release);
        }
    }

    /// The buffer the kernel reported filling with `len` bytes.
    pub(crate) fn entry_from_kernel(
        self: &Rc<Self>,
        bid: u16,
        len: usize,
    ) -> io::Result<RingEntry> {
        if self.kernel.is_none() || bid as u32 >= self.entries || len > self.size as usize {
            return Err(io::Error::other(format!(
                "the kernel reported buffer {bid} with {len} bytes of a group of {} × {}",
                self.entries, self.size
            )));
        }
        self.out.set(self.out.get() + 1);
        Ok(RingEntry {
            group: self.clone(),
            bid,
            start: 0,
            len: len as u32,
        })
    }

    /// Emulated: takes a free buffer (empty), if there is one.
    pub(crate) fn take_free(self: &Rc<Self>) -> Option<RingEntry> {
        let bid = self.free.borrow_mut().pop_front()?;
        self.out.set(self.out.get() + 1);
        Some(RingEntry {
            group: self.clone(),
            bid,
            start: 0,
            len: 0,
        })
    }

    /// Puts `bid` back in the ring and wakes one waiter.
    fn recycle(&self, bid: u16) {
        if self.kernel.is_some() {
            self.push_kernel(bid);
            self.taken.set(self.taken.get().saturating_sub(1));
        } else {
            self.free.borrow_mut().push_back(bid);
        }
        self.out.set(self.out.get().saturating_sub(1));
        self.notify_one();
    }

    /// Wakes the first waiter.
    fn notify_one(&self) {
        let w = self.waiters.borrow_mut().pop_front();
        if let Some(w) = w {
            w.queued.set(false);
            w.notified.set(true);
            let waker = w.waker.borrow_mut().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Queues `w` (once) to be woken when a buffer comes back; `true` if
    /// it was not queued yet.
    pub(crate) fn wait(&self, w: &Rc<BufWaiter>, waker: &Waker) -> bool {
        *w.waker.borrow_mut() = Some(waker.clone());
        if w.queued.replace(true) {
            return false;
        }
        self.waiters.borrow_mut().push_back(w.clone());
        true
    }

    /// `w` stops waiting (its receive went away). A notification it got
    /// and did not act on goes to the next waiter, so no buffer sits in the
    /// ring while others wait.
    pub(crate) fn unwait(&self, w: &Rc<BufWaiter>) {
        if w.queued.replace(false) {
            self.waiters.borrow_mut().retain(|x| !Rc::ptr_eq(x, w));
        }
        w.waker.borrow_mut().take();
        if w.notified.replace(false) {
            self.notify_one();
        }
    }
}

impl Drop for BufGroup {
    fn drop(&mut self) {
        let Some(k) = self.kernel.take() else {
            return;
        };
        let Some(d) = k.driver.upgrade() else {
            // The ring is gone (or going): its registrations went with it,
            // and no request can pick a buffer any more.
            return;
        };
        let unregistered = match d.inner.try_borrow_mut() {
            Ok(mut inner) => match &mut *inner {
                Backends::Uring(u) => u.unregister_buf_ring(k.bgid),
                Backends::Epoll(_) => true,
            },
            Err(_) => false,
        };
        if !unregistered {
            // The kernel may still hand these buffers out: leak them
            // rather than let it write into freed memory.
            log::warn!(
                "uringio: could not unregister buffer ring {}; leaking its {} × {} bytes",
                k.bgid,
                self.entries,
                self.size
            );
            std::mem::forget(self.bufs.take());
            std::mem::forget(k.ring);
        }
    }
}

/// One buffer out of a group, holding `start..len` of received bytes;
/// back in the ring when dropped.
pub(crate) struct RingEntry {
    group: Rc<BufGroup>,
    bid: u16,
    start: u32,
    len: u32,
}

impl std::fmt::Debug for RingEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingEntry")
            .field("bid", &self.bid)
            .field("len", &(self.len - self.start))
            .finish()
    }
}

impl RingEntry {
    /// The buffer id.
    pub(crate) fn bid(&self) -> u16 {
        self.bid
    }

    /// The group it belongs to.
    pub(crate) fn group(&self) -> &Rc<BufGroup> {
        &self.group
    }

    /// The received bytes not yet consumed.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer is out of the ring (held by this entry), so
        // neither the kernel nor another entry writes it; start <= len <=
        // size bytes from buf_ptr lie in the zero-initialised allocation,
        // which the Rc keeps alive.
        unsafe {
            std::slice::from_raw_parts(
                self.group.buf_ptr(self.bid).add(self.start as usize),
                (self.len - self.start) as usize,
            )
        }
    }

    /// As [`as_slice`](Self::as_slice), writable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and `&mut self` makes this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.group.buf_ptr(self.bid).add(self.start as usize),
                (self.len - self.start) as usize,
            )
        }
    }

    /// Drops the first `n` received bytes from the view (a partial copy
    /// out of the entry).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min((self.len - self.start) as usize) as u32;
        self.start += n;
    }

    /// Sets how many bytes were received (emulated receive).
    pub(crate) fn set_len(&mut self, n: usize) {
        self.len = n.min(self.group.size as usize) as u32;
        self.start = 0;
    }

    /// The whole buffer's address and size (emulated receive).
    pub(crate) fn raw_buf(&mut self) -> (*mut u8, usize) {
        (self.group.buf_ptr(self.bid), self.group.size as usize)
    }
}

impl Drop for RingEntry {
    fn drop(&mut self) {
        self.group.recycle(self.bid);
    }
}

/// What a receive produced, kept for whoever reads the socket next.
#[derive(Debug)]
pub(crate) enum RecvItem {
    /// Bytes, in a ring buffer.
    Data(RingEntry),
    /// Bytes a dropped copy had read from the socket but not written
    /// (see `net::copy_bidirectional`), handed back in a plain buffer.
    Bytes(Vec<u8>),
    /// End of stream.
    Eof,
    /// The receive failed.
    Err(io::Error),
}

/// Results of dropped receives, in order, per socket: what a multishot
/// receive took from the socket after (or just before) its stream was
/// dropped. The socket's next read or receive stream takes them first,
/// and waits while `in_flight` receives may still add to them.
#[derive(Debug, Default)]
pub(crate) struct Leftover {
    pub(crate) items: VecDeque<RecvItem>,
    /// Dropped receives whose final CQE has not come.
    pub(crate) in_flight: usize,
    /// Of those, the ones that will put bytes at the *front* (a dropped
    /// copy's write or pipe: bytes read before everything here). While
    /// any is pending, readers take nothing, not even what `items`
    /// already holds (it comes after those bytes).
    pub(crate) front_pending: usize,
    pub(crate) waker: Option<Waker>,
}

/// A socket's [`Leftover`], shared with the driver's slots.
pub(crate) type RecvLeftover = Rc<RefCell<Leftover>>;

/// Hands bytes back to a socket's leftover: `front` for bytes that were
/// read before anything the leftover holds, else at the back. Returns the
/// waker of a reader waiting on it (to run with the driver released).
pub(crate) fn hand_back(leftover: &RecvLeftover, bytes: Vec<u8>, front: bool) -> Option<Waker> {
    let mut l = leftover.borrow_mut();
    if !bytes.is_empty() {
        if front {
            l.items.push_front(RecvItem::Bytes(bytes));
        } else {
            l.items.push_back(RecvItem::Bytes(bytes));
        }
    }
    l.waker.take()
}

/// How a dropped multishot receive's late CQEs reach the socket's
/// leftover. Once the kernel still has the receive ([`RecvLate::start`]),
/// it counts in the leftover's `in_flight` until dropped (after the final
/// CQE, with the driver released).
pub(crate) struct RecvLate {
    leftover: RecvLeftover,
    group: Rc<BufGroup>,
    started: Cell<bool>,
}

impl RecvLate {
    pub(crate) fn new(leftover: RecvLeftover, group: Rc<BufGroup>) -> RecvLate {
        RecvLate {
            leftover,
            group,
            started: Cell::new(false),
        }
    }

    /// The receive is still in the kernel: readers of the socket wait for
    /// its final CQE.
    pub(crate) fn start(&self) {
        if !self.started.replace(true) {
            self.leftover.borrow_mut().in_flight += 1;
        }
    }

    /// The group its buffers come from.
    pub(crate) fn group(&self) -> &Rc<BufGroup> {
        &self.group
    }

    /// One CQE of the dropped receive: its bytes (or end of stream, or
    /// error) are kept; a waker to run once the driver is released may be
    /// returned.
    pub(crate) fn take(&self, res: i32, flags: u32) -> Option<Waker> {
        let bid = io_uring::cqueue::buffer_select(flags);
        let item = match (res, bid) {
            (n, Some(bid)) if n > 0 => match self.group.entry_from_kernel(bid, n as usize) {
                Ok(e) => RecvItem::Data(e),
                Err(e) => RecvItem::Err(e),
            },
            (n, None) if n > 0 => RecvItem::Err(io::Error::other(
                "a multishot receive completed without a buffer",
            )),
            (0, _) => RecvItem::Eof,
            // Our own cancel, or the ring ran empty: nothing was taken.
            (e, _) if e == -libc::ECANCELED || e == -libc::ENOBUFS => return None,
            (e, _) => RecvItem::Err(io::Error::from_raw_os_error(-e)),
        };
        let mut l = self.leftover.borrow_mut();
        l.items.push_back(item);
        l.waker.take()
    }
}

impl Drop for RecvLate {
    fn drop(&mut self) {
        if !self.started.get() {
            return;
        }
        let w = {
            let mut l = self.leftover.borrow_mut();
            l.in_flight = l.in_flight.saturating_sub(1);
            l.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// The loop's shared group, made on first use with the builder's shape
/// (see [`DriverConfig`](super::DriverConfig)).
pub(crate) fn default_group(driver: &Rc<Driver>) -> io::Result<Rc<BufGroup>> {
    if let Some(g) = &*driver.default_group.borrow() {
        return Ok(g.clone());
    }
    let (entries, size) = driver.buf_ring_shape;
    let g = BufGroup::new(driver, entries, size)?;
    *driver.default_group.borrow_mut() = Some(g.clone());
    Ok(g)
}
