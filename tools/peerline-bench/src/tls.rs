//! `peerline-bench tls`: what TLS costs, peerline beside mosquitto, in one run.
//!
//! Four servers, one after the other, each fresh and pinned to its CPU:
//! peerline with plaintext sessions, peerline with TLS sessions (sealed
//! datagrams), mosquitto on a plain listener, mosquitto on a TLS listener
//! (`certfile`/`keyfile`, the pair generated the way peerline generates its
//! own). Against each, one mio loop in this process (pinned to the other CPU):
//! 1. **Opens**: H connections, W at a time, each from TCP connect to the
//!    first answer (peerline: `PING` → `OK PING`, so a TLS open includes the
//!    whole handshake; MQTT: `CONNECT` → `CONNACK`, which also checks the
//!    password: mosquitto has nothing lighter before it), then closed. For
//!    TLS rows that is handshakes per second.
//! 2. **Memory**: S receivers and one sender log in (peerline sessions also
//!    register their UDP endpoint: sealed `REGISTER`, `CHALLENGE`, sealed
//!    `REGISTER <cookie>`; MQTT sessions SUBSCRIBE at QoS 1); server RSS
//!    from `/proc` before and after, ÷ (S + 1).
//! 3. **Deliveries**: the sender sends B broadcasts (at most `bwindow`
//!    unanswered; MQTT: QoS 1 PUBLISH); every receiver acknowledges every one
//!    (peerline: `ACK <id>`, sealed for TLS sessions; MQTT: PUBACK).
//!    Deliveries/s = S·B ÷ (last delivery − first send); server CPU from
//!    `/proc/PID/stat` over the same span (+0.3 s for trailing ACKs).
//!
//! Invariants:
//! - Every wait is bounded ([`PHASE_LIMIT`]); a phase that runs out reports
//!   what it got and an error, never a made-up figure.
//! - TLS sessions speak exactly what `peerline-client` speaks: its
//!   [`ServerTls`] (server key pinned by fingerprint), its [`Layer`] for the
//!   records, the exporter secret and [`Channel`] for datagrams. MQTT bytes
//!   are not lines, so they go through [`read_raw`] instead of the layer's
//!   line reader; writes go through [`Layer::flush`] for both.
//! - Loopback only; servers are our children, stopped by PID.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use peerline::client::pin::{ServerTls, TrustOptions};
use peerline::netio::{OutBuffer, ReadStatus};
use peerline::proto::names::Token as SessionToken;
use peerline::proto::sealed::{self, Channel, Role};
use peerline::proto::{
    ClientDatagram, Command, Frame, LineReader, OkReply, ServerDatagram, ServerLine, UdpRequest,
};
use peerline::tls::{Fingerprint, Layer};

use crate::clock::now_ns;
use crate::fleet::Res;
use crate::mqtt;
use crate::procfs;
use crate::report::Machine;
use crate::servers::{self, Server};

/// The longest any phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
const REGISTER_RETRY_NS: u64 = 300_000_000;
const PASSWORD: &str = "bench-password";
const PREFIX: &str = "t";
const TOPIC: &str = "bench/tls";
/// The generated section of `docs/BENCHMARKS.md` sits between these.
pub const BEGIN: &str = "<!-- peerline-bench tls: begin (generated, do not edit) -->";
pub const END: &str = "<!-- peerline-bench tls: end -->";

pub struct Args {
    pub server: PathBuf,
    pub handshakes: usize,
    pub window: usize,
    pub sessions: usize,
    pub broadcasts: usize,
    pub bwindow: usize,
    pub pad: usize,
    pub kdf_iterations: u32,
    pub server_cpu: Option<usize>,
    pub tool_cpu: Option<usize>,
    pub no_mosquitto: bool,
    pub out_md: Option<PathBuf>,
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sys {
    Peerline,
    Mqtt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

/// One server's figures; `None` where a phase failed.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub opens_per_s: Option<f64>,
    pub open_p50_ms: Option<f64>,
    pub kb_per_session: Option<f64>,
    pub deliveries_per_s: Option<f64>,
    pub cpu_ms_per_1000: Option<f64>,
    /// Share of one CPU this process (the load generator) used over the
    /// delivery phase: near 1.0, deliveries/s measures the tool, not the server.
    pub tool_busy: Option<f64>,
    pub delivered: u64,
    pub expected: u64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Opens phase: waiting for the first answer.
    Probe,
    LoginWait,
    RegisterWait,
    SubAckWait,
    Ready,
    Closed,
}

struct Conn {
    tcp: TcpStream,
    layer: Layer,
    out: OutBuffer,
    lines: LineReader,
    mq: mqtt::Reader,
    st: St,
    started: u64,
    udp: Option<UdpSocket>,
    chan: Option<Channel>,
    token: Option<SessionToken>,
    register_at: u64,
    seen: HashSet<u64>,
    sender: bool,
}

/// The load side: one mio loop over every connection to one server.
struct Load {
    sys: Sys,
    transport: Transport,
    server: SocketAddr,
    tls: Option<ServerTls>,
    poll: Poll,
    conns: Slab<Conn>,
    /// Opens finished (latencies, ns) and failed.
    opened: Vec<u64>,
    failed: u64,
    ready: usize,
    deliveries: u64,
    last_delivery: u64,
    /// Sender: broadcasts sent and answered.
    sent: usize,
    answered: usize,
    next_packet_id: u16,
    errors: Vec<String>,
}

fn tok_tcp(key: usize) -> Token {
    Token(2 * key)
}
fn tok_udp(key: usize) -> Token {
    Token(2 * key + 1)
}

/// Reads what the socket has (bounded) and hands the plaintext bytes to
/// `on_bytes`; decrypts for TLS. True once the peer closed.
fn read_raw(layer: &mut Layer, sock: &mut impl Read, mut on_bytes: impl FnMut(&[u8])) -> bool {
    let mut chunk = [0u8; 16384];
    for _ in 0..64 {
        match layer {
            Layer::Tls(t) => {
                let got = match t.read_tls(sock) {
                    Ok(0) => return true,
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return true,
                };
                let Ok(state) = t.process_new_packets() else {
                    return true;
                };
                let mut left = state.plaintext_bytes_to_read();
                while left > 0 {
                    match t.reader().read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            left = left.saturating_sub(n);
                            on_bytes(&chunk[..n]);
                        }
                    }
                }
                if state.peer_has_closed() {
                    return true;
                }
                if !got {
                    return false;
                }
            }
            _ => match sock.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => on_bytes(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            },
        }
    }
    false
}

