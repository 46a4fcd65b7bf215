//! Lines the server sends on the control connection: final replies (`OK`/`ERR`),
//! `LIST` item lines and unsolicited `EVENT`s. Formatted by the server, parsed by
//! the client and the tests: one definition for both ends.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::command::Verb;
use super::error::ErrorCode;
use super::names::Token;

/// Why the server is about to close a connection (`EVENT CLOSING <reason> …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ServerFull,
    SessionExpired,
    Replaced,
    Idle,
    SlowReader,
    Shutdown,
    /// The administrator deleted or disabled the account.
    Removed,
    /// Too many connections from one address (`--max-per-ip`).
    PerIpLimit,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ServerFull => "server-full",
            CloseReason::SessionExpired => "session-expired",
            CloseReason::Replaced => "replaced",
            CloseReason::Idle => "idle",
            CloseReason::SlowReader => "slow-reader",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Removed => "removed",
            CloseReason::PerIpLimit => "per-ip-limit",
        }
    }

    pub fn parse(s: &str) -> Option<CloseReason> {
        [
            CloseReason::ServerFull,
            CloseReason::SessionExpired,
            CloseReason::Replaced,
            CloseReason::Idle,
            CloseReason::SlowReader,
            CloseReason::Shutdown,
            CloseReason::Removed,
            CloseReason::PerIpLimit,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Why a pending introduction ended without an answer (`EVENT CANCELLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Nobody answered within the request TTL.
    Expired,
    /// The other side went offline.
    Offline,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Expired => "expired",
            CancelReason::Offline => "offline",
        }
    }
}

/// A successful final reply: `OK <VERB> …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OkReply {
    Signup {
        user: String,
    },
    Login {
        user: String,
        token: Token,
    },
    List {
        count: usize,
    },
    Connect {
        user: String,
    },
    Accept {
        user: String,
        token: Token,
    },
    Deny {
        user: String,
    },
    /// `reached`: delivered or being delivered now; `pending`: offline users who
    /// get it if they log in before `expires` (unix seconds).
    Broadcast {
        id: u64,
        reached: usize,
        pending: usize,
        expires: u64,
    },
    Ping,
    Quit,
    Passwd,
    /// How many users this session now watches.
    Watch {
        count: usize,
    },
    /// A resumption ticket for this session, good until `expires` (unix
    /// seconds, the session's re-login deadline).
    Ticket {
        ticket: super::Ticket,
        expires: u64,
    },
    /// Logged in by ticket: the session token, and the ticket that replaces
    /// the one just used.
    Resume {
        user: String,
        token: Token,
        ticket: super::Ticket,
        expires: u64,
    },
    /// `SYNC <user>` was timed.
    Sync {
        user: String,
    },
}

impl OkReply {
    /// The command it answers.
    pub fn kind(&self) -> Verb {
        match self {
            OkReply::Signup { .. } => Verb::Signup,
            OkReply::Login { .. } => Verb::Login,
            OkReply::List { .. } => Verb::List,
            OkReply::Connect { .. } => Verb::Connect,
            OkReply::Accept { .. } => Verb::Accept,
            OkReply::Deny { .. } => Verb::Deny,
            OkReply::Broadcast { .. } => Verb::Broadcast,
            OkReply::Ping => Verb::Ping,
            OkReply::Quit => Verb::Quit,
            OkReply::Passwd => Verb::Passwd,
            OkReply::Watch { .. } => Verb::Watch,
            OkReply::Ticket { .. } => Verb::Ticket,
            OkReply::Resume { .. } => Verb::Resume,
            OkReply::Sync { .. } => Verb::Sync,
        }
    }

    /// The verb's name, as in `OK <VERB>`.
    pub fn verb(&self) -> &'static str {
        self.kind().name()
    }
}

/// An unsolicited line: `EVENT <NAME> …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Welcome {
        text: String,
    },
    Request {
        from: String,
        ip: IpAddr,
    },
    Peer {
        user: String,
        addr: SocketAddr,
        token: Token,
    },
    /// To the acceptor, after `OK ACCEPT`, when the requester named its
    /// listen port in `CONNECT`: where to dial the requester if the requester
    /// cannot dial us (reverse connection). The token is the one from `OK ACCEPT`.
    Dialback {
        user: String,
        addr: SocketAddr,
    },
    /// To both sides of an introduction between peerline clients: answer
    /// `SYNC <user>` at once (the server times the round trip).
    Sync {
        user: String,
    },
    /// To both sides once both answered `SYNC`: dial `addr` (the other side's
    /// control connection as the server sees it) from our own control
    /// connection's local port in `in_ms` milliseconds, so both SYNs cross
    /// (TCP simultaneous open). `rtt_ms` is the sum of both sides' round
    /// trips to the server, an estimate of the path between them.
    Punch {
        user: String,
        addr: SocketAddr,
        in_ms: u64,
        rtt_ms: u64,
    },
    Denied {
        user: String,
    },
    Cancelled {
        user: String,
        reason: CancelReason,
    },
    Broadcast {
        id: u64,
        from: String,
        unix: u64,
        text: String,
    },
    Reauth {
        seconds: u64,
    },
    Closing {
        reason: CloseReason,
        text: String,
    },
    /// A watched user logged in.
    Online {
        user: String,
        ip: IpAddr,
    },
    /// A watched user's session ended.
    Offline {
        user: String,
    },
}

