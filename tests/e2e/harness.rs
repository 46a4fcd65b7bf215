//! Real processes over loopback, with every wait bounded.
//!
//! `Server::start` runs `peerline-server --port 0` on a temp data dir and reads
//! its `listening …` line; `Line` is a line-oriented TCP client whose `expect*`
//! calls fail with the transcript so far after a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use peerline::listening;

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_peerline-server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_peerline-client");

/// Flags the harness adds unless a test passes the flag itself.
pub const TEST_LIMITS: [(&str, &str); 4] = [
    ("--kdf-iterations", "1000"),
    ("--max-per-ip", "0"),
    ("--signup-rate", "0"),
    ("--broadcast-rate", "0"),
];

/// Default bound for one expected line.
pub const WAIT: Duration = Duration::from_secs(10);

/// The next datagram `sock` gets within `limit`, `None` if none comes; one
/// from anyone but `server` fails the test.
pub fn recv_datagram(sock: &UdpSocket, server: SocketAddr, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, server, "datagram from a stranger");
                return Some(buf[..n].to_vec());
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("UDP receive failed: {e}"),
        }
    }
}

/// A running server; killed (by PID, ours) on drop.
pub struct Server {
    pub child: Child,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stderr_lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts a server on a fresh temp dir with low KDF cost and these extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data dir (for restart tests).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(dir, extra, &[])
    }

    /// Starts a server on an existing data dir and a given port (a restart
    /// that clients must find where they left it).
    pub fn start_on(dir: &Path, port: u16, extra: &[&str]) -> Server {
        Server::start_full(dir, port, extra, &[])
    }

    /// `start_in` with extra environment variables for the server.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_full(dir, 0, extra, env)
    }

    fn start_full(dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        // Low KDF cost; and every test connects from 127.0.0.1 and most sign
        // up several users, so the abuse limits are off unless a test sets them.
        for (flag, value) in TEST_LIMITS {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(&args, dir, env)
    }

    /// Starts a server through a wrapper command (`ip netns exec NS`, which
    /// execs it) on `dir`; `extra` must include `--bind`.
    pub fn start_via(wrapper: &[&str], dir: &Path, extra: &[&str]) -> Server {
        let (program, rest) = wrapper.split_first().expect("a wrapper command");
        let mut cmd = Command::new(program);
        cmd.args(rest).arg(SERVER_BIN).args([
            "--port",
            "0",
            "--data-dir",
            &dir.display().to_string(),
            "--kdf-iterations",
            "1000",
        ]);
        cmd.args(extra);
        Server::spawn_cmd(cmd, dir)
    }

    /// Runs the server with exactly `args` (and `env`); `dir` is its data dir
    /// as far as the test knows.
    pub fn spawn(args: &[String], dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.args(args).envs(env.iter().copied());
        Server::spawn_cmd(cmd, dir)
    }

    /// Runs `cmd` (a server command line, perhaps wrapped, as by `ip netns
    /// exec`, in something that execs it: the PID must be the server's).
    pub fn spawn_cmd(mut cmd: Command, dir: &Path) -> Server {
        // The caller's own RUST_LOG, if it set one, wins.
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn peerline-server");
        // Stderr first: a server logging into a full pipe would never print
        // its `listening` line.
        let stderr_lines = lines_of(child.stderr.take().unwrap());
        let announced = listening::wait_for(child.stdout.take().unwrap(), WAIT)
            .unwrap_or_else(|e| panic!("peerline-server {e}"));
        Server {
            child,
            tcp: announced.tcp,
            udp: announced.udp,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            stderr_lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new plaintext control connection that has consumed `EVENT WELCOME`.
    /// It sends an empty line first (ignored by the protocol), so the server
    /// knows at once it is not TLS instead of waiting out its sniffing window.
    pub fn connect(&self) -> Line {
        Self::welcomed(Line::connect(self.tcp))
    }

    /// [`Server::connect`] from the loopback address `src` (any of
    /// 127.0.0.0/8): a source address of its own for the server's limits.
    pub fn connect_from(&self, src: &str) -> Line {
        let ip = src.parse().unwrap_or_else(|e| panic!("{src}: {e}"));
        Self::welcomed(Line::connect_from(ip, self.tcp))
    }

    fn welcomed(mut c: Line) -> Line {
        c.send("");
        c.expect_prefix("EVENT WELCOME");
        c
    }

    /// A new TLS control connection (trusting this server's generated
    /// certificate) that has consumed `EVENT WELCOME`.
    pub fn connect_tls(&self) -> Line {
        let mut c = Line::connect_tls(self.tcp, &self.data_dir.join("tls-cert.pem"));
        c.expect_prefix("EVENT WELCOME");
        c
    }

    /// The server's certificate fingerprint, `sha256:…`, as `peerline-server
    /// fingerprint` prints it.
    pub fn fingerprint(&self) -> String {
        peerline::server::tls::fingerprint_of(&self.data_dir, None, None)
            .expect("the server's generated certificate")
            .to_string()
    }

    /// Signs up and logs in `user`; returns the connection and its session token.
    pub fn login_new(&self, user: &str) -> (Line, String) {
        let mut c = self.connect();
        c.cmd_ok(&format!("SIGNUP {user} pw-{user} pw-{user}"));
        let reply = c.cmd_ok(&format!("LOGIN {user} pw-{user}"));
        let token = reply
            .split(' ')
            .nth(3)
            .expect("token in OK LOGIN")
            .to_owned();
        (c, token)
    }

    /// Sends a signal to the server (ours, by PID).
    pub fn signal(&self, sig: i32) {
        unsafe { libc_kill(self.child.id() as i32, sig) };
    }

    /// Sends a signal (ours, by PID) and waits, bounded, for the exit status.
    pub fn signal_and_wait(&mut self, sig: i32) -> std::process::ExitStatus {
        unsafe { libc_kill(self.child.id() as i32, sig) };
        wait_exit(&mut self.child, WAIT).expect("server did not exit after signal")
    }

    /// A field of the server's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    /// Stderr lines logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.stderr_lines.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub const SIGHUP: i32 = 1;
pub const SIGTERM: i32 = 15;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;

/// Runs the server binary with `args` to completion (bounded); returns status, stdout, stderr.
pub fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_server(args, &[], None)
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Every line `pipe` yields, passed on by a thread of its own until the pipe
/// ends or the receiver is dropped.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// `wait_exit`, and if our child is still running after `limit`, kills it so
/// no test leaves a process behind.
pub fn wait_exit_or_kill(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let status = wait_exit(child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Runs the server binary to completion (bounded) with `args`, extra
/// environment and, if given, `stdin` as its input; returns status, stdout,
/// stderr. `PEERLINE_*` variables of the test's own environment are removed,
/// so only `env` configures it.
pub fn run_server(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("PEERLINE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn peerline-server");
    if let Some(input) = stdin {
        // Dropped at the end of the statement: the server sees end of input.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read_all(Box::new(out)), read_all(Box::new(err)));
    let status = wait_exit_or_kill(&mut child, WAIT)
        .unwrap_or_else(|| panic!("peerline-server {args:?} did not exit within {WAIT:?}"));
    (status, out.join().unwrap(), err.join().unwrap())
}

/// A line-oriented TCP client with bounded waits and a transcript for failures.
pub struct Line {
    /// The socket itself (for addresses, shutdown, raw bytes on plain lines).
    pub stream: TcpStream,
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    /// The rustls side of a TLS line (for its exported secrets).
    tls: Option<SharedTls>,
    pub transcript: Vec<String>,
}

/// One rustls stream shared by a `Line`'s reader and writer halves.
#[derive(Clone)]
struct SharedTls(Arc<Mutex<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>);

impl Read for SharedTls {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().read(buf)
    }
}

impl Write for SharedTls {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// A rustls client config that trusts exactly the certificate in `cert_pem`
/// (the server's self-signed one) for the name `localhost`.
pub fn trusting(cert_pem: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cert_pem).expect("cert file") {
        roots
            .add(cert.expect("PEM certificate"))
            .expect("usable root");
    }
    let config = rustls::ClientConfig::builder_with_provider(peerline::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

impl Line {
    fn tcp(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to server");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        stream
    }

    pub fn connect(addr: SocketAddr) -> Line {
        Line::plain(Line::tcp(addr))
    }

    /// A plaintext connection from source address `from` (any of 127.0.0.0/8
    /// is loopback on Linux, so one machine can play many clients).
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Line {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        sock.bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        sock.connect_timeout(&addr.into(), WAIT)
            .expect("connect to server");
        let stream: TcpStream = sock.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Line::plain(stream)
    }

    fn plain(stream: TcpStream) -> Line {
        Line {
            reader: BufReader::new(Box::new(stream.try_clone().unwrap())),
            writer: Box::new(stream.try_clone().unwrap()),
            stream,
            tls: None,
            transcript: Vec::new(),
        }
    }

    /// A TLS connection that trusts the certificate in `cert_pem`.
    pub fn connect_tls(addr: SocketAddr, cert_pem: &Path) -> Line {
        let stream = Line::tcp(addr);
        let conn =
            rustls::ClientConnection::new(trusting(cert_pem), "localhost".try_into().unwrap())
                .expect("TLS client");
        let shared = SharedTls(Arc::new(Mutex::new(rustls::StreamOwned::new(
            conn,
            stream.try_clone().unwrap(),
        ))));
        Line {
            reader: BufReader::new(Box::new(shared.clone())),
            writer: Box::new(shared.clone()),
            stream,
            tls: Some(shared),
            transcript: Vec::new(),
        }
    }

    /// What a TLS line's connection exports for sealed datagrams (the
    /// client's side of the server's `Layer::udp_secret`); `None` if plain.
    pub fn udp_secret(&self) -> Option<peerline::proto::sealed::UdpSecret> {
        use peerline::proto::sealed::{UdpSecret, EXPORTER_LABEL, SECRET_LEN};
        let tls = self.tls.as_ref()?.0.lock().unwrap();
        tls.conn
            .export_keying_material([0u8; SECRET_LEN], EXPORTER_LABEL, None)
            .ok()
            .map(UdpSecret::from_bytes)
    }

    pub fn send(&mut self, line: &str) {
        self.transcript.push(format!(">> {line}"));
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.writer.flush())
            .expect("send line");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.transcript
            .push(format!(">> {:?}", String::from_utf8_lossy(bytes)));
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .expect("send bytes");
    }

    /// The next line within `limit`, or `None` on timeout; panics on EOF.
    pub fn next_within(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = Vec::new();
        loop {
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => {
                    if buf.is_empty() {
                        return Some(String::from("<EOF>"));
                    }
                }
                Ok(_) if buf.ends_with(b"\n") => {
                    let l = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    self.transcript.push(format!("<< {l}"));
                    return Some(l);
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read failed: {e}\n{}", self.dump()),
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next line, or a panic naming `what` with the transcript.
    pub fn next(&mut self, what: &str) -> String {
        match self.next_within(WAIT) {
            Some(l) => l,
            None => panic!(
                "no line within {WAIT:?} while waiting for {what}\n{}",
                self.dump()
            ),
        }
    }

    /// Skips lines until one starts with `prefix`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        self.skip_until(&format!("{prefix:?}"), |l| l.starts_with(prefix))
    }

    /// Sends a command and returns its final reply (`OK …`/`ERR …`), skipping
    /// events and LIST items.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.skip_until(&format!("the reply to {line:?}"), |l| {
            l.starts_with("OK ") || l == "OK" || l.starts_with("ERR ")
        })
    }

    /// Skips lines until one is `wanted`; returns it. The connection closing
    /// first fails the test, with `what` it was waiting for.
    fn skip_until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let l = self.next(what);
            if wanted(&l) {
                return l;
            }
            if l == "<EOF>" {
                panic!(
                    "connection closed while waiting for {what}\n{}",
                    self.dump()
                );
            }
        }
    }

    /// `cmd` that must succeed.
    pub fn cmd_ok(&mut self, line: &str) -> String {
        let r = self.cmd(line);
        assert!(r.starts_with("OK "), "{line:?} got {r:?}\n{}", self.dump());
        r
    }

    /// `cmd` that must fail with `code`.
    pub fn cmd_err(&mut self, line: &str, code: &str) -> String {
        let r = self.cmd(line);
        assert!(
            r.starts_with(&format!("ERR {code}")),
            "{line:?} wanted ERR {code}, got {r:?}\n{}",
            self.dump()
        );
        r
    }

    /// Asserts that nothing arrives within `limit`.
    pub fn expect_silence(&mut self, limit: Duration) {
        if let Some(l) = self.next_within(limit) {
            panic!("expected silence, got {l:?}\n{}", self.dump());
        }
    }

    /// Waits, bounded, for the server to close the connection; returns lines seen.
    pub fn expect_closed(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let l = self.next("the connection to close");
            if l == "<EOF>" {
                return seen;
            }
            seen.push(l);
        }
    }

    pub fn dump(&self) -> String {
        format!("transcript:\n  {}", self.transcript.join("\n  "))
    }
}

/// A running `peerline-client` with piped stdin and captured stdout.
pub struct Client {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Client {
    /// `peerline-client` aimed at `server` over TLS, trusting exactly its
    /// key (`--fingerprint`, so no known_servers file is touched); other
    /// flags and stdio are the caller's.
    pub fn command(server: &Server) -> Command {
        let mut cmd = Client::command_bare(server);
        cmd.arg("--fingerprint").arg(server.fingerprint());
        cmd
    }

    /// `peerline-client HOST PORT` and nothing else.
    pub fn command_bare(server: &Server) -> Command {
        let mut cmd = Command::new(CLIENT_BIN);
        cmd.arg(server.tcp.ip().to_string())
            .arg(server.tcp.port().to_string());
        cmd
    }

    pub fn start(server: &Server, extra: &[&str]) -> Client {
        let mut cmd = Client::command(server);
        cmd.args(extra);
        Client::start_cmd(cmd)
    }

    /// Runs `cmd`, a full client command line (perhaps wrapped in `ip netns exec`).
    pub fn start_cmd(mut cmd: Command) -> Client {
        Client::spawn(cmd.stderr(Stdio::null()))
    }

    /// Like `start`, with the client's log (`RUST_LOG=info`) written to `log`.
    pub fn start_logging(server: &Server, extra: &[&str], log: &Path) -> Client {
        let file = std::fs::File::create(log).expect("client log file");
        Client::spawn(
            Client::command(server)
                .args(extra)
                .env("RUST_LOG", "info")
                .stderr(file),
        )
    }

    fn spawn(cmd: &mut Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn peerline-client");
        Client {
            lines: lines_of(child.stdout.take().unwrap()),
            stdin: child.stdin.take(),
            child,
            seen: Vec::new(),
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to client stdin");
        stdin.flush().unwrap();
    }

    /// Waits, bounded, for an output line containing `needle`.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_long(needle, WAIT)
    }

    /// [`Client::expect`] with its own bound (reconnects take backoff time).
    pub fn expect_long(&mut self, needle: &str, limit: Duration) -> String {
        self.expect_within(&[needle], limit).unwrap_or_else(|| {
            panic!(
                "client printed no line containing {needle:?} within {limit:?}; output:\n  {}",
                self.seen.join("\n  ")
            )
        })
    }

    /// Like `expect`, but for a line containing any of `needles`, and gives up
    /// quietly after `limit` (for counting failures).
    pub fn expect_within(&mut self, needles: &[&str], limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.lines.recv_timeout(left).ok()?;
            self.seen.push(l.clone());
            if needles.iter().any(|n| l.contains(n)) {
                return Some(l);
            }
        }
    }

    /// Closes stdin and waits, bounded, for exit; returns status and remaining output.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let st = wait_exit(&mut self.child, Duration::from_secs(20)).unwrap_or_else(|| {
            panic!("client did not exit; output:\n  {}", self.seen.join("\n  "))
        });
        let mut all = self.seen.clone();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            all.push(l);
        }
        (st, all)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Client {
    /// A client whose peer listener stays on loopback, signed up and logged in as `user`
    /// (password `pw-<user>`, like `Server::login_new`).
    pub fn start_user(server: &Server, user: &str) -> Client {
        Client::start_user_with(server, user, &["--listen-addr", "127.0.0.1"])
    }

    /// `start_user` with these flags instead of `--listen-addr 127.0.0.1`.
    pub fn start_user_with(server: &Server, user: &str, flags: &[&str]) -> Client {
        let mut c = Client::start(server, flags);
        c.send(&format!("/signup {user} pw-{user} pw-{user}"));
        c.send(&format!("/login {user} pw-{user}"));
        c.expect(&format!("logged in as {user}"));
        c
    }

    /// The port its greeting said peers reach it on (the greeting must have
    /// been seen, as `start_user` does).
    pub fn listen_port(&self) -> u16 {
        self.seen
            .iter()
            .find_map(|l| l.split("peers reach you on port ").nth(1))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no greeting with a port in {:#?}", self.seen))
    }

    /// Lines printed within `limit` (for checking something did not happen twice).
    pub fn lines_for(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l.clone());
            got.push(l);
        }
        got
    }
}

