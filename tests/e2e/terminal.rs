//! Terminal mode through a real pseudo-terminal: the client sees a tty on
//! stdin and stdout, goes raw, and keeps its input line whole while lines
//! arrive; history, Tab completion, and the terminal restored on the way out.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::harness::{wait_exit_or_kill, Client, Server, SIGTERM};

/// A client running on the slave side of a pty; the test holds the master.
struct Pty {
    master: OwnedFd,
    /// Kept open so the terminal's settings can be checked after the client exits.
    slave: OwnedFd,
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two fds we then own.
        let rc =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut cmd = Client::command(server);
        cmd.args(["--listen-addr", "127.0.0.1"])
            .args(args)
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn peerline-client on a pty");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (sink, fd) = (screen.clone(), master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a buffer we own from an fd we own.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return; // EIO once the client (the last slave user) is gone
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n as usize]);
            }
        });
        Pty {
            master,
            slave,
            child,
            screen,
        }
    }

    fn type_keys(&self, keys: &str) {
        let b = keys.as_bytes();
        // SAFETY: writing our own bytes to the master fd.
        let n = unsafe { libc::write(self.master.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        assert_eq!(n, b.len() as isize);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits, bounded, until the screen output contains `needle`; returns
    /// everything after its first occurrence.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = self.text();
            if let Some(i) = t.find(needle) {
                return t[i + needle.len()..].to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {needle:?}; it shows:\n{t:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits, bounded, until `needle` shows up after `marker` on the screen.
    fn wait_after(&self, marker: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = self.text();
            if let Some(i) = t.find(marker) {
                if t[i + marker.len()..].contains(needle) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {needle:?} after {marker:?}; it shows:\n{t:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self) -> Option<i32> {
        wait_exit_or_kill(&mut self.child, Duration::from_secs(15)).and_then(|s| s.code())
    }

    fn lflag(&self) -> libc::tcflag_t {
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr on the slave fd we hold.
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) },
            0
        );
        t.c_lflag
    }
}

#[test]
fn typing_while_lines_arrive_history_completion_and_restore() {
    let server = Server::start(&[]);
    let (mut raw, _) = server.login_new("alice");
    raw.cmd_ok("QUIT");
    let mut bob = Client::start_user(&server, "bob");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let mut pty = Pty::spawn(
        &server,
        &["--user", "alice"],
        &[
            ("PEERLINE_PASSWORD", "pw-alice"),
            ("XDG_STATE_HOME", &state_dir),
            ("NO_COLOR", "1"),
        ],
    );
    let cooked = pty.lflag();
    pty.wait_for("logged in as alice");
    // Raw mode while it runs: no echo, no line discipline.
    let raw_flags = pty.lflag();
    assert_eq!(raw_flags & (libc::ICANON | libc::ECHO), 0, "not raw");

    // Tab completes a command; then half a line is typed...
    pty.type_keys("/bro\t");
    pty.wait_for("> /broadcast ");
    pty.type_keys("hello wo");
    pty.wait_for("> /broadcast hello wo");
    // ...when a line arrives: it prints above, and the input is redrawn whole.
    bob.send("/broadcast interrupting you");
    pty.wait_after(
        "[broadcast] <bob> interrupting you",
        "> /broadcast hello wo",
    );
    // Finishing the line sends exactly what was typed across the interruption.
    pty.type_keys("rld\r");
    bob.expect("[broadcast] <alice> hello world");

    // History: Up brings the line back.
    pty.wait_for("reached 1 online user(s)");
    pty.type_keys("\x1b[A");
    pty.wait_after("reached 1 online user(s)", "> /broadcast hello world");
    // Editing: Ctrl-U clears; user names complete after a /list.
    pty.type_keys("\x15/list\r");
    pty.wait_for("2 user(s) online");
    pty.type_keys("/watch b\t");
    pty.wait_for("> /watch bob ");
    pty.type_keys("\r");
    pty.wait_for("bob is online (127.0.0.1)");
    // A password typed on a line is never kept in history.
    pty.type_keys("/login alice pw-alice\r");
    pty.wait_for("session renewed for alice");
    pty.type_keys("/quit\r");
    assert_eq!(pty.wait(), Some(0), "{:?}", pty.text());
    assert_eq!(pty.lflag(), cooked, "terminal settings not restored");
    let history =
        std::fs::read_to_string(state.path().join("peerline/history")).expect("history file");
    assert!(history.contains("/broadcast hello world\n"), "{history}");
    assert!(
        history.contains("/list\n") && history.contains("/watch bob\n"),
        "{history}"
    );
    assert!(
        !history.contains("pw-alice"),
        "a password reached the history: {history}"
    );
    // And it comes back next time.
    let mut pty2 = Pty::spawn(
        &server,
        &["--user", "alice"],
        &[
            ("PEERLINE_PASSWORD", "pw-alice"),
            ("XDG_STATE_HOME", &state_dir),
            ("NO_COLOR", "1"),
        ],
    );
    pty2.wait_for("logged in as alice");
    pty2.type_keys("\x1b[A");
    pty2.wait_for("> /quit");
    // SIGTERM also restores the terminal.
    unsafe { libc::kill(pty2.child.id() as i32, SIGTERM) };
    pty2.wait();
    assert_eq!(pty2.lflag(), cooked, "terminal not restored after SIGTERM");
}

#[test]
fn bare_passwd_asks_without_echo_and_keeps_nothing_in_history() {
    let server = Server::start(&[]);
    let (mut raw, _) = server.login_new("carol");
    raw.cmd_ok("QUIT");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let mut pty = Pty::spawn(
        &server,
        &["--user", "carol"],
        &[
            ("PEERLINE_PASSWORD", "pw-carol"),
            ("XDG_STATE_HOME", &state_dir),
            ("NO_COLOR", "1"),
        ],
    );
    pty.wait_for("logged in as carol");
    pty.type_keys("/passwd\r");
    pty.wait_for("old password: ");
    pty.type_keys("pw-carol\r");
    pty.wait_for("new password: ");
    pty.type_keys("Fresh-Secret-1\r");
    pty.wait_for("new password again: ");
    pty.type_keys("Fresh-Secret-1\r");
    pty.wait_for("password changed");
    pty.type_keys("/quit\r");
    assert_eq!(pty.wait(), Some(0), "{:?}", pty.text());
    let screen = pty.text();
    assert!(
        !screen.contains("Fresh-Secret-1") && !screen.contains("pw-carol"),
        "a password was echoed: {screen:?}"
    );
    let history =
        std::fs::read_to_string(state.path().join("peerline/history")).expect("history file");
    assert!(history.contains("/passwd\n"), "{history}");
    assert!(
        !history.contains("Fresh-Secret-1") && !history.contains("pw-carol"),
        "a password reached the history: {history}"
    );
    // The server took it: the new password logs in, the old one does not.
    let mut c = server.connect();
    assert!(c
        .cmd("LOGIN carol pw-carol")
        .starts_with("ERR bad-credentials"));
    assert!(c.cmd("LOGIN carol Fresh-Secret-1").starts_with("OK LOGIN"));
}
