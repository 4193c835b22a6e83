//! `StreamReader`: a buffer the transport fills and the reading methods
//! take from.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::error::{IncompleteReadError, LimitOverrunError};
use crate::transport::Transport;

/// asyncio's default limit: 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// A copy of an `io::Error` (the type is not `Clone`): the same OS code,
/// or the same kind and message.
pub(crate) fn clone_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// What a reader and the protocol feeding it share.
pub(crate) struct ReadState {
    /// Received bytes; the unread ones are `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    exc: Option<io::Error>,
    /// The task waiting for data.
    waker: Option<Waker>,
    /// Paused and resumed as the buffer fills and drains.
    transport: Option<Transport>,
    paused: bool,
    limit: usize,
    /// How many bytes the pending read needs (`readexactly(n)`: n;
    /// `read_to_end`: all): the transport is not paused below that.
    want: usize,
}

impl ReadState {
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Takes the first `n` unread bytes.
    fn take(&mut self, n: usize) -> Vec<u8> {
        debug_assert!(n <= self.len());
        let out = if self.start == 0 && n == self.buf.len() && self.buf.capacity() <= 2 * n {
            // All of it, and the allocation fits: hand it over.
            std::mem::take(&mut self.buf)
        } else {
            let v = self.buf[self.start..self.start + n].to_vec();
            self.start += n;
            v
        };
        self.consumed();
        out
    }

    /// After bytes were taken: reset an empty buffer, resume a paused
    /// transport once at or below the limit (asyncio's
    /// `_maybe_resume_transport`).
    fn consumed(&mut self) {
        self.want = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // Do not keep a big transfer's allocation around while idle.
            if self.buf.capacity() > 4 * self.limit.max(DEFAULT_LIMIT) {
                self.buf = Vec::new();
            }
        }
        if self.paused && self.len() <= self.limit {
            self.paused = false;
            if let Some(t) = &self.transport {
                t.resume_reading();
            }
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.start > 0
            && (self.start >= self.buf.len() / 2
                || self.buf.capacity() - self.buf.len() < data.len())
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        self.wake();
        // asyncio's rule: pause above twice the limit (or above what the
        // pending read waits for).
        if !self.paused && self.len() > (2 * self.limit).max(self.want) {
            if let Some(t) = &self.transport {
                self.paused = true;
                t.pause_reading();
            }
        }
    }

    fn exc(&self) -> Option<io::Error> {
        self.exc.as_ref().map(clone_err)
    }

    /// Registers the waiting task; `want` is how many bytes it waits for
    /// (the transport is resumed if it is paused below that).
    fn wait_for(&mut self, cx: &mut Context<'_>, want: usize) {
        self.want = want;
        if self.paused && self.len() < want {
            self.paused = false;
            if let Some(t) = &self.transport {
                t.resume_reading();
            }
        }
        self.wait(cx);
    }

    /// Registers the waiting task.
    fn wait(&mut self, cx: &mut Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<Vec<u8>>> {
        if n == 0 {
            return Poll::Ready(Ok(Vec::new()));
        }
        if self.len() > 0 {
            let k = n.min(self.len());
            return Poll::Ready(Ok(self.take(k)));
        }
        if let Some(e) = self.exc() {
            return Poll::Ready(Err(e));
        }
        if self.eof {
            return Poll::Ready(Ok(Vec::new()));
        }
        self.wait_for(cx, 0);
        Poll::Pending
    }

    fn poll_read_to_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        if let Some(e) = self.exc() {
            return Poll::Ready(Err(e));
        }
        if self.eof {
            let n = self.len();
            return Poll::Ready(Ok(self.take(n)));
        }
        // Reading to the end is unbounded by design: keep receiving.
        self.wait_for(cx, usize::MAX);
        Poll::Pending
    }

