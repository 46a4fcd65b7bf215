//! UDP datagrams between a client and the server's broadcast port.
//! Each datagram is one ASCII/UTF-8 message without a line terminator
//! (a trailing `\n` is tolerated on input so `nc -u` works by hand).
//!
//! A plaintext datagram names its session by token ([`ClientDatagram`]); a
//! sealed one (see `sealed.rs`) carries the same request without the token
//! ([`UdpRequest`]), since the session id and the AEAD key identify it.

use std::fmt;

use super::names::{is_valid_username, Token};

/// The largest datagram either side sends or accepts.
pub const MAX_DATAGRAM: usize = 1200;

/// The return-routability cookie of `CHALLENGE`/`REGISTER`: 96 bits of a
/// MAC, written as 24 hex digits, so `CHALLENGE <cookie>` (34 bytes) is
/// shorter than the `REGISTER <token>` (41 bytes) it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie(pub [u8; COOKIE_LEN]);

/// Bytes of MAC in a cookie.
pub const COOKIE_LEN: usize = 12;

impl Cookie {
    pub fn parse(s: &str) -> Option<Cookie> {
        cookie_of(s.as_bytes())
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Client → server, plaintext: each names its session by token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientDatagram {
    /// `cookie` is the answer to a `CHALLENGE`; without one the server
    /// challenges any address not yet validated for the session.
    Register {
        token: Token,
        cookie: Option<Cookie>,
    },
    Ack {
        token: Token,
        id: u64,
    },
    Ping {
        token: Token,
    },
}

/// What a client asks over UDP, without the credential: the body of a sealed
/// datagram, and what a plaintext one means once its token is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpRequest {
    Register { cookie: Option<Cookie> },
    Ack { id: u64 },
    Ping,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerDatagram {
    /// Prove you receive at this address: repeat `REGISTER` with the cookie.
    Challenge {
        cookie: Cookie,
    },
    Registered,
    Bcast {
        id: u64,
        from: String,
        unix: u64,
        text: String,
    },
    Pong,
    /// `ERR unknown-token`: the server has no session for that token (only
    /// ever sent in answer to a `PING`, and never larger than it).
    UnknownToken,
}

/// The space-separated fields of `s`, at most `N` of them (`None` if more),
/// without allocating: every ACK goes through here. Bytes, not `str`: every
/// valid client datagram is ASCII (keywords, hex, decimal digits), so a
/// non-ASCII byte fails its field's own check and the datagram needs no
/// UTF-8 validation of its own.
fn fields<const N: usize>(s: &[u8]) -> Option<([&[u8]; N], usize)> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        if b == b' ' {
            *out.get_mut(n)? = &s[start..i];
            n += 1;
            start = i + 1;
        }
    }
    *out.get_mut(n)? = &s[start..];
    Some((out, n + 1))
}

/// The datagram without its tolerated line terminator (`\n` or `\r\n`);
/// `None` if it is longer than any valid one.
fn body_of(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() > MAX_DATAGRAM {
        return None;
    }
    Some(match bytes.strip_suffix(b"\n") {
        Some(b) => b.strip_suffix(b"\r").unwrap_or(b),
        None => bytes,
    })
}

fn text_of(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(body_of(bytes)?).ok()
}

/// A hex digit's value, or 16 for anything else.
const HEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// `2 × N` hex digits (either case) → `N` bytes.
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 15);
    }
    // 16 is the only table value with bit 4 set.
    (bad & 16 == 0).then_some(out)
}

/// A token field: 32 hex digits decoded in place (every token this server
/// issues); other lengths through [`Token::parse`], the one validity rule.
fn token_of(s: &[u8]) -> Option<Token> {
    if s.len() == 32 {
        return unhex::<16>(s).map(Token::from_bytes);
    }
    Token::parse(std::str::from_utf8(s).ok()?)
}

