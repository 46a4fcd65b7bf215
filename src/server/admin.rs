//! Account administration by the operator (`peerline-server user …`) while the
//! server runs: the admin channel's request format and the engine's handling
//! of it. The driver carries the requests over a Unix socket in the data dir;
//! with no server running the same subcommands use `store::AccountsFile`.
//! Both build their rows with the same `Accounts` rules.
//!
//! Wire (one request per connection, UTF-8 lines): the client sends one line,
//! `ADD <user> <phc-hash>` · `PASSWD <user> <phc-hash>` · `DEL <user>` ·
//! `DISABLE <user>` · `ENABLE <user>` · `LIST` · `STATS`; the server answers
//! with data lines (LIST: `<user> <created RFC 3339> enabled|disabled`; STATS:
//! `<name> <value>`), then `OK` or `ERR <message>`, then closes.
//!
//! Invariants:
//! - A password never crosses the channel: the subcommand hashes it (with the
//!   configured `--kdf-iterations`) and sends the PHC string.
//! - A change is confirmed (`OK`) only after its row is fsynced, like a signup;
//!   the account table changes only then.
//! - Deleting or disabling an online account ends its session with
//!   `EVENT CLOSING removed` before the account row is applied, so no session
//!   ever refers to a deleted account.

use std::fmt;
use std::time::Instant;

use super::accounts::UserRow;
use super::engine::{ConnId, Engine, Output, StoreWait};
use super::kdf::PasswordHash;
use crate::proto::names::is_valid_username;
use crate::proto::CloseReason;

/// One request on the admin channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    Add { user: String, hash: PasswordHash },
    Passwd { user: String, hash: PasswordHash },
    Del { user: String },
    Disable { user: String },
    Enable { user: String },
    List,
    Stats,
}

/// An account change waiting for its store write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Add,
    Passwd,
    Del,
    Disable,
    Enable,
}

impl AdminRequest {
    pub fn parse(line: &str) -> Result<AdminRequest, String> {
        let f: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        let user = |s: &str| {
            if is_valid_username(s) {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not a valid username"))
            }
        };
        let hash = |s: &str| PasswordHash::parse(s).ok_or_else(|| "bad password hash".to_owned());
        Ok(match f.as_slice() {
            ["ADD", u, h] => AdminRequest::Add {
                user: user(u)?,
                hash: hash(h)?,
            },
            ["PASSWD", u, h] => AdminRequest::Passwd {
                user: user(u)?,
                hash: hash(h)?,
            },
            ["DEL", u] => AdminRequest::Del { user: user(u)? },
            ["DISABLE", u] => AdminRequest::Disable { user: user(u)? },
            ["ENABLE", u] => AdminRequest::Enable { user: user(u)? },
            ["LIST"] => AdminRequest::List,
            ["STATS"] => AdminRequest::Stats,
            _ => return Err(format!("unknown admin request {line:?}")),
        })
    }
}

impl fmt::Display for AdminRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminRequest::Add { user, hash } => write!(f, "ADD {user} {}", hash.to_phc()),
            AdminRequest::Passwd { user, hash } => write!(f, "PASSWD {user} {}", hash.to_phc()),
            AdminRequest::Del { user } => write!(f, "DEL {user}"),
            AdminRequest::Disable { user } => write!(f, "DISABLE {user}"),
            AdminRequest::Enable { user } => write!(f, "ENABLE {user}"),
            AdminRequest::List => f.write_str("LIST"),
            AdminRequest::Stats => f.write_str("STATS"),
        }
    }
}

/// `2026-11-30T12:00:00Z` for unix seconds (proleptic Gregorian, UTC).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// One `user list` line.
pub fn list_line(user: &super::accounts::UserRecord) -> String {
    format!(
        "{} {} {}",
        user.username,
        rfc3339(user.created_unix),
        if user.enabled { "enabled" } else { "disabled" }
    )
}

