//! UDP datagrams between a client and the server's broadcast port.
//! Each datagram is one ASCII/UTF-8 message without a line terminator
//! (a trailing `\n` is tolerated on input so `nc -u` works by hand).

use std::fmt;

use super::names::{is_valid_token, is_valid_username};

/// The largest datagram either side sends or accepts.
pub const MAX_DATAGRAM: usize = 1200;

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientDatagram {
    Register { token: String },
    Ack { token: String, id: u64 },
    Ping { token: String },
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerDatagram {
    Registered,
    Bcast {
        id: u64,
        from: String,
        unix: u64,
        text: String,
    },
    Pong,
}

fn text_of(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > MAX_DATAGRAM {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?;
    Some(
        s.strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(s),
    )
}

impl ClientDatagram {
    pub fn parse(bytes: &[u8]) -> Option<ClientDatagram> {
        let s = text_of(bytes)?;
        let f: Vec<&str> = s.split(' ').collect();
        let token = |t: &str| is_valid_token(t).then(|| t.to_ascii_lowercase());
        match f.as_slice() {
            ["REGISTER", t] => Some(ClientDatagram::Register { token: token(t)? }),
            ["ACK", t, id] => Some(ClientDatagram::Ack {
                token: token(t)?,
                id: id.parse().ok()?,
            }),
            ["PING", t] => Some(ClientDatagram::Ping { token: token(t)? }),
            _ => None,
        }
    }

    pub fn token(&self) -> &str {
        match self {
            ClientDatagram::Register { token }
            | ClientDatagram::Ack { token, .. }
            | ClientDatagram::Ping { token } => token,
        }
    }
}

impl ServerDatagram {
    pub fn parse(bytes: &[u8]) -> Option<ServerDatagram> {
        let s = text_of(bytes)?;
        if s == "OK REGISTER" {
            return Some(ServerDatagram::Registered);
        }
        if s == "PONG" {
            return Some(ServerDatagram::Pong);
        }
        let f: Vec<&str> = s.splitn(5, ' ').collect();
        match f.as_slice() {
            ["BCAST", id, from, unix, text] if is_valid_username(from) => {
                Some(ServerDatagram::Bcast {
                    id: id.parse().ok()?,
                    from: from.to_string(),
                    unix: unix.parse().ok()?,
                    text: text.to_string(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for ClientDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientDatagram::Register { token } => write!(f, "REGISTER {token}"),
            ClientDatagram::Ack { token, id } => write!(f, "ACK {token} {id}"),
            ClientDatagram::Ping { token } => write!(f, "PING {token}"),
        }
    }
}

impl fmt::Display for ServerDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerDatagram::Registered => f.write_str("OK REGISTER"),
            ServerDatagram::Bcast {
                id,
                from,
                unix,
                text,
            } => write!(f, "BCAST {id} {from} {unix} {text}"),
            ServerDatagram::Pong => f.write_str("PONG"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::MAX_BROADCAST_TEXT;

    #[test]
    fn round_trips() {
        let t = "0123456789abcdef".repeat(2);
        for d in [
            ClientDatagram::Register { token: t.clone() },
            ClientDatagram::Ack {
                token: t.clone(),
                id: 42,
            },
            ClientDatagram::Ping { token: t.clone() },
        ] {
            assert_eq!(ClientDatagram::parse(d.to_string().as_bytes()), Some(d));
        }
        for d in [
            ServerDatagram::Registered,
            ServerDatagram::Pong,
            ServerDatagram::Bcast {
                id: 9,
                from: "al".into(),
                unix: 1,
                text: "a b  c".into(),
            },
        ] {
            assert_eq!(ServerDatagram::parse(d.to_string().as_bytes()), Some(d));
        }
    }

    #[test]
    fn junk_is_rejected() {
        for junk in [
            &b"REGISTER short"[..],
            b"ACK zz 1",
            b"\xff\xfe",
            b"PING",
            b"",
            b"REGISTER",
        ] {
            assert_eq!(ClientDatagram::parse(junk), None, "{junk:?}");
        }
        assert_eq!(ClientDatagram::parse(&vec![b'A'; MAX_DATAGRAM + 1]), None);
    }

    #[test]
    fn largest_broadcast_fits_in_a_datagram() {
        let d = ServerDatagram::Bcast {
            id: u64::MAX,
            from: "u".repeat(32),
            unix: u64::MAX,
            text: "x".repeat(MAX_BROADCAST_TEXT),
        };
        assert!(d.to_string().len() <= MAX_DATAGRAM);
    }

    #[test]
    fn trailing_newline_from_nc_is_tolerated() {
        let t = "ab".repeat(16);
        assert_eq!(
            ClientDatagram::parse(format!("PING {t}\n").as_bytes()),
            Some(ClientDatagram::Ping { token: t })
        );
    }
}
