//! Owned buffers: every I/O op takes its buffer by value and hands it back.
//!
//! [`IoBuf`] is a buffer the kernel may read from (writes send its
//! initialised bytes); [`IoBufMut`] one it may write into (reads fill its
//! spare capacity, between the initialised length and the capacity, and
//! advance the initialised length). Both promise a memory address that does
//! not change while the buffer is owned by an op, even if the value is moved.
//!
//! ## The initialised bytes stay contiguous
//! A buffer's initialised bytes are always `0..bytes_init()`: no op ever
//! lets that length cover a byte that nothing wrote. A read into a
//! [`Slice`] whose window starts past the inner buffer's initialised bytes
//! (`Vec::with_capacity(64).slice(32..64)`) writes at the window; the gap
//! between the inner buffer's initialised length and the window is then
//! zero-filled, so the inner buffer's initialised bytes stay contiguous
//! (`vec.len() == 32 + n`, bytes `0..32` zero) and no byte read is lost. A
//! read of 0 bytes (end of stream) changes nothing.
//!
//! ## Reading into a buffer that is already initialised
//! Reads fill *spare* capacity: a full `Vec` or a `Box<[u8]>` has none, and
//! a read into one is an `InvalidInput` error. Wrap it in an [`Overwrite`]
//! (or call [`IoBufMut::overwrite`]) to let reads write over its bytes from
//! the start.
//!
//! ## Provided-buffer rings
//! [`BufRing`] is a pool of buffers that receives pick from as data
//! arrives (`IORING_REGISTER_PBUF_RING` on io_uring, emulated on epoll);
//! [`TcpStream::recv_multishot`](crate::net::TcpStream::recv_multishot)
//! yields [`Chunk`]s of it, which go back to the ring when dropped.
//!
//! ## Storage buffers
//! [`AlignedBuf`] has an alignment and capacity chosen at creation (for
//! `O_DIRECT`); [`FixedBufPool`] registers a set of them with the ring
//! (`IORING_REGISTER_BUFFERS2`; plain memory on epoll) and hands out
//! [`FixedBuf`]s for [`File::read_fixed_at`](crate::fs::File::read_fixed_at)
//! and [`write_fixed_at`](crate::fs::File::write_fixed_at).

use std::ops::{Bound, Deref, DerefMut, RangeBounds};

mod aligned;
mod fixed;
mod ring;

pub use aligned::AlignedBuf;
pub use fixed::{FixedBuf, FixedBufPool, NextBuf};
pub use ring::{BufRing, Chunk};

/// An op's result together with its buffer, handed back either way.
pub type BufResult<T, B> = (std::io::Result<T>, B);

/// A buffer whose initialised bytes the kernel may read.
///
/// # Safety
/// `stable_ptr` must point to at least `bytes_total` bytes, of which the
/// first `bytes_init` are initialised, and stay valid and unchanged in
/// address while the value lives, even when it is moved (heap memory or
/// `'static` memory).
pub unsafe trait IoBuf: 'static {
    /// The start of the buffer.
    fn stable_ptr(&self) -> *const u8;
    /// How many bytes are initialised (what a write sends).
    fn bytes_init(&self) -> usize;
    /// The capacity.
    fn bytes_total(&self) -> usize;

    /// A view of `range` of this buffer, owning it.
    ///
    /// The range is of the buffer's capacity, not only of its initialised
    /// bytes: a read into the slice fills the window's spare part. When the
    /// window starts past the buffer's initialised bytes, a read zero-fills
    /// the gap before it (see [`Slice`]), so the buffer's initialised bytes
    /// stay contiguous.
    ///
    /// # Panics
    /// If the range is out of the buffer's capacity.
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        // Saturating: `..=usize::MAX` is out of any buffer, and says so.
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.saturating_add(1),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_total(),
        };
        assert!(
            begin <= end && end <= self.bytes_total(),
            "slice {begin}..{end} out of a buffer of capacity {}",
            self.bytes_total()
        );
        Slice {
            buf: self,
            begin,
            end,
        }
    }
}

/// A buffer the kernel may write into.
///
/// # Safety
/// As [`IoBuf`]; `stable_mut_ptr` points to `bytes_total` writable bytes,
/// and `set_init` may only be told of bytes that really were written.
pub unsafe trait IoBufMut: IoBuf {
    /// The start of the buffer, writable.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Marks the first `pos` bytes as initialised (never shrinks).
    ///
    /// # Safety
    /// The first `pos` bytes must be initialised, and `pos <= bytes_total`.
    unsafe fn set_init(&mut self, pos: usize);

