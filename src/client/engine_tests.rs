//! Engine tests on a virtual clock: "at t this arrives, this leaves".
//! No sockets; a 60 s token expiry takes microseconds.

use super::*;
use crate::client::links::{HANDSHAKE_TIMEOUT, MAX_BAD_LINES, MAX_UNFINISHED_INCOMING, TOKEN_TTL};
use crate::proto::link_noise::{self, LinkWire, WireEvent};

const TOKEN: &str = "00112233445566778899aabbccddeeff";
const P2P: &str = "0123456789abcdef0123456789abcdef";

fn p2p() -> Token {
    Token::parse(P2P).expect("a valid token")
}

fn server_addr() -> SocketAddr {
    "127.0.0.1:4400".parse().unwrap()
}

fn peer_addr() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn config() -> Config {
    Config {
        server: server_addr(),
        listen_port: 7777,
        interactive: false,
        reauth_prompt: false,
        auto_login: None,
        utc_offset: 0,
        // The plaintext link tests speak as nc would; encrypted ones below.
        allow_plaintext_links: true,
        seed: 7,
        stay: false,
        count: None,
        timeout: None,
    }
}

struct T {
    e: Engine,
    t0: Instant,
    elapsed: Duration,
}

impl T {
    /// A started engine, and what starting it produced.
    fn started(cfg: Config) -> (T, Vec<Output>) {
        let t0 = Instant::now();
        let mut t = T {
            e: Engine::new(
                cfg,
                Now {
                    mono: t0,
                    unix: 1_700_000_000,
                },
            ),
            t0,
            elapsed: Duration::ZERO,
        };
        t.e.start(t.now());
        let out = t.drain();
        (t, out)
    }

    fn with(cfg: Config) -> T {
        T::started(cfg).0
    }

    fn new() -> T {
        T::with(config())
    }

    fn now(&self) -> Now {
        // 1_700_000_000 is 22:13:20 UTC.
        Now {
            mono: self.t0 + self.elapsed,
            unix: 1_700_000_000 + self.elapsed.as_secs(),
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.e.poll_output()).collect()
    }

    fn input(&mut self, i: Input) -> Vec<Output> {
        self.e.handle(self.now(), i);
        self.drain()
    }

    fn typed(&mut self, line: &str) -> Vec<Output> {
        self.input(Input::Stdin(Frame::Line(line.into())))
    }

    /// A line from the server. The fake server is one from before
    /// resumption tickets: it answers the client's automatic `TICKET` (sent
    /// after each password login) with `ERR unknown-verb` at once, which the
    /// client must take quietly; the ticket tests use [`T::server_raw`].
    fn server(&mut self, line: &str) -> Vec<Output> {
        let mut out = self.server_raw(line);
        let asked = out.len();
        out.retain(|o| *o != Output::ToServer("TICKET".into()));
        if out.len() < asked {
            out.extend(self.server_raw("ERR unknown-verb unknown command"));
        }
        out
    }

    fn server_raw(&mut self, line: &str) -> Vec<Output> {
        self.input(Input::Server(Frame::Line(line.into())))
    }

    fn link(&mut self, id: LinkId, line: &str) -> Vec<Output> {
        self.link_bytes(id, format!("{line}\n").as_bytes())
    }

    fn link_bytes(&mut self, id: LinkId, bytes: &[u8]) -> Vec<Output> {
        self.input(Input::LinkBytes {
            link: id,
            bytes: bytes.to_vec(),
        })
    }

    fn udp(&mut self, bytes: &str) -> Vec<Output> {
        self.input(Input::Datagram {
            from: server_addr(),
            bytes: bytes.as_bytes().to_vec(),
        })
    }

    /// Types `/login <user> pw`; the server answers `OK LOGIN` with [`TOKEN`].
    fn login(&mut self, user: &str) -> Vec<Output> {
        self.typed(&format!("/login {user} pw"));
        self.server(&format!("OK LOGIN {user} {TOKEN}"))
    }

    /// The server confirms our `ACCEPT` of `peer`, with the link token [`P2P`].
    fn ok_accept(&mut self, peer: &str) -> Vec<Output> {
        self.server(&format!("OK ACCEPT {peer} {P2P}"))
    }

    /// Our listener took a connection from [`peer_addr`] as link `id`.
    fn link_accepted(&mut self, id: LinkId) -> Vec<Output> {
        self.input(Input::LinkAccepted {
            link: id,
            addr: peer_addr(),
        })
    }

    /// On link `id`, the other side says it is `peer` with the token [`P2P`].
    fn peer_hello(&mut self, id: LinkId, peer: &str) -> Vec<Output> {
        self.link(id, &format!("PEER {peer} {P2P}"))
    }

    /// The connection to `peer` that an `EVENT PEER` asked for is open as link `id`.
    fn dialed(&mut self, id: LinkId, peer: &str) -> Vec<Output> {
        self.input(Input::Dialed {
            link: id,
            user: peer.into(),
            token: p2p(),
            addr: peer_addr(),
        })
    }

    /// Moves the virtual clock, firing timers whose deadline has come.
    fn advance(&mut self, by: Duration) -> Vec<Output> {
        self.elapsed += by;
        let mut out = Vec::new();
        while self.e.poll_timeout().is_some_and(|d| d <= self.now().mono) {
            self.e.handle(self.now(), Input::Timeout);
            out.extend(self.drain());
            if self.e.is_done() {
                break;
            }
        }
        out
    }

    /// Logged in as `user`, UDP registered.
    fn logged_in(user: &str) -> T {
        let mut t = T::new();
        t.login(user);
        t.udp("OK REGISTER");
        t
    }

    /// `me` accepted `peer` and `peer` dialed in on link `id`.
    fn linked_in(me: &str, peer: &str, id: LinkId) -> T {
        let mut t = T::logged_in(me);
        t.ok_accept(peer);
        t.link_accepted(id);
        let out = t.peer_hello(id, peer);
        assert!(
            out.contains(&Output::ToLink(id, format!("OK PEER {me}"))),
            "{out:?}"
        );
        // A link makes us watch the peer; the server answers in order.
        assert!(
            to_server(&out).contains(&format!("WATCH +{peer}")),
            "{out:?}"
        );
        t.server("OK WATCH 1");
        t
    }
}

/// The text of every output `pick` selects, in order.
fn texts(out: &[Output], pick: fn(&Output) -> Option<&String>) -> Vec<String> {
    out.iter().filter_map(pick).cloned().collect()
}

