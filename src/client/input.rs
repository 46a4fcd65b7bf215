//! What the user types: slash commands and plain chat text, parsed and
//! validated before anything is sent. The command table here is the single
//! source of the commands' names: parsing (each entry carries its own
//! parser), `/help`, Tab completion and the history's password filter all
//! read it, so a command cannot be in one and missing from another.

use crate::proto::command::MAX_BROADCAST_TEXT;
use crate::proto::names::{is_valid_password, is_valid_username};
use crate::proto::MAX_LINE;

/// Longest chat text: `MSG <text>\n` must fit in one link line.
pub const MAX_MSG_TEXT: usize = MAX_LINE - "MSG ".len() - 1;

/// Why a command's arguments were refused (shown with its usage).
type Why = &'static str;

/// One entry of the command table.
pub struct Spec {
    pub name: &'static str,
    /// Other names accepted for it (listed by `/help`).
    pub aliases: &'static [&'static str],
    pub usage: &'static str,
    pub about: &'static str,
    /// Its arguments include a password: never kept in history.
    pub carries_password: bool,
    /// Its arguments, parsed.
    parse: fn(&Args) -> Result<UserCommand, Why>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spec({})", self.name)
    }
}

/// Entries are compared by name (their parser is a function pointer).
impl PartialEq for Spec {
    fn eq(&self, other: &Spec) -> bool {
        self.name == other.name
    }
}

impl Eq for Spec {}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "help",
        aliases: &["h", "?"],
        usage: "/help",
        about: "show this list",
        carries_password: false,
        parse: |_| Ok(UserCommand::Help),
    },
    Spec {
        name: "signup",
        aliases: &[],
        usage: "/signup <user> <password> <password-again>",
        about: "create an account (on a terminal, /signup alone asks; passwords are not echoed)",
        carries_password: true,
        parse: parse_signup,
    },
    Spec {
        name: "login",
        aliases: &[],
        usage: "/login <user> <password>",
        about: "log in (on a terminal, /login alone asks)",
        carries_password: true,
        parse: parse_login,
    },
    Spec {
        name: "list",
        aliases: &[],
        usage: "/list",
        about: "show who is online, with their IP addresses",
        carries_password: false,
        parse: |a| a.none(UserCommand::List),
    },
    Spec {
        name: "connect",
        aliases: &[],
        usage: "/connect <user-or-ip>",
        about: "ask someone for a direct link (they answer /accept or /deny)",
        carries_password: false,
        parse: parse_connect,
    },
    Spec {
        name: "accept",
        aliases: &[],
        usage: "/accept <user>",
        about: "accept a request; that user then connects straight to you",
        carries_password: false,
        parse: |a| a.one_user().map(UserCommand::Accept),
    },
    Spec {
        name: "deny",
        aliases: &[],
        usage: "/deny <user>",
        about: "turn a request down",
        carries_password: false,
        parse: |a| a.one_user().map(UserCommand::Deny),
    },
    Spec {
        name: "msg",
        aliases: &["m"],
        usage: "/msg <user> <text>",
        about: "send text on your direct link with <user>",
        carries_password: false,
        parse: parse_msg,
    },
    Spec {
        name: "peers",
        aliases: &[],
        usage: "/peers",
        about: "list direct links and pending requests",
        carries_password: false,
        parse: |a| a.none(UserCommand::Peers),
    },
    Spec {
        name: "bye",
        aliases: &[],
        usage: "/bye <user>",
        about: "close the direct link with <user>",
        carries_password: false,
        parse: |a| a.one_user().map(UserCommand::Bye),
    },
    Spec {
        name: "broadcast",
        aliases: &[],
        usage: "/broadcast <text>",
        about: "send text to every user (offline ones get it when they log in)",
        carries_password: false,
        parse: parse_broadcast,
    },
    Spec {
        name: "passwd",
        aliases: &[],
        usage: "/passwd <old> <new> <new-again>",
        about: "change your password (on a terminal, /passwd alone asks, without echo; never kept in history); re-logins use the new one",
        carries_password: true,
        parse: parse_passwd,
    },
    Spec {
        name: "watch",
        aliases: &[],
        usage: "/watch <user>",
        about: "say when <user> comes online or goes offline (users you link with are watched too)",
        carries_password: false,
        parse: |a| a.one_user().map(UserCommand::Watch),
    },
    Spec {
        name: "unwatch",
        aliases: &[],
        usage: "/unwatch <user>",
        about: "stop following <user>'s presence",
        carries_password: false,
        parse: |a| a.one_user().map(UserCommand::Unwatch),
    },
    Spec {
        name: "reconnect",
        aliases: &[],
        usage: "/reconnect",
        about: "reconnect to the server now (it also does so by itself, with backoff)",
        carries_password: false,
        parse: |a| a.none(UserCommand::Reconnect),
    },
    Spec {
        name: "ping",
        aliases: &[],
        usage: "/ping",
        about: "check that the server answers",
        carries_password: false,
        parse: |a| a.none(UserCommand::Ping),
    },
    Spec {
        name: "quit",
        aliases: &["exit", "q"],
        usage: "/quit",
        about: "close links and the server connection, and leave",
        carries_password: false,
        parse: |a| a.none(UserCommand::Quit),
    },
];

/// The command typed as `name` (lower case, without the `/`), by name or alias.
pub fn find(name: &str) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name == name || s.aliases.contains(&name))
}

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
    Usage { spec: &'static Spec, why: Why },
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

/// A command's arguments: the text after its name, and its words.
struct Args<'a> {
    rest: &'a str,
    words: Vec<&'a str>,
}

