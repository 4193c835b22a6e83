//! Transports and protocols: asyncio's callback layer, on both backends.
//!
//! A [`Protocol`] is an object whose methods the loop calls as things
//! happen on a connection (`connection_made`, `data_received`,
//! `eof_received`, `connection_lost`, and `pause_writing`/`resume_writing`
//! for flow control). A [`Transport`] is the protocol's handle on the
//! connection: `write` never blocks (it copies into the transport's
//! buffer), `close` flushes and then ends the connection, `abort` ends it
//! at once.
//!
//! ```no_run
//! use uringio::transport::{self, Protocol, Transport};
//!
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, data: &[u8]) { self.0.as_ref().unwrap().write(data); }
//! }
//!
//! uringio::run(async {
//!     let server = transport::create_server(|| Echo(None), "127.0.0.1:8888").await.unwrap();
//!     server.serve_forever().await;
//! });
//! ```
//!
//! ## How a connection runs
//! Each connection has a reader and a writer task. The reader receives
//! into a buffer and hands each chunk to `data_received` (end of stream to
//! `eof_received`); the writer sends what `write` buffered — everything
//! buffered in one loop iteration goes out in one send (or one `writev`).
//! Callbacks never nest: a transport method called from a callback that
//! would trigger another callback (`close()` → `connection_lost`, the
//! buffer passing the high-water mark → `pause_writing`) schedules it with
//! `call_soon`. A callback that panics is reported to the loop's exception
//! handler, the transport is aborted (`connection_lost` gets the panic as
//! an error), and every other connection goes on.
//!
//! ## Flow control, as asyncio's
//! `pause_writing` when the write buffer passes the high-water mark
//! (default 64 KiB), `resume_writing` once it drains to the low one
//! (16 KiB); `pause_reading` stops receiving (the chunk already received is
//! held back until `resume_reading`), so the kernel's buffer fills and the
//! peer's sends block: memory stays bounded under a fast sender.

mod datagram;
mod pipe;
mod server;
mod stream;
mod subprocess;

pub use datagram::{
    DatagramOptions, DatagramTransport, create_datagram_endpoint, create_datagram_endpoint_with,
};
pub use pipe::{connect_read_pipe, connect_write_pipe};
pub(crate) use pipe::{read_pipe, write_pipe};
pub use server::{
    Server, ServerOptions, create_server, create_server_with, create_unix_server,
    create_unix_server_addr,
};
pub use stream::{
    SockAddr, Transport, create_connection, create_unix_connection, create_unix_connection_addr,
};
pub use subprocess::{SubprocessTransport, subprocess_command, subprocess_exec, subprocess_shell};

use std::io;
use std::net::SocketAddr;

/// A stream protocol (asyncio's `asyncio.Protocol`).
///
/// The loop calls these methods; only `data_received` must be written.
pub trait Protocol: 'static {
    /// The connection is up; `transport` is the handle to write and close
    /// with (keep a clone).
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Bytes arrived.
    fn data_received(&mut self, data: &[u8]);

    /// The peer closed its write side. Return `true` to keep this side open
    /// for writing (half-close); `false` (the default) closes the
    /// transport.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is gone: `None` after a clean close (or `abort`),
    /// the error otherwise. Called exactly once, last.
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// The transport's write buffer passed the high-water mark: stop
    /// writing until `resume_writing`.
    fn pause_writing(&mut self) {}

    /// The write buffer drained below the low-water mark.
    fn resume_writing(&mut self) {}
}

/// A stream protocol that receives into its own buffer (asyncio's
/// `BufferedProtocol`). Use it through [`Buffered`], which makes it a
/// [`Protocol`]: `create_connection(|| Buffered(MyProto::new()), addr)`.
///
/// Received bytes are copied once into the slice `get_buffer` returns
/// (the kernel writes into memory the loop owns, so that the buffer
/// outlives any cancelled receive), then `buffer_updated` says how many.
pub trait BufferedProtocol: 'static {
    /// See [`Protocol::connection_made`].
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// A buffer to receive into; `size_hint` is how many bytes are
    /// waiting. Must not be empty.
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];

    /// `nbytes` bytes were written at the start of the last buffer.
    fn buffer_updated(&mut self, nbytes: usize);

    /// See [`Protocol::eof_received`].
    fn eof_received(&mut self) -> bool {
        false
    }

    /// See [`Protocol::connection_lost`].
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// See [`Protocol::pause_writing`].
    fn pause_writing(&mut self) {}

    /// See [`Protocol::resume_writing`].
    fn resume_writing(&mut self) {}
}

/// Makes a [`BufferedProtocol`] a [`Protocol`] (see there).
#[derive(Debug, Default)]
pub struct Buffered<P>(pub P);

impl<P: BufferedProtocol> Protocol for Buffered<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.0.connection_made(transport);
    }

    fn data_received(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let buf = self.0.get_buffer(data.len());
            let n = buf.len().min(data.len());
            assert!(
                n > 0,
                "BufferedProtocol::get_buffer returned an empty buffer"
            );
            buf[..n].copy_from_slice(&data[..n]);
            self.0.buffer_updated(n);
            data = &data[n..];
        }
    }

    fn eof_received(&mut self) -> bool {
        self.0.eof_received()
    }

    fn connection_lost(&mut self, exc: Option<io::Error>) {
        self.0.connection_lost(exc);
    }

    fn pause_writing(&mut self) {
        self.0.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.0.resume_writing();
    }
}

/// A datagram protocol (asyncio's `DatagramProtocol`).
pub trait DatagramProtocol: 'static {
    /// The endpoint is ready.
    fn connection_made(&mut self, transport: DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`.
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr);

    /// A send or receive failed (e.g. `ConnectionRefused` on a connected
    /// endpoint after an ICMP port-unreachable). The endpoint goes on.
    fn error_received(&mut self, exc: io::Error) {
        let _ = exc;
    }

    /// The endpoint was closed.
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// See [`Protocol::pause_writing`].
    fn pause_writing(&mut self) {}

    /// See [`Protocol::resume_writing`].
    fn resume_writing(&mut self) {}
}

/// A subprocess protocol (asyncio's `SubprocessProtocol`), run by
/// [`subprocess_exec`] / [`subprocess_shell`]. Only `pipe_data_received`
/// must be written.
pub trait SubprocessProtocol: 'static {
    /// The child is running; `transport` signals it, closes it and gives
    /// its pipes' transports (keep a clone). Called before any other
    /// callback.
    fn connection_made(&mut self, transport: SubprocessTransport) {
        let _ = transport;
    }

    /// Data arrived on the child's stdout (`fd` 1) or stderr (2).
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]);

    /// One of the child's pipes closed (`fd` 0, 1 or 2): `None` after a
    /// clean close or end of stream, the error otherwise (`BrokenPipe` on
    /// stdin when the child stopped reading).
    fn pipe_connection_lost(&mut self, fd: i32, exc: Option<io::Error>) {
        let _ = (fd, exc);
    }

    /// The child exited; called after every pipe's
    /// `pipe_connection_lost`.
    fn process_exited(&mut self) {}

    /// The transport is done (right after `process_exited`).
    fn connection_lost(&mut self, exc: Option<io::Error>) {
        let _ = exc;
    }

    /// The child's stdin pipe buffer passed the high-water mark.
    fn pause_writing(&mut self) {}

    /// The child's stdin pipe buffer drained below the low-water mark.
    fn resume_writing(&mut self) {}
}
