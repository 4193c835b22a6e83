//! The stream transport: one per connection (TCP, Unix, pipes), one task
//! around a shared core.
//!
//! ```text
//!   Transport (handles) ──▶ Core ◀── the connection's task, polling two ops:
//!                            │         a receive → data_received / eof_received
//!                            │         a send of everything buffered (one send/writev)
//!                            └── protocol (Rc<RefCell<dyn Protocol>>)
//! ```
//! One task, not a reader and a writer: a `write` made inside
//! `data_received` starts its send in the same poll, in the same loop
//! iteration, with no wake-up of another task in between.
//!
//! On an epoll loop a socket's two "ops" are plain system calls the task
//! makes itself ([`DirectIo`]): `recv` into a per-thread scratch buffer,
//! `send`/`sendmsg` from the write buffer, readiness waited for only when
//! the socket has nothing (more) to give or take.
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

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::Protocol;
use crate::BufResult;
use crate::buf::{IoBuf, Slice};
use crate::driver::op::{Op, rw};
use crate::driver::{self, Driver, direct};
use crate::net::{RecvMulti, TcpStream};
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
    /// A receive.
    type Recv: Future<Output = BufResult<usize, Vec<u8>>> + Unpin;
    /// A send (maybe short) of a buffer's bytes from an offset on.
    type Send: Future<Output = BufResult<usize, Slice<Vec<u8>>>> + Unpin;
    /// A vectored send (maybe short).
    type SendV: Future<Output = BufResult<usize, Vec<Vec<u8>>>> + Unpin;
    /// Receives into `buf`'s spare capacity.
    fn recv(&self, buf: Vec<u8>) -> Self::Recv;
    /// Sends (some of) `buf`.
    fn send(&self, buf: Slice<Vec<u8>>) -> Self::Send;
    /// Sends as much of `bufs` as it can in one call.
    fn send_vectored(&self, bufs: Vec<Vec<u8>>) -> Self::SendV;
    /// A receive stream from the loop's shared buffer ring (multishot on
    /// io_uring), where the connection has one: no buffer per connection.
    fn recv_stream(this: &Rc<Self>) -> Option<RecvMulti<'static>> {
        let _ = this;
        None
    }
    /// The socket, for plain non-blocking `recv`/`send` system calls made
    /// by the transport itself on an epoll loop (`None`: not a socket; the
    /// transport then uses ops).
    fn sock_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Bytes a dropped receive left with the socket, which only the
    /// receive stream hands over (plain `recv` would skip them).
    fn has_leftover(&self) -> bool {
        false
    }
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

/// `Conn` for a socket stream type with `read_op`/`write_op`/`writev_op`,
/// `shutdown` and addresses of kind `$addr`; `$ring` gives its receive
/// stream from the loop's buffer ring, if it has one; `$left` says whether
/// a dropped receive left it bytes.
macro_rules! socket_conn {
    ($t:ty, $addr:path, |$s:ident| $ring:expr, |$l:ident| $left:expr) => {
        impl Conn for $t {
            type Recv = Op<rw::Read<Vec<u8>>>;
            type Send = Op<rw::Write<Slice<Vec<u8>>>>;
            type SendV = Op<rw::WriteV<Vec<u8>>>;
            fn recv(&self, buf: Vec<u8>) -> Self::Recv {
                self.read_op(buf)
            }
            fn send(&self, buf: Slice<Vec<u8>>) -> Self::Send {
                self.write_op(buf)
            }
            fn send_vectored(&self, bufs: Vec<Vec<u8>>) -> Self::SendV {
                self.writev_op(bufs)
            }
            fn recv_stream(this: &Rc<Self>) -> Option<RecvMulti<'static>> {
                let $s = this;
                $ring
            }
            fn sock_fd(&self) -> Option<BorrowedFd<'_>> {
                Some(self.as_fd())
            }
            fn has_leftover(&self) -> bool {
                let $l = self;
                $left
            }
            fn shutdown_write(&self) -> Option<io::Result<()>> {
                Some(self.shutdown(std::net::Shutdown::Write))
            }
            fn can_write_eof(&self) -> bool {
                true
            }
            fn peername(&self) -> Option<SockAddr> {
                self.peer_addr().ok().map($addr)
            }
            fn sockname(&self) -> Option<SockAddr> {
                self.local_addr().ok().map($addr)
            }
        }
    };
}

