//! `channel`: ordering, bounded waiting, `try_*` errors, closing from both
//! ends, `Stream`, cancellation of parked sends and receives, blocking use
//! from plain threads, and 4 loops on 4 threads exchanging 1,000,000
//! messages (every loop on io_uring, then every loop on epoll).
//!
//! Every test bounds its own time: loops run their body under
//! `uringio::timeout`, and threads are joined with a deadline.

mod common;

use std::future::Future;
use std::time::Duration;

use uringio::Backend;

/// How long one test body may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` on a new loop with `backend`, failing if it takes over `LIMIT`
/// (callers check the backend is usable here first: `common::backends()`).
fn run_on<F: Future>(backend: Backend, f: F) -> F::Output {
    let mut runner = common::runner(backend);
    let out = runner.run(async move { uringio::timeout(LIMIT, f).await });
    out.expect("test body timed out")
}

/// Runs `f` on a new default loop, failing if it takes over `LIMIT`.
fn block<F: Future>(f: F) -> F::Output {
    uringio::run(async move {
        uringio::timeout(LIMIT, f)
            .await
            .expect("test body timed out")
    })
}

use uringio::{sleep, spawn, timeout, yield_now};

async fn join<T>(t: uringio::Task<T>) -> T {
    t.await.expect("task failed")
}

// ---- everything below is runtime-independent ------------------------------

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::StreamExt;
use uringio::channel::{self, Receiver, SendError, Sender, TryRecvError, TrySendError};

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountWaker(AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn count_waker() -> (Arc<CountWaker>, Waker) {
    let c = Arc::new(CountWaker::default());
    (c.clone(), Waker::from(c))
}

/// A value that is neither `Debug` nor `Clone`.
struct Opaque(u32);

#[test]
fn ends_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Sender<String>>();
    send::<Receiver<String>>();
    send::<channel::SendFuture<'static, String>>();
    send::<channel::RecvFuture<'static, String>>();
    send_sync::<SendError<String>>();
    send_sync::<TrySendError<String>>();
}

#[test]
fn fifo_order_bounded_and_unbounded() {
    block(async {
        for (tx, mut rx) in [channel::bounded::<u32>(1000), channel::unbounded()] {
            for i in 0..1000 {
                tx.send(i).await.unwrap();
            }
            drop(tx);
            let mut next = 0;
            while let Some(v) = rx.recv().await {
                assert_eq!(v, next);
                next += 1;
            }
            assert_eq!(next, 1000);
        }
    });
}

#[test]
fn bounded_send_waits_for_space() {
    block(async {
        let (tx, mut rx) = channel::bounded::<u32>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));

        let tx2 = tx.clone();
        let sender = spawn(async move { tx2.send(3).await });
        sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "send must wait while full");

        assert_eq!(rx.recv().await, Some(1));
        join(sender).await.unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

#[test]
fn bounded_capacity_counts_messages_not_yet_received() {
    // The receiver takes messages in batches; a taken but unreceived one
    // still occupies its slot, and each receive frees exactly one.
    let (tx, mut rx) = channel::bounded::<u32>(3);
    for i in 0..3 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(rx.try_recv(), Ok(0));
    tx.try_send(3).unwrap();
    assert!(tx.try_send(4).unwrap_err().is_full());
    assert_eq!(rx.try_recv(), Ok(1));
    tx.try_send(4).unwrap();
    assert!(tx.try_send(5).unwrap_err().is_full());
    for want in 2..5 {
        assert_eq!(rx.try_recv(), Ok(want));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(tx.capacity(), Some(3));
    assert_eq!(rx.capacity(), Some(3));
}

#[test]
fn try_errors_give_values_back() {
    let (tx, mut rx) = channel::bounded::<Opaque>(1);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    tx.try_send(Opaque(1)).unwrap();
    let full = tx.try_send(Opaque(2)).unwrap_err();
    assert!(full.is_full() && !full.is_closed());
    assert_eq!(format!("{full:?}"), "Full(..)");
    assert_eq!(full.to_string(), "sending on a full channel");
    assert_eq!(full.into_inner().0, 2);

    assert_eq!(rx.try_recv().unwrap().0, 1);
    drop(rx);
    assert!(tx.is_closed());
    let closed = tx.try_send(Opaque(3)).unwrap_err();
    assert!(closed.is_closed());
    assert_eq!(format!("{closed:?}"), "Closed(..)");
    assert_eq!(closed.into_inner().0, 3);

    let (tx, mut rx) = channel::unbounded::<Opaque>();
    tx.try_send(Opaque(4)).unwrap();
    drop(tx);
    assert_eq!(rx.try_recv().unwrap().0, 4);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Closed)));
    assert_eq!(
        TryRecvError::Closed.to_string(),
        "receiving on a closed channel"
    );

    let e = SendError(Opaque(5));
    assert_eq!(format!("{e:?}"), "SendError(..)");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert_eq!(boxed.to_string(), "sending on a closed channel");
}

