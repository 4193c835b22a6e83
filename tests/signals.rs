//! Signals: `add_signal_handler` / `remove_signal_handler`, `signal()`
//! streams, `ctrl_c()`, on both backends.
//!
//! Tests run on parallel threads of one process and signal dispositions are
//! process-wide, so each test uses its own signal and sends it to its own
//! thread (`raise`, a thread-directed signal): a process-directed `kill`
//! could be delivered to another test's thread, which does not block it.

mod common;

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{on_both, runner};
use futures_util::StreamExt;
use uringio::signal;

fn raise(sig: i32) {
    // SAFETY: sends `sig` to the calling thread; the test blocks it first.
    let r = unsafe { libc::raise(sig) };
    assert_eq!(r, 0, "raise({sig}) failed");
}

/// Whether `sig` is blocked on the calling thread.
fn blocked(sig: i32) -> bool {
    // SAFETY: queries the mask into a zeroed sigset_t.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        libc::sigismember(&old, sig) == 1
    }
}

fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

/// Waits (by sleeping on the loop) until `c` reaches `n`.
async fn until(c: &Cell<u32>, n: u32) {
    while c.get() < n {
        uringio::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn handler_runs_and_can_be_replaced_and_removed() {
    let sig = libc::SIGUSR1;
    on_both(10, |_| async move {
        let lp = uringio::get_running_loop();
        let a = Rc::new(Cell::new(0u32));
        let b = Rc::new(Cell::new(0u32));
        let a2 = a.clone();
        lp.add_signal_handler(sig, move || a2.set(a2.get() + 1))
            .unwrap();
        assert!(blocked(sig));
        raise(sig);
        until(&a, 1).await;

        // A second add replaces the handler.
        let b2 = b.clone();
        lp.add_signal_handler(sig, move || b2.set(b2.get() + 1))
            .unwrap();
        raise(sig);
        until(&b, 1).await;
        assert_eq!(a.get(), 1);

        assert!(lp.remove_signal_handler(sig));
        assert!(!lp.remove_signal_handler(sig));
        assert!(!blocked(sig), "removing the handler restores the mask");
    });
}

#[test]
fn handler_runs_as_a_callback_not_inside_the_reader() {
    let sig = rt(7);
    on_both(10, |_| async move {
        let lp = uringio::get_running_loop();
        let seen = Rc::new(Cell::new(0u32));
        let s2 = seen.clone();
        lp.add_signal_handler(sig, move || {
            // Callbacks run outside any task.
            assert_eq!(uringio::task::current_task(), None);
            s2.set(s2.get() + 1);
        })
        .unwrap();
        raise(sig);
        until(&seen, 1).await;
        assert!(lp.remove_signal_handler(sig));
    });
}

#[test]
fn stream_receives_several() {
    let sig = libc::SIGUSR2;
    on_both(10, |_| async move {
        let mut s = signal::signal(sig);
        assert_eq!(s.signum(), sig);
        assert!(blocked(sig));
        for _ in 0..3 {
            raise(sig);
            assert_eq!(s.next().await, Some(()));
        }
        // Raised before anyone waits: delivered on the next poll.
        raise(sig);
        uringio::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.recv().await, Some(()));
        drop(s);
        assert!(!blocked(sig), "dropping the last stream restores the mask");
    });
}

#[test]
fn realtime_signals_queue() {
    let sig = rt(1);
    on_both(10, |_| async move {
        let mut s = signal::signal(sig);
        // Three instances pending at once: one read returns three records.
        raise(sig);
        raise(sig);
        raise(sig);
        for _ in 0..3 {
            s.next().await.unwrap();
        }
        let extra = uringio::timeout(Duration::from_millis(30), s.next()).await;
        assert!(extra.is_err(), "exactly three deliveries");
    });
}

#[test]
fn two_streams_and_a_handler_share_a_signal() {
    let sig = rt(6);
    on_both(10, |_| async move {
        let lp = uringio::get_running_loop();
        let hits = Rc::new(Cell::new(0u32));
        let h2 = hits.clone();
        lp.add_signal_handler(sig, move || h2.set(h2.get() + 1))
            .unwrap();
        let mut s1 = signal::signal(sig);
        let mut s2 = signal::signal(sig);
        raise(sig);
        s1.next().await.unwrap();
        s2.next().await.unwrap();
        until(&hits, 1).await;

        // Without the handler the streams still work and the signal stays
        // blocked.
        assert!(lp.remove_signal_handler(sig));
        assert!(blocked(sig));
        raise(sig);
        s1.next().await.unwrap();
        s2.next().await.unwrap();
        drop(s1);
        assert!(blocked(sig));
        drop(s2);
        assert!(!blocked(sig));
        assert_eq!(hits.get(), 1);
    });
}

#[test]
fn ctrl_c_resolves_on_sigint() {
    on_both(10, |_| async {
        let t = uringio::spawn(async {
            uringio::sleep(Duration::from_millis(10)).await;
            raise(libc::SIGINT);
        });
        signal::ctrl_c().await.unwrap();
        t.await.unwrap();
        assert!(!blocked(libc::SIGINT));
    });
}

#[test]
fn signal_pending_before_it_was_added_is_read() {
    let early = rt(2);
    let other = rt(3);
    on_both(10, |_| async move {
        let lp = uringio::get_running_loop();
        // The reader is running, with a read in flight on a mask without
        // `early`.
        lp.add_signal_handler(other, || {}).unwrap();
        uringio::sleep(Duration::from_millis(5)).await;
        // The user blocked `early` and it is already pending.
        // SAFETY: blocks one signal on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, early);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        raise(early);
        let mut s = signal::signal(early);
        s.next().await.unwrap();
        drop(s);
        assert!(blocked(early), "it was blocked before: it stays blocked");
        // SAFETY: undoes the block above.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, early);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        assert!(lp.remove_signal_handler(other));
    });
}

#[test]
fn handler_added_before_the_loop_runs() {
    let sig = rt(4);
    for b in common::backends() {
        let mut r = runner(b);
        let lp = r.event_loop();
        let hits = Rc::new(Cell::new(0u32));
        let h2 = hits.clone();
        lp.add_signal_handler(sig, move || h2.set(h2.get() + 1))
            .unwrap();
        assert!(blocked(sig));
        r.run(async {
            raise(sig);
            uringio::timeout(Duration::from_secs(5), until(&hits, 1))
                .await
                .unwrap_or_else(|_| panic!("handler never ran on {b}"));
        });
        // Between runs the handler stays; a signal raised now is read by
        // the next run.
        raise(sig);
        r.run(async {
            uringio::timeout(Duration::from_secs(5), until(&hits, 2))
                .await
                .unwrap_or_else(|_| panic!("second signal lost on {b}"));
        });
        drop(r);
        assert!(!blocked(sig), "closing the loop restores the mask on {b}");
    }
}

#[test]
fn removed_handler_does_not_run() {
    // SIGWINCH is ignored by default, so raising it unhandled is harmless.
    let sig = libc::SIGWINCH;
    on_both(10, |_| async move {
        let lp = uringio::get_running_loop();
        let hits = Rc::new(Cell::new(0u32));
        let h2 = hits.clone();
        lp.add_signal_handler(sig, move || h2.set(h2.get() + 1))
            .unwrap();
        assert!(lp.remove_signal_handler(sig));
        assert!(!blocked(sig));
        raise(sig);
        uringio::sleep(Duration::from_millis(20)).await;
        assert_eq!(hits.get(), 0);
    });
}

#[test]
fn invalid_signals_are_rejected() {
    on_both(10, |_| async {
        let lp = uringio::get_running_loop();
        for sig in [
            0,
            -1,
            libc::SIGRTMAX() + 1,
            1000,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGFPE,
            32,
        ] {
            let e = lp.add_signal_handler(sig, || {}).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "signal {sig}");
            let msg = e.to_string();
            assert!(!msg.is_empty());
            let e = signal::try_signal(sig).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "signal {sig}");
            assert!(!lp.remove_signal_handler(sig));
        }
        let e = lp.add_signal_handler(libc::SIGKILL, || {}).unwrap_err();
        assert!(e.to_string().contains("SIGKILL"), "{e}");
        let e = lp.add_signal_handler(0, || {}).unwrap_err();
        assert!(e.to_string().contains("invalid signal number 0"), "{e}");
    });
}

#[test]
fn signal_outside_a_loop_is_an_error() {
    let e = signal::try_signal(libc::SIGUSR1).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
}

#[test]
fn dropping_the_loop_ends_streams() {
    let sig = rt(5);
    for b in common::backends() {
        let mut r = runner(b);
        let s = r.run(async { signal::signal(sig) });
        assert!(blocked(sig));
        let lp = r.event_loop();
        drop(r);
        assert!(!blocked(sig), "closing the loop restores the mask on {b}");
        let mut s = s;
        // The loop is gone: the stream ends instead of hanging.
        let mut r2 = runner(b);
        assert_eq!(r2.run(async move { s.recv().await }), None);
        assert!(lp.add_signal_handler(sig, || {}).is_err());
    }
}
