//! The io_uring backend: SQE in, CQE out.
//!
//! Every in-flight op has a [`Slot`] in a slab; its key is the SQE's
//! `user_data`. Two keys are reserved: [`WAKE_KEY`] for the read on the
//! loop's eventfd (cross-thread wake-ups) and [`CANCEL_KEY`] for
//! `ASYNC_CANCEL` requests, whose own completions are ignored.
//!
//! ## Slot states
//! ```text
//! Waiting(waker) ──CQE──▶ Done(res, flags) ──op polls──▶ removed
//!      └─op dropped─▶ Abandoned(data) + ASYNC_CANCEL ──CQE──▶ removed, data freed
//! Multi{queue} ──CQE with F_MORE──▶ Multi{queue+1} ──CQE without──▶ ended
//!      └─stream dropped─▶ MultiAbandoned + ASYNC_CANCEL ──final CQE──▶ removed
//! ```
//! ## Cancellations
//! A slot is cancelled at most once (`ASYNC_CANCEL` walks the kernel's
//! request hash: sending it twice for a big backlog is quadratic), and
//! `cancelling` counts the slots whose cancel went out and whose final CQE
//! has not come. With `DEFER_TASKRUN` the kernel posts only ~20 deferred
//! completions per `io_uring_enter` unless asked for more
//! (`IO_LOCAL_TW_DEFAULT_MAX`, 6.13): a loop dropping many ops per
//! iteration would build a backlog of cancelled-but-unreaped requests, so
//! `park` asks for up to `cancelling` completions (zero timeout) while the
//! backlog is larger than that. Dropping the ring does the same, so it
//! takes milliseconds at any backlog.
//! ## Unsubmitted SQEs
//! An op's SQE is held in `pending` until the next `park`, which hands all
//! of them to the kernel in the same `io_uring_enter` that waits. An op
//! dropped (or cancelled) before then is taken out of `pending` and never
//! reaches the kernel. This matters because an SQE names its fd by number:
//! had it been left in the ring, the fd could be closed and the number
//! reused (a new connection, a new file) before the SQE was submitted, and
//! the op would then act on the wrong descriptor. Once submitted, the
//! request holds its own reference to the file, so closing the fd is safe.
//! One `io_uring_enter` per loop iteration both submits and waits, with the
//! timer deadline as an `EXT_ARG` timeout and `GETEVENTS` always set (needed
//! with `DEFER_TASKRUN`, where completions are only posted on such an enter).

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

mod probe;

pub(crate) use probe::SetupError;

use super::Stats;
use super::bufring::{BufGroup, RecvLate};
use super::op::LateHook;

pub(crate) const WAKE_KEY: u64 = u64::MAX;
pub(crate) const CANCEL_KEY: u64 = u64::MAX - 1;
/// The `user_data` of the CQE another loop posts into this ring with
/// `IORING_OP_MSG_RING` to wake it: nothing to do but return from the
/// wait (the loop then drains its remote queue).
pub(crate) const MSG_KEY: u64 = u64::MAX - 2;
/// Tag of the sender's own completion of a `MSG_RING` (`| index` into
/// `msg_inflight`). Slot keys never reach it; the reserved keys above
/// are checked first.
const MSG_SENT_TAG: u64 = 1 << 62;

/// Where another loop's `MSG_RING` wake-up goes: duplicates of the
/// target ring's fd (the SQE names it by number, so the number must stay
/// this ring until the sender's SQE completes, whatever happens to the
/// target loop) and its wake eventfd (the fallback when the message
/// fails).
pub(crate) struct MsgTarget {
    ring: std::os::fd::OwnedFd,
    wake: std::sync::Arc<std::os::fd::OwnedFd>,
}

impl MsgTarget {
    /// Writes the target's eventfd (its `READ` is always armed).
    fn wake_by_eventfd(&self) {
        // An eventfd write only fails if the counter would overflow, in
        // which case the target is awake anyway.
        let _ = nix::unistd::write(&*self.wake, &1u64.to_ne_bytes());
    }
}

const ENTER_GETEVENTS: u32 = 1 << 0;
const ENTER_SQ_WAKEUP: u32 = 1 << 1;
const ENTER_EXT_ARG: u32 = 1 << 3;

