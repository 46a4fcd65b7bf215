//! Engine tests on a virtual clock: no sockets, no files, no sleeping. Thirty
//! minutes of session TTL pass in microseconds. The transcripts in `fixtures/`
//! are replayed here too (the e2e suite replays the ones without time jumps
//! against the real binary).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::accounts::{UserIdx, UserRow};
use super::broadcast::{BroadcastRecord, DeliveryRow};
use super::engine::{ConnId, Engine, EngineConfig, Input, Output};
use crate::proto::{Frame, ServerDatagram};
#[path = "../../tests/support/transcript.rs"]
mod transcript;

const T0_UNIX_MS: u64 = 1_800_000_000_000;
/// The engine's random generator's seed: its tokens are the same every run.
const SEED: u64 = 1;
/// Alice's session token and the p2p token of alice→bob under [`SEED`]
/// (see `tokens_come_from_the_engines_seeded_generator`).
const EXPECTED_TOKEN: &str = "c05daa4b8acf76748aa2d790d641b387";
const EXPECTED_P2P: &str = "ee89af30963784ae0865ef73371863e2";

/// The engine plus a fake driver: store writes always succeed, lines are
/// collected per connection, datagrams per destination.
struct Sim {
    engine: Engine,
    now: Instant,
    lines: HashMap<ConnId, VecDeque<String>>,
    closed: HashMap<ConnId, bool>,
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
    stored_users: Vec<UserRow>,
    stored_broadcasts: Vec<BroadcastRecord>,
    stored_deliveries: Vec<DeliveryRow>,
    /// `{:?}` of every output, as a log would show it.
    shown: Vec<String>,
    next_conn: ConnId,
}

/// Low KDF cost; the abuse limits off except where a test turns one on
/// (every Sim connection comes from 127.0.0.1).
fn cfg() -> EngineConfig {
    EngineConfig {
        kdf_iterations: 1000,
        max_per_ip: 0,
        signup_rate: 0,
        broadcast_rate: 0,
        ..EngineConfig::default()
    }
}

impl Sim {
    fn new(cfg: EngineConfig) -> Sim {
        Sim::with_store(cfg, vec![], vec![], vec![])
    }

    fn with_store(
        cfg: EngineConfig,
        users: Vec<UserRow>,
        broadcasts: Vec<BroadcastRecord>,
        deliveries: Vec<DeliveryRow>,
    ) -> Sim {
        Sim::build(cfg, users, broadcasts, deliveries, SEED)
    }

    /// An engine whose random bytes come from `seed`.
    fn seeded(cfg: EngineConfig, seed: u64) -> Sim {
        Sim::build(cfg, vec![], vec![], vec![], seed)
    }

    fn build(
        cfg: EngineConfig,
        users: Vec<UserRow>,
        broadcasts: Vec<BroadcastRecord>,
        deliveries: Vec<DeliveryRow>,
        seed: u64,
    ) -> Sim {
        let now = Instant::now();
        let mut sim = Sim {
            engine: Engine::new(
                cfg,
                users.clone(),
                super::records::BroadcastFile {
                    records: broadcasts.clone(),
                    next_id: 1,
                },
                deliveries,
                now,
                T0_UNIX_MS,
                Box::new(crate::rng::Seeded::new(seed)),
            ),
            now,
            lines: HashMap::new(),
            closed: HashMap::new(),
            datagrams: Vec::new(),
            stored_users: users,
            stored_broadcasts: broadcasts,
            stored_deliveries: Vec::new(),
            shown: Vec::new(),
            next_conn: 0,
        };
        sim.settle();
        sim
    }

    fn connect(&mut self) -> ConnId {
        let conn = self.connect_from("127.0.0.1");
        self.welcomed(conn);
        conn
    }

    /// Reads `conn`'s first line, which must be its `EVENT WELCOME`.
    fn welcomed(&mut self, conn: ConnId) {
        let l = self.next_line(conn).expect("a WELCOME");
        assert!(l.starts_with("EVENT WELCOME"), "conn {conn}: {l}");
    }

    /// A connection from `ip`, whatever the engine answers it.
    fn connect_from(&mut self, ip: &str) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let addr = SocketAddr::new(ip, 40000 + conn as u16);
        self.engine.handle(self.now, Input::Connect { conn, addr });
        // A client from a remote address speaks TLS (plaintext passwords
        // from there get `tls-required`, tested on their own).
        if !ip.is_loopback() {
            self.engine.handle(self.now, Input::Secure { conn });
        }
        self.settle();
        conn
    }

    fn send(&mut self, conn: ConnId, line: &str) {
        self.feed(conn, line);
        self.settle();
    }

    /// Hands `line` to the engine and nothing more: no turn runs and no
    /// output is taken, for tests that drive the turns by hand.
    fn feed(&mut self, conn: ConnId, line: &str) {
        self.engine.handle(
            self.now,
            Input::Frame {
                conn,
                frame: Frame::Line(line.to_owned()),
            },
        );
    }

    /// The outputs waiting now, taken as they are (none executed).
    fn take_outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.engine.poll_output()).collect()
    }

    /// One engine turn by hand: its outputs, with every stored broadcast
    /// confirmed at once (as the driver's commit would), so the replies that
    /// confirmation produces come in the same turn.
    fn hand_turn(&mut self) -> Vec<Output> {
        self.engine.handle(self.now, Input::Timeout);
        let mut outs = Vec::new();
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::StoreBroadcast { conn, record } => self.engine.handle(
                    self.now,
                    Input::BroadcastStored {
                        conn,
                        record,
                        ok: true,
                    },
                ),
                o => outs.push(o),
            }
        }
        outs
    }

    fn datagram(&mut self, from: SocketAddr, text: &str) {
        self.engine.handle(
            self.now,
            Input::Datagram {
                from,
                bytes: text.as_bytes(),
            },
        );
        self.settle();
    }

    /// Runs pending work (hashes, fan-out) and executes outputs like the driver.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            self.engine.handle(self.now, Input::Timeout);
            while let Some(o) = self.engine.poll_output() {
                self.shown.push(format!("{o:?}"));
                match o {
                    Output::Send { conn, line } => self
                        .lines
                        .entry(conn)
                        .or_default()
                        .push_back(line.wire().to_string()),
                    Output::Close { conn } => {
                        self.closed.insert(conn, true);
                    }
                    Output::Evict { conn, line } => {
                        self.lines
                            .entry(conn)
                            .or_default()
                            .push_back(line.wire().to_string());
                        self.closed.insert(conn, true);
                    }
                    Output::Resume { .. } => {}
                    Output::Datagram { to, bytes } => self.datagrams.push((to, bytes.to_vec())),
                    Output::StoreUser { conn, row } => {
                        self.stored_users.push(row.clone());
                        self.engine.handle(
                            self.now,
                            Input::UserStored {
                                conn,
                                row,
                                ok: true,
                            },
                        );
                    }
                    Output::StoreBroadcast { conn, record } => {
                        self.stored_broadcasts.push(record.clone());
                        self.engine.handle(
                            self.now,
                            Input::BroadcastStored {
                                conn,
                                record,
                                ok: true,
                            },
                        );
                    }
                    Output::StoreDelivery(row) => self.stored_deliveries.push(row),
                    Output::Compact => {}
                    Output::AdminReply { conn, lines } => {
                        self.lines.entry(conn).or_default().extend(lines)
                    }
                }
            }
            if !self.engine.has_work() {
                return;
            }
        }
        panic!("engine never settled");
    }

    /// Moves the virtual clock forward, firing every timer on the way in order.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.engine.poll_timeout().filter(|&at| at <= target) {
            self.now = self.now.max(at);
            self.settle();
        }
        self.now = target;
        self.settle();
    }

    fn next_line(&mut self, conn: ConnId) -> Option<String> {
        self.lines.get_mut(&conn).and_then(|q| q.pop_front())
    }

    /// The next line for `conn`, letting up to 10 virtual seconds pass for it.
    fn expect_line(&mut self, conn: ConnId) -> String {
        for _ in 0..100 {
            if let Some(l) = self.next_line(conn) {
                return l;
            }
            self.advance(Duration::from_millis(100));
        }
        panic!("conn {conn}: no line within 10 virtual seconds");
    }

    fn login_new(&mut self, user: &str) -> (ConnId, String) {
        let c = self.connect();
        self.send(c, &format!("SIGNUP {user} pw pw"));
        assert_eq!(self.expect_line(c), format!("OK SIGNUP {user}"));
        self.send(c, &format!("LOGIN {user} pw"));
        let ok = self.expect_line(c);
        let token = ok
            .strip_prefix(&format!("OK LOGIN {user} "))
            .unwrap_or_else(|| panic!("{ok}"));
        (c, token.to_owned())
    }

    /// alice (`a`) asks bob (`b`) for a link and bob accepts, listening on
    /// `port`; the answers to the `ACCEPT` are left for the test to read.
    fn alice_asks_bob(&mut self, a: ConnId, b: ConnId, port: u16) {
        self.send(a, "CONNECT bob");
        assert_eq!(self.expect_line(a), "OK CONNECT bob");
        assert_eq!(self.expect_line(b), "EVENT REQUEST alice 127.0.0.1");
        self.send(b, &format!("ACCEPT alice {port}"));
    }

    /// `REGISTER`s `token` from `from` the way a client does: the server
    /// challenges, the client repeats with the cookie, the server confirms.
    fn register(&mut self, from: SocketAddr, token: &str) {
        let cookie = self.challenge(from, token);
        self.datagram(from, &format!("REGISTER {token} {cookie}"));
        assert_eq!(
            self.take_datagrams(),
            vec![(from, "OK REGISTER".to_owned())]
        );
    }

    /// Sends a bare `REGISTER` and returns the cookie of the one `CHALLENGE`
    /// that must come back.
    fn challenge(&mut self, from: SocketAddr, token: &str) -> String {
        self.datagram(from, &format!("REGISTER {token}"));
        let got = self.take_datagrams();
        match got.as_slice() {
            [(to, d)] if *to == from => d
                .strip_prefix("CHALLENGE ")
                .unwrap_or_else(|| panic!("not a CHALLENGE: {d:?}"))
                .to_owned(),
            _ => panic!("expected one CHALLENGE to {from}, got {got:?}"),
        }
    }

    /// The plaintext datagrams sent since the last call.
    fn take_datagrams(&mut self) -> Vec<(SocketAddr, String)> {
        self.take_raw()
            .into_iter()
            .map(|(to, d)| (to, String::from_utf8(d).expect("a plaintext datagram")))
            .collect()
    }

    fn take_raw(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.datagrams)
    }

    fn datagram_bytes(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.engine
            .handle(self.now, Input::Datagram { from, bytes });
        self.settle();
    }

    fn silent(&mut self, conn: ConnId) {
        if let Some(l) = self.next_line(conn) {
            panic!("conn {conn}: unexpected {l:?}");
        }
    }
}

