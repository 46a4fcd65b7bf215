//! Session resumption on the engine, on the virtual clock, tested like an
//! attacker: replayed, foreign, expired, forged and revoked tickets, tickets
//! offered in clear from a network address, and none in the log.

use super::*;
use crate::server::admin::AdminRequest;
use crate::server::resume::ResumeKey;

const ADMIN: ConnId = usize::MAX / 2;
const TTL: u64 = 30 * 60;

/// `TICKET` on a logged-in connection: the ticket and its expiry.
fn ticket(sim: &mut Sim, conn: ConnId) -> (String, u64) {
    sim.send(conn, "TICKET");
    let l = sim.expect_line(conn);
    let rest = l
        .strip_prefix("OK TICKET ")
        .unwrap_or_else(|| panic!("{l}"));
    let (t, e) = rest.split_once(" expires=").unwrap();
    (t.to_owned(), e.parse().unwrap())
}

/// `RESUME` on a fresh connection: `Ok((conn, token, next ticket))` or the ERR line.
fn resume(sim: &mut Sim, user: &str, t: &str) -> Result<(ConnId, String, String), String> {
    resume_from(sim, "127.0.0.1", user, t)
}

/// [`resume`] from the loopback address `ip` (a source of its own).
fn resume_from(
    sim: &mut Sim,
    ip: &str,
    user: &str,
    t: &str,
) -> Result<(ConnId, String, String), String> {
    let c = sim.connect_from(ip);
    sim.welcomed(c);
    sim.send(c, &format!("RESUME {user} {t}"));
    // No hash is queued: the answer is there at once, no time passing.
    let l = sim.next_line(c).expect("an immediate answer");
    let Some(rest) = l.strip_prefix(&format!("OK RESUME {user} ")) else {
        return Err(l);
    };
    let f: Vec<&str> = rest.split(' ').collect();
    assert_eq!(f.len(), 3, "{l}");
    Ok((c, f[0].to_owned(), f[1].to_owned()))
}

fn refused(r: Result<(ConnId, String, String), String>) -> String {
    let l = r.expect_err("refused");
    assert!(
        l.starts_with("ERR bad-ticket") || l.starts_with("ERR account-disabled"),
        "{l}"
    );
    l
}

#[test]
fn a_ticket_resumes_once_without_a_hash_and_the_fresh_one_works_next() {
    let mut sim = Sim::new(EngineConfig {
        // A hash this costly would not finish in the `next_line` of `resume`.
        kdf_iterations: 1000,
        ..cfg()
    });
    let (a, token) = sim.login_new("alice");
    let (t1, expires) = ticket(&mut sim, a);
    assert_eq!(expires, T0_UNIX_MS / 1000 + TTL);
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    sim.advance(Duration::from_secs(60));
    let hashes_before = sim.engine.stats.logins_ok;
    let (b, token2, t2) = resume(&mut sim, "alice", &t1).unwrap();
    assert_ne!(token2, token, "a new session, a new token");
    assert_ne!(t2, t1);
    assert_eq!(sim.engine.stats.logins_ok, hashes_before);
    assert_eq!(sim.engine.stats.resumes_ok, 1);
    // Logged in for real: LIST works.
    sim.send(b, "LIST");
    assert_eq!(sim.expect_line(b), "CLIENT alice 127.0.0.1");
    assert_eq!(sim.expect_line(b), "OK LIST 1");
    // The used ticket is refused (replay), the fresh one works once.
    sim.engine.handle(sim.now, Input::Disconnect { conn: b });
    refused(resume(&mut sim, "alice", &t1));
    let (_, _, t3) = resume(&mut sim, "alice", &t2).unwrap();
    refused(resume(&mut sim, "alice", &t2));
    assert!(!t3.is_empty());
    assert_eq!(sim.engine.stats.tickets_refused, 2);
}

#[test]
fn a_resumed_session_keeps_the_original_relogin_deadline() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (t1, _) = ticket(&mut sim, a);
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    sim.advance(Duration::from_secs(20 * 60));
    let (b, _, t2) = resume(&mut sim, "alice", &t1).unwrap();
    // REAUTH at 30 min after the LOGIN, not 30 min after the RESUME.
    sim.advance(Duration::from_secs(10 * 60 - 1));
    sim.silent(b);
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.expect_line(b), "EVENT REAUTH 120");
    // Past the deadline the fresh ticket is expired too: the password is due.
    sim.engine.handle(sim.now, Input::Disconnect { conn: b });
    refused(resume(&mut sim, "alice", &t2));
}

#[test]
fn an_expired_ticket_is_refused_and_a_relogin_gives_a_later_one() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (t1, e1) = ticket(&mut sim, a);
    sim.advance(Duration::from_secs(TTL));
    assert_eq!(sim.expect_line(a), "EVENT REAUTH 120");
    // Re-login due: no ticket until the password is given.
    sim.send(a, "TICKET");
    assert!(sim.expect_line(a).starts_with("ERR bad-ticket"));
    sim.send(a, "LOGIN alice pw");
    assert!(sim.expect_line(a).starts_with("OK LOGIN alice "));
    let (t2, e2) = ticket(&mut sim, a);
    assert_eq!(e2, e1 + TTL);
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    refused(resume(&mut sim, "alice", &t1));
    assert!(resume(&mut sim, "alice", &t2).is_ok());
}

