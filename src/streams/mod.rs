//! Streams: asyncio's `open_connection`, `start_server`, `StreamReader`
//! and `StreamWriter`, over the transport layer.
//!
//! ```no_run
//! use uringio::streams;
//!
//! uringio::run(async {
//!     // A line echo server.
//!     let server = streams::start_server(
//!         |mut reader, writer| async move {
//!             while let Ok(line) = reader.readline().await {
//!                 if line.is_empty() {
//!                     break; // end of stream
//!                 }
//!                 writer.write(&line);
//!                 if writer.drain().await.is_err() {
//!                     break;
//!                 }
//!             }
//!         },
//!         "127.0.0.1:8888",
//!     )
//!     .await
//!     .unwrap();
//!     server.serve_forever().await;
//! });
//! ```
//!
//! A stream pair is a transport ([`crate::transport::Transport`]) with a
//! protocol that fills the [`StreamReader`]'s buffer: on io_uring the
//! bytes come from the loop's provided-buffer ring through a multishot
//! receive (one copy, into the reader's buffer), not one receive per
//! `read`. The writer buffers in the transport: many `write`s before one
//! `drain` go out in one send.
//!
//! Dropping the [`StreamWriter`] closes the connection (after flushing
//! what was written), as closing a socket in tokio does; asyncio would
//! warn about an unclosed transport.

mod reader;
mod writer;

pub use reader::{DEFAULT_LIMIT, Lines, StreamFeeder, StreamReader};
pub use writer::StreamWriter;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::task::Waker;

use crate::net::UnixSocketAddr;
use crate::transport::{self, Protocol, Server, ServerOptions, Transport};
use reader::{ReadState, clone_err};

/// Options for opening connections and starting servers: the reader's
/// limit, and the server's `reuse_port` and `backlog` (as
/// [`ServerOptions`]).
#[derive(Debug, Clone)]
pub struct StreamOptions {
    limit: usize,
    server: ServerOptions,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            limit: DEFAULT_LIMIT,
            server: ServerOptions::default(),
        }
    }
}

impl StreamOptions {
    /// The defaults: limit 64 KiB, no `SO_REUSEPORT`, backlog 1024.
    pub fn new() -> StreamOptions {
        StreamOptions::default()
    }

    /// The reader's limit (must be > 0; 0 is refused with `InvalidInput`
    /// when used).
    pub fn limit(mut self, n: usize) -> StreamOptions {
        self.limit = n;
        self
    }

    /// `SO_REUSEPORT` on the listening sockets.
    pub fn reuse_port(mut self, on: bool) -> StreamOptions {
        self.server = self.server.reuse_port(on);
        self
    }

    /// The listen backlog.
    pub fn backlog(mut self, n: u32) -> StreamOptions {
        self.server = self.server.backlog(n);
        self
    }

    fn checked_limit(&self) -> io::Result<usize> {
        if self.limit == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "stream limit must be > 0",
            ));
        }
        Ok(self.limit)
    }
}

/// What the writer (and `wait_closed`) know of the connection.
#[derive(Default)]
pub(crate) struct ConnState {
    /// `pause_writing` was called and `resume_writing` not yet.
    paused: Cell<bool>,
    /// `connection_lost` was called.
    lost: Cell<bool>,
    /// Its error, if any.
    exc: RefCell<Option<io::Error>>,
    /// Tasks in `drain` or `wait_closed`.
    waiters: RefCell<Vec<Waker>>,
}