/// What the user would read, without stamps: each shown line as it renders
/// before its `[HH:MM:SS]`, and raw prints.
fn printed(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Show(s) => Some(s.to_string()),
            Output::Print(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn to_server(out: &[Output]) -> Vec<String> {
    texts(out, |o| match o {
        Output::ToServer(s) => Some(s),
        _ => None,
    })
}

fn datagrams(out: &[Output]) -> Vec<String> {
    raw_datagrams(out)
        .iter()
        .map(|d| String::from_utf8(d.clone()).expect("a plaintext datagram"))
        .collect()
}

fn raw_datagrams(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Datagram(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn exits(out: &[Output]) -> Option<i32> {
    out.iter().find_map(|o| match o {
        Output::Exit(c) => Some(*c),
        _ => None,
    })
}

fn any_contains(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

// ---- start and commands ----------------------------------------------------

#[test]
fn greeting_says_where_and_what_to_type() {
    let (_, out) = T::started(Config {
        interactive: true,
        ..config()
    });
    let lines = printed(&out);
    let all = lines.join("\n");
    for needle in ["127.0.0.1:4400", "/signup", "/login", "/help", "port 7777"] {
        assert!(all.contains(needle), "{needle} missing from {all}");
    }
    assert!(lines.iter().all(|l| l.starts_with("[client] ")));
    // Without a terminal: where it connected, but no hints.
    let (_, out) = T::started(config());
    let all = printed(&out).join("\n");
    assert!(
        all.contains("127.0.0.1:4400") && !all.contains("/help"),
        "{all}"
    );
}

/// A driver sleeps until `poll_timeout`: while outputs wait it must say
/// "now" (the latest `now` given), or a driver that polled the timeout before
/// draining would sleep on a queued line until an unrelated wake-up.
#[test]
fn poll_timeout_is_due_while_outputs_wait() {
    let mut t = T::new();
    t.advance(Duration::from_secs(3));
    // Drained and logged out: nothing due before the heartbeat (if any).
    let idle = t.e.poll_timeout();
    assert!(idle.map_or(true, |at| at > t.now().mono), "{idle:?}");
    t.e.handle(t.now(), Input::Stdin(Frame::Line("/list".into())));
    assert_eq!(t.e.poll_timeout(), Some(t.now().mono), "LIST is queued");
    assert!(to_server(&t.drain()).contains(&"LIST".to_owned()));
    assert_eq!(t.e.poll_timeout(), idle, "drained: back to the timers");
}

#[test]
fn unattended_login_is_sent_at_start() {
    let (_, out) = T::started(Config {
        auto_login: Some(("alice".into(), "pw".into())),
        ..config()
    });
    assert_eq!(to_server(&out), vec!["LOGIN alice pw"]);
}

#[test]
fn typed_commands_become_protocol_lines() {
    let mut t = T::new();
    let cases = [
        ("/signup alice pw pw", "SIGNUP alice pw pw"),
        ("/login alice pw", "LOGIN alice pw"),
        ("/list", "LIST"),
        ("/connect bob", "CONNECT bob 7777"),
        ("/connect 127.0.0.2", "CONNECT 127.0.0.2 7777"),
        ("/accept bob", "ACCEPT bob 7777"),
        ("/deny bob", "DENY bob"),
        ("/broadcast hello  all", "BROADCAST hello  all"),
        ("/ping", "PING"),
    ];
    for (typed, wire) in cases {
        assert_eq!(to_server(&t.typed(typed)), vec![wire], "{typed}");
    }
    let out = t.typed("/login alice");
    assert!(to_server(&out).is_empty());
    assert!(any_contains(
        &printed(&out),
        "usage: /login <user> <password>"
    ));
    let out = t.typed("/nope");
    assert!(any_contains(&printed(&out), "unknown command /nope"));
}

#[test]
fn help_lists_every_command_and_the_reauth_behaviour() {
    let mut t = T::new();
    let help = printed(&t.typed("/help")).join("\n");
    for cmd in [
        "/signup",
        "/login",
        "/list",
        "/connect",
        "/accept",
        "/deny",
        "/msg",
        "/peers",
        "/bye",
        "/broadcast",
        "/quit",
    ] {
        assert!(help.contains(cmd), "{cmd} missing");
    }
    assert!(help.contains("REAUTH") && help.contains("by itself"));
}

#[test]
fn prompts_on_a_terminal_hide_passwords_and_ask_twice_for_signup() {
    let mut t = T::with(Config {
        interactive: true,
        ..config()
    });
    let out = t.typed("/signup");
    assert_eq!(out, vec![Output::Prompt("username: ".into())]);
    let out = t.typed("alice");
    assert_eq!(
        out,
        vec![Output::Echo(false), Output::Prompt("password: ".into())]
    );
    let out = t.typed("secret");
    assert!(out.contains(&Output::Echo(true)) && out.contains(&Output::Echo(false)));
    assert!(out.contains(&Output::Prompt("password again: ".into())));
    let out = t.typed("secret");
    assert_eq!(to_server(&out), vec!["SIGNUP alice secret secret"]);
    assert_eq!(out.iter().filter(|o| **o == Output::Echo(true)).count(), 1);

    t.typed("/login");
    t.typed("alice");
    let out = t.typed("secret");
    assert_eq!(to_server(&out), vec!["LOGIN alice secret"]);
}

#[test]
fn bare_passwd_on_a_terminal_asks_three_times_without_echo() {
    let mut t = T::with(Config {
        interactive: true,
        ..config()
    });
    t.login("alice");
    let out = t.typed("/passwd");
    assert_eq!(
        out,
        vec![Output::Echo(false), Output::Prompt("old password: ".into())]
    );
    let out = t.typed("old-pw");
    assert!(
        out.contains(&Output::Prompt("new password: ".into())),
        "{out:?}"
    );
    assert!(
        to_server(&out).is_empty(),
        "nothing is sent before all three"
    );
    let out = t.typed("new-pw");
    assert!(out.contains(&Output::Prompt("new password again: ".into())));
    let out = t.typed("new-pw");
    assert_eq!(to_server(&out), vec!["PASSWD old-pw new-pw new-pw"]);
    // Echo is back on after the last answer, and no answer was ever printed.
    assert!(out.contains(&Output::Echo(true)));
    for o in t.typed("/passwd").iter().chain(&out) {
        if let Output::Print(p) = o {
            assert!(!p.contains("old-pw") && !p.contains("new-pw"), "{p}");
        }
    }
}

#[test]
fn bare_passwd_without_a_terminal_is_a_usage_error_and_sends_nothing() {
    let mut t = T::logged_in("alice");
    let out = t.typed("/passwd");
    assert!(!out.iter().any(|o| matches!(o, Output::Prompt(_))));
    assert!(to_server(&out).is_empty());
    assert!(
        any_contains(&printed(&out), "/passwd <old> <new> <new-again>"),
        "{out:?}"
    );
}

#[test]
fn bare_passwd_before_login_says_to_log_in() {
    let mut t = T::with(Config {
        interactive: true,
        ..config()
    });
    let out = t.typed("/passwd");
    assert!(!out.iter().any(|o| matches!(o, Output::Prompt(_))));
    assert!(any_contains(&printed(&out), "not logged in"), "{out:?}");
}

#[test]
fn without_a_terminal_bare_login_explains_instead_of_prompting() {
    let mut t = T::new();
    let out = t.typed("/login");
    assert!(!out.iter().any(|o| matches!(o, Output::Prompt(_))));
    assert!(any_contains(&printed(&out), "/login <user> <password>"));
}

// ---- server replies ----------------------------------------------------------

#[test]
fn errors_are_shown_in_plain_words_with_the_code() {
    let mut t = T::new();
    t.typed("/login alice bad");
    let out = printed(&t.server("ERR bad-credentials wrong username or password"));
    assert_eq!(
        out,
        vec!["[server] LOGIN failed: Wrong username or password. (bad-credentials: wrong username or password)"]
    );
}

#[test]
fn list_is_a_table() {
    let mut t = T::logged_in("alice");
    t.typed("/list");
    assert!(t.server("CLIENT alice 127.0.0.1").is_empty());
    t.server("CLIENT bob ::1");
    let out = printed(&t.server("OK LIST 2"));
    assert_eq!(
        out,
        vec![
            "[server] 2 user(s) online:",
            "[server]   USER   IP",
            "[server]   alice  127.0.0.1",
            "[server]   bob    ::1",
        ]
    );
}

#[test]
fn requests_and_their_endings_are_printed_with_instructions() {
    let mut t = T::logged_in("bob");
    let out = printed(&t.server("EVENT REQUEST alice 127.0.0.1"));
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("[event] alice"));
    assert!(
        out[0].contains("/accept alice") && out[0].contains("/deny alice"),
        "{}",
        out[0]
    );
    assert!(any_contains(&printed(&t.typed("/peers")), "asks you"));
    let out = printed(&t.server("EVENT CANCELLED alice expired"));
    assert!(any_contains(&out, "expired"));
    let out = printed(&t.server("EVENT DENIED carol"));
    assert!(any_contains(&out, "carol turned down"));
    let out = printed(&t.server("EVENT CANCELLED carol offline"));
    assert!(any_contains(&out, "carol went offline"));
}

#[test]
fn server_text_is_sanitized() {
    let mut t = T::new();
    let out = printed(&t.server("EVENT WELCOME hi\x1b[31m red"));
    assert_eq!(out, vec!["[server] hi\u{FFFD}[31m red"]);
    let out = printed(&t.server("SOMETHING \x1b]0;title\x07"));
    assert!(out
        .iter()
        .all(|l| !l.contains('\x1b') && !l.contains('\x07')));
}

// ---- REAUTH -----------------------------------------------------------------

#[test]
fn reauth_is_answered_automatically_and_leaves_links_alone() {
    let mut t = T::linked_in("bob", "alice", 3);
    for round in 0..3 {
        t.advance(Duration::from_secs(30));
        let out = t.server("EVENT REAUTH 120");
        assert_eq!(to_server(&out), vec!["LOGIN bob pw"], "round {round}");
        assert!(any_contains(&printed(&out), "automatically"));
        let out = t.server(&format!("OK LOGIN bob {TOKEN}"));
        assert!(any_contains(&printed(&out), "session renewed for bob"));
        // Same session: no new registration, and the link is untouched.
        assert!(datagrams(&out).is_empty(), "{out:?}");
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::ToLink(..) | Output::CloseLink(_))));
    }
    let out = t.link(3, "MSG still here");
    assert!(any_contains(&printed(&out), "<alice> still here"));
}

#[test]
fn reauth_prompt_flag_asks_instead() {
    let mut t = T::with(Config {
        reauth_prompt: true,
        ..config()
    });
    t.login("bob");
    let out = t.server("EVENT REAUTH 120");
    assert!(to_server(&out).is_empty());
    assert!(any_contains(&printed(&out), "/login bob <password>"));

    let mut t = T::with(Config {
        reauth_prompt: true,
        interactive: true,
        ..config()
    });
    t.login("bob");
    let out = t.server("EVENT REAUTH 120");
    assert!(out.contains(&Output::Prompt("password: ".into())));
    assert_eq!(to_server(&t.typed("pw")), vec!["LOGIN bob pw"]);
}

#[test]
fn failed_login_credentials_are_not_kept_for_reauth() {
    let mut t = T::logged_in("bob");
    t.typed("/login bob wrong");
    t.server("ERR bad-credentials wrong username or password");
    let out = t.server("EVENT REAUTH 60");
    assert_eq!(to_server(&out), vec!["LOGIN bob pw"]);
}

// ---- UDP and broadcasts --------------------------------------------------------

#[test]
fn register_is_retried_then_pings_keep_the_path_alive() {
    let mut t = T::new();
    let out = t.login("alice");
    assert_eq!(datagrams(&out), vec![format!("REGISTER {TOKEN}")]);
    let out = t.advance(REGISTER_RETRY);
    assert_eq!(datagrams(&out), vec![format!("REGISTER {TOKEN}")]);
    assert!(t.udp("OK REGISTER").is_empty());
    assert!(datagrams(&t.advance(PING_EVERY - Duration::from_secs(1))).is_empty());
    assert_eq!(
        datagrams(&t.advance(Duration::from_secs(1))),
        vec![format!("PING {TOKEN}")]
    );
    assert_eq!(
        datagrams(&t.advance(PING_EVERY)),
        vec![format!("PING {TOKEN}")]
    );
}

#[test]
fn a_challenge_is_answered_at_once_and_its_cookie_kept_for_retries() {
    let mut t = T::new();
    t.login("alice");
    let cookie = "0123456789abcdef01234567";
    let out = t.udp(&format!("CHALLENGE {cookie}"));
    assert_eq!(datagrams(&out), vec![format!("REGISTER {TOKEN} {cookie}")]);
    let out = t.advance(REGISTER_RETRY);
    assert_eq!(datagrams(&out), vec![format!("REGISTER {TOKEN} {cookie}")]);
    assert!(t.udp("OK REGISTER").is_empty());
    // Registered: a late CHALLENGE (say, a duplicate) changes nothing.
    assert!(t.udp(&format!("CHALLENGE {cookie}")).is_empty());
    assert_eq!(
        datagrams(&t.advance(PING_EVERY)),
        vec![format!("PING {TOKEN}")]
    );
}

#[test]
fn register_gives_up_after_a_few_tries_then_tries_again_later() {
    let mut t = T::new();
    let mut sent = datagrams(&t.login("alice")).len();
    for _ in 0..REGISTER_TRIES {
        sent += datagrams(&t.advance(REGISTER_RETRY)).len();
    }
    assert_eq!(sent as u32, REGISTER_TRIES);
    assert_eq!(
        datagrams(&t.advance(PING_EVERY)),
        vec![format!("REGISTER {TOKEN}")]
    );
}

#[test]
fn broadcasts_are_acked_every_time_and_shown_once() {
    let mut t = T::logged_in("bob");
    let out = t.udp("BCAST 5 alice 1700000000 hello all");
    assert_eq!(datagrams(&out), vec![format!("ACK {TOKEN} 5")]);
    assert_eq!(printed(&out), vec!["[broadcast] <alice> hello all"]);
    let out = t.udp("BCAST 5 alice 1700000000 hello all");
    assert_eq!(datagrams(&out), vec![format!("ACK {TOKEN} 5")]);
    assert!(printed(&out).is_empty());
    assert!(t
        .server("EVENT BROADCAST 5 alice 1700000000 hello all")
        .is_empty());
    // TCP first, UDP later: still once.
    assert_eq!(
        printed(&t.server("EVENT BROADCAST 6 carol 1700000001 hi")).len(),
        1
    );
    let out = t.udp("BCAST 6 carol 1700000001 hi");
    assert_eq!(datagrams(&out).len(), 1);
    assert!(printed(&out).is_empty());
}

#[test]
fn datagrams_from_anyone_but_the_server_are_ignored() {
    let mut t = T::logged_in("bob");
    let out = t.input(Input::Datagram {
        from: "127.0.0.1:9999".parse().unwrap(),
        bytes: b"BCAST 9 mallory 1700000000 spoofed".to_vec(),
    });
    assert!(out.is_empty());
    assert_eq!(printed(&t.udp("BCAST 9 alice 1700000000 real")).len(), 1);
}

#[test]
fn own_broadcast_reply_reports_reach() {
    let mut t = T::logged_in("alice");
    assert_eq!(to_server(&t.typed("/broadcast hi")), vec!["BROADCAST hi"]);
    let out = printed(&t.server("OK BROADCAST 12 reached=2 pending=1 expires=1700001800"));
    assert!(
        any_contains(&out, "reached 2 online user(s); 1 offline"),
        "{out:?}"
    );
}

// ---- incoming links: the token checks --------------------------------------------

fn refused(out: &[Output], id: LinkId) -> bool {
    out.contains(&Output::ToLink(
        id,
        "ERR bad-token unknown, used or expired token".into(),
    )) && out.contains(&Output::CloseLink(id))
}

#[test]
fn wrong_token_and_wrong_user_are_refused_without_using_the_token() {
    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    t.link_accepted(1);
    let out = t.link(1, &format!("PEER alice {TOKEN}"));
    assert!(refused(&out, 1), "{out:?}");
    assert!(any_contains(&printed(&out), "wrong token"));
    t.link_accepted(2);
    assert!(refused(&t.peer_hello(2, "mallory"), 2));
    t.link_accepted(3);
    let out = t.peer_hello(3, "alice");
    assert!(
        out.contains(&Output::ToLink(3, "OK PEER bob".into())),
        "{out:?}"
    );
}

#[test]
fn a_hello_racing_ahead_of_ok_accept_waits_for_it() {
    let mut t = T::logged_in("bob");
    t.typed("/accept alice");
    t.link_accepted(1);
    // The dialer was faster than the server's reply to us.
    assert!(t.peer_hello(1, "alice").is_empty());
    let out = t.ok_accept("alice");
    assert!(
        out.contains(&Output::ToLink(1, "OK PEER bob".into())),
        "{out:?}"
    );
    t.server("OK WATCH 1");

    // If the ACCEPT fails instead, the parked hello is refused.
    t.typed("/accept carol");
    t.link_accepted(2);
    assert!(t.peer_hello(2, "carol").is_empty());
    assert!(refused(
        &t.server("ERR no-request no pending request from that user"),
        2
    ));
}

#[test]
fn a_parked_hello_dies_with_its_connection() {
    // Issue 10, defect 6: the hello's socket closes before `OK ACCEPT`; a
    // stranger's connection then gets the same id (the old driver reused slab
    // keys). The stranger must not be linked as alice when the reply comes.
    let mut t = T::logged_in("bob");
    t.typed("/accept alice");
    t.link_accepted(1);
    assert!(t.peer_hello(1, "alice").is_empty());
    t.input(Input::LinkClosed { link: 1 });
    t.link_accepted(1);
    let out = t.ok_accept("alice");
    assert!(
        !out.iter().any(|o| matches!(o, Output::ToLink(1, _))),
        "{out:?}"
    );
    assert!(!any_contains(&printed(&out), "alice connected"), "{out:?}");
    // The token is still unused: the real alice can come now.
    t.link_accepted(2);
    assert!(t
        .peer_hello(2, "alice")
        .contains(&Output::ToLink(2, "OK PEER bob".into())));
}

#[test]
fn unfinished_incoming_connections_are_capped() {
    let mut t = T::logged_in("bob");
    let cap = MAX_UNFINISHED_INCOMING as LinkId;
    for id in 1..=cap {
        assert!(t.link_accepted(id).is_empty());
    }
    // One more is closed at once, without a word on the terminal.
    assert_eq!(t.link_accepted(cap + 1), vec![Output::CloseLink(cap + 1)]);
    // A finished handshake frees a place; so does a timed-out one.
    t.ok_accept("alice");
    assert!(t
        .peer_hello(1, "alice")
        .contains(&Output::ToLink(1, "OK PEER bob".into())));
    assert!(t.link_accepted(cap + 2).is_empty());
    assert_eq!(t.link_accepted(cap + 3), vec![Output::CloseLink(cap + 3)]);
    let out = t.advance(HANDSHAKE_TIMEOUT);
    assert!(out.contains(&Output::CloseLink(2)), "{out:?}");
    assert!(t.link_accepted(cap + 4).is_empty());
}

#[test]
fn a_token_works_once() {
    let mut t = T::linked_in("bob", "alice", 1);
    t.link_accepted(2);
    assert!(refused(&t.peer_hello(2, "alice"), 2));
}

#[test]
fn a_token_expires_60_seconds_after_accept() {
    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    t.advance(TOKEN_TTL - Duration::from_millis(1));
    t.link_accepted(1);
    t.advance(Duration::from_millis(1));
    let out = t.peer_hello(1, "alice");
    assert!(refused(&out, 1));
    assert!(any_contains(&printed(&out), "claiming to be alice"));

    // One millisecond earlier it would have worked.
    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    t.advance(TOKEN_TTL - Duration::from_millis(1));
    t.link_accepted(1);
    assert!(t
        .peer_hello(1, "alice")
        .contains(&Output::ToLink(1, "OK PEER bob".into())));
}

#[test]
fn silent_incoming_connections_are_closed_after_the_handshake_timeout() {
    let mut t = T::logged_in("bob");
    t.link_accepted(4);
    let out = t.link(4, "MSG before hello");
    assert!(out.contains(&Output::ToLink(
        4,
        "ERR not-linked send PEER <user> <token> first".into()
    )));
    assert!(printed(&out).is_empty(), "nothing unauthenticated is shown");
    assert!(t.advance(HANDSHAKE_TIMEOUT).contains(&Output::CloseLink(4)));
}

#[test]
fn bad_lines_on_a_link_get_err_and_a_flood_closes_it() {
    let mut t = T::linked_in("bob", "alice", 1);
    let mut long = vec![b'x'; 2000];
    long.push(b'\n');
    let out = t.link_bytes(1, &long);
    assert_eq!(
        out,
        vec![Output::ToLink(
            1,
            "ERR line-too-long lines are limited to 1024 bytes; line discarded".into()
        )]
    );
    let out = t.link_bytes(1, b"MSG \xff\xfe\n");
    assert!(matches!(&out[..], [Output::ToLink(1, l)] if l.starts_with("ERR bad-utf8")));
    let out = t.link(1, "WHAT");
    assert!(matches!(&out[..], [Output::ToLink(1, l)] if l.starts_with("ERR unknown-verb")));
    let mut closed = false;
    for _ in 0..MAX_BAD_LINES {
        closed |= t.link(1, "WHAT").contains(&Output::CloseLink(1));
    }
    assert!(closed);
}

// ---- outgoing links and chat ---------------------------------------------------------

/// Every byte the engine sent on link `id`, in order.
fn bytes_to(out: &[Output], id: LinkId) -> Vec<u8> {
    out.iter()
        .filter_map(|o| match o {
            Output::LinkBytes(l, b) if *l == id => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// What a peer's wire makes of `bytes`.
fn wire_events(w: &mut LinkWire, bytes: &[u8]) -> Vec<WireEvent> {
    w.push(bytes);
    std::iter::from_fn(|| w.next_event()).collect()
}

fn wire_line(s: &str) -> WireEvent {
    WireEvent::Line(Frame::Line(s.into()))
}

/// The listening peer's side of an encrypted link: answers `hello` as `me`
/// with `(user, token)` issued; returns its wire and the answer.
fn answer(hello: &[u8], me: &str, issued: (&str, &str)) -> (LinkWire, Vec<u8>) {
    let mut w = LinkWire::incoming();
    let ev = wire_events(&mut w, hello);
    let [WireEvent::Hello(h)] = &ev[..] else {
        panic!("{ev:?}");
    };
    let (_, answer) = w.answer_hello(h, me, [issued]).expect("token matches");
    (w, answer)
}

impl T {
    /// Plays `peer` taking the encrypted hello that the engine (logged in as
    /// `me`) sent on link `id` in `out`, through to the engine's "link is
    /// up"; returns `peer`'s wire and the outputs of that last step.
    fn answered_as(
        &mut self,
        peer: &str,
        me: &str,
        id: LinkId,
        out: &[Output],
    ) -> (LinkWire, Vec<Output>) {
        let hello = bytes_to(out, id);
        assert!(hello.starts_with(link_noise::MAGIC), "{out:?}");
        let (mut wire, answer) = answer(&hello, peer, (me, P2P));
        let out = self.link_bytes(id, &answer);
        assert!(printed(&out).is_empty(), "not up before {peer} confirms");
        assert_eq!(
            wire_events(&mut wire, &bytes_to(&out, id)),
            vec![wire_line(&format!("PEER {me}"))]
        );
        let out = self.link_bytes(id, &wire.seal(&format!("OK PEER {peer}")).unwrap());
        assert!(
            any_contains(
                &printed(&out),
                &format!("direct link with {peer} is up (encrypted)")
            ),
            "{out:?}"
        );
        (wire, out)
    }

    /// `alice` dialed `bob` on link 9 (encrypted); returns bob's wire once
    /// both sides are up.
    fn dialed_encrypted(&mut self) -> LinkWire {
        self.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
        let out = self.dialed(9, "bob");
        assert!(printed(&out).is_empty());
        self.answered_as("bob", "alice", 9, &out).0
    }

    /// `bob` (logged in, alice accepted) takes alice's encrypted hello on
    /// link `id`; returns alice's wire once both sides are up, and the hello.
    fn linked_in_encrypted(&mut self, id: LinkId) -> (LinkWire, Vec<u8>) {
        let (mut alice, hello) = LinkWire::dial(P2P, "alice", "bob");
        self.link_accepted(id);
        let out = self.link_bytes(id, &hello);
        assert!(printed(&out).is_empty(), "{out:?}");
        assert_eq!(
            wire_events(&mut alice, &bytes_to(&out, id)),
            vec![WireEvent::Secured]
        );
        let out = self.link_bytes(id, &alice.seal("PEER alice").unwrap());
        assert!(
            any_contains(
                &printed(&out),
                "alice connected; direct link is up (encrypted)"
            ),
            "{out:?}"
        );
        assert_eq!(
            wire_events(&mut alice, &bytes_to(&out, id)),
            vec![wire_line("OK PEER bob")]
        );
        (alice, hello)
    }
}

#[test]
fn peer_event_dials_encrypted_then_chat_flows() {
    let mut t = T::logged_in("alice");
    t.typed("/connect bob");
    t.server("OK CONNECT bob");
    let out = t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    assert!(out.contains(&Output::Dial {
        user: "bob".into(),
        addr: peer_addr(),
        token: p2p()
    }));
    let mut bob = t.dialed_encrypted();
    // Plain text goes to the only link, sealed.
    let out = t.typed("hi bob");
    assert!(any_contains(&printed(&out), "me -> bob: hi bob"));
    assert!(!out.iter().any(|o| matches!(o, Output::ToLink(..))));
    assert_eq!(
        wire_events(&mut bob, &bytes_to(&out, 9)),
        vec![wire_line("MSG hi bob")]
    );
    let out = t.link_bytes(9, &bob.seal("MSG hi \x1b[2Jalice").unwrap());
    assert_eq!(printed(&out), vec!["<bob> hi \u{FFFD}[2Jalice"]);
    let peers = printed(&t.typed("/peers")).join("\n");
    assert!(peers.contains("linked (encrypted)"), "{peers}");
    let out = t.typed("/bye bob");
    assert_eq!(
        wire_events(&mut bob, &bytes_to(&out, 9)),
        vec![wire_line("BYE")]
    );
    assert!(out.contains(&Output::CloseLink(9)));
    assert!(any_contains(
        &printed(&t.typed("/msg bob hi")),
        "no direct link with bob"
    ));
}

#[test]
fn a_refused_or_unauthenticated_dial_is_reported() {
    let mut t = T::logged_in("alice");
    t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    t.dialed(9, "bob");
    let out = t.link_bytes(9, &link_noise::refusal("bad-token"));
    assert!(
        any_contains(&printed(&out), "bob refused the link"),
        "{out:?}"
    );
    assert!(out.contains(&Output::CloseLink(9)));

    // A listener that does not hold the token (a man in the middle).
    let mut t = T::logged_in("alice");
    t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    t.dialed(9, "bob");
    let other = "ffffffffffffffffffffffffffffffff";
    let (_, fake_hello) = LinkWire::dial(other, "alice", "bob");
    let (_, fake_answer) = answer(&fake_hello, "bob", ("alice", other));
    let out = t.link_bytes(9, &fake_answer);
    assert!(
        any_contains(
            &printed(&out),
            "could not link with bob: the handshake failed"
        ),
        "{out:?}"
    );
    assert!(out.contains(&Output::CloseLink(9)));

    // A plaintext-only listener (nc) answering in lines.
    let mut t = T::logged_in("alice");
    t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    t.dialed(9, "bob");
    let out = t.link(9, "ERR encryption-required no");
    assert!(
        any_contains(&printed(&out), "answered in plain text"),
        "{out:?}"
    );
}

// ---- incoming encrypted links --------------------------------------------------------

#[test]
fn an_encrypted_hello_links_and_chat_is_sealed() {
    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    let (mut alice, _) = t.linked_in_encrypted(1);
    let out = t.link_bytes(1, &alice.seal("MSG hello bob").unwrap());
    assert_eq!(printed(&out), vec!["<alice> hello bob"]);
    let out = t.typed("/msg alice hi");
    assert_eq!(
        wire_events(&mut alice, &bytes_to(&out, 1)),
        vec![wire_line("MSG hi")]
    );
}

#[test]
fn an_encrypted_hello_racing_ahead_of_ok_accept_waits_for_it() {
    let mut t = T::logged_in("bob");
    t.typed("/accept alice");
    let (mut alice, hello) = LinkWire::dial(P2P, "alice", "bob");
    t.link_accepted(1);
    assert!(t.link_bytes(1, &hello).is_empty());
    let out = t.ok_accept("alice");
    assert_eq!(
        wire_events(&mut alice, &bytes_to(&out, 1)),
        vec![WireEvent::Secured]
    );
}

#[test]
fn a_replayed_hello_never_links_and_does_not_use_the_token() {
    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    let (_, hello) = LinkWire::dial(P2P, "alice", "bob");
    // A recording of the hello authenticates, so bob answers; but the replayer
    // cannot read the answer, and whatever it sends next fails.
    t.link_accepted(1);
    let out = t.link_bytes(1, &hello);
    assert!(!bytes_to(&out, 1).is_empty() && printed(&out).is_empty());
    let mut junk = vec![link_noise::FRAME_DATA, 0, 30];
    junk.extend([7u8; 30]);
    let out = t.link_bytes(1, &junk);
    assert!(
        any_contains(&printed(&out), "failed authentication"),
        "{out:?}"
    );
    assert!(!any_contains(&printed(&out), "<alice>"));
    assert!(out.contains(&Output::CloseLink(1)));
    // Or it says nothing and the 10 s deadline closes it.
    t.link_accepted(2);
    t.link_bytes(2, &hello);
    assert!(t.advance(HANDSHAKE_TIMEOUT).contains(&Output::CloseLink(2)));
    // The token was not used: the real alice links (replaying her hello).
    t.advance(Duration::from_secs(1));
    let (_, _) = t.linked_in_encrypted(3);
    // Once used, the same hello is refused outright.
    t.link_accepted(4);
    let out = t.link_bytes(4, &hello);
    assert!(
        any_contains(&printed(&out), "refused an encrypted link"),
        "{out:?}"
    );
    assert_eq!(
        wire_events(
            &mut LinkWire::dial(P2P, "alice", "bob").0,
            &bytes_to(&out, 4)
        ),
        vec![WireEvent::Refused("bad-token".into())]
    );
    assert!(out.contains(&Output::CloseLink(4)));
}

#[test]
fn a_tampered_or_truncated_frame_ends_the_link_and_shows_nothing() {
    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    let (mut alice, _) = t.linked_in_encrypted(1);
    let mut f = alice.seal("MSG secret plan").unwrap();
    f[5] ^= 0x01;
    let out = t.link_bytes(1, &f);
    assert!(
        any_contains(
            &printed(&out),
            "closed the direct link with alice: a frame failed authentication"
        ),
        "{out:?}"
    );
    assert!(!any_contains(&printed(&out), "secret"));
    assert!(out.contains(&Output::CloseLink(1)));

    let mut t = T::logged_in("bob");
    t.ok_accept("alice");
    let (mut alice, _) = t.linked_in_encrypted(1);
    let f = alice.seal("MSG cut short").unwrap();
    assert!(printed(&t.link_bytes(1, &f[..f.len() - 3])).is_empty());
    let out = t.input(Input::LinkClosed { link: 1 });
    assert!(
        any_contains(&printed(&out), "lost (it ended in the middle of a frame"),
        "{out:?}"
    );
    assert!(!any_contains(&printed(&out), "cut short"));
}

#[test]
fn plaintext_hellos_get_encryption_required_unless_allowed() {
    let mut t = T::with(Config {
        allow_plaintext_links: false,
        ..config()
    });
    t.login("bob");
    t.ok_accept("alice");
    t.link_accepted(1);
    let out = t.peer_hello(1, "alice");
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ToLink(1, l) if l.starts_with("ERR encryption-required"))),
        "{out:?}"
    );
    assert!(out.contains(&Output::CloseLink(1)));
    assert!(any_contains(&printed(&out), "--allow-plaintext-links"));
    // The token is untouched: the encrypted hello still works.
    t.linked_in_encrypted(2);
}

#[test]
fn plain_text_needs_exactly_one_link() {
    let mut t = T::linked_in("bob", "alice", 1);
    t.ok_accept("carol");
    t.link_accepted(2);
    t.peer_hello(2, "carol");
    let out = t.typed("hello?");
    assert!(!out.iter().any(|o| matches!(o, Output::ToLink(..))));
    assert!(any_contains(&printed(&out), "/msg <user> <text>"));
    assert!(t
        .typed("/msg carol hi")
        .contains(&Output::ToLink(2, "MSG hi".into())));
    let peers = printed(&t.typed("/peers")).join("\n");
    assert!(peers.contains("alice") && peers.contains("carol") && peers.contains("linked"));
}

// ---- leaving ------------------------------------------------------------------------

#[test]
fn end_of_input_waits_for_replies_then_exits_0() {
    let mut t = T::new();
    t.typed("/login alice pw");
    t.typed("/list");
    assert_eq!(exits(&t.input(Input::StdinEnd)), None);
    assert_eq!(exits(&t.server(&format!("OK LOGIN alice {TOKEN}"))), None);
    assert_eq!(exits(&t.server("OK LIST 0")), Some(0));
}

#[test]
fn end_of_input_wait_is_bounded() {
    let mut t = T::new();
    t.typed("/list");
    t.input(Input::StdinEnd);
    assert_eq!(exits(&t.advance(EOF_WAIT - Duration::from_millis(1))), None);
    let out = t.advance(Duration::from_millis(1));
    assert_eq!(exits(&out), Some(0));
    assert!(any_contains(&printed(&out), "stopped waiting for 1"));
}

#[test]
fn end_of_input_says_bye_on_open_links() {
    let mut t = T::linked_in("bob", "alice", 1);
    let out = t.input(Input::StdinEnd);
    assert!(out.contains(&Output::ToLink(1, "BYE".into())));
    assert_eq!(exits(&out), Some(0));
}

#[test]
fn quit_waits_for_ok_quit() {
    let mut t = T::logged_in("alice");
    let out = t.typed("/quit");
    assert_eq!(to_server(&out), vec!["QUIT"]);
    assert_eq!(exits(&out), None);
    assert_eq!(exits(&t.server("OK QUIT")), Some(0));

    let mut t = T::logged_in("alice");
    t.typed("/quit");
    assert_eq!(exits(&t.advance(QUIT_WAIT)), Some(0));
}

#[test]
fn losing_the_server_keeps_links_running() {
    let mut t = T::linked_in("bob", "alice", 1);
    let out = t.input(Input::ServerClosed);
    assert_eq!(exits(&out), None);
    assert!(any_contains(
        &printed(&out),
        "direct links keep working (alice)"
    ));
    assert!(any_contains(
        &printed(&t.link(1, "MSG still")),
        "<alice> still"
    ));
    assert!(t
        .typed("/msg alice yes")
        .contains(&Output::ToLink(1, "MSG yes".into())));
    assert!(any_contains(
        &printed(&t.typed("/list")),
        "not connected to the server"
    ));
    // No pings without a server.
    assert!(datagrams(&t.advance(PING_EVERY * 2)).is_empty());
    let out = t.input(Input::LinkClosed { link: 1 });
    assert!(any_contains(&printed(&out), "link with alice was lost"));
    // Still trying to get the server back: nothing to exit for.
    assert_eq!(exits(&out), None);
}

#[test]
fn a_replaced_session_without_links_does_not_reconnect_and_exits_1() {
    let mut t = T::logged_in("bob");
    t.server("EVENT CLOSING replaced you logged in from another connection");
    let out = t.input(Input::ServerClosed);
    assert_eq!(exits(&out), Some(1), "{out:?}");
    assert!(!out.contains(&Output::ConnectServer));
}

// ---- reconnect and liveness ---------------------------------------------------

fn connects(out: &[Output]) -> usize {
    out.iter().filter(|o| **o == Output::ConnectServer).count()
}

const TOKEN2: &str = "ffeeddccbbaa99887766554433221100";

#[test]
fn reconnect_backs_off_with_jitter_then_logs_in_again_and_keeps_links() {
    let mut t = T::linked_in("bob", "alice", 1);
    let mut expected = crate::client::reconnect::Backoff::new(7);
    let d0 = expected.next_delay();
    let out = t.input(Input::ServerClosed);
    let lines = printed(&out);
    assert_eq!(
        lines.len(),
        1,
        "one line when the server is lost: {lines:?}"
    );
    assert!(
        lines[0].contains("direct links keep working (alice)")
            && lines[0].contains(&format!("reconnecting in {:.1} s", d0.as_secs_f64())),
        "{lines:?}"
    );
    assert_eq!(connects(&t.advance(d0 - Duration::from_millis(1))), 0);
    assert_eq!(connects(&t.advance(Duration::from_millis(1))), 1);
    // The attempt fails: quietly wait one step longer.
    let d1 = expected.next_delay();
    assert!(d1 > d0 / 2 && d1 <= 2 * crate::client::reconnect::MIN_DELAY);
    let out = t.input(Input::ServerClosed);
    assert!(printed(&out).is_empty(), "{out:?}");
    assert_eq!(connects(&t.advance(d1 - Duration::from_millis(1))), 0);
    assert_eq!(connects(&t.advance(Duration::from_millis(1))), 1);
    // Connected: log in again by itself; the greeting is not shown.
    let out = t.input(Input::ServerConnected);
    assert_eq!(to_server(&out), vec!["LOGIN bob pw"]);
    assert!(printed(&t.server("EVENT WELCOME hello")).is_empty());
    let out = t.server(&format!("OK LOGIN bob {TOKEN2}"));
    let lines = printed(&out);
    assert_eq!(lines.len(), 1, "one line when it is back: {lines:?}");
    assert!(
        lines[0].contains("logged in again as bob") && lines[0].contains("links kept (alice)"),
        "{lines:?}"
    );
    assert_eq!(to_server(&out), vec!["WATCH +alice"], "watches re-sent");
    assert_eq!(datagrams(&out), vec![format!("REGISTER {TOKEN2}")]);
    assert!(any_contains(
        &printed(&t.link(1, "MSG still here")),
        "<alice> still here"
    ));
    // The backoff starts afresh after a success.
    t.server("OK WATCH 1");
    let out = t.input(Input::ServerClosed);
    assert!(printed(&out)[0].contains("reconnecting in"), "{out:?}");
    assert_eq!(connects(&t.advance(crate::client::reconnect::MIN_DELAY)), 1);
}

#[test]
fn reconnect_delays_grow_to_a_minute_and_no_further() {
    let mut t = T::logged_in("bob");
    t.input(Input::ServerClosed);
    let mut b = crate::client::reconnect::Backoff::new(7);
    for attempt in 0..12 {
        let d = b.next_delay();
        assert_eq!(connects(&t.advance(d)), 1, "attempt {attempt}");
        t.input(Input::ServerClosed);
    }
    // Past the cap, every wait is at most 60 s.
    assert_eq!(connects(&t.advance(crate::client::reconnect::MAX_DELAY)), 1);
}

#[test]
fn reconnect_command_tries_at_once() {
    let mut t = T::logged_in("bob");
    let out = t.typed("/reconnect");
    assert!(
        out.contains(&Output::DropServer) && connects(&out) == 1,
        "{out:?}"
    );
    assert!(any_contains(&printed(&out), "reconnecting now"));
    // While connecting, a second one is refused politely.
    assert!(any_contains(
        &printed(&t.typed("/reconnect")),
        "already reconnecting"
    ));
    // A connect that hangs is given up after CONNECT_TIMEOUT.
    let out = t.advance(CONNECT_TIMEOUT);
    assert!(out.contains(&Output::DropServer), "{out:?}");
    // While waiting, /reconnect skips the wait.
    assert_eq!(connects(&t.typed("/reconnect")), 1);
}

#[test]
fn a_silent_server_is_pinged_then_declared_dead_within_a_minute() {
    use crate::client::reconnect::{PING_DEADLINE, PING_IDLE};
    let mut t = T::logged_in("bob");
    let out = t.advance(PING_IDLE);
    assert_eq!(to_server(&out), vec!["PING"]);
    // An answer keeps it alive, and is not shown.
    assert!(printed(&t.server("OK PING")).is_empty());
    assert!(to_server(&t.advance(PING_IDLE - Duration::from_secs(1))).is_empty());
    assert_eq!(to_server(&t.advance(Duration::from_secs(1))), vec!["PING"]);
    let out = t.advance(PING_DEADLINE);
    assert!(out.contains(&Output::DropServer), "{out:?}");
    assert!(any_contains(&printed(&out), "stopped answering"));
    assert!(PING_IDLE + PING_DEADLINE <= Duration::from_secs(60));
    // A pending login (a hash may be queued for long) is not a dead server.
    let mut t = T::new();
    t.typed("/login bob pw");
    let out = t.advance(PING_IDLE + PING_DEADLINE);
    assert!(
        to_server(&out).is_empty() && !out.contains(&Output::DropServer),
        "{out:?}"
    );
}

#[test]
fn an_unknown_token_error_in_answer_to_our_ping_reconnects() {
    let mut t = T::logged_in("bob");
    // Unsolicited: ignored (anyone can send a datagram claiming the server's address).
    assert!(!t.udp("ERR unknown-token").contains(&Output::DropServer));
    assert_eq!(
        datagrams(&t.advance(PING_EVERY)),
        vec![format!("PING {TOKEN}")]
    );
    let out = t.udp("ERR unknown-token");
    assert!(out.contains(&Output::DropServer), "{out:?}");
    assert!(any_contains(&printed(&out), "no longer knows this session"));
}

// ---- exit statuses, --stay, --count, --timeout ---------------------------------

#[test]
fn a_refused_login_without_a_terminal_exits_3_at_the_end() {
    let mut t = T::new();
    t.typed("/login alice bad");
    t.server("ERR bad-credentials wrong username or password");
    assert_eq!(exits(&t.input(Input::StdinEnd)), Some(EXIT_REFUSED));
    // A later success clears it.
    let mut t = T::new();
    t.typed("/signup alice pw pw");
    t.server("ERR user-exists that username is taken");
    t.login("alice");
    assert_eq!(exits(&t.input(Input::StdinEnd)), Some(0));
    // On a terminal, a person saw it: 0.
    let mut t = T::with(Config {
        interactive: true,
        ..config()
    });
    t.typed("/login alice bad");
    t.server("ERR bad-credentials wrong username or password");
    assert_eq!(exits(&t.input(Input::StdinEnd)), Some(0));
}

#[test]
fn a_refused_user_flag_login_exits_3_at_once() {
    let mut t = T::with(Config {
        auto_login: Some(("alice".into(), "bad".into())),
        ..config()
    });
    let out = t.server("ERR bad-credentials wrong username or password");
    assert_eq!(exits(&out), Some(EXIT_REFUSED));
}

#[test]
fn stay_keeps_running_until_count_messages() {
    let mut t = T::with(Config {
        stay: true,
        count: Some(2),
        ..config()
    });
    t.login("bob");
    t.ok_accept("alice");
    t.link_accepted(1);
    t.peer_hello(1, "alice");
    t.server("OK WATCH 1");
    assert_eq!(exits(&t.input(Input::StdinEnd)), None);
    assert_eq!(exits(&t.advance(EOF_WAIT * 3)), None);
    assert_eq!(exits(&t.link(1, "MSG one")), None);
    let out = t.udp("BCAST 9 carol 1700000000 two");
    assert_eq!(exits(&out), Some(0));
}

#[test]
fn timeout_exits_5() {
    let mut t = T::with(Config {
        stay: true,
        timeout: Some(Duration::from_secs(5)),
        ..config()
    });
    t.login("bob");
    t.input(Input::StdinEnd);
    assert_eq!(exits(&t.advance(Duration::from_millis(4999))), None);
    assert_eq!(
        exits(&t.advance(Duration::from_millis(1))),
        Some(EXIT_TIMEOUT)
    );
}

// ---- presence --------------------------------------------------------------------

#[test]
fn watch_prints_changes_only_and_survives_a_reconnect() {
    let mut t = T::logged_in("bob");
    assert_eq!(to_server(&t.typed("/watch carol")), vec!["WATCH +carol"]);
    assert!(any_contains(
        &printed(&t.server("OK WATCH 1")),
        "watching 1 user(s)"
    ));
    let out = t.server("EVENT ONLINE carol 192.0.2.7");
    assert_eq!(printed(&out), vec!["[event] carol is online (192.0.2.7)"]);
    assert!(printed(&t.server("EVENT ONLINE carol 192.0.2.7")).is_empty());
    assert_eq!(
        printed(&t.server("EVENT OFFLINE carol")),
        vec!["[event] carol is offline"]
    );
    assert!(
        printed(&t.server("EVENT ONLINE dave 192.0.2.8")).is_empty(),
        "not watched"
    );
    // Re-sent after a reconnect's login.
    t.input(Input::ServerClosed);
    t.typed("/reconnect");
    t.input(Input::ServerConnected);
    let out = t.server(&format!("OK LOGIN bob {TOKEN2}"));
    assert_eq!(to_server(&out), vec!["WATCH +carol"]);
    t.server("OK WATCH 1");
    assert_eq!(to_server(&t.typed("/unwatch carol")), vec!["WATCH -carol"]);
    t.server("OK WATCH 0");
    assert!(printed(&t.server("EVENT ONLINE carol 192.0.2.7")).is_empty());
    assert!(any_contains(
        &printed(&t.typed("/unwatch carol")),
        "not watching carol"
    ));
}

// ---- sealed datagrams (a TLS session) --------------------------------------------

mod sealed_udp {
    use super::*;
    use crate::proto::sealed::{self, Channel, Role, UdpSecret, MARKER, MIN_REGISTER};

    const SECRET: [u8; 32] = [9; 32];

    /// Logged in over "TLS" (the secret given as the driver would), and the
    /// server's end of the sealed channel.
    fn tls_login(user: &str) -> (T, Channel, Vec<Output>) {
        let mut t = T::new();
        t.input(Input::UdpSecret(UdpSecret::from_bytes(SECRET)));
        let out = t.login(user);
        let server = Channel::new(&UdpSecret::from_bytes(SECRET), Role::Server);
        (t, server, out)
    }

    /// Opens every datagram in `out` as the server would.
    fn opened(server: &mut Channel, out: &[Output]) -> Vec<String> {
        raw_datagrams(out)
            .iter()
            .map(|d| {
                assert_eq!(d[0], MARKER, "not sealed: {d:?}");
                let body = server.open(d).expect("opens with the session's key");
                String::from_utf8(sealed::unpad(&body).to_vec()).unwrap()
            })
            .collect()
    }

    fn sealed_udp(t: &mut T, server: &mut Channel, text: &str) -> Vec<Output> {
        let d = server.seal(text.as_bytes()).unwrap();
        t.input(Input::Datagram {
            from: server_addr(),
            bytes: d,
        })
    }

    #[test]
    fn a_tls_session_registers_acks_and_pings_sealed_without_its_token() {
        let (mut t, mut server, out) = tls_login("alice");
        let regs = raw_datagrams(&out);
        assert_eq!(regs.len(), 1);
        assert!(regs[0].len() >= MIN_REGISTER, "padded: {}", regs[0].len());
        assert_eq!(opened(&mut server, &out), vec!["REGISTER"]);
        let cookie = "0123456789abcdef01234567";
        let out = sealed_udp(&mut t, &mut server, &format!("CHALLENGE {cookie}"));
        assert_eq!(
            opened(&mut server, &out),
            vec![format!("REGISTER {cookie}")]
        );
        assert!(sealed_udp(&mut t, &mut server, "OK REGISTER").is_empty());
        let out = sealed_udp(&mut t, &mut server, "BCAST 7 bob 1700000000 secret plans");
        assert_eq!(opened(&mut server, &out), vec!["ACK 7"]);
        assert_eq!(printed(&out), vec!["[broadcast] <bob> secret plans"]);
        let all: Vec<Output> = [out, t.advance(PING_EVERY)].concat();
        for d in raw_datagrams(&all) {
            let hex = TOKEN.as_bytes();
            assert!(!d.windows(hex.len()).any(|w| w.eq_ignore_ascii_case(hex)));
            let bin = hex::decode(TOKEN).unwrap();
            assert!(!d.windows(bin.len()).any(|w| w == bin.as_slice()));
        }
        assert_eq!(opened(&mut server, &t.advance(PING_EVERY)), vec!["PING"]);
    }

    #[test]
    fn plaintext_forged_and_replayed_datagrams_are_dropped() {
        let (mut t, mut server, _) = tls_login("alice");
        sealed_udp(&mut t, &mut server, "OK REGISTER");
        // In clear, from the server's address: ignored (a spoofer's BCAST).
        let out = t.udp("BCAST 1 mallory 1700000000 in clear");
        assert!(out.is_empty(), "{out:?}");
        // Sealed under another key, with the right session id.
        let mut other = Channel::new(&UdpSecret::from_bytes([8; 32]), Role::Server);
        let mut forged = other.seal(b"BCAST 2 mallory 1700000000 forged").unwrap();
        forged[1..9].copy_from_slice(&server.id().0);
        let out = t.input(Input::Datagram {
            from: server_addr(),
            bytes: forged,
        });
        assert!(out.is_empty(), "{out:?}");
        // A real one, altered in one byte.
        let real = server.seal(b"BCAST 3 bob 1700000000 real").unwrap();
        let mut tampered = real.clone();
        tampered[20] ^= 1;
        let out = t.input(Input::Datagram {
            from: server_addr(),
            bytes: tampered,
        });
        assert!(out.is_empty(), "{out:?}");
        // The real one is shown and ACKed once; its replay is dropped whole.
        let d = Input::Datagram {
            from: server_addr(),
            bytes: real,
        };
        let out = t.input(d.clone());
        assert_eq!(opened(&mut server, &out), vec!["ACK 3"]);
        assert!(t.input(d).is_empty());
    }
}

#[test]
fn passwd_is_sent_and_later_relogins_use_the_new_password() {
    let mut t = T::logged_in("bob");
    assert_eq!(
        to_server(&t.typed("/passwd pw new1 new1")),
        vec!["PASSWD pw new1 new1"]
    );
    assert!(any_contains(
        &printed(&t.server("OK PASSWD")),
        "password changed"
    ));
    // A reconnect logs in with the new password.
    t.typed("/reconnect");
    let out = t.input(Input::ServerConnected);
    assert_eq!(to_server(&out), vec!["LOGIN bob new1"]);
}

#[test]
fn with_reauth_prompt_a_reconnect_asks_for_the_password_on_a_terminal() {
    let mut t = T::with(Config {
        interactive: true,
        reauth_prompt: true,
        ..config()
    });
    t.login("bob");
    t.udp("OK REGISTER");
    t.typed("/reconnect");
    let out = t.input(Input::ServerConnected);
    assert!(
        to_server(&out).is_empty(),
        "nothing sent before the answer: {out:?}"
    );
    assert!(
        out.contains(&Output::Echo(false)) && out.contains(&Output::Prompt("password: ".into()))
    );
    let out = t.typed("typed-pw");
    assert_eq!(to_server(&out), vec!["LOGIN bob typed-pw"]);
    let out = t.server(&format!("OK LOGIN bob {TOKEN2}"));
    assert!(
        any_contains(&printed(&out), "logged in again as bob"),
        "{out:?}"
    );
}

// ---- reverse connections (src/client/reverse.rs) --------------------------

fn dials(out: &[Output]) -> Vec<(String, SocketAddr, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Dial { user, addr, token } => {
                Some((user.clone(), *addr, token.expose().to_string()))
            }
            _ => None,
        })
        .collect()
}

