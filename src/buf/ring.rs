//! Provided-buffer rings: [`BufRing`] and the [`Chunk`]s received into it.

use std::io;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use crate::driver::{self, bufring};

/// A provided-buffer ring: `entries` buffers of `buf_size` bytes that
/// receives fill as data arrives, instead of a buffer per pending read.
///
/// On io_uring (5.19+) the ring is registered with the running loop's
/// ring (`IORING_REGISTER_PBUF_RING`) under a buffer-group id, and a
/// multishot receive ([`TcpStream::recv_multishot`](crate::net::TcpStream::recv_multishot))
/// lets the kernel pick a buffer for each chunk: a thousand idle
/// connections hold no memory. On epoll (or where the kernel lacks the
/// feature) the same buffers are handed out in user space when a socket
/// becomes readable; the API and the behaviour are the same, and
/// [`is_kernel`](Self::is_kernel) says which one runs.
///
/// Each received chunk borrows one buffer ([`Chunk`]) and puts it back in
/// the ring when dropped, in any order. When every buffer is out (held in
/// chunks not yet dropped), receives wait until one comes back; no byte
/// is lost and each connection's bytes stay in order, but a receiver that
/// keeps chunks stalls every connection sharing the ring: copy out and
/// drop what you keep for long.
///
/// **Memory**: `entries × buf_size` bytes (zeroed, allocated at once),
/// plus, on io_uring, `entries × 16` bytes for the ring itself (rounded up
/// to a page). It lives until the last `BufRing` handle and the last
/// [`Chunk`] are dropped, and until the kernel has finished every receive
/// that could use it. The loop's default ring, which the crate's
/// transports share, is 256 × 4 KiB = 1 MiB (see
/// [`Builder::buf_ring`](crate::Builder::buf_ring)).
///
/// A `BufRing` is a cheap handle (`Clone` shares the ring), `!Send`, and
/// belongs to the loop it was created in.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use uringio::buf::BufRing;
/// # async fn f(s: uringio::net::TcpStream) -> std::io::Result<()> {
/// let ring = BufRing::new(64, 4096)?;
/// let mut chunks = s.recv_multishot(&ring);
/// while let Some(chunk) = chunks.next().await {
///     let chunk = chunk?;
///     println!("{} bytes", chunk.len()); // the ring's memory, no copy
/// } // each chunk goes back to the ring here
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BufRing {
    group: Rc<bufring::BufGroup>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries())
            .field("buf_size", &self.buf_size())
            .field("kernel", &self.is_kernel())
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl BufRing {
    /// A ring of `entries` buffers of `buf_size` bytes for the running
    /// loop.
    ///
    /// # Errors
    /// `InvalidInput` if `entries` is not a power of two in `1..=32768`,
    /// `buf_size` is 0 or above `u32::MAX`, or the whole does not fit in
    /// memory; an error outside a running loop; the kernel's error if it
    /// refuses the registration (out of memory, or all 65536 group ids
    /// of the loop in use).
    pub fn new(entries: u32, buf_size: usize) -> io::Result<BufRing> {
        let d = driver::current().ok_or_else(|| {
            io::Error::other("BufRing::new called outside a running uringio loop")
        })?;
        Ok(BufRing {
            group: bufring::BufGroup::new(&d, entries, buf_size)?,
        })
    }

    /// The running loop's shared ring (made on first use, with the shape
    /// set by [`Builder::buf_ring`](crate::Builder::buf_ring)). For the
    /// transports, which share one ring per loop.
    pub(crate) fn loop_default() -> io::Result<BufRing> {
        let d = driver::current().ok_or_else(|| {
            io::Error::other("the loop's buffer ring was asked for outside a running uringio loop")
        })?;
        Ok(BufRing {
            group: bufring::default_group(&d)?,
        })
    }

    /// How many buffers the ring has.
    pub fn entries(&self) -> usize {
        self.group.entries()
    }

    /// The size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.group.size()
    }

    /// Buffers out of the ring right now, held by [`Chunk`]s (or kept for
    /// a socket's next read after a receive stream was dropped).
    pub fn in_use(&self) -> usize {
        self.group.in_use()
    }

    /// `true` if the kernel hands the buffers out (io_uring with
    /// `IORING_REGISTER_PBUF_RING`), `false` if they are emulated in user
    /// space.
    pub fn is_kernel(&self) -> bool {
        self.group.is_kernel()
    }

    /// The buffer-group id the ring is registered under, on io_uring.
    pub fn group_id(&self) -> Option<u16> {
        self.group.bgid()
    }

    pub(crate) fn group(&self) -> &Rc<bufring::BufGroup> {
        &self.group
    }
}

/// A chunk of received bytes, in one buffer of a [`BufRing`].
///
/// It dereferences to the bytes received (`[u8]`, never empty when
/// yielded by a receive stream). Dropping it puts the buffer back in its
/// ring, in any order relative to other chunks; it keeps the ring's
/// memory alive meanwhile, even past the `BufRing` handles and the loop.
/// Whether the kernel filled it (a multishot receive) or a plain receive
/// did (the fallback), a chunk is the same type.
pub struct Chunk {
    entry: bufring::RingEntry,
}

impl Chunk {
    pub(crate) fn new(entry: bufring::RingEntry) -> Chunk {
        Chunk { entry }
    }

    /// The id of the buffer it occupies in its ring (`0..entries`).
    pub fn buffer_id(&self) -> u16 {
        self.entry.bid()
    }

    /// Whether it belongs to `ring`.
    pub fn is_from(&self, ring: &BufRing) -> bool {
        Rc::ptr_eq(self.entry.group(), &ring.group)
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("buffer_id", &self.entry.bid())
            .field("len", &self.len())
            .finish()
    }
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.entry.as_slice()
    }
}

impl DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.entry.as_mut_slice()
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::BufRing;
    use crate::runtime::{Backend, Runner};

    #[test]
    fn the_loop_default_ring_is_made_once_with_the_builder_shape() {
        for emulate in [false, true] {
            // Epoll always works here; io_uring where the machine allows.
            for b in [Backend::Epoll, Backend::IoUring] {
                let Ok(mut r) = Runner::builder()
                    .backend(b)
                    .buf_ring(8, 512)
                    .emulate_buf_ring(emulate)
                    .build()
                else {
                    continue;
                };
                r.run(async {
                    let a = BufRing::loop_default().unwrap();
                    let b2 = BufRing::loop_default().unwrap();
                    assert!(std::rc::Rc::ptr_eq(a.group(), b2.group()));
                    assert_eq!((a.entries(), a.buf_size()), (8, 512));
                    assert_eq!(a.is_kernel(), crate::driver::features().buf_ring);
                });
            }
        }
        assert!(BufRing::loop_default().is_err());
    }
}