impl ConnState {
    fn wake_all(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Handed the new pair when a server's connection is made.
type OnConnect = Rc<dyn Fn(StreamReader, StreamWriter)>;

/// The protocol under a stream pair (asyncio's `StreamReaderProtocol`).
pub(crate) struct StreamProtocol {
    reader: Rc<RefCell<ReadState>>,
    conn: Rc<ConnState>,
    on_connect: Option<OnConnect>,
}

impl StreamProtocol {
    fn new(limit: usize, on_connect: Option<OnConnect>) -> StreamProtocol {
        StreamProtocol {
            reader: StreamReader::with_limit(limit).st,
            conn: Rc::new(ConnState::default()),
            on_connect,
        }
    }

    /// The pair over `transport`.
    fn pair(&self, transport: Transport) -> (StreamReader, StreamWriter) {
        (
            StreamReader {
                st: self.reader.clone(),
            },
            StreamWriter::new(transport, self.conn.clone(), Some(self.reader.clone())),
        )
    }
}

impl Protocol for StreamProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.reader.borrow_mut().set_transport(transport.clone());
        if let Some(f) = self.on_connect.take() {
            let (r, w) = self.pair(transport);
            f(r, w);
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        self.reader.borrow_mut().feed_from_transport(data);
    }

    fn eof_received(&mut self) -> bool {
        self.reader.borrow_mut().feed_eof();
        // Keep the write side open (half-close), as asyncio's
        // StreamReaderProtocol does over plain sockets.
        true
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        {
            let mut r = self.reader.borrow_mut();
            match &exc {
                None => r.feed_eof(),
                Some(e) => r.set_exc(clone_err(e)),
            }
            r.drop_transport();
        }
        self.conn.lost.set(true);
        *self.conn.exc.borrow_mut() = exc;
        self.conn.wake_all();
    }

    fn pause_writing(&mut self) {
        self.conn.paused.set(true);
    }

    fn resume_writing(&mut self) {
        self.conn.paused.set(false);
        self.conn.wake_all();
    }
}

/// The output of a [`start_server`] handler: `()`, or a `Result` whose
/// error is reported to the loop's exception handler (the connection is
/// then closed), as asyncio reports an exception from its callback.
pub trait HandlerOutput: 'static {
    /// The error to report, if any.
    fn into_error(self) -> Option<String>;
}

impl HandlerOutput for () {
    fn into_error(self) -> Option<String> {
        None
    }
}

impl<T: 'static, E: std::fmt::Display + 'static> HandlerOutput for Result<T, E> {
    fn into_error(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

fn handler_callback<H, Fut>(handler: H) -> OnConnect
where
    H: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    Rc::new(move |r: StreamReader, w: StreamWriter| {
        let transport = w.transport().clone();
        let fut = handler(r, w);
        let _detached = crate::spawn(async move {
            if let Some(msg) = fut.await.into_error() {
                let peer = transport
                    .peername()
                    .map_or_else(String::new, |p| format!(" (peer {p})"));
                crate::runtime::get_running_loop()
                    .inner
                    .report(crate::runtime::ExceptionContext {
                        message: format!("Unhandled error in client_connected_cb{peer}: {msg}"),
                        task_id: None,
                        panic_message: None,
                    });
                transport.close();
            }
        });
    })
}

/// Opens a TCP connection to `addr` (asyncio's `open_connection`); the
/// reader's limit is 64 KiB.
pub async fn open_connection(
    addr: impl crate::net::ToSocketAddrs,
) -> io::Result<(StreamReader, StreamWriter)> {
    open_connection_with(addr, &StreamOptions::default()).await
}

/// [`open_connection`] with options (the limit).
pub async fn open_connection_with(
    addr: impl crate::net::ToSocketAddrs,
    opts: &StreamOptions,
) -> io::Result<(StreamReader, StreamWriter)> {
    let limit = opts.checked_limit()?;
    let (t, p) = transport::create_connection(|| StreamProtocol::new(limit, None), addr).await?;
    let pair = p.borrow().pair(t);
    Ok(pair)
}

/// Connects to the Unix socket at `path` (asyncio's
/// `open_unix_connection`).
pub async fn open_unix_connection(
    path: impl AsRef<Path>,
) -> io::Result<(StreamReader, StreamWriter)> {
    open_unix_connection_with(path, &StreamOptions::default()).await
}

/// [`open_unix_connection`] with options (the limit).
pub async fn open_unix_connection_with(
    path: impl AsRef<Path>,
    opts: &StreamOptions,
) -> io::Result<(StreamReader, StreamWriter)> {
    let limit = opts.checked_limit()?;
    let (t, p) =
        transport::create_unix_connection(|| StreamProtocol::new(limit, None), path).await?;
    let pair = p.borrow().pair(t);
    Ok(pair)
}

/// [`open_unix_connection`] to any Unix address (an abstract name too).
pub async fn open_unix_connection_addr(
    addr: &UnixSocketAddr,
    opts: &StreamOptions,
) -> io::Result<(StreamReader, StreamWriter)> {
    let limit = opts.checked_limit()?;
    let (t, p) =
        transport::create_unix_connection_addr(|| StreamProtocol::new(limit, None), addr).await?;
    let pair = p.borrow().pair(t);
    Ok(pair)
}

/// Serves `addr` (every address it resolves to): each connection runs
/// `handler(reader, writer)` in its own task (asyncio's `start_server`).
/// Returns the same [`Server`] as [`transport::create_server`].
///
/// The handler's output is `()` or a `Result`: an `Err` is reported to
/// the loop's exception handler and the connection closed. When the
/// handler drops its writer the connection closes (after flushing).
pub async fn start_server<H, Fut>(
    handler: H,
    addr: impl crate::net::ToSocketAddrs,
) -> io::Result<Server>
where
    H: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    start_server_with(handler, addr, &StreamOptions::default()).await
}