    fn poll_readexactly(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<Vec<u8>>> {
        if self.len() >= n {
            return Poll::Ready(Ok(self.take(n)));
        }
        if let Some(e) = self.exc() {
            return Poll::Ready(Err(e));
        }
        if self.eof {
            let partial = self.take(self.len());
            return Poll::Ready(Err(IncompleteReadError {
                partial,
                expected: Some(n),
            }
            .into()));
        }
        // Waiting for more than the limit must not stall on our own
        // pause: keep reading until `n` bytes are here.
        self.wait_for(cx, n);
        Poll::Pending
    }

    /// `readuntil`'s body; `offset` is where the search goes on (kept by
    /// the caller between polls).
    fn poll_readuntil(
        &mut self,
        cx: &mut Context<'_>,
        sep: &[u8],
        offset: &mut usize,
    ) -> Poll<io::Result<Vec<u8>>> {
        if sep.is_empty() {
            return Poll::Ready(Err(crate::error::ValueError::new(
                "readuntil: the separator must not be empty",
            )
            .into()));
        }
        let seplen = sep.len();
        let data = self.data();
        let buflen = data.len();
        if buflen >= *offset + seplen {
            if let Some(i) = find(&data[*offset..], sep) {
                let isep = *offset + i;
                *offset = 0;
                if isep > self.limit {
                    return Poll::Ready(Err(LimitOverrunError {
                        consumed: isep,
                        message: "separator is found, but chunk is longer than limit".to_string(),
                    }
                    .into()));
                }
                return Poll::Ready(Ok(self.take(isep + seplen)));
            }
            *offset = buflen + 1 - seplen;
            if *offset > self.limit {
                let consumed = *offset;
                *offset = 0;
                return Poll::Ready(Err(LimitOverrunError {
                    consumed,
                    message: "separator is not found, and chunk exceeds the limit".to_string(),
                }
                .into()));
            }
        }
        if let Some(e) = self.exc() {
            return Poll::Ready(Err(e));
        }
        if self.eof {
            *offset = 0;
            let partial = self.take(self.len());
            return Poll::Ready(Err(IncompleteReadError {
                partial,
                expected: None,
            }
            .into()));
        }
        // Below twice the limit the transport keeps feeding; a paused
        // transport with no separator in sight ended above.
        self.wait_for(cx, 0);
        Poll::Pending
    }

    fn poll_readline(
        &mut self,
        cx: &mut Context<'_>,
        offset: &mut usize,
    ) -> Poll<io::Result<Vec<u8>>> {
        match self.poll_readuntil(cx, b"\n", offset) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                match e.into_inner().map(|b| b.downcast::<IncompleteReadError>()) {
                    Some(Ok(inc)) => Poll::Ready(Ok(inc.partial)),
                    Some(Err(other)) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, other)))
                    }
                    None => Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                }
            }
            r => r,
        }
    }

    /// Everything buffered (up to the limit), for the chunk stream.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Vec<u8>>>> {
        if self.len() > 0 {
            let n = self.len().min(self.limit.max(1));
            return Poll::Ready(Some(Ok(self.take(n))));
        }
        if let Some(e) = self.exc.take() {
            // Once: the stream ends after its error.
            self.eof = true;
            return Poll::Ready(Some(Err(e)));
        }
        if self.eof {
            return Poll::Ready(None);
        }
        self.wait_for(cx, 0);
        Poll::Pending
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return hay.iter().position(|&b| b == needle[0]);
    }
    let first = needle[0];
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(k) => {
                i += k;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The reading half of a stream connection (asyncio's `StreamReader`).
///
/// Fed by its transport (or by hand with [`feed_data`](Self::feed_data) /
/// [`feed_eof`](Self::feed_eof)); the reading methods take from its
/// buffer. Every reading method is cancellation-safe: a future dropped
/// before it completes has taken nothing, and the next call sees the
/// bytes.
///
/// The buffer is bounded by the *limit* (default 64 KiB): above twice the
/// limit the transport stops receiving until the buffer drains to the
/// limit, so a fast sender cannot grow it without bound; `readline` and
/// `readuntil` refuse lines longer than the limit.
///
/// Errors, as asyncio's: `readexactly` short at end of stream fails with
/// kind `UnexpectedEof` carrying [`IncompleteReadError`] (recover it with
/// `e.get_ref().and_then(|e| e.downcast_ref::<IncompleteReadError>())`);
/// `readuntil`/`readline` past the limit fail with kind `InvalidData`
/// carrying [`LimitOverrunError`], the data left in the buffer (take it
/// with `read(consumed)` to go on). A connection error is returned once
/// the bytes received before it are read: no data is lost.
///
/// It is also a [`Stream`](futures_core::Stream) of chunks (each at most
/// the limit long), and [`lines`](Self::lines) gives a stream of lines.
pub struct StreamReader {
    pub(crate) st: Rc<RefCell<ReadState>>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.st.borrow();
        f.debug_struct("StreamReader")
            .field("buffered", &st.len())
            .field("limit", &st.limit)
            .field("eof", &st.eof)
            .field("paused", &st.paused)
            .field("exception", &st.exc)
            .finish()
    }
}

impl Default for StreamReader {
    fn default() -> Self {
        StreamReader::new()
    }
}

impl StreamReader {
    /// A reader with the default limit (64 KiB), fed by hand.
    pub fn new() -> StreamReader {
        StreamReader::with_limit(DEFAULT_LIMIT)
    }

    /// A reader with limit `limit`, fed by hand.
    ///
    /// # Panics
    /// If `limit` is 0 (asyncio raises `ValueError`).
    pub fn with_limit(limit: usize) -> StreamReader {
        assert!(limit > 0, "StreamReader limit must be > 0");
        StreamReader {
            st: Rc::new(RefCell::new(ReadState {
                buf: Vec::new(),
                start: 0,
                eof: false,
                exc: None,
                waker: None,
                transport: None,
                paused: false,
                limit,
                want: 0,
            })),
        }
    }

    /// A handle that feeds this reader (as its protocol does): for readers
    /// fed by something other than a transport, and for tests.
    pub fn feeder(&self) -> StreamFeeder {
        StreamFeeder {
            st: self.st.clone(),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.st.borrow().limit
    }

    /// Adds bytes to the buffer, as the transport does.
    ///
    /// # Panics
    /// After [`feed_eof`](Self::feed_eof) (asyncio asserts the same).
    pub fn feed_data(&self, data: &[u8]) {
        let mut st = self.st.borrow_mut();
        assert!(!st.eof, "feed_data after feed_eof");
        st.feed(data);
    }

    /// Marks end of stream.
    pub fn feed_eof(&self) {
        let mut st = self.st.borrow_mut();
        st.eof = true;
        st.wake();
    }

    /// Makes every read fail with `exc` once the buffered bytes are read.
    pub fn set_exception(&self, exc: io::Error) {
        let mut st = self.st.borrow_mut();
        st.exc = Some(exc);
        st.wake();
    }

    /// The error set by the transport or [`set_exception`](Self::set_exception), if any.
    pub fn exception(&self) -> Option<io::Error> {
        self.st.borrow().exc()
    }

    /// End of stream was seen and every byte read.
    pub fn at_eof(&self) -> bool {
        let st = self.st.borrow();
        st.eof && st.len() == 0
    }

    /// Bytes received and not read yet.
    pub fn buffered(&self) -> usize {
        self.st.borrow().len()
    }

    /// Up to `n` bytes: what is buffered, else waits for the next bytes;
    /// empty at end of stream (and for `n == 0`).
    pub async fn read(&mut self, n: usize) -> io::Result<Vec<u8>> {
        poll_fn(|cx| self.st.borrow_mut().poll_read(cx, n)).await
    }

    /// Every byte until end of stream (asyncio's `read(-1)`).
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        poll_fn(|cx| self.st.borrow_mut().poll_read_to_end(cx)).await
    }

    /// One line, with its `\n`; at end of stream the last bytes without
    /// one, then empty. Past the limit: `InvalidData` carrying
    /// [`LimitOverrunError`], the data left in the buffer.
    pub async fn readline(&mut self) -> io::Result<Vec<u8>> {
        let mut offset = 0;
        poll_fn(|cx| self.st.borrow_mut().poll_readline(cx, &mut offset)).await
    }

    /// Exactly `n` bytes; at end of stream first, `UnexpectedEof`
    /// carrying [`IncompleteReadError`] with the bytes there were (they
    /// are consumed).
    pub async fn readexactly(&mut self, n: usize) -> io::Result<Vec<u8>> {
        poll_fn(|cx| self.st.borrow_mut().poll_readexactly(cx, n)).await
    }

    /// Bytes up to and including `sep` (one or more bytes). At end of
    /// stream first: `UnexpectedEof` carrying [`IncompleteReadError`]
    /// (`expected: None`). Not found within the limit: `InvalidData`
    /// carrying [`LimitOverrunError`], the data left in the buffer. An
    /// empty `sep` is `InvalidInput`.
    pub async fn readuntil(&mut self, sep: &[u8]) -> io::Result<Vec<u8>> {
        let mut offset = 0;
        poll_fn(|cx| self.st.borrow_mut().poll_readuntil(cx, sep, &mut offset)).await
    }

    /// A stream of lines (each with its `\n`; the last may lack it), ending
    /// at end of stream; asyncio's `async for line in reader`. A line over
    /// the limit is an `InvalidData` item ([`LimitOverrunError`]) with the
    /// data left in the buffer: skip it with `read(consumed)` and poll
    /// again, or stop; any other error ends the stream.
    pub fn lines(&mut self) -> Lines<'_> {
        Lines {
            reader: self,
            offset: 0,
            done: false,
        }
    }
}

