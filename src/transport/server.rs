//! Servers (asyncio's `loop.create_server` and `Server`): a listener per
//! resolved address, an accept task per listener, a stream transport per
//! connection.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_core::Stream;

use super::Protocol;
use super::stream::{Conn, LostHook, OnLost, SockAddr, start_with};
use crate::net::{TcpListener, TcpStream, UnixListener, UnixSocketAddr, UnixStream};
use crate::task::Task;

/// A listening socket a server accepts from.
pub(crate) trait Listen: 'static {
    /// What it accepts.
    type Conn: Conn;
    /// Its stream of connections.
    type Incoming<'a>: Stream<Item = io::Result<Self::Conn>> + Unpin
    where
        Self: 'a;
    fn incoming(&self) -> Self::Incoming<'_>;
    fn fd(&self) -> std::os::fd::RawFd;
    /// Per-connection set-up (TCP: no Nagle delay).
    fn prepare(_c: &Self::Conn) {}
}

impl Listen for TcpListener {
    type Conn = TcpStream;
    type Incoming<'a> = crate::net::Incoming<'a>;
    fn incoming(&self) -> Self::Incoming<'_> {
        TcpListener::incoming(self)
    }
    fn fd(&self) -> std::os::fd::RawFd {
        self.as_raw_fd()
    }
    fn prepare(c: &TcpStream) {
        let _ = c.set_nodelay(true);
    }
}

impl Listen for UnixListener {
    type Conn = UnixStream;
    type Incoming<'a> = crate::net::UnixIncoming<'a>;
    fn incoming(&self) -> Self::Incoming<'_> {
        UnixListener::incoming(self)
    }
    fn fd(&self) -> std::os::fd::RawFd {
        self.as_raw_fd()
    }
}

/// Options for [`create_server_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// `SO_REUSEPORT` on every listener, so several loops (one per core)
    /// can serve the same port (default false).
    pub reuse_port: bool,
    /// The listen backlog (default 1024, as `TcpListener::bind` and tokio;
    /// asyncio's is 100, which under a burst of connections overflows
    /// and makes the kernel reset them).
    pub backlog: u32,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            reuse_port: false,
            backlog: 1024,
        }
    }
}

impl ServerOptions {
    /// The defaults.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// Sets `reuse_port`.
    pub fn reuse_port(mut self, on: bool) -> ServerOptions {
        self.reuse_port = on;
        self
    }

    /// Sets the listen backlog.
    pub fn backlog(mut self, n: u32) -> ServerOptions {
        self.backlog = n;
        self
    }
}

struct Inner {
    names: Vec<SockAddr>,
    /// The listening sockets' fds, shut down by `close` (their accept
    /// tasks own them, and end at their next poll).
    listeners: RefCell<Vec<std::os::fd::RawFd>>,
    /// A Unix server's socket file, removed on `close` (as asyncio 3.13).
    unix_path: Option<std::path::PathBuf>,
    accepters: RefCell<Vec<Task<()>>>,
    closed: Cell<bool>,
    /// Connections whose transports have not lost their connection yet.
    active: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
}

impl Inner {
    fn wake_all(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// A listening server (asyncio's `Server`). Dropping it does not stop it:
/// call [`close`](Self::close).
#[derive(Clone)]
pub struct Server {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("names", &self.inner.names)
            .field("serving", &self.is_serving())
            .field("connections", &self.inner.active.get())
            .finish()
    }
}

impl Server {
    /// The addresses it listens on (one per resolved address; a port 0
    /// shows the port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .names
            .iter()
            .filter_map(SockAddr::as_inet)
            .collect()
    }

    /// Every address it listens on, IP or Unix.
    pub fn sock_names(&self) -> Vec<SockAddr> {
        self.inner.names.clone()
    }

    /// Whether it accepts connections.
    pub fn is_serving(&self) -> bool {
        !self.inner.closed.get()
    }

    /// Stops listening: the listeners close (new connections are refused)
    /// but open connections go on.
    pub fn close(&self) {
        if self.inner.closed.replace(true) {
            return;
        }
        for t in self.inner.accepters.borrow_mut().drain(..) {
            t.cancel();
        }
        // Stop listening now, not when the accept tasks let go: a
        // listening socket shut down refuses new connections at once.
        for fd in self.inner.listeners.borrow_mut().drain(..) {
            let _ = crate::driver::op::net::shutdown(fd, std::net::Shutdown::Both);
        }
        if let Some(p) = &self.inner.unix_path {
            let _ = crate::net::remove_stale_socket(p);
        }
        self.inner.wake_all();
    }

