//! The stream transport: one per connection (TCP, Unix, pipes), a reader
//! and a writer task around a shared core.
//!
//! ```text
//!   Transport (handles) ──▶ Core ◀── reader task: read → data_received / eof_received
//!                            │  └─── writer task: buffered bytes → one send/writev
//!                            └── protocol (Rc<RefCell<dyn Protocol>>)
//! ```
//! ## States
//! ```text
//! open ──close()──▶ closing (no more reads; writer flushes) ──flushed──▶ lost
//!   │                                                                  ▲
//!   ├──abort() / fatal error / callback panic───────────────────────────┘
//!   └──EOF, eof_received() false ──▶ close()
//! ```
//! `lost` means `connection_lost` was scheduled (exactly once, with
//! `call_soon`), both tasks are ending, the core let go of the socket (so
//! it closes when the tasks drop theirs) and of the protocol (which holds
//! the transport: the cycle is broken there).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::Protocol;
use crate::BufResult;
use crate::net::TcpStream;
use crate::runtime::{ExceptionContext, get_running_loop};
use crate::task::Task;

/// How much one receive asks for.
const READ_SIZE: usize = 64 * 1024;
/// asyncio's default write-buffer limits.
const DEFAULT_HIGH: usize = 64 * 1024;

/// A transport's local or peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SockAddr {
    /// An IP socket's address.
    Inet(SocketAddr),
    /// A Unix socket's address (a path, an abstract name, or unnamed).
    Unix(crate::net::UnixSocketAddr),
}

