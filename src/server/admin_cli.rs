//! The administration subcommands (`user …`, `stats`, `fingerprint`): through the running
//! server's admin socket when one runs on the data dir, else on the files
//! directly under the data-dir lock (`store::AccountsFile`), so the server's
//! state and its files never disagree.
//!
//! Invariants:
//! - Online or offline, a password is hashed here, with the configured
//!   `--kdf-iterations`; only the hash goes to the server or the file.
//! - Every wait on the server is bounded (`TIMEOUT`).
//! - `fingerprint` generates the data dir's TLS pair only while it holds the
//!   data-dir lock; when a server holds it, the pair is the server's to make
//!   and is only read (two writers would leave a key that does not match its
//!   certificate).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::admin::{list_line, AdminRequest};
use super::admin_socket::SOCKET_NAME;
use super::config::{Config, UserCommand};
use super::kdf::{self, PasswordHash};
use super::store::{AccountsFile, DirLock, LockError};
use super::tls::{self, TlsPaths};
use crate::proto::names::is_valid_password;
use crate::tls::Fingerprint;

/// How long a running server has to answer (a password change waits for an fsync).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the admin socket of a server running on `dir`, if one does.
fn connect(dir: &Path) -> Option<UnixStream> {
    let s = UnixStream::connect(dir.join(SOCKET_NAME)).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    Some(s)
}

/// Sends one request; returns the data lines of an `OK` reply.
fn ask(mut s: UnixStream, req: &AdminRequest) -> Result<Vec<String>, String> {
    s.write_all(format!("{req}\n").as_bytes())
        .map_err(|e| format!("cannot talk to the running server: {e}"))?;
    let mut lines = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.map_err(|e| format!("no answer from the running server: {e}"))?;
        if line == "OK" {
            return Ok(lines);
        }
        if let Some(e) = line.strip_prefix("ERR ") {
            return Err(e.to_owned());
        }
        lines.push(line);
    }
    Err("the running server closed the admin connection without an answer".into())
}

/// `user passwd`/`user add`: one line from stdin, or asked twice on the terminal.
fn read_password(from_stdin: bool, user: &str) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(4096)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        let first =
            rpassword::prompt_password(format!("New password for {user}: ")).map_err(|e| {
                format!("cannot read the password from the terminal ({e}); use --password-stdin")
            })?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        first
    };
    if !is_valid_password(&password) {
        return Err("passwords are 1 to 128 bytes without whitespace".into());
    }
    Ok(password)
}

