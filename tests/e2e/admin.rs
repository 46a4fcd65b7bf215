//! Running it as a service: configuration (flags, environment, file,
//! `--check`), bad configuration, dual-stack and IPv6 addressing.

use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use peerline::listening;

use crate::harness::{
    run_server, wait_exit, Client, Line, Server, SERVER_BIN, SIGHUP, SIGTERM, WAIT,
};

/// The effective settings `--check` prints, as `key = value` without the
/// source comment, and the source comment separately.
fn check_output(out: &str, key: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("--check does not show {key}:\n{out}"));
    let (setting, source) = line.split_once("  # ").expect("a source comment");
    (setting.to_owned(), source.to_owned())
}

/// Defect 10 of issue 10: each was accepted and then panicked the server at
/// the first login, or made it unusable. Now: exit 2, one line, no listening.
#[test]
fn out_of_range_settings_exit_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    for (flag, value) in [
        ("--session-ttl", "10000000000000000000"),
        ("--idle-timeout", "0"),
        ("--request-ttl", "0"),
        ("--reauth-grace", "0s"),
        ("--broadcast-ttl", "400d"),
        ("--max-clients", "0"),
    ] {
        let args = ["--port", "0", "--data-dir", &dir, flag, value];
        let (status, out, err) = run_server(&args, &[], None);
        assert_eq!(status.code(), Some(2), "{flag} {value}: {status} {err}");
        assert!(!out.contains("listening"), "{flag} {value} started: {out}");
        assert_eq!(err.lines().count(), 1, "{flag} {value}: one line:\n{err}");
        assert!(err.contains(flag) && err.contains(value), "{err}");
        // The same value from the environment and from a file is refused alike.
        let env = format!("PEERLINE_{}", flag[2..].replace('-', "_").to_uppercase());
        let (status, _, err) = run_server(&args[..4], &[(&env, value)], None);
        assert_eq!(status.code(), Some(2), "{env}={value}: {err}");
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, format!("{} = \"{value}\"\n", &flag[2..])).unwrap();
        let f = file.display().to_string();
        let (status, _, err) = run_server(&["--config", &f, "--check"], &[], None);
        assert_eq!(status.code(), Some(2), "file {flag}={value}: {err}");
        assert!(err.contains(&f) && err.lines().count() == 1, "{err}");
    }
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("peerline.toml");
    std::fs::write(
        &file,
        "session-ttl = \"2h\"\nreauth-grace = \"3m\"\nidle-timeout = 5\nport = 4500\n",
    )
    .unwrap();
    let data = tmp.path().join("data").display().to_string();
    let f = file.display().to_string();
    let (status, out, err) = run_server(
        &["--check", "--idle-timeout", "7s", "--data-dir", &data],
        &[
            ("PEERLINE_CONFIG", &f),
            ("PEERLINE_SESSION_TTL", "1h"),
            ("PEERLINE_IDLE_TIMEOUT", "9s"),
        ],
        None,
    );
    assert!(status.success(), "--check: {status}\n{err}");
    let want = [
        ("idle-timeout", "idle-timeout = \"7s\"", "flag"),
        (
            "session-ttl",
            "session-ttl = \"1h\"",
            "env PEERLINE_SESSION_TTL",
        ),
        ("reauth-grace", "reauth-grace = \"3m\"", "file"),
        ("port", "port = 4500", "file"),
        ("broadcast-ttl", "broadcast-ttl = \"30m\"", "default"),
        ("bind", "bind = \"::\"", "default"),
    ];
    for (key, setting, source) in want {
        assert_eq!(
            check_output(&out, key),
            (setting.to_owned(), source.to_owned()),
            "{out}"
        );
    }
    // `--check` never creates anything.
    assert!(!tmp.path().join("data").exists());
}

