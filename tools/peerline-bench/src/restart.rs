//! `peerline-bench restart`: the restart storm. N sessions are logged in,
//! the server is killed with SIGKILL and restarted on the same data dir and
//! port, and the fleet comes back the way `peerline-client` does: each
//! session waits the client's own jittered backoff
//! (`peerline::client::reconnect::Backoff`, one seed per session), then
//! sends `RESUME` with the ticket it holds or `LOGIN` with the password, and
//! falls back to the password when a ticket is refused. Measured twice in
//! one run, tickets first (the tickets come from the setup's logins), then
//! the password path (the same fleet, tickets dropped, no `TICKET` asked):
//! - time from the kill until each session is logged in again (p50/p99/max);
//! - bystanders' `PING` round trips while the storm lasts: sessions of other
//!   accounts (cheap hashes, another source address) that log in as soon as
//!   the new server listens, then ping on a fixed schedule. They run in a
//!   process of their own (`restart-probe`, probe.rs), so a PING is never
//!   held up by this loop driving 10,000 sessions: the figure is the server's.
//!
//! Each storm's figures are printed (stderr) and written into `--out-md` as
//! soon as that storm ends, so a run stopped later keeps them. The
//! password-only storm at the default cost takes many minutes at 10,000
//! sessions; it is bounded by `--password-storm-cap`, and a capped storm
//! reports how many were back, the rate, and the time to all extrapolated
//! from that rate (said as such).
//!
//! Invariants:
//! - Every wait is bounded (`--timeout-secs` per phase); a phase that runs
//!   out reports how many sessions were back, never a made-up figure.
//! - The server runs with its defaults except what one source address needs
//!   (`--max-per-ip 0`) and room for the fleet (`--max-clients`): the
//!   login timeout, the unauthenticated reserve and the fair hashing queue
//!   all act as they would on a real restart. It logs at its default level
//!   (`info`: a line per login) into a file, as a service's log would cost.
//! - One mio loop on this thread; sessions in a `Slab`; only processes this
//!   tool started are signalled, by PID.
//!
//! Accounts are written before the start through the server's own store
//! code. The fleet's accounts share one salted hash at the default cost
//! (hashing 10,000 distinct ones would take minutes of setup and changes
//! nothing the server does per login: each LOGIN runs the full KDF).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use peerline::client::reconnect::Backoff;
use peerline::listening;
use peerline::proto::{OkReply, ServerLine};
use peerline::server::kdf::{self, PasswordHash};
use peerline::server::store::AccountsFile;

use crate::fleet::Res;
use crate::stats::Summary;

/// `peerline-bench restart` flags.
#[derive(clap::Args)]
pub struct Args {
    /// The peerline-server binary.
    #[arg(long, default_value = "target/release/peerline-server")]
    pub server: PathBuf,
    /// Sessions logged in when the server is killed.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Sessions that ping the server while the storm lasts.
    #[arg(long, default_value_t = 20)]
    pub bystanders: usize,
    #[arg(long, default_value_t = 5)]
    pub ping_interval_ms: u64,
    /// The bystanders keep pinging this long after the last session is
    /// back: the storm's aftermath (each session's 3 s UDP-registration
    /// timer, for one) is part of "throughout".
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// The fleet's password cost (default: the server's default cost).
    #[arg(long)]
    pub kdf_iterations: Option<u32>,
    /// Loopback source addresses the fleet is spread over (127.0.0.1 …).
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Logins in flight at once while setting up.
    #[arg(long, default_value_t = 64)]
    pub setup_window: usize,
    /// Bound on the setup and on the ticket storm.
    #[arg(long, default_value_t = 1200)]
    pub timeout_secs: u64,
    /// Bound on the password-only storm (seconds from the kill): at the cap
    /// the storm reports how many were back and the rate; 0 skips it.
    #[arg(long, default_value_t = 120)]
    pub password_storm_cap: u64,
    /// Also put the section into this report (between `<!-- restart:begin -->`
    /// and `<!-- restart:end -->`; the main `run` carries it over).
    #[arg(long)]
    pub out_md: Option<PathBuf>,
}