/// A decimal `u64` as `str::parse` reads one (an optional `+`, then at least
/// one digit, no overflow), from bytes.
fn u64_of(s: &[u8]) -> Option<u64> {
    let digits = s.strip_prefix(b"+").unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

fn cookie_of(s: &[u8]) -> Option<Cookie> {
    unhex::<COOKIE_LEN>(s).map(Cookie)
}

impl ClientDatagram {
    /// The one parser of plaintext client datagrams. `ACK` is every
    /// delivery's answer, so this works on bytes: no UTF-8 pass, no string
    /// searcher, the token decoded into a fixed array.
    pub fn parse(bytes: &[u8]) -> Option<ClientDatagram> {
        let body = body_of(bytes)?;
        // `ACK <32 hex digits> <id>`, the form every delivery's answer
        // takes, read at fixed offsets. Whatever this does not accept goes
        // the general way below, so it can only ever agree with it: a token
        // without spaces and an id of digits are exactly the three fields
        // the general way would split.
        if let Some(rest) = body.strip_prefix(b"ACK ") {
            if rest.len() > 33 && rest[32] == b' ' {
                if let (Some(t), Some(id)) = (unhex::<16>(&rest[..32]), u64_of(&rest[33..])) {
                    return Some(ClientDatagram::Ack {
                        token: Token::from_bytes(t),
                        id,
                    });
                }
            }
        }
        let (f, n) = fields::<3>(body)?;
        match &f[..n] {
            [b"ACK", t, id] => Some(ClientDatagram::Ack {
                token: token_of(t)?,
                id: u64_of(id)?,
            }),
            [b"REGISTER", t] => Some(ClientDatagram::Register {
                token: token_of(t)?,
                cookie: None,
            }),
            [b"REGISTER", t, c] => Some(ClientDatagram::Register {
                token: token_of(t)?,
                cookie: Some(cookie_of(c)?),
            }),
            [b"PING", t] => Some(ClientDatagram::Ping {
                token: token_of(t)?,
            }),
            _ => None,
        }
    }

    pub fn token(&self) -> &Token {
        match self {
            ClientDatagram::Register { token, .. }
            | ClientDatagram::Ack { token, .. }
            | ClientDatagram::Ping { token } => token,
        }
    }

    /// The plaintext datagram of `req` for the session `token`.
    pub fn new(token: Token, req: UdpRequest) -> ClientDatagram {
        match req {
            UdpRequest::Register { cookie } => ClientDatagram::Register { token, cookie },
            UdpRequest::Ack { id } => ClientDatagram::Ack { token, id },
            UdpRequest::Ping => ClientDatagram::Ping { token },
        }
    }

    /// The request without its token.
    pub fn request(&self) -> UdpRequest {
        match self {
            ClientDatagram::Register { cookie, .. } => UdpRequest::Register { cookie: *cookie },
            ClientDatagram::Ack { id, .. } => UdpRequest::Ack { id: *id },
            ClientDatagram::Ping { .. } => UdpRequest::Ping,
        }
    }
}

impl UdpRequest {
    /// Parses a sealed datagram's body: the plaintext forms without the token
    /// (`REGISTER [cookie]`, `ACK <id>`, `PING`).
    pub fn parse(bytes: &[u8]) -> Option<UdpRequest> {
        let (f, n) = fields::<2>(body_of(bytes)?)?;
        match &f[..n] {
            [b"ACK", id] => Some(UdpRequest::Ack { id: u64_of(id)? }),
            [b"REGISTER"] => Some(UdpRequest::Register { cookie: None }),
            [b"REGISTER", c] => Some(UdpRequest::Register {
                cookie: Some(cookie_of(c)?),
            }),
            [b"PING"] => Some(UdpRequest::Ping),
            _ => None,
        }
    }
}

impl fmt::Display for UdpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpRequest::Register { cookie: None } => f.write_str("REGISTER"),
            UdpRequest::Register { cookie: Some(c) } => write!(f, "REGISTER {c}"),
            UdpRequest::Ack { id } => write!(f, "ACK {id}"),
            UdpRequest::Ping => f.write_str("PING"),
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
        if let Some(c) = s.strip_prefix("CHALLENGE ") {
            return Some(ServerDatagram::Challenge {
                cookie: Cookie::parse(c)?,
            });
        }
        if s == "ERR unknown-token" {
            return Some(ServerDatagram::UnknownToken);
        }
        let f: Vec<&str> = s.splitn(5, ' ').collect();
        match f.as_slice() {
            // A broadcast's text is one line: a `\n` inside (only one at the
            // end is the terminator) would print as two (found by fuzzing).
            ["BCAST", id, from, unix, text] if is_valid_username(from) && !text.contains('\n') => {
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

impl ClientDatagram {
    /// The wire form, token included (there is no `Display`: `Debug`, for
    /// logs, redacts the token by its type).
    pub fn wire(&self) -> Vec<u8> {
        let body = match self {
            ClientDatagram::Register {
                token,
                cookie: None,
            } => format!("REGISTER {}", token.expose()),
            ClientDatagram::Register {
                token,
                cookie: Some(c),
            } => format!("REGISTER {} {c}", token.expose()),
            ClientDatagram::Ack { token, id } => format!("ACK {} {id}", token.expose()),
            ClientDatagram::Ping { token } => format!("PING {}", token.expose()),
        };
        body.into_bytes()
    }
}

impl fmt::Display for ServerDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerDatagram::Challenge { cookie } => write!(f, "CHALLENGE {cookie}"),
            ServerDatagram::Registered => f.write_str("OK REGISTER"),
            ServerDatagram::Bcast {
                id,
                from,
                unix,
                text,
            } => write!(f, "BCAST {id} {from} {unix} {text}"),
            ServerDatagram::Pong => f.write_str("PONG"),
            ServerDatagram::UnknownToken => f.write_str("ERR unknown-token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::command::MAX_BROADCAST_TEXT;

    #[test]
    fn round_trips() {
        let t = Token::parse(&"0123456789abcdef".repeat(2)).unwrap();
        let cookie = Cookie([0xa5; COOKIE_LEN]);
        for d in [
            ClientDatagram::Register {
                token: t.clone(),
                cookie: None,
            },
            ClientDatagram::Register {
                token: t.clone(),
                cookie: Some(cookie),
            },
            ClientDatagram::Ack {
                token: t.clone(),
                id: 42,
            },
            ClientDatagram::Ping { token: t.clone() },
        ] {
            assert_eq!(ClientDatagram::parse(&d.wire()), Some(d));
        }
        for r in [
            UdpRequest::Register { cookie: None },
            UdpRequest::Register {
                cookie: Some(cookie),
            },
            UdpRequest::Ack { id: u64::MAX },
            UdpRequest::Ping,
        ] {
            assert_eq!(UdpRequest::parse(r.to_string().as_bytes()), Some(r));
        }
        for d in [
            ServerDatagram::Challenge { cookie },
            ServerDatagram::Registered,
            ServerDatagram::Pong,
            ServerDatagram::UnknownToken,
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
            b"REGISTER 0123456789abcdef0123456789abcdef 0123",
            b"REGISTER 0123456789abcdef0123456789abcdef zzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(ClientDatagram::parse(junk), None, "{junk:?}");
        }
        for junk in [&b"REGISTER x"[..], b"ACK", b"PING 1", b"ACK -1", b""] {
            assert_eq!(UdpRequest::parse(junk), None, "{junk:?}");
        }
        assert_eq!(ServerDatagram::parse(b"CHALLENGE 12"), None);
        assert_eq!(ClientDatagram::parse(&vec![b'A'; MAX_DATAGRAM + 1]), None);
    }

    /// The answer to an unvalidated address must not be larger than what it
    /// answers: the return-routability rule's first half.
    #[test]
    fn a_challenge_is_shorter_than_the_register_it_answers() {
        let register = ClientDatagram::Register {
            token: Token::parse(&"0".repeat(32)).unwrap(),
            cookie: None,
        };
        let challenge = ServerDatagram::Challenge {
            cookie: Cookie([0xff; COOKIE_LEN]),
        };
        assert!(challenge.to_string().len() <= register.wire().len());
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
    fn a_broadcast_text_with_a_newline_inside_is_refused() {
        // fuzz/ datagram target: this parsed with text "\r\u{1}\n", which
        // printed back as a datagram that parsed differently.
        assert_eq!(ServerDatagram::parse(b"BCAST 4 S- 3 \r\x01\n\n"), None);
        assert_eq!(ServerDatagram::parse(b"BCAST 4 bob 3 hi\nEVENT x"), None);
        assert!(ServerDatagram::parse(b"BCAST 4 bob 3 hi\n").is_some());
    }

    /// The parsers as they were before they moved to bytes (`str::split`,
    /// the `hex` crate, `str::parse`): the reading of `docs/PROTOCOL.md`
    /// the byte parsers must keep, malformed inputs included.
    mod spec {
        use super::super::*;

        fn fields<const N: usize>(s: &str) -> Option<([&str; N], usize)> {
            let mut out = [""; N];
            let mut n = 0;
            for f in s.split(' ') {
                *out.get_mut(n)? = f;
                n += 1;
            }
            Some((out, n))
        }

        fn text(bytes: &[u8]) -> Option<&str> {
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

        fn cookie(s: &str) -> Option<Cookie> {
            if s.len() != 2 * COOKIE_LEN {
                return None;
            }
            let mut b = [0u8; COOKIE_LEN];
            hex::decode_to_slice(s, &mut b).ok()?;
            Some(Cookie(b))
        }

        pub fn client(bytes: &[u8]) -> Option<ClientDatagram> {
            let (f, n) = fields::<3>(text(bytes)?)?;
            let token = Token::parse;
            match &f[..n] {
                ["REGISTER", t] => Some(ClientDatagram::Register {
                    token: token(t)?,
                    cookie: None,
                }),
                ["REGISTER", t, c] => Some(ClientDatagram::Register {
                    token: token(t)?,
                    cookie: Some(cookie(c)?),
                }),
                ["ACK", t, id] => Some(ClientDatagram::Ack {
                    token: token(t)?,
                    id: id.parse().ok()?,
                }),
                ["PING", t] => Some(ClientDatagram::Ping { token: token(t)? }),
                _ => None,
            }
        }

        pub fn request(bytes: &[u8]) -> Option<UdpRequest> {
            let (f, n) = fields::<2>(text(bytes)?)?;
            match &f[..n] {
                ["REGISTER"] => Some(UdpRequest::Register { cookie: None }),
                ["REGISTER", c] => Some(UdpRequest::Register {
                    cookie: Some(cookie(c)?),
                }),
                ["ACK", id] => Some(UdpRequest::Ack {
                    id: id.parse().ok()?,
                }),
                ["PING"] => Some(UdpRequest::Ping),
                _ => None,
            }
        }
    }

    /// Pieces a datagram is made of, well-formed or nearly: keywords (and
    /// near misses), hex of every length around the token's and cookie's
    /// (either case, a non-hex digit inside), numbers at and past `u64`'s
    /// edges (signs too), non-ASCII and invalid UTF-8, stray separators.
    fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            prop_oneof![
                Just("ACK"),
                Just("REGISTER"),
                Just("PING"),
                Just("ack"),
                Just("ACKS"),
                Just(""),
                Just(" "),
                Just("\r"),
                Just("\n"),
                Just("\t"),
                Just("+"),
                Just("-1"),
                Just("+7"),
                Just("18446744073709551615"),
                Just("18446744073709551616"),
                Just("0018446744073709551615"),
            ]
            .prop_map(|s| s.as_bytes().to_vec()),
            "[0-9a-fA-F]{22,34}".prop_map(String::into_bytes),
            "[0-9a-f]{120,130}".prop_map(String::into_bytes),
            "[0-9a-fA-Fg ]{0,40}".prop_map(String::into_bytes),
            "\\+?[0-9]{0,21}".prop_map(String::into_bytes),
            "[ -~]{0,8}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..4),
            Just("\u{e9}".as_bytes().to_vec()),
        ]
    }

    /// Datagrams shaped like the real ones, with one part likely wrong:
    /// what the fast paths must get exactly right.
    fn shaped() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let kw = prop_oneof![
            4 => Just(&b"ACK"[..]),
            2 => Just(&b"REGISTER"[..]),
            2 => Just(&b"PING"[..]),
            1 => Just(&b"ack"[..]),
        ];
        let token = prop_oneof![
            6 => "[0-9a-fA-F]{32}".prop_map(String::into_bytes),
            2 => "[0-9a-fA-F]{31,33}".prop_map(String::into_bytes),
            2 => ("[0-9a-f]{32}", 0..32usize, any::<u8>()).prop_map(|(t, i, b)| {
                let mut t = t.into_bytes();
                t[i] = b;
                t
            }),
            1 => "[0-9a-f]{33,129}".prop_map(String::into_bytes),
            1 => piece(),
        ];
        let arg = prop_oneof![
            4 => "\\+?[0-9]{1,20}".prop_map(String::into_bytes),
            2 => "[+-]?[0-9]{0,22}".prop_map(String::into_bytes),
            2 => "[0-9a-fA-F]{24}".prop_map(String::into_bytes),
            1 => "[0-9a-fA-Fx]{23,25}".prop_map(String::into_bytes),
            1 => piece(),
        ];
        (
            kw,
            token,
            proptest::option::of(arg),
            proptest::option::of(piece()),
        )
            .prop_map(|(kw, token, arg, extra)| {
                let mut d = kw.to_vec();
                for part in [Some(token), arg, extra].into_iter().flatten() {
                    d.push(b' ');
                    d.extend_from_slice(&part);
                }
                d
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]
        /// The byte parsers (fast paths included) read every input exactly
        /// as the string parsers they replaced: same datagram, same refusal.
        #[test]
        fn byte_parsers_agree_with_the_spec(
            shaped in shaped(),
            parts in proptest::collection::vec(piece(), 0..5),
            end in proptest::prop_oneof![
                proptest::strategy::Just(&b""[..]),
                proptest::strategy::Just(&b"\n"[..]),
                proptest::strategy::Just(&b"\r\n"[..]),
                proptest::strategy::Just(&b"\r"[..]),
                proptest::strategy::Just(&b"\n\n"[..]),
                proptest::strategy::Just(&b" "[..]),
            ],
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
        ) {
            let mut d = parts.join(&b' ');
            d.extend_from_slice(end);
            let mut e = shaped.clone();
            e.extend_from_slice(end);
            proptest::prop_assert_eq!(ClientDatagram::parse(&e), spec::client(&e), "{:?}", e);
            proptest::prop_assert_eq!(UdpRequest::parse(&e), spec::request(&e), "{:?}", e);
            // A sealed body is the same without the token.
            if let Some(at) = shaped.iter().position(|&b| b == b' ') {
                let tail = shaped[at..].iter().skip_while(|&&b| b != b' ').skip(1);
                let mut body = shaped[..at].to_vec();
                let rest: Vec<u8> = tail.copied().collect();
                if !rest.is_empty() {
                    body.push(b' ');
                    body.extend_from_slice(&rest);
                }
                proptest::prop_assert_eq!(UdpRequest::parse(&body), spec::request(&body), "{:?}", body);
            }
            proptest::prop_assert_eq!(ClientDatagram::parse(&d), spec::client(&d), "{:?}", d);
            proptest::prop_assert_eq!(UdpRequest::parse(&d), spec::request(&d), "{:?}", d);
            proptest::prop_assert_eq!(ClientDatagram::parse(&noise), spec::client(&noise));
            proptest::prop_assert_eq!(UdpRequest::parse(&noise), spec::request(&noise));
        }
    }

    /// The fast path's own edges, spelled out (the property above samples them).
    #[test]
    fn ack_edges_read_as_the_spec_reads_them() {
        let t = "0123456789abcdef".repeat(2);
        for d in [
            format!("ACK {t} 0"),
            format!("ACK {t} +0"),
            format!("ACK {t} +"),
            format!("ACK {t} -1"),
            format!("ACK {t} 18446744073709551615"),
            format!("ACK {t} 18446744073709551616"),
            format!("ACK {} 5", t.to_uppercase()),
            format!("ACK {}g 5", &t[..31]),
            format!("ACK {t}0 5"),
            format!("ACK {t}00 5"),
            format!("ACK {t} 5\r"),
            format!("ACK {t} 5\r\n"),
            format!("ACK {t}  5"),
            format!("ACK {t} 5 "),
            format!("ACK  {t} 5"),
            format!("ACK {t} \u{664}"),
            format!("REGISTER {t} {}", "Ab".repeat(12)),
            format!("REGISTER {t} {}", "Ag".repeat(12)),
            "ACK +".to_string(),
            "ACK 12".to_string(),
        ] {
            let b = d.as_bytes();
            assert_eq!(ClientDatagram::parse(b), spec::client(b), "{d:?}");
            assert_eq!(UdpRequest::parse(b), spec::request(b), "{d:?}");
        }
        assert_eq!(
            ClientDatagram::parse(format!("ACK {t} 18446744073709551615").as_bytes()),
            Some(ClientDatagram::Ack {
                token: Token::parse(&t).unwrap(),
                id: u64::MAX
            })
        );
        let mut bad = format!("ACK {t} 5").into_bytes();
        bad[10] = 0xc3;
        assert_eq!(ClientDatagram::parse(&bad), None, "non-ASCII in the token");
    }

    #[test]
    fn trailing_newline_from_nc_is_tolerated() {
        let t = "AB".repeat(16);
        assert_eq!(
            ClientDatagram::parse(format!("PING {t}\n").as_bytes()),
            Some(ClientDatagram::Ping {
                token: Token::parse(&t).unwrap()
            })
        );
    }
}