impl Load {
    fn new(
        sys: Sys,
        transport: Transport,
        server: SocketAddr,
        fp: Option<Fingerprint>,
    ) -> Res<Load> {
        let tls = match transport {
            Transport::Plain => None,
            Transport::Tls => {
                let opts = TrustOptions {
                    fingerprint: fp,
                    ..TrustOptions::default()
                };
                Some(ServerTls::new(
                    &server.ip().to_string(),
                    server.port(),
                    opts,
                )?)
            }
        };
        Ok(Load {
            sys,
            transport,
            server,
            tls,
            poll: Poll::new().map_err(|e| e.to_string())?,
            conns: Slab::new(),
            opened: Vec::new(),
            failed: 0,
            ready: 0,
            deliveries: 0,
            last_delivery: 0,
            sent: 0,
            answered: 0,
            next_packet_id: 1,
            errors: Vec::new(),
        })
    }

    fn note_error(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }

    /// Opens one connection; the first bytes are queued at once (rustls
    /// holds them until its handshake is done).
    fn open(&mut self, index: usize, st: St, sender: bool) -> Res<usize> {
        let mut tcp = TcpStream::connect(self.server).map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let layer = match &self.tls {
            Some(t) => t.layer()?,
            None => Layer::Plain,
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut tcp,
                tok_tcp(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        let mut c = Conn {
            tcp,
            layer,
            out: OutBuffer::with_cap(1 << 20),
            lines: LineReader::new(),
            mq: mqtt::Reader::default(),
            st,
            started: now_ns(),
            udp: None,
            chan: None,
            token: None,
            register_at: 0,
            seen: HashSet::new(),
            sender,
        };
        let user = format!("{PREFIX}{index}");
        match (self.sys, st) {
            (Sys::Peerline, St::Probe) => {
                let _ = c.out.push_line(&Command::Ping.to_string());
            }
            (Sys::Peerline, _) => {
                c.st = St::LoginWait;
                let _ = c.out.push_line(
                    &Command::Login {
                        user,
                        password: PASSWORD.into(),
                    }
                    .to_string(),
                );
            }
            (Sys::Mqtt, _) => {
                let mut b = Vec::new();
                let id = format!("c{}-{}", key, now_ns());
                mqtt::connect(&mut b, &id, &user, PASSWORD, 600);
                let _ = c.out.push_bytes(&b);
            }
        }
        entry.insert(c);
        Ok(key)
    }

    fn close(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.tcp);
            if let Some(u) = c.udp.as_mut() {
                let _ = self.poll.registry().deregister(u);
            }
            if c.st == St::Ready {
                self.ready -= 1;
            }
        }
    }

    fn fail(&mut self, key: usize, why: String) {
        self.failed += 1;
        self.note_error(why);
        self.close(key);
    }

    /// One turn of the loop: waits at most `wait`, handles what came.
    fn turn(&mut self, events: &mut Events, wait: Duration) {
        let _ = self.poll.poll(events, Some(wait));
        let toks: Vec<Token> = events.iter().map(|e| e.token()).collect();
        for t in toks {
            let key = t.0 / 2;
            if !self.conns.contains(key) {
                continue;
            }
            if t.0 % 2 == 0 {
                self.on_tcp(key);
            } else {
                self.on_udp(key);
            }
        }
        self.timers();
    }

