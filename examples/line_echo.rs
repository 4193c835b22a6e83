//! A line echo server on streams, asyncio's `start_server` way: each
//! connection is a task that reads a line and writes it back, upper-cased,
//! until the client closes. Lines longer than 64 KiB are refused with a
//! message (the reader's limit), and the connection goes on.
//!
//! ```text
//! cargo run --release --example line_echo -- [ADDR] [epoll|io_uring]   # default 127.0.0.1:7002
//! nc 127.0.0.1 7002
//! ```
//! Stops cleanly on SIGINT/SIGTERM.

use std::io::{self, Write};

use futures_util::StreamExt;
use uringio::error::LimitOverrunError;
use uringio::streams::{self, StreamReader, StreamWriter};

async fn serve(mut reader: StreamReader, writer: StreamWriter) -> io::Result<()> {
    loop {
        match reader.readline().await {
            Ok(line) if line.is_empty() => return Ok(()), // the client closed
            Ok(line) => writer.write(&line.to_ascii_uppercase()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Over the limit: skip what was checked and go on.
                let skip = e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<LimitOverrunError>())
                    .map_or(0, |o| o.consumed);
                reader.read(skip).await?;
                writer.write(b"line too long\n");
            }
            Err(e) => return Err(e),
        }
        writer.drain().await?;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7002".to_string());
    let backend = match args.next().as_deref() {
        None | Some("auto") => uringio::Backend::Auto,
        Some("epoll") => uringio::Backend::Epoll,
        Some("io_uring") => uringio::Backend::IoUring,
        Some(other) => {
            eprintln!("line_echo: unknown backend {other:?} (epoll, io_uring or auto)");
            std::process::exit(2);
        }
    };
    let mut runner = uringio::Runner::builder()
        .backend(backend)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("line_echo: {e}");
            std::process::exit(1);
        });
    runner.run(async move {
        let server = streams::start_server(serve, addr.as_str())
            .await
            .unwrap_or_else(|e| {
                eprintln!("line_echo: {e}");
                std::process::exit(1);
            });
        println!("line_echo on {:?}", server.local_addrs());
        let _ = std::io::stdout().flush();
        let mut int = uringio::signal::signal(libc::SIGINT);
        let mut term = uringio::signal::signal(libc::SIGTERM);
        futures_util::future::select(int.next(), term.next()).await;
        println!("line_echo: stopping");
        server.close();
    });
}
