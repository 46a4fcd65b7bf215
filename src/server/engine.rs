//! The server engine: every rule of the control protocol, sessions, presence,
//! introductions and broadcast delivery, as a pure state machine.
//!
//! One API, the sans-IO shape of str0m and quinn-proto: the driver feeds
//! `(now, input)` to [`Engine::handle`], drains [`Output`]s with
//! [`Engine::poll_output`] until there are none, and sleeps until
//! [`Engine::poll_timeout`]. Work that must run at once (queued outputs, a
//! hash or a fan-out in progress) is a deadline that has already passed, so a
//! driver that sleeps until the deadline cannot forget it. The engine never
//! touches a socket, a file or the clock: time arrives as `now`, file writes
//! leave as ordered outputs whose completion comes back as an input
//! ([`Input::UserStored`], [`Input::BroadcastStored`]) before the reply that
//! depends on them.
//!
//! The per-verb handlers live in `handlers.rs`, UDP and broadcast delivery in
//! `delivery.rs`; this file holds the state, the plumbing and the timers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::accounts::{Accounts, UserIdx, UserRow};
use super::broadcast::{BroadcastBook, BroadcastRecord, DeliveryRow};
use super::cookie::{self, CookieKey};
use super::dense::DenseMap;
use super::fair::FairQueue;
use super::kdf::{self, PasswordHash, Pbkdf2};
use super::limits::{self, ConnCount, GuessRules, Guesses, Rate, Source, Throttle};
use super::records::BroadcastFile;
use super::sessions::{Session, SessionTable};
use super::store::Snapshot;
use super::tls::PlaintextPolicy;
use crate::proto::names::Token;
use crate::proto::sealed::UdpSecret;
use crate::proto::{CancelReason, CloseReason, ErrorCode, Event, Frame, ServerLine};
use crate::rng::Random;

/// The driver's slab key for a TCP connection.
pub type ConnId = usize;

/// Iterations of PBKDF2 run per loop turn, across all pending hashes (~1 ms
/// at 108 ns each): long enough to make progress, short enough that other
/// clients' commands are answered promptly during a login storm.
pub const KDF_TURN_BUDGET: u32 = 8192;
/// Iterations one hash gets before the next queued hash has its turn.
const KDF_SLICE: u32 = 2048;
/// Broadcast recipients handled per loop turn.
pub const FANOUT_BATCH: usize = 512;
/// A connection's queued input lines while a hash or a store write is pending.
/// The driver feeds no frame while one is pending ([`Engine::accepts_input`]),
/// so this only bounds callers that feed regardless.
const BACKLOG_LIMIT: usize = 256;

/// Knobs, validated by the driver's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub session_ttl: Duration,
    pub reauth_grace: Duration,
    pub broadcast_ttl: Duration,
    pub request_ttl: Duration,
    pub idle_timeout: Duration,
    pub register_wait: Duration,
    pub max_clients: usize,
    pub kdf_iterations: u32,
    /// The start of `EVENT WELCOME` (`--welcome`); the LOGIN/SIGNUP hint follows.
    pub welcome: String,
    /// Who may send passwords without TLS (`--plaintext`).
    pub plaintext: PlaintextPolicy,
    /// Open connections per source; 0 = no limit.
    pub max_per_ip: u32,
    /// A connection that has not logged in this long after connecting is
    /// closed, however busy it keeps itself.
    pub login_timeout: Duration,
    /// False: `SIGNUP` gets `ERR signup-closed`.
    pub signup_open: bool,
    /// Signups per source per hour; 0 = no limit.
    pub signup_rate: u32,
    /// Broadcasts per user per minute; 0 = no limit.
    pub broadcast_rate: u32,
    pub guesses: GuessRules,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            session_ttl: Duration::from_secs(30 * 60),
            reauth_grace: Duration::from_secs(120),
            broadcast_ttl: Duration::from_secs(30 * 60),
            request_ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            register_wait: Duration::from_secs(3),
            max_clients: 10_000,
            kdf_iterations: kdf::DEFAULT_ITERATIONS,
            welcome: "peerline".to_owned(),
            plaintext: PlaintextPolicy::Loopback,
            max_per_ip: DEFAULT_MAX_PER_IP,
            login_timeout: Duration::from_secs(120),
            signup_open: true,
            signup_rate: DEFAULT_SIGNUP_RATE,
            broadcast_rate: DEFAULT_BROADCAST_RATE,
            guesses: GuessRules::default(),
        }
    }
}

/// Default `--max-per-ip`: enough for a household or an office behind one NAT
/// address, far from what it takes to hold a server's slots.
pub const DEFAULT_MAX_PER_IP: u32 = 16;
/// Default `--signup-rate` (per source per hour).
pub const DEFAULT_SIGNUP_RATE: u32 = 5;
/// Default `--broadcast-rate` (per user per minute).
pub const DEFAULT_BROADCAST_RATE: u32 = 30;

