//! TCP simultaneous open (hole punching), the client's half: when the server
//! says `EVENT PUNCH <user> <ip>:<port> <in-ms> <rtt-ms>`, dial that address
//! from our own control connection's local port at the given moment, and
//! retry a few times within a bounded window. Both sides do the same, so the
//! SYNs cross: each NAT has already mapped its side's outgoing SYN when the
//! other's arrives, and lets it in as the answer (endpoint-independent
//! mapping keeps the port the server saw).
//!
//! Which side speaks first on the resulting connection is fixed by role, not
//! by who "connected" (both did): the requester of the introduction sends the
//! encrypted hello, as on a forward link; the acceptor answers it, as on an
//! incoming one. So the Noise hello authenticates a punched link exactly like
//! any other: only the two introduced users, in their roles.
//!
//! Invariants:
//! - Bounded: at most [`MAX_ATTEMPTS`] connects per punch, each given at most
//!   [`ATTEMPT_TIMEOUT`] to connect, none started after [`WINDOW`] from the
//!   punch moment. A refused attempt (the other side's SYN had not left yet,
//!   so its host or NAT answered RST) is retried after [`RETRY_GAP`].
//! - At most one attempt per user in flight: the 4-tuple (our control port,
//!   their address) is unique, so a second connect could not coexist.
//! - Only users we hold an introduction with (a role recorded from
//!   `EVENT PEER` or `OK ACCEPT`) are punched; a link up with the user ends
//!   the punch at once.
//!
//! Pure: time comes in as an argument; the driver opens the sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::links::LinkId;

/// One connect attempt's bound. The kernel retransmits a lost SYN only after
/// 1 s; a fresh attempt after 1.5 s is a retransmission we control.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause after a refused attempt before the next.
pub const RETRY_GAP: Duration = Duration::from_millis(100);
/// No attempt starts later than this after the punch moment.
pub const WINDOW: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: u32 = 6;

/// Our role in the introduction: it decides who speaks first on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We asked (`CONNECT`): we send the encrypted hello.
    Requester,
    /// We accepted: we answer the hello.
    Acceptor,
}

#[derive(Debug)]
struct Punch {
    addr: SocketAddr,
    /// The next attempt's moment, when none is in flight.
    next: Option<Instant>,
    /// The attempt in flight, and when it is given up (`None` once bytes came
    /// on it: it connected, and the link's own hello deadline bounds it).
    current: Option<(LinkId, Option<Instant>)>,
    attempts: u32,
    window_end: Instant,
}

#[derive(Debug, Default)]
pub struct Punches {
    roles: BTreeMap<String, Role>,
    active: BTreeMap<String, Punch>,
}

impl Punches {
    /// An introduction with `user` began, in `role`.
    pub fn introduced(&mut self, user: &str, role: Role) {
        self.roles.insert(user.to_owned(), role);
    }

    pub fn role(&self, user: &str) -> Option<Role> {
        self.roles.get(user).copied()
    }

    /// `EVENT PUNCH`: dial `addr` at `at`. False (ignored) without an
    /// introduction with `user`.
    pub fn schedule(&mut self, user: &str, addr: SocketAddr, at: Instant) -> bool {
        if !self.roles.contains_key(user) {
            return false;
        }
        self.active.insert(
            user.to_owned(),
            Punch {
                addr,
                next: Some(at),
                current: None,
                attempts: 0,
                window_end: at + WINDOW,
            },
        );
        true
    }

    /// Attempts to start now: (user, address, role).
    pub fn due(&mut self, now: Instant) -> Vec<(String, SocketAddr, Role)> {
        let mut out = Vec::new();
        for (user, p) in &mut self.active {
            if p.current.is_none() && p.next.is_some_and(|at| at <= now) {
                p.next = None;
                p.attempts += 1;
                let role = self.roles.get(user).copied().unwrap_or(Role::Acceptor);
                out.push((user.clone(), p.addr, role));
            }
        }
        out
    }

    /// The driver opened the attempt for `user` as `link`.
    pub fn started(&mut self, user: &str, link: LinkId, now: Instant) {
        if let Some(p) = self.active.get_mut(user) {
            p.current = Some((link, Some(now + ATTEMPT_TIMEOUT)));
        }
    }

    /// The user whose punch attempt `link` is.
    pub fn owner(&self, link: LinkId) -> Option<&str> {
        self.active
            .iter()
            .find(|(_, p)| p.current.is_some_and(|(l, _)| l == link))
            .map(|(u, _)| u.as_str())
    }

    /// Bytes came on `link`: it connected; no attempt deadline any more.
    pub fn connected(&mut self, link: LinkId) {
        for p in self.active.values_mut() {
            if let Some((l, deadline)) = &mut p.current {
                if *l == link {
                    *deadline = None;
                }
            }
        }
    }

