//! The descriptor every socket type wraps.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use crate::driver::Driver;
use crate::runtime::context;

/// An owned, non-blocking socket that tells the loop it was created on
/// when it closes (so epoll forgets its readiness state before the fd
/// number is reused).
pub(crate) struct Socket {
    fd: OwnedFd,
    driver: Option<Rc<Driver>>,
}

impl Socket {
    pub(crate) fn new(fd: OwnedFd) -> Socket {
        Socket {
            fd,
            driver: context::current_driver(),
        }
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
            d.forget_fd(self.fd.as_raw_fd());
        }
        // The OwnedFd closes the descriptor.
    }
}
