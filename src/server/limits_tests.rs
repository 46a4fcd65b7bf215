//! The abuse limits in the engine, on the virtual clock: connections per
//! source, the unauthenticated reserve and hard lifetime, password guessing
//! (refused before hashing), signups, broadcasts, and fair hashing.

use super::*;
use crate::server::limits::{GuessRules, Rate};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn closing(sim: &mut Sim, conn: ConnId, reason: &str) {
    let l = sim.expect_line(conn);
    assert!(
        l.starts_with(&format!("EVENT CLOSING {reason} ")),
        "conn {conn}: {l}"
    );
    assert!(
        sim.closed.get(&conn).copied().unwrap_or(false),
        "not closed"
    );
}

/// Signups limited to 4 an hour per source, and 10.0.0.1 (connection `c`)
/// has just used its one at once: signs up a1, then returns the answer to
/// its signing up a2.
fn signup_rate_spent() -> (Sim, ConnId, String) {
    let mut sim = Sim::new(EngineConfig {
        signup_rate: 4,
        ..cfg()
    });
    let c = sim.connect_from("10.0.0.1");
    sim.welcomed(c);
    sim.send(c, "SIGNUP a1 pw pw");
    assert_eq!(sim.expect_line(c), "OK SIGNUP a1");
    sim.send(c, "SIGNUP a2 pw pw");
    let refused = sim.expect_line(c);
    (sim, c, refused)
}

#[test]
fn connections_beyond_max_per_ip_are_closed_per_source() {
    let mut sim = Sim::new(EngineConfig {
        max_per_ip: 2,
        ..cfg()
    });
    let a1 = sim.connect_from("10.0.0.1");
    let a2 = sim.connect_from("10.0.0.1");
    sim.welcomed(a1);
    sim.welcomed(a2);
    let a3 = sim.connect_from("10.0.0.1");
    closing(&mut sim, a3, "per-ip-limit");
    // IPv4-mapped is the same address.
    let a4 = sim.connect_from("::ffff:10.0.0.1");
    closing(&mut sim, a4, "per-ip-limit");
    let b = sim.connect_from("10.0.0.2");
    sim.welcomed(b);
    // One IPv6 /64 counts as one source.
    let v1 = sim.connect_from("2001:db8:0:1::1");
    let v2 = sim.connect_from("2001:db8:0:1::2");
    let v3 = sim.connect_from("2001:db8:0:1:ffff::3");
    sim.welcomed(v1);
    sim.welcomed(v2);
    closing(&mut sim, v3, "per-ip-limit");
    // A slot freed is a slot again.
    sim.engine.handle(sim.now, Input::Disconnect { conn: a1 });
    let a5 = sim.connect_from("10.0.0.1");
    sim.welcomed(a5);
    assert_eq!(sim.engine.stats.rate_limited, 3);
}

#[test]
fn unauthenticated_connections_leave_a_quarter_of_max_clients_to_sessions() {
    let mut sim = Sim::new(EngineConfig {
        max_clients: 8,
        ..cfg()
    });
    let (alice, _) = sim.login_new("alice");
    // 6 = 8 - 8/4 may wait to log in at once; the 7th is refused although
    // the server holds only 7 connections.
    let waiting: Vec<ConnId> = (0..6)
        .map(|i| {
            let c = sim.connect_from(&format!("10.0.1.{i}"));
            sim.welcomed(c);
            c
        })
        .collect();
    let refused = sim.connect_from("10.0.2.1");
    closing(&mut sim, refused, "server-full");
    // Sessions are untouched, and one that logs in frees its waiting slot.
    sim.send(alice, "PING");
    assert_eq!(sim.expect_line(alice), "OK PING");
    sim.send(waiting[0], "SIGNUP bob pw pw");
    assert_eq!(sim.expect_line(waiting[0]), "OK SIGNUP bob");
    sim.send(waiting[0], "LOGIN bob pw");
    assert!(sim.expect_line(waiting[0]).starts_with("OK LOGIN bob "));
    let next = sim.connect_from("10.0.2.1");
    sim.welcomed(next);
}

