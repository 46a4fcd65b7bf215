//! `--metrics ADDR`: the `stats` counters in the Prometheus text format on
//! `GET /metrics`, served by the driver's one poll loop.
//!
//! Invariants:
//! - Off unless configured; it answers `GET /metrics` (200) and nothing else
//!   (404, 405), reads at most `MAX_REQUEST` bytes of a request and closes
//!   every connection after one answer. At most `MAX_CONNS` at once.
//! - The numbers are exactly those of `peerline-server stats` (one source:
//!   `Driver::counters`); only the names gain the `peerline_` prefix (and
//!   `_total` for counters, as Prometheus names them).
//! - Connection ids live above `BASE`, clear of TCP slab keys and the admin
//!   socket's.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::netio::{end_side_turn, OutBuffer, ReplyParts};

pub const LISTENER: Token = Token(usize::MAX - 17);
const BASE: usize = usize::MAX / 2 + 1024;
const MAX_CONNS: usize = 16;
const MAX_REQUEST: usize = 8192;

/// Gauges go up and down; everything else only counts up.
fn is_gauge(name: &str) -> bool {
    matches!(
        name,
        "uptime_seconds"
            | "connections"
            | "sessions"
            | "accounts"
            | "udp_registered"
            | "broadcasts_live"
            | "deliveries_pending"
    )
}

fn help(name: &str) -> &'static str {
    match name {
        "uptime_seconds" => "Seconds since the server started.",
        "connections" => "Open TCP control connections.",
        "sessions" => "Logged-in sessions.",
        "accounts" => "Accounts in users.csv.",
        "udp_registered" => "Sessions with a registered UDP endpoint.",
        "broadcasts_live" => "Broadcasts not yet expired.",
        "deliveries_pending" => "Broadcast datagrams sent and not yet acknowledged.",
        "logins_ok" => "Successful LOGINs.",
        "logins_failed" => "LOGINs refused (bad credentials or disabled account).",
        "rate_limited" => "Requests refused with ERR rate-limited.",
        "datagrams_sent" => "UDP datagrams sent.",
        "datagrams_dropped" => {
            "UDP datagrams discarded (malformed, forged, replayed, or send queue full)."
        }
        "tcp_fallbacks" => "Broadcasts delivered on TCP after UDP went unacknowledged.",
        _ => "A peerline counter.",
    }
}

/// The Prometheus text exposition (version 0.0.4) of `counters`.
pub fn render(counters: &[(&str, u64)]) -> String {
    let mut out = String::new();
    for &(name, value) in counters {
        let (full, kind) = if is_gauge(name) {
            (format!("peerline_{name}"), "gauge")
        } else {
            (format!("peerline_{name}_total"), "counter")
        };
        let _ = writeln!(out, "# HELP {full} {}", help(name));
        let _ = writeln!(out, "# TYPE {full} {kind}");
        let _ = writeln!(out, "{full} {value}");
    }
    out
}

/// The status line and body for a request head, given the metrics text.
fn respond(head: &str, body: impl FnOnce() -> String) -> String {
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body()),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    out: OutBuffer,
    answered: bool,
    registered: Interest,
}

pub struct MetricsServer {
    listener: TcpListener,
    conns: Slab<Conn>,
    dead: Vec<usize>,
}

pub fn owns(token: Token) -> bool {
    token.0 >= BASE && token.0 < BASE + MAX_CONNS
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<MetricsServer> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        log::info!(
            "metrics on http://{}/metrics",
            listener.local_addr().unwrap_or(addr)
        );
        Ok(MetricsServer {
            listener,
            conns: Slab::new(),
            dead: Vec::new(),
        })
    }

    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        continue;
                    }
                    let key = self.conns.vacant_key();
                    if registry
                        .register(&mut stream, Token(BASE + key), Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.conns.insert(Conn {
                        stream,
                        input: Vec::new(),
                        out: OutBuffer::with_cap(1 << 20),
                        answered: false,
                        registered: Interest::READABLE,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::warn!("metrics: accept failed: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// Reads a request; once its head is complete, answers with `body()`.
    pub fn on_event(&mut self, token: Token, body: impl FnOnce() -> String) {
        let key = token.0 - BASE;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.answered {
            return;
        }
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.dead.push(key);
                    return;
                }
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    let complete = c.input.windows(4).any(|w| w == b"\r\n\r\n")
                        || c.input.windows(2).any(|w| w == b"\n\n");
                    if complete || c.input.len() > MAX_REQUEST {
                        let text = String::from_utf8_lossy(&c.input);
                        let head = text.lines().next().unwrap_or("").to_owned();
                        let reply = respond(&head, body);
                        c.answered = true;
                        if c.out.push_line(reply.trim_end_matches('\n')).is_err() {
                            self.dead.push(key);
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead.push(key);
                    return;
                }
            }
        }
    }

    pub fn end_turn(&mut self, registry: &Registry) {
        end_side_turn(
            &mut self.conns,
            &mut self.dead,
            registry,
            BASE,
            |c: &mut Conn| ReplyParts {
                stream: &mut c.stream,
                out: &mut c.out,
                answered: c.answered,
                registered: &mut c.registered,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_types_and_values() {
        let text = render(&[("sessions", 3), ("logins_ok", 7)]);
        assert_eq!(
            text,
            "# HELP peerline_sessions Logged-in sessions.\n\
             # TYPE peerline_sessions gauge\n\
             peerline_sessions 3\n\
             # HELP peerline_logins_ok_total Successful LOGINs.\n\
             # TYPE peerline_logins_ok_total counter\n\
             peerline_logins_ok_total 7\n"
        );
    }

    #[test]
    fn only_get_metrics_is_served() {
        let ok = respond("GET /metrics HTTP/1.1", || "x 1\n".into());
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nx 1\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        assert!(respond("GET / HTTP/1.1", String::new).starts_with("HTTP/1.1 404"));
        assert!(respond("POST /metrics HTTP/1.1", String::new).starts_with("HTTP/1.1 405"));
        assert!(respond("", String::new).starts_with("HTTP/1.1 405"));
    }
}