const BEGIN: &str = "<!-- restart:begin -->";
const END: &str = "<!-- restart:end -->";

/// The restart section of `old`, if any, carried into a rewritten `new`.
pub fn carry(old: &str, new: String) -> String {
    crate::scale::carry_between(old, new, BEGIN, END)
}

/// The subcommand: runs both storms, prints the report section on stdout
/// (and each storm's figures on stderr as soon as it ends).
pub fn main(a: &Args) -> Res<()> {
    let need = a.sessions as u64 + a.bystanders as u64 + 64;
    let limit = crate::procfs::fd_limit();
    if limit < need {
        return Err(format!(
            "open-file limit is {limit}; {need} are needed (raise `ulimit -n`)"
        ));
    }
    let machine = crate::report::Machine::probe();
    // After each storm: its figures now, and the section so far in the
    // report, so a run stopped later (or failing later) keeps them.
    let mut after_storm = |r: &Report| -> Res<()> {
        if let Some(st) = r.storms.last() {
            eprintln!("restart: {}", storm_summary(st));
        }
        write_section(a, r, &machine)
    };
    let r = run(a, &mut after_storm)?;
    print!("{}", markdown(&r, a, &machine));
    if r.storms.iter().any(|s| s.timed_out) {
        return Err("the ticket storm did not finish within --timeout-secs".into());
    }
    Ok(())
}

/// Splices the section (as far as it goes) into `--out-md`, if given.
fn write_section(a: &Args, r: &Report, machine: &crate::report::Machine) -> Res<()> {
    let Some(md) = &a.out_md else { return Ok(()) };
    let old = std::fs::read_to_string(md).unwrap_or_default();
    let heading = "### The restart storm (`peerline-bench restart`)\n\n\
        Not part of `tools/bench.sh`: `target/release/peerline-bench restart --sessions N --out-md docs/BENCHMARKS.md`. \
        N sessions log in by password and take a ticket; the server is killed with SIGKILL and restarted on the same \
        data dir and port; each session reconnects with the client's own backoff and jitter \
        (`client::reconnect::Backoff`, one seed each) and sends `RESUME` with its ticket, falling back to \
        `LOGIN` when it is refused, or (second column: no tickets) `LOGIN` at once. Times are from the kill. \
        The server runs with its defaults (login timeout, unauthenticated reserve, fair hashing, `info` log \
        into a file) except `--max-per-ip 0` and `--max-clients` for the fleet. The bystanders run in a process \
        of their own and ping on a fixed schedule, answered or not (pipelined), so a stall is charged to every \
        ping that waited. The password-only storm stops at `--password-storm-cap`; its time to all is then \
        extrapolated from its rate, and said so.\n\n";
    let text = crate::scale::splice_between(
        &old,
        BEGIN,
        END,
        &format!("{heading}{}", markdown(r, a, machine)),
    );
    std::fs::write(md, text).map_err(|e| format!("{}: {e}", md.display()))?;
    eprintln!("restart: wrote {}", md.display());
    Ok(())
}

const PASSWORD: &str = "restart-storm-pw";
/// The bystanders' source address: not one of the fleet's.
const BYSTANDER_SRC: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

/// The server under test, on a data dir and a port that outlive it.
struct Proc {
    child: Child,
}

