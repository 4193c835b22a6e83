//! Receiving into a [`BufRing`]: the [`RecvMulti`] stream, and reads that
//! first take what a dropped stream left behind.
//!
//! A multishot receive takes bytes out of the socket as they arrive. When
//! its stream is dropped, chunks already received but not yet yielded
//! (and any the kernel delivers before the cancellation lands) are not
//! lost: they are kept, in order, with the socket, and the socket's next
//! `read`, `readv` or `recv_multishot` returns them first (waiting, if
//! need be, until the cancelled receive has finished). A chunk kept this
//! way holds its ring buffer until it is read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BufResult;
use crate::buf::{BufRing, Chunk};
use crate::driver::bufring::{RecvItem, RecvLeftover};
use crate::driver::op::recv::RecvChunks;
use crate::driver::op::{Op, OpCode, ecanceled};
use crate::driver::{Cancellable, Canceller};

use super::TcpStream;

/// The stream of [`TcpStream::recv_multishot`]: chunks of received bytes
/// in ring buffers, in order, ending (`None`) at the end of the stream.
///
/// On io_uring with a kernel ring, one multishot `IORING_OP_RECV` serves
/// every chunk and is re-armed when the kernel ends it (the ring ran
/// empty: it waits for a buffer to come back first). Elsewhere a receive
/// per chunk fills a free buffer when the socket is readable. An error is
/// yielded once, then the stream ends.
///
/// Dropping it cancels the receive; chunks already received (and those
/// the kernel delivers before the cancellation lands) are kept, in order,
/// for the socket's next `read`, `readv` or `recv_multishot`: no byte is
/// lost.
pub struct RecvMulti<'a> {
    inner: RecvChunks,
    /// The socket: its leftover queue gets what a dropped stream had in
    /// flight.
    stream: Owner<'a>,
}

/// How a receive stream holds its socket.
enum Owner<'a> {
    Borrowed(&'a TcpStream),
    /// The transport layer's streams, kept next to the socket.
    Shared(std::rc::Rc<TcpStream>),
}

impl Owner<'_> {
    fn get(&self) -> &TcpStream {
        match self {
            Owner::Borrowed(s) => s,
            Owner::Shared(s) => s,
        }
    }
}

impl Drop for RecvMulti<'_> {
    fn drop(&mut self) {
        let s = self.stream.get();
        self.inner.abandon(|| s.leftover());
    }
}

impl std::fmt::Debug for RecvMulti<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvMulti")
            .field("kernel_ring", &self.inner.group().is_kernel())
            .finish()
    }
}

impl<'a> RecvMulti<'a> {
    pub(crate) fn new(s: &'a TcpStream, ring: &BufRing) -> RecvMulti<'a> {
        RecvMulti {
            inner: RecvChunks::new(s.raw_fd(), ring.group().clone(), s.existing_leftover()),
            stream: Owner::Borrowed(s),
        }
    }

    /// A stream that holds its socket (for transports).
    pub(crate) fn new_shared(s: &std::rc::Rc<TcpStream>, ring: &BufRing) -> RecvMulti<'static> {
        RecvMulti {
            inner: RecvChunks::new(s.raw_fd(), ring.group().clone(), s.existing_leftover()),
            stream: Owner::Shared(s.clone()),
        }
    }

    /// The next chunk, without a `Stream` (what transports call: they
    /// hand the chunk to `data_received`, then drop it).
    pub(crate) fn poll_next_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Chunk>>> {
        self.inner
            .poll_next(cx)
            .map(|r| r.map(|r| r.map(Chunk::new)))
    }
}

impl futures_core::Stream for RecvMulti<'_> {
    type Item = io::Result<Chunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_chunk(cx)
    }
}

/// Copies leftover bytes into a read's buffer(s); how many.
type Fill<I> = fn(&mut I, &[u8]) -> io::Result<usize>;

/// A stream socket with a user-space leftover queue (bytes a dropped
/// receive stream or a dropped `copy_bidirectional` put back): its reads
/// serve that first.
pub(crate) trait HasLeftover {
    /// The leftover queue if it has bytes, or receives still to finish.
    fn pending_leftover(&self) -> Option<RecvLeftover>;
}

impl HasLeftover for TcpStream {
    fn pending_leftover(&self) -> Option<RecvLeftover> {
        TcpStream::pending_leftover(self)
    }
}

