//! What the user types: slash commands and plain chat text, parsed and
//! validated before anything is sent. The command table here is the single
//! source for both parsing and `/help`.

use crate::proto::command::MAX_BROADCAST_TEXT;
use crate::proto::names::{is_valid_password, is_valid_username};
use crate::proto::MAX_LINE;

/// Longest chat text: `MSG <text>\n` must fit in one link line.
pub const MAX_MSG_TEXT: usize = MAX_LINE - "MSG ".len() - 1;

/// One entry of the command table.
#[derive(Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    /// Other names accepted for it (listed by `/help`).
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub about: &'static str,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "help",
        aliases: &["h", "?"],
        usage: "/help",
        about: "show this list",
    },
    Spec {
        name: "signup",
        aliases: &[],
        usage: "/signup <user> <password> <password-again>",
        about: "create an account (on a terminal, /signup alone asks; passwords are not echoed)",
    },
    Spec {
        name: "login",
        aliases: &[],
        usage: "/login <user> <password>",
        about: "log in (on a terminal, /login alone asks)",
    },
    Spec {
        name: "list",
        aliases: &[],
        usage: "/list",
        about: "show who is online, with their IP addresses",
    },
    Spec {
        name: "connect",
        aliases: &[],
        usage: "/connect <user-or-ip>",
        about: "ask someone for a direct link (they answer /accept or /deny)",
    },
    Spec {
        name: "accept",
        aliases: &[],
        usage: "/accept <user>",
        about: "accept a request; that user then connects straight to you",
    },
    Spec {
        name: "deny",
        aliases: &[],
        usage: "/deny <user>",
        about: "turn a request down",
    },
    Spec {
        name: "msg",
        aliases: &["m"],
        usage: "/msg <user> <text>",
        about: "send text on your direct link with <user>",
    },
    Spec {
        name: "peers",
        aliases: &[],
        usage: "/peers",
        about: "list direct links and pending requests",
    },
    Spec {
        name: "bye",
        aliases: &[],
        usage: "/bye <user>",
        about: "close the direct link with <user>",
    },
    Spec {
        name: "broadcast",
        aliases: &[],
        usage: "/broadcast <text>",
        about: "send text to every user (offline ones get it when they log in)",
    },
    Spec {
        name: "passwd",
        aliases: &[],
        usage: "/passwd <old> <new> <new-again>",
        about: "change your password (on a terminal, /passwd alone asks, without echo; never kept in history); re-logins use the new one",
    },
    Spec {
        name: "watch",
        aliases: &[],
        usage: "/watch <user>",
        about: "say when <user> comes online or goes offline (users you link with are watched too)",
    },
    Spec {
        name: "unwatch",
        aliases: &[],
        usage: "/unwatch <user>",
        about: "stop following <user>'s presence",
    },
    Spec {
        name: "reconnect",
        aliases: &[],
        usage: "/reconnect",
        about: "reconnect to the server now (it also does so by itself, with backoff)",
    },
    Spec {
        name: "ping",
        aliases: &[],
        usage: "/ping",
        about: "check that the server answers",
    },
    Spec {
        name: "quit",
        aliases: &["exit", "q"],
        usage: "/quit",
        about: "close links and the server connection, and leave",
    },
];

/// A parsed slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Help,
    /// `None`: ask for the fields (terminal only).
    Signup(Option<(String, String, String)>),
    Login(Option<(String, String)>),
    List,
    Connect(String),
    Accept(String),
    Deny(String),
    Msg {
        user: String,
        text: String,
    },
    Peers,
    Bye(String),
    Broadcast(String),
    Ping,
    Quit,
    Passwd {
        old: String,
        new: String,
        again: String,
    },
    /// `/passwd` alone: ask for the passwords (terminal only).
    PasswdPrompt,
    Watch(String),
    Unwatch(String),
    Reconnect,
}

/// A line the user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserInput {
    Command(UserCommand),
    /// Text without a leading `/`: chat for the single open link.
    Text(String),
}

/// Why a typed line was not accepted; printed with the command's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    Unknown(String),
    Usage {
        spec: &'static Spec,
        why: &'static str,
    },
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::Unknown(name) => {
                write!(f, "unknown command /{name}; type /help for the list")
            }
            InputError::Usage { spec, why } => write!(f, "{why}; usage: {}", spec.usage),
        }
    }
}

fn spec(name: &str) -> &'static Spec {
    COMMANDS
        .iter()
        .find(|s| s.name == name)
        .expect("name is in COMMANDS")
}

