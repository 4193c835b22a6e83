//! Receiving a stream socket's bytes into a provided-buffer group, chunk
//! after chunk: the op behind `TcpStream::recv_multishot`.
//!
//! One op, three interpreters, chosen by the group and the loop:
//! ```text
//!  kernel ring, recv_multishot ─▶ IORING_OP_RECV + RECV_MULTISHOT + BUFFER_SELECT
//!      CQE(n>0, F_BUFFER bid, F_MORE) ─▶ chunk … CQE without F_MORE ─▶ re-arm
//!  kernel ring, no multishot ──▶ IORING_OP_RECV + BUFFER_SELECT, one per chunk
//!  emulated ring ─────────────▶ wait readable (POLL_ADD / epoll), take a free
//!                               buffer, recv(2) into it; short read ─▶ wait again
//! ```
//! ## The ring runs empty
//! `ENOBUFS` ends the multishot (no `F_MORE`) and leaves the bytes in the
//! socket. The op then re-arms once it can claim a buffer back in the
//! ring, waiting in the group's queue until one comes back (see
//! `driver::bufring`): nothing is lost, and since a socket has at most one
//! receive armed at a time, order is kept. The emulated ring waits the
//! same way when its free list is empty; it takes a buffer only once the
//! socket is readable, so idle connections hold none.
//!
//! ## End, errors, drop
//! A result of 0 is the end of the stream. Another error is yielded once,
//! then the op ends. Dropped with a receive in flight, the op is cancelled
//! (`abandon_multi`): CQEs already queued and those that come before the
//! cancel lands go, in order, to the socket's [`Leftover`](crate::driver::bufring::Leftover),
//! which the socket's next read or receive stream takes first. A waiting
//! `POLL_ADD` or epoll wait holds no bytes and is simply dropped.

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{cqueue, opcode, squeue, types};

use super::signal::Readable;
use super::{Op, rw};
use crate::driver::bufring::{BufGroup, BufWaiter, RecvItem, RecvLate, RecvLeftover, RingEntry};
use crate::driver::uring::LateResults;
use crate::driver::{self, Backends, Driver};

/// The io_uring receive SQE for a kernel ring: multishot, or one shot.
fn recv_sqe(fd: RawFd, group: &BufGroup, multishot: bool) -> squeue::Entry {
    let bgid = group.bgid().unwrap_or(0);
    if multishot {
        opcode::RecvMulti::new(types::Fd(fd), bgid).build()
    } else {
        opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), group.size() as u32)
            .buf_group(bgid)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
    }
}

/// Receives from a stream socket into a buffer group (see the module docs).
pub(crate) struct RecvChunks {
    fd: RawFd,
    group: Rc<BufGroup>,
    /// The socket's leftover queue, if it had one when this receive was
    /// made (most sockets never do: it is made when a receive is
    /// abandoned with bytes possibly in flight, see [`RecvChunks::abandon`]).
    leftover: Option<RecvLeftover>,
    /// The loop it runs in (bound at the first poll).
    driver: Option<Rc<Driver>>,
    /// io_uring: the slot of the receive (kernel ring) in flight.
    recv_key: Option<usize>,
    /// Emulated on io_uring: the readiness wait in flight.
    readable: Option<Op<Readable>>,
    /// Emulated on epoll: our readiness waiter.
    token: Option<u64>,
    /// Our place in the group's queue of receives waiting for a buffer,
    /// made the first time the ring runs empty on us.
    waiter: Option<Rc<BufWaiter>>,
    /// The last receive ended with `ENOBUFS`.
    need_bufs: bool,
    /// The kernel refused multishot receive: one-shot receives instead.
    single: bool,
    got_any: bool,
    /// Emulated: the socket may have bytes (try `recv` before waiting).
    maybe_readable: bool,
    done: bool,
    /// Holds a claim on a ring buffer (see `BufGroup::try_reserve`).
    reserved: bool,
}

impl RecvChunks {
    pub(crate) fn new(
        fd: RawFd,
        group: Rc<BufGroup>,
        leftover: Option<RecvLeftover>,
    ) -> RecvChunks {
        RecvChunks {
            fd,
            group,
            leftover,
            driver: None,
            recv_key: None,
            readable: None,
            token: None,
            waiter: None,
            need_bufs: false,
            single: false,
            got_any: false,
            maybe_readable: true,
            done: false,
            reserved: false,
        }
    }

    /// The group it receives into.
    pub(crate) fn group(&self) -> &Rc<BufGroup> {
        &self.group
    }