/// `bob` accepted `alice`, who named her listen port: the server says where
/// to dial her back.
fn accepted_with_dialback() -> T {
    let mut t = T::logged_in("bob");
    t.server("EVENT REQUEST alice 127.0.0.1");
    t.typed("/accept alice");
    t.ok_accept("alice");
    let out = t.server("EVENT DIALBACK alice 127.0.0.1:50000");
    assert!(dials(&out).is_empty(), "not at once: {out:?}");
    t
}

#[test]
fn the_acceptor_dials_back_as_the_initiator_when_not_reached() {
    let mut t = accepted_with_dialback();
    let out = t.advance(reverse::DIALBACK_DELAY);
    assert_eq!(
        dials(&out),
        vec![("alice".into(), peer_addr(), P2P.into())],
        "{out:?}"
    );
    // The dial-back's hello is bob → alice: alice (who holds the token from
    // EVENT PEER) answers it as the listener; the link comes up named alice.
    let out = t.dialed(4, "alice");
    t.answered_as("alice", "bob", 4, &out);
}

#[test]
fn no_dialback_once_the_requester_got_through() {
    let mut t = accepted_with_dialback();
    t.linked_in_encrypted(3);
    let out = t.advance(reverse::DIALBACK_WAIT);
    assert!(dials(&out).is_empty(), "{out:?}");
}

