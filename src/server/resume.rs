//! Session resumption tickets, pure: issuing, checking and using them up.
//! The engine asks for a ticket after a LOGIN (`TICKET`) and redeems one on
//! `RESUME`; a redeemed ticket lets a reconnecting client skip the password
//! hash until its session's re-login deadline. This is what keeps a server
//! restart with 10,000 reconnecting clients from costing 10,000 hashes.
//!
//! A ticket is `version ‖ account seq ‖ serial ‖ deadline ‖ tag` (37 bytes,
//! 74 hex digits on the wire). The tag is HMAC-SHA256, truncated to 128 bits,
//! under the server's resume key (kept in the data dir, `resume.key`) over the
//! fields and over a *binding* of the account's current state (its lower-case
//! name, sequence number, creation time and password salt and hash), which
//! the ticket does not carry.
//!
//! Invariants:
//! - A ticket names one account and only redeems for it: the name given in
//!   `RESUME` must resolve to the sequence number inside, and the binding
//!   inside the tag covers that account's name, so a ticket of another user,
//!   or of a deleted account whose name was signed up again, never verifies.
//! - `passwd` and `del` revoke every ticket for good, across restarts: a new
//!   password has a new salt, so the binding changes; a deleted account has
//!   no binding at all. `disable` refuses while disabled (the engine checks),
//!   and also revokes in memory (see below), as do `passwd` and `del`.
//! - A ticket never outlives the re-login deadline of the session it was
//!   issued for, and redeeming never moves that deadline: a resumed session
//!   must log in with its password when the original one would have. (It is
//!   also clamped to now + `--session-ttl`, should that shrink at a restart.)
//! - Single use, in memory: per account we keep a floor, and only a ticket
//!   whose serial is above it redeems. Issuing a ticket raises the floor to
//!   just below the new serial (so older tickets of the account die: one live
//!   ticket per account), redeeming raises it to the ticket's serial, and a
//!   revocation raises it above every serial issued so far.
//! - Serials grow across restarts without being stored: a serial is at least
//!   the issue time in unix milliseconds × 1024, so a ticket issued after a
//!   restart outranks every ticket issued before it (unless the wall clock
//!   went back).
//!
//! **Across a crash** the floors are lost (they are not written to disk: an
//! fsync per resume would put back the cost this module removes). So after
//! a restart, every unexpired ticket of an account issued before the crash
//! (the live one, and ones already redeemed or superseded) is accepted
//! until the first of them is redeemed; that redemption sets the floor and
//! kills the others. The window is one redemption per account, tickets only
//! travel over TLS or loopback, and they expire with the session's deadline
//! anyway. The one revocation this also loses is `disable` followed by
//! `enable` before the crash: an older ticket works again after a restart.

use std::collections::HashMap;

use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::accounts::UserIdx;
use super::engine::{ConnId, Engine};
use crate::proto::names::Token;
use crate::proto::{ErrorCode, OkReply, ServerLine, Ticket};

/// Bytes of a resume key.
pub const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + 4 + 8 + 8;
/// Bytes of a ticket.
pub const TICKET_LEN: usize = BODY_LEN + TAG_LEN;
/// Domain separation: this key signs tickets and nothing else.
const CONTEXT: &[u8] = b"peerline resume ticket v1";

/// The server's secret for tickets. Never printed.
#[derive(Clone)]
pub struct ResumeKey([u8; KEY_LEN]);

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKey(<redacted>)")
    }
}

impl ResumeKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ResumeKey {
        ResumeKey(bytes)
    }

    /// A fresh key from `rng`: the OS for the data dir's key file; the
    /// engine's own generator for the key it holds until the driver hands
    /// it the file's ([`super::engine::Engine::with_resume_key`]).
    pub fn random(rng: &mut dyn crate::rng::Random) -> ResumeKey {
        let mut b = [0u8; KEY_LEN];
        rng.fill(&mut b);
        ResumeKey(b)
    }

    /// The key file's text: 64 hex digits and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    pub fn from_file_text(text: &[u8]) -> Option<ResumeKey> {
        let text = std::str::from_utf8(text).ok()?.trim();
        let mut b = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut b).ok()?;
        Some(ResumeKey(b))
    }
}

