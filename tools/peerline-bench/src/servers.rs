//! Starting and stopping the servers under test, pinned to their CPU with
//! `taskset`: `peerline-server` on a fresh data dir, and mosquitto with a
//! generated config (127.0.0.1 only, password file, no anonymous access).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peerline::listening;
use peerline::server::kdf::{self, PasswordHash};
use peerline::server::store::AccountsFile;

use crate::fleet::Res;

pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// A certificate and key (PEM) for mosquitto's TLS listener.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A fresh directory under the system temp dir, removed by `Server::stop`.
pub fn temp_dir(tag: &str) -> Res<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "peerline-bench-{tag}-{}-{}",
        std::process::id(),
        crate::clock::now_ns()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Writes the accounts into a fresh data dir through the server's own store
/// code: the same rows and hashes a SIGNUP would produce, with one fsync.
fn provision_accounts(
    dir: &Path,
    count: usize,
    prefix: &str,
    password: &str,
    iterations: u32,
) -> Res<()> {
    let mut file = AccountsFile::open(dir)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let accounts = (0..count).map(|i| {
        let salt = kdf::random_salt(&mut peerline::rng::OsRandom);
        let hash = PasswordHash {
            iterations,
            salt,
            hash: kdf::derive(password.as_bytes(), &salt, iterations),
        };
        (format!("{prefix}{i}"), hash, now_unix)
    });
    file.add_many(accounts)
        .map_err(|e| format!("provisioning accounts: {e}"))
}

fn pinned(cpu: Option<usize>, program: &Path) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

impl Server {
    /// `accounts`: users `<prefix><i>` for i in 0..accounts, with `password`,
    /// stored before the server starts (as mosquitto's password file is), so
    /// that sessions can log in without signing up.
    pub fn start_peerline(
        bin: &Path,
        kdf: Option<u32>,
        cpu: Option<usize>,
        accounts: usize,
        prefix: &str,
        password: &str,
    ) -> Res<Server> {
        if !bin.is_file() {
            return Err(format!(
                "peerline-server not found at {} (build it: cargo build --release)",
                bin.display()
            ));
        }
        let dir = temp_dir("peerline")?;
        if accounts > 0 {
            let iterations = kdf.unwrap_or(kdf::DEFAULT_ITERATIONS);
            provision_accounts(&dir, accounts, prefix, password, iterations)?;
        }
        Server::spawn_peerline(bin, dir, kdf, cpu)
    }

    /// Starts `peerline-server` on `dir` as it is (accounts already written);
    /// returns once it printed its `listening` line.
    pub fn spawn_peerline(
        bin: &Path,
        dir: PathBuf,
        kdf: Option<u32>,
        cpu: Option<usize>,
    ) -> Res<Server> {
        // As many clients as the open-file limit allows (the server needs
        // one descriptor each, plus some 64 of its own): 19,000 receivers
        // fit under a limit of 20,000.
        let max_clients = crate::procfs::fd_limit().saturating_sub(100).max(1000);
        let mut cmd = pinned(cpu, bin);
        cmd.args(["--bind", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(&dir)
            .arg("--max-clients")
            .arg(max_clients.to_string())
            .args(["--session-ttl", "2h"])
            // The fleet connects from one address; the abuse limits would refuse it.
            .args([
                "--max-per-ip",
                "0",
                "--signup-rate",
                "0",
                "--broadcast-rate",
                "0",
            ]);
        if let Some(k) = kdf {
            cmd.arg("--kdf-iterations").arg(k.to_string());
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = Server {
            child,
            pid,
            addr: "127.0.0.1:0".parse().expect("literal"),
            dir,
        };
        // Generous: loading a million accounts takes seconds, more on a busy machine.
        match listening::wait_for(stdout, Duration::from_secs(120)) {
            Ok(announced) => {
                server.addr = announced.tcp;
                Ok(server)
            }
            Err(e) => {
                server.stop();
                Err(format!("peerline-server {e}"))
            }
        }
    }

    /// Starts mosquitto on a free loopback port with `users` accounts
    /// (`<prefix><i>` for i in 0..users, all with `password`).
    pub fn start_mosquitto(
        users: usize,
        prefix: &str,
        password: &str,
        cpu: Option<usize>,
    ) -> Res<Server> {
        Server::start_mosquitto_with(users, prefix, password, cpu, None)
    }

    /// [`Server::start_mosquitto`], its listener speaking TLS with `tls`.
    pub fn start_mosquitto_with(
        users: usize,
        prefix: &str,
        password: &str,
        cpu: Option<usize>,
        tls: Option<&TlsFiles>,
    ) -> Res<Server> {
        let bin = which("mosquitto").ok_or("mosquitto is not installed")?;
        let passwd = which("mosquitto_passwd").ok_or("mosquitto_passwd is not installed")?;
        let dir = temp_dir("mosquitto")?;
        let pwfile = dir.join("passwords");
        {
            let mut f = std::fs::File::create(&pwfile).map_err(|e| e.to_string())?;
            for i in 0..users {
                writeln!(f, "{prefix}{i}:{password}").map_err(|e| e.to_string())?;
            }
        }
        // -U hashes a plain `user:password` file in place with mosquitto's default hash.
        let st = Command::new(&passwd)
            .arg("-U")
            .arg(&pwfile)
            .status()
            .map_err(|e| format!("mosquitto_passwd: {e}"))?;
        if !st.success() {
            return Err("mosquitto_passwd -U failed".into());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let conf = dir.join("mosquitto.conf");
        let tls_lines = tls.map_or(String::new(), |t| {
            format!(
                "certfile {}\nkeyfile {}\n",
                t.cert.display(),
                t.key.display()
            )
        });
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 {tls_lines}\
                 allow_anonymous false\n\
                 password_file {}\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type error\n\
                 connection_messages false\n\
                 max_queued_messages 10000\n\
                 user root\n",
                pwfile.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = pinned(cpu, &bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start mosquitto: {e}"))?;
        let pid = child.id();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let server = Server {
            child,
            pid,
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
        Err("mosquitto did not accept connections within 10 s".into())
    }

    /// The server's data dir (peerline: where its TLS pair is).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM to our child, a bounded wait, then SIGKILL; removes its temp dir.
    pub fn stop(mut self) {
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `mosquitto -h` prints its version on the first line.
pub fn mosquitto_version() -> Option<String> {
    let out = Command::new(which("mosquitto")?).arg("-h").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().map(|l| l.trim().to_string())
}