#[test]
fn a_failed_dialback_says_there_is_no_direct_path() {
    let mut t = accepted_with_dialback();
    t.advance(reverse::DIALBACK_DELAY);
    let out = t.input(Input::DialFailed {
        user: "alice".into(),
        reason: "connection refused".into(),
    });
    let p = printed(&out);
    assert!(any_contains(&p, "no direct path to alice"), "{p:?}");
    assert!(any_contains(&p, "--listen-port"), "{p:?}");
}

#[test]
fn the_requester_names_its_port_and_takes_the_dialback() {
    let mut t = T::logged_in("alice");
    assert_eq!(to_server(&t.typed("/connect bob")), ["CONNECT bob 7777"]);
    t.server("OK CONNECT bob");
    t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    let out = t.input(Input::DialFailed {
        user: "bob".into(),
        reason: "connection refused".into(),
    });
    assert!(
        any_contains(&printed(&out), "waiting for bob to dial back"),
        "{out:?}"
    );
    // Bob dials back: his hello authenticates with the token from EVENT PEER.
    let (mut bob, hello) = LinkWire::dial(P2P, "bob", "alice");
    t.link_accepted(6);
    let out = t.link_bytes(6, &hello);
    assert_eq!(
        wire_events(&mut bob, &bytes_to(&out, 6)),
        vec![WireEvent::Secured]
    );
    let out = t.link_bytes(6, &bob.seal("PEER bob").unwrap());
    assert!(
        any_contains(&printed(&out), "bob connected; direct link is up"),
        "{out:?}"
    );
    // Linked: the token is spent and the wait is over (no "no direct path").
    let out = t.advance(reverse::DIALBACK_WAIT);
    assert!(!any_contains(&printed(&out), "no direct path"), "{out:?}");
}

