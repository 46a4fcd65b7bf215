//! The thin mio driver: one thread, one `Poll`. It owns every socket (the
//! server connection and peer links in a slab whose keys are the mio tokens;
//! the listener, UDP socket, stdin and signal pipe on fixed tokens at the top
//! of the range), turns readiness into engine inputs, and carries out the
//! engine's outputs in order. Protocol decisions are the engine's.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::engine::{Config, Engine, Input, Now, Output};
use super::links::LinkId;
use super::pin::ServerTls;
use super::render::{Renderer, Style};
use super::stdin::{Kind as StdinKind, Stdin};
use super::terminal::{self, Terminal, Typed};
use crate::netio::{
    enable_keepalive, Connection, Fate, Next, OutBuffer, Overflow, ReadStatus, ReadsDue, UdpQueue,
};
use crate::proto::datagram::MAX_DATAGRAM;
use crate::proto::Frame;
use crate::signals::SignalPipe;
use crate::tls::Layer;

const LISTENER: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);
const STDIN: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 4);

/// Output cap towards the server; it reads fast, so hitting this means it is stuck.
const SERVER_OUT_CAP: usize = 1 << 20;
/// Output cap per peer link: a peer that stops reading loses the link.
const LINK_OUT_CAP: usize = 256 * 1024;
/// How long a closing connection may take to drain before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Connections accepted and datagrams received per turn, so one busy source
/// cannot starve the others.
const ACCEPT_BUDGET: usize = 64;
const DATAGRAM_BUDGET: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Datagrams (REGISTER, PING, ACK; each under 200 bytes) waiting for the UDP
/// socket to become writable, bounded in count and in bytes; past either the
/// newest is dropped (the server retransmits, and the next ACK covers it).
const UDP_QUEUE_DATAGRAMS: usize = 256;
const UDP_QUEUE_BYTES: usize = 32 * 1024;
/// TCP keepalive on the server connection: probes after 30 s of silence, so
/// a vanished server is noticed within a minute even when nothing is sent.
const KEEPALIVE_IDLE_SECS: libc::c_int = 30;

/// Everything the driver needs, already validated (no clap types here).
#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    /// Where the peer listener binds (`--listen-addr`, `--listen-port`);
    /// without an address, the wildcard of the server connection's family.
    pub listen_addr: Option<IpAddr>,
    pub listen_port: u16,
    pub auto_login: Option<(String, String)>,
    pub reauth_prompt: bool,
    /// Accept plaintext links from `nc` users (`--allow-plaintext-links`).
    pub allow_plaintext_links: bool,
    /// One JSON object per line on stdout (`--json`).
    pub json: bool,
    pub no_bell: bool,
    /// Keep running at the end of input (`--stay`).
    pub stay: bool,
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
    /// TLS to the server with this trust; `None` speaks plain lines (`--plaintext`).
    pub tls: Option<ServerTls>,
}

/// The identity of the server could not be verified or has changed.
pub const EXIT_UNTRUSTED: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Server,
    Link,
}

/// The server connection or a peer link: the life cycle shared with the
/// server (`netio::Connection`: stream, layer, reader, output, close) and
/// what only the client keeps for it. Plain, or TLS for the server
/// connection; a link's bytes are read raw (its encryption is the engine's).
struct Conn {
    io: Connection<TcpStream>,
    kind: Kind,
    /// The engine's id for a link (never reused, unlike the slab key).
    link: LinkId,
    /// A dial in progress: writable readiness tells whether it worked.
    connecting: bool,
    /// The engine already forgot this connection; do not report its end.
    engine_knows: bool,
}

impl Conn {
    fn new(stream: TcpStream, kind: Kind, link: LinkId, connecting: bool) -> Conn {
        let cap = if kind == Kind::Server {
            SERVER_OUT_CAP
        } else {
            LINK_OUT_CAP
        };
        Conn {
            io: Connection::new(stream, Layer::Plain, cap),
            kind,
            link,
            connecting,
            engine_knows: true,
        }
    }
}

