//! Owned buffers: every I/O op takes its buffer by value and hands it back.
//!
//! [`IoBuf`] is a buffer the kernel may read from (writes send its
//! initialised bytes); [`IoBufMut`] one it may write into (reads fill its
//! spare capacity, between the initialised length and the capacity, and
//! advance the initialised length). Both promise a memory address that does
//! not change while the buffer is owned by an op, even if the value is moved.

use std::ops::{Bound, Deref, DerefMut, RangeBounds};

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
    /// # Panics
    /// If the range is out of the buffer's capacity.
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n + 1,
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
    /// The first `pos` bytes must be initialised.
    unsafe fn set_init(&mut self, pos: usize);
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
        if pos > self.len() {
            // SAFETY: the caller promises `pos` bytes are initialised, and
            // pos <= capacity because ops never write past bytes_total.
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
        // SAFETY: forwarded promise, shifted to the inner buffer.
        unsafe { self.buf.set_init(self.begin + pos) }
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

/// The spare capacity of a buffer as (pointer, length), for reads.
pub(crate) fn spare<B: IoBufMut>(b: &mut B) -> (*mut u8, usize) {
    let init = b.bytes_init();
    let total = b.bytes_total();
    // SAFETY: init <= total, so the pointer stays within the allocation.
    (unsafe { b.stable_mut_ptr().add(init) }, total - init)
}

/// Records that `n` more bytes were written after the initialised ones.
pub(crate) fn advance<B: IoBufMut>(b: &mut B, n: usize) {
    let init = b.bytes_init();
    // SAFETY: the kernel (or the syscall) reported writing `n` bytes into
    // the spare capacity that starts at `init`.
    unsafe { b.set_init(init + n) }
}

/// The initialised bytes as (pointer, length), for writes.
pub(crate) fn init<B: IoBuf>(b: &B) -> (*const u8, usize) {
    (b.stable_ptr(), b.bytes_init())
}
