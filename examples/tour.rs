//! A first tour of uringio: which backend was chosen and why, what the
//! kernel supports, and a few things working end to end.
//!
//! ```text
//! cargo run --release --example tour
//! URINGIO_BACKEND=epoll cargo run --release --example tour
//! ```

use std::time::{Duration, Instant};

use uringio::driver::{Cancellable, Canceller};
use uringio::net::{TcpListener, TcpStream};

fn step(name: &str, what: String) {
    println!("  [ok] {name:<22} {what}");
}

fn main() {
    let mut runner = match uringio::Runner::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("could not create the event loop: {e}");
            std::process::exit(1);
        }
    };
    println!("uringio tour");
    println!("  backend:          {}", runner.backend());
    match runner.fallback_reason() {
        Some(r) => println!("  fallback reason:  {r}"),
        None => println!("  fallback reason:  none"),
    }
    let f = runner.features().clone();
    println!("  kernel:           {}", f.kernel);
    if f.io_uring {
        println!(
            "  ring:             SQ {} / CQ {} entries, setup flags {:?}{}",
            f.sq_entries,
            f.cq_entries,
            f.setup_flags,
            if f.dropped_flags.is_empty() {
                String::new()
            } else {
                format!(" (kernel refused {:?})", f.dropped_flags)
            }
        );
        println!(
            "  features:         nodrop={} ext_arg={} multishot_accept={} recv_multishot={} buf_ring={} send_zc={} msg_ring={} waitid={} ftruncate={} fixed_files={}",
            f.nodrop,
            f.ext_arg,
            f.multishot_accept,
            f.recv_multishot,
            f.buf_ring,
            f.send_zc,
            f.msg_ring,
            f.waitid,
            f.ftruncate,
            f.fixed_files
        );
    }
    println!();

    let result: std::io::Result<()> = runner.run(async {
        // 1. TCP echo round trip through the loop.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = uringio::spawn(async move {
            let (conn, _) = listener.accept().await?;
            let mut buf = Vec::with_capacity(4096);
            loop {
                buf.clear();
                let (res, b) = conn.read(buf).await;
                let n = res?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                let (res, b) = conn.write_all(b).await;
                res?;
                buf = b;
            }
        });
        let t0 = Instant::now();
        let client = TcpStream::connect(addr).await?;
        let msg = b"hello from the tour".to_vec();
        let (res, _) = client.write_all(msg.clone()).await;
        res?;
        let (res, echo) = client.read(Vec::with_capacity(64)).await;
        let n = res?;
        assert_eq!(&echo[..n], &msg[..]);
        client.shutdown(std::net::Shutdown::Write)?;
        server.await.map_err(std::io::Error::from)??;
        step(
            "tcp echo",
            format!("{n} bytes to {addr} and back in {:?}", t0.elapsed()),
        );

        // 2. Timers: three sleeps at once, a timeout that fires, call_later.
        let t0 = Instant::now();
        let sleeps: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                uringio::spawn(async move {
                    uringio::sleep(Duration::from_millis(ms)).await;
                    ms
                })
            })
            .collect();
        // as_completed yields them in the order they finish.
        let mut finished = uringio::task::as_completed(sleeps);
        let mut done = Vec::new();
        while let Some(r) = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut finished), cx)
        })
        .await
        {
            done.push(r.map_err(std::io::Error::from)?);
        }
        let sleeps_took = t0.elapsed();
        let timed_out = uringio::timeout(
            Duration::from_millis(10),
            uringio::sleep(Duration::from_secs(5)),
        )
        .await
        .is_err();
        let fired = std::rc::Rc::new(std::cell::Cell::new(false));
        let f2 = fired.clone();
        uringio::get_running_loop().call_later(Duration::from_millis(5), move || f2.set(true));
        uringio::sleep(Duration::from_millis(10)).await;
        step(
            "timers",
            format!(
                "sleeps of 30, 10, 20 ms at once: done in {:?}, finishing in the order {:?}; timeout fired: {timed_out}; call_later ran: {}",
                sleeps_took,
                done,
                fired.get()
            ),
        );

        // 3. A cancelled op: a read on an idle connection, cancelled with a
        //    Canceller; the buffer comes back with ECANCELED.
        let idle_l = TcpListener::bind("127.0.0.1:0")?;
        let idle_c = TcpStream::connect(idle_l.local_addr()?).await?;
        let (_idle_s, _) = idle_l.accept().await?;
        let c = Canceller::new();
        let c2 = c.clone();
        uringio::get_running_loop().call_later(Duration::from_millis(10), move || c2.cancel());
        let (res, buf) = idle_c
            .read(Vec::with_capacity(128))
            .with_canceller(&c)
            .await;
        let err = res.expect_err("nothing was sent, so the read must be cancelled");
        step(
            "cancelled read",
            format!(
                "resolved with {:?} (errno {:?}), buffer of capacity {} handed back",
                err.kind(),
                err.raw_os_error(),
                buf.capacity()
            ),
        );
        // Dropping an in-flight op is sound too: the driver keeps the buffer.
        let dropped = uringio::timeout(
            Duration::from_millis(5),
            idle_c.read(Vec::with_capacity(128)),
        )
        .await;
        step(
            "dropped read",
            format!("timed out: {}, loop still fine", dropped.is_err()),
        );

        // 4. A file round trip.
        let path = std::env::temp_dir().join(format!("uringio-tour-{}", std::process::id()));
        let file = uringio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await?;
        let data = b"uringio writes, then reads back".to_vec();
        let (res, _) = file.write_all_at(data.clone(), 0).await;
        res?;
        file.sync_data().await?;
        let (res, back) = file.read_at(Vec::with_capacity(64), 0).await;
        let n = res?;
        let len = file.metadata().await?.len();
        file.close().await?;
        uringio::fs::remove_file(&path).await?;
        assert_eq!(&back[..n], &data[..]);
        step(
            "file round trip",
            format!(
                "wrote and read back {n} bytes (statx size {len}) at {}",
                path.display()
            ),
        );

        // 5. A subprocess: pipes as streams, waited for through a pidfd.
        let mut child = uringio::process::create_subprocess_exec(
            "tr",
            ["a-z", "A-Z"],
            std::process::Stdio::piped(),
            std::process::Stdio::piped(),
            std::process::Stdio::null(),
        )
        .await?;
        let pid = child.pid();
        let out = child
            .communicate(Some(b"hello from a child process\n".to_vec()))
            .await?;
        step(
            "subprocess",
            format!(
                "`tr a-z A-Z` (pid {pid}) answered {:?}, returncode {:?} (waited by {})",
                String::from_utf8_lossy(&out.stdout).trim_end(),
                child.returncode(),
                if uringio::get_running_loop().features().waitid {
                    "IORING_OP_WAITID on its pidfd"
                } else {
                    "polling its pidfd"
                }
            ),
        );

        let s = uringio::driver::stats();
        step(
            "driver stats",
            format!(
                "{} enters, {} SQEs, {} CQEs, {} CQ overflows, {} pool ops",
                s.enter_calls, s.sqes_submitted, s.cqes_reaped, s.cq_overflows, s.blocking_ops
            ),
        );
        Ok(())
    });
    match result {
        Ok(()) => println!("\nall steps passed on {}", runner.backend()),
        Err(e) => {
            eprintln!("\ntour failed: {e}");
            std::process::exit(1);
        }
    }
}
