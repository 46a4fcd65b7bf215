//! Broadcast delivery and the UDP side: `REGISTER`/`ACK`/`PING` datagrams,
//! fan-out in bounded batches, retransmits with backoff, and the TCP fallback.
//!
//! A session that logged in over TLS seals every datagram both ways
//! (`proto/sealed.rs`); the token never travels on UDP for it.
//!
//! Return routability: the server sends to an address only after it proved,
//! with a `CHALLENGE` cookie (`cookie.rs`), that it receives there; before
//! that, the one answer is a `CHALLENGE` no longer than the request.
//!
//! A delivery counts (and is persisted) when the client ACKs the datagram or
//! when the `EVENT BROADCAST` line is handed to its TCP connection.

use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::accounts::UserIdx;
use super::broadcast::{after_send, BroadcastRecord, DeliveryRow, NextStep};
use super::engine::{ConnId, Engine, Output};
use super::retransmit::Pending;
use super::sessions::Sealing;
use crate::proto::sealed::{self, Channel, OpenError, Role, SessionId, UdpSecret};
use crate::proto::{ClientDatagram, Event, OkReply, ServerDatagram, ServerLine, UdpRequest};

/// Most unacknowledged broadcast datagrams per recipient. Without a window a
/// burst of broadcasts reached a client faster than it could read and
/// overflowed its socket buffer (208 KB by default: some 160 datagrams), and
/// every drop cost a retransmit. The rest wait, in id order, and go out as
/// ACKs (or TCP fallbacks) free room. MQTT brokers do the same for QoS 1
/// (mosquitto's `max_inflight_messages`, 20 by default).
pub const UDP_WINDOW: usize = 16;

/// Most plaintext ACKs parked at once (some 100 bytes each, given back when
/// handled); past it they are handled as they come.
const PARK_MAX: usize = 32_768;
/// Longest an ACK waits parked, however long the fan-out: well under the
/// first retransmit (0.5 s), so parking never causes one.
const PARK_MAX_AGE: Duration = Duration::from_millis(100);
/// Parked ACKs handled per loop turn once due, so the turn stays short.
pub const PARKED_TURN_BUDGET: usize = 1024;

/// Plaintext `ACK` datagrams that came while a fan-out still had recipients
/// to send to, handled once it has sent (or once the oldest is
/// [`PARK_MAX_AGE`] old), [`PARKED_TURN_BUDGET`] per turn, oldest first.
///
/// Only while one broadcast is fanning out and none waits behind it. In a
/// burst of broadcasts most sends wait for window room (`UDP_WINDOW`), which
/// only ACKs make: parking them there stalled the burst (one run at 1,000
/// sessions, load average 8: 31,600 deliveries/s against 43,900), so a
/// burst keeps handling its ACKs as they come.
///
/// Why: the ACKs of a fan-out's first recipients come back while it is
/// still sending, and handling each (parse, token lookup, delivery book,
/// `deliveries.csv` row, retransmit cancel) delayed the datagrams of the
/// recipients after it; the last of 19,000 waited for some 19,000 ACKs.
/// Parked, an ACK costs a copy. Only the handling waits: the datagrams are
/// still read from the socket every turn (its buffer never fills with them),
/// and a `PING`, a `REGISTER` or a sealed datagram (whose kind is only known
/// once opened) is handled at once, so a `PING` during a fan-out is
/// answered in the turn it is read.
#[derive(Debug, Default)]
pub(super) struct ParkedAcks {
    bytes: Vec<u8>,
    /// Source and where its bytes end in `bytes`, in arrival order.
    items: Vec<(SocketAddr, u32)>,
    /// Items already handled (taken from the front without moving the rest).
    done: usize,
    /// When the oldest item not yet handled was parked (at the latest).
    since: Option<Instant>,
}

impl ParkedAcks {
    pub fn is_empty(&self) -> bool {
        self.done == self.items.len()
    }

    pub fn len(&self) -> usize {
        self.items.len() - self.done
    }

    /// Keeps a copy of the datagram; false (nothing kept) when full.
    fn park(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if self.len() >= PARK_MAX {
            return false;
        }
        self.since.get_or_insert(now);
        self.bytes.extend_from_slice(bytes);
        self.items.push((from, self.bytes.len() as u32));
        true
    }

