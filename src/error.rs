//! asyncio's special exceptions, as concrete error types.
//!
//! Each type is `std::error::Error + Display`. Those that can occur inside I/O
//! convert into [`std::io::Error`] with a fitting [`io::ErrorKind`]; the
//! original value is recovered with `io::Error::get_ref()` and
//! `downcast_ref::<T>()`.

use std::any::Any;
use std::fmt;
use std::io;

macro_rules! unit_error {
    ($(#[$doc:meta])* $name:ident, $msg:expr, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($msg)
            }
        }

        impl std::error::Error for $name {}

        impl From<$name> for io::Error {
            fn from(e: $name) -> io::Error {
                io::Error::new($kind, e)
            }
        }
    };
}

unit_error!(
    /// An operation did not finish before its deadline (`asyncio.TimeoutError`).
    TimeoutError,
    "operation timed out",
    io::ErrorKind::TimedOut
);
unit_error!(
    /// The awaited work was cancelled (`asyncio.CancelledError`).
    CancelledError,
    "operation was cancelled",
    io::ErrorKind::Interrupted
);
unit_error!(
    /// A future or task was asked for something its state does not allow
    /// (`asyncio.InvalidStateError`): a result that is not set yet, or a second
    /// `set_result`.
    InvalidStateError,
    "invalid state: the future is not in a state that allows this",
    io::ErrorKind::Other
);
unit_error!(
    /// `get_nowait` on an empty queue (`asyncio.QueueEmpty`).
    QueueEmpty,
    "queue is empty",
    io::ErrorKind::WouldBlock
);
unit_error!(
    /// `put_nowait` on a full queue (`asyncio.QueueFull`).
    QueueFull,
    "queue is full",
    io::ErrorKind::WouldBlock
);
unit_error!(
    /// The queue was shut down (`asyncio.QueueShutDown`, Python 3.13).
    QueueShutDown,
    "queue is shut down",
    io::ErrorKind::BrokenPipe
);
unit_error!(
    /// A barrier was aborted or reset while tasks waited on it
    /// (`asyncio.BrokenBarrierError`).
    BrokenBarrierError,
    "barrier is broken",
    io::ErrorKind::Other
);
unit_error!(
    /// The platform cannot do a zero-copy sendfile for this pair of files
    /// (`asyncio.SendfileNotAvailableError`).
    SendfileNotAvailableError,
    "sendfile is not available for this file or socket",
    io::ErrorKind::Unsupported
);

/// A value is out of its allowed range (Python's `ValueError`), for example
/// `task_done()` called more times than items were put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    msg: String,
}

impl ValueError {
    /// A `ValueError` with this message.
    pub fn new(msg: impl Into<String>) -> ValueError {
        ValueError { msg: msg.into() }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for ValueError {}

impl From<ValueError> for io::Error {
    fn from(e: ValueError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// `readexactly(n)` hit end of stream first (`asyncio.IncompleteReadError`).
///
/// Travels inside an `io::Error` of kind `UnexpectedEof`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteReadError {
    /// The bytes read before end of stream.
    pub partial: Vec<u8>,
    /// How many bytes were asked for (`None` for "until a separator").
    pub expected: Option<usize>,
}

impl fmt::Display for IncompleteReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(n) => write!(
                f,
                "{} bytes read on a total of {} expected bytes",
                self.partial.len(),
                n
            ),
            None => write!(
                f,
                "{} bytes read on a total of undefined expected bytes",
                self.partial.len()
            ),
        }
    }
}

impl std::error::Error for IncompleteReadError {}

impl From<IncompleteReadError> for io::Error {
    fn from(e: IncompleteReadError) -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, e)
    }
}

/// A separator was not found within the stream's limit
/// (`asyncio.LimitOverrunError`). The data stays in the reader's buffer.
///
/// Travels inside an `io::Error` of kind `InvalidData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOverrunError {
    /// How many bytes must be consumed to get past the point checked.
    pub consumed: usize,
    /// What went over the limit.
    pub message: String,
}

impl fmt::Display for LimitOverrunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (consumed {} bytes)", self.message, self.consumed)
    }
}

impl std::error::Error for LimitOverrunError {}

impl From<LimitOverrunError> for io::Error {
    fn from(e: LimitOverrunError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Why awaiting a [`Task`](crate::task::Task) gave no value: it was
/// cancelled, or its future panicked.
pub struct JoinError {
    repr: JoinRepr,
}

enum JoinRepr {
    Cancelled,
    Panic(PanicPayload),
}

/// A panic's payload, kept so it can be re-raised, in a form that can
/// travel inside an `io::Error` (which needs `Send + Sync`): the payload is
/// reached by value ([`into_inner`](Self::into_inner)), and its message,
/// when it is a string, is kept beside it.
pub struct PanicPayload {
    inner: std::sync::Mutex<Box<dyn Any + Send + 'static>>,
    msg: Option<String>,
}

impl PanicPayload {
    pub(crate) fn new(p: Box<dyn Any + Send + 'static>) -> PanicPayload {
        let msg = panic_message(p.as_ref()).map(str::to_string);
        PanicPayload {
            inner: std::sync::Mutex::new(p),
            msg,
        }
    }

    /// The panic message, when the payload is a `&str` or a `String`.
    pub fn message(&self) -> Option<&str> {
        self.msg.as_deref()
    }

    /// Whether the payload is a `T`.
    pub fn is<T: Any>(&self) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (**g).is::<T>()
    }

    /// The payload, to re-raise with `std::panic::resume_unwind`.
    pub fn into_inner(self) -> Box<dyn Any + Send + 'static> {
        self.inner.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for PanicPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PanicPayload({:?})",
            self.msg.as_deref().unwrap_or("<non-string payload>")
        )
    }
}

