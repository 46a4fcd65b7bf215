//! `peerline-bench restart-probe` (hidden): the restart storm's bystanders,
//! in a process of their own, so that what they measure is the server and
//! not the load generator's loop (which opens and drives 10,000 sessions on
//! the other side of the storm; a PING that waits for that loop to turn
//! measures the tool).
//!
//! Commanded over stdin, one line each, answered on stdout:
//! - `start <addr>`: (re)connect every bystander to `addr`, log in by
//!   password (accounts `<prefix>0…`, cheap hashes), then send `PING` on a
//!   fixed schedule; samples from before are dropped. No answer.
//! - `stop`: stop pinging, close the connections, answer with one line
//!   `stats <samples> <p50> <p99> <max> <unanswered> <logged-in>`
//!   (microseconds; `-` for no samples).
//!
//! Invariants:
//! - Pings go out on schedule whether or not the last one was answered
//!   (pipelined, answered in order): a server that stalls 500 ms is charged
//!   every ping that waited, not one per bystander (no coordinated omission).
//!   A round trip is timed from the moment the line was written.
//! - Every wait is bounded; the process ends when stdin closes.
//! - One mio loop on this thread; stdin is read on a helper thread.

use std::collections::VecDeque;
use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use peerline::proto::{OkReply, ServerLine};

use crate::fleet::Res;
use crate::stats::Summary;

/// Pings one bystander may have unanswered before it waits (a stall of
/// 50 s at 5 ms a ping: a bound on memory, never reached in practice).
const MAX_OUTSTANDING: usize = 10_000;
/// How soon a bystander that could not connect (server not up) tries again.
const RETRY: Duration = Duration::from_millis(20);

/// `peerline-bench restart-probe` flags (restart.rs passes them).
#[derive(clap::Args)]
pub struct Config {
    #[arg(long)]
    pub prefix: String,
    #[arg(long)]
    pub password: String,
    #[arg(long)]
    pub count: usize,
    #[arg(long)]
    pub interval_ms: u64,
    #[arg(long)]
    pub src: IpAddr,
}

impl Config {
    /// The time between two pings of one bystander (never zero: a zero
    /// interval would ping in a busy loop).
    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }
}

struct Bystander {
    user: String,
    stream: Option<TcpStream>,
    connected: bool,
    logged_in: bool,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// When each unanswered PING was written, oldest first.
    sent: VecDeque<Instant>,
    next_ping: Instant,
    retry_at: Option<Instant>,
}

struct Probe {
    cfg: Config,
    poll: Poll,
    server: Option<SocketAddr>,
    by: Vec<Bystander>,
    samples_us: Vec<u64>,
}

/// The subcommand's body.
pub fn main(cfg: Config) -> Res<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
        // stdin closed: the `Disconnected` the loop sees ends it.
    });
    let by = (0..cfg.count)
        .map(|i| Bystander {
            user: format!("{}{i}", cfg.prefix),
            stream: None,
            connected: false,
            logged_in: false,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            sent: VecDeque::new(),
            next_ping: Instant::now(),
            retry_at: None,
        })
        .collect();
    let mut p = Probe {
        cfg,
        poll: Poll::new().map_err(|e| e.to_string())?,
        server: None,
        by,
        samples_us: Vec::new(),
    };
    p.run(&rx)
}

impl Probe {
    fn run(&mut self, rx: &Receiver<String>) -> Res<()> {
        let mut events = Events::with_capacity(256);
        loop {
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.command(&cmd)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            let now = Instant::now();
            // Commands are looked at every few milliseconds at most.
            let mut wait = Duration::from_millis(5);
            for b in &self.by {
                if b.logged_in {
                    wait = wait.min(b.next_ping.saturating_duration_since(now));
                }
                if let Some(at) = b.retry_at {
                    wait = wait.min(at.saturating_duration_since(now));
                }
            }
            self.poll
                .poll(&mut events, Some(wait))
                .map_err(|e| format!("poll: {e}"))?;
            for ev in events.iter() {
                let i = ev.token().0;
                if i < self.by.len() {
                    let closed = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                    self.event(i, closed);
                }
            }
            let now = Instant::now();
            for i in 0..self.by.len() {
                let b = &mut self.by[i];
                if b.retry_at.is_some_and(|at| at <= now) {
                    b.retry_at = None;
                    self.open(i);
                    continue;
                }
                let b = &mut self.by[i];
                if b.logged_in && b.next_ping <= now && b.sent.len() < MAX_OUTSTANDING {
                    // On schedule, not "interval after the last answer".
                    b.next_ping += self.cfg.interval();
                    if b.next_ping < now {
                        b.next_ping = now + self.cfg.interval();
                    }
                    b.outbuf.extend_from_slice(b"PING\n");
                    b.sent.push_back(Instant::now());
                    self.flush(i);
                }
            }
        }
    }