    /// This buffer, with its whole capacity offered to reads (see
    /// [`Overwrite`]).
    fn overwrite(self) -> Overwrite<Self>
    where
        Self: Sized,
    {
        Overwrite::new(self)
    }
}

// SAFETY: a Vec's heap buffer does not move when the Vec does; `len` bytes
// are initialised out of `capacity`.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as above; the capacity is writable.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // Never past the capacity, whatever the caller says.
        let pos = pos.min(self.capacity());
        if pos > self.len() {
            // SAFETY: the caller promises `pos` bytes are initialised, and
            // pos <= capacity (clamped above).
            unsafe { self.set_len(pos) }
        }
    }
}

// SAFETY: a boxed slice's heap memory does not move with the box; all of it
// is initialised.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: all bytes are initialised and writable; set_init has nothing to do.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: 'static memory never moves and is never freed.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for &'static [u8].
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: a String's heap buffer does not move with it. Only IoBuf: the
// kernel writing into it could break UTF-8.
unsafe impl IoBuf for String {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

/// A range of a buffer, owning the buffer. [`into_inner`](Self::into_inner)
/// gives it back.
///
/// A read into a slice writes at the window's first spare byte. The inner
/// buffer's initialised length then grows to cover what was read, and never
/// further: if the inner buffer was initialised only up to a point before
/// the window, the bytes between that point and the window are zero-filled
/// first, so they are never exposed uninitialised. A read of 0 bytes
/// changes nothing.
///
/// ```no_run
/// use uringio::buf::IoBuf;
/// # async fn f(s: uringio::net::TcpStream) {
/// let (res, slice) = s.read(Vec::with_capacity(64).slice(32..64)).await;
/// let n = res.unwrap();
/// let v = slice.into_inner();
/// if n > 0 {
///     assert_eq!(v.len(), 32 + n);
///     assert!(v[..32].iter().all(|&b| b == 0)); // the gap, zero-filled
/// } else {
///     assert_eq!(v.len(), 0); // end of stream: untouched
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B> Slice<B> {
    /// The buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// The buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// Where the range starts.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Where the range ends.
    pub fn end(&self) -> usize {
        self.end
    }
}

// SAFETY: the range lies within the inner buffer's capacity (checked at
// construction) and shares its stable address.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: begin <= bytes_total of the inner buffer.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }
    fn bytes_init(&self) -> usize {
        self.buf.bytes_init().clamp(self.begin, self.end) - self.begin
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: as above; writes stay within the range.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: begin <= bytes_total of the inner buffer.
        unsafe { self.buf.stable_mut_ptr().add(self.begin) }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // Never past the window, whatever the caller says.
        let pos = pos.min(self.end - self.begin);
        let inner_init = self.buf.bytes_init();
        let end = self.begin + pos;
        if pos == 0 || end <= inner_init {
            return;
        }
        if inner_init < self.begin {
            // The read wrote at `begin..`; nothing wrote the gap before it.
            // SAFETY: inner_init < begin <= the inner's bytes_total, and the
            // IoBufMut contract makes stable_mut_ptr writable up to
            // bytes_total; we own the buffer.
            unsafe {
                std::ptr::write_bytes(
                    self.buf.stable_mut_ptr().add(inner_init),
                    0,
                    self.begin - inner_init,
                )
            }
        }
        // SAFETY: inner bytes 0..inner_init were initialised already, the gap
        // up to `begin` was just zeroed (or begin <= inner_init), and the
        // caller promises begin..begin+pos were written; end <= the inner's
        // bytes_total since the window lies within it.
        unsafe { self.buf.set_init(end) }
    }
}

impl<B: IoBuf> Deref for Slice<B> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: bytes_init bytes from stable_ptr are initialised.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.bytes_init()) }
    }
}

impl<B: IoBufMut> DerefMut for Slice<B> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let n = self.bytes_init();
        // SAFETY: as above, and we own the buffer mutably.
        unsafe { std::slice::from_raw_parts_mut(self.stable_mut_ptr(), n) }
    }
}