/// Parses one typed line. `//text` sends `/text` as chat.
pub fn parse(line: &str) -> Result<UserInput, InputError> {
    let line = line.trim_end();
    let Some(body) = line.strip_prefix('/') else {
        return Ok(UserInput::Text(line.to_owned()));
    };
    if body.starts_with('/') {
        return Ok(UserInput::Text(body.to_owned()));
    }
    let (name, rest) = body.split_once(' ').unwrap_or((body, ""));
    let name = name.to_ascii_lowercase();
    let Some(spec) = COMMANDS
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name.as_str()))
    else {
        return Err(InputError::Unknown(name));
    };
    let usage = |why| InputError::Usage { spec, why };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let user = |s: &str| {
        if is_valid_username(s) {
            Ok(s.to_owned())
        } else {
            Err(usage(
                "not a valid username (a letter, then letters, digits, _ . -)",
            ))
        }
    };
    let password = |s: &str| {
        if is_valid_password(s) {
            Ok(s.to_owned())
        } else {
            Err(usage("passwords are 1 to 128 characters without spaces"))
        }
    };
    let no_args = |cmd| {
        if words.is_empty() {
            Ok(cmd)
        } else {
            Err(usage("this command takes no arguments"))
        }
    };
    let one_user = || match words.as_slice() {
        [u] => user(u),
        _ => Err(usage("give exactly one username")),
    };
    let cmd = match spec.name {
        "help" => UserCommand::Help,
        "signup" => match words.as_slice() {
            [] => UserCommand::Signup(None),
            [u, p, p2] => UserCommand::Signup(Some((user(u)?, password(p)?, password(p2)?))),
            _ => return Err(usage("give a username and the password twice")),
        },
        "login" => match words.as_slice() {
            [] => UserCommand::Login(None),
            [u, p] => UserCommand::Login(Some((user(u)?, password(p)?))),
            _ => return Err(usage("give a username and a password")),
        },
        "list" => no_args(UserCommand::List)?,
        "connect" => match words.as_slice() {
            [target] => UserCommand::Connect(target.to_string()),
            _ => return Err(usage("give one username or IP address")),
        },
        "accept" => UserCommand::Accept(one_user()?),
        "deny" => UserCommand::Deny(one_user()?),
        "bye" => UserCommand::Bye(one_user()?),
        "msg" => {
            let (to, text) = rest
                .trim_start()
                .split_once(' ')
                .unwrap_or((rest.trim(), ""));
            if text.is_empty() {
                return Err(usage("give a username and some text"));
            }
            if text.len() > MAX_MSG_TEXT {
                return Err(usage("that message is too long (1019 bytes at most)"));
            }
            UserCommand::Msg {
                user: user(to)?,
                text: text.to_owned(),
            }
        }
        "peers" => no_args(UserCommand::Peers)?,
        "broadcast" => {
            if rest.trim().is_empty() {
                return Err(usage("give some text"));
            }
            if rest.len() > MAX_BROADCAST_TEXT {
                return Err(usage("that broadcast is too long (900 bytes at most)"));
            }
            UserCommand::Broadcast(rest.to_owned())
        }
        "ping" => no_args(UserCommand::Ping)?,
        "passwd" => match words.as_slice() {
            [] => UserCommand::PasswdPrompt,
            [o, n, a] => UserCommand::Passwd {
                old: password(o)?,
                new: password(n)?,
                again: password(a)?,
            },
            _ => return Err(usage("give the old password and the new one twice")),
        },
        "watch" => UserCommand::Watch(one_user()?),
        "unwatch" => UserCommand::Unwatch(one_user()?),
        "reconnect" => no_args(UserCommand::Reconnect)?,
        "quit" => no_args(UserCommand::Quit)?,
        _ => unreachable!("every name in COMMANDS is handled"),
    };
    Ok(UserInput::Command(cmd))
}

/// The `/help` text, without origin tags.
pub fn help_lines(auto_reauth: bool) -> Vec<String> {
    let width = COMMANDS.iter().map(|s| s.usage.len()).max().unwrap_or(0);
    let mut out = vec!["commands:".to_owned()];
    out.extend(COMMANDS.iter().map(|s| {
        let aliases: Vec<String> = s.aliases.iter().map(|a| format!("/{a}")).collect();
        let also = if aliases.is_empty() {
            String::new()
        } else {
            format!(" (also {})", aliases.join(", "))
        };
        format!("  {:width$}  {}{also}", s.usage, s.about)
    }));
    out.push(
        "  text without a leading / goes to your peer when exactly one direct link is open \
         (//text sends a line starting with /)"
            .to_owned(),
    );
    out.push(if auto_reauth {
        "  when the server asks you to log in again (EVENT REAUTH), the client answers by \
         itself with the credentials of your last /login (kept in memory only)"
            .to_owned()
    } else {
        "  when the server asks you to log in again (EVENT REAUTH), you are asked for your \
         password (--reauth-prompt)"
            .to_owned()
    });
    out
}

