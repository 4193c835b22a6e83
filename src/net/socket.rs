//! The descriptor every socket type wraps.

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use crate::driver::Driver;
use crate::driver::op::FixedFd;
use crate::runtime::context;

/// An owned, non-blocking socket that tells the loop it was created on
/// when it closes (so epoll forgets its readiness state before the fd
/// number is reused).
///
/// On io_uring a socket that keeps being used gets a slot in the ring's
/// registered-file table after [`REGISTER_AFTER`] reads and writes; from
/// then on its SQEs name the slot and the kernel skips the per-op fd
/// lookup. Short-lived connections never pay for the registration.
pub(crate) struct Socket {
    fd: OwnedFd,
    driver: Option<Rc<Driver>>,
    /// The registered-file slot, once the socket has one.
    slot: Cell<Option<u32>>,
    /// Reads and writes so far (counting up to `REGISTER_AFTER`, then
    /// parked at `u32::MAX` once registration was tried).
    ops: Cell<u32>,
}

/// Reads and writes on a socket before it is registered: registering and
/// unregistering cost a system call each, a registered op saves a file
/// lookup and reference (about 0.1 µs), so only busy sockets gain.
const REGISTER_AFTER: u32 = 16;

impl Socket {
    pub(crate) fn new(fd: OwnedFd) -> Socket {
        Socket {
            fd,
            driver: context::current_driver(),
            slot: Cell::new(None),
            ops: Cell::new(0),
        }
    }

    /// The registered-file slot to name in the next read or write, if the
    /// socket has one (registering it now if it has become busy). The op
    /// checks, when submitted, that it goes to this socket's ring.
    pub(crate) fn fixed(&self) -> Option<FixedFd> {
        let driver = self.driver.as_ref()?;
        let slot = match self.slot.get() {
            Some(s) => s,
            None => {
                let n = self.ops.get();
                if n < REGISTER_AFTER {
                    self.ops.set(n + 1);
                    return None;
                }
                if n == u32::MAX || !driver.is_uring() {
                    return None;
                }
                self.ops.set(u32::MAX);
                let s = driver.register_file(self.fd())?;
                self.slot.set(Some(s));
                s
            }
        };
        Some(FixedFd {
            slot,
            driver: Rc::as_ptr(driver),
        })
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
        if let Some(d) = &self.driver {
            // The table's reference must go before the fd closes, or the
            // socket would outlive its last descriptor.
            if let Some(slot) = self.slot.take() {
                d.unregister_file(slot);
            }
            d.forget_fd(self.fd.as_raw_fd());
        }
        // The OwnedFd closes the descriptor.
    }
}