impl SockAddr {
    /// The IP address, if it is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            SockAddr::Inet(a) => Some(*a),
            SockAddr::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SockAddr::Inet(a) => write!(f, "{a}"),
            SockAddr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

/// What a transport needs of the thing it runs over.
pub(crate) trait Conn: 'static {
    /// Receives into `buf`'s spare capacity.
    fn recv(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
    /// Sends all of `buf`.
    fn send_all(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<(), Vec<u8>>>;
    /// Sends as much of `bufs` as it can in one call.
    fn send_vectored(
        &self,
        bufs: Vec<Vec<u8>>,
    ) -> impl Future<Output = BufResult<usize, Vec<Vec<u8>>>>;
    /// Shuts the write side (`None` if it cannot: `can_write_eof` false).
    fn shutdown_write(&self) -> Option<io::Result<()>>;
    /// Whether `write_eof` is possible.
    fn can_write_eof(&self) -> bool;
    /// Whether `write_eof` means closing (a pipe's write end).
    fn eof_closes(&self) -> bool {
        false
    }
    /// Whether the transport reads (`false` for a write pipe).
    fn readable(&self) -> bool {
        true
    }
    /// Whether the transport writes (`false` for a read pipe).
    fn writable(&self) -> bool {
        true
    }
    /// The peer's address.
    fn peername(&self) -> Option<SockAddr>;
    /// The local address.
    fn sockname(&self) -> Option<SockAddr>;
}

impl Conn for TcpStream {
    fn recv(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
        self.read(buf)
    }
    fn send_all(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<(), Vec<u8>>> {
        self.write_all(buf)
    }
    fn send_vectored(
        &self,
        bufs: Vec<Vec<u8>>,
    ) -> impl Future<Output = BufResult<usize, Vec<Vec<u8>>>> {
        self.writev(bufs)
    }
    fn shutdown_write(&self) -> Option<io::Result<()>> {
        Some(self.shutdown(std::net::Shutdown::Write))
    }
    fn can_write_eof(&self) -> bool {
        true
    }
    fn peername(&self) -> Option<SockAddr> {
        self.peer_addr().ok().map(SockAddr::Inet)
    }
    fn sockname(&self) -> Option<SockAddr> {
        self.local_addr().ok().map(SockAddr::Inet)
    }
}

impl Conn for crate::net::UnixStream {
    fn recv(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
        self.read(buf)
    }
    fn send_all(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<(), Vec<u8>>> {
        self.write_all(buf)
    }
    fn send_vectored(
        &self,
        bufs: Vec<Vec<u8>>,
    ) -> impl Future<Output = BufResult<usize, Vec<Vec<u8>>>> {
        self.writev(bufs)
    }
    fn shutdown_write(&self) -> Option<io::Result<()>> {
        Some(self.shutdown(std::net::Shutdown::Write))
    }
    fn can_write_eof(&self) -> bool {
        true
    }
    fn peername(&self) -> Option<SockAddr> {
        self.peer_addr().ok().map(SockAddr::Unix)
    }
    fn sockname(&self) -> Option<SockAddr> {
        self.local_addr().ok().map(SockAddr::Unix)
    }
}

/// What the core asks of a connection, without its type (the core is
/// not generic).
trait ConnInfo {
    fn can_write_eof(&self) -> bool;
    fn eof_closes(&self) -> bool;
    fn sockname(&self) -> Option<SockAddr>;
}

impl<C: Conn> ConnInfo for C {
    fn can_write_eof(&self) -> bool {
        Conn::can_write_eof(self)
    }
    fn eof_closes(&self) -> bool {
        Conn::eof_closes(self)
    }
    fn sockname(&self) -> Option<SockAddr> {
        Conn::sockname(self)
    }
}

#[derive(Default)]
struct State {
    /// Bytes `write` buffered, not yet handed to a send.
    bufs: VecDeque<Vec<u8>>,
    /// Emptied buffers and queue, reused so that steady traffic allocates
    /// nothing per write.
    spare: Vec<Vec<u8>>,
    spare_queue: VecDeque<Vec<u8>>,
    buffered: usize,
    /// Bytes in the send in flight.
    inflight: usize,
    high: usize,
    low: usize,
    /// `pause_writing` was called (or scheduled) and `resume_writing` not.
    protocol_paused: bool,
    closing: bool,
    eof_requested: bool,
    eof_written: bool,
    reading_paused: bool,
    /// `connection_lost` was scheduled.
    lost: bool,
    reader_waker: Option<Waker>,
    writer_waker: Option<Waker>,
}

/// What both tasks and every handle share.
pub(crate) struct Core {
    st: RefCell<State>,
    proto: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
    conn: RefCell<Option<Rc<dyn ConnInfo>>>,
    reader: RefCell<Option<Task<()>>>,
    writer: RefCell<Option<Task<()>>>,
    /// For debug mode's "unclosed transport" report.
    peer: Option<SockAddr>,
    debug: bool,
    /// Called once the connection is lost (servers count connections).
    on_lost: RefCell<Option<Box<dyn FnOnce()>>>,
    closed_by_user: Cell<bool>,
}

/// A connection's transport (asyncio's `Transport`): a cheap handle; all
/// clones are the same transport.
#[derive(Clone)]
pub struct Transport {
    core: Rc<Core>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.core.st.borrow();
        f.debug_struct("Transport")
            .field("peer", &self.core.peer)
            .field("closing", &st.closing)
            .field("write_buffer", &(st.buffered + st.inflight))
            .finish()
    }
}

impl Transport {
    /// Buffers `data` to be sent (copies it; never blocks).
    ///
    /// Writing to a closing transport, or after `write_eof`, is ignored
    /// (asyncio logs a warning and drops the data too).
    pub fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.core.push(
            |st| match st.bufs.back_mut() {
                // Append to the last buffer while it has room or is small.
                Some(last) if last.capacity() - last.len() >= data.len() || last.len() < 4096 => {
                    last.extend_from_slice(data)
                }
                _ => {
                    let mut v = st
                        .spare
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(data.len().max(4096)));
                    v.extend_from_slice(data);
                    st.bufs.push_back(v);
                }
            },
            data.len(),
        );
    }

    /// Buffers `data` without copying it.
    pub fn write_owned(&self, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        let n = data.len();
        self.core.push(move |st| st.bufs.push_back(data), n);
    }

    /// Buffers each of `chunks` (asyncio's `writelines`).
    pub fn writelines<I, B>(&self, chunks: I)
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        for c in chunks {
            self.write(c.as_ref());
        }
    }

    /// Closes the write side once the buffer is flushed (the peer sees
    /// end of stream); reading goes on.
    pub fn write_eof(&self) {
        if self
            .core
            .conn
            .borrow()
            .as_ref()
            .is_some_and(|c| c.eof_closes())
        {
            // A pipe's write end: end of stream is closing it.
            self.close();
            return;
        }
        let mut st = self.core.st.borrow_mut();
        if st.closing || st.eof_requested || !self.can_write_eof() {
            return;
        }
        st.eof_requested = true;
        if let Some(w) = st.writer_waker.take() {
            w.wake();
        }
    }