fn udp(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

// ---- transcripts ----------------------------------------------------------------

/// The engine as a transcript player: connections by name, expectations may
/// let up to 10 virtual seconds pass, `wait` jumps the clock.
struct SimPlayer {
    sim: Sim,
    conns: HashMap<String, ConnId>,
}

impl transcript::Player for SimPlayer {
    fn connect(&mut self, name: &str) {
        let c = self.sim.connect();
        self.conns.insert(name.to_owned(), c);
    }
    fn send(&mut self, name: &str, line: &str) {
        self.sim.send(self.conns[name], line);
    }
    fn next_line(&mut self, name: &str) -> String {
        self.sim.expect_line(self.conns[name])
    }
    fn assert_closed(&mut self, name: &str, ctx: &str) {
        let c = self.conns[name];
        assert!(
            self.sim.closed.get(&c).copied().unwrap_or(false),
            "{ctx}: {name} not closed"
        );
        assert_eq!(self.sim.next_line(c), None, "{ctx}: line after close");
    }
    fn wait(&mut self, d: Duration) {
        self.sim.advance(d);
    }
    fn exact_tokens(&self) -> bool {
        true
    }
}

#[path = "limits_tests.rs"]
mod limits_tests;

#[path = "resume_tests.rs"]
mod resume_tests;

#[path = "fanout_tests.rs"]
mod fanout_tests;

#[test]
fn every_fixture_transcript_replays_on_the_engine() {
    let fixtures = transcript::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures"
    )));
    assert!(fixtures.len() >= 7, "fixtures missing: {}", fixtures.len());
    for (name, steps) in fixtures {
        let mut player = SimPlayer {
            sim: Sim::new(cfg()),
            conns: HashMap::new(),
        };
        transcript::replay(&steps, &mut player, &name);
    }
}

// ---- the engine API ---------------------------------------------------------------

/// `poll_timeout` is the one thing a driver asks before sleeping: while outputs
/// wait to be polled or a hash is in progress it is a deadline already passed,
/// so a driver that forgets to drain (or to run the work) cannot sleep on it.
#[test]
fn poll_timeout_is_due_while_outputs_or_work_wait() {
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: 20_000,
        ..cfg()
    });
    let idle_deadline = |sim: &Sim| sim.now + cfg().idle_timeout;
    // Nothing connected, nothing queued: only the broadcast timers (none yet).
    assert_eq!(sim.engine.poll_timeout(), None);
    sim.engine.handle(
        sim.now,
        Input::Connect {
            conn: 7,
            addr: udp(7),
        },
    );
    // `EVENT WELCOME` is queued: due now, not at the idle timer.
    assert!(sim.engine.poll_timeout().is_some_and(|t| t <= sim.now));
    while sim.engine.poll_output().is_some() {}
    // Drained and idle: sleep until the pre-login idle limit.
    assert_eq!(sim.engine.poll_timeout(), Some(idle_deadline(&sim)));
    // A LOGIN being hashed is work: due now until the hash is done.
    sim.feed(7, "LOGIN nobody pw");
    while sim.engine.poll_output().is_some() {}
    assert!(sim.engine.poll_timeout().is_some_and(|t| t <= sim.now));
    let mut turns = 0;
    while sim.engine.poll_timeout().is_some_and(|t| t <= sim.now) {
        sim.engine.handle(sim.now, Input::Timeout);
        while let Some(o) = sim.engine.poll_output() {
            if let Output::Send { line, .. } = o {
                let line = line.wire().to_string();
                assert!(line.starts_with("ERR bad-credentials"), "{line}");
            }
        }
        turns += 1;
        assert!(turns < 100, "the hash never finished");
    }
    assert!(turns > 1, "20,000 iterations take several turns");
    assert!(sim.engine.poll_timeout().is_some_and(|t| t > sim.now));
}

// ---- sessions -------------------------------------------------------------------

#[test]
fn relogin_keeps_token_and_list_place() {
    let mut sim = Sim::new(cfg());
    let (a, token) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    sim.advance(Duration::from_secs(30 * 60));
    assert_eq!(sim.expect_line(a), "EVENT REAUTH 120");
    sim.send(a, "LOGIN alice pw");
    assert_eq!(sim.expect_line(a), format!("OK LOGIN alice {token}"));
    assert_eq!(sim.expect_line(b), "EVENT REAUTH 120");
    sim.send(b, "LIST");
    assert_eq!(sim.expect_line(b), "CLIENT alice 127.0.0.1");
    // The next REAUTH comes a full TTL after the re-login, not after the first.
    sim.advance(Duration::from_secs(29 * 60));
    sim.silent(a);
}

