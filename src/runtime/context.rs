//! The thread's current loop: which loop is running here, if any.
//!
//! Ops find their driver, `spawn` finds its loop and wakers find their run
//! queue through this. Borrows of the thread-local are always short: user
//! code never runs while it is borrowed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::scheduler::LoopInner;
use crate::driver::Driver;
use crate::task::raw::TaskRef;

thread_local! {
    static CURRENT: RefCell<Option<Rc<LoopInner>>> = const { RefCell::new(None) };
    static CURRENT_ID: Cell<usize> = const { Cell::new(0) };
}

/// The identity of the loop running on this thread (0 if none).
pub(crate) fn current_loop_id() -> usize {
    CURRENT_ID.with(|c| c.get())
}

/// The loop running on this thread.
pub(crate) fn current() -> Option<Rc<LoopInner>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Pushes a task onto the running loop's ready queue.
pub(crate) fn push_ready(task: TaskRef) {
    CURRENT.with(|c| {
        if let Some(l) = &*c.borrow() {
            l.ready.borrow_mut().push_back(task);
        }
    })
}

/// The running loop's driver.
pub(crate) fn current_driver() -> Option<Rc<Driver>> {
    crate::driver::current()
}

/// Marks `inner` as this thread's running loop until dropped.
pub(crate) struct EnterGuard {
    prev: Option<Rc<LoopInner>>,
    prev_id: usize,
    prev_driver: Option<Rc<Driver>>,
}

/// Enters `inner`. Fails if another loop is already running on this thread
/// (asyncio: "Cannot run the event loop while another loop is running").
pub(crate) fn enter(inner: &Rc<LoopInner>) -> Result<EnterGuard, &'static str> {
    let prev_id = current_loop_id();
    if prev_id != 0 {
        return Err("cannot run a uringio loop while another loop is running on this thread");
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(inner.clone()));
    CURRENT_ID.with(|c| c.set(inner.id()));
    let prev_driver = crate::driver::set_current(Some(inner.driver.clone()));
    Ok(EnterGuard {
        prev,
        prev_id,
        prev_driver,
    })
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let old = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
        CURRENT_ID.with(|c| c.set(self.prev_id));
        let old_driver = crate::driver::set_current(self.prev_driver.take());
        // The loop stops running here and may not park again soon: send
        // the MSG_RING wake-ups it queued for other loops now.
        if let Some(d) = &old_driver {
            d.flush_msgs();
        }
        drop(old);
        drop(old_driver);
    }
}
