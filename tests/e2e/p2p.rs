//! End-to-end tests of direct links: real clients introduced by the real
//! server, a raw TCP socket playing one side to probe the token rules, and a
//! link that outlives the server (SIGKILL).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerline::proto::link_noise::{self, LinkWire, WireEvent, MAGIC};

use super::harness::{wait_exit_or_kill, Client, Line, Server, SIGINT, SIGKILL, WAIT};

/// `alice` asks `bob`, `bob` accepts; returns once both see the link up.
pub fn link(alice: &mut Client, alice_name: &str, bob: &mut Client, bob_name: &str) {
    alice.send(&format!("/connect {bob_name}"));
    let req = bob.expect(&format!("/accept {alice_name}"));
    assert!(req.contains(&format!("/deny {alice_name}")), "{req}");
    bob.send(&format!("/accept {alice_name}"));
    alice.expect(&format!("direct link with {bob_name} is up"));
    bob.expect(&format!("{alice_name} connected; direct link is up"));
}

/// Parses `EVENT PEER <user> <ip>:<port> <token>`.
fn peer_event(line: &str) -> (SocketAddr, String) {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 5, "{line}");
    (f[3].parse().expect("peer address"), f[4].to_owned())
}

#[test]
fn request_accept_then_messages_both_ways() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    link(&mut alice, "alice", &mut bob, "bob");
    alice.send("/msg bob hello bob");
    bob.expect("<alice> hello bob");
    // Plain text goes to the only open link.
    bob.send("hi alice, plain text");
    alice.expect("<bob> hi alice, plain text");
    alice.send("/peers");
    alice.expect("linked");
    alice.send("/bye bob");
    bob.expect("alice closed the direct link");
    bob.send("/msg alice still there?");
    bob.expect("no direct link with alice");
}

#[test]
fn deny_is_reported_to_the_requester() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    alice.send("/connect bob");
    bob.expect("/deny alice");
    bob.send("/deny alice");
    bob.expect("turned down alice's request");
    alice.expect("bob turned down your request");
}

#[test]
fn unanswered_request_expires() {
    let server = Server::start(&["--request-ttl", "1s"]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    alice.send("/connect bob");
    bob.expect("/accept alice");
    alice.expect("the request between you and bob expired");
    bob.expect("the request between you and alice expired");
    // Too late now.
    bob.send("/accept alice");
    bob.expect("ACCEPT failed");
}

/// Plaintext links, as `nc` speaks them, with `--allow-plaintext-links`.
#[test]
fn wrong_user_wrong_and_reused_tokens_are_refused() {
    let server = Server::start(&[]);
    let mut bob = Client::start_user_with(
        &server,
        "bob",
        &["--listen-addr", "127.0.0.1", "--allow-plaintext-links"],
    );
    let (mut alice, _) = server.login_new("alice");
    alice.cmd_ok("CONNECT bob");
    bob.expect("/accept alice");
    bob.send("/accept alice");
    let (addr, token) = peer_event(&alice.expect_prefix("EVENT PEER bob "));
    assert!(addr.ip().is_loopback());

    let wrong = "f".repeat(32);
    for hello in [
        format!("PEER alice {wrong}"),
        format!("PEER mallory {token}"),
    ] {
        let mut raw = Line::connect(addr);
        raw.send(&hello);
        raw.expect_prefix("ERR bad-token");
        raw.expect_closed();
    }
    bob.expect("refused a direct connection");

    // The failures did not use the token up.
    let mut raw = Line::connect(addr);
    raw.send(&format!("PEER alice {token}"));
    assert_eq!(raw.next("OK PEER"), "OK PEER bob");
    bob.expect("alice connected");
    raw.send("MSG hi from a raw socket");
    bob.expect("<alice> hi from a raw socket");
    bob.send("/msg alice hello raw");
    assert_eq!(raw.next("MSG"), "MSG hello raw");

    // Bad input on a live link: an ERR each, the link stays up.
    raw.send_raw(&[b'x'; 2000]);
    raw.send_raw(b"\n");
    raw.expect_prefix("ERR line-too-long");
    raw.send_raw(b"MSG \xff\xfe\n");
    raw.expect_prefix("ERR bad-utf8");
    raw.send("NONSENSE");
    raw.expect_prefix("ERR unknown-verb");
    raw.send("MSG still linked");
    bob.expect("<alice> still linked");

    // Used once: a second connection with the same token is refused.
    let mut again = Line::connect(addr);
    again.send(&format!("PEER alice {token}"));
    again.expect_prefix("ERR bad-token");
    again.expect_closed();
    raw.send("BYE");
    bob.expect("alice closed the direct link");
}

#[test]
fn dialing_side_reports_a_refusal() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let (mut bob, _) = server.login_new("bob");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    alice.send("/connect bob");
    bob.expect_prefix("EVENT REQUEST alice");
    bob.cmd_ok(&format!("ACCEPT alice {port}"));
    let token = peer_token_from_ok_accept(&bob);
    let (mut stream, _) = listener.accept().expect("alice dials in");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // An encrypted hello: the magic, then one handshake frame; never the token.
    let mut hello = [0u8; 8 + 3 + 48];
    stream.read_exact(&mut hello).expect("alice's hello");
    assert_eq!(&hello[..8], MAGIC);
    assert!(!contains(&hello, token.as_bytes()));
    stream.write_all(&link_noise::refusal("bad-token")).unwrap();
    alice.expect("bob refused the link: The peer refused the link token");
}