#[test]
fn wrong_password_in_answer_to_reauth_does_not_renew() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    sim.advance(Duration::from_secs(30 * 60));
    assert_eq!(sim.expect_line(a), "EVENT REAUTH 120");
    sim.send(a, "LOGIN alice nope");
    assert!(sim.expect_line(a).starts_with("ERR bad-credentials"));
    sim.advance(Duration::from_secs(120));
    assert!(sim
        .expect_line(a)
        .starts_with("EVENT CLOSING session-expired"));
    assert!(sim.closed[&a]);
}

#[test]
fn commands_queued_behind_a_login_are_answered_in_order() {
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: 20_000,
        ..cfg()
    });
    let c = sim.connect();
    sim.send(c, "SIGNUP alice pw pw");
    sim.feed(c, "LOGIN alice pw");
    sim.feed(c, "LIST");
    sim.engine.handle(
        sim.now,
        Input::Frame {
            conn: c,
            frame: Frame::TooLong,
        },
    );
    sim.settle();
    assert_eq!(sim.expect_line(c), "OK SIGNUP alice");
    assert!(sim.expect_line(c).starts_with("OK LOGIN alice "));
    assert_eq!(sim.expect_line(c), "CLIENT alice 127.0.0.1");
    assert_eq!(sim.expect_line(c), "OK LIST 1");
    assert!(sim.expect_line(c).starts_with("ERR line-too-long"));
}

#[test]
fn a_slow_hash_does_not_delay_other_connections() {
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: 1_000_000,
        ..cfg()
    });
    let a = sim.connect();
    let b = sim.connect();
    sim.feed(a, "LOGIN nobody pw");
    // One turn of work, then b's command: answered at once, a still hashing.
    sim.engine.handle(sim.now, Input::Timeout);
    sim.feed(b, "PING");
    let outs = sim.take_outputs();
    assert!(outs.contains(&Output::Send {
        conn: b,
        line: crate::proto::ServerLine::Ok(crate::proto::OkReply::Ping)
    }));
    assert!(
        sim.engine.has_work(),
        "the hash is sliced, not finished in one turn"
    );
}

#[test]
fn unknown_user_costs_the_same_hashing_as_a_wrong_password() {
    let iterations = 30_000;
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: iterations,
        ..cfg()
    });
    let (_, _) = sim.login_new("alice");
    let turns = |sim: &mut Sim, line: &str| {
        let c = sim.connect();
        sim.feed(c, line);
        let mut n = 0;
        while sim.engine.has_work() {
            sim.engine.handle(sim.now, Input::Timeout);
            n += 1;
        }
        while sim.engine.poll_output().is_some() {}
        n
    };
    let wrong = turns(&mut sim, "LOGIN alice nope");
    let unknown = turns(&mut sim, "LOGIN mallory nope");
    assert_eq!(wrong, unknown);
    assert!(wrong >= (iterations / super::engine::KDF_TURN_BUDGET) as usize);
}

/// Every output that carries a token — `OK LOGIN` (session token), `OK
/// ACCEPT` and `EVENT PEER` (p2p token) — shown with `{:?}` as a log
/// would, never contains it; only the wire form does.
#[test]
fn no_output_shows_a_token_in_a_log() {
    let mut sim = Sim::new(cfg());
    let (a, ta) = sim.login_new("alice");
    let (b, tb) = sim.login_new("bob");
    sim.alice_asks_bob(a, b, 5000);
    let ok = sim.expect_line(b);
    let p2p = ok.strip_prefix("OK ACCEPT alice ").unwrap().to_owned();
    let peer = sim.expect_line(a);
    assert_eq!(peer, format!("EVENT PEER bob 127.0.0.1:5000 {p2p}"));
    let secrets = [ta, tb, p2p];
    assert!(sim.shown.len() > 10);
    for shown in &sim.shown {
        for secret in &secrets {
            assert!(!shown.contains(&secret[secret.len() - 16..]), "{shown}");
        }
    }
}

/// Randomness is an input: a seed gives the same tokens every run (so an
/// engine transcript asserts them exactly), another seed others. The
/// resumption ticket too: the engine's resume key (until the data dir's
/// replaces it) comes from the same generator, not from the OS.
#[test]
fn tokens_come_from_the_engines_seeded_generator() {
    let run = |seed| {
        let mut sim = Sim::seeded(cfg(), seed);
        let (a, ta) = sim.login_new("alice");
        let (b, tb) = sim.login_new("bob");
        sim.alice_asks_bob(a, b, 5000);
        let p2p = sim.expect_line(b);
        let peer = sim.expect_line(a);
        sim.send(a, "TICKET");
        let ticket = sim.expect_line(a);
        assert!(ticket.starts_with("OK TICKET "), "{ticket}");
        (ta, tb, p2p, peer, ticket)
    };
    let first = run(SEED);
    assert_eq!(first, run(SEED));
    assert_eq!(first.0, EXPECTED_TOKEN);
    assert_eq!(first.2, format!("OK ACCEPT alice {EXPECTED_P2P}"));
    assert_eq!(
        first.3,
        format!("EVENT PEER bob 127.0.0.1:5000 {EXPECTED_P2P}")
    );
    let other = run(SEED + 1);
    assert_ne!(first.0, other.0);
    assert_ne!(first.2, other.2);
    assert_ne!(first.4, other.4);
}

/// Issue 18: after a login storm the engine asked to be woken for timers
/// whose subject had moved on (the pre-login idle limit and login deadline
/// of every connection that had logged in since). The timer table stops
/// them: between the last register wait and the first REAUTH nothing is
/// due, so the engine asks for no wake-up at all.
#[test]
fn a_thousand_logins_leave_no_wakeup_for_nothing() {
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: 1,
        ..cfg()
    });
    let first = sim.now;
    for i in 0..1000 {
        let (c, _) = sim.login_new(&format!("u{i}"));
        sim.lines.remove(&c);
        sim.advance(Duration::from_millis(7));
    }
    // Every session's REGISTER wait (3 s) has passed: real work, done.
    sim.advance(Duration::from_secs(5));
    let first_reauth = first + cfg().session_ttl;
    let mut wakeups = 0;
    while let Some(at) = sim.engine.poll_timeout().filter(|&at| at < first_reauth) {
        wakeups += 1;
        assert!(wakeups <= 5000, "runaway");
        sim.now = sim.now.max(at);
        sim.settle();
    }
    assert_eq!(wakeups, 0, "wake-ups for nothing between logins and REAUTH");
    // The real work is still there: REAUTH comes on time.
    sim.advance(cfg().session_ttl);
    let c = sim.next_conn - 1;
    assert_eq!(sim.next_line(c).as_deref(), Some("EVENT REAUTH 120"));
}

