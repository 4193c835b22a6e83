//! [`AlignedBuf`]: a heap buffer whose address and capacity are chosen at
//! creation, for `O_DIRECT` I/O and as the memory of a
//! [`FixedBufPool`](super::FixedBufPool).
//!
//! ## Memory model
//! The allocation is zeroed when it is made, so every byte of the capacity
//! is always initialised memory; [`len`](AlignedBuf::len) (the `IoBuf`'s
//! initialised length) only says how many bytes count as *data*: what a
//! write sends, what [`Deref`] shows. Reads fill the spare capacity
//! `len..capacity` and advance `len`, as for a `Vec`. Because the spare
//! capacity is initialised too, growing the length by hand
//! ([`resize`](AlignedBuf::resize)) is safe, and never exposes
//! uninitialised memory.

use std::alloc::Layout;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use super::{IoBuf, IoBufMut};

/// A heap buffer with a chosen alignment and a fixed capacity, for
/// `O_DIRECT` (whose buffers must start at, and often be sized in,
/// multiples of the file's alignment: see
/// [`File::dio_alignment`](crate::fs::File::dio_alignment)).
///
/// It behaves like a `Vec<u8>` that never reallocates: a length (the
/// initialised data, what [`Deref`] shows and a write sends) within a
/// capacity (what a read may fill). Its memory is zeroed at creation and
/// freed on drop; its address never changes, even when the value moves.
/// It is `Send` and `Sync`.
///
/// ```no_run
/// use uringio::buf::AlignedBuf;
/// # async fn f() -> std::io::Result<()> {
/// let f = uringio::fs::OpenOptions::new().read(true).direct(true).open("data").await?;
/// let a = f.dio_alignment().expect("opened with direct(true)");
/// let buf = AlignedBuf::new(64 * 1024, a.mem.max(4096) as usize)?;
/// let (res, buf) = f.read_at(buf, 0).await; // 64 KiB from offset 0
/// println!("{} bytes: {:?}", res?, &buf[..16]);
/// # Ok(()) }
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    align: usize,
    len: usize,
}

// SAFETY: the buffer uniquely owns its allocation (no shared state, no
// interior mutability); moving it to another thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only reads the allocation.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer (length 0) of `capacity` bytes starting at an
    /// address that is a multiple of `align`. The memory is zeroed.
    ///
    /// # Errors
    /// `InvalidInput` if `capacity` is 0, `align` is not a power of two,
    /// or `capacity` rounded up to `align` overflows `isize`;
    /// `OutOfMemory` if the allocation fails.
    pub fn new(capacity: usize, align: usize) -> io::Result<AlignedBuf> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AlignedBuf capacity must be at least 1 byte, got 0",
            ));
        }
        if !align.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AlignedBuf alignment must be a power of two, got {align}"),
            ));
        }
        let layout = Layout::from_size_align(capacity, align).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AlignedBuf of {capacity} bytes aligned to {align} is too large"),
            )
        })?;
        // SAFETY: the layout's size is non-zero (checked above).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("allocating an AlignedBuf of {capacity} bytes aligned to {align}"),
            )
        })?;
        Ok(AlignedBuf {
            ptr,
            cap: capacity,
            align,
            len: 0,
        })
    }

    /// A buffer holding a copy of `data`, with capacity `data.len()`
    /// rounded up to a multiple of `align` (at least `align`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_slice(data: &[u8], align: usize) -> io::Result<AlignedBuf> {
        if !align.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AlignedBuf alignment must be a power of two, got {align}"),
            ));
        }
        let cap = data
            .len()
            .max(1)
            .checked_next_multiple_of(align)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("AlignedBuf of {} bytes is too large", data.len()),
                )
            })?;
        let mut b = AlignedBuf::new(cap, align)?;
        b.extend_from_slice(data)?;
        Ok(b)
    }

    /// The capacity, fixed at creation.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The alignment asked for at creation (the address is a multiple of
    /// it).
    pub fn align(&self) -> usize {
        self.align
    }

    /// How many bytes are data (what a write sends).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length to 0 (the memory keeps its bytes).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the length to `len`; does nothing if it is not shorter.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Sets the length to `new_len`: bytes added are set to `value`.
    ///
    /// # Errors
    /// `InvalidInput` if `new_len` is past the capacity.
    pub fn resize(&mut self, new_len: usize, value: u8) -> io::Result<()> {
        if new_len > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "AlignedBuf::resize to {new_len} bytes past its capacity of {}",
                    self.cap
                ),
            ));
        }
        if new_len > self.len {
            // SAFETY: len < new_len <= cap: within the allocation, which we
            // own mutably.
            unsafe {
                std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), value, new_len - self.len)
            };
        }
        self.len = new_len;
        Ok(())
    }

    /// Appends `data` after the current length.
    ///
    /// # Errors
    /// `InvalidInput` (and nothing is copied) if it does not fit in the
    /// capacity.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > self.cap - self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "AlignedBuf: {} more bytes do not fit ({} of {} used)",
                    data.len(),
                    self.len,
                    self.cap
                ),
            ));
        }
        // SAFETY: len + data.len() <= cap: within the allocation, which we
        // own mutably; `data` is a distinct live slice (we are borrowed
        // mutably, it immutably).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            )
        };
        self.len += data.len();
        Ok(())
    }

    /// The raw start of the memory (for the pool that registers it).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout (which was
        // valid then), freed once.
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, self.align),
            )
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .field("align", &self.align)
            .finish()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= cap bytes of our allocation, all initialised
        // (zeroed at creation, written only with initialised bytes since).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we own the buffer mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

