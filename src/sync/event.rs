//! [`Event`]: asyncio's `Event`, a flag tasks can wait for.
//!
//! `set` notifies every current waiter at once; a notified waiter returns even
//! if the flag is cleared again before it runs (as in asyncio). Since all of
//! them are woken, a dropped waiter has nothing to pass on.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::waiters::{WaitList, wake_all};

/// A flag that tasks can wait to become set (`asyncio.Event`).
///
/// A plain `!Send` struct: share it with `Rc<Event>`.
pub struct Event {
    flag: Cell<bool>,
    waiters: RefCell<WaitList<()>>,
}

impl Event {
    /// A new event, not set.
    pub fn new() -> Event {
        Event {
            flag: Cell::new(false),
            waiters: RefCell::new(WaitList::new()),
        }
    }

    /// Sets the flag and wakes every task waiting for it.
    pub fn set(&self) {
        if self.flag.replace(true) {
            return;
        }
        let wakers = self.waiters.borrow_mut().notify_all(|_| ());
        wake_all(wakers);
    }

    /// Clears the flag: later [`wait`](Self::wait)s block until the next
    /// [`set`](Self::set).
    pub fn clear(&self) {
        self.flag.set(false);
    }

    /// True if the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag.get()
    }

    /// Waits until the flag is set; returns at once if it already is.
    pub fn wait(&self) -> EventWait<'_> {
        EventWait {
            event: self,
            key: None,
        }
    }
}

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.flag.get())
            .field("waiters", &self.waiters.borrow().len())
            .finish()
    }
}

/// The future returned by [`Event::wait`].
#[must_use = "futures do nothing unless awaited"]
pub struct EventWait<'a> {
    event: &'a Event,
    key: Option<usize>,
}

impl Future for EventWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let event = self.event;
        match self.key {
            None => {
                if event.flag.get() {
                    return Poll::Ready(());
                }
                self.key = Some(event.waiters.borrow_mut().push_back(cx.waker().clone()));
                Poll::Pending
            }
            Some(key) => match event.waiters.borrow_mut().poll(key, cx.waker()) {
                Some(()) => {
                    self.key = None;
                    Poll::Ready(())
                }
                None => Poll::Pending,
            },
        }
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.event.waiters.borrow_mut().remove(key);
        }
    }
}

impl fmt::Debug for EventWait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWait")
            .field("waiting", &self.key.is_some())
            .finish()
    }
}