    fn flush(&mut self, key: usize) -> bool {
        let c = &mut self.conns[key];
        match c.layer.flush(&mut c.out, &mut c.tcp) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => true,
            Err(e) => {
                self.fail(key, format!("write: {e}"));
                false
            }
        }
    }

    fn on_tcp(&mut self, key: usize) {
        if !self.flush(key) {
            return;
        }
        let c = &mut self.conns[key];
        let mut lines = Vec::new();
        let mut packets = Vec::new();
        let mut bad = false;
        let closed = match self.sys {
            Sys::Peerline => {
                let mut status = ReadStatus::MoreWaiting;
                let mut rounds = 0;
                while status == ReadStatus::MoreWaiting && rounds < 64 {
                    rounds += 1;
                    status = match c.layer.read_frames(&mut c.tcp, &mut c.lines, |f| {
                        if let Frame::Line(l) = f {
                            lines.push(l)
                        }
                    }) {
                        Ok(s) => s,
                        Err(e) => {
                            bad = true;
                            lines.push(format!("TLS-FAILURE {e}"));
                            ReadStatus::Closed
                        }
                    };
                }
                status == ReadStatus::Closed
            }
            Sys::Mqtt => {
                let mq = &mut c.mq;
                let closed = read_raw(&mut c.layer, &mut c.tcp, |b| mq.push(b));
                loop {
                    match mq.next_packet() {
                        Ok(Some(p)) => packets.push(p),
                        Ok(None) => break,
                        Err(_) => {
                            bad = true;
                            break;
                        }
                    }
                }
                closed
            }
        };
        for l in lines {
            if !self.conns.contains(key) {
                return;
            }
            self.on_line(key, &l);
        }
        for p in packets {
            if !self.conns.contains(key) {
                return;
            }
            self.on_packet(key, p);
        }
        if !self.conns.contains(key) {
            return;
        }
        if bad || closed {
            let st = self.conns[key].st;
            if st != St::Closed {
                self.fail(key, format!("connection closed by the server in {st:?}"));
            }
            return;
        }
        // Reading may have made rustls want to write (handshake, replies).
        self.flush(key);
    }

    fn push_line(&mut self, key: usize, line: &str) {
        let _ = self.conns[key].out.push_line(line);
        self.flush(key);
    }

    fn push_bytes(&mut self, key: usize, b: &[u8]) {
        let _ = self.conns[key].out.push_bytes(b);
        self.flush(key);
    }

    fn probe_done(&mut self, key: usize) {
        let took = now_ns().saturating_sub(self.conns[key].started);
        self.opened.push(took);
        // A TLS close is announced (close_notify), as a well-behaved client does.
        let c = &mut self.conns[key];
        c.layer.close_notify();
        let _ = c.layer.flush(&mut c.out, &mut c.tcp);
        c.st = St::Closed;
        self.close(key);
    }

    fn set_ready(&mut self, key: usize) {
        self.conns[key].st = St::Ready;
        self.ready += 1;
    }

    fn on_line(&mut self, key: usize, line: &str) {
        if let Some(e) = line.strip_prefix("TLS-FAILURE ") {
            return self.fail(key, e.to_string());
        }
        let st = self.conns[key].st;
        match ServerLine::parse(line) {
            Some(ServerLine::Ok(OkReply::Ping)) if st == St::Probe => self.probe_done(key),
            Some(ServerLine::Ok(OkReply::Login { token, .. })) if st == St::LoginWait => {
                if self.conns[key].sender {
                    self.set_ready(key);
                    return;
                }
                if let Err(e) = self.open_udp(key, token) {
                    self.fail(key, format!("udp: {e}"));
                }
            }
            Some(ServerLine::Ok(OkReply::Broadcast { .. })) => self.answered += 1,
            Some(ServerLine::Event(peerline::proto::Event::Broadcast { id, .. })) => {
                self.delivered(key, id)
            }
            Some(ServerLine::Err { code, text }) => {
                let e = format!("server: ERR {} {text} (in {st:?})", code.code());
                if self.conns[key].sender && st == St::Ready {
                    self.answered += 1;
                    self.note_error(e);
                } else {
                    self.fail(key, e);
                }
            }
            _ => {}
        }
    }

    fn on_packet(&mut self, key: usize, p: mqtt::Packet) {
        let st = self.conns[key].st;
        match p {
            mqtt::Packet::ConnAck { return_code: 0 } if st == St::Probe => self.probe_done(key),
            mqtt::Packet::ConnAck { return_code: 0 } => {
                if self.conns[key].sender {
                    self.set_ready(key);
                } else {
                    self.conns[key].st = St::SubAckWait;
                    let mut b = Vec::new();
                    mqtt::subscribe(&mut b, 1, TOPIC, 1);
                    self.push_bytes(key, &b);
                }
            }
            mqtt::Packet::ConnAck { return_code } => {
                self.fail(key, format!("CONNACK refused ({return_code})"))
            }
            mqtt::Packet::SubAck { .. } if st == St::SubAckWait => self.set_ready(key),
            mqtt::Packet::Publish { packet_id, .. } => {
                if let Some(pid) = packet_id {
                    let mut b = Vec::new();
                    mqtt::puback(&mut b, pid);
                    self.push_bytes(key, &b);
                }
                // MQTT ids are per-connection packet ids, reused; count each.
                self.deliveries += 1;
                self.last_delivery = now_ns();
            }
            mqtt::Packet::PubAck { .. } => self.answered += 1,
            _ => {}
        }
    }

    fn open_udp(&mut self, key: usize, token: SessionToken) -> io::Result<()> {
        let mut udp = UdpSocket::bind("127.0.0.1:0".parse().expect("literal"))?;
        self.poll
            .registry()
            .register(&mut udp, tok_udp(key), Interest::READABLE)?;
        let c = &mut self.conns[key];
        c.chan = match self.transport {
            Transport::Tls => {
                let secret = c
                    .layer
                    .udp_secret()
                    .ok_or_else(|| io::Error::other("a TLS session without an exporter secret"))?;
                Some(Channel::new(&secret, Role::Client))
            }
            Transport::Plain => None,
        };
        c.token = Some(token);
        c.udp = Some(udp);
        c.st = St::RegisterWait;
        self.send_udp(key, UdpRequest::Register { cookie: None });
        Ok(())
    }

    /// Sends `req` as `peerline-client` would: sealed (a `REGISTER` padded)
    /// on a TLS session, in clear with the token otherwise.
    fn send_udp(&mut self, key: usize, req: UdpRequest) {
        let server = self.server;
        let c = &mut self.conns[key];
        if matches!(req, UdpRequest::Register { .. }) {
            c.register_at = now_ns() + REGISTER_RETRY_NS;
        }
        let bytes = match c.chan.as_mut() {
            Some(ch) => ch.seal_request(&req),
            None => c
                .token
                .clone()
                .map(|token| ClientDatagram::new(token, req).wire()),
        };
        if let (Some(b), Some(u)) = (bytes, c.udp.as_ref()) {
            // A full send buffer loses the datagram; the server resends an
            // unacknowledged BCAST and REGISTER is retried.
            let _ = u.send_to(&b, server);
        }
    }

    fn on_udp(&mut self, key: usize) {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        {
            let c = &mut self.conns[key];
            let Some(u) = c.udp.as_ref() else { return };
            for _ in 0..4096 {
                match u.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let d = match c.chan.as_mut() {
                            Some(ch) => match ch.open(&buf[..n]) {
                                Ok(body) => ServerDatagram::parse(sealed::unpad(&body)),
                                Err(_) => None,
                            },
                            None => ServerDatagram::parse(&buf[..n]),
                        };
                        got.extend(d);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        for d in got {
            let st = self.conns[key].st;
            match d {
                ServerDatagram::Challenge { cookie } if st == St::RegisterWait => {
                    self.send_udp(
                        key,
                        UdpRequest::Register {
                            cookie: Some(cookie),
                        },
                    );
                }
                ServerDatagram::Registered if st == St::RegisterWait => self.set_ready(key),
                ServerDatagram::Bcast { id, .. } => {
                    self.send_udp(key, UdpRequest::Ack { id });
                    self.delivered(key, id);
                }
                _ => {}
            }
        }
    }

    fn delivered(&mut self, key: usize, id: u64) {
        let c = &mut self.conns[key];
        if c.sender || !c.seen.insert(id) {
            return;
        }
        self.deliveries += 1;
        self.last_delivery = now_ns();
    }

    fn timers(&mut self) {
        let now = now_ns();
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.st == St::RegisterWait && c.register_at <= now)
            .map(|(k, _)| k)
            .collect();
        for k in due {
            self.send_udp(k, UdpRequest::Register { cookie: None });
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.close(k);
        }
    }

    /// Phase 1: `n` opens, `window` at a time. (opens/s, p50 ms)
    fn opens(&mut self, n: usize, window: usize, users: usize) -> Res<(f64, f64)> {
        let mut events = Events::with_capacity(1024);
        let t0 = now_ns();
        let limit = t0 + PHASE_LIMIT.as_nanos() as u64;
        let mut started = 0;
        while self.opened.len() + (self.failed as usize) < n {
            while started < n && self.conns.len() < window {
                self.open(started % users.max(1), St::Probe, false)?;
                started += 1;
            }
            if now_ns() > limit {
                return Err(format!(
                    "opens: {} of {n} within {PHASE_LIMIT:?}",
                    self.opened.len()
                ));
            }
            self.turn(&mut events, Duration::from_millis(50));
        }
        let secs = (now_ns() - t0) as f64 / 1e9;
        if self.failed > 0 {
            return Err(format!(
                "opens: {} of {n} failed: {:?}",
                self.failed, self.errors
            ));
        }
        self.opened.sort_unstable();
        let p50 = self.opened[self.opened.len() / 2] as f64 / 1e6;
        Ok((n as f64 / secs, p50))
    }

    /// Phase 2: `receivers` + 1 sender logged in (and registered / subscribed).
    fn sessions(&mut self, receivers: usize, window: usize) -> Res<usize> {
        let mut events = Events::with_capacity(1024);
        let limit = now_ns() + PHASE_LIMIT.as_nanos() as u64;
        let total = receivers + 1;
        let mut started = 0;
        let mut sender = None;
        while self.ready < total {
            while started < total && self.conns.len() - self.ready < window {
                let is_sender = started == receivers;
                let k = self.open(started, St::LoginWait, is_sender)?;
                if is_sender {
                    sender = Some(k);
                }
                started += 1;
            }
            if self.failed > 0 {
                return Err(format!("session setup failed: {:?}", self.errors));
            }
            if now_ns() > limit {
                return Err(format!(
                    "sessions: {} of {total} ready within {PHASE_LIMIT:?}",
                    self.ready
                ));
            }
            self.turn(&mut events, Duration::from_millis(50));
        }
        sender.ok_or_else(|| "no sender".into())
    }

    /// Phase 3: `count` broadcasts, `window` unanswered at most; returns
    /// (deliveries, first send ns, last delivery ns).
    fn deliver(
        &mut self,
        sender: usize,
        count: usize,
        window: usize,
        expected: u64,
        pad: usize,
    ) -> (u64, u64, u64) {
        let mut events = Events::with_capacity(4096);
        let text = format!("m {}", "x".repeat(pad));
        let t0 = now_ns();
        let limit = t0 + PHASE_LIMIT.as_nanos() as u64;
        while (self.deliveries < expected || self.answered < count) && now_ns() < limit {
            while self.sent < count && self.sent - self.answered < window {
                if !self.conns.contains(sender) {
                    break;
                }
                match self.sys {
                    Sys::Peerline => self.push_line(
                        sender,
                        &Command::Broadcast {
                            text: format!("{} {text}", self.sent),
                        }
                        .to_string(),
                    ),
                    Sys::Mqtt => {
                        let mut b = Vec::new();
                        let pid = self.next_packet_id;
                        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
                        mqtt::publish(&mut b, TOPIC, 1, pid, text.as_bytes());
                        self.push_bytes(sender, &b);
                    }
                }
                self.sent += 1;
            }
            self.turn(&mut events, Duration::from_millis(20));
        }
        (self.deliveries, t0, self.last_delivery)
    }
}