#[test]
fn check_reports_bad_configuration_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let nd = not_a_dir.display().to_string();
    let typo = tmp.path().join("typo.toml");
    std::fs::write(&typo, "prot = 4400\n").unwrap();
    let t = typo.display().to_string();
    for (args, needle) in [
        (vec!["--check", "--data-dir", &nd], "not a directory"),
        (vec!["--check", "--config", &t], "unknown key `prot`"),
        (
            vec!["--check", "--config", "/nonexistent.toml"],
            "/nonexistent.toml",
        ),
        (vec!["--check", "--bind", "localhost"], "--bind"),
    ] {
        let (status, out, err) = run_server(&args, &[], None);
        assert_eq!(status.code(), Some(2), "{args:?}: {status} {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    // The same file with a good key passes and its settings read back.
    std::fs::write(&typo, "port = 4401\nwelcome = \"Hello, ops\"\n").unwrap();
    let data = tmp.path().display().to_string();
    let (status, out, err) =
        run_server(&["--check", "--config", &t, "--data-dir", &data], &[], None);
    assert!(status.success(), "{err}");
    assert_eq!(check_output(&out, "port").0, "port = 4401");
    assert_eq!(check_output(&out, "welcome").0, "welcome = \"Hello, ops\"");
}

#[test]
fn welcome_text_comes_from_the_configuration() {
    let server = Server::start(&["--welcome", "Welcome to the ops chat"]);
    let mut c = Line::connect(server.tcp);
    let w = c.next("EVENT WELCOME");
    assert!(
        w.starts_with("EVENT WELCOME Welcome to the ops chat") && w.contains("LOGIN"),
        "{w}"
    );
}

fn ipv6_loopback_works() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// LIST items as `(user, ip)`.
fn list_ips(c: &mut Line) -> Vec<(String, String)> {
    c.send("LIST");
    let mut items = Vec::new();
    loop {
        let l = c.next("LIST");
        if let Some(rest) = l.strip_prefix("CLIENT ") {
            let (u, ip) = rest.split_once(' ').unwrap();
            items.push((u.to_owned(), ip.to_owned()));
        } else if l.starts_with("OK LIST") {
            return items;
        }
    }
}

#[test]
fn dual_stack_server_shows_ipv4_clients_canonically_and_connects_by_ipv4() {
    if !ipv6_loopback_works() {
        eprintln!("SKIP dual-stack test: ::1 is not available on this host");
        return;
    }
    let server = Server::start(&["--bind", "::"]);
    assert_eq!(server.tcp.ip().to_string(), "::", "{:?}", server.tcp);
    let port = server.tcp.port();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let (mut alice, mut bob) = (Line::connect(v4), Line::connect(v6));
    for (c, u) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        c.expect_prefix("EVENT WELCOME");
        c.cmd_ok(&format!("SIGNUP {u} pw-{u} pw-{u}"));
        c.cmd_ok(&format!("LOGIN {u} pw-{u}"));
    }
    let mut items = list_ips(&mut alice);
    items.sort();
    assert_eq!(
        items,
        vec![
            ("alice".to_owned(), "127.0.0.1".to_owned()),
            ("bob".to_owned(), "::1".to_owned())
        ]
    );
    // By IP, in the form LIST shows.
    bob.cmd_ok("CONNECT 127.0.0.1");
    let req = alice.expect_prefix("EVENT REQUEST");
    assert_eq!(req, "EVENT REQUEST bob ::1");
    alice.cmd_ok("DENY bob");
    alice.cmd_ok("CONNECT ::1");
    assert_eq!(
        bob.expect_prefix("EVENT REQUEST"),
        "EVENT REQUEST alice 127.0.0.1"
    );
    // And the IPv4 form is what a plain IPv4 socket reaches too.
    assert!(TcpStream::connect(v4).is_ok());
}

#[test]
fn a_direct_link_forms_over_ipv6_with_the_default_listen_address() {
    if !ipv6_loopback_works() {
        eprintln!("SKIP IPv6 link test: ::1 is not available on this host");
        return;
    }
    let server = Server::start(&["--bind", "::1"]);
    assert_eq!(server.tcp.ip().to_string(), "::1");
    // No --listen-addr: the listener must follow the server connection to
    // IPv6, or bob dials alice's IPv6 address and nobody answers.
    let mut users = Vec::new();
    for u in ["alice", "bob"] {
        let mut c = Client::start(&server, &[]);
        c.send(&format!("/signup {u} pw-{u} pw-{u}"));
        c.send(&format!("/login {u} pw-{u}"));
        c.expect(&format!("logged in as {u}"));
        users.push(c);
    }
    let (mut alice, mut bob) = (users.remove(0), users.remove(0));
    alice.send("/connect bob");
    bob.expect("/accept alice");
    bob.send("/accept alice");
    alice.expect("direct link with bob is up");
    alice.send("/msg bob over six");
    bob.expect("<alice> over six");
}

// ---- signals, systemd, logs -------------------------------------------------

/// Waits (bounded) until the server has logged a line containing each of
/// `needles` (lines read here are gone for later calls).
fn wait_logs(server: &Server, needles: &[&str]) {
    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        seen.extend(server.log_lines());
        if needles.iter().all(|n| seen.iter().any(|l| l.contains(n))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "log lines missing one of {needles:?}; saw:\n{}",
        seen.join("\n")
    );
}