    /// Whether [`write_eof`](Self::write_eof) is possible.
    pub fn can_write_eof(&self) -> bool {
        self.core
            .conn
            .borrow()
            .as_ref()
            .is_some_and(|c| c.can_write_eof())
    }

    /// Closes the transport: no more data is received; what is buffered
    /// is sent, then the connection closes and `connection_lost(None)` is
    /// called (with `call_soon`, never from inside this call).
    pub fn close(&self) {
        self.core.closed_by_user.set(true);
        self.core.close();
    }

    /// Closes at once, dropping buffered data; `connection_lost(None)`
    /// follows (with `call_soon`).
    pub fn abort(&self) {
        self.core.closed_by_user.set(true);
        self.core.lose(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        let st = self.core.st.borrow();
        st.closing || st.lost
    }

    /// Bytes buffered and not yet sent.
    pub fn get_write_buffer_size(&self) -> usize {
        let st = self.core.st.borrow();
        st.buffered + st.inflight
    }

    /// The write-buffer limits: `pause_writing` above `high`,
    /// `resume_writing` at or below `low`. `None`s pick asyncio's defaults
    /// (64 KiB, and a quarter of `high`).
    ///
    /// # Errors
    /// `InvalidInput` if `low > high`.
    pub fn set_write_buffer_limits(
        &self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> io::Result<()> {
        let high_v = high.unwrap_or(match low {
            Some(l) => (4 * l).max(DEFAULT_HIGH),
            None => DEFAULT_HIGH,
        });
        let low_v = low.unwrap_or(high_v / 4);
        if low_v > high_v {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write buffer limits: low ({low_v}) must not exceed high ({high_v})"),
            ));
        }
        {
            let mut st = self.core.st.borrow_mut();
            st.high = high_v;
            st.low = low_v;
        }
        self.core.maybe_pause();
        self.core.maybe_resume();
        Ok(())
    }