/// Runs the three phases against one server.
fn measure(
    sys: Sys,
    transport: Transport,
    server: &Server,
    fp: Option<Fingerprint>,
    a: &Args,
) -> Figures {
    let mut f = Figures {
        expected: (a.sessions * a.broadcasts) as u64,
        ..Figures::default()
    };
    let result = (|| -> Res<()> {
        let mut load = Load::new(sys, transport, server.addr, fp)?;
        let (rate, p50) = load.opens(a.handshakes, a.window, a.sessions + 1)?;
        f.opens_per_s = Some(rate);
        f.open_p50_ms = Some(p50);
        std::thread::sleep(Duration::from_millis(300));
        let before = procfs::status(server.pid)
            .map_err(|e| e.to_string())?
            .rss_kb;
        let sender = load.sessions(a.sessions, a.window)?;
        std::thread::sleep(Duration::from_millis(500));
        let after = procfs::status(server.pid)
            .map_err(|e| e.to_string())?
            .rss_kb;
        f.kb_per_session = Some(after.saturating_sub(before) as f64 / (a.sessions + 1) as f64);
        let cpu0 = procfs::cpu(server.pid).map_err(|e| e.to_string())?.total();
        let me = std::process::id();
        let tool0 = procfs::cpu(me).map_err(|e| e.to_string())?.total();
        let (got, t0, last) = load.deliver(sender, a.broadcasts, a.bwindow, f.expected, a.pad);
        // Trailing ACKs still cost the server.
        let mut events = Events::with_capacity(1024);
        let settle = now_ns() + 300_000_000;
        while now_ns() < settle {
            load.turn(&mut events, Duration::from_millis(20));
        }
        let cpu1 = procfs::cpu(server.pid).map_err(|e| e.to_string())?.total();
        let tool1 = procfs::cpu(me).map_err(|e| e.to_string())?.total();
        let span_ms = (now_ns() - t0) as f64 / 1e6;
        if span_ms > 0.0 {
            f.tool_busy = Some((tool1 - tool0) as f64 * procfs::ms_per_tick() / span_ms);
        }
        f.delivered = got;
        if got > 0 && last > t0 {
            f.deliveries_per_s = Some(got as f64 / ((last - t0) as f64 / 1e9));
            f.cpu_ms_per_1000 =
                Some((cpu1 - cpu0) as f64 * procfs::ms_per_tick() * 1000.0 / got as f64);
        }
        if got < f.expected {
            f.errors.push(format!(
                "deliveries: {got} of {} within {PHASE_LIMIT:?} ({:?})",
                f.expected, load.errors
            ));
        }
        load.close_all();
        Ok(())
    })();
    if let Err(e) = result {
        f.errors.push(e);
    }
    f
}