/// Re-login timers are never stopped (`timers::Lazy`, 32 bytes a session
/// instead of a timer-table slot): a session that ended or re-logged in
/// before its REAUTH leaves a dead entry, which must neither wake the loop
/// nor send anything.
#[test]
fn an_ended_or_renewed_session_s_reauth_timer_never_wakes_the_loop() {
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: 1,
        ..cfg()
    });
    let ttl = cfg().session_ttl;
    let (gone, _) = sim.login_new("gone");
    let (renewed, token) = sim.login_new("renewed");
    // Both REGISTER waits are over.
    sim.advance(Duration::from_secs(5));
    sim.engine.handle(sim.now, Input::Disconnect { conn: gone });
    sim.settle();
    sim.send(renewed, "LOGIN renewed pw");
    assert_eq!(
        sim.expect_line(renewed),
        format!("OK LOGIN renewed {token}")
    );
    let renewed_at = sim.now;
    // Nothing is due before the renewed session's new deadline: the ended
    // one's and the renewal's old entry are not deadlines any more.
    assert_eq!(sim.engine.poll_timeout(), Some(renewed_at + ttl));
    assert_eq!(sim.engine.reauths.len(), 1, "dead entries were purged");
    sim.advance(ttl - Duration::from_secs(1));
    sim.silent(renewed);
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.expect_line(renewed), "EVENT REAUTH 120");
    sim.silent(renewed);
}

/// A connection's backlog owns no memory until input waits in it, and gives
/// it back once drained (engine::Conn is held for every connection).
#[test]
fn a_backlog_is_empty_and_unboxed_until_used_and_again_once_drained() {
    use super::engine::Backlog;
    let mut b = Backlog::default();
    assert!(b.is_empty() && b.pop_front().is_none());
    assert_eq!(b.len(), 0);
    b.push_back(Frame::Line("PING".into()));
    b.push_back(Frame::TooLong);
    assert_eq!((b.is_empty(), b.len()), (false, 2));
    assert_eq!(b.pop_front(), Some(Frame::Line("PING".into())));
    assert_eq!(b.pop_front(), Some(Frame::TooLong));
    assert!(b.is_empty() && b.pop_front().is_none());
    assert!(format!("{b:?}").contains("None"), "the box was kept: {b:?}");
}

#[test]
fn closing_a_connection_removes_the_user_and_cancels_requests() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    sim.send(a, "CONNECT bob");
    assert_eq!(sim.expect_line(b), "EVENT REQUEST alice 127.0.0.1");
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    sim.settle();
    assert_eq!(sim.expect_line(b), "EVENT CANCELLED alice offline");
    sim.send(b, "LIST");
    assert_eq!(sim.expect_line(b), "CLIENT bob 127.0.0.1");
    assert_eq!(sim.expect_line(b), "OK LIST 1");
}

#[test]
fn server_full_is_announced() {
    let mut sim = Sim::new(EngineConfig {
        max_clients: 1,
        ..cfg()
    });
    sim.connect();
    sim.engine.handle(
        sim.now,
        Input::Connect {
            conn: 99,
            addr: udp(1),
        },
    );
    sim.settle();
    assert!(sim
        .next_line(99)
        .unwrap()
        .starts_with("EVENT CLOSING server-full"));
    assert!(sim.closed[&99]);
}

// ---- broadcast over UDP ----------------------------------------------------------

/// alice (the sender) and bob, logged in; bob's UDP endpoint is `udp(5000)`
/// and registered. Returns the sim, both connections and bob's token.
fn alice_and_bob_on_udp() -> (Sim, ConnId, ConnId, String) {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (b, tb) = sim.login_new("bob");
    sim.register(udp(5000), &tb);
    (sim, a, b, tb)
}

#[test]
fn a_new_address_gets_only_a_challenge_until_it_proves_it_receives() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (_b, tb) = sim.login_new("bob");
    sim.send(a, "BROADCAST pending for bob");
    assert!(sim.expect_line(a).starts_with("OK BROADCAST"));
    // A forger with bob's token, at the victim's address: one short CHALLENGE.
    let victim = udp(6666);
    let request = format!("REGISTER {tb}");
    sim.datagram(victim, &request);
    let got = sim.take_datagrams();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.starts_with("CHALLENGE ") && got[0].1.len() <= request.len());
    // Without the cookie it cannot go further, however often it asks.
    for _ in 0..5 {
        sim.datagram(victim, &request);
        let got = sim.take_datagrams();
        assert!(
            got.iter().all(|(_, d)| d.starts_with("CHALLENGE ")),
            "{got:?}"
        );
    }
    sim.datagram(victim, &format!("REGISTER {tb} {}", "0".repeat(24)));
    assert!(sim.take_datagrams()[0].1.starts_with("CHALLENGE "));
    sim.datagram(victim, &format!("PING {tb}"));
    assert!(sim.take_datagrams().is_empty());
    // The cookie of another address proves nothing here.
    let real = udp(5000);
    let cookie = sim.challenge(real, &tb);
    sim.datagram(victim, &format!("REGISTER {tb} {cookie}"));
    assert!(sim.take_datagrams()[0].1.starts_with("CHALLENGE "));
    // bob's own socket answers the challenge: registered, then the broadcast.
    sim.datagram(real, &format!("REGISTER {tb} {cookie}"));
    let got = sim.take_datagrams();
    assert_eq!(got[0], (real, "OK REGISTER".to_owned()));
    assert!(got[1].1.starts_with("BCAST 1 alice "), "{got:?}");
    assert!(got.iter().all(|(to, _)| *to == real));
    // A registered address re-registering needs no new proof.
    sim.datagram(real, &format!("REGISTER {tb}"));
    assert_eq!(sim.take_datagrams(), vec![(real, "OK REGISTER".to_owned())]);
}

#[test]
fn a_cookie_expires_and_is_tied_to_its_session() {
    let mut sim = Sim::new(cfg());
    let (_a, ta) = sim.login_new("alice");
    let (_b, tb) = sim.login_new("bob");
    let from = udp(5000);
    let cookie = sim.challenge(from, &tb);
    // alice cannot use bob's cookie for her session.
    sim.datagram(from, &format!("REGISTER {ta} {cookie}"));
    assert!(sim.take_datagrams()[0].1.starts_with("CHALLENGE "));
    // Two buckets later the cookie is dead.
    sim.advance(2 * super::cookie::BUCKET);
    sim.datagram(from, &format!("REGISTER {tb} {cookie}"));
    let fresh = sim.take_datagrams();
    assert!(fresh[0].1.starts_with("CHALLENGE "), "{fresh:?}");
    assert_ne!(fresh[0].1, format!("CHALLENGE {cookie}"));
    // A cookie made just before a bucket ends still works just after.
    let cookie = sim.challenge(from, &tb);
    sim.advance(super::cookie::BUCKET);
    sim.datagram(from, &format!("REGISTER {tb} {cookie}"));
    assert_eq!(sim.take_datagrams(), vec![(from, "OK REGISTER".to_owned())]);
}

/// However a source that has not proved its address talks to the server,
/// with a live token or not, well-formed or not, it never gets more bytes
/// back than it sent.
#[test]
fn an_unvalidated_source_never_gets_more_bytes_than_it_sent() {
    let (mut sim, a, _b, tb) = alice_and_bob_on_udp();
    for i in 0..20 {
        sim.send(
            a,
            &format!("BROADCAST pending number {i} {}", "x".repeat(800)),
        );
        sim.expect_line(a);
    }
    sim.take_datagrams();
    let (_c, tc) = sim.login_new("carol");
    let victim = udp(7777);
    let mut kinds = vec![
        format!("REGISTER {tb}"),
        format!("REGISTER {tc}"),
        format!("REGISTER {tb}\n"),
        format!("REGISTER {}", tb.to_ascii_uppercase()),
        format!("REGISTER {tb} {}", "ab".repeat(12)),
        format!("REGISTER {tb} zz"),
        format!("PING {tb}"),
        format!("PING {tc}"),
        format!("ACK {tb} 1"),
        format!("ACK {tc} 2"),
        format!("REGISTER {}", "0".repeat(32)),
        "REGISTER".into(),
        "PING".into(),
        "".into(),
        "OK REGISTER".into(),
        "x".repeat(1300),
    ];
    // Every prefix of a valid REGISTER, too.
    let full = format!("REGISTER {tb}");
    kinds.extend((0..full.len()).map(|n| full[..n].to_owned()));
    for text in kinds {
        sim.datagram(victim, &text);
        sim.advance(std::time::Duration::from_secs(1));
        let back: usize = sim
            .take_datagrams()
            .iter()
            .filter(|(to, _)| *to == victim)
            .map(|(_, d)| d.len())
            .sum();
        assert!(back <= text.len(), "{text:?}: {back} bytes back");
    }
}