    /// The write-buffer limits `(low, high)`, as asyncio's
    /// `get_write_buffer_limits`.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        let st = self.core.st.borrow();
        (st.low, st.high)
    }

    /// Stops receiving until [`resume_reading`](Self::resume_reading): no
    /// `data_received` until then, and the kernel's buffer fills.
    pub fn pause_reading(&self) {
        self.core.st.borrow_mut().reading_paused = true;
    }

    /// Receives again.
    pub fn resume_reading(&self) {
        let w = {
            let mut st = self.core.st.borrow_mut();
            st.reading_paused = false;
            st.reader_waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Whether the transport is receiving (not paused, not closing).
    pub fn is_reading(&self) -> bool {
        let st = self.core.st.borrow();
        !st.reading_paused && !st.closing && !st.lost
    }

    /// The peer's address.
    pub fn peername(&self) -> Option<SockAddr> {
        self.core.peer.clone()
    }

    /// The local address.
    pub fn sockname(&self) -> Option<SockAddr> {
        self.core.conn.borrow().as_ref().and_then(|c| c.sockname())
    }
}

impl Core {
    /// Adds `n` bytes with `f`, wakes the writer, and checks the
    /// high-water mark.
    fn push(&self, f: impl FnOnce(&mut State), n: usize) {
        {
            let mut st = self.st.borrow_mut();
            if st.closing || st.lost || st.eof_requested {
                log::debug!("uringio: write on a closing transport ignored ({n} bytes)");
                return;
            }
            f(&mut st);
            st.buffered += n;
            if let Some(w) = st.writer_waker.take() {
                w.wake();
            }
        }
        self.maybe_pause();
    }

    /// `pause_writing` (scheduled) if the buffer passed the high mark.
    fn maybe_pause(self: &Core) {
        let mut st = self.st.borrow_mut();
        if st.protocol_paused || st.lost || st.buffered + st.inflight <= st.high {
            return;
        }
        st.protocol_paused = true;
        drop(st);
        if let Some(p) = self.protocol() {
            let peer = self.peer.clone();
            get_running_loop().call_soon(move || {
                call_guarded(&p, peer.as_ref(), |p| p.pause_writing());
            });
        }
    }

    /// `resume_writing` (scheduled) if the buffer is back at the low mark.
    fn maybe_resume(&self) {
        let mut st = self.st.borrow_mut();
        if !st.protocol_paused || st.lost || st.buffered + st.inflight > st.low {
            return;
        }
        st.protocol_paused = false;
        drop(st);
        if let Some(p) = self.protocol() {
            let peer = self.peer.clone();
            get_running_loop().call_soon(move || {
                call_guarded(&p, peer.as_ref(), |p| p.resume_writing());
            });
        }
    }

    fn protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.proto.borrow().clone()
    }

    fn close(&self) {
        let (reader, waker) = {
            let mut st = self.st.borrow_mut();
            if st.closing || st.lost {
                return;
            }
            st.closing = true;
            (self.reader.borrow_mut().take(), st.writer_waker.take())
        };
        if let Some(r) = reader {
            r.cancel();
        }
        if !self.writable() {
            self.lose(None);
            return;
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn writable(&self) -> bool {
        self.writer.borrow().is_some()
    }

    /// Ends the connection now: drops the buffer, stops both tasks, lets
    /// go of the socket and schedules `connection_lost(exc)` (once).
    fn lose(&self, exc: Option<io::Error>) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.closing = true;
            st.bufs.clear();
            st.buffered = 0;
            st.inflight = 0;
            st.reader_waker = None;
            st.writer_waker = None;
        }
        let reader = self.reader.borrow_mut().take();
        let writer = self.writer.borrow_mut().take();
        let conn = self.conn.borrow_mut().take();
        let proto = self.proto.borrow_mut().take();
        let on_lost = self.on_lost.borrow_mut().take();
        if let Some(t) = reader {
            t.cancel();
        }
        if let Some(t) = writer {
            t.cancel();
        }
        drop(conn);
        let peer = self.peer.clone();
        get_running_loop().call_soon(move || {
            if let Some(p) = proto {
                call_guarded(&p, peer.as_ref(), |p| p.connection_lost(exc));
            }
            if let Some(f) = on_lost {
                f();
            }
        });
    }

    /// Calls a protocol method now (from a transport task, never from a
    /// transport method). A panic is reported and aborts the transport.
    fn call<R>(&self, f: impl FnOnce(&mut dyn Protocol) -> R) -> Option<R> {
        let p = self.protocol()?;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *p.borrow_mut())));
        match r {
            Ok(v) => Some(v),
            Err(panic) => {
                let msg = crate::error::panic_message(panic.as_ref())
                    .unwrap_or("<non-string panic payload>")
                    .to_string();
                report_panic(self.peer.as_ref(), &msg);
                self.lose(Some(io::Error::other(format!(
                    "protocol callback panicked: {msg}"
                ))));
                None
            }
        }
    }
}

impl Core {
    /// A task of this transport was dropped before it finished, other than
    /// by `close`/`abort`: its loop is closing with the transport still
    /// open. Let go of the protocol and the socket (the protocol holds the
    /// transport: without this the pair would never be freed), and in
    /// debug mode report the transport as unclosed (asyncio's
    /// ResourceWarning). No `connection_lost`: the loop is gone.
    fn abandoned(&self, by_reader: bool) {
        let report = {
            let mut st = self.st.borrow_mut();
            if st.lost || (by_reader && st.closing) {
                return;
            }
            st.lost = true;
            !st.closing
        };
        drop(self.proto.borrow_mut().take());
        drop(self.conn.borrow_mut().take());
        drop(self.on_lost.borrow_mut().take());
        if report && self.debug && !self.closed_by_user.get() {
            self.report_unclosed();
        }
    }

    fn report_unclosed(&self) {
        log::warn!(
            "uringio: unclosed transport to {} dropped (call close() or abort())",
            self.peer
                .as_ref()
                .map_or_else(|| "an unknown peer".to_string(), |p| p.to_string())
        );
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.debug && !self.st.get_mut().lost && !self.closed_by_user.get() {
            self.report_unclosed();
        }
    }
}

/// Held by a transport task while it runs; dropped with the task's future
/// before the task finished, it tells the core ([`Core::abandoned`]).
struct TaskGuard {
    core: Rc<Core>,
    reader: bool,
    done: bool,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if !self.done {
            self.core.abandoned(self.reader);
        }
    }
}

