//! The ring's registered-buffer table: the slots behind
//! [`crate::buf::FixedBufPool`]. See uring-sys-notes/registered-buffers.md.
//!
//! ## The table
//! One sparse table per ring (`IORING_REGISTER_BUFFERS2` with
//! `IORING_RSRC_REGISTER_SPARSE`, 5.19), registered the first time a pool
//! is made on the loop, with room for the pools asked for so far (at least
//! 64 slots, a power of two, at most the kernel's 16384). Each pool takes a
//! contiguous range of slots and fills it with
//! `IORING_REGISTER_BUFFERS_UPDATE` (at most [`UPDATE_BATCH`] buffers per
//! call, so a pool of any size goes in); dropping the pool (its last
//! buffer, that is) empties its slots the same way and frees the range.
//! Several pools coexist, and come and go in any order.
//!
//! ## Growing: re-registration
//! When a new pool does not fit, the table is unregistered and registered
//! again, twice as large (or as large as needed), and every live pool's
//! buffers are put back in the *same* slots: a slot number already in an
//! SQE stays right. Requests in flight hold their own reference to the
//! buffer they use (kernels before 6.13 instead wait, inside the
//! unregister call, for requests using the table to finish). If the new
//! registration fails, the old size is restored; if even that fails, the
//! live pools are marked unregistered and their ops fall back to plain
//! `READ`/`WRITE` (same results, no fixed-buffer saving).
//!
//! ## Without sparse tables
//! A kernel that refuses the sparse registration with `EINVAL` (before
//! 5.19) gets pools that are not registered: `read_fixed_at` is then a
//! plain `READ` on the pool's memory. Any other refusal (`ENOMEM` past
//! `RLIMIT_MEMLOCK`, `EFAULT`) is the pool's creation error.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use super::{Backends, Driver};

/// The kernel's limit on registered buffers per ring (`IORING_MAX_REG_BUFFERS`).
pub(crate) const MAX_TABLE: u32 = 1 << 14;
/// The kernel's limit on one registered buffer (`SZ_1G`).
pub(crate) const MAX_BUF: usize = 1 << 30;
/// Buffers per `IORING_REGISTER_BUFFERS_UPDATE` call.
const UPDATE_BATCH: usize = 256;
/// The smallest table registered.
const MIN_TABLE: u32 = 64;

/// One pool's slots in the table.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The first slot.
    pub(crate) base: u32,
    /// How many.
    pub(crate) len: u32,
    /// Still in the kernel's table (a failed re-registration clears it).
    pub(crate) ok: Rc<Cell<bool>>,
}

struct Live {
    base: u32,
    iovs: Vec<(usize, usize)>,
    ok: Rc<Cell<bool>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing registered yet.
    Unknown,
    /// A sparse table of `size` slots is registered.
    Sparse,
    /// The kernel has no sparse buffer tables: pools stay unregistered.
    Unsupported,
}

/// The registered-buffer table of one driver (see the module docs).
pub(crate) struct BufTable {
    state: State,
    size: u32,
    /// Free slot ranges `(start, len)`, sorted, coalesced.
    free: Vec<(u32, u32)>,
    live: Vec<Live>,
}

impl Default for BufTable {
    fn default() -> Self {
        BufTable {
            state: State::Unknown,
            size: 0,
            free: Vec::new(),
            live: Vec::new(),
        }
    }
}

fn iovecs(bufs: &[(usize, usize)]) -> Vec<libc::iovec> {
    bufs.iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        })
        .collect()
}

fn memlock_soft() -> String {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == libc::RLIM_INFINITY => "unlimited".to_string(),
        Ok((soft, _)) => format!("{soft} bytes"),
        Err(_) => "unknown".to_string(),
    }
}

/// The error for a refused registration of `n` buffers totalling `bytes`.
fn refused(e: io::Error, n: usize, bytes: usize) -> io::Error {
    let what = format!("registering {n} fixed buffers ({bytes} bytes) with the ring");
    match e.raw_os_error() {
        Some(libc::ENOMEM) => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "{what}: ENOMEM: registered buffers are pinned and charged to \
                 RLIMIT_MEMLOCK (soft limit {}) unless the process has CAP_IPC_LOCK; \
                 raise the limit (ulimit -l, LimitMEMLOCK=) or use fewer or smaller buffers",
                memlock_soft()
            ),
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{what}: refused ({e}); a seccomp or LSM policy may forbid it"),
        ),
        Some(libc::EFAULT) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}: EFAULT: the kernel cannot pin this memory"),
        ),
        _ => io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