impl Engine {
    /// A request from admin channel `conn` (an id the driver never gives a
    /// TCP connection). `STATS` is the driver's: it owns half the counters.
    pub(super) fn on_admin(&mut self, now: Instant, conn: ConnId, req: AdminRequest) {
        let (op, row) = match req {
            AdminRequest::List => {
                let mut lines: Vec<String> = self.accounts.iter().map(list_line).collect();
                lines.push("OK".into());
                return self.push(Output::AdminReply { conn, lines });
            }
            AdminRequest::Stats => return self.admin_reply(conn, Err("STATS is the driver's")),
            AdminRequest::Add { user, hash } => {
                if self.pending_signups.contains(&user.to_ascii_lowercase()) {
                    return self.admin_reply(conn, Err("the account exists already"));
                }
                let created = self.unix_secs(now);
                let row = self.accounts.signup_row(&user, hash, created);
                if row.is_ok() {
                    self.pending_signups.insert(user.to_ascii_lowercase());
                }
                (AdminOp::Add, row)
            }
            AdminRequest::Passwd { user, hash } => {
                (AdminOp::Passwd, self.accounts.password_row(&user, hash))
            }
            AdminRequest::Del { user } => (AdminOp::Del, self.accounts.delete_row(&user)),
            AdminRequest::Disable { user } => {
                (AdminOp::Disable, self.accounts.enabled_row(&user, false))
            }
            AdminRequest::Enable { user } => {
                (AdminOp::Enable, self.accounts.enabled_row(&user, true))
            }
        };
        match row {
            Err(e) => self.admin_reply(conn, Err(&e.to_string())),
            Ok(row) => {
                self.store_waits.insert(conn, StoreWait::Admin(op));
                self.push(Output::StoreUser { conn, row });
            }
        }
    }

    fn admin_reply(&mut self, conn: ConnId, result: Result<(), &str>) {
        let line = match result {
            Ok(()) => "OK".to_owned(),
            Err(e) => format!("ERR {e}"),
        };
        self.push(Output::AdminReply {
            conn,
            lines: vec![line],
        });
    }

    /// The store write of an admin change completed (`ok`) or failed.
    pub(super) fn admin_stored(
        &mut self,
        now: Instant,
        conn: ConnId,
        op: AdminOp,
        row: UserRow,
        ok: bool,
    ) {
        let name = row.username().to_owned();
        if op == AdminOp::Add {
            self.pending_signups.remove(&name.to_ascii_lowercase());
        }
        if !ok {
            return self.admin_reply(conn, Err("cannot write users.csv (see the server log)"));
        }
        if matches!(op, AdminOp::Del | AdminOp::Disable) {
            let online = self
                .accounts
                .find(&name)
                .and_then(|u| self.sessions.conn_of(u));
            if let Some(session_conn) = online {
                let what = if op == AdminOp::Del {
                    "deleted"
                } else {
                    "disabled"
                };
                self.close_with(
                    now,
                    session_conn,
                    CloseReason::Removed,
                    &format!("the administrator {what} this account"),
                );
            }
        }
        log::info!("admin: {op:?} {name}");
        self.revoke_tickets(now, row.seq());
        self.accounts.apply(row);
        self.admin_reply(conn, Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let hash = PasswordHash {
            iterations: 1000,
            salt: [7; 16],
            hash: [9; 32],
        };
        for r in [
            AdminRequest::Add {
                user: "bob".into(),
                hash: hash.clone(),
            },
            AdminRequest::Passwd {
                user: "bob".into(),
                hash,
            },
            AdminRequest::Del { user: "bob".into() },
            AdminRequest::Disable { user: "bob".into() },
            AdminRequest::Enable { user: "bob".into() },
            AdminRequest::List,
            AdminRequest::Stats,
        ] {
            assert_eq!(AdminRequest::parse(&r.to_string()), Ok(r.clone()), "{r}");
        }
        for bad in [
            "",
            "ADD bob",
            "ADD bob nothash",
            "DEL 1.2.3.4",
            "LIST x",
            "del bob",
        ] {
            assert!(AdminRequest::parse(bad).is_err(), "{bad:?}");
        }
    }
}