#[test]
fn all_senders_dropped_ends_after_drain() {
    block(async {
        let (tx, mut rx) = channel::unbounded::<u32>();
        let tx2 = tx.clone();
        tx.send(1).await.unwrap();
        tx2.send(2).await.unwrap();
        drop(tx);
        assert!(!tx2.is_closed());
        tx2.send(3).await.unwrap();
        drop(tx2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.recv().await, None);

        // A receiver already waiting wakes up to see the end.
        let (tx, mut rx) = channel::bounded::<u32>(4);
        let waiter = spawn(async move { rx.recv().await });
        sleep(Duration::from_millis(10)).await;
        let tx2 = tx.clone();
        drop(tx);
        yield_now().await;
        assert!(!waiter.is_finished(), "one sender is still alive");
        drop(tx2);
        assert_eq!(join(waiter).await, None);
    });
}

#[test]
fn receiver_dropped_fails_senders_with_their_value() {
    block(async {
        let (tx, rx) = channel::bounded::<Opaque>(1);
        tx.send(Opaque(1)).await.unwrap();
        // Parked on the full channel when the receiver goes away.
        let tx2 = tx.clone();
        let parked = spawn(async move { tx2.send(Opaque(2)).await.map_err(|e| e.0.0) });
        sleep(Duration::from_millis(10)).await;
        assert!(!parked.is_finished());
        drop(rx);
        assert_eq!(join(parked).await, Err(2));
        match tx.send(Opaque(3)).await {
            Err(SendError(v)) => assert_eq!(v.0, 3),
            Ok(()) => panic!("send to a dropped receiver succeeded"),
        }
        assert!(tx.is_closed());
    });
}

#[test]
fn receiver_close_keeps_queued_messages() {
    block(async {
        let (tx, mut rx) = channel::bounded::<u32>(2);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let tx2 = tx.clone();
        let parked = spawn(async move { tx2.send(3).await.map_err(|e| e.0) });
        sleep(Duration::from_millis(10)).await;
        rx.close();
        assert_eq!(join(parked).await, Err(3));
        assert!(tx.try_send(4).unwrap_err().is_closed());
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None, "closed and drained, though tx lives");
        drop(tx);
    });
}

#[test]
fn receiver_is_a_stream() {
    block(async {
        let (tx, rx) = channel::bounded::<u32>(8);
        let producer = spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
            }
        });
        let got: Vec<u32> = rx.collect().await;
        join(producer).await;
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    });
}

#[test]
fn dropped_recv_future_forgets_its_waker() {
    let (tx, mut rx) = channel::unbounded::<u32>();
    let (count, waker) = count_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = std::pin::pin!(rx.recv());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    tx.try_send(1).unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "stale waker was woken");
    assert_eq!(rx.try_recv(), Ok(1));

    // While it is alive, one send wakes it once, however many follow.
    let mut fut = Box::pin(rx.recv());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    for i in 2..10 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(Some(2)));
}

