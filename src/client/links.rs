//! Bookkeeping for direct peer links: which connection is in which handshake
//! state, which link belongs to which user, and the one-shot tokens this
//! client issued with `ACCEPT`. Pure: time comes in as an argument.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::proto::link_noise::LinkWire;
use crate::proto::names::Token;

/// A link's id, given by the driver from a counter that never repeats (not
/// the slab key, which is reused): an event or a parked hello for a closed
/// link can never be applied to a newer connection.
pub type LinkId = u64;

/// How long a token from `OK ACCEPT` stays good (contract: 60 s).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long either side of a new connection may take to finish the handshake;
/// keeps silent or half-open connections from piling up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Protocol errors tolerated on one link before it is closed (flood guard).
pub const MAX_BAD_LINES: u32 = 32;
/// Incoming connections that have not finished their hello, at most, at
/// once; a connection beyond this is closed at once (each one costs a socket
/// and a little memory for up to [`HANDSHAKE_TIMEOUT`]).
pub const MAX_UNFINISHED_INCOMING: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Someone connected to our listener; waiting for `PEER <user> <token>`
    /// (plaintext) or an encrypted hello.
    AwaitHello,
    /// Encrypted, incoming: the hello authenticated with the token issued for
    /// `user`, and we answered. A recorded hello would authenticate too, so the
    /// token is used up only when `user` proves it is live by sending its
    /// first encrypted line (`PEER <user>`).
    AwaitConfirm { user: String, token: Token },
    /// We dialed `user` and sent our `PEER` line; waiting for `OK PEER`.
    AwaitWelcome { user: String },
    /// Handshake done: `MSG` flows both ways.
    Up { user: String },
}

#[derive(Debug)]
pub struct Link {
    pub addr: SocketAddr,
    pub state: LinkState,
    /// The link's bytes: plaintext lines or Noise frames.
    pub wire: LinkWire,
    /// Handshake deadline; `None` once up.
    pub deadline: Option<Instant>,
    pub bad_lines: u32,
}

impl Link {
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            LinkState::AwaitHello => None,
            LinkState::AwaitConfirm { user, .. }
            | LinkState::AwaitWelcome { user }
            | LinkState::Up { user } => Some(user),
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, LinkState::Up { .. })
    }
}

/// Why an incoming `PEER <user> <token>` was refused. All of them leave an
/// issued token usable (except an expired one, which is dead anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token is outstanding for that user (never accepted, or already used).
    NotIssued,
    WrongToken,
    Expired,
}

#[derive(Debug)]
struct Issued {
    /// A p2p token is a [`Token`]: no state dump or log line can show it.
    token: Token,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct Links {
    links: BTreeMap<LinkId, Link>,
    issued: HashMap<String, Issued>,
}

impl Links {
    /// Records the token from `OK ACCEPT <user> <token>`; a newer one replaces an older.
    pub fn issue(&mut self, user: &str, token: Token, now: Instant) {
        self.issued
            .insert(user.to_owned(), Issued { token, at: now });
    }

    /// Checks an incoming handshake. Success uses the token up; a failure does
    /// not, so a stray or hostile attempt cannot lock the real peer out.
    pub fn check_token(&mut self, user: &str, token: &Token, now: Instant) -> Result<(), Refusal> {
        let issued = self.issued.get(user).ok_or(Refusal::NotIssued)?;
        if now.duration_since(issued.at) >= TOKEN_TTL {
            self.issued.remove(user);
            return Err(Refusal::Expired);
        }
        // Constant time: a guesser learns nothing from how long a refusal took.
        if !bool::from(issued.token.mac_input().ct_eq(token.mac_input())) {
            return Err(Refusal::WrongToken);
        }
        self.issued.remove(user);
        Ok(())
    }

    /// Forgets the token for `user` (a link with them is up another way, so
    /// a second one must not form).
    pub fn revoke(&mut self, user: &str) {
        self.issued.remove(user);
    }

