//! Unix-domain sockets: addresses in `sockaddr_un` form, `socketpair`,
//! `SO_PEERCRED`, and the ops that need more than `net` offers — a connect
//! that never waits for readiness, and `sendmsg`/`recvmsg` carrying an
//! address and `SCM_RIGHTS` descriptors.
//!
//! ## Descriptors in flight
//! `SendMsg` owns duplicates of the descriptors it sends: the kernel reads
//! their numbers from the control buffer when it runs the SQE, which may
//! be after the caller's future (and its borrows) are gone; an owned
//! duplicate cannot be closed and reused under it. `RecvMsg` asks for
//! `MSG_CMSG_CLOEXEC`; the descriptors the kernel writes into its control
//! buffer are closed when the op is dropped unclaimed (a future dropped
//! after the kernel completed it), and all of them are closed when the
//! kernel says the control data was truncated (`MSG_CTRUNC`).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use super::sock::RawAddr;
use super::{Mode, OpCode};
use crate::buf::{self, IoBuf, IoBufMut};

/// Bytes in `sockaddr_un::sun_path`.
pub(crate) const SUN_PATH_LEN: usize = 108;

/// Offset of `sun_path` in `sockaddr_un` (after the family).
const SUN_PATH_OFFSET: usize = mem::size_of::<libc::sa_family_t>();

/// The kernel's limit of descriptors in one `SCM_RIGHTS` message
/// (`SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

impl RawAddr {
    /// A `sockaddr_un` whose `sun_path` holds `path`: a pathname (no NUL
    /// inside; a terminating NUL is added), an abstract name (a leading
    /// NUL, then any bytes), or nothing (unnamed, for autobind).
    pub(crate) fn from_unix(path: &[u8]) -> io::Result<RawAddr> {
        let abstract_ = path.first() == Some(&0);
        let room = if abstract_ || path.is_empty() {
            SUN_PATH_LEN
        } else {
            SUN_PATH_LEN - 1
        };
        if path.len() > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "Unix socket address too long: {} bytes, at most {room}",
                    path.len()
                ),
            ));
        }
        if !abstract_ && path.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Unix socket path contains a NUL byte",
            ));
        }
        let mut r = RawAddr::empty();
        let mut sun = libc::sockaddr_un {
            sun_family: libc::AF_UNIX as libc::sa_family_t,
            sun_path: [0; SUN_PATH_LEN],
        };
        for (d, s) in sun.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        // SAFETY: sockaddr_storage is larger than and aligned for
        // sockaddr_un.
        unsafe { std::ptr::write(&mut r.storage as *mut _ as *mut libc::sockaddr_un, sun) };
        let nul = usize::from(!abstract_ && !path.is_empty());
        r.len = (SUN_PATH_OFFSET + path.len() + nul) as libc::socklen_t;
        Ok(r)
    }

    /// The `sun_path` bytes of a `sockaddr_un` the kernel filled in: empty
    /// for an unnamed socket, a leading NUL for an abstract name, else the
    /// pathname without its terminating NUL.
    pub(crate) fn as_unix(&self) -> io::Result<Vec<u8>> {
        let len = self.len as usize;
        if len < SUN_PATH_OFFSET {
            // Unnamed peers may come back with just the family, or nothing.
            return Ok(Vec::new());
        }
        if self.storage.ss_family as libc::c_int != libc::AF_UNIX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected a Unix address, got family {}",
                    self.storage.ss_family
                ),
            ));
        }
        // SAFETY: the family says the storage holds a sockaddr_un.
        let sun: libc::sockaddr_un =
            unsafe { std::ptr::read(&self.storage as *const _ as *const libc::sockaddr_un) };
        let n = (len - SUN_PATH_OFFSET).min(SUN_PATH_LEN);
        let bytes: Vec<u8> = sun.sun_path[..n].iter().map(|&c| c as u8).collect();
        if bytes.first() == Some(&0) {
            return Ok(bytes);
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Ok(bytes[..end].to_vec())
    }
}

