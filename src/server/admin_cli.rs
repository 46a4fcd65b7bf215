//! The administration subcommands (`user …`, `stats`): through the running
//! server's admin socket when one runs on the data dir, else on the files
//! directly under the data-dir lock (`store::AccountsFile`), so the server's
//! state and its files never disagree.
//!
//! Invariants:
//! - Online or offline, a password is hashed here, with the configured
//!   `--kdf-iterations`; only the hash goes to the server or the file.
//! - Every wait on the server is bounded (`TIMEOUT`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::admin::{list_line, AdminRequest};
use super::admin_socket::SOCKET_NAME;
use super::config::{Config, UserCommand};
use super::kdf::{self, PasswordHash};
use super::store::AccountsFile;
use crate::proto::names::is_valid_password;

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
    let salt = kdf::random_salt();
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