/// The four columns of the table, in order.
pub struct Results {
    pub peer_plain: Figures,
    pub peer_tls: Figures,
    pub mosq_plain: Option<Figures>,
    pub mosq_tls: Option<Figures>,
    pub mosquitto_note: String,
    pub wall_secs: f64,
    /// `/proc/loadavg`'s 1-minute figure when the run started (the machine is shared).
    pub load_at_start: String,
}

impl Results {
    fn all(&self) -> impl Iterator<Item = (&'static str, &Figures)> {
        [
            Some(("peerline plaintext", &self.peer_plain)),
            Some(("peerline TLS", &self.peer_tls)),
            self.mosq_plain.as_ref().map(|f| ("mosquitto plaintext", f)),
            self.mosq_tls.as_ref().map(|f| ("mosquitto TLS", f)),
        ]
        .into_iter()
        .flatten()
    }

    pub fn failed(&self) -> bool {
        self.all().any(|(_, f)| !f.errors.is_empty())
    }
}

fn peerline_figures(a: &Args, transport: Transport) -> Figures {
    let server = match Server::start_peerline(
        &a.server,
        Some(a.kdf_iterations),
        a.server_cpu,
        a.sessions + 1,
        PREFIX,
        PASSWORD,
    ) {
        Ok(s) => s,
        Err(e) => {
            return Figures {
                errors: vec![e],
                ..Figures::default()
            }
        }
    };
    let fp = match transport {
        Transport::Plain => Ok(None),
        // The server generated its pair before it said it was listening.
        Transport::Tls => peerline::server::tls::fingerprint_of(server.dir(), None, None).map(Some),
    };
    let f = match fp {
        Ok(fp) => measure(Sys::Peerline, transport, &server, fp, a),
        Err(e) => Figures {
            errors: vec![e],
            ..Figures::default()
        },
    };
    server.stop();
    f
}