    /// The oldest item not yet handled.
    fn next(&mut self) -> Option<(SocketAddr, Range<usize>)> {
        let &(from, end) = self.items.get(self.done)?;
        let start = match self.done {
            0 => 0,
            i => self.items[i - 1].1 as usize,
        };
        self.done += 1;
        Some((from, start..end as usize))
    }

    fn is_due(&self, now: Instant, fanout_done: bool) -> bool {
        !self.is_empty()
            && (fanout_done
                || self
                    .since
                    .is_some_and(|t| now.saturating_duration_since(t) >= PARK_MAX_AGE))
    }
}

/// A broadcast being handed to the users who were online when it was made,
/// `FANOUT_BATCH` per loop turn.
#[derive(Debug)]
pub(super) struct Fanout {
    pub id: u64,
    pub recipients: Vec<UserIdx>,
    pub next: usize,
}

/// Emptied in-flight lists kept for the next session that needs one: a
/// session's list empties after nearly every ACK in a steady stream, and
/// freeing it then (an idle session keeps no allocation) cost a `malloc`,
/// two `realloc`s and a `free` per delivery. At most [`SPARE_LISTS`] are
/// kept, each of [`UDP_WINDOW`] entries: 64 KiB at most, whatever the
/// number of sessions.
#[derive(Debug, Default)]
pub(super) struct SpareLists(Vec<Vec<(u64, u32)>>);

pub const SPARE_LISTS: usize = 256;

