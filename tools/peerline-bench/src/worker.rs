//! Worker process: one mio loop driving many client sessions of one protocol
//! (peerline: TCP control connection + its own UDP socket; mosquitto: one MQTT
//! connection). The coordinator talks to it with lines on stdin; it answers
//! with lines on stdout. Each session is a slab entry; its TCP socket is token
//! `2*key`, its UDP socket `2*key+1`.
//!
//! Commands (stdin) and answers (stdout):
//! - `UP <count> <window> <signup 0|1> <first-index> <r|s>` → `PROGRESS …`*, `UP ok= failed= ns=`
//! - `WATCH <rep>` → `WATCHING <rep>`, later `FAN rep= n= first= last= arrived=` when
//!   every ready receiver here has it; `STATS <rep>` answers the same line at once.
//!   `last` is when this process read the last copy; `arrived` is when the last
//!   copy reached its receiver's socket (kernel receive timestamp; the read
//!   time for TCP deliveries). They differ by this process's own backlog: it
//!   plays thousands of clients on one core, which real clients, each on its
//!   own machine, do not share.
//! - `BCAST <rep> <pad>` (sender) → `SENT rep= id= reached= ns=`
//! - `BURST <m> <window> <pad>` (sender) → `BURST sent= ns=`
//! - `COUNT` → `COUNT n= last= tcp= closed=`; `RESET` zeroes the delivery counters
//! - `PINGSTART <k> <interval-ms>` / `PINGSTOP` → `PINGS n= p50= p99= max=` (µs)
//! - `DROP` closes every session; `QUIT` (or stdin EOF) exits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use peerline::netio::{read_frames, OutBuffer, ReadStatus};
use peerline::proto::names::Token as SessionToken;
use peerline::proto::{
    ClientDatagram, Command, Cookie, Event, Frame, LineReader, OkReply, ServerDatagram, ServerLine,
};
use peerline::udpbatch::{Mmsg, RecvBatch, SendQueue};

use crate::clock::{now_ns, parse_stamp, stamp};
use crate::mqtt;
use crate::stats::Summary;

const STDIN: Token = Token(usize::MAX - 1);
/// A worker never outlives this, whatever the coordinator does.
const MAX_LIFETIME_NS: u64 = 45 * 60 * 1_000_000_000;
const REGISTER_RETRY_NS: u64 = 500_000_000;
const REGISTER_TRIES: u32 = 20;
const SETUP_TIMEOUT_NS: u64 = 120_000_000_000;
const PROGRESS_NS: u64 = 1_000_000_000;
pub const TOPIC: &str = "bench/fanout";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    Peerline,
    Mqtt,
}

/// `peerline-bench worker` flags (fleet.rs passes them).
#[derive(clap::Args)]
pub struct WorkerConfig {
    #[arg(long, value_enum)]
    pub proto: Proto,
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub prefix: String,
    #[arg(long)]
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    SignupWait,
    LoginWait,
    RegisterWait,
    ConnAckWait,
    SubAckWait,
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Receiver,
    Sender,
}

struct Session {
    index: u64,
    role: Role,
    phase: Phase,
    signup: bool,
    tcp: TcpStream,
    udp: Option<UdpSocket>,
    /// REGISTERs and ACKs; the ACKs of one receive batch leave in one `sendmmsg`.
    udp_queue: SendQueue<Vec<u8>>,
    lines: LineReader,
    out: OutBuffer,
    mq_in: mqtt::Reader,
    mq_out: Vec<u8>,
    mq_pos: usize,
    /// From `OK LOGIN`.
    token: Option<SessionToken>,
    started_ns: u64,
    register_at: u64,
    register_tries: u32,
    ping_sent: Option<u64>,
    next_ping: u64,
    seen: HashSet<u64>,
    /// Reps of broadcasts sent and not yet answered (sender only), with send time.
    sent: VecDeque<(u64, u64)>,
}

#[derive(Default, Clone, Copy)]
struct Fan {
    n: u64,
    first: u64,
    last: u64,
    arrived: u64,
}

#[derive(Default)]
struct Setup {
    queue: VecDeque<(u64, Role)>,
    active: usize,
    window: usize,
    signup: bool,
    ok: u64,
    failed: u64,
    started_ns: u64,
    running: bool,
}

