//! Reverse connections (passive DCC): when the acceptor of an introduction
//! cannot be dialled (behind NAT, no forwarded port) but the requester can,
//! the acceptor dials the requester instead.
//!
//! How it goes (`docs/PROTOCOL.md`, "Reverse connections"):
//! - The requester names its listen port in `CONNECT <user> <port>` and, on
//!   `EVENT PEER`, keeps the token as one it will take an incoming hello with.
//! - The acceptor gets `EVENT DIALBACK <requester> <ip>:<port>` after
//!   `OK ACCEPT`. It dials back, with the same token, as the link's
//!   initiator, if no link with the requester is up or being confirmed when
//!   the requester's own dial has had its chance: timed from the round trips
//!   the server measured (`EVENT PUNCH … <in-ms> <rtt-ms>`: the punch moment,
//!   two path round trips and [`DIALBACK_GRACE`]), or after
//!   [`DIALBACK_DELAY`] when no `EVENT PUNCH` comes.
//! - Every introduction has a window ([`LINK_WINDOW`]): when it ends without
//!   a link, whatever is still trying is closed and the user told once.
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

/// How long the acceptor gives the requester's own dial before dialling back
/// when the server timed nothing (no `EVENT PUNCH`). A working dial has sent
/// its hello well within it.
pub const DIALBACK_DELAY: Duration = Duration::from_millis(1000);
/// Added to the RTT-timed dial-back moment: covers a punch attempt refused
/// once and retried (`punch::RETRY_GAP`), so a punch that is about to work
/// is not raced by a dial-back.
pub const DIALBACK_GRACE: Duration = Duration::from_millis(250);
/// How long an introduction may take to produce a link, from `EVENT PEER`
/// (requester) or `EVENT DIALBACK` (acceptor): past it, every attempt still
/// running is closed and the no-path line said.
pub const LINK_WINDOW: Duration = Duration::from_secs(8);
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
    /// Both sides: when the introduction with a user must have linked.
    windows: BTreeMap<String, Instant>,
}

impl Reverse {
    /// `EVENT DIALBACK user addr` arrived at `now`.
    pub fn schedule(&mut self, user: &str, addr: SocketAddr, now: Instant) {
        self.scheduled
            .insert(user.to_owned(), (addr, now + DIALBACK_DELAY));
    }

    /// The dial-back to `user`, if scheduled, is due at `at` instead (the
    /// RTT-timed moment).
    pub fn retime(&mut self, user: &str, at: Instant) {
        if let Some((_, due)) = self.scheduled.get_mut(user) {
            *due = at;
        }
    }

    /// An introduction with `user` began at `now`: its window opens (once).
    pub fn introduced(&mut self, user: &str, now: Instant) {
        self.windows
            .entry(user.to_owned())
            .or_insert(now + LINK_WINDOW);
    }

    /// A dial-back to `user` is scheduled, in flight, or awaited.
    pub fn is_pending(&self, user: &str) -> bool {
        self.scheduled.contains_key(user)
            || self.dialling.contains_key(user)
            || self.awaiting.contains_key(user)
    }

    /// Introductions whose window is over (each reported once).
    pub fn windows_over(&mut self, now: Instant) -> Vec<String> {
        let over: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &over {
            self.windows.remove(u);
        }
        over
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
        self.windows.remove(user);
    }

    /// Our dial-back to `user` ended (failed); it is no longer in progress.
    pub fn dial_ended(&mut self, user: &str) {
        self.dialling.remove(user);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.scheduled.values().map(|&(_, at)| at);
        s.chain(self.awaiting.values().copied())
            .chain(self.windows.values().copied())
            .min()
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
    fn a_dialback_is_retimed_and_a_window_ends_once_unless_linked() {
        let t0 = Instant::now();
        let mut r = Reverse::default();
        let a: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        r.schedule("alice", a, t0);
        r.retime("alice", t0 + Duration::from_millis(300));
        r.retime("nobody", t0);
        assert!(r.is_pending("alice") && !r.is_pending("nobody"));
        assert!(r.due_dials(t0 + Duration::from_millis(299)).is_empty());
        assert_eq!(r.due_dials(t0 + Duration::from_millis(300)).len(), 1);
        r.introduced("alice", t0);
        r.introduced("alice", t0 + LINK_WINDOW); // once: the first counts
        r.introduced("bob", t0);
        r.linked("bob");
        assert!(r.windows_over(t0 + LINK_WINDOW / 2).is_empty());
        assert_eq!(r.windows_over(t0 + LINK_WINDOW), vec!["alice".to_owned()]);
        assert!(r.windows_over(t0 + LINK_WINDOW * 2).is_empty());
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
