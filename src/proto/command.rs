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

/// The control protocol's verbs: the one list their names are written in.
/// The parser looks verbs up here, `Command::verb` and `OkReply::verb` name
/// themselves from it, `OK <VERB>` replies are parsed by it, and the
/// property tests draw words from it; a verb added to [`Verb::ALL`] and not
/// to the parser does not compile (the dispatch is an exhaustive `match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Signup,
    Login,
    List,
    Connect,
    Accept,
    Deny,
    Sync,
    Broadcast,
    Ping,
    Quit,
    Passwd,
    Watch,
    Ticket,
    Resume,
}

impl Verb {
    /// Every verb, in the order the protocol document lists them.
    pub const ALL: [Verb; 14] = [
        Verb::Signup,
        Verb::Login,
        Verb::List,
        Verb::Connect,
        Verb::Accept,
        Verb::Deny,
        Verb::Sync,
        Verb::Broadcast,
        Verb::Ping,
        Verb::Quit,
        Verb::Passwd,
        Verb::Watch,
        Verb::Ticket,
        Verb::Resume,
    ];

    /// The upper-case name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Signup => "SIGNUP",
            Verb::Login => "LOGIN",
            Verb::List => "LIST",
            Verb::Connect => "CONNECT",
            Verb::Accept => "ACCEPT",
            Verb::Deny => "DENY",
            Verb::Sync => "SYNC",
            Verb::Broadcast => "BROADCAST",
            Verb::Ping => "PING",
            Verb::Quit => "QUIT",
            Verb::Passwd => "PASSWD",
            Verb::Watch => "WATCH",
            Verb::Ticket => "TICKET",
            Verb::Resume => "RESUME",
        }
    }

    /// The verb named `name`, in any case (commands are case-insensitive).
    pub fn from_name(name: &str) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(name))
    }

    /// Its fields include a password (refused in clear from non-loopback
    /// addresses: `ERR tls-required`).
    pub fn carries_password(self) -> bool {
        matches!(self, Verb::Signup | Verb::Login | Verb::Passwd)
    }
}

/// A command's fields after the verb, with the field rules that produce
/// each `ERR` code.
struct Fields<'a> {
    verb: Verb,
    /// Everything after the verb and its space (BROADCAST's text).
    rest: &'a str,
    /// `rest` split on spaces, empty fields dropped.
    words: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn err(&self, code: ErrorCode) -> ParseError {
        ParseError {
            code,
            verb: Some(self.verb.name()),
        }
    }

    /// Exactly `N` fields, or `bad-syntax`.
    fn exactly<const N: usize>(&self) -> Result<[&'a str; N], ParseError> {
        <[&str; N]>::try_from(self.words.as_slice()).map_err(|_| self.err(ErrorCode::BadSyntax))
    }

    fn user(&self, s: &str) -> Result<String, ParseError> {
        if is_valid_username(s) {
            Ok(s.to_owned())
        } else {
            Err(self.err(ErrorCode::BadUsername))
        }
    }

    fn password(&self, s: &str) -> Result<String, ParseError> {
        if is_valid_password(s) {
            Ok(s.to_owned())
        } else {
            Err(self.err(ErrorCode::BadPassword))
        }
    }

    /// A TCP port other than 0.
    fn port(&self, s: &str) -> Result<u16, ParseError> {
        s.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or(self.err(ErrorCode::BadSyntax))
    }

    /// No fields, giving `cmd`.
    fn none(&self, cmd: Command) -> Result<Command, ParseError> {
        self.exactly::<0>().map(|_| cmd)
    }
}

impl Command {
    /// Its verb.
    pub fn kind(&self) -> Verb {
        match self {
            Command::Signup { .. } => Verb::Signup,
            Command::Login { .. } => Verb::Login,
            Command::List => Verb::List,
            Command::Connect { .. } => Verb::Connect,
            Command::Accept { .. } => Verb::Accept,
            Command::Deny { .. } => Verb::Deny,
            Command::Broadcast { .. } => Verb::Broadcast,
            Command::Ping => Verb::Ping,
            Command::Quit => Verb::Quit,
            Command::Passwd { .. } => Verb::Passwd,
            Command::Watch { .. } => Verb::Watch,
            Command::Ticket => Verb::Ticket,
            Command::Resume { .. } => Verb::Resume,
            Command::Sync { .. } => Verb::Sync,
        }
    }