fn mosquitto_figures(a: &Args, transport: Transport) -> Figures {
    let run = || -> Res<Figures> {
        let (tls, fp, dir) = match transport {
            Transport::Plain => (None, None, None),
            Transport::Tls => {
                // A pair generated exactly as peerline-server generates its own.
                let dir = servers::temp_dir("mosquitto-cert")?;
                let fp = peerline::server::tls::fingerprint_of(&dir, None, None)?;
                let files = servers::TlsFiles {
                    cert: dir.join(peerline::server::tls::GENERATED_CERT),
                    key: dir.join(peerline::server::tls::GENERATED_KEY),
                };
                (Some(files), Some(fp), Some(dir))
            }
        };
        let server = Server::start_mosquitto_with(
            a.sessions + 1,
            PREFIX,
            PASSWORD,
            a.server_cpu,
            tls.as_ref(),
        );
        let f = server.map(|s| {
            let f = measure(Sys::Mqtt, transport, &s, fp, a);
            s.stop();
            f
        });
        if let Some(d) = dir {
            let _ = std::fs::remove_dir_all(d);
        }
        f
    };
    run().unwrap_or_else(|e| Figures {
        errors: vec![e],
        ..Figures::default()
    })
}

pub fn run(a: &Args) -> Res<Results> {
    if !a.server.is_file() {
        return Err(format!(
            "peerline-server not found at {} (cargo build --release, or pass --server)",
            a.server.display()
        ));
    }
    if a.handshakes == 0 || a.sessions == 0 || a.broadcasts == 0 || a.window == 0 {
        return Err("--handshakes, --sessions, --broadcasts and --window must be positive".into());
    }
    let need = 2 * (a.sessions as u64 + a.window as u64) + 64;
    if procfs::fd_limit() < need {
        return Err(format!(
            "open-file limit {} is below the {need} this run needs; lower --sessions or raise `ulimit -n`",
            procfs::fd_limit()
        ));
    }
    if let Some(c) = a.tool_cpu {
        let _ = crate::clock::pin_to_cpu(c);
    }
    let t0 = now_ns();
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    eprintln!("tls bench: peerline plaintext");
    let peer_plain = peerline_figures(a, Transport::Plain);
    eprintln!("tls bench: peerline TLS");
    let peer_tls = peerline_figures(a, Transport::Tls);
    let (mut mosq_plain, mut mosq_tls) = (None, None);
    let mosquitto_note = if a.no_mosquitto {
        "not run (--no-mosquitto)".to_string()
    } else if servers::which("mosquitto").is_none() {
        "not installed; peerline reported alone (tools/bench.sh installs it)".to_string()
    } else {
        eprintln!("tls bench: mosquitto plaintext");
        mosq_plain = Some(mosquitto_figures(a, Transport::Plain));
        eprintln!("tls bench: mosquitto TLS");
        mosq_tls = Some(mosquitto_figures(a, Transport::Tls));
        servers::mosquitto_version().unwrap_or_else(|| "mosquitto".into())
    };
    Ok(Results {
        peer_plain,
        peer_tls,
        mosq_plain,
        mosq_tls,
        mosquitto_note,
        wall_secs: (now_ns() - t0) as f64 / 1e9,
        load_at_start,
    })
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or("failed".into(), |v| format!("{v:.decimals$}"))
}

/// TLS ÷ plaintext, when both exist.
fn ratio(tls: Option<f64>, plain: Option<f64>) -> Option<f64> {
    match (tls, plain) {
        (Some(t), Some(p)) if p > 0.0 => Some(t / p),
        _ => None,
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}×"))
}

/// The cost of TLS in each row, as a factor where higher is worse:
/// time per open and per delivery are the inverses of the rates.
struct Row {
    name: &'static str,
    get: fn(&Figures) -> Option<f64>,
    decimals: usize,
    /// Rates: TLS costs plain ÷ TLS; amounts: TLS ÷ plain.
    rate: bool,
}

