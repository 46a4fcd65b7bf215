//! Accepting connections when the process is out of file descriptors.
//!
//! Invariants:
//! - The listener is never left with connections queued and nothing to wake
//!   the driver for them. Readiness is edge-triggered: returning on `EMFILE`
//!   with the queue non-empty used to stop accepting for good (the queue
//!   filled, so no new connection ever made a new edge).
//! - One descriptor is kept in reserve (`/dev/null`). On `EMFILE`/`ENFILE`
//!   it is closed, the oldest pending connection is accepted with it, told
//!   `EVENT CLOSING server-full …` and closed, and the reserve is taken back
//!   (libuv's and nginx's trick): the queue keeps draining, clients hear why
//!   instead of hanging, and connections are served again as soon as
//!   descriptors free up.
//! - Without a reserve (it could not be reopened) the driver retries after
//!   [`ACCEPT_RETRY`] by timer, never by waiting for an edge.

use std::fs::File;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::net::TcpListener;

use crate::proto::{CloseReason, Event};

/// How soon accepting is tried again when no descriptor could be freed.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The reserve descriptor and what the driver reports about shedding.
#[derive(Debug)]
pub struct FdReserve {
    spare: Option<File>,
    /// When to call `accept` again without an event, if ever.
    pub retry_at: Option<Instant>,
    /// Connections accepted only to be refused for want of descriptors.
    pub shed: u64,
    /// Shedding now (logged once per episode, not once per connection).
    shedding: bool,
}

impl Default for FdReserve {
    fn default() -> Self {
        FdReserve::new()
    }
}

impl FdReserve {
    pub fn new() -> FdReserve {
        FdReserve {
            spare: open_spare(),
            retry_at: None,
            shed: 0,
            shedding: false,
        }
    }

    /// Is this `accept` error the process (or system) running out of
    /// descriptors or kernel memory, rather than a problem of one connection?
    pub fn is_exhaustion(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }

    /// An `accept` succeeded: descriptors are available again.
    pub fn accepted(&mut self) {
        if std::mem::replace(&mut self.shedding, false) {
            log::warn!(
                "accepting again ({} connection(s) refused so far for want of file descriptors)",
                self.shed
            );
        }
        if self.spare.is_none() {
            self.spare = open_spare();
        }
    }

    /// `accept` failed with `e` (an exhaustion): refuses one pending
    /// connection with the reserve descriptor. True: call `accept` again.
    /// False: no reserve; `retry_at` is set, the caller returns.
    pub fn shed_one(&mut self, listener: &TcpListener, now: Instant, e: &io::Error) -> bool {
        if !std::mem::replace(&mut self.shedding, true) {
            log::warn!("accept failed: {e}; refusing new connections until descriptors free up");
        }
        let Some(spare) = self.spare.take() else {
            self.retry_at = Some(now + ACCEPT_RETRY);
            return false;
        };
        drop(spare);
        let progressed = match listener.accept() {
            Ok((mut stream, _)) => {
                self.shed += 1;
                let line = Event::Closing {
                    reason: CloseReason::ServerFull,
                    text: "the server is out of file descriptors; try later".to_owned(),
                }
                .wire()
                .to_string();
                // A fresh socket's send buffer is empty: this never blocks
                // and is never partial. Best effort all the same.
                let _ = stream.write_all(format!("{line}\n").as_bytes());
                true
                // `stream` closes here, returning its descriptor.
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => false,
        };
        self.spare = open_spare();
        if !progressed || self.spare.is_none() {
            self.retry_at = Some(now + ACCEPT_RETRY);
            return false;
        }
        true
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null")
        .map_err(|e| log::warn!("cannot keep a spare file descriptor: {e}"))
        .ok()
}
