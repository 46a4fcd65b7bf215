//! The thin mio driver: one `Poll`, one thread. It owns the sockets and the
//! store, feeds the engine `(now, input)`, executes the engine's outputs in
//! order, and sleeps until the engine's next deadline.
//!
//! Tokens: the slab key of a connection is its `mio::Token` and the engine's
//! `ConnId`; the listener, the UDP socket and the signal pipe have fixed tokens
//! at the top of the range. Closed slots are freed after the event batch, so a
//! stale event in the same batch can never reach a reused slot.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::accept::FdReserve;
use super::admin::AdminRequest;
use super::admin_socket::{self, AdminSocket};
use super::admission::Admission;
use super::config::Config;
use super::engine::{Engine, Input, Output};
use super::flow::{ReadGate, OUT_CAP};
use super::give_back::{self, GiveBack};
use super::metrics::{self, MetricsServer};
use super::persist::Persist;
use super::store::Store;
use super::tls::{HandshakeBudget, TlsIdentity};
use crate::netio::{self, enable_keepalive, set_int_option, Connection, Fate, Next, ReadsDue};
use crate::proto::datagram::MAX_DATAGRAM;
use crate::proto::Frame;
use crate::signals::{Caught, SignalPipe};
use crate::tls::layer::TLS_HANDSHAKE_BYTE;
use crate::tls::Layer;
use crate::udpbatch::{Mmsg, RecvBatch, SendQueue};

#[cfg(test)]
#[path = "admission_tests.rs"]
mod admission_tests;

const LISTENER: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// After we close, how long we keep reading (and discarding) so that our last
/// lines are not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Datagrams taken from the UDP socket per turn before others get theirs.
const UDP_BUDGET: usize = 1024;
/// Silence on a control connection before the kernel starts probing it.
const KEEPALIVE_IDLE_SECS: libc::c_int = 60;
/// How long shutdown waits for final lines to drain.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);
/// How long a new connection may stay silent before it counts as plaintext
/// and gets `EVENT WELCOME`. A TLS client sends its ClientHello at once; a
/// plaintext client that sends anything first (even an empty line) is
/// classified at once too, so only a silent `nc` waits this long.
const SNIFF_WAIT: Duration = Duration::from_millis(250);
/// Rounds of "end the turn, run what that produced" per loop turn (see `run`).
const END_ROUNDS: usize = 16;

/// A control connection: the life cycle shared with the client
/// (`netio::Connection`: stream, layer, reader, output, close) and what only
/// the server keeps for it.
struct Conn {
    io: Connection<TcpStream>,
    /// Whether input may be taken now (engine backlog, output backpressure).
    gate: ReadGate,
    /// On `Driver::dirty`: `end_turn` must look at this connection.
    dirty: bool,
}

pub struct Driver {
    poll: Poll,
    listener: TcpListener,
    udp: UdpSocket,
    /// Outgoing datagrams, sent with `sendmmsg` (udpbatch.rs) at the end of
    /// each `run_outputs`: a fan-out's datagrams go out in batches.
    udp_queue: SendQueue<std::rc::Rc<[u8]>>,
    /// Buffers for reading datagrams with `recvmmsg`.
    udp_in: RecvBatch,
    /// A spare descriptor for refusing connections on `EMFILE`, and the retry timer.
    fds: FdReserve,
    udp_read_again: bool,
    /// The running configuration; SIGHUP replaces what can change at run time.
    cfg: Config,
    /// The UDP socket's own address: its family decides how peers are addressed.
    udp_local: SocketAddr,
    signals: SignalPipe,
    conns: Slab<Conn>,
    /// Connections whose output, close state or interest may have changed this
    /// turn. `end_turn` visits only these (and the lingering ones), so a turn
    /// costs what happened in it, not the number of connections: a fan-out to
    /// 10,000 users takes some 20 turns, and each used to walk all 10,000.
    dirty: Vec<usize>,
    /// Connections to read next turn without an event (`netio::ReadsDue`).
    reads_due: ReadsDue,
    /// Connections with `closing` set; few at any time.
    lingering: Vec<usize>,
    udp_registered: Interest,
    engine: Engine,
    /// The store, behind group commit: one fsync per file per turn.
    /// Before `persist` (which holds the data-dir lock): dropped first, so
    /// the socket file is removed while the lock is still ours.
    admin: AdminSocket,
    /// `--metrics`: the Prometheus endpoint, if configured.
    metrics: Option<MetricsServer>,
    /// When the server started, for `uptime_seconds`.
    started: Instant,
    persist: Persist,
    delivery_sync_at: Option<Instant>,
    /// Certificate, key and the rustls config new connections use.
    tls: TlsIdentity,
    /// Connections still sniffing, in accept order (so in deadline order);
    /// an entry whose slot moved on is skipped when it comes up.
    sniffing: VecDeque<(Instant, usize)>,
    /// Handshake work left this turn (`tls::HANDSHAKE_BUDGET`).
    handshakes: HandshakeBudget,
    /// Accepts and newcomers' frames left this turn (`admission.rs`).
    admission: Admission,
    /// Memory of closed connections, given back to the OS (`give_back.rs`).
    give_back: GiveBack,
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Raises the soft open-files limit to what `max_clients` needs, or says why not.
fn ensure_fd_limit(max_clients: usize) -> Result<(), String> {
    let need = max_clients as u64 + 64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "cannot read RLIMIT_NOFILE: {}",
            io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        return Err(format!(
            "--max-clients {max_clients} needs {need} open files, but the hard limit is {}; \
             lower --max-clients or raise the limit (ulimit -Hn)",
            lim.rlim_max
        ));
    }
    lim.rlim_cur = need;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "cannot raise RLIMIT_NOFILE to {need}: {}",
            io::Error::last_os_error()
        ));
    }
    log::info!("raised the open-files limit to {need}");
    Ok(())
}

