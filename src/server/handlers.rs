//! One handler per control command. Each ends in exactly one final reply
//! (`OK <VERB>` or `ERR <code>`), now or when its hash or store write completes.

use std::net::IpAddr;
use std::time::Instant;

use super::accounts::UserIdx;
use super::broadcast::BroadcastRecord;
use super::engine::{ConnId, Engine, KdfJob, Output, Purpose, Timer};
use super::kdf::{self, Pbkdf2};
use super::limits::{self, Refusal, Source};
use super::sessions::Request;
use crate::proto::{Command, ErrorCode, Event, Frame, OkReply, ServerLine};

impl Engine {
    pub(super) fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Frame) {
        let line = match frame {
            Frame::Line(l) => l,
            Frame::TooLong => return self.line(conn, ServerLine::err(ErrorCode::LineTooLong)),
            Frame::BadUtf8 => return self.line(conn, ServerLine::err(ErrorCode::BadUtf8)),
        };
        let cmd = match Command::parse(&line) {
            Ok(c) => c,
            Err(e) => {
                let text = match e.verb {
                    Some(v) => format!("{v}: {}", e.code.default_text()),
                    None => format!("{}; try {}", e.code.default_text(), suggested_verbs()),
                };
                return self.line(conn, ServerLine::err_with(e.code, text));
            }
        };
        log::debug!("conn {conn} >> {}", cmd.verb());
        if cmd.carries_password() && self.plaintext_refused(conn) {
            let text = format!("{}: {}", cmd.verb(), ErrorCode::TlsRequired.default_text());
            return self.line(conn, ServerLine::err_with(ErrorCode::TlsRequired, text));
        }
        let user = self.sessions.user_of(conn);
        match (cmd, user) {
            (
                Command::Signup {
                    user,
                    password,
                    password_again,
                },
                _,
            ) => self.signup(now, conn, user, password, password_again),
            (
                Command::Login {
                    user: name,
                    password,
                },
                current,
            ) => self.login(now, conn, current, name, password),
            (Command::Resume { user: name, ticket }, current) => {
                self.resume_command(now, conn, current, &name, &ticket)
            }
            (Command::Ping, _) => self.line(conn, ServerLine::Ok(OkReply::Ping)),
            (Command::Quit, _) => {
                self.line(conn, ServerLine::Ok(OkReply::Quit));
                self.on_disconnect(now, conn);
                self.push(Output::Close { conn });
            }
            (_, None) => self.line(conn, ServerLine::err(ErrorCode::NotLoggedIn)),
            (Command::List, Some(_)) => self.list(conn),
            (Command::Connect { target, port }, Some(me)) => {
                self.connect(now, conn, me, &target, port)
            }
            (Command::Accept { user, port }, Some(me)) => self.accept(now, conn, me, &user, port),
            (Command::Sync { user }, Some(me)) => self.sync(now, conn, me, &user),
            (Command::Deny { user }, Some(me)) => self.deny(conn, me, &user),
            (Command::Broadcast { text }, Some(me)) => self.broadcast(now, conn, me, text),
            (
                Command::Passwd {
                    old,
                    new,
                    new_again,
                },
                Some(me),
            ) => self.passwd(now, conn, me, old, new, new_again),
            (Command::Watch { changes }, Some(me)) => self.watch(conn, me, &changes),
            (Command::Ticket, Some(me)) => self.ticket_command(now, conn, me),
        }
    }

    fn signup(
        &mut self,
        now: Instant,
        conn: ConnId,
        name: String,
        password: String,
        again: String,
    ) {
        if !self.cfg.signup_open {
            return self.line(conn, ServerLine::err(ErrorCode::SignupClosed));
        }
        if password != again {
            return self.line(conn, ServerLine::err(ErrorCode::PasswordMismatch));
        }
        if self.name_taken(&name) {
            return self.line(conn, ServerLine::err(ErrorCode::UserExists));
        }
        // Counted before hashing: a refused signup costs the server nothing.
        let src = self.source_of(conn);
        if let Err(wait) = self.signups.take(now, src) {
            let text = "too many signups from your address";
            return self.rate_limited(conn, wait, text);
        }
        let salt = kdf::random_salt(self.rng.as_mut());
        let iterations = self.cfg.kdf_iterations;
        let kdf = Pbkdf2::new(password.as_bytes(), &salt, iterations);
        self.start_hash(
            conn,
            KdfJob {
                kdf,
                purpose: Purpose::Signup {
                    name,
                    salt,
                    iterations,
                },
                guess: None,
            },
        );
    }

    /// PASSWD: the old password is checked with the same sliced KDF as a
    /// LOGIN (same cost, same `bad-credentials`), then the new one is hashed.
    fn passwd(
        &mut self,
        now: Instant,
        conn: ConnId,
        me: UserIdx,
        old: String,
        new: String,
        again: String,
    ) {
        if new != again {
            return self.line(conn, ServerLine::err(ErrorCode::PasswordMismatch));
        }
        // The old password is a password check like LOGIN's: same limits.
        let name = self.accounts.name(me).to_owned();
        let src = self.source_of(conn);
        if let Err(refusal) = self.guesses.check(now, src, &name) {
            let reply = self.guess_refusal(refusal);
            return self.line(conn, reply);
        }
        let stored = &self.accounts.get(me).password_hash;
        let check = Pbkdf2::new(old.as_bytes(), &stored.salt, stored.iterations);
        let salt = kdf::random_salt(self.rng.as_mut());
        let iterations = self.cfg.kdf_iterations;
        let next = Box::new(Pbkdf2::new(new.as_bytes(), &salt, iterations));
        self.start_hash(
            conn,
            KdfJob {
                kdf: check,
                purpose: Purpose::PasswdCheck {
                    account: me,
                    next,
                    salt,
                    iterations,
                },
                guess: Some(name),
            },
        );
    }

    fn name_taken(&self, name: &str) -> bool {
        self.accounts.find(name).is_some()
            || self.pending_signups.contains(&name.to_ascii_lowercase())
    }

    pub(super) fn source_of(&self, conn: ConnId) -> Source {
        let ip = self.conns.get(&conn).map(|c| c.addr.ip());
        Source::of(ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()))
    }

    /// A connection's address for a log line, canonical (`203.0.113.5`,
    /// never `::ffff:203.0.113.5`), as fail2ban must see it.
    pub(super) fn ip_for_log(&self, conn: ConnId) -> String {
        self.conns.get(&conn).map_or_else(
            || "?".to_owned(),
            |c| c.addr.ip().to_canonical().to_string(),
        )
    }

    /// `ERR rate-limited retry-after=<seconds> <text>`.
    pub(super) fn rate_limited(&mut self, conn: ConnId, wait: std::time::Duration, text: &str) {
        let line = self.rate_limited_line(wait, text);
        self.line(conn, line);
    }

    fn rate_limited_line(&mut self, wait: std::time::Duration, text: &str) -> ServerLine {
        self.stats.rate_limited += 1;
        let secs = limits::retry_secs(wait);
        ServerLine::err_with(ErrorCode::RateLimited, format!("retry-after={secs} {text}"))
    }

    /// The reply to a password check the guessing limits refused.
    pub(super) fn guess_refusal(&mut self, refusal: Refusal) -> ServerLine {
        let text = match refusal {
            Refusal::Source(_) => "too many wrong passwords from your address",
            Refusal::Account(_) => "too many wrong passwords for this account",
        };
        self.rate_limited_line(refusal.retry_after(), text)
    }

    fn login(
        &mut self,
        now: Instant,
        conn: ConnId,
        current: Option<UserIdx>,
        name: String,
        password: String,
    ) {
        let account = self.accounts.find(&name);
        if current.is_some() && current != account {
            return self.line(conn, ServerLine::err(ErrorCode::AlreadyLoggedIn));
        }
        // Refused before hashing, so guessing past the limit costs no hash.
        let src = self.source_of(conn);
        if let Err(refusal) = self.guesses.check(now, src, &name) {
            log::debug!("login for {name:?} from {src} refused: {refusal:?}");
            let reply = self.guess_refusal(refusal);
            return self.line(conn, reply);
        }
        let stored = account.map_or(&self.dummy, |a| &self.accounts.get(a).password_hash);
        let kdf = Pbkdf2::new(password.as_bytes(), &stored.salt, stored.iterations);
        self.start_hash(
            conn,
            KdfJob {
                kdf,
                purpose: Purpose::Login {
                    account,
                    typed: name.clone(),
                },
                guess: Some(name),
            },
        );
    }

    /// A hash is done: the command that started it decides and replies (or
    /// starts its next step: a store write, PASSWD's second hash).
    pub(super) fn hash_done(&mut self, now: Instant, conn: ConnId, job: KdfJob) {
        let derived = job.kdf.result();
        match job.purpose {
            Purpose::Signup {
                name,
                salt,
                iterations,
            } => {
                let hash = kdf::PasswordHash {
                    iterations,
                    salt,
                    hash: derived,
                };
                self.signup_hashed(now, conn, &name, hash)
            }
            Purpose::PasswdCheck {
                account,
                next,
                salt,
                iterations,
            } => {
                let good = self
                    .accounts
                    .try_get(account)
                    .is_some_and(|u| u.password_hash.matches(&derived));
                let hash_next = KdfJob {
                    kdf: *next,
                    purpose: Purpose::PasswdHash {
                        account,
                        salt,
                        iterations,
                    },
                    guess: None,
                };
                self.passwd_checked(now, conn, account, good, hash_next)
            }
            Purpose::PasswdHash {
                account,
                salt,
                iterations,
            } => {
                let hash = kdf::PasswordHash {
                    iterations,
                    salt,
                    hash: derived,
                };
                self.passwd_hashed(now, conn, account, hash)
            }
            Purpose::Login { account, typed } => {
                // `try_get`: the account may have been deleted while we hashed.
                let good = account.filter(|&a| {
                    self.accounts
                        .try_get(a)
                        .is_some_and(|u| u.password_hash.matches(&derived))
                });
                self.login_checked(now, conn, good, &typed)
            }
        }
    }

    /// SIGNUP's hash is done: write the account (the reply waits for the store).
    fn signup_hashed(&mut self, now: Instant, conn: ConnId, name: &str, hash: kdf::PasswordHash) {
        // Another connection may have taken the name while we hashed.
        if self.name_taken(name) {
            return self.finish_busy(now, conn, ServerLine::err(ErrorCode::UserExists));
        }
        let created = self.unix_secs(now);
        // Reserves a sequence number that is never handed out again,
        // even if this write fails and the name is signed up later.
        let Ok(row) = self.accounts.signup_row(name, hash, created) else {
            return self.finish_busy(now, conn, ServerLine::err(ErrorCode::UserExists));
        };
        self.pending_signups.insert(name.to_ascii_lowercase());
        self.await_store(conn, Output::StoreUser { conn, row });
    }

    /// PASSWD's old password was checked (`good`): refuse, or hash the new one.
    fn passwd_checked(
        &mut self,
        now: Instant,
        conn: ConnId,
        account: UserIdx,
        good: bool,
        hash_next: KdfJob,
    ) {
        // The account may have been deleted while we hashed.
        let name = self
            .accounts
            .try_get(account)
            .map_or_else(String::new, |u| u.username.clone());
        if !good {
            self.guesses.wrong(now, self.source_of(conn));
            // The same one line as a failed LOGIN, for fail2ban.
            log::warn!(
                "failed PASSWD for user {} from {} (conn {conn}): wrong old password",
                limits::sanitize_for_log(&name),
                self.ip_for_log(conn),
            );
            return self.finish_busy(now, conn, ServerLine::err(ErrorCode::BadCredentials));
        }
        self.guesses.right(now, &name);
        self.start_hash(conn, hash_next);
    }

    /// PASSWD's new password is hashed: write it (the reply waits for the store).
    fn passwd_hashed(
        &mut self,
        now: Instant,
        conn: ConnId,
        account: UserIdx,
        hash: kdf::PasswordHash,
    ) {
        let Some(name) = self.accounts.try_get(account).map(|u| u.username.clone()) else {
            return self.finish_busy(now, conn, ServerLine::err(ErrorCode::BadCredentials));
        };
        let Ok(row) = self.accounts.password_row(&name, hash) else {
            return self.finish_busy(now, conn, ServerLine::err(ErrorCode::BadCredentials));
        };
        self.store_waits
            .insert(conn, super::engine::StoreWait::Passwd);
        self.await_store(conn, Output::StoreUser { conn, row });
    }

    /// LOGIN's hash is done: `good` is the account if the password matched.
    /// A new session, a renewed one (the answer to REAUTH), or a refusal.
    fn login_checked(&mut self, now: Instant, conn: ConnId, good: Option<UserIdx>, typed: &str) {
        if let Some(a) = good.filter(|&a| !self.accounts.get(a).enabled) {
            log::warn!(
                "refused login for disabled account {:?} (conn {conn})",
                self.accounts.name(a)
            );
            self.stats.logins_failed += 1;
            return self.finish_busy(now, conn, ServerLine::err(ErrorCode::AccountDisabled));
        }
        let Some(user) = good else {
            return self.login_failed(now, conn, typed);
        };
        self.stats.logins_ok += 1;
        self.guesses.right(now, typed);
        let token = if self.sessions.user_of(conn) == Some(user) {
            self.renew_session(now, user)
        } else {
            self.start_session(now, conn, user)
        };
        let user = self.accounts.name(user).to_owned();
        self.finish_busy(now, conn, ServerLine::Ok(OkReply::Login { user, token }));
    }

    /// A wrong password (or an unknown user): `ERR bad-credentials`, counted
    /// against the source; after REAUTH's grace period it ends the session.
    fn login_failed(&mut self, now: Instant, conn: ConnId, typed: &str) {
        let current = self.sessions.user_of(conn);
        self.stats.logins_failed += 1;
        self.guesses.wrong(now, self.source_of(conn));
        // One line per wrong password, for fail2ban
        // (tools/fail2ban/filter.d/peerline.conf parses it).
        log::warn!(
            "failed login for user {} from {} (conn {conn})",
            limits::sanitize_for_log(typed),
            self.ip_for_log(conn),
        );
        self.finish_busy(now, conn, ServerLine::err(ErrorCode::BadCredentials));
        // A failed answer to REAUTH after the grace period ends the session.
        let expired = current
            .and_then(|u| self.sessions.get(&u))
            .and_then(|s| s.grace_until)
            .is_some_and(|g| g <= now);
        if expired {
            self.close_with(
                now,
                conn,
                crate::proto::CloseReason::SessionExpired,
                "no valid LOGIN in answer to REAUTH",
            );
        }
    }

    fn list(&mut self, conn: ConnId) {
        let items: Vec<ServerLine> = self
            .sessions
            .listed()
            .filter_map(|u| {
                let ip = self.ip_of(u)?;
                Some(ServerLine::Client {
                    user: self.accounts.name(u).to_owned(),
                    ip,
                })
            })
            .collect();
        let count = items.len();
        for item in items {
            self.line(conn, item);
        }
        self.line(conn, ServerLine::Ok(OkReply::List { count }));
    }

    fn ip_of(&self, user: UserIdx) -> Option<IpAddr> {
        let conn = self.sessions.conn_of(user)?;
        Some(self.conns.get(&conn)?.addr.ip())
    }

    /// Resolves CONNECT's target: an online username, or the one other online
    /// user at an IP address.
    fn resolve_target(&self, me: UserIdx, target: &str) -> Result<UserIdx, ServerLine> {
        if let Ok(ip) = target.parse::<IpAddr>() {
            let mut at_ip: Vec<UserIdx> = self
                .sessions
                .listed()
                .filter(|&u| u != me && self.ip_of(u) == Some(ip))
                .collect();
            return match at_ip.len() {
                0 if self.ip_of(me) == Some(ip) => Err(ServerLine::err(ErrorCode::SelfRequest)),
                0 => Err(ServerLine::err_with(
                    ErrorCode::NoSuchUser,
                    format!("nobody online at {ip}"),
                )),
                1 => Ok(at_ip.remove(0)),
                _ => {
                    let names: Vec<&str> = at_ip.iter().map(|&u| self.accounts.name(u)).collect();
                    Err(ServerLine::err_with(
                        ErrorCode::Ambiguous,
                        format!(
                            "{} users at {ip}: {}; CONNECT by username",
                            names.len(),
                            names.join(" ")
                        ),
                    ))
                }
            };
        }
        if !crate::proto::names::is_valid_username(target) {
            return Err(ServerLine::err(ErrorCode::BadUsername));
        }
        let user = self
            .accounts
            .find(target)
            .ok_or_else(|| ServerLine::err(ErrorCode::NoSuchUser))?;
        if user == me {
            return Err(ServerLine::err(ErrorCode::SelfRequest));
        }
        if !self.sessions.contains_key(&user) {
            return Err(ServerLine::err(ErrorCode::Offline));
        }
        Ok(user)
    }

    fn connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        me: UserIdx,
        target: &str,
        port: Option<u16>,
    ) {
        let to = match self.resolve_target(me, target) {
            Ok(u) => u,
            Err(reply) => return self.line(conn, reply),
        };
        if self.sessions.pending_between(me, to) {
            return self.line(conn, ServerLine::err(ErrorCode::AlreadyPending));
        }
        let serial = self.next_serial();
        let request = Request {
            serial,
            dialback: port,
        };
        self.sessions
            .add_request(me, to, request)
            .expect("both online (resolved above), none pending (checked above)");
        self.timers
            .arm(now + self.cfg.request_ttl, Timer::Request(me, to, serial));
        let from = self.accounts.name(me).to_owned();
        let ip = self.ip_of(me).expect("requester is online");
        let target_conn = self.sessions[&to].conn();
        self.line(target_conn, Event::Request { from, ip });
        let user = self.accounts.name(to).to_owned();
        self.line(conn, ServerLine::Ok(OkReply::Connect { user }));
    }

    /// Takes the pending request from `name` to `me` off the table.
    fn take_request(&mut self, me: UserIdx, name: &str) -> Result<(UserIdx, Request), ServerLine> {
        let taken = self
            .accounts
            .find(name)
            .and_then(|from| Some((from, self.sessions.take_request(from, me)?)));
        let (from, request) = taken.ok_or_else(|| ServerLine::err(ErrorCode::NoRequest))?;
        self.timers.stop(&Timer::Request(from, me, request.serial));
        Ok((from, request))
    }

    fn accept(&mut self, now: Instant, conn: ConnId, me: UserIdx, name: &str, port: u16) {
        let (from, request) = match self.take_request(me, name) {
            Ok(taken) => taken,
            Err(reply) => return self.line(conn, reply),
        };
        let token = crate::proto::names::Token::random(self.rng.as_mut());
        let ip = self.ip_of(me).expect("acceptor is online");
        let requester_conn = self.sessions[&from].conn();
        let me_name = self.accounts.name(me).to_owned();
        let addr = std::net::SocketAddr::new(ip, port);
        self.line(
            requester_conn,
            Event::Peer {
                user: me_name,
                addr,
                token: token.clone(),
            },
        );
        let user = self.accounts.name(from).to_owned();
        self.line(
            conn,
            ServerLine::Ok(OkReply::Accept {
                user: user.clone(),
                token,
            }),
        );
        // The requester also listens: if it cannot reach us, we may reach it
        // (reverse connection). After OK ACCEPT, which carries the token.
        if let Some(port) = request.dialback {
            if let Some(ip) = self.ip_of(from) {
                let addr = std::net::SocketAddr::new(ip, port);
                self.line(conn, Event::Dialback { user, addr });
            }
            // A peerline requester (it named its port): time both round
            // trips for a simultaneous open, in case neither can be dialled.
            self.start_punch(now, from, me);
        }
    }

    fn deny(&mut self, conn: ConnId, me: UserIdx, name: &str) {
        let (from, _) = match self.take_request(me, name) {
            Ok(taken) => taken,
            Err(reply) => return self.line(conn, reply),
        };
        let requester_conn = self.sessions[&from].conn();
        let me_name = self.accounts.name(me).to_owned();
        self.line(requester_conn, Event::Denied { user: me_name });
        let user = self.accounts.name(from).to_owned();
        self.line(conn, ServerLine::Ok(OkReply::Deny { user }));
    }

    fn broadcast(&mut self, now: Instant, conn: ConnId, me: UserIdx, text: String) {
        if let Err(wait) = self.broadcasts_sent.take(now, me) {
            return self.rate_limited(conn, wait, "too many broadcasts; slow down");
        }
        let created_ms = self.unix_ms(now);
        // Round the expiry up to the next whole second: rounding down (as in
        // `created_unix + ttl_secs`) cut the TTL short by up to a second, so a
        // user logging in just before T + ttl missed the broadcast.
        let ttl_ms = self.cfg.broadcast_ttl.as_millis() as u64;
        let record = BroadcastRecord {
            id: self.book.next_id(),
            from: self.accounts.name(me).to_owned(),
            created_unix: created_ms / 1000,
            expires_unix: (created_ms + ttl_ms).div_ceil(1000),
            audience: self.accounts.next_seq().0,
            text,
        };
        // Reserve the id now: another broadcast may be made before the store reports.
        self.book.reserve_id(record.id);
        self.await_store(conn, Output::StoreBroadcast { conn, record });
    }
}

/// What an unknown verb is answered with: the verbs a person typing at `nc`
/// uses (`SYNC` and `TICKET` are the client's own business), named from
/// [`Verb`], where verb names are written.
fn suggested_verbs() -> String {
    use crate::proto::command::Verb::*;
    [
        Signup, Login, Resume, List, Connect, Accept, Deny, Broadcast, Watch, Passwd, Ping, Quit,
    ]
    .map(|v| v.name())
    .join(", ")
}