/// What happened, for [`Engine::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// A TCP connection was accepted.
    Connect { conn: ConnId, addr: SocketAddr },
    /// The connection turned out to speak TLS: passwords may come on it from
    /// anywhere. The only thing the engine knows of TLS.
    Secure { conn: ConnId },
    /// The TLS handshake of `conn` finished with this exporter secret; the
    /// session that logs in on it seals its datagrams.
    TransportSecret { conn: ConnId, secret: UdpSecret },
    /// One frame from a connection's line reader.
    Frame { conn: ConnId, frame: Frame },
    /// The peer will send nothing more (it half-closed, or closed entirely).
    InputEnd { conn: ConnId },
    /// The peer closed the connection (or it failed).
    Disconnect { conn: ConnId },
    /// The connection's output buffer is full: it is not reading.
    Overflow { conn: ConnId },
    /// A datagram arrived on the UDP port (from a canonical address).
    Datagram { from: SocketAddr, bytes: &'a [u8] },
    /// The result of an [`Output::StoreUser`], once fsynced (or failed).
    UserStored {
        conn: ConnId,
        row: UserRow,
        ok: bool,
    },
    /// The result of an [`Output::StoreBroadcast`], once fsynced (or failed).
    BroadcastStored {
        conn: ConnId,
        record: BroadcastRecord,
        ok: bool,
    },
    /// A request from admin channel `conn` (an id the driver never gives a
    /// TCP connection).
    Admin {
        conn: ConnId,
        req: super::admin::AdminRequest,
    },
    /// [`Engine::poll_timeout`] passed: fire due timers and do one bounded
    /// slice of pending work (hashes, fan-out).
    Timeout,
    /// SIGINT/SIGTERM: tell everyone, close everything.
    Shutdown,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue a line on a connection: its wire form and a `\n`. A typed
    /// line, formatted at the edge (`ServerLine::wire`); its `Debug`, for
    /// logs, never shows a token.
    Send { conn: ConnId, line: ServerLine },
    /// Close after sending what is queued. The engine has forgotten the connection.
    Close { conn: ConnId },
    /// Throw away what is queued (the peer is not reading), send `line`, close.
    Evict { conn: ConnId, line: ServerLine },
    /// The connection takes input again: read it even without a new event.
    Resume { conn: ConnId },
    /// Shared bytes: a fan-out sends one encoding to thousands.
    Datagram { to: SocketAddr, bytes: Rc<[u8]> },
    /// Append and fsync (one fsync may cover several rows of a turn), then
    /// call [`Engine::user_stored`].
    StoreUser { conn: ConnId, row: UserRow },
    /// Append and fsync (grouped like `StoreUser`), then call [`Engine::broadcast_stored`].
    StoreBroadcast {
        conn: ConnId,
        record: BroadcastRecord,
    },
    /// The answer to an admin-channel request: data lines, then `OK`/`ERR …`.
    AdminReply { conn: ConnId, lines: Vec<String> },
    /// Append (batched per turn; losing the tail to a crash means a duplicate, never a loss).
    StoreDelivery(DeliveryRow),
    /// Make every store write so far durable and report it, then rewrite
    /// broadcasts and deliveries with [`Engine::store_snapshot`] taken at that
    /// moment. A snapshot taken when this was pushed would lack a broadcast
    /// whose write was still in flight, and the rewrite would erase it.
    Compact,
}

/// Counters for logs and the benchmark.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub dropped_datagrams: u64,
    /// Of those dropped: sealed datagrams whose tag did not verify.
    pub sealed_forged: u64,
    /// Of those dropped: authentic sealed datagrams seen before (or too old).
    pub sealed_replayed: u64,
    pub datagrams_sent: u64,
    pub tcp_fallbacks: u64,
    /// LOGINs answered `OK` / `ERR bad-credentials` (or `account-disabled`).
    pub logins_ok: u64,
    pub logins_failed: u64,
    /// Requests refused with `ERR rate-limited` (the rate limiter counts them),
    /// and connections refused by `--max-per-ip`.
    pub rate_limited: u64,
    /// Sessions resumed by ticket (no password hash), and tickets refused.
    pub resumes_ok: u64,
    pub tickets_refused: u64,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub serial: u64,
    pub addr: SocketAddr,
    /// Set only by [`Engine::set_busy`].
    pub busy: Option<Busy>,
    /// Input that came while busy: boxed, as almost no connection has any.
    pub backlog: Backlog,
    pub last_input: Instant,
    /// The peer sent FIN but may still be reading (`printf … | nc -N`): close
    /// once everything it sent has been answered.
    pub input_ended: bool,
    /// The connection is TLS: the secret its session's datagrams are sealed with.
    pub udp_secret: Option<Box<UdpSecret>>,
    /// The connection speaks TLS (the driver says so before any of its lines).
    pub secure: bool,
}

/// Frames waiting for a connection's command to finish. A connection record
/// is held for every connection (issue 18, memory per session) and a backlog
/// is rare (input during a hash or a store write), so it is 8 bytes — an
/// empty `Option<Box<…>>` — until used, and freed again once drained.
#[derive(Debug, Default)]
// A boxed deque on purpose: 8 bytes in every record instead of 32.
#[allow(clippy::box_collection)]
pub(super) struct Backlog(Option<Box<VecDeque<Frame>>>);

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().map_or(true, |q| q.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub fn push_back(&mut self, frame: Frame) {
        self.0.get_or_insert_with(Default::default).push_back(frame);
    }

    pub fn pop_front(&mut self) -> Option<Frame> {
        let q = self.0.as_mut()?;
        let frame = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        frame
    }
}

#[derive(Debug)]
pub(super) enum Busy {
    Hashing(Box<KdfJob>),
    /// Waiting for the driver to report a store write.
    Storing,
}

#[derive(Debug)]
pub(super) struct KdfJob {
    pub kdf: Pbkdf2,
    pub purpose: Purpose,
    /// A password check (LOGIN, PASSWD's old password) for this account
    /// name: the guessing limits are checked again as the hash starts (see
    /// `run_kdf`), then this is cleared.
    pub guess: Option<String>,
}

#[derive(Debug)]
pub(super) enum Purpose {
    /// `account` is `None` for an unknown user: the hash runs against a dummy
    /// so the reply takes the same work either way.
    Login {
        account: Option<UserIdx>,
        typed: String,
    },
    Signup {
        name: String,
        salt: [u8; kdf::SALT_LEN],
        iterations: u32,
    },
    /// PASSWD, first hash: the old password against the account's. `next`
    /// is the new password's hash, run only if the old one matched (a
    /// `Pbkdf2` never shows its input, so the new password is kept nowhere else).
    PasswdCheck {
        account: UserIdx,
        next: Box<Pbkdf2>,
        salt: [u8; kdf::SALT_LEN],
        iterations: u32,
    },
    /// PASSWD, second hash: the new password's, to be stored.
    PasswdHash {
        account: UserIdx,
        salt: [u8; kdf::SALT_LEN],
        iterations: u32,
    },
}

/// What a connection's `Output::StoreUser` is for, when not a signup.
#[derive(Debug)]
pub(super) enum StoreWait {
    Passwd,
    Admin(super::admin::AdminOp),
}