#[test]
fn udp_delivery_is_acked_once_and_persisted() {
    let (mut sim, a, _b, tb) = alice_and_bob_on_udp();
    sim.send(a, "BROADCAST hi all");
    assert!(sim
        .expect_line(a)
        .starts_with("OK BROADCAST 1 reached=1 pending=0 expires="));
    let sent = sim.take_datagrams();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].1.starts_with("BCAST 1 alice ") && sent[0].1.ends_with(" hi all"));
    sim.datagram(udp(5000), &format!("ACK {tb} 1"));
    assert_eq!(
        sim.stored_deliveries,
        vec![DeliveryRow::Got {
            user: UserIdx(2),
            id: 1
        }]
    );
    sim.advance(Duration::from_secs(20));
    assert!(sim.take_datagrams().is_empty(), "no retransmit after ACK");
}

/// An ACK cancels its retransmit outright, and so does the end of the
/// session: neither leaves a deadline that wakes the loop for nothing
/// (`retransmit.rs`; the timer heap before it woke once per delivery).
#[test]
fn acked_and_orphaned_retransmits_wake_nothing() {
    use super::broadcast::{after_send, UDP_ATTEMPTS};
    let (mut sim, a, b, tb) = alice_and_bob_on_udp();
    let all_retransmits: Duration = (1..=UDP_ATTEMPTS).map(|k| after_send(k).wait()).sum();
    let quiet_until = |sim: &Sim| sim.now + all_retransmits;
    // Alice never registers UDP: let her wait for it end first.
    sim.advance(Duration::from_secs(10));
    for i in 0..4 {
        sim.send(a, &format!("BROADCAST acked {i}"));
        assert!(sim.expect_line(a).starts_with("OK BROADCAST"));
    }
    assert_eq!(sim.take_datagrams().len(), 4);
    assert!(sim
        .engine
        .poll_timeout()
        .is_some_and(|t| t < quiet_until(&sim)));
    // ACKed out of order: the last ACK leaves no retransmit, armed or held.
    for id in [2, 4, 1, 3] {
        sim.datagram(udp(5000), &format!("ACK {tb} {id}"));
    }
    assert!(sim.engine.retransmits.is_empty());
    assert!(
        sim.engine
            .poll_timeout()
            .is_none_or(|t| t >= quiet_until(&sim)),
        "a wake-up for an ACKed datagram"
    );
    // In flight when bob's session ends: nothing fires for it either.
    sim.send(a, "BROADCAST orphaned");
    assert!(sim.expect_line(a).starts_with("OK BROADCAST"));
    assert_eq!(sim.take_datagrams().len(), 1);
    sim.engine.handle(sim.now, Input::Disconnect { conn: b });
    sim.settle();
    assert!(sim.engine.retransmits.is_empty());
    assert!(sim
        .engine
        .poll_timeout()
        .is_none_or(|t| t >= quiet_until(&sim)));
}

