//! Plain non-blocking socket system calls on borrowed buffers, for the
//! epoll backend's transports.
//!
//! On epoll a transport does not need an op per receive or send: the loop
//! thread makes the system call itself, straight from (or into) memory it
//! borrows for the length of the call, and waits for readiness through
//! [`epoll_wait_ready`](super::epoll_wait_ready) only on `EAGAIN`. No
//! buffer outlives a call, so nothing here needs an owned buffer, a slot
//! or a box: what an op costs in user space on top of the system call.
//!
//! Each function takes a [`BorrowedFd`], so it cannot outlive the socket;
//! with a descriptor that is not a socket it fails (`ENOTSOCK`) like any
//! system call would. Sends carry `MSG_NOSIGNAL`, as every send in uringio.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The most buffers one vectored send takes (Linux's `UIO_MAXIOV` is
/// 1024; a transport sends at most 64 at a time).
pub(crate) const MAX_IOV: usize = 64;

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recv(fd, buf, 0)`: bytes received (0 at end of stream).
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable memory of `buf.len()` bytes, borrowed for
    // the call; the fd is borrowed, so open.
    cvt(unsafe { super::op::rw::raw_recv(fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) })
}

/// `send(fd, buf, MSG_NOSIGNAL)`: bytes sent (maybe fewer than asked).
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable memory of `buf.len()` bytes, borrowed for
    // the call; the fd is borrowed, so open.
    cvt(unsafe { super::op::rw::raw_send(fd.as_raw_fd(), buf.as_ptr(), buf.len()) })
}

/// `sendmsg(fd, {bufs}, MSG_NOSIGNAL)` of the first [`MAX_IOV`] of `bufs`:
/// bytes sent (maybe fewer than asked).
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let n = bufs.len().min(MAX_IOV);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec (std guarantees it on Unix); the
    // kernel only reads through it.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = n as _;
    // SAFETY: msg points at `n` iovecs describing readable memory borrowed
    // for the call; the fd is borrowed, so open.
    cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn recv_send_and_vectored_send_move_the_bytes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        // Nothing there: EAGAIN, not a block.
        assert_eq!(
            recv(a.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        b.write_all(b"hello").unwrap();
        assert_eq!(recv(a.as_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(send(a.as_fd(), b"abc").unwrap(), 3);
        let parts = [IoSlice::new(b"de"), IoSlice::new(b""), IoSlice::new(b"fgh")];
        assert_eq!(send_vectored(a.as_fd(), &parts).unwrap(), 5);
        let mut got = [0u8; 8];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcdefgh");
        // An empty receive buffer reads nothing; end of stream reads 0.
        drop(b);
        assert_eq!(recv(a.as_fd(), &mut buf).unwrap(), 0);
        // A peer gone: EPIPE, and no SIGPIPE kills the test.
        assert_eq!(
            send(a.as_fd(), b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn more_buffers_than_max_iov_send_the_first_max_iov() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let one = [7u8; 1];
        let parts: Vec<IoSlice<'_>> = (0..MAX_IOV + 10).map(|_| IoSlice::new(&one)).collect();
        assert_eq!(send_vectored(a.as_fd(), &parts).unwrap(), MAX_IOV);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, vec![7u8; MAX_IOV]);
    }
}
