//! Loops ending with cross-core hand-offs in flight (closures queued to
//! a loop that is closing, `MSG_RING`s still queued in the sender's ring
//! when it ends), on every wake path: nothing crashes, every closure is
//! run or dropped, every `RemoteTask` resolves, no descriptor is left
//! open. Alone in its binary: it counts the process's descriptors.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use uringio::Backend;
use uringio::rt::{Builder, CoreContext};

/// A way for loops to wake each other.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// io_uring, `MSG_RING` on (the default).
    MsgRing,
    /// io_uring, `MSG_RING` off: eventfd writes.
    UringEventfd,
    /// epoll: eventfd writes.
    Epoll,
}

impl Path {
    fn builder(self) -> Builder {
        match self {
            Path::MsgRing => Builder::new().backend(Backend::IoUring),
            Path::UringEventfd => Builder::new().backend(Backend::IoUring).msg_ring(false),
            Path::Epoll => Builder::new().backend(Backend::Epoll),
        }
    }
}

/// The paths this machine can run (io_uring halves skip visibly).
#[track_caller]
fn paths() -> Vec<Path> {
    common::backends()
        .into_iter()
        .flat_map(|b| match b {
            Backend::IoUring => vec![Path::MsgRing, Path::UringEventfd],
            _ => vec![Path::Epoll],
        })
        .collect()
}

/// Counts the closures created and the ones dropped (run or not).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn loops_ending_with_hand_offs_in_flight_neither_crash_nor_leak() {
    for path in paths() {
        let fds = common::open_fds();
        let made = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (m, d) = (made.clone(), dropped.clone());
        let outs = path
            .builder()
            .thread_per_core(2)
            .launch(move |core: CoreContext| {
                let (made, dropped) = (m.clone(), d.clone());
                async move {
                    if core.id == 1 {
                        // Serve a little, then close with work still
                        // arriving.
                        uringio::sleep(Duration::from_millis(20)).await;
                        return (0, 0);
                    }
                    let other = core.peers[1].clone();
                    let (mut ok, mut cancelled) = (0, 0);
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_millis(60) {
                        for _ in 0..50 {
                            let c = Counted(dropped.clone());
                            made.fetch_add(1, Ordering::SeqCst);
                            other.call_soon_threadsafe(move || drop(c));
                        }
                        let c = Counted(dropped.clone());
                        made.fetch_add(1, Ordering::SeqCst);
                        let r = other.spawn_with(move || async move {
                            uringio::sleep(Duration::from_millis(1)).await;
                            drop(c);
                        });
                        match uringio::timeout(Duration::from_secs(5), r)
                            .await
                            .expect("a hand-off to a closing loop still resolves")
                        {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                assert!(e.is_cancelled(), "{e}");
                                cancelled += 1;
                            }
                        }
                    }
                    // And a last burst queued as this loop ends (its
                    // wake-ups may still sit in its ring).
                    for _ in 0..50 {
                        let c = Counted(dropped.clone());
                        made.fetch_add(1, Ordering::SeqCst);
                        other.call_soon_threadsafe(move || drop(c));
                    }
                    (ok, cancelled)
                }
            })
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let (ok, cancelled) = outs[0];
        assert!(ok > 0, "{path:?}: some hand-offs ran before core 1 closed");
        assert!(
            cancelled > 0,
            "{path:?}: some hand-offs came after it closed"
        );
        assert_eq!(
            made.load(Ordering::SeqCst),
            dropped.load(Ordering::SeqCst),
            "{path:?}: every closure was run or dropped"
        );
        assert_eq!(common::open_fds(), fds, "{path:?}: descriptors left open");
    }
}
