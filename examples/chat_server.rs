//! A line-based chat server on the transport layer: every line a client
//! sends goes to every other client, prefixed with the sender's address.
//! A short example of `Protocol`s sharing state on one loop.
//!
//! ```text
//! cargo run --release --example chat_server -- [ADDR]     # default 127.0.0.1:7001
//! nc 127.0.0.1 7001                                       # in two terminals
//! ```
//! Stops cleanly on SIGINT/SIGTERM.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use futures_util::StreamExt;
use uringio::transport::{self, Protocol, Transport};

/// Who is connected: an id per client and its transport.
#[derive(Default)]
struct Room {
    next: u64,
    members: HashMap<u64, Transport>,
}

impl Room {
    fn broadcast(&self, from: u64, line: &[u8]) {
        for (id, t) in &self.members {
            if *id != from {
                t.write(line);
            }
        }
    }
}

/// One client: buffers partial lines, broadcasts whole ones.
struct Client {
    room: Rc<RefCell<Room>>,
    id: u64,
    name: String,
    partial: Vec<u8>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: Transport) {
        let mut room = self.room.borrow_mut();
        self.id = room.next;
        room.next += 1;
        self.name = t.peername().map_or_else(|| "?".into(), |a| a.to_string());
        t.write(format!("welcome, {} ({} here)\n", self.name, room.members.len()).as_bytes());
        room.broadcast(self.id, format!("* {} joined\n", self.name).as_bytes());
        room.members.insert(self.id, t);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let mut msg = format!("{}: ", self.name).into_bytes();
            msg.extend_from_slice(&line);
            self.room.borrow().broadcast(self.id, &msg);
        }
        // A client that never sends a newline cannot make us buffer
        // without bound.
        if self.partial.len() > 64 * 1024 {
            if let Some(t) = self.room.borrow().members.get(&self.id) {
                t.write(b"line too long, bye\n");
                t.close();
            }
        }
    }

    fn connection_lost(&mut self, _exc: Option<std::io::Error>) {
        let mut room = self.room.borrow_mut();
        room.members.remove(&self.id);
        room.broadcast(self.id, format!("* {} left\n", self.name).as_bytes());
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string());
    uringio::run(async move {
        let room = Rc::new(RefCell::new(Room::default()));
        let server = transport::create_server(
            move || Client {
                room: room.clone(),
                id: 0,
                name: String::new(),
                partial: Vec::new(),
            },
            addr.as_str(),
        )
        .await
        .unwrap_or_else(|e| {
            eprintln!("chat_server: {e}");
            std::process::exit(1);
        });
        println!("chat on {:?}", server.local_addrs());
        let mut int = uringio::signal::signal(libc::SIGINT);
        let mut term = uringio::signal::signal(libc::SIGTERM);
        futures_util::future::select(int.next(), term.next()).await;
        let _ = writeln!(std::io::stdout(), "chat_server: stopping");
        server.close();
    });
}