/// What a ticket is bound to besides its own fields: the account as it is
/// now. Computed by the engine from the account record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Binding([u8; 32]);

impl Binding {
    pub fn of(name: &str, seq: u32, created_unix: u64, salt: &[u8], hash: &[u8]) -> Binding {
        let mut h = Sha256::new();
        h.update(b"peerline account binding v1\0");
        h.update(name.to_ascii_lowercase().as_bytes());
        h.update([0]);
        h.update(seq.to_be_bytes());
        h.update(created_unix.to_be_bytes());
        h.update((salt.len() as u32).to_be_bytes());
        h.update(salt);
        h.update(hash);
        Binding(h.finalize().into())
    }
}

/// The fields of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The account's sequence number.
    pub seq: u32,
    /// Orders tickets of one account (see the module invariants).
    pub serial: u64,
    /// The session's re-login deadline, unix seconds.
    pub deadline_unix: u64,
}

/// Why a ticket was refused. The wire says only `ERR bad-ticket` (an
/// attacker learns nothing about which check failed); the log says this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not 74 hex digits, or an unknown version.
    Malformed,
    /// The name in `RESUME` is not the account the ticket names (or the
    /// account no longer exists).
    OtherUser,
    /// The tag does not verify: forged, altered, or the account changed
    /// (new password, deleted and signed up again).
    Forged,
    /// Its re-login deadline has passed: LOGIN with the password.
    Expired,
    /// Redeemed before, superseded by a newer ticket, or revoked.
    Used,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::OtherUser => "another account's",
            Refusal::Forged => "tag does not verify",
            Refusal::Expired => "expired",
            Refusal::Used => "used, superseded or revoked",
        }
    }
}

/// Reads a ticket's fields without checking them (the engine needs the
/// account's sequence number to compute the binding the tag covers).
pub fn peek(text: &str) -> Result<Claims, Refusal> {
    let bytes = decode(text)?;
    Ok(claims_of(&bytes))
}

fn decode(text: &str) -> Result<[u8; TICKET_LEN], Refusal> {
    let mut b = [0u8; TICKET_LEN];
    hex::decode_to_slice(text, &mut b).map_err(|_| Refusal::Malformed)?;
    if b[0] != VERSION {
        return Err(Refusal::Malformed);
    }
    Ok(b)
}

fn claims_of(b: &[u8; TICKET_LEN]) -> Claims {
    let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Claims {
        seq: u32_at(1),
        serial: u64_at(5),
        deadline_unix: u64_at(13),
    }
}

/// Tickets issued and redeemed by this process.
#[derive(Debug)]
pub struct Tickets {
    key: ResumeKey,
    /// Account seq → only serials above this redeem.
    floors: HashMap<u32, u64>,
    last_serial: u64,
}

impl Tickets {
    pub fn new(key: ResumeKey) -> Tickets {
        Tickets {
            key,
            floors: HashMap::new(),
            last_serial: 0,
        }
    }