/// Runs `task`, noting if it is dropped before it finishes (even before
/// its first poll: the guard is made here, outside the future).
fn guarded_task(
    core: Rc<Core>,
    reader: bool,
    task: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let g = TaskGuard {
        core,
        reader,
        done: false,
    };
    async move {
        let mut g = g;
        task.await;
        g.done = true;
    }
}

fn report_panic(peer: Option<&SockAddr>, msg: &str) {
    let peer = peer.map_or_else(String::new, |p| format!(" (peer {p})"));
    get_running_loop().inner.report(ExceptionContext {
        message: format!("Exception in protocol callback{peer}: {msg}"),
        task_id: None,
        panic_message: Some(msg.to_string()),
    });
}

/// Calls a protocol method from a scheduled callback; a panic is reported
/// (the transport is already lost or will see the next callback).
fn call_guarded(
    p: &Rc<RefCell<dyn Protocol>>,
    peer: Option<&SockAddr>,
    f: impl FnOnce(&mut dyn Protocol),
) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *p.borrow_mut())));
    if let Err(panic) = r {
        let msg = crate::error::panic_message(panic.as_ref())
            .unwrap_or("<non-string panic payload>")
            .to_string();
        report_panic(peer, &msg);
    }
}

/// Starts a transport over `conn` for `proto`: `connection_made` now,
/// then the reader and writer tasks. `on_lost` runs after
/// `connection_lost`.
pub(crate) fn start<C: Conn>(
    conn: C,
    proto: Rc<RefCell<dyn Protocol>>,
    on_lost: Option<Box<dyn FnOnce()>>,
) -> Transport {
    let conn = Rc::new(conn);
    let lp = get_running_loop();
    let core = Rc::new(Core {
        st: RefCell::new(State {
            high: DEFAULT_HIGH,
            low: DEFAULT_HIGH / 4,
            ..State::default()
        }),
        proto: RefCell::new(Some(proto)),
        conn: RefCell::new(Some(conn.clone() as Rc<dyn ConnInfo>)),
        reader: RefCell::new(None),
        writer: RefCell::new(None),
        peer: Conn::peername(&*conn),
        debug: lp.get_debug(),
        on_lost: RefCell::new(on_lost),
        closed_by_user: Cell::new(false),
    });
    let t = Transport { core: core.clone() };
    if conn.writable() {
        let task = guarded_task(core.clone(), false, writer(core.clone(), conn.clone()));
        *core.writer.borrow_mut() = Some(crate::spawn(task));
    }
    if conn.readable() {
        let task = guarded_task(core.clone(), true, reader(core.clone(), conn.clone()));
        *core.reader.borrow_mut() = Some(crate::spawn(task));
    }
    drop(conn);
    core.call(|p| p.connection_made(t.clone()));
    t
}

