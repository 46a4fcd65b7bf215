//! `peerline-bench links`: direct links, encrypted vs plaintext, in one run.
//!
//! A real server and a real `peerline-client` (bob, listening with
//! `--allow-plaintext-links`). The tool plays alice: its control connection
//! asks for each link, bob's stdin accepts it, and the tool dials bob's
//! listener, once in plaintext (`PEER alice <token>` lines) and once
//! encrypted, using the same `LinkWire` code the client uses. It measures:
//! - link setup: from the TCP connect to `OK PEER bob` at the dialer (the
//!   server's introduction is not included: it is the same for both);
//! - messages/s: alice writes N `MSG` lines as fast as the link takes them,
//!   until bob's client has printed the last one;
//! - the crypto alone: seal and open per message, in-process, no sockets.
//!
//! Blocking sockets with bounded timeouts: this is a measuring tool, not a
//! server, and it runs one link at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use peerline::listening;
use peerline::proto::link_noise::{LinkWire, WireEvent};
use peerline::proto::Frame;

const WAIT: Duration = Duration::from_secs(20);

/// `peerline-bench links` flags.
#[derive(clap::Args)]
pub struct Args {
    /// The peerline-server binary.
    #[arg(long, default_value = "target/release/peerline-server")]
    pub server: PathBuf,
    /// The peerline-client binary (plays bob, the accepting side).
    #[arg(long, default_value = "target/release/peerline-client")]
    pub client: PathBuf,
    /// Links set up per form (p50/p90 over these).
    #[arg(long, default_value_t = 30)]
    pub links: usize,
    /// Messages sent for the throughput figure, per form.
    #[arg(long, default_value_t = 20000)]
    pub messages: usize,
    /// Padding bytes added to each message text.
    #[arg(long, default_value_t = 64)]
    pub pad: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plaintext,
    Encrypted,
}

/// Kills our child (by PID, through `Child`) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A line-based control connection with bounded waits.
struct Control {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Control {
    fn connect(addr: SocketAddr) -> Result<Control, String> {
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("{addr}: {e}"))?;
        stream
            .set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        Ok(Control { stream, reader })
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("send {line:?}: {e}"))
    }

    /// The next line starting with `prefix` (others skipped).
    fn expect(&mut self, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut l = String::new();
            match self.reader.read_line(&mut l) {
                Ok(0) => return Err(format!("server closed while waiting for {prefix:?}")),
                Ok(_) => {
                    let l = l.trim_end().to_owned();
                    if l.starts_with(prefix) {
                        return Ok(l);
                    }
                    if l.starts_with("ERR ") {
                        return Err(format!("waiting for {prefix:?}: {l}"));
                    }
                }
                Err(e) => return Err(format!("waiting for {prefix:?}: {e}")),
            }
        }
        Err(format!("no {prefix:?} within {WAIT:?}"))
    }
}

/// bob: a real client whose stdout lines arrive on a channel.
struct Bob {
    _proc: Proc,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Bob {
    /// `fingerprint`: the server's TLS key, which the client then trusts.
    fn start(client: &Path, server: SocketAddr, fingerprint: &str) -> Result<Bob, String> {
        let mut child = Command::new(client)
            .arg(server.ip().to_string())
            .arg(server.port().to_string())
            .args(["--listen-addr", "127.0.0.1", "--allow-plaintext-links"])
            .args(["--fingerprint", fingerprint])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", client.display()))?;
        let out = child.stdout.take().expect("piped");
        let stdin = child.stdin.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Bob {
            _proc: Proc(child),
            stdin,
            lines,
        })
    }

    fn type_line(&mut self, line: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("bob's stdin: {e}"))
    }

    /// Waits for a printed line containing `needle`.
    fn expect(&mut self, needle: &str) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(format!("bob printed no {needle:?} within {WAIT:?}")),
            }
        }
    }
}

/// One dialed link, either form.
struct Link {
    stream: TcpStream,
    wire: Option<LinkWire>,
    buf: Vec<u8>,
}

