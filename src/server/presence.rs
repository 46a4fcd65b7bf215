//! Presence: `WATCH <+user|-user> …` and the `EVENT ONLINE` / `EVENT OFFLINE`
//! lines it earns, modelled on IRCv3 `MONITOR`.
//!
//! Invariants:
//! - A session watches at most [`WATCH_LIMIT`] names. A `WATCH` that would
//!   pass the cap changes nothing and is answered `ERR watch-limit`; so the
//!   whole table holds at most `WATCH_LIMIT` × sessions entries, and presence
//!   never costs O(N²) memory at N users.
//! - `watching` and `watchers` mirror each other exactly: `a` is in
//!   `watchers[n]` iff `n` is in `watching[a]`.
//! - A login or a logout costs O(watchers of that name), found by one hash
//!   lookup — never a scan of all sessions.
//! - Watches belong to a session and end with it (QUIT, close, replaced,
//!   expired); a client re-sends its list after logging in again.
//! - Names are compared lower-cased, as accounts are; events carry the
//!   account's own spelling. A name need not exist (as in MONITOR): watching
//!   someone who signs up later works, and reveals nothing about accounts.

use std::collections::HashMap;
use std::time::Instant;

use super::accounts::UserIdx;
use super::engine::{ConnId, Engine};
use crate::proto::{ErrorCode, Event, OkReply, ServerLine, WatchChange};

/// Most names one session may watch (IRCv3 MONITOR servers commonly allow 100).
pub const WATCH_LIMIT: usize = 100;

/// Who watches whom.
#[derive(Debug, Default)]
pub(super) struct Presence {
    /// Watcher → lower-cased names it watches (at most [`WATCH_LIMIT`]).
    watching: HashMap<UserIdx, Vec<String>>,
    /// Lower-cased name → sessions watching it.
    watchers: HashMap<String, Vec<UserIdx>>,
}

impl Presence {
    /// Applies `changes` for `who`, all or nothing. `Ok(count)` after; `Err`
    /// when the result would exceed the cap.
    pub fn apply(&mut self, who: UserIdx, changes: &[WatchChange]) -> Result<usize, ErrorCode> {
        let current: Vec<String> = self.watching.get(&who).cloned().unwrap_or_default();
        let mut next = current.clone();
        for c in changes {
            let name = c.user.to_ascii_lowercase();
            let at = next.iter().position(|n| *n == name);
            match (c.add, at) {
                (true, None) => next.push(name),
                (false, Some(i)) => {
                    next.swap_remove(i);
                }
                _ => {}
            }
        }
        if next.len() > WATCH_LIMIT {
            return Err(ErrorCode::WatchLimit);
        }
        // Mirror: drop `who` from names it no longer watches, add to new ones.
        for old in &current {
            if !next.contains(old) {
                self.unlink(old, who);
            }
        }
        for name in &next {
            if !current.contains(name) {
                self.watchers.entry(name.clone()).or_default().push(who);
            }
        }
        let count = next.len();
        if next.is_empty() {
            self.watching.remove(&who);
        } else {
            self.watching.insert(who, next);
        }
        Ok(count)
    }

    /// The session of `who` ended: its watches go with it.
    pub fn forget(&mut self, who: UserIdx) {
        for name in self.watching.remove(&who).unwrap_or_default() {
            self.unlink(&name, who);
        }
    }

