//! Datagram endpoints (asyncio's `loop.create_datagram_endpoint`): a UDP
//! socket, a reader task handing each datagram to `datagram_received`,
//! and a queue of datagrams that a writer task sends in order.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::DatagramProtocol;
use crate::net::UdpSocket;
use crate::runtime::{ExceptionContext, get_running_loop};
use crate::task::Task;

/// The largest datagram received (UDP's maximum payload).
const MAX_DATAGRAM: usize = 65_536;
const DEFAULT_HIGH: usize = 64 * 1024;

/// Options for [`create_datagram_endpoint_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DatagramOptions {
    /// The address to bind (default: any address of the remote's family,
    /// port 0).
    pub local_addr: Option<SocketAddr>,
    /// Connect to this address: `sendto` without an address sends there,
    /// only its datagrams are received, and ICMP errors come back as
    /// `error_received`.
    pub remote_addr: Option<SocketAddr>,
    /// `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// `SO_BROADCAST`: may send to broadcast addresses.
    pub allow_broadcast: bool,
}

impl DatagramOptions {
    /// No address, no options.
    pub fn new() -> DatagramOptions {
        DatagramOptions::default()
    }

    /// Sets the local address.
    pub fn local_addr(mut self, a: SocketAddr) -> DatagramOptions {
        self.local_addr = Some(a);
        self
    }

    /// Sets the remote address.
    pub fn remote_addr(mut self, a: SocketAddr) -> DatagramOptions {
        self.remote_addr = Some(a);
        self
    }

    /// Sets `SO_REUSEPORT`.
    pub fn reuse_port(mut self, on: bool) -> DatagramOptions {
        self.reuse_port = on;
        self
    }

    /// Sets `SO_BROADCAST`.
    pub fn allow_broadcast(mut self, on: bool) -> DatagramOptions {
        self.allow_broadcast = on;
        self
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Vec<u8>, Option<SocketAddr>)>,
    buffered: usize,
    paused: bool,
    closing: bool,
    lost: bool,
    writer_waker: Option<Waker>,
}

struct Core {
    st: RefCell<State>,
    proto: RefCell<Option<Rc<RefCell<dyn DatagramProtocol>>>>,
    sock: RefCell<Option<Rc<UdpSocket>>>,
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
    reader: RefCell<Option<Task<()>>>,
    writer: RefCell<Option<Task<()>>>,
    closed_by_user: Cell<bool>,
    debug: bool,
}

/// A datagram endpoint's transport (asyncio's `DatagramTransport`): a
/// cheap handle.
#[derive(Clone)]
pub struct DatagramTransport {
    core: Rc<Core>,
}

impl std::fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("local", &self.core.local)
            .field("remote", &self.core.remote)
            .finish()
    }
}

impl DatagramTransport {
    /// Queues `data` for `addr` (`None`: the connected remote). Never
    /// blocks; send errors come back through `error_received`.
    ///
    /// # Errors
    /// `InvalidInput` for an address on a connected endpoint that is not
    /// its remote, or no address on an unconnected one; `NotConnected`
    /// once the endpoint is closing.
    pub fn sendto(&self, data: &[u8], addr: Option<SocketAddr>) -> io::Result<()> {
        match (self.core.remote, addr) {
            (Some(r), Some(a)) if r != a => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("sendto: the endpoint is connected to {r}, not {a}"),
                ));
            }
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "sendto: an unconnected endpoint needs an address",
                ));
            }
            _ => {}
        }
        let pause = {
            let mut st = self.core.st.borrow_mut();
            if st.closing || st.lost {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "sendto: the endpoint is closing",
                ));
            }
            st.queue.push_back((data.to_vec(), addr));
            st.buffered += data.len();
            if let Some(w) = st.writer_waker.take() {
                w.wake();
            }
            let pause = !st.paused && st.buffered > DEFAULT_HIGH;
            st.paused |= pause;
            pause
        };
        if pause {
            self.core.schedule(|p| p.pause_writing());
        }
        Ok(())
    }

    /// Closes after the queued datagrams are sent; `connection_lost(None)`
    /// follows.
    pub fn close(&self) {
        self.core.closed_by_user.set(true);
        let w = {
            let mut st = self.core.st.borrow_mut();
            if st.closing || st.lost {
                return;
            }
            st.closing = true;
            st.writer_waker.take()
        };
        if let Some(r) = self.core.reader.borrow_mut().take() {
            r.cancel();
        }
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Closes at once, dropping queued datagrams.
    pub fn abort(&self) {
        self.core.closed_by_user.set(true);
        self.core.lose(None);
    }

    /// Whether it is closing or closed.
    pub fn is_closing(&self) -> bool {
        let st = self.core.st.borrow();
        st.closing || st.lost
    }

    /// Bytes queued and not yet sent.
    pub fn get_write_buffer_size(&self) -> usize {
        self.core.st.borrow().buffered
    }

    /// The local address.
    pub fn sockname(&self) -> Option<SocketAddr> {
        self.core.local
    }

    /// The connected remote address, if any.
    pub fn peername(&self) -> Option<SocketAddr> {
        self.core.remote
    }
}