#[test]
fn a_dialback_that_never_comes_says_there_is_no_direct_path_once() {
    let mut t = T::logged_in("alice");
    t.typed("/connect bob");
    t.server("OK CONNECT bob");
    t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    t.input(Input::DialFailed {
        user: "bob".into(),
        reason: "connection refused".into(),
    });
    let out = t.advance(reverse::DIALBACK_WAIT);
    let p = printed(&out);
    assert_eq!(
        p.iter()
            .filter(|l| l.contains("no direct path to bob"))
            .count(),
        1,
        "{p:?}"
    );
    // A hello arriving after that is refused: the token is gone.
    let (_, hello) = LinkWire::dial(P2P, "bob", "alice");
    t.link_accepted(7);
    let out = t.link_bytes(7, &hello);
    assert!(!any_contains(&printed(&out), "is up"), "{out:?}");
}

// ---- session resumption tickets ----------------------------------------------------

mod tickets {
    use super::*;

    const T1: &str = "01000000010000000000000001000000006553f100aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const T2: &str = "01000000010000000000000002000000006553f100bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    /// 1_700_000_000 + 30 min: the session's re-login deadline.
    const EXPIRES: u64 = 1_700_001_800;

    /// Logged in as bob by password against a server that gives tickets.
    fn logged_in_with_ticket() -> T {
        let mut t = T::new();
        t.typed("/login bob pw");
        let out = t.server_raw(&format!("OK LOGIN bob {TOKEN}"));
        assert_eq!(to_server(&out), vec!["TICKET"], "a ticket is asked for");
        let out = t.server_raw(&format!("OK TICKET {T1} expires={EXPIRES}"));
        assert!(
            printed(&out).is_empty(),
            "the ticket is never shown: {out:?}"
        );
        t
    }