/// One row of `/proc/net/tcp`: the kernel's view of a TCP socket.
#[derive(Debug, Clone, Copy)]
pub struct TcpRow {
    /// Bytes received and not yet read by the socket's owner.
    pub rx_queue: u64,
    /// Timer kind (0 none, 1 retransmit, 2 keepalive, …) and expiry in clock ticks.
    pub timer: (u32, u64),
}

/// The socket with these local and remote addresses in `/proc/net/tcp`.
pub fn proc_net_tcp(local: SocketAddr, remote: SocketAddr) -> Option<TcpRow> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("the tests use IPv4 loopback"),
    };
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[1] != hex(local) || f[2] != hex(remote) {
            return None;
        }
        let (_, rx) = f[4].split_once(':')?;
        let (kind, when) = f[5].split_once(':')?;
        Some(TcpRow {
            rx_queue: u64::from_str_radix(rx, 16).ok()?,
            timer: (kind.parse().ok()?, u64::from_str_radix(when, 16).ok()?),
        })
    })
}

/// tcpdump on `lo`, writing the capture to its stdout (a file in our 0700
/// temp dir is out of its reach once it drops privileges); stopped by pid.
pub struct Capture {
    child: Child,
    bytes: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Capture {
    /// Starts capturing what matches `filter` (a pcap filter, e.g. `port
    /// 4400`); `None`, saying why, when this cannot capture: not root, or
    /// no tcpdump (the Debian package tcpdump).
    pub fn start(filter: &str) -> Option<Capture> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP capture test: capturing on lo needs root");
            return None;
        }
        let mut child = match Command::new("tcpdump")
            .args(["-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w", "-"])
            .args(filter.split(' '))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIP capture test: cannot run tcpdump ({e}); \
                     the Debian package tcpdump provides it"
                );
                return None;
            }
        };
        let mut out = child.stdout.take().unwrap();
        let (tx, bytes) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut all);
            let _ = tx.send(all);
        });
        // tcpdump says "listening on lo" on stderr once it captures.
        let err = child.stderr.take().unwrap();
        let (tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if l.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let mut cap = Capture { child, bytes };
        if ready.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = cap.child.kill();
            panic!("tcpdump never started listening");
        }
        Some(cap)
    }

    /// Stops the capture and returns what it caught (pcap format).
    pub fn finish(mut self) -> Vec<u8> {
        // Let the last packets reach tcpdump (immediate mode: no ring-buffer
        // timeout holds them back), then stop it; it flushes on SIGTERM.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: a plain kill(2) of the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_exit_or_kill(&mut self.child, Duration::from_secs(5));
        self.bytes
            .recv_timeout(Duration::from_secs(5))
            .expect("the capture")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