/// Any line the server sends on the control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    Ok(OkReply),
    Err {
        code: ErrorCode,
        text: String,
    },
    /// One `LIST` item, sent before `OK LIST`.
    Client {
        user: String,
        ip: IpAddr,
    },
    Event(Event),
}

impl ServerLine {
    pub fn err(code: ErrorCode) -> ServerLine {
        ServerLine::Err {
            code,
            text: code.default_text().to_owned(),
        }
    }

    pub fn err_with(code: ErrorCode, text: impl Into<String>) -> ServerLine {
        ServerLine::Err {
            code,
            text: text.into(),
        }
    }

    /// True for lines that end a command (`OK …` or `ERR …`).
    pub fn is_final(&self) -> bool {
        matches!(self, ServerLine::Ok(_) | ServerLine::Err { .. })
    }

    /// Parses one line from the server. `None` for anything malformed.
    pub fn parse(line: &str) -> Option<ServerLine> {
        let mut it = line.splitn(2, ' ');
        let head = it.next()?;
        let rest = it.next().unwrap_or("");
        match head {
            "OK" => parse_ok(rest).map(ServerLine::Ok),
            "ERR" => {
                let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(ServerLine::Err {
                    code: ErrorCode::from_code(code)?,
                    text: text.to_owned(),
                })
            }
            "CLIENT" => {
                let (user, ip) = rest.split_once(' ')?;
                Some(ServerLine::Client {
                    user: user.to_owned(),
                    ip: ip.parse().ok()?,
                })
            }
            "EVENT" => parse_event(rest).map(ServerLine::Event),
            _ => None,
        }
    }
}

/// Splits `n` space-separated fields off the front; the last gets the rest.
fn fields(s: &str, n: usize) -> Option<Vec<&str>> {
    let v: Vec<&str> = s.splitn(n, ' ').collect();
    (v.len() == n).then_some(v)
}

fn kv<'a>(field: &'a str, key: &str) -> Option<&'a str> {
    field.strip_prefix(key)?.strip_prefix('=')
}

