//! Thread-per-core: one loop per thread, each pinned to its own CPU.
//!
//! ```no_run
//! let outs = uringio::rt::Builder::new()
//!     .thread_per_core(2)
//!     .pin_cpus(true)
//!     .launch(|core: uringio::rt::CoreContext| async move { core.id * 10 })
//!     .unwrap();
//! assert_eq!(outs, vec![0, 10]);
//! ```
//! Threads reach each other's loops through [`CoreContext::peers`]
//! ([`LoopHandle`]s) and [`channel`](crate::channel)s. Handing work to a
//! parked peer wakes it: between io_uring loops with a `MSG_RING` CQE
//! posted into its ring with the sender's next `io_uring_enter` (no
//! system call of its own; where the kernel has `IORING_OP_MSG_RING`,
//! 5.18), otherwise by writing its eventfd. See
//! `uring-sys-notes/msg-ring.md`.

pub use crate::runtime::{Builder, CoreContext, LoopHandle, RemoteTask};