struct Burst {
    left: u64,
    window: usize,
    outstanding: usize,
    pad: usize,
    total: u64,
    started_ns: u64,
    done: u64,
}

pub struct Worker {
    cfg: WorkerConfig,
    poll: Poll,
    sessions: Slab<Session>,
    ready: Vec<usize>,
    sender: Option<usize>,
    setup: Setup,
    fans: HashMap<u64, Fan>,
    watching: HashMap<u64, u64>,
    deliveries: u64,
    tcp_deliveries: u64,
    last_delivery: u64,
    closed: u64,
    closed_reasons: HashMap<String, u64>,
    pingers: Vec<usize>,
    ping_interval: u64,
    ping_samples: Vec<u64>,
    burst: Option<Burst>,
    next_progress: u64,
    next_pid: u16,
    to_free: Vec<usize>,
    quit: bool,
    /// `recvmmsg` buffers shared by every session's UDP socket: a
    /// receiver's whole backlog in one call (and no extra call to learn it
    /// would block), so the tool is less of a bottleneck than the server.
    udp_in: RecvBatch,
    /// Datagrams of the current `on_udp`, back to back, and where each ends.
    udp_got: Vec<u8>,
    udp_ends: Vec<usize>,
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    // The coordinator gone means we are done; the loop ends on stdin EOF.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> io::Result<Worker> {
        Ok(Worker {
            cfg,
            poll: Poll::new()?,
            sessions: Slab::new(),
            ready: Vec::new(),
            sender: None,
            setup: Setup::default(),
            fans: HashMap::new(),
            watching: HashMap::new(),
            deliveries: 0,
            tcp_deliveries: 0,
            last_delivery: 0,
            closed: 0,
            closed_reasons: HashMap::new(),
            pingers: Vec::new(),
            ping_interval: 0,
            ping_samples: Vec::new(),
            burst: None,
            next_progress: 0,
            next_pid: 1,
            to_free: Vec::new(),
            quit: false,
            udp_in: RecvBatch::new(1500, 32),
            udp_got: Vec::new(),
            udp_ends: Vec::new(),
        })
    }

    pub fn run(mut self) -> io::Result<()> {
        let stdin_fd = 0;
        unsafe {
            let flags = libc::fcntl(stdin_fd, libc::F_GETFL);
            libc::fcntl(stdin_fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        self.poll
            .registry()
            .register(&mut SourceFd(&stdin_fd), STDIN, Interest::READABLE)?;
        let mut stdin = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(stdin_fd) });
        let mut stdin_lines = LineReader::new();
        let mut events = Events::with_capacity(1024);
        let born = now_ns();
        say("READY");
        while !self.quit && now_ns() - born < MAX_LIFETIME_NS {
            let timeout = self.next_deadline().map(|d| {
                let now = now_ns();
                Duration::from_nanos(d.saturating_sub(now).max(200_000))
            });
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == STDIN {
                    let mut cmds = Vec::new();
                    let st = read_frames(&mut *stdin, &mut stdin_lines, |f| {
                        if let Frame::Line(l) = f {
                            cmds.push(l)
                        }
                    });
                    for c in cmds {
                        self.command(&c)?;
                    }
                    if st == ReadStatus::Closed {
                        self.quit = true;
                    }
                    continue;
                }
                let key = ev.token().0 / 2;
                if !self.sessions.contains(key) || self.to_free.contains(&key) {
                    continue;
                }
                if ev.token().0 % 2 == 0 {
                    self.on_tcp(key, ev.is_writable());
                } else {
                    self.on_udp(key);
                }
            }
            self.timers();
            self.free();
            self.start_setups();
            self.report_setup();
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut d: Option<u64> = None;
        let mut take = |t: u64| d = Some(d.map_or(t, |x: u64| x.min(t)));
        if self.setup.running {
            take(self.next_progress);
            for (_, s) in self.sessions.iter() {
                if s.phase == Phase::RegisterWait {
                    take(s.register_at);
                }
            }
        }
        if self.ping_interval > 0 {
            for &k in &self.pingers {
                if let Some(s) = self.sessions.get(k) {
                    if s.ping_sent.is_none() {
                        take(s.next_ping);
                    }
                }
            }
        }
        d
    }

    fn command(&mut self, line: &str) -> io::Result<()> {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match f[0] {
            "UP" => {
                let (count, window, signup, first) = (num(1), num(2), num(3) == 1, num(4));
                let role = if f.get(5) == Some(&"s") {
                    Role::Sender
                } else {
                    Role::Receiver
                };
                self.setup = Setup {
                    queue: (first..first + count).map(|i| (i, role)).collect(),
                    active: 0,
                    window: window.max(1) as usize,
                    signup,
                    ok: 0,
                    failed: 0,
                    started_ns: now_ns(),
                    running: true,
                };
                self.next_progress = now_ns() + PROGRESS_NS;
            }
            "WATCH" => {
                let rep = num(1);
                let expected = self.ready.len() as u64;
                self.watching.insert(rep, expected);
                say(&format!("WATCHING {rep}"));
                self.check_watch(rep);
            }
            "STATS" => {
                let rep = num(1);
                self.watching.remove(&rep);
                self.say_fan(rep);
            }
            "BCAST" => self.send_broadcast(num(1), num(2) as usize),
            "BURST" => {
                self.burst = Some(Burst {
                    left: num(1),
                    window: num(2).max(1) as usize,
                    outstanding: 0,
                    pad: num(3) as usize,
                    total: num(1),
                    started_ns: now_ns(),
                    done: 0,
                });
                self.pump_burst();
            }
            "COUNT" => {
                let mut reasons: Vec<String> = self
                    .closed_reasons
                    .iter()
                    .map(|(r, n)| format!("{r}:{n}"))
                    .collect();
                reasons.sort();
                say(&format!(
                    "COUNT n={} last={} tcp={} closed={} reasons={}",
                    self.deliveries,
                    self.last_delivery,
                    self.tcp_deliveries,
                    self.closed,
                    reasons.join(",")
                ))
            }
            "RESET" => {
                self.deliveries = 0;
                self.tcp_deliveries = 0;
                self.last_delivery = 0;
                self.fans.clear();
                // `seen` stays: a late retransmit of an earlier broadcast is
                // still a duplicate, not a new delivery.
                say("RESET");
            }
            "PINGSTART" => {
                let k = num(1) as usize;
                self.ping_interval = num(2).max(1) * 1_000_000;
                self.pingers = self.ready.iter().copied().take(k).collect();
                let now = now_ns();
                let n = self.pingers.len().max(1) as u64;
                for (i, &key) in self.pingers.iter().enumerate() {
                    let s = &mut self.sessions[key];
                    s.ping_sent = None;
                    s.next_ping = now + self.ping_interval * i as u64 / n;
                }
                self.ping_samples.clear();
                say(&format!("PINGSTARTED {}", self.pingers.len()));
            }
            "PINGSTOP" => {
                self.ping_interval = 0;
                let line = match Summary::of(&self.ping_samples) {
                    Some(s) => format!(
                        "PINGS n={} p50={} p99={} max={}",
                        s.n,
                        s.p50 / 1000,
                        s.p99 / 1000,
                        s.max / 1000
                    ),
                    None => "PINGS n=0 p50=0 p99=0 max=0".to_string(),
                };
                self.pingers.clear();
                self.ping_samples.clear();
                say(&line);
            }
            "DROP" => {
                let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
                for k in keys {
                    self.close(k, None);
                }
                self.free();
                say("DROPPED");
            }
            "QUIT" => self.quit = true,
            other => say(&format!("ERROR unknown command {other}")),
        }
        Ok(())
    }

    fn user(&self, index: u64) -> String {
        format!("{}{index}", self.cfg.prefix)
    }

    fn start_setups(&mut self) {
        while self.setup.running && self.setup.active < self.setup.window {
            let Some((index, role)) = self.setup.queue.pop_front() else {
                break;
            };
            match self.open(index, role) {
                Ok(()) => self.setup.active += 1,
                Err(e) => {
                    self.setup.failed += 1;
                    say(&format!("ERROR connect {}: {e}", self.user(index)));
                }
            }
        }
    }

    fn open(&mut self, index: u64, role: Role) -> io::Result<()> {
        let mut tcp = TcpStream::connect(self.cfg.server)?;
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut tcp,
            Token(2 * key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let _ = tcp.set_nodelay(true);
        entry.insert(Session {
            index,
            role,
            phase: Phase::Connecting,
            signup: self.setup.signup,
            tcp,
            udp: None,
            udp_queue: SendQueue::with_caps(64, usize::MAX),
            lines: LineReader::new(),
            out: OutBuffer::with_cap(256 * 1024),
            mq_in: mqtt::Reader::default(),
            mq_out: Vec::new(),
            mq_pos: 0,
            token: None,
            started_ns: now_ns(),
            register_at: 0,
            register_tries: 0,
            ping_sent: None,
            next_ping: 0,
            seen: HashSet::new(),
            sent: VecDeque::new(),
        });
        Ok(())
    }

    fn report_setup(&mut self) {
        if !self.setup.running {
            return;
        }
        let now = now_ns();
        if self.setup.queue.is_empty() && self.setup.active == 0 {
            self.setup.running = false;
            say(&format!(
                "UP ok={} failed={} ns={}",
                self.setup.ok,
                self.setup.failed,
                now - self.setup.started_ns
            ));
        } else if now >= self.next_progress {
            self.next_progress = now + PROGRESS_NS;
            say(&format!(
                "PROGRESS ok={} failed={}",
                self.setup.ok, self.setup.failed
            ));
        }
    }

    fn setup_done(&mut self, key: usize, ok: bool) {
        self.setup.active = self.setup.active.saturating_sub(1);
        if ok {
            self.setup.ok += 1;
            let s = &mut self.sessions[key];
            s.phase = Phase::Ready;
            match s.role {
                Role::Sender => self.sender = Some(key),
                Role::Receiver => self.ready.push(key),
            }
        } else {
            self.setup.failed += 1;
        }
    }

    /// Closes a session at the end of this turn. `reason`: the server's, if any.
    fn close(&mut self, key: usize, reason: Option<&str>) {
        if self.to_free.contains(&key) {
            return;
        }
        let s = &self.sessions[key];
        if s.phase != Phase::Ready {
            self.setup_done(key, false);
        } else if let Some(r) = reason {
            self.closed += 1;
            *self.closed_reasons.entry(r.to_string()).or_default() += 1;
        }
        self.to_free.push(key);
    }

    fn free(&mut self) {
        for key in std::mem::take(&mut self.to_free) {
            let mut s = self.sessions.remove(key);
            let _ = self.poll.registry().deregister(&mut s.tcp);
            if let Some(u) = s.udp.as_mut() {
                let _ = self.poll.registry().deregister(u);
            }
            self.ready.retain(|&k| k != key);
            self.pingers.retain(|&k| k != key);
            if self.sender == Some(key) {
                self.sender = None;
            }
        }
    }

    fn timers(&mut self) {
        let now = now_ns();
        if self.setup.running {
            let mut expired = Vec::new();
            let mut resend = Vec::new();
            for (k, s) in self.sessions.iter() {
                if s.phase != Phase::Ready && now - s.started_ns > SETUP_TIMEOUT_NS {
                    expired.push(k);
                } else if s.phase == Phase::RegisterWait && now >= s.register_at {
                    resend.push(k);
                }
            }
            for k in expired {
                say(&format!(
                    "ERROR setup timeout {}",
                    self.user(self.sessions[k].index)
                ));
                self.close(k, None);
            }
            for k in resend {
                if self.sessions[k].register_tries >= REGISTER_TRIES {
                    say("ERROR no OK REGISTER");
                    self.close(k, None);
                } else {
                    self.send_register(k, None);
                }
            }
        }
        if self.ping_interval > 0 {
            for i in 0..self.pingers.len() {
                let key = self.pingers[i];
                let s = &mut self.sessions[key];
                if s.ping_sent.is_none() && now >= s.next_ping {
                    s.ping_sent = Some(now);
                    s.next_ping = now + self.ping_interval;
                    match self.cfg.proto {
                        Proto::Peerline => {
                            let _ = s.out.push_line(&Command::Ping.to_string());
                        }
                        Proto::Mqtt => mqtt::pingreq(&mut s.mq_out),
                    }
                    self.flush_tcp(key);
                }
            }
        }
    }

    fn on_tcp(&mut self, key: usize, writable: bool) {
        if self.sessions[key].phase == Phase::Connecting {
            if !writable {
                return;
            }
            let s = &mut self.sessions[key];
            match s.tcp.take_error() {
                Ok(None) => {}
                _ => return self.close(key, None),
            }
            if s.tcp.peer_addr().is_err() {
                return self.close(key, None);
            }
            let user = format!("{}{}", self.cfg.prefix, s.index);
            let pw = self.cfg.password.clone();
            match self.cfg.proto {
                Proto::Peerline => {
                    let cmd = if s.signup {
                        s.phase = Phase::SignupWait;
                        Command::Signup {
                            user,
                            password: pw.clone(),
                            password_again: pw,
                        }
                    } else {
                        s.phase = Phase::LoginWait;
                        Command::Login { user, password: pw }
                    };
                    let _ = s.out.push_line(&cmd.to_string());
                }
                Proto::Mqtt => {
                    s.phase = Phase::ConnAckWait;
                    mqtt::connect(&mut s.mq_out, &user, &user, &pw, 600);
                }
            }
        }
        self.flush_tcp(key);
        if self.to_free.contains(&key) {
            return;
        }
        match self.cfg.proto {
            Proto::Peerline => self.read_peerline(key),
            Proto::Mqtt => self.read_mqtt(key),
        }
    }

    fn flush_tcp(&mut self, key: usize) {
        let s = &mut self.sessions[key];
        let res = match self.cfg.proto {
            Proto::Peerline => s.out.write_to(&mut s.tcp),
            Proto::Mqtt => write_raw(&mut s.tcp, &mut s.mq_out, &mut s.mq_pos),
        };
        if res.is_err() {
            self.close(key, Some("write-error"));
        }
    }

    fn read_peerline(&mut self, key: usize) {
        let mut lines = Vec::new();
        let s = &mut self.sessions[key];
        let mut status = read_frames(&mut s.tcp, &mut s.lines, |f| {
            if let Frame::Line(l) = f {
                lines.push(l)
            }
        });
        // Edge-triggered: keep reading until drained (bounded by the socket).
        let mut rounds = 0;
        while status == ReadStatus::MoreWaiting && rounds < 64 {
            rounds += 1;
            status = read_frames(&mut s.tcp, &mut s.lines, |f| {
                if let Frame::Line(l) = f {
                    lines.push(l)
                }
            });
        }
        for l in lines {
            if self.to_free.contains(&key) {
                return;
            }
            self.on_line(key, &l);
        }
        if status == ReadStatus::Closed {
            self.close(key, Some("eof"));
        }
    }

    fn on_line(&mut self, key: usize, line: &str) {
        let Some(parsed) = ServerLine::parse(line) else {
            say(&format!("ERROR unparsed line: {line}"));
            return;
        };
        let phase = self.sessions[key].phase;
        match parsed {
            ServerLine::Event(Event::Welcome { .. }) => {}
            ServerLine::Event(Event::Broadcast { id, text, .. }) => {
                self.tcp_deliveries += 1;
                self.delivered(key, id, &text, None);
            }
            ServerLine::Event(Event::Closing { reason, .. }) => {
                self.close(key, Some(reason.as_str()));
            }
            ServerLine::Event(Event::Reauth { .. }) => self.send_login(key),
            ServerLine::Ok(OkReply::Signup { .. }) if phase == Phase::SignupWait => {
                self.sessions[key].phase = Phase::LoginWait;
                self.send_login(key);
            }
            ServerLine::Ok(OkReply::Login { token, .. }) => {
                if phase != Phase::LoginWait {
                    return; // a re-login after REAUTH: same session
                }
                self.sessions[key].token = Some(token);
                if let Err(e) = self.open_udp(key) {
                    say(&format!("ERROR udp socket: {e}"));
                    self.close(key, None);
                }
            }
            ServerLine::Ok(OkReply::Ping) => self.pong(key),
            ServerLine::Ok(OkReply::Broadcast {
                id,
                reached,
                pending,
                ..
            }) => self.broadcast_answered(key, id, reached, pending),
            ServerLine::Err { code, text } => {
                let s = &self.sessions[key];
                say(&format!(
                    "ERROR from server for {}{}: {} {}",
                    self.cfg.prefix,
                    s.index,
                    code.code(),
                    text
                ));
                if phase != Phase::Ready {
                    self.close(key, None);
                } else if !s.sent.is_empty() {
                    self.sessions[key].sent.pop_front();
                    self.burst_answered();
                }
            }
            _ => {}
        }
    }

    fn open_udp(&mut self, key: usize) -> io::Result<()> {
        let mut udp = UdpSocket::bind("127.0.0.1:0".parse().expect("literal address"))?;
        // Connected: it hears only the server, and on loopback the kernel
        // finds it by its full address pair (the 4-tuple hash) when the
        // server sends, instead of walking the bucket shared by every socket
        // with its local address. That lookup runs in the server's system
        // call, so with 19,000 unconnected sockets it was charged to the
        // server's CPU per delivery; on a real network it would not exist.
        udp.connect(self.cfg.server)?;
        enable_arrival_stamps(&udp);
        self.poll.registry().register(
            &mut udp,
            Token(2 * key + 1),
            // Both, once: edge-triggered, so a writable edge only comes when a
            // full send buffer drains. Re-registering per datagram cost an
            // epoll_ctl per delivery, a fifth of the tool's CPU.
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let s = &mut self.sessions[key];
        s.udp = Some(udp);
        s.phase = Phase::RegisterWait;
        self.send_register(key, None);
        Ok(())
    }

    /// `REGISTER`, with the cookie of the server's `CHALLENGE` once there is one.
    fn send_register(&mut self, key: usize, cookie: Option<Cookie>) {
        let server = self.cfg.server;
        let s = &mut self.sessions[key];
        s.register_tries += 1;
        s.register_at = now_ns() + REGISTER_RETRY_NS;
        let Some(token) = s.token.clone() else {
            return;
        };
        let d = ClientDatagram::Register { token, cookie };
        if let Some(u) = s.udp.as_ref() {
            s.udp_queue.push(server, d.wire());
            s.udp_queue.flush(&mut Mmsg(u));
        }
    }

    fn on_udp(&mut self, key: usize) {
        let mut got = std::mem::take(&mut self.udp_got);
        let mut ends = std::mem::take(&mut self.udp_ends);
        got.clear();
        ends.clear();
        {
            let s = &mut self.sessions[key];
            let Some(u) = s.udp.as_ref() else { return };
            s.udp_queue.flush(&mut Mmsg(u));
            self.udp_in.drain(u, 1024, |_, d| {
                got.extend_from_slice(d);
                ends.push(got.len());
            });
        }
        // The stamp is the last datagram's, exact when only one was read
        // (a fan-out sends each receiver one); otherwise the read time.
        let arrival = if ends.len() == 1 {
            self.sessions[key]
                .udp
                .as_ref()
                .and_then(last_arrival_real_ns)
                .map(|real| (real as i128 - realtime_offset_ns()).max(0) as u64)
        } else {
            None
        };
        let mut at = 0;
        for &end in &ends {
            let d = &got[at..end];
            at = end;
            match ServerDatagram::parse(d) {
                Some(ServerDatagram::Challenge { cookie })
                    if self.sessions[key].phase == Phase::RegisterWait =>
                {
                    self.send_register(key, Some(cookie));
                }
                Some(ServerDatagram::Registered)
                    if self.sessions[key].phase == Phase::RegisterWait =>
                {
                    self.setup_done(key, true);
                }
                Some(ServerDatagram::Bcast { id, text, .. }) => {
                    let server = self.cfg.server;
                    let s = &mut self.sessions[key];
                    if let Some(token) = s.token.clone() {
                        let ack = ClientDatagram::Ack { token, id };
                        s.udp_queue.push(server, ack.wire());
                    }
                    self.delivered(key, id, &text, arrival);
                }
                _ => {}
            }
        }
        // This batch's ACKs, in one call.
        let s = &mut self.sessions[key];
        if let Some(u) = s.udp.as_ref() {
            s.udp_queue.flush(&mut Mmsg(u));
        }
        self.udp_got = got;
        self.udp_ends = ends;
    }

    /// One broadcast reached one session (UDP or TCP); duplicates are dropped.
    /// `arrival`: when it reached the socket (monotonic ns), if known.
    fn delivered(&mut self, key: usize, id: u64, text: &str, arrival: Option<u64>) {
        let now = now_ns();
        if !self.sessions[key].seen.insert(id) {
            return;
        }
        self.deliveries += 1;
        self.last_delivery = now;
        if let Some((rep, t)) = parse_stamp(text) {
            let lat = now.saturating_sub(t);
            let arrived = arrival.map_or(lat, |a| a.min(now).saturating_sub(t));
            let f = self.fans.entry(rep).or_insert(Fan {
                n: 0,
                first: u64::MAX,
                last: 0,
                arrived: 0,
            });
            f.n += 1;
            f.first = f.first.min(lat);
            f.last = f.last.max(lat);
            f.arrived = f.arrived.max(arrived);
            self.check_watch(rep);
        }
    }

    fn check_watch(&mut self, rep: u64) {
        let Some(&expected) = self.watching.get(&rep) else {
            return;
        };
        let n = self.fans.get(&rep).map_or(0, |f| f.n);
        if n >= expected {
            self.watching.remove(&rep);
            self.say_fan(rep);
        }
    }

    fn say_fan(&self, rep: u64) {
        let f = self.fans.get(&rep).copied().unwrap_or_default();
        let first = if f.n == 0 { 0 } else { f.first };
        say(&format!(
            "FAN rep={rep} n={} first={first} last={} arrived={}",
            f.n, f.last, f.arrived
        ));
    }

    fn send_broadcast(&mut self, rep: u64, pad: usize) {
        let Some(key) = self.sender else {
            say("ERROR no sender session here");
            return;
        };
        let now = now_ns();
        let mut text = stamp(rep, now);
        if pad > 0 {
            text.push(' ');
            text.push_str(&"x".repeat(pad));
        }
        let s = &mut self.sessions[key];
        s.sent.push_back((rep, now));
        match self.cfg.proto {
            Proto::Peerline => {
                let _ = s.out.push_line(&Command::Broadcast { text }.to_string());
            }
            Proto::Mqtt => {
                let pid = self.next_pid;
                self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
                mqtt::publish(&mut s.mq_out, TOPIC, 1, pid, text.as_bytes());
            }
        }
        self.flush_tcp(key);
    }

    fn pump_burst(&mut self) {
        loop {
            let Some(b) = self.burst.as_mut() else { return };
            if b.done == b.total {
                say(&format!(
                    "BURST sent={} ns={}",
                    b.total,
                    now_ns() - b.started_ns
                ));
                self.burst = None;
                return;
            }
            if b.left == 0 || b.outstanding >= b.window {
                return;
            }
            b.left -= 1;
            b.outstanding += 1;
            let pad = b.pad;
            // Rep 0: counted in totals, not watched.
            self.send_broadcast(0, pad);
        }
    }

    /// The server answered the sender's broadcast (peerline `OK BROADCAST`,
    /// MQTT `PUBACK`): within a burst that makes room for the next one,
    /// otherwise the coordinator hears how long the answer took.
    fn broadcast_answered(&mut self, key: usize, id: u64, reached: usize, pending: usize) {
        let now = now_ns();
        let Some((rep, t)) = self.sessions[key].sent.pop_front() else {
            return;
        };
        if !self.burst_answered() {
            say(&format!(
                "SENT rep={rep} id={id} reached={reached} pending={pending} ns={}",
                now - t
            ));
        }
    }

    /// One broadcast of a running burst was answered (OK or ERR): send the
    /// next. False when no burst is running.
    fn burst_answered(&mut self) -> bool {
        let Some(b) = self.burst.as_mut() else {
            return false;
        };
        b.outstanding -= 1;
        b.done += 1;
        self.pump_burst();
        true
    }

    /// `LOGIN` with the session's own name: after `OK SIGNUP`, and again on `REAUTH`.
    fn send_login(&mut self, key: usize) {
        let cmd = Command::Login {
            user: self.user(self.sessions[key].index),
            password: self.cfg.password.clone(),
        };
        let _ = self.sessions[key].out.push_line(&cmd.to_string());
        self.flush_tcp(key);
    }

    /// The answer to a session's PING (peerline `OK PING`, MQTT `PINGRESP`).
    fn pong(&mut self, key: usize) {
        if let Some(t) = self.sessions[key].ping_sent.take() {
            self.ping_samples.push(now_ns() - t);
        }
    }

    fn read_mqtt(&mut self, key: usize) {
        let mut buf = [0u8; 8192];
        let mut packets = Vec::new();
        let mut closed = false;
        {
            let s = &mut self.sessions[key];
            for _ in 0..256 {
                match io::Read::read(&mut s.tcp, &mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        s.mq_in.push(&buf[..n]);
                        loop {
                            match s.mq_in.next_packet() {
                                Ok(Some(p)) => packets.push(p),
                                Ok(None) => break,
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        for p in packets {
            self.on_packet(key, p);
        }
        self.flush_tcp(key);
        if closed {
            self.close(key, Some("eof"));
        }
    }

    fn on_packet(&mut self, key: usize, p: mqtt::Packet) {
        let phase = self.sessions[key].phase;
        match p {
            mqtt::Packet::ConnAck { return_code } if phase == Phase::ConnAckWait => {
                if return_code != 0 {
                    say(&format!("ERROR CONNACK return code {return_code}"));
                    return self.close(key, None);
                }
                let s = &mut self.sessions[key];
                if s.role == Role::Sender {
                    self.setup_done(key, true);
                } else {
                    s.phase = Phase::SubAckWait;
                    mqtt::subscribe(&mut s.mq_out, 1, TOPIC, 1);
                }
            }
            mqtt::Packet::SubAck { granted, .. } if phase == Phase::SubAckWait => {
                if granted.first() == Some(&1) {
                    self.setup_done(key, true);
                } else {
                    say(&format!("ERROR SUBACK granted {granted:?}"));
                    self.close(key, None);
                }
            }
            mqtt::Packet::Publish {
                qos,
                packet_id,
                payload,
                ..
            } => {
                if qos == 1 {
                    if let Some(id) = packet_id {
                        mqtt::puback(&mut self.sessions[key].mq_out, id);
                    }
                }
                // MQTT has no message id across subscribers; the stamp is unique.
                let text = String::from_utf8_lossy(&payload).into_owned();
                let uid = parse_stamp(&text).map_or(0, |(_, t)| t);
                self.delivered(key, uid, &text, None);
            }
            // MQTT's PUBACK carries no reach; the SENT line says 0.
            mqtt::Packet::PubAck { .. } => self.broadcast_answered(key, 0, 0, 0),
            mqtt::Packet::PingResp => self.pong(key),
            other => say(&format!("ERROR unexpected MQTT packet {other:?}")),
        }
    }
}

/// Writes `buf[*pos..]` until done or `WouldBlock`; clears it when all is out.
/// `SIOCGSTAMPNS`: the kernel's receive time (CLOCK_REALTIME) of the last
/// datagram read from a socket. Its first call turns the stamping on (and
/// fails with `ENOENT`: nothing read yet); the kernel then stamps each
/// datagram as it enters the loopback receive path, during the server's send.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

fn enable_arrival_stamps(udp: &UdpSocket) {
    let _ = last_arrival_real_ns(udp);
}

fn last_arrival_real_ns(udp: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the ioctl writes one timespec to a valid pointer.
    let rc = unsafe { libc::ioctl(udp.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) };
    (rc == 0 && ts.tv_sec > 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, to put kernel stamps on the
/// benchmark's monotonic clock.
fn realtime_offset_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Cannot fail for CLOCK_REALTIME with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    let real = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
    real - now_ns() as i128
}

fn write_raw(w: &mut impl Write, buf: &mut Vec<u8>, pos: &mut usize) -> io::Result<bool> {
    while *pos < buf.len() {
        match w.write(&buf[*pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if *pos == buf.len() {
        buf.clear();
        *pos = 0;
        Ok(true)
    } else {
        Ok(false)
    }
}
