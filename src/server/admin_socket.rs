//! The admin channel's transport: a Unix socket `admin.sock` in the data dir,
//! served by the driver's one poll loop (requests: `admin.rs`).
//!
//! Invariants:
//! - Never reachable over the network: a filesystem socket, mode 0600 inside
//!   the 0700 data dir, so only the server's own user (or root) can connect.
//! - Only a server holding the data-dir lock binds it, so an existing
//!   `admin.sock` is a stale one left by a crash and is replaced.
//! - Bounded: at most `MAX_CONNS` admin connections, one request line of at
//!   most `MAX_REQUEST` bytes each; the connection closes once answered.
//! - Admin connection ids live above `BASE`, where no TCP connection's slab
//!   key ever reaches, so the engine can treat them as `ConnId`s.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::netio::{end_side_turn, OutBuffer, ReplyParts};

/// The socket's file name in the data dir.
pub const SOCKET_NAME: &str = "admin.sock";
/// The listener's poll token (the driver's fixed tokens sit just above).
pub const LISTENER: Token = Token(usize::MAX - 16);
/// Admin connection `k` has token and `ConnId` `BASE + k`.
const BASE: usize = usize::MAX / 2;
const MAX_CONNS: usize = 16;
const MAX_REQUEST: usize = 4096;
/// A `user list` of many accounts is long; it is still bounded.
const OUT_CAP: usize = 64 << 20;

struct AdminConn {
    stream: UnixStream,
    input: Vec<u8>,
    out: OutBuffer,
    /// The request line has been taken; read nothing more.
    asked: bool,
    /// The reply is queued: close once it is written.
    answered: bool,
    registered: Interest,
}

pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
    conns: Slab<AdminConn>,
    /// Closed connections to free at the end of the turn.
    dead: Vec<usize>,
}

/// True for the tokens of admin connections.
pub fn owns(token: Token) -> bool {
    token.0 >= BASE && token.0 < BASE + MAX_CONNS
}

impl AdminSocket {
    pub fn bind(dir: &Path, registry: &Registry) -> io::Result<AdminSocket> {
        let path = dir.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("replaced a stale {}", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(AdminSocket {
            listener,
            path,
            conns: Slab::new(),
            dead: Vec::new(),
        })
    }

    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        log::warn!("admin socket: {MAX_CONNS} connections open; refusing one");
                        continue;
                    }
                    let key = self.conns.vacant_key();
                    if let Err(e) =
                        registry.register(&mut stream, Token(BASE + key), Interest::READABLE)
                    {
                        log::warn!("admin socket: cannot register: {e}");
                        continue;
                    }
                    self.conns.insert(AdminConn {
                        stream,
                        input: Vec::new(),
                        out: OutBuffer::with_cap(OUT_CAP),
                        asked: false,
                        answered: false,
                        registered: Interest::READABLE,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("admin socket: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Handles readiness of an admin connection; returns its request line
    /// (and the `ConnId` to answer) once a whole one has arrived.
    pub fn on_event(&mut self, token: Token) -> Option<(usize, Result<String, String>)> {
        let key = token.0 - BASE;
        let c = self.conns.get_mut(key)?;
        if c.answered {
            return None;
        }
        if c.asked {
            return None;
        }
        let mut buf = [0u8; 1024];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.dead.push(key);
                    return None;
                }
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = c.input.iter().position(|&b| b == b'\n') {
                        c.asked = true;
                        let line = String::from_utf8(c.input[..end].to_vec())
                            .map(|l| l.trim_end_matches('\r').to_owned())
                            .map_err(|_| "the request is not UTF-8".to_owned());
                        return Some((BASE + key, line));
                    }
                    if c.input.len() > MAX_REQUEST {
                        c.asked = true;
                        return Some((BASE + key, Err("request too long".into())));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead.push(key);
                    return None;
                }
            }
        }
    }

    /// Queues the reply to the request of admin connection `conn`.
    pub fn reply(&mut self, conn: usize, lines: &[String]) {
        let Some(c) = conn.checked_sub(BASE).and_then(|k| self.conns.get_mut(k)) else {
            return;
        };
        for l in lines {
            if c.out.push_line(l).is_err() {
                let _ = c.out.push_line("ERR reply too long");
                break;
            }
        }
        c.answered = true;
    }

    /// Writes what is queued, closes answered connections once their reply is
    /// out, frees closed ones.
    pub fn end_turn(&mut self, registry: &Registry) {
        end_side_turn(
            &mut self.conns,
            &mut self.dead,
            registry,
            BASE,
            |c: &mut AdminConn| ReplyParts {
                stream: &mut c.stream,
                out: &mut c.out,
                answered: c.answered,
                registered: &mut c.registered,
            },
        );
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        // Only while we still hold the lock: nobody else can have bound it.
        let _ = std::fs::remove_file(&self.path);
    }
}