#[test]
fn sighup_reloads_the_file_and_keeps_every_session() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("peerline.toml");
    let data = tmp.path().join("data");
    // Everything in the file, so that every setting can change under SIGHUP.
    let base = format!(
        "bind = \"127.0.0.1\"\nport = 0\nkdf-iterations = 1000\nsignup-rate = 0\nmax-per-ip = 0\ndata-dir = {:?}\n",
        data.display().to_string()
    );
    std::fs::write(&file, format!("{base}welcome = \"first\"\n")).unwrap();
    let f = file.display().to_string();
    let server = Server::spawn(&["--config".to_owned(), f.clone()], &data, &[]);
    let (mut alice, token) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    std::fs::write(
        &file,
        format!("{base}welcome = \"second\"\nsession-ttl = \"1h\"\n"),
    )
    .unwrap();
    server.signal(SIGHUP);
    wait_logs(
        &server,
        &[
            "SIGHUP: session-ttl = \"30m\" -> \"1h\"",
            "SIGHUP: welcome = \"first\" -> \"second\"",
        ],
    );
    // Every session is still there, same token, and works.
    alice.cmd_ok("PING");
    bob.cmd_ok("CONNECT alice");
    alice.expect_prefix("EVENT REQUEST bob");
    let mut names: Vec<String> = list_ips(&mut alice).into_iter().map(|(u, _)| u).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    let mut c = Line::connect(server.tcp);
    assert!(c.next("WELCOME").starts_with("EVENT WELCOME second"));
    // A bad file is refused; the server keeps running with what it had.
    std::fs::write(&file, format!("{base}session-ttl = \"0\"\n")).unwrap();
    server.signal(SIGHUP);
    wait_logs(&server, &["configuration not reloaded"]);
    // A restart-only setting is reported, not applied.
    let moved = base.replace("port = 0", "port = 1");
    std::fs::write(&file, format!("{moved}welcome = \"third\"\n")).unwrap();
    server.signal(SIGHUP);
    wait_logs(&server, &["bind/port changed; that takes a restart"]);
    let mut c = Line::connect(server.tcp);
    assert!(c.next("WELCOME").starts_with("EVENT WELCOME third"));
    alice.cmd_ok("PING");
    // Same session: the token still logs in the same place (REAUTH form).
    let relogin = alice.cmd_ok("LOGIN alice pw-alice");
    assert!(relogin.ends_with(&token), "{relogin} vs {token}");
}