/// Waits while reading is paused; `false` if the transport is closing.
async fn until_reading(core: &Core) -> bool {
    poll_fn(|cx| {
        let mut st = core.st.borrow_mut();
        if st.closing || st.lost {
            return Poll::Ready(false);
        }
        if !st.reading_paused {
            return Poll::Ready(true);
        }
        st.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

async fn reader<C: Conn>(core: Rc<Core>, conn: Rc<C>) {
    let mut buf = Vec::with_capacity(READ_SIZE);
    loop {
        if !until_reading(&core).await {
            return;
        }
        buf.clear();
        let (res, b) = conn.recv(buf).await;
        buf = b;
        // Paused while the receive was in flight: hold the bytes back.
        if !until_reading(&core).await {
            return;
        }
        match res {
            Ok(0) => {
                let keep_open = core.call(|p| p.eof_received());
                match keep_open {
                    Some(true) if conn.writable() => {}
                    Some(_) => core.close(),
                    None => {}
                }
                return;
            }
            Ok(_) => {
                if core.call(|p| p.data_received(&buf)).is_none() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                core.lose(Some(e));
                return;
            }
        }
    }
}

enum Work {
    Send(VecDeque<Vec<u8>>),
    Eof,
    Close,
}

async fn writer<C: Conn>(core: Rc<Core>, conn: Rc<C>) {
    loop {
        let work = poll_fn(|cx| {
            let mut st = core.st.borrow_mut();
            if st.lost {
                return Poll::Ready(None);
            }
            if !st.bufs.is_empty() {
                st.inflight = std::mem::take(&mut st.buffered);
                let spare = std::mem::take(&mut st.spare_queue);
                return Poll::Ready(Some(Work::Send(std::mem::replace(&mut st.bufs, spare))));
            }
            if st.closing {
                return Poll::Ready(Some(Work::Close));
            }
            if st.eof_requested && !st.eof_written {
                return Poll::Ready(Some(Work::Eof));
            }
            st.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(work) = work else { return };
        match work {
            Work::Send(bufs) => {
                if let Err(e) = send(&*conn, &core, bufs).await {
                    core.lose(Some(e));
                    return;
                }
                core.maybe_resume();
            }
            Work::Eof => {
                core.st.borrow_mut().eof_written = true;
                if let Some(Err(e)) = Conn::shutdown_write(&*conn) {
                    if e.kind() != io::ErrorKind::NotConnected {
                        core.lose(Some(e));
                        return;
                    }
                }
            }
            Work::Close => {
                core.lose(None);
                return;
            }
        }
    }
}

/// Sends every buffer in order: one send for one buffer, `writev` for
/// several (resumed after a short one), counting down `inflight`.
async fn send<C: Conn>(conn: &C, core: &Core, mut bufs: VecDeque<Vec<u8>>) -> io::Result<()> {
    if bufs.len() == 1 {
        let b = bufs.pop_front().unwrap_or_default();
        let n = b.len();
        let (res, b) = conn.send_all(b).await;
        let mut st = core.st.borrow_mut();
        st.inflight = st.inflight.saturating_sub(n);
        recycle(&mut st, b, bufs);
        return res;
    }
    while !bufs.is_empty() {
        let v: Vec<Vec<u8>> = bufs.drain(..bufs.len().min(64)).collect();
        let (res, mut v) = conn.send_vectored(v).await;
        let mut n = res?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        {
            let mut st = core.st.borrow_mut();
            st.inflight = st.inflight.saturating_sub(n);
        }
        // Drop what went out; put the rest back in front, in order.
        let mut rest = Vec::new();
        for mut b in v.drain(..) {
            if n >= b.len() {
                n -= b.len();
                continue;
            }
            if n > 0 {
                b.drain(..n);
                n = 0;
            }
            rest.push(b);
        }
        for b in rest.into_iter().rev() {
            bufs.push_front(b);
        }
    }
    core.st.borrow_mut().spare_queue = bufs;
    Ok(())
}

/// Keeps a sent buffer (and the emptied queue) for the next writes.
fn recycle(st: &mut State, mut b: Vec<u8>, queue: VecDeque<Vec<u8>>) {
    if st.spare.len() < 4 && b.capacity() <= 256 * 1024 {
        b.clear();
        st.spare.push(b);
    }
    if st.spare_queue.capacity() == 0 {
        st.spare_queue = queue;
    }
}

/// Connects to the Unix socket at `path` and runs `factory()`'s protocol
/// on it (asyncio's `loop.create_unix_connection`). An abstract address
/// is given with [`create_unix_connection_addr`].
pub async fn create_unix_connection<P: Protocol>(
    factory: impl FnOnce() -> P,
    path: impl AsRef<std::path::Path>,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    let s = crate::net::UnixStream::connect(path).await?;
    let p = Rc::new(RefCell::new(factory()));
    let t = start(s, p.clone(), None);
    Ok((t, p))
}

/// [`create_unix_connection`] to any Unix address (an abstract name too).
pub async fn create_unix_connection_addr<P: Protocol>(
    factory: impl FnOnce() -> P,
    addr: &crate::net::UnixSocketAddr,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    let s = crate::net::UnixStream::connect_addr(addr).await?;
    let p = Rc::new(RefCell::new(factory()));
    let t = start(s, p.clone(), None);
    Ok((t, p))
}

/// Opens a TCP connection to `addr` and runs `factory()`'s protocol on it
/// (asyncio's `loop.create_connection`). Returns the transport and the
/// protocol.
pub async fn create_connection<P: Protocol>(
    factory: impl FnOnce() -> P,
    addr: impl crate::net::ToSocketAddrs,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    let p = Rc::new(RefCell::new(factory()));
    let t = start(s, p.clone(), None);
    Ok((t, p))
}
