//! The request parser and the fixed responses shared by `http_hello`,
//! `http_hello_tokio` and `benches/http.rs` (included with `#[path]`), so
//! every server compared parses the same way.
#![allow(dead_code)] // each includer uses a subset

/// The one response every request gets.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
/// The answer to a request that cannot be parsed (then the connection closes).
pub const BAD: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The longest request head accepted.
pub const MAX_HEAD: usize = 8192;

/// One parsed request: how many bytes it took, and whether the client
/// asked to close.
pub enum Parsed {
    Request { len: usize, close: bool },
    Incomplete,
    Bad,
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    if end > MAX_HEAD {
        return Parsed::Bad;
    }
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let request_line = request_line.strip_suffix(b"\r").unwrap_or(request_line);
    if !request_line.ends_with(b" HTTP/1.1") && !request_line.ends_with(b" HTTP/1.0") {
        return Parsed::Bad;
    }
    let mut close = request_line.ends_with(b" HTTP/1.0");
    let mut body = 0usize;
    for l in lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => body = n,
                None => return Parsed::Bad,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Bad;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    let len = end + 4 + body;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    Parsed::Request { len, close }
}

/// Answers every complete request at the start of `inbuf` (appending the
/// responses to `out`, in order). Returns how many bytes of `inbuf` were
/// used and whether the connection must close after `out` is written.
pub fn answer(inbuf: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
    let mut used = 0;
    loop {
        match parse(&inbuf[used..]) {
            Parsed::Request { len, close } => {
                out.extend_from_slice(RESPONSE);
                used += len;
                if close {
                    return (used, true);
                }
            }
            Parsed::Incomplete => return (used, false),
            Parsed::Bad => {
                out.extend_from_slice(BAD);
                return (used, true);
            }
        }
    }
}