/// Feeds a [`StreamReader`] (see [`StreamReader::feeder`]); the same
/// methods as the reader's own `feed_data`, `feed_eof`, `set_exception`.
#[derive(Clone)]
pub struct StreamFeeder {
    st: Rc<RefCell<ReadState>>,
}

impl std::fmt::Debug for StreamFeeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFeeder").finish_non_exhaustive()
    }
}

impl StreamFeeder {
    /// See [`StreamReader::feed_data`].
    ///
    /// # Panics
    /// After `feed_eof`.
    pub fn feed_data(&self, data: &[u8]) {
        let mut st = self.st.borrow_mut();
        assert!(!st.eof, "feed_data after feed_eof");
        st.feed(data);
    }

    /// See [`StreamReader::feed_eof`].
    pub fn feed_eof(&self) {
        self.st.borrow_mut().feed_eof();
    }

    /// See [`StreamReader::set_exception`].
    pub fn set_exception(&self, exc: io::Error) {
        self.st.borrow_mut().set_exc(exc);
    }
}

impl futures_core::Stream for StreamReader {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.st.borrow_mut().poll_chunk(cx)
    }
}

/// The lines of a [`StreamReader`] (see [`StreamReader::lines`]).
pub struct Lines<'a> {
    reader: &'a mut StreamReader,
    offset: usize,
    done: bool,
}