impl Proc {
    /// Starts the server; the receiver yields its address once it listens
    /// (read on a helper thread, so the fleet's loop keeps running meanwhile,
    /// as real clients do while a server restarts).
    fn spawn(
        bin: &Path,
        dir: &Path,
        port: u16,
        max_clients: usize,
    ) -> Res<(Proc, std::sync::mpsc::Receiver<Res<SocketAddr>>)> {
        // Beside the data dir, appended to by every server of the run.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .map_err(|e| format!("server log: {e}"))?;
        let mut child = Command::new(bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--data-dir",
            ])
            .arg(dir)
            .args([
                "--max-clients",
                &max_clients.to_string(),
                "--max-per-ip",
                "0",
            ])
            // Its default level (`info`: a line per login), as deployed.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = listening::wait_for(out, Duration::from_secs(60))
                .map(|a| a.tcp)
                .map_err(|e| format!("peerline-server {e}"));
            let _ = tx.send(r);
        });
        Ok((Proc { child }, rx))
    }

    fn start(bin: &Path, dir: &Path, port: u16, max_clients: usize) -> Res<(Proc, SocketAddr)> {
        let (p, rx) = Proc::spawn(bin, dir, port, max_clients)?;
        let addr = rx
            .recv_timeout(Duration::from_secs(70))
            .map_err(|_| "peerline-server did not start".to_owned())??;
        Ok((p, addr))
    }

    /// SIGKILL (ours, by PID) and reap.
    fn kill9(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the next attempt (backoff), no socket.
    Waiting,
    Connecting,
    /// Connected; our RESUME or LOGIN is unanswered.
    Authing,
    /// Logged in (perhaps a `TICKET` still unanswered).
    Up,
}

struct Sess {
    user: String,
    src: IpAddr,
    stream: Option<TcpStream>,
    phase: Phase,
    inbuf: Vec<u8>,
    backoff: Backoff,
    /// Held in memory only, as the client does; never printed.
    ticket: Option<peerline::proto::Ticket>,
    /// Bumped on every new attempt: stale timers are ignored.
    gen: u64,
    /// The unanswered first command on this connection was `RESUME`.
    resuming: bool,
}

#[derive(Default)]
struct Tally {
    back_ms: Vec<u64>,
    resumes: usize,
    fallbacks: usize,
    password_logins: usize,
    connect_failures: usize,
    closed_by_server: usize,
    /// LOGINs refused (busy, rate-limited…): retried after a backoff step.
    refused: usize,
}

struct Net {
    poll: Poll,
    sess: Slab<Sess>,
    /// (due, slab key, gen): reconnects.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    server: SocketAddr,
    tickets: bool,
    /// When the storm began (the kill); `None` while setting up.
    t0: Option<Instant>,
    /// Sessions logged in, kept as they change: scanning 10,000 sessions
    /// every turn would make the tool, not the server, the delay.
    up: usize,
    tally: Tally,
}

impl Net {
    fn open(&mut self, key: usize) {
        let s = &mut self.sess[key];
        s.gen += 1;
        s.inbuf.clear();
        let src = s.src;
        let stream = connect_from(src, self.server).and_then(|mut st| {
            self.poll
                .registry()
                .register(&mut st, Token(key), Interest::READABLE | Interest::WRITABLE)
                .map(|()| st)
        });
        match stream {
            Ok(st) => {
                let s = &mut self.sess[key];
                s.stream = Some(st);
                s.phase = Phase::Connecting;
            }
            Err(_) => self.lost(key, true),
        }
    }

    /// The connection is gone (or never came): wait one backoff step, as the
    /// client does (`Engine::schedule_reconnect`).
    fn lost(&mut self, key: usize, failed_connect: bool) {
        let s = &mut self.sess[key];
        if s.phase == Phase::Up {
            self.up -= 1;
        }
        if let Some(mut st) = s.stream.take() {
            let _ = self.poll.registry().deregister(&mut st);
        }
        if failed_connect {
            self.tally.connect_failures += 1;
        }
        s.phase = Phase::Waiting;
        s.gen += 1;
        let due = Instant::now() + s.backoff.next_delay();
        self.timers.push(Reverse((due, key, s.gen)));
    }

    fn send(&mut self, key: usize, line: &str) {
        let s = &mut self.sess[key];
        let Some(st) = s.stream.as_mut() else { return };
        // Lines are short and sent one at a time: the socket buffer has room.
        if st.write_all(format!("{line}\n").as_bytes()).is_err() {
            self.lost(key, false);
        }
    }