fn now() -> Now {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now {
        mono: Instant::now(),
        unix,
    }
}

/// Seconds east of UTC for the local time zone, for clock stamps.
fn local_utc_offset() -> i64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return 0;
    }
    tm.tm_gmtoff
}

/// Writes to fd 1 directly: stdout may share a non-blocking file description
/// with a terminal's stdin, so `WouldBlock` is waited out (bounded) rather
/// than treated as an error. A broken pipe comes back as `BrokenPipe`.
fn write_stdout(mut bytes: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bytes.is_empty() {
        let n = unsafe { libc::write(libc::STDOUT_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock if Instant::now() < deadline => {
                let mut p = libc::pollfd {
                    fd: libc::STDOUT_FILENO,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                unsafe { libc::poll(&mut p, 1, 100) };
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// `[::1]` (as in URLs) names the same host as `::1`.
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        .unwrap_or(host)
}

/// The link listener's address: the one asked for, else the wildcard of the
/// family that reaches the server, so a peer told our address (the one the
/// server saw) can reach it: an IPv4-only listener cannot be dialled at an
/// IPv6 address, which is what links over IPv6 used to fail on.
fn listen_addr(asked: Option<IpAddr>, local: IpAddr, port: u16) -> SocketAddr {
    let ip = asked.unwrap_or(match local.to_canonical() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    SocketAddr::new(ip, port)
}

/// A seed for the reconnect jitter: each client must differ, or a herd of
/// them would retry in lockstep.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        // Not secret, only spread: the pid and the clock differ per client.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return u64::from(std::process::id()) << 32 | u64::from(t);
    }
    u64::from_le_bytes(b)
}

/// Connects to the first address of `host:port` that answers.
fn connect_server(host: &str, port: u16) -> io::Result<std::net::TcpStream> {
    let host = unbracket(host);
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        // Its local port is shared with punch attempts (`shared_port.rs`).
        match super::shared_port::connect_blocking(addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

struct Driver {
    poll: Poll,
    engine: Engine,
    conns: Slab<Conn>,
    /// Link id → slab key, for the engine's outputs.
    link_keys: HashMap<LinkId, usize>,
    next_link: LinkId,
    listener: TcpListener,
    udp: UdpSocket,
    udp_queue: UdpQueue,
    udp_registered_write: bool,
    server_addr: SocketAddr,
    /// Connections whose read budget ran out with data left: read again
    /// next turn without an event (`netio::ReadsDue`).
    reads_due: ReadsDue,
    stdin: Stdin,
    stdin_more: bool,
    signals: SignalPipe,
    renderer: Renderer,
    /// Terminal mode (stdin and stdout both terminals, no `--json`): raw
    /// keys, the protected input line, history.
    term: Option<Terminal>,
    exit: Option<i32>,
    /// TLS to the server (for its refusals); `None` with `--plaintext`.
    tls: Option<ServerTls>,
}

impl Conn {
    /// Gets a new server connection ready to speak: TLS with the pin in
    /// `tls`, or plaintext announced by an empty line (ignored by the
    /// protocol), which tells the server at once that this is no TLS client,
    /// so it greets without waiting.
    fn speak_to_server(&mut self, tls: Option<&ServerTls>) -> Result<(), String> {
        match tls {
            Some(tls) => self.io.layer = tls.layer()?,
            None => {
                let _ = self.io.out.push_line("");
            }
        }
        Ok(())
    }
}

/// Stdin, registered with the poll when it can be (a pipe, a terminal);
/// else read directly each turn.
fn open_stdin(registry: &mio::Registry) -> Stdin {
    let mut stdin = Stdin::open();
    if stdin.kind() != StdinKind::Direct && !stdin.ended() {
        let fd = stdin.fd();
        if let Err(e) = registry.register(&mut SourceFd(&fd), STDIN, Interest::READABLE) {
            log::debug!("stdin cannot be polled ({e}); reading it directly");
            stdin.fall_back_to_direct();
        }
    }
    stdin
}

/// How lines are shown: colour and bell only on a terminal, never with
/// `NO_COLOR`; JSON with `--json`.
fn renderer(opts: &Options, utc_offset: i64) -> Renderer {
    let stdout_tty = unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    Renderer::new(Style::detect(
        stdout_tty,
        no_color,
        opts.no_bell,
        opts.json,
        utc_offset,
    ))
}

/// Terminal mode (raw keys, the protected input line) when stdin and stdout
/// are both terminals and `--json` is off.
fn terminal_mode(opts: &Options, stdin: &Stdin) -> Option<Terminal> {
    if opts.json || !stdin.is_terminal() || !terminal::both_are_terminals() {
        return None;
    }
    match Terminal::enter() {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("terminal mode unavailable ({e}); reading lines");
            None
        }
    }
}

/// The connection to the server, ready for the poll; `None` (said on
/// stderr) when it cannot be made.
fn dial_server(opts: &Options) -> io::Result<Option<std::net::TcpStream>> {
    let std_stream = match connect_server(&opts.host, opts.port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "peerline-client: cannot connect to {}:{}: {e}",
                opts.host, opts.port
            );
            return Ok(None);
        }
    };
    std_stream.set_nonblocking(true)?;
    let _ = std_stream.set_nodelay(true);
    enable_keepalive(&std_stream, KEEPALIVE_IDLE_SECS);
    Ok(Some(std_stream))
}

/// The listener peers dial and the UDP socket for hole punching, both
/// registered with the poll.
fn peer_sockets(
    registry: &mio::Registry,
    opts: &Options,
    local_ip: IpAddr,
) -> io::Result<(TcpListener, UdpSocket)> {
    let mut listener =
        TcpListener::bind(listen_addr(opts.listen_addr, local_ip, opts.listen_port))?;
    registry.register(&mut listener, LISTENER, Interest::READABLE)?;
    // The UDP socket uses the interface that reaches the server.
    let mut udp = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
    registry.register(&mut udp, UDP, Interest::READABLE)?;
    Ok((listener, udp))
}

/// The engine's configuration: the options, plus what only the running
/// client knows (addresses, whether stdin is a terminal, the time zone).
/// The auto-login password moves into it rather than being copied.
fn engine_config(
    opts: &mut Options,
    server: SocketAddr,
    listen_port: u16,
    interactive: bool,
    utc_offset: i64,
) -> Config {
    Config {
        server,
        listen_port,
        interactive,
        reauth_prompt: opts.reauth_prompt,
        auto_login: opts.auto_login.take(),
        utc_offset,
        allow_plaintext_links: opts.allow_plaintext_links,
        seed: random_seed(),
        stay: opts.stay || opts.count.is_some() || opts.timeout.is_some(),
        count: opts.count,
        timeout: opts.timeout,
    }
}

/// Runs the client until it decides to exit; returns the exit code.
pub fn run(mut opts: Options) -> io::Result<i32> {
    let Some(std_stream) = dial_server(&opts)? else {
        return Ok(1);
    };
    let server_addr = std_stream.peer_addr()?;
    let local_ip = std_stream.local_addr()?.ip();

    let poll = Poll::new()?;
    let mut conns = Slab::new();
    let mut server = Conn::new(TcpStream::from_std(std_stream), Kind::Server, 0, false);
    if let Err(e) = server.speak_to_server(opts.tls.as_ref()) {
        eprintln!("peerline-client: {e}");
        return Ok(1);
    }
    let key = conns.vacant_key();
    server
        .io
        .sync_interest(poll.registry(), Token(key), false)?;
    conns.insert(server);

    let (listener, udp) = peer_sockets(poll.registry(), &opts, local_ip)?;

    let stdin = open_stdin(poll.registry());
    let mut signals = SignalPipe::install()?;
    poll.registry()
        .register(signals.receiver(), SIGNALS, Interest::READABLE)?;

    let listen_port = listener.local_addr()?.port();
    let utc_offset = local_utc_offset();
    let renderer = renderer(&opts, utc_offset);
    // Last: nothing after this may fail and leave the terminal raw.
    let term = terminal_mode(&opts, &stdin);
    let cfg = engine_config(
        &mut opts,
        server_addr,
        listen_port,
        stdin.is_terminal(),
        utc_offset,
    );
    let started = now();
    let mut engine = Engine::new(cfg, started);
    engine.start(started);
    let mut d = Driver {
        poll,
        engine,
        conns,
        link_keys: HashMap::new(),
        next_link: 1,
        listener,
        udp,
        udp_queue: UdpQueue::with_caps(UDP_QUEUE_DATAGRAMS, UDP_QUEUE_BYTES),
        udp_registered_write: false,
        server_addr,
        reads_due: ReadsDue::default(),
        stdin,
        stdin_more: false,
        signals,
        renderer,
        term,
        exit: None,
        tls: opts.tls,
    };
    d.run_loop()
}

impl Driver {
    fn run_loop(&mut self) -> io::Result<i32> {
        let mut events = Events::with_capacity(256);
        loop {
            self.carry_out()?;
            if let Some(code) = self.exit {
                self.flush_on_exit();
                if let Some(mut term) = self.term.take() {
                    let _ = write_stdout(term.leave().as_bytes());
                }
                return Ok(code);
            }
            self.update_interests();
            // Closed slots are freed only here, after the batch that closed
            // them: a stale event for the same token cannot hit a new socket.
            let link_keys = &mut self.link_keys;
            self.conns.retain(|_, c| {
                if c.io.is_gone() && c.kind == Kind::Link {
                    link_keys.remove(&c.link);
                }
                !c.io.is_gone()
            });

            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => {
                        if self.signals.drain() {
                            self.engine.handle(now(), Input::Interrupt);
                        }
                    }
                    STDIN => self.read_stdin(),
                    LISTENER => self.accept_peers()?,
                    UDP => {
                        if ev.is_readable() {
                            self.read_udp();
                        }
                        if ev.is_writable() {
                            self.udp_queue.flush(&self.udp);
                        }
                    }
                    Token(key) => self.conn_event(key, ev.is_readable(), ev.is_writable()),
                }
            }
            // Sources that ran out of budget last turn, and stdin read directly.
            if self.stdin_more || (self.stdin.kind() == StdinKind::Direct && !self.stdin.ended()) {
                self.read_stdin();
            }
            for key in self.reads_due.take() {
                if self
                    .conns
                    .get_mut(key)
                    .is_some_and(|c| c.io.take_read_again())
                {
                    self.conn_event(key, true, false);
                }
            }
            self.settle_all();
            self.engine.handle(now(), Input::Timeout);
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let busy = self.stdin_more
            || (self.stdin.kind() == StdinKind::Direct && !self.stdin.ended())
            || !self.reads_due.is_empty();
        if busy {
            return Some(Duration::ZERO);
        }
        let lingering = self
            .conns
            .iter()
            .filter_map(|(_, c)| c.io.closing_deadline());
        let deadline = self
            .engine
            .poll_timeout()
            .into_iter()
            .chain(lingering)
            .min();
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    // ---- engine outputs ---------------------------------------------------------

    fn carry_out(&mut self) -> io::Result<()> {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Show(shown) => {
                    let lines = self.renderer.render(&shown);
                    self.put_on_screen(
                        |term| lines.iter().for_each(|l| term.print_above(l)),
                        || lines.iter().map(|l| format!("{l}\n")).collect(),
                    )?
                }
                // The input line already ended the prompt's line.
                Output::Print(line) if line.is_empty() && self.term.is_some() => {}
                Output::Print(line) => {
                    self.put_on_screen(|term| term.print_above(&line), || format!("{line}\n"))?
                }
                Output::ConnectServer => self.reconnect_server(),
                Output::DropServer => {
                    if let Some(key) = self.server_key() {
                        let c = &mut self.conns[key];
                        c.engine_knows = false;
                        c.io.mark_gone();
                    }
                }
                Output::Prompt(text) => {
                    self.put_on_screen(|term| term.set_prompt(&text), || text.clone())?
                }
                Output::Echo(on) => match self.term.as_mut() {
                    Some(_) => self.put_on_screen(|term| term.set_hidden(!on), String::new)?,
                    // A pipe or a plain tty: the kernel's echo is the only one.
                    None => self.stdin.set_echo(on),
                },
                Output::ToServer(line) => {
                    if let Some(key) = self.server_key() {
                        self.queue_line(key, &line);
                    }
                }
                Output::ToLink(link, line) => {
                    if let Some(key) = self.link_key(link) {
                        self.queue_line(key, &line);
                    }
                }
                Output::LinkBytes(link, bytes) => {
                    if let Some(key) = self.link_key(link) {
                        self.queue(key, |out| out.push_bytes(&bytes));
                    }
                }
                Output::CloseLink(link) => {
                    if let Some(c) = self.link_key(link).and_then(|k| self.conns.get_mut(k)) {
                        c.engine_knows = false;
                        c.io.begin_close(Instant::now() + LINGER);
                        Self::flush_conn(c);
                    }
                }
                Output::Datagram(bytes) => {
                    self.udp_queue.send(&self.udp, self.server_addr, bytes);
                }
                Output::Dial { user, addr, token } => self.dial(user, addr, token),
                Output::Punch { user, addr } => self.punch(user, addr),
                Output::Exit(code) => {
                    // An identity refusal decided the code already.
                    self.exit.get_or_insert(code);
                }
            }
        }
        Ok(())
    }

    /// Puts text in front of the person. On a terminal the line editor paints
    /// it (`paint`), so the prompt and the line being typed stay below what is
    /// printed; in a pipe it is `plain` text on stdout, nothing else.
    fn put_on_screen(
        &mut self,
        paint: impl FnOnce(&mut Terminal),
        plain: impl FnOnce() -> String,
    ) -> io::Result<()> {
        match self.term.as_mut() {
            Some(term) => {
                paint(term);
                write_stdout(term.take_output().as_bytes())
            }
            None => write_stdout(plain().as_bytes()),
        }
    }

    fn server_key(&self) -> Option<usize> {
        self.conns
            .iter()
            .find(|(_, c)| c.kind == Kind::Server && !c.io.is_gone())
            .map(|(k, _)| k)
    }

    /// The slab key of a live link connection.
    fn link_key(&self, link: LinkId) -> Option<usize> {
        let key = *self.link_keys.get(&link)?;
        let c = self.conns.get(key)?;
        (c.kind == Kind::Link && c.link == link && !c.io.is_gone()).then_some(key)
    }

    /// A slab slot for a new link connection, under a fresh link id.
    fn add_link(&mut self, stream: TcpStream, connecting: bool) -> LinkId {
        let link = self.next_link;
        self.next_link += 1;
        let key = self
            .conns
            .insert(Conn::new(stream, Kind::Link, link, connecting));
        self.link_keys.insert(link, key);
        link
    }

    fn queue_line(&mut self, key: usize, line: &str) {
        self.queue(key, |out| out.push_line(line));
    }

    /// Queues output on a connection and writes what it can; one that is not
    /// reading (past its cap) is dropped.
    fn queue(&mut self, key: usize, push: impl FnOnce(&mut OutBuffer) -> Result<(), Overflow>) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if push(&mut c.io.out).is_err() {
            log::warn!("connection {key} is not reading; dropping it");
            self.kill(key);
            return;
        }
        Self::flush_conn(c);
        if c.io.is_gone() {
            self.report_end(key);
        }
    }

    /// Writes what is queued (unless a dial is still in progress); a closing
    /// connection is shut down for writing once empty (`Connection::flush`).
    fn flush_conn(c: &mut Conn) {
        if c.connecting {
            return;
        }
        if let Err(e) = c.io.flush() {
            log::debug!("write failed: {e}");
        }
    }

    /// A new server connection for a reconnect: non-blocking, so links keep
    /// running meanwhile; writable readiness tells the engine how it went.
    fn reconnect_server(&mut self) {
        match super::shared_port::connect_nonblocking(None, self.server_addr) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                enable_keepalive(&stream, KEEPALIVE_IDLE_SECS);
                let mut conn = Conn::new(stream, Kind::Server, 0, true);
                // A fresh TLS session each time, checked against the same
                // pin (a key that changed meanwhile is refused, exit 4).
                if let Err(e) = conn.speak_to_server(self.tls.as_ref()) {
                    log::warn!("reconnect: {e}");
                    self.engine.handle(now(), Input::ServerClosed);
                    return;
                }
                self.conns.insert(conn);
            }
            Err(e) => {
                log::info!("reconnect to {}: {e}", self.server_addr);
                self.engine.handle(now(), Input::ServerClosed);
            }
        }
    }

    fn dial(&mut self, user: String, addr: SocketAddr, token: crate::proto::names::Token) {
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                let reason = e.to_string();
                self.engine
                    .handle(now(), Input::DialFailed { user, reason });
                return;
            }
        };
        let link = self.add_link(stream, true);
        self.engine.handle(
            now(),
            Input::Dialed {
                link,
                user,
                token,
                addr,
            },
        );
    }

    /// A simultaneous-open attempt: from the server connection's local
    /// address and port (where the server saw our NAT's mapping) to `addr`.
    fn punch(&mut self, user: String, addr: SocketAddr) {
        let local = self
            .server_key()
            .map(|k| &self.conns[k])
            .filter(|c| !c.connecting)
            .map(|c| c.io.stream.local_addr());
        let opened = match local {
            Some(Ok(local)) => super::shared_port::connect_nonblocking(Some(local), addr),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no server connection to share a port with",
            )),
        };
        let input = match opened {
            Ok(stream) => {
                let link = self.add_link(stream, true);
                Input::Punched { link, user, addr }
            }
            Err(e) => Input::PunchFailed {
                user,
                reason: e.to_string(),
            },
        };
        self.engine.handle(now(), input);
    }

    /// Marks a connection dead and tells the engine, if it still cares.
    fn kill(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.io.mark_gone();
        }
        self.report_end(key);
    }

    fn report_end(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.engine_knows {
            return;
        }
        c.engine_knows = false;
        let input = match c.kind {
            Kind::Server => Input::ServerClosed,
            Kind::Link => Input::LinkClosed { link: c.link },
        };
        self.engine.handle(now(), input);
    }

    fn update_interests(&mut self) {
        let registry = self.poll.registry();
        for (key, c) in self.conns.iter_mut() {
            if let Err(e) = c.io.sync_interest(registry, Token(key), c.connecting) {
                log::warn!("cannot register connection {key}: {e}");
                c.io.mark_gone();
            }
        }
        let udp_write = !self.udp_queue.is_empty();
        if udp_write != self.udp_registered_write {
            let i = if udp_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(&mut self.udp, UDP, i).is_ok() {
                self.udp_registered_write = udp_write;
            }
        }
        // A dead connection found above still has to be reported.
        let newly_dead: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.io.is_gone() && c.engine_knows)
            .map(|(k, _)| k)
            .collect();
        for key in newly_dead {
            self.report_end(key);
        }
    }

    /// The end of a turn for every connection (`Connection::settle`): what
    /// waits is written, a closing one gets its FIN once its lines are out
    /// and ends when the peer closed too or its linger deadline passed. A
    /// failed write is reported by `update_interests`.
    fn settle_all(&mut self) {
        let now = Instant::now();
        for (_, c) in self.conns.iter_mut() {
            if !c.connecting && c.io.settle(now) == Fate::Failed {
                log::debug!("write failed");
            }
        }
    }

    /// Best effort on the way out: queued lines (BYE, QUIT) are small and the
    /// sockets' buffers take them at once; each connection is closed in
    /// order (TLS `close_notify`, FIN) if its lines went out.
    fn flush_on_exit(&mut self) {
        let now = Instant::now();
        for (_, c) in self.conns.iter_mut() {
            c.connecting = false;
            c.io.begin_close(now);
            let _ = c.io.flush();
        }
        self.udp_queue.flush(&self.udp);
    }

    // ---- input sources --------------------------------------------------------

    fn read_stdin(&mut self) {
        if self.term.is_some() {
            return self.read_keys();
        }
        let mut frames = Vec::new();
        let status = self.stdin.read(|f| frames.push(f));
        for f in frames {
            self.engine.handle(now(), Input::Stdin(f));
        }
        self.stdin_more = status == ReadStatus::MoreWaiting;
        if status == ReadStatus::Closed {
            if self.stdin.kind() != StdinKind::Direct {
                let fd = self.stdin.fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            self.engine.handle(now(), Input::StdinEnd);
        }
    }

    /// Terminal mode: keys edit the input line; a finished line goes to the
    /// engine exactly as a line from a pipe would.
    fn read_keys(&mut self) {
        let mut bytes = Vec::new();
        let status = self.stdin.read_raw(|b| bytes.extend_from_slice(b));
        let users = self.engine.known_users();
        let commands: Vec<String> = super::input::COMMANDS
            .iter()
            .map(|s| format!("/{}", s.name))
            .collect();
        let complete = |_: &str, command: bool| {
            if command {
                commands.clone()
            } else {
                users.clone()
            }
        };
        let Some(term) = self.term.as_mut() else {
            return;
        };
        let typed = term.feed(&bytes, &complete);
        let screen = term.take_output();
        let _ = write_stdout(screen.as_bytes());
        for t in typed {
            let input = match t {
                Typed::Line(line) if line.len() >= crate::proto::MAX_LINE => {
                    Input::Stdin(Frame::TooLong)
                }
                Typed::Line(line) => {
                    if let Some(term) = self.term.as_mut() {
                        // A question is answered by this line; the engine
                        // asks again if it needs more.
                        term.reset_prompt();
                    }
                    Input::Stdin(Frame::Line(line))
                }
                Typed::Interrupt => Input::Interrupt,
                Typed::End => Input::StdinEnd,
            };
            self.engine.handle(now(), input);
        }
        self.stdin_more = status == ReadStatus::MoreWaiting;
        if status == ReadStatus::Closed {
            let fd = self.stdin.fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.engine.handle(now(), Input::StdinEnd);
        }
    }

    fn accept_peers(&mut self) -> io::Result<()> {
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let link = self.add_link(stream, false);
                    self.engine
                        .handle(now(), Input::LinkAccepted { link, addr });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically EMFILE: log and let the next event retry.
                    log::warn!("accept failed: {e}");
                    return Ok(());
                }
            }
        }
        // Budget used with connections possibly left: the listener stays
        // readable, so re-arm it to get another event.
        self.poll
            .registry()
            .reregister(&mut self.listener, LISTENER, Interest::READABLE)
    }

    fn read_udp(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..DATAGRAM_BUDGET {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let bytes = buf[..n].to_vec();
                    self.engine.handle(now(), Input::Datagram { from, bytes });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP port unreachable and the like: UDP is best effort.
                    log::debug!("udp receive: {e}");
                    return;
                }
            }
        }
        let _ = self
            .poll
            .registry()
            .reregister(&mut self.udp, UDP, Interest::READABLE);
        self.udp_registered_write = false;
    }

    /// A TLS session ended in an error. A refused server identity ends the
    /// client with exit 4 and the reason; anything else is a lost connection.
    fn tls_failed(&mut self, key: usize, e: crate::tls::layer::TlsFailure) {
        match self.tls.as_ref().and_then(ServerTls::take_refusal) {
            Some(why) => {
                eprintln!("peerline-client: {why}");
                self.exit = Some(EXIT_UNTRUSTED);
                if let Some(c) = self.conns.get_mut(key) {
                    // Nothing more to tell the engine: we are leaving.
                    c.engine_knows = false;
                    c.io.mark_gone();
                }
            }
            None => {
                log::warn!("connection {key}: {e}");
                self.kill(key);
            }
        }
    }

    fn conn_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.io.is_gone() {
            return;
        }
        if c.connecting && writable {
            // The mio way to learn how a non-blocking connect ended.
            match (c.io.stream.take_error(), c.io.stream.peer_addr()) {
                (Ok(None), Ok(_)) => {
                    c.connecting = false;
                    if c.kind == Kind::Server {
                        self.engine.handle(now(), Input::ServerConnected);
                    }
                }
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                (Ok(Some(e)) | Err(e), _) | (_, Err(e)) => {
                    log::debug!("dial failed: {e}");
                    return self.kill(key);
                }
            }
        }
        if writable {
            Self::flush_conn(c);
        }
        if readable && !c.connecting {
            match c.kind {
                Kind::Server => self.read_server(key),
                Kind::Link => self.read_link(key),
            }
        }
        if self.conns.get(key).is_some_and(|c| c.io.is_gone()) {
            self.report_end(key);
        }
    }

    /// The server connection's input (`Connection::next_input`): its lines,
    /// and once its TLS handshake is done the datagram secret, before any
    /// line that came with the handshake's end (the engine seals the
    /// datagrams of the session it logs in on this connection). The server
    /// closing its side ends the connection.
    fn read_server(&mut self, key: usize) {
        let mut taken = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            match c.io.next_input(&mut taken) {
                Next::Frame(frame) => self.engine.handle(now(), Input::Server(frame)),
                Next::Secret(secret) => self.engine.handle(now(), Input::UdpSecret(secret)),
                Next::Budget => {
                    self.reads_due.schedule(key, &mut c.io);
                    break;
                }
                Next::Drained => break,
                Next::Ended => {
                    c.io.mark_gone();
                    break;
                }
                Next::Failed(e) => return self.tls_failed(key, e),
            }
        }
        if let Some(c) = self.conns.get_mut(key) {
            if c.io.layer.is_tls() {
                // Handshake records (or our queued lines, once it is done).
                Self::flush_conn(c);
            }
        }
    }

    /// A link's bytes go to the engine as they are (its wire tells
    /// plaintext from encrypted frames); a closing link is only drained, the
    /// engine is done with it. The peer closing its side ends the link.
    fn read_link(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let status = c.io.read_bytes(|b| chunks.push(b.to_vec()));
        match status {
            ReadStatus::MoreWaiting => self.reads_due.schedule(key, &mut c.io),
            ReadStatus::Closed => c.io.mark_gone(),
            ReadStatus::Drained => {}
        }
        let link = c.link;
        if !c.io.is_closing() {
            for bytes in chunks {
                self.engine.handle(now(), Input::LinkBytes { link, bytes });
            }
        }
    }
}

#[cfg(test)]
mod addr_tests {
    use super::*;

    #[test]
    fn bracketed_ipv6_hosts_are_unbracketed() {
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("::1"), "::1");
        assert_eq!(unbracket("example.org"), "example.org");
        assert_eq!(unbracket("[example.org]"), "[example.org]");
    }

    #[test]
    fn the_link_listener_follows_the_server_connection_family() {
        let v6: IpAddr = "::1".parse().unwrap();
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(listen_addr(None, v6, 0), "[::]:0".parse().unwrap());
        assert_eq!(listen_addr(None, v4, 7), "0.0.0.0:7".parse().unwrap());
        assert_eq!(listen_addr(None, mapped, 0), "0.0.0.0:0".parse().unwrap());
        assert_eq!(listen_addr(Some(v4), v6, 0), "127.0.0.1:0".parse().unwrap());
    }
}
