//! `StreamWriter`: the writing half, over the transport's buffer.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use super::ConnState;
use super::reader::{ReadState, clone_err};
use crate::transport::{SockAddr, Transport};

/// The writing half of a stream connection (asyncio's `StreamWriter`).
///
/// `write` buffers in the transport and never waits; `drain().await` is
/// the flow-control point: it waits while the transport's buffer is above
/// its high-water mark (64 KiB by default) and returns the connection's
/// error once it is lost. Writes made before one `drain` (or in one loop
/// iteration) go out together in one send.
///
/// Dropping the writer closes the connection once what was written is
/// sent (like [`close`](Self::close)).
pub struct StreamWriter {
    transport: Transport,
    conn: Rc<ConnState>,
    reader: Option<Rc<RefCell<ReadState>>>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("transport", &self.transport)
            .finish()
    }
}

impl StreamWriter {
    pub(crate) fn new(
        transport: Transport,
        conn: Rc<ConnState>,
        reader: Option<Rc<RefCell<ReadState>>>,
    ) -> StreamWriter {
        StreamWriter {
            transport,
            conn,
            reader,
        }
    }

    /// Buffers `data` to be sent (copies it; never waits). Follow with
    /// [`drain`](Self::drain) to respect flow control. Writing after
    /// `close` or `write_eof` is ignored, as asyncio does.
    pub fn write(&self, data: &[u8]) {
        self.transport.write(data);
    }

    /// Buffers each of `chunks`.
    pub fn writelines<I, B>(&self, chunks: I)
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.transport.writelines(chunks);
    }

    /// Waits until the buffer may be written to again: at once unless the
    /// transport paused writing (its buffer passed the high-water mark),
    /// else until it drained to the low-water mark.
    ///
    /// # Errors
    /// The connection's error once it is lost (or the reader's, as
    /// asyncio), `ConnectionReset` if it closed cleanly. Dropping the
    /// future loses nothing already written.
    pub async fn drain(&self) -> io::Result<()> {
        if let Some(r) = &self.reader {
            if let Some(e) = r.borrow().exception() {
                return Err(e);
            }
        }
        if self.transport.is_closing() && !self.conn.lost.get() {
            // Let a scheduled connection_lost run first (asyncio's
            // `sleep(0)` here), so that the error below is seen.
            crate::task::yield_now().await;
        }
        poll_fn(|cx| {
            if self.conn.lost.get() {
                let e = match &*self.conn.exc.borrow() {
                    Some(e) => clone_err(e),
                    None => io::Error::new(io::ErrorKind::ConnectionReset, "connection lost"),
                };
                return Poll::Ready(Err(e));
            }
            // `pause_writing` is delivered with `call_soon`: right after a
            // big `write` the transport knows before the protocol does.
            if !self.conn.paused.get() && !self.transport.write_paused() {
                return Poll::Ready(Ok(()));
            }
            let mut ws = self.conn.waiters.borrow_mut();
            if !ws.iter().any(|w| w.will_wake(cx.waker())) {
                ws.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Closes the write side once the buffer is flushed (the peer sees end
    /// of stream); reading goes on.
    pub fn write_eof(&self) {
        self.transport.write_eof();
    }

    /// Whether [`write_eof`](Self::write_eof) is possible.
    pub fn can_write_eof(&self) -> bool {
        self.transport.can_write_eof()
    }

    /// Closes the connection once the buffer is flushed.
    pub fn close(&self) {
        self.transport.close();
    }

    /// Whether the connection is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.transport.is_closing()
    }

    /// Waits until the connection is closed (its `connection_lost`). Does
    /// not close it: call [`close`](Self::close) first.
    pub async fn wait_closed(&self) {
        poll_fn(|cx| {
            if self.conn.lost.get() {
                return Poll::Ready(());
            }
            let mut ws = self.conn.waiters.borrow_mut();
            if !ws.iter().any(|w| w.will_wake(cx.waker())) {
                ws.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// The peer's address.
    pub fn peername(&self) -> Option<SockAddr> {
        self.transport.peername()
    }

    /// The local address.
    pub fn sockname(&self) -> Option<SockAddr> {
        self.transport.sockname()
    }

    /// The transport underneath.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Bytes buffered and not yet sent.
    pub fn get_write_buffer_size(&self) -> usize {
        self.transport.get_write_buffer_size()
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.transport.close();
    }
}