    /// Loses the server and reconnects after the first backoff step.
    fn reconnect(t: &mut T) -> Vec<Output> {
        t.input(Input::ServerClosed);
        let mut out = Vec::new();
        for _ in 0..70 {
            out = t.advance(Duration::from_secs(1));
            if connects(&out) == 1 {
                break;
            }
        }
        assert_eq!(connects(&out), 1, "reconnects within a minute");
        t.input(Input::ServerConnected)
    }

    #[test]
    fn a_reconnect_resumes_with_the_ticket_and_keeps_the_fresh_one() {
        let mut t = logged_in_with_ticket();
        let out = reconnect(&mut t);
        assert_eq!(to_server(&out), vec![format!("RESUME bob {T1}")]);
        let out = t.server_raw(&format!("OK RESUME bob {TOKEN2} {T2} expires={EXPIRES}"));
        assert!(
            any_contains(&printed(&out), "logged in again as bob"),
            "{out:?}"
        );
        // The new session's UDP token, and no TICKET: OK RESUME brought one.
        assert_eq!(datagrams(&out), vec![format!("REGISTER {TOKEN2}")]);
        assert!(to_server(&out).is_empty(), "{out:?}");
        // The next reconnect offers the fresh ticket, never the used one.
        let out = reconnect(&mut t);
        assert_eq!(to_server(&out), vec![format!("RESUME bob {T2}")]);
    }

