//! The server over loopback with raw control connections: flags, framing,
//! accounts, sessions (REAUTH, replacement), limits, durability, shutdown and
//! introductions. Each test runs its own server process.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::harness::{proc_net_tcp, run_to_exit, Line, Server, SIGINT, SIGKILL, SIGTERM, WAIT};

// ---- helpers ------------------------------------------------------------------

/// Sends `LIST`; returns the `(user, ip)` items after checking the count in `OK LIST`.
fn list(c: &mut Line) -> Vec<(String, String)> {
    c.send("LIST");
    let mut items = Vec::new();
    loop {
        let l = c.next("a LIST item or OK LIST");
        if let Some(rest) = l.strip_prefix("CLIENT ") {
            let (u, ip) = rest.split_once(' ').expect("CLIENT <user> <ip>");
            items.push((u.to_owned(), ip.to_owned()));
        } else if let Some(n) = l.strip_prefix("OK LIST ") {
            assert_eq!(n.parse::<usize>().ok(), Some(items.len()), "{}", c.dump());
            return items;
        } else if !l.starts_with("EVENT ") {
            panic!("unexpected line in LIST reply: {l:?}\n{}", c.dump());
        }
    }
}

fn names(items: &[(String, String)]) -> Vec<&str> {
    items.iter().map(|(u, _)| u.as_str()).collect()
}

/// Logs in an existing user (password as `Server::login_new` sets it); returns the token.
fn login(c: &mut Line, user: &str) -> String {
    let r = c.cmd_ok(&format!("LOGIN {user} pw-{user}"));
    r.split(' ').nth(3).expect("token in OK LOGIN").to_owned()
}

fn signup(server: &Server, user: &str) {
    let mut c = server.connect();
    c.cmd_ok(&format!("SIGNUP {user} pw-{user} pw-{user}"));
}

/// The next line, which must be exactly `want`.
fn expect_line(c: &mut Line, want: &str) {
    let got = c.next(want);
    assert_eq!(got, want, "{}", c.dump());
}

/// The next line, which must start with `prefix`. Unlike `Line::expect_prefix`
/// it skips nothing: these tests are about what comes next.
fn expect_start(c: &mut Line, prefix: &str) -> String {
    let got = c.next(prefix);
    assert!(got.starts_with(prefix), "{got:?}\n{}", c.dump());
    got
}

/// Polls (bounded) until `cond` holds.
fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CONTRACT_FLAGS: &[&str] = &[
    "--bind",
    "--port",
    "--data-dir",
    "--broadcast-ttl",
    "--session-ttl",
    "--reauth-grace",
    "--max-clients",
    "--kdf-iterations",
    "--tls-cert",
    "--tls-key",
    "--plaintext",
];

// ---- flags and start-up -----------------------------------------------------

#[test]
fn help_lists_every_contract_flag() {
    let (status, out, _) = run_to_exit(&["--help"]);
    assert!(status.success(), "--help exited with {status}");
    for flag in CONTRACT_FLAGS
        .iter()
        .chain(&["--request-ttl", "--idle-timeout"])
    {
        assert!(out.contains(flag), "--help does not list {flag}:\n{out}");
    }
}

#[test]
fn malformed_duration_exits_2_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    for (flag, value) in [
        ("--session-ttl", "5x"),
        ("--broadcast-ttl", "soon"),
        ("--reauth-grace", "3 s"),
        ("--request-ttl", "1.5s"),
    ] {
        let (status, out, err) = run_to_exit(&[
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            &dir,
            flag,
            value,
        ]);
        assert_eq!(status.code(), Some(2), "{flag} {value}: status {status}");
        assert!(
            !out.contains("listening"),
            "{flag} {value} started anyway: {out}"
        );
        assert!(
            err.contains(flag) && err.contains(value),
            "{flag} {value}: the message should name the flag and the value:\n{err}"
        );
    }
}

