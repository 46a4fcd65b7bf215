//! The session table: every logged-in session and every index that finds
//! one, owned by one type so they change together.
//!
//! A session is found by its user (the account index), by its session token
//! (plaintext datagrams), by its sealed session id (sealed datagrams), by its
//! control connection, and in `LIST` order; pending introductions
//! (`CONNECT` → `ACCEPT`/`DENY`) name two sessions. Before this type those
//! were six maps on the engine, each updated by hand at login, at logout and
//! at sealing; a forgotten one was a token that still routed datagrams to a
//! session that had ended. Here each change is one method: [`insert`],
//! [`seal`] (re-keys the datagram index), [`remove`] (takes the session's
//! introductions with it), [`add_request`] and [`take_request`].
//!
//! Invariants (checked after every step by the property test below):
//! 1. For every session `s` of user `u`: `by_token[s.token] = u`,
//!    `by_conn[s.conn] = u` and `list_order[s.serial] = u`; those three
//!    indexes hold nothing else (each has exactly one entry per session).
//!    So a token, a connection and a `LIST` line name at most one session,
//!    and none names a session that has ended.
//! 2. `by_sid[id] = u` only if `u`'s session is sealed with a channel whose
//!    id is `id`; at most one entry per session. A sealed session may have
//!    none: its id collided with a live session's (64-bit ids from
//!    independent secrets, practically never), and its datagrams then find
//!    no session (its broadcasts arrive on TCP), never another's.
//! 3. Every pending request `(from, to)` names two different users who both
//!    have a session, and at most one request is pending between two users
//!    (either direction). Removing a session removes its requests and hands
//!    them back, so the caller can stop their timers and tell the other side.
//! 4. `LIST` order is login order: the list key is the session's serial,
//!    which the engine hands out increasing, so a newer session lists after
//!    every older one.
//!
//! The identity fields (connection, serial, token, sealed channel) are
//! private: a caller can change a session's state through
//! [`SessionTable::get_mut`] but not what the indexes are keyed by.
//!
//! [`insert`]: SessionTable::insert
//! [`seal`]: SessionTable::seal
//! [`remove`]: SessionTable::remove
//! [`add_request`]: SessionTable::add_request
//! [`take_request`]: SessionTable::take_request

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use super::accounts::UserIdx;
use super::delivery::Inflight;
use super::dense::DenseMap;
use super::engine::ConnId;
use crate::proto::names::Token;
use crate::proto::sealed::{Channel, SessionId};

#[derive(Debug)]
pub(super) struct Session {
    conn: ConnId,
    serial: u64,
    token: Token,
    /// A TLS session's datagram keys: every datagram both ways is sealed.
    sealed: Option<Box<Channel>>,
    pub udp: Option<SocketAddr>,
    pub grace_until: Option<Instant>,
    /// When the next `EVENT REAUTH` is due. A re-LOGIN or a resumption moves
    /// it, and re-login timers are never cancelled (`Engine::reauths`), so an
    /// entry whose deadline is not this one is dead and must not send REAUTH.
    pub reauth_at: Instant,
    /// Just logged in: deliveries wait for `REGISTER` (or `register_wait`).
    pub awaiting_register: bool,
    /// Unacknowledged UDP deliveries: (broadcast id, datagrams sent so far).
    /// A short vector, not a map: it holds at most the broadcasts of the last
    /// retransmit window, is usually empty, and then owns no memory at all.
    pub inflight: Inflight,
}

impl Session {
    /// The control connection the session lives on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Unique per session: names its timers, orders `LIST`.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    pub fn sealed(&self) -> Option<&Channel> {
        self.sealed.as_deref()
    }

    /// The channel, to open and seal datagrams (which never changes its id).
    pub fn sealed_mut(&mut self) -> Option<&mut Channel> {
        self.sealed.as_deref_mut()
    }
}

/// A pending introduction `CONNECT` made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Request {
    /// Names its expiry timer.
    pub serial: u64,
    /// The listen port the requester named in `CONNECT <user> <port>`: the
    /// acceptor gets `EVENT DIALBACK`.
    pub dialback: Option<u16>,
}

/// Why [`SessionTable::insert`] refused: the caller must end the session
/// already there first (the engine closes the older connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Occupied {
    User,
    Conn,
    Token,
    Serial,
}