// SAFETY: the allocation is `cap` bytes, all initialised (zeroed at
// creation), owned by the value and never moved or freed while it lives
// (heap memory); `len <= cap`.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.cap
    }
}

// SAFETY: the whole capacity is writable memory we own; `set_init` never
// takes the length past the capacity (and every byte is initialised anyway).
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = self.len.max(pos.min(self.cap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_errors() {
        for align in [1, 2, 512, 4096, 1 << 16] {
            let b = AlignedBuf::new(100, align).unwrap();
            assert_eq!(b.as_ptr() as usize % align, 0);
            assert_eq!((b.len(), b.capacity(), b.align()), (0, 100, align));
        }
        for (cap, align) in [(0, 512), (4096, 0), (4096, 3), (4096, 1000)] {
            let e = AlignedBuf::new(cap, align).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{cap} {align}: {e}");
        }
        let e = AlignedBuf::new(usize::MAX - 10, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = AlignedBuf::new(isize::MAX as usize / 2, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
    }

    #[test]
    fn length_within_capacity() {
        let mut b = AlignedBuf::new(8, 8).unwrap();
        b.extend_from_slice(b"abc").unwrap();
        assert_eq!(&b[..], b"abc");
        assert!(b.extend_from_slice(b"123456").is_err());
        assert_eq!(&b[..], b"abc");
        b.resize(8, b'x').unwrap();
        assert_eq!(&b[..], b"abcxxxxx");
        assert!(b.resize(9, 0).is_err());
        b.truncate(2);
        b.truncate(5);
        assert_eq!(&b[..], b"ab");
        // SAFETY: (test) set_init past the capacity is clamped; the bytes
        // are initialised memory.
        unsafe { b.set_init(100) };
        assert_eq!(b.len(), 8);
        // set_init never shrinks.
        // SAFETY: as above.
        unsafe { b.set_init(1) };
        assert_eq!(b.len(), 8);
        b.clear();
        assert!(b.is_empty());
        let c = AlignedBuf::from_slice(b"hello", 512).unwrap();
        assert_eq!((c.len(), c.capacity(), &c[..]), (5, 512, &b"hello"[..]));
        let d = AlignedBuf::from_slice(b"", 512).unwrap();
        assert_eq!((d.len(), d.capacity()), (0, 512));
    }
}