impl Core {
    fn protocol(&self) -> Option<Rc<RefCell<dyn DatagramProtocol>>> {
        self.proto.borrow().clone()
    }

    /// Calls a protocol method later (never from inside a transport method).
    fn schedule(&self, f: impl FnOnce(&mut dyn DatagramProtocol) + 'static) {
        if let Some(p) = self.protocol() {
            get_running_loop().call_soon(move || {
                call_protocol(&p, f);
            });
        }
    }

    /// Calls a protocol method now (from the endpoint's tasks). A panic is
    /// reported and closes the endpoint.
    fn call(&self, f: impl FnOnce(&mut dyn DatagramProtocol)) -> bool {
        let Some(p) = self.protocol() else {
            return false;
        };
        if call_protocol(&p, f) {
            return true;
        }
        self.lose(Some(io::Error::other("protocol callback panicked")));
        false
    }

    fn lose(&self, exc: Option<io::Error>) {
        {
            let mut st = self.st.borrow_mut();
            if st.lost {
                return;
            }
            st.lost = true;
            st.closing = true;
            st.queue.clear();
            st.buffered = 0;
            st.writer_waker = None;
        }
        if let Some(t) = self.reader.borrow_mut().take() {
            t.cancel();
        }
        if let Some(t) = self.writer.borrow_mut().take() {
            t.cancel();
        }
        drop(self.sock.borrow_mut().take());
        let proto = self.proto.borrow_mut().take();
        get_running_loop().call_soon(move || {
            if let Some(p) = proto {
                call_protocol(&p, |p| p.connection_lost(exc));
            }
        });
    }
}

/// Dropped with a task's future before the task finished (its loop is
/// closing with the endpoint open): lets go of the protocol, which holds
/// the transport, so the pair is freed; debug mode reports it unclosed.
struct TaskGuard {
    core: Rc<Core>,
    /// The reader: cancelled by `close()` too, which the writer finishes.
    reader: bool,
    done: bool,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let report = {
            let mut st = self.core.st.borrow_mut();
            if st.lost || (self.reader && st.closing) {
                return;
            }
            st.lost = true;
            !st.closing
        };
        drop(self.core.proto.borrow_mut().take());
        drop(self.core.sock.borrow_mut().take());
        if report && self.core.debug && !self.core.closed_by_user.get() {
            log::warn!(
                "uringio: unclosed datagram transport on {:?} (remote {:?}) dropped",
                self.core.local,
                self.core.remote
            );
        }
    }
}

fn guarded(
    core: Rc<Core>,
    reader: bool,
    task: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
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

impl Drop for Core {
    fn drop(&mut self) {
        if self.debug && !self.st.get_mut().lost && !self.closed_by_user.get() {
            log::warn!(
                "uringio: unclosed datagram transport on {:?} (remote {:?}) dropped",
                self.local,
                self.remote
            );
        }
    }
}

/// Runs `f` on the protocol, reporting a panic; `false` if it panicked.
fn call_protocol(
    p: &Rc<RefCell<dyn DatagramProtocol>>,
    f: impl FnOnce(&mut dyn DatagramProtocol),
) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *p.borrow_mut()))) {
        Ok(()) => true,
        Err(panic) => {
            let msg = crate::error::panic_message(panic.as_ref())
                .unwrap_or("<non-string panic payload>")
                .to_string();
            get_running_loop().inner.report(ExceptionContext {
                message: format!("Exception in datagram protocol callback: {msg}"),
                task_id: None,
                panic_message: Some(msg),
            });
            false
        }
    }
}

/// Errors a send or receive reports through `error_received` (the
/// endpoint goes on); anything else ends it.
fn transient(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT)
    )
}