/// [`Engine::reauth_live`], for callers that borrow only the session table.
fn reauth_is_live(sessions: &SessionTable, at: Instant, user: UserIdx, serial: u64) -> bool {
    sessions
        .get(&user)
        .is_some_and(|s| s.serial() == serial && s.reauth_at == at && s.grace_until.is_none())
}

/// A timer's kind and subject: one slot each in the timer table. The serial
/// is the subject's, so a slot never outlives what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    Idle(ConnId, u64),
    LoginDeadline(ConnId, u64),
    Grace(UserIdx, u64),
    Request(UserIdx, UserIdx, u64),
    RegisterWait(UserIdx, u64),
    /// One armed at a time (`Engine::expiry_at`), for the earliest expiry.
    Expiry,
    Compact,
}

pub struct Engine {
    pub(super) cfg: EngineConfig,
    /// Wall-clock anchor: `now` (monotonic) maps to unix time through it, so a
    /// wall-clock step after start moves no timer.
    epoch: Instant,
    epoch_unix_ms: u64,
    pub(super) accounts: Accounts,
    pub(super) book: BroadcastBook,
    pub(super) conns: DenseMap<ConnId, Conn>,
    /// Sessions, their indexes (token, sealed id, connection, `LIST` order)
    /// and pending introductions: `sessions.rs`.
    pub(super) sessions: SessionTable,
    /// Introductions whose simultaneous open is being timed (`punch.rs`).
    pub(super) punches: super::punch::Punches<UserIdx>,
    pub(super) pending_signups: HashSet<String>,
    /// Account rows in flight that are not signups, by the connection (or
    /// admin channel) waiting for them.
    pub(super) store_waits: HashMap<ConnId, StoreWait>,
    /// Hashes waiting for their slices, taking turns by source address.
    pub(super) kdf_queue: FairQueue<Source, (ConnId, u64)>,
    pub(super) conn_count: ConnCount,
    pub(super) guesses: Guesses,
    pub(super) signups: Throttle<Source>,
    pub(super) broadcasts_sent: Throttle<UserIdx>,
    /// Broadcasts being handed to online recipients: (id, next user index).
    pub(super) fanout: VecDeque<super::delivery::Fanout>,
    /// Emptied in-flight lists, reused (see `delivery::SpareLists`).
    pub(super) inflight_spare: super::delivery::SpareLists,
    /// Plaintext ACKs that came while a fan-out was still sending, handled
    /// once it has sent (`delivery.rs`, `ParkedAcks`).
    pub(super) parked: super::delivery::ParkedAcks,
    /// Who watches whose presence (`WATCH`), see `presence.rs`.
    pub(super) presence: super::presence::Presence,
    pub(super) timers: crate::server::timers::Timers<Timer>,
    /// Broadcast retransmits, apart from `timers`: one per datagram sent,
    /// cancelled by its ACK without a lookup (`retransmit.rs`).
    pub(super) retransmits: super::retransmit::Lanes<super::retransmit::Pending>,
    /// Every session's re-login (`EVENT REAUTH`) deadline, apart from
    /// `timers`: 32 bytes per session instead of ~160, never stopped — an
    /// entry whose session ended or re-logged in is dead
    /// ([`Engine::reauth_live`]) and dropped unseen (`timers::Lazy`).
    pub(super) reauths: crate::server::timers::Lazy<(UserIdx, u64)>,
    outputs: VecDeque<Output>,
    /// The last `BCAST` datagram encoded, by broadcast id: a fan-out sends the
    /// same bytes to every recipient, so it is encoded once, not 10,000 times.
    pub(super) bcast_wire: Option<(u64, Rc<[u8]>)>,
    serial: u64,
    pub(super) dummy: PasswordHash,
    /// Signs `CHALLENGE` cookies; random per process.
    pub(super) cookies: CookieKey,
    /// Session resumption tickets (`resume.rs`); the key comes from the data
    /// dir ([`Engine::with_resume_key`]), random until then.
    pub(super) tickets: super::resume::Tickets,
    last_compact: Option<Instant>,
    compact_armed: bool,
    /// When the one `Timer::Expiry` armed is due. Arming one per broadcast
    /// (and one per firing) piled up a timer per broadcast.
    expiry_at: Option<Instant>,
    /// Every random byte the engine uses (tokens, salts, the cookie key, the
    /// resume key until the data dir's replaces it):
    /// the OS in the server, a seeded generator in tests.
    pub(super) rng: Box<dyn Random>,
    /// The latest `now` handed in: what [`Engine::poll_timeout`] answers
    /// while work is waiting.
    now: Instant,
    pub stats: Stats,
}

impl Engine {
    /// Builds the engine from what the store loaded. `now_unix_ms` is the wall
    /// clock at `now`; `rng` gives every random byte (the driver's is the OS).
    /// Emits a compaction of the loaded broadcast state.
    pub fn new(
        cfg: EngineConfig,
        users: Vec<UserRow>,
        broadcasts: BroadcastFile,
        deliveries: Vec<DeliveryRow>,
        now: Instant,
        now_unix_ms: u64,
        mut rng: Box<dyn Random>,
    ) -> Engine {
        let accounts = Accounts::load(users);
        let book = BroadcastBook::load(
            broadcasts.records,
            broadcasts.next_id,
            deliveries,
            &accounts,
            now_unix_ms / 1000,
        );
        let iterations = cfg.kdf_iterations;
        let guesses = Guesses::new(cfg.guesses);
        let signups = Throttle::new(
            Rate::at_most(cfg.signup_rate, Duration::from_secs(3600)),
            limits::TABLE_CAPACITY,
        );
        let broadcasts_sent = Throttle::new(
            Rate::at_most(cfg.broadcast_rate, Duration::from_secs(60)),
            limits::TABLE_CAPACITY,
        );
        let dummy_salt = kdf::random_salt(rng.as_mut());
        let cookies = CookieKey::random(rng.as_mut());
        let resume_key = super::resume::ResumeKey::random(rng.as_mut());
        let mut e = Engine {
            cfg,
            epoch: now,
            epoch_unix_ms: now_unix_ms,
            accounts,
            book,
            conns: DenseMap::default(),
            sessions: SessionTable::default(),
            punches: Default::default(),
            pending_signups: HashSet::new(),
            store_waits: HashMap::new(),
            kdf_queue: FairQueue::default(),
            conn_count: ConnCount::default(),
            guesses,
            signups,
            broadcasts_sent,
            fanout: VecDeque::new(),
            inflight_spare: Default::default(),
            parked: Default::default(),
            presence: Default::default(),
            timers: Default::default(),
            retransmits: Default::default(),
            reauths: Default::default(),
            outputs: VecDeque::new(),
            bcast_wire: None,
            serial: 0,
            dummy: PasswordHash {
                iterations,
                salt: dummy_salt,
                hash: [0; kdf::HASH_LEN],
            },
            cookies,
            tickets: super::resume::Tickets::new(resume_key),
            last_compact: None,
            compact_armed: false,
            expiry_at: None,
            rng,
            now,
            stats: Stats::default(),
        };
        e.arm_expiry();
        e.compact(now);
        e
    }