/// Why [`SessionTable::add_request`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestRefused {
    /// `from` or `to` has no session, or they are the same user.
    NotOnline,
    /// A request between the two is pending already (either direction).
    AlreadyPending,
}

/// What [`SessionTable::seal`] did with the session's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sealing {
    Filed,
    /// Another live session has the id: this one is sealed but unreachable
    /// by datagram (invariant 2).
    Collision,
    NoSession,
}

/// A removed session and the introductions that went with it.
#[derive(Debug)]
pub(super) struct Ended {
    pub session: Session,
    /// `((from, to), request)`, one of `from`/`to` the removed user.
    pub requests: Vec<((UserIdx, UserIdx), Request)>,
}

#[derive(Debug, Default)]
pub(super) struct SessionTable {
    sessions: DenseMap<UserIdx, Session>,
    /// Keyed by server-made random values (tokens, session ids), so the
    /// fast unkeyed Fx hash cannot be steered into collisions; SipHash was
    /// a tenth of the per-ACK cost.
    by_token: HashMap<Token, UserIdx, rustc_hash::FxBuildHasher>,
    /// Sealed sessions by the id their datagrams carry.
    by_sid: HashMap<SessionId, UserIdx, rustc_hash::FxBuildHasher>,
    by_conn: DenseMap<ConnId, UserIdx>,
    /// Serial → user: `LIST` order.
    list_order: BTreeMap<u64, UserIdx>,
    /// Pending introductions, (from, to).
    requests: HashMap<(UserIdx, UserIdx), Request>,
}

impl SessionTable {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Room for `n` sessions in the session slab and the connection index
    /// without reallocating (`dense.rs`: address space, not memory). The
    /// token and sealed-id hash maps are left to grow: a reserved hash table
    /// would touch every page of it within the first few hundred sessions.
    pub fn reserve(&mut self, n: usize) {
        self.sessions.reserve(0, n);
        self.by_conn.reserve(n, n);
    }

    pub fn get(&self, user: &UserIdx) -> Option<&Session> {
        self.sessions.get(user)
    }

    pub fn get_mut(&mut self, user: &UserIdx) -> Option<&mut Session> {
        self.sessions.get_mut(user)
    }

    pub fn contains_key(&self, user: &UserIdx) -> bool {
        self.sessions.contains_key(user)
    }

    /// The connection `user`'s session lives on.
    pub fn conn_of(&self, user: UserIdx) -> Option<ConnId> {
        self.sessions.get(&user).map(|s| s.conn)
    }

    /// Who is logged in on `conn`.
    pub fn user_of(&self, conn: ConnId) -> Option<UserIdx> {
        self.by_conn.get(&conn).copied()
    }

    /// Whose session token this is (plaintext datagrams).
    pub fn by_token(&self, token: &Token) -> Option<UserIdx> {
        self.by_token.get(token).copied()
    }

    /// Whose sealed datagrams carry this id.
    pub fn by_sid(&self, sid: &SessionId) -> Option<UserIdx> {
        self.by_sid.get(sid).copied()
    }

