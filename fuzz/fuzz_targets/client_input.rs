//! What a user types into the client (`client::input::parse`): never panics,
//! and what it accepts obeys the rules the engine relies on (valid names,
//! texts that fit a line, chat text that is not a command).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::client::input::{self, UserCommand, UserInput, MAX_MSG_TEXT};
use peerline::proto::command::MAX_BROADCAST_TEXT;
use peerline::proto::names::is_valid_username;

fuzz_target!(|line: &str| {
    let Ok(parsed) = input::parse(line) else {
        return;
    };
    match parsed {
        UserInput::Text(t) => {
            // `/x` is a command; only `//x` sends text starting with `/`.
            assert!(!line.starts_with('/') || line.starts_with("//"), "{line:?}");
            assert!(line.contains(t.as_str()), "{line:?} → {t:?}");
        }
        UserInput::Command(c) => match c {
            UserCommand::Msg { user, text } => {
                assert!(is_valid_username(&user) && !text.is_empty());
                assert!(text.len() <= MAX_MSG_TEXT, "{}", text.len());
            }
            UserCommand::Broadcast(text) => {
                assert!(!text.trim().is_empty() && text.len() <= MAX_BROADCAST_TEXT);
            }
            UserCommand::Accept(u)
            | UserCommand::Deny(u)
            | UserCommand::Bye(u)
            | UserCommand::Watch(u)
            | UserCommand::Unwatch(u) => assert!(is_valid_username(&u), "{u:?}"),
            UserCommand::Signup(Some((u, _, _))) | UserCommand::Login(Some((u, _))) => {
                assert!(is_valid_username(&u), "{u:?}")
            }
            _ => {}
        },
    }
});
