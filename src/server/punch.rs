//! Hole-punching coordination (DCUtR's synchronisation, with the server in
//! the middle): after an introduction between two peerline clients, the server
//! times one round trip to each (`EVENT SYNC` → `SYNC`), then tells both to
//! dial the other's observed control address (`EVENT PUNCH`) at the same
//! moment, so their SYNs cross and both NATs let the other's SYN in as the
//! answer to their own (TCP simultaneous open).
//!
//! Timing: both `EVENT PUNCH` lines leave in the same turn, at `t`. Side `x`
//! reads its line about `rtt_x / 2` later, so it is told to wait
//! `max(rtt) / 2 - rtt_x / 2`: both dial at about `t + max(rtt) / 2`.
//!
//! Invariants:
//! - Only an introduction the server made (an `ACCEPT` of a `CONNECT` that
//!   named a port) is ever synchronised, and only its two users' `SYNC`s
//!   count; a `SYNC` for anything else is refused (`ERR no-request`).
//! - The table is bounded in time: an entry older than [`SYNC_WAIT`] is
//!   dropped the next time the table is touched, so a side that never
//!   answers (an `nc` user) leaves nothing behind for long.
//! - The server only hands out addresses it observed (each side's control
//!   connection); it never relays link bytes.
//!
//! Pure: time comes in as an argument; users are the engine's indices.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long the server waits for both `SYNC` answers.
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// When each side should dial, from the moment both `EVENT PUNCH` leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Delay for the requester and for the acceptor.
    pub requester_in: Duration,
    pub acceptor_in: Duration,
    /// Both round trips added: an estimate of the round trip between them.
    pub path_rtt: Duration,
}

/// Delays that make both dials start together (see the module doc).
pub fn schedule(rtt_requester: Duration, rtt_acceptor: Duration) -> Schedule {
    let max = rtt_requester.max(rtt_acceptor);
    Schedule {
        requester_in: (max - rtt_requester) / 2,
        acceptor_in: (max - rtt_acceptor) / 2,
        path_rtt: rtt_requester + rtt_acceptor,
    }
}

#[derive(Debug)]
struct Sync {
    sent: Instant,
    rtt_requester: Option<Duration>,
    rtt_acceptor: Option<Duration>,
}

/// Introductions being synchronised, keyed by (requester, acceptor).
#[derive(Debug)]
pub struct Punches<U> {
    pending: HashMap<(U, U), Sync>,
}

impl<U> Default for Punches<U> {
    fn default() -> Self {
        Punches {
            pending: HashMap::new(),
        }
    }
}

/// What a `SYNC` answer led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered<U> {
    /// Nothing of ours to time: refuse it.
    Unknown,
    /// Timed; the other side has not answered yet.
    Waiting,
    /// Both timed: send `EVENT PUNCH` to both now.
    Ready {
        requester: U,
        acceptor: U,
        schedule: Schedule,
    },
}

impl<U: Copy + Eq + Hash> Punches<U> {
    /// `EVENT SYNC` went to both sides of `requester → acceptor` at `now`.
    pub fn start(&mut self, now: Instant, requester: U, acceptor: U) {
        self.prune(now);
        self.pending.insert(
            (requester, acceptor),
            Sync {
                sent: now,
                rtt_requester: None,
                rtt_acceptor: None,
            },
        );
    }

    /// `me` answered `SYNC <other>` at `now`.
    pub fn answered(&mut self, now: Instant, me: U, other: U) -> Answered<U> {
        self.prune(now);
        let key = if self.pending.contains_key(&(me, other)) {
            (me, other)
        } else if self.pending.contains_key(&(other, me)) {
            (other, me)
        } else {
            return Answered::Unknown;
        };
        let sync = self.pending.get_mut(&key).expect("just found");
        let rtt = now.saturating_duration_since(sync.sent);
        let slot = if key.0 == me {
            &mut sync.rtt_requester
        } else {
            &mut sync.rtt_acceptor
        };
        if slot.is_some() {
            // A second answer from the same side times nothing new.
            return Answered::Waiting;
        }
        *slot = Some(rtt);
        match (sync.rtt_requester, sync.rtt_acceptor) {
            (Some(r), Some(a)) => {
                self.pending.remove(&key);
                Answered::Ready {
                    requester: key.0,
                    acceptor: key.1,
                    schedule: schedule(r, a),
                }
            }
            _ => Answered::Waiting,
        }
    }

    /// Forgets every introduction `user` is part of (the session ended).
    pub fn forget(&mut self, user: U) {
        self.pending.retain(|(r, a), _| *r != user && *a != user);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn prune(&mut self, now: Instant) {
        self.pending
            .retain(|_, s| now.saturating_duration_since(s.sent) < SYNC_WAIT);
    }
}

// ---- engine glue: the `SYNC` handler and the start of a sync -------------
//
// Kept here, beside the table, rather than in `handlers.rs`: the handler only
// turns the table's answers into lines. Still no IO: lines are outputs.

use super::accounts::UserIdx;
use super::engine::{ConnId, Engine};
use crate::proto::{ErrorCode, Event, OkReply, ServerLine};
use std::net::SocketAddr;

impl Engine {
    /// The control connection's address of `user` as we see it (after any
    /// NAT on the way): where a simultaneous open must aim.
    fn observed(&self, user: UserIdx) -> Option<SocketAddr> {
        let conn = self.sessions.conn_of(user)?;
        let a = self.conns.get(&conn)?.addr;
        Some(SocketAddr::new(a.ip().to_canonical(), a.port()))
    }

