//! Reverse connections (passive DCC): when the acceptor of an introduction
//! cannot be dialled (behind NAT, no forwarded port) but the requester can,
//! the acceptor dials the requester instead.
//!
//! How it goes (`docs/PROTOCOL.md`, "Reverse connections"):
//! - The requester names its listen port in `CONNECT <user> <port>` and, on
//!   `EVENT PEER`, keeps the token as one it will take an incoming hello with.
//! - The acceptor gets `EVENT DIALBACK <requester> <ip>:<port>` after
//!   `OK ACCEPT`. It waits [`DIALBACK_DELAY`] for the requester's own dial;
//!   if no link with the requester is up or being confirmed by then, it dials
//!   back, with the same token, as the link's initiator.
//!
//! Invariants:
//! - The encrypted hello binds the dialler's and the listener's names and
//!   roles (`link_noise`): a dial-back authenticates exactly like a forward
//!   link, only from the introduced user, and never as anyone else.
//! - At most one link per introduction: once a link with a user is up, the
//!   engine revokes its token for that user and closes the other handshakes
//!   with them; a scheduled dial-back for a user who is already linked is
//!   dropped.
//! - When neither direction works, each side says so once, in one line that
//!   names the fix ([`no_path_line`]); both waits are bounded.
//!
//! Pure: time comes in as an argument.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the acceptor gives the requester's own dial before dialling back.
/// Short: a refused or unroutable dial fails within a round trip, and a
/// working one has sent its hello by then.
pub const DIALBACK_DELAY: Duration = Duration::from_millis(1000);
/// How long the requester, whose dial failed, waits for the dial-back before
/// saying there is no direct path (the delay plus a handshake's worth).
pub const DIALBACK_WAIT: Duration = Duration::from_secs(8);

/// The line both users get when no direct path could be made.
pub fn no_path_line(user: &str) -> String {
    format!(
        "no direct path to {user}: neither of you accepts incoming connections \
         (behind NAT or a firewall); forwarding your --listen-port on your router would let \
         {user} reach you"
    )
}

#[derive(Debug, Default)]
pub struct Reverse {
    /// Acceptor side: dial-backs to make, by user: (where, when).
    scheduled: BTreeMap<String, (SocketAddr, Instant)>,
    /// Acceptor side: users we are dialling back now (a failure there means
    /// no direct path).
    dialling: BTreeMap<String, ()>,
    /// Requester side: our dial failed; the dial-back is awaited until then.
    awaiting: BTreeMap<String, Instant>,
}

impl Reverse {
    /// `EVENT DIALBACK user addr` arrived at `now`.
    pub fn schedule(&mut self, user: &str, addr: SocketAddr, now: Instant) {
        self.scheduled
            .insert(user.to_owned(), (addr, now + DIALBACK_DELAY));
    }

    /// Our dial to `user` failed; we are still dialled back until the wait ends.
    pub fn await_dialback(&mut self, user: &str, now: Instant) {
        self.awaiting.insert(user.to_owned(), now + DIALBACK_WAIT);
    }

    /// True if `user` is being dialled back by us.
    pub fn is_dialling(&self, user: &str) -> bool {
        self.dialling.contains_key(user)
    }

    /// A link with `user` is up: nothing more to do for them.
    pub fn linked(&mut self, user: &str) {
        self.scheduled.remove(user);
        self.dialling.remove(user);
        self.awaiting.remove(user);
    }

    /// Our dial-back to `user` ended (failed); it is no longer in progress.
    pub fn dial_ended(&mut self, user: &str) {
        self.dialling.remove(user);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.scheduled.values().map(|&(_, at)| at);
        s.chain(self.awaiting.values().copied()).min()
    }

    /// Dial-backs due at `now` (now marked as in progress).
    pub fn due_dials(&mut self, now: Instant) -> Vec<(String, SocketAddr)> {
        let due: Vec<String> = self
            .scheduled
            .iter()
            .filter(|(_, &(_, at))| at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        due.into_iter()
            .filter_map(|u| {
                let (addr, _) = self.scheduled.remove(&u)?;
                self.dialling.insert(u.clone(), ());
                Some((u, addr))
            })
            .collect()
    }

    /// Users whose dial-back never came (the wait is over).
    pub fn gave_up(&mut self, now: Instant) -> Vec<String> {
        let over: Vec<String> = self
            .awaiting
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &over {
            self.awaiting.remove(u);
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialback_is_due_after_the_delay_once() {
        let t0 = Instant::now();
        let mut r = Reverse::default();
        let a: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        r.schedule("alice", a, t0);
        assert_eq!(r.next_deadline(), Some(t0 + DIALBACK_DELAY));
        assert!(r.due_dials(t0 + DIALBACK_DELAY / 2).is_empty());
        assert_eq!(
            r.due_dials(t0 + DIALBACK_DELAY),
            vec![("alice".to_owned(), a)]
        );
        assert!(r.is_dialling("alice"));
        assert!(r.due_dials(t0 + DIALBACK_DELAY * 2).is_empty());
        r.dial_ended("alice");
        assert!(!r.is_dialling("alice"));
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_link_cancels_the_dialback_and_the_wait() {
        let t0 = Instant::now();
        let mut r = Reverse::default();
        r.schedule("alice", "10.0.0.1:7000".parse().unwrap(), t0);
        r.await_dialback("bob", t0);
        r.linked("alice");
        r.linked("bob");
        assert_eq!(r.next_deadline(), None);
        assert!(r.due_dials(t0 + DIALBACK_WAIT).is_empty());
        assert!(r.gave_up(t0 + DIALBACK_WAIT).is_empty());
    }

    #[test]
    fn the_wait_for_a_dialback_ends_once() {
        let t0 = Instant::now();
        let mut r = Reverse::default();
        r.await_dialback("bob", t0);
        assert!(r.gave_up(t0 + DIALBACK_WAIT / 2).is_empty());
        assert_eq!(r.gave_up(t0 + DIALBACK_WAIT), vec!["bob".to_owned()]);
        assert!(r.gave_up(t0 + DIALBACK_WAIT * 2).is_empty());
    }
}