    #[test]
    fn a_refused_ticket_falls_back_to_the_password_quietly() {
        let mut t = logged_in_with_ticket();
        let out = reconnect(&mut t);
        assert_eq!(to_server(&out), vec![format!("RESUME bob {T1}")]);
        let out = t.server_raw("ERR bad-ticket resumption ticket refused");
        assert_eq!(to_server(&out), vec!["LOGIN bob pw"]);
        assert!(printed(&out).is_empty(), "nothing to see: {out:?}");
        let out = t.server_raw(&format!("OK LOGIN bob {TOKEN2}"));
        assert!(any_contains(&printed(&out), "logged in again as bob"));
        assert_eq!(to_server(&out), vec!["TICKET"], "and a new ticket");
        // Not offered twice: without a new ticket the next reconnect uses the password.
        t.server_raw("ERR unknown-verb unknown command");
        let out = reconnect(&mut t);
        assert_eq!(to_server(&out), vec!["LOGIN bob pw"]);
    }

    #[test]
    fn an_expired_ticket_is_not_offered() {
        let mut t = logged_in_with_ticket();
        t.elapsed += Duration::from_secs(EXPIRES - 1_700_000_000);
        let out = reconnect(&mut t);
        assert_eq!(to_server(&out), vec!["LOGIN bob pw"]);
    }

