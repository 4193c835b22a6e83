//! A small pool of threads for work that would block the loop: file ops on
//! the epoll backend, `run_in_executor`, `getaddrinfo`.
//!
//! Threads are started on demand up to the configured limit and exit after
//! sitting idle for a while. Jobs report back to their loop through its
//! remote queue; the pool itself knows nothing about loops.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle pool thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct State {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
    shutdown: bool,
}

pub(crate) struct BlockingPool {
    state: Mutex<State>,
    cond: Condvar,
    max: usize,
}

impl BlockingPool {
    pub(crate) fn new(max: usize) -> Arc<BlockingPool> {
        Arc::new(BlockingPool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                idle: 0,
                threads: 0,
                shutdown: false,
            }),
            cond: Condvar::new(),
            max: max.max(1),
        })
    }

    /// Queues a job; starts a thread if the idle ones cannot take it and
    /// the limit allows.
    pub(crate) fn spawn(self: &Arc<Self>, job: Job) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.queue.push_back(job);
        if st.idle >= st.queue.len() || st.threads >= self.max {
            drop(st);
            self.cond.notify_one();
            return;
        }
        st.threads += 1;
        drop(st);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("uringio-blocking".into())
            .spawn(move || pool.worker());
        if spawned.is_err() {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.threads -= 1;
            log::error!("uringio: could not start a blocking-pool thread");
        }
    }

    fn worker(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                // A panicking job must not take the thread's bookkeeping down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if st.shutdown {
                break;
            }
            st.idle += 1;
            let (g, to) = self
                .cond
                .wait_timeout(st, IDLE_EXIT)
                .unwrap_or_else(|e| e.into_inner());
            st = g;
            st.idle -= 1;
            if to.timed_out() && st.queue.is_empty() {
                break;
            }
        }
        st.threads -= 1;
    }

    /// Lets idle threads exit at once; queued jobs still run.
    pub(crate) fn shutdown(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.shutdown = true;
        drop(st);
        self.cond.notify_all();
    }
}