    /// Users online, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = UserIdx> + '_ {
        self.sessions.keys()
    }

    /// Every session, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (UserIdx, &Session)> + '_ {
        self.sessions.keys().map(move |u| (u, &self.sessions[&u]))
    }

    /// Users online, in `LIST` order (login order).
    pub fn listed(&self) -> impl Iterator<Item = UserIdx> + '_ {
        self.list_order.values().copied()
    }

    /// A new session of `user` on `conn`, awaiting `REGISTER`. Refused,
    /// changing nothing, if `user` has a session, `conn` carries one, or the
    /// token or serial is in use.
    pub fn insert(
        &mut self,
        user: UserIdx,
        conn: ConnId,
        serial: u64,
        token: Token,
        reauth_at: Instant,
    ) -> Result<(), Occupied> {
        if self.sessions.contains_key(&user) {
            return Err(Occupied::User);
        }
        if self.by_conn.contains_key(&conn) {
            return Err(Occupied::Conn);
        }
        if self.by_token.contains_key(&token) {
            return Err(Occupied::Token);
        }
        if self.list_order.contains_key(&serial) {
            return Err(Occupied::Serial);
        }
        self.by_token.insert(token.clone(), user);
        self.by_conn.insert(conn, user);
        self.list_order.insert(serial, user);
        self.sessions.insert(
            user,
            Session {
                conn,
                serial,
                token,
                sealed: None,
                udp: None,
                grace_until: None,
                reauth_at,
                awaiting_register: true,
                inflight: Inflight::default(),
            },
        );
        Ok(())
    }

    /// Seals `user`'s session with `ch` and files it under the channel's id
    /// (replacing any earlier sealing of the session).
    pub fn seal(&mut self, user: UserIdx, ch: Channel) -> Sealing {
        let Some(s) = self.sessions.get_mut(&user) else {
            return Sealing::NoSession;
        };
        if let Some(old) = s.sealed.take() {
            if self.by_sid.get(&old.id()) == Some(&user) {
                self.by_sid.remove(&old.id());
            }
        }
        let sid = ch.id();
        s.sealed = Some(Box::new(ch));
        match self.by_sid.get(&sid) {
            Some(&other) if other != user => Sealing::Collision,
            _ => {
                self.by_sid.insert(sid, user);
                Sealing::Filed
            }
        }
    }

    /// Ends `user`'s session: every index forgets it, and its pending
    /// introductions (either direction) are removed and returned.
    pub fn remove(&mut self, user: UserIdx) -> Option<Ended> {
        let session = self.sessions.remove(&user)?;
        self.by_token.remove(&session.token);
        self.by_conn.remove(&session.conn);
        self.list_order.remove(&session.serial);
        if let Some(ch) = &session.sealed {
            if self.by_sid.get(&ch.id()) == Some(&user) {
                self.by_sid.remove(&ch.id());
            }
        }
        let keys: Vec<(UserIdx, UserIdx)> = self
            .requests
            .keys()
            .filter(|(f, t)| *f == user || *t == user)
            .copied()
            .collect();
        let requests = keys
            .into_iter()
            .filter_map(|k| Some((k, self.requests.remove(&k)?)))
            .collect();
        Some(Ended { session, requests })
    }

    // ---- introductions ----------------------------------------------------

    /// Files `from → to`. Both must be online, different, and have nothing
    /// pending between them.
    pub fn add_request(
        &mut self,
        from: UserIdx,
        to: UserIdx,
        request: Request,
    ) -> Result<(), RequestRefused> {
        if from == to || !self.contains_key(&from) || !self.contains_key(&to) {
            return Err(RequestRefused::NotOnline);
        }
        if self.pending_between(from, to) {
            return Err(RequestRefused::AlreadyPending);
        }
        self.requests.insert((from, to), request);
        Ok(())
    }

    /// Whether a request is pending between `a` and `b`, either direction.
    pub fn pending_between(&self, a: UserIdx, b: UserIdx) -> bool {
        self.requests.contains_key(&(a, b)) || self.requests.contains_key(&(b, a))
    }

    pub fn request(&self, from: UserIdx, to: UserIdx) -> Option<&Request> {
        self.requests.get(&(from, to))
    }

    /// Takes `from → to` off the table (answered, denied or expired).
    pub fn take_request(&mut self, from: UserIdx, to: UserIdx) -> Option<Request> {
        self.requests.remove(&(from, to))
    }

    /// Checks every invariant of the module docs; the error says which broke.
    #[cfg(test)]
    pub fn check(&self) -> Result<(), String> {
        let n = self.sessions.len();
        if self.by_token.len() != n || self.by_conn.len() != n || self.list_order.len() != n {
            return Err(format!(
                "index sizes: {n} sessions, {} tokens, {} conns, {} listed",
                self.by_token.len(),
                self.by_conn.len(),
                self.list_order.len()
            ));
        }
        let mut sealed_filed = 0;
        for (u, s) in self.iter() {
            if self.by_token.get(&s.token) != Some(&u) {
                return Err(format!("{u:?}: token not indexed"));
            }
            if self.by_conn.get(&s.conn) != Some(&u) {
                return Err(format!("{u:?}: conn {} not indexed", s.conn));
            }
            if self.list_order.get(&s.serial) != Some(&u) {
                return Err(format!("{u:?}: serial {} not listed", s.serial));
            }
            if let Some(ch) = &s.sealed {
                sealed_filed += usize::from(self.by_sid.get(&ch.id()) == Some(&u));
            }
        }
        for (sid, u) in &self.by_sid {
            let ok = self
                .sessions
                .get(u)
                .and_then(|s| s.sealed.as_ref())
                .is_some_and(|ch| ch.id() == *sid);
            if !ok {
                return Err(format!("sid {sid:?} → {u:?}, not that session's channel"));
            }
        }
        if sealed_filed != self.by_sid.len() {
            return Err("a session filed under two sids".to_owned());
        }
        for &(f, t) in self.requests.keys() {
            if f == t || !self.contains_key(&f) || !self.contains_key(&t) {
                return Err(format!("request {f:?} → {t:?} names no live pair"));
            }
            if self.requests.contains_key(&(t, f)) {
                return Err(format!("requests both ways between {f:?} and {t:?}"));
            }
        }
        Ok(())
    }
}