#[test]
fn dropped_send_future_leaves_the_queue() {
    let (tx, mut rx) = channel::bounded::<u32>(1);
    tx.try_send(0).unwrap();
    let (count, waker) = count_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = std::pin::pin!(tx.send(1));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(rx.try_recv(), Ok(0));
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        0,
        "cancelled sender was woken"
    );
    assert_eq!(
        rx.try_recv(),
        Err(TryRecvError::Empty),
        "cancelled send sent"
    );
}

#[test]
fn woken_sender_dropped_passes_the_wakeup_on() {
    // Two senders parked on a full channel; one slot frees and wakes the
    // first, which is dropped without sending: the second must get the slot.
    let (tx, mut rx) = channel::bounded::<u32>(1);
    tx.try_send(0).unwrap();
    let (first_count, first_waker) = count_waker();
    let (second_count, second_waker) = count_waker();
    let mut first = Box::pin(tx.send(1));
    let mut second = Box::pin(tx.send(2));
    assert!(
        first
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending()
    );
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );

    assert_eq!(rx.try_recv(), Ok(0));
    assert_eq!(first_count.0.load(Ordering::SeqCst), 1);
    assert_eq!(second_count.0.load(Ordering::SeqCst), 0);
    drop(first);
    assert_eq!(second_count.0.load(Ordering::SeqCst), 1, "wake-up was lost");
    let mut cx = Context::from_waker(&second_waker);
    assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
    assert_eq!(rx.try_recv(), Ok(2));
}

#[test]
fn cancel_parked_send_and_recv_on_a_loop() {
    block(async {
        let (tx, mut rx) = channel::bounded::<u32>(1);
        tx.send(0).await.unwrap();
        assert!(
            timeout(Duration::from_millis(20), tx.send(1))
                .await
                .is_err()
        );
        assert_eq!(rx.recv().await, Some(0));
        assert!(timeout(Duration::from_millis(20), rx.recv()).await.is_err());
        tx.send(2).await.unwrap();
        assert_eq!(rx.recv().await, Some(2));
    });
}