fn hash(password: &str, iterations: u32) -> PasswordHash {
    let salt = kdf::random_salt(&mut crate::rng::OsRandom);
    PasswordHash {
        iterations,
        salt,
        hash: kdf::derive(password.as_bytes(), &salt, iterations),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `peerline-server user …`; what it prints goes to `out`.
pub fn user(cfg: &Config, cmd: UserCommand, out: &mut dyn Write) -> Result<(), String> {
    let iterations = cfg.engine.kdf_iterations;
    let req = match cmd {
        UserCommand::Add {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin, &user)?;
            AdminRequest::Add {
                hash: hash(&password, iterations),
                user,
            }
        }
        UserCommand::Passwd {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin, &user)?;
            AdminRequest::Passwd {
                hash: hash(&password, iterations),
                user,
            }
        }
        UserCommand::Del { user } => AdminRequest::Del { user },
        UserCommand::Disable { user } => AdminRequest::Disable { user },
        UserCommand::Enable { user } => AdminRequest::Enable { user },
        UserCommand::List => AdminRequest::List,
    };
    let lines = match connect(&cfg.data_dir) {
        Some(s) => ask(s, &req)?,
        None => offline(&cfg.data_dir, req)?,
    };
    for l in lines {
        writeln!(out, "{l}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The same request against the files, under the data-dir lock.
fn offline(dir: &Path, req: AdminRequest) -> Result<Vec<String>, String> {
    let mut file = AccountsFile::open(dir)?;
    match req {
        AdminRequest::Add { user, hash } => file.add(&user, hash, unix_now()).map(drop)?,
        AdminRequest::Passwd { user, hash } => file.passwd(&user, hash)?,
        AdminRequest::Del { user } => file.delete(&user)?,
        AdminRequest::Disable { user } => file.set_enabled(&user, false)?,
        AdminRequest::Enable { user } => file.set_enabled(&user, true)?,
        AdminRequest::List => return Ok(file.list().iter().map(list_line).collect()),
        AdminRequest::Stats => unreachable!("stats needs a running server"),
    }
    Ok(Vec::new())
}

/// `peerline-server fingerprint`: what clients will pin.
pub fn fingerprint(cfg: &Config, out: &mut dyn Write) -> Result<(), String> {
    let fp = fingerprint_in(&cfg.data_dir, &cfg.tls, TIMEOUT)?;
    writeln!(out, "{fp}").map_err(|e| e.to_string())
}

/// The fingerprint of `paths`: generated first under the data-dir lock when
/// no server runs; when one does (or is starting), its pair read, waiting
/// up to `wait` for it to appear, never generated.
pub fn fingerprint_in(dir: &Path, paths: &TlsPaths, wait: Duration) -> Result<Fingerprint, String> {
    if !paths.generated {
        // --tls-cert/--tls-key: the operator's files, never written here.
        return tls::read_fingerprint(paths);
    }
    let pid = match DirLock::acquire(dir) {
        Ok(_lock) => return tls::fingerprint_of_paths(paths),
        Err(LockError::Held { pid, .. }) => pid,
        Err(LockError::Io(e)) => return Err(e),
    };
    let deadline = Instant::now() + wait;
    loop {
        match tls::read_fingerprint(paths) {
            Ok(fp) => return Ok(fp),
            Err(e) if Instant::now() >= deadline => {
                let holder = pid.map_or("another process".into(), |p| format!("process {p}"));
                return Err(format!(
                    "{holder} holds data dir {} and has no TLS certificate there yet: {e}",
                    dir.display()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `peerline-server stats`: from the running server only.
pub fn stats(cfg: &Config, out: &mut dyn Write) -> Result<(), String> {
    let s = connect(&cfg.data_dir).ok_or_else(|| {
        format!(
            "no server is running on {} (no answer on {})",
            cfg.data_dir.display(),
            SOCKET_NAME
        )
    })?;
    for l in ask(s, &AdminRequest::Stats)? {
        writeln!(out, "{l}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::{GENERATED_CERT, GENERATED_KEY};

    fn paths(dir: &Path) -> TlsPaths {
        TlsPaths::resolve(dir, None, None).unwrap()
    }

    #[test]
    fn fingerprint_never_generates_while_a_server_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        // A server that has locked the dir and not yet made its pair
        // (it loads the store first).
        let _server = DirLock::acquire(dir.path()).unwrap();
        let e =
            fingerprint_in(dir.path(), &paths(dir.path()), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("has no TLS certificate"), "{e}");
        assert!(
            !dir.path().join(GENERATED_KEY).exists(),
            "a second key writer"
        );
        assert!(!dir.path().join(GENERATED_CERT).exists());
    }

    #[test]
    fn fingerprint_reads_the_pair_the_running_server_makes() {
        let dir = tempfile::tempdir().unwrap();
        let _server = DirLock::acquire(dir.path()).unwrap();
        let p = paths(dir.path());
        let server_side = {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150));
                tls::TlsIdentity::load(p).unwrap().fingerprint()
            })
        };
        let fp = fingerprint_in(dir.path(), &p, Duration::from_secs(10)).unwrap();
        assert_eq!(fp, server_side.join().unwrap());
    }

    #[test]
    fn fingerprint_offline_generates_once_under_the_lock_and_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let fp = fingerprint_in(dir.path(), &p, Duration::ZERO).unwrap();
        assert!(p.key.exists() && p.cert.exists());
        let lock = DirLock::acquire(dir.path()).expect("the lock was released");
        drop(lock);
        assert_eq!(fingerprint_in(dir.path(), &p, Duration::ZERO).unwrap(), fp);
    }

    #[test]
    fn fingerprint_of_given_files_never_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = TlsPaths {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            generated: false,
        };
        assert!(fingerprint_in(dir.path(), &p, Duration::ZERO).is_err());
        assert!(!p.cert.exists() && !p.key.exists());
    }
}