    /// Waits until the server is closed and all its connections are gone
    /// (asyncio 3.12's `wait_closed`).
    pub async fn wait_closed(&self) {
        poll_fn(|cx| {
            if self.inner.closed.get() && self.inner.active.get() == 0 {
                return Poll::Ready(());
            }
            self.inner.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Serves until the server is closed (cancel the awaiting task, or
    /// call [`close`](Self::close) from elsewhere, to stop).
    pub async fn serve_forever(&self) {
        poll_fn(|cx| {
            if self.inner.closed.get() {
                return Poll::Ready(());
            }
            self.inner.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Resolves `addr` (numeric addresses at once, names on the blocking pool).
pub(crate) async fn resolve(addr: impl crate::net::ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    crate::net::resolve_async(&addr).await
}

/// Listens on every address `addr` resolves to and runs a new
/// `factory()` protocol on each connection (asyncio's
/// `loop.create_server`). Default options: no `SO_REUSEPORT`, backlog
/// 1024.
pub async fn create_server<P, F>(
    factory: F,
    addr: impl crate::net::ToSocketAddrs,
) -> io::Result<Server>
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    create_server_with(factory, addr, &ServerOptions::default()).await
}

/// [`create_server`] with options.
pub async fn create_server_with<P, F>(
    factory: F,
    addr: impl crate::net::ToSocketAddrs,
    opts: &ServerOptions,
) -> io::Result<Server>
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    let addrs = resolve(addr).await?;
    let backlog = i32::try_from(opts.backlog).unwrap_or(i32::MAX);
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for a in &addrs {
        let mut a = *a;
        // Port 0 on several addresses: the others take the first's port,
        // as asyncio does.
        if a.port() == 0 {
            if let Some(first) = bound.first() {
                a.set_port(SocketAddr::port(first));
            }
        }
        let l = TcpListener::bind_opts(&a, opts.reuse_port, backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("error while binding to {a}: {e}")))?;
        let local = l.local_addr()?;
        bound.push(local);
        listeners.push(l);
    }
    Ok(serve_on(
        listeners,
        bound.into_iter().map(SockAddr::Inet).collect(),
        None,
        factory,
    ))
}

/// Starts accepting on `listeners`.
fn serve_on<L: Listen, P: Protocol, F: Fn() -> P + 'static>(
    listeners: Vec<L>,
    names: Vec<SockAddr>,
    unix_path: Option<std::path::PathBuf>,
    factory: F,
) -> Server {
    let inner = Rc::new(Inner {
        names,
        listeners: RefCell::new(listeners.iter().map(Listen::fd).collect()),
        unix_path,
        accepters: RefCell::new(Vec::new()),
        closed: Cell::new(false),
        active: Cell::new(0),
        waiters: RefCell::new(Vec::new()),
    });
    let factory = Rc::new(factory);
    for l in listeners {
        let t = crate::spawn(accept_loop(l, inner.clone(), factory.clone()));
        inner.accepters.borrow_mut().push(t);
    }
    Server { inner }
}

/// Listens on the Unix socket `path` (a stale socket file left there is
/// removed first, as asyncio does; any other file is an `AddrInUse`
/// error) and runs a new `factory()` protocol on each connection
/// (asyncio's `loop.create_unix_server`). The socket file is removed when
/// the server closes.
pub async fn create_unix_server<P, F>(
    factory: F,
    path: impl AsRef<std::path::Path>,
) -> io::Result<Server>
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    let path = path.as_ref();
    crate::net::remove_stale_socket(path)?;
    let l = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("error while binding to {}: {e}", path.display()),
        )
    })?;
    let name = l.local_addr()?;
    Ok(serve_on(
        vec![l],
        vec![SockAddr::Unix(name)],
        Some(path.to_path_buf()),
        factory,
    ))
}

/// [`create_unix_server`] on any Unix address (an abstract name too; no
/// file to clean up then).
pub async fn create_unix_server_addr<P, F>(factory: F, addr: &UnixSocketAddr) -> io::Result<Server>
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    if let Some(p) = addr.pathname() {
        return create_unix_server(factory, p).await;
    }
    let l = UnixListener::bind_addr(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("error while binding to {addr}: {e}")))?;
    let name = l.local_addr()?;
    Ok(serve_on(vec![l], vec![SockAddr::Unix(name)], None, factory))
}

/// Errors after which accepting again at once would fail the same way:
/// wait a moment (asyncio waits 1 s) rather than spin.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

async fn accept_loop<L: Listen, P: Protocol, F: Fn() -> P + 'static>(
    l: L,
    inner: Rc<Inner>,
    factory: Rc<F>,
) {
    let mut inc = l.incoming();
    loop {
        let next = poll_fn(|cx| Pin::new(&mut inc).poll_next(cx)).await;
        if inner.closed.get() {
            return;
        }
        match next {
            Some(Ok(s)) => {
                L::prepare(&s);
                serve(s, &inner, &*factory)
            }
            Some(Err(e)) if out_of_resources(&e) => {
                log::warn!("uringio: server accept: {e}; pausing accepts for 100 ms");
                crate::sleep(Duration::from_millis(100)).await;
            }
            Some(Err(e)) => log::debug!("uringio: server accept: {e}"),
            None => return,
        }
    }
}

fn serve<C: Conn, P: Protocol, F: Fn() -> P>(s: C, inner: &Rc<Inner>, factory: &F) {
    inner.active.set(inner.active.get() + 1);
    let done = inner.clone();
    let proto = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(factory)) {
        Ok(p) => p,
        Err(_) => {
            log::error!("uringio: the server's protocol factory panicked; connection dropped");
            inner.active.set(inner.active.get() - 1);
            return;
        }
    };
    let p = Rc::new(RefCell::new(proto));
    start_with(s, p, Some(done as OnLost));
}

impl LostHook for Inner {
    fn lost(&self) {
        self.active.set(self.active.get() - 1);
        if self.active.get() == 0 {
            self.wake_all();
        }
    }
}
