//! Debug mode reports a transport dropped without `close()` (asyncio's
//! "unclosed transport" ResourceWarning), naming the peer, and stays
//! quiet for transports that were closed. Own test binary: it installs a
//! logger.

mod common;

use std::sync::Mutex;

use uringio::transport::{self, Protocol, Transport};

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The tests share the log: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            LOG.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[derive(Default)]
struct Quiet(Option<Transport>);

impl Protocol for Quiet {
    fn connection_made(&mut self, t: Transport) {
        self.0 = Some(t);
    }
    fn data_received(&mut self, _: &[u8]) {}
}

fn unclosed_reports() -> Vec<String> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains("unclosed transport"))
        .cloned()
        .collect()
}

#[test]
fn unclosed_transport_is_reported_in_debug_mode_with_its_peer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Warn);
    for b in common::backends() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Closed: no report.
        LOG.lock().unwrap().clear();
        let mut r = uringio::Runner::builder()
            .backend(b)
            .debug(true)
            .build()
            .unwrap();
        r.run(async {
            let (t, _p) = transport::create_connection(Quiet::default, addr)
                .await
                .unwrap();
            t.close();
            uringio::sleep(std::time::Duration::from_millis(10)).await;
        });
        drop(r);
        assert!(
            unclosed_reports().is_empty(),
            "{b}: {:?}",
            unclosed_reports()
        );
        // Left open when its loop closes: reported, with the peer.
        let mut r = uringio::Runner::builder()
            .backend(b)
            .debug(true)
            .build()
            .unwrap();
        r.run(async {
            let (_t, _p) = transport::create_connection(Quiet::default, addr)
                .await
                .unwrap();
        });
        drop(r);
        let reports = unclosed_reports();
        assert_eq!(reports.len(), 1, "{b}: {reports:?}");
        assert!(reports[0].contains(&addr.to_string()), "{b}: {reports:?}");
        // Not in debug mode: silent.
        LOG.lock().unwrap().clear();
        let mut r = uringio::Runner::builder()
            .backend(b)
            .debug(false)
            .build()
            .unwrap();
        r.run(async {
            let (_t, _p) = transport::create_connection(Quiet::default, addr)
                .await
                .unwrap();
        });
        drop(r);
        assert!(unclosed_reports().is_empty(), "{b}");
    }
}

struct Dg;

impl transport::DatagramProtocol for Dg {
    fn datagram_received(&mut self, _: &[u8], _: std::net::SocketAddr) {}
}

#[test]
fn unclosed_datagram_transport_is_reported_in_debug_mode() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    LOG.lock().unwrap().clear();
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Warn);
    for b in common::backends() {
        let mut r = uringio::Runner::builder()
            .backend(b)
            .debug(true)
            .build()
            .unwrap();
        r.run(async {
            let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
            let (t, _p) = transport::create_datagram_endpoint(
                || Dg,
                Some(local),
                None::<std::net::SocketAddr>,
            )
            .await
            .unwrap();
            drop(t);
        });
        drop(r);
        let n = LOG
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains("unclosed datagram transport"))
            .count();
        assert!(n >= 1, "{b}");
    }
}
