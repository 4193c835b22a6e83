//! The descriptor every socket type wraps.

use std::cell::Cell;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use crate::driver::op::FixedFd;
use crate::driver::{self, Driver};

/// An owned, non-blocking socket.
///
/// A socket is not tied to the loop it was created in: each op goes to
/// the driver of the loop that polls it. When it closes, every epoll loop
/// on this thread forgets the fd ([`driver::fd_closing`]), so a later
/// descriptor with the same number starts clean. A socket never leaves its
/// thread (it is not `Send`), so those are all the loops that can know it.
///
/// On io_uring a socket that keeps being used gets a slot in the current
/// ring's registered-file table after [`REGISTER_AFTER`] reads and writes;
/// from then on its SQEs on that ring name the slot and the kernel skips
/// the per-op fd lookup. Short-lived connections never pay for the
/// registration.
pub(crate) struct Socket {
    fd: OwnedFd,
    /// The registered-file slot and the driver whose ring holds it.
    slot: Cell<Option<(u32, *const Driver)>>,
    /// That driver, to give the slot back on close.
    slot_driver: Cell<Option<Weak<Driver>>>,
    /// Reads and writes so far (counting up to `REGISTER_AFTER`, then
    /// parked at `u32::MAX` once registration was tried).
    ops: Cell<u32>,
    _thread: PhantomData<Rc<()>>,
}

/// Reads and writes on a socket before it is registered: registering and
/// unregistering cost a system call each, a registered op saves a file
/// lookup and reference (about 0.1 µs), so only busy sockets gain.
const REGISTER_AFTER: u32 = 16;

impl Socket {
    pub(crate) fn new(fd: OwnedFd) -> Socket {
        Socket {
            fd,
            slot: Cell::new(None),
            slot_driver: Cell::new(None),
            ops: Cell::new(0),
            _thread: PhantomData,
        }
    }

    /// The registered-file slot to name in the next read or write, if the
    /// socket has one (registering it now in the current ring if it has
    /// become busy). The op checks, when submitted, that it goes to the
    /// ring the slot is in.
    pub(crate) fn fixed(&self) -> Option<FixedFd> {
        if let Some((slot, driver)) = self.slot.get() {
            return Some(FixedFd { slot, driver });
        }
        let n = self.ops.get();
        if n < REGISTER_AFTER {
            self.ops.set(n + 1);
            return None;
        }
        if n == u32::MAX {
            return None;
        }
        self.ops.set(u32::MAX);
        driver::with_current(|d| {
            if !d.is_uring() {
                return None;
            }
            let slot = d.register_file(self.fd())?;
            self.slot.set(Some((slot, Rc::as_ptr(d))));
            self.slot_driver.set(Some(Rc::downgrade(d)));
            Some(FixedFd {
                slot,
                driver: Rc::as_ptr(d),
            })
        })
        .flatten()
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn owned(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // The table's reference must go before the fd closes, or the
        // socket would outlive its last descriptor. (A ring that is gone
        // took its table with it.)
        if let (Some((slot, _)), Some(d)) = (self.slot.take(), self.slot_driver.take()) {
            if let Some(d) = d.upgrade() {
                d.unregister_file(slot);
            }
        }
        driver::fd_closing(self.fd.as_raw_fd());
        // The OwnedFd closes the descriptor.
    }
}
