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
//! ([`LoopHandle`]s) and [`channel`](crate::channel)s.

pub use crate::runtime::{Builder, CoreContext, LoopHandle, RemoteTask};
