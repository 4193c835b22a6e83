//! Servers (asyncio's `loop.create_server` and `Server`): a listener per
//! resolved address, an accept task per listener, a stream transport per
//! connection.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_core::Stream;

use super::Protocol;
use super::stream::start;
use crate::net::{TcpListener, TcpStream};
use crate::task::Task;

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
    addrs: Vec<SocketAddr>,
    /// The listening sockets, shut down by `close` (their accept tasks
    /// hold them too, and end at their next poll).
    listeners: RefCell<Vec<Rc<TcpListener>>>,
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
            .field("addrs", &self.inner.addrs)
            .field("serving", &self.is_serving())
            .field("connections", &self.inner.active.get())
            .finish()
    }
}

impl Server {
    /// The addresses it listens on (one per resolved address; a port 0
    /// shows the port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.addrs.clone()
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
        for l in self.inner.listeners.borrow_mut().drain(..) {
            let _ = crate::driver::op::net::shutdown(l.as_raw_fd(), std::net::Shutdown::Both);
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
pub(crate) async fn resolve(addr: impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    crate::net::resolve(addr)
}

/// Listens on every address `addr` resolves to and runs a new
/// `factory()` protocol on each connection (asyncio's
/// `loop.create_server`). Default options: no `SO_REUSEPORT`, backlog
/// 1024.
pub async fn create_server<P, F>(factory: F, addr: impl ToSocketAddrs) -> io::Result<Server>
where
    P: Protocol,
    F: Fn() -> P + 'static,
{
    create_server_with(factory, addr, &ServerOptions::default()).await
}

/// [`create_server`] with options.
pub async fn create_server_with<P, F>(
    factory: F,
    addr: impl ToSocketAddrs,
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
    let listeners: Vec<Rc<TcpListener>> = listeners.into_iter().map(Rc::new).collect();
    let inner = Rc::new(Inner {
        addrs: bound,
        listeners: RefCell::new(listeners.clone()),
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
    Ok(Server { inner })
}

/// Errors after which accepting again at once would fail the same way:
/// wait a moment (asyncio waits 1 s) rather than spin.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

async fn accept_loop<P: Protocol, F: Fn() -> P + 'static>(
    l: Rc<TcpListener>,
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
            Some(Ok(s)) => serve(s, &inner, &*factory),
            Some(Err(e)) if out_of_resources(&e) => {
                log::warn!("uringio: server accept: {e}; pausing accepts for 100 ms");
                crate::sleep(Duration::from_millis(100)).await;
            }
            Some(Err(e)) => log::debug!("uringio: server accept: {e}"),
            None => return,
        }
    }
}

fn serve<P: Protocol, F: Fn() -> P>(s: TcpStream, inner: &Rc<Inner>, factory: &F) {
    let _ = s.set_nodelay(true);
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
    start(
        s,
        p,
        Some(Box::new(move || {
            done.active.set(done.active.get() - 1);
            if done.active.get() == 0 {
                done.wake_all();
            }
        })),
    );
}