    /// The upper-case verb, as it appears in `OK <VERB>`.
    pub fn verb(&self) -> &'static str {
        self.kind().name()
    }

    /// The command carries a password (refused in clear from non-loopback
    /// addresses: `ERR tls-required`).
    pub fn carries_password(&self) -> bool {
        self.kind().carries_password()
    }

    /// Parses one line (without terminator). Verbs are case-insensitive;
    /// fields are separated by spaces; BROADCAST's text is the rest of the line.
    pub fn parse(line: &str) -> Result<Command, ParseError> {
        let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
        let verb = Verb::from_name(name).ok_or(ParseError {
            code: ErrorCode::UnknownVerb,
            verb: None,
        })?;
        let f = Fields {
            verb,
            rest,
            words: rest.split(' ').filter(|w| !w.is_empty()).collect(),
        };
        match verb {
            Verb::Signup => {
                let [u, p, p2] = f.exactly()?;
                Ok(Command::Signup {
                    user: f.user(u)?,
                    password: f.password(p)?,
                    password_again: f.password(p2)?,
                })
            }
            Verb::Login => {
                let [u, p] = f.exactly()?;
                Ok(Command::Login {
                    user: f.user(u)?,
                    password: f.password(p)?,
                })
            }
            Verb::List => f.none(Command::List),
            Verb::Connect => parse_connect(&f),
            Verb::Accept => {
                let [u, port] = f.exactly()?;
                let port = f.port(port)?;
                Ok(Command::Accept {
                    user: f.user(u)?,
                    port,
                })
            }
            Verb::Deny => {
                let [u] = f.exactly()?;
                Ok(Command::Deny { user: f.user(u)? })
            }
            Verb::Sync => {
                let [u] = f.exactly()?;
                Ok(Command::Sync { user: f.user(u)? })
            }
            Verb::Broadcast => parse_broadcast(&f),
            // PING may carry a token, like the datagram; it is ignored.
            Verb::Ping => Ok(Command::Ping),
            Verb::Quit => f.none(Command::Quit),
            Verb::Passwd => {
                let [o, n, a] = f.exactly()?;
                Ok(Command::Passwd {
                    old: f.password(o)?,
                    new: f.password(n)?,
                    new_again: f.password(a)?,
                })
            }
            Verb::Watch => parse_watch(&f),
            Verb::Ticket => f.none(Command::Ticket),
            Verb::Resume => {
                let [u, t] = f.exactly()?;
                Ok(Command::Resume {
                    user: f.user(u)?,
                    ticket: Ticket::parse(t).ok_or(f.err(ErrorCode::BadTicket))?,
                })
            }
        }
    }
}

/// `CONNECT <user-or-ip> [<port>]`: the target is resolved by the server.
fn parse_connect(f: &Fields) -> Result<Command, ParseError> {
    let port = match f.words.len() {
        1 => None,
        2 => Some(f.port(f.words[1])?),
        _ => return Err(f.err(ErrorCode::BadSyntax)),
    };
    Ok(Command::Connect {
        target: f.words[0].to_owned(),
        port,
    })
}

/// `BROADCAST <text>`: the rest of the line, spaces kept.
fn parse_broadcast(f: &Fields) -> Result<Command, ParseError> {
    if f.rest.trim().is_empty() {
        return Err(f.err(ErrorCode::BadSyntax));
    }
    if f.rest.len() > MAX_BROADCAST_TEXT {
        return Err(f.err(ErrorCode::TextTooLong));
    }
    Ok(Command::Broadcast {
        text: f.rest.to_owned(),
    })
}

/// `WATCH (+user|-user)...`, at least one.
fn parse_watch(f: &Fields) -> Result<Command, ParseError> {
    if f.words.is_empty() {
        return Err(f.err(ErrorCode::BadSyntax));
    }
    let changes = f
        .words
        .iter()
        .map(|w| {
            // Not `split_at(1)`: a field starting with a multi-byte
            // character panicked there (`WATCH Ñ/` took the server
            // down; found by the parser property test).
            let (add, name) = if let Some(n) = w.strip_prefix('+') {
                (true, n)
            } else if let Some(n) = w.strip_prefix('-') {
                (false, n)
            } else {
                return Err(f.err(ErrorCode::BadSyntax));
            };
            Ok(WatchChange {
                add,
                user: f.user(name)?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Command::Watch { changes })
}

impl fmt::Display for Command {
    /// The wire form: the verb's name, then the fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())?;
        match self {
            Command::Signup {
                user,
                password,
                password_again,
            } => write!(f, " {user} {password} {password_again}"),
            Command::Login { user, password } => write!(f, " {user} {password}"),
            Command::Passwd {
                old,
                new,
                new_again,
            } => write!(f, " {old} {new} {new_again}"),
            Command::Connect { target, port: None } => write!(f, " {target}"),
            Command::Connect {
                target,
                port: Some(port),
            } => write!(f, " {target} {port}"),
            Command::Accept { user, port } => write!(f, " {user} {port}"),
            Command::Deny { user } | Command::Sync { user } => write!(f, " {user}"),
            Command::Broadcast { text } => write!(f, " {text}"),
            Command::List | Command::Ping | Command::Quit | Command::Ticket => Ok(()),
            Command::Resume { user, ticket } => write!(f, " {user} {ticket}"),
            Command::Watch { changes } => {
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
        let mut seen = Vec::new();
        for c in all {
            assert_eq!(Command::parse(&c.to_string()), Ok(c.clone()), "{c}");
            assert!(c.to_string().starts_with(c.verb()), "{c}");
            seen.push(c.kind());
        }
        for v in Verb::ALL {
            assert!(seen.contains(&v), "no round trip for {}", v.name());
        }
    }

    /// Every verb in the list parses as itself (with fields from the
    /// round-trip list) and names itself back: a verb missing from the
    /// parser, the names or `OK` reply parsing fails here.
    #[test]
    fn every_verb_of_the_list_is_parsed_named_and_replied_to() {
        let mut names: Vec<&str> = Verb::ALL.iter().map(|v| v.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Verb::ALL.len(), "a verb listed twice");
        for v in Verb::ALL {
            assert_eq!(Verb::from_name(v.name()), Some(v));
            assert_eq!(Verb::from_name(&v.name().to_lowercase()), Some(v));
            // Known: whatever its fields, never `unknown-verb`.
            let code = Command::parse(v.name()).map_or_else(|e| Some(e.code), |_| None);
            assert_ne!(code, Some(ErrorCode::UnknownVerb), "{}", v.name());
        }
        assert_eq!(Verb::from_name("HELLO"), None);
    }

    /// The protocol document is written by hand: it must describe every
    /// verb of the list.
    #[test]
    fn the_protocol_document_describes_every_verb() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        for v in Verb::ALL {
            assert!(
                doc.contains(&format!("`{}", v.name())),
                "docs/PROTOCOL.md does not describe {}",
                v.name()
            );
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