/// Reads one datagram (bounded) from the fake service manager.
fn notify_message(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let p = path.display().to_string();
    let mut server =
        Server::start_with_env(&tmp.path().join("data"), &[], &[("NOTIFY_SOCKET", &p)]);
    let ready = notify_message(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // READY=1 came once listening: the port answers now.
    let mut c = server.connect();
    c.cmd_ok("PING");
    server.signal(SIGHUP);
    let reloading = notify_message(&sock);
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let again = notify_message(&sock);
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");
    c.cmd_ok("PING");
    let status = server.signal_and_wait(SIGTERM);
    assert!(status.success(), "{status}");
    let stopping = notify_message(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[test]
fn under_the_journal_logs_carry_levels_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    for journal in [true, false] {
        let log = tmp.path().join(format!("stderr-{journal}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let stream = format!("{}:{}", meta.dev(), meta.ino());
        let mut cmd = std::process::Command::new(SERVER_BIN);
        cmd.args(["--bind", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file);
        if journal {
            cmd.env("JOURNAL_STREAM", &stream);
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let mut child = cmd.spawn().unwrap();
        listening::wait_for(child.stdout.take().unwrap(), WAIT).unwrap();
        unsafe { libc_kill(child.id() as i32, SIGTERM) };
        assert!(wait_exit(&mut child, WAIT).is_some_and(|s| s.success()));
        let text = std::fs::read_to_string(&log).unwrap();
        let first = text.lines().next().expect("a log line");
        if journal {
            assert!(
                text.lines()
                    .all(|l| l.starts_with("<6>") || l.starts_with("<4>") || l.starts_with("<3>")),
                "{text}"
            );
            assert!(!first.contains("INFO") && !first.contains('['), "{first}");
        } else {
            assert!(first.starts_with('[') && first.contains("INFO"), "{first}");
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

// ---- administration: user subcommands, stats, PASSWD ----------------------------

/// `peerline-server <args> --data-dir DIR --kdf-iterations 1000`; returns (exit code, stdout, stderr).
fn admin(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let d = dir.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", &d, "--kdf-iterations", "1000"]);
    let (status, out, err) = run_server(&all, &[], stdin);
    (status.code().unwrap_or(-1), out, err)
}

fn admin_ok(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = admin(dir, args, stdin);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

fn list_users(dir: &std::path::Path) -> Vec<(String, String)> {
    admin_ok(dir, &["user", "list"], None)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            assert!(f[1].ends_with('Z') && f[1].contains('T'), "RFC 3339: {l}");
            (f[0].to_owned(), f[2].to_owned())
        })
        .collect()
}

fn pair(u: &str, state: &str) -> (String, String) {
    (u.to_owned(), state.to_owned())
}

#[test]
fn user_subcommands_work_offline_on_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    admin_ok(
        &dir,
        &["user", "add", "alice", "--password-stdin"],
        Some("pw-alice\n"),
    );
    admin_ok(
        &dir,
        &["user", "add", "bob", "--password-stdin"],
        Some("pw-bob\n"),
    );
    let (code, _, err) = admin(
        &dir,
        &["user", "add", "alice", "--password-stdin"],
        Some("x\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists"), "{err}");
    let (code, _, err) = admin(
        &dir,
        &["user", "add", "1bad", "--password-stdin"],
        Some("x\n"),
    );
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = admin(
        &dir,
        &["user", "add", "carol", "--password-stdin"],
        Some("has space\n"),
    );
    assert_eq!(code, 1, "{err}");
    admin_ok(&dir, &["user", "disable", "bob"], None);
    assert_eq!(
        list_users(&dir),
        [pair("alice", "enabled"), pair("bob", "disabled")]
    );
    admin_ok(
        &dir,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("new-alice\n"),
    );
    let (code, _, err) = admin(&dir, &["user", "del", "nobody"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such account"), "{err}");
    let (code, _, err) = admin(&dir, &["stats"], None);
    assert_eq!(code, 1, "stats without a server: {err}");
    assert!(err.contains("no server is running"), "{err}");
    // What was done offline is what a server then finds.
    let server = Server::start_in(&dir, &[]);
    let mut c = server.connect();
    c.cmd_err("LOGIN alice pw-alice", "bad-credentials");
    c.cmd_ok("LOGIN alice new-alice");
    let mut b = server.connect();
    b.cmd_err("LOGIN bob pw-bob", "account-disabled");
    // A wrong password for a disabled account says only "bad credentials".
    b.cmd_err("LOGIN bob wrong", "bad-credentials");
}

#[test]
fn user_subcommands_go_through_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_in(&dir, &[]);
    let sock = dir.join("admin.sock");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.sock mode {mode:o}");
    }
    // Added while it runs: logs in at once (the server's table has it).
    admin_ok(
        &dir,
        &["user", "add", "carol", "--password-stdin"],
        Some("pw-carol\n"),
    );
    let mut carol = server.connect();
    carol.cmd_ok("LOGIN carol pw-carol");
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, _) = server.login_new("bob");
    // Deleted while online: closed with `removed`, and gone.
    admin_ok(&dir, &["user", "del", "bob"], None);
    let closing = bob.expect_prefix("EVENT CLOSING");
    assert!(closing.starts_with("EVENT CLOSING removed"), "{closing}");
    assert_eq!(bob.expect_closed(), Vec::<String>::new());
    let mut again = server.connect();
    again.cmd_err("LOGIN bob pw-bob", "bad-credentials");
    // The name is free again, for a new account.
    again.cmd_ok("SIGNUP bob other-pw other-pw");
    // Disabled while online: closed, then refused; enabled: back.
    admin_ok(&dir, &["user", "disable", "alice"], None);
    assert!(alice
        .expect_prefix("EVENT CLOSING")
        .starts_with("EVENT CLOSING removed"));
    let mut a2 = server.connect();
    a2.cmd_err("LOGIN alice pw-alice", "account-disabled");
    let users = list_users(&dir);
    assert!(users.contains(&pair("alice", "disabled")), "{users:?}");
    admin_ok(&dir, &["user", "enable", "alice"], None);
    a2.cmd_ok("LOGIN alice pw-alice");
    // A password set by the administrator applies at the next login.
    admin_ok(
        &dir,
        &["user", "passwd", "carol", "--password-stdin"],
        Some("reset-pw\n"),
    );
    let mut c2 = server.connect();
    c2.cmd_err("LOGIN carol pw-carol", "bad-credentials");
    c2.cmd_ok("LOGIN carol reset-pw");
    let (code, _, err) = admin(&dir, &["user", "del", "nobody"], None);
    assert_eq!(code, 1, "{err}");
    // With the server gone, the files say what the server said.
    drop(server);
    let users = list_users(&dir);
    assert_eq!(
        users,
        [
            pair("carol", "enabled"),
            pair("alice", "enabled"),
            pair("bob", "enabled")
        ]
    );
}

#[test]
fn stats_reports_the_contract_counters() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let mut x = server.connect();
    x.cmd_err("LOGIN alice nope", "bad-credentials");
    alice.cmd_ok("BROADCAST hello");
    let out = admin_ok(&server.data_dir, &["stats"], None);
    let get = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("stats lacks {name}:\n{out}"))
            .parse()
            .unwrap()
    };
    for name in [
        "uptime_seconds",
        "connections",
        "sessions",
        "udp_registered",
        "broadcasts_live",
        "deliveries_pending",
        "logins_ok",
        "logins_failed",
        "rate_limited",
        "datagrams_sent",
        "datagrams_dropped",
        "tcp_fallbacks",
    ] {
        get(name);
    }
    assert_eq!(get("sessions"), 1);
    assert_eq!(get("connections"), 2);
    assert_eq!(get("logins_ok"), 1);
    assert_eq!(get("logins_failed"), 1);
    assert_eq!(get("broadcasts_live"), 1);
}

#[test]
fn passwd_on_the_wire() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let mut anon = server.connect();
    anon.cmd_err("PASSWD a b b", "not-logged-in");
    alice.cmd_err("PASSWD pw-alice new1 new2", "password-mismatch");
    alice.cmd_err(
        &format!("PASSWD pw-alice {} x", "y".repeat(129)),
        "bad-password",
    );
    alice.cmd_err("PASSWD wrong new1 new1", "bad-credentials");
    alice.cmd_err("PASSWD pw-alice new1", "bad-syntax");
    alice.cmd_ok("PASSWD pw-alice new1 new1");
    let mut c = server.connect();
    c.cmd_err("LOGIN alice pw-alice", "bad-credentials");
    c.cmd_ok("LOGIN alice new1");
    // It survives a restart: the row was stored.
    let dir = server.data_dir.clone();
    drop(alice);
    drop(c);
    let mut server = server;
    assert!(server.signal_and_wait(SIGTERM).success());
    let server2 = Server::start_in(&dir, &[]);
    let mut c = server2.connect();
    c.cmd_ok("LOGIN alice new1");
}

// ---- metrics ------------------------------------------------------------------

/// One HTTP/1.1 request to `addr`; returns the whole response.
fn http(addr: SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_serve_the_stats_counters_in_prometheus_format() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let mut addr = None;
    let deadline = Instant::now() + WAIT;
    while addr.is_none() && Instant::now() < deadline {
        addr = server.log_lines().iter().find_map(|l| {
            let rest = l.split("metrics on http://").nth(1)?;
            rest.strip_suffix("/metrics")?.parse::<SocketAddr>().ok()
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = addr.expect("the server logs where metrics are served");
    let (mut alice, _) = server.login_new("alice");
    alice.cmd_ok("BROADCAST hi");
    let resp = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let value = |name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("peerline_sessions"), 1);
    assert_eq!(value("peerline_logins_ok_total"), 1);
    assert_eq!(value("peerline_broadcasts_live"), 1);
    // The same numbers as `stats`, name for name.
    let stats = {
        let (code, out, err) = admin(&server.data_dir, &["stats"], None);
        assert_eq!(code, 0, "{err}");
        out
    };
    for line in stats.lines() {
        let (name, _) = line.split_once(' ').unwrap();
        let gauge = format!("peerline_{name} ");
        let counter = format!("peerline_{name}_total ");
        assert!(
            body.lines()
                .any(|l| l.starts_with(&gauge) || l.starts_with(&counter)),
            "{name} missing from /metrics"
        );
    }
    assert!(http(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    // The reference checker, where installed (Debian package prometheus).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Err(_) => eprintln!(
            "SKIP promtool check metrics: promtool is not installed (apt-get install prometheus)"
        ),
        Ok(mut p) => {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// ---- systemd unit ---------------------------------------------------------------

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/systemd/peerline-server.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=peerline",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lost {line:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("peerline-server.service");
    // verify checks that ExecStart exists: point it at the binary under test.
    std::fs::write(&path, unit.replace("/usr/bin/peerline-server", SERVER_BIN)).unwrap();
    let out = match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIP systemd-analyze verify: not available ({e}); apt-get install systemd");
            return;
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    // It exits 0 on directives it ignores; any complaint about our file is a failure.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("peerline-server.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );
}