fn parse_ok(rest: &str) -> Option<OkReply> {
    let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
    // The server writes verbs in upper case.
    let verb = Verb::from_name(verb).filter(|v| v.name() == verb)?;
    let a: Vec<&str> = args.split(' ').filter(|s| !s.is_empty()).collect();
    Some(match (verb, a.as_slice()) {
        (Verb::Signup, [user]) => OkReply::Signup {
            user: user.to_string(),
        },
        (Verb::Login, [user, token]) => OkReply::Login {
            user: user.to_string(),
            token: Token::parse(token)?,
        },
        (Verb::List, [count]) => OkReply::List {
            count: count.parse().ok()?,
        },
        (Verb::Connect, [user]) => OkReply::Connect {
            user: user.to_string(),
        },
        (Verb::Accept, [user, token]) => OkReply::Accept {
            user: user.to_string(),
            token: Token::parse(token)?,
        },
        (Verb::Deny, [user]) => OkReply::Deny {
            user: user.to_string(),
        },
        (Verb::Broadcast, [id, reached, pending, expires]) => OkReply::Broadcast {
            id: id.parse().ok()?,
            reached: kv(reached, "reached")?.parse().ok()?,
            pending: kv(pending, "pending")?.parse().ok()?,
            expires: kv(expires, "expires")?.parse().ok()?,
        },
        (Verb::Ping, []) => OkReply::Ping,
        (Verb::Quit, []) => OkReply::Quit,
        (Verb::Passwd, []) => OkReply::Passwd,
        (Verb::Watch, [count]) => OkReply::Watch {
            count: count.parse().ok()?,
        },
        (Verb::Ticket, [ticket, expires]) => OkReply::Ticket {
            ticket: super::Ticket::parse(ticket)?,
            expires: kv(expires, "expires")?.parse().ok()?,
        },
        (Verb::Resume, [user, token, ticket, expires]) => OkReply::Resume {
            user: user.to_string(),
            token: Token::parse(token)?,
            ticket: super::Ticket::parse(ticket)?,
            expires: kv(expires, "expires")?.parse().ok()?,
        },
        (Verb::Sync, [user]) => OkReply::Sync {
            user: user.to_string(),
        },
        _ => return None,
    })
}

fn parse_event(rest: &str) -> Option<Event> {
    let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(match name {
        "WELCOME" => Event::Welcome {
            text: args.to_owned(),
        },
        "REQUEST" => {
            let f = fields(args, 2)?;
            Event::Request {
                from: f[0].to_owned(),
                ip: f[1].parse().ok()?,
            }
        }
        "PEER" => {
            let f = fields(args, 3)?;
            Event::Peer {
                user: f[0].to_owned(),
                addr: f[1].parse().ok()?,
                token: Token::parse(f[2])?,
            }
        }
        "DIALBACK" => {
            let f = fields(args, 2)?;
            Event::Dialback {
                user: f[0].to_owned(),
                addr: f[1].parse().ok()?,
            }
        }
        "SYNC" if !args.is_empty() && !args.contains(' ') => Event::Sync {
            user: args.to_owned(),
        },
        "PUNCH" => {
            let f = fields(args, 4)?;
            Event::Punch {
                user: f[0].to_owned(),
                addr: f[1].parse().ok()?,
                in_ms: f[2].parse().ok()?,
                rtt_ms: f[3].parse().ok()?,
            }
        }
        "DENIED" => Event::Denied {
            user: args.to_owned(),
        },
        "CANCELLED" => {
            let f = fields(args, 2)?;
            let reason = match f[1] {
                "expired" => CancelReason::Expired,
                "offline" => CancelReason::Offline,
                _ => return None,
            };
            Event::Cancelled {
                user: f[0].to_owned(),
                reason,
            }
        }
        "BROADCAST" => {
            let f = fields(args, 4)?;
            Event::Broadcast {
                id: f[0].parse().ok()?,
                from: f[1].to_owned(),
                unix: f[2].parse().ok()?,
                text: f[3].to_owned(),
            }
        }
        "ONLINE" => {
            let f = fields(args, 2)?;
            Event::Online {
                user: f[0].to_owned(),
                ip: f[1].parse().ok()?,
            }
        }
        "OFFLINE" if !args.is_empty() && !args.contains(' ') => Event::Offline {
            user: args.to_owned(),
        },
        "REAUTH" => Event::Reauth {
            seconds: args.parse().ok()?,
        },
        "CLOSING" => {
            let (reason, text) = args.split_once(' ').unwrap_or((args, ""));
            Event::Closing {
                reason: CloseReason::parse(reason)?,
                text: text.to_owned(),
            }
        }
        _ => return None,
    })
}

/// A line's wire form (see [`ServerLine::wire`]).
pub struct Wire<'a, T>(&'a T);

impl OkReply {
    /// The wire form, tokens included.
    pub fn wire(&self) -> Wire<'_, OkReply> {
        Wire(self)
    }
}

impl Event {
    /// The wire form, tokens included.
    pub fn wire(&self) -> Wire<'_, Event> {
        Wire(self)
    }
}