#[test]
fn listening_line_names_both_ports_and_welcome_comes_first() {
    let server = Server::start(&[]);
    assert_eq!(server.tcp.ip().to_string(), "127.0.0.1");
    assert_ne!(server.tcp.port(), 0, "--port 0 must report the port it got");
    assert_eq!(
        server.tcp.port(),
        server.udp.port(),
        "TCP and UDP share one port number"
    );
    let mut c = Line::connect(server.tcp);
    let first = expect_start(&mut c, "EVENT WELCOME ");
    assert!(
        first.contains("LOGIN") && first.contains("SIGNUP"),
        "WELCOME should tell the user to LOGIN or SIGNUP: {first:?}"
    );
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn control_connections_are_kept_alive_so_vanished_hosts_are_dropped() {
    let server = Server::start(&[]);
    let mut c = Line::connect(server.tcp);
    c.next("EVENT WELCOME");
    c.expect_silence(Duration::from_millis(200));
    let ours = c.stream.local_addr().unwrap();
    let (kind, when) = proc_net_tcp(server.tcp, ours)
        .expect("the server's side of the connection is in /proc/net/tcp")
        .timer;
    // Timer kind 2 is the keepalive timer; without SO_KEEPALIVE an idle,
    // fully acknowledged socket has none (kind 0).
    assert_eq!(kind, 2, "no keepalive timer on the server's socket");
    // Due in about 60 s (clock ticks of 1/100 s): probes start after a minute
    // of silence, not after the kernel's default two hours.
    assert!(
        (5_000..=6_100).contains(&when),
        "keepalive due in {when} ticks"
    );
}

// ---- accounts -----------------------------------------------------------------

#[test]
fn signup_replies() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    assert_eq!(c.cmd_ok("SIGNUP alice pw1 pw1"), "OK SIGNUP alice");
    c.cmd_err("SIGNUP alice other other", "user-exists");
    // Usernames are unique case-insensitively.
    c.cmd_err("SIGNUP ALICE other other", "user-exists");
    c.cmd_err("SIGNUP bob pw1 pw2", "password-mismatch");
    for bad in ["1bob", "127.0.0.1", "_bob", "bob,x", &"b".repeat(33)] {
        c.cmd_err(&format!("SIGNUP {bad} pw pw"), "bad-username");
    }
    // None of the failures created an account.
    c.cmd_err("LOGIN bob pw1", "bad-credentials");
    assert_eq!(c.cmd_ok("SIGNUP bob pw1 pw1"), "OK SIGNUP bob");
}

#[test]
fn login_replies() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.cmd_ok("SIGNUP alice secret secret");
    let wrong = c.cmd("LOGIN alice wrong");
    let unknown = c.cmd("LOGIN nobody secret");
    assert!(wrong.starts_with("ERR bad-credentials"), "{wrong:?}");
    assert_eq!(
        wrong, unknown,
        "wrong password and unknown user must get the same reply"
    );
    let ok = c.cmd_ok("LOGIN alice secret");
    let f: Vec<&str> = ok.split(' ').collect();
    assert_eq!(f.len(), 4, "OK LOGIN <user> <token>: {ok:?}");
    assert_eq!(f[2], "alice");
    let token = f[3];
    assert!(
        token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "token must be at least 32 hex digits: {token:?}"
    );
    // Another user on a logged-in connection is refused; the session stays.
    c.cmd_ok("SIGNUP bob pw pw");
    c.cmd_err("LOGIN bob pw", "already-logged-in");
    assert_eq!(names(&list(&mut c)), ["alice"]);
    // Two logins get different tokens.
    let mut d = server.connect();
    let ok2 = d.cmd_ok("LOGIN bob pw");
    assert_ne!(ok2.split(' ').nth(3), Some(token));
}

#[test]
fn only_signup_login_ping_quit_before_login() {
    let server = Server::start(&[]);
    let (_bob, _) = server.login_new("bob");
    let mut c = server.connect();
    for cmd in [
        "LIST",
        "CONNECT bob",
        "ACCEPT bob 5000",
        "DENY bob",
        "BROADCAST hello",
    ] {
        c.cmd_err(cmd, "not-logged-in");
    }
    assert_eq!(c.cmd("PING"), "OK PING");
    assert_eq!(c.cmd("QUIT"), "OK QUIT");
    let rest = c.expect_closed();
    assert!(rest.is_empty(), "lines after OK QUIT: {rest:?}");
}

#[test]
fn list_shows_logged_in_users_with_ip_and_forgets_closed_connections_at_once() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (bob, _) = server.login_new("bob");
    signup(&server, "carol"); // signed up, never logged in
    let items = list(&mut alice);
    assert_eq!(
        items,
        [
            ("alice".to_owned(), "127.0.0.1".to_owned()),
            ("bob".to_owned(), "127.0.0.1".to_owned())
        ]
    );
    bob.stream.shutdown(Shutdown::Both).unwrap();
    drop(bob);
    // No heartbeat: the closed connection is gone as soon as the server sees it.
    eventually("bob leaving LIST", Duration::from_millis(500), || {
        names(&list(&mut alice)) == ["alice"]
    });
}