/// Usage line for a command by name (for prompts that cannot run).
pub fn usage_of(name: &str) -> &'static str {
    spec(name).usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> UserCommand {
        match parse(line) {
            Ok(UserInput::Command(c)) => c,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(cmd("/help"), UserCommand::Help);
        assert_eq!(cmd("/HELP"), UserCommand::Help);
        assert_eq!(
            cmd("/signup alice pw pw2"),
            UserCommand::Signup(Some(("alice".into(), "pw".into(), "pw2".into())))
        );
        assert_eq!(cmd("/signup"), UserCommand::Signup(None));
        assert_eq!(
            cmd("/login  alice   pw "),
            UserCommand::Login(Some(("alice".into(), "pw".into())))
        );
        assert_eq!(cmd("/login"), UserCommand::Login(None));
        assert_eq!(cmd("/list"), UserCommand::List);
        assert_eq!(
            cmd("/connect 127.0.0.1"),
            UserCommand::Connect("127.0.0.1".into())
        );
        assert_eq!(cmd("/accept bob"), UserCommand::Accept("bob".into()));
        assert_eq!(cmd("/deny bob"), UserCommand::Deny("bob".into()));
        assert_eq!(
            cmd("/msg bob hello  there "),
            UserCommand::Msg {
                user: "bob".into(),
                text: "hello  there".into()
            }
        );
        assert_eq!(cmd("/peers"), UserCommand::Peers);
        assert_eq!(cmd("/bye bob"), UserCommand::Bye("bob".into()));
        assert_eq!(
            cmd("/broadcast hi  all"),
            UserCommand::Broadcast("hi  all".into())
        );
        assert_eq!(cmd("/ping"), UserCommand::Ping);
        assert_eq!(cmd("/quit"), UserCommand::Quit);
        assert_eq!(cmd("/exit"), UserCommand::Quit);
        assert_eq!(cmd("/watch bob"), UserCommand::Watch("bob".into()));
        assert_eq!(cmd("/unwatch bob"), UserCommand::Unwatch("bob".into()));
        assert_eq!(cmd("/reconnect"), UserCommand::Reconnect);
        assert_eq!(
            cmd("/passwd a b b"),
            UserCommand::Passwd {
                old: "a".into(),
                new: "b".into(),
                again: "b".into()
            }
        );
        assert!(parse("/passwd a b").is_err());
        assert_eq!(cmd("/passwd"), UserCommand::PasswdPrompt);
    }

    #[test]
    fn text_and_escaped_slash() {
        assert_eq!(parse("hello"), Ok(UserInput::Text("hello".into())));
        assert_eq!(
            parse("//not a command"),
            Ok(UserInput::Text("/not a command".into()))
        );
    }

    #[test]
    fn bad_input_names_the_problem_and_usage() {
        assert_eq!(
            parse("/frobnicate"),
            Err(InputError::Unknown("frobnicate".into()))
        );
        for bad in [
            "/login alice",
            "/signup 9lives pw pw",
            "/signup alice pw",
            "/list now",
            "/msg bob",
            "/msg 1bob hi",
            "/accept",
            "/broadcast   ",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, InputError::Usage { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("usage: /"), "{err}");
        }
        let long = format!("/msg bob {}", "x".repeat(MAX_MSG_TEXT + 1));
        assert!(parse(&long).is_err());
        let fits = format!("/msg bob {}", "x".repeat(MAX_MSG_TEXT));
        assert!(parse(&fits).is_ok());
        let long = format!("/broadcast {}", "x".repeat(MAX_BROADCAST_TEXT + 1));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_lines(true).join("\n");
        for s in COMMANDS {
            assert!(help.contains(s.usage), "{} missing from /help", s.usage);
            for a in s.aliases {
                assert!(
                    help.contains(&format!("/{a}")),
                    "alias /{a} missing from /help"
                );
                assert!(matches!(
                    parse(&format!("/{a}")),
                    Ok(UserInput::Command(_)) | Err(InputError::Usage { .. })
                ));
            }
        }
        assert!(help.contains("REAUTH"));
    }
}
