//! # uringio
//!
//! Python's asyncio, rebuilt for Rust on io_uring: a single-threaded,
//! completion-based event loop per thread, I/O on owned buffers, and an epoll
//! backend behind exactly the same API.
//!
//! ```no_run
//! uringio::run(async {
//!     let listener = uringio::net::TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let client = uringio::spawn(async move {
//!         let s = uringio::net::TcpStream::connect(addr).await.unwrap();
//!         let (res, _buf) = s.write_all(b"hello".to_vec()).await;
//!         res.unwrap();
//!     });
//!     let (conn, _) = listener.accept().await.unwrap();
//!     let (res, buf) = conn.read(Vec::with_capacity(16)).await;
//!     assert_eq!(&buf[..res.unwrap()], b"hello");
//!     client.await.unwrap();
//! });
//! ```
//!
//! The layers, top to bottom: [`task`], [`sync`], [`queue`], [`channel`]
//! (user-facing concurrency); [`net`], [`fs`], [`buf`] (owned-buffer
//! operations); [`process`] (subprocesses); [`runtime`] (the loop);
//! [`driver`] (io_uring and epoll).
#![warn(missing_docs)]

pub mod buf;
pub mod channel;
pub mod driver;
pub mod error;
pub mod fs;
pub mod future;
pub mod net;
pub mod process;
pub mod queue;
pub mod rt;
pub mod runtime;
pub mod signal;
pub mod streams;
pub mod sync;
pub mod task;
pub mod time;
pub mod transport;

pub use buf::BufResult;
pub use future::Promise;
pub use runtime::{
    Backend, Builder, EventLoop, Handle, LoopHandle, Runner, TimerHandle, get_running_loop, run,
    try_running_loop,
};
pub use task::{JoinError, Task, TaskGroup, spawn, yield_now};
pub use time::{sleep, sleep_until, timeout, timeout_at};