    /// Connected: what the client sends first (`on_server_connected`).
    fn connected(&mut self, key: usize) {
        let s = &mut self.sess[key];
        s.phase = Phase::Authing;
        let resume = match (&s.ticket, self.tickets) {
            (Some(t), true) => Some(format!("RESUME {} {t}", s.user)),
            _ => None,
        };
        s.resuming = resume.is_some();
        let line = resume.unwrap_or_else(|| format!("LOGIN {} {PASSWORD}", s.user));
        self.send(key, &line);
    }

    fn on_line(&mut self, key: usize, line: &str) {
        let parsed = ServerLine::parse(line);
        let s = &mut self.sess[key];
        match parsed {
            Some(ServerLine::Ok(OkReply::Resume { ticket, .. })) => {
                s.ticket = Some(ticket);
                self.tally.resumes += 1;
                self.back(key);
            }
            Some(ServerLine::Ok(OkReply::Login { .. })) => {
                self.tally.password_logins += 1;
                // The client asks for a ticket after each password login.
                if self.tickets {
                    self.send(key, "TICKET");
                }
                self.back(key);
            }
            Some(ServerLine::Ok(OkReply::Ticket { ticket, .. })) => s.ticket = Some(ticket),
            Some(ServerLine::Err { .. }) if s.phase == Phase::Authing => {
                if std::mem::take(&mut s.resuming) {
                    // The client's fallback: the password, on the same
                    // connection; the refused ticket is gone.
                    s.ticket = None;
                    self.tally.fallbacks += 1;
                    let l = format!("LOGIN {} {PASSWORD}", s.user);
                    self.send(key, &l);
                } else {
                    // A refused LOGIN (busy, rate-limited…): a new attempt
                    // after a backoff step.
                    self.tally.refused += 1;
                    self.lost(key, false);
                }
            }
            Some(ServerLine::Event(peerline::proto::Event::Closing { .. })) => {
                self.tally.closed_by_server += 1;
            }
            _ => {}
        }
    }

    fn back(&mut self, key: usize) {
        let s = &mut self.sess[key];
        if s.phase != Phase::Up {
            s.phase = Phase::Up;
            self.up += 1;
            s.backoff.reset();
            if let Some(t0) = self.t0 {
                self.tally.back_ms.push(t0.elapsed().as_millis() as u64);
            }
        }
    }

