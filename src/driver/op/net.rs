//! Socket ops: accept, connect, read/recv, write/send, vectored I/O,
//! datagrams, shutdown. Each is one type serving both backends.
//!
//! Sends always carry `MSG_NOSIGNAL`: a peer that went away gives `EPIPE`,
//! never a `SIGPIPE` that would kill the process.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use super::{Mode, OpCode};
use crate::buf::{self, IoBuf, IoBufMut};

/// The most one read or write moves (Linux's `MAX_RW_COUNT`); larger
/// buffers are done in several ops (`write_all`) or partially.
const MAX_RW: usize = 0x7fff_f000;

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A socket address in the kernel's layout.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl RawAddr {
    pub(crate) fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            storage: unsafe { mem::zeroed() },
            len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    pub(crate) fn from_inet(addr: &SocketAddr) -> RawAddr {
        let mut r = RawAddr::empty();
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_in.
                unsafe { std::ptr::write(&mut r.storage as *mut _ as *mut libc::sockaddr_in, sin) };
                r.len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe {
                    std::ptr::write(&mut r.storage as *mut _ as *mut libc::sockaddr_in6, sin6)
                };
                r.len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        r
    }

    pub(crate) fn as_inet(&self) -> io::Result<SocketAddr> {
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin: libc::sockaddr_in = unsafe {
                    std::ptr::read(&self.storage as *const _ as *const libc::sockaddr_in)
                };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6: libc::sockaddr_in6 = unsafe {
                    std::ptr::read(&self.storage as *const _ as *const libc::sockaddr_in6)
                };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            f => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected address family {f}"),
            )),
        }
    }

    fn ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    fn mut_ptr(&mut self) -> *mut libc::sockaddr {
        &mut self.storage as *mut _ as *mut libc::sockaddr
    }
}

/// `getsockname` / `getpeername`.
pub(crate) fn sock_name(fd: RawFd, peer: bool) -> io::Result<SocketAddr> {
    let mut a = RawAddr::empty();
    // SAFETY: valid fd, storage and length pointers.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, a.mut_ptr(), &mut a.len)
        } else {
            libc::getsockname(fd, a.mut_ptr(), &mut a.len)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    a.as_inet()
}

