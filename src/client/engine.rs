//! The client's pure core. The driver feeds it `(now, input)` — a typed line,
//! a server line, a datagram, a link line, a closed socket — and drains its
//! outputs: lines to print, lines for the server or a peer, datagrams, links
//! to dial, and when to exit. It also answers "when do you next need me?"
//! ([`Engine::poll_timeout`]). It never touches a socket, a file or the clock,
//! so tests run it on a virtual clock.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::display::{self, Origin};
use super::input::{self, UserCommand, UserInput};
use super::links::{LinkId, LinkState, Links, Refusal, MAX_BAD_LINES, MAX_UNFINISHED_INCOMING};
use super::punch::{self, Punches};
use super::reconnect::{Backoff, Beat, ConnState, Heartbeat, HeldTicket};
use super::render::{Kind as ShownKind, Shown};
use super::reverse::{self, Reverse};
use crate::proto::link_noise::{self, LinkError, LinkWire, WireEvent};
use crate::proto::names::Token;
use crate::proto::sealed::{self, Channel, Role, UdpSecret};
use crate::proto::{
    CancelReason, ClientDatagram, CloseReason, Command, Cookie, ErrorCode, Event, Frame, LinkLine,
    OkReply, ServerDatagram, ServerLine, UdpRequest,
};

/// How long to wait for outstanding replies once input has ended.
pub const EOF_WAIT: Duration = Duration::from_secs(10);
/// How long `/quit` waits for `OK QUIT` before leaving anyway.
pub const QUIT_WAIT: Duration = Duration::from_secs(3);
/// Gap between `REGISTER` attempts until the server answers.
pub const REGISTER_RETRY: Duration = Duration::from_secs(1);
/// `REGISTER` attempts in a row before waiting a full ping interval.
pub const REGISTER_TRIES: u32 = 5;
/// Keep-alive for the UDP path (NAT mappings typically last 30 s or more).
pub const PING_EVERY: Duration = Duration::from_secs(25);
/// Broadcast ids remembered for duplicate suppression.
const DEDUP_CAP: usize = 4096;

/// A moment: the monotonic instant for timers, and the wall clock (unix
/// seconds) for the stamps shown next to messages.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The server's TCP address; its UDP port has the same number.
    pub server: SocketAddr,
    /// Where peers reach our listener (sent in `ACCEPT`).
    pub listen_port: u16,
    /// stdin is a terminal: `/login` and `/signup` alone may prompt.
    pub interactive: bool,
    /// Ask for the password on `EVENT REAUTH` instead of answering by itself.
    pub reauth_prompt: bool,
    /// Log in as this user at start (unattended use).
    pub auto_login: Option<(String, String)>,
    /// Local time zone offset for clock stamps, in seconds east of UTC.
    pub utc_offset: i64,
    /// Accept plaintext `PEER <user> <token>` links (`nc` users); otherwise
    /// they get `ERR encryption-required`. Our own dials are always encrypted.
    pub allow_plaintext_links: bool,
    /// Seeds the reconnect jitter (random in the driver, fixed in tests).
    pub seed: u64,
    /// At the end of input keep running (`--stay`, also implied by
    /// `--count`/`--timeout`).
    pub stay: bool,
    /// Exit 0 after this many incoming peer messages and broadcasts.
    pub count: Option<u64>,
    /// Exit 5 when this much time has passed since start.
    pub timeout: Option<Duration>,
}

/// Exit status: a login or signup was refused and stdin is not a terminal.
pub const EXIT_REFUSED: i32 = 3;
/// Exit status: `--timeout` passed before `--count` was reached.
pub const EXIT_TIMEOUT: i32 = 5;
/// How long a reconnect's TCP connect may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line (or a bad frame) from stdin.
    Stdin(Frame),
    StdinEnd,
    Server(Frame),
    /// The server connection (or a reconnect attempt) ended.
    ServerClosed,
    /// A reconnect asked for by [`Output::ConnectServer`] is open.
    ServerConnected,
    Datagram {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Our listener accepted a connection, registered as `link`.
    LinkAccepted {
        link: LinkId,
        addr: SocketAddr,
    },
    /// The driver opened the connection asked for by [`Output::Dial`].
    Dialed {
        link: LinkId,
        user: String,
        token: Token,
        addr: SocketAddr,
    },
    DialFailed {
        user: String,
        reason: String,
    },
    /// The driver opened the punch attempt asked for by [`Output::Punch`]
    /// (a connect in progress from our control connection's port).
    Punched {
        link: LinkId,
        user: String,
        addr: SocketAddr,
    },
    PunchFailed {
        user: String,
        reason: String,
    },
    /// Bytes received on a link (plaintext lines or encrypted frames).
    LinkBytes {
        link: LinkId,
        bytes: Vec<u8>,
    },
    LinkClosed {
        link: LinkId,
    },
    /// SIGINT/SIGTERM: leave like `/quit`.
    Interrupt,
    /// [`Engine::poll_timeout`] passed: run what is due.
    Timeout,
    /// The server connection is TLS and this is its exporter output for
    /// [`sealed::EXPORTER_LABEL`]: the session logged in on it seals its
    /// datagrams. Given before `LOGIN`, again after each reconnect.
    UdpSecret(UdpSecret),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A line for the user (formatted at the edge: plain, terminal or JSON).
    Show(Shown),
    /// Raw text for stdout, ending a line (after a hidden password).
    Print(String),
    /// A prompt for stdout, without a newline.
    Prompt(String),
    /// Terminal echo on or off (passwords).
    Echo(bool),
    ToServer(String),
    /// Open a new server connection, then report [`Input::ServerConnected`]
    /// or [`Input::ServerClosed`].
    ConnectServer,
    /// Drop the server connection without reporting it: the engine already
    /// treats it as lost (a missed heartbeat, `/reconnect`).
    DropServer,
    /// A line for a plaintext link (the driver adds `\n`).
    ToLink(LinkId, String),
    /// Bytes for a link as they are: encrypted hellos and frames.
    LinkBytes(LinkId, Vec<u8>),
    /// Close a link once its queued lines are written.
    CloseLink(LinkId),
    /// A datagram for the server's UDP port.
    Datagram(Vec<u8>),
    /// Open a TCP connection to a peer, then report [`Input::Dialed`].
    Dial {
        user: String,
        addr: SocketAddr,
        token: Token,
    },
    /// Open a TCP connection to `addr` from the server connection's local
    /// address and port (simultaneous open), then report [`Input::Punched`]
    /// or [`Input::PunchFailed`].
    Punch {
        user: String,
        addr: SocketAddr,
    },
    Exit(i32),
}

/// The user named by an `ACCEPT` command, if that is what `sent` was.
fn accept_user(sent: &Option<Sent>) -> Option<String> {
    match sent {
        Some(Sent {
            command: Command::Accept { user, .. },
            ..
        }) => Some(user.clone()),
        _ => None,
    }
}

/// A hello that arrived before the `OK ACCEPT` that may carry its token.
#[derive(Debug)]
enum Parked {
    /// `PEER <user> <token>`: waits for the reply to `ACCEPT <user>`.
    Plain { user: String, token: Token },
    /// An encrypted hello names nobody: waits for any `ACCEPT` reply.
    Noise(Vec<u8>),
}

/// An interactive question in progress; the next typed line answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prompt {
    SignupUser,
    SignupPassword { user: String },
    SignupAgain { user: String, password: String },
    LoginUser,
    LoginPassword { user: String, reauth: bool },
    PasswdOld,
    PasswdNew { old: String },
    PasswdAgain { old: String, new: String },
}

/// A command sent to the server and not yet answered. The server answers in
/// order, so the front of the queue owns the next final reply.
#[derive(Debug)]
struct Sent {
    command: Command,
    /// Sent by the client on its own (REAUTH answer), not typed.
    automatic: bool,
}

/// The UDP side: registration with retries, then keep-alive pings.
#[derive(Debug, Default)]
struct Udp {
    token: Option<Token>,
    /// A TLS session's keys: every datagram both ways is sealed, and the
    /// token is never sent on UDP.
    sealed: Option<Channel>,
    registered: bool,
    /// The server's last `CHALLENGE`: repeated in each `REGISTER` until
    /// `OK REGISTER` (a stale one just earns a fresh `CHALLENGE`).
    cookie: Option<Cookie>,
    /// A keep-alive `PING` is out and neither `PONG` nor an error came back.
    ping_unanswered: bool,
    tries: u32,
    due: Option<Instant>,
}