impl BufTable {
    /// A free range of `n` slots, if there is one (first fit).
    fn take_range(&mut self, n: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, len)| len >= n)?;
        let (start, len) = self.free[i];
        if len == n {
            self.free.remove(i);
        } else {
            self.free[i] = (start + n, len - n);
        }
        Some(start)
    }

    /// Gives a range back, keeping `free` sorted and coalesced.
    fn put_range(&mut self, start: u32, n: u32) {
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, n));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }

    /// Slots in use (for the table-full error).
    fn used(&self) -> u32 {
        self.size - self.free.iter().map(|&(_, l)| l).sum::<u32>()
    }
}

/// `struct io_uring_rsrc_update2` (5.13).
#[repr(C)]
struct RsrcUpdate2 {
    offset: u32,
    resv: u32,
    data: u64,
    tags: u64,
    nr: u32,
    resv2: u32,
}

const IORING_REGISTER_BUFFERS_UPDATE: libc::c_uint = 16;

/// One `IORING_REGISTER_BUFFERS_UPDATE` of `iovs` at slot `offset`: how
/// many slots the kernel updated. The kernel stops at the first buffer it
/// cannot register and returns the count so far (an error only if that
/// is 0), so a short count is not success: the io-uring crate's wrapper
/// drops the count, hence this call of our own.
fn update_call(u: &super::uring::Uring, offset: u32, iovs: &[libc::iovec]) -> io::Result<usize> {
    let arg = RsrcUpdate2 {
        offset,
        resv: 0,
        data: iovs.as_ptr() as u64,
        tags: 0,
        nr: iovs.len() as u32,
        resv2: 0,
    };
    // SAFETY: io_uring_register on our ring's fd with a valid
    // io_uring_rsrc_update2 (its size as the last argument) naming `iovs`,
    // which live across the call; the memory they name is the callers'
    // concern (see `update` and `clear`).
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            u.ring_fd(),
            IORING_REGISTER_BUFFERS_UPDATE,
            &arg as *const RsrcUpdate2,
            std::mem::size_of::<RsrcUpdate2>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Puts `iovs` in slots `base..`, all of them or an error (the kernel's
/// error for the first buffer it refused).
fn update_all(u: &super::uring::Uring, base: u32, iovs: &[libc::iovec]) -> io::Result<()> {
    let mut done = 0;
    while done < iovs.len() {
        let end = iovs.len().min(done + UPDATE_BATCH);
        match update_call(u, base + done as u32, &iovs[done..end])? {
            0 => {
                return Err(io::Error::other(
                    "the kernel updated no registered-buffer slot",
                ));
            }
            n => done += n,
        }
    }
    Ok(())
}

/// Fills slots `base..` with `bufs`. On failure the slots already filled
/// are emptied again.
fn update(driver: &Driver, base: u32, bufs: &[(usize, usize)]) -> io::Result<()> {
    let inner = driver.inner.borrow();
    let Backends::Uring(u) = &*inner else {
        return Err(io::Error::other("not an io_uring loop"));
    };
    // The iovecs name heap memory owned by the pool being registered,
    // which stays allocated until its slots are emptied again
    // (`unregister`), or the ring is gone.
    let r = update_all(u, base, &iovecs(bufs));
    if r.is_err() {
        clear(u, base, bufs.len());
    }
    r
}

/// Empties `n` slots from `base`; `false` if the kernel refused.
fn clear(u: &super::uring::Uring, base: u32, n: usize) -> bool {
    let empty = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        n
    ];
    // Empty iovecs name no memory: they clear the slots.
    match update_all(u, base, &empty) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("uringio: emptying fixed-buffer slots {base}..+{n}: {e}");
            false
        }
    }
}

/// (Re-)registers a sparse table of `size` slots and puts every live
/// pool's buffers back in their slots.
fn reregister(driver: &Driver, t: &mut BufTable, size: u32) -> io::Result<()> {
    {
        let inner = driver.inner.borrow();
        let Backends::Uring(u) = &*inner else {
            return Err(io::Error::other("not an io_uring loop"));
        };
        if t.state == State::Sparse {
            u.submitter().unregister_buffers()?;
            t.state = State::Unknown;
        }
        u.submitter().register_buffers_sparse(size)?;
        t.state = State::Sparse;
    }
    for l in &t.live {
        if let Err(e) = update(driver, l.base, &l.iovs) {
            log::warn!("uringio: re-registering a fixed-buffer pool: {e}; it runs unregistered");
            l.ok.set(false);
        }
    }
    Ok(())
}