/// A buffer whose whole capacity is offered to reads, as if it were empty:
/// the way to read into a `Box<[u8]>` or a full `Vec` without copying.
///
/// Reads write from the start of the buffer, over whatever it held.
/// [`bytes_init`](IoBuf::bytes_init) is what reads have filled since the
/// `Overwrite` was made (or [`clear`](Self::clear)ed), [`filled`](Self::filled);
/// the [`Deref`] target is those bytes. So an `Overwrite` can go straight to
/// a write, which sends what was read: an echo on a `Box<[u8]>` copies
/// nothing. [`into_inner`](Self::into_inner) gives the buffer back (a `Vec`'s
/// length grows to cover what was read but never shrinks, so compare with
/// [`filled`](Self::filled)).
///
/// ```no_run
/// use uringio::buf::{IoBufMut, Overwrite};
/// # async fn f(s: uringio::net::TcpStream) {
/// let mut buf = Overwrite::new(vec![0u8; 4096].into_boxed_slice());
/// loop {
///     let (res, b) = s.read(buf).await;
///     if res.unwrap() == 0 {
///         break;
///     }
///     // Sends exactly the bytes just read.
///     let (res, b) = s.write_all(b).await;
///     res.unwrap();
///     buf = b;
///     buf.clear();
/// }
/// // The same, from a full Vec:
/// let _again = vec![7u8; 16].overwrite();
/// # }
/// ```
#[derive(Debug)]
pub struct Overwrite<B> {
    buf: B,
    filled: usize,
}

impl<B: IoBufMut> Overwrite<B> {
    /// Offers `buf`'s whole capacity to reads; nothing is filled yet.
    pub fn new(buf: B) -> Overwrite<B> {
        Overwrite { buf, filled: 0 }
    }

    /// How many bytes, from the start, reads have filled.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Forgets what was filled, to read again from the start.
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// The buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// The buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

// SAFETY: the inner buffer's memory and address; the first `filled` bytes
// were written by reads (set_init), `filled <= bytes_total`.
unsafe impl<B: IoBufMut> IoBuf for Overwrite<B> {
    fn stable_ptr(&self) -> *const u8 {
        self.buf.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.filled
    }
    fn bytes_total(&self) -> usize {
        self.buf.bytes_total()
    }
}

// SAFETY: the inner buffer's whole capacity is writable (its IoBufMut
// contract); set_init is forwarded with the caller's promise.
unsafe impl<B: IoBufMut> IoBufMut for Overwrite<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        let pos = pos.min(self.buf.bytes_total());
        self.filled = self.filled.max(pos);
        // SAFETY: the caller promises bytes 0..pos were written, so they
        // are initialised in the inner buffer too.
        unsafe { self.buf.set_init(pos) }
    }
}

impl<B: IoBufMut> Deref for Overwrite<B> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `filled` bytes were written by reads.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.filled) }
    }
}

impl<B: IoBufMut> DerefMut for Overwrite<B> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let n = self.filled;
        // SAFETY: as above, and we own the buffer mutably.
        unsafe { std::slice::from_raw_parts_mut(self.stable_mut_ptr(), n) }
    }
}

/// The spare capacity of a buffer as (pointer, length), for reads.
pub(crate) fn spare<B: IoBufMut>(b: &mut B) -> (*mut u8, usize) {
    let total = b.bytes_total();
    let init = b.bytes_init().min(total);
    // SAFETY: init <= total, so the pointer stays within the allocation.
    (unsafe { b.stable_mut_ptr().add(init) }, total - init)
}

/// Records that `n` more bytes were written after the initialised ones.
pub(crate) fn advance<B: IoBufMut>(b: &mut B, n: usize) {
    if n == 0 {
        return;
    }
    let init = b.bytes_init();
    // SAFETY: the kernel (or the syscall) reported writing `n` bytes into
    // the spare capacity that starts at `init` (so init + n <= bytes_total;
    // clamped anyway, never to be trusted blindly).
    unsafe { b.set_init(init.saturating_add(n).min(b.bytes_total())) }
}

/// The initialised bytes as (pointer, length), for writes.
pub(crate) fn init<B: IoBuf>(b: &B) -> (*const u8, usize) {
    (b.stable_ptr(), b.bytes_init())
}

/// Copies as much of `src` as fits into `b`'s spare capacity; returns how
/// many bytes. `InvalidInput` if `b` has no spare capacity (as a read).
pub(crate) fn fill_from<B: IoBufMut>(b: &mut B, src: &[u8]) -> std::io::Result<usize> {
    let (p, room) = spare(b);
    if room == 0 {
        return Err(crate::driver::op::rw::no_spare_capacity());
    }
    let n = room.min(src.len());
    // SAFETY: `p` is writable for `room >= n` bytes (the spare capacity,
    // IoBufMut's contract), and `src` is a distinct live slice.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, n) };
    advance(b, n);
    Ok(n)
}