// ---- framing ----------------------------------------------------------------------

#[test]
fn verbs_are_case_insensitive_empty_lines_ignored_and_crlf_accepted() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    assert_eq!(c.cmd("ping"), "OK PING");
    assert_eq!(c.cmd("Ping"), "OK PING");
    // CRLF: the password must not keep the '\r', so a later LF login works.
    c.send_raw(b"signup alice pw pw\r\n");
    expect_line(&mut c, "OK SIGNUP alice");
    c.send_raw(b"LoGiN alice pw\r\n");
    expect_start(&mut c, "OK LOGIN alice ");
    c.send_raw(b"\n\r\n\n");
    c.expect_silence(Duration::from_millis(300));
    c.send_raw(b"\nlist\r\n\n");
    expect_line(&mut c, "CLIENT alice 127.0.0.1");
    expect_line(&mut c, "OK LIST 1");
    c.send_raw(b"PING\r\nPING\n");
    expect_line(&mut c, "OK PING");
    expect_line(&mut c, "OK PING");
    let mut d = server.connect();
    assert!(d.cmd_ok("LOGIN alice pw").starts_with("OK LOGIN alice "));
}

#[test]
fn line_of_1024_bytes_is_accepted_and_1025_rejected_once() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    // 1023 bytes + '\n' = 1024: a line like any other (unknown verb).
    let mut ok_len = vec![b'x'; 1023];
    ok_len.push(b'\n');
    c.send_raw(&ok_len);
    expect_start(&mut c, "ERR unknown-verb");
    // 1022 + "\r\n" = 1024 too.
    let mut crlf = vec![b'x'; 1022];
    crlf.extend_from_slice(b"\r\n");
    c.send_raw(&crlf);
    expect_start(&mut c, "ERR unknown-verb");
    // 1024 + '\n' = 1025: one ERR line-too-long, and the connection stays usable.
    let mut long = vec![b'x'; 1024];
    long.extend_from_slice(b"\nPING\n");
    c.send_raw(&long);
    expect_start(&mut c, "ERR line-too-long");
    expect_line(&mut c, "OK PING");
    // A much longer line, also one that looks like a valid command at the start.
    let mut huge = b"PING ".to_vec();
    huge.extend(std::iter::repeat(b'y').take(20_000));
    huge.extend_from_slice(b"\nPING\n");
    c.send_raw(&huge);
    expect_start(&mut c, "ERR line-too-long");
    expect_line(&mut c, "OK PING");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn long_line_in_many_small_writes_is_rejected_once() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.stream.set_nodelay(true).unwrap();
    let mut line = b"SIGNUP ".to_vec();
    line.extend(std::iter::repeat(b'z').take(3000));
    line.push(b'\n');
    for chunk in line.chunks(37) {
        c.stream.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    c.send("PING");
    expect_start(&mut c, "ERR line-too-long");
    expect_line(&mut c, "OK PING");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn bad_utf8_and_unknown_verbs_get_their_errors() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.send_raw(b"PING \xff\xfe\n");
    expect_start(&mut c, "ERR bad-utf8");
    c.cmd_err("FROBNICATE now", "unknown-verb");
    c.cmd_err("HELLO", "unknown-verb");
    assert_eq!(c.cmd("PING"), "OK PING");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    // LOGIN and SIGNUP are hashed asynchronously; what follows must wait for them.
    c.send_raw(
        b"SIGNUP alice pw pw\nLOGIN alice pw\nLIST\nPING\nBOGUS\nSIGNUP alice x x\nLOGIN alice bad\nPING\n",
    );
    expect_line(&mut c, "OK SIGNUP alice");
    expect_start(&mut c, "OK LOGIN alice ");
    expect_line(&mut c, "CLIENT alice 127.0.0.1");
    expect_line(&mut c, "OK LIST 1");
    expect_line(&mut c, "OK PING");
    expect_start(&mut c, "ERR unknown-verb");
    expect_start(&mut c, "ERR user-exists");
    expect_start(&mut c, "ERR bad-credentials");
    expect_line(&mut c, "OK PING");
}