/// Registers `bufs` (address, length) for one pool. `Ok(None)`: not
/// registered, and the pool works on plain reads and writes (epoll, or a
/// kernel without sparse buffer tables).
pub(crate) fn register(
    driver: &Driver,
    bufs: &[(usize, usize)],
) -> io::Result<Option<Registration>> {
    if !driver.is_uring() || bufs.is_empty() {
        return Ok(None);
    }
    let n = bufs.len() as u32;
    let bytes: usize = bufs.iter().map(|&(_, l)| l).sum();
    let mut t = driver.fixed_bufs.borrow_mut();
    if t.state == State::Unsupported {
        return Ok(None);
    }
    let base = match t.take_range(n) {
        Some(b) => b,
        None => {
            // Grow (or make) the table; its end is where the new range goes.
            let used_end = t
                .free
                .last()
                .filter(|&&(s, l)| s + l == t.size)
                .map_or(t.size, |&(s, _)| s);
            let need = used_end + n;
            if need > MAX_TABLE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a pool of {n} fixed buffers does not fit in the ring's registered-buffer \
                         table: {} of its {MAX_TABLE} slots are used by other pools",
                        t.used()
                    ),
                ));
            }
            let new_size = need
                .next_power_of_two()
                .max(t.size * 2)
                .clamp(MIN_TABLE, MAX_TABLE);
            let old = t.size;
            match reregister(driver, &mut t, new_size) {
                Ok(()) => {}
                Err(e) if old == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    log::info!(
                        "uringio: no sparse registered-buffer tables (kernel < 5.19?): \
                         fixed-buffer pools use plain reads and writes"
                    );
                    t.state = State::Unsupported;
                    return Ok(None);
                }
                Err(e) => {
                    // Unknown with `old > 0`: the old table was unregistered
                    // and the new one refused: put the old one back.
                    if old > 0
                        && t.state == State::Unknown
                        && reregister(driver, &mut t, old).is_err()
                    {
                        for l in &t.live {
                            l.ok.set(false);
                        }
                        t.live.clear();
                        t.free.clear();
                        t.size = 0;
                        t.state = State::Unknown;
                    }
                    return Err(refused(e, bufs.len(), bytes));
                }
            }
            t.put_range(old, new_size - old);
            t.size = new_size;
            t.take_range(n).expect("the grown table has room")
        }
    };
    if let Err(e) = update(driver, base, bufs) {
        t.put_range(base, n);
        return Err(refused(e, bufs.len(), bytes));
    }
    let ok = Rc::new(Cell::new(true));
    t.live.push(Live {
        base,
        iovs: bufs.to_vec(),
        ok: ok.clone(),
    });
    Ok(Some(Registration { base, len: n, ok }))
}

/// Empties a pool's slots (call before freeing its memory). Slots the
/// kernel would not empty stay out of circulation.
pub(crate) fn unregister(driver: &Driver, reg: &Registration) {
    let Ok(mut t) = driver.fixed_bufs.try_borrow_mut() else {
        log::warn!("uringio: fixed-buffer table busy; slots of a dropped pool stay used");
        return;
    };
    t.live.retain(|l| l.base != reg.base);
    if !reg.ok.get() {
        // Not in the kernel's table any more (a failed re-registration).
        return;
    }
    let cleared = match driver.inner.try_borrow() {
        Ok(inner) => match &*inner {
            Backends::Uring(u) => clear(u, reg.base, reg.len as usize),
            Backends::Epoll(_) => true,
        },
        Err(_) => false,
    };
    reg.ok.set(false);
    if cleared {
        t.put_range(reg.base, reg.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_coalesce() {
        let mut t = BufTable {
            size: 64,
            free: vec![(0, 64)],
            ..BufTable::default()
        };
        let a = t.take_range(10).unwrap();
        let b = t.take_range(20).unwrap();
        let c = t.take_range(34).unwrap();
        assert_eq!((a, b, c), (0, 10, 30));
        assert_eq!(t.take_range(1), None);
        assert_eq!(t.used(), 64);
        t.put_range(b, 20);
        assert_eq!(t.take_range(21), None);
        t.put_range(a, 10);
        assert_eq!(t.free, vec![(0, 30)]);
        t.put_range(c, 34);
        assert_eq!(t.free, vec![(0, 64)]);
        assert_eq!(t.used(), 0);
    }
}