impl ServerLine {
    /// The wire form (without the line end), tokens included: for the
    /// connection, never for a log. `Debug` shows a line with its tokens
    /// redacted (their type does it); there is no `Display`, so nothing
    /// formats a line for a log by accident.
    pub fn wire(&self) -> Wire<'_, ServerLine> {
        Wire(self)
    }
}

impl fmt::Display for Wire<'_, OkReply> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let this = self.0;
        write!(f, "OK {}", this.verb())?;
        match this {
            OkReply::Signup { user }
            | OkReply::Connect { user }
            | OkReply::Deny { user }
            | OkReply::Sync { user } => write!(f, " {user}"),
            OkReply::Login { user, token } | OkReply::Accept { user, token } => {
                write!(f, " {user} {}", token.expose())
            }
            OkReply::List { count } | OkReply::Watch { count } => write!(f, " {count}"),
            OkReply::Broadcast {
                id,
                reached,
                pending,
                expires,
            } => {
                write!(
                    f,
                    " {id} reached={reached} pending={pending} expires={expires}"
                )
            }
            OkReply::Ping | OkReply::Quit | OkReply::Passwd => Ok(()),
            OkReply::Ticket { ticket, expires } => write!(f, " {ticket} expires={expires}"),
            OkReply::Resume {
                user,
                token,
                ticket,
                expires,
            } => write!(f, " {user} {} {ticket} expires={expires}", token.expose()),
        }
    }
}

impl fmt::Display for Wire<'_, Event> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::Welcome { text } => write!(f, "EVENT WELCOME {text}"),
            Event::Request { from, ip } => write!(f, "EVENT REQUEST {from} {ip}"),
            Event::Peer { user, addr, token } => {
                write!(f, "EVENT PEER {user} {addr} {}", token.expose())
            }
            Event::Dialback { user, addr } => write!(f, "EVENT DIALBACK {user} {addr}"),
            Event::Sync { user } => write!(f, "EVENT SYNC {user}"),
            Event::Punch {
                user,
                addr,
                in_ms,
                rtt_ms,
            } => write!(f, "EVENT PUNCH {user} {addr} {in_ms} {rtt_ms}"),
            Event::Denied { user } => write!(f, "EVENT DENIED {user}"),
            Event::Cancelled { user, reason } => {
                write!(f, "EVENT CANCELLED {user} {}", reason.as_str())
            }
            Event::Broadcast {
                id,
                from,
                unix,
                text,
            } => {
                write!(f, "EVENT BROADCAST {id} {from} {unix} {text}")
            }
            Event::Reauth { seconds } => write!(f, "EVENT REAUTH {seconds}"),
            Event::Online { user, ip } => write!(f, "EVENT ONLINE {user} {ip}"),
            Event::Offline { user } => write!(f, "EVENT OFFLINE {user}"),
            Event::Closing { reason, text } => {
                write!(f, "EVENT CLOSING {} {text}", reason.as_str())
            }
        }
    }
}

