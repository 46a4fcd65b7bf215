//! Sealed datagrams end to end, played like an attacker: a session that
//! logged in over TLS gets its broadcasts sealed with keys from its TLS
//! connection; forged, tampered, replayed and spoofed-source datagrams change
//! nothing; a forged source never gets more bytes back than it sent; and a
//! capture of the traffic shows neither the token nor the text. The test's
//! UDP side is a plain socket sealing with `proto::sealed`, the client's code.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use peerline::proto::sealed::{self, Channel, Role, UdpSecret, MARKER, MIN_REGISTER};

use crate::harness::{recv_datagram, Capture, Client, Line, Server};

/// A client's UDP socket for a sealed session.
struct SealedUdp {
    sock: UdpSocket,
    server: SocketAddr,
    ch: Channel,
    /// Every datagram received, raw, for the failure message.
    seen: Vec<Vec<u8>>,
}

impl SealedUdp {
    fn bind_at(server: &Server, ip: &str, secret: &UdpSecret) -> SealedUdp {
        SealedUdp {
            sock: UdpSocket::bind((ip, 0)).expect("bind UDP on loopback"),
            server: server.udp,
            ch: Channel::new(secret, Role::Client),
            seen: Vec::new(),
        }
    }

    fn seal(&mut self, text: &str) -> Vec<u8> {
        let body = if text.starts_with("REGISTER") {
            sealed::padded(text.as_bytes(), MIN_REGISTER)
        } else {
            text.as_bytes().to_vec()
        };
        self.ch.seal(&body).expect("counter")
    }

    fn send_raw(&self, bytes: &[u8]) {
        self.sock
            .send_to(bytes, self.server)
            .expect("send datagram");
    }

    fn send(&mut self, text: &str) {
        let d = self.seal(text);
        self.send_raw(&d);
    }

    fn recv_raw(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let d = recv_datagram(&self.sock, self.server, limit)?;
        self.seen.push(d.clone());
        Some(d)
    }

    /// The next datagram, opened; it must be sealed for this session.
    fn recv(&mut self, limit: Duration) -> Option<String> {
        let d = self.recv_raw(limit)?;
        assert_eq!(
            d[0], MARKER,
            "a TLS session got a plaintext datagram: {d:?}"
        );
        let body = self.ch.open(&d).expect("sealed with this session's key");
        Some(String::from_utf8(sealed::unpad(&body).to_vec()).unwrap())
    }

    fn expect(&mut self, what: &str) -> String {
        self.recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no datagram while waiting for {what}"))
    }

    /// REGISTER, CHALLENGE, REGISTER with the cookie, OK REGISTER.
    fn register(&mut self) {
        self.send("REGISTER");
        let c = self.expect("CHALLENGE");
        let cookie = c
            .strip_prefix("CHALLENGE ")
            .unwrap_or_else(|| panic!("{c}"));
        self.send(&format!("REGISTER {cookie}"));
        assert_eq!(self.expect("OK REGISTER"), "OK REGISTER");
    }

    fn expect_silence(&mut self, limit: Duration) {
        if let Some(d) = self.recv_raw(limit) {
            panic!("expected no datagram, got {} bytes", d.len());
        }
    }

    /// Two sealed PING/PONG round trips: the server handled all sent before.
    fn sync(&mut self) {
        for _ in 0..2 {
            self.send("PING");
            loop {
                let d = self.expect("PONG");
                if d == "PONG" {
                    break;
                }
                assert!(d.starts_with("BCAST "), "wanted PONG, got {d:?}");
            }
        }
    }
}

/// Signs up and logs `user` in over TLS: the connection, the session token,
/// and the secret its TLS connection exports for sealed datagrams.
fn tls_login(server: &Server, user: &str) -> (Line, String, UdpSecret) {
    let mut c = server.connect_tls();
    c.cmd_ok(&format!("SIGNUP {user} pw-{user} pw-{user}"));
    let r = c.cmd_ok(&format!("LOGIN {user} pw-{user}"));
    let token = r.split(' ').nth(3).expect("token").to_owned();
    let secret = c.udp_secret().expect("a TLS connection exports a secret");
    (c, token, secret)
}

fn broadcast(c: &mut Line, text: &str) -> u64 {
    let r = c.cmd_ok(&format!("BROADCAST {text}"));
    r.split(' ').nth(2).unwrap().parse().unwrap()
}

