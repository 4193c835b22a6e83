//! Thread-per-core: a core whose loop panics is reported (the panic
//! message at once, and `launch` returns an error at the end) while the
//! other cores keep serving. Both backends.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use uringio::Runner;
use uringio::net::{TcpListener, TcpStream};

#[test]
fn a_panicking_core_does_not_stop_the_others() {
    for b in common::backends() {
        let panicked = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicBool::new(false));
        let (p, sv) = (panicked.clone(), served.clone());
        let r = Runner::builder()
            .backend(b)
            .thread_per_core(2)
            .launch(move |core| {
                let (p, sv) = (p.clone(), sv.clone());
                async move {
                    if core.id == 1 {
                        p.store(true, Ordering::SeqCst);
                        panic!("core 1 fails on purpose");
                    }
                    // Core 0 serves an echo after core 1 is gone.
                    let l = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = l.local_addr().unwrap();
                    while !p.load(Ordering::SeqCst) {
                        uringio::sleep(Duration::from_millis(1)).await;
                    }
                    uringio::sleep(Duration::from_millis(20)).await;
                    let server = uringio::spawn(async move {
                        let (s, _) = l.accept().await.unwrap();
                        let (r, b) = s.read(Vec::with_capacity(16)).await;
                        r.unwrap();
                        s.write_all(b).await.0.unwrap();
                    });
                    let c = TcpStream::connect(addr).await.unwrap();
                    c.write_all(b"still here".to_vec()).await.0.unwrap();
                    let (r, got) = c.read(Vec::with_capacity(16)).await;
                    r.unwrap();
                    server.await.unwrap();
                    sv.store(&got[..] == b"still here", Ordering::SeqCst);
                }
            });
        let e = r.expect_err("a panicked core is reported");
        assert!(e.to_string().contains("panicked"), "{b}: {e}");
        assert!(panicked.load(Ordering::SeqCst));
        assert!(served.load(Ordering::SeqCst), "{b}: core 0 stopped serving");
    }
}