impl fmt::Display for Wire<'_, ServerLine> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ServerLine::Ok(ok) => ok.wire().fmt(f),
            ServerLine::Err { code, text } => write!(f, "ERR {code} {text}"),
            ServerLine::Client { user, ip } => write!(f, "CLIENT {user} {ip}"),
            ServerLine::Event(e) => e.wire().fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_round_trips() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let lines = vec![
            ServerLine::Ok(OkReply::Signup { user: "a".into() }),
            ServerLine::Ok(OkReply::Login {
                user: "a".into(),
                token: Token::parse(&"ab".repeat(16)).unwrap(),
            }),
            ServerLine::Ok(OkReply::List { count: 3 }),
            ServerLine::Ok(OkReply::Connect { user: "b".into() }),
            ServerLine::Ok(OkReply::Accept {
                user: "b".into(),
                token: Token::parse(&"cd".repeat(40)).unwrap(),
            }),
            ServerLine::Ok(OkReply::Deny { user: "b".into() }),
            ServerLine::Ok(OkReply::Broadcast {
                id: 7,
                reached: 2,
                pending: 5,
                expires: 99,
            }),
            ServerLine::Ok(OkReply::Ping),
            ServerLine::Ok(OkReply::Quit),
            ServerLine::Ok(OkReply::Ticket {
                ticket: crate::proto::Ticket::parse(&"01".repeat(37)).unwrap(),
                expires: 1_800_000_000,
            }),
            ServerLine::Ok(OkReply::Resume {
                user: "a".into(),
                token: Token::parse(&"ab".repeat(16)).unwrap(),
                ticket: crate::proto::Ticket::parse(&"02".repeat(37)).unwrap(),
                expires: 1_800_000_001,
            }),
            ServerLine::Ok(OkReply::Passwd),
            ServerLine::err(ErrorCode::BadCredentials),
            ServerLine::Client {
                user: "a".into(),
                ip: "::1".parse().unwrap(),
            },
            ServerLine::Event(Event::Welcome {
                text: "hi there".into(),
            }),
            ServerLine::Event(Event::Request {
                from: "a".into(),
                ip,
            }),
            ServerLine::Event(Event::Peer {
                user: "a".into(),
                addr: "[::1]:4000".parse().unwrap(),
                token: Token::parse(&"ef".repeat(16)).unwrap(),
            }),
            ServerLine::Event(Event::Dialback {
                user: "a".into(),
                addr: "[::1]:4001".parse().unwrap(),
            }),
            ServerLine::Event(Event::Sync { user: "a".into() }),
            ServerLine::Event(Event::Punch {
                user: "a".into(),
                addr: "203.0.113.5:40123".parse().unwrap(),
                in_ms: 12,
                rtt_ms: 30,
            }),
            ServerLine::Ok(OkReply::Sync { user: "a".into() }),
            ServerLine::Event(Event::Denied { user: "a".into() }),
            ServerLine::Event(Event::Cancelled {
                user: "a".into(),
                reason: CancelReason::Offline,
            }),
            ServerLine::Event(Event::Broadcast {
                id: 1,
                from: "a".into(),
                unix: 1_700_000_000,
                text: "multi word  text".into(),
            }),
            ServerLine::Event(Event::Reauth { seconds: 120 }),
            ServerLine::Ok(OkReply::Watch { count: 2 }),
            ServerLine::Event(Event::Online {
                user: "a".into(),
                ip,
            }),
            ServerLine::Event(Event::Offline { user: "a".into() }),
            ServerLine::Event(Event::Closing {
                reason: CloseReason::SlowReader,
                text: "output buffer full".into(),
            }),
        ];
        for l in lines {
            let s = l.wire().to_string();
            assert_eq!(ServerLine::parse(&s), Some(l), "{s}");
        }
    }

    #[test]
    fn contract_shapes() {
        assert_eq!(
            ServerLine::err(ErrorCode::NotLoggedIn).wire().to_string(),
            "ERR not-logged-in LOGIN or SIGNUP first"
        );
        assert!(ServerLine::parse("OK LIST x").is_none());
        assert!(ServerLine::parse("EVENT NOPE").is_none());
        assert!(ServerLine::parse("ERR no-such-code text").is_none());
        // A token field holds a token: 32 to 128 hex digits.
        assert!(ServerLine::parse("OK LOGIN a xyz").is_none());
        assert!(
            ServerLine::parse(&format!("EVENT PEER a 127.0.0.1:1 {}", "g".repeat(32))).is_none()
        );
    }

    /// Every line that carries a token, shown the ways a log shows things
    /// (`{:?}` of the line, of an `Option` of it), never contains the token;
    /// only `wire()` does.
    #[test]
    fn no_debug_of_a_line_shows_its_token() {
        let token = Token::parse(&"5a".repeat(16)).unwrap();
        let text = token.expose().to_string();
        let lines = [
            ServerLine::Ok(OkReply::Login {
                user: "a".into(),
                token: token.clone(),
            }),
            ServerLine::Ok(OkReply::Accept {
                user: "b".into(),
                token: token.clone(),
            }),
            ServerLine::Event(Event::Peer {
                user: "a".into(),
                addr: "127.0.0.1:4000".parse().unwrap(),
                token,
            }),
        ];
        for l in lines {
            assert!(l.wire().to_string().contains(&text));
            for shown in [
                format!("{l:?}"),
                format!("{:?}", Some(&l)),
                format!("{l:#?}"),
            ] {
                assert!(!shown.contains(&text), "{shown}");
            }
        }
    }
}
