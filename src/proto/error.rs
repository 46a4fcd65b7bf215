//! The one table from error to wire reply: every `ERR <code> <text>` line the
//! server or a peer sends comes from an [`ErrorCode`] here.

use std::fmt;

macro_rules! error_codes {
    ($( $variant:ident => $code:literal, $text:literal, $plain:literal; )*) => {
        /// Every error a peerline endpoint can report, with its wire code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( $variant, )* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The lower-kebab-case code sent on the wire.
            pub fn code(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The default free text that follows the code.
            pub fn default_text(self) -> &'static str {
                match self { $( ErrorCode::$variant => $text, )* }
            }

            /// A sentence for a person at a terminal (the client shows this).
            pub fn plain_words(self) -> &'static str {
                match self { $( ErrorCode::$variant => $plain, )* }
            }

            pub fn from_code(code: &str) -> Option<ErrorCode> {
                match code { $( $code => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    LineTooLong => "line-too-long", "lines are limited to 1024 bytes; line discarded",
        "That line was too long (1024 bytes at most) and was ignored.";
    BadUtf8 => "bad-utf8", "line is not valid UTF-8; discarded",
        "That line was not valid UTF-8 and was ignored.";
    UnknownVerb => "unknown-verb", "unknown command",
        "The server does not know that command.";
    BadSyntax => "bad-syntax", "wrong number or form of arguments",
        "The command's arguments were not in the right form.";
    BadUsername => "bad-username", "usernames match [A-Za-z][A-Za-z0-9_.-]{0,31}",
        "Usernames start with a letter and use letters, digits, '_', '.', '-' (32 at most).";
    BadPassword => "bad-password", "passwords are 1 to 128 bytes without whitespace",
        "Passwords are 1 to 128 characters without spaces.";
    UserExists => "user-exists", "that username is taken",
        "That username is already taken.";
    PasswordMismatch => "password-mismatch", "the two passwords differ",
        "The two passwords you typed differ.";
    BadCredentials => "bad-credentials", "wrong username or password",
        "Wrong username or password.";
    NotLoggedIn => "not-logged-in", "LOGIN or SIGNUP first",
        "You need to log in first (/login or /signup).";
    AlreadyLoggedIn => "already-logged-in", "this connection is logged in as another user",
        "This connection is already logged in as another user.";
    NoSuchUser => "no-such-user", "no such user is online",
        "Nobody by that name or address is online.";
    Offline => "offline", "that user is not online",
        "That user is not online.";
    Ambiguous => "ambiguous", "several online users share that address",
        "Several users share that address; connect by username instead.";
    SelfRequest => "self-request", "you cannot connect to yourself",
        "You cannot connect to yourself.";
    AlreadyPending => "already-pending", "a request between you two is already pending",
        "A request between you two is already waiting for an answer.";
    NoRequest => "no-request", "no pending request from that user",
        "There is no pending request from that user.";
    TextTooLong => "text-too-long", "broadcast text is limited to 900 bytes",
        "That broadcast is too long (900 bytes at most).";
    WatchLimit => "watch-limit", "at most 100 watched users per session; nothing changed",
        "You are watching as many users as allowed (100); /unwatch some first.";
    Busy => "busy", "too many logins in progress; try again shortly",
        "The server is busy; try again in a moment.";
    RateLimited => "rate-limited", "retry-after=1 too many attempts; wait",
        "Too many attempts; wait a moment and try again.";
    SignupClosed => "signup-closed", "this server does not take signups; ask its administrator for an account",
        "This server does not take signups; ask its administrator for an account.";
    Internal => "internal", "the server could not save that; try again",
        "The server hit an internal error; try again.";
    BadToken => "bad-token", "unknown, used or expired token",
        "The peer refused the link token.";
    TlsRequired => "tls-required", "passwords are accepted only over TLS from this address; connect with TLS (peerline-client does by default)",
        "The server accepts passwords from your address only over TLS; run the client without --plaintext.";
    NotLinked => "not-linked", "send PEER <user> <token> first",
        "Send PEER <user> <token> first.";
    AccountDisabled => "account-disabled", "this account is disabled; ask the administrator",
        "This account has been disabled by the server's administrator.";
    BadTicket => "bad-ticket", "resumption ticket refused (expired, used, revoked or not yours); LOGIN with the password",
        "The server refused the resumption ticket; log in with the password.";
    EncryptionRequired => "encryption-required",
        "this client accepts encrypted links only (peerline-client), not plaintext",
        "The peer accepts encrypted links only; plaintext (nc) links need --allow-plaintext-links there.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_lower_kebab_and_round_trip() {
        for &e in ErrorCode::ALL {
            let c = e.code();
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{c} is not lower-kebab-case"
            );
            assert_eq!(ErrorCode::from_code(c), Some(e));
        }
    }
}