impl JoinError {
    pub(crate) fn cancelled() -> JoinError {
        JoinError {
            repr: JoinRepr::Cancelled,
        }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            repr: JoinRepr::Panic(PanicPayload::new(payload)),
        }
    }

    /// The task was cancelled before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, JoinRepr::Cancelled)
    }

    /// The task's future panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, JoinRepr::Panic(_))
    }

    /// The panic payload, to re-raise with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the task was cancelled rather than panicked; see
    /// [`try_into_panic`](Self::try_into_panic).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .unwrap_or_else(|_| panic!("JoinError::into_panic called on a cancelled task"))
    }

    /// The panic payload, or the error back if the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            JoinRepr::Panic(p) => Ok(p.into_inner()),
            JoinRepr::Cancelled => Err(self),
        }
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            JoinRepr::Panic(p) => p.message(),
            JoinRepr::Cancelled => None,
        }
    }
}

/// The text of a panic payload, when it is a `&str` or a `String`.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> Option<&str> {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        Some(s)
    } else {
        p.downcast_ref::<String>().map(|s| s.as_str())
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            JoinRepr::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinRepr::Panic(p) => write!(
                f,
                "JoinError::Panic({:?})",
                p.message().unwrap_or("<non-string payload>")
            ),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            JoinRepr::Cancelled => f.write_str("task was cancelled"),
            JoinRepr::Panic(p) => match p.message() {
                Some(m) => write!(f, "task panicked: {m}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        let kind = if e.is_cancelled() {
            io::ErrorKind::Interrupted
        } else {
            io::ErrorKind::Other
        };
        // The error itself travels inside: `get_ref()` and
        // `downcast_ref::<JoinError>()` get it back.
        io::Error::new(kind, e)
    }
}

/// One failure inside a [`TaskGroup`](crate::task::TaskGroup).
#[derive(Debug)]
pub enum TaskFailure<E> {
    /// The task's future returned `Err(e)`.
    Error(E),
    /// The task's future panicked; the payload is kept.
    Panic(PanicPayload),
}

/// Every error raised inside a [`TaskGroup`](crate::task::TaskGroup), in the
/// order they happened (asyncio's `ExceptionGroup`).
#[derive(Debug)]
pub struct TaskGroupError<E> {
    /// Each failure, first one first.
    pub errors: Vec<TaskFailure<E>>,
}

impl<E> TaskGroupError<E> {
    /// The plain errors (panics left out).
    pub fn errors(&self) -> impl Iterator<Item = &E> {
        self.errors.iter().filter_map(|f| match f {
            TaskFailure::Error(e) => Some(e),
            TaskFailure::Panic(_) => None,
        })
    }

    /// How many tasks failed.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True if no task failed (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl<E: fmt::Display> fmt::Display for TaskGroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unhandled errors in a TaskGroup ({} sub-exception{})",
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            match e {
                TaskFailure::Error(e) => write!(f, "; {e}")?,
                TaskFailure::Panic(p) => write!(
                    f,
                    "; panic: {}",
                    p.message().unwrap_or("<non-string payload>")
                )?,
            }
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for TaskGroupError<E> {}

impl<E> From<TaskGroupError<E>> for io::Error
where
    E: fmt::Debug + fmt::Display + Send + Sync + 'static,
{
    /// Kind `Other`, the group error inside (recover it with
    /// `get_ref()` and `downcast_ref::<TaskGroupError<E>>()`).
    fn from(e: TaskGroupError<E>) -> io::Error {
        io::Error::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_travel_inside_io_error() {
        let e: io::Error = IncompleteReadError {
            partial: b"ab".to_vec(),
            expected: Some(4),
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let inner = e
            .get_ref()
            .unwrap()
            .downcast_ref::<IncompleteReadError>()
            .unwrap();
        assert_eq!(inner.partial, b"ab");
        let e: io::Error = LimitOverrunError {
            consumed: 7,
            message: "separator not found".into(),
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            e.get_ref()
                .unwrap()
                .downcast_ref::<LimitOverrunError>()
                .unwrap()
                .consumed,
            7
        );
        let e: io::Error = TimeoutError.into();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.get_ref().unwrap().is::<TimeoutError>());
    }

    #[test]
    fn join_and_group_errors_stay_typed_inside_io_error() {
        let e: io::Error = JoinError::cancelled().into();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert!(
            e.get_ref()
                .unwrap()
                .downcast_ref::<JoinError>()
                .unwrap()
                .is_cancelled()
        );

        let e: io::Error = JoinError::panic(Box::new("boom")).into();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        let j = e.into_inner().unwrap().downcast::<JoinError>().unwrap();
        assert_eq!(j.panic_message(), Some("boom"));
        // The payload itself survives the trip.
        let p = j.into_panic();
        assert_eq!(p.downcast_ref::<&str>(), Some(&"boom"));

        let g = TaskGroupError {
            errors: vec![
                TaskFailure::Error(ValueError::new("bad")),
                TaskFailure::Panic(PanicPayload::new(Box::new(String::from("oops")))),
            ],
        };
        let e: io::Error = g.into();
        let g = e
            .get_ref()
            .unwrap()
            .downcast_ref::<TaskGroupError<ValueError>>()
            .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.errors().next().unwrap().message(), "bad");
        match &g.errors[1] {
            TaskFailure::Panic(p) => assert_eq!(p.message(), Some("oops")),
            TaskFailure::Error(_) => panic!("expected the panic"),
        }
    }
}