#[test]
fn a_connection_that_never_logs_in_is_closed_however_busy_it_keeps() {
    let mut sim = Sim::new(EngineConfig {
        idle_timeout: secs(60),
        login_timeout: secs(120),
        ..cfg()
    });
    let c = sim.connect();
    let (alice, _) = sim.login_new("alice");
    // A PING every 10 s keeps the idle timer from firing...
    for _ in 0..11 {
        sim.advance(secs(10));
        sim.send(c, "PING");
        assert_eq!(sim.expect_line(c), "OK PING");
    }
    // ...but not the hard lifetime.
    sim.advance(secs(10));
    closing(&mut sim, c, "idle");
    // A logged-in connection is not subject to it.
    sim.advance(secs(200));
    sim.send(alice, "PING");
    assert_eq!(sim.expect_line(alice), "OK PING");
}

/// Found by reading the code against docs/PROTOCOL.md: the idle timer that
/// fired while a hash was in progress was not armed again, so after a wrong
/// LOGIN only the (longer) login deadline closed a silent connection.
#[test]
fn a_connection_busy_when_its_idle_timer_fires_is_still_closed_for_silence() {
    let mut sim = Sim::new(EngineConfig {
        idle_timeout: secs(60),
        login_timeout: secs(600),
        ..cfg()
    });
    let c = sim.connect();
    sim.advance(Duration::from_millis(59_900));
    // The LOGIN is taken but not hashed yet when the idle timer fires at 60 s
    // (a turn fires timers before it hashes).
    sim.feed(c, "LOGIN nobody wrong");
    sim.now += Duration::from_millis(100);
    sim.engine.handle(sim.now, Input::Timeout);
    sim.settle();
    let l = sim.next_line(c).expect("the answer");
    assert!(l.starts_with("ERR bad-credentials"), "{l}");
    // Silent since the LOGIN at 59.9 s: closed by 121 s, not at 600.
    sim.advance(secs(61));
    let l = sim.next_line(c).expect("closed for silence");
    assert!(
        l.starts_with("EVENT CLOSING idle ") && l.contains("inactivity"),
        "{l}"
    );
    assert!(sim.closed.get(&c).copied().unwrap_or(false));
}

fn guess_sim() -> Sim {
    let mut sim = Sim::new(cfg());
    sim.login_new("alice");
    sim
}

/// Sends a LOGIN; returns the reply and whether a hash was queued for it.
fn login_from(sim: &mut Sim, conn: ConnId, password: &str) -> (String, bool) {
    sim.feed(conn, &format!("LOGIN alice {password}"));
    let hashing = sim.engine.has_work();
    sim.settle();
    (sim.expect_line(conn), hashing)
}

#[test]
fn wrong_passwords_past_the_source_limit_are_refused_without_hashing() {
    let mut sim = guess_sim();
    let c = sim.connect_from("10.0.0.1");
    sim.welcomed(c);
    for _ in 0..4 {
        let (reply, hashed) = login_from(&mut sim, c, "wrong");
        assert!(reply.starts_with("ERR bad-credentials"), "{reply}");
        assert!(hashed);
    }
    let (reply, hashed) = login_from(&mut sim, c, "pw");
    assert!(
        reply.starts_with("ERR rate-limited retry-after=10 "),
        "{reply}"
    );
    assert!(!hashed, "a refused guess was hashed");
    // Ten seconds later one more guess is hashed (and this one is right).
    sim.advance(secs(10));
    let (reply, hashed) = login_from(&mut sim, c, "pw");
    assert!(reply.starts_with("OK LOGIN alice "), "{reply}");
    assert!(hashed);
}