/// The token from the `OK ACCEPT` reply in a raw control connection's transcript.
fn peer_token_from_ok_accept(c: &Line) -> String {
    c.transcript
        .iter()
        .find_map(|l| l.strip_prefix("<< OK ACCEPT "))
        .and_then(|rest| rest.split(' ').nth(1))
        .expect("OK ACCEPT with a token")
        .to_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// True if `bytes` hold a run of 32 hex digits: a p2p token, or any other
/// 128-bit secret written in hex. Random ciphertext has one with probability
/// about 16^-32 per position.
fn has_hex_run(bytes: &[u8]) -> bool {
    let mut run = 0;
    for &b in bytes {
        run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 32 {
            return true;
        }
    }
    false
}

#[test]
fn three_clients_two_links_at_once() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    let mut carol = Client::start_user(&server, "carol");
    link(&mut alice, "alice", &mut bob, "bob");
    link(&mut carol, "carol", &mut alice, "alice");
    alice.send("/msg bob for bob only");
    alice.send("/msg carol for carol only");
    bob.expect("<alice> for bob only");
    carol.expect("<alice> for carol only");
    // One at a time: `expect` skips lines, so arrival order must be fixed.
    bob.send("/msg alice from bob");
    alice.expect("<bob> from bob");
    carol.send("/msg alice from carol");
    alice.expect("<carol> from carol");
    // Two links open: plain text is ambiguous and not sent.
    alice.send("who gets this?");
    alice.expect("several links are open");
    let stray = bob.lines_for(Duration::from_millis(300));
    assert!(
        !stray.iter().any(|l| l.contains("for carol only")),
        "{stray:#?}"
    );
}

#[test]
fn link_keeps_working_after_the_server_is_killed() {
    let mut server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    link(&mut alice, "alice", &mut bob, "bob");
    server.signal_and_wait(SIGKILL);
    alice.expect("lost the connection to the server; direct links keep working (bob)");
    bob.expect("lost the connection to the server; direct links keep working (alice)");
    alice.send("/msg bob server is gone");
    bob.expect("<alice> server is gone");
    bob.send("/msg alice we still talk");
    alice.expect("<bob> we still talk");
    alice.send("/list");
    alice.expect("not connected to the server");
    let (status, _) = alice.finish();
    assert_eq!(status.code(), Some(0));
    bob.expect("alice closed the direct link");
}

