//! Socket ops: accept (single and multishot), connect, and datagrams with
//! addresses (`send_to`, `recv_from`). Each is one type serving both
//! backends. Set-up helpers are in `sock`, plain reads and writes in `rw`.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

// What socket types use, reachable from one place.
pub(crate) use super::rw::{Read, ReadV, Write, WriteV, write_all};
pub(crate) use super::sock::{
    RawAddr, bind, connect_now, getsockopt_int, listen, setsockopt_int, shutdown, sock_name, socket,
};
use super::{Mode, OpCode};
use crate::buf::{self, IoBuf, IoBufMut};

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `accept4(2)`: a new non-blocking connection.
pub(crate) struct Accept {
    fd: RawFd,
    addr: RawAddr,
}

impl Accept {
    pub(crate) fn new(fd: RawFd) -> Accept {
        Accept {
            fd,
            addr: RawAddr::empty(),
        }
    }
}

impl OpCode for Accept {
    type Output = io::Result<(OwnedFd, RawAddr)>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Accept::new(types::Fd(self.fd), self.addr.mut_ptr(), &mut self.addr.len)
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Readable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: valid fd, storage and length in self.
        let r = unsafe {
            libc::accept4(
                self.fd,
                self.addr.mut_ptr(),
                &mut self.addr.len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        cvt(r as isize)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        let fd = res?;
        // SAFETY: the kernel gave us this new descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok((fd, self.addr))
    }

    fn discard_result(res: i32) {
        close_unclaimed(res);
    }
}

/// Closes a descriptor an op produced after its future was dropped.
pub(crate) fn close_unclaimed(fd: i32) {
    // SAFETY: the kernel handed this new descriptor to an op whose future
    // is gone; nobody else has it.
    unsafe { libc::close(fd) };
}

/// Multishot accept (io_uring 5.19+): one SQE, a CQE per connection.
pub(crate) fn accept_multi_sqe(fd: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(fd))
        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        .build()
}

/// `connect(2)` on a non-blocking socket.
pub(crate) struct Connect {
    fd: RawFd,
    addr: RawAddr,
    started: bool,
}

impl Connect {
    pub(crate) fn new(fd: RawFd, addr: RawAddr) -> Connect {
        Connect {
            fd,
            addr,
            started: false,
        }
    }
}

impl OpCode for Connect {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Connect::new(types::Fd(self.fd), self.addr.ptr(), self.addr.len).build()
    }

    fn mode(&self) -> Mode {
        Mode::Writable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        if !self.started {
            self.started = true;
            // SAFETY: valid fd and address.
            let r = unsafe { libc::connect(self.fd, self.addr.ptr(), self.addr.len) };
            if r == 0 {
                return Ok(0);
            }
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINPROGRESS) | Some(libc::EAGAIN) => {
                    Err(io::Error::from(io::ErrorKind::WouldBlock))
                }
                _ => Err(e),
            };
        }
        let err = getsockopt_int(self.fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        // Writable with no error: connected, unless this was a spurious wake.
        match sock_name(self.fd, true) {
            Ok(_) => Ok(0),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            Err(e) => Err(e),
        }
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        res.map(|_| ())
    }
}

/// `sendmsg` with a destination address (UDP `send_to`).
pub(crate) struct SendTo<B> {
    fd: RawFd,
    buf: B,
    iov: [libc::iovec; 1],
    addr: RawAddr,
    msg: libc::msghdr,
}

impl<B: IoBuf> SendTo<B> {
    pub(crate) fn new(fd: RawFd, buf: B, addr: SocketAddr) -> SendTo<B> {
        let (p, l) = buf::init(&buf);
        SendTo {
            fd,
            buf,
            iov: [libc::iovec {
                iov_base: p as *mut libc::c_void,
                iov_len: l,
            }],
            addr: RawAddr::from_inet(&addr),
            // SAFETY: plain data; zero is an empty header.
            msg: unsafe { mem::zeroed() },
        }
    }

    fn fill(&mut self) {
        self.msg.msg_name = self.addr.mut_ptr().cast();
        self.msg.msg_namelen = self.addr.len;
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = 1;
    }
}

impl<B: IoBuf> OpCode for SendTo<B> {
    type Output = crate::buf::BufResult<usize, B>;

    fn sqe(&mut self) -> squeue::Entry {
        self.fill();
        opcode::SendMsg::new(types::Fd(self.fd), &self.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Writable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        self.fill();
        // SAFETY: msg points into self (address and iovec), valid now.
        cvt(unsafe { libc::sendmsg(self.fd, &self.msg, libc::MSG_NOSIGNAL) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.buf)
    }
}

/// `recvmsg` that also reports the sender (UDP `recv_from`).
pub(crate) struct RecvFrom<B> {
    fd: RawFd,
    buf: B,
    iov: [libc::iovec; 1],
    addr: RawAddr,
    msg: libc::msghdr,
}

impl<B: IoBufMut> RecvFrom<B> {
    pub(crate) fn new(fd: RawFd, mut buf: B) -> RecvFrom<B> {
        let (p, l) = buf::spare(&mut buf);
        RecvFrom {
            fd,
            buf,
            iov: [libc::iovec {
                iov_base: p.cast(),
                iov_len: l,
            }],
            addr: RawAddr::empty(),
            // SAFETY: plain data; zero is an empty header.
            msg: unsafe { mem::zeroed() },
        }
    }

    fn fill(&mut self) {
        self.msg.msg_name = self.addr.mut_ptr().cast();
        self.msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = 1;
    }
}

impl<B: IoBufMut> OpCode for RecvFrom<B> {
    type Output = crate::buf::BufResult<(usize, SocketAddr), B>;

    fn check(&self) -> io::Result<()> {
        if self.iov[0].iov_len == 0 {
            return Err(super::rw::no_spare_capacity());
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        self.fill();
        opcode::RecvMsg::new(types::Fd(self.fd), &mut self.msg).build()
    }

    fn mode(&self) -> Mode {
        Mode::Readable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        self.fill();
        // SAFETY: msg points into self, valid now.
        cvt(unsafe { libc::recvmsg(self.fd, &mut self.msg, 0) })
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        match res {
            Ok(n) => {
                buf::advance(&mut self.buf, n);
                self.addr.len = self.msg.msg_namelen;
                let r = self.addr.as_inet().map(|a| (n, a));
                (r, self.buf)
            }
            Err(e) => (Err(e), self.buf),
        }
    }
}