    fn mac(&self, body: &[u8], binding: &Binding) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key.0).expect("any key length");
        m.update(CONTEXT);
        m.update(body);
        m.update(&binding.0);
        m
    }

    fn next_serial(&mut self, now_unix_ms: u64) -> u64 {
        self.last_serial = (self.last_serial + 1).max(now_unix_ms.saturating_mul(1024));
        self.last_serial
    }

    /// A new ticket for `seq`, valid until `deadline_unix`; every older
    /// ticket of the account stops redeeming. Returns the wire text (hex).
    pub fn issue(
        &mut self,
        now_unix_ms: u64,
        seq: u32,
        deadline_unix: u64,
        binding: &Binding,
    ) -> String {
        let serial = self.next_serial(now_unix_ms);
        let mut b = [0u8; TICKET_LEN];
        b[0] = VERSION;
        b[1..5].copy_from_slice(&seq.to_be_bytes());
        b[5..13].copy_from_slice(&serial.to_be_bytes());
        b[13..21].copy_from_slice(&deadline_unix.to_be_bytes());
        let tag = self.mac(&b[..BODY_LEN], binding).finalize().into_bytes();
        b[BODY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        self.raise_floor(seq, serial - 1);
        hex::encode(b)
    }

    /// Checks `text` for the account `seq` (the one the `RESUME` names, with
    /// its current binding) at `now_unix_ms` and uses it up. Returns the
    /// deadline the resumed session keeps.
    pub fn redeem(
        &mut self,
        now_unix_ms: u64,
        text: &str,
        seq: u32,
        binding: &Binding,
    ) -> Result<u64, Refusal> {
        let b = decode(text)?;
        let claims = claims_of(&b);
        if claims.seq != seq {
            return Err(Refusal::OtherUser);
        }
        // Constant time: the tag is the one secret-dependent comparison.
        self.mac(&b[..BODY_LEN], binding)
            .verify_truncated_left(&b[BODY_LEN..])
            .map_err(|_| Refusal::Forged)?;
        if claims.deadline_unix.saturating_mul(1000) <= now_unix_ms {
            return Err(Refusal::Expired);
        }
        if claims.serial <= self.floors.get(&seq).copied().unwrap_or(0) {
            return Err(Refusal::Used);
        }
        self.raise_floor(seq, claims.serial);
        Ok(claims.deadline_unix)
    }

    /// `passwd`, `disable`, `del`: no ticket issued so far redeems for `seq`.
    pub fn revoke(&mut self, now_unix_ms: u64, seq: u32) {
        let serial = self.next_serial(now_unix_ms);
        self.raise_floor(seq, serial);
    }

    fn raise_floor(&mut self, seq: u32, to: u64) {
        let f = self.floors.entry(seq).or_insert(0);
        *f = (*f).max(to);
    }
}

// ---- the engine's hooks: `TICKET`, `RESUME`, revocation ----------------------

