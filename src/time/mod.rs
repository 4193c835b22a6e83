//! Time: [`sleep`], [`timeout`] (`asyncio.timeout` / `wait_for`), and
//! [`interval`].
//!
//! Timers live in the loop (see `timers`), not in the kernel: a sleeping
//! future costs one map entry and no SQE.
//!
//! Durations too long for the clock (`Duration::MAX`, `u64::MAX` seconds)
//! never panic: a deadline is at most [`FAR_FUTURE`] (about 30 years)
//! ahead, as tokio does, which is "never" for a running program.

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

/// The furthest ahead a deadline made from a [`Duration`] goes: 30 years.
/// Longer durations (`Duration::MAX`) saturate to it instead of
/// overflowing the clock.
pub const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);

/// `t + d`, saturated: never more than [`FAR_FUTURE`] after `t`, and never
/// a panic.
pub(crate) fn saturating_add(t: Instant, d: Duration) -> Instant {
    let d = d.min(FAR_FUTURE);
    t.checked_add(d)
        .or_else(|| t.checked_add(d.min(Duration::from_secs(86400))))
        .unwrap_or(t)
}

/// The deadline `d` from now, saturated (see [`FAR_FUTURE`]).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    saturating_add(Instant::now(), d)
}

/// Waits until `d` has passed. A duration past [`FAR_FUTURE`] waits that
/// long (in effect forever).
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(deadline_after(d))
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
/// `Err(TimeoutError)`. A duration past [`FAR_FUTURE`] is saturated to it
/// (in effect no timeout).
pub fn timeout<F: Future>(d: Duration, f: F) -> Timeout<F> {
    timeout_at(deadline_after(d), f)
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
/// future), like tokio's `MissedTickBehavior::Skip`: after a stall one late
/// tick fires, never a burst. A period past [`FAR_FUTURE`] ticks once, then
/// (in effect) never again.
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
                let next = next_tick(at, self.period, Instant::now());
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

/// The tick after the one scheduled at `at`, seen at `now`: the first
/// `at + k * period` (k >= 1) after `now`, missed ones skipped. The
/// arithmetic is on u128 nanoseconds and saturates (at [`FAR_FUTURE`] past
/// `at`), so no stall, however long, wraps it into the past.
fn next_tick(at: Instant, period: Duration, now: Instant) -> Instant {
    let p = period.as_nanos().max(1);
    let behind = now.saturating_duration_since(at).as_nanos() / p;
    let k = behind.saturating_add(1);
    let off = p.saturating_mul(k);
    let off = if off >= FAR_FUTURE.as_nanos() {
        FAR_FUTURE
    } else {
        // Below FAR_FUTURE, so it fits in u64 nanoseconds.
        Duration::from_nanos(off as u64)
    };
    saturating_add(at, off)
}

impl futures_core::Stream for Interval {
    type Item = Instant;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        self.poll_tick(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tick_skips_missed_ticks_without_wrapping() {
        let at = Instant::now();
        let ns = Duration::from_nanos(1);
        // On time: the next period.
        assert_eq!(next_tick(at, ns * 10, at), at + ns * 10);
        assert_eq!(next_tick(at, ns * 10, at + ns * 9), at + ns * 10);
        // Exactly on a later tick: the one after it.
        assert_eq!(next_tick(at, ns * 10, at + ns * 10), at + ns * 20);
        // Behind by more than 2^32 periods (a u32 count would wrap to 0 and
        // schedule the next tick in the past).
        for behind in [1u64 << 32, (1u64 << 32) + 1, 1u64 << 33, 1u64 << 40] {
            for period_ns in [1u64, 3] {
                let period = Duration::from_nanos(period_ns);
                let now = at + Duration::from_nanos(behind * period_ns + 1);
                let next = next_tick(at, period, now);
                assert!(next > now, "behind {behind}: next tick in the past");
                assert!(
                    next <= now + period,
                    "behind {behind}: more than one period skipped past now"
                );
            }
        }
        // Huge periods saturate instead of panicking.
        let next = next_tick(at, Duration::MAX, at);
        assert!(next >= at + FAR_FUTURE - Duration::from_secs(1));
        let next = next_tick(
            at,
            Duration::from_secs(u64::MAX),
            at + Duration::from_secs(5),
        );
        assert!(next > at + Duration::from_secs(5));
    }

    #[test]
    fn saturating_add_never_panics() {
        let t = Instant::now();
        assert_eq!(saturating_add(t, Duration::MAX), t + FAR_FUTURE);
        assert_eq!(
            saturating_add(t, Duration::from_secs(u64::MAX)),
            t + FAR_FUTURE
        );
        assert_eq!(
            saturating_add(t, Duration::from_secs(1)),
            t + Duration::from_secs(1)
        );
        let far = t + FAR_FUTURE;
        assert!(saturating_add(far, Duration::MAX) >= far);
    }
}