#[test]
fn unfinished_incoming_links_are_capped_and_dropped_after_10_s() {
    let server = Server::start(&[]);
    let mut bob = Client::start(&server, &["--listen-addr", "127.0.0.1"]);
    bob.expect("peers reach you on port");
    let port = bob.listen_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    bob.send("/signup bob pw-bob pw-bob");
    bob.send("/login bob pw-bob");
    bob.expect("logged in as bob");
    let cap = peerline::client::links::MAX_UNFINISHED_INCOMING;
    let mut silent: Vec<Line> = (0..cap).map(|_| Line::connect(addr)).collect();
    // One more than the cap is closed at once.
    let mut extra = Line::connect(addr);
    assert_eq!(
        extra.next_within(Duration::from_secs(5)).as_deref(),
        Some("<EOF>"),
        "{}",
        extra.dump()
    );
    // The silent ones are dropped once their 10 s to say hello are up.
    let started = std::time::Instant::now();
    for s in &mut silent {
        assert_eq!(
            s.next_within(Duration::from_secs(25)).as_deref(),
            Some("<EOF>")
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "dropped too early"
    );
    // Room again: a real peer links.
    let mut alice = Client::start_user(&server, "alice");
    link(&mut alice, "alice", &mut bob, "bob");
}

// ---- encrypted links ----------------------------------------------------------------

/// Reads from `s` into `w` until the wire has an event (bounded).
fn next_wire_event(s: &mut TcpStream, w: &mut LinkWire) -> WireEvent {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(ev) = w.next_event() {
            return ev;
        }
        assert!(Instant::now() < deadline, "no wire event within {WAIT:?}");
        match s.read(&mut buf) {
            Ok(0) => panic!("connection closed while waiting for a wire event"),
            Ok(n) => w.push(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Reads until EOF (bounded); returns everything read.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return got,
        }
    }
    panic!("not closed within {WAIT:?}; got {got:?}");
}

#[test]
fn plaintext_hello_gets_encryption_required_and_the_token_stays_good() {
    let server = Server::start(&[]);
    let mut bob = Client::start_user(&server, "bob");
    let (mut alice, _) = server.login_new("alice");
    alice.cmd_ok("CONNECT bob");
    bob.expect("/accept alice");
    bob.send("/accept alice");
    let (addr, token) = peer_event(&alice.expect_prefix("EVENT PEER bob "));

    let mut raw = Line::connect(addr);
    raw.send(&format!("PEER alice {token}"));
    raw.expect_prefix("ERR encryption-required");
    raw.expect_closed();
    bob.expect("refused a plaintext (unencrypted) link");

    // The refusal did not use the token: an encrypted hello, spoken here by
    // the library's own wire, links.
    let (mut wire, hello) = LinkWire::dial(&token, "alice", "bob");
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello).unwrap();
    assert_eq!(next_wire_event(&mut s, &mut wire), WireEvent::Secured);
    s.write_all(&wire.seal("PEER alice").unwrap()).unwrap();
    assert_eq!(
        next_wire_event(&mut s, &mut wire),
        WireEvent::Line(peerline::proto::Frame::Line("OK PEER bob".into()))
    );
    bob.expect("alice connected; direct link is up (encrypted)");
    s.write_all(&wire.seal("MSG sealed by hand").unwrap())
        .unwrap();
    bob.expect("<alice> sealed by hand");
}

/// What the relay does to the next chunk from the dialer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pass,
    FlipNext,
    TruncateNext,
    /// Terminate both sides with handshakes of its own under a wrong token.
    WrongKey,
}

#[derive(Debug)]
struct RelayState {
    /// Every byte that crossed the relay, both directions.
    seen: Vec<u8>,
    /// The first chunk of each connection from the dialer (its hello).
    hellos: Vec<Vec<u8>>,
    action: Action,
}

/// A man in the middle on loopback: it listens on 127.0.0.1:`port`, which the
/// server announces for bob (his control connection comes from 127.0.0.1),
/// while bob's real listener is on 127.0.0.2:`port`.
struct Relay {
    port: u16,
    state: Arc<Mutex<RelayState>>,
}

impl Relay {
    fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(RelayState {
            seen: Vec::new(),
            hellos: Vec::new(),
            action: Action::Pass,
        }));
        let st = state.clone();
        // Ends with the test process; each accepted pair ends at EOF.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(from) = conn else { return };
                let st = st.clone();
                std::thread::spawn(move || relay_one(from, port, st));
            }
        });
        Relay { port, state }
    }

    fn bob_addr(&self) -> SocketAddr {
        ([127, 0, 0, 2], self.port).into()
    }

    fn set(&self, action: Action) {
        self.state.lock().unwrap().action = action;
    }
}