    /// Replaces the random cookie secret (tests make cookies predictable).
    pub fn with_cookie_key(mut self, key: CookieKey) -> Engine {
        self.cookies = key;
        self
    }

    /// The data dir's resume key: tickets survive a restart.
    pub fn with_resume_key(mut self, key: super::resume::ResumeKey) -> Engine {
        self.tickets = super::resume::Tickets::new(key);
        self
    }

    pub fn accounts_len(&self) -> usize {
        self.accounts.len()
    }

    pub fn online(&self) -> usize {
        self.sessions.len()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The engine's half of `peerline-server stats` and `/metrics`, by the
    /// names the contract gives (the driver adds uptime and its own drops).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let (mut registered, mut pending) = (0u64, 0u64);
        for (_, s) in self.sessions.iter() {
            registered += u64::from(s.udp.is_some());
            pending += s.inflight.len() as u64;
        }
        vec![
            ("connections", self.conns.len() as u64),
            ("sessions", self.sessions.len() as u64),
            ("accounts", self.accounts.len() as u64),
            ("udp_registered", registered),
            ("broadcasts_live", self.book.live_count() as u64),
            ("deliveries_pending", pending),
            ("logins_ok", self.stats.logins_ok),
            ("logins_failed", self.stats.logins_failed),
            ("rate_limited", self.stats.rate_limited),
            ("datagrams_sent", self.stats.datagrams_sent),
            ("datagrams_dropped", self.stats.dropped_datagrams),
            ("tcp_fallbacks", self.stats.tcp_fallbacks),
        ]
    }

    pub fn live_broadcasts(&self) -> usize {
        self.book.live_count()
    }

    // ---- inputs -------------------------------------------------------------