impl Link {
    /// Dials and completes the hello; returns the link and how long that took.
    fn dial(mode: Mode, addr: SocketAddr, token: &str) -> Result<(Link, Duration), String> {
        let t0 = Instant::now();
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(WAIT))
            .map_err(|e| e.to_string())?;
        let mut link = Link {
            stream,
            wire: None,
            buf: Vec::new(),
        };
        match mode {
            Mode::Plaintext => {
                link.write(format!("PEER alice {token}\n").as_bytes())?;
                let l = link.read_line()?;
                if l != "OK PEER bob" {
                    return Err(format!("plaintext hello answered {l:?}"));
                }
            }
            Mode::Encrypted => {
                let (wire, hello) = LinkWire::dial(token, "alice", "bob");
                link.wire = Some(wire);
                link.write(&hello)?;
                match link.next_event()? {
                    WireEvent::Secured => {}
                    e => return Err(format!("encrypted hello answered {e:?}")),
                }
                link.send("PEER alice")?;
                match link.next_event()? {
                    WireEvent::Line(Frame::Line(l)) if l == "OK PEER bob" => {}
                    e => return Err(format!("encrypted PEER answered {e:?}")),
                }
            }
        }
        Ok((link, t0.elapsed()))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("link write: {e}"))
    }

    /// The bytes of one line in this link's form.
    fn encode(&mut self, line: &str) -> Result<Vec<u8>, String> {
        match &mut self.wire {
            Some(w) => w.seal(line).map_err(|e| e.to_string()),
            None => Ok(format!("{line}\n").into_bytes()),
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let bytes = self.encode(line)?;
        self.write(&bytes)
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("link closed".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("link read: {e}")),
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            self.fill()?;
        }
    }

    fn next_event(&mut self) -> Result<WireEvent, String> {
        let wire = self.wire.as_mut().expect("encrypted link");
        loop {
            if let Some(e) = wire.next_event() {
                return Ok(e);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("link closed".into()),
                Ok(n) => wire.push(&chunk[..n]),
                Err(e) => return Err(format!("link read: {e}")),
            }
        }
    }
}

/// One introduction: alice asks, bob accepts; the token from `EVENT PEER`.
fn introduce(alice: &mut Control, bob: &mut Bob) -> Result<(SocketAddr, String), String> {
    alice.send("CONNECT bob")?;
    alice.expect("OK CONNECT")?;
    bob.expect("/accept alice")?;
    bob.type_line("/accept alice")?;
    let ev = alice.expect("EVENT PEER bob ")?;
    let f: Vec<&str> = ev.split(' ').collect();
    let addr = f
        .get(3)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("bad EVENT PEER: {ev}"))?;
    let token = f.get(4).ok_or_else(|| format!("bad EVENT PEER: {ev}"))?;
    Ok((addr, token.to_string()))
}

fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn p90_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)].as_secs_f64() * 1e3
}

struct Figures {
    setup_p50_ms: f64,
    setup_p90_ms: f64,
    msgs_per_s: f64,
    bytes_per_msg: usize,
}

fn measure(mode: Mode, a: &Args, alice: &mut Control, bob: &mut Bob) -> Result<Figures, String> {
    let mut setups = Vec::new();
    for _ in 0..a.links {
        let (addr, token) = introduce(alice, bob)?;
        let (mut link, took) = Link::dial(mode, addr, &token)?;
        setups.push(took);
        bob.expect("alice connected")?;
        link.send("BYE")?;
        bob.expect("alice closed the direct link")?;
    }
    // Throughput on one more link: every message written at once, timed
    // until bob's client has printed the last.
    let (addr, token) = introduce(alice, bob)?;
    let (mut link, _) = Link::dial(mode, addr, &token)?;
    bob.expect("alice connected")?;
    let pad = "x".repeat(a.pad);
    let mut bytes = Vec::new();
    let t0 = Instant::now();
    for i in 0..a.messages {
        bytes.extend(link.encode(&format!("MSG m{i} {pad}"))?);
    }
    let bytes_per_msg = bytes.len() / a.messages.max(1);
    link.write(&bytes)?;
    bob.expect(&format!("<alice> m{} ", a.messages - 1))?;
    let elapsed = t0.elapsed();
    link.send("BYE")?;
    bob.expect("alice closed the direct link")?;
    Ok(Figures {
        setup_p50_ms: median_ms(&mut setups),
        setup_p90_ms: p90_ms(&mut setups),
        msgs_per_s: a.messages as f64 / elapsed.as_secs_f64(),
        bytes_per_msg,
    })
}