#[test]
fn replies_are_sent_after_the_client_half_closes() {
    // `printf '…' | nc -N host port`: the commands, then FIN, then read the replies.
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.send_raw(b"SIGNUP alice pw pw\nLOGIN alice pw\nLIST\nPING\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let lines = c.expect_closed();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "OK SIGNUP alice");
    assert!(lines[1].starts_with("OK LOGIN alice "), "{lines:?}");
    assert_eq!(
        lines[2..],
        ["CLIENT alice 127.0.0.1", "OK LIST 1", "OK PING"]
    );
    // The signup was stored, and the session ended with the connection.
    let (mut bob, _) = server.login_new("bob");
    bob.cmd_err("SIGNUP alice x x", "user-exists");
    assert_eq!(names(&list(&mut bob)), ["bob"]);
}

// ---- sessions -------------------------------------------------------------------

#[test]
fn second_login_replaces_the_older_session() {
    let server = Server::start(&[]);
    let (mut old, old_token) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    let mut new = server.connect();
    let new_token = login(&mut new, "alice");
    assert_ne!(new_token, old_token, "a new session gets a new token");
    expect_start(&mut old, "EVENT CLOSING replaced");
    let rest = old.expect_closed();
    assert!(rest.is_empty(), "lines after CLOSING: {rest:?}");
    assert_eq!(new.cmd("PING"), "OK PING");
    // alice appears once, on her new session.
    let items = list(&mut bob);
    assert_eq!(names(&items).iter().filter(|&&u| u == "alice").count(), 1);
    assert_eq!(names(&list(&mut new)), names(&items));
}

#[test]
fn reauth_keeps_token_and_place_over_cycles_then_expires_without_answer() {
    let server = Server::start(&["--session-ttl", "1s", "--reauth-grace", "1s"]);
    let (mut alice, alice_token) = server.login_new("alice");
    let (mut bob, bob_token) = server.login_new("bob");
    for cycle in 0..3 {
        for (c, user, token) in [
            (&mut alice, "alice", &alice_token),
            (&mut bob, "bob", &bob_token),
        ] {
            let ev = c.expect_prefix("EVENT REAUTH");
            let secs: u64 = ev["EVENT REAUTH ".len()..]
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("EVENT REAUTH <seconds>: {ev:?}"));
            assert!(secs >= 1, "{ev:?}");
            let again = login(c, user);
            assert_eq!(&again, token, "cycle {cycle}: re-login must keep the token");
        }
        assert_eq!(
            names(&list(&mut bob)),
            ["alice", "bob"],
            "cycle {cycle}: re-login keeps the place in LIST"
        );
    }
    bob.cmd_ok("QUIT");
    // No answer this time: the session ends.
    alice.expect_prefix("EVENT REAUTH");
    expect_start(&mut alice, "EVENT CLOSING session-expired");
    alice.expect_closed();
    let mut carol = server.connect();
    carol.cmd_ok("SIGNUP carol pw pw");
    carol.cmd_ok("LOGIN carol pw");
    assert_eq!(names(&list(&mut carol)), ["carol"]);
}

#[test]
fn a_failed_answer_to_reauth_can_be_retried_within_the_grace() {
    let server = Server::start(&["--session-ttl", "1s", "--reauth-grace", "2s"]);
    let (mut alice, token) = server.login_new("alice");
    alice.expect_prefix("EVENT REAUTH");
    alice.cmd_err("LOGIN alice wrong", "bad-credentials");
    // Any spelling of the name is the same account.
    let again = alice.cmd_ok("LOGIN ALICE pw-alice");
    assert_eq!(again, format!("OK LOGIN alice {token}"));
    assert_eq!(names(&list(&mut alice)), ["alice"]);
    alice.expect_silence(Duration::from_millis(700));
}

#[test]
fn a_voluntary_relogin_moves_the_next_reauth() {
    let server = Server::start(&["--session-ttl", "2s", "--reauth-grace", "5s"]);
    let (mut alice, token) = server.login_new("alice");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(login(&mut alice, "alice"), token);
    // The next REAUTH is a full session TTL after this re-login, not 2 s after the first.
    alice.expect_silence(Duration::from_millis(1400));
    let ev = alice.expect_prefix("EVENT REAUTH");
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_millis(2900),
        "{ev:?} came {at:?} after the first login"
    );
}