async fn reader(core: Rc<Core>, sock: Rc<UdpSocket>) {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        buf.clear();
        let (res, b) = sock.recv_from(buf).await;
        buf = b;
        match res {
            Ok((_, addr)) => {
                if !core.call(|p| p.datagram_received(&buf, addr)) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if transient(&e) => {
                if !core.call(|p| p.error_received(e)) {
                    return;
                }
            }
            Err(e) => {
                core.lose(Some(e));
                return;
            }
        }
    }
}

async fn writer(core: Rc<Core>, sock: Rc<UdpSocket>) {
    loop {
        let next = poll_fn(|cx| {
            let mut st = core.st.borrow_mut();
            if st.lost {
                return Poll::Ready(None);
            }
            if let Some(d) = st.queue.pop_front() {
                return Poll::Ready(Some(Some(d)));
            }
            if st.closing {
                return Poll::Ready(Some(None));
            }
            st.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(next) = next else { return };
        let Some((data, addr)) = next else {
            core.lose(None);
            return;
        };
        let n = data.len();
        let res = match addr {
            Some(a) if core.remote.is_none() => sock.send_to(data, a).await.0,
            _ => sock.send(data).await.0,
        };
        let resume = {
            let mut st = core.st.borrow_mut();
            st.buffered -= n.min(st.buffered);
            let r = st.paused && st.buffered <= DEFAULT_HIGH / 4;
            st.paused &= !r;
            r
        };
        if resume {
            core.schedule(|p| p.resume_writing());
        }
        match res {
            Ok(_) => {}
            Err(e) if transient(&e) => {
                if !core.call(|p| p.error_received(e)) {
                    return;
                }
            }
            Err(e) => {
                core.lose(Some(e));
                return;
            }
        }
    }
}

/// A datagram endpoint bound to `local_addr` and/or connected to
/// `remote_addr` (asyncio's `loop.create_datagram_endpoint`). At least one
/// is needed.
pub async fn create_datagram_endpoint<P: DatagramProtocol>(
    factory: impl FnOnce() -> P,
    local_addr: Option<impl crate::net::ToSocketAddrs>,
    remote_addr: Option<impl crate::net::ToSocketAddrs>,
) -> io::Result<(DatagramTransport, Rc<RefCell<P>>)> {
    let mut opts = DatagramOptions::default();
    if let Some(a) = local_addr {
        opts.local_addr = Some(first(super::server::resolve(a).await?)?);
    }
    if let Some(a) = remote_addr {
        opts.remote_addr = Some(first(super::server::resolve(a).await?)?);
    }
    create_datagram_endpoint_with(factory, &opts).await
}

fn first(v: Vec<SocketAddr>) -> io::Result<SocketAddr> {
    v.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    })
}

/// [`create_datagram_endpoint`] with options.
pub async fn create_datagram_endpoint_with<P: DatagramProtocol>(
    factory: impl FnOnce() -> P,
    opts: &DatagramOptions,
) -> io::Result<(DatagramTransport, Rc<RefCell<P>>)> {
    let local = match (opts.local_addr, opts.remote_addr) {
        (Some(l), _) => l,
        (None, Some(r)) if r.is_ipv6() => "[::]:0".parse().expect("literal"),
        (None, Some(_)) => "0.0.0.0:0".parse().expect("literal"),
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "create_datagram_endpoint: give a local address, a remote address, or both",
            ));
        }
    };
    let sock = UdpSocket::bind_opts(&local, opts.reuse_port)?;
    if opts.allow_broadcast {
        sock.set_broadcast(true)?;
    }
    if let Some(r) = opts.remote_addr {
        sock.connect(r)?;
    }
    let sock = Rc::new(sock);
    let p = Rc::new(RefCell::new(factory()));
    let core = Rc::new(Core {
        st: RefCell::new(State::default()),
        proto: RefCell::new(Some(p.clone() as Rc<RefCell<dyn DatagramProtocol>>)),
        sock: RefCell::new(Some(sock.clone())),
        remote: opts.remote_addr,
        local: sock.local_addr().ok(),
        reader: RefCell::new(None),
        writer: RefCell::new(None),
        closed_by_user: Cell::new(false),
        debug: get_running_loop().get_debug(),
    });
    let w = guarded(core.clone(), false, writer(core.clone(), sock.clone()));
    *core.writer.borrow_mut() = Some(crate::spawn(w));
    let r = guarded(core.clone(), true, reader(core.clone(), sock.clone()));
    *core.reader.borrow_mut() = Some(crate::spawn(r));
    drop(sock);
    let t = DatagramTransport { core: core.clone() };
    core.call(|p| p.connection_made(t.clone()));
    Ok((t, p))
}