/// Seal + open per message in-process: what the crypto alone costs.
fn crypto_only(messages: usize, pad: usize) -> Result<f64, String> {
    let token = "0123456789abcdef0123456789abcdef";
    let (mut alice, hello) = LinkWire::dial(token, "alice", "bob");
    let mut bob = LinkWire::incoming();
    bob.push(&hello);
    let Some(WireEvent::Hello(h)) = bob.next_event() else {
        return Err("no hello".into());
    };
    let (_, answer) = bob
        .answer_hello(&h, "bob", [("alice", token)])
        .ok_or("handshake failed")?;
    alice.push(&answer);
    if alice.next_event() != Some(WireEvent::Secured) {
        return Err("handshake did not complete".into());
    }
    let line = format!("MSG m {}", "x".repeat(pad));
    let t0 = Instant::now();
    for _ in 0..messages {
        let f = alice.seal(&line).map_err(|e| e.to_string())?;
        bob.push(&f);
        match bob.next_event() {
            Some(WireEvent::Line(_)) => {}
            e => return Err(format!("open failed: {e:?}")),
        }
    }
    Ok(messages as f64 / t0.elapsed().as_secs_f64())
}

pub fn run(a: &Args) -> Result<(), String> {
    for (what, p) in [
        ("peerline-server", &a.server),
        ("peerline-client", &a.client),
    ] {
        if !p.is_file() {
            return Err(format!(
                "{what} not found at {} (cargo build --release)",
                p.display()
            ));
        }
    }
    if a.links == 0 || a.messages == 0 {
        return Err("--links and --messages must be positive".into());
    }
    let dir = std::env::temp_dir().join(format!("peerline-bench-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(a: &Args, dir: &Path) -> Result<(), String> {
    let mut child = Command::new(&a.server)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--kdf-iterations",
            "1000",
            // alice and bob sign up from one address; the abuse limits
            // would refuse bob (they are measured elsewhere).
            "--signup-rate",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", a.server.display()))?;
    let out = child.stdout.take().expect("piped");
    let server = Proc(child);
    let addr = listening::wait_for(out, WAIT)?.tcp;

    let mut alice = Control::connect(addr)?;
    alice.expect("EVENT WELCOME")?;
    alice.send("SIGNUP alice pw-alice pw-alice")?;
    alice.expect("OK SIGNUP")?;
    alice.send("LOGIN alice pw-alice")?;
    alice.expect("OK LOGIN")?;
    let fingerprint = peerline::server::tls::fingerprint_of(dir, None, None)?.to_string();
    let mut bob = Bob::start(&a.client, addr, &fingerprint)?;
    bob.type_line("/signup bob pw-bob pw-bob")?;
    bob.type_line("/login bob pw-bob")?;
    bob.expect("logged in as bob")?;

    let plain = measure(Mode::Plaintext, a, &mut alice, &mut bob)?;
    let enc = measure(Mode::Encrypted, a, &mut alice, &mut bob)?;
    let crypto = crypto_only(a.messages.max(10_000), a.pad)?;
    drop(server);

    println!(
        "Direct links, one run: {} links per form for setup, {} messages of {} bytes of text for throughput.\n",
        a.links,
        a.messages,
        format!("MSG m0 {}", "x".repeat(a.pad)).len()
    );
    println!("| | plaintext | encrypted (Noise NNpsk0) |");
    println!("| --- | ---: | ---: |");
    println!(
        "| link setup, connect → `OK PEER` (ms, p50 / p90) | {:.2} / {:.2} | {:.2} / {:.2} |",
        plain.setup_p50_ms, plain.setup_p90_ms, enc.setup_p50_ms, enc.setup_p90_ms
    );
    println!(
        "| messages/s, tool → real client (printed) | {:.0} | {:.0} |",
        plain.msgs_per_s, enc.msgs_per_s
    );
    println!(
        "| bytes on the wire per message | {} | {} |",
        plain.bytes_per_msg, enc.bytes_per_msg
    );
    println!("| seal + open in-process, no sockets (messages/s) | - | {crypto:.0} |");
    Ok(())
}