#[test]
fn a_burst_waits_for_window_room_and_goes_out_in_order() {
    use super::delivery::UDP_WINDOW;
    let (mut sim, a, _b, tb) = alice_and_bob_on_udp();
    let burst = 3 * UDP_WINDOW;
    for i in 0..burst {
        sim.send(a, &format!("BROADCAST number {i}"));
        assert!(sim.expect_line(a).starts_with("OK BROADCAST"));
    }
    let ids = |d: Vec<(SocketAddr, String)>| -> Vec<u64> {
        d.iter()
            .map(|(_, t)| t.split(' ').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let first = ids(sim.take_datagrams());
    assert_eq!(first, (1..=UDP_WINDOW as u64).collect::<Vec<_>>());
    // Room for one is not yet a refill; half a window is.
    for id in 1..=UDP_WINDOW as u64 / 2 {
        sim.datagram(udp(5000), &format!("ACK {tb} {id}"));
    }
    let next = ids(sim.take_datagrams());
    let from = UDP_WINDOW as u64 + 1;
    assert_eq!(
        next,
        (from..from + UDP_WINDOW as u64 / 2).collect::<Vec<_>>()
    );
    // ACK everything as it arrives: all of the burst arrives exactly once.
    let mut got: Vec<u64> = first.into_iter().chain(next).collect();
    for _ in 0..burst {
        for id in got.clone() {
            sim.datagram(udp(5000), &format!("ACK {tb} {id}"));
        }
        let more = ids(sim.take_datagrams());
        if more.is_empty() {
            break;
        }
        got.extend(more);
    }
    assert_eq!(got, (1..=burst as u64).collect::<Vec<_>>());
    assert_eq!(sim.stored_deliveries.len(), burst);
}

#[test]
fn unacked_udp_is_retransmitted_then_falls_back_to_tcp_within_10s() {
    let (mut sim, a, b, _tb) = alice_and_bob_on_udp();
    sim.send(a, "BROADCAST anyone?");
    let mut sends = Vec::new();
    let start = sim.now;
    let fallback = loop {
        sim.advance(Duration::from_millis(100));
        sends.extend(sim.take_datagrams().iter().map(|_| sim.now - start));
        if let Some(l) = sim.next_line(b) {
            break (sim.now - start, l);
        }
        assert!(
            sim.now - start < Duration::from_secs(10),
            "no TCP fallback within 10 s"
        );
    };
    assert_eq!(sends.len(), 4, "{sends:?}");
    assert!(fallback.1.starts_with("EVENT BROADCAST 1 alice "));
    assert!(fallback.0 <= Duration::from_secs(8));
}

#[test]
fn spoofed_and_malformed_datagrams_change_nothing() {
    let (mut sim, a, _b, tb) = alice_and_bob_on_udp();
    sim.send(a, "BROADCAST x");
    sim.expect_line(a);
    sim.take_datagrams();
    let forged = "0".repeat(32);
    for (from, text) in [
        (udp(6666), format!("ACK {tb} 1")),
        (udp(5000), format!("ACK {forged} 1")),
        (udp(6666), format!("PING {tb}")),
        (udp(5000), "REGISTER".into()),
        (udp(5000), "\u{0}\u{1}garbage".into()),
    ] {
        sim.datagram(from, &text);
    }
    assert!(
        sim.take_datagrams().is_empty(),
        "no answer to unauthenticated datagrams"
    );
    assert!(
        sim.stored_deliveries.is_empty(),
        "a forged ACK delivered nothing"
    );
    assert_eq!(sim.engine.stats.dropped_datagrams, 5);
    sim.datagram(udp(5000), &format!("PING {tb}"));
    assert_eq!(
        sim.take_datagrams(),
        vec![(udp(5000), ServerDatagram::Pong.to_string())]
    );
}

#[test]
fn later_logins_get_it_until_the_ttl_and_late_signups_never() {
    let mut sim = Sim::new(EngineConfig {
        session_ttl: Duration::from_secs(86_400),
        ..cfg()
    });
    let (a, _) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    let (c, _) = sim.login_new("carol");
    sim.send(b, "QUIT");
    sim.send(c, "QUIT");
    sim.send(a, "BROADCAST while you were out");
    assert!(sim
        .expect_line(a)
        .starts_with("OK BROADCAST 1 reached=0 pending=2"));
    let (d, _) = sim.login_new("dave");
    // bob comes back within the TTL, with no UDP: TCP after the register wait.
    sim.advance(Duration::from_secs(29 * 60));
    let b2 = sim.connect();
    sim.send(b2, "LOGIN bob pw");
    assert!(sim.expect_line(b2).starts_with("OK LOGIN bob"));
    assert!(sim.expect_line(b2).starts_with("EVENT BROADCAST 1 alice "));
    // carol comes back after it expired.
    sim.advance(Duration::from_secs(2 * 60));
    let c2 = sim.connect();
    sim.send(c2, "LOGIN carol pw");
    assert!(sim.expect_line(c2).starts_with("OK LOGIN carol"));
    sim.advance(Duration::from_secs(5));
    sim.silent(c2);
    sim.silent(d);
    // And bob, logging in again, does not get it twice.
    sim.send(b2, "QUIT");
    let b3 = sim.connect();
    sim.send(b3, "LOGIN bob pw");
    sim.expect_line(b3);
    sim.advance(Duration::from_secs(5));
    sim.silent(b3);
}

#[test]
fn restart_keeps_pending_and_does_not_redeliver() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    let (c, _) = sim.login_new("carol");
    sim.send(c, "QUIT");
    sim.advance(Duration::from_secs(5));
    sim.send(a, "BROADCAST before the restart");
    sim.expect_line(a);
    assert!(sim.expect_line(b).starts_with("EVENT BROADCAST 1"));
    let users = sim.stored_users.clone();
    let broadcasts = sim.stored_broadcasts.clone();
    let deliveries = sim.stored_deliveries.clone();
    let mut sim = Sim::with_store(cfg(), users, broadcasts, deliveries);
    sim.now += Duration::from_secs(60);
    for (name, gets) in [("bob", false), ("carol", true)] {
        let conn = sim.connect();
        sim.send(conn, &format!("LOGIN {name} pw"));
        sim.expect_line(conn);
        sim.advance(Duration::from_secs(4));
        match (gets, sim.next_line(conn)) {
            (true, Some(l)) => assert!(l.starts_with("EVENT BROADCAST 1 alice"), "{l}"),
            (false, None) => {}
            (_, other) => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn fanout_to_many_is_batched_across_turns() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let n = 1200;
    for i in 0..n {
        let c = sim.connect();
        sim.send(c, &format!("SIGNUP u{i} pw pw"));
        sim.send(c, &format!("LOGIN u{i} pw"));
    }
    sim.advance(Duration::from_secs(4));
    sim.lines.clear();
    sim.feed(a, "BROADCAST to all");
    // Drive by hand: the reply comes first, then at most a batch per turn.
    let mut per_turn = Vec::new();
    let mut replied = false;
    for _ in 0..100 {
        let mut lines = 0;
        for o in sim.hand_turn() {
            match o {
                Output::Send { conn, line } if conn == a => {
                    replied |= matches!(
                        line,
                        crate::proto::ServerLine::Ok(crate::proto::OkReply::Broadcast { .. })
                    )
                }
                Output::Send { .. } => lines += 1,
                _ => {}
            }
        }
        per_turn.push(lines);
        if !sim.engine.has_work() {
            break;
        }
    }
    assert!(replied);
    assert_eq!(per_turn.iter().sum::<usize>(), n);
    assert!(
        per_turn.iter().all(|&l| l <= super::engine::FANOUT_BATCH),
        "{per_turn:?}"
    );
}

/// Defect 7: every broadcast armed another expiry timer and every firing
/// re-armed one (200 broadcasts → 200 timers). One per kind.
#[test]
fn one_expiry_timer_however_many_broadcasts() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    for i in 0..200 {
        sim.send(a, &format!("BROADCAST n{i}"));
        assert!(sim.expect_line(a).starts_with("OK BROADCAST"));
        sim.advance(Duration::from_millis(10));
    }
    assert_eq!(sim.engine.expiry_timers(), 1);
    assert_eq!(sim.engine.live_broadcasts(), 200);
    // Half expire; the one timer is re-armed for the rest.
    sim.advance(Duration::from_secs(30 * 60) - Duration::from_millis(1000));
    assert!(sim.engine.live_broadcasts() < 200);
    assert!(sim.engine.live_broadcasts() > 0);
    assert_eq!(sim.engine.expiry_timers(), 1);
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.engine.live_broadcasts(), 0);
    assert_eq!(sim.engine.expiry_timers(), 0);
}

// ---- sealed datagrams: a session that logged in over TLS ------------------------------

mod sealed_udp {
    use super::*;
    use crate::proto::sealed::{self, Channel, Role, UdpSecret, MIN_REGISTER};

    /// What the client holds: its end of the channel and where it receives.
    struct Peer {
        ch: Channel,
        addr: SocketAddr,
    }

    impl Peer {
        fn seal(&mut self, text: &str) -> Vec<u8> {
            self.ch.seal(text.as_bytes()).unwrap()
        }

        fn register_bytes(&mut self, cookie: Option<&str>) -> Vec<u8> {
            let text = match cookie {
                Some(c) => format!("REGISTER {c}"),
                None => "REGISTER".to_owned(),
            };
            self.ch
                .seal(&sealed::padded(text.as_bytes(), MIN_REGISTER))
                .unwrap()
        }

        /// Opens what the server sent to this peer's address.
        fn open_all(&mut self, got: &[(SocketAddr, Vec<u8>)]) -> Vec<String> {
            got.iter()
                .filter(|(to, _)| *to == self.addr)
                .map(|(_, d)| {
                    let body = self.ch.open(d).expect("sealed with the session's key");
                    String::from_utf8(sealed::unpad(&body).to_vec()).unwrap()
                })
                .collect()
        }
    }

    fn secret(b: u8) -> UdpSecret {
        UdpSecret::from_bytes([b; 32])
    }

    impl Sim {
        /// Like `login_new`, over a TLS connection whose exporter gave `secret`.
        fn login_tls(&mut self, user: &str, secret: &UdpSecret) -> (ConnId, String) {
            let c = self.connect();
            self.engine.handle(
                self.now,
                Input::TransportSecret {
                    conn: c,
                    secret: secret.clone(),
                },
            );
            self.send(c, &format!("SIGNUP {user} pw pw"));
            assert_eq!(self.expect_line(c), format!("OK SIGNUP {user}"));
            self.send(c, &format!("LOGIN {user} pw"));
            let ok = self.expect_line(c);
            let token = ok.strip_prefix(&format!("OK LOGIN {user} ")).unwrap();
            (c, token.to_owned())
        }

        /// Sealed REGISTER, CHALLENGE, REGISTER with the cookie, OK REGISTER.
        fn register_sealed(&mut self, p: &mut Peer) -> Vec<String> {
            let d = p.register_bytes(None);
            self.datagram_bytes(p.addr, &d);
            let got = self.take_raw();
            let opened = p.open_all(&got);
            assert_eq!(opened.len(), 1, "{opened:?}");
            let cookie = opened[0].strip_prefix("CHALLENGE ").unwrap().to_owned();
            assert!(got[0].1.len() <= d.len(), "CHALLENGE longer than REGISTER");
            let d = p.register_bytes(Some(&cookie));
            self.datagram_bytes(p.addr, &d);
            let got = self.take_raw();
            p.open_all(&got)
        }
    }

    /// alice in plaintext; bob over TLS with a registered sealed endpoint.
    fn alice_and_sealed_bob() -> (Sim, ConnId, String, Peer) {
        let mut sim = Sim::new(cfg());
        let (a, _) = sim.login_new("alice");
        let (_b, tb) = sim.login_tls("bob", &secret(1));
        let mut bob = Peer {
            ch: Channel::new(&secret(1), Role::Client),
            addr: udp(5000),
        };
        assert_eq!(sim.register_sealed(&mut bob), vec!["OK REGISTER"]);
        (sim, a, tb, bob)
    }

    #[test]
    fn a_tls_session_gets_sealed_broadcasts_and_its_sealed_acks_count() {
        let (mut sim, a, tb, mut bob) = alice_and_sealed_bob();
        sim.send(a, "BROADCAST for your eyes only");
        assert!(sim.expect_line(a).starts_with("OK BROADCAST 1 reached=1"));
        let got = sim.take_raw();
        let texts = bob.open_all(&got);
        assert_eq!(texts.len(), 1);
        assert!(
            texts[0].starts_with("BCAST 1 alice ") && texts[0].ends_with(" for your eyes only")
        );
        for (_, d) in &got {
            assert!(!d.windows(4).any(|w| w == b"eyes"), "text in clear");
            assert!(!d.windows(32).any(|w| w == tb.as_bytes()), "token in clear");
        }
        let ack = bob.seal("ACK 1");
        sim.datagram_bytes(bob.addr, &ack);
        assert_eq!(sim.stored_deliveries.len(), 1);
        sim.advance(Duration::from_secs(20));
        assert!(
            sim.take_raw().is_empty(),
            "no retransmit after the sealed ACK"
        );
        let ping = bob.seal("PING");
        sim.datagram_bytes(bob.addr, &ping);
        assert_eq!(bob.open_all(&sim.take_raw()), vec!["PONG"]);
    }

    #[test]
    fn the_token_in_clear_is_refused_for_a_tls_session() {
        let (mut sim, a, tb, mut bob) = alice_and_sealed_bob();
        sim.send(a, "BROADCAST x");
        sim.expect_line(a);
        sim.take_raw();
        for text in [
            format!("REGISTER {tb}"),
            format!("PING {tb}"),
            format!("ACK {tb} 1"),
        ] {
            sim.datagram(bob.addr, &text);
            sim.datagram(udp(6000), &text);
        }
        let got = sim.take_raw();
        assert!(got.is_empty(), "{got:?}");
        assert!(sim.stored_deliveries.is_empty());
        // The sealed path still works.
        let ack = bob.seal("ACK 1");
        sim.datagram_bytes(bob.addr, &ack);
        assert_eq!(sim.stored_deliveries.len(), 1);
    }

    #[test]
    fn forged_tampered_replayed_and_spoofed_sealed_datagrams_are_dropped() {
        let (mut sim, a, _tb, mut bob) = alice_and_sealed_bob();
        sim.send(a, "BROADCAST x");
        sim.expect_line(a);
        sim.take_raw();
        let dropped = sim.engine.stats.dropped_datagrams;
        // Wrong key, right session id.
        let mut mallory = Channel::new(&secret(2), Role::Client);
        for _ in 0..10 {
            mallory.seal(b"a counter bob has not used yet").unwrap();
        }
        let mut forged = mallory.seal(b"ACK 1").unwrap();
        forged[1..9].copy_from_slice(&bob.ch.id().0);
        sim.datagram_bytes(bob.addr, &forged);
        // One byte changed, at every position.
        let real = bob.seal("ACK 1");
        for i in 0..real.len() {
            let mut t = real.clone();
            t[i] ^= 0x20;
            sim.datagram_bytes(bob.addr, &t);
        }
        // Authentic, from another address: a sealed ACK proves nothing there.
        sim.datagram_bytes(udp(6666), &real);
        assert!(sim.take_raw().is_empty());
        assert!(
            sim.stored_deliveries.is_empty(),
            "nothing counted as delivered"
        );
        // Refused as forgeries: mallory's, and each change to the counter,
        // the ciphertext or the tag (a changed marker or session id finds no
        // session, which drops it too).
        let counter_and_after = real.len() - 9;
        assert_eq!(sim.engine.stats.sealed_forged, 1 + counter_and_after as u64);
        // That one is now spent: from bob's own address it is a replay.
        sim.datagram_bytes(bob.addr, &real);
        assert!(sim.stored_deliveries.is_empty());
        assert_eq!(sim.engine.stats.sealed_replayed, 1);
        assert!(sim.engine.stats.dropped_datagrams >= dropped + real.len() as u64 + 3);
        // The broadcast is still in flight, and a fresh ACK counts.
        let got = sim.take_raw();
        assert!(got.is_empty());
        sim.advance(Duration::from_millis(600));
        let texts = bob.open_all(&sim.take_raw());
        assert!(texts[0].starts_with("BCAST 1 "), "retransmitted: {texts:?}");
        let ack = bob.seal("ACK 1");
        sim.datagram_bytes(bob.addr, &ack);
        assert_eq!(sim.stored_deliveries.len(), 1);
    }

    #[test]
    fn an_unproven_source_gets_no_more_sealed_bytes_than_it_sent() {
        let mut sim = Sim::new(cfg());
        let (a, _) = sim.login_new("alice");
        sim.send(a, "BROADCAST dummy");
        sim.expect_line(a);
        let (_b, _) = sim.login_tls("bob", &secret(1));
        for i in 0..20 {
            sim.send(a, &format!("BROADCAST pending {i} {}", "x".repeat(800)));
            sim.expect_line(a);
        }
        let victim = udp(7777);
        let mut bob = Peer {
            ch: Channel::new(&secret(1), Role::Client),
            addr: victim,
        };
        let mut kinds: Vec<Vec<u8>> = vec![
            bob.register_bytes(None),
            bob.seal("REGISTER"),
            bob.register_bytes(Some("0123456789abcdef01234567")),
            bob.seal("PING"),
            bob.seal("ACK 1"),
            bob.seal("ACK 2"),
            bob.seal("garbage"),
            vec![sealed::MARKER; 40],
            vec![sealed::MARKER],
            bob.seal(""),
        ];
        let replay = kinds[0].clone();
        kinds.push(replay);
        let reg = bob.register_bytes(None);
        kinds.extend((1..reg.len()).map(|n| reg[..n].to_vec()));
        for d in kinds {
            sim.datagram_bytes(victim, &d);
            sim.advance(Duration::from_secs(1));
            let back: usize = sim
                .take_raw()
                .iter()
                .filter(|(to, _)| *to == victim)
                .map(|(_, b)| b.len())
                .sum();
            assert!(back <= d.len(), "{} bytes in, {back} back", d.len());
        }
    }
}

/// An account deleted by the administrator while a LOGIN for it is hashing:
/// the login must fail cleanly (it used to look the account up as live).
#[test]
fn an_account_deleted_while_its_login_hashes_is_refused_not_a_panic() {
    let mut t = Sim::new(EngineConfig {
        kdf_iterations: 100_000,
        ..EngineConfig::default()
    });
    let c = t.connect();
    t.send(c, "SIGNUP alice pw pw");
    assert_eq!(t.expect_line(c), "OK SIGNUP alice");
    t.feed(c, "LOGIN alice pw");
    const ADMIN: ConnId = usize::MAX / 2;
    t.engine.handle(
        t.now,
        Input::Admin {
            conn: ADMIN,
            req: super::admin::AdminRequest::Del {
                user: "alice".into(),
            },
        },
    );
    t.settle();
    assert_eq!(t.next_line(ADMIN).as_deref(), Some("OK"));
    assert!(t.expect_line(c).starts_with("ERR bad-credentials"));
    assert!(matches!(
        t.stored_users.last(),
        Some(UserRow::Deleted { .. })
    ));
}

// ---- presence (WATCH) -------------------------------------------------------------

#[test]
fn watch_announces_logins_and_logouts_to_watchers_only() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (c, _) = sim.login_new("carol");
    // Watching someone without an account yet is allowed, as in MONITOR.
    sim.send(a, "WATCH +Bob");
    assert_eq!(sim.expect_line(a), "OK WATCH 1");
    let (b, _) = sim.login_new("bob");
    assert_eq!(sim.expect_line(a), "EVENT ONLINE bob 127.0.0.1");
    sim.silent(c);
    // Watching someone online says so at once, before the reply.
    sim.send(c, "watch +bob +alice");
    assert_eq!(sim.expect_line(c), "EVENT ONLINE bob 127.0.0.1");
    assert_eq!(sim.expect_line(c), "EVENT ONLINE alice 127.0.0.1");
    assert_eq!(sim.expect_line(c), "OK WATCH 2");
    sim.send(b, "QUIT");
    assert_eq!(sim.expect_line(a), "EVENT OFFLINE bob");
    assert_eq!(sim.expect_line(c), "EVENT OFFLINE bob");
    sim.send(a, "WATCH -bob");
    assert_eq!(sim.expect_line(a), "OK WATCH 0");
    let b2 = sim.connect();
    sim.send(b2, "LOGIN bob pw");
    assert!(sim.expect_line(b2).starts_with("OK LOGIN bob"));
    sim.silent(a);
    assert_eq!(sim.expect_line(c), "EVENT ONLINE bob 127.0.0.1");
    // Re-login in answer to REAUTH is a renewal, not a new login: no event.
    sim.send(a, "LOGIN alice pw");
    assert!(sim.expect_line(a).starts_with("OK LOGIN alice"));
    sim.silent(c);
}