fn bcast_id(d: &str) -> u64 {
    assert!(d.starts_with("BCAST "), "not a BCAST: {d:?}");
    d.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_tls_session_gets_sealed_broadcasts_and_its_token_is_refused_in_clear() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, token, secret) = tls_login(&server, "bob");
    let mut udp = SealedUdp::bind_at(&server, "127.0.0.1", &secret);
    udp.register();
    let id = broadcast(&mut alice, "meet at the usual place");
    let d = udp.expect("BCAST");
    assert_eq!(bcast_id(&d), id);
    assert!(d.ends_with(" alice ") || d.contains(" alice "), "{d}");
    assert!(d.ends_with("meet at the usual place"), "{d}");
    udp.send(&format!("ACK {id}"));
    udp.sync();
    // The ACK counted: no retransmit, no TCP fallback.
    udp.expect_silence(Duration::from_millis(800));
    bob.expect_silence(Duration::from_millis(0));
    // The session's token in clear, from its own address or another: nothing.
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    for text in [
        format!("REGISTER {token}"),
        format!("PING {token}"),
        format!("ACK {token} {id}"),
    ] {
        plain.send_to(text.as_bytes(), server.udp).unwrap();
        udp.sock.send_to(text.as_bytes(), server.udp).unwrap();
    }
    plain
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        plain.recv_from(&mut buf).is_err(),
        "an answer to the token in clear"
    );
    udp.sync();
    assert!(udp.seen.iter().all(|d| d[0] == MARKER));
}

#[test]
fn forged_tampered_replayed_and_spoofed_sealed_acks_change_nothing() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let (mut bob, token, secret) = tls_login(&server, "bob");
    let mut udp = SealedUdp::bind_at(&server, "127.0.0.1", &secret);
    udp.register();
    let id = broadcast(&mut alice, "ack me if you can");
    assert_eq!(bcast_id(&udp.expect("BCAST")), id);
    let ack = format!("ACK {id}");
    // Sealed with another key (another TLS connection's), bob's session id.
    let mut mallory = Channel::new(&UdpSecret::from_bytes([7; 32]), Role::Client);
    for _ in 0..50 {
        mallory.seal(b"burn counters bob has not used").unwrap();
    }
    let mut forged = mallory.seal(ack.as_bytes()).unwrap();
    forged[1..9].copy_from_slice(&udp.ch.id().0);
    udp.send_raw(&forged);
    // bob's genuine ACK, changed in one byte at each position.
    let genuine = udp.seal(&ack);
    for i in 0..genuine.len() {
        let mut t = genuine.clone();
        t[i] ^= 0x01;
        udp.send_raw(&t);
    }
    // The genuine one, from another address (a captured packet re-sent with
    // a spoofed source): authentic, but not from the registered endpoint.
    let thief = UdpSocket::bind("127.0.0.2:0").unwrap();
    thief.send_to(&genuine, server.udp).unwrap();
    // ...and then again from bob's socket: by now a replay.
    udp.send_raw(&genuine);
    // The token in clear, from bob's socket.
    udp.sock
        .send_to(format!("ACK {token} {id}").as_bytes(), server.udp)
        .unwrap();
    // None of those counted: the server sends the broadcast again.
    let again = udp.recv(Duration::from_secs(3)).expect("a retransmit");
    assert_eq!(bcast_id(&again), id, "{again}");
    thief
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        thief.recv_from(&mut buf).is_err(),
        "the thief got an answer"
    );
    // A fresh genuine ACK counts.
    udp.send(&ack);
    udp.sync();
    udp.expect_silence(Duration::from_millis(1500));
    bob.expect_silence(Duration::from_millis(0));
}