const ROWS: [Row; 5] = [
    Row {
        name: "opens/s (TLS: handshakes/s)",
        get: |f| f.opens_per_s,
        decimals: 0,
        rate: true,
    },
    Row {
        name: "open latency p50 (ms)",
        get: |f| f.open_p50_ms,
        decimals: 2,
        rate: false,
    },
    Row {
        name: "server memory per session (KiB, RSS delta ÷ sessions)",
        get: |f| f.kb_per_session,
        decimals: 1,
        rate: false,
    },
    Row {
        name: "acknowledged deliveries/s",
        get: |f| f.deliveries_per_s,
        decimals: 0,
        rate: true,
    },
    Row {
        name: "server CPU per 1,000 deliveries (ms)",
        get: |f| f.cpu_ms_per_1000,
        decimals: 1,
        rate: false,
    },
];

fn cost(row: &Row, tls: &Figures, plain: &Figures) -> Option<f64> {
    let (t, p) = ((row.get)(tls), (row.get)(plain));
    if row.rate {
        ratio(p, t)
    } else {
        ratio(t, p)
    }
}

/// The report section (between [`BEGIN`] and [`END`]).
pub fn markdown(r: &Results, a: &Args, m: &Machine, command: &str) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "{BEGIN}");
    let _ = writeln!(w, "## TLS: what encryption costs, beside mosquitto\n");
    let _ = writeln!(
        w,
        "Generated by `{command}`: the `tls` mode of `tools/peerline-bench`, which `tools/bench.sh` runs after the tables above. \
         Run {}, took {:.0} s.\n",
        m.date, r.wall_secs
    );
    let _ = writeln!(
        w,
        "- Machine: {}; {} cores; {:.0} GiB RAM; Linux {}; load average {} when the run started (shared machine: \
         other work ran beside it). Server pinned to CPU {}, the tool to CPU {}; loopback only. mosquitto: {}.",
        m.cpu,
        m.cores,
        m.mem_gib,
        m.kernel,
        r.load_at_start,
        a.server_cpu.map_or("any".into(), |c| c.to_string()),
        a.tool_cpu.map_or("any".into(), |c| c.to_string()),
        r.mosquitto_note
    );
    let _ = writeln!(
        w,
        "- Size (modest: the machine is shared): {} opens, {} at a time; {} receiving sessions + 1 sender; {} broadcasts of {} bytes \
         of padding, at most {} unanswered, so {} acknowledged deliveries per column. peerline accounts at `--kdf-iterations {}`; \
         mosquitto uses its own default password hash.",
        a.handshakes,
        a.window,
        a.sessions,
        a.broadcasts,
        a.pad,
        a.bwindow,
        a.sessions * a.broadcasts,
        a.kdf_iterations
    );
    let _ = writeln!(
        w,
        "- Opens: TCP connect to the first answer, then closed. peerline: `PING` → `OK PING` (TLS: the whole handshake, \
         ECDSA P-256 certificate, pinned by fingerprint as `peerline-client` does); MQTT: `CONNECT` → `CONNACK` (includes its \
         password check; TLS: the same kind of certificate). Memory: fresh server, RSS before and 0.5 s after the sessions \
         logged in (peerline sessions also registered UDP; TLS sessions with sealed datagrams, exporter keys). Deliveries: \
         every receiver acknowledges every broadcast (peerline `ACK` datagrams, sealed on TLS sessions; MQTT QoS 1 PUBACK); \
         deliveries/s over first send → last delivery; CPU from `/proc/PID/stat` (10 ms ticks) over that span + 0.3 s.\n"
    );
    let mosq = r.mosq_plain.is_some();
    if mosq {
        let _ = writeln!(
            w,
            "| | peerline plaintext | peerline TLS | TLS cost | mosquitto plaintext | mosquitto TLS | TLS cost | peerline TLS vs mosquitto TLS |"
        );
        let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    } else {
        let _ = writeln!(w, "| | peerline plaintext | peerline TLS | TLS cost |");
        let _ = writeln!(w, "| --- | ---: | ---: | ---: |");
    }
    let empty = Figures::default();
    let mp = r.mosq_plain.as_ref().unwrap_or(&empty);
    let mt = r.mosq_tls.as_ref().unwrap_or(&empty);
    for row in &ROWS {
        let (pp, pt) = ((row.get)(&r.peer_plain), (row.get)(&r.peer_tls));
        let _ = write!(
            w,
            "| {} | {} | {} | {}",
            row.name,
            cell(pp, row.decimals),
            cell(pt, row.decimals),
            ratio_cell(cost(row, &r.peer_tls, &r.peer_plain))
        );
        if mosq {
            let mtv = (row.get)(mt);
            let ahead = match (pt, mtv) {
                (Some(p), Some(q)) if p == q => "even",
                (Some(p), Some(q)) if (p > q) == row.rate => "peerline ahead",
                (Some(_), Some(_)) => "**mosquitto ahead**",
                _ => "-",
            };
            let _ = write!(
                w,
                " | {} | {} | {} | {ahead}",
                cell((row.get)(mp), row.decimals),
                cell(mtv, row.decimals),
                ratio_cell(cost(row, mt, mp))
            );
        }
        let _ = writeln!(w, " |");
    }
    let _ = writeln!(
        w,
        "\n\"TLS cost\" is how many times the plaintext figure TLS needs (time per open or per delivery for the rates, \
         KiB or CPU ms for the amounts): 1.00× is free."
    );
    let busy: Vec<String> = r
        .all()
        .map(|(name, f)| {
            let share = f
                .tool_busy
                .map_or("-".into(), |b| format!("{:.0}%", b * 100.0));
            format!("{name} {share}")
        })
        .collect();
    let _ = writeln!(
        w,
        "\nLoad generator busy during the deliveries (share of its CPU, first send to the end of the trailing 0.3 s): {}. \
         Near 100% the deliveries/s row measures the tool, not the server.",
        busy.join(", ")
    );
    let goal = |row: usize| cost(&ROWS[row], &r.peer_tls, &r.peer_plain);
    let verdict = |c: Option<f64>| match c {
        Some(c) if c <= 1.5 => format!("{c:.2}× — met"),
        Some(c) => format!("{c:.2}× — **not met**"),
        None => "not measured".into(),
    };
    let _ = writeln!(
        w,
        "\nGoal (issue 12: TLS sessions cost ≤ 1.5× plaintext): memory per session {}; CPU per delivery {}.",
        verdict(goal(2)),
        verdict(goal(4))
    );
    for (name, f) in r.all() {
        if f.delivered < f.expected && f.delivered > 0 {
            let _ = writeln!(
                w,
                "\n{name}: {} of {} deliveries arrived.",
                f.delivered, f.expected
            );
        }
        for e in &f.errors {
            let _ = writeln!(w, "\n{name}: {e}");
        }
    }
    let _ = writeln!(w, "{END}");
    s
}

