//! The users whose presence this client follows (`WATCH` on the server), and
//! what it last heard about each, so a line is printed only when something
//! changed — not again when a reconnect re-sends the list. Pure.
//!
//! Invariants:
//! - At most [`WATCH_CAP`] users (the server's per-session cap); names are
//!   kept lower-cased, as the server compares them.
//! - The whole list is what the server should know after every (re)login:
//!   [`WatchList::resend`] gives it in `WATCH` lines that fit the line cap.

use std::collections::BTreeMap;

use crate::proto::{Command, WatchChange};

/// The server's per-session cap (documented in PROTOCOL.md).
pub const WATCH_CAP: usize = 100;
/// Names per `WATCH` line: 25 × 33 bytes stays well under 1024.
const PER_LINE: usize = 25;

#[derive(Debug, Default)]
pub struct WatchList {
    /// Lower-cased name → last known presence (`None`: not heard yet).
    users: BTreeMap<String, Option<bool>>,
}

impl WatchList {
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(&user.to_ascii_lowercase())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a user; false when already there or the list is full.
    pub fn add(&mut self, user: &str) -> bool {
        if self.users.len() >= WATCH_CAP || self.contains(user) {
            return false;
        }
        self.users.insert(user.to_ascii_lowercase(), None);
        true
    }

    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(&user.to_ascii_lowercase()).is_some()
    }

    /// Records news about `user`; true if it is worth a line (watched and changed).
    pub fn update(&mut self, user: &str, online: bool) -> bool {
        match self.users.get_mut(&user.to_ascii_lowercase()) {
            Some(state) if *state != Some(online) => {
                *state = Some(online);
                true
            }
            _ => false,
        }
    }

    /// After a (re)login: the server knows nothing of our list, and what we
    /// knew of presence may be stale — an `ONLINE` will come for who is on.
    pub fn resend(&mut self) -> Vec<Command> {
        for state in self.users.values_mut() {
            // Online users are re-announced; keep "offline" so a user who
            // is still offline makes no line, and one who is on makes one.
            if *state == Some(true) {
                *state = None;
            }
        }
        let names: Vec<&String> = self.users.keys().collect();
        names
            .chunks(PER_LINE)
            .map(|chunk| Command::Watch {
                changes: chunk
                    .iter()
                    .map(|u| WatchChange {
                        add: true,
                        user: (*u).clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_only_on_change_and_case_insensitive() {
        let mut w = WatchList::default();
        assert!(w.add("Bob"));
        assert!(!w.add("bob"));
        assert!(w.update("BOB", true));
        assert!(!w.update("bob", true));
        assert!(w.update("bob", false));
        assert!(!w.update("carol", true), "not watched");
        assert!(w.remove("bOb"));
        assert!(w.is_empty());
    }

    #[test]
    fn capped_and_resent_in_lines_that_fit() {
        let mut w = WatchList::default();
        for i in 0..WATCH_CAP + 5 {
            w.add(&format!("user{i:03}"));
        }
        assert_eq!(w.len(), WATCH_CAP);
        let cmds = w.resend();
        assert_eq!(cmds.len(), WATCH_CAP.div_ceil(PER_LINE));
        for c in &cmds {
            assert!(c.to_string().len() < 1000, "{c}");
        }
        let total: usize = cmds
            .iter()
            .map(|c| match c {
                Command::Watch { changes } => changes.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, WATCH_CAP);
    }

    #[test]
    fn resend_reannounces_online_but_not_offline() {
        let mut w = WatchList::default();
        w.add("bob");
        w.add("carol");
        w.update("bob", true);
        w.update("carol", false);
        w.resend();
        assert!(
            w.update("bob", true),
            "bob's ONLINE after relogin is news again"
        );
        assert!(!w.update("carol", false));
    }
}
