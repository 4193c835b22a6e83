//! Pipe transports (asyncio's `connect_read_pipe` / `connect_write_pipe`):
//! the stream transport over one end of a pipe (or any non-seekable fd:
//! a FIFO, a character device, a socket used one way).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use super::Protocol;
use super::stream::{Conn, SockAddr, Transport, start};
use crate::driver::op::Op;
use crate::driver::op::rw;
use crate::net::Socket;

/// One end of a pipe, non-blocking.
pub(crate) struct PipeEnd {
    fd: Socket,
    read: bool,
}

impl PipeEnd {
    pub(crate) fn new(fd: OwnedFd, read: bool) -> io::Result<PipeEnd> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let mut flags = nix::fcntl::OFlag::from_bits_retain(flags);
        flags.insert(nix::fcntl::OFlag::O_NONBLOCK);
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(PipeEnd {
            fd: Socket::new(fd),
            read,
        })
    }
}

impl Conn for PipeEnd {
    type Recv = Op<rw::Read<Vec<u8>>>;
    type Send = Op<rw::Write<crate::buf::Slice<Vec<u8>>>>;
    type SendV = Op<rw::WriteV<Vec<u8>>>;
    fn recv(&self, buf: Vec<u8>) -> Self::Recv {
        Op::new(rw::Read::new(self.fd.fd(), buf, None, false))
    }
    fn send(&self, buf: crate::buf::Slice<Vec<u8>>) -> Self::Send {
        Op::new(rw::Write::new(self.fd.fd(), buf, None, false))
    }
    fn send_vectored(&self, bufs: Vec<Vec<u8>>) -> Self::SendV {
        Op::new(rw::WriteV::new(self.fd.fd(), bufs, None, false))
    }
    fn shutdown_write(&self) -> Option<io::Result<()>> {
        None
    }
    fn can_write_eof(&self) -> bool {
        !self.read
    }
    fn eof_closes(&self) -> bool {
        true
    }
    fn readable(&self) -> bool {
        self.read
    }
    fn writable(&self) -> bool {
        !self.read
    }
    fn peername(&self) -> Option<SockAddr> {
        None
    }
    fn sockname(&self) -> Option<SockAddr> {
        None
    }
}

impl AsRawFd for PipeEnd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.fd()
    }
}

/// Runs `factory()`'s protocol on the read end of a pipe: `data_received`
/// for what comes through, `eof_received` then `connection_lost` when the
/// writer closes. The fd is made non-blocking and closed with the
/// transport.
pub async fn connect_read_pipe<P: Protocol>(
    factory: impl FnOnce() -> P,
    pipe: OwnedFd,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    read_pipe(factory, pipe)
}

/// [`connect_read_pipe`] without the `async` (it never waits).
pub(crate) fn read_pipe<P: Protocol>(
    factory: impl FnOnce() -> P,
    pipe: OwnedFd,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    let end = PipeEnd::new(pipe, true)?;
    let p = Rc::new(RefCell::new(factory()));
    let t = start(end, p.clone(), None);
    Ok((t, p))
}

/// Runs `factory()`'s protocol on the write end of a pipe: `write` sends
/// into it (with asyncio's flow control: a reader that does not keep up
/// pauses the protocol), `write_eof` or `close` closes it after flushing;
/// a reader that goes away ends the transport with `BrokenPipe`.
pub async fn connect_write_pipe<P: Protocol>(
    factory: impl FnOnce() -> P,
    pipe: OwnedFd,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    write_pipe(factory, pipe)
}

/// [`connect_write_pipe`] without the `async` (it never waits).
pub(crate) fn write_pipe<P: Protocol>(
    factory: impl FnOnce() -> P,
    pipe: OwnedFd,
) -> io::Result<(Transport, Rc<RefCell<P>>)> {
    let end = PipeEnd::new(pipe, false)?;
    let p = Rc::new(RefCell::new(factory()));
    let t = start(end, p.clone(), None);
    Ok((t, p))
}
