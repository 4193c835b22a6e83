//! Thread-per-core: one loop per thread, each pinned to its own CPU.

use std::future::Future;
use std::io;
use std::sync::mpsc;

use super::{Builder, LoopHandle};

#[derive(Debug, Clone, Default)]
pub(crate) struct TpcConfig {
    pub threads: usize,
    pub pin: bool,
}

/// What each thread of [`Builder::launch`] is given.
#[derive(Debug, Clone)]
pub struct CoreContext {
    /// This thread's index, `0..n`.
    pub id: usize,
    /// Handles to every loop, this one included, indexed by id. Work
    /// handed to a parked peer wakes it with `IORING_OP_MSG_RING` between
    /// io_uring loops where probed, else with an eventfd write.
    pub peers: Vec<LoopHandle>,
}

impl Builder {
    /// Run `n` loops, one per thread (see [`launch`](Self::launch)).
    pub fn thread_per_core(mut self, n: usize) -> Builder {
        self.tpc.threads = n;
        self
    }

    /// Pin thread `i` to CPU `i % cpus` (default off).
    pub fn pin_cpus(mut self, on: bool) -> Builder {
        self.tpc.pin = on;
        self
    }

    /// Starts the threads (one loop each, built with this builder's
    /// settings), runs `f(ctx)` on each, and returns their outputs in id
    /// order once all finished. A thread whose future panics makes this
    /// return an error after the others finished.
    pub fn launch<F, Fut, T>(self, f: F) -> io::Result<Vec<T>>
    where
        F: Fn(CoreContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let n = self.tpc.threads.max(1);
        let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
        let f = std::sync::Arc::new(f);
        let (htx, hrx) = mpsc::channel::<(usize, io::Result<LoopHandle>)>();
        let mut go_txs = Vec::new();
        let mut joins = Vec::new();
        for id in 0..n {
            let b = self.clone();
            let htx = htx.clone();
            let (go_tx, go_rx) = mpsc::channel::<Vec<LoopHandle>>();
            go_txs.push(go_tx);
            let f = f.clone();
            let pin = self.tpc.pin;
            let j = std::thread::Builder::new()
                .name(format!("uringio-core-{id}"))
                .spawn(move || -> Option<T> {
                    if pin {
                        let mut set = nix::sched::CpuSet::new();
                        if set.set(id % cpus).is_ok() {
                            let _ =
                                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                        }
                    }
                    let mut runner = match b.build() {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = htx.send((id, Err(e)));
                            return None;
                        }
                    };
                    let _ = htx.send((id, Ok(runner.handle())));
                    drop(htx);
                    let peers = go_rx.recv().ok()?;
                    Some(runner.run(f(CoreContext { id, peers })))
                })?;
            joins.push(j);
        }
        drop(htx);
        let mut handles: Vec<Option<LoopHandle>> = vec![None; n];
        let mut err = None;
        for _ in 0..n {
            match hrx.recv() {
                Ok((id, Ok(h))) => handles[id] = Some(h),
                Ok((_, Err(e))) => err = Some(e),
                Err(_) => break,
            }
        }
        if let Some(e) = err {
            drop(go_txs);
            for j in joins {
                let _ = j.join();
            }
            return Err(e);
        }
        let peers: Vec<LoopHandle> = handles.into_iter().flatten().collect();
        for tx in &go_txs {
            let _ = tx.send(peers.clone());
        }
        let mut out = Vec::with_capacity(n);
        let mut panicked = false;
        for j in joins {
            match j.join() {
                Ok(Some(v)) => out.push(v),
                _ => panicked = true,
            }
        }
        if panicked {
            return Err(io::Error::other("a thread-per-core loop panicked"));
        }
        Ok(out)
    }
}
