//! [`splice`]: moving bytes between descriptors without passing them
//! through user space.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use crate::driver::op::Op;
use crate::driver::op::splice::{FdKind, Pipe, Ready, Splice, fd_kind, ready_now};

/// Moves up to `len` bytes from `from` to `to` with `splice(2)`, without
/// copying them through user space; returns how many moved, `0` at the
/// end of `from` (or when `len` is 0).
///
/// `from` and `to` are anything with a descriptor ([`AsFd`]): our
/// [`TcpStream`](super::TcpStream)s and [`UnixStream`](super::UnixStream)s,
/// std pipes (`std::io::pipe()`), files (`std::fs::File`,
/// [`fs::File`](crate::fs::File)). Neither end's offset is given: a file
/// is read or written at its own position, which moves.
///
/// - If one end is a pipe, this is one `splice`: `IORING_OP_SPLICE` on
///   io_uring (the kernel runs it on an io-wq worker thread), the system
///   call on epoll (on the blocking pool when the other end is a regular
///   file). Pipes are never blocked on (`SPLICE_F_NONBLOCK`): if the
///   pipe or the other end is not ready, the call waits for readiness
///   (on whichever side is not ready) and retries. At most one pipe
///   buffer's worth moves per call (64 KiB by default).
/// - If neither is a pipe (socket to socket, file to socket), the bytes go
///   through a pipe made for the call: one splice in, then as many out as
///   it takes to move all of them. **Dropping the future between the two
///   loses the bytes already in that pipe**; for a relay that must not
///   lose bytes use [`copy_bidirectional`](super::copy_bidirectional),
///   which hands them back.
///
/// Both backends return the same results and errors (`EINVAL` from the
/// kernel, as `InvalidInput`, for descriptors `splice(2)` refuses, e.g.
/// an `O_APPEND` file or a UDP socket; `EBADF` for a closed one).
pub async fn splice(from: &impl AsFd, to: &impl AsFd, len: usize) -> io::Result<usize> {
    let fin = from.as_fd().as_raw_fd();
    let fout = to.as_fd().as_raw_fd();
    let kin = fd_kind(fin)?;
    let kout = fd_kind(fout)?;
    if len == 0 {
        return Ok(0);
    }
    if kin == FdKind::Pipe || kout == FdKind::Pipe {
        return splice_once(fin, kin, fout, kout, len).await;
    }
    let pipe = Rc::new(Pipe::new(None)?);
    let (pr, pw) = (pipe.r.as_raw_fd(), pipe.w.as_raw_fd());
    let n = splice_once(fin, kin, pw, FdKind::Pipe, len).await?;
    let mut moved = 0;
    while moved < n {
        let k = splice_once(pr, FdKind::Pipe, fout, kout, n - moved).await?;
        if k == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        moved += k;
    }
    Ok(n)
}

/// One splice between `fin` and `fout` (one a pipe), waiting for
/// readiness and retrying on `EAGAIN`.
pub(crate) async fn splice_once(
    fin: RawFd,
    kin: FdKind,
    fout: RawFd,
    kout: FdKind,
    len: usize,
) -> io::Result<usize> {
    let blocking = kin == FdKind::File || kout == FdKind::File;
    loop {
        let r = splice_op(fin, fout, len, blocking, None).await;
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_side(fin, kin, fout, kout).await?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// One splice op, or the system call itself where the io_uring loop's
/// kernel has no `IORING_OP_SPLICE`.
pub(crate) async fn splice_op(
    fin: RawFd,
    fout: RawFd,
    len: usize,
    blocking: bool,
    keep: Option<Rc<Pipe>>,
) -> io::Result<usize> {
    let mut op = Splice::new(fin, fout, len, blocking);
    if let Some(p) = keep {
        op = op.keep(p);
    }
    let native = crate::driver::with_current(|d| !d.is_uring() || d.features.splice)
        .expect("net::splice used outside a running uringio loop");
    if native {
        Op::new(op).await
    } else {
        op.run_now()
    }
}

/// Waits until the side that made a splice say `EAGAIN` is ready.
async fn wait_side(fin: RawFd, kin: FdKind, fout: RawFd, kout: FdKind) -> io::Result<()> {
    if kin != FdKind::File && !ready_now(fin, false) {
        return Op::new(Ready::new(fin, false)).await;
    }
    if kout != FdKind::File && !ready_now(fout, true) {
        return Op::new(Ready::new(fout, true)).await;
    }
    // Both look ready but the kernel said EAGAIN (a pipe with room for
    // less than a page): try again shortly.
    crate::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}
