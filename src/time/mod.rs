//! Time: [`sleep`], [`timeout`] (`asyncio.timeout` / `wait_for`), and
//! [`interval`].
//!
//! Timers live in the loop (see `timers`), not in the kernel: a sleeping
//! future costs one map entry and no SQE.

pub(crate) mod timers;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::TimeoutError;
use crate::runtime::context;
use crate::runtime::scheduler::LoopInner;
use timers::TimerKey;

/// Waits until `d` has passed.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// Waits until `t`.
pub fn sleep_until(t: Instant) -> Sleep {
    Sleep {
        deadline: t,
        entry: None,
    }
}

/// The future of [`sleep`] / [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    entry: Option<(TimerKey, Rc<LoopInner>)>,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Sleep {
    /// When the sleep ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (`asyncio.Timeout.reschedule`).
    pub fn reset(&mut self, t: Instant) {
        self.unregister();
        self.deadline = t;
    }

    fn unregister(&mut self) {
        if let Some((k, l)) = self.entry.take() {
            l.timers.borrow_mut().remove(k);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match &this.entry {
            Some((k, l)) => {
                if l.timers.borrow_mut().update_waker(*k, cx.waker()) {
                    Poll::Pending
                } else {
                    this.entry = None;
                    Poll::Ready(())
                }
            }
            None => {
                if this.deadline <= Instant::now() {
                    return Poll::Ready(());
                }
                let l = context::current().expect("sleep() used outside a running uringio loop");
                let k = l
                    .timers
                    .borrow_mut()
                    .insert_waker(this.deadline, cx.waker().clone());
                this.entry = Some((k, l));
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Runs `f`, giving up after `d` (`asyncio.timeout`, `asyncio.wait_for`).
/// On timeout `f` is dropped (cancelled) and the result is
/// `Err(TimeoutError)`.
pub fn timeout<F: Future>(d: Duration, f: F) -> Timeout<F> {
    timeout_at(Instant::now() + d, f)
}

/// Runs `f`, giving up at `t`.
pub fn timeout_at<F: Future>(t: Instant, f: F) -> Timeout<F> {
    Timeout {
        fut: Box::pin(f),
        sleep: sleep_until(t),
    }
}

/// The future of [`timeout`] / [`timeout_at`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F: Future> {
    fut: Pin<Box<F>>,
    sleep: Sleep,
}

impl<F: Future> Timeout<F> {
    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.sleep.deadline
    }

    /// Moves the deadline.
    pub fn reschedule(&mut self, t: Instant) {
        self.sleep.reset(t);
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, TimeoutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = self.fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TimeoutError)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream of ticks every `period`, the first one at once. Missed ticks
/// are skipped (the next tick is the next multiple of `period` in the
/// future), like tokio's `MissedTickBehavior::Skip`.
///
/// # Panics
/// If `period` is zero.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    let start = Instant::now();
    Interval {
        period,
        next: start,
        sleep: sleep_until(start),
    }
}

/// See [`interval`]. Implements `futures_core::Stream<Item = Instant>`.
pub struct Interval {
    period: Duration,
    next: Instant,
    sleep: Sleep,
}

impl std::fmt::Debug for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interval")
            .field("period", &self.period)
            .finish()
    }
}

impl Interval {
    /// Waits for the next tick; returns its scheduled time.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let at = self.next;
                let now = Instant::now();
                let mut next = at + self.period;
                if next <= now {
                    let behind = now.duration_since(at).as_nanos() / self.period.as_nanos();
                    next = at + self.period * (behind as u32 + 1);
                }
                self.next = next;
                self.sleep.reset(next);
                Poll::Ready(at)
            }
        }
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl futures_core::Stream for Interval {
    type Item = Instant;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        self.poll_tick(cx).map(Some)
    }
}