#[test]
fn a_right_password_from_a_clean_source_gets_in_while_the_account_is_attacked() {
    let mut sim = guess_sim();
    // Five sources spend their bursts: 20 wrong guesses, the account's burst.
    let attackers: Vec<ConnId> = (0..5)
        .map(|i| sim.connect_from(&format!("10.0.3.{i}")))
        .collect();
    for &c in &attackers {
        sim.welcomed(c);
        for _ in 0..4 {
            assert!(login_from(&mut sim, c, "guess")
                .0
                .starts_with("ERR bad-credentials"));
        }
    }
    // Their own buckets have refilled; the account's has not.
    sim.advance(secs(40));
    let (reply, hashed) = login_from(&mut sim, attackers[0], "guess");
    assert!(
        reply.starts_with("ERR rate-limited ") && reply.contains("for this account"),
        "{reply}"
    );
    assert!(!hashed);
    // Even the right password is refused to a source that failed recently...
    let (reply, _) = login_from(&mut sim, attackers[1], "pw");
    assert!(reply.starts_with("ERR rate-limited "), "{reply}");
    // ...but never to one that did not.
    let clean = sim.connect_from("192.0.2.7");
    sim.welcomed(clean);
    let (reply, _) = login_from(&mut sim, clean, "pw");
    assert!(reply.starts_with("OK LOGIN alice "), "{reply}");
}

#[test]
fn signups_closed_and_per_source_rate() {
    let mut sim = Sim::new(EngineConfig {
        signup_open: false,
        ..cfg()
    });
    let c = sim.connect();
    sim.send(c, "SIGNUP alice pw pw");
    assert!(sim.expect_line(c).starts_with("ERR signup-closed "));

    let (mut sim, _, refused) = signup_rate_spent();
    // 4 an hour: one at once, then one every 20 minutes.
    assert!(
        refused.starts_with("ERR rate-limited retry-after=1200 "),
        "{refused}"
    );
    let d = sim.connect_from("10.0.0.2");
    sim.welcomed(d);
    sim.send(d, "SIGNUP a3 pw pw");
    assert_eq!(sim.expect_line(d), "OK SIGNUP a3");
    sim.advance(secs(1200));
    let c = sim.connect_from("10.0.0.1");
    sim.welcomed(c);
    sim.send(c, "SIGNUP a2 pw pw");
    assert_eq!(sim.expect_line(c), "OK SIGNUP a2");
}

#[test]
fn broadcasts_per_user_are_rate_limited() {
    let mut sim = Sim::new(EngineConfig {
        broadcast_rate: 4,
        ..cfg()
    });
    let (a, _) = sim.login_new("alice");
    let (b, _) = sim.login_new("bob");
    sim.send(a, "BROADCAST one");
    assert!(sim.expect_line(a).starts_with("OK BROADCAST "));
    sim.send(a, "BROADCAST two");
    assert!(sim
        .expect_line(a)
        .starts_with("ERR rate-limited retry-after=20 "));
    // Another user's allowance is their own.
    sim.send(b, "BROADCAST three");
    let mut got = sim.expect_line(b);
    while got.starts_with("EVENT") {
        got = sim.expect_line(b);
    }
    assert!(got.starts_with("OK BROADCAST "), "{got}");
    sim.advance(secs(20));
    while sim.next_line(a).is_some() {}
    sim.send(a, "BROADCAST four");
    assert!(sim.expect_line(a).starts_with("OK BROADCAST "));
}

/// Runs engine turns (one `on_timeout` each, a millisecond apart) until
/// `conn` has a reply; returns how many turns it took.
fn turns_until_reply(sim: &mut Sim, conn: ConnId, limit: u32) -> (u32, String) {
    for turn in 1..=limit {
        sim.now += Duration::from_millis(1);
        sim.engine.handle(sim.now, Input::Timeout);
        while let Some(o) = sim.engine.poll_output() {
            if let Output::Send { conn: c, line } = o {
                sim.lines
                    .entry(c)
                    .or_default()
                    .push_back(line.wire().to_string());
            }
        }
        while let Some(l) = sim.next_line(conn) {
            if !l.starts_with("EVENT WELCOME") {
                return (turn, l);
            }
        }
    }
    panic!("no reply within {limit} turns");
}

