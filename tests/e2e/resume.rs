//! Session resumption tickets end to end: the real client comes back after
//! `kill -9` and a restart without a password hash, and the attacks —
//! forged, foreign, replayed, expired and revoked tickets, a ticket in clear
//! from a network address — are refused by the real server; no ticket is
//! ever written to a log.

use std::time::{Duration, Instant};

use super::harness::{run_to_exit, Client, Line, Server, SIGKILL};

/// Reconnects wait a jittered backoff: a generous bound, not a speed claim.
const BACK: Duration = Duration::from_secs(40);

/// Waits (bounded) for a server log line containing `needle`; returns every
/// line read so far.
fn wait_log(server: &Server, seen: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        seen.extend(server.log_lines());
        if seen.iter().any(|l| l.contains(needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no log line with {needle:?}:\n{}", seen.join("\n"));
}

/// `TICKET` on a logged-in connection: the ticket text.
fn ticket(c: &mut Line) -> String {
    let ok = c.cmd_ok("TICKET");
    let t = ok.split(' ').nth(2).expect("OK TICKET <ticket> expires=…");
    assert!(
        ok.split(' ')
            .nth(3)
            .is_some_and(|e| e.starts_with("expires=")),
        "{ok}"
    );
    t.to_owned()
}

/// A run of at least 70 hex digits: a ticket (74), never a token (32) or a
/// fingerprint (64).
fn has_ticket_shape(s: &str) -> bool {
    let mut run = 0;
    for b in s.bytes() {
        run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 70 {
            return true;
        }
    }
    false
}

#[test]
fn after_kill_9_and_restart_the_client_resumes_by_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let port = server.tcp.port();
    let log = dir.path().join("client.log");
    let mut alice = Client::start_logging(&server, &["--listen-addr", "127.0.0.1"], &log);
    alice.send("/signup alice pw-alice pw-alice");
    alice.send("/login alice pw-alice");
    alice.expect("logged in as alice");
    // The key file is private, like the others.
    let key = dir.path().join("resume.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let key_before = std::fs::read(&key).unwrap();
    // Let the client's TICKET be answered before the crash.
    alice.send("/list");
    alice.expect("1 user(s) online");
    server.signal_and_wait(SIGKILL);
    alice.expect("lost the connection to the server");
    drop(server);
    let server = Server::start_on(dir.path(), port, &["--kdf-iterations", "1000"]);
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_before,
        "the key is made once"
    );
    alice.expect_long("logged in again as alice", BACK);
    let mut seen = Vec::new();
    wait_log(&server, &mut seen, "resumed alice by ticket");
    // A real session: /list works, and the next loss resumes again.
    alice.send("/list");
    alice.expect("1 user(s) online");
    let (status, out) = alice.finish();
    assert_eq!(status.code(), Some(0));
    let client_log = std::fs::read_to_string(&log).unwrap();
    for text in out.iter().chain(
        client_log
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert!(!has_ticket_shape(text), "a ticket was printed: {text}");
    }
}

#[test]
fn forged_foreign_replayed_and_revoked_tickets_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(tmp.path(), &[], &[("RUST_LOG", "debug")]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    let ta = ticket(&mut alice);
    let tb = ticket(&mut bob);
    drop(alice);
    // The attacker, from an address of its own: every refusal counts against
    // it like a wrong password, so the fifth try is refused before it is
    // looked at.
    let mut m = server.connect_from("127.0.23.1");
    // Forged: one hex digit of the tag changed.
    let mut forged = ta.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    m.cmd_err(
        &format!("RESUME alice {}", String::from_utf8(forged).unwrap()),
        "bad-ticket",
    );
    // Bob's ticket for alice, alice's for bob, for nobody.
    m.cmd_err(&format!("RESUME alice {tb}"), "bad-ticket");
    m.cmd_err(&format!("RESUME bob {ta}"), "bad-ticket");
    m.cmd_err(&format!("RESUME mallory {ta}"), "bad-ticket");
    m.cmd_err(&format!("RESUME alice {ta}"), "rate-limited");
    // None of that used alice's ticket up: good once from her address;
    // replayed, refused.
    let mut c = server.connect();
    let ok = c.cmd_ok(&format!("RESUME alice {ta}"));
    let fresh = ok
        .split(' ')
        .nth(4)
        .expect("OK RESUME user token ticket expires=…")
        .to_owned();
    let mut d = server.connect_from("127.0.23.2");
    d.cmd_err(&format!("RESUME alice {ta}"), "bad-ticket");
    // Logged in for real by the ticket.
    assert_eq!(c.cmd_ok("LIST"), "OK LIST 2", "alice (by ticket) and bob");
    // PASSWD revokes the fresh ticket.
    c.cmd_ok("PASSWD pw-alice pw-new pw-new");
    drop(c);
    d.cmd_err(&format!("RESUME alice {fresh}"), "bad-ticket");
    // The administrator's disable (through the running server) and delete.
    let dir = server.data_dir.display().to_string();
    drop(bob);
    let (st, _, err) = run_to_exit(&["user", "disable", "bob", "--data-dir", &dir]);
    assert!(st.success(), "{err}");
    d.cmd_err(&format!("RESUME bob {tb}"), "bad-ticket");
    let (st, _, err) = run_to_exit(&["user", "enable", "bob", "--data-dir", &dir]);
    assert!(st.success(), "{err}");
    d.cmd_err(&format!("RESUME bob {tb}"), "bad-ticket");
    let (mut carol, _) = server.login_new("carol");
    let tc = ticket(&mut carol);
    drop(carol);
    let (st, _, err) = run_to_exit(&["user", "del", "carol", "--data-dir", &dir]);
    assert!(st.success(), "{err}");
    // (A third address: `d` has used its four.)
    server
        .connect_from("127.0.23.3")
        .cmd_err(&format!("RESUME carol {tc}"), "bad-ticket");
    // Not one ticket in the server's debug log.
    let mut seen = Vec::new();
    wait_log(
        &server,
        &mut seen,
        "failed RESUME for user carol from 127.0.23.3",
    );
    // One warn line per refusal, with why, as for a wrong password (fail2ban).
    for why in [
        "alice from 127.0.23.1 (conn",
        "bob from 127.0.23.1",
        "mallory from 127.0.23.1",
    ] {
        assert!(
            seen.iter()
                .any(|l| l.contains(" WARN ")
                    && l.contains(&format!("failed RESUME for user {why}"))),
            "no warn line for {why}:\n{}",
            seen.join("\n")
        );
    }
    for t in [&ta, &tb, &tc, &fresh] {
        assert!(
            !seen.iter().any(|l| l.contains(t.as_str())),
            "ticket logged"
        );
    }
    assert!(
        // Replies are logged by `Debug`, which redacts a ticket by its type.
        seen.iter().any(|l| l.contains("Ticket { ticket: Ticket(<")),
        "debug log of replies"
    );
}

#[test]
fn an_expired_ticket_is_refused() {
    let server = Server::start(&["--session-ttl", "2s"]);
    let (mut alice, _) = server.login_new("alice");
    let t = ticket(&mut alice);
    drop(alice);
    std::thread::sleep(Duration::from_millis(2500));
    let mut c = server.connect();
    c.cmd_err(&format!("RESUME alice {t}"), "bad-ticket");
    // The password still works, of course.
    c.cmd_ok("LOGIN alice pw-alice");
}

#[test]
fn no_ticket_in_clear_from_a_non_loopback_address() {
    let Some((ns, _ours, theirs)) = super::tls::Netns::create("rs") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = ["ip", "netns", "exec", ns.name.as_str()];
    // Even `--plaintext any`, which lets passwords through in clear.
    let mut server = Server::start_via(
        &wrapper,
        tmp.path(),
        &["--bind", &theirs, "--plaintext", "any", "--max-per-ip", "0"],
    );
    server.tcp = format!("{theirs}:{}", server.tcp.port()).parse().unwrap();
    // A ticket obtained properly, over TLS.
    let mut tls = server.connect_tls();
    tls.cmd_ok("SIGNUP erin pw-erin pw-erin");
    tls.cmd_ok("LOGIN erin pw-erin");
    let t = ticket(&mut tls);
    drop(tls);
    // In clear from 10.x: refused both ways, before any check.
    let mut plain = server.connect();
    assert!(!plain.stream.local_addr().unwrap().ip().is_loopback());
    plain.cmd_err(&format!("RESUME erin {t}"), "tls-required");
    plain.cmd_ok("LOGIN erin pw-erin");
    plain.cmd_err("TICKET", "tls-required");
    drop(plain);
    // Over TLS from the same address the same ticket works.
    let mut tls = server.connect_tls();
    tls.cmd_ok(&format!("RESUME erin {t}"));
}
