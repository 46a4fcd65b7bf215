//! Commands a client sends on the control connection, parsed and formatted.

use std::fmt;

use super::error::ErrorCode;
use super::names::{is_valid_password, is_valid_username};
use super::ticket::Ticket;

/// Longest broadcast text in bytes: keeps `BCAST …` under 1200 bytes and
/// `EVENT BROADCAST …` under the 1024-byte line cap.
pub const MAX_BROADCAST_TEXT: usize = 900;

/// A control-connection command (client → server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Signup {
        user: String,
        password: String,
        password_again: String,
    },
    Login {
        user: String,
        password: String,
    },
    List,
    /// By username, or by IP address (the server resolves it). `port`, if
    /// given, is where the requester accepts incoming links: the acceptor may
    /// then dial back (`EVENT DIALBACK`) when it cannot be dialled itself.
    Connect {
        target: String,
        port: Option<u16>,
    },
    Accept {
        user: String,
        port: u16,
    },
    Deny {
        user: String,
    },
    Broadcast {
        text: String,
    },
    Ping,
    Quit,
    /// Change the logged-in account's password.
    Passwd {
        old: String,
        new: String,
        new_again: String,
    },
    /// Follow (`+user`) or stop following (`-user`) users' presence.
    Watch {
        changes: Vec<WatchChange>,
    },
    /// Ask for a resumption ticket for the logged-in session (`OK TICKET`).
    Ticket,
    /// Log in with a resumption ticket instead of the password.
    Resume {
        user: String,
        ticket: Ticket,
    },
    /// The answer to `EVENT SYNC <user>`: the server times this round trip to
    /// schedule the simultaneous open with `<user>` (`EVENT PUNCH`).
    Sync {
        user: String,
    },
}

/// One field of `WATCH`: `+user` or `-user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchChange {
    pub add: bool,
    pub user: String,
}

impl fmt::Display for WatchChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.add { '+' } else { '-' };
        write!(f, "{sign}{}", self.user)
    }
}

/// Why a line is not a command; maps to one `ERR` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    /// The verb as recognised, for context in the reply text.
    pub verb: Option<&'static str>,
}