/// How many connections the per-connection tables are reserved for: every
/// connection is a descriptor, so never more than the open-files limit, and
/// the engine refuses past `max_clients` (a refused one is closed at once;
/// a slab that must grow past this simply reallocates). Capped so a huge
/// `--max-clients` with a huge limit does not reserve gigabytes of address
/// space.
fn connection_slots(max_clients: usize) -> usize {
    const CAP: usize = 1 << 20;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        max_clients
    };
    max_clients.min(fds).min(CAP)
}

/// Asks for a UDP receive buffer big enough to absorb the ACK burst of a large
/// fan-out: with the kernel default (~208 KB) the load tool measured tens of
/// thousands of dropped ACKs at 10,000 recipients, each costing a retransmit.
/// The kernel caps the request at `net.core.rmem_max`; best effort.
fn enlarge_udp_receive_buffer(udp: &UdpSocket) {
    if let Err(e) = set_int_option(udp, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20) {
        log::warn!("cannot enlarge the UDP receive buffer: {e}");
    }
}

/// Locks and loads the data dir (a second server on it stops here), loads
/// the TLS pair, and builds the engine from what the store holds.
fn load_engine(cfg: &Config) -> Result<(Store, Engine, TlsIdentity), String> {
    let (mut store, loaded) = Store::open(&cfg.data_dir)?;
    let resume_key = store.resume_key().map_err(|e| {
        format!(
            "cannot make the resume key in {}: {e}",
            cfg.data_dir.display()
        )
    })?;
    log::info!(
        "data dir {}: {} account row(s), {} broadcast(s), {} delivery row(s), {} line(s) skipped",
        cfg.data_dir.display(),
        loaded.users.len(),
        loaded.broadcasts.records.len(),
        loaded.deliveries.len(),
        loaded.skipped.len()
    );
    let tls = TlsIdentity::load(cfg.tls.clone())?;
    log::info!(
        "TLS certificate {}: fingerprint {}",
        tls.cert_path().display(),
        tls.fingerprint()
    );
    let engine = Engine::new(
        cfg.engine.clone(),
        loaded.users,
        loaded.broadcasts,
        loaded.deliveries,
        Instant::now(),
        unix_ms_now(),
        Box::new(crate::rng::OsRandom),
    )
    .with_resume_key(resume_key);
    Ok((store, engine, tls))
}

/// The `listening tcp=… udp=…` line on stdout (tests and the bench wait for
/// it), the log and systemd's `READY=1`.
fn announce_listening(tcp_addr: SocketAddr, udp_addr: SocketAddr) {
    let mut out = io::stdout();
    let _ = writeln!(out, "{}", crate::listening::format(tcp_addr, udp_addr));
    let _ = out.flush();
    log::info!("listening on tcp={tcp_addr} udp={udp_addr}");
    super::service::ready(&format!("listening tcp={tcp_addr} udp={udp_addr}"));
}