    /// Waits for a buffer to come back; an emulated ring counts the wait
    /// (once) as finding the ring empty.
    fn wait_for_buffer(
        &mut self,
        driver: &Driver,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<RingEntry>>> {
        let w = self.waiter.get_or_insert_with(Rc::default);
        if self.group.wait(w, cx.waker()) && !self.group.is_kernel() {
            driver.bump(|s| s.buf_ring_empty += 1);
        }
        Poll::Pending
    }

    /// The next chunk; `None` at the end of the stream (and after an error).
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<RingEntry>>> {
        if self.done {
            return Poll::Ready(None);
        }
        // What a dropped receive on this socket left comes first; while one
        // may still add to it, wait.
        if let (None, None, Some(l)) = (self.recv_key, &self.readable, &self.leftover) {
            let mut l = l.borrow_mut();
            let item = if l.front_pending > 0 {
                None
            } else {
                l.items.pop_front()
            };
            if let Some(item) = item {
                return Poll::Ready(match item {
                    RecvItem::Data(e) => Some(Ok(e)),
                    RecvItem::Bytes(v) => {
                        // Bytes a dropped copy handed back live in a plain
                        // buffer, not a ring one: they are for `read`.
                        l.items.push_front(RecvItem::Bytes(v));
                        self.done = true;
                        Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "bytes handed back by a dropped net::copy_bidirectional wait \
                             on this socket: take them with read() or readv() first",
                        )))
                    }
                    RecvItem::Eof => {
                        // Sticky, as on a socket: later reads see it too.
                        l.items.push_front(RecvItem::Eof);
                        self.done = true;
                        None
                    }
                    RecvItem::Err(e) => {
                        self.done = true;
                        Some(Err(e))
                    }
                });
            }
            if l.in_flight > 0 {
                l.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let Some(driver) = driver::current() else {
            self.done = true;
            return Poll::Ready(Some(Err(io::Error::other(
                "a receive stream was polled outside a running uringio loop",
            ))));
        };
        match &self.driver {
            Some(d) if Rc::ptr_eq(d, &driver) => {}
            Some(_) => {
                self.done = true;
                return Poll::Ready(Some(Err(io::Error::other(
                    "a receive stream was polled in another loop than the one it started in",
                ))));
            }
            None => {
                if !self.group.usable_on(&driver) {
                    self.done = true;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "this BufRing is registered with another loop's io_uring",
                    ))));
                }
                self.driver = Some(driver.clone());
            }
        }
        let r = if self.group.is_kernel() {
            self.poll_kernel(&driver, cx)
        } else {
            self.poll_emulated(&driver, cx)
        };
        if let Poll::Ready(Some(Ok(_))) = &r {
            self.got_any = true;
        }
        r
    }

    fn poll_kernel(
        &mut self,
        driver: &Rc<Driver>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<RingEntry>>> {
        loop {
            let key = match self.recv_key {
                Some(k) => k,
                None => {
                    if self.need_bufs {
                        // The ring was empty when the kernel tried: re-arm
                        // once a buffer is back, claiming it, else queue up
                        // to be woken by the next one to come back.
                        self.take_notified();
                        if !self.group.try_reserve() {
                            return self.wait_for_buffer(driver, cx);
                        }
                        self.reserved = true;
                        self.need_bufs = false;
                    }
                    let multishot = driver.features.recv_multishot && !self.single;
                    let sqe = recv_sqe(self.fd, &self.group, multishot);
                    let k = match &mut *driver.inner.borrow_mut() {
                        Backends::Uring(u) => {
                            u.submit_multi(sqe, cx.waker(), Some(self.group.clone()))
                        }
                        Backends::Epoll(_) => {
                            Err(io::Error::other("a kernel buffer ring on epoll"))
                        }
                    };
                    match k {
                        Ok(k) => {
                            self.recv_key = Some(k);
                            k
                        }
                        Err(e) => {
                            self.done = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
            };
            let r = match &mut *driver.inner.borrow_mut() {
                Backends::Uring(u) => u.poll_multi(key, cx.waker()),
                Backends::Epoll(_) => Poll::Ready(None),
            };
            let (res, flags) = match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // Ended and drained: re-arm (after buffers came back if
                    // it ran out).
                    self.recv_key = None;
                    continue;
                }
                Poll::Ready(Some(c)) => c,
            };
            if self.reserved {
                self.reserved = false;
                self.group.unreserve();
            }
            let bid = cqueue::buffer_select(flags);
            if res > 0 {
                return Poll::Ready(Some(match bid {
                    Some(b) => self.group.entry_from_kernel(b, res as usize),
                    None => Err(io::Error::other("a receive completed without a buffer id")),
                }));
            }
            if let Some(b) = bid {
                // A buffer with nothing in it: straight back.
                drop(self.group.entry_from_kernel(b, 0));
            }
            match res {
                0 => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                e if e == -libc::ENOBUFS => {
                    driver.bump(|s| s.buf_ring_empty += 1);
                    self.need_bufs = true;
                }
                e if e == -libc::EINVAL && !self.got_any && !self.single => {
                    // Multishot receive refused: one-shot receives from the
                    // same ring serve the same chunks.
                    log::debug!("uringio: multishot receive refused (EINVAL); using one-shot");
                    self.single = true;
                }
                e => {
                    self.done = true;
                    return Poll::Ready(Some(Err(io::Error::from_raw_os_error(-e))));
                }
            }
        }
    }

    fn poll_emulated(
        &mut self,
        driver: &Rc<Driver>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<RingEntry>>> {
        let uring = driver.is_uring();
        if !uring && !self.maybe_readable && !driver::epoll_read_drained(driver, self.fd) {
            // Polled again (woken by an edge, or anything else) with no
            // short read since the last edge: worth a try.
            self.maybe_readable = true;
        }
        loop {
            if self.maybe_readable {
                let Some(mut e) = self.group.take_free() else {
                    return self.wait_for_buffer(driver, cx);
                };
                self.take_notified();
                let (p, len) = e.raw_buf();
                // SAFETY: the buffer is out of the ring, held by `e`, and
                // `len` bytes long.
                let r = unsafe { rw::raw_recv(self.fd, p, len) };
                if r > 0 {
                    let n = r as usize;
                    e.set_len(n);
                    if n < len {
                        self.maybe_readable = false;
                        if !uring {
                            driver::epoll_mark_read_drained(driver, self.fd);
                        }
                    }
                    return Poll::Ready(Some(Ok(e)));
                }
                // Read errno before the buffer goes back (that may run code).
                let err = (r < 0).then(io::Error::last_os_error);
                drop(e);
                match err {
                    None => {
                        self.done = true;
                        return Poll::Ready(None);
                    }
                    Some(e) if e.kind() == io::ErrorKind::WouldBlock => self.maybe_readable = false,
                    Some(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Some(e) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                continue;
            }
            if uring {
                let op = self
                    .readable
                    .get_or_insert_with(|| Op::new(Readable::new(self.fd)));
                match std::pin::Pin::new(op).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => {
                        self.readable = None;
                        if let Err(e) = r {
                            self.done = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                        self.maybe_readable = true;
                    }
                }
            } else {
                if let Err(e) =
                    driver::epoll_wait_ready(driver, self.fd, false, cx.waker(), &mut self.token)
                {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                return Poll::Pending;
            }
        }
    }
}

use std::future::Future;

impl RecvChunks {
    /// Takes the waiter's buffer notification, if it has one.
    fn take_notified(&self) {
        if let Some(w) = &self.waiter {
            w.take_notified();
        }
    }

    /// Ends the receive: a multishot receive in flight is cancelled, and
    /// what it had received (and what comes before the cancellation
    /// lands) goes to the socket's leftover queue, which `leftover` gives
    /// (made on demand: only abandoned receives need one). Called by the
    /// owner before the drop; a drop without it loses those bytes (never
    /// memory: the buffers still go back to the ring).
    pub(crate) fn abandon(&mut self, leftover: impl FnOnce() -> RecvLeftover) {
        if let Some(w) = self.waiter.take() {
            self.group.unwait(&w);
        }
        if self.reserved {
            self.reserved = false;
            self.group.unreserve();
        }
        let Some(d) = self.driver.take() else {
            return;
        };
        if let Some(k) = self.recv_key.take() {
            let leftover = self.leftover.take().unwrap_or_else(leftover);
            let late = RecvLate::new(leftover, self.group.clone());
            if let Backends::Uring(u) = &mut *d.inner.borrow_mut() {
                u.abandon_multi(k, None, LateResults::Recv(late));
            }
        }
        if let Some(t) = self.token.take() {
            driver::epoll_unwait(&d, self.fd, false, t);
        }
    }
}

impl Drop for RecvChunks {
    fn drop(&mut self) {
        self.abandon(RecvLeftover::default);
    }
}
