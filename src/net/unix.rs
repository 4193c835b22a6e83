//! Unix-domain sockets: [`UnixListener`], [`UnixStream`], [`UnixDatagram`]
//! and their address type [`UnixSocketAddr`] (pathnames, Linux abstract
//! names, unnamed).
//!
//! The same owned-buffer ops as TCP and UDP, plus descriptor passing
//! (`SCM_RIGHTS`): [`UnixStream::send_with_fds`] /
//! [`UnixStream::recv_with_fds`] and the same on [`UnixDatagram`]. On
//! io_uring they are `IORING_OP_SENDMSG` / `IORING_OP_RECVMSG` SQEs; on
//! epoll `sendmsg` / `recvmsg` on readiness. See
//! `uring-sys-notes/sendmsg-recvmsg.md` for the pitfalls.

mod addr;
mod datagram;
mod stream;

pub use addr::UnixSocketAddr;
pub use datagram::UnixDatagram;
pub use stream::{UnixIncoming, UnixListener, UnixReadHalf, UnixStream, UnixWriteHalf};

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BufResult;
use crate::driver::{Cancellable, Canceller};

/// A Unix peer's credentials ([`UnixStream::peer_cred`], `SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UCred {
    /// The peer's process id as of connect (0 if it is in another pid
    /// namespace the kernel cannot map).
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// Removes `path` if it is a socket file (not following a symlink);
/// `Ok(false)` if there was nothing there or it is something else, which
/// is left alone. asyncio's `create_unix_server` does this before
/// binding, so a server restarted after a crash can bind again.
pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// An op whose output is mapped on completion; cancellable like the op.
struct MapOp<F, M> {
    op: F,
    map: Option<M>,
}

impl<F, M> MapOp<F, M> {
    fn new(op: F, map: M) -> MapOp<F, M> {
        MapOp { op, map: Some(map) }
    }
}

impl<F, M, T, U, B> Future for MapOp<F, M>
where
    F: Future<Output = BufResult<T, B>> + Unpin,
    M: FnOnce(T) -> io::Result<U> + Unpin,
{
    type Output = BufResult<U, B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (res, buf) = std::task::ready!(Pin::new(&mut this.op).poll(cx));
        let map = this.map.take().expect("MapOp polled after completion");
        Poll::Ready((res.and_then(map), buf))
    }
}

impl<F, M, T, U, B> Cancellable for MapOp<F, M>
where
    F: Cancellable<Output = BufResult<T, B>> + Unpin,
    M: FnOnce(T) -> io::Result<U> + Unpin,
{
    fn with_canceller(self, c: &Canceller) -> Self {
        MapOp {
            op: self.op.with_canceller(c),
            map: self.map,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_stale_socket_only_removes_sockets() {
        let dir = std::env::temp_dir().join(format!("uringio-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let file = dir.join("f");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        std::fs::write(&file, b"x").unwrap();
        assert!(remove_stale_socket(&sock).unwrap());
        assert!(!sock.exists());
        assert!(!remove_stale_socket(&sock).unwrap(), "nothing there");
        assert!(!remove_stale_socket(&file).unwrap());
        assert!(file.exists(), "a regular file is left alone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