/// Broadcast ids already shown, bounded (oldest forgotten first).
#[derive(Debug, Default)]
struct Dedup {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Dedup {
    /// True the first time an id is seen.
    fn first_time(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > DEDUP_CAP {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

pub struct Engine {
    cfg: Config,
    out: VecDeque<Output>,
    /// The server connection: up, being re-made, waiting, or given up.
    conn: ConnState,
    backoff: Backoff,
    heartbeat: Heartbeat,
    /// Reconnected, and the automatic re-login has not been answered yet.
    rejoining: bool,
    /// The server said we were replaced or removed: reconnecting would fight.
    no_reconnect: bool,
    /// `/reconnect` on a live connection: the next attempt is immediate.
    reconnect_now: bool,
    /// The latest LOGIN/SIGNUP reply was a refusal (exit status 3).
    auth_refused: bool,
    /// Incoming peer messages and broadcasts shown, for `--count`.
    received: u64,
    /// `--timeout` ends the run at this moment.
    timeout_at: Option<Instant>,
    /// Wall clock of the latest input, for stamps.
    unix: u64,
    /// Monotonic time of the latest input: "due now" for
    /// [`Engine::poll_timeout`] while outputs wait.
    mono: Instant,
    /// Users whose presence we follow.
    watch: super::watch::WatchList,
    /// Users in the latest `LIST` answer (for Tab completion).
    last_list: Vec<String>,
    sent: VecDeque<Sent>,
    /// Our username once logged in; kept after the server is gone because
    /// links still introduce us by it.
    me: Option<String>,
    /// Credentials of the last successful login, for REAUTH (memory only).
    creds: Option<(String, String)>,
    /// The session resumption ticket (memory only, never shown or logged):
    /// a reconnect offers it before the password (`RESUME`).
    ticket: Option<HeldTicket>,
    list_rows: Vec<(String, IpAddr)>,
    /// Requests to us, waiting for /accept or /deny.
    incoming: BTreeMap<String, IpAddr>,
    /// Our requests, waiting for the other side.
    outgoing: BTreeSet<String>,
    links: Links,
    /// Reverse connections: dial-backs to make or to wait for.
    reverse: Reverse,
    /// Simultaneous opens (hole punching) scheduled by the server.
    punches: Punches,
    /// `PEER` hellos that arrived before the `OK ACCEPT` carrying their token:
    /// the server tells both sides at once, and the peer's connection can win
    /// the race against our server socket. Decided when the reply comes.
    parked_hellos: Vec<(LinkId, Parked)>,
    udp: Udp,
    /// The current server connection's TLS exporter secret, if it is TLS.
    udp_secret: Option<UdpSecret>,
    broadcasts: Dedup,
    prompt: Option<Prompt>,
    /// Input ended; leave once replies are in or at this deadline.
    eof_deadline: Option<Instant>,
    /// `/quit` sent; leave on `OK QUIT`, on close, or at this deadline.
    quit_deadline: Option<Instant>,
    done: bool,
}

impl Engine {
    /// An engine made at `now` (the caller's clock, as everywhere in the
    /// engine); [`Engine::start`] begins its work.
    pub fn new(cfg: Config, now: Now) -> Engine {
        Engine {
            out: VecDeque::new(),
            conn: ConnState::Up,
            backoff: Backoff::new(cfg.seed),
            heartbeat: Heartbeat::new(now.mono),
            rejoining: false,
            no_reconnect: false,
            reconnect_now: false,
            auth_refused: false,
            received: 0,
            timeout_at: None,
            unix: now.unix,
            mono: now.mono,
            watch: Default::default(),
            last_list: Vec::new(),
            sent: VecDeque::new(),
            me: None,
            creds: None,
            ticket: None,
            list_rows: Vec::new(),
            incoming: BTreeMap::new(),
            outgoing: BTreeSet::new(),
            links: Links::default(),
            reverse: Reverse::default(),
            punches: Punches::default(),
            parked_hellos: Vec::new(),
            udp: Udp::default(),
            udp_secret: None,
            broadcasts: Dedup::default(),
            prompt: None,
            eof_deadline: None,
            quit_deadline: None,
            done: false,
            cfg,
        }
    }

    fn server_up(&self) -> bool {
        self.conn == ConnState::Up
    }

    /// The greeting, and the unattended login if configured.
    pub fn start(&mut self, now: Now) {
        self.unix = now.unix;
        self.mono = now.mono;
        self.heartbeat = Heartbeat::new(now.mono);
        self.timeout_at = self.cfg.timeout.map(|d| now.mono + d);
        let server = self.cfg.server;
        let port = self.cfg.listen_port;
        self.say(
            Origin::Client,
            &format!("connected to the server at {server}; peers reach you on port {port}"),
        );
        if let Some((user, password)) = self.cfg.auto_login.clone() {
            self.say(Origin::Client, &format!("logging in as {user}"));
            self.send(Command::Login { user, password }, true);
        } else {
            let alone = if self.cfg.interactive {
                " (alone, they ask)"
            } else {
                ""
            };
            self.hint(&format!(
                "type /signup <user> <password> <password> or /login <user> <password>{alone}; \
                 /help lists every command"
            ));
        }
    }

    /// Names worth completing: users seen in the last `/list`, linked or
    /// asking peers, and watched users.
    pub fn known_users(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.last_list.iter().cloned().collect();
        names.extend(self.links.up_users());
        names.extend(self.incoming.keys().cloned());
        names.extend(self.outgoing.iter().cloned());
        names.extend(self.watch.names().map(str::to_owned));
        names.into_iter().collect()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The earliest moment [`Input::Timeout`] has work to do (the server
    /// engine's name for the same thing). While outputs wait it is the latest
    /// `now` it was given, a moment already passed, as the server engine's
    /// is: a driver that sleeps until this cannot leave an output behind.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(self.mono);
        }
        if self.done {
            return None;
        }
        let conn = match self.conn {
            ConnState::Up if self.heartbeat.ping_outstanding() || self.can_ping() => {
                Some(self.heartbeat.next_deadline())
            }
            ConnState::Up => None,
            ConnState::Connecting { since } => Some(since + CONNECT_TIMEOUT),
            ConnState::Waiting { until } => Some(until),
            ConnState::Off => None,
        };
        [
            self.udp.due,
            self.eof_deadline,
            self.quit_deadline,
            self.links.next_deadline(),
            conn,
            self.timeout_at,
            self.reverse.next_deadline(),
            self.punches.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle(&mut self, now: Now, input: Input) {
        if self.done {
            return;
        }
        self.unix = now.unix;
        self.mono = now.mono;
        match input {
            Input::Stdin(Frame::Line(line)) => self.on_typed(now, &line),
            Input::Stdin(_) => self.say(
                Origin::Client,
                "that line was too long (1024 bytes at most) or not UTF-8; ignored",
            ),
            Input::StdinEnd => {
                self.prompt = None;
                if !self.cfg.stay {
                    self.eof_deadline.get_or_insert(now.mono + EOF_WAIT);
                }
            }
            Input::Server(frame) => {
                self.heartbeat.heard(now.mono);
                match frame {
                    Frame::Line(line) => self.on_server_line(now, &line),
                    _ => self.say(Origin::Client, "ignored a malformed line from the server"),
                }
            }
            Input::ServerClosed => self.on_server_closed(now, None),
            Input::ServerConnected => self.on_server_connected(now),
            Input::Datagram { from, bytes } => self.on_datagram(now, from, &bytes),
            Input::LinkAccepted { link, addr } => self.on_link_accepted(now, link, addr),
            Input::Dialed {
                link,
                user,
                token,
                addr,
            } => {
                // Always encrypted: a peerline client never offers plaintext.
                let me = self.me.clone().unwrap_or_default();
                let (wire, hello) = LinkWire::dial(&token.expose().to_string(), &me, &user);
                self.links.add_dialed(link, &user, addr, wire, now.mono);
                self.out.push_back(Output::LinkBytes(link, hello));
            }
            Input::DialFailed { user, reason } => self.dial_failed(
                now,
                &user,
                &format!("could not connect to {user}: {reason}"),
            ),
            Input::Punched { link, user, addr } => self.on_punched(now, link, user, addr),
            Input::PunchFailed { user, reason } => {
                log::info!("punch to {user}: {reason}");
                self.punch_failed(now, &user);
            }
            Input::LinkBytes { link, bytes } => self.on_link_bytes(now, link, &bytes),
            Input::LinkClosed { link } => self.on_link_closed(now, link),
            Input::Interrupt => self.quit(now),
            Input::Timeout => return self.on_timeout(now),
            Input::UdpSecret(secret) => self.udp_secret = Some(secret),
        }
        self.check_done();
    }

    fn on_timeout(&mut self, now: Now) {
        if self.timeout_at.is_some_and(|t| t <= now.mono) {
            self.say(Origin::Client, "--timeout reached");
            return self.finish(EXIT_TIMEOUT);
        }
        self.conn_tick(now);
        if self.udp.due.is_some_and(|d| d <= now.mono) {
            self.udp_tick(now);
        }
        for id in self.links.expire(now.mono) {
            let who = self.links.get(id).and_then(|l| l.user().map(str::to_owned));
            match who {
                Some(user) => self.say(
                    Origin::Peer,
                    &format!("{user} did not answer the link handshake in time"),
                ),
                None => log::info!("incoming link {id} sent no PEER line in time; closed"),
            }
            self.close_link(id);
        }
        self.reverse_tick(now);
        self.punch_tick(now);
        if self.quit_deadline.is_some_and(|d| d <= now.mono) {
            return self.finish(0);
        }
        if self.eof_deadline.is_some_and(|d| d <= now.mono) {
            let n = self.sent.len();
            self.say(
                Origin::Client,
                &format!("end of input; stopped waiting for {n} reply(ies)"),
            );
            return self.finish(0);
        }
        self.check_done();
    }

    // ---- output helpers -------------------------------------------------

    fn say(&mut self, origin: Origin, text: &str) {
        let shown = Shown::note(origin, self.unix, text);
        self.out.push_back(Output::Show(shown));
    }

    /// Advice for a person at a terminal; scripts reading a pipe get none.
    fn hint(&mut self, text: &str) {
        if self.cfg.interactive {
            self.say(Origin::Client, text);
        }
    }

    fn show(&mut self, shown: Shown) {
        self.out.push_back(Output::Show(shown));
    }

    /// A peer message or broadcast arrived: counts towards `--count`.
    fn received_one(&mut self) {
        self.received += 1;
        if self.cfg.count.is_some_and(|n| self.received >= n) {
            self.finish(0);
        }
    }

    fn stamp(&self, unix: u64) -> String {
        display::clock(unix, self.cfg.utc_offset)
    }

    fn send(&mut self, command: Command, automatic: bool) {
        if !self.server_up() {
            let again = match self.conn {
                ConnState::Off => "",
                _ => "; reconnecting (/reconnect tries now)",
            };
            self.say(
                Origin::Client,
                &format!(
                    "not connected to the server; that needs it (direct links still work){again}"
                ),
            );
            return;
        }
        self.out.push_back(Output::ToServer(command.to_string()));
        self.sent.push_back(Sent { command, automatic });
    }

    /// Sends `req` to the server: sealed for a TLS session (a `REGISTER`
    /// padded, so the server may answer it), else in clear with the token.
    fn send_udp(&mut self, req: UdpRequest) {
        let bytes = match self.udp.sealed.as_mut() {
            Some(ch) => ch.seal_request(&req),
            None => self
                .udp
                .token
                .clone()
                .map(|t| ClientDatagram::new(t, req).wire()),
        };
        if let Some(b) = bytes {
            self.out.push_back(Output::Datagram(b));
        }
    }

    /// A line for a link: sealed on an encrypted one, as is on a plaintext one.
    fn send_link(&mut self, id: LinkId, line: &LinkLine) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let line = line.to_string();
        if !link.wire.is_encrypted() {
            self.out.push_back(Output::ToLink(id, line));
            return;
        }
        match link.wire.seal(&line) {
            Ok(bytes) => self.out.push_back(Output::LinkBytes(id, bytes)),
            Err(e) => self.say(Origin::Client, &format!("not sent: {e}")),
        }
    }

    fn close_link(&mut self, id: LinkId) {
        self.parked_hellos.retain(|(l, ..)| *l != id);
        if self.links.remove(id).is_some() {
            self.out.push_back(Output::CloseLink(id));
        }
    }

    /// Leaves: says goodbye on every link, then exits. A normal end (0) of a
    /// script whose latest login or signup was refused exits 3 instead.
    fn finish(&mut self, code: i32) {
        let code = if code == 0 && self.auth_refused && !self.cfg.interactive {
            EXIT_REFUSED
        } else {
            code
        };
        for id in self.links.ids() {
            if self.links.get(id).is_some_and(|l| l.is_up()) {
                self.send_link(id, &LinkLine::Bye);
            }
            self.close_link(id);
        }
        if self.prompt.take().is_some() {
            self.out.push_back(Output::Echo(true));
        }
        self.out.push_back(Output::Exit(code));
        self.done = true;
    }

    fn check_done(&mut self) {
        if self.done {
            return;
        }
        if self.quit_deadline.is_some() && !self.server_up() {
            return self.finish(0);
        }
        if self.eof_deadline.is_some() && self.sent.is_empty() && self.links.dialing() == 0 {
            return self.finish(0);
        }
        if self.conn == ConnState::Off && self.links.is_empty() {
            self.say(
                Origin::Client,
                "no server connection and no direct links left; exiting",
            );
            self.finish(if self.eof_deadline.is_some() { 0 } else { 1 });
        }
    }

    fn quit(&mut self, now: Now) {
        if self.server_up() && self.quit_deadline.is_none() {
            self.send(Command::Quit, false);
            self.quit_deadline = Some(now.mono + QUIT_WAIT);
        } else if !self.server_up() {
            self.finish(0);
        }
    }

    // ---- typed input ----------------------------------------------------

    fn on_typed(&mut self, now: Now, line: &str) {
        if let Some(prompt) = self.prompt.take() {
            return self.answer_prompt(prompt, line.trim());
        }
        match input::parse(line) {
            Ok(UserInput::Command(cmd)) => self.on_command(now, cmd),
            Ok(UserInput::Text(text)) => self.on_text(now, text),
            Err(e) => self.say(Origin::Client, &e.to_string()),
        }
    }

    fn on_text(&mut self, now: Now, text: String) {
        let up = self.links.up_users();
        match up.as_slice() {
            [user] => {
                let user = user.clone();
                self.on_command(now, UserCommand::Msg { user, text })
            }
            [] => self.say(
                Origin::Client,
                "not sent: no direct link is open (commands start with /; see /help)",
            ),
            _ => self.say(
                Origin::Client,
                &format!(
                    "not sent: several links are open ({}); use /msg <user> <text>",
                    up.join(", ")
                ),
            ),
        }
    }

    fn on_command(&mut self, now: Now, cmd: UserCommand) {
        match cmd {
            UserCommand::Help => {
                for l in input::help_lines(!self.cfg.reauth_prompt) {
                    self.say(Origin::Client, &l);
                }
            }
            UserCommand::Signup(Some((user, password, password_again))) => self.send(
                Command::Signup {
                    user,
                    password,
                    password_again,
                },
                false,
            ),
            UserCommand::Signup(None) => self.ask(Prompt::SignupUser, "signup"),
            UserCommand::Login(Some((user, password))) => {
                self.send(Command::Login { user, password }, false)
            }
            UserCommand::Login(None) => self.ask(Prompt::LoginUser, "login"),
            UserCommand::List => self.send(Command::List, false),
            UserCommand::Connect(target) => {
                // Our listen port: the acceptor may dial us back.
                let port = Some(self.cfg.listen_port).filter(|&p| p != 0);
                self.send(Command::Connect { target, port }, false)
            }
            UserCommand::Accept(user) => {
                let port = self.cfg.listen_port;
                self.send(Command::Accept { user, port }, false)
            }
            UserCommand::Deny(user) => self.send(Command::Deny { user }, false),
            UserCommand::Broadcast(text) => self.send(Command::Broadcast { text }, false),
            UserCommand::Ping => self.send(Command::Ping, false),
            UserCommand::Quit => self.quit(now),
            UserCommand::PasswdPrompt if self.me.is_none() => {
                self.say(Origin::Client, "not logged in; /login first, then /passwd")
            }
            UserCommand::PasswdPrompt => self.ask(Prompt::PasswdOld, "passwd"),
            UserCommand::Passwd { old, new, again } => self.send(
                Command::Passwd {
                    old,
                    new,
                    new_again: again,
                },
                false,
            ),
            UserCommand::Watch(user) => self.watch_command(user, true),
            UserCommand::Unwatch(user) => self.watch_command(user, false),
            UserCommand::Reconnect => self.reconnect_command(now),
            UserCommand::Peers => self.show_peers(now),
            UserCommand::Msg { user, text } => match self.links.find_up(&user) {
                Some(id) => {
                    self.send_link(id, &LinkLine::Msg { text: text.clone() });
                    self.show(Shown::of(ShownKind::Own, now.unix, &user, &text));
                }
                None => self.say(
                    Origin::Client,
                    &format!("no direct link with {user}; /connect {user} first (see /peers)"),
                ),
            },
            UserCommand::Bye(user) => match self.links.find_up(&user) {
                Some(id) => {
                    self.send_link(id, &LinkLine::Bye);
                    self.close_link(id);
                    self.say(Origin::Peer, &format!("closed the direct link with {user}"));
                }
                None => self.say(Origin::Client, &format!("no direct link with {user}")),
            },
        }
    }

    fn show_peers(&mut self, now: Now) {
        let mut rows: Vec<Vec<String>> = Vec::new();
        for (_, l) in self.links.all() {
            let (user, state) = match &l.state {
                LinkState::Up { user } if l.wire.is_encrypted() => {
                    (user.clone(), "linked (encrypted)")
                }
                LinkState::Up { user } => (user.clone(), "linked (plaintext)"),
                LinkState::AwaitWelcome { user } => (user.clone(), "connecting"),
                LinkState::AwaitHello | LinkState::AwaitConfirm { .. } => {
                    ("?".to_owned(), "handshaking")
                }
            };
            rows.push(vec![user, l.addr.to_string(), state.to_owned()]);
        }
        for (user, ip) in &self.incoming {
            rows.push(vec![
                user.clone(),
                ip.to_string(),
                "asks you (/accept or /deny)".to_owned(),
            ]);
        }
        for user in &self.outgoing {
            rows.push(vec![
                user.clone(),
                "-".to_owned(),
                "you asked; waiting".to_owned(),
            ]);
        }
        for user in self.links.awaiting(now.mono) {
            rows.push(vec![
                user.to_owned(),
                "-".to_owned(),
                "accepted; waiting for them to connect".to_owned(),
            ]);
        }
        if rows.is_empty() {
            return self.say(
                Origin::Client,
                "no direct links or pending requests (/connect <user> asks for one)",
            );
        }
        for l in display::table(&["PEER", "ADDRESS", "STATE"], &rows) {
            self.say(Origin::Client, &l);
        }
    }

    /// Starts an interactive question, or explains the one-line form.
    fn ask(&mut self, prompt: Prompt, command: &str) {
        if !self.cfg.interactive {
            let usage = input::usage_of(command);
            return self.say(
                Origin::Client,
                &format!("not on a terminal, so nothing to ask; use {usage}"),
            );
        }
        self.show_prompt(prompt);
    }

    fn show_prompt(&mut self, prompt: Prompt) {
        let (text, hidden) = match &prompt {
            Prompt::SignupUser | Prompt::LoginUser => ("username: ", false),
            Prompt::SignupPassword { .. } | Prompt::LoginPassword { .. } => ("password: ", true),
            Prompt::SignupAgain { .. } => ("password again: ", true),
            Prompt::PasswdOld => ("old password: ", true),
            Prompt::PasswdNew { .. } => ("new password: ", true),
            Prompt::PasswdAgain { .. } => ("new password again: ", true),
        };
        if hidden {
            self.out.push_back(Output::Echo(false));
        }
        self.out.push_back(Output::Prompt(text.to_owned()));
        self.prompt = Some(prompt);
    }

    fn answer_prompt(&mut self, prompt: Prompt, answer: &str) {
        let was_hidden = !matches!(prompt, Prompt::SignupUser | Prompt::LoginUser);
        if was_hidden {
            // The user's Enter was not echoed either: end the prompt's line.
            self.out.push_back(Output::Echo(true));
            self.out.push_back(Output::Print(String::new()));
        }
        let valid_user = crate::proto::names::is_valid_username(answer);
        let valid_password = crate::proto::names::is_valid_password(answer);
        match prompt {
            Prompt::SignupUser | Prompt::LoginUser if !valid_user => self.say(
                Origin::Client,
                "not a valid username (a letter, then letters, digits, _ . -)",
            ),
            Prompt::SignupUser => self.show_prompt(Prompt::SignupPassword {
                user: answer.to_owned(),
            }),
            Prompt::LoginUser => self.show_prompt(Prompt::LoginPassword {
                user: answer.to_owned(),
                reauth: false,
            }),
            _ if !valid_password => self.say(
                Origin::Client,
                "passwords are 1 to 128 characters without spaces",
            ),
            Prompt::SignupPassword { user } => self.show_prompt(Prompt::SignupAgain {
                user,
                password: answer.to_owned(),
            }),
            Prompt::SignupAgain { user, password } => self.send(
                Command::Signup {
                    user,
                    password,
                    password_again: answer.to_owned(),
                },
                false,
            ),
            Prompt::LoginPassword { user, reauth } => self.send(
                Command::Login {
                    user,
                    password: answer.to_owned(),
                },
                reauth,
            ),
            Prompt::PasswdOld => self.show_prompt(Prompt::PasswdNew {
                old: answer.to_owned(),
            }),
            Prompt::PasswdNew { old } => self.show_prompt(Prompt::PasswdAgain {
                old,
                new: answer.to_owned(),
            }),
            Prompt::PasswdAgain { old, new } => self.send(
                Command::Passwd {
                    old,
                    new,
                    new_again: answer.to_owned(),
                },
                false,
            ),
        }
    }

    // ---- the server connection -------------------------------------------

    fn on_server_line(&mut self, now: Now, raw: &str) {
        let Some(line) = ServerLine::parse(raw) else {
            // Unknown shapes are still shown (sanitized) rather than lost, and a
            // final reply we cannot parse still answers the oldest command.
            if raw.starts_with("OK ") || raw.starts_with("ERR ") {
                self.sent.pop_front();
            }
            return self.say(Origin::Server, &display::sanitize(raw));
        };
        match line {
            ServerLine::Ok(ok) => {
                let sent = self.sent.pop_front();
                let accepted = accept_user(&sent);
                self.on_ok(now, ok, sent);
                if let Some(user) = accepted {
                    self.unpark(now, &user);
                }
            }
            ServerLine::Err { code, text } => {
                let sent = self.sent.pop_front();
                if let Some(Sent {
                    command: Command::Ticket | Command::Resume { .. },
                    automatic: true,
                }) = &sent
                {
                    // Our own ticket business: fall back quietly.
                    log::info!(
                        "{} refused: {code}",
                        sent.as_ref().map_or("", |s| s.command.verb())
                    );
                    return self.on_ticket_refused(sent.as_ref());
                }
                let verb = sent.as_ref().map_or("command", |s| s.command.verb());
                let detail = display::sanitize(&text);
                let line = format!("{verb} failed: {} ({code}: {detail})", code.plain_words());
                self.show(Shown {
                    kind: ShownKind::Refused,
                    ..Shown::note(Origin::Server, self.unix, &line)
                });
                self.on_refused(sent.as_ref());
                if let Some(user) = accept_user(&sent) {
                    self.unpark(now, &user);
                }
            }
            ServerLine::Client { user, ip } => self.list_rows.push((user, ip)),
            ServerLine::Event(e) => self.on_event(now, e),
        }
    }

    fn on_ok(&mut self, now: Now, ok: OkReply, sent: Option<Sent>) {
        let text = match ok {
            OkReply::Signup { user } => {
                self.auth_refused = false;
                format!("account {user} created; now /login {user} <password>")
            }
            OkReply::Passwd => {
                self.remember_new_password(sent.as_ref());
                "password changed".to_owned()
            }
            OkReply::Ticket { ticket, expires } => {
                // Silent: nothing for the user to see (and never the ticket).
                if let Some(user) = self.me.clone() {
                    self.ticket = Some(HeldTicket {
                        user,
                        ticket,
                        expires,
                    });
                }
                return;
            }
            OkReply::Resume {
                user,
                token,
                ticket,
                expires,
            } => {
                self.ticket = Some(HeldTicket {
                    user: user.clone(),
                    ticket,
                    expires,
                });
                return self.on_ok(now, OkReply::Login { user, token }, sent);
            }
            OkReply::Login { user, token } => match self.logged_in(now, user, token, sent) {
                Some(text) => text,
                None => return,
            },
            OkReply::List { count } => return self.show_list(count),
            OkReply::Connect { user } => {
                self.outgoing.insert(user.clone());
                format!("asked {user} for a direct link; waiting for them to accept")
            }
            OkReply::Accept { user, token } => {
                self.incoming.remove(&user);
                self.links.issue(&user, token, now.mono);
                self.punches.introduced(&user, punch::Role::Acceptor);
                format!("accepted {user}; they will now connect to you directly")
            }
            OkReply::Deny { user } => {
                self.incoming.remove(&user);
                format!("turned down {user}'s request")
            }
            OkReply::Broadcast {
                id,
                reached,
                pending,
                expires,
            } => {
                self.broadcasts.first_time(id);
                format!(
                    "broadcast #{id} reached {reached} online user(s); {pending} offline user(s) \
                     get it if they log in before {}",
                    self.stamp(expires)
                )
            }
            OkReply::Ping if sent.as_ref().is_some_and(|s| s.automatic) => return,
            // The answer to our automatic SYNC: nothing to show.
            OkReply::Sync { .. } => return,
            OkReply::Ping => "pong: the server is there".to_owned(),
            OkReply::Watch { count } => {
                if sent.as_ref().is_some_and(|s| s.automatic) {
                    return;
                }
                format!("watching {count} user(s)")
            }
            OkReply::Quit => {
                self.say(Origin::Server, "goodbye");
                return self.finish(0);
            }
        };
        self.say(Origin::Server, &text);
    }

    /// `OK PASSWD`: a later REAUTH answers with the new password.
    fn remember_new_password(&mut self, sent: Option<&Sent>) {
        if let (
            Some(Sent {
                command: Command::Passwd { new, .. },
                ..
            }),
            Some((_, password)),
        ) = (sent, self.creds.as_mut())
        {
            *password = new.clone();
        }
    }

    /// `OK LOGIN` (or a RESUME's): the session, its datagram channel and the
    /// server-side watches start afresh when the token is new. Returns the line
    /// to show, or `None` when a rejoin after a reconnect already said it.
    fn logged_in(
        &mut self,
        now: Now,
        user: String,
        token: Token,
        sent: Option<Sent>,
    ) -> Option<String> {
        let renewed = self.me.as_deref() == Some(user.as_str());
        if let Some(Sent {
            command: Command::Login { user, password },
            ..
        }) = &sent
        {
            self.creds = Some((user.clone(), password.clone()));
            // A password login (or re-login: a later deadline) earns
            // a ticket for the next reconnect.
            if self.tickets_allowed() {
                self.send(Command::Ticket, true);
            }
        }
        self.me = Some(user.clone());
        self.auth_refused = false;
        let fresh = self.udp.token.as_ref() != Some(&token);
        if fresh {
            let sealed = self
                .udp_secret
                .as_ref()
                .map(|s| Channel::new(s, Role::Client));
            self.udp = Udp {
                token: Some(token),
                sealed,
                ..Udp::default()
            };
            self.udp_tick(now);
            // A new session: the server knows nothing of our watches.
            for cmd in self.watch.resend() {
                self.send(cmd, true);
            }
        }
        if std::mem::take(&mut self.rejoining) {
            self.backoff.reset();
            let links = self.links.up_users();
            let kept = if links.is_empty() {
                String::new()
            } else {
                format!("; direct links kept ({})", links.join(", "))
            };
            let server = self.cfg.server;
            self.say(
                Origin::Client,
                &format!("back on the server at {server}: logged in again as {user}{kept}"),
            );
            return None;
        }
        Some(match sent {
            Some(Sent {
                automatic: true, ..
            }) if renewed => {
                format!("session renewed for {user} (logged in again automatically)")
            }
            _ if renewed => format!("session renewed for {user}"),
            _ => format!("logged in as {user}; /list shows who is online"),
        })
    }

    /// `OK LIST`: the rows that came before it, as one table.
    fn show_list(&mut self, count: usize) {
        self.last_list = self.list_rows.iter().map(|(u, _)| u.clone()).collect();
        let rows: Vec<Vec<String>> = std::mem::take(&mut self.list_rows)
            .into_iter()
            .map(|(u, ip)| vec![display::sanitize(&u), ip.to_string()])
            .collect();
        self.say(Origin::Server, &format!("{count} user(s) online:"));
        for l in display::table(&["USER", "IP"], &rows) {
            self.say(Origin::Server, &format!("  {l}"));
        }
    }

    fn on_event(&mut self, now: Now, e: Event) {
        match e {
            Event::Welcome { text } => {
                if self.rejoining {
                    // Already logging in again by itself: the greeting is noise.
                    return;
                }
                // The server takes connections again: start backoff afresh.
                self.backoff.reset();
                self.say(Origin::Server, &display::sanitize(&text))
            }
            Event::Request { from, ip } => self.on_request(from, ip),
            Event::Peer { user, addr, token } => self.on_peer(now, user, addr, token),
            Event::Dialback { user, addr } => {
                if self.links.token_for(&user, now.mono).is_some() {
                    log::info!("{user} can be dialled back at {addr}");
                    self.reverse.schedule(&user, addr, now.mono);
                    self.reverse.introduced(&user, now.mono);
                }
            }
            Event::Sync { user } => {
                // Answered at once: the server times this round trip.
                if self.links.token_for(&user, now.mono).is_some() {
                    self.send(Command::Sync { user }, true);
                }
            }
            Event::Punch {
                user,
                addr,
                in_ms,
                rtt_ms,
            } => self.on_punch_event(now, user, addr, in_ms, rtt_ms),
            Event::Denied { user } => {
                self.outgoing.remove(&user);
                let user = display::sanitize(&user);
                self.say(Origin::Event, &format!("{user} turned down your request"));
            }
            Event::Cancelled { user, reason } => self.on_cancelled(user, reason),
            Event::Broadcast {
                id,
                from,
                unix,
                text,
            } => self.on_broadcast(id, &from, unix, &text),
            Event::Reauth { seconds } => self.on_reauth(seconds),
            Event::Online { user, ip } => {
                if self.watch.update(&user, true) {
                    let text = format!("{} is online ({ip})", display::sanitize(&user));
                    self.show(Shown::of(ShownKind::Presence, self.unix, &user, &text));
                }
            }
            Event::Offline { user } => {
                if self.watch.update(&user, false) {
                    let text = format!("{} is offline", display::sanitize(&user));
                    self.show(Shown::of(ShownKind::Presence, self.unix, &user, &text));
                }
            }
            Event::Closing { reason, text } => {
                if matches!(reason, CloseReason::Replaced) {
                    // Another login of ours took over: coming back would fight it.
                    self.no_reconnect = true;
                }
                let text = display::sanitize(&text);
                self.say(
                    Origin::Event,
                    &format!(
                        "the server is closing this connection: {} {text}",
                        reason.as_str()
                    ),
                );
            }
        }
    }

    /// `EVENT REQUEST`: someone asks for a direct link; the bell rings.
    fn on_request(&mut self, from: String, ip: IpAddr) {
        self.incoming.insert(from.clone(), ip);
        let from = display::sanitize(&from);
        let text = format!(
            "{from} (from {ip}) wants a direct link with you. \
             Type /accept {from} or /deny {from}"
        );
        self.show(Shown {
            bell: true,
            ..Shown::note(Origin::Event, self.unix, &text)
        });
    }

    /// `EVENT PEER`: our request was accepted; dial them (and be ready to be
    /// dialled back or to punch, if the dial cannot get through).
    fn on_peer(&mut self, now: Now, user: String, addr: SocketAddr, token: Token) {
        self.outgoing.remove(&user);
        let user_shown = display::sanitize(&user);
        self.say(
            Origin::Event,
            &format!("{user_shown} accepted; connecting to {addr}"),
        );
        // If our dial cannot get through, they may dial us back with it.
        self.links.issue(&user, token.clone(), now.mono);
        self.punches.introduced(&user, punch::Role::Requester);
        self.reverse.introduced(&user, now.mono);
        self.out.push_back(Output::Dial { user, addr, token });
    }

    /// `EVENT CANCELLED`: a request either way ended without an answer.
    fn on_cancelled(&mut self, user: String, reason: CancelReason) {
        self.outgoing.remove(&user);
        self.incoming.remove(&user);
        let user = display::sanitize(&user);
        let text = match reason {
            CancelReason::Expired => {
                format!("the request between you and {user} expired without an answer")
            }
            CancelReason::Offline => {
                format!("{user} went offline; the request between you was cancelled")
            }
        };
        self.say(Origin::Event, &text);
    }

    /// A LOGIN or SIGNUP was refused: remembered for the exit status; an
    /// automatic re-login after a reconnect stops there; `--user` without a
    /// terminal gives up at once (exit 3).
    fn on_refused(&mut self, sent: Option<&Sent>) {
        let Some(sent) = sent else { return };
        if !matches!(sent.command, Command::Login { .. } | Command::Signup { .. }) {
            return;
        }
        self.auth_refused = true;
        if std::mem::take(&mut self.rejoining) {
            self.backoff.reset();
            return self.say(
                Origin::Client,
                "reconnected, but logging in again was refused; /login to continue",
            );
        }
        if sent.automatic
            && self.me.is_none()
            && self.cfg.auto_login.is_some()
            && !self.cfg.interactive
        {
            self.finish(EXIT_REFUSED);
        }
    }

    /// `/watch` and `/unwatch`: kept locally (re-sent after every login) and
    /// told to the server now if it is there.
    fn watch_command(&mut self, user: String, add: bool) {
        let changed = if add {
            if self.watch.len() >= super::watch::WATCH_CAP && !self.watch.contains(&user) {
                return self.say(
                    Origin::Client,
                    &format!(
                        "already watching {} users, the most allowed; /unwatch some first",
                        super::watch::WATCH_CAP
                    ),
                );
            }
            self.watch.add(&user)
        } else {
            self.watch.remove(&user)
        };
        if !changed {
            let what = if add {
                "already watching"
            } else {
                "not watching"
            };
            return self.say(Origin::Client, &format!("{what} {user}"));
        }
        if self.me.is_none() || !self.server_up() {
            let verb = if add {
                "will watch"
            } else {
                "stopped watching"
            };
            return self.say(
                Origin::Client,
                &format!("{verb} {user} (the server hears of it at your next login)"),
            );
        }
        let changes = vec![crate::proto::WatchChange { add, user }];
        self.send(Command::Watch { changes }, false);
    }

    /// A link came up with `user`: follow their presence too.
    fn auto_watch(&mut self, user: &str) {
        if self.watch.add(user) && self.me.is_some() && self.server_up() {
            let changes = vec![crate::proto::WatchChange {
                add: true,
                user: user.to_owned(),
            }];
            self.send(Command::Watch { changes }, true);
        }
    }

    fn on_reauth(&mut self, seconds: u64) {
        match (&self.creds, self.cfg.reauth_prompt) {
            (Some((user, password)), false) => {
                let (user, password) = (user.clone(), password.clone());
                self.say(
                    Origin::Event,
                    &format!("the server asks to confirm the session; logging in again as {user} automatically"),
                );
                self.send(Command::Login { user, password }, true);
            }
            _ => {
                let user = self.me.clone().unwrap_or_else(|| "<user>".to_owned());
                self.say(
                    Origin::Event,
                    &format!(
                        "the server asks you to log in again within {seconds} s (links stay up)"
                    ),
                );
                if self.cfg.interactive && self.me.is_some() && self.prompt.is_none() {
                    self.show_prompt(Prompt::LoginPassword { user, reauth: true });
                } else {
                    self.say(Origin::Client, &format!("type /login {user} <password>"));
                }
            }
        }
    }

    /// The server connection ended (`why` given when the engine itself
    /// decided so). Links stay; unless leaving or told not to, a reconnect is
    /// scheduled with backoff.
    fn on_server_closed(&mut self, now: Now, why: Option<&str>) {
        match self.conn {
            ConnState::Up => {}
            ConnState::Connecting { .. } => {
                // A failed attempt: quietly wait longer.
                log::info!("reconnect attempt {} failed", self.backoff.attempts());
                return self.schedule_reconnect(now, None);
            }
            ConnState::Waiting { .. } | ConnState::Off => return,
        }
        self.sent.clear();
        self.rejoining = false;
        // No OK ACCEPT will come: parked hellos are refused now.
        for (id, parked) in std::mem::take(&mut self.parked_hellos) {
            self.retry_parked(now, id, parked);
        }
        self.udp = Udp::default();
        // A new connection brings its own secret (or none).
        self.udp_secret = None;
        let leaving = self.quit_deadline.is_some() || self.eof_deadline.is_some();
        if leaving || self.no_reconnect {
            self.conn = ConnState::Off;
            if leaving {
                return;
            }
        }
        let links = self.links.up_users();
        let mut text = match why {
            Some(why) => format!("lost the connection to the server ({why})"),
            None => "lost the connection to the server".to_owned(),
        };
        if !links.is_empty() {
            text.push_str(&format!(
                "; direct links keep working ({})",
                links.join(", ")
            ));
        }
        if self.conn == ConnState::Off {
            return self.say(Origin::Client, &text);
        }
        self.schedule_reconnect(now, Some(text));
    }

    /// Waits one backoff step before the next attempt; `line` is the loss
    /// line, completed with when the attempt comes.
    fn schedule_reconnect(&mut self, now: Now, line: Option<String>) {
        if std::mem::take(&mut self.reconnect_now) {
            if let Some(line) = line {
                self.say(Origin::Client, &format!("{line}; reconnecting now"));
            }
            return self.connect_now(now);
        }
        let wait = self.backoff.next_delay();
        self.conn = ConnState::Waiting {
            until: now.mono + wait,
        };
        if let Some(line) = line {
            self.say(
                Origin::Client,
                &format!(
                    "{line}; reconnecting in {:.1} s (/reconnect tries now)",
                    wait.as_secs_f64()
                ),
            );
        }
    }

    /// The reconnect state machine's timers: attempt due, connect taking too
    /// long, heartbeat.
    fn conn_tick(&mut self, now: Now) {
        match self.conn {
            ConnState::Waiting { until } if until <= now.mono => self.connect_now(now),
            ConnState::Connecting { since } if since + CONNECT_TIMEOUT <= now.mono => {
                self.out.push_back(Output::DropServer);
                self.on_server_closed(now, None);
            }
            ConnState::Up => match self.heartbeat.check(now.mono, self.can_ping()) {
                Beat::Nothing => {}
                Beat::Ping => self.send(Command::Ping, true),
                Beat::Dead => self.drop_server(now, "it stopped answering"),
            },
            _ => {}
        }
    }

    /// A PING is only worth sending when no password hash can be queued
    /// before it (the server answers in order, and a login storm may keep
    /// hashes waiting for minutes).
    fn can_ping(&self) -> bool {
        self.sent
            .iter()
            .all(|s| !matches!(s.command, Command::Login { .. } | Command::Signup { .. }))
    }

    /// Gives up on a connection the driver still holds.
    fn drop_server(&mut self, now: Now, why: &str) {
        self.out.push_back(Output::DropServer);
        self.on_server_closed(now, Some(why));
    }

    fn connect_now(&mut self, now: Now) {
        self.conn = ConnState::Connecting { since: now.mono };
        self.out.push_back(Output::ConnectServer);
    }

    fn on_server_connected(&mut self, now: Now) {
        if !matches!(self.conn, ConnState::Connecting { .. }) {
            return;
        }
        self.conn = ConnState::Up;
        self.heartbeat = Heartbeat::new(now.mono);
        let me = self
            .me
            .clone()
            .or_else(|| self.creds.as_ref().map(|c| c.0.clone()));
        if let Some(user) = me {
            if let Some(held) = HeldTicket::take_usable(&mut self.ticket, &user, now.unix) {
                // Skips the server's password hash (the restart storm).
                self.rejoining = true;
                return self.send(
                    Command::Resume {
                        user: held.user,
                        ticket: held.ticket,
                    },
                    true,
                );
            }
        }
        self.login_again();
    }

    /// After a reconnect (or a refused ticket): log in with the password we
    /// hold, or ask for it.
    fn login_again(&mut self) {
        match self.creds.clone() {
            Some((user, password)) if !self.cfg.reauth_prompt => {
                self.rejoining = true;
                self.send(Command::Login { user, password }, true);
            }
            Some((user, _)) if self.cfg.interactive => {
                self.say(Origin::Client, "reconnected to the server");
                self.rejoining = true;
                self.prompt = None;
                self.show_prompt(Prompt::LoginPassword { user, reauth: true });
            }
            _ => {
                let server = self.cfg.server;
                self.say(
                    Origin::Client,
                    &format!("reconnected to the server at {server}; /login to continue"),
                );
            }
        }
    }

    /// Tickets travel only over TLS or to a loopback server (the server
    /// refuses them elsewhere anyway): a TLS session is one with a UDP secret.
    fn tickets_allowed(&self) -> bool {
        self.udp_secret.is_some() || self.cfg.server.ip().to_canonical().is_loopback()
    }

    /// An automatic `TICKET` or `RESUME` was refused. A refused `RESUME`
    /// falls back to the password login the client would have made without
    /// a ticket (or to the prompt), as if it had just reconnected.
    fn on_ticket_refused(&mut self, sent: Option<&Sent>) {
        if !matches!(sent.map(|s| &s.command), Some(Command::Resume { .. })) {
            return;
        }
        self.rejoining = false;
        self.login_again();
    }

    /// `/reconnect`: try now, or drop a live connection and make a new one.
    fn reconnect_command(&mut self, now: Now) {
        match self.conn {
            ConnState::Connecting { .. } => self.say(Origin::Client, "already reconnecting"),
            ConnState::Up => {
                self.reconnect_now = true;
                self.drop_server(now, "/reconnect");
            }
            ConnState::Waiting { .. } | ConnState::Off => {
                self.no_reconnect = false;
                self.say(Origin::Client, "reconnecting now");
                self.connect_now(now);
            }
        }
    }

    // ---- UDP ----------------------------------------------------------------

    fn udp_tick(&mut self, now: Now) {
        if self.udp.token.is_none() {
            self.udp.due = None;
            return;
        }
        if self.udp.registered {
            self.udp.ping_unanswered = true;
            self.send_udp(UdpRequest::Ping);
            self.udp.due = Some(now.mono + PING_EVERY);
            return;
        }
        if self.udp.tries >= REGISTER_TRIES {
            // The path may be blocked; the server falls back to TCP meanwhile.
            // Try a fresh round of registrations after a ping interval.
            log::warn!("no answer to REGISTER after {REGISTER_TRIES} tries; retrying later");
            self.udp.tries = 0;
            self.udp.cookie = None;
            self.udp.due = Some(now.mono + PING_EVERY);
            return;
        }
        self.udp.tries += 1;
        let cookie = self.udp.cookie;
        self.send_udp(UdpRequest::Register { cookie });
        self.udp.due = Some(now.mono + REGISTER_RETRY);
    }

    fn on_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        if from != self.cfg.server {
            log::debug!("ignored a datagram from {from}: not the server");
            return;
        }
        let d = match self.udp.sealed.as_mut() {
            // A TLS session takes only sealed datagrams: anything else, or a
            // forged or replayed one, is dropped.
            Some(ch) => match ch.open(bytes) {
                Ok(body) => ServerDatagram::parse(sealed::unpad(&body)),
                Err(e) => {
                    log::debug!("dropped a sealed datagram from the server: {e:?}");
                    return;
                }
            },
            None => ServerDatagram::parse(bytes),
        };
        match d {
            Some(ServerDatagram::Challenge { cookie }) => {
                // Prove we receive here: repeat REGISTER with the cookie, now.
                if !self.udp.registered && self.udp.token.is_some() {
                    self.udp.cookie = Some(cookie);
                    let cookie = Some(cookie);
                    self.send_udp(UdpRequest::Register { cookie });
                }
            }
            Some(ServerDatagram::Registered) => {
                if !self.udp.registered && self.udp.token.is_some() {
                    log::info!("UDP path registered");
                    self.udp.registered = true;
                    self.udp.due = Some(now.mono + PING_EVERY);
                }
            }
            Some(ServerDatagram::Pong) => {
                log::debug!("PONG");
                self.udp.ping_unanswered = false;
            }
            Some(ServerDatagram::UnknownToken) => {
                // Only believed in answer to our own PING: the server has no
                // session for us any more although TCP looks up.
                if std::mem::take(&mut self.udp.ping_unanswered) && self.server_up() {
                    self.drop_server(now, "the server no longer knows this session");
                }
            }
            Some(ServerDatagram::Bcast {
                id,
                from,
                unix,
                text,
            }) => {
                // Acknowledge every copy: our earlier ACK may have been lost.
                self.send_udp(UdpRequest::Ack { id });
                self.on_broadcast(id, &from, unix, &text);
            }
            None => log::debug!("ignored a malformed datagram from the server"),
        }
    }

    fn on_broadcast(&mut self, id: u64, from: &str, unix: u64, text: &str) {
        if self.broadcasts.first_time(id) {
            self.show(Shown {
                made: Some(unix),
                id: Some(id),
                ..Shown::of(ShownKind::Broadcast, self.unix, from, text)
            });
            self.received_one();
        }
    }

    // ---- peer links --------------------------------------------------------

    fn link_err(&mut self, id: LinkId, code: ErrorCode) {
        let line = LinkLine::Err {
            code,
            text: code.default_text().to_owned(),
        };
        self.send_link(id, &line);
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.bad_lines += 1;
        if link.bad_lines > MAX_BAD_LINES {
            let who = link
                .user()
                .map_or_else(|| link.addr.to_string(), display::sanitize);
            self.say(
                Origin::Peer,
                &format!("closed the link with {who}: too many bad lines"),
            );
            self.close_link(id);
        }
    }

    /// Bytes from a link, through its wire, one event at a time. Stops as soon
    /// as the link is closed: nothing after a failure is looked at.
    fn on_link_bytes(&mut self, now: Now, id: LinkId, bytes: &[u8]) {
        // A punch attempt that carries bytes has connected.
        self.punches.connected(id);
        match self.links.get_mut(id) {
            Some(link) => link.wire.push(bytes),
            None => return,
        }
        while let Some(event) = self.links.get_mut(id).and_then(|l| l.wire.next_event()) {
            match event {
                WireEvent::Plain(frame) => self.on_plain_frame(now, id, frame),
                WireEvent::Line(frame) => self.on_link_frame(now, id, frame),
                WireEvent::Hello(hello) => self.on_noise_hello(now, id, hello),
                WireEvent::Secured => {
                    let me = self.me.clone().unwrap_or_default();
                    self.send_link(id, &LinkLine::Introduce { user: me });
                }
                WireEvent::Refused(code) => {
                    let user = self.link_name(id);
                    let why = ErrorCode::from_code(&code)
                        .map_or("it refused without a known reason", ErrorCode::plain_words);
                    self.say(Origin::Peer, &format!("{user} refused the link: {why}"));
                    self.close_link(id);
                }
                WireEvent::Failed(e) => self.on_wire_failed(id, e),
            }
        }
    }

    /// Who is at the other end of a link, for messages: the user, or the address.
    fn link_name(&self, id: LinkId) -> String {
        self.links.get(id).map_or_else(
            || "?".to_owned(),
            |l| {
                l.user().map_or_else(
                    || format!("a connection from {}", l.addr),
                    display::sanitize,
                )
            },
        )
    }

    /// An encrypted link is unusable: say so in words, close it. Nothing that
    /// arrived with the failure is shown as a message.
    fn on_wire_failed(&mut self, id: LinkId, e: LinkError) {
        let Some(link) = self.links.get(id) else {
            return;
        };
        let text = match &link.state {
            LinkState::Up { user } => format!("closed the direct link with {user}: {e}"),
            LinkState::AwaitWelcome { user } => format!("could not link with {user}: {e}"),
            LinkState::AwaitHello | LinkState::AwaitConfirm { .. } => {
                format!("refused a direct connection from {}: {e}", link.addr)
            }
        };
        self.say(Origin::Peer, &text);
        self.close_link(id);
    }

    /// A line from a plaintext link: `nc` users, if allowed.
    fn on_plain_frame(&mut self, now: Now, id: LinkId, frame: Frame) {
        if self.cfg.allow_plaintext_links {
            return self.on_link_frame(now, id, frame);
        }
        let addr = self.links.get(id).map(|l| l.addr);
        self.say(
            Origin::Peer,
            &format!(
                "refused a plaintext (unencrypted) link from {}; start with \
                 --allow-plaintext-links to accept nc users",
                addr.map_or_else(|| "?".to_owned(), |a| a.to_string())
            ),
        );
        self.link_err(id, ErrorCode::EncryptionRequired);
        self.close_link(id);
    }

    /// An encrypted hello: tried against every token we issued. A match
    /// answers the handshake; the token is used once the peer confirms.
    fn on_noise_hello(&mut self, now: Now, id: LinkId, hello: Vec<u8>) {
        let me = self.me.clone().unwrap_or_default();
        let candidates = self.links.candidates(now.mono);
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let exposed: Vec<String> = candidates
            .iter()
            .map(|(_, t)| t.expose().to_string())
            .collect();
        let pairs = candidates
            .iter()
            .zip(&exposed)
            .map(|((u, _), t)| (u.as_str(), t.as_str()));
        if let Some((i, answer)) = link.wire.answer_hello(&hello, &me, pairs) {
            let (user, token) = candidates[i].clone();
            link.state = LinkState::AwaitConfirm { user, token };
            self.out.push_back(Output::LinkBytes(id, answer));
            return;
        }
        let addr = link.addr;
        if self.any_accept_pending() {
            self.parked_hellos.push((id, Parked::Noise(hello)));
            return;
        }
        self.say(
            Origin::Peer,
            &format!(
                "refused an encrypted link from {addr}: it holds no token we issued \
                 (wrong, used or expired; see /peers)"
            ),
        );
        let refusal = link_noise::refusal(ErrorCode::BadToken.code());
        self.out.push_back(Output::LinkBytes(id, refusal));
        self.close_link(id);
    }

    fn on_link_frame(&mut self, now: Now, id: LinkId, frame: Frame) {
        let Some(link) = self.links.get(id) else {
            return;
        };
        let state = link.state.clone();
        let line = match frame {
            Frame::Line(l) => l,
            Frame::TooLong => return self.link_err(id, ErrorCode::LineTooLong),
            Frame::BadUtf8 => return self.link_err(id, ErrorCode::BadUtf8),
        };
        let parsed = match LinkLine::parse(&line) {
            Ok(p) => p,
            Err(code) => return self.link_err(id, code),
        };
        match (state, parsed) {
            (LinkState::AwaitHello, LinkLine::Hello { user, token }) => {
                self.on_hello(now, id, user, token)
            }
            (LinkState::AwaitHello, _) => self.link_err(id, ErrorCode::NotLinked),
            (LinkState::AwaitConfirm { user, token }, LinkLine::Introduce { user: them })
                if them == user =>
            {
                self.on_confirmed(now, id, user, token)
            }
            (LinkState::AwaitConfirm { .. }, _) => {
                self.on_wire_failed(id, LinkError::Unexpected);
            }
            (LinkState::AwaitWelcome { user }, LinkLine::Welcome { user: them })
                if them == user =>
            {
                self.link_up(id, &user);
                let how = self.how(id);
                self.say(
                    Origin::Peer,
                    &format!("direct link with {user} is up ({how}); /msg {user} <text> to chat"),
                );
            }
            (LinkState::AwaitWelcome { user }, LinkLine::Err { code, .. }) => {
                self.say(
                    Origin::Peer,
                    &format!("{user} refused the link: {}", code.plain_words()),
                );
                self.close_link(id);
            }
            (LinkState::AwaitWelcome { user }, _) => {
                self.say(
                    Origin::Peer,
                    &format!("{user}'s side did not answer the link handshake properly"),
                );
                self.close_link(id);
            }
            (LinkState::Up { user }, LinkLine::Msg { text }) => {
                self.show(Shown {
                    bell: true,
                    ..Shown::of(ShownKind::Message, now.unix, &user, &text)
                });
                self.received_one();
            }
            (LinkState::Up { user }, LinkLine::Bye) => {
                self.say(Origin::Peer, &format!("{user} closed the direct link"));
                self.close_link(id);
            }
            (LinkState::Up { user }, LinkLine::Err { code, text }) => {
                let text = display::sanitize(&text);
                self.say(
                    Origin::Peer,
                    &format!("{user} reports: {} ({code}: {text})", code.plain_words()),
                );
            }
            (
                LinkState::Up { .. },
                LinkLine::Hello { .. } | LinkLine::Introduce { .. } | LinkLine::Welcome { .. },
            ) => self.link_err(id, ErrorCode::BadSyntax),
        }
    }

    /// "encrypted" or "plaintext", for the link-up lines.
    fn how(&self, id: LinkId) -> &'static str {
        match self.links.get(id) {
            Some(l) if l.wire.is_encrypted() => "encrypted",
            _ => "plaintext, not encrypted",
        }
    }

    /// The encrypted peer proved it is live (not a recorded hello): the
    /// token is used now, and the link is up.
    fn on_confirmed(&mut self, now: Now, id: LinkId, user: String, token: Token) {
        if self.links.check_token(&user, &token, now.mono).is_err() {
            // Used by another link or expired between hello and confirmation.
            let addr = self.links.get(id).map(|l| l.addr);
            self.say(
                Origin::Peer,
                &format!(
                    "refused a direct connection from {} claiming to be {user}: \
                     its token was used or expired meanwhile",
                    addr.map_or_else(|| "?".to_owned(), |a| a.to_string())
                ),
            );
            self.link_err(id, ErrorCode::BadToken);
            self.close_link(id);
            return;
        }
        let me = self.me.clone().unwrap_or_default();
        self.link_up(id, &user);
        self.send_link(id, &LinkLine::Welcome { user: me });
        self.say(
            Origin::Peer,
            &format!("{user} connected; direct link is up (encrypted); /msg {user} <text> to chat"),
        );
    }

    /// True while an `ACCEPT <user>` we sent awaits its reply.
    fn accept_pending(&self, user: &str) -> bool {
        self.sent
            .iter()
            .any(|s| matches!(&s.command, Command::Accept { user: u, .. } if u == user))
    }

    /// True while any `ACCEPT` awaits its reply (an encrypted hello names nobody).
    fn any_accept_pending(&self) -> bool {
        self.sent
            .iter()
            .any(|s| matches!(&s.command, Command::Accept { .. }))
    }

    /// Decides the hellos parked for `user` now that its `ACCEPT` was answered.
    fn unpark(&mut self, now: Now, user: &str) {
        let (ready, keep) = std::mem::take(&mut self.parked_hellos)
            .into_iter()
            .partition(|(_, p)| match p {
                Parked::Plain { user: u, .. } => u == user,
                Parked::Noise(_) => true,
            });
        self.parked_hellos = keep;
        for (id, parked) in ready {
            self.retry_parked(now, id, parked);
        }
    }

    fn retry_parked(&mut self, now: Now, id: LinkId, parked: Parked) {
        if self.links.get(id).is_none() {
            return;
        }
        match parked {
            Parked::Plain { user, token } => self.on_hello(now, id, user, token),
            Parked::Noise(hello) => self.on_noise_hello(now, id, hello),
        }
    }

    fn on_hello(&mut self, now: Now, id: LinkId, user: String, token: Token) {
        let checked = self.links.check_token(&user, &token, now.mono);
        if checked == Err(Refusal::NotIssued) && self.accept_pending(&user) {
            self.parked_hellos.push((id, Parked::Plain { user, token }));
            return;
        }
        match checked {
            Ok(()) => {
                let me = self.me.clone().unwrap_or_default();
                self.send_link(id, &LinkLine::Welcome { user: me });
                self.link_up(id, &user);
                self.say(
                    Origin::Peer,
                    &format!(
                        "{user} connected; direct link is up (plaintext, not encrypted); \
                         /msg {user} <text> to chat"
                    ),
                );
            }
            Err(why) => {
                let addr = self.links.get(id).map(|l| l.addr);
                let why = match why {
                    Refusal::NotIssued => "no unused, unexpired token for that user (see /peers)",
                    Refusal::WrongToken => "wrong token",
                    Refusal::Expired => "its token expired (60 s after /accept)",
                };
                self.say(
                    Origin::Peer,
                    &format!(
                        "refused a direct connection from {} claiming to be {user}: {why}",
                        addr.map_or_else(|| "?".to_owned(), |a| a.to_string())
                    ),
                );
                self.link_err(id, ErrorCode::BadToken);
                self.close_link(id);
            }
        }
    }

    fn link_up(&mut self, id: LinkId, user: &str) {
        self.incoming.remove(user);
        self.outgoing.remove(user);
        self.auto_watch(user);
        // One link per introduction: the other direction's attempt, if any,
        // is dropped quietly and its token can no longer start one.
        self.links.revoke(user);
        self.reverse.linked(user);
        if let Some(attempt) = self.punches.end(user) {
            if attempt != id {
                self.close_link(attempt);
            }
        }
        for other in self.links.handshaking_with(user, id) {
            self.close_link(other);
        }
        if let Some(older) = self.links.set_up(id, user) {
            self.send_link(older, &LinkLine::Bye);
            self.close_link(older);
        }
    }

    fn on_link_accepted(&mut self, now: Now, id: LinkId, addr: SocketAddr) {
        if self.links.unfinished_incoming() >= MAX_UNFINISHED_INCOMING {
            log::warn!(
                "refused a link connection from {addr}: {MAX_UNFINISHED_INCOMING} others \
                 have not finished their hello yet"
            );
            self.out.push_back(Output::CloseLink(id));
            return;
        }
        self.links.add_incoming(id, addr, now.mono);
    }

    /// Dial-backs that are due, and waits for one that are over.
    fn reverse_tick(&mut self, now: Now) {
        for (user, addr) in self.reverse.due_dials(now.mono) {
            let confirming = self.links.all().any(|(_, l)| {
                l.user() == Some(user.as_str())
                    && !matches!(l.state, LinkState::AwaitWelcome { .. })
            });
            match self.links.token_for(&user, now.mono) {
                Some(token) if !confirming => {
                    self.say(
                        Origin::Peer,
                        &format!("{user} has not reached you; dialling {user} at {addr} instead"),
                    );
                    self.out.push_back(Output::Dial { user, addr, token });
                }
                _ => self.reverse.dial_ended(&user),
            }
        }
        for user in self.reverse.gave_up(now.mono) {
            self.maybe_no_path(&user);
        }
        for user in self.reverse.windows_over(now.mono) {
            self.no_path(&user);
        }
    }

    /// A dial to `user` failed (`text` says how). If it was our dial-back,
    /// there is no direct path; if we requested and they can still dial us
    /// back, we wait for that.
    fn dial_failed(&mut self, now: Now, user: &str, text: &str) {
        if self.reverse.is_dialling(user) {
            self.reverse.dial_ended(user);
            log::info!("{text}");
            self.maybe_no_path(user);
        } else if self.links.token_for(user, now.mono).is_some() {
            self.reverse.await_dialback(user, now.mono);
            self.say(
                Origin::Peer,
                &format!("{text}; waiting for {user} to dial back"),
            );
        } else {
            self.say(Origin::Peer, text);
        }
    }

    fn on_link_closed(&mut self, now: Now, id: LinkId) {
        // A hello parked for this connection dies with it.
        self.parked_hellos.retain(|(l, ..)| *l != id);
        if let Some(user) = self.punches.owner(id).map(str::to_owned) {
            // A punch attempt refused or cut before a link: retried, quietly.
            self.links.remove(id);
            return self.punch_failed(now, &user);
        }
        let Some(link) = self.links.remove(id) else {
            return;
        };
        let cut = if link.wire.mid_frame() {
            " (it ended in the middle of a frame: truncated)"
        } else {
            ""
        };
        match link.state {
            LinkState::Up { user } => self.say(
                Origin::Peer,
                &format!("the direct link with {user} was lost{cut}"),
            ),
            LinkState::AwaitWelcome { user } => self.dial_failed(
                now,
                &user,
                &format!("could not reach {user} at {}{cut}", link.addr),
            ),
            LinkState::AwaitHello | LinkState::AwaitConfirm { .. } => {
                log::info!("incoming link {id} closed before its handshake{cut}")
            }
        }
    }
}

// ---- simultaneous open (src/client/punch.rs) ------------------------------

impl Engine {
    /// `EVENT PUNCH`: dial at the moment the server timed; and the dial-back,
    /// if one is scheduled, waits until the punch had its chance (RTT-timed).
    fn on_punch_event(
        &mut self,
        now: Now,
        user: String,
        addr: SocketAddr,
        in_ms: u64,
        rtt_ms: u64,
    ) {
        if self.links.token_for(&user, now.mono).is_none() || self.links.find_up(&user).is_some() {
            return;
        }
        let at = now.mono + Duration::from_millis(in_ms.min(10_000));
        if self.punches.schedule(&user, addr, at) {
            log::info!("punching through to {user} at {addr} in {in_ms} ms");
            let path = Duration::from_millis(rtt_ms.min(10_000));
            self.reverse
                .retime(&user, at + 2 * path + reverse::DIALBACK_GRACE);
        }
    }

    /// Punch attempts that are due, and those given up.
    fn punch_tick(&mut self, now: Now) {
        for (user, link) in self.punches.timed_out(now.mono) {
            self.close_link(link);
            self.punch_failed(now, &user);
        }
        for (user, addr, _) in self.punches.due(now.mono) {
            self.out.push_back(Output::Punch { user, addr });
        }
    }

    /// The driver opened a punch attempt: the requester sends the hello (as
    /// on a forward dial), the acceptor waits for it (as on an incoming link).
    fn on_punched(&mut self, now: Now, link: LinkId, user: String, addr: SocketAddr) {
        let token = self.links.token_for(&user, now.mono);
        let (Some(role), Some(token)) = (self.punches.role(&user), token) else {
            // Linked or given up meanwhile.
            self.out.push_back(Output::CloseLink(link));
            return;
        };
        if !self.punches.in_progress(&user) {
            self.out.push_back(Output::CloseLink(link));
            return;
        }
        self.punches.started(&user, link, now.mono);
        match role {
            punch::Role::Requester => {
                let me = self.me.clone().unwrap_or_default();
                let (wire, hello) = LinkWire::dial(&token.expose().to_string(), &me, &user);
                self.links.add_dialed(link, &user, addr, wire, now.mono);
                self.out.push_back(Output::LinkBytes(link, hello));
            }
            punch::Role::Acceptor => self.links.add_incoming(link, addr, now.mono),
        }
    }

    /// A punch attempt ended without a link: retry, or, if that was the last,
    /// see whether anything else can still link.
    fn punch_failed(&mut self, now: Now, user: &str) {
        if !self.punches.failed(user, now.mono) {
            log::info!("punching through to {user} did not work");
            self.maybe_no_path(user);
        }
    }

    /// Says there is no direct path if nothing with `user` is still trying
    /// (punch, dial-back, a dial or an incoming handshake naming them).
    fn maybe_no_path(&mut self, user: &str) {
        let trying = self.punches.in_progress(user)
            || self.reverse.is_pending(user)
            || self
                .links
                .all()
                .any(|(_, l)| l.user() == Some(user) && !l.is_up());
        if !trying {
            self.no_path(user);
        }
    }

    /// No direct path to `user`: whatever still tries is closed, the token
    /// can start nothing more, and the user is told once.
    fn no_path(&mut self, user: &str) {
        if self.links.find_up(user).is_some() {
            return;
        }
        self.links.revoke(user);
        self.reverse.linked(user);
        if let Some(attempt) = self.punches.end(user) {
            self.close_link(attempt);
        }
        for other in self.links.handshaking_with(user, LinkId::MAX) {
            self.close_link(other);
        }
        self.say(Origin::Peer, &reverse::no_path_line(user));
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