impl std::ops::Index<&UserIdx> for SessionTable {
    type Output = Session;

    fn index(&self, user: &UserIdx) -> &Session {
        self.get(user).expect("no session for user")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sealed::{Role, UdpSecret};
    use crate::rng::Seeded;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A session record is a slab entry held for every session (issue 18,
    /// memory per session): a field that widens it costs every session, so
    /// widening it must be a decision, made here.
    #[test]
    fn a_session_record_stays_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 152, "sessions::Session is {size} bytes");
    }

    const A: UserIdx = UserIdx(1);
    const B: UserIdx = UserIdx(2);
    const C: UserIdx = UserIdx(3);

    fn token(n: u64) -> Token {
        Token::random(&mut Seeded::new(n))
    }

    fn channel(n: u8) -> Channel {
        Channel::new(&UdpSecret::from_bytes([n; 32]), Role::Server)
    }

    fn at() -> Instant {
        Instant::now()
    }

    #[test]
    fn insert_indexes_a_session_every_way_and_remove_forgets_it() {
        let mut t = SessionTable::default();
        t.insert(A, 10, 1, token(1), at()).unwrap();
        t.insert(B, 11, 2, token(2), at()).unwrap();
        t.check().unwrap();
        assert_eq!(t.by_token(&token(1)), Some(A));
        assert_eq!((t.user_of(11), t.conn_of(B)), (Some(B), Some(11)));
        assert!(t.get(&A).unwrap().awaiting_register);
        let ended = t.remove(A).unwrap();
        assert_eq!(ended.session.conn(), 10);
        t.check().unwrap();
        assert_eq!((t.by_token(&token(1)), t.user_of(10)), (None, None));
        assert_eq!(t.listed().collect::<Vec<_>>(), [B]);
        assert!(t.remove(A).is_none());
    }

    #[test]
    fn an_occupied_user_conn_token_or_serial_is_refused_and_nothing_changes() {
        let mut t = SessionTable::default();
        t.insert(A, 10, 5, token(1), at()).unwrap();
        assert_eq!(t.insert(A, 11, 6, token(2), at()), Err(Occupied::User));
        assert_eq!(t.insert(B, 10, 6, token(2), at()), Err(Occupied::Conn));
        assert_eq!(t.insert(B, 11, 6, token(1), at()), Err(Occupied::Token));
        assert_eq!(t.insert(B, 11, 5, token(2), at()), Err(Occupied::Serial));
        t.check().unwrap();
        assert_eq!(
            (t.len(), t.user_of(11), t.by_token(&token(2))),
            (1, None, None)
        );
    }

    #[test]
    fn list_order_is_login_order_whatever_the_user_index() {
        let mut t = SessionTable::default();
        for (serial, user) in [(1, C), (2, A), (3, B)] {
            t.insert(user, user.0 as usize, serial, token(serial), at())
                .unwrap();
        }
        assert_eq!(t.listed().collect::<Vec<_>>(), [C, A, B]);
        t.remove(A);
        t.insert(A, 1, 4, token(4), at()).unwrap();
        assert_eq!(t.listed().collect::<Vec<_>>(), [C, B, A]);
    }

    #[test]
    fn sealing_files_the_id_a_collision_files_nothing_and_removal_cleans_up() {
        let mut t = SessionTable::default();
        t.insert(A, 10, 1, token(1), at()).unwrap();
        t.insert(B, 11, 2, token(2), at()).unwrap();
        let sid = channel(7).id();
        assert_eq!(t.seal(A, channel(7)), Sealing::Filed);
        assert_eq!(t.by_sid(&sid), Some(A));
        // B's secret gives the same id: B is sealed, but A keeps the id.
        assert_eq!(t.seal(B, channel(7)), Sealing::Collision);
        assert!(t.get(&B).unwrap().sealed().is_some());
        assert_eq!(t.by_sid(&sid), Some(A));
        t.check().unwrap();
        // Removing B must not take A's entry with it.
        t.remove(B);
        assert_eq!(t.by_sid(&sid), Some(A));
        // Re-sealing A moves it to the new id.
        assert_eq!(t.seal(A, channel(8)), Sealing::Filed);
        assert_eq!(
            (t.by_sid(&sid), t.by_sid(&channel(8).id())),
            (None, Some(A))
        );
        t.check().unwrap();
        t.remove(A);
        assert_eq!(t.by_sid(&channel(8).id()), None);
        assert_eq!(t.seal(A, channel(9)), Sealing::NoSession);
        t.check().unwrap();
    }