enum Slot {
    /// In flight; `cancelled`: an `ASYNC_CANCEL` for it went out.
    Waiting {
        waker: Option<Waker>,
        cancelled: bool,
    },
    Done(i32, u32),
    /// Dropped in flight (always cancelled); the hook is given the data
    /// and the result (to close a descriptor nobody will take, or to note
    /// what the kernel did after the drop).
    Abandoned(Box<dyn Any>, LateHook),
    Multi {
        queue: VecDeque<(i32, u32)>,
        waker: Option<Waker>,
        ended: bool,
        cancelled: bool,
        /// The buffer group its CQEs' buffers come from, told of each
        /// buffer the kernel took as the CQE is reaped.
        group: Option<std::rc::Rc<BufGroup>>,
    },
    /// Dropped (always cancelled); what to do with results still coming.
    MultiAbandoned(Option<Box<dyn Any>>, LateResults),
}

/// What a dropped multishot op does with results that come after the drop.
pub(crate) enum LateResults {
    /// They are new descriptors (accepted connections): keep them here
    /// for the next accept on the same listener.
    Keep(FdBacklog),
    /// They are received bytes in provided buffers: keep them, in order,
    /// for the socket's next read (see [`RecvLate`]).
    Recv(RecvLate),
    /// Nothing to keep: the op's data (a zero-copy send's buffer) only
    /// has to outlive its last CQE.
    Ignore,
}

/// Accepted connections that a dropped multishot accept took from the
/// kernel, kept for the listener's next accept.
pub(crate) type FdBacklog = std::rc::Rc<std::cell::RefCell<VecDeque<std::os::fd::OwnedFd>>>;

impl LateResults {
    /// One late CQE; a waker to run with the driver released may go to
    /// `woken`.
    fn take(&self, res: i32, flags: u32, woken: &mut Vec<Waker>) {
        match self {
            LateResults::Keep(b) => {
                if res < 0 {
                    return;
                }
                use std::os::fd::FromRawFd;
                // SAFETY: the kernel handed us this new descriptor and
                // nobody else has it.
                let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(res) };
                b.borrow_mut().push_back(fd);
            }
            LateResults::Recv(r) => woken.extend(r.take(res, flags)),
            LateResults::Ignore => {}
        }
    }
}

pub(crate) struct Uring {
    ring: IoUring,
    slots: Slab<Slot>,
    wake_fd: RawFd,
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
    sqpoll: bool,
    closing: bool,
    garbage: Vec<Box<dyn Any>>,
    /// SQEs not yet handed to the kernel, with their slot keys and, for
    /// the head of a linked chain, the chain's length (1 otherwise; the
    /// members follow it) (`None`: taken back because the op went away
    /// first).
    pending: Vec<Option<(usize, squeue::Entry, u32)>>,
    /// Slot key → index in `pending`, or `NOT_PENDING`.
    pending_idx: Vec<usize>,
    /// The registered-file table (see [`Uring::register_file`]).
    files: FixedFiles,
    /// Slots cancelled whose final CQE has not come (see the module docs).
    cancelling: usize,
    /// Wakers of completed ops, run by the caller once the driver is
    /// released.
    woken: Vec<Waker>,
    /// Buffer-group ids given back, reused first; ids `next_bgid..` were
    /// never used.
    free_bgids: Vec<u16>,
    next_bgid: u32,
    /// `MSG_RING` wake-ups sent whose own CQE has not come: their targets
    /// (kept alive until then; see [`MsgTarget`]).
    msg_inflight: Slab<std::sync::Arc<MsgTarget>>,
}

/// Slots of the ring's sparse registered-file table.
pub(crate) struct FixedFiles {
    /// Table size; 0 when the kernel gave us none.
    pub(crate) size: u32,
    /// Slots given back, reused first.
    free: Vec<u32>,
    /// Slots `next..size` were never used.
    next: u32,
}

impl FixedFiles {
    pub(crate) fn new(size: u32) -> FixedFiles {
        FixedFiles {
            size,
            free: Vec::new(),
            next: 0,
        }
    }
}

const NOT_PENDING: usize = usize::MAX;

/// The kernel posts about this many deferred completions per enter on its
/// own; a larger cancellation backlog is drained explicitly.
const DRAIN_BACKLOG_ABOVE: usize = 16;

impl Uring {
    /// Queues an SQE; when the SQ is full, submits what is there first.
    fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every SQE we build points only into op data kept alive
            // (boxed, never moved) until its CQE, or into `self.wake_buf`.
            let pushed = unsafe { self.ring.submission().push(&sqe) };
            if pushed.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The CQ is backed up: reap to make room, then retry.
                    self.reap();
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Holds `sqe` for op `key` until the next `park`; `chain`: see
    /// [`Uring::submit_linked`].
    fn enqueue(&mut self, key: usize, sqe: squeue::Entry, chain: u32) {
        if self.pending_idx.len() <= key {
            self.pending_idx.resize(key + 1, NOT_PENDING);
        }
        self.pending_idx[key] = self.pending.len();
        self.pending
            .push(Some((key, sqe.user_data(key as u64), chain)));
    }