fn relay_one(mut from: TcpStream, port: u16, st: Arc<Mutex<RelayState>>) {
    let bob: SocketAddr = ([127, 0, 0, 2], port).into();
    if st.lock().unwrap().action == Action::WrongKey {
        return wrong_key_mitm(from, bob, &st);
    }
    let Ok(mut to) = TcpStream::connect(bob) else {
        return;
    };
    let (mut back_from, mut back_to) = (to.try_clone().unwrap(), from.try_clone().unwrap());
    let st2 = st.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = back_from.read(&mut buf) {
            st2.lock().unwrap().seen.extend_from_slice(&buf[..n]);
            if back_to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = back_to.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 65536];
    let mut first = true;
    while let Ok(n @ 1..) = from.read(&mut buf) {
        let mut chunk = buf[..n].to_vec();
        let action = {
            let mut s = st.lock().unwrap();
            s.seen.extend_from_slice(&chunk);
            if first {
                s.hellos.push(chunk.clone());
            }
            std::mem::replace(&mut s.action, Action::Pass)
        };
        first = false;
        match action {
            Action::FlipNext => *chunk.last_mut().unwrap() ^= 0x01,
            Action::TruncateNext => {
                let _ = to.write_all(&chunk[..chunk.len() - 3]);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            Action::Pass | Action::WrongKey => {}
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Answers the dialer with a handshake under a wrong token, and dials bob
/// with a hello under a wrong token; records what each side sends back.
fn wrong_key_mitm(mut from: TcpStream, bob: SocketAddr, st: &Mutex<RelayState>) {
    let wrong = "0badc0de".repeat(4);
    let mut hello = [0u8; 8 + 3 + 48];
    if from.read_exact(&mut hello).is_err() {
        return;
    }
    st.lock().unwrap().seen.extend_from_slice(&hello);
    // Toward the dialer: pretend to be bob without knowing the token.
    let (_, fake_hello) = LinkWire::dial(&wrong, "alice", "bob");
    let mut fake = LinkWire::incoming();
    fake.push(&fake_hello);
    if let Some(WireEvent::Hello(h)) = fake.next_event() {
        if let Some((_, answer)) = fake.answer_hello(&h, "bob", [("alice", wrong.as_str())]) {
            let _ = from.write_all(&answer);
        }
    }
    // Toward bob: pretend to be alice without knowing the token.
    if let Ok(mut to) = TcpStream::connect(bob) {
        let _ = to.write_all(&fake_hello);
        let reply = read_to_close(&mut to);
        st.lock().unwrap().seen.extend_from_slice(&reply);
    }
    let _ = read_to_close(&mut from);
}

#[test]
fn a_relay_sees_only_ciphertext_and_cannot_tamper_truncate_replay_or_pose() {
    let server = Server::start(&[]);
    let relay = Relay::start();
    let port = relay.port.to_string();
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user_with(
        &server,
        "bob",
        &["--listen-addr", "127.0.0.2", "--listen-port", &port],
    );

    // A pure relay: the link works, and the relay sees only ciphertext.
    link(&mut alice, "alice", &mut bob, "bob");
    alice.send("/msg bob attack at dawn");
    bob.expect("<alice> attack at dawn");
    bob.send("/msg alice retreat at dusk");
    alice.expect("<bob> retreat at dusk");
    {
        let s = relay.state.lock().unwrap();
        assert!(s.seen.starts_with(MAGIC), "the link went through the relay");
        assert!(!contains(&s.seen, b"dawn") && !contains(&s.seen, b"dusk"));
        assert!(!contains(&s.seen, b"PEER") && !contains(&s.seen, b"MSG"));
        assert!(
            !has_hex_run(&s.seen),
            "no token (or any hex secret) in clear"
        );
    }

    // A replayed hello, once the token is used: refused outright.
    let hello = relay.state.lock().unwrap().hellos[0].clone();
    let mut replay = TcpStream::connect(relay.bob_addr()).unwrap();
    replay.write_all(&hello).unwrap();
    assert_eq!(read_to_close(&mut replay), link_noise::refusal("bad-token"));
    bob.expect("refused an encrypted link");

    // A bit flipped in a frame ends the link; nothing is shown as a message.
    relay.set(Action::FlipNext);
    alice.send("/msg bob tampered words");
    bob.expect("closed the direct link with alice: a frame failed authentication");
    alice.expect("the direct link with bob was lost");

    // A truncated frame ends the link, and says so.
    link(&mut alice, "alice", &mut bob, "bob");
    relay.set(Action::TruncateNext);
    alice.send("/msg bob cut words");
    bob.expect("the direct link with alice was lost (it ended in the middle of a frame");

    // A man in the middle without the token completes neither handshake.
    relay.set(Action::WrongKey);
    alice.send("/connect bob");
    bob.expect("/accept alice");
    bob.send("/accept alice");
    alice.expect("could not link with bob: the handshake failed");
    bob.expect("refused an encrypted link from");

    let shown = |c: &Client, what: &str| c.seen.iter().any(|l| l.contains(what));
    assert!(!shown(&bob, "tampered words") && !shown(&bob, "cut words"));
    assert!(!shown(
        &bob,
        "alice connected; direct link is up (plaintext"
    ));
}

#[test]
fn a_capture_of_loopback_shows_no_token_and_no_message_text() {
    if unsafe { libc_geteuid() } != 0 {
        println!(
            "SKIP a_capture_of_loopback_shows_no_token_and_no_message_text: needs root for tcpdump"
        );
        return;
    }
    let Some(tcpdump) = ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        println!("SKIP a_capture_of_loopback_shows_no_token_and_no_message_text: tcpdump is not installed (Debian package tcpdump)");
        return;
    };
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    let port = bob.listen_port();
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("link.pcap");
    let mut dump = std::process::Command::new(tcpdump)
        .args(["-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-w"])
        .arg(&pcap)
        .args(["tcp", "port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    // tcpdump says "listening on lo" once it captures.
    let mut err = std::io::BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("listening on"), "tcpdump: {line}");

    link(&mut alice, "alice", &mut bob, "bob");
    alice.send("/msg bob the eagle lands at noon");
    bob.expect("<alice> the eagle lands at noon");
    bob.send("/msg alice copy that, eagle");
    alice.expect("<bob> copy that, eagle");
    // A control: plaintext on the same port is visible in the capture.
    let mut raw = Line::connect(([127, 0, 0, 1], port).into());
    raw.send("PEER canary-in-clear");
    raw.expect_prefix("ERR encryption-required");

    // Let the last packets reach the capture, then stop it (ours, by PID).
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc_kill(dump.id() as i32, SIGINT) };
    assert!(
        wait_exit_or_kill(&mut dump, WAIT).is_some(),
        "tcpdump did not stop"
    );
    let bytes = std::fs::read(&pcap).unwrap();
    let mut summary = String::new();
    let _ = err.read_to_string(&mut summary);
    assert!(
        contains(&bytes, b"canary-in-clear"),
        "the capture sees payloads ({} bytes; tcpdump: {summary})",
        bytes.len()
    );
    assert!(contains(&bytes, b"ERR encryption-required"));
    assert!(
        contains(&bytes, MAGIC),
        "the capture holds the encrypted link"
    );
    assert!(!contains(&bytes, b"eagle"), "message text in clear");
    assert!(!contains(&bytes, b"MSG ") && !contains(&bytes, b"PEER alice"));
    assert!(!has_hex_run(&bytes), "a token (32 hex digits) in clear");
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_long_chat_crosses_rekeys_in_step() {
    let server = Server::start(&[]);
    let mut alice = Client::start_user(&server, "alice");
    let mut bob = Client::start_user(&server, "bob");
    link(&mut alice, "alice", &mut bob, "bob");
    // Past REKEY_EVERY frames: both ends must change keys at the same frame.
    let n = link_noise::REKEY_EVERY + 50;
    let lines: String = (0..n).map(|i| format!("/msg bob n{i}\n")).collect();
    alice.send(lines.trim_end());
    bob.expect(&format!("<alice> n{}", n - 1));
    bob.send("/msg alice still readable after the rekey");
    alice.expect("<bob> still readable after the rekey");
}