impl Command {
    /// The upper-case verb, as it appears in `OK <VERB>`.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Signup { .. } => "SIGNUP",
            Command::Login { .. } => "LOGIN",
            Command::List => "LIST",
            Command::Connect { .. } => "CONNECT",
            Command::Accept { .. } => "ACCEPT",
            Command::Deny { .. } => "DENY",
            Command::Broadcast { .. } => "BROADCAST",
            Command::Ping => "PING",
            Command::Quit => "QUIT",
            Command::Passwd { .. } => "PASSWD",
            Command::Watch { .. } => "WATCH",
            Command::Ticket => "TICKET",
            Command::Resume { .. } => "RESUME",
            Command::Sync { .. } => "SYNC",
        }
    }

    /// The command carries a password (refused in clear from non-loopback
    /// addresses: `ERR tls-required`).
    pub fn carries_password(&self) -> bool {
        matches!(
            self,
            Command::Signup { .. } | Command::Login { .. } | Command::Passwd { .. }
        )
    }

    /// Parses one line (without terminator). Verbs are case-insensitive;
    /// fields are separated by spaces; BROADCAST's text is the rest of the line.
    pub fn parse(line: &str) -> Result<Command, ParseError> {
        let (verb_raw, rest) = match line.split_once(' ') {
            Some((v, r)) => (v, r),
            None => (line, ""),
        };
        let verb = VERBS
            .iter()
            .copied()
            .find(|v| v.eq_ignore_ascii_case(verb_raw))
            .ok_or(ParseError {
                code: ErrorCode::UnknownVerb,
                verb: None,
            })?;
        let err = |code| ParseError {
            code,
            verb: Some(verb),
        };
        let fields: Vec<&str> = rest.split(' ').filter(|f| !f.is_empty()).collect();
        let want = |n: usize| {
            if fields.len() == n {
                Ok(())
            } else {
                Err(err(ErrorCode::BadSyntax))
            }
        };
        let user = |s: &str| {
            if is_valid_username(s) {
                Ok(s.to_owned())
            } else {
                Err(err(ErrorCode::BadUsername))
            }
        };
        let password = |s: &str| {
            if is_valid_password(s) {
                Ok(s.to_owned())
            } else {
                Err(err(ErrorCode::BadPassword))
            }
        };
        Ok(match verb {
            "SIGNUP" => {
                want(3)?;
                Command::Signup {
                    user: user(fields[0])?,
                    password: password(fields[1])?,
                    password_again: password(fields[2])?,
                }
            }
            "LOGIN" => {
                want(2)?;
                Command::Login {
                    user: user(fields[0])?,
                    password: password(fields[1])?,
                }
            }
            "LIST" => {
                want(0)?;
                Command::List
            }
            "CONNECT" => {
                let port = match fields.len() {
                    1 => None,
                    2 => Some(
                        fields[1]
                            .parse::<u16>()
                            .ok()
                            .filter(|&p| p != 0)
                            .ok_or(err(ErrorCode::BadSyntax))?,
                    ),
                    _ => return Err(err(ErrorCode::BadSyntax)),
                };
                Command::Connect {
                    target: fields[0].to_owned(),
                    port,
                }
            }
            "ACCEPT" => {
                want(2)?;
                let port = fields[1]
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or(err(ErrorCode::BadSyntax))?;
                Command::Accept {
                    user: user(fields[0])?,
                    port,
                }
            }
            "DENY" => {
                want(1)?;
                Command::Deny {
                    user: user(fields[0])?,
                }
            }
            "SYNC" => {
                want(1)?;
                Command::Sync {
                    user: user(fields[0])?,
                }
            }
            "BROADCAST" => {
                if rest.trim().is_empty() {
                    return Err(err(ErrorCode::BadSyntax));
                }
                if rest.len() > MAX_BROADCAST_TEXT {
                    return Err(err(ErrorCode::TextTooLong));
                }
                Command::Broadcast {
                    text: rest.to_owned(),
                }
            }
            "PASSWD" => {
                want(3)?;
                Command::Passwd {
                    old: password(fields[0])?,
                    new: password(fields[1])?,
                    new_again: password(fields[2])?,
                }
            }
            "TICKET" => {
                want(0)?;
                Command::Ticket
            }
            "RESUME" => {
                want(2)?;
                Command::Resume {
                    user: user(fields[0])?,
                    ticket: Ticket::parse(fields[1]).ok_or(err(ErrorCode::BadTicket))?,
                }
            }
            "PING" => Command::Ping,
            "QUIT" => {
                want(0)?;
                Command::Quit
            }
            "WATCH" => {
                if fields.is_empty() {
                    return Err(err(ErrorCode::BadSyntax));
                }
                let changes = fields
                    .iter()
                    .map(|f| {
                        // Not `split_at(1)`: a field starting with a multi-byte
                        // character panicked there (`WATCH Ñ/` took the server
                        // down; found by the parser property test).
                        let (add, name) = if let Some(n) = f.strip_prefix('+') {
                            (true, n)
                        } else if let Some(n) = f.strip_prefix('-') {
                            (false, n)
                        } else {
                            return Err(err(ErrorCode::BadSyntax));
                        };
                        Ok(WatchChange {
                            add,
                            user: user(name)?,
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Command::Watch { changes }
            }
            _ => unreachable!("every verb in VERBS is handled"),
        })
    }
}

const VERBS: &[&str] = &[
    "SIGNUP",
    "LOGIN",
    "LIST",
    "CONNECT",
    "ACCEPT",
    "DENY",
    "SYNC",
    "BROADCAST",
    "PING",
    "QUIT",
    "PASSWD",
    "WATCH",
    "TICKET",
    "RESUME",
];

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Signup {
                user,
                password,
                password_again,
            } => {
                write!(f, "SIGNUP {user} {password} {password_again}")
            }
            Command::Login { user, password } => write!(f, "LOGIN {user} {password}"),
            Command::Passwd {
                old,
                new,
                new_again,
            } => write!(f, "PASSWD {old} {new} {new_again}"),
            Command::Connect { target, port: None } => write!(f, "CONNECT {target}"),
            Command::Connect {
                target,
                port: Some(port),
            } => write!(f, "CONNECT {target} {port}"),
            Command::Accept { user, port } => write!(f, "ACCEPT {user} {port}"),
            Command::Deny { user } => write!(f, "DENY {user}"),
            Command::Sync { user } => write!(f, "SYNC {user}"),
            Command::Broadcast { text } => write!(f, "BROADCAST {text}"),
            Command::List | Command::Ping | Command::Quit | Command::Ticket => {
                f.write_str(self.verb())
            }
            Command::Resume { user, ticket } => write!(f, "RESUME {user} {ticket}"),
            Command::Watch { changes } => {
                f.write_str("WATCH")?;
                for c in changes {
                    write!(f, " {c}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(line: &str) -> ErrorCode {
        Command::parse(line).unwrap_err().code
    }

    #[test]
    fn watch_with_a_multibyte_first_character_is_an_error_not_a_panic() {
        assert!(Command::parse("WATCH Ñ/").is_err());
        assert!(Command::parse("WATCH +Ñ").is_err());
    }

    #[test]
    fn every_command_round_trips() {
        let all = [
            Command::Signup {
                user: "alice".into(),
                password: "pw1".into(),
                password_again: "pw1".into(),
            },
            Command::Login {
                user: "alice".into(),
                password: "pw1".into(),
            },
            Command::List,
            Command::Connect {
                target: "127.0.0.1".into(),
                port: None,
            },
            Command::Connect {
                target: "bob".into(),
                port: Some(7001),
            },
            Command::Accept {
                user: "bob".into(),
                port: 5555,
            },
            Command::Deny { user: "bob".into() },
            Command::Sync { user: "bob".into() },
            Command::Broadcast {
                text: "hello  world, spaces kept ".into(),
            },
            Command::Ping,
            Command::Quit,
            Command::Passwd {
                old: "a".into(),
                new: "b".into(),
                new_again: "b".into(),
            },
            Command::Watch {
                changes: vec![
                    WatchChange {
                        add: true,
                        user: "bob".into(),
                    },
                    WatchChange {
                        add: false,
                        user: "carol".into(),
                    },
                ],
            },
            Command::Ticket,
            Command::Resume {
                user: "alice".into(),
                ticket: crate::proto::Ticket::parse(&"0a".repeat(37)).unwrap(),
            },
        ];
        for c in all {
            assert_eq!(Command::parse(&c.to_string()), Ok(c.clone()), "{c}");
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(Command::parse("ping"), Ok(Command::Ping));
        assert_eq!(Command::parse("LiSt"), Ok(Command::List));
    }

    #[test]
    fn errors_name_the_fault() {
        assert_eq!(code_of("HELLO"), ErrorCode::UnknownVerb);
        assert_eq!(code_of("LOGIN alice"), ErrorCode::BadSyntax);
        assert_eq!(code_of("LIST extra"), ErrorCode::BadSyntax);
        assert_eq!(code_of("SIGNUP 9lives pw pw"), ErrorCode::BadUsername);
        assert_eq!(code_of("SIGNUP a,b pw pw"), ErrorCode::BadUsername);
        assert_eq!(code_of("ACCEPT bob 0"), ErrorCode::BadSyntax);
        assert_eq!(code_of("ACCEPT bob 70000"), ErrorCode::BadSyntax);
        assert_eq!(code_of("BROADCAST "), ErrorCode::BadSyntax);
        assert_eq!(code_of("WATCH"), ErrorCode::BadSyntax);
        assert_eq!(code_of("WATCH bob"), ErrorCode::BadSyntax);
        assert_eq!(code_of("WATCH +bob *carol"), ErrorCode::BadSyntax);
        assert_eq!(code_of("WATCH +9lives"), ErrorCode::BadUsername);
        assert_eq!(code_of("WATCH +"), ErrorCode::BadUsername);
        assert_eq!(code_of("RESUME alice"), ErrorCode::BadSyntax);
        assert_eq!(code_of("RESUME alice nothex"), ErrorCode::BadTicket);
        assert_eq!(code_of("TICKET x"), ErrorCode::BadSyntax);
        let long = format!("BROADCAST {}", "x".repeat(MAX_BROADCAST_TEXT + 1));
        assert_eq!(code_of(&long), ErrorCode::TextTooLong);
        let max = format!("BROADCAST {}", "x".repeat(MAX_BROADCAST_TEXT));
        assert!(Command::parse(&max).is_ok());
    }

    #[test]
    fn ping_may_carry_a_token_like_the_datagram() {
        assert_eq!(Command::parse("PING abc"), Ok(Command::Ping));
    }
}