    #[test]
    fn no_ticket_is_asked_for_in_clear_over_a_network() {
        let remote = Config {
            server: "192.0.2.7:4400".parse().unwrap(),
            ..config()
        };
        let mut t = T::with(remote.clone());
        t.typed("/login bob pw");
        let out = t.server_raw(&format!("OK LOGIN bob {TOKEN}"));
        assert!(
            to_server(&out).is_empty(),
            "plaintext to 192.0.2.7: {out:?}"
        );
        // Over TLS (the driver hands over the session's secret) it is.
        let mut t = T::with(remote);
        t.input(Input::UdpSecret(
            crate::proto::sealed::UdpSecret::from_bytes([3; 32]),
        ));
        t.typed("/login bob pw");
        let out = t.server_raw(&format!("OK LOGIN bob {TOKEN}"));
        assert_eq!(to_server(&out), vec!["TICKET"]);
    }
}

// ---- simultaneous open (src/client/punch.rs) ------------------------------

fn punches(out: &[Output]) -> Vec<(String, SocketAddr)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Punch { user, addr } => Some((user.clone(), *addr)),
            _ => None,
        })
        .collect()
}

fn nat_b() -> SocketAddr {
    "10.99.0.3:40001".parse().unwrap()
}

impl T {
    /// The punch attempt to `peer` is open as link `id`.
    fn punched(&mut self, id: LinkId, peer: &str) -> Vec<Output> {
        self.input(Input::Punched {
            link: id,
            user: peer.into(),
            addr: nat_b(),
        })
    }

    /// `bob` accepted `alice`, who named her port; the server synced both and
    /// says to punch in 20 ms (path round trip 10 ms).
    fn acceptor_told_to_punch() -> T {
        let mut t = accepted_with_dialback();
        let out = t.server("EVENT SYNC alice");
        assert_eq!(to_server(&out), ["SYNC alice"], "answered at once");
        let out = t.server("OK SYNC alice");
        assert!(printed(&out).is_empty(), "{out:?}");
        let out = t.server("EVENT PUNCH alice 10.99.0.3:40001 20 10");
        assert!(punches(&out).is_empty(), "not before the moment: {out:?}");
        let out = t.advance(Duration::from_millis(20));
        assert_eq!(punches(&out), vec![("alice".to_owned(), nat_b())]);
        t
    }
}

/// The requester sends the hello on a punched connection (it is the link's
/// initiator by role, though both sides connected), and the forward dial
/// still in its handshake is dropped once the punched link is up.
#[test]
fn the_requester_speaks_first_on_a_punched_link_and_keeps_only_it() {
    let mut t = T::logged_in("alice");
    t.typed("/connect bob");
    t.server("OK CONNECT bob");
    let out = t.server(&format!("EVENT PEER bob 127.0.0.1:50000 {P2P}"));
    assert_eq!(dials(&out).len(), 1);
    t.dialed(3, "bob"); // forward dial: its SYN is dropped by bob's NAT
    assert_eq!(to_server(&t.server("EVENT SYNC bob")), ["SYNC bob"]);
    t.server("OK SYNC bob");
    t.server("EVENT PUNCH bob 10.99.0.3:40001 0 10");
    let out = t.advance(Duration::ZERO);
    assert_eq!(punches(&out), vec![("bob".to_owned(), nat_b())]);
    let out = t.punched(9, "bob");
    let (_bob, out) = t.answered_as("bob", "alice", 9, &out);
    assert!(out.contains(&Output::CloseLink(3)), "{out:?}");
    // Nothing more is tried, and no failure line ever comes.
    let out = t.advance(reverse::LINK_WINDOW * 2);
    assert!(
        punches(&out).is_empty() && dials(&out).is_empty(),
        "{out:?}"
    );
    assert!(!any_contains(&printed(&out), "no direct path"), "{out:?}");
}

/// The acceptor answers the hello on its punched connection, as on an
/// incoming link; the dial-back is not needed and not made.
#[test]
fn the_acceptor_answers_on_a_punched_link_and_does_not_dial_back() {
    let mut t = T::acceptor_told_to_punch();
    let out = t.punched(9, "alice");
    assert!(bytes_to(&out, 9).is_empty(), "the acceptor waits: {out:?}");
    let (mut alice, hello) = LinkWire::dial(P2P, "alice", "bob");
    let out = t.link_bytes(9, &hello);
    assert_eq!(
        wire_events(&mut alice, &bytes_to(&out, 9)),
        vec![WireEvent::Secured]
    );
    let out = t.link_bytes(9, &alice.seal("PEER alice").unwrap());
    assert!(
        any_contains(&printed(&out), "alice connected; direct link is up"),
        "{out:?}"
    );
    let out = t.advance(reverse::DIALBACK_DELAY * 2);
    assert!(dials(&out).is_empty(), "{out:?}");
}

/// On a punched connection only the introduced user, in its role, links:
/// a hello made for another pair of names (or the reflected direction) is
/// refused, and the punch goes on.
#[test]
fn a_punched_connection_never_links_a_wrong_peer() {
    for (from, to) in [("carol", "bob"), ("bob", "alice")] {
        let mut t = T::acceptor_told_to_punch();
        t.punched(9, "alice");
        let (_, hello) = LinkWire::dial(P2P, from, to);
        let out = t.link_bytes(9, &hello);
        assert!(!any_contains(&printed(&out), "is up"), "{out:?}");
        assert!(out.contains(&Output::CloseLink(9)), "{from}→{to}: {out:?}");
    }
}

/// The dial-back is timed from the round trips the server measured: the
/// punch moment, two path round trips and a grace; not a fixed second.
#[test]
fn the_dialback_waits_for_the_punch_moment_plus_round_trips() {
    let mut t = T::acceptor_told_to_punch(); // 20 ms in, rtt 10 ms
    let due = Duration::from_millis(20) + reverse::DIALBACK_GRACE;
    // The punch is in flight but silent (its SYN not answered yet).
    t.punched(9, "alice");
    let out = t.advance(due - Duration::from_millis(1));
    assert!(dials(&out).is_empty(), "{out:?}");
    let out = t.advance(Duration::from_millis(1));
    assert_eq!(
        dials(&out),
        vec![("alice".into(), peer_addr(), P2P.into())],
        "{out:?}"
    );
}

/// Refused punch attempts are retried quietly within the window; when the
/// punch and the dial-back both failed, the no-path line comes once.
#[test]
fn when_punch_and_dialback_fail_no_path_is_said_once() {
    let mut t = T::acceptor_told_to_punch();
    let mut all = Vec::new();
    let mut attempts = 1;
    let mut link = 20;
    t.punched(link, "alice");
    for _ in 0..200 {
        // Each attempt is refused at once (RST).
        let out = t.input(Input::LinkClosed { link });
        let last = attempts == punch::MAX_ATTEMPTS;
        assert!(
            last || printed(&out).is_empty(),
            "retries are quiet: {out:?}"
        );
        all.extend(out);
        let out = t.advance(punch::RETRY_GAP);
        for d in dials(&out) {
            // The dial-back fails too.
            all.extend(t.input(Input::DialFailed {
                user: d.0,
                reason: "refused".into(),
            }));
        }
        let again = !punches(&out).is_empty();
        all.extend(out);
        if !again {
            break;
        }
        attempts += 1;
        link += 1;
        t.punched(link, "alice");
    }
    assert_eq!(attempts, punch::MAX_ATTEMPTS, "bounded attempts");
    all.extend(t.advance(reverse::LINK_WINDOW));
    let p = printed(&all);
    assert_eq!(
        p.iter()
            .filter(|l| l.contains("no direct path to alice"))
            .count(),
        1,
        "{p:?}"
    );
}

/// Attempts that never connect (SYNs dropped) are cut at the attempt bound
/// and the introduction's window ends everything with the one line.
#[test]
fn silent_attempts_are_bounded_by_the_window() {
    let mut t = T::acceptor_told_to_punch();
    t.punched(30, "alice");
    let out = t.advance(punch::ATTEMPT_TIMEOUT);
    assert!(out.contains(&Output::CloseLink(30)), "{out:?}");
    let mut all = t.advance(punch::RETRY_GAP);
    let mut link = 31;
    while !punches(&all).is_empty() {
        t.punched(link, "alice");
        link += 1;
        all = t.advance(punch::ATTEMPT_TIMEOUT + punch::RETRY_GAP);
    }
    let rest = t.advance(reverse::LINK_WINDOW);
    let p: Vec<String> = printed(&all).into_iter().chain(printed(&rest)).collect();
    assert!(any_contains(&p, "no direct path to alice"), "{p:?}");
}