    /// `EVENT SYNC` to both sides of `requester → acceptor`, timed from now.
    pub(super) fn start_punch(&mut self, now: Instant, requester: UserIdx, acceptor: UserIdx) {
        let (Some(rc), Some(ac)) = (
            self.sessions.conn_of(requester),
            self.sessions.conn_of(acceptor),
        ) else {
            return;
        };
        self.punches.start(now, requester, acceptor);
        let (rn, an) = (
            self.accounts.name(requester).to_owned(),
            self.accounts.name(acceptor).to_owned(),
        );
        self.line(rc, Event::Sync { user: an });
        self.line(ac, Event::Sync { user: rn });
    }

    /// `SYNC <name>` from `me`: one round trip timed; once both are in, both
    /// get `EVENT PUNCH` with the other's observed address and their delay.
    pub(super) fn sync(&mut self, now: Instant, conn: ConnId, me: UserIdx, name: &str) {
        let other = self.accounts.find(name);
        let answered = match other {
            Some(other) => self.punches.answered(now, me, other),
            None => Answered::Unknown,
        };
        let (requester, acceptor, schedule) = match answered {
            Answered::Unknown => {
                let text = format!("no introduction with {name} is being timed");
                return self.line(conn, ServerLine::err_with(ErrorCode::NoRequest, text));
            }
            Answered::Waiting => {
                let user = name.to_owned();
                return self.line(conn, ServerLine::Ok(OkReply::Sync { user }));
            }
            Answered::Ready {
                requester,
                acceptor,
                schedule,
            } => (requester, acceptor, schedule),
        };
        let user = name.to_owned();
        self.line(conn, ServerLine::Ok(OkReply::Sync { user }));
        let (Some(ra), Some(aa)) = (self.observed(requester), self.observed(acceptor)) else {
            return;
        };
        let rtt_ms = schedule.path_rtt.as_millis() as u64;
        for (to, other, addr, wait) in [
            (requester, acceptor, aa, schedule.requester_in),
            (acceptor, requester, ra, schedule.acceptor_in),
        ] {
            let Some(c) = self.sessions.conn_of(to) else {
                continue;
            };
            let user = self.accounts.name(other).to_owned();
            let in_ms = wait.as_millis() as u64;
            log::debug!("punch: {user} at {addr} in {in_ms} ms (path rtt ~{rtt_ms} ms)");
            self.line(
                c,
                Event::Punch {
                    user,
                    addr,
                    in_ms,
                    rtt_ms,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn both_sides_dial_at_the_same_moment() {
        // Requester 40 ms away, acceptor 10 ms: the requester reads its line
        // 20 ms after it leaves, the acceptor 5 ms after; both dial at 20 ms.
        let s = schedule(40 * MS, 10 * MS);
        assert_eq!(s.requester_in, Duration::ZERO);
        assert_eq!(s.acceptor_in, 15 * MS);
        assert_eq!(20 * MS + s.requester_in, 5 * MS + s.acceptor_in);
        assert_eq!(s.path_rtt, 50 * MS);
        let s = schedule(10 * MS, 10 * MS);
        assert_eq!(
            (s.requester_in, s.acceptor_in),
            (Duration::ZERO, Duration::ZERO)
        );
    }

    #[test]
    fn ready_once_both_answered_with_their_own_round_trips() {
        let t0 = Instant::now();
        let mut p = Punches::default();
        p.start(t0, 1u32, 2u32);
        assert_eq!(p.answered(t0 + 10 * MS, 2, 1), Answered::Waiting);
        // A repeated answer does not re-time or complete anything.
        assert_eq!(p.answered(t0 + 11 * MS, 2, 1), Answered::Waiting);
        assert_eq!(
            p.answered(t0 + 30 * MS, 1, 2),
            Answered::Ready {
                requester: 1,
                acceptor: 2,
                schedule: schedule(30 * MS, 10 * MS),
            }
        );
        assert!(p.is_empty());
        assert_eq!(p.answered(t0 + 31 * MS, 1, 2), Answered::Unknown);
    }

    #[test]
    fn only_the_two_introduced_users_count() {
        let t0 = Instant::now();
        let mut p = Punches::default();
        p.start(t0, 1u32, 2u32);
        assert_eq!(p.answered(t0, 3, 1), Answered::Unknown);
        assert_eq!(p.answered(t0, 3, 2), Answered::Unknown);
        assert_eq!(p.answered(t0, 1, 1), Answered::Unknown);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn an_unanswered_sync_is_dropped_after_the_wait() {
        let t0 = Instant::now();
        let mut p = Punches::default();
        p.start(t0, 1u32, 2u32);
        assert_eq!(p.answered(t0 + MS, 1, 2), Answered::Waiting);
        assert_eq!(p.answered(t0 + SYNC_WAIT, 2, 1), Answered::Unknown);
        assert!(p.is_empty());
        p.start(t0, 1, 2);
        p.forget(2);
        assert!(p.is_empty());
    }
}
