//! End-to-end tests: the real `peerline-client` against the real server over
//! loopback — scripted from a pipe and from a regular file, re-login on its
//! own, unattended login, broken stdout, broadcasts shown once.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use super::harness::{wait_exit_or_kill, Client, Server};

/// Runs the client with stdin from a regular file holding `script`; returns
/// its exit code and everything it printed. Bounded.
fn run_with_file(server: &Server, script: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("script.txt");
    std::fs::write(&path, script).unwrap();
    let mut child = Client::command(server)
        .args(["--listen-addr", "127.0.0.1"])
        .stdin(std::fs::File::open(&path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peerline-client");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = wait_exit_or_kill(&mut child, Duration::from_secs(20));
    (status.and_then(|s| s.code()), reader.join().unwrap())
}

fn assert_has(out: &str, needle: &str) {
    assert!(out.contains(needle), "missing {needle:?} in output:\n{out}");
}

#[test]
fn scripted_from_a_pipe() {
    let server = Server::start(&[]);
    let mut c = Client::start(&server, &["--listen-addr", "127.0.0.1"]);
    // Not a terminal: where it connected, but no typing hints.
    c.expect("connected to the server");
    c.send("/signup alice pw-a pw-a");
    c.expect("[server] account alice created");
    c.send("/login alice pw-a");
    c.expect("[server] logged in as alice");
    c.send("/list");
    c.expect("[server] 1 user(s) online");
    c.expect("USER");
    c.expect("alice  127.0.0.1");
    c.send("/login alice wrong");
    c.expect("LOGIN failed: Wrong username or password.");
    c.send("/help");
    c.expect("/broadcast <text>");
    c.send("/quit");
    c.expect("[server] goodbye");
    let (status, out) = c.finish();
    // The latest login was refused and stdin is not a terminal: exit 3.
    assert_eq!(status.code(), Some(3));
    assert!(!out.iter().any(|l| l.contains("/help lists")), "{out:#?}");
}

#[test]
fn scripted_from_a_regular_file_with_quit() {
    let server = Server::start(&[]);
    let (code, out) = run_with_file(
        &server,
        "/signup alice pw-a pw-a\n/login alice pw-a\n/list\n/quit\n",
    );
    assert_eq!(code, Some(0), "output:\n{out}");
    assert_has(&out, "account alice created");
    assert_has(&out, "logged in as alice");
    assert_has(&out, "alice  127.0.0.1");
    assert_has(&out, "goodbye");
}

#[test]
fn regular_file_without_quit_waits_for_replies_then_exits_0() {
    let server = Server::start(&[]);
    // No /quit and no final newline: the end of the file ends the session,
    // but only after every reply is in.
    let (code, out) = run_with_file(&server, "/signup bob pw-b pw-b\n/login bob pw-b\n/list");
    assert_eq!(code, Some(0), "output:\n{out}");
    assert_has(&out, "logged in as bob");
    assert_has(&out, "1 user(s) online");
    assert_has(&out, "bob   127.0.0.1");
}

#[test]
fn pipe_closed_waits_for_replies_then_exits_0() {
    let server = Server::start(&[]);
    let mut c = Client::start(&server, &["--listen-addr", "127.0.0.1"]);
    c.send("/signup carol pw-c pw-c");
    c.send("/login carol pw-c");
    c.send("/list");
    let (status, out) = c.finish();
    assert_eq!(status.code(), Some(0));
    let out = out.join("\n");
    assert_has(&out, "carol  127.0.0.1");
}

#[test]
fn reauth_is_answered_automatically_over_several_sessions() {
    let server = Server::start(&["--session-ttl", "1s", "--reauth-grace", "1s"]);
    let mut c = Client::start_user(&server, "alice");
    for round in 0..3 {
        let l = c.expect("session renewed for alice");
        assert!(l.contains("automatically"), "round {round}: {l}");
    }
    // Still logged in on the same connection: nothing was closed.
    c.send("/list");
    c.expect("alice  127.0.0.1");
    let (status, out) = c.finish();
    assert_eq!(status.code(), Some(0));
    assert!(
        !out.iter()
            .any(|l| l.contains("session-expired") || l.contains("lost the connection")),
        "{out:#?}"
    );
}

#[test]
fn unattended_login_from_a_password_file() {
    let server = Server::start(&[]);
    let (mut raw, _) = server.login_new("dave");
    raw.cmd_ok("QUIT");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw-dave\n").unwrap();
    let pw = pw.display().to_string();
    let mut c = Client::start(
        &server,
        &[
            "--listen-addr",
            "127.0.0.1",
            "--user",
            "dave",
            "--password-file",
            &pw,
        ],
    );
    c.expect("logged in as dave");
    c.send("/quit");
    assert_eq!(c.finish().0.code(), Some(0));
}

#[test]
fn broken_stdout_pipe_exits_0() {
    let server = Server::start(&[]);
    let mut child = Client::command(&server)
        .args(["--listen-addr", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peerline-client");
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    // Writes to stdin may fail once the client is gone; that is the point.
    for _ in 0..50 {
        use std::io::Write;
        if stdin.write_all(b"/help\n").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = wait_exit_or_kill(&mut child, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "client did not exit 0 on EPIPE"
    );
}

#[test]
fn broadcast_is_printed_exactly_once_by_each_receiver() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    let mut carol = Client::start_user(&server, "carol");
    alice.send("/broadcast hello everyone");
    let reply = alice.expect("broadcast #");
    assert!(reply.contains("reached 2 online user(s)"), "{reply}");
    let shown = "[broadcast] <alice> hello everyone";
    bob.expect(shown);
    carol.expect(shown);
    // Retransmits and the TCP fallback must not show it again.
    for (name, c) in [("bob", &mut bob), ("carol", &mut carol)] {
        let again = c.lines_for(Duration::from_secs(3));
        assert!(
            !again.iter().any(|l| l.contains(shown)),
            "{name} showed the broadcast twice: {again:#?}"
        );
    }
    assert!(
        !alice
            .lines_for(Duration::from_millis(200))
            .iter()
            .any(|l| l.contains(shown)),
        "the sender must not receive its own broadcast"
    );
}