/// The reflection test for sealed sessions: from a victim's address
/// (127.0.0.2), datagrams for a TLS session with large broadcasts pending,
/// sealed with the session's own keys (as a captured-and-redirected packet
/// would be) or not, never bring back more bytes than were sent.
#[test]
fn a_forged_source_gets_no_more_bytes_back_than_it_sent_for_a_tls_session() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let mut c = server.connect_tls();
    c.cmd_ok("SIGNUP bob pw-bob pw-bob");
    for i in 0..20 {
        broadcast(&mut alice, &format!("pending {i} {}", "x".repeat(800)));
    }
    let r = c.cmd_ok("LOGIN bob pw-bob");
    let token = r.split(' ').nth(3).unwrap().to_owned();
    let secret = c.udp_secret().unwrap();
    let mut victim = SealedUdp::bind_at(&server, "127.0.0.2", &secret);
    let mut kinds: Vec<Vec<u8>> = vec![
        victim.seal("REGISTER"),
        victim.ch.seal(b"REGISTER").unwrap(), // not padded
        victim.seal("REGISTER 0123456789abcdef01234567"),
        victim.seal("PING"),
        victim.seal("ACK 1"),
        victim.seal("garbage"),
        vec![MARKER; 60],
        format!("REGISTER {token}").into_bytes(),
        format!("PING {token}").into_bytes(),
    ];
    let again = kinds[0].clone();
    kinds.push(again);
    let reg = victim.seal("REGISTER");
    kinds.extend((1..reg.len()).step_by(7).map(|n| reg[..n].to_vec()));
    let sent: usize = kinds.iter().map(Vec::len).sum();
    for k in &kinds {
        victim.send_raw(k);
    }
    let mut received = 0;
    while let Some(d) = victim.recv_raw(Duration::from_millis(500)) {
        received += d.len();
    }
    assert!(
        received <= sent,
        "sent {sent} bytes from a forged source, got {received} back"
    );
    // Each answer was a sealed CHALLENGE, nothing else.
    for d in victim.seen.clone() {
        let body = victim.ch.open(&d).unwrap();
        assert!(sealed::unpad(&body).starts_with(b"CHALLENGE "));
    }
    // bob, at his real address, registers and gets all twenty.
    let mut udp = SealedUdp::bind_at(&server, "127.0.0.1", &secret);
    // The victim's socket used counters of this channel: carry on after them.
    udp.ch = std::mem::replace(&mut victim.ch, Channel::new(&secret, Role::Client));
    udp.register();
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 20 {
        let id = bcast_id(&udp.expect("BCAST"));
        udp.send(&format!("ACK {id}"));
        ids.insert(id);
    }
}

// ---- what a capture of the loopback interface shows ----------------------------------

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[test]
fn a_capture_of_a_tls_session_shows_neither_its_token_nor_its_broadcasts() {
    let server = Server::start(&[]);
    let Some(cap) = Capture::start(&format!("port {}", server.udp.port())) else {
        return;
    };
    let (mut alice, _, _) = tls_login(&server, "alice");
    let (_bob, token, secret) = tls_login(&server, "bob");
    let mut udp = SealedUdp::bind_at(&server, "127.0.0.1", &secret);
    udp.register();
    let text = "the password to the vault is swordfish";
    let id = broadcast(&mut alice, text);
    assert_eq!(bcast_id(&udp.expect("BCAST")), id);
    udp.send(&format!("ACK {id}"));
    udp.sync();
    let pcap = cap.finish();
    assert!(
        pcap.len() > 24 + 10 * 40,
        "the capture caught the traffic ({} bytes)",
        pcap.len()
    );
    // The capture did see UDP on the port: sealed datagrams start with 0xD7.
    let sid = udp.ch.id().0;
    assert!(
        pcap.windows(8).any(|w| w == sid),
        "no sealed datagram of the session in the capture"
    );
    assert!(!contains(&pcap, token.as_bytes()), "the token in hex");
    let raw = hex::decode(&token).unwrap();
    assert!(
        !pcap.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the token's bytes"
    );
    assert!(!contains(&pcap, b"swordfish"), "the broadcast text");
    assert!(!contains(&pcap, b"pw-bob"), "a password");
    assert!(!contains(&pcap, b"REGISTER"), "a datagram verb in clear");
}

/// The real client over TLS: its datagrams are sealed, and broadcasts reach
/// it over UDP (its log says the path registered, which only a sealed
/// `OK REGISTER` can cause for a TLS session).
#[test]
fn the_client_over_tls_registers_sealed_and_gets_broadcasts() {
    let server = Server::start(&[]);
    let (mut alice, _) = server.login_new("alice");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    let mut c = Client::start_logging(&server, &["--listen-addr", "127.0.0.1"], &log);
    c.send("/signup carol pw-carol pw-carol");
    c.send("/login carol pw-carol");
    c.expect("logged in as carol");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("UDP path registered") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never registered its UDP path; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broadcast(&mut alice, "hello over sealed UDP");
    c.expect("hello over sealed UDP");
}