#[test]
fn watch_is_capped_per_session_and_ends_with_it() {
    let mut sim = Sim::new(cfg());
    let c = sim.connect();
    sim.send(c, "WATCH +bob");
    assert!(sim.expect_line(c).starts_with("ERR not-logged-in"));
    let (a, _) = sim.login_new("alice");
    for chunk in 0..4 {
        let names: Vec<String> = (0..25).map(|i| format!("+u{chunk}x{i}")).collect();
        sim.send(a, &format!("WATCH {}", names.join(" ")));
        assert_eq!(sim.expect_line(a), format!("OK WATCH {}", 25 * (chunk + 1)));
    }
    sim.send(a, "WATCH +one-too-many");
    assert!(sim.expect_line(a).starts_with("ERR watch-limit"));
    sim.send(a, "WATCH -u0x0 +bad*name");
    assert!(sim.expect_line(a).starts_with("ERR bad-username"));
    assert_eq!(sim.engine.presence.entries(), (100, 100));
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    sim.settle();
    assert_eq!(sim.engine.presence.entries(), (0, 0));
}

#[test]
fn a_ping_with_an_unknown_token_gets_a_small_error_and_nothing_else_does() {
    let (mut sim, _a, _b, tb) = alice_and_bob_on_udp();
    let forged = "0".repeat(32);
    for text in [format!("REGISTER {forged}"), format!("ACK {forged} 1")] {
        sim.datagram(udp(7000), &text);
    }
    assert!(sim.take_datagrams().is_empty());
    let ping = format!("PING {forged}");
    sim.datagram(udp(7000), &ping);
    let out = sim.take_datagrams();
    assert_eq!(out, vec![(udp(7000), "ERR unknown-token".to_owned())]);
    assert!(out[0].1.len() <= ping.len(), "no amplification");
    // A live token still gets its PONG.
    sim.datagram(udp(5000), &format!("PING {tb}"));
    assert_eq!(sim.take_datagrams(), vec![(udp(5000), "PONG".to_owned())]);
}