    fn readable(&mut self, key: usize) {
        let mut buf = [0u8; 8192];
        loop {
            let Some(st) = self.sess[key].stream.as_mut() else {
                return;
            };
            match st.read(&mut buf) {
                Ok(0) => return self.lost(key, false),
                Ok(n) => {
                    self.sess[key].inbuf.extend_from_slice(&buf[..n]);
                    while let Some(i) = self.sess[key].inbuf.iter().position(|&b| b == b'\n') {
                        let raw: Vec<u8> = self.sess[key].inbuf.drain(..=i).collect();
                        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                        self.on_line(key, &line);
                        if self.sess[key].stream.is_none() {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.lost(key, false),
            }
        }
    }

    /// One turn: events, due reconnects.
    fn turn(&mut self, events: &mut Events) -> Res<()> {
        let now = Instant::now();
        let mut wait = Duration::from_millis(50);
        if let Some(Reverse((due, _, _))) = self.timers.peek() {
            wait = wait.min(due.saturating_duration_since(now));
        }
        self.poll
            .poll(events, Some(wait))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let key = ev.token().0;
            if !self.sess.contains(key) || self.sess[key].stream.is_none() {
                continue;
            }
            if self.sess[key].phase == Phase::Connecting {
                let st = self.sess[key].stream.as_ref().expect("checked");
                if ev.is_error() || st.take_error().ok().flatten().is_some() {
                    self.lost(key, true);
                    continue;
                }
                match st.peer_addr() {
                    Ok(_) => {
                        let st = self.sess[key].stream.as_mut().expect("checked");
                        let _ = self
                            .poll
                            .registry()
                            .reregister(st, Token(key), Interest::READABLE);
                        self.connected(key);
                    }
                    // Refused: the server is not listening yet.
                    Err(_) if ev.is_read_closed() || ev.is_write_closed() => {
                        self.lost(key, true);
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            if ev.is_readable() || ev.is_read_closed() {
                self.readable(key);
            }
        }
        let now = Instant::now();
        while let Some(Reverse((due, key, gen))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            if self.sess.contains(key)
                && self.sess[key].gen == gen
                && self.sess[key].phase == Phase::Waiting
            {
                self.open(key);
            }
        }
        Ok(())
    }

    fn fleet_up(&self) -> usize {
        self.up
    }
}

/// A non-blocking connect from `src` (a loopback address of ours).
pub(crate) fn connect_from(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    match sock.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

fn provision(dir: &Path, n: usize, bystanders: usize, iterations: u32) -> Res<()> {
    let mut file = AccountsFile::open(dir)?;
    let salt = kdf::random_salt(&mut peerline::rng::OsRandom);
    let fleet_hash = PasswordHash {
        iterations,
        salt,
        hash: kdf::derive(PASSWORD.as_bytes(), &salt, iterations),
    };
    let cheap = 1000; // bystanders: one hash slice each
    let by_hash = PasswordHash {
        iterations: cheap,
        salt,
        hash: kdf::derive(PASSWORD.as_bytes(), &salt, cheap),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows = (0..n)
        .map(|i| (format!("r{i}"), fleet_hash.clone(), now))
        .chain((0..bystanders).map(|i| (format!("by{i}"), by_hash.clone(), now)));
    file.add_many(rows)
}

/// One storm's figures.
pub struct Storm {
    pub label: &'static str,
    pub n: usize,
    pub back: usize,
    pub back_ms: Option<Summary>,
    pub restart_ms: u64,
    /// The bystanders' round trips (µs), from their own process.
    pub pings_us: Option<Summary>,
    /// Pings still unanswered when the storm ended.
    pub pings_unanswered: usize,
    /// Bystanders logged in when the storm ended (of `--bystanders`).
    pub bystanders_up: usize,
    pub resumes: usize,
    pub fallbacks: usize,
    pub password_logins: usize,
    pub connect_failures: usize,
    pub closed_by_server: usize,
    pub refused: usize,
    /// Still unfinished at `--timeout-secs` (an error for the ticket storm).
    pub timed_out: bool,
    /// Stopped at `--password-storm-cap` (seconds), not all back: expected.
    pub capped: Option<u64>,
}

impl Storm {
    /// Sessions back per second since the kill, over the whole storm (to
    /// the last one back, or to the cap).
    pub fn rate(&self) -> Option<f64> {
        let secs = match self.capped {
            Some(cap) => cap as f64,
            None => self.back_ms?.max as f64 / 1e3,
        };
        (self.back > 0 && secs > 0.0).then(|| self.back as f64 / secs)
    }
}

pub struct Report {
    /// The 1-minute load average when the run began.
    pub load: String,
    pub setup_secs: f64,
    pub iterations: u32,
    pub storms: Vec<Storm>,
}

pub fn run(a: &Args, on_storm: &mut dyn FnMut(&Report) -> Res<()>) -> Res<Report> {
    let iterations = a.kdf_iterations.unwrap_or(kdf::DEFAULT_ITERATIONS);
    let dir = crate::servers::temp_dir("restart")?;
    let result = run_in(a, &dir, iterations, on_storm);
    let _ = std::fs::remove_dir_all(&dir);
    // The servers' log goes with a good run; a failed one keeps it.
    let log = dir.with_extension("log");
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_file(&log);
        }
        Err(_) => eprintln!("restart: the servers' log is kept in {}", log.display()),
    }
    result
}

fn run_in(
    a: &Args,
    dir: &Path,
    iterations: u32,
    on_storm: &mut dyn FnMut(&Report) -> Res<()>,
) -> Res<Report> {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    eprintln!(
        "restart: provisioning {} + {} accounts",
        a.sessions, a.bystanders
    );
    provision(dir, a.sessions, a.bystanders, iterations)?;
    let max_clients = a.sessions + a.bystanders + 64;
    let (mut server, addr) = Proc::start(&a.server, dir, 0, max_clients)?;
    let mut net = Net {
        poll: Poll::new().map_err(|e| e.to_string())?,
        sess: Slab::with_capacity(a.sessions + a.bystanders),
        timers: BinaryHeap::new(),
        server: addr,
        tickets: true,
        t0: None,
        up: 0,
        tally: Tally::default(),
    };
    let sources = a.sources.clamp(1, 250);
    for i in 0..a.sessions {
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8));
        net.sess.insert(Sess {
            user: format!("r{i}"),
            src,
            stream: None,
            phase: Phase::Waiting,
            inbuf: Vec::new(),
            backoff: Backoff::new(0x5eed_0000 + i as u64),
            ticket: None,
            gen: 0,
            resuming: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    // Setup: everyone logs in by password (a window at a time, so no
    // login waits long enough for the login timeout) and takes a ticket.
    let started = Instant::now();
    let limit = started + Duration::from_secs(a.timeout_secs);
    let mut next = 0;
    loop {
        let in_flight = next - net.fleet_up().min(next);
        for _ in in_flight..a.setup_window.max(1) {
            if next == a.sessions {
                break;
            }
            net.open(next);
            next += 1;
        }
        net.turn(&mut events)?;
        let tickets = net.sess.iter().filter(|(_, s)| s.ticket.is_some()).count();
        if net.fleet_up() == a.sessions && tickets == a.sessions {
            break;
        }
        if Instant::now() > limit {
            return Err(format!(
                "setup: only {} of {} sessions logged in within {} s",
                net.fleet_up(),
                a.sessions,
                a.timeout_secs
            ));
        }
    }
    let setup_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "restart: {} sessions logged in with tickets in {setup_secs:.1} s",
        a.sessions
    );
    let port = addr.port();
    let mut probe = ProbeProc::spawn(a)?;
    let mut report = Report {
        load,
        setup_secs,
        iterations,
        storms: Vec::new(),
    };
    let mut storms = vec![("with tickets", true, a.timeout_secs, None)];
    if a.password_storm_cap > 0 {
        let cap = a.password_storm_cap.min(a.timeout_secs);
        storms.push(("password only", false, cap, Some(cap)));
    }
    for (label, tickets, bound, cap) in storms {
        net.tickets = tickets;
        if !tickets {
            for (_, s) in net.sess.iter_mut() {
                s.ticket = None;
            }
        }
        net.tally = Tally::default();
        eprintln!("restart: kill -9, restart ({label})");
        let t0 = Instant::now();
        server.kill9();
        net.t0 = Some(t0);
        let (s2, listening) = Proc::spawn(&a.server, dir, port, max_clients)?;
        server = s2;
        // The fleet notices the loss and backs off while the server starts.
        let mut restart_ms = None;
        while restart_ms.is_none() {
            net.turn(&mut events)?;
            match listening.try_recv() {
                Ok(r) => {
                    r?;
                    restart_ms = Some(t0.elapsed().as_millis() as u64);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(e) => return Err(format!("restart: {e}")),
            }
            if t0.elapsed() > Duration::from_secs(a.timeout_secs) {
                return Err("restart: the new server never listened".into());
            }
        }
        let restart_ms = restart_ms.expect("set above");
        probe.command(&format!("start {addr}"))?;
        let limit = t0 + Duration::from_secs(bound);
        let mut stopped = false;
        loop {
            net.turn(&mut events)?;
            if net.fleet_up() == a.sessions {
                break;
            }
            if Instant::now() > limit {
                stopped = true;
                break;
            }
        }
        // The aftermath, still measured (not for a capped storm: its sessions
        // are still coming).
        if !stopped {
            let settle = Instant::now() + Duration::from_secs(a.settle_secs);
            while Instant::now() < settle {
                net.turn(&mut events)?;
            }
        }
        let pings = probe.stop()?;
        let t = &net.tally;
        let storm = Storm {
            label,
            n: a.sessions,
            back: t.back_ms.len(),
            back_ms: Summary::of(&t.back_ms),
            restart_ms,
            pings_us: pings.summary,
            pings_unanswered: pings.unanswered,
            bystanders_up: pings.up,
            resumes: t.resumes,
            fallbacks: t.fallbacks,
            password_logins: t.password_logins,
            connect_failures: t.connect_failures,
            closed_by_server: t.closed_by_server,
            refused: t.refused,
            timed_out: stopped && cap.is_none(),
            capped: cap.filter(|_| stopped),
        };
        report.storms.push(storm);
        on_storm(&report)?;
    }
    drop(server);
    Ok(report)
}

/// The bystanders' process (`peerline-bench restart-probe`, probe.rs).
struct ProbeProc {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

/// What the probe reports at the end of a storm.
struct Pings {
    summary: Option<Summary>,
    unanswered: usize,
    up: usize,
}

impl ProbeProc {
    fn spawn(a: &Args) -> Res<ProbeProc> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                "restart-probe",
                "--prefix",
                "by",
                "--password",
                PASSWORD,
                "--count",
                &a.bystanders.to_string(),
                "--interval-ms",
                &a.ping_interval_ms.max(1).to_string(),
                "--src",
                &BYSTANDER_SRC.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start the probe: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ProbeProc {
            child,
            stdin,
            lines,
        })
    }

    fn command(&mut self, line: &str) -> Res<()> {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("probe: {e}"))
    }

    fn stop(&mut self) -> Res<Pings> {
        self.command("stop")?;
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "probe: no answer to stop".to_owned())?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok());
        if w.first() != Some(&"stats") || w.len() != 7 {
            return Err(format!("probe: unexpected answer {line:?}"));
        }
        let summary = match (num(1), num(2), num(3), num(4)) {
            (Some(n), Some(p50), Some(p99), Some(max)) if n > 0 => Some(Summary {
                n: n as usize,
                p50,
                p99,
                max,
                mean: f64::NAN,
            }),
            _ => None,
        };
        Ok(Pings {
            summary,
            unanswered: num(5).unwrap_or(0) as usize,
            up: num(6).unwrap_or(0) as usize,
        })
    }
}

impl Drop for ProbeProc {
    fn drop(&mut self) {
        // Ours, by PID; closing stdin alone also ends it.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// One storm on one line, for stderr as soon as it ends.
fn storm_summary(st: &Storm) -> String {
    let ms = |us: u64| us as f64 / 1e3;
    let back = st.back_ms.map_or("-".into(), |b| {
        format!(
            "p50 {:.2} s, p99 {:.2} s, last {:.2} s",
            b.p50 as f64 / 1e3,
            b.p99 as f64 / 1e3,
            b.max as f64 / 1e3
        )
    });
    let pings = st.pings_us.map_or("no PING samples".into(), |p| {
        format!(
            "bystanders' PING p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} samples",
            ms(p.p50),
            ms(p.p99),
            ms(p.max),
            p.n
        )
    });
    format!(
        "{}: {} of {} back{} ({back}); {pings}; {} by ticket, {} by password",
        st.label,
        st.back,
        st.n,
        how_it_ended(st),
        st.resumes,
        st.password_logins
    )
}

/// How a storm stopped short, if it did: " at the N s cap", " (timed out)" or nothing.
fn how_it_ended(st: &Storm) -> String {
    match (st.capped, st.timed_out) {
        (Some(cap), _) => format!(" at the {cap} s cap"),
        (None, true) => " (timed out)".into(),
        _ => String::new(),
    }
}

/// The report section, as `docs/BENCHMARKS.md` carries it.
pub fn markdown(r: &Report, a: &Args, machine: &crate::report::Machine) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut s = String::new();
    s.push_str(&format!(
        "{} sessions, password cost {} PBKDF2 iterations{}, spread over {} loopback source addresses; \
         {} bystanders (cheap hashes, their own address and process) pinging every {} ms from the moment the \
         new server listens until {} s after the last session is back. Setup (every session \
         logged in by password, a window of {} at a time, and a ticket taken): {:.1} s. Machine: {}, {} cores, \
         load average {} at the start (a shared machine).\n\n",
        a.sessions,
        r.iterations,
        if a.kdf_iterations.is_none() { " (the default)" } else { "" },
        a.sources,
        a.bystanders,
        a.ping_interval_ms,
        a.settle_secs,
        a.setup_window,
        r.setup_secs,
        machine.cpu,
        machine.cores,
        r.load,
    ));
    s.push_str("| after `kill -9` and restart | ");
    s.push_str(
        &r.storms
            .iter()
            .map(|st| st.label)
            .collect::<Vec<_>>()
            .join(" | "),
    );
    s.push_str(" |\n| --- |");
    s.push_str(&" ---: |".repeat(r.storms.len()));
    s.push('\n');
    let row = |name: &str, f: &dyn Fn(&Storm) -> String| {
        let cells: Vec<String> = r.storms.iter().map(f).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    s.push_str(&row("sessions back and logged in", &|st| {
        format!("{} of {}{}", st.back, st.n, how_it_ended(st))
    }));
    s.push_str(&row("kill → new server listening (ms)", &|st| {
        st.restart_ms.to_string()
    }));
    s.push_str(&row(
        "kill → logged in again: p50 / p99 / max (s)",
        &|st| {
            st.back_ms.map_or("-".into(), |b| {
                format!(
                    "{:.2} / {:.2} / {:.2}",
                    b.p50 as f64 / 1e3,
                    b.p99 as f64 / 1e3,
                    b.max as f64 / 1e3
                )
            })
        },
    ));
    s.push_str(&row("sessions back per second; time to all (s)", &|st| {
        let Some(rate) = st.rate() else {
            return "-".into();
        };
        match (st.capped, st.back_ms) {
            (Some(_), _) => format!(
                "{rate:.1}; {:.0} extrapolated at that rate (not measured)",
                st.n as f64 / rate
            ),
            (None, Some(b)) if st.back == st.n => {
                format!("{rate:.1}; {:.2} measured", b.max as f64 / 1e3)
            }
            _ => format!("{rate:.1}; -"),
        }
    }));
    s.push_str(&row(
        "bystanders' PING: p50 / p99 / max (ms), samples",
        &|st| {
            st.pings_us.map_or("-".into(), |p| {
                format!(
                    "{:.2} / {:.2} / {:.2}, {}",
                    ms(p.p50),
                    ms(p.p99),
                    ms(p.max),
                    p.n
                )
            })
        },
    ));
    s.push_str(&row(
        "bystanders logged in / pings unanswered at the end",
        &|st| {
            format!(
                "{} of {} / {}",
                st.bystanders_up, a.bystanders, st.pings_unanswered
            )
        },
    ));
    s.push_str(&row(
        "by ticket / by password / ticket refused → password",
        &|st| format!("{} / {} / {}", st.resumes, st.password_logins, st.fallbacks),
    ));
    s.push_str(&row(
        "failed connects (server not up yet) / `EVENT CLOSING` / LOGIN refused",
        &|st| {
            format!(
                "{} / {} / {}",
                st.connect_failures, st.closed_by_server, st.refused
            )
        },
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_survives_a_rewrite_of_the_report() {
        let md = crate::scale::splice_between("# Benchmarks\n", BEGIN, END, "storm\n");
        assert!(md.contains("<!-- restart:begin -->\nstorm\n<!-- restart:end -->"));
        let rewritten = carry(&md, "# Benchmarks, again\n".to_owned());
        assert!(rewritten.starts_with("# Benchmarks, again"));
        assert!(rewritten.contains("<!-- restart:begin -->\nstorm\n<!-- restart:end -->"));
        // Carrying nothing changes nothing.
        assert_eq!(carry("# none\n", "x\n".to_owned()), "x\n");
    }
}