impl std::fmt::Debug for Lines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("reader", &self.reader)
            .finish()
    }
}

impl futures_core::Stream for Lines<'_> {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let r = this
            .reader
            .st
            .borrow_mut()
            .poll_readline(cx, &mut this.offset);
        match r {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(line)) if line.is_empty() => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(line)) => Poll::Ready(Some(Ok(line))),
            Poll::Ready(Err(e)) => {
                // A line over the limit can be skipped and the stream
                // polled again; any other error ends it.
                if e.kind() != io::ErrorKind::InvalidData {
                    this.done = true;
                }
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// The feeding side, for the protocol.
impl ReadState {
    pub(crate) fn set_transport(&mut self, t: Transport) {
        self.transport = Some(t);
    }
    pub(crate) fn feed_from_transport(&mut self, data: &[u8]) {
        self.feed(data);
    }
    pub(crate) fn feed_eof(&mut self) {
        self.eof = true;
        self.wake();
    }
    pub(crate) fn set_exc(&mut self, e: io::Error) {
        self.exc = Some(e);
        self.wake();
    }
    pub(crate) fn exception(&self) -> Option<io::Error> {
        self.exc()
    }
    /// The connection is gone: let go of the transport (it holds the
    /// protocol, which holds this state).
    pub(crate) fn drop_transport(&mut self) {
        self.transport = None;
    }
}