    fn command(&mut self, cmd: &str) -> Res<()> {
        let mut words = cmd.split_whitespace();
        match words.next() {
            Some("start") => {
                let addr: SocketAddr = words
                    .next()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("probe: bad command {cmd:?}"))?;
                self.server = Some(addr);
                self.samples_us.clear();
                for i in 0..self.by.len() {
                    self.close(i);
                    self.open(i);
                }
            }
            Some("stop") => {
                let unanswered: usize = self.by.iter().map(|b| b.sent.len()).sum();
                let up = self.by.iter().filter(|b| b.logged_in).count();
                for i in 0..self.by.len() {
                    self.close(i);
                }
                self.server = None;
                let line = match Summary::of(&self.samples_us) {
                    Some(s) => format!(
                        "stats {} {} {} {} {unanswered} {up}",
                        s.n, s.p50, s.p99, s.max
                    ),
                    None => format!("stats 0 - - - {unanswered} {up}"),
                };
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .map_err(|e| e.to_string())?;
                self.samples_us.clear();
            }
            _ => return Err(format!("probe: unknown command {cmd:?}")),
        }
        Ok(())
    }

    fn close(&mut self, i: usize) {
        let b = &mut self.by[i];
        if let Some(mut st) = b.stream.take() {
            let _ = self.poll.registry().deregister(&mut st);
        }
        b.connected = false;
        b.logged_in = false;
        b.inbuf.clear();
        b.outbuf.clear();
        b.sent.clear();
        b.retry_at = None;
    }

    fn open(&mut self, i: usize) {
        let Some(server) = self.server else { return };
        self.close(i);
        let stream = crate::restart::connect_from(self.cfg.src, server).and_then(|mut st| {
            self.poll
                .registry()
                .register(&mut st, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map(|()| st)
        });
        match stream {
            Ok(st) => self.by[i].stream = Some(st),
            Err(_) => self.lost(i),
        }
    }

    /// Gone or refused: try again shortly (the server may be starting).
    fn lost(&mut self, i: usize) {
        self.close(i);
        if self.server.is_some() {
            self.by[i].retry_at = Some(Instant::now() + RETRY);
        }
    }

    fn event(&mut self, i: usize, closed: bool) {
        let Some(st) = self.by[i].stream.as_ref() else {
            return;
        };
        if !self.by[i].connected {
            if st.take_error().ok().flatten().is_some() {
                return self.lost(i);
            }
            match st.peer_addr() {
                Ok(_) => {
                    let b = &mut self.by[i];
                    b.connected = true;
                    let login = format!("LOGIN {} {}\n", b.user, self.cfg.password);
                    b.outbuf.extend_from_slice(login.as_bytes());
                }
                // Refused: the server is not listening (yet).
                Err(_) if closed => return self.lost(i),
                // Still connecting.
                Err(_) => return,
            }
        }
        self.flush(i);
        self.read(i);
    }

    fn flush(&mut self, i: usize) {
        let b = &mut self.by[i];
        let Some(st) = b.stream.as_mut() else { return };
        if !b.connected {
            return;
        }
        while !b.outbuf.is_empty() {
            match st.write(&b.outbuf) {
                Ok(0) => return self.lost(i),
                Ok(n) => {
                    b.outbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.lost(i),
            }
        }
    }

    fn read(&mut self, i: usize) {
        let mut buf = [0u8; 8192];
        loop {
            let b = &mut self.by[i];
            let Some(st) = b.stream.as_mut() else { return };
            let n = match st.read(&mut buf) {
                Ok(0) => return self.lost(i),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.lost(i),
            };
            let at = Instant::now();
            b.inbuf.extend_from_slice(&buf[..n]);
            let mut refused = false;
            while let Some(nl) = b.inbuf.iter().position(|&c| c == b'\n') {
                let raw: Vec<u8> = b.inbuf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&raw);
                match ServerLine::parse(line.trim_end()) {
                    Some(ServerLine::Ok(OkReply::Ping)) => {
                        if let Some(sent) = b.sent.pop_front() {
                            self.samples_us.push((at - sent).as_micros() as u64);
                        }
                    }
                    Some(ServerLine::Ok(OkReply::Login { .. })) => {
                        b.logged_in = true;
                        b.next_ping = at;
                    }
                    // A refused login (busy while the storm hashes): again,
                    // on a new connection, shortly.
                    Some(ServerLine::Err { .. }) if !b.logged_in => refused = true,
                    _ => {}
                }
            }
            if refused {
                return self.lost(i);
            }
        }
    }
}