socket_conn!(
    TcpStream,
    SockAddr::Inet,
    |s| {
        let ring = crate::buf::BufRing::loop_default().ok()?;
        Some(TcpStream::recv_multishot_shared(s, &ring))
    },
    |s| s.pending_leftover().is_some()
);
// Unix streams have no multishot receive yet: plain receives.
socket_conn!(crate::net::UnixStream, SockAddr::Unix, |_s| None, |_s| {
    false
});

/// What the core asks of a connection, without its type (the core is
/// not generic).
trait ConnInfo {
    fn can_write_eof(&self) -> bool;
    fn eof_closes(&self) -> bool;
    fn sockname(&self) -> Option<SockAddr>;
    fn peername(&self) -> Option<SockAddr>;
}

impl<C: Conn> ConnInfo for C {
    fn peername(&self) -> Option<SockAddr> {
        Conn::peername(self)
    }
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
    /// Bytes of `bufs`' first buffer already sent (a short send leaves the
    /// rest where it is: no copy of what remains).
    head_off: usize,
    /// `connection_lost` was scheduled.
    lost: bool,
    /// The connection task's waker, kept from poll to poll (a new one
    /// is cloned only if the task's waker changed).
    waker: Option<Waker>,
    /// The connection's task is polling: what a callback changes now is
    /// seen by that poll, no wake-up needed.
    polling: bool,
}

impl State {
    fn wake(&mut self) {
        if self.polling {
            return;
        }
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}

/// What the connection's task and every handle share.
pub(crate) struct Core {
    st: RefCell<State>,
    proto: RefCell<Option<Rc<RefCell<dyn Protocol>>>>,
    conn: RefCell<Option<Rc<dyn ConnInfo>>>,
    task: RefCell<Option<Task<()>>>,
    /// Whether the connection sends (`false` for a read pipe).
    writable: bool,
    /// The peer's address, asked of the socket the first time something
    /// needs it (`peername`, a report; at once in debug mode) and kept:
    /// most connections never need it, and it is boxed so they do not
    /// carry its room either.
    peer: OnceCell<Option<Box<SockAddr>>>,
    debug: bool,
    /// Told once the connection is lost (servers count connections).
    on_lost: RefCell<Option<OnLost>>,
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
            .field("peer", &self.core.peer())
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
                    let mut v = pooled_buf(data.len());
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
        st.wake();
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
        let mut st = self.core.st.borrow_mut();
        st.reading_paused = false;
        st.wake();
    }

    /// Whether the transport is receiving (not paused, not closing).
    pub fn is_reading(&self) -> bool {
        let st = self.core.st.borrow();
        !st.reading_paused && !st.closing && !st.lost
    }

    /// Whether the write buffer is over the high-water mark: the protocol
    /// is paused for writing, or its `pause_writing` is scheduled.
    pub(crate) fn write_paused(&self) -> bool {
        self.core.st.borrow().protocol_paused
    }

    /// The peer's address.
    pub fn peername(&self) -> Option<SockAddr> {
        self.core.peer()
    }

    /// The local address.
    pub fn sockname(&self) -> Option<SockAddr> {
        self.core.conn.borrow().as_ref().and_then(|c| c.sockname())
    }
}

/// Told when a connection is lost.
pub(crate) trait LostHook {
    /// One connection was lost (after its `connection_lost`).
    fn lost(&self);
}

/// What is told when a connection is lost: a hook shared by many
/// connections (a server's count) costs them no allocation each.
pub(crate) type OnLost = Rc<dyn LostHook>;

/// A closure as a [`LostHook`], run once.
struct Once(Cell<Option<Box<dyn FnOnce()>>>);

