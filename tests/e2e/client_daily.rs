//! The client as a daily tool, end to end: reconnect across a server killed
//! with SIGKILL and restarted on the same port and data dir (links kept),
//! presence lines, exit statuses, `--json` with `--count`, `--timeout`.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use super::harness::{wait_exit_or_kill, Client, Server, SIGKILL};
use super::p2p::link;

/// Reconnects wait a jittered backoff (1 s, 2 s, 4 s …) and the restarted
/// server needs a moment: a generous bound, never a speed assertion.
const BACK: Duration = Duration::from_secs(40);

#[test]
fn reconnects_after_kill_9_and_restart_keeping_links() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let port = server.tcp.port();
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    link(&mut alice, "alice", &mut bob, "bob");
    server.signal_and_wait(SIGKILL);
    let lost = alice.expect("lost the connection to the server");
    assert!(
        lost.contains("direct links keep working (bob)") && lost.contains("reconnecting in"),
        "{lost}"
    );
    bob.expect("lost the connection to the server");
    alice.send("/msg bob the server is down");
    bob.expect("<alice> the server is down");
    drop(server);
    let _server = Server::start_on(dir.path(), port, &[]);
    let back = alice.expect_long("back on the server", BACK);
    assert!(
        back.contains("logged in again as alice") && back.contains("direct links kept (bob)"),
        "{back}"
    );
    bob.expect_long("logged in again as bob", BACK);
    // The link never went down, and the session is real again.
    bob.send("/msg alice still linked");
    alice.expect("<bob> still linked");
    alice.send("/list");
    alice.expect("2 user(s) online");
    // Exactly one line for losing and one for regaining.
    let (status, out) = alice.finish();
    assert_eq!(status.code(), Some(0));
    let count = |needle: &str| out.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("lost the connection"), 1, "{out:#?}");
    assert_eq!(count("back on the server"), 1, "{out:#?}");
}

#[test]
fn watched_users_coming_and_going_are_announced() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    alice.send("/watch carol");
    alice.expect("watching 1 user(s)");
    let carol = Client::start_user(&server, "carol");
    alice.expect("carol is online (127.0.0.1)");
    let (status, _) = carol.finish();
    assert_eq!(status.code(), Some(0));
    alice.expect("carol is offline");
}

/// Runs the client with `args` and stdin from `input` (then closed); returns
/// exit code and stdout. Bounded.
fn run(
    server_port: u16,
    args: &[&str],
    input: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(super::harness::CLIENT_BIN);
    // Plain lines on loopback: these tests are about the client's behaviour,
    // not its transport (tests/e2e/pin.rs covers TLS and pinning).
    cmd.args([
        "127.0.0.1",
        &server_port.to_string(),
        "--listen-addr",
        "127.0.0.1",
        "--plaintext",
    ])
    .args(args)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn peerline-client");
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = wait_exit_or_kill(&mut child, Duration::from_secs(30));
    (status.and_then(|s| s.code()), reader.join().unwrap())
}

#[test]
fn exit_statuses_follow_the_contract() {
    let server = Server::start(&[]);
    let port = server.tcp.port();
    // 0: normal end of input.
    let (code, out) = run(port, &[], "/signup ann pw-a pw-a\n/login ann pw-a\n", &[]);
    assert_eq!(code, Some(0), "{out}");
    // 3: the login was refused and stdin is not a terminal.
    let (code, out) = run(port, &[], "/login ann wrong\n", &[]);
    assert_eq!(code, Some(3), "{out}");
    // 3 at once for --user, even with stdin still open.
    let mut c = Client::command(&server)
        .args(["--listen-addr", "127.0.0.1", "--user", "ann"])
        .env("PEERLINE_PASSWORD", "wrong")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit_or_kill(&mut c, Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(3));
    // 2: usage.
    let (code, _) = run(port, &["--no-such-flag"], "", &[]);
    assert_eq!(code, Some(2));
    // 5: --timeout passed first.
    let (code, out) = run(port, &["--stay", "--timeout", "1s"], "", &[]);
    assert_eq!(code, Some(5), "{out}");
    // 1: no server to connect to, nothing else to do.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = free.local_addr().unwrap().port();
    drop(free);
    let (code, _) = run(dead_port, &[], "", &[]);
    assert_eq!(code, Some(1));
}

#[test]
fn timeout_zero_is_a_usage_error() {
    let server = Server::start(&[]);
    let mut c = Client::command(&server)
        .args(["--listen-addr", "127.0.0.1", "--stay", "--timeout", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = c.stderr.take().unwrap();
    let status = wait_exit_or_kill(&mut c, Duration::from_secs(20));
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(
        err.contains("--timeout") && err.contains("longer than zero"),
        "{err}"
    );
    // The same flag with a real duration is accepted (exit 5 when it passes).
    let (code, out) = run(
        server.tcp.port(),
        &["--stay", "--timeout", "500ms"],
        "",
        &[],
    );
    assert_eq!(code, Some(5), "{out}");
}

#[test]
fn json_lines_parse_and_count_ends_the_run() {
    let server = Server::start(&[]);
    let (mut raw, _) = server.login_new("bob");
    raw.cmd_ok("QUIT");
    let mut alice = Client::start_user(&server, "alice");
    let port = server.tcp.port().to_string();
    let mut child = std::process::Command::new(super::harness::CLIENT_BIN)
        .args([
            "127.0.0.1",
            &port,
            "--listen-addr",
            "127.0.0.1",
            "--plaintext",
        ])
        .args(["--user", "bob", "--json", "--count", "1"])
        .env("PEERLINE_PASSWORD", "pw-bob")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // Wait until bob is online, then broadcast.
    alice.send("/watch bob");
    alice.expect("bob is online");
    alice.send("/broadcast hello \"json\" world");
    alice.expect("broadcast #");
    let status = wait_exit_or_kill(&mut child, Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let out = reader.join().unwrap();
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    for o in &objects {
        assert!(
            o["type"].is_string() && o["time"].is_u64() && o["text"].is_string(),
            "{o}"
        );
    }
    let b = objects
        .iter()
        .find(|o| o["type"] == "broadcast")
        .unwrap_or_else(|| panic!("no broadcast in {out}"));
    assert_eq!(b["from"], "alice");
    assert_eq!(b["text"], "hello \"json\" world");
    assert!(objects.iter().any(|o| o["type"] == "reply"), "{out}");
}

#[test]
fn passwd_changes_the_password_end_to_end() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    alice.send("/passwd pw-alice pw-new pw-new");
    alice.expect("password changed");
    alice.send("/login alice pw-alice");
    alice.expect("LOGIN failed");
    alice.send("/login alice pw-new");
    alice.expect("session renewed for alice");
}