impl SpareLists {
    fn take(&mut self) -> Vec<(u64, u32)> {
        self.0
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(UDP_WINDOW))
    }

    fn give(&mut self, mut list: Vec<(u64, u32)>) {
        if self.0.len() < SPARE_LISTS && list.capacity() == UDP_WINDOW {
            list.clear();
            self.0.push(list);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A session's unacknowledged UDP deliveries: (broadcast id, datagrams sent).
#[derive(Debug, Default)]
pub(super) struct Inflight {
    entries: Vec<(u64, u32)>,
    /// A delivery found the window full and is waiting for room.
    held_back: bool,
}

impl Inflight {
    pub fn sent(&self, id: u64) -> Option<u32> {
        self.entries.iter().find(|e| e.0 == id).map(|e| e.1)
    }

    pub fn set_sent(&mut self, id: u64, sent: u32) {
        match self.entries.iter_mut().find(|e| e.0 == id) {
            Some(e) => e.1 = sent,
            None => self.entries.push((id, sent)),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A new delivery in flight (there is room: see [`Inflight::has_room`]);
    /// the list comes from `spare` if the session has none.
    pub fn start(&mut self, id: u64, spare: &mut SpareLists) {
        if self.entries.capacity() == 0 {
            self.entries = spare.take();
        }
        self.set_sent(id, 1);
    }

    pub fn has_room(&self) -> bool {
        self.entries.len() < UDP_WINDOW
    }

    /// Ends an in-flight delivery. True when held-back deliveries should now
    /// be sent: only once half the window is free, so a refill (which scans
    /// the user's pending broadcasts) is paid for by several sends, not one.
    #[must_use]
    pub fn remove(&mut self, id: u64, spare: &mut SpareLists) -> bool {
        if let Some(i) = self.entries.iter().position(|e| e.0 == id) {
            self.entries.swap_remove(i);
        }
        if self.entries.is_empty() {
            // An idle session keeps no allocation: this is per-session memory.
            spare.give(std::mem::take(&mut self.entries));
        }
        let refill = self.held_back && self.entries.len() <= UDP_WINDOW / 2;
        if refill {
            self.held_back = false;
        }
        refill
    }
}

impl Engine {
    /// A datagram arrived on the UDP port. Anything not carrying a live session
    /// token is dropped without an answer. A source address becomes the
    /// session's endpoint only once it has proved it receives there (the
    /// `CHALLENGE` cookie); until then it gets nothing but a `CHALLENGE` no
    /// longer than its request, so a forged source is never amplified.
    ///
    /// A session that logged in over TLS speaks only sealed datagrams (its
    /// token is refused in clear); one that did not, only plaintext ones.
    pub(super) fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.fanout.len() == 1
            && bytes.starts_with(b"ACK ")
            && self.parked.park(now, from, bytes)
        {
            return;
        }
        self.handle_datagram(now, from, bytes);
    }

    /// Parked ACKs (see [`ParkedAcks`]), if due: at most `budget` of them.
    pub(super) fn run_parked(&mut self, now: Instant, budget: usize) {
        if self.parked.is_due(now, self.fanout.is_empty()) {
            self.handle_parked(now, budget);
        }
    }

    /// Handles up to `budget` parked ACKs, due or not (at shutdown: all, so
    /// no acknowledged delivery goes unrecorded).
    pub(super) fn handle_parked(&mut self, now: Instant, budget: usize) {
        let mut parked = std::mem::take(&mut self.parked);
        for _ in 0..budget {
            let Some((from, range)) = parked.next() else {
                break;
            };
            self.handle_datagram(now, from, &parked.bytes[range]);
        }
        // Drained: its memory goes back (a fan-out to 19,000 parks ~2 MB).
        // Otherwise the rest stay due in the next turns (`since` is kept).
        self.parked = if parked.is_empty() {
            ParkedAcks::default()
        } else {
            parked
        };
    }

    /// A datagram handled now (never parked).
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if let Some(sid) = sealed::session_id(bytes) {
            return self.on_sealed(now, from, sid, bytes);
        }
        let Some(d) = ClientDatagram::parse(bytes) else {
            return self.drop_datagram(from, "malformed");
        };
        let Some(user) = self.sessions.by_token(d.token()) else {
            // A client whose session ended without it noticing (its TCP reset
            // lost) learns so from its next PING and reconnects. The answer is
            // never larger than the request, so a forged source gains nothing.
            // (Plaintext sessions only: a sealed session's client would not
            // believe an unauthenticated answer; its TCP heartbeat covers it.)
            let reply = ServerDatagram::UnknownToken.to_string();
            if matches!(d, ClientDatagram::Ping { .. }) && reply.len() <= bytes.len() {
                self.send_bytes(from, reply.into_bytes().into());
            }
            return self.drop_datagram(from, "unknown token");
        };
        if self
            .sessions
            .get(&user)
            .is_some_and(|s| s.sealed().is_some())
        {
            return self.drop_datagram(from, "plaintext datagram for a sealed session");
        }
        self.udp_request(now, from, user, d.request(), bytes.len());
    }

    /// The transport under `conn` is TLS and gave this secret (its exporter
    /// output for [`sealed::EXPORTER_LABEL`]). The session that logs in on
    /// `conn` then seals every datagram both ways. It must arrive before
    /// `LOGIN`: a session already running keeps its plaintext datagrams.
    pub(super) fn on_transport_secret(&mut self, conn: ConnId, secret: UdpSecret) {
        let logged_in = self.sessions.user_of(conn).is_some();
        if let Some(c) = self.conns.get_mut(&conn) {
            if logged_in {
                log::warn!("conn {conn}: transport secret after login ignored");
                return;
            }
            c.udp_secret = Some(Box::new(secret));
        }
    }

    /// At login on a TLS connection: the session's keys, filed by session id.
    pub(super) fn seal_session(&mut self, conn: ConnId, user: UserIdx) {
        let Some(secret) = self.conns.get(&conn).and_then(|c| c.udp_secret.as_deref()) else {
            return;
        };
        let ch = Channel::new(secret, Role::Server);
        if self.sessions.seal(user, ch) == Sealing::Collision {
            // 64-bit ids from independent secrets: practically never. The
            // session stays sealed (never plaintext); its datagrams find no
            // session, so its broadcasts arrive on TCP.
            log::warn!(
                "sealed session id collision; {} gets broadcasts on TCP",
                self.accounts.name(user)
            );
        }
    }

    /// A sealed datagram: find the session by id, authenticate, decrypt,
    /// refuse replays, then handle it like its plaintext twin.
    fn on_sealed(&mut self, now: Instant, from: SocketAddr, sid: SessionId, bytes: &[u8]) {
        let Some(user) = self.sessions.by_sid(&sid) else {
            return self.drop_datagram(from, "unknown sealed session");
        };
        let Some(ch) = self.sessions.get_mut(&user).and_then(|s| s.sealed_mut()) else {
            return self.drop_datagram(from, "unknown sealed session");
        };
        let body = match ch.open(bytes) {
            Ok(body) => body,
            Err(OpenError::Forged) => {
                self.stats.sealed_forged += 1;
                return self.drop_datagram(from, "sealed datagram failed authentication");
            }
            Err(OpenError::Replayed) => {
                self.stats.sealed_replayed += 1;
                return self.drop_datagram(from, "sealed datagram replayed");
            }
            Err(OpenError::Malformed) => return self.drop_datagram(from, "malformed sealed"),
        };
        let Some(req) = UdpRequest::parse(sealed::unpad(&body)) else {
            return self.drop_datagram(from, "malformed sealed body");
        };
        self.udp_request(now, from, user, req, bytes.len());
    }

    /// A request of `user`'s session, authenticated by its token, from `from`;
    /// `request_len` bytes long on the wire.
    fn udp_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        user: UserIdx,
        req: UdpRequest,
        request_len: usize,
    ) {
        let s = self.sessions.get(&user).expect("token maps to a session");
        let validated = s.udp == Some(from);
        match req {
            UdpRequest::Register { cookie } => {
                let bucket = self.cookie_bucket(now);
                let subject = s.token().mac_input();
                let proven = validated
                    || cookie.is_some_and(|c| self.cookies.check(bucket, from, subject, &c));
                if !proven {
                    let cookie = self.cookies.make(bucket, from, subject);
                    let text = ServerDatagram::Challenge { cookie }.to_string();
                    let Some(answer) = self.encode_for(user, text.as_bytes()) else {
                        return;
                    };
                    // Only a request at least as long as the answer gets one.
                    if answer.len() > request_len {
                        return self.drop_datagram(from, "REGISTER shorter than its CHALLENGE");
                    }
                    return self.send_bytes(from, answer);
                }
                let s = self
                    .sessions
                    .get_mut(&user)
                    .expect("token maps to a session");
                s.udp = Some(from);
                let was_waiting = std::mem::replace(&mut s.awaiting_register, false);
                if was_waiting {
                    let wait = super::engine::Timer::RegisterWait(user, s.serial());
                    self.timers.stop(&wait);
                }
                log::debug!(
                    "udp endpoint {from} registered for {}",
                    self.accounts.name(user)
                );
                self.datagram(user, from, ServerDatagram::Registered);
                if was_waiting {
                    self.deliver_pending(now, user);
                }
            }
            _ if !validated => self.drop_datagram(from, "unregistered address"),
            UdpRequest::Ping => self.datagram(user, from, ServerDatagram::Pong),
            UdpRequest::Ack { id } => {
                if self.book.is_recipient(id, user) {
                    self.delivered(user, id);
                }
                self.settle(now, user, id);
            }
        }
    }

    fn drop_datagram(&mut self, from: SocketAddr, why: &str) {
        self.stats.dropped_datagrams += 1;
        log::debug!("dropped datagram from {from}: {why}");
    }

    fn datagram(&mut self, user: UserIdx, to: SocketAddr, d: ServerDatagram) {
        if let Some(bytes) = self.encode_for(user, d.to_string().as_bytes()) {
            self.send_bytes(to, bytes);
        }
    }

    /// A datagram's bytes for `user`'s session: sealed if it is a TLS session,
    /// else as they are. `None` only if the session's counter ran out.
    fn encode_for(&mut self, user: UserIdx, text: &[u8]) -> Option<Rc<[u8]>> {
        match self.sessions.get_mut(&user).and_then(|s| s.sealed_mut()) {
            Some(ch) => ch.seal(text).map(Into::into),
            None => Some(text.into()),
        }
    }

    /// The one place a datagram is counted and handed to the driver.
    fn send_bytes(&mut self, to: SocketAddr, bytes: Rc<[u8]>) {
        self.stats.datagrams_sent += 1;
        self.push(Output::Datagram { to, bytes });
    }

    /// The broadcast is on disk: count its audience, queue the fan-out, reply.
    pub(super) fn start_broadcast(&mut self, _now: Instant, record: BroadcastRecord) -> ServerLine {
        let id = record.id;
        let expires = record.expires_unix;
        let audience = record.audience;
        log::info!(
            "broadcast {id} from {} to {} account(s)",
            record.from,
            audience.saturating_sub(1)
        );
        self.book.add(record, &self.accounts);
        // The cost of a broadcast follows who can receive it now, not every
        // account ever made: the fan-out visits the users online at this
        // moment; offline ones get it at login (`deliver_pending`, by the
        // O(1) rule "seq below the audience bound").
        let recipients = self.book.recipients_among(id, self.sessions.keys());
        let reached = recipients.len();
        let sender_counted = self
            .accounts
            .find(&self.book.get(id).expect("just added").from)
            .is_some_and(|s| s.0 < audience);
        let eligible = self.accounts.count_below(UserIdx(audience)) - usize::from(sender_counted);
        self.fanout.push_back(Fanout {
            id,
            recipients,
            next: 0,
        });
        self.arm_expiry_at(expires);
        ServerLine::Ok(OkReply::Broadcast {
            id,
            reached,
            pending: eligible - reached,
            expires,
        })
    }

    /// Hands up to `batch` recipients their copy of the oldest fan-out in progress.
    pub(super) fn run_fanout(&mut self, now: Instant, mut batch: usize) {
        while batch > 0 {
            let Some(f) = self.fanout.front_mut() else {
                return;
            };
            let id = f.id;
            let end = f.recipients.len().min(f.next + batch);
            let users: Vec<UserIdx> = f.recipients[f.next..end].to_vec();
            batch -= end - f.next;
            f.next = end;
            if end >= f.recipients.len() {
                self.fanout.pop_front();
            }
            if self.book.get(id).is_none() {
                continue; // expired meanwhile
            }
            for user in users {
                // Gone since the broadcast was made: it waits for their login.
                if self.sessions.contains_key(&user) {
                    self.deliver(now, user, id);
                }
            }
        }
    }

    /// Broadcast `id` is no longer in flight to `user` (ACKed, fallen back to
    /// TCP, or expired); held-back deliveries go out if there is room now.
    fn settle(&mut self, now: Instant, user: UserIdx, id: u64) {
        let refill = self
            .sessions
            .get_mut(&user)
            .is_some_and(|s| s.inflight.remove(id, &mut self.inflight_spare));
        if refill {
            self.deliver_pending(now, user);
        }
    }

    /// Everything still owed to a user who just became reachable (or whose
    /// window has room again).
    pub(super) fn deliver_pending(&mut self, now: Instant, user: UserIdx) {
        for id in self.book.pending_for(user, self.unix_secs(now)) {
            self.deliver(now, user, id);
        }
    }

    /// Starts delivering broadcast `id` to an online user: UDP if registered,
    /// TCP if not, nothing yet if we are waiting for the client to REGISTER.
    fn deliver(&mut self, now: Instant, user: UserIdx, id: u64) {
        if self.book.is_delivered(user, id) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        if s.awaiting_register || s.inflight.sent(id).is_some() {
            return;
        }
        match s.udp {
            Some(_) if !s.inflight.has_room() => s.inflight.held_back = true,
            Some(addr) => {
                s.inflight.start(id, &mut self.inflight_spare);
                let serial = s.serial();
                self.send_bcast(user, addr, id);
                self.arm_retransmit(now, user, serial, id, 1);
            }
            None => self.deliver_tcp(user, id),
        }
    }

    /// The plaintext encoding is shared across a fan-out; a sealed session
    /// gets its own sealed copy of it.
    fn send_bcast(&mut self, user: UserIdx, to: SocketAddr, id: u64) {
        let bytes = match &self.bcast_wire {
            Some((cached, bytes)) if *cached == id => Rc::clone(bytes),
            _ => {
                let Some(r) = self.book.get(id) else { return };
                let d = ServerDatagram::Bcast {
                    id,
                    from: r.from.clone(),
                    unix: r.created_unix,
                    text: r.text.clone(),
                };
                let bytes: Rc<[u8]> = d.to_string().into_bytes().into();
                self.bcast_wire = Some((id, Rc::clone(&bytes)));
                bytes
            }
        };
        let sealed = self.sessions.get_mut(&user).and_then(|s| s.sealed_mut());
        let bytes = match sealed {
            Some(ch) => match ch.seal(&bytes) {
                Some(b) => b.into(),
                None => return,
            },
            None => bytes,
        };
        self.send_bytes(to, bytes);
    }

    fn deliver_tcp(&mut self, user: UserIdx, id: u64) {
        let (Some(r), Some(s)) = (self.book.get(id), self.sessions.get(&user)) else {
            return;
        };
        let e = Event::Broadcast {
            id,
            from: r.from.clone(),
            unix: r.created_unix,
            text: r.text.clone(),
        };
        let conn = s.conn();
        self.line(conn, e);
        self.delivered(user, id);
    }

    fn delivered(&mut self, user: UserIdx, id: u64) {
        if self.book.mark_delivered(user, id) {
            self.push(Output::StoreDelivery(DeliveryRow::Got { user, id }));
        }
    }

    /// The retransmit (or TCP fallback) due after the `sent`-th datagram.
    fn arm_retransmit(&mut self, now: Instant, user: UserIdx, serial: u64, id: u64, sent: u32) {
        let p = Pending {
            user,
            serial,
            id,
            sent,
        };
        self.retransmits
            .arm(p.lane(), now + after_send(sent).wait(), p);
    }

    /// Drops the retransmits that ACKs, fallbacks, expiries and ended sessions
    /// cancelled from the lanes' fronts (after every input).
    pub(super) fn purge_retransmits(&mut self) {
        let sessions = &self.sessions;
        self.retransmits.purge(|p| {
            sessions
                .get(&p.user)
                .is_some_and(|s| s.serial() == p.serial && s.inflight.sent(p.id) == Some(p.sent))
        });
    }

    /// A retransmit came due: send again, or give up on UDP and use TCP.
    /// Skipped if it was cancelled (the delivery ended, or its session).
    pub(super) fn retransmit(&mut self, now: Instant, p: Pending) {
        let Pending {
            user,
            serial,
            id,
            sent,
        } = p;
        let Some(s) = self
            .sessions
            .get_mut(&user)
            .filter(|s| s.serial() == serial)
        else {
            return;
        };
        if s.inflight.sent(id) != Some(sent) {
            return;
        }
        if self.book.get(id).is_none() {
            self.settle(now, user, id);
            return;
        }
        match after_send(sent) {
            NextStep::Resend(_) => {
                s.inflight.set_sent(id, sent + 1);
                let addr = s.udp.expect("in flight implies a UDP endpoint");
                self.send_bcast(user, addr, id);
                self.arm_retransmit(now, user, serial, id, sent + 1);
            }
            NextStep::FallBack(_) => {
                self.stats.tcp_fallbacks += 1;
                log::debug!(
                    "broadcast {id}: no ACK from {}, falling back to TCP",
                    self.accounts.name(user)
                );
                self.deliver_tcp(user, id);
                self.settle(now, user, id);
            }
        }
    }
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    /// A session whose deliveries are acknowledged one by one keeps no
    /// allocation while idle, yet the next delivery reuses the list the last
    /// one emptied (no malloc per delivery); the spare lists are bounded.
    #[test]
    fn in_flight_lists_are_reused_not_reallocated_and_stay_bounded() {
        let mut spare = SpareLists::default();
        let mut s = Inflight::default();
        s.start(1, &mut spare);
        let list = s.entries.as_ptr();
        assert!(!s.remove(1, &mut spare));
        assert_eq!(s.entries.capacity(), 0, "idle: no allocation");
        assert_eq!(spare.len(), 1);
        for id in 2..100 {
            s.start(id, &mut spare);
            assert_eq!(s.entries.as_ptr(), list, "the same list again");
            assert_eq!(s.sent(id), Some(1));
            let _ = s.remove(id, &mut spare);
        }
        // A full window never grows the list past what it was made with.
        for id in 0..UDP_WINDOW as u64 {
            assert!(s.has_room());
            s.start(id, &mut spare);
        }
        assert!(!s.has_room());
        assert_eq!(
            (s.entries.as_ptr(), s.entries.capacity()),
            (list, UDP_WINDOW)
        );
        // Many sessions going idle at once keep at most SPARE_LISTS lists.
        let mut many: Vec<Inflight> = (0..SPARE_LISTS + 50).map(|_| Inflight::default()).collect();
        for m in &mut many {
            m.start(7, &mut spare);
        }
        for m in &mut many {
            let _ = m.remove(7, &mut spare);
        }
        assert_eq!(spare.len(), SPARE_LISTS);
    }
}