    /// The token for `user`, if still good (to dial them back with it).
    pub fn token_for(&self, user: &str, now: Instant) -> Option<Token> {
        self.issued
            .get(user)
            .filter(|i| now.duration_since(i.at) < TOKEN_TTL)
            .map(|i| i.token.clone())
    }

    /// Links with `user` still in their handshake, other than `except`.
    pub fn handshaking_with(&self, user: &str, except: LinkId) -> Vec<LinkId> {
        self.links
            .iter()
            .filter(|(&id, l)| id != except && !l.is_up() && l.user() == Some(user))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Every `(user, token)` still good, for trying an encrypted hello against.
    pub fn candidates(&self, now: Instant) -> Vec<(String, Token)> {
        let mut v: Vec<(String, Token)> = self
            .issued
            .iter()
            .filter(|(_, i)| now.duration_since(i.at) < TOKEN_TTL)
            .map(|(u, i)| (u.clone(), i.token.clone()))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Users we accepted whose token is still good.
    pub fn awaiting(&self, now: Instant) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .issued
            .iter()
            .filter(|(_, i)| now.duration_since(i.at) < TOKEN_TTL)
            .map(|(u, _)| u.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    pub fn add_incoming(&mut self, id: LinkId, addr: SocketAddr, now: Instant) {
        let wire = LinkWire::incoming();
        self.add_handshaking(id, addr, LinkState::AwaitHello, wire, now);
    }

    pub fn add_dialed(
        &mut self,
        id: LinkId,
        user: &str,
        addr: SocketAddr,
        wire: LinkWire,
        now: Instant,
    ) {
        let state = LinkState::AwaitWelcome {
            user: user.to_owned(),
        };
        self.add_handshaking(id, addr, state, wire, now);
    }

    /// A new link in `state`, which has `HANDSHAKE_TIMEOUT` from `now` to come up.
    fn add_handshaking(
        &mut self,
        id: LinkId,
        addr: SocketAddr,
        state: LinkState,
        wire: LinkWire,
        now: Instant,
    ) {
        let link = Link {
            addr,
            state,
            wire,
            deadline: Some(now + HANDSHAKE_TIMEOUT),
            bad_lines: 0,
        };
        self.links.insert(id, link);
    }

    /// Marks a link up for `user`. Returns an older link with the same user,
    /// which the caller closes: the newest handshake wins.
    pub fn set_up(&mut self, id: LinkId, user: &str) -> Option<LinkId> {
        let older = self.find_up(user).filter(|&o| o != id);
        if let Some(link) = self.links.get_mut(&id) {
            link.state = LinkState::Up {
                user: user.to_owned(),
            };
            link.deadline = None;
        }
        older
    }

    pub fn get(&self, id: LinkId) -> Option<&Link> {
        self.links.get(&id)
    }

    pub fn get_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        self.links.get_mut(&id)
    }

    pub fn remove(&mut self, id: LinkId) -> Option<Link> {
        self.links.remove(&id)
    }

    pub fn find_up(&self, user: &str) -> Option<LinkId> {
        self.links
            .iter()
            .find(|(_, l)| matches!(&l.state, LinkState::Up { user: u } if u == user))
            .map(|(&id, _)| id)
    }

    /// Links that are up, by id order.
    pub fn up(&self) -> impl Iterator<Item = (LinkId, &Link)> {
        self.links
            .iter()
            .filter(|(_, l)| l.is_up())
            .map(|(&id, l)| (id, l))
    }

    /// The users of the links that are up, by id order.
    pub fn up_users(&self) -> Vec<String> {
        self.up()
            .filter_map(|(_, l)| l.user().map(str::to_owned))
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = (LinkId, &Link)> {
        self.links.iter().map(|(&id, l)| (id, l))
    }

    pub fn ids(&self) -> Vec<LinkId> {
        self.links.keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Incoming connections still in their handshake (for the cap).
    pub fn unfinished_incoming(&self) -> usize {
        self.links
            .values()
            .filter(|l| {
                matches!(
                    l.state,
                    LinkState::AwaitHello | LinkState::AwaitConfirm { .. }
                )
            })
            .count()
    }

    /// Links we dialed that have not been answered yet.
    pub fn dialing(&self) -> usize {
        self.links
            .values()
            .filter(|l| matches!(l.state, LinkState::AwaitWelcome { .. }))
            .count()
    }

    /// Earliest handshake deadline or token expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        let handshakes = self.links.values().filter_map(|l| l.deadline);
        let tokens = self.issued.values().map(|i| i.at + TOKEN_TTL);
        handshakes.chain(tokens).min()
    }

    /// Forgets expired tokens; returns links whose handshake ran out of time.
    pub fn expire(&mut self, now: Instant) -> Vec<LinkId> {
        self.issued
            .retain(|_, i| now.duration_since(i.at) < TOKEN_TTL);
        self.links
            .iter()
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "ffffffffffffffffffffffffffffffff";

    fn tok(s: &str) -> Token {
        Token::parse(s).expect("valid token")
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn token_is_good_once_from_its_user_within_ttl() {
        let t0 = Instant::now();
        let mut l = Links::default();
        l.issue("alice", tok(TOKEN), t0);
        assert_eq!(
            l.check_token("alice", &tok(OTHER), t0),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            l.check_token("mallory", &tok(TOKEN), t0),
            Err(Refusal::NotIssued)
        );
        // Failures above did not use the token up; upper-case hex is the same token.
        assert_eq!(
            l.check_token(
                "alice",
                &tok(&TOKEN.to_uppercase()),
                t0 + Duration::from_secs(59)
            ),
            Ok(())
        );
        assert_eq!(
            l.check_token("alice", &tok(TOKEN), t0),
            Err(Refusal::NotIssued)
        );
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let t0 = Instant::now();
        let mut l = Links::default();
        l.issue("alice", tok(TOKEN), t0);
        let (user, token) = l.candidates(t0).remove(0);
        assert_eq!(token.expose().to_string(), TOKEN);
        let state = LinkState::AwaitConfirm { user, token };
        let dial = crate::client::engine::Output::Dial {
            user: "alice".into(),
            addr: addr(),
            token: tok(TOKEN),
        };
        for shown in [format!("{l:?}"), format!("{state:?}"), format!("{dial:?}")] {
            assert!(!shown.contains(TOKEN), "{shown}");
        }
    }

    #[test]
    fn token_expires_after_60_seconds() {
        let t0 = Instant::now();
        let mut l = Links::default();
        l.issue("alice", tok(TOKEN), t0);
        assert_eq!(l.next_deadline(), Some(t0 + TOKEN_TTL));
        assert_eq!(
            l.check_token("alice", &tok(TOKEN), t0 + TOKEN_TTL),
            Err(Refusal::Expired)
        );
        assert_eq!(
            l.check_token("alice", &tok(TOKEN), t0),
            Err(Refusal::NotIssued)
        );
    }

    #[test]
    fn handshakes_time_out_and_newest_link_wins() {
        let t0 = Instant::now();
        let mut l = Links::default();
        l.add_incoming(1, addr(), t0);
        let (wire, _) = LinkWire::dial(TOKEN, "alice", "bob");
        l.add_dialed(2, "bob", addr(), wire, t0);
        assert_eq!(l.dialing(), 1);
        assert_eq!(l.set_up(2, "bob"), None);
        assert_eq!(l.expire(t0 + HANDSHAKE_TIMEOUT), vec![1]);
        l.add_incoming(3, addr(), t0);
        assert_eq!(l.set_up(3, "bob"), Some(2));
        l.remove(2);
        assert_eq!(l.find_up("bob"), Some(3));
    }
}