/// `getsockname` / `getpeername` in raw form.
pub(crate) fn raw_name(fd: RawFd, peer: bool) -> io::Result<RawAddr> {
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
    Ok(a)
}

/// `bind(2)` to a raw address.
pub(crate) fn bind_raw(fd: RawFd, a: &RawAddr) -> io::Result<()> {
    // SAFETY: valid fd and address.
    if unsafe { libc::bind(fd, a.ptr(), a.len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `connect(2)` to a raw address, at once (datagram sockets).
pub(crate) fn connect_raw_now(fd: RawFd, a: &RawAddr) -> io::Result<()> {
    // SAFETY: valid fd and address.
    if unsafe { libc::connect(fd, a.ptr(), a.len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connected pair of non-blocking, close-on-exec Unix sockets.
pub(crate) fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `SO_PEERCRED`: the peer's pid, uid and gid as of connect (or
/// `socketpair`).
pub(crate) fn peer_cred(fd: RawFd) -> io::Result<(i32, u32, u32)> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid fd; the value pointer and length match.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut c as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((c.pid, c.uid, c.gid))
}

/// The error of a Unix stream connect refused for now because the
/// listener's accept queue is full (`EAGAIN` from a non-blocking
/// `connect`): no readiness event announces room, so the caller retries.
pub(crate) fn backlog_full() -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        "the Unix listener's accept queue is full (EAGAIN)",
    )
}

/// `connect(2)` on a Unix stream socket. It never waits in the kernel on
/// a non-blocking socket: it connects at once, fails, or says `EAGAIN`
/// (the listener's backlog is full), reported as [`backlog_full`]. So
/// epoll runs it inline: there is no readiness to wait for.
pub(crate) struct UnixConnect {
    fd: RawFd,
    addr: RawAddr,
}

impl UnixConnect {
    pub(crate) fn new(fd: RawFd, addr: RawAddr) -> UnixConnect {
        UnixConnect { fd, addr }
    }
}

impl OpCode for UnixConnect {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> squeue::Entry {
        opcode::Connect::new(types::Fd(self.fd), self.addr.ptr(), self.addr.len).build()
    }

    fn mode(&self) -> Mode {
        Mode::Inline
    }

    fn perform(&mut self) -> io::Result<usize> {
        connect_raw_now(self.fd, &self.addr).map(|_| 0)
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        match res {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(backlog_full()),
            r => r.map(|_| ()),
        }
    }
}

/// A control buffer for `n` descriptors, aligned for `cmsghdr`.
fn cmsg_buf(n: usize) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: CMSG_SPACE only computes a size.
    let bytes = unsafe { libc::CMSG_SPACE((n * mem::size_of::<RawFd>()) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

/// `sendmsg(2)` with an optional destination address and optional
/// `SCM_RIGHTS` descriptors (`IORING_OP_SENDMSG` on io_uring).
pub(crate) struct SendMsg<B> {
    fd: RawFd,
    buf: B,
    iov: [libc::iovec; 1],
    addr: Option<RawAddr>,
    /// Duplicates of the descriptors sent, alive until completion.
    fds: Vec<OwnedFd>,
    cmsg: Vec<u64>,
    msg: libc::msghdr,
    /// Set when the arguments are bad; reported by `check`.
    bad: Option<io::Error>,
}

impl<B: IoBuf> SendMsg<B> {
    /// Sends `buf` (to `addr` if given) with duplicates of `fds` attached.
    /// On a stream socket (`stream`) descriptors need at least one byte to
    /// ride on.
    pub(crate) fn new(
        fd: RawFd,
        buf: B,
        addr: Option<RawAddr>,
        fds: &[BorrowedFd<'_>],
        stream: bool,
    ) -> SendMsg<B> {
        let (p, l) = buf::init(&buf);
        let mut bad = None;
        let mut owned = Vec::new();
        if fds.len() > MAX_FDS {
            bad = Some(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} descriptors in one message; the kernel takes at most {MAX_FDS}",
                    fds.len()
                ),
            ));
        } else if stream && !fds.is_empty() && l == 0 {
            bad = Some(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptors sent on a stream socket need at least one byte of data",
            ));
        } else {
            for f in fds {
                match f.try_clone_to_owned() {
                    Ok(o) => owned.push(o),
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
        }
        let cmsg = if bad.is_none() {
            cmsg_buf(owned.len())
        } else {
            Vec::new()
        };
        let mut op = SendMsg {
            fd,
            buf,
            iov: [libc::iovec {
                iov_base: p as *mut libc::c_void,
                iov_len: l,
            }],
            addr,
            fds: owned,
            cmsg,
            // SAFETY: plain data; zero is an empty header.
            msg: unsafe { mem::zeroed() },
            bad,
        };
        op.write_rights();
        op
    }

    /// Makes the op fail with `e` (if any) when first polled: an argument
    /// found bad before the op was built.
    pub(crate) fn fail_with(mut self, e: Option<io::Error>) -> SendMsg<B> {
        if e.is_some() {
            self.bad = e;
        }
        self
    }

    /// Writes the `SCM_RIGHTS` header and descriptor numbers into `cmsg`.
    fn write_rights(&mut self) {
        if self.fds.is_empty() || self.cmsg.is_empty() {
            return;
        }
        let data_len = self.fds.len() * mem::size_of::<RawFd>();
        // A header pointing at the control buffer, for the CMSG_ macros.
        // SAFETY: plain data; zero is an empty header.
        let mut m: libc::msghdr = unsafe { mem::zeroed() };
        m.msg_control = self.cmsg.as_mut_ptr().cast();
        m.msg_controllen = self.cmsg.len() * 8;
        // SAFETY: the control buffer holds CMSG_SPACE(data_len) bytes,
        // aligned for cmsghdr (u64 storage), so the first header and its
        // data fit; we write only inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
            let data = libc::CMSG_DATA(c).cast::<RawFd>();
            for (i, f) in self.fds.iter().enumerate() {
                data.add(i).write_unaligned(f.as_raw_fd());
            }
        }
    }

    fn fill(&mut self) {
        match &mut self.addr {
            Some(a) => {
                self.msg.msg_name = a.mut_ptr().cast();
                self.msg.msg_namelen = a.len;
            }
            None => {
                self.msg.msg_name = std::ptr::null_mut();
                self.msg.msg_namelen = 0;
            }
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = 1;
        if self.cmsg.is_empty() {
            self.msg.msg_control = std::ptr::null_mut();
            self.msg.msg_controllen = 0;
        } else {
            self.msg.msg_control = self.cmsg.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            self.msg.msg_controllen =
                unsafe { libc::CMSG_SPACE((self.fds.len() * mem::size_of::<RawFd>()) as u32) }
                    as usize;
        }
    }
}

impl<B: IoBuf> OpCode for SendMsg<B> {
    type Output = crate::buf::BufResult<usize, B>;

    fn check(&self) -> io::Result<()> {
        match &self.bad {
            Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }

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
        // SAFETY: msg points into self (address, iovec, control buffer),
        // valid now.
        cvt(unsafe { libc::sendmsg(self.fd, &self.msg, libc::MSG_NOSIGNAL) })
    }

    fn complete(self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        // The duplicates close with `self.fds`.
        (res, self.buf)
    }
}

/// What a [`RecvMsg`] got: bytes, the sender, the descriptors.
pub(crate) struct Received {
    pub(crate) n: usize,
    pub(crate) addr: RawAddr,
    pub(crate) fds: Vec<OwnedFd>,
}

/// A `msghdr` and its control buffer, receiving descriptors. Dropped
/// with descriptors nobody claimed (the op's future went away after the
/// kernel completed it), it closes them.
struct Control {
    msg: libc::msghdr,
    cmsg: Vec<u64>,
    claimed: bool,
}

impl Control {
    /// Takes the descriptors the kernel put in the control buffer (once).
    fn take_fds(&mut self) -> Vec<OwnedFd> {
        let mut out = Vec::new();
        if self.claimed || self.cmsg.is_empty() {
            return out;
        }
        self.claimed = true;
        let cap = self.cmsg.len() * 8;
        // The kernel wrote back how much of the buffer it used; a buffer
        // it never filled (cancelled, failed) is all zeros and yields
        // nothing.
        let used = self.msg.msg_controllen.min(cap);
        // SAFETY: plain data; zero is an empty header.
        let mut m: libc::msghdr = unsafe { mem::zeroed() };
        m.msg_control = self.cmsg.as_mut_ptr().cast();
        m.msg_controllen = used;
        let base = self.cmsg.as_ptr() as usize;
        // SAFETY: we walk headers inside the `used` bytes of our control
        // buffer with the CMSG_ macros, checking each header's length
        // against the end before reading its data; each descriptor in an
        // SCM_RIGHTS header was installed for us by the kernel and is
        // owned by nobody else.
        unsafe {
            let head = libc::CMSG_LEN(0) as usize;
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() {
                let len = (*c).cmsg_len;
                let start = c as usize - base;
                if len < head || start + len > used {
                    break;
                }
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let n = (len - head) / mem::size_of::<RawFd>();
                    for i in 0..n {
                        let fd = data.add(i).read_unaligned();
                        if fd >= 0 {
                            out.push(OwnedFd::from_raw_fd(fd));
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&m, c);
            }
        }
        out
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        drop(self.take_fds());
    }
}

/// `recvmsg(2)` into a buffer's spare capacity, reporting the sender and
/// taking up to `max_fds` `SCM_RIGHTS` descriptors (`IORING_OP_RECVMSG`
/// on io_uring), with `MSG_CMSG_CLOEXEC`.
pub(crate) struct RecvMsg<B> {
    fd: RawFd,
    buf: B,
    iov: [libc::iovec; 1],
    addr: RawAddr,
    ctl: Control,
}

impl<B: IoBufMut> RecvMsg<B> {
    pub(crate) fn new(fd: RawFd, mut buf: B, max_fds: usize) -> RecvMsg<B> {
        let (p, l) = buf::spare(&mut buf);
        RecvMsg {
            fd,
            buf,
            iov: [libc::iovec {
                iov_base: p.cast(),
                iov_len: l,
            }],
            addr: RawAddr::empty(),
            ctl: Control {
                // SAFETY: plain data; zero is an empty header.
                msg: unsafe { mem::zeroed() },
                cmsg: cmsg_buf(max_fds.min(MAX_FDS)),
                claimed: false,
            },
        }
    }

    fn fill(&mut self) {
        let m = &mut self.ctl.msg;
        m.msg_name = self.addr.mut_ptr().cast();
        m.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_iov = self.iov.as_mut_ptr();
        m.msg_iovlen = 1;
        if self.ctl.cmsg.is_empty() {
            m.msg_control = std::ptr::null_mut();
        } else {
            m.msg_control = self.ctl.cmsg.as_mut_ptr().cast();
        }
        m.msg_controllen = self.ctl.cmsg.len() * 8;
        m.msg_flags = 0;
    }
}

impl<B: IoBufMut> OpCode for RecvMsg<B> {
    type Output = crate::buf::BufResult<Received, B>;

    fn check(&self) -> io::Result<()> {
        if self.iov[0].iov_len == 0 {
            return Err(super::rw::no_spare_capacity());
        }
        Ok(())
    }

    fn sqe(&mut self) -> squeue::Entry {
        self.fill();
        opcode::RecvMsg::new(types::Fd(self.fd), &mut self.ctl.msg)
            .flags(libc::MSG_CMSG_CLOEXEC as u32)
            .build()
    }

    fn mode(&self) -> Mode {
        Mode::Readable(self.fd)
    }

    fn perform(&mut self) -> io::Result<usize> {
        self.fill();
        // SAFETY: msg points into self, valid now.
        cvt(unsafe { libc::recvmsg(self.fd, &mut self.ctl.msg, libc::MSG_CMSG_CLOEXEC) })
    }

    fn complete(mut self, res: io::Result<usize>, _flags: u32) -> Self::Output {
        let n = match res {
            Ok(n) => n,
            Err(e) => return (Err(e), self.buf),
        };
        buf::advance(&mut self.buf, n);
        let fds = self.ctl.take_fds();
        if self.ctl.msg.msg_flags & libc::MSG_CTRUNC != 0 {
            let got = fds.len();
            drop(fds);
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "ancillary data truncated (MSG_CTRUNC): the {got} descriptor(s) that fit \
                     were closed and the kernel discarded the rest; the {n} byte(s) that came \
                     with them are in the buffer; allow more descriptors"
                ),
            );
            return (Err(e), self.buf);
        }
        let mut addr = self.addr;
        addr.len = self.ctl.msg.msg_namelen;
        (Ok(Received { n, addr, fds }), self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The inode behind `fd`, or `None` if `fd` is closed.
    fn inode(fd: RawFd) -> Option<u64> {
        // SAFETY: fstat fills a plain struct; a closed fd is EBADF.
        unsafe {
            let mut st: libc::stat = mem::zeroed();
            (libc::fstat(fd, &mut st) == 0).then_some(st.st_ino)
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: room for two descriptors, which we then own.
        unsafe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    /// Sends one pipe end over a fresh stream pair and receives it into a
    /// `RecvMsg` that is left unclaimed: the descriptor number it got.
    fn received_unclaimed(max: usize) -> (RecvMsg<Vec<u8>>, u64, (OwnedFd, OwnedFd)) {
        let (a, b) = socketpair(libc::SOCK_STREAM).unwrap();
        let (pr, _pw) = pipe();
        let ino = inode(pr.as_raw_fd()).unwrap();
        let mut s = SendMsg::new(a.as_raw_fd(), b"x".to_vec(), None, &[pr.as_fd()], true);
        assert_eq!(s.perform().unwrap(), 1);
        let mut r = RecvMsg::new(b.as_raw_fd(), Vec::with_capacity(4), max);
        assert_eq!(r.perform().unwrap(), 1);
        drop(pr);
        (r, ino, (a, b))
    }

    /// The first SCM_RIGHTS descriptor in the control buffer.
    fn first_fd(r: &RecvMsg<Vec<u8>>) -> RawFd {
        // After a 16-byte cmsghdr (64-bit): the descriptor.
        r.ctl.cmsg[2] as u32 as RawFd
    }

    #[test]
    fn an_unclaimed_receive_closes_its_descriptors() {
        let (r, ino, _pair) = received_unclaimed(2);
        let fd = first_fd(&r);
        assert_eq!(inode(fd), Some(ino), "the pipe arrived");
        drop(r);
        assert_ne!(inode(fd), Some(ino), "dropping the op closed it");
    }

    #[test]
    fn a_claimed_receive_hands_them_over_once() {
        let (r, ino, _pair) = received_unclaimed(2);
        let (res, _) = r.complete(Ok(1), 0);
        let got = res.unwrap();
        assert_eq!(got.fds.len(), 1);
        assert_eq!(inode(got.fds[0].as_raw_fd()), Some(ino));
    }

    #[test]
    fn a_cancelled_receive_finds_nothing() {
        let (a, b) = socketpair(libc::SOCK_STREAM).unwrap();
        let mut r = RecvMsg::new(b.as_raw_fd(), Vec::with_capacity(4), 4);
        r.fill();
        assert!(r.ctl.take_fds().is_empty());
        drop(a);
    }
}