    #[test]
    fn requests_need_two_live_users_and_leave_with_either() {
        let mut t = SessionTable::default();
        let r = Request {
            serial: 9,
            dialback: Some(7000),
        };
        t.insert(A, 10, 1, token(1), at()).unwrap();
        assert_eq!(t.add_request(A, B, r), Err(RequestRefused::NotOnline));
        assert_eq!(t.add_request(A, A, r), Err(RequestRefused::NotOnline));
        t.insert(B, 11, 2, token(2), at()).unwrap();
        t.insert(C, 12, 3, token(3), at()).unwrap();
        t.add_request(A, B, r).unwrap();
        assert_eq!(t.add_request(B, A, r), Err(RequestRefused::AlreadyPending));
        t.add_request(C, A, r).unwrap();
        t.add_request(B, C, r).unwrap();
        t.check().unwrap();
        let mut gone: Vec<_> = t.remove(A).unwrap().requests;
        gone.sort_by_key(|(k, _)| *k);
        assert_eq!(gone, [((A, B), r), ((C, A), r)]);
        assert_eq!(t.request(B, C), Some(&r));
        assert_eq!(t.take_request(B, C), Some(r));
        assert_eq!(t.take_request(B, C), None);
        t.check().unwrap();
    }

    // ---- the property test: random operations against a plain model ----------

    #[derive(Debug, Clone)]
    enum Op {
        Insert { user: u8, conn: u8, tok: u8 },
        Seal { user: u8, key: u8 },
        Remove { user: u8 },
        Request { from: u8, to: u8, dialback: bool },
        Take { from: u8, to: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few users, conns, tokens and keys, so collisions are common.
        prop_oneof![
            3 => (0..6u8, 0..6u8, 0..8u8).prop_map(|(user, conn, tok)| Op::Insert { user, conn, tok }),
            1 => (0..6u8, 0..3u8).prop_map(|(user, key)| Op::Seal { user, key }),
            2 => (0..6u8).prop_map(|user| Op::Remove { user }),
            2 => (0..6u8, 0..6u8, any::<bool>()).prop_map(|(from, to, dialback)| Op::Request { from, to, dialback }),
            1 => (0..6u8, 0..6u8).prop_map(|(from, to)| Op::Take { from, to }),
        ]
    }

    /// A model session: (conn, token, serial, sealing key); nothing else.
    type ModelSession = (u8, u8, u64, Option<u8>);

    #[derive(Default)]
    struct Model {
        sessions: BTreeMap<u8, ModelSession>,
        /// Sealing key → user holding it in the sid index.
        sid_holder: BTreeMap<u8, u8>,
        requests: BTreeMap<(u8, u8), Request>,
        serial: u64,
    }

    fn user(u: u8) -> UserIdx {
        UserIdx(u.into())
    }