impl Args<'_> {
    fn user(&self, s: &str) -> Result<String, Why> {
        if is_valid_username(s) {
            Ok(s.to_owned())
        } else {
            Err("not a valid username (a letter, then letters, digits, _ . -)")
        }
    }

    fn password(&self, s: &str) -> Result<String, Why> {
        if is_valid_password(s) {
            Ok(s.to_owned())
        } else {
            Err("passwords are 1 to 128 characters without spaces")
        }
    }

    fn none(&self, cmd: UserCommand) -> Result<UserCommand, Why> {
        if self.words.is_empty() {
            Ok(cmd)
        } else {
            Err("this command takes no arguments")
        }
    }

    fn one_user(&self) -> Result<String, Why> {
        match self.words.as_slice() {
            [u] => self.user(u),
            _ => Err("give exactly one username"),
        }
    }
}

fn parse_signup(a: &Args) -> Result<UserCommand, Why> {
    Ok(match a.words.as_slice() {
        [] => UserCommand::Signup(None),
        [u, p, p2] => UserCommand::Signup(Some((a.user(u)?, a.password(p)?, a.password(p2)?))),
        _ => return Err("give a username and the password twice"),
    })
}

fn parse_login(a: &Args) -> Result<UserCommand, Why> {
    Ok(match a.words.as_slice() {
        [] => UserCommand::Login(None),
        [u, p] => UserCommand::Login(Some((a.user(u)?, a.password(p)?))),
        _ => return Err("give a username and a password"),
    })
}

fn parse_connect(a: &Args) -> Result<UserCommand, Why> {
    match a.words.as_slice() {
        [target] => Ok(UserCommand::Connect(target.to_string())),
        _ => Err("give one username or IP address"),
    }
}

/// `/msg <user> <text>`: the text is the rest of the line, spaces kept.
fn parse_msg(a: &Args) -> Result<UserCommand, Why> {
    let rest = a.rest;
    let (to, text) = rest
        .trim_start()
        .split_once(' ')
        .unwrap_or((rest.trim(), ""));
    if text.is_empty() {
        return Err("give a username and some text");
    }
    if text.len() > MAX_MSG_TEXT {
        return Err("that message is too long (1019 bytes at most)");
    }
    Ok(UserCommand::Msg {
        user: a.user(to)?,
        text: text.to_owned(),
    })
}

fn parse_broadcast(a: &Args) -> Result<UserCommand, Why> {
    if a.rest.trim().is_empty() {
        return Err("give some text");
    }
    if a.rest.len() > MAX_BROADCAST_TEXT {
        return Err("that broadcast is too long (900 bytes at most)");
    }
    Ok(UserCommand::Broadcast(a.rest.to_owned()))
}

fn parse_passwd(a: &Args) -> Result<UserCommand, Why> {
    Ok(match a.words.as_slice() {
        [] => UserCommand::PasswdPrompt,
        [o, n, again] => UserCommand::Passwd {
            old: a.password(o)?,
            new: a.password(n)?,
            again: a.password(again)?,
        },
        _ => return Err("give the old password and the new one twice"),
    })
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
    let spec = find(&name).ok_or(InputError::Unknown(name))?;
    let args = Args {
        rest,
        words: rest.split_whitespace().collect(),
    };
    (spec.parse)(&args)
        .map(UserInput::Command)
        .map_err(|why| InputError::Usage { spec, why })
}

/// True for typed lines whose words include a password (`/login alice pw`),
/// by the command table: such lines are never kept in history.
pub fn carries_password(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("").to_ascii_lowercase();
    let secret = first
        .strip_prefix('/')
        .and_then(find)
        .is_some_and(|s| s.carries_password);
    secret && words.next().is_some()
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
    find(name).expect("name is in COMMANDS").usage
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

    /// Each entry parses by its name and every alias (to a command or a
    /// usage error, never "unknown"), and the names are unique: the table is
    /// the parser's only list, so this catches an entry it cannot reach.
    #[test]
    fn every_name_and_alias_in_the_table_reaches_its_parser() {
        let mut names: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name or alias used twice");
        for s in COMMANDS {
            for n in std::iter::once(s.name).chain(s.aliases.iter().copied()) {
                match parse(&format!("/{}", n.to_uppercase())) {
                    Ok(UserInput::Command(_)) => {}
                    Err(InputError::Usage { spec, .. }) => assert_eq!(spec.name, s.name),
                    other => panic!("/{n}: {other:?}"),
                }
            }
        }
    }

    /// The history filter reads the table: the commands that carry a
    /// password are the ones flagged, in any case, and only with arguments.
    #[test]
    fn password_commands_are_kept_out_of_history_by_the_table() {
        let flagged: Vec<&str> = COMMANDS
            .iter()
            .filter(|s| s.carries_password)
            .map(|s| s.name)
            .collect();
        assert_eq!(flagged, ["signup", "login", "passwd"]);
        for s in COMMANDS {
            assert_eq!(
                carries_password(&format!("/{} alice pw pw", s.name)),
                s.carries_password,
                "/{}",
                s.name
            );
        }
        assert!(carries_password("/PASSWD a b b"));
        assert!(!carries_password("/login"));
        assert!(
            !carries_password("//login alice pw"),
            "chat text, not a command"
        );
    }

    /// The user guide is written by hand: it must mention every command.
    #[test]
    fn the_client_guide_mentions_every_command() {
        let doc = include_str!("../../docs/CLIENT.md");
        for s in COMMANDS {
            assert!(
                doc.contains(&format!("/{}", s.name)),
                "docs/CLIENT.md does not mention /{}",
                s.name
            );
        }
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
