//! End-to-end tests of direct links: real clients introduced by the real
//! server, a raw TCP socket playing one side to probe the token rules, and a
//! link that outlives the server (SIGKILL).

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use super::harness::{Client, Line, Server, SIGKILL, WAIT};

/// `alice` asks `bob`, `bob` accepts; returns once both see the link up.
fn link(alice: &mut Client, alice_name: &str, bob: &mut Client, bob_name: &str) {
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

#[test]
fn wrong_user_wrong_and_reused_tokens_are_refused() {
    let server = Server::start(&[]);
    let mut bob = Client::start_user(&server, "bob");
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
    listener.set_nonblocking(false).unwrap();
    let (stream, _) = listener.accept().expect("alice dials in");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut hello = String::new();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let deadline = std::time::Instant::now() + WAIT;
    while !hello.ends_with('\n') && std::time::Instant::now() < deadline {
        let _ = std::io::BufRead::read_line(&mut reader, &mut hello);
    }
    assert!(hello.starts_with("PEER alice "), "{hello:?}");
    std::io::Write::write_all(
        &mut &stream,
        b"ERR bad-token unknown, used or expired token\n",
    )
    .unwrap();
    alice.expect("bob refused the link");
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

/// The port a client's greeting says peers reach it on.
fn listen_port(greeting: &str) -> u16 {
    greeting
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {greeting:?}"))
}

#[test]
fn unfinished_incoming_links_are_capped_and_dropped_after_10_s() {
    let server = Server::start(&[]);
    let mut bob = Client::start(&server, &["--listen-addr", "127.0.0.1"]);
    let port = listen_port(&bob.expect("peers reach you on port"));
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