/// Hole punching (`punch.rs`): an introduction between peerline clients (the
/// requester named its port) is timed with `EVENT SYNC`; once both answered,
/// each gets `EVENT PUNCH` with the *other's observed control address* and a
/// delay that makes both dial together. Nobody else can take part.
#[test]
fn an_introduction_is_synced_then_both_get_the_others_observed_address() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    let (c, _) = sim.login_new("carol");
    let addr_of = |conn: ConnId| format!("127.0.0.1:{}", 40000 + conn as u16);
    sim.send(a, "CONNECT bob 7001");
    assert_eq!(sim.expect_line(a), "OK CONNECT bob");
    assert_eq!(sim.expect_line(b), "EVENT REQUEST alice 127.0.0.1");
    sim.send(b, "ACCEPT alice 7002");
    assert!(sim
        .expect_line(a)
        .starts_with("EVENT PEER bob 127.0.0.1:7002 "));
    assert_eq!(sim.expect_line(a), "EVENT SYNC bob");
    assert!(sim.expect_line(b).starts_with("OK ACCEPT alice "));
    assert_eq!(sim.expect_line(b), "EVENT DIALBACK alice 127.0.0.1:7001");
    assert_eq!(sim.expect_line(b), "EVENT SYNC alice");
    // A third user cannot join or trigger it.
    sim.send(c, "SYNC alice");
    assert!(sim.expect_line(c).starts_with("ERR no-request"));
    // Bob answers after 30 ms, alice after 10 ms more.
    sim.advance(Duration::from_millis(30));
    sim.send(b, "SYNC alice");
    assert_eq!(sim.expect_line(b), "OK SYNC alice");
    assert_eq!(sim.next_line(a), None, "nothing before both answered");
    sim.advance(Duration::from_millis(10));
    sim.send(a, "SYNC bob");
    assert_eq!(sim.expect_line(a), "OK SYNC bob");
    // Alice (40 ms away) dials at once; bob (30 ms) 5 ms later; each gets
    // the other's control connection address, and both the path estimate.
    assert_eq!(
        sim.expect_line(a),
        format!("EVENT PUNCH bob {} 0 70", addr_of(b))
    );
    assert_eq!(
        sim.expect_line(b),
        format!("EVENT PUNCH alice {} 5 70", addr_of(a))
    );
    // Used up: a repeated answer is refused.
    sim.send(a, "SYNC bob");
    assert!(sim.expect_line(a).starts_with("ERR no-request"));
    assert_eq!(sim.next_line(c), None);
}

/// `CONNECT` without a port (an `nc` user) gets no SYNC and no DIALBACK.
#[test]
fn an_introduction_without_a_port_is_not_synced() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    sim.alice_asks_bob(a, b, 7002);
    assert!(sim.expect_line(a).starts_with("EVENT PEER bob"));
    assert!(sim.expect_line(b).starts_with("OK ACCEPT alice"));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.next_line(a), None);
    assert_eq!(sim.next_line(b), None);
}

#[test]
fn an_unknown_verb_is_answered_with_real_verbs_to_try() {
    let mut sim = Sim::new(cfg());
    let c = sim.connect();
    sim.send(c, "FROB x");
    let l = sim.expect_line(c);
    let (_, tried) = l.split_once("; try ").unwrap_or_else(|| panic!("{l}"));
    let names: Vec<&str> = tried.split(", ").collect();
    assert!(l.starts_with("ERR unknown-verb"), "{l}");
    for n in &names {
        assert!(
            crate::proto::command::Verb::from_name(n).is_some(),
            "{n} in {l}"
        );
    }
    assert!(
        names.contains(&"PASSWD") && names.contains(&"RESUME"),
        "{l}"
    );
}