impl Driver {
    /// Opens the store, binds, registers; prints the `listening` line.
    pub fn start(cfg: Config) -> Result<Driver, String> {
        ensure_fd_limit(cfg.engine.max_clients)?;
        let (store, mut engine, tls) = load_engine(&cfg)?;
        // Reserved once, so the tables never double as sessions come (issue 18).
        let slots = connection_slots(cfg.engine.max_clients);
        engine.reserve_connections(slots);
        // Loading the data dir freed its read buffers: give those pages back
        // now, so the RSS at the start is what the server holds.
        give_back::trim();
        let (mut listener, mut udp) = super::sockets::bind(cfg.bind, cfg.port, cfg.bind_is_default)
            .map_err(|e| format!("cannot bind {}: {e}", SocketAddr::new(cfg.bind, cfg.port)))?;
        enlarge_udp_receive_buffer(&udp);
        let poll = Poll::new().map_err(|e| format!("cannot create poll: {e}"))?;
        let mut signals = SignalPipe::install_with_reload()
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let reg = poll.registry();
        let fail = |e: io::Error| format!("cannot register with poll: {e}");
        reg.register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(fail)?;
        reg.register(&mut udp, UDP, Interest::READABLE)
            .map_err(fail)?;
        reg.register(signals.receiver(), SIGNALS, Interest::READABLE)
            .map_err(fail)?;
        let admin = AdminSocket::bind(&cfg.data_dir, reg).map_err(|e| {
            format!(
                "cannot create the admin socket in {}: {e}",
                cfg.data_dir.display()
            )
        })?;
        let metrics = match cfg.metrics {
            Some(addr) => Some(
                MetricsServer::bind(addr, reg)
                    .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?,
            ),
            None => None,
        };
        let tcp_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let udp_addr = udp.local_addr().map_err(|e| e.to_string())?;
        announce_listening(tcp_addr, udp_addr);
        let mut d = Driver {
            poll,
            listener,
            udp,
            fds: FdReserve::new(),
            udp_queue: SendQueue::with_caps(65_536, usize::MAX),
            udp_in: RecvBatch::new(MAX_DATAGRAM + 1, crate::udpbatch::BATCH),
            udp_read_again: false,
            udp_local: udp_addr,
            signals,
            conns: Slab::with_capacity(slots),
            dirty: Vec::new(),
            reads_due: ReadsDue::default(),
            lingering: Vec::new(),
            udp_registered: Interest::READABLE,
            engine,
            admin,
            metrics,
            started: Instant::now(),
            persist: Persist::new(store),
            delivery_sync_at: None,
            cfg,
            tls,
            sniffing: VecDeque::new(),
            handshakes: HandshakeBudget::default(),
            admission: Admission::default(),
            give_back: GiveBack::default(),
        };
        d.run_outputs(Instant::now());
        Ok(d)
    }