/// [`start_server`] with options (limit, `reuse_port`, `backlog`).
pub async fn start_server_with<H, Fut>(
    handler: H,
    addr: impl crate::net::ToSocketAddrs,
    opts: &StreamOptions,
) -> io::Result<Server>
where
    H: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let limit = opts.checked_limit()?;
    let cb = handler_callback(handler);
    transport::create_server_with(
        move || StreamProtocol::new(limit, Some(cb.clone())),
        addr,
        &opts.server,
    )
    .await
}

/// Serves the Unix socket at `path` (a stale socket file is removed
/// first; asyncio's `start_unix_server`).
pub async fn start_unix_server<H, Fut>(handler: H, path: impl AsRef<Path>) -> io::Result<Server>
where
    H: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    start_unix_server_with(handler, path, &StreamOptions::default()).await
}

/// [`start_unix_server`] with options (the limit).
pub async fn start_unix_server_with<H, Fut>(
    handler: H,
    path: impl AsRef<Path>,
    opts: &StreamOptions,
) -> io::Result<Server>
where
    H: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let limit = opts.checked_limit()?;
    let cb = handler_callback(handler);
    transport::create_unix_server(move || StreamProtocol::new(limit, Some(cb.clone())), path).await
}

/// [`start_unix_server`] on any Unix address (an abstract name too).
pub async fn start_unix_server_addr<H, Fut>(
    handler: H,
    addr: &UnixSocketAddr,
    opts: &StreamOptions,
) -> io::Result<Server>
where
    H: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let limit = opts.checked_limit()?;
    let cb = handler_callback(handler);
    transport::create_unix_server_addr(move || StreamProtocol::new(limit, Some(cb.clone())), addr)
        .await
}

/// A reader fed by a pipe's read end (a child's stdout or stderr).
pub(crate) fn pipe_reader(fd: std::os::fd::OwnedFd, limit: usize) -> io::Result<StreamReader> {
    let (_t, p) = transport::read_pipe(|| StreamProtocol::new(limit, None), fd)?;
    let st = p.borrow().reader.clone();
    Ok(StreamReader { st })
}

/// A writer into a pipe's write end (a child's stdin).
pub(crate) fn pipe_writer(fd: std::os::fd::OwnedFd) -> io::Result<StreamWriter> {
    let (t, p) = transport::write_pipe(|| StreamProtocol::new(DEFAULT_LIMIT, None), fd)?;
    let conn = p.borrow().conn.clone();
    Ok(StreamWriter::new(t, conn, None))
}