#[test]
fn hashing_is_shared_per_source_so_a_hundred_guessers_cannot_delay_a_login() {
    let iterations = 40_000; // 20 slices of 2,048: 5 turns of 8,192 alone
    let cfg = EngineConfig {
        kdf_iterations: iterations,
        // Guessing limits out of the way: this is about the hashing queue.
        guesses: GuessRules {
            per_source: Rate {
                burst: 1000,
                interval: Duration::from_millis(1),
            },
            per_account: Rate {
                burst: 1000,
                interval: Duration::from_millis(1),
            },
            ..GuessRules::default()
        },
        ..cfg()
    };
    let mut sim = Sim::new(cfg);
    sim.login_new("alice");
    // Alone.
    let solo = sim.connect_from("10.0.9.1");
    sim.welcomed(solo);
    sim.feed(solo, "LOGIN alice pw");
    let (alone, reply) = turns_until_reply(&mut sim, solo, 10_000);
    assert!(reply.starts_with("OK LOGIN"), "{reply}");
    // A hundred guessing connections from one address, queued first.
    // (Straight to the engine: `Sim::connect_from` would settle, running
    // every queued hash to the end.)
    let open = |sim: &mut Sim, ip: &str| {
        let c = sim.next_conn;
        sim.next_conn += 1;
        let addr = SocketAddr::new(ip.parse().unwrap(), 1000 + c as u16);
        sim.engine.handle(sim.now, Input::Connect { conn: c, addr });
        sim.engine.handle(sim.now, Input::Secure { conn: c }); // remote: over TLS
        c
    };
    let guessers: Vec<ConnId> = (0..100)
        .map(|_| {
            let c = open(&mut sim, "10.0.0.66");
            sim.feed(c, "LOGIN alice guess");
            c
        })
        .collect();
    let other = open(&mut sim, "10.0.0.7");
    sim.feed(other, "LOGIN alice pw");
    let (shared, reply) = turns_until_reply(&mut sim, other, 10_000);
    assert!(reply.starts_with("OK LOGIN"), "{reply}");
    // Two sources share the capacity: about twice as long as alone, not a
    // hundred times (round-robin over hashes would take ~100 × alone).
    assert!(
        shared <= 2 * alone + 1,
        "{shared} turns with 100 guessers, {alone} alone"
    );
    // The guessers were not skipped, only interleaved: the first has its
    // answer, the rest are still being hashed (not run to the end here: that
    // is 4 million iterations of debug-build hashing for nothing).
    let first = sim.lines[&guessers[0]]
        .back()
        .expect("the first guess is answered");
    assert!(first.starts_with("ERR bad-credentials"), "{first}");
    assert!(sim.engine.has_work());
    assert_eq!(sim.lines[&guessers[99]].len(), 1, "only the WELCOME");
}

#[test]
fn a_broadcast_costs_the_online_users_not_every_account() {
    use crate::server::accounts::{UserRecord, UserRow};
    use crate::server::kdf::PasswordHash;
    // 200,000 accounts made earlier (offline), then two users online.
    let n = 200_000u32;
    let users: Vec<UserRow> = (1..=n)
        .map(|i| {
            UserRow::Put(UserRecord {
                seq: crate::server::accounts::UserIdx(i),
                username: format!("old{i}"),
                password_hash: PasswordHash {
                    iterations: 1,
                    salt: [0; 16],
                    hash: [0; 32],
                },
                created_unix: 0,
                enabled: true,
            })
        })
        .collect();
    let mut sim = Sim::with_store(cfg(), users, vec![], vec![]);
    let (a, _) = sim.login_new("alice");
    let (_b, _) = sim.login_new("bob");
    let (carol, _) = sim.login_new("carol");
    sim.engine
        .handle(sim.now, Input::Disconnect { conn: carol });
    sim.advance(secs(4));
    sim.lines.clear();
    sim.feed(a, "BROADCAST hello");
    // One turn finishes the whole fan-out: it visits the 2 online users, not
    // 200,002 accounts (that took 391 turns of FANOUT_BATCH).
    let mut turns = 0;
    let mut reply = None;
    loop {
        turns += 1;
        for o in sim.hand_turn() {
            if let Output::Send { conn, line } = o {
                if conn == a {
                    reply = Some(line.wire().to_string());
                }
            }
        }
        if !sim.engine.has_work() {
            break;
        }
        assert!(turns < 5, "fan-out still running after {turns} turns");
    }
    let reply = reply.expect("OK BROADCAST");
    // bob is reached now; the 200,000 old accounts and carol are pending.
    assert!(
        reply.starts_with("OK BROADCAST 1 reached=1 pending=200001 "),
        "{reply}"
    );
    // An offline account of the audience still gets it at login.
    let c = sim.connect();
    sim.send(c, "LOGIN carol pw");
    assert!(sim.expect_line(c).starts_with("OK LOGIN carol "));
    sim.advance(secs(4));
    let got = sim.expect_line(c);
    assert!(got.starts_with("EVENT BROADCAST 1 alice "), "{got}");
}