/// A read on a socket whose dropped receive stream left chunks: they come
/// first, then the read op proper.
pub(crate) enum ReadFirst<'a, S, T: OpCode, I> {
    Op(Op<T>),
    Leftover {
        s: &'a S,
        leftover: RecvLeftover,
        input: Option<I>,
        fill: Fill<I>,
        make: fn(&'a S, I) -> Op<T>,
        canceller: Option<Canceller>,
    },
}

// Nothing is pinned structurally: `I` is only moved, never pinned.
impl<S, T: OpCode, I> Unpin for ReadFirst<'_, S, T, I> {}

impl<'a, S: HasLeftover, T, I> ReadFirst<'a, S, T, I>
where
    T: OpCode<Output = BufResult<usize, I>>,
{
    /// `make(s, input)` unless the socket has leftovers to serve first.
    pub(crate) fn new(
        s: &'a S,
        input: I,
        fill: Fill<I>,
        make: fn(&'a S, I) -> Op<T>,
    ) -> ReadFirst<'a, S, T, I> {
        match s.pending_leftover() {
            None => ReadFirst::Op(make(s, input)),
            Some(leftover) => ReadFirst::Leftover {
                s,
                leftover,
                input: Some(input),
                fill,
                make,
                canceller: None,
            },
        }
    }
}

impl<S, T, I> std::future::Future for ReadFirst<'_, S, T, I>
where
    T: OpCode<Output = BufResult<usize, I>>,
{
    type Output = BufResult<usize, I>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let op = match this {
                ReadFirst::Op(op) => return Pin::new(op).poll(cx),
                ReadFirst::Leftover {
                    s,
                    leftover,
                    input,
                    fill,
                    make,
                    canceller,
                } => {
                    let mut l = leftover.borrow_mut();
                    let front_pending = l.front_pending > 0;
                    if let Some(front) = l.items.front_mut().filter(|_| !front_pending) {
                        let mut buf = input.take().expect("read polled after completion");
                        let r = match front {
                            RecvItem::Data(e) => match fill(&mut buf, e.as_slice()) {
                                Ok(n) => {
                                    e.consume(n);
                                    if e.as_slice().is_empty() {
                                        l.items.pop_front();
                                    }
                                    Ok(n)
                                }
                                Err(err) => Err(err),
                            },
                            RecvItem::Bytes(v) => match fill(&mut buf, v) {
                                Ok(n) => {
                                    v.drain(..n);
                                    if v.is_empty() {
                                        l.items.pop_front();
                                    }
                                    Ok(n)
                                }
                                Err(err) => Err(err),
                            },
                            // Sticky, as on a socket.
                            RecvItem::Eof => Ok(0),
                            RecvItem::Err(_) => match l.items.pop_front() {
                                Some(RecvItem::Err(e)) => Err(e),
                                _ => Err(io::Error::other("leftover changed under a read")),
                            },
                        };
                        return Poll::Ready((r, buf));
                    }
                    if l.in_flight > 0 {
                        if canceller.as_ref().is_some_and(|c| c.is_cancelled()) {
                            let buf = input.take().expect("read polled after completion");
                            return Poll::Ready((Err(ecanceled()), buf));
                        }
                        l.waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    drop(l);
                    let buf = input.take().expect("read polled after completion");
                    let op = make(s, buf);
                    match canceller.take() {
                        Some(c) => op.with_canceller(&c),
                        None => op,
                    }
                }
            };
            *this = ReadFirst::Op(op);
        }
    }
}

impl<S, T, I> Cancellable for ReadFirst<'_, S, T, I>
where
    T: OpCode<Output = BufResult<usize, I>>,
{
    /// As for any op; while waiting for a dropped receive stream to
    /// finish, a fired canceller ends the read with `ECANCELED` at its
    /// next poll.
    fn with_canceller(self, c: &Canceller) -> Self {
        match self {
            ReadFirst::Op(op) => ReadFirst::Op(op.with_canceller(c)),
            ReadFirst::Leftover {
                s,
                leftover,
                input,
                fill,
                make,
                ..
            } => ReadFirst::Leftover {
                s,
                leftover,
                input,
                fill,
                make,
                canceller: Some(c.clone()),
            },
        }
    }
}
