//! The data dir end to end: one server per dir, private files, damaged lines,
//! and nothing confirmed lost to `kill -9` or a full disk.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{run_to_exit, Server, SIGKILL, SIGTERM};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn login_ok(server: &Server, user: &str) {
    server.connect().cmd_ok(&format!("LOGIN {user} pw-{user}"));
}

/// Defect 4: two servers on one data dir both confirmed the same name.
#[test]
fn a_second_server_on_the_same_dir_exits_1_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = Server::start_in(&data, &[]);
    let d = data.display().to_string();
    let (st, _out, err) = run_to_exit(&["--port", "0", "--bind", "127.0.0.1", "--data-dir", &d]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("in use by process {}", first.pid())),
        "{err}"
    );
    // Hashes are the owner's alone.
    assert_eq!(mode(&data), 0o700);
    first.login_new("alice");
    for f in [
        "users.csv",
        "broadcasts.csv",
        "deliveries.csv",
        "peerline.lock",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // A crash releases the lock: no stale lock file blocks the next start.
    first.signal_and_wait(SIGKILL);
    let second = Server::start_in(&data, &[]);
    login_ok(&second, "alice");
}

/// Defect 3: an unclosed quote in users.csv hid every user after it.
#[test]
fn a_damaged_line_costs_that_line_only_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    for u in ["alice", "bob", "carol"] {
        server.login_new(u);
    }
    assert!(server.signal_and_wait(SIGTERM).success());
    let path = dir.path().join("users.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let damaged = text.replacen("\n2,bob,", "\n\"2,bob,", 1);
    assert_ne!(damaged, text);
    std::fs::write(&path, damaged).unwrap();
    let server = Server::start_in(dir.path(), &[]);
    login_ok(&server, "alice");
    login_ok(&server, "carol");
    let log = server.log_lines().join("\n");
    assert!(log.contains("skipping users.csv:3: "), "{log}");
    // Carol's name cannot be taken again.
    server.connect().cmd_err("SIGNUP carol x x", "user-exists");
}