    /// The attempt for `user` ended without a link (refused, timed out,
    /// closed). Returns true if another attempt is scheduled; false means the
    /// punch is over (and forgotten).
    pub fn failed(&mut self, user: &str, now: Instant) -> bool {
        let Some(p) = self.active.get_mut(user) else {
            return false;
        };
        p.current = None;
        let at = now + RETRY_GAP;
        if p.attempts < MAX_ATTEMPTS && at < p.window_end {
            p.next = Some(at);
            return true;
        }
        self.active.remove(user);
        false
    }

    /// Attempts past their deadline: the caller closes each link and then
    /// reports [`Punches::failed`] for its user.
    pub fn timed_out(&self, now: Instant) -> Vec<(String, LinkId)> {
        self.active
            .iter()
            .filter_map(|(u, p)| match p.current {
                Some((l, Some(deadline))) if deadline <= now => Some((u.clone(), l)),
                _ => None,
            })
            .collect()
    }

    /// A punch with `user` is scheduled or in flight.
    pub fn in_progress(&self, user: &str) -> bool {
        self.active.contains_key(user)
    }

    /// The introduction with `user` is over (linked, or given up): forget it.
    /// Returns the attempt in flight, for the caller to close unless it is
    /// the link that came up.
    pub fn end(&mut self, user: &str) -> Option<LinkId> {
        self.roles.remove(user);
        self.active
            .remove(user)
            .and_then(|p| p.current.map(|(l, _)| l))
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.active
            .values()
            .filter_map(|p| match p.current {
                Some((_, deadline)) => deadline,
                None => p.next,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.99.0.3:40000".parse().unwrap()
    }

    const MS: Duration = Duration::from_millis(1);

    /// A punch to bob, introduced in `role` and scheduled to start at the
    /// returned instant.
    fn scheduled_for_bob(role: Role) -> (Instant, Punches) {
        let t0 = Instant::now();
        let mut p = Punches::default();
        p.introduced("bob", role);
        assert!(p.schedule("bob", addr(), t0));
        (t0, p)
    }

    #[test]
    fn a_punch_needs_an_introduction() {
        let t0 = Instant::now();
        let mut p = Punches::default();
        assert!(!p.schedule("bob", addr(), t0));
        assert!(p.due(t0).is_empty());
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn the_first_attempt_starts_at_the_moment_with_the_role() {
        let t0 = Instant::now();
        let mut p = Punches::default();
        p.introduced("bob", Role::Requester);
        assert!(p.schedule("bob", addr(), t0 + 20 * MS));
        assert_eq!(p.next_deadline(), Some(t0 + 20 * MS));
        assert!(p.due(t0 + 19 * MS).is_empty());
        assert_eq!(
            p.due(t0 + 20 * MS),
            vec![("bob".to_owned(), addr(), Role::Requester)]
        );
        // In flight: nothing more is due until it is reported.
        assert!(p.due(t0 + 40 * MS).is_empty());
        p.started("bob", 7, t0 + 20 * MS);
        assert_eq!(p.owner(7), Some("bob"));
        assert_eq!(p.next_deadline(), Some(t0 + 20 * MS + ATTEMPT_TIMEOUT));
    }

    #[test]
    fn refused_attempts_are_retried_within_the_bounds() {
        let (t0, mut p) = scheduled_for_bob(Role::Acceptor);
        let mut now = t0;
        let mut attempts = 0;
        loop {
            let due = p.due(now);
            assert_eq!(due.len(), 1, "{attempts}");
            attempts += 1;
            p.started("bob", attempts, now);
            if !p.failed("bob", now + MS) {
                break;
            }
            now += MS + RETRY_GAP;
        }
        assert_eq!(attempts, MAX_ATTEMPTS as u64);
        assert!(!p.in_progress("bob"));
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn a_silent_attempt_times_out_and_none_starts_after_the_window() {
        let (t0, mut p) = scheduled_for_bob(Role::Acceptor);
        let mut now = t0;
        let mut attempts = 0;
        while p.in_progress("bob") {
            assert_eq!(p.due(now).len(), 1);
            attempts += 1;
            p.started("bob", attempts, now);
            now += ATTEMPT_TIMEOUT;
            assert_eq!(p.timed_out(now), vec![("bob".to_owned(), attempts)]);
            p.failed("bob", now);
            now += RETRY_GAP;
        }
        assert!(
            now - t0 <= WINDOW + ATTEMPT_TIMEOUT + RETRY_GAP,
            "{:?}",
            now - t0
        );
        assert!(
            attempts >= 2 && attempts < MAX_ATTEMPTS as u64,
            "{attempts}"
        );
    }

    #[test]
    fn a_connected_attempt_has_no_attempt_deadline_and_ending_returns_it() {
        let (t0, mut p) = scheduled_for_bob(Role::Requester);
        p.due(t0);
        p.started("bob", 3, t0);
        p.connected(3);
        assert!(p.timed_out(t0 + WINDOW * 2).is_empty());
        assert_eq!(p.end("bob"), Some(3));
        assert_eq!(p.role("bob"), None);
        assert!(!p.in_progress("bob"));
    }
}