/// Makes a non-blocking, close-on-exec socket.
pub(crate) fn socket(domain: i32, ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall, result checked.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bind(2)` to an inet address.
pub(crate) fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let a = RawAddr::from_inet(addr);
    // SAFETY: valid fd and address.
    if unsafe { libc::bind(fd, a.ptr(), a.len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `listen(2)`.
pub(crate) fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    if unsafe { libc::listen(fd, backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `shutdown(2)`: immediate, no op needed.
pub(crate) fn shutdown(fd: RawFd, how: std::net::Shutdown) -> io::Result<()> {
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: plain syscall on a valid fd.
    if unsafe { libc::shutdown(fd, how) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `connect(2)` done at once (datagram sockets never block on it).
pub(crate) fn connect_now(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let a = RawAddr::from_inet(addr);
    // SAFETY: valid fd and address.
    if unsafe { libc::connect(fd, a.ptr(), a.len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setsockopt` with an int value.
pub(crate) fn setsockopt_int(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: valid fd; the value pointer and size match.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt` with an int value.
pub(crate) fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: valid fd; the value pointer and length match.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
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

/// Reads into a buffer's spare capacity: `recv` on sockets, `read`/`pread`
/// on other fds.
pub(crate) struct Read<B> {
    fd: RawFd,
    buf: B,
    ptr: *mut u8,
    len: usize,
    offset: Option<u64>,
    socket: bool,
    /// A stream socket: a short read means it was drained.
    stream: bool,
}

impl<B: IoBufMut> Read<B> {
    pub(crate) fn new(fd: RawFd, mut buf: B, offset: Option<u64>, socket: bool) -> Read<B> {
        let (ptr, len) = buf::spare(&mut buf);
        let len = len.min(MAX_RW);
        Read {
            fd,
            buf,
            ptr,
            len,
            offset,
            socket,
            stream: false,
        }
    }

    /// Marks the fd as a stream socket (TCP, Unix stream), where a short
    /// read means the socket was drained.
    pub(crate) fn stream(mut self) -> Read<B> {
        self.stream = true;
        self
    }
}

impl<B: IoBufMut> OpCode for Read<B> {
    type Output = crate::BufResult<usize, B>;

    fn check(&self) -> io::Result<()> {
        if self.len == 0 {
            return Err(crate::net::no_spare_capacity());
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        if self.socket {
            opcode::Recv::new(types::Fd(self.fd), self.ptr, self.len as u32).build()
        } else {
            opcode::Read::new(types::Fd(self.fd), self.ptr, self.len as u32)
                .offset(self.offset.unwrap_or(u64::MAX))
                .build()
        }
    }

    fn mode(&self) -> Mode {
        if self.socket {
            Mode::Readable(self.fd)
        } else if self.offset.is_some() {
            Mode::Blocking
        } else {
            // Pipes and other pollable fds.
            Mode::Readable(self.fd)
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: ptr/len describe the buffer's spare capacity, owned by this
        // op for the duration.
        let r = unsafe {
            if self.socket {
                libc::recv(self.fd, self.ptr.cast(), self.len, 0)
            } else if let Some(off) = self.offset {
                libc::pread(self.fd, self.ptr.cast(), self.len, off as libc::off_t)
            } else {
                libc::read(self.fd, self.ptr.cast(), self.len)
            }
        };
        cvt(r)
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(n) = res {
            buf::advance(&mut self.buf, n);
        }
        (res, self.buf)
    }

    fn stream_read_len(&self) -> Option<usize> {
        self.stream.then_some(self.len)
    }
}

/// Writes a buffer's initialised bytes: `send(MSG_NOSIGNAL)` on sockets,
/// `write`/`pwrite` on other fds.
pub(crate) struct Write<B> {
    fd: RawFd,
    buf: B,
    ptr: *const u8,
    len: usize,
    offset: Option<u64>,
    socket: bool,
}

impl<B: IoBuf> Write<B> {
    pub(crate) fn new(fd: RawFd, buf: B, offset: Option<u64>, socket: bool) -> Write<B> {
        let (ptr, len) = buf::init(&buf);
        let len = len.min(MAX_RW);
        Write {
            fd,
            buf,
            ptr,
            len,
            offset,
            socket,
        }
    }
}

impl<B: IoBuf> OpCode for Write<B> {
    type Output = crate::BufResult<usize, B>;

    fn sqe(&mut self) -> squeue::Entry {
        if self.socket {
            opcode::Send::new(types::Fd(self.fd), self.ptr, self.len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Write::new(types::Fd(self.fd), self.ptr, self.len as u32)
                .offset(self.offset.unwrap_or(u64::MAX))
                .build()
        }
    }

    fn mode(&self) -> Mode {
        if self.socket {
            Mode::Writable(self.fd)
        } else if self.offset.is_some() {
            Mode::Blocking
        } else {
            Mode::Writable(self.fd)
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: ptr/len describe the buffer's initialised bytes.
        let r = unsafe {
            if self.socket {
                libc::send(self.fd, self.ptr.cast(), self.len, libc::MSG_NOSIGNAL)
            } else if let Some(off) = self.offset {
                libc::pwrite(self.fd, self.ptr.cast(), self.len, off as libc::off_t)
            } else {
                libc::write(self.fd, self.ptr.cast(), self.len)
            }
        };
        cvt(r)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.buf)
    }
}

/// Vectored read into several buffers' spare capacity, in order.
pub(crate) struct ReadV<B> {
    fd: RawFd,
    bufs: Vec<B>,
    iov: Vec<libc::iovec>,
    offset: Option<u64>,
    socket: bool,
}

impl<B: IoBufMut> ReadV<B> {
    pub(crate) fn new(fd: RawFd, mut bufs: Vec<B>, offset: Option<u64>, socket: bool) -> ReadV<B> {
        let iov = bufs
            .iter_mut()
            .map(|b| {
                let (p, l) = buf::spare(b);
                libc::iovec {
                    iov_base: p.cast(),
                    iov_len: l,
                }
            })
            .collect();
        ReadV {
            fd,
            bufs,
            iov,
            offset,
            socket,
        }
    }
}

impl<B: IoBufMut> OpCode for ReadV<B> {
    type Output = crate::BufResult<usize, Vec<B>>;

    fn check(&self) -> io::Result<()> {
        // Zero spare capacity would read 0 bytes: a false end of stream.
        if self.iov.iter().all(|v| v.iov_len == 0) {
            return Err(crate::net::no_spare_capacity());
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Readv::new(types::Fd(self.fd), self.iov.as_ptr(), self.iov.len() as u32)
            .offset(self.offset.unwrap_or(u64::MAX))
            .build()
    }

    fn mode(&self) -> Mode {
        if self.socket || self.offset.is_none() {
            Mode::Readable(self.fd)
        } else {
            Mode::Blocking
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        // SAFETY: the iovecs describe the buffers' spare capacity.
        let r = unsafe {
            match self.offset {
                Some(off) => libc::preadv(
                    self.fd,
                    self.iov.as_ptr(),
                    self.iov.len() as i32,
                    off as libc::off_t,
                ),
                None => libc::readv(self.fd, self.iov.as_ptr(), self.iov.len() as i32),
            }
        };
        cvt(r)
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        if let Ok(mut n) = res {
            for (b, iov) in self.bufs.iter_mut().zip(&self.iov) {
                let k = n.min(iov.iov_len);
                buf::advance(b, k);
                n -= k;
                if n == 0 {
                    break;
                }
            }
        }
        (res, self.bufs)
    }
}

/// Vectored write of several buffers' initialised bytes, in order
/// (`sendmsg(MSG_NOSIGNAL)` on sockets).
pub(crate) struct WriteV<B> {
    fd: RawFd,
    bufs: Vec<B>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    offset: Option<u64>,
    socket: bool,
}

impl<B: IoBuf> WriteV<B> {
    pub(crate) fn new(fd: RawFd, bufs: Vec<B>, offset: Option<u64>, socket: bool) -> WriteV<B> {
        let iov = bufs
            .iter()
            .map(|b| {
                let (p, l) = buf::init(b);
                libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: l,
                }
            })
            .collect();
        WriteV {
            fd,
            bufs,
            iov,
            // SAFETY: msghdr is plain data; zero is a valid empty header.
            msg: unsafe { mem::zeroed() },
            offset,
            socket,
        }
    }

    fn fill_msg(&mut self) {
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
    }
}

impl<B: IoBuf> OpCode for WriteV<B> {
    type Output = crate::BufResult<usize, Vec<B>>;

    fn sqe(&mut self) -> squeue::Entry {
        if self.socket {
            self.fill_msg();
            opcode::SendMsg::new(types::Fd(self.fd), &self.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        } else {
            opcode::Writev::new(types::Fd(self.fd), self.iov.as_ptr(), self.iov.len() as u32)
                .offset(self.offset.unwrap_or(u64::MAX))
                .build()
        }
    }

    fn mode(&self) -> Mode {
        if self.socket || self.offset.is_none() {
            Mode::Writable(self.fd)
        } else {
            Mode::Blocking
        }
    }

    fn perform(&mut self) -> io::Result<usize> {
        let r = if self.socket {
            self.fill_msg();
            // SAFETY: msg points at our iovecs, which describe initialised bytes.
            unsafe { libc::sendmsg(self.fd, &self.msg, libc::MSG_NOSIGNAL) }
        } else {
            // SAFETY: the iovecs describe the buffers' initialised bytes.
            unsafe {
                match self.offset {
                    Some(off) => libc::pwritev(
                        self.fd,
                        self.iov.as_ptr(),
                        self.iov.len() as i32,
                        off as libc::off_t,
                    ),
                    None => libc::writev(self.fd, self.iov.as_ptr(), self.iov.len() as i32),
                }
            }
        };
        cvt(r)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        (res, self.bufs)
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
    type Output = crate::BufResult<usize, B>;

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
    type Output = crate::BufResult<(usize, SocketAddr), B>;

    fn check(&self) -> io::Result<()> {
        if self.iov[0].iov_len == 0 {
            return Err(crate::net::no_spare_capacity());
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