#[test]
fn messages_dropping_senders_do_not_deadlock() {
    // Dropping queued messages may drop Senders of the same channel: that
    // must happen outside the channel's lock.
    struct Msg(#[allow(dead_code)] Option<Sender<Msg>>);
    let (tx, rx) = channel::bounded::<Msg>(4);
    tx.try_send(Msg(Some(tx.clone()))).unwrap();
    tx.try_send(Msg(Some(tx.clone()))).unwrap();
    drop(rx);
    let back = tx.try_send(Msg(Some(tx.clone()))).unwrap_err();
    drop(back);
    drop(tx);
}

#[test]
fn blocking_ends_on_plain_threads() {
    let (tx, mut rx) = channel::bounded::<u64>(4);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let producers: Vec<_> = (0..3u64)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    tx.send_blocking(p * 1_000_000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    std::thread::spawn(move || {
        let mut next = [0u64; 3];
        while let Some(v) = rx.recv_blocking() {
            let (p, i) = ((v / 1_000_000) as usize, v % 1_000_000);
            assert_eq!(i, next[p], "out of order from producer {p}");
            next[p] += 1;
        }
        done_tx.send(next).unwrap();
    });
    let next = done_rx.recv_timeout(LIMIT).expect("blocking channel hung");
    assert_eq!(next, [10_000; 3]);
    for p in producers {
        p.join().unwrap();
    }
}

#[test]
fn loop_receiver_with_blocking_senders() {
    let (tx, mut rx) = channel::bounded::<u64>(16);
    let producers: Vec<_> = (0..4u64)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    tx.send_blocking(i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let (n, sum) = block(async move {
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(v) = rx.recv().await {
            n += 1;
            sum += v;
        }
        (n, sum)
    });
    assert_eq!((n, sum), (80_000, 4 * (20_000 * 19_999 / 2)));
    for p in producers {
        p.join().unwrap();
    }
}

#[test]
fn cancelled_sends_under_load_lose_and_duplicate_nothing() {
    // Two loops send through a tiny channel, abandoning any send that takes
    // over 50 µs and retrying it; a third receives slowly. A cancelled send
    // must never have sent, and no parked sender may be forgotten.
    const N: u64 = 20_000;
    let (tx, mut rx) = channel::bounded::<(u64, u64)>(2);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for p in 0..2u64 {
        let tx = tx.clone();
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            let cancels = block(async move {
                let mut cancels = 0u64;
                for i in 0..N {
                    while timeout(Duration::from_micros(50), tx.send((p, i)))
                        .await
                        .is_err()
                    {
                        cancels += 1;
                    }
                }
                cancels
            });
            let _ = done_tx.send(cancels);
        });
    }
    drop(tx);
    drop(done_tx);
    let next = block(async move {
        let mut next = [0u64; 2];
        let mut n = 0u32;
        while let Some((p, i)) = rx.recv().await {
            assert_eq!(i, next[p as usize], "sender {p}: lost or duplicated");
            next[p as usize] += 1;
            n += 1;
            if n.is_multiple_of(16) {
                yield_now().await;
            }
        }
        next
    });
    assert_eq!(next, [N, N]);
    let cancels: u64 = (0..2)
        .map(|_| done_rx.recv_timeout(LIMIT).expect("sender thread hung"))
        .sum();
    eprintln!("{cancels} sends cancelled and retried");
}

/// 4 threads, one loop each; every thread sends `PER_THREAD` messages
/// round-robin to the other three over their channels (capacities 8, 64,
/// 1024 and unbounded) while receiving its own. Each receiver checks that
/// every sender's sequence arrives complete and in order.
fn all_to_all(backend: Backend) {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 250_000; // 1,000,000 in total
    type Msg = (usize, u64);
    let (senders, receivers): (Vec<Sender<Msg>>, Vec<Receiver<Msg>>) =
        [Some(8), Some(64), Some(1024), None]
            .into_iter()
            .map(|cap| match cap {
                Some(c) => channel::bounded(c),
                None => channel::unbounded(),
            })
            .unzip();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (me, mut rx) in receivers.into_iter().enumerate() {
        let peers: Vec<(usize, Sender<Msg>)> = senders
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != me)
            .map(|(i, s)| (i, s.clone()))
            .collect();
        let done_tx = done_tx.clone();
        threads.push(std::thread::spawn(move || {
            let got = run_on(backend, async move {
                let producer = spawn(async move {
                    // seq[i]: next sequence number for peer i.
                    let mut seq = [0u64; THREADS];
                    for k in 0..PER_THREAD {
                        let (i, tx) = &peers[k as usize % peers.len()];
                        tx.send((me, seq[*i])).await.expect("peer gone");
                        seq[*i] += 1;
                    }
                    seq
                });
                let mut next = [0u64; THREADS];
                while let Some((from, s)) = rx.recv().await {
                    assert_eq!(s, next[from], "thread {me}: gap or duplicate from {from}");
                    next[from] += 1;
                }
                (join(producer).await, next)
            });
            let _ = done_tx.send((me, got));
        }));
    }
    drop(senders);
    drop(done_tx);
    let mut sent = [[0u64; THREADS]; THREADS];
    let mut received = [[0u64; THREADS]; THREADS];
    for _ in 0..THREADS {
        let (me, got) = done_rx
            .recv_timeout(LIMIT + Duration::from_secs(5))
            .expect("a loop thread hung or panicked");
        let (s, r) = got;
        sent[me] = s;
        received[me] = r;
    }
    for t in threads {
        t.join().expect("loop thread panicked");
    }
    let mut total = 0;
    for from in 0..THREADS {
        for to in 0..THREADS {
            assert_eq!(sent[from][to], received[to][from], "{from} -> {to}");
            total += received[to][from];
        }
    }
    assert_eq!(total, THREADS as u64 * PER_THREAD);
}

#[test]
fn cross_thread_all_to_all_io_uring() {
    if !common::io_uring_or_skip("io_uring test") {
        return;
    }
    all_to_all(Backend::IoUring);
}

#[test]
fn cross_thread_all_to_all_epoll() {
    all_to_all(Backend::Epoll);
}