impl LostHook for Once {
    fn lost(&self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl Core {
    /// The peer's address (see the field).
    fn peer(&self) -> Option<SockAddr> {
        self.peer
            .get_or_init(|| {
                let c = self.conn.borrow();
                c.as_ref().and_then(|c| c.peername()).map(Box::new)
            })
            .as_deref()
            .cloned()
    }

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
            st.wake();
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
            let peer = self.peer();
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
            let peer = self.peer();
            get_running_loop().call_soon(move || {
                call_guarded(&p, peer.as_ref(), |p| p.resume_writing());
            });
        }
    }

    fn protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.proto.borrow().clone()
    }

    fn close(&self) {
        let mut st = self.st.borrow_mut();
        if st.closing || st.lost {
            return;
        }
        st.closing = true;
        st.wake();
        drop(st);
        if !self.writable {
            self.lose(None);
        }
    }

    /// Ends the connection now: drops the buffer, stops the task, lets go
    /// of the socket and schedules `connection_lost(exc)` (once).
    fn lose(&self, exc: Option<io::Error>) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.closing = true;
            st.bufs.clear();
            st.head_off = 0;
            st.buffered = 0;
            st.inflight = 0;
            st.waker = None;
        }
        // Asked while the socket is still here (a report of a panic in
        // `connection_lost` names it).
        let peer = self.peer();
        let task = self.task.borrow_mut().take();
        let conn = self.conn.borrow_mut().take();
        let proto = self.proto.borrow_mut().take();
        let on_lost = self.on_lost.borrow_mut().take();
        if let Some(t) = task {
            t.cancel();
        }
        drop(conn);
        get_running_loop().call_soon(move || {
            if let Some(p) = proto {
                call_guarded(&p, peer.as_ref(), |p| p.connection_lost(exc));
            }
            if let Some(f) = on_lost {
                f.lost();
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
                report_panic(self.peer().as_ref(), &msg);
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
    fn abandoned(&self) {
        let report = {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.waker = None;
            !st.closing
        };
        if report && self.debug && !self.closed_by_user.get() {
            // Before the socket goes.
            let _ = self.peer();
        }
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
                .get()
                .and_then(|p| p.as_deref())
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

/// Held by the connection's task; dropped with the task's future before
/// the task finished, it tells the core ([`Core::abandoned`]).
struct TaskGuard {
    core: Rc<Core>,
    done: bool,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if !self.done {
            self.core.abandoned();
        }
    }
}

/// Starts a transport over `conn` for `proto`: `connection_made` now,
/// then the connection's task. `on_lost` runs after `connection_lost`.
pub(crate) fn start<C: Conn>(
    conn: C,
    proto: Rc<RefCell<dyn Protocol>>,
    on_lost: Option<Box<dyn FnOnce()>>,
) -> Transport {
    let on_lost = on_lost.map(|f| Rc::new(Once(Cell::new(Some(f)))) as OnLost);
    start_with(conn, proto, on_lost)
}

/// [`start`] with any [`OnLost`].
pub(crate) fn start_with<C: Conn>(
    conn: C,
    proto: Rc<RefCell<dyn Protocol>>,
    on_lost: Option<OnLost>,
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
        task: RefCell::new(None),
        writable: conn.writable(),
        peer: OnceCell::new(),
        debug: lp.get_debug(),
        on_lost: RefCell::new(on_lost),
        closed_by_user: Cell::new(false),
    });
    if core.debug {
        // Debug mode's "unclosed transport" report names the peer, even
        // if the socket is gone by then.
        let _ = core.peer();
    }
    let t = Transport { core: core.clone() };
    // The guard is made outside the task's future, so that it also fires
    // if the future is dropped before its first poll.
    let guard = TaskGuard {
        core: core.clone(),
        done: false,
    };
    let mut pump = Pump {
        multi: None,
        multi_tried: false,
        core: core.clone(),
        conn,
        plain: None,
        send: None,
        read_done: false,
        uses_ring: false,
        direct: None,
    };
    let task = crate::spawn(async move {
        let mut guard = guard;
        poll_fn(|cx| pump.poll(cx)).await;
        guard.done = true;
    });
    *core.task.borrow_mut() = Some(task);
    core.call(|p| p.connection_made(t.clone()));
    t
}

/// A send in flight.
enum Sending<C: Conn> {
    One(C::Send),
    Many(C::SendV),
}

/// The connection's task: a receive and a send, each in flight or not.
struct Pump<C: Conn> {
    /// The receive stream from the loop's buffer ring, when the
    /// connection has one (declared first: dropped before the socket).
    multi: Option<RecvMulti<'static>>,
    /// `recv_stream` was asked (it is asked once; `None` means plain
    /// receives into `rbuf`).
    multi_tried: bool,
    core: Rc<Core>,
    conn: Rc<C>,
    /// The plain receive path's state (connections without a buffer
    /// ring), boxed: ring connections, the many idle ones, do not carry it.
    plain: Option<Box<PlainRecv<C>>>,
    /// The send in flight, boxed: it is made for each send and freed when
    /// it completes, so an idle connection does not carry its room (an
    /// allocation per send, a few ns against the send's µs).
    send: Option<Box<Sending<C>>>,
    /// End of stream (or closing): no more receives.
    read_done: bool,
    /// Receives come from the buffer ring (`multi`), re-made after a pause.
    uses_ring: bool,
    /// On an epoll loop, a socket is read and written with plain system
    /// calls made here (see [`DirectIo`]) rather than with ops. Boxed:
    /// io_uring connections, the many idle ones, do not carry its room.
    direct: Option<Box<DirectIo>>,
}

/// A socket transport on an epoll loop: `recv` into the thread's scratch
/// buffer and `send`/`sendmsg` straight from the write buffer, made by the
/// connection's task itself; readiness is waited for only after `EAGAIN`
/// (or, for receives, after a short read drained the socket: the next
/// input edge says when to try again, as the epoll ops do). Per message
/// this saves what an op adds to its system call (a boxed send, an owned
/// receive buffer taken from and given back to the ring, the op's state
/// machine) and keeps the receive buffer hot in cache: one per thread,
/// free again as soon as `data_received` returns, so idle connections
/// hold no buffer either.
struct DirectIo {
    driver: Rc<Driver>,
    fd: RawFd,
    /// Our readiness waiters (see `Epoll::wait_ready`), input and output.
    rtoken: Option<u64>,
    wtoken: Option<u64>,
    /// A receive drained the socket during this poll, the input waiter is
    /// registered and the driver marked the fd drained (it does not once
    /// the peer closed: no edge would come): no need to ask the driver
    /// again, or to receive, before the next poll.
    drained: bool,
}

impl DirectIo {
    /// Waits for `fd` to become readable (`write` false) or writable.
    fn wait(&mut self, write: bool, cx: &mut Context<'_>) -> io::Result<()> {
        let token = if write {
            &mut self.wtoken
        } else {
            &mut self.rtoken
        };
        driver::epoll_wait_ready(&self.driver, self.fd, write, cx.waker(), token)
    }

    /// Stops waiting in direction `write` (the call it waited for went
    /// through), so an idle socket keeps no waiter.
    fn unwait(&mut self, write: bool) {
        let token = if write {
            &mut self.wtoken
        } else {
            &mut self.rtoken
        };
        if let Some(t) = token.take() {
            driver::epoll_unwait(&self.driver, self.fd, write, t);
        }
    }
}

impl Drop for DirectIo {
    fn drop(&mut self) {
        self.unwait(false);
        self.unwait(true);
    }
}

/// Sent write buffers kept for reuse, per thread, at most.
const POOL_MAX: usize = 32;
/// The largest write buffer kept for reuse.
const POOL_BUF_MAX: usize = 64 * 1024;

thread_local! {
    /// Sent write buffers of every transport on this thread, reused last
    /// in, first out: steady traffic allocates nothing per write, and the
    /// next write, whichever connection makes it, gets the buffer just
    /// sent, still in cache (buffers kept per connection would each be
    /// cold after a round of the others, and idle connections would keep
    /// theirs).
    static SEND_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A write buffer for at least `len` bytes: a pooled one, or a new one.
fn pooled_buf(len: usize) -> Vec<u8> {
    SEND_POOL
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(len.max(4096)))
}

/// Gives a sent write buffer back to the pool (or frees it: too large, or
/// the pool is full).
fn recycle_buf(mut b: Vec<u8>) {
    if b.capacity() == 0 || b.capacity() > POOL_BUF_MAX {
        return;
    }
    b.clear();
    let _ = SEND_POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

thread_local! {
    /// The receive buffer of every direct transport on this thread: a
    /// receive is handed to `data_received` and the buffer is free again
    /// when it returns (made on first use).
    static SCRATCH: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Runs `f` with the thread's scratch receive buffer (a fresh one if it
/// is in use, which a callback cannot make happen: transports are tasks).
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = SCRATCH
        .take()
        .unwrap_or_else(|| vec![0u8; READ_SIZE].into_boxed_slice());
    let r = f(&mut buf);
    SCRATCH.set(Some(buf));
    r
}

/// A plain receive (into a buffer of the connection's own).
struct PlainRecv<C: Conn> {
    recv: Option<C::Recv>,
    /// A receive that completed while reading was paused.
    held: Option<(io::Result<usize>, Vec<u8>)>,
    /// The receive buffer between receives.
    rbuf: Option<Vec<u8>>,
}

/// What a poll step saw.
enum Step {
    /// Something happened: look again.
    Progress,
    /// Nothing to do until woken.
    Idle,
    /// The connection is over.
    Done,
}

impl<C: Conn> Pump<C> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // While this poll runs, wake-ups are spent: a `write` made by a
        // callback below is seen by the loop here, not through a wake.
        self.core.st.borrow_mut().polling = true;
        if let Some(d) = self.direct.as_mut() {
            // Input may have come since the last poll.
            d.drained = false;
        }
        let r = self.poll_steps(cx);
        let mut st = self.core.st.borrow_mut();
        st.polling = false;
        match r {
            Poll::Pending => match &st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.waker = Some(cx.waker().clone()),
            },
            // The task ends: the core (which handles may keep) must not
            // keep it alive.
            Poll::Ready(()) => st.waker = None,
        }
        r
    }

    fn poll_steps(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.multi_tried {
            self.setup();
        }
        loop {
            let w = self.poll_send(cx);
            if matches!(w, Step::Done) {
                return Poll::Ready(());
            }
            let r = self.poll_recv(cx);
            if matches!(r, Step::Done) {
                return Poll::Ready(());
            }
            if matches!((w, r), (Step::Idle, Step::Idle)) {
                if self.core.st.borrow().lost {
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
        }
    }

    /// Chooses how to receive and send, at the first poll: a socket on an
    /// epoll loop goes direct (unless bytes a dropped receive left must be
    /// read through the receive stream first); else ops, receiving from
    /// the loop's buffer ring where the connection has one.
    fn setup(&mut self) {
        self.multi_tried = true;
        if let Some(fd) = self.conn.sock_fd() {
            if let Some(d) = driver::current() {
                if !d.is_uring() && !self.conn.has_leftover() {
                    self.direct = Some(Box::new(DirectIo {
                        driver: d,
                        fd: fd.as_raw_fd(),
                        rtoken: None,
                        wtoken: None,
                        drained: false,
                    }));
                    return;
                }
            }
        }
        self.multi = C::recv_stream(&self.conn);
        self.uses_ring = self.multi.is_some();
    }

    /// Direct: sends what is buffered (one `send`, or one `sendmsg` of up
    /// to 64 buffers), now.
    fn send_direct(&mut self, cx: &mut Context<'_>) -> Step {
        let Some(d) = self.direct.as_mut() else {
            return Step::Idle;
        };
        let Some(fd) = self.conn.sock_fd() else {
            return Step::Idle;
        };
        let mut st = self.core.st.borrow_mut();
        let off = st.head_off;
        let res = if st.bufs.len() == 1 {
            direct::send(fd, &st.bufs[0][off..])
        } else {
            let mut iov = [std::io::IoSlice::new(&[]); direct::MAX_IOV];
            let mut n = 0;
            for (i, b) in st.bufs.iter().take(direct::MAX_IOV).enumerate() {
                iov[i] = std::io::IoSlice::new(if i == 0 { &b[off..] } else { b });
                n = i + 1;
            }
            direct::send_vectored(fd, &iov[..n])
        };
        match res {
            Ok(0) => {
                drop(st);
                self.core.lose(Some(io::ErrorKind::WriteZero.into()));
                Step::Done
            }
            Ok(mut n) => {
                st.buffered -= n;
                // Drop what went out; a partly sent buffer stays in front,
                // the rest of it sent next from where this send stopped.
                while n > 0 {
                    let left = st.bufs[0].len() - st.head_off;
                    if n < left {
                        st.head_off += n;
                        break;
                    }
                    n -= left;
                    st.head_off = 0;
                    if let Some(b) = st.bufs.pop_front() {
                        recycle_buf(b);
                    }
                }
                drop(st);
                d.unwait(true);
                self.core.maybe_resume();
                Step::Progress
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drop(st);
                match d.wait(true, cx) {
                    Ok(()) => Step::Idle,
                    Err(e) => {
                        self.core.lose(Some(e));
                        Step::Done
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
            Err(e) => {
                drop(st);
                self.core.lose(Some(e));
                Step::Done
            }
        }
    }

    /// Direct: receives into the thread's scratch buffer and hands the
    /// bytes to `data_received`. The input waiter stays registered while
    /// reading goes on (an idle reader waits anyway), so a message costs
    /// no unregistering: a receive that drains the socket registers it (if
    /// the last edge used it up) and marks the fd drained in one call, and
    /// later polls skip the receive until an input edge clears the mark.
    fn recv_direct(&mut self, cx: &mut Context<'_>, paused: bool) -> Step {
        let Some(d) = self.direct.as_mut() else {
            return Step::Idle;
        };
        if paused {
            // Nothing is read: the kernel's buffer fills.
            d.unwait(false);
            d.drained = false;
            return Step::Idle;
        }
        if d.drained {
            // Drained earlier in this poll, waiting already.
            return Step::Idle;
        }
        let Some(fd) = self.conn.sock_fd() else {
            return Step::Idle;
        };
        let r: io::Result<Option<bool>> = if driver::epoll_read_drained(&d.driver, d.fd) {
            // No input edge since the socket was drained: a receive would
            // only see EAGAIN.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            let core = &self.core;
            with_scratch(|buf| {
                let n = direct::recv(fd, buf)?;
                if n == 0 {
                    return Ok(None);
                }
                if n < buf.len() {
                    d.drained =
                        driver::epoll_drained_wait(&d.driver, d.fd, cx.waker(), &mut d.rtoken)?;
                }
                Ok(Some(core.call(|p| p.data_received(&buf[..n])).is_some()))
            })
        };
        match r {
            Ok(Some(true)) => Step::Progress,
            Ok(Some(false)) => Step::Done,
            Ok(None) => {
                d.unwait(false);
                self.eof()
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match driver::epoll_drained_wait(&d.driver, d.fd, cx.waker(), &mut d.rtoken) {
                    Ok(true) => {
                        d.drained = true;
                        Step::Idle
                    }
                    // Not marked: the peer closed (no edge will come; the
                    // next receive sees the end) or the fd is not watched.
                    Ok(false) => Step::Progress,
                    Err(e) => {
                        self.core.lose(Some(e));
                        Step::Done
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
            Err(e) => {
                self.core.lose(Some(e));
                Step::Done
            }
        }
    }

    /// Starts a send of what is buffered, or finishes the one in flight.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Step {
        if self.send.is_none() {
            let mut st = self.core.st.borrow_mut();
            if st.lost {
                return Step::Done;
            }
            if !st.bufs.is_empty() {
                if self.direct.is_some() {
                    drop(st);
                    return self.send_direct(cx);
                }
                if st.bufs.len() == 1 || st.head_off > 0 {
                    // One buffer, or the rest of a partly sent one (sent
                    // alone, from where the last send stopped).
                    let b = st.bufs.pop_front().unwrap_or_default();
                    let off = std::mem::take(&mut st.head_off);
                    st.inflight += b.len() - off;
                    st.buffered -= b.len() - off;
                    self.send = Some(Box::new(Sending::One(self.conn.send(b.slice(off..)))));
                } else {
                    let n = st.bufs.len().min(64);
                    let v: Vec<Vec<u8>> = st.bufs.drain(..n).collect();
                    let len: usize = v.iter().map(Vec::len).sum();
                    st.inflight += len;
                    st.buffered -= len;
                    self.send = Some(Box::new(Sending::Many(self.conn.send_vectored(v))));
                }
            } else if st.closing {
                // Flushed: the close completes.
                drop(st);
                self.core.lose(None);
                return Step::Done;
            } else if st.eof_requested && !st.eof_written {
                st.eof_written = true;
                drop(st);
                if let Some(Err(e)) = Conn::shutdown_write(&*self.conn) {
                    if e.kind() != io::ErrorKind::NotConnected {
                        self.core.lose(Some(e));
                        return Step::Done;
                    }
                }
                return Step::Progress;
            } else {
                return Step::Idle;
            }
        }
        let res = match self.send.as_deref_mut() {
            Some(Sending::One(f)) => match Pin::new(f).poll(cx) {
                Poll::Pending => return Step::Idle,
                Poll::Ready((res, b)) => {
                    self.send = None;
                    self.sent_one(res, b)
                }
            },
            Some(Sending::Many(f)) => match Pin::new(f).poll(cx) {
                Poll::Pending => return Step::Idle,
                Poll::Ready((res, v)) => {
                    self.send = None;
                    self.sent_many(res, v)
                }
            },
            None => return Step::Idle,
        };
        match res {
            Ok(()) => {
                self.core.maybe_resume();
                Step::Progress
            }
            Err(e) => {
                self.core.lose(Some(e));
                Step::Done
            }
        }
    }

    /// A single send completed: a short one puts the rest back in front.
    fn sent_one(&mut self, res: io::Result<usize>, sent: Slice<Vec<u8>>) -> io::Result<()> {
        let off = sent.begin();
        let b = sent.into_inner();
        let len = b.len() - off;
        let n = match res {
            Ok(0) if len > 0 => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let mut st = self.core.st.borrow_mut();
        st.inflight -= len;
        if n < len {
            // The rest goes next, from where this send stopped.
            st.buffered += len - n;
            st.head_off = off + n;
            st.bufs.push_front(b);
        } else {
            drop(st);
            recycle_buf(b);
        }
        Ok(())
    }

    /// A vectored send completed: drop what went out, put the rest back in
    /// front, in order.
    fn sent_many(&mut self, res: io::Result<usize>, v: Vec<Vec<u8>>) -> io::Result<()> {
        let mut n = match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let mut st = self.core.st.borrow_mut();
        let total: usize = v.iter().map(Vec::len).sum();
        st.inflight -= total;
        let mut rest = Vec::new();
        let mut head_off = 0;
        for b in v {
            if n >= b.len() {
                n -= b.len();
                recycle_buf(b);
                continue;
            }
            if n > 0 {
                // Partly sent: it goes first, from where the send stopped.
                head_off = n;
                n = 0;
            }
            rest.push(b);
        }
        for b in rest.into_iter().rev() {
            st.buffered += b.len();
            st.bufs.push_front(b);
        }
        st.buffered -= head_off;
        st.head_off = head_off;
        Ok(())
    }

    /// The buffer-ring path: each chunk is handed to `data_received`
    /// straight from ring memory, and goes back to the ring when the
    /// callback returns. Pausing drops the stream (the multishot receive
    /// is cancelled, so the kernel's buffer fills); what it had received
    /// stays with the socket and comes first from the next stream.
    fn poll_ring(&mut self, cx: &mut Context<'_>, paused: bool) -> Step {
        if paused {
            self.multi = None;
            return Step::Idle;
        }
        if self.multi.is_none() {
            self.multi = C::recv_stream(&self.conn);
        }
        let Some(m) = self.multi.as_mut() else {
            // The ring went away (the loop is closing).
            self.read_done = true;
            return Step::Idle;
        };
        match m.poll_next_chunk(cx) {
            Poll::Pending => Step::Idle,
            Poll::Ready(None) => {
                self.multi = None;
                self.eof()
            }
            Poll::Ready(Some(Ok(chunk))) => {
                let ok = self.core.call(|p| p.data_received(&chunk)).is_some();
                drop(chunk);
                if ok { Step::Progress } else { Step::Done }
            }
            Poll::Ready(Some(Err(e))) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
            Poll::Ready(Some(Err(e))) => {
                self.multi = None;
                self.core.lose(Some(e));
                Step::Done
            }
        }
    }

    /// End of stream: `eof_received`, then close unless it keeps the
    /// write side open.
    fn eof(&mut self) -> Step {
        self.read_done = true;
        match self.core.call(|p| p.eof_received()) {
            Some(true) if self.core.writable => {}
            Some(_) => self.core.close(),
            None => return Step::Done,
        }
        Step::Progress
    }

    /// Starts a receive, finishes the one in flight, or hands over what
    /// was held back while reading was paused.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Step {
        if self.read_done || !self.conn.readable() {
            return Step::Idle;
        }
        let (paused, closing) = {
            let st = self.core.st.borrow();
            (st.reading_paused, st.closing || st.lost)
        };
        if closing {
            // No more data after close(): an in-flight receive is
            // cancelled (dropped).
            self.read_done = true;
            self.plain = None;
            self.multi = None;
            if let Some(d) = self.direct.as_mut() {
                d.unwait(false);
            }
            return Step::Progress;
        }
        if self.direct.is_some() {
            return self.recv_direct(cx, paused);
        }
        if self.uses_ring {
            return self.poll_ring(cx, paused);
        }
        let conn = &self.conn;
        let pl = self.plain.get_or_insert_with(|| {
            Box::new(PlainRecv {
                recv: None,
                held: None,
                rbuf: None,
            })
        });
        if paused {
            // Keep a receive in flight (at most one buffer is taken from
            // the kernel), deliver nothing.
            if let Some(f) = pl.recv.as_mut() {
                if let Poll::Ready(r) = Pin::new(f).poll(cx) {
                    pl.recv = None;
                    pl.held = Some(r);
                }
            }
            return Step::Idle;
        }
        let (res, buf) = match pl.held.take() {
            Some(r) => r,
            None => {
                let f = pl.recv.get_or_insert_with(|| {
                    let mut b = pl
                        .rbuf
                        .take()
                        .unwrap_or_else(|| Vec::with_capacity(READ_SIZE));
                    b.clear();
                    conn.recv(b)
                });
                match Pin::new(f).poll(cx) {
                    Poll::Pending => return Step::Idle,
                    Poll::Ready(r) => {
                        pl.recv = None;
                        r
                    }
                }
            }
        };
        match res {
            Ok(0) => {
                pl.rbuf = Some(buf);
                self.eof()
            }
            Ok(_) => {
                let ok = self.core.call(|p| p.data_received(&buf)).is_some();
                if let Some(pl) = self.plain.as_mut() {
                    pl.rbuf = Some(buf);
                }
                if ok { Step::Progress } else { Step::Done }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                pl.rbuf = Some(buf);
                Step::Progress
            }
            Err(e) => {
                self.core.lose(Some(e));
                Step::Done
            }
        }
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