#[test]
fn another_users_ticket_a_forged_one_and_an_unknown_user_are_refused_alike() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (_b, _) = sim.login_new("bob");
    let (ta, _) = ticket(&mut sim, a);
    // The attacker tries from an address of its own: refusals count against
    // it (see `refused_tickets_count_against_the_source_like_wrong_passwords`).
    let mallory = "127.0.7.7";
    let bob = refused(resume_from(&mut sim, mallory, "bob", &ta));
    let nobody = refused(resume_from(&mut sim, mallory, "mallory", &ta));
    // Flip one bit of the tag.
    let mut forged = ta.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let bad = refused(resume_from(&mut sim, mallory, "alice", &forged));
    // One answer for every failure: nothing tells an attacker which check failed.
    assert_eq!(bob, nobody);
    assert_eq!(bob, bad);
    // A ticket from a server with another key, and nothing else different:
    // the same seed gives its alice the same salt, so the same binding.
    let mut other = Sim::new(cfg());
    let key = ResumeKey::random(&mut crate::rng::Seeded::new(9));
    other.engine = engine_with_key(vec![], other.now, T0_UNIX_MS, &key);
    other.settle();
    let (oa, _) = other.login_new("alice");
    let (foreign, _) = ticket(&mut other, oa);
    refused(resume_from(&mut sim, mallory, "alice", &foreign));
    // None of that used the real one up.
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    assert!(resume(&mut sim, "alice", &ta).is_ok());
}

#[test]
fn refused_tickets_count_against_the_source_like_wrong_passwords() {
    let mut sim = Sim::new(cfg());
    let (a, _) = sim.login_new("alice");
    let (ta, _) = ticket(&mut sim, a);
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    // Forged tickets from one source: the password burst (4), then refused
    // before the ticket is even looked at, as a fifth wrong password is.
    let mallory = "127.0.7.7";
    let mut forged = ta.clone().into_bytes();
    forged[40] = if forged[40] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    for _ in 0..4 {
        refused(resume_from(&mut sim, mallory, "alice", &forged));
    }
    let limited = resume_from(&mut sim, mallory, "alice", &ta).expect_err("limited");
    assert!(
        limited.starts_with("ERR rate-limited retry-after="),
        "{limited}"
    );
    // The check came first: alice's real ticket was not used up by it, and
    // a wrong password from that source is refused the same way.
    let m = sim.connect_from(mallory);
    sim.welcomed(m);
    sim.send(m, "LOGIN alice guess");
    assert!(sim.expect_line(m).starts_with("ERR rate-limited"));
    assert_eq!(sim.engine.stats.tickets_refused, 4);
    assert!(resume(&mut sim, "alice", &ta).is_ok(), "another source");
    // An expired ticket is what an honest client that slept through its
    // re-login holds: refused, but not counted (five in a row, one source).
    let (b, _) = sim.login_new("bob");
    let (tb, _) = ticket(&mut sim, b);
    sim.advance(Duration::from_secs(TTL + 1));
    for _ in 0..5 {
        refused(resume_from(&mut sim, "127.0.8.8", "bob", &tb));
    }
    assert_eq!(sim.engine.stats.tickets_refused, 9);
}

#[test]
fn passwd_disable_and_del_revoke_tickets() {
    let mut sim = Sim::new(cfg());
    // Each refused try from an address of its own: refusals count against
    // their source like wrong passwords, which is not what this tests.
    // The user's own PASSWD.
    let (a, _) = sim.login_new("alice");
    let (t, _) = ticket(&mut sim, a);
    sim.send(a, "PASSWD pw pw2 pw2");
    assert_eq!(sim.expect_line(a), "OK PASSWD");
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    refused(resume_from(&mut sim, "127.0.9.1", "alice", &t));
    // The administrator's disable, then enable: the old ticket stays dead.
    let (b, _) = sim.login_new("bob");
    let (t, _) = ticket(&mut sim, b);
    sim.engine.handle(
        sim.now,
        Input::Admin {
            conn: ADMIN,
            req: AdminRequest::Disable { user: "bob".into() },
        },
    );
    sim.settle();
    assert_eq!(sim.next_line(ADMIN).as_deref(), Some("OK"));
    refused(resume_from(&mut sim, "127.0.9.2", "bob", &t));
    sim.engine.handle(
        sim.now,
        Input::Admin {
            conn: ADMIN,
            req: AdminRequest::Enable { user: "bob".into() },
        },
    );
    sim.settle();
    assert_eq!(sim.next_line(ADMIN).as_deref(), Some("OK"));
    refused(resume_from(&mut sim, "127.0.9.3", "bob", &t));
    // Delete.
    let (c, _) = sim.login_new("carol");
    let (t, _) = ticket(&mut sim, c);
    sim.engine.handle(sim.now, Input::Disconnect { conn: c });
    sim.engine.on_admin(
        sim.now,
        ADMIN,
        AdminRequest::Del {
            user: "carol".into(),
        },
    );
    sim.settle();
    assert_eq!(sim.next_line(ADMIN).as_deref(), Some("OK"));
    refused(resume_from(&mut sim, "127.0.9.4", "carol", &t));
    // Signed up again under the same name: the old ticket is not theirs.
    let (c2, _) = sim.login_new("carol");
    sim.engine.handle(sim.now, Input::Disconnect { conn: c2 });
    refused(resume_from(&mut sim, "127.0.9.5", "carol", &t));
}