    impl Model {
        /// Applies `op` to both and checks the table answered as the model says.
        fn step(&mut self, t: &mut SessionTable, op: Op) -> Result<(), TestCaseError> {
            self.serial += 1;
            let serial = self.serial;
            match op {
                Op::Insert { user: u, conn, tok } => {
                    let free = !self.sessions.contains_key(&u)
                        && self.sessions.values().all(|s| s.0 != conn && s.1 != tok);
                    let got = t.insert(user(u), conn.into(), serial, token(tok.into()), at());
                    prop_assert_eq!(got.is_ok(), free);
                    if free {
                        self.sessions.insert(u, (conn, tok, serial, None));
                    }
                }
                Op::Seal { user: u, key } => {
                    let got = t.seal(user(u), channel(key));
                    prop_assert_eq!(got, self.seal(u, key));
                }
                Op::Remove { user: u } => {
                    let got = t.remove(user(u));
                    let want = self.sessions.remove(&u);
                    prop_assert_eq!(got.is_some(), want.is_some());
                    if let (Some(got), Some(want)) = (got, want) {
                        prop_assert_eq!(got.session.conn(), usize::from(want.0));
                        let mut gone: Vec<_> = got
                            .requests
                            .iter()
                            .map(|((f, t), r)| ((f.0 as u8, t.0 as u8), *r))
                            .collect();
                        gone.sort_by_key(|g| g.0);
                        let mut want_gone = Vec::new();
                        self.requests.retain(|&(f, t), r| {
                            let goes = f == u || t == u;
                            if goes {
                                want_gone.push(((f, t), *r));
                            }
                            !goes
                        });
                        prop_assert_eq!(gone, want_gone);
                        self.sid_holder.retain(|_, holder| *holder != u);
                    }
                }
                Op::Request { from, to, dialback } => {
                    let r = Request {
                        serial,
                        dialback: dialback.then_some(4000),
                    };
                    let got = t.add_request(user(from), user(to), r);
                    let online = from != to
                        && self.sessions.contains_key(&from)
                        && self.sessions.contains_key(&to);
                    let pending = self.requests.contains_key(&(from, to))
                        || self.requests.contains_key(&(to, from));
                    let want = if !online {
                        Err(RequestRefused::NotOnline)
                    } else if pending {
                        Err(RequestRefused::AlreadyPending)
                    } else {
                        self.requests.insert((from, to), r);
                        Ok(())
                    };
                    prop_assert_eq!(got, want);
                }
                Op::Take { from, to } => {
                    let got = t.take_request(user(from), user(to));
                    prop_assert_eq!(got, self.requests.remove(&(from, to)));
                }
            }
            Ok(())
        }

        fn seal(&mut self, u: u8, key: u8) -> Sealing {
            let Some(s) = self.sessions.get_mut(&u) else {
                return Sealing::NoSession;
            };
            if let Some(old) = s.3.replace(key) {
                if self.sid_holder.get(&old) == Some(&u) {
                    self.sid_holder.remove(&old);
                }
            }
            match self.sid_holder.get(&key) {
                Some(&other) if other != u => Sealing::Collision,
                _ => {
                    self.sid_holder.insert(key, u);
                    Sealing::Filed
                }
            }
        }

        /// Every lookup of the table agrees with the model.
        fn agrees(&self, t: &SessionTable) -> Result<(), TestCaseError> {
            let holder = |pick: &dyn Fn(&ModelSession) -> bool| {
                self.sessions.iter().find(|s| pick(s.1)).map(|s| user(*s.0))
            };
            prop_assert_eq!(t.len(), self.sessions.len());
            for u in 0..6u8 {
                let want = self.sessions.get(&u);
                prop_assert_eq!(t.conn_of(user(u)), want.map(|s| usize::from(s.0)));
                prop_assert_eq!(t.get(&user(u)).map(|s| s.serial()), want.map(|s| s.2));
                prop_assert_eq!(t.user_of(u.into()), holder(&|s| s.0 == u));
            }
            for tok in 0..8u8 {
                prop_assert_eq!(t.by_token(&token(tok.into())), holder(&|s| s.1 == tok));
            }
            for key in 0..3u8 {
                let want = self.sid_holder.get(&key).map(|&u| user(u));
                prop_assert_eq!(t.by_sid(&channel(key).id()), want);
            }
            let mut by_serial: Vec<_> =
                self.sessions.iter().map(|(u, s)| (s.2, user(*u))).collect();
            by_serial.sort();
            let listed: Vec<UserIdx> = by_serial.into_iter().map(|x| x.1).collect();
            prop_assert_eq!(t.listed().collect::<Vec<_>>(), listed);
            let live: BTreeSet<UserIdx> = t.iter().map(|(u, _)| u).collect();
            prop_assert_eq!(live, self.sessions.keys().map(|&u| user(u)).collect());
            Ok(())
        }
    }

    proptest! {
        /// Random operations against the model: after every step the table
        /// answered as the model did, keeps its invariants, and every lookup
        /// agrees.
        #[test]
        fn the_table_agrees_with_a_model_and_keeps_its_invariants(
            ops in proptest::collection::vec(op(), 1..80)
        ) {
            let mut t = SessionTable::default();
            let mut m = Model::default();
            for op in ops {
                m.step(&mut t, op)?;
                t.check().map_err(TestCaseError::fail)?;
                m.agrees(&t)?;
            }
        }
    }
}