    /// Sessions watching `name` (any case).
    pub fn watchers_of(&self, name: &str) -> &[UserIdx] {
        self.watchers
            .get(&name.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    fn unlink(&mut self, name: &str, who: UserIdx) {
        if let Some(list) = self.watchers.get_mut(name) {
            list.retain(|&w| w != who);
            if list.is_empty() {
                self.watchers.remove(name);
            }
        }
    }

    #[cfg(test)]
    pub fn entries(&self) -> (usize, usize) {
        (
            self.watching.values().map(Vec::len).sum(),
            self.watchers.values().map(Vec::len).sum(),
        )
    }
}

impl Engine {
    /// `WATCH …` from `me` on `conn`: an `EVENT ONLINE` for each newly watched
    /// user who is online now, then `OK WATCH <count>`.
    pub(super) fn watch(&mut self, conn: ConnId, me: UserIdx, changes: &[WatchChange]) {
        let count = match self.presence.apply(me, changes) {
            Ok(n) => n,
            Err(code) => return self.line(conn, ServerLine::err(code)),
        };
        for c in changes.iter().filter(|c| c.add) {
            let Some(user) = self.accounts.find(&c.user) else {
                continue;
            };
            if let Some(ip) = self.session_ip(user) {
                let user = self.accounts.name(user).to_owned();
                self.line(conn, Event::Online { user, ip });
            }
        }
        self.line(conn, ServerLine::Ok(OkReply::Watch { count }));
    }

    /// `user` has just logged in (a new session, not a renewal).
    pub(super) fn announce_online(&mut self, _now: Instant, user: UserIdx) {
        let Some(ip) = self.session_ip(user) else {
            return;
        };
        let name = self.accounts.name(user).to_owned();
        for w in self.presence.watchers_of(&name).to_vec() {
            if w == user {
                continue;
            }
            if let Some(conn) = self.sessions.conn_of(w) {
                let user = name.clone();
                self.line(conn, Event::Online { user, ip });
            }
        }
    }

    /// `user`'s session has ended: tell its watchers, drop its own watches.
    pub(super) fn announce_offline(&mut self, user: UserIdx) {
        self.presence.forget(user);
        let name = self.accounts.name(user).to_owned();
        for w in self.presence.watchers_of(&name).to_vec() {
            if let Some(conn) = self.sessions.conn_of(w) {
                let user = name.clone();
                self.line(conn, Event::Offline { user });
            }
        }
    }

    fn session_ip(&self, user: UserIdx) -> Option<std::net::IpAddr> {
        let conn = self.sessions.conn_of(user)?;
        Some(self.conns.get(&conn)?.addr.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: UserIdx = UserIdx(1);
    const U2: UserIdx = UserIdx(2);

    fn w(spec: &str) -> Vec<WatchChange> {
        spec.split(' ')
            .map(|f| WatchChange {
                add: f.starts_with('+'),
                user: f[1..].to_owned(),
            })
            .collect()
    }

    #[test]
    fn add_remove_and_mirror() {
        let mut p = Presence::default();
        assert_eq!(p.apply(U1, &w("+Bob +carol +bob")), Ok(2));
        assert_eq!(p.watchers_of("BOB"), &[U1]);
        assert_eq!(p.apply(U2, &w("+bob")), Ok(1));
        assert_eq!(p.watchers_of("bob"), &[U1, U2]);
        assert_eq!(p.apply(U1, &w("-bob -nobody")), Ok(1));
        assert_eq!(p.watchers_of("bob"), &[U2]);
        assert_eq!(p.entries(), (2, 2));
        p.forget(U2);
        assert!(p.watchers_of("bob").is_empty());
        p.forget(U1);
        assert_eq!(p.entries(), (0, 0));
        assert!(p.watchers.is_empty() && p.watching.is_empty());
    }

    #[test]
    fn the_cap_refuses_all_or_nothing() {
        let mut p = Presence::default();
        let many: Vec<WatchChange> = (0..WATCH_LIMIT)
            .map(|i| WatchChange {
                add: true,
                user: format!("u{i}"),
            })
            .collect();
        assert_eq!(p.apply(U1, &many), Ok(WATCH_LIMIT));
        assert_eq!(p.apply(U1, &w("+one -u0 +two")), Err(ErrorCode::WatchLimit));
        assert_eq!(p.entries(), (WATCH_LIMIT, WATCH_LIMIT));
        assert!(p.watchers_of("one").is_empty());
        // Making room first works in the same line.
        assert_eq!(p.apply(U1, &w("-u0 +one")), Ok(WATCH_LIMIT));
        assert_eq!(p.watchers_of("one"), &[U1]);
        assert!(p.watchers_of("u0").is_empty());
    }
}