    /// Runs until SIGINT/SIGTERM; then flushes and returns.
    pub fn run(mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll failed: {e}"));
            }
            if self.turn(&events) {
                log::info!("signal received: shutting down");
                return self.shutdown();
            }
        }
    }

    /// One loop turn on what the poll returned. True: a signal asks to stop.
    fn turn(&mut self, events: &Events) -> bool {
        let now = Instant::now();
        self.handshakes.new_turn();
        self.admission.new_turn();
        self.end_sniffing(now);
        let caught = self.dispatch(now, events);
        self.settle(now);
        if caught.reload && !caught.stop {
            self.reload();
        }
        caught.stop
    }

    /// Hands each readiness event of this turn to its owner; returns the
    /// signals that arrived among them, acted on once the turn has settled.
    fn dispatch(&mut self, now: Instant, events: &Events) -> Caught {
        let mut caught = Caught::default();
        for ev in events.iter() {
            match ev.token() {
                LISTENER => self.accept_all(now),
                admin_socket::LISTENER => self.admin.accept(self.poll.registry()),
                metrics::LISTENER => {
                    if let Some(m) = self.metrics.as_mut() {
                        m.accept(self.poll.registry());
                    }
                }
                t if metrics::owns(t) => {
                    // Taken out for the call: the body borrows the driver.
                    if let Some(mut m) = self.metrics.take() {
                        m.on_event(t, || metrics::render(&self.counters(now)));
                        self.metrics = Some(m);
                    }
                }
                t if admin_socket::owns(t) => {
                    if let Some((conn, line)) = self.admin.on_event(t) {
                        self.admin_request(now, conn, line);
                    }
                }
                UDP => {
                    if ev.is_readable() {
                        self.recv_datagrams(now);
                    }
                    if ev.is_writable() {
                        self.udp_queue.flush(&mut Mmsg(&self.udp));
                    }
                }
                SIGNALS => {
                    let c = self.signals.take();
                    caught.stop |= c.stop;
                    caught.reload |= c.reload;
                }
                Token(i) => self.conn_event(now, i, ev.is_readable(), ev.is_writable()),
            }
        }
        caught
    }

    /// The rest of a turn, after its events: accepts and reads that were put
    /// off, the engine's timers, then outputs, store commits and ended
    /// connections, round after round until quiet.
    fn settle(&mut self, now: Instant) {
        if self.fds.retry_at.is_some_and(|at| at <= now) {
            self.fds.retry_at = None;
            self.accept_all(now);
        }
        if self.admission.accept_again() {
            self.accept_all(now);
        }
        self.catch_up_reads(now);
        self.engine.handle(now, Input::Timeout);
        // Everything this turn wrote to the store shares one fsync per
        // file; only then are those signups and broadcasts confirmed.
        self.run_outputs(now);
        self.commit(now);
        // Ending the turn can itself produce outputs (a failed write ends a
        // session, which cancels requests): run until quiet. Each further
        // round needs a connection that failed in the one before, so this
        // ends; the bound is a backstop, and whatever it leaves (outputs
        // not polled, connections still dirty) makes the next poll return
        // at once (`timeout`), never wait for an unrelated wake-up.
        for _ in 0..END_ROUNDS {
            self.end_turn(now);
            if self.run_outputs(now) == 0 {
                break;
            }
            self.commit(now);
        }
    }

    /// How long the next poll may sleep: until the earliest deadline, the
    /// engine's included (which is already past while it has work or
    /// outputs), and not at all while the driver has work of its own.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let busy = self.udp_read_again
            || self.admission.accept_again()
            || !self.reads_due.is_empty()
            || !self.dirty.is_empty()
            || self.persist.has_pending();
        let lingering = self
            .lingering
            .iter()
            .filter_map(|&k| self.conns.get(k)?.io.closing_deadline())
            .min();
        sleep_for(
            now,
            busy,
            [
                self.engine.poll_timeout(),
                lingering,
                self.delivery_sync_at,
                self.fds.retry_at,
                self.sniffing.front().map(|&(at, _)| at),
                self.give_back.due_at(now),
            ],
        )
    }

    /// Accepts what the listener holds, up to this turn's budget
    /// (`admission.rs`; the rest next turn).
    fn accept_all(&mut self, now: Instant) {
        loop {
            if !self.admission.admit_accept() {
                return;
            }
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    let addr = netio::canonical(addr);
                    enable_keepalive(&stream, KEEPALIVE_IDLE_SECS);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let until = now + SNIFF_WAIT;
                    let mut io = Connection::new(stream, Layer::Sniffing { until }, OUT_CAP);
                    if let Err(e) = io.sync_interest(self.poll.registry(), Token(key), false) {
                        log::warn!("cannot register connection from {addr}: {e}");
                        continue;
                    }
                    self.sniffing.push_back((until, key));
                    entry.insert(Conn {
                        io,
                        gate: ReadGate::default(),
                        dirty: false,
                    });
                    self.engine.handle(now, Input::Connect { conn: key, addr });
                    self.fds.accepted();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.admission.backlog_empty();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if FdReserve::is_exhaustion(&e) => {
                    // Returning with connections queued waited for an edge
                    // that never came (accept.rs): refuse one and go on.
                    if !self.fds.shed_one(&self.listener, now, &e) {
                        return;
                    }
                }
                Err(e) => {
                    // Not for want of descriptors; whatever it is, try again
                    // by timer rather than wait for an edge.
                    log::warn!("accept failed: {e}");
                    self.fds.retry_at = Some(now + super::accept::ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn recv_datagrams(&mut self, now: Instant) {
        let engine = &mut self.engine;
        self.udp_read_again = self.udp_in.drain(&self.udp, UDP_BUDGET, |from, bytes| {
            engine.handle(
                now,
                Input::Datagram {
                    from: netio::canonical(from),
                    bytes,
                },
            )
        });
    }

    fn conn_event(&mut self, now: Instant, key: usize, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.io.is_gone() {
            return;
        }
        mark_dirty(&mut self.dirty, key, c);
        if writable {
            if c.io.flush().is_err() {
                if !c.io.is_closing() {
                    self.engine.handle(now, Input::Disconnect { conn: key });
                }
                return;
            }
            if c.gate.output_drained(c.io.out.len()) {
                self.read_next_turn(key);
            }
        }
        if readable {
            self.read_conn(now, key);
        }
    }

    fn catch_up_reads(&mut self, now: Instant) {
        if self.udp_read_again {
            self.recv_datagrams(now);
        }
        for key in self.reads_due.take() {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            // Off the list now: the flag is cleared whether or not it is
            // read, so whatever unblocks it later can schedule it again.
            if c.io.take_read_again() && !c.io.is_gone() {
                self.read_conn(now, key);
            }
        }
    }

    /// Reads `key` again next turn without waiting for a readiness event.
    fn read_next_turn(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            self.reads_due.schedule(key, &mut c.io);
        }
    }

    /// Silent connections whose sniffing window passed are plaintext: what
    /// the engine queued for them (`EVENT WELCOME`) goes out now.
    fn end_sniffing(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.sniffing.front() {
            if at > now {
                return;
            }
            self.sniffing.pop_front();
            if let Some(c) = self.conns.get_mut(key) {
                if matches!(c.io.layer, Layer::Sniffing { until } if until <= now) {
                    c.io.layer = Layer::Plain;
                    mark_dirty(&mut self.dirty, key, c);
                }
            }
        }
    }

    /// Decides plain or TLS from the first byte, without consuming it.
    /// False while no byte has come yet.
    fn sniff(&mut self, now: Instant, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if !matches!(c.io.layer, Layer::Sniffing { .. }) {
            return true;
        }
        let mut first = [0u8; 1];
        match c.io.stream.peek(&mut first) {
            Ok(1) if first[0] == TLS_HANDSHAKE_BYTE => {
                match rustls::ServerConnection::new(self.tls.config()) {
                    Ok(tls) => {
                        c.io.layer = Layer::tls(tls);
                        self.engine.handle(now, Input::Secure { conn: key });
                    }
                    Err(e) => {
                        log::warn!("cannot start TLS on conn {key}: {e}");
                        c.io.layer = Layer::Plain;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            // Any other byte, EOF or an error: plain (the read that follows
            // reports EOF and errors as usual).
            _ => c.io.layer = Layer::Plain,
        }
        mark_dirty(&mut self.dirty, key, c);
        true
    }

    /// Takes a connection's input one frame at a time while its gate is open
    /// (see `flow.rs`), through `netio::Connection::next_input`: frames left
    /// in the line reader from an earlier pause first, then one chunk from
    /// the socket at a time (through its TLS layer, if any), up to
    /// `READ_BUDGET`. Each frame's outputs are executed before the next frame
    /// is taken, so the gate sees the output it caused.
    fn read_conn(&mut self, now: Instant, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.io.take_read_again();
        }
        if !self.admit_read(now, key) {
            return;
        }
        let mut taken = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.io.is_closing() || c.io.is_gone() || !c.gate.is_open() {
                // Closed by this input, or stopped: what reopens the gate
                // schedules the next read.
                return;
            }
            if c.io.layer.is_tls() {
                // Records read may need answers (handshake, key update, alerts).
                mark_dirty(&mut self.dirty, key, c);
            }
            // Newcomers' frames are sliced per turn (admission.rs); a
            // held-back frame stays unread until next turn.
            let logged_in = self.engine.is_logged_in(key);
            if !self.admission.may_take(logged_in) {
                self.read_next_turn(key);
                return;
            }
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            match c.io.next_input(&mut taken) {
                Next::Frame(frame) => {
                    self.admission.took_frame(logged_in, &frame);
                    self.feed_frame(now, key, frame)
                }
                // The handshake has just finished, and no frame that came
                // with it has reached the engine yet: the session a LOGIN
                // among them starts is sealed.
                Next::Secret(secret) => self
                    .engine
                    .handle(now, Input::TransportSecret { conn: key, secret }),
                Next::Budget => {
                    // Edge-triggered readiness will not repeat: read next turn.
                    self.read_next_turn(key);
                    return;
                }
                Next::Drained => return,
                // Possibly only a half-close: the engine answers what was
                // sent, then closes. Marking the connection gone here
                // dropped those replies (a piped `nc -N` session got
                // nothing back).
                Next::Ended => {
                    self.engine.handle(now, Input::InputEnd { conn: key });
                    return;
                }
                Next::Failed(e) => {
                    log::info!("conn {key}: {e}; closing");
                    self.engine.handle(now, Input::Disconnect { conn: key });
                    return;
                }
            }
        }
    }

    /// Whether `key`'s input is taken now: not before its first byte has
    /// said plain or TLS, not past this turn's handshake budget (then it is
    /// read next turn), and not once it is gone or lingering (a lingering
    /// connection's input is discarded here).
    fn admit_read(&mut self, now: Instant, key: usize) -> bool {
        if !self.sniff(now, key) {
            return false;
        }
        let handshaking = self
            .conns
            .get(key)
            .is_some_and(|c| c.io.layer.is_handshaking());
        if !self.handshakes.admit(handshaking) {
            self.read_next_turn(key);
            return false;
        }
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if c.io.is_gone() {
            return false;
        }
        if c.io.is_closing() {
            // Lingering: discard input until the peer closes too; `end_turn`
            // frees the connection once our last lines are out as well.
            if c.io.layer.is_tls() {
                mark_dirty(&mut self.dirty, key, c);
            }
            c.io.discard_input();
            return false;
        }
        true
    }

    /// One frame through the engine, its outputs executed at once, so the
    /// gate sees the output it caused before the next frame is taken.
    fn feed_frame(&mut self, now: Instant, key: usize, frame: Frame) {
        self.engine.handle(now, Input::Frame { conn: key, frame });
        self.run_outputs(now);
        let accepts = self.engine.accepts_input(key);
        if let Some(c) = self.conns.get_mut(key) {
            c.gate.after_frame(accepts, c.io.out.len());
        }
    }

    /// Makes this turn's store writes durable and reports them to the engine
    /// (which then produces the replies), and runs the outputs that follow.
    fn commit(&mut self, now: Instant) {
        if self.persist.has_pending() {
            self.persist.commit(now, &mut self.engine);
            self.run_outputs(now);
        }
    }

    /// Executes the engine's outputs in order. Store writes are made here but
    /// confirmed only by `commit`, after their fsync.
    /// Returns how many outputs it took.
    fn run_outputs(&mut self, now: Instant) -> usize {
        let mut taken = 0;
        while let Some(out) = self.engine.poll_output() {
            taken += 1;
            let Some(out) = self.persist.take(now, &mut self.engine, out) else {
                continue;
            };
            match out {
                Output::Send { conn, line } => {
                    let Some(c) = self
                        .conns
                        .get_mut(conn)
                        .filter(|c| !c.io.is_closing() && !c.io.is_gone())
                    else {
                        continue;
                    };
                    mark_dirty(&mut self.dirty, conn, c);
                    if c.io.out.push_line(&line.wire().to_string()).is_err() {
                        self.engine.handle(now, Input::Overflow { conn });
                    }
                }
                Output::Close { conn } => self.begin_close(now, conn),
                Output::AdminReply { conn, lines } => self.admin.reply(conn, &lines),
                Output::Evict { conn, line } => {
                    if let Some(c) = self.conns.get_mut(conn) {
                        // On a line boundary: the rest of a partly written
                        // line goes out before the notice.
                        c.io.out.replace_with_line(&line.wire().to_string());
                    }
                    self.begin_close(now, conn);
                }
                Output::Resume { conn } => {
                    if self
                        .conns
                        .get_mut(conn)
                        .is_some_and(|c| c.gate.engine_resumed())
                    {
                        self.read_next_turn(conn);
                    }
                }
                Output::Datagram { to, bytes } => {
                    let to = netio::for_socket(to, self.udp_local);
                    self.udp_queue.push(to, bytes)
                }
                Output::StoreUser { .. }
                | Output::StoreBroadcast { .. }
                | Output::StoreDelivery(_)
                | Output::Compact => unreachable!("taken by Persist"),
            }
        }
        // This call's datagrams (a fan-out's, the ACK answers of a receive
        // batch) leave together; what the socket does not take waits for
        // the writable event (interest set in `end_turn`).
        self.udp_queue.flush(&mut Mmsg(&self.udp));
        taken
    }

    fn begin_close(&mut self, now: Instant, conn: usize) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.io.begin_close(now + LINGER) {
            self.lingering.push(conn);
        }
        mark_dirty(&mut self.dirty, conn, c);
        self.read_next_turn(conn);
    }

    /// Flushes, persists, recomputes interests and frees finished connections.
    fn end_turn(&mut self, now: Instant) {
        match self.persist.store_mut().flush_deliveries(now, false) {
            Ok(at) => self.delivery_sync_at = at,
            Err(e) => log::error!("cannot write deliveries: {e}"),
        }
        let registry = self.poll.registry();
        self.admin.end_turn(registry);
        if let Some(m) = self.metrics.as_mut() {
            m.end_turn(registry);
        }
        let mut dead = Vec::new();
        let mut visit = std::mem::take(&mut self.dirty);
        visit.extend(self.lingering.iter().copied().filter(|&k| {
            // Already on the dirty list: do not visit twice.
            self.conns.get(k).is_some_and(|c| !c.dirty)
        }));
        for key in visit {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            c.dirty = false;
            let closing = c.io.is_closing();
            match c.io.settle(now) {
                Fate::Open => {}
                Fate::Failed => {
                    if !closing {
                        self.engine.handle(now, Input::Disconnect { conn: key });
                    }
                    dead.push(key);
                    continue;
                }
                Fate::Finished => {
                    dead.push(key);
                    continue;
                }
            }
            if c.gate.output_drained(c.io.out.len()) {
                self.reads_due.schedule(key, &mut c.io);
            }
            if let Err(e) = c.io.sync_interest(registry, Token(key), false) {
                log::warn!("reregister conn {key}: {e}");
            }
        }
        for key in dead {
            let mut c = self.conns.remove(key);
            // Its buffers go back to malloc when `c` drops; to the OS once
            // enough has gone (defect 14: RSS stayed at the peak).
            self.give_back
                .freed(c.io.out.capacity() + c.io.reader.capacity());
            c.io.deregister(registry);
            if c.io.is_closing() {
                self.lingering.retain(|&k| k != key);
            }
        }
        self.give_back.end_turn(now, give_back::trim);
        let udp_want = netio::interest(true, !self.udp_queue.is_empty()).expect("always readable");
        if udp_want != self.udp_registered {
            let _ = registry.reregister(&mut self.udp, UDP, udp_want);
            self.udp_registered = udp_want;
        }
    }

    /// One request from the admin socket. STATS is answered here (half the
    /// counters are the driver's); account changes go to the engine.
    fn admin_request(&mut self, now: Instant, conn: usize, line: Result<String, String>) {
        let req = line.and_then(|l| AdminRequest::parse(&l));
        match req {
            Err(e) => self.admin.reply(conn, &[format!("ERR {e}")]),
            Ok(AdminRequest::Stats) => {
                let mut lines: Vec<String> = self
                    .counters(now)
                    .into_iter()
                    .map(|(name, value)| format!("{name} {value}"))
                    .collect();
                lines.push("OK".into());
                self.admin.reply(conn, &lines);
            }
            Ok(req) => self.engine.handle(now, Input::Admin { conn, req }),
        }
    }

    /// Every counter of `peerline-server stats` and `/metrics`, by name.
    pub fn counters(&self, now: Instant) -> Vec<(&'static str, u64)> {
        let mut all = vec![(
            "uptime_seconds",
            now.saturating_duration_since(self.started).as_secs(),
        )];
        for (name, mut value) in self.engine.counters() {
            if name == "datagrams_dropped" {
                // Dropped by the engine (malformed, forged) or by a full send queue.
                value += self.udp_queue.dropped;
            }
            all.push((name, value));
        }
        let e = &self.engine.stats;
        all.extend([
            // Of datagrams_dropped: sealed ones that did not verify, or replayed.
            ("sealed_forged", e.sealed_forged),
            ("sealed_replayed", e.sealed_replayed),
            // Of datagrams_dropped: outgoing ones a full send queue refused.
            ("udp_queue_dropped", self.udp_queue.dropped),
            // System calls that sent / received datagrams (sendmmsg /
            // recvmmsg, several datagrams each): against datagrams_sent they
            // show the batching.
            ("udp_send_calls", self.udp_queue.calls),
            ("udp_recv_calls", self.udp_in.calls),
            ("datagrams_received", self.udp_in.received),
            // Connections refused for want of file descriptors (accept.rs).
            ("accepts_refused", self.fds.shed),
            // fsyncs of users.csv / broadcasts.csv (one per file per turn at most).
            ("store_syncs", self.persist.syncs),
            // Sessions resumed by ticket (no hash), and tickets refused.
            ("resumes_ok", e.resumes_ok),
            ("tickets_refused", e.tickets_refused),
            // malloc_trim calls after connections' buffers were freed (give_back.rs).
            ("memory_trims", self.give_back.trims),
        ]);
        all
    }

    /// SIGHUP: re-reads the configuration and applies what can change while
    /// running; sessions, sockets and the data dir are untouched. A bad new
    /// configuration is logged and the running one kept.
    fn reload(&mut self) {
        super::service::reloading();
        self.reload_config();
        // The certificate and key are re-read even when the configuration
        // could not be: renewing them must not depend on the config file.
        match self.tls.reload_from(self.cfg.tls.clone()) {
            Ok(None) => log::info!(
                "SIGHUP: TLS certificate {} reloaded, fingerprint {} (unchanged)",
                self.tls.cert_path().display(),
                self.tls.fingerprint()
            ),
            Ok(Some(old)) => log::warn!(
                "SIGHUP: TLS key changed: new connections get fingerprint {} (was {old}); \
                 clients that pinned the old one will refuse it",
                self.tls.fingerprint()
            ),
            Err(e) => log::error!(
                "SIGHUP: TLS certificate not reloaded, keeping fingerprint {}: {e}",
                self.tls.fingerprint()
            ),
        }
        super::service::ready("reloaded");
    }

    fn reload_config(&mut self) {
        match self.cfg.reload() {
            Err(e) => {
                log::error!("SIGHUP: configuration not reloaded, keeping the running one: {e}")
            }
            Ok(mut new) => {
                let mut restart = Vec::new();
                if (new.bind, new.port) != (self.cfg.bind, self.cfg.port) {
                    restart.push("bind/port");
                }
                if new.data_dir != self.cfg.data_dir {
                    restart.push("data-dir");
                }
                if new.metrics != self.cfg.metrics {
                    restart.push("metrics");
                }
                if !restart.is_empty() {
                    log::warn!(
                        "SIGHUP: {} changed; that takes a restart (still using the running value)",
                        restart.join(", ")
                    );
                }
                new.bind = self.cfg.bind;
                new.bind_is_default = self.cfg.bind_is_default;
                new.port = self.cfg.port;
                new.data_dir = self.cfg.data_dir.clone();
                new.metrics = self.cfg.metrics;
                if new.tls.generated {
                    // The generated pair lives in the data dir in use.
                    new.tls = self.cfg.tls.clone();
                }
                if new.engine.max_clients > self.cfg.engine.max_clients {
                    if let Err(e) = ensure_fd_limit(new.engine.max_clients) {
                        log::warn!(
                            "SIGHUP: {e}; max-clients stays {}",
                            self.cfg.engine.max_clients
                        );
                        new.engine.max_clients = self.cfg.engine.max_clients;
                    }
                }
                let changes = new.changes_from(&self.cfg);
                if changes.is_empty() {
                    log::info!("SIGHUP: configuration reloaded, nothing changed");
                }
                for c in changes {
                    log::info!("SIGHUP: {c}");
                }
                self.engine.set_config(new.engine.clone());
                // A raised max-clients: the tables' room follows (no-op otherwise).
                let slots = connection_slots(new.engine.max_clients);
                self.engine.reserve_connections(slots);
                self.conns
                    .reserve_exact(slots.saturating_sub(self.conns.len()));
                self.cfg = new;
            }
        }
    }

    fn shutdown(mut self) -> Result<(), String> {
        super::service::stopping();
        let now = Instant::now();
        self.run_outputs(now);
        self.commit(now);
        // Silent connections get their `EVENT CLOSING shutdown` in clear now.
        for (_, c) in self.conns.iter_mut() {
            if matches!(c.io.layer, Layer::Sniffing { .. }) {
                c.io.layer = Layer::Plain;
            }
        }
        self.engine.handle(now, Input::Shutdown);
        self.run_outputs(now);
        self.commit(now);
        let deadline = now + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(256);
        while Instant::now() < deadline {
            let now = Instant::now();
            self.end_turn(now);
            if self.conns.iter().all(|(_, c)| c.io.flushed()) && self.udp_queue.is_empty() {
                break;
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(20)));
            self.udp_queue.flush(&mut Mmsg(&self.udp));
        }
        self.persist
            .store_mut()
            .flush_deliveries(Instant::now(), true)
            .map_err(|e| format!("cannot flush deliveries at shutdown: {e}"))?;
        let counters: Vec<String> = self
            .counters(Instant::now())
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        log::info!("stats at shutdown: {}", counters.join(" "));
        log::info!("shut down cleanly");
        Ok(())
    }
}

/// How long a poll may sleep: not at all when `busy`, else until the earliest
/// deadline (one already passed means now), forever without one.
fn sleep_for<const N: usize>(
    now: Instant,
    busy: bool,
    deadlines: [Option<Instant>; N],
) -> Option<Duration> {
    if busy {
        return Some(Duration::ZERO);
    }
    deadlines
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
}

/// Puts a connection on the list `end_turn` visits, once per turn.
fn mark_dirty(dirty: &mut Vec<usize>, key: usize, c: &mut Conn) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::engine::EngineConfig;
    use crate::server::records::BroadcastFile;

    /// The driver's and the engine's connection records are slab entries
    /// held for every connection (issue 18, memory per session): a field that
    /// widens one costs every connection, so widening must be a decision,
    /// made here.
    #[test]
    fn connection_records_stay_small() {
        let driver = std::mem::size_of::<Conn>();
        let engine = std::mem::size_of::<crate::server::engine::Conn>();
        assert!(driver <= 160, "driver::Conn is {driver} bytes");
        assert!(engine <= 96, "engine::Conn is {engine} bytes");
    }

    /// The tables are reserved for no more connections than there can be
    /// descriptors, nor than `--max-clients`.
    #[test]
    fn connection_slots_are_bounded_by_max_clients_and_the_fd_limit() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let fds = lim.rlim_cur as usize;
        assert_eq!(connection_slots(10), 10.min(fds));
        assert_eq!(connection_slots(usize::MAX), fds.min(1 << 20));
    }

    /// The loop's sleep asks the engine: queued outputs (left, say, by the
    /// last round of `run`) make it return at once rather than wait for
    /// the next event, and once drained it sleeps until the engine's timer.
    #[test]
    fn the_poll_does_not_sleep_on_undrained_outputs() {
        let t0 = Instant::now();
        let cfg = EngineConfig::default();
        let idle = cfg.idle_timeout;
        let mut engine = Engine::new(
            cfg,
            vec![],
            BroadcastFile::default(),
            vec![],
            t0,
            0,
            Box::new(crate::rng::Seeded::new(1)),
        );
        while engine.poll_output().is_some() {}
        assert_eq!(sleep_for(t0, false, [engine.poll_timeout(), None]), None);
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        engine.handle(t0, Input::Connect { conn: 0, addr });
        let later = t0 + Duration::from_millis(5);
        assert_eq!(
            sleep_for(later, false, [engine.poll_timeout(), None]),
            Some(Duration::ZERO)
        );
        while engine.poll_output().is_some() {}
        assert_eq!(
            sleep_for(later, false, [engine.poll_timeout(), None]),
            Some(idle - Duration::from_millis(5))
        );
        // The driver's own pending work (dirty connections, reads due).
        assert_eq!(
            sleep_for(later, true, [engine.poll_timeout(), None]),
            Some(Duration::ZERO)
        );
    }
}