impl Engine {
    /// Tickets leave and enter only over TLS or plaintext from loopback,
    /// whatever `--plaintext` allows for passwords: a ticket is a password
    /// that needs no hash to try, so it is never exposed on a network path.
    fn ticket_transport_ok(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.secure || c.addr.ip().to_canonical().is_loopback())
    }

    fn tls_required_for_tickets(&mut self, conn: ConnId, verb: &str) {
        let text = format!("{verb}: resumption tickets travel only over TLS or loopback");
        self.line(conn, ServerLine::err_with(ErrorCode::TlsRequired, text));
    }

    fn binding(&self, user: UserIdx) -> Option<Binding> {
        let u = self.accounts.try_get(user)?;
        let h = &u.password_hash;
        Some(Binding::of(
            &u.username,
            u.seq.0,
            u.created_unix,
            &h.salt,
            &h.hash,
        ))
    }

    /// `TICKET`: a ticket for the logged-in session `me`, good until its
    /// re-login deadline.
    pub(super) fn ticket_command(&mut self, now: Instant, conn: ConnId, me: UserIdx) {
        if !self.ticket_transport_ok(conn) {
            return self.tls_required_for_tickets(conn, "TICKET");
        }
        let Some(s) = self.sessions.get(&me) else {
            return self.line(conn, ServerLine::err(ErrorCode::NotLoggedIn));
        };
        if s.reauth_at <= now {
            let text = "a re-login is due: LOGIN with the password first";
            return self.line(conn, ServerLine::err_with(ErrorCode::BadTicket, text));
        }
        let deadline = self.unix_secs(s.reauth_at);
        let Some(binding) = self.binding(me) else {
            return self.line(conn, ServerLine::err(ErrorCode::NotLoggedIn));
        };
        let ticket = self.issue_ticket(self.unix_ms(now), me, deadline, &binding);
        self.line(
            conn,
            ServerLine::Ok(OkReply::Ticket {
                ticket,
                expires: deadline,
            }),
        );
    }

    /// `RESUME <user> <ticket>`: a session without the password hash, with
    /// the deadline the ticket carries, and a fresh ticket in its place.
    pub(super) fn resume_command(
        &mut self,
        now: Instant,
        conn: ConnId,
        current: Option<UserIdx>,
        name: &str,
        ticket: &Ticket,
    ) {
        if !self.ticket_transport_ok(conn) {
            return self.tls_required_for_tickets(conn, "RESUME");
        }
        if current.is_some() {
            return self.line(conn, ServerLine::err(ErrorCode::AlreadyLoggedIn));
        }
        // A ticket is a credential that costs no hash to try, so guessing at
        // it is held to the password limits, checked before it is used up
        // (a refused check burns no good ticket).
        if let Err(refusal) = self.guesses.check(now, self.source_of(conn), name) {
            let reply = self.guess_refusal(refusal);
            return self.line(conn, reply);
        }
        let now_ms = self.unix_ms(now);
        let (user, deadline) = match self.redeem_ticket(now_ms, name, ticket) {
            Ok(x) => x,
            Err(why) => return self.ticket_refused(now, conn, name, why),
        };
        if !self.accounts.get(user).enabled {
            self.stats.tickets_refused += 1;
            return self.line(conn, ServerLine::err(ErrorCode::AccountDisabled));
        }
        let (token, reauth_at) = self.start_resumed_session(now, conn, user, deadline);
        self.stats.resumes_ok += 1;
        log::info!(
            "resumed {} by ticket (conn {conn})",
            self.accounts.name(user)
        );
        let deadline = self.unix_secs(reauth_at);
        let binding = self.binding(user).expect("the account exists");
        let ticket = self.issue_ticket(now_ms, user, deadline, &binding);
        self.line(
            conn,
            ServerLine::Ok(OkReply::Resume {
                user: self.accounts.name(user).to_owned(),
                token,
                ticket,
                expires: deadline,
            }),
        );
    }

    /// A new ticket for `user`'s session, good until `deadline_unix`.
    fn issue_ticket(
        &mut self,
        now_ms: u64,
        user: UserIdx,
        deadline_unix: u64,
        b: &Binding,
    ) -> Ticket {
        let text = self.tickets.issue(now_ms, user.0, deadline_unix, b);
        Ticket::parse(&text).expect("issued tickets are hex")
    }

    /// Uses up `ticket` for the account `name`: the account and the re-login
    /// deadline (unix seconds) the ticket carries.
    fn redeem_ticket(
        &mut self,
        now_ms: u64,
        name: &str,
        ticket: &Ticket,
    ) -> Result<(UserIdx, u64), Refusal> {
        let account = self.accounts.find(name).ok_or(Refusal::OtherUser)?;
        let binding = self.binding(account).ok_or(Refusal::OtherUser)?;
        let deadline = self
            .tickets
            .redeem(now_ms, ticket.expose(), account.0, &binding)?;
        Ok((account, deadline))
    }

    /// A session for `user` that keeps the ticket's re-login deadline: its
    /// token and that deadline. The deadline never moves: at most the
    /// ticket's, at most a TTL away.
    fn start_resumed_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserIdx,
        deadline_unix: u64,
    ) -> (Token, Instant) {
        let reauth_at = self
            .instant_of_unix(deadline_unix)
            .min(now + self.cfg.session_ttl);
        let token = self.start_session(now, conn, user);
        let serial = {
            let s = self.sessions.get_mut(&user).expect("just started");
            s.reauth_at = reauth_at;
            s.serial()
        };
        // The entry `start_session` armed (a TTL away) is dead now.
        self.reauths.arm(reauth_at, (user, serial));
        (token, reauth_at)
    }

    /// A refused ticket: `ERR bad-ticket`, and why in the log (never the
    /// ticket). An expired one is what an honest client that slept past its
    /// re-login presents: `info`. Anything else (forged, another account's,
    /// replayed, revoked) is what a stolen or made-up one looks like, so it
    /// counts against the source as a wrong password does and gets the same
    /// one `warn` line, for fail2ban.
    fn ticket_refused(&mut self, now: Instant, conn: ConnId, name: &str, why: Refusal) {
        self.stats.tickets_refused += 1;
        let user = super::limits::sanitize_for_log(name);
        let ip = self.ip_for_log(conn);
        if why == Refusal::Expired {
            log::info!("refused RESUME for user {user} from {ip} (conn {conn}): expired");
        } else {
            self.guesses.wrong(now, self.source_of(conn));
            log::warn!(
                "failed RESUME for user {user} from {ip} (conn {conn}): {}",
                why.as_str()
            );
        }
        self.line(conn, ServerLine::err(ErrorCode::BadTicket));
    }

    /// The account changed (password, deleted, disabled, enabled): no ticket
    /// issued before redeems.
    pub(super) fn revoke_tickets(&mut self, now: Instant, user: UserIdx) {
        let now_ms = self.unix_ms(now);
        self.tickets.revoke(now_ms, user.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000; // unix ms
    const DEADLINE: u64 = T0 / 1000 + 1800;

    fn key(n: u8) -> ResumeKey {
        ResumeKey::from_bytes([n; KEY_LEN])
    }

    fn alice() -> Binding {
        Binding::of("Alice", 1, 100, &[7; 16], &[9; 32])
    }

    fn bob() -> Binding {
        Binding::of("bob", 2, 100, &[7; 16], &[9; 32])
    }

    #[test]
    fn a_ticket_redeems_once_for_its_account_until_its_deadline() {
        let mut t = Tickets::new(key(1));
        let ticket = t.issue(T0, 1, DEADLINE, &alice());
        assert_eq!(ticket.len(), 2 * TICKET_LEN);
        assert_eq!(peek(&ticket).unwrap().deadline_unix, DEADLINE);
        assert_eq!(t.redeem(T0 + 5, &ticket, 1, &alice()), Ok(DEADLINE));
        // Replayed: refused, however soon.
        assert_eq!(t.redeem(T0 + 6, &ticket, 1, &alice()), Err(Refusal::Used));
        // The fresh ticket given in its place redeems, once.
        let next = t.issue(T0 + 6, 1, DEADLINE, &alice());
        assert_eq!(t.redeem(T0 + 7, &next, 1, &alice()), Ok(DEADLINE));
        assert_eq!(t.redeem(T0 + 8, &next, 1, &alice()), Err(Refusal::Used));
    }

    #[test]
    fn expired_at_the_deadline_not_a_millisecond_later() {
        let mut t = Tickets::new(key(1));
        let ticket = t.issue(T0, 1, DEADLINE, &alice());
        let at = DEADLINE * 1000;
        assert_eq!(t.redeem(at, &ticket, 1, &alice()), Err(Refusal::Expired));
        let ticket = t.issue(T0, 1, DEADLINE, &alice());
        assert_eq!(t.redeem(at - 1, &ticket, 1, &alice()), Ok(DEADLINE));
    }

    #[test]
    fn a_newer_ticket_supersedes_older_ones() {
        let mut t = Tickets::new(key(1));
        let old = t.issue(T0, 1, DEADLINE, &alice());
        let new = t.issue(T0, 1, DEADLINE, &alice());
        assert_eq!(t.redeem(T0, &old, 1, &alice()), Err(Refusal::Used));
        assert_eq!(t.redeem(T0, &new, 1, &alice()), Ok(DEADLINE));
        // Another account's floor is its own.
        let b = t.issue(T0, 2, DEADLINE, &bob());
        assert_eq!(t.redeem(T0, &b, 2, &bob()), Ok(DEADLINE));
    }

    #[test]
    fn forged_altered_or_foreign_tickets_are_refused() {
        let mut t = Tickets::new(key(1));
        let ticket = t.issue(T0, 1, DEADLINE, &alice());
        // Another user's name: the seq inside does not match.
        assert_eq!(t.redeem(T0, &ticket, 2, &bob()), Err(Refusal::OtherUser));
        // Every single bit flipped, one at a time, fails (the deadline, the
        // serial, the seq, the tag: nothing can be edited).
        let bytes = hex::decode(&ticket).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let r = t.redeem(T0, &hex::encode(&b), 1, &alice());
            assert!(
                matches!(
                    r,
                    Err(Refusal::Forged | Refusal::OtherUser | Refusal::Malformed)
                ),
                "bit {i}: {r:?}"
            );
        }
        // A ticket made with another key.
        let mut other = Tickets::new(key(2));
        let forged = other.issue(T0, 1, DEADLINE, &alice());
        assert_eq!(t.redeem(T0, &forged, 1, &alice()), Err(Refusal::Forged));
        // Garbage of every kind.
        for bad in ["", "00", &"zz".repeat(TICKET_LEN), &ticket[..72]] {
            assert_eq!(t.redeem(T0, bad, 1, &alice()), Err(Refusal::Malformed));
        }
        // Still good after all that (failed attempts do not use it up).
        assert_eq!(t.redeem(T0, &ticket, 1, &alice()), Ok(DEADLINE));
    }

    #[test]
    fn a_changed_account_invalidates_its_tickets_without_any_state() {
        let mut t = Tickets::new(key(1));
        let ticket = t.issue(T0, 1, DEADLINE, &alice());
        // New password: new salt and hash.
        let after_passwd = Binding::of("Alice", 1, 100, &[8; 16], &[3; 32]);
        assert_eq!(
            t.redeem(T0, &ticket, 1, &after_passwd),
            Err(Refusal::Forged)
        );
        // Deleted and signed up again under the same name and seq is
        // impossible (seqs are never reused), but a new creation time alone
        // already changes the binding.
        let recreated = Binding::of("alice", 1, 101, &[7; 16], &[9; 32]);
        assert_eq!(t.redeem(T0, &ticket, 1, &recreated), Err(Refusal::Forged));
        // The name is compared case-insensitively, like accounts.
        let same = Binding::of("ALICE", 1, 100, &[7; 16], &[9; 32]);
        assert_eq!(t.redeem(T0, &ticket, 1, &same), Ok(DEADLINE));
    }

    #[test]
    fn revoking_kills_every_ticket_issued_before() {
        let mut t = Tickets::new(key(1));
        let ticket = t.issue(T0, 1, DEADLINE, &alice());
        t.revoke(T0 + 1, 1);
        assert_eq!(t.redeem(T0 + 2, &ticket, 1, &alice()), Err(Refusal::Used));
        // A ticket issued after the revocation (after a new LOGIN) works.
        let fresh = t.issue(T0 + 3, 1, DEADLINE, &alice());
        assert_eq!(t.redeem(T0 + 4, &fresh, 1, &alice()), Ok(DEADLINE));
    }

    #[test]
    fn across_a_restart_the_first_redemption_sets_the_floor() {
        // Before the crash: ticket A redeemed, B issued in its place.
        let mut before = Tickets::new(key(1));
        let a = before.issue(T0, 1, DEADLINE, &alice());
        assert!(before.redeem(T0 + 10, &a, 1, &alice()).is_ok());
        let b = before.issue(T0 + 10, 1, DEADLINE, &alice());
        // After the restart (same key from the data dir, floors gone), the
        // live ticket B redeems and A, older, is refused from then on.
        let mut after = Tickets::new(key(1));
        assert_eq!(after.redeem(T0 + 20_000, &b, 1, &alice()), Ok(DEADLINE));
        assert_eq!(
            after.redeem(T0 + 20_001, &a, 1, &alice()),
            Err(Refusal::Used)
        );
        // Tickets issued after the restart outrank every earlier serial.
        let c = after.issue(T0 + 20_002, 1, DEADLINE, &alice());
        assert!(peek(&c).unwrap().serial > peek(&b).unwrap().serial);
        assert_eq!(
            after.redeem(T0 + 20_003, &b, 1, &alice()),
            Err(Refusal::Used)
        );
    }

    #[test]
    fn serials_increase_even_within_one_millisecond_and_when_the_clock_steps_back() {
        let mut t = Tickets::new(key(1));
        let mut last = 0;
        for now in [T0, T0, T0, T0 - 5_000, T0 + 1] {
            let s = peek(&t.issue(now, 1, DEADLINE, &alice())).unwrap().serial;
            assert!(s > last);
            last = s;
        }
    }

    #[test]
    fn the_key_file_round_trips_and_the_key_never_prints() {
        let k = ResumeKey::random(&mut crate::rng::OsRandom);
        let text = k.to_file_text();
        assert_eq!(text.len(), 65);
        let back = ResumeKey::from_file_text(text.as_bytes()).unwrap();
        assert_eq!(back.0, k.0);
        assert!(ResumeKey::from_file_text(b"abc").is_none());
        let shown = format!("{k:?} {:?}", Tickets::new(k.clone()));
        assert!(!shown.contains(&hex::encode(k.0)), "{shown}");
        assert!(!shown.contains(&hex::encode(&k.0[..4])), "{shown}");
    }
}