#[test]
fn max_clients_refuses_the_connection_beyond_the_limit() {
    let server = Server::start(&["--max-clients", "2"]);
    let a = server.connect();
    let (mut b, _) = server.login_new("bob");
    let mut third = Line::connect(server.tcp);
    expect_start(&mut third, "EVENT CLOSING server-full");
    third.expect_closed();
    assert_eq!(b.cmd("PING"), "OK PING");
    drop(a);
    // A slot is free again once the server has seen the close.
    eventually("a free slot after a close", WAIT, || {
        let mut c = Line::connect(server.tcp);
        c.next("first line").starts_with("EVENT WELCOME")
    });
}

#[test]
fn idle_unauthenticated_connections_are_closed_but_logged_in_ones_are_not() {
    let server = Server::start(&["--idle-timeout", "1s"]);
    let (mut alice, _) = server.login_new("alice");
    let started = Instant::now();
    let mut idle = server.connect();
    expect_start(&mut idle, "EVENT CLOSING idle");
    idle.expect_closed();
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "closed after {after:?} for a 1 s idle timeout"
    );
    // Logged in for well over the idle timeout without a word: still here.
    alice.expect_silence(Duration::from_millis(800));
    assert_eq!(alice.cmd("PING"), "OK PING");
}

// ---- durability and shutdown ------------------------------------------------------------

#[test]
fn signups_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let mut c = server.connect();
    for u in ["alice", "bob", "carol"] {
        c.cmd_ok(&format!("SIGNUP {u} pw-{u} pw-{u}"));
    }
    let st = server.signal_and_wait(SIGKILL);
    assert!(!st.success());
    let server = Server::start_in(dir.path(), &[]);
    for u in ["alice", "bob", "carol"] {
        let mut c = server.connect();
        login(&mut c, u);
    }
    server.connect().cmd_err("SIGNUP bob x x", "user-exists");
}

#[test]
fn a_torn_last_line_in_users_csv_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    signup(&server, "alice");
    signup(&server, "bob");
    assert!(server.signal_and_wait(SIGTERM).success());
    let users = dir.path().join("users.csv");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&users)
        .unwrap();
    f.write_all(b"mallory,$pbkdf2-sha256$i=1000$0011").unwrap();
    drop(f);
    let mut server = Server::start_in(dir.path(), &[]);
    let mut c = server.connect();
    login(&mut c, "alice");
    let mut d = server.connect();
    login(&mut d, "bob");
    d.cmd_err("LOGIN mallory pw-mallory", "already-logged-in");
    server
        .connect()
        .cmd_err("LOGIN mallory pw-mallory", "bad-credentials");
    // New rows after the cut must not be glued onto the torn one.
    signup(&server, "carol");
    server.signal_and_wait(SIGKILL);
    let server = Server::start_in(dir.path(), &[]);
    for u in ["alice", "bob", "carol"] {
        login(&mut server.connect(), u);
    }
}

#[test]
fn sigterm_tells_clients_and_exits_0() {
    let mut server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let mut anon = server.connect();
    let st = server.signal_and_wait(SIGTERM);
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st}");
    for c in [&mut alice, &mut anon] {
        expect_start(c, "EVENT CLOSING shutdown");
        c.expect_closed();
    }
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    let st = server.signal_and_wait(SIGINT);
    assert_eq!(st.code(), Some(0), "exit status after SIGINT: {st}");
    expect_start(&mut c, "EVENT CLOSING shutdown");
}

// ---- introductions -------------------------------------------------------------------