    /// Feeds one input. Then drain [`Engine::poll_output`] and sleep until
    /// [`Engine::poll_timeout`].
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        self.now = self.now.max(now);
        match input {
            Input::Connect { conn, addr } => self.on_connect(now, conn, addr),
            Input::Secure { conn } => self.on_secure(conn),
            Input::TransportSecret { conn, secret } => self.on_transport_secret(conn, secret),
            Input::Frame { conn, frame } => self.on_frame(now, conn, frame),
            Input::InputEnd { conn } => self.on_input_end(now, conn),
            Input::Disconnect { conn } => self.on_disconnect(now, conn),
            Input::Overflow { conn } => self.on_overflow(now, conn),
            Input::Datagram { from, bytes } => self.on_datagram(now, from, bytes),
            Input::UserStored { conn, row, ok } => self.user_stored(now, conn, row, ok),
            Input::BroadcastStored { conn, record, ok } => {
                self.broadcast_stored(now, conn, record, ok)
            }
            Input::Admin { conn, req } => self.on_admin(now, conn, req),
            Input::Timeout => self.on_timeout(now),
            Input::Shutdown => self.shutdown(now),
        }
        // ACKs and ended sessions cancel retransmits; none may set the deadline.
        self.purge_retransmits();
        // Nor may an ended or renewed session's re-login timer.
        self.purge_reauths();
    }

    /// Sizes the per-connection and per-session tables for `n` connections
    /// at once (the driver's bound on descriptors), so they never double as
    /// sessions come: untouched room costs address space, not RSS (`dense.rs`).
    pub fn reserve_connections(&mut self, n: usize) {
        self.conns.reserve(n, n);
        self.sessions.reserve(n);
    }

    /// A TCP connection was accepted.
    fn on_connect(&mut self, now: Instant, conn: ConnId, addr: SocketAddr) {
        if self.conns.len() >= self.cfg.max_clients {
            log::warn!(
                "refusing {addr}: {} connections is the limit",
                self.cfg.max_clients
            );
            let text = format!(
                "the server holds {} connections already; try later",
                self.cfg.max_clients
            );
            self.line(
                conn,
                Event::Closing {
                    reason: CloseReason::ServerFull,
                    text,
                },
            );
            self.push(Output::Close { conn });
            return;
        }
        let src = Source::of(addr.ip());
        if let Some(refusal) = self.admission(src) {
            self.stats.rate_limited += 1;
            let (reason, text) = refusal;
            log::warn!("refusing {addr}: {text}");
            self.line(conn, Event::Closing { reason, text });
            self.push(Output::Close { conn });
            return;
        }
        self.conn_count.opened(src);
        log::info!("connect {addr} (conn {conn})");
        let serial = self.next_serial();
        self.conns.insert(
            conn,
            Conn {
                serial,
                addr,
                busy: None,
                backlog: Backlog::default(),
                last_input: now,
                input_ended: false,
                udp_secret: None,
                secure: false,
            },
        );
        self.timers
            .arm(now + self.cfg.idle_timeout, Timer::Idle(conn, serial));
        self.timers.arm(
            now + self.cfg.login_timeout,
            Timer::LoginDeadline(conn, serial),
        );
        let text = format!(
            "{}: LOGIN <user> <password> or SIGNUP <user> <password> <password-again>",
            self.cfg.welcome
        );
        self.line(conn, Event::Welcome { text });
    }

    /// The connection turned out to speak TLS: passwords may come on it from
    /// anywhere. The only thing the engine knows of TLS.
    fn on_secure(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.secure = true;
        }
    }

    /// A password on this connection would cross a network in clear.
    pub(super) fn plaintext_refused(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| !c.secure && !self.cfg.plaintext.allows(c.addr.ip()))
    }

    /// Whether a new connection from `src` must be refused, and how.
    fn admission(&self, src: Source) -> Option<(CloseReason, String)> {
        let max = self.cfg.max_per_ip;
        if max > 0 && self.conn_count.of(src) >= max {
            let text = format!("{max} connections from {src} is the limit; close one first");
            return Some((CloseReason::PerIpLimit, text));
        }
        let cap = limits::unauthenticated_cap(self.cfg.max_clients);
        if self.conn_count.unauthenticated() >= cap {
            let text = format!(
                "{cap} connections are waiting to log in already (the rest of the {} is kept for sessions); try later",
                self.cfg.max_clients
            );
            return Some((CloseReason::ServerFull, text));
        }
        None
    }

    /// One frame from a connection's line reader.
    fn on_frame(&mut self, now: Instant, conn: ConnId, frame: Frame) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_input = now;
        if c.busy.is_some() || !c.backlog.is_empty() {
            c.backlog.push_back(frame);
            return;
        }
        self.handle_frame(now, conn, frame);
    }

    /// False while a connection's earlier command is still being worked on
    /// (a hash, a store write): the driver takes no more of its input until
    /// [`Output::Resume`]. Frames left unread cost the kernel's buffer, not
    /// ours, and nothing the connection sends later is worked on before the
    /// driver has seen the output of what came first (output backpressure
    /// needs that: a backlog drained at once would bypass it).
    pub fn accepts_input(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.busy.is_none() && c.backlog.len() < BACKLOG_LIMIT)
    }

    /// The peer closed the connection (or it failed).
    pub(super) fn on_disconnect(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            log::info!("disconnect {} (conn {conn})", c.addr);
        }
        self.forget(now, conn);
    }

    /// The peer will send nothing more (it half-closed, or closed entirely).
    /// Treating this as a disconnect at once threw away the replies to what it
    /// had just sent, and a SIGNUP still being hashed was never stored; so
    /// queued commands are answered first, then the session ends and the
    /// connection closes (a peer that is really gone makes the writes fail,
    /// which the driver reports as a disconnect).
    fn on_input_end(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.busy.is_some() || !c.backlog.is_empty() {
            c.input_ended = true;
            return;
        }
        log::info!("end of input from {} (conn {conn})", c.addr);
        self.forget(now, conn);
        self.push(Output::Close { conn });
    }

    /// The connection's output buffer is full: it is not reading.
    fn on_overflow(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            log::warn!(
                "slow reader {} (conn {conn}): output buffer full, disconnecting",
                c.addr
            );
        }
        let text = "output buffer full; read faster".to_owned();
        let line = ServerLine::Event(Event::Closing {
            reason: CloseReason::SlowReader,
            text,
        });
        self.forget(now, conn);
        self.push(Output::Evict { conn, line });
    }

    /// Result of an [`Output::StoreUser`].
    fn user_stored(&mut self, now: Instant, conn: ConnId, row: UserRow, ok: bool) {
        match self.store_waits.remove(&conn) {
            Some(StoreWait::Admin(op)) => return self.admin_stored(now, conn, op, row, ok),
            Some(StoreWait::Passwd) => {
                let reply = if ok {
                    log::info!("password changed for {}", row.username());
                    self.revoke_tickets(now, row.seq());
                    self.accounts.apply(row);
                    ServerLine::Ok(crate::proto::OkReply::Passwd)
                } else {
                    ServerLine::err(ErrorCode::Internal)
                };
                return self.finish_busy(now, conn, reply);
            }
            None => {}
        }
        self.pending_signups
            .remove(&row.username().to_ascii_lowercase());
        let name = row.username().to_owned();
        let reply = if ok {
            self.accounts.apply(row);
            log::info!("signup {name}");
            ServerLine::Ok(crate::proto::OkReply::Signup { user: name })
        } else {
            ServerLine::err(ErrorCode::Internal)
        };
        self.finish_busy(now, conn, reply);
    }

    /// Result of an [`Output::StoreBroadcast`].
    fn broadcast_stored(&mut self, now: Instant, conn: ConnId, record: BroadcastRecord, ok: bool) {
        let reply = if ok {
            self.start_broadcast(now, record)
        } else {
            ServerLine::err(ErrorCode::Internal)
        };
        self.finish_busy(now, conn, reply);
    }

    /// Fires due timers and does one bounded slice of pending work.
    fn on_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            self.fire(now, t);
        }
        while let Some(p) = self.retransmits.pop_due(now) {
            self.retransmit(now, p);
        }
        while let Some((at, (user, serial))) = self.reauths.pop_due(now) {
            if self.reauth_live(at, user, serial) {
                self.fire_reauth(now, user, serial);
            }
        }
        self.run_kdf(now, KDF_TURN_BUDGET);
        self.run_fanout(now, FANOUT_BATCH);
        self.run_parked(now, super::delivery::PARKED_TURN_BUDGET);
    }

    /// SIGHUP: new settings apply from now on. Timers already armed keep their
    /// deadlines; the next one of each kind uses the new value.
    pub fn set_config(&mut self, cfg: EngineConfig) {
        // Unknown-user logins must keep costing what a real one costs.
        self.dummy.iterations = cfg.kdf_iterations;
        // The other limits read `cfg` where they apply; these two keep state.
        self.signups
            .set_rate(Rate::at_most(cfg.signup_rate, Duration::from_secs(3600)));
        self.broadcasts_sent
            .set_rate(Rate::at_most(cfg.broadcast_rate, Duration::from_secs(60)));
        self.cfg = cfg;
    }

    /// SIGINT/SIGTERM: tell everyone, close everything.
    fn shutdown(&mut self, now: Instant) {
        self.handle_parked(now, usize::MAX);
        let conns: Vec<ConnId> = self.conns.keys().collect();
        for conn in conns {
            self.close_with(
                now,
                conn,
                CloseReason::Shutdown,
                "the server is shutting down",
            );
        }
        self.compact(now);
    }

    // ---- outputs ------------------------------------------------------------

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the engine next needs [`Input::Timeout`]. Work to do at once —
    /// outputs not yet polled, a hash or a fan-out in progress — is the
    /// latest `now` it was given, a deadline already passed: a driver that
    /// sleeps until this cannot leave work behind.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Parked ACKs are due once the fan-out they waited for is out, so
        // with `fanout` empty they are work to do now.
        if !self.outputs.is_empty()
            || !self.kdf_queue.is_empty()
            || !self.fanout.is_empty()
            || !self.parked.is_empty()
        {
            return Some(self.now);
        }
        [
            self.timers.next_deadline(),
            self.retransmits.next_deadline(),
            self.reauths.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Hashes or fan-outs in progress (tests look at the work itself;
    /// drivers only ever need [`Engine::poll_timeout`]).
    #[cfg(test)]
    pub(super) fn has_work(&self) -> bool {
        !self.kdf_queue.is_empty() || !self.fanout.is_empty() || !self.parked.is_empty()
    }

    // ---- plumbing shared by the handlers --------------------------------------

    pub(super) fn push(&mut self, o: Output) {
        self.outputs.push_back(o);
    }

    pub(super) fn line(&mut self, conn: ConnId, line: impl Into<ServerLine>) {
        let line = line.into();
        log::debug!("conn {conn} << {line:?}");
        self.push(Output::Send { conn, line });
    }

    pub(super) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    pub(super) fn unix_ms(&self, now: Instant) -> u64 {
        self.epoch_unix_ms + now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub(super) fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_ms(now) / 1000
    }

    /// The cookie time bucket of `now`: monotonic, so a wall-clock step
    /// neither revives nor kills cookies.
    pub(super) fn cookie_bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / cookie::BUCKET.as_secs()
    }

    pub(super) fn instant_of_unix(&self, unix_secs: u64) -> Instant {
        let ms = (unix_secs * 1000).saturating_sub(self.epoch_unix_ms);
        self.epoch + Duration::from_millis(ms)
    }

    /// Sends `EVENT CLOSING`, ends the session and closes the connection.
    pub(super) fn close_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: CloseReason,
        text: &str,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        log::info!("closing conn {conn}: {}", reason.as_str());
        self.line(
            conn,
            Event::Closing {
                reason,
                text: text.to_owned(),
            },
        );
        self.forget(now, conn);
        self.push(Output::Close { conn });
    }

    /// Drops every trace of a connection (and its session) without output to it.
    fn forget(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.stop_conn_timers(conn, c.serial);
            let user = self.sessions.user_of(conn);
            self.conn_count
                .closed(Source::of(c.addr.ip()), user.is_some());
            if let Some(user) = user {
                self.end_session(now, user, conn);
            }
        }
    }

    /// A closed connection's timers (a session's are stopped when it ends).
    fn stop_conn_timers(&mut self, conn: ConnId, serial: u64) {
        self.timers.stop(&Timer::Idle(conn, serial));
        self.timers.stop(&Timer::LoginDeadline(conn, serial));
    }

    /// A command finished: send its reply, then work through queued input.
    pub(super) fn finish_busy(&mut self, now: Instant, conn: ConnId, reply: ServerLine) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.set_busy(conn, None);
        self.line(conn, reply);
        self.drain_backlog(now, conn);
    }

    /// The one writer of a connection's busy state: a connection is busy
    /// from the moment its command starts a hash ([`Engine::start_hash`]) or
    /// a store write ([`Engine::await_store`]) until [`Engine::finish_busy`]
    /// replies, and takes no input meanwhile. Returns the state it replaces.
    fn set_busy(&mut self, conn: ConnId, busy: Option<Busy>) -> Option<Busy> {
        let c = self.conns.get_mut(&conn)?;
        std::mem::replace(&mut c.busy, busy)
    }

    /// `conn`'s command waits for a store write: `out` goes to the driver,
    /// whose report of it ([`Input::UserStored`], [`Input::BroadcastStored`])
    /// finishes the command.
    pub(super) fn await_store(&mut self, conn: ConnId, out: Output) {
        self.set_busy(conn, Some(Busy::Storing));
        self.push(out);
    }

    fn drain_backlog(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.busy.is_some() {
                return;
            }
            match c.backlog.pop_front() {
                Some(frame) => self.handle_frame(now, conn, frame),
                None if c.input_ended => {
                    // Everything the peer sent before its FIN is answered.
                    self.forget(now, conn);
                    self.push(Output::Close { conn });
                    return;
                }
                None => {
                    self.push(Output::Resume { conn });
                    return;
                }
            }
        }
    }

    /// Starts a session for `user` on `conn` after a successful LOGIN.
    pub(super) fn start_session(&mut self, now: Instant, conn: ConnId, user: UserIdx) -> Token {
        if let Some(old) = self.sessions.conn_of(user) {
            self.close_with(
                now,
                old,
                CloseReason::Replaced,
                "you logged in from another connection",
            );
        }
        let serial = self.next_serial();
        let token = Token::random(self.rng.as_mut());
        let reauth_at = now + self.cfg.session_ttl;
        self.sessions
            .insert(user, conn, serial, token.clone(), reauth_at)
            .expect(
                "the user's older session was closed, and a logged-in conn re-logs in by renewing",
            );
        self.seal_session(conn, user);
        if let Some(c) = self.conns.get(&conn) {
            self.conn_count.logged_in();
            // The pre-login limits are done with: stopped, not left to
            // wake the loop for nothing.
            self.timers.stop(&Timer::Idle(conn, c.serial));
            self.timers.stop(&Timer::LoginDeadline(conn, c.serial));
        }
        self.reauths.arm(reauth_at, (user, serial));
        self.timers.arm(
            now + self.cfg.register_wait,
            Timer::RegisterWait(user, serial),
        );
        log::info!("login {} (conn {conn})", self.accounts.name(user));
        self.announce_online(now, user);
        token
    }

    /// A successful re-LOGIN on the session's own connection: same token, same
    /// place in LIST, next REAUTH a full TTL from now.
    pub(super) fn renew_session(&mut self, now: Instant, user: UserIdx) -> Token {
        let s = self
            .sessions
            .get_mut(&user)
            .expect("renewing a live session");
        s.grace_until = None;
        s.reauth_at = now + self.cfg.session_ttl;
        let serial = s.serial();
        self.timers.stop(&Timer::Grace(user, serial));
        let token = s.token().clone();
        // The entry armed before is dead now: its deadline is not `reauth_at`.
        self.reauths.arm(now + self.cfg.session_ttl, (user, serial));
        log::info!("re-login {}", self.accounts.name(user));
        token
    }

    fn end_session(&mut self, now: Instant, user: UserIdx, conn: ConnId) {
        if self.sessions.conn_of(user) != Some(conn) {
            return;
        }
        let ended = self.sessions.remove(user).expect("checked above");
        let serial = ended.session.serial();
        // Its re-login timer is dead with it (`reauth_live`), not looked up.
        for t in [
            Timer::Grace(user, serial),
            Timer::RegisterWait(user, serial),
        ] {
            self.timers.stop(&t);
        }
        log::info!("offline {}", self.accounts.name(user));
        self.announce_offline(user);
        let _ = now;
        let name = self.accounts.name(user).to_owned();
        self.punches.forget(user);
        for ((from, to), request) in ended.requests {
            self.timers.stop(&Timer::Request(from, to, request.serial));
            let other = if from == user { to } else { from };
            if let Some(oc) = self.sessions.conn_of(other) {
                self.line(
                    oc,
                    Event::Cancelled {
                        user: name.clone(),
                        reason: CancelReason::Offline,
                    },
                );
            }
        }
    }

    // ---- timers ---------------------------------------------------------------

    fn fire(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::Idle(conn, serial) => self.fire_idle(now, conn, serial),
            Timer::LoginDeadline(conn, serial) => self.fire_login_deadline(now, conn, serial),
            Timer::Grace(user, serial) => self.fire_grace(now, user, serial),
            Timer::Request(from, to, serial) => self.fire_request(from, to, serial),
            Timer::RegisterWait(user, serial) => self.fire_register_wait(now, user, serial),
            Timer::Expiry => self.fire_expiry(now),
            Timer::Compact => self.fire_compact(now),
        }
    }

    /// Silent for `idle_timeout` before login: closed (else re-armed).
    fn fire_idle(&mut self, now: Instant, conn: ConnId, serial: u64) {
        let Some(c) = self.conns.get(&conn).filter(|c| c.serial == serial) else {
            return;
        };
        if self.sessions.user_of(conn).is_some() {
            return;
        }
        if c.busy.is_some() {
            // Not silent while we owe it an answer (a hash can wait in the
            // fair queue for long); but the rule must outlive the answer, or
            // a wrong LOGIN would leave only the login deadline to close it.
            let again = now + self.cfg.idle_timeout;
            self.timers.arm(again, Timer::Idle(conn, serial));
            return;
        }
        let due = c.last_input + self.cfg.idle_timeout;
        if due <= now {
            let secs = self.cfg.idle_timeout.as_secs();
            self.close_with(
                now,
                conn,
                CloseReason::Idle,
                &format!("no login within {secs} s of inactivity"),
            );
        } else {
            self.timers.arm(due, Timer::Idle(conn, serial));
        }
    }

    /// `login_timeout` after connecting: closed if not logged in.
    fn fire_login_deadline(&mut self, now: Instant, conn: ConnId, serial: u64) {
        if !self.conns.get(&conn).is_some_and(|c| c.serial == serial) {
            return;
        }
        // However busy it kept itself (PINGs, a LOGIN being hashed).
        if self.sessions.user_of(conn).is_none() {
            let secs = self.cfg.login_timeout.as_secs();
            self.close_with(
                now,
                conn,
                CloseReason::Idle,
                &format!("no login within {secs} s of connecting"),
            );
        }
    }

    /// A session's TTL is up: `EVENT REAUTH`, and the grace timer.
    fn fire_reauth(&mut self, now: Instant, user: UserIdx, serial: u64) {
        let Some(s) = self.session_if(user, serial) else {
            return;
        };
        // Armed before a later re-login: that one armed its own timer.
        if now < s.reauth_at {
            return;
        }
        let conn = s.conn();
        let grace = self.cfg.reauth_grace;
        self.sessions.get_mut(&user).unwrap().grace_until = Some(now + grace);
        self.line(
            conn,
            Event::Reauth {
                seconds: grace.as_secs().max(1),
            },
        );
        self.timers.arm(now + grace, Timer::Grace(user, serial));
    }

    /// The REAUTH grace is over without a LOGIN: the session ends.
    fn fire_grace(&mut self, now: Instant, user: UserIdx, serial: u64) {
        let Some(s) = self.session_if(user, serial) else {
            return;
        };
        let (conn, until) = (s.conn(), s.grace_until);
        let hashing = self
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(c.busy, Some(Busy::Hashing(_))));
        // A re-LOGIN still being hashed decides for itself when it completes.
        if until.is_some_and(|u| u <= now) && !hashing {
            self.close_with(
                now,
                conn,
                CloseReason::SessionExpired,
                "no LOGIN in answer to REAUTH",
            );
        }
    }

    /// An introduction nobody answered: both sides are told.
    fn fire_request(&mut self, from: UserIdx, to: UserIdx, serial: u64) {
        if self.sessions.request(from, to).map(|r| r.serial) != Some(serial) {
            return;
        }
        self.sessions.take_request(from, to);
        let (fname, tname) = (
            self.accounts.name(from).to_owned(),
            self.accounts.name(to).to_owned(),
        );
        if let Some(c) = self.sessions.conn_of(from) {
            self.line(
                c,
                Event::Cancelled {
                    user: tname,
                    reason: CancelReason::Expired,
                },
            );
        }
        if let Some(c) = self.sessions.conn_of(to) {
            self.line(
                c,
                Event::Cancelled {
                    user: fname,
                    reason: CancelReason::Expired,
                },
            );
        }
    }

    /// A new session did not `REGISTER` in time: its deliveries go by TCP.
    fn fire_register_wait(&mut self, now: Instant, user: UserIdx, serial: u64) {
        if self
            .session_if(user, serial)
            .is_some_and(|s| s.awaiting_register)
        {
            self.sessions.get_mut(&user).unwrap().awaiting_register = false;
            self.deliver_pending(now, user);
        }
    }

    /// The earliest broadcast expiry: purge, compact, arm for the next.
    fn fire_expiry(&mut self, now: Instant) {
        if self.expiry_at.is_some_and(|at| at > now) {
            return; // an earlier arming, superseded
        }
        self.expiry_at = None;
        let n = self.book.purge_expired(self.unix_secs(now));
        if n > 0 {
            log::info!("{n} broadcast(s) expired");
            self.compact(now);
        }
        self.arm_expiry();
    }

    fn fire_compact(&mut self, now: Instant) {
        self.compact_armed = false;
        self.compact(now);
    }

    pub(super) fn session_if(&self, user: UserIdx, serial: u64) -> Option<&Session> {
        self.sessions.get(&user).filter(|s| s.serial() == serial)
    }

    /// Whether a re-login timer entry is the one its session waits for: the
    /// session is still there, its deadline is this one (a re-login or a
    /// resumption moved it, leaving the older entry dead), and its REAUTH has
    /// not been sent yet (an entry armed twice for one deadline fires once).
    fn reauth_live(&self, at: Instant, user: UserIdx, serial: u64) -> bool {
        reauth_is_live(&self.sessions, at, user, serial)
    }

    /// Drops dead re-login entries from the front (after every input), so an
    /// ended session's timer never wakes the loop; and all of them once they
    /// could outnumber the sessions online.
    fn purge_reauths(&mut self) {
        let sessions = &self.sessions;
        self.reauths.purge(sessions.len(), |at, &(user, serial)| {
            reauth_is_live(sessions, at, user, serial)
        });
    }

    /// Makes sure the one expiry timer is armed for the earliest expiry.
    pub(super) fn arm_expiry(&mut self) {
        if let Some(unix) = self.book.next_expiry() {
            self.arm_expiry_at(unix);
        }
    }

    /// A broadcast expiring at `unix` was added: arm only if it is the
    /// earliest (with a fixed TTL it never is once one timer is armed).
    pub(super) fn arm_expiry_at(&mut self, unix: u64) {
        let at = self.instant_of_unix(unix);
        if self.expiry_at.is_some_and(|armed| armed <= at) {
            return;
        }
        self.expiry_at = Some(at);
        self.timers.arm(at, Timer::Expiry);
    }

    /// How many expiry timers are armed (tests: one per kind, not per broadcast).
    #[cfg(test)]
    pub(super) fn expiry_timers(&self) -> usize {
        self.timers.count(|t| *t == Timer::Expiry)
    }

    /// The broadcast state as the store should hold it after compaction.
    pub fn store_snapshot(&self) -> Snapshot {
        self.book.snapshot()
    }

    /// Rewrites the broadcast store, at most once a minute.
    fn compact(&mut self, now: Instant) {
        const EVERY: Duration = Duration::from_secs(60);
        match self.last_compact {
            Some(last) if now < last + EVERY => {
                if !self.compact_armed {
                    self.compact_armed = true;
                    self.timers.arm(last + EVERY, Timer::Compact);
                }
            }
            _ => {
                self.last_compact = Some(now);
                self.push(Output::Compact);
            }
        }
    }

    // ---- the KDF worker -------------------------------------------------------

    /// Runs up to `budget` PBKDF2 iterations, round-robin across the sources
    /// with queued hashes (not across hashes: see `fair.rs`).
    fn run_kdf(&mut self, now: Instant, mut budget: u32) {
        while budget > 0 {
            let Some((src, (conn, serial))) = self.kdf_queue.pop() else {
                return;
            };
            let Some(c) = self.conns.get_mut(&conn).filter(|c| c.serial == serial) else {
                continue;
            };
            let Some(Busy::Hashing(job)) = c.busy.as_mut() else {
                continue;
            };
            // A LOGIN is checked against the guessing limits again as its hash
            // starts: this source's earlier hashes have finished by now (one
            // at a time per source), so their failures count.
            if let Some(name) = job.guess.take() {
                if let Err(refusal) = self.guesses.begin(now, src, &name) {
                    let reply = self.guess_refusal(refusal);
                    self.finish_busy(now, conn, reply);
                    continue;
                }
            }
            let Some(Busy::Hashing(job)) = c.busy.as_mut() else {
                continue;
            };
            budget -= job.kdf.step(KDF_SLICE.min(budget));
            if job.kdf.is_done() {
                let Some(Busy::Hashing(job)) = self.set_busy(conn, None) else {
                    unreachable!("checked above")
                };
                self.hash_done(now, conn, *job);
            } else {
                self.kdf_queue.push_front(src, (conn, serial));
            }
        }
    }

    /// Queues a hash for `conn`; its command completes in `hash_done`.
    pub(super) fn start_hash(&mut self, conn: ConnId, job: KdfJob) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (src, serial) = (Source::of(c.addr.ip()), c.serial);
        self.set_busy(conn, Some(Busy::Hashing(Box::new(job))));
        self.kdf_queue.push(src, (conn, serial));
    }
}

impl From<Event> for ServerLine {
    fn from(e: Event) -> ServerLine {
        ServerLine::Event(e)
    }
}