    /// Takes op `key`'s SQE back if the kernel has not seen it yet.
    fn unqueue(&mut self, key: usize) -> bool {
        match self.pending_idx.get(key).copied() {
            Some(i) if i != NOT_PENDING => {
                self.pending[i] = None;
                self.pending_idx[key] = NOT_PENDING;
                true
            }
            _ => false,
        }
    }

    /// Hands every held SQE to the ring. An SQE the ring refuses fails its
    /// op with the error.
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        let mut it = pending.drain(..);
        while let Some(entry) = it.next() {
            let Some((key, sqe, chain)) = entry else {
                continue;
            };
            self.pending_idx[key] = NOT_PENDING;
            if chain == 0 {
                // A chain member whose head was taken back: the chain is
                // gone (its future was dropped or cancelled).
                self.fail(key, -libc::ECANCELED);
                continue;
            }
            if chain > 1 {
                // A linked chain: its members follow, and go in together.
                let mut keys = vec![key];
                let mut sqes = vec![sqe];
                for _ in 1..chain {
                    if let Some(Some((k, s, _))) = it.next() {
                        self.pending_idx[k] = NOT_PENDING;
                        keys.push(k);
                        sqes.push(s);
                    }
                }
                if keys.len() == chain as usize {
                    self.flush_chain(&keys, &sqes);
                } else {
                    for k in keys {
                        self.fail(k, -libc::ECANCELED);
                    }
                }
                continue;
            }
            if let Err(e) = self.push(sqe) {
                self.fail(key, -e.raw_os_error().unwrap_or(libc::EIO));
            }
        }
        drop(it);
        // Keep the allocation for the next iteration.
        if self.pending.is_empty() {
            self.pending = pending;
        }
    }

    /// Hands a linked chain to the ring in one piece: the SQ gets room for
    /// all of it first (submitting what is there), so no `io_uring_enter`
    /// can split it — the kernel ends a chain at the end of a submission,
    /// and the rest would run unlinked.
    fn flush_chain(&mut self, keys: &[usize], sqes: &[squeue::Entry]) {
        let fail = |u: &mut Uring, res: i32| {
            for &k in keys {
                u.fail(k, res);
            }
        };
        let cap = self.ring.submission().capacity();
        if sqes.len() > cap {
            fail(self, -libc::EINVAL);
            return;
        }
        loop {
            let mut sq = self.ring.submission();
            if cap - sq.len() >= sqes.len() {
                // SAFETY: as in `push`: the SQEs point only into op data
                // kept alive until their CQEs. `push_multiple` publishes
                // them together (one tail update), so even an SQPOLL
                // thread never sees half a chain.
                let r = unsafe { sq.push_multiple(sqes) };
                drop(sq);
                if r.is_err() {
                    fail(self, -libc::EBUSY);
                }
                return;
            }
            drop(sq);
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    fail(self, -e.raw_os_error().unwrap_or(libc::EIO));
                    return;
                }
            }
        }
    }

    /// Queues a chain of SQEs that the kernel runs one after another
    /// (`IOSQE_IO_LINK` on all but the last); returns their slot keys.
    /// They stay together in `pending` and reach the ring in one piece
    /// (see [`Uring::flush_chain`]). Taking any of them back before then
    /// fails the others with `ECANCELED`.
    pub(crate) fn submit_linked<const N: usize>(
        &mut self,
        sqes: [squeue::Entry; N],
        waker: &Waker,
    ) -> [usize; N] {
        let mut keys = [0usize; N];
        for (i, sqe) in sqes.into_iter().enumerate() {
            let key = self.slots.insert(Slot::Waiting {
                waker: Some(waker.clone()),
                cancelled: false,
            });
            keys[i] = key;
            let chain = if i == 0 { N as u32 } else { 0 };
            let sqe = if i + 1 < N {
                sqe.flags(squeue::Flags::IO_LINK)
            } else {
                sqe
            };
            self.enqueue(key, sqe, chain);
        }
        keys
    }

    /// Hands every queued SQE to the kernel now, in one `io_uring_enter`
    /// that does not wait (`driver::submit`). Returns how many it took.
    ///
    /// The enter carries `GETEVENTS` (with a minimum of 0, so it still
    /// does not wait): with `DEFER_TASKRUN` that also posts the
    /// completions that arrived meanwhile, so the loop's next wait finds
    /// them at once instead of sleeping first (fio's submissions do the
    /// same). With SQPOLL the crate's `submit` (which wakes the poller
    /// when it sleeps) is used as before.
    pub(crate) fn submit_now(&mut self, stats: &mut Stats) -> io::Result<usize> {
        self.flush();
        if self.ring.submission().is_empty() {
            return Ok(0);
        }
        loop {
            let r = if self.sqpoll {
                self.ring.submit()
            } else {
                let n = self.ring.submission().len() as u32;
                // SAFETY: a plain enter without an argument struct.
                unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(n, 0, ENTER_GETEVENTS, None)
                }
            };
            match r {
                Ok(n) => {
                    stats.enter_calls += 1;
                    stats.sqes_submitted += n as u64;
                    return Ok(n);
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    stats.cq_overflows += 1;
                    self.reap_into(stats);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Completes op `key` with `res` without the kernel.
    fn fail(&mut self, key: usize, res: i32) {
        match self.slots.get_mut(key) {
            Some(Slot::Waiting { waker, .. }) => {
                let w = waker.take();
                self.slots[key] = Slot::Done(res, 0);
                self.woken.extend(w);
            }
            Some(Slot::Multi {
                queue,
                waker,
                ended,
                ..
            }) => {
                queue.push_back((res, 0));
                *ended = true;
                self.woken.extend(waker.take());
            }
            _ => {}
        }
    }

    /// Wakers of ops completed since the last call, to run with the
    /// driver released.
    pub(crate) fn take_woken(&mut self, into: &mut Vec<Waker>) {
        into.append(&mut self.woken);
    }

    /// Puts `fd` in the registered-file table; its ops can then name the
    /// slot (`IOSQE_FIXED_FILE`) and the kernel skips looking the fd up
    /// and taking a reference on every op. `None` when the table is full
    /// or absent. The table holds a reference to the file: the slot must
    /// be given back ([`Uring::unregister_file`]) before the fd is closed,
    /// or the socket would stay open.
    pub(crate) fn register_file(&mut self, fd: RawFd) -> Option<u32> {
        let f = &mut self.files;
        let slot = match f.free.pop() {
            Some(s) => s,
            None if f.next < f.size => {
                f.next += 1;
                f.next - 1
            }
            None => return None,
        };
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(e) => {
                log::debug!("uringio: registering fd {fd} in slot {slot}: {e}");
                self.files.free.push(slot);
                None
            }
        }
    }

    /// Empties a registered-file slot (the table drops its reference to
    /// the file at once) and makes it free for reuse. Ops already
    /// submitted hold their own reference; unsubmitted ones of a dropped
    /// socket cannot exist (dropped ops leave `pending`).
    pub(crate) fn unregister_file(&mut self, slot: u32) {
        // An op whose future was leaked (`mem::forget`) rather than dropped
        // may still hold an SQE naming the slot: hand such SQEs to the
        // kernel first (it takes its own reference at submission), so none
        // can reach the slot once it holds another file.
        if self.pending.iter().any(Option::is_some) {
            self.flush();
        }
        if !self.ring.submission().is_empty() {
            if let Err(e) = self.ring.submit() {
                log::debug!("uringio: submitting before emptying slot {slot}: {e}");
            }
        }
        if let Err(e) = self.ring.submitter().register_files_update(slot, &[-1]) {
            // Keep the slot out of circulation: it may still hold a file.
            log::warn!("uringio: emptying registered-file slot {slot}: {e}");
            return;
        }
        self.files.free.push(slot);
    }

    /// The ring's register calls (the registered-buffer table).
    pub(crate) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.ring.submitter()
    }

    /// The ring's descriptor (for register calls the crate does not
    /// wrap faithfully; see fixedbuf.rs).
    pub(crate) fn ring_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }

    /// Queues an op's SQE (submitted at the next `park`); returns its slot
    /// key. A submission failure is reported through the slot.
    pub(crate) fn submit(&mut self, sqe: squeue::Entry, waker: &Waker) -> usize {
        let key = self.slots.insert(Slot::Waiting {
            waker: Some(waker.clone()),
            cancelled: false,
        });
        self.enqueue(key, sqe, 1);
        key
    }

    /// Queues a multishot SQE; its CQEs queue up in the slot. `group`:
    /// the provided-buffer group it selects from, if any.
    pub(crate) fn submit_multi(
        &mut self,
        sqe: squeue::Entry,
        waker: &Waker,
        group: Option<std::rc::Rc<BufGroup>>,
    ) -> io::Result<usize> {
        let key = self.slots.insert(Slot::Multi {
            queue: VecDeque::new(),
            waker: Some(waker.clone()),
            ended: false,
            cancelled: false,
            group,
        });
        self.enqueue(key, sqe, 1);
        Ok(key)
    }

    pub(crate) fn poll_slot(&mut self, key: usize, waker: &Waker) -> Poll<(i32, u32)> {
        match self.slots.get_mut(key) {
            Some(Slot::Done(res, flags)) => {
                let r = (*res, *flags);
                self.slots.remove(key);
                Poll::Ready(r)
            }
            Some(Slot::Waiting { waker: w, .. }) => {
                match w {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
            _ => Poll::Ready((-libc::EIO, 0)),
        }
    }

    /// Next CQE of a multishot op; `None` once it ended and was drained.
    pub(crate) fn poll_multi(&mut self, key: usize, waker: &Waker) -> Poll<Option<(i32, u32)>> {
        match self.slots.get_mut(key) {
            Some(Slot::Multi {
                queue,
                waker: w,
                ended,
                ..
            }) => {
                if let Some(c) = queue.pop_front() {
                    return Poll::Ready(Some(c));
                }
                if *ended {
                    self.slots.remove(key);
                    return Poll::Ready(None);
                }
                match w {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
            _ => Poll::Ready(None),
        }
    }

    /// The multishot stream was dropped: cancel; queued results and
    /// those still to come go to `late`; `keep` is held until the final
    /// CQE.
    pub(crate) fn abandon_multi(
        &mut self,
        key: usize,
        keep: Option<Box<dyn Any>>,
        late: LateResults,
    ) {
        if let Some(Slot::Multi { queue, .. }) = self.slots.get_mut(key) {
            for (res, flags) in queue.drain(..) {
                late.take(res, flags, &mut self.woken);
            }
        }
        let unsubmitted = self.unqueue(key);
        match self.slots.get(key) {
            Some(Slot::Multi { ended: true, .. }) => {
                self.slots.remove(key);
                self.garbage.extend(keep);
                // Dropped with the driver released (it may wake a reader).
                self.garbage.push(Box::new(late));
            }
            Some(Slot::Multi { .. }) if unsubmitted => {
                // The kernel never saw it.
                self.slots.remove(key);
                self.garbage.extend(keep);
                self.garbage.push(Box::new(late));
            }
            Some(Slot::Multi { cancelled, .. }) => {
                let cancelled = *cancelled;
                if let LateResults::Recv(r) = &late {
                    r.start();
                }
                self.slots[key] = Slot::MultiAbandoned(keep, late);
                if !cancelled {
                    self.send_cancel(key);
                }
            }
            _ => {
                self.garbage.extend(keep);
                self.garbage.push(Box::new(late));
            }
        }
    }

    /// Registers a provided-buffer ring of `entries` `io_uring_buf`s at
    /// `addr` under a fresh group id, which it returns.
    pub(crate) fn register_buf_ring(&mut self, addr: u64, entries: u16) -> io::Result<u16> {
        let bgid = match self.free_bgids.pop() {
            Some(b) => b,
            None if self.next_bgid <= u16::MAX as u32 => {
                self.next_bgid += 1;
                (self.next_bgid - 1) as u16
            }
            None => {
                return Err(io::Error::other(
                    "all 65536 buffer-group ids of this loop are in use",
                ));
            }
        };
        // SAFETY: the caller (BufGroup) keeps the ring memory, `entries`
        // page-aligned io_uring_buf structs, alive until
        // `unregister_buf_ring` succeeds or the ring is gone.
        let r = unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, bgid, 0)
        };
        match r {
            Ok(()) => Ok(bgid),
            Err(e) => {
                self.free_bgids.push(bgid);
                Err(e)
            }
        }
    }

    /// Unregisters buffer group `bgid`; `false` if the kernel refused (its
    /// memory must then be leaked).
    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) -> bool {
        match self.ring.submitter().unregister_buf_ring(bgid) {
            Ok(()) => {
                self.free_bgids.push(bgid);
                true
            }
            Err(e) => {
                log::warn!("uringio: unregistering buffer ring {bgid}: {e}");
                false
            }
        }
    }

    /// The op's future was dropped while in flight: keep its data until the
    /// CQE, and ask the kernel to cancel it (once). An op the kernel has
    /// not seen yet is simply forgotten. `discard` gets a successful result
    /// nobody will take (an accepted or opened fd, to close).
    pub(crate) fn abandon(&mut self, key: usize, mut data: Box<dyn Any>, discard: LateHook) {
        let unsubmitted = self.unqueue(key);
        match self.slots.get(key) {
            Some(Slot::Done(res, _)) => {
                let res = *res;
                self.slots.remove(key);
                discard(&mut *data, res);
                self.garbage.push(data);
            }
            Some(Slot::Waiting { .. }) if unsubmitted => {
                self.slots.remove(key);
                self.garbage.push(data);
            }
            Some(Slot::Waiting { cancelled, .. }) => {
                let cancelled = *cancelled;
                self.slots[key] = Slot::Abandoned(data, discard);
                if !cancelled {
                    self.send_cancel(key);
                }
            }
            _ => self.garbage.push(data),
        }
    }

    /// Cancels op `key`: one not submitted yet completes at once with
    /// `ECANCELED`; otherwise an `ASYNC_CANCEL` is queued, unless one
    /// already was.
    pub(crate) fn cancel(&mut self, key: usize) {
        if self.unqueue(key) {
            self.fail(key, -libc::ECANCELED);
            return;
        }
        match self.slots.get_mut(key) {
            Some(Slot::Waiting { cancelled, .. }) | Some(Slot::Multi { cancelled, .. }) => {
                if *cancelled {
                    return;
                }
                *cancelled = true;
            }
            _ => return,
        }
        self.send_cancel(key);
    }

    /// Queues the `ASYNC_CANCEL` for a submitted op (the caller records
    /// that it did).
    fn send_cancel(&mut self, key: usize) {
        self.cancelling += 1;
        let sqe = opcode::AsyncCancel::new(key as u64)
            .build()
            .user_data(CANCEL_KEY);
        let _ = self.push(sqe);
    }

    /// The op is moving to another loop. `Ok(None)`: it never reached the
    /// kernel (start it afresh elsewhere); `Ok(Some(cqe))`: it completed;
    /// `Err(())`: still in flight — it has been cancelled, park until its
    /// CQE and ask again.
    pub(crate) fn detach(&mut self, key: usize) -> Result<Option<(i32, u32)>, ()> {
        if self.unqueue(key) {
            self.slots.remove(key);
            return Ok(None);
        }
        match self.slots.get(key) {
            Some(Slot::Done(res, flags)) => {
                let r = (*res, *flags);
                self.slots.remove(key);
                Ok(Some(r))
            }
            Some(Slot::Waiting { .. }) => {
                self.cancel(key);
                Err(())
            }
            _ => Ok(Some((-libc::EIO, 0))),
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        if !self.wake_armed {
            let sqe = opcode::Read::new(types::Fd(self.wake_fd), self.wake_buf.as_mut_ptr(), 8)
                .build()
                .user_data(WAKE_KEY);
            self.push(sqe)?;
            self.wake_armed = true;
        }
        Ok(())
    }

    /// Unsubmitted SQEs or unreaped CQEs.
    pub(crate) fn has_queued_work(&mut self) -> bool {
        !self.pending.is_empty()
            || !self.ring.submission().is_empty()
            || !self.ring.completion().is_empty()
    }

    /// Submits, waits up to `timeout`, dispatches completions. Returns the
    /// abandoned ops' data whose completions arrived, to drop.
    pub(crate) fn park(
        &mut self,
        timeout: Option<Duration>,
        stats: &mut Stats,
        wake: &mut Vec<Waker>,
        garbage: &mut Vec<Box<dyn Any>>,
    ) -> io::Result<()> {
        let r = self.park_inner(timeout, stats);
        self.take_woken(wake);
        garbage.append(&mut self.garbage);
        r
    }

    fn park_inner(&mut self, timeout: Option<Duration>, stats: &mut Stats) -> io::Result<()> {
        if !self.closing {
            self.arm_wake()?;
        }
        self.flush();
        // Data of ops dropped before the kernel saw them (or after their
        // CQE) is already garbage: it is handed out (and dropped) after
        // this wait, and dropping it can wake a task (a FixedBuf going back
        // to its pool): do not sleep on it.
        let mut timeout = if self.garbage.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        loop {
            let to_submit = self.ring.submission().len() as u32;
            let cq_ready = !self.ring.completion().is_empty();
            let wait = !cq_ready && timeout != Some(Duration::ZERO);
            let ts = timeout.map(Timespec::from);
            let args = match (&ts, wait) {
                (Some(ts), true) => SubmitArgs::new().timespec(ts),
                _ => SubmitArgs::new(),
            };
            let mut flags = ENTER_GETEVENTS | ENTER_EXT_ARG;
            if self.sqpoll && self.ring.submission().need_wakeup() {
                flags |= ENTER_SQ_WAKEUP;
            }
            // SAFETY: `args` is a valid io_uring_getevents_arg (SubmitArgs is
            // repr(transparent) over it) living across the call, and EXT_ARG
            // is set accordingly.
            let r = unsafe {
                self.ring
                    .submitter()
                    .enter(to_submit, u32::from(wait), flags, Some(&args))
            };
            stats.enter_calls += 1;
            match r {
                Ok(n) => stats.sqes_submitted += n as u64,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME) | Some(libc::EINTR) => {}
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                        // Completions are backed up (overflow): reap, then
                        // submit again without waiting.
                        stats.cq_overflows += 1;
                        self.reap_into(stats);
                        timeout = Some(Duration::ZERO);
                        continue;
                    }
                    _ => return Err(e),
                },
            }
            break;
        }
        self.reap_into(stats);
        if self.ring.submission().cq_overflow() {
            stats.cq_overflows += 1;
            // Flush the kernel's overflow list into the CQ and reap again.
            // SAFETY: plain GETEVENTS enter without arguments.
            let _ = unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 0, ENTER_GETEVENTS, None)
            };
            self.reap_into(stats);
        }
        // Cancelled requests beyond what one enter posts: ask for them now
        // (see the module docs), a few rounds at most per iteration.
        for _ in 0..4 {
            if self.cancelling <= DRAIN_BACKLOG_ABOVE {
                break;
            }
            let before = self.cancelling;
            self.drain(Duration::ZERO, stats);
            if self.cancelling == before {
                break;
            }
        }
        Ok(())
    }

    /// One enter that asks the kernel to post up to `cancelling` deferred
    /// completions, waiting at most `wait` for them; then reaps.
    fn drain(&mut self, wait: Duration, stats: &mut Stats) {
        let cap = self.ring.completion().capacity();
        let want = (self.cancelling + usize::from(self.wake_armed)).clamp(1, cap) as u32;
        let ts = Timespec::from(wait);
        let args = SubmitArgs::new().timespec(&ts);
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: `args` is a valid io_uring_getevents_arg living across
        // the call, and EXT_ARG is set accordingly.
        let r = unsafe {
            self.ring.submitter().enter(
                to_submit,
                want,
                ENTER_GETEVENTS | ENTER_EXT_ARG,
                Some(&args),
            )
        };
        stats.enter_calls += 1;
        if let Ok(n) = r {
            stats.sqes_submitted += n as u64;
        }
        self.reap_into(stats);
    }

    fn reap(&mut self) {
        let mut s = Stats::default();
        self.reap_into(&mut s);
    }

    fn reap_into(&mut self, stats: &mut Stats) {
        let mut n = 0u64;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            n += 1;
            let ud = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
            if ud == WAKE_KEY {
                self.wake_armed = false;
                continue;
            }
            if ud == CANCEL_KEY || ud == MSG_KEY {
                continue;
            }
            if ud & MSG_SENT_TAG != 0 {
                // Our MSG_RING to another loop: it landed (`res` 0) or it
                // failed (the target's ring is gone, or its CQ is full):
                // then wake it the other way.
                let t = self.msg_inflight.try_remove((ud & !MSG_SENT_TAG) as usize);
                if let (Some(t), true) = (t, res < 0) {
                    log::debug!("uringio: MSG_RING wake-up failed ({res}); using the eventfd");
                    t.wake_by_eventfd();
                }
                continue;
            }
            let key = ud as usize;
            let more = cqueue::more(flags);
            let Some(slot) = self.slots.get_mut(key) else {
                continue;
            };
            match slot {
                Slot::Waiting { waker, cancelled } => {
                    if *cancelled {
                        self.cancelling -= 1;
                    }
                    self.woken.extend(waker.take());
                    *slot = Slot::Done(res, flags);
                }
                Slot::Abandoned(..) => {
                    self.cancelling -= 1;
                    if let Slot::Abandoned(mut d, discard) = self.slots.remove(key) {
                        discard(&mut *d, res);
                        self.garbage.push(d);
                    }
                }
                Slot::Multi {
                    queue,
                    waker,
                    ended,
                    cancelled,
                    group,
                } => {
                    if let (Some(g), Some(_)) = (group, cqueue::buffer_select(flags)) {
                        g.kernel_took();
                    }
                    queue.push_back((res, flags));
                    if !more {
                        *ended = true;
                        if *cancelled {
                            self.cancelling -= 1;
                        }
                    }
                    self.woken.extend(waker.take());
                }
                Slot::MultiAbandoned(_, late) => {
                    if let (LateResults::Recv(r), Some(_)) = (&*late, cqueue::buffer_select(flags))
                    {
                        r.group().kernel_took();
                    }
                    late.take(res, flags, &mut self.woken);
                    if !more {
                        self.cancelling -= 1;
                        if let Slot::MultiAbandoned(d, late) = self.slots.remove(key) {
                            self.garbage.extend(d);
                            self.garbage.push(Box::new(late));
                        }
                    }
                }
                Slot::Done(..) => {}
            }
        }
        drop(cq);
        stats.cqes_reaped += n;
    }

    /// See [`Stats::cancels_in_flight`].
    pub(crate) fn cancelling(&self) -> usize {
        self.cancelling
    }

    fn in_flight(&self) -> usize {
        self.cancelling + usize::from(self.wake_armed) + self.msg_inflight.len()
    }

    /// A [`MsgTarget`] for this ring, for other loops to wake it with
    /// `MSG_RING`; `wake` is the loop's wake eventfd (the fallback).
    pub(crate) fn msg_target(
        &self,
        wake: &std::sync::Arc<std::os::fd::OwnedFd>,
    ) -> io::Result<MsgTarget> {
        use std::os::fd::AsRawFd;
        let fd = self.ring.as_raw_fd();
        // SAFETY: the ring's fd is open for as long as `self.ring` lives,
        // and we only borrow it to duplicate it.
        let ring = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        Ok(MsgTarget {
            ring,
            wake: wake.clone(),
        })
    }

    /// Queues a `MSG_RING` that posts a [`MSG_KEY`] CQE into `t`'s ring.
    /// It goes to the kernel with this ring's next `io_uring_enter` (the
    /// loop's next park, or [`Uring::flush_sq`] when the loop stops
    /// running first). `false` if it could not be queued.
    pub(crate) fn send_msg(&mut self, t: &std::sync::Arc<MsgTarget>) -> bool {
        use std::os::fd::AsRawFd;
        if self.closing {
            return false;
        }
        let idx = self.msg_inflight.insert(t.clone());
        let sqe = opcode::MsgRingData::new(types::Fd(t.ring.as_raw_fd()), 0, MSG_KEY, None)
            .build()
            .user_data(MSG_SENT_TAG | idx as u64);
        if self.push(sqe).is_err() {
            self.msg_inflight.remove(idx);
            return false;
        }
        true
    }

    /// Submits what sits in the SQ (only `MSG_RING`s between parks: ops'
    /// SQEs wait in `pending`), without waiting.
    pub(crate) fn flush_sq(&mut self) {
        if !self.ring.submission().is_empty() {
            if let Err(e) = self.ring.submit() {
                log::warn!("uringio: submitting MSG_RING wake-ups: {e}");
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // SQEs the kernel never saw: nothing to wait for.
        for (key, _, _) in std::mem::take(&mut self.pending).into_iter().flatten() {
            self.pending_idx[key] = NOT_PENDING;
            self.slots.try_remove(key);
        }
        // Buffers of abandoned ops (and the eventfd read's buffer) may still
        // be written by the kernel: cancel what was not cancelled yet (no
        // op is alive now: each holds the driver), then wait, bounded, for
        // the completions before freeing anything.
        let uncancelled: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    Slot::Waiting {
                        cancelled: false,
                        ..
                    } | Slot::Multi {
                        cancelled: false,
                        ended: false,
                        ..
                    }
                )
            })
            .map(|(k, _)| k)
            .collect();
        for k in uncancelled {
            self.cancel(k);
        }
        if self.wake_armed {
            let sqe = opcode::AsyncCancel::new(WAKE_KEY)
                .build()
                .user_data(CANCEL_KEY);
            let _ = self.push(sqe);
        }
        self.closing = true;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut stats = Stats::default();
        while self.in_flight() > 0 && Instant::now() < deadline {
            self.drain(Duration::from_millis(10), &mut stats);
            self.garbage.clear();
            self.woken.clear();
        }
        if self.in_flight() > 0 {
            // Still owned by the kernel: leak rather than free.
            log::warn!(
                "uringio: {} io_uring ops still in flight at shutdown; leaking their buffers",
                self.in_flight()
            );
            for s in self.slots.drain() {
                std::mem::forget(s);
            }
            let buf = std::mem::replace(&mut self.wake_buf, Box::new([0; 8]));
            std::mem::forget(buf);
            // Their target fds are only numbers the kernel may still
            // read: keep them open.
            for t in self.msg_inflight.drain() {
                std::mem::forget(t);
            }
        }
    }
}