#[test]
fn a_configuration_reload_changes_the_limits_at_once() {
    let (mut sim, c, refused) = signup_rate_spent();
    assert!(refused.starts_with("ERR rate-limited "), "{refused}");
    // SIGHUP with --signup-rate 0: no limit from now on.
    sim.engine.set_config(EngineConfig {
        signup_rate: 0,
        ..cfg()
    });
    sim.send(c, "SIGNUP a2 pw pw");
    assert_eq!(sim.expect_line(c), "OK SIGNUP a2");
    // Then --signup closed and --max-per-ip 1.
    sim.engine.set_config(EngineConfig {
        signup_open: false,
        max_per_ip: 1,
        ..cfg()
    });
    sim.send(c, "SIGNUP a3 pw pw");
    assert!(sim.expect_line(c).starts_with("ERR signup-closed "));
    let d = sim.connect_from("10.0.0.1");
    closing(&mut sim, d, "per-ip-limit");
}

/// Connections from one address, each with `line` sent at the same moment
/// (straight to the engine, nothing settled in between); their replies.
fn at_once_from(sim: &mut Sim, ip: &str, n: usize, line: &str) -> Vec<String> {
    let conns: Vec<ConnId> = (0..n)
        .map(|_| {
            let c = sim.next_conn;
            sim.next_conn += 1;
            let addr = SocketAddr::new(ip.parse().unwrap(), 2000 + c as u16);
            sim.engine.handle(sim.now, Input::Connect { conn: c, addr });
            sim.engine.handle(sim.now, Input::Secure { conn: c }); // remote: over TLS
            sim.feed(c, line);
            c
        })
        .collect();
    sim.settle();
    conns
        .into_iter()
        .map(|c| {
            sim.welcomed(c);
            sim.expect_line(c)
        })
        .collect()
}

#[test]
fn many_right_logins_at_once_from_one_address_all_pass() {
    let mut sim = guess_sim();
    // Twenty people behind one NAT address log in at the same moment.
    let replies = at_once_from(&mut sim, "10.0.5.1", 20, "LOGIN alice pw");
    assert!(
        replies.iter().all(|r| r.starts_with("OK LOGIN alice ")),
        "{replies:#?}"
    );
}

#[test]
fn wrong_guesses_sent_at_once_from_one_address_get_no_more_hashes() {
    let mut sim = guess_sim();
    let replies = at_once_from(&mut sim, "10.0.5.2", 16, "LOGIN alice nope");
    let checked = replies
        .iter()
        .filter(|r| r.starts_with("ERR bad-credentials"))
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.starts_with("ERR rate-limited "))
        .count();
    // The source's burst of 4, checked one hash at a time; the rest refused
    // as their hash was about to start.
    assert_eq!((checked, refused), (4, 12), "{replies:#?}");
}

#[test]
fn passwd_counts_as_a_password_check() {
    let mut sim = guess_sim();
    let c = sim.connect_from("10.0.6.1");
    sim.welcomed(c);
    sim.send(c, "LOGIN alice pw");
    assert!(sim.expect_line(c).starts_with("OK LOGIN alice "));
    for _ in 0..4 {
        sim.send(c, "PASSWD wrong new new");
        assert!(sim.expect_line(c).starts_with("ERR bad-credentials"));
    }
    // Past the source's burst: refused, and no hash queued for it.
    sim.feed(c, "PASSWD pw new new");
    assert!(!sim.engine.has_work(), "a refused PASSWD was hashed");
    sim.settle();
    let l = sim.expect_line(c);
    assert!(l.starts_with("ERR rate-limited retry-after="), "{l}");
    // A LOGIN from the same address is refused too: one count per source.
    let d = sim.connect_from("10.0.6.1");
    sim.welcomed(d);
    sim.send(d, "LOGIN alice pw");
    assert!(sim.expect_line(d).starts_with("ERR rate-limited "));
}