#[test]
fn connect_accept_and_deny() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    assert_eq!(alice.cmd("CONNECT bob"), "OK CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    bob.cmd_err("ACCEPT carol 45678", "no-request");
    let ok = bob.cmd_ok("ACCEPT alice 45678");
    let f: Vec<&str> = ok.split(' ').collect();
    assert_eq!(f[..3], ["OK", "ACCEPT", "alice"], "{ok:?}");
    let token = f[3];
    assert!(token.len() >= 32, "p2p token {token:?}");
    expect_line(
        &mut alice,
        &format!("EVENT PEER bob 127.0.0.1:45678 {token}"),
    );
    // Answered requests are gone.
    bob.cmd_err("ACCEPT alice 45678", "no-request");
    bob.cmd_err("DENY alice", "no-request");
    // Again, denied this time; verbs and names in any case.
    assert_eq!(alice.cmd("connect BOB"), "OK CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    assert_eq!(bob.cmd("deny alice"), "OK DENY alice");
    expect_line(&mut alice, "EVENT DENIED bob");
    alice.expect_silence(Duration::from_millis(200));
    bob.expect_silence(Duration::from_millis(0));
}

/// `CONNECT <user> <port>`: the acceptor learns where to dial the requester
/// back, after `OK ACCEPT`; without a port (nc) nothing changes; a denied
/// request's port is forgotten with it.
#[test]
fn connect_with_a_port_gets_the_acceptor_a_dialback() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    alice.cmd_err("CONNECT bob 0", "bad-syntax");
    alice.cmd_err("CONNECT bob 70000", "bad-syntax");
    alice.cmd_err("CONNECT bob 5000 6000", "bad-syntax");
    assert_eq!(alice.cmd("CONNECT bob 5000"), "OK CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    bob.cmd_ok("ACCEPT alice 45678");
    expect_line(&mut bob, "EVENT DIALBACK alice 127.0.0.1:5000");
    alice.expect_prefix("EVENT PEER bob 127.0.0.1:45678 ");
    // A peerline requester: both are timed for a simultaneous open, and
    // once both answered, each gets the other's control address to punch to.
    expect_line(&mut bob, "EVENT SYNC alice");
    expect_line(&mut alice, "EVENT SYNC bob");
    assert_eq!(bob.cmd("SYNC alice"), "OK SYNC alice");
    assert_eq!(alice.cmd("SYNC bob"), "OK SYNC bob");
    expect_start(&mut alice, "EVENT PUNCH bob 127.0.0.1:");
    expect_start(&mut bob, "EVENT PUNCH alice 127.0.0.1:");
    alice.cmd_err("SYNC bob", "no-request");
    // Denied: the port goes with the request.
    alice.cmd_ok("CONNECT bob 5001");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    bob.cmd_ok("DENY alice");
    expect_line(&mut alice, "EVENT DENIED bob");
    // Without a port: no DIALBACK.
    alice.cmd_ok("CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    bob.cmd_ok("ACCEPT alice 45678");
    bob.expect_silence(Duration::from_millis(300));
}

#[test]
fn connect_errors_are_clear() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    // Alone at 127.0.0.1: by IP that is herself.
    alice.cmd_err("CONNECT 127.0.0.1", "self-request");
    alice.cmd_err("CONNECT 10.9.8.7", "no-such-user");
    alice.cmd_err("CONNECT alice", "self-request");
    alice.cmd_err("CONNECT nobody", "no-such-user");
    signup(&server, "carol");
    alice.cmd_err("CONNECT carol", "offline");
    let (mut bob, _) = server.login_new("bob");
    alice.cmd_ok("CONNECT bob");
    alice.cmd_err("CONNECT bob", "already-pending");
    bob.cmd_err("CONNECT alice", "already-pending");
}

#[test]
fn connect_by_ip_resolves_one_user_and_names_several() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    assert_eq!(alice.cmd("CONNECT 127.0.0.1"), "OK CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    bob.cmd_ok("DENY alice");
    let (_carol, _) = server.login_new("carol");
    let r = alice.cmd_err("CONNECT 127.0.0.1", "ambiguous");
    assert!(
        r.contains("bob") && r.contains("carol") && !r.contains("alice"),
        "ambiguous should name the other users there: {r:?}"
    );
}

#[test]
fn unanswered_requests_expire_for_both_sides() {
    let server = Server::start(&["--request-ttl", "1s"]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    let t = Instant::now();
    alice.cmd_ok("CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    expect_line(&mut alice, "EVENT CANCELLED bob expired");
    expect_line(&mut bob, "EVENT CANCELLED alice expired");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    bob.cmd_err("ACCEPT alice 4000", "no-request");
    // A new request can be made afterwards.
    alice.cmd_ok("CONNECT bob");
}

#[test]
fn requests_are_cancelled_when_either_side_goes_offline() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    alice.cmd_ok("CONNECT bob");
    expect_line(&mut bob, "EVENT REQUEST alice 127.0.0.1");
    drop(alice);
    expect_line(&mut bob, "EVENT CANCELLED alice offline");
    bob.cmd_err("ACCEPT alice 4000", "no-request");

    let (mut carol, _) = server.login_new("carol");
    carol.cmd_ok("CONNECT bob");
    bob.expect_prefix("EVENT REQUEST carol");
    bob.cmd_ok("QUIT");
    expect_line(&mut carol, "EVENT CANCELLED bob offline");
}