#[test]
fn tickets_never_travel_in_clear_from_a_network_address() {
    // Even with `--plaintext any`, which lets passwords through.
    let mut sim = Sim::new(EngineConfig {
        plaintext: crate::server::tls::PlaintextPolicy::Any,
        ..cfg()
    });
    let (a, _) = sim.login_new("alice");
    let (t, _) = ticket(&mut sim, a);
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    // A plaintext connection from 10.0.0.9 (no `on_secure`).
    let c = 999;
    let addr: SocketAddr = "10.0.0.9:5555".parse().unwrap();
    sim.engine.handle(sim.now, Input::Connect { conn: c, addr });
    sim.settle();
    sim.welcomed(c);
    sim.send(c, &format!("RESUME alice {t}"));
    assert!(sim.expect_line(c).starts_with("ERR tls-required"));
    // Logged in there by password, it gets no ticket either.
    sim.send(c, "LOGIN alice pw");
    assert!(sim.expect_line(c).starts_with("OK LOGIN alice "));
    sim.send(c, "TICKET");
    assert!(sim.expect_line(c).starts_with("ERR tls-required"));
    // The same from that address over TLS is fine.
    let s = sim.connect_from("10.0.0.9");
    sim.welcomed(s);
    sim.engine.handle(sim.now, Input::Disconnect { conn: c });
    sim.send(s, &format!("RESUME alice {t}"));
    assert!(sim.expect_line(s).starts_with("OK RESUME alice "));
}

fn engine_with_key(users: Vec<UserRow>, now: Instant, unix_ms: u64, key: &ResumeKey) -> Engine {
    let none = crate::server::records::BroadcastFile {
        records: vec![],
        next_id: 1,
    };
    Engine::new(
        cfg(),
        users,
        none,
        vec![],
        now,
        unix_ms,
        Box::new(crate::rng::Seeded::new(1)),
    )
    .with_resume_key(key.clone())
}

#[test]
fn tickets_survive_a_restart_with_the_same_key_once() {
    let key = ResumeKey::random(&mut crate::rng::Seeded::new(7));
    let mut sim = Sim::new(cfg());
    sim.engine = engine_with_key(vec![], sim.now, T0_UNIX_MS, &key);
    sim.settle();
    let (a, _) = sim.login_new("alice");
    let (t1, _) = ticket(&mut sim, a);
    sim.engine.handle(sim.now, Input::Disconnect { conn: a });
    let (_, _, t2) = resume(&mut sim, "alice", &t1).unwrap();
    // kill -9 and restart: the same users and key; the floors are gone.
    let mut after = Sim::new(cfg());
    after.engine = engine_with_key(
        sim.stored_users.clone(),
        after.now,
        T0_UNIX_MS + 60_000,
        &key,
    );
    after.settle();
    // The live ticket works once; the one redeemed before the crash is then dead.
    assert!(resume(&mut after, "alice", &t2).is_ok());
    refused(resume(&mut after, "alice", &t1));
    refused(resume(&mut after, "alice", &t2));
    // A server with another key (the key file lost) takes none of them.
    let mut other = Sim::new(cfg());
    other.engine = engine_with_key(
        sim.stored_users.clone(),
        other.now,
        T0_UNIX_MS,
        &ResumeKey::random(&mut crate::rng::Seeded::new(8)),
    );
    other.settle();
    refused(resume(&mut other, "alice", &t2));
}

#[test]
fn the_log_never_shows_a_ticket() {
    // Logs show lines by `Debug`, which redacts tickets and tokens by type.
    let ticket = crate::proto::Ticket::parse(&"0a".repeat(37)).unwrap();
    let token = crate::proto::names::Token::parse(&"0f".repeat(16)).unwrap();
    let lines = [
        crate::proto::ServerLine::Ok(crate::proto::OkReply::Ticket {
            ticket: ticket.clone(),
            expires: 5,
        }),
        crate::proto::ServerLine::Ok(crate::proto::OkReply::Resume {
            user: "alice".into(),
            token,
            ticket,
            expires: 5,
        }),
    ];
    for l in lines {
        let shown = format!("{l:?}");
        assert!(
            !shown.contains(&"0a".repeat(8)) && !shown.contains(&"0f".repeat(8)),
            "{shown}"
        );
        assert!(l.wire().to_string().contains(&"0a".repeat(37)));
    }
}
