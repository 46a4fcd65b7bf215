//! The direct client-to-client link protocol: `PEER`, `OK PEER`, `MSG`, `BYE`.
//! Plain lines with the same framing as the control connection, so `nc` can
//! play either side.

use std::fmt;

use super::error::ErrorCode;
use super::names::{is_valid_username, Token};

/// Any line exchanged on a peer link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLine {
    /// First line from the dialing side of a plaintext link. The token is a
    /// [`Token`]: a `{:?}` of the line does not show it.
    Hello {
        user: String,
        token: Token,
    },
    /// First line from the dialing side inside an encrypted link: the
    /// handshake already proved the token, so it is not sent.
    Introduce {
        user: String,
    },
    /// The listening side's acceptance.
    Welcome {
        user: String,
    },
    Msg {
        text: String,
    },
    Bye,
    Err {
        code: ErrorCode,
        text: String,
    },
}

impl LinkLine {
    /// Parses one link line; verbs are case-insensitive like the control protocol.
    pub fn parse(line: &str) -> Result<LinkLine, ErrorCode> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "MSG" => Ok(LinkLine::Msg {
                text: rest.to_owned(),
            }),
            "BYE" => Ok(LinkLine::Bye),
            "PEER" => match rest.split(' ').collect::<Vec<_>>().as_slice() {
                [user] if is_valid_username(user) => Ok(LinkLine::Introduce {
                    user: user.to_string(),
                }),
                [user, token] if is_valid_username(user) => match Token::parse(token) {
                    Some(token) => Ok(LinkLine::Hello {
                        user: user.to_string(),
                        token,
                    }),
                    None => Err(ErrorCode::BadSyntax),
                },
                _ => Err(ErrorCode::BadSyntax),
            },
            "OK" => match rest.split_once(' ') {
                Some(("PEER", user)) if is_valid_username(user) => Ok(LinkLine::Welcome {
                    user: user.to_owned(),
                }),
                _ => Err(ErrorCode::BadSyntax),
            },
            "ERR" => {
                let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let code = ErrorCode::from_code(code).ok_or(ErrorCode::BadSyntax)?;
                Ok(LinkLine::Err {
                    code,
                    text: text.to_owned(),
                })
            }
            _ => Err(ErrorCode::UnknownVerb),
        }
    }
}

impl fmt::Display for LinkLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkLine::Hello { user, token } => write!(f, "PEER {user} {}", token.expose()),
            LinkLine::Introduce { user } => write!(f, "PEER {user}"),
            LinkLine::Welcome { user } => write!(f, "OK PEER {user}"),
            LinkLine::Msg { text } => write!(f, "MSG {text}"),
            LinkLine::Bye => f.write_str("BYE"),
            LinkLine::Err { code, text } => write!(f, "ERR {code} {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for l in [
            LinkLine::Hello {
                user: "alice".into(),
                token: Token::parse(&"ab".repeat(16)).unwrap(),
            },
            LinkLine::Introduce {
                user: "alice".into(),
            },
            LinkLine::Welcome { user: "bob".into() },
            LinkLine::Msg {
                text: "hi  there".into(),
            },
            LinkLine::Msg {
                text: String::new(),
            },
            LinkLine::Bye,
            LinkLine::Err {
                code: ErrorCode::BadToken,
                text: "nope".into(),
            },
        ] {
            assert_eq!(LinkLine::parse(&l.to_string()), Ok(l));
        }
    }

    #[test]
    fn bad_lines() {
        assert_eq!(LinkLine::parse("HELLO"), Err(ErrorCode::UnknownVerb));
        assert_eq!(LinkLine::parse("PEER 1alice"), Err(ErrorCode::BadSyntax));
        assert_eq!(
            LinkLine::parse("PEER alice nothex"),
            Err(ErrorCode::BadSyntax)
        );
        assert_eq!(
            LinkLine::parse("msg lower"),
            Ok(LinkLine::Msg {
                text: "lower".into()
            })
        );
    }
}
