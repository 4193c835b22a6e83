//! Why `put_nowait` and `get_nowait` failed.

use std::fmt;
use std::io;

use crate::error::{QueueEmpty, QueueFull, QueueShutDown};

/// Why [`put_nowait`](super::Queue::put_nowait) failed; holds the item, which
/// was not put.
///
/// Converts into an [`io::Error`] carrying [`QueueFull`] (kind `WouldBlock`)
/// or [`QueueShutDown`] (kind `BrokenPipe`); the item is dropped then.
#[derive(Clone, PartialEq, Eq)]
pub enum PutError<T> {
    /// The queue is at its `maxsize` (`asyncio.QueueFull`).
    Full(T),
    /// The queue was shut down (`asyncio.QueueShutDown`).
    ShutDown(T),
}

impl<T> PutError<T> {
    /// The item that could not be put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(item) | PutError::ShutDown(item) => item,
        }
    }

    /// True for [`PutError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }

    /// True for [`PutError::ShutDown`].
    pub fn is_shut_down(&self) -> bool {
        matches!(self, PutError::ShutDown(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::ShutDown(_) => f.write_str("ShutDown(..)"),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => fmt::Display::fmt(&QueueFull, f),
            PutError::ShutDown(_) => fmt::Display::fmt(&QueueShutDown, f),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

impl<T> From<PutError<T>> for io::Error {
    fn from(e: PutError<T>) -> io::Error {
        match e {
            PutError::Full(_) => QueueFull.into(),
            PutError::ShutDown(_) => QueueShutDown.into(),
        }
    }
}

/// Why [`get_nowait`](super::Queue::get_nowait) failed.
///
/// Converts from [`QueueEmpty`] and [`QueueShutDown`], and into an
/// [`io::Error`] carrying one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// No item is ready (`asyncio.QueueEmpty`).
    Empty,
    /// The queue was shut down and is empty (`asyncio.QueueShutDown`).
    ShutDown,
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => fmt::Display::fmt(&QueueEmpty, f),
            GetError::ShutDown => fmt::Display::fmt(&QueueShutDown, f),
        }
    }
}

impl std::error::Error for GetError {}

impl From<QueueEmpty> for GetError {
    fn from(_: QueueEmpty) -> GetError {
        GetError::Empty
    }
}

impl From<QueueShutDown> for GetError {
    fn from(_: QueueShutDown) -> GetError {
        GetError::ShutDown
    }
}

impl From<GetError> for io::Error {
    fn from(e: GetError) -> io::Error {
        match e {
            GetError::Empty => QueueEmpty.into(),
            GetError::ShutDown => QueueShutDown.into(),
        }
    }
}