/// `text` with its generated TLS section replaced by `section` (appended
/// when it has none).
pub fn splice(text: &str, section: &str) -> String {
    match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let after = &text[e + END.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{}{section}{after}", &text[..b])
        }
        _ => {
            let sep = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{text}{sep}{section}")
        }
    }
}

/// Runs, prints the section, and splices it into `--out-md`.
pub fn main(a: &Args, command: &str) -> Res<bool> {
    let r = run(a)?;
    let section = markdown(&r, a, &Machine::probe(), command);
    print!("{section}");
    if let Some(path) = &a.out_md {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, splice(&old, &section))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote the TLS section of {}", path.display());
    }
    Ok(!(a.strict && r.failed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_its_section_and_keeps_the_rest() {
        let a = format!("# B\n\ntext\n\n{BEGIN}\nold\n{END}\n## after\n");
        let out = splice(&a, &format!("{BEGIN}\nnew\n{END}\n"));
        assert_eq!(
            out,
            format!("# B\n\ntext\n\n{BEGIN}\nnew\n{END}\n## after\n")
        );
        let b = splice("# B\ntext\n", &format!("{BEGIN}\nx\n{END}\n"));
        assert_eq!(b, format!("# B\ntext\n\n{BEGIN}\nx\n{END}\n"));
        assert_eq!(splice(&b, &format!("{BEGIN}\nx\n{END}\n")), b);
    }

    #[test]
    fn the_report_says_how_busy_the_load_generator_was() {
        let a = Args {
            server: PathBuf::from("x"),
            handshakes: 1,
            window: 1,
            sessions: 1,
            broadcasts: 1,
            bwindow: 1,
            pad: 0,
            kdf_iterations: 1,
            server_cpu: None,
            tool_cpu: None,
            no_mosquitto: true,
            out_md: None,
            strict: false,
        };
        let busy = |b| Figures {
            tool_busy: Some(b),
            ..Figures::default()
        };
        let r = Results {
            peer_plain: busy(0.08),
            peer_tls: busy(0.93),
            mosq_plain: None,
            mosq_tls: None,
            mosquitto_note: String::new(),
            wall_secs: 1.0,
            load_at_start: "1.0".into(),
        };
        let m = Machine {
            cpu: "c".into(),
            cores: 2,
            mem_gib: 1.0,
            kernel: "k".into(),
            fd_limit: 1024,
            mosquitto: None,
            date: "d".into(),
        };
        let md = markdown(&r, &a, &m, "cmd");
        assert!(
            md.contains("Load generator busy")
                && md.contains("peerline plaintext 8%, peerline TLS 93%"),
            "{md}"
        );
    }

    #[test]
    fn tls_cost_is_inverse_for_rates() {
        let plain = Figures {
            opens_per_s: Some(1000.0),
            kb_per_session: Some(10.0),
            ..Figures::default()
        };
        let tls = Figures {
            opens_per_s: Some(500.0),
            kb_per_session: Some(15.0),
            ..Figures::default()
        };
        assert_eq!(cost(&ROWS[0], &tls, &plain), Some(2.0));
        assert_eq!(cost(&ROWS[2], &tls, &plain), Some(1.5));
        assert_eq!(cost(&ROWS[3], &tls, &plain), None);
    }
}
