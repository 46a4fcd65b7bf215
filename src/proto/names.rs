//! Field rules shared by every message: usernames, passwords, tokens.

/// Longest username in bytes.
pub const MAX_USERNAME: usize = 32;
/// Longest password in bytes (bounds KDF input and line size).
pub const MAX_PASSWORD: usize = 128;

/// `[A-Za-z][A-Za-z0-9_.-]{0,31}`: never an IP address, never needs CSV quoting.
pub fn is_valid_username(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_USERNAME
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Passwords: 1..=128 bytes, no whitespace (fields are space-separated).
pub fn is_valid_password(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_PASSWORD && !s.chars().any(char::is_whitespace)
}

/// Shortest and longest token, in hex digits: at least 128 bits, as the
/// contract says, and short enough for a line.
pub const MIN_TOKEN_DIGITS: usize = 32;
pub const MAX_TOKEN_DIGITS: usize = 128;

/// Session and link tokens: 32 to 128 hex digits, in either case. The one
/// validity rule ([`Token::parse`]).
pub fn is_valid_token(s: &str) -> bool {
    Token::parse(s).is_some()
}

/// A session or p2p token: a secret. Its `Debug` and `Display` never show
/// it, so a log line or a `{:?}` of anything holding one cannot leak it; the
/// wire form is asked for by name ([`Token::expose`]).
///
/// One type for every token on every channel, with one validity rule and
/// one place that lower-cases ([`Token::parse`]): two tokens are equal
/// exactly when their wire forms are equal ignoring case. The 128-bit tokens
/// this server issues are kept as 16 bytes, not a string on the heap (one per
/// session, and again as a map key); longer ones (valid on the wire, never
/// issued here) as their lower-case text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Exactly 32 hex digits.
    Bits128([u8; 16]),
    /// Any other valid length, lower-cased.
    Text(Box<str>),
}

impl Token {
    /// 128 bits from `rng` (the OS in the server, seeded in tests).
    pub fn random(rng: &mut dyn crate::rng::Random) -> Token {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        Token::from_bytes(bytes)
    }

    /// The token whose 32 hex digits are `bytes`.
    pub fn from_bytes(bytes: [u8; 16]) -> Token {
        Token(Repr::Bits128(bytes))
    }

    /// `None` unless `s` is 32 to 128 hex digits (either case).
    pub fn parse(s: &str) -> Option<Token> {
        if s.len() == 2 * 16 {
            // The common case (every ACK), in one pass: the decoder refuses
            // anything but hex digits itself.
            let mut bytes = [0u8; 16];
            hex::decode_to_slice(s, &mut bytes).ok()?;
            return Some(Token::from_bytes(bytes));
        }
        if s.len() < MIN_TOKEN_DIGITS
            || s.len() > MAX_TOKEN_DIGITS
            || !s.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        Some(Token(Repr::Text(s.to_ascii_lowercase().into())))
    }

    /// The wire form (lower-case hex), for formatting a line or datagram.
    /// The only way to see the token.
    pub fn expose(&self) -> Exposed<'_> {
        Exposed(self)
    }

    /// Bytes that identify the token (the 16 bytes of a 128-bit one), for
    /// a MAC over it.
    pub fn mac_input(&self) -> &[u8] {
        match &self.0 {
            Repr::Bits128(b) => b,
            Repr::Text(t) => t.as_bytes(),
        }
    }
}

/// A token's wire form; see [`Token::expose`].
pub struct Exposed<'a>(&'a Token);

impl std::fmt::Display for Exposed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 .0 {
            Repr::Bits128(b) => {
                let mut text = [0u8; 32];
                hex::encode_to_slice(b, &mut text).expect("32 hex digits for 16 bytes");
                f.write_str(std::str::from_utf8(&text).expect("hex is ASCII"))
            }
            Repr::Text(t) => f.write_str(t),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// For logs: never the value.
impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<token>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rng::OsRandom;

    #[test]
    fn tokens_round_trip_in_either_case_and_reject_bad_lengths() {
        let t = Token::random(&mut OsRandom);
        let text = t.expose().to_string();
        assert!(text.len() == 32 && is_valid_token(&text));
        assert_eq!(Token::parse(&text), Some(t.clone()));
        assert_eq!(Token::parse(&text.to_ascii_uppercase()), Some(t.clone()));
        assert_eq!(Token::parse(&text[..31]), None);
        assert_eq!(Token::parse(&"g".repeat(32)), None);
        assert_eq!(Token::parse(&"a".repeat(129)), None);
        // Longer tokens are valid (>= 128 bits), lower-cased once, here.
        let long = Token::parse(&format!("{}00", text.to_ascii_uppercase())).unwrap();
        assert_eq!(long.expose().to_string(), format!("{text}00"));
        assert_eq!(Token::parse(&format!("{text}00")), Some(long));
        assert_ne!(Token::random(&mut OsRandom), t);
    }

    #[test]
    fn a_token_never_shows_itself_in_debug_or_display() {
        let text = "ab".repeat(16);
        for t in [
            Token::parse(&text).unwrap(),
            Token::parse(&"cd".repeat(20)).unwrap(),
        ] {
            let wire = t.expose().to_string();
            for shown in [format!("{t:?}"), format!("{t}"), format!("{:?}", Some(&t))] {
                assert!(!shown.contains(&wire[..16]), "{shown}");
            }
        }
    }

    #[test]
    fn usernames() {
        for ok in ["a", "alice", "Bob_2", "x.y-z", &"a".repeat(32)] {
            assert!(is_valid_username(ok), "{ok:?} should be valid");
        }
        for bad in [
            "",
            "1abc",
            "_a",
            "a b",
            "a,b",
            "a\"b",
            "127.0.0.1",
            "é",
            &"a".repeat(33),
        ] {
            assert!(!is_valid_username(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn passwords() {
        assert!(is_valid_password("pass-1234"));
        assert!(!is_valid_password(""));
        assert!(!is_valid_password("a b"));
        assert!(!is_valid_password(&"p".repeat(129)));
    }

    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let token = || Token::random(&mut OsRandom).expose().to_string();
        let (a, b) = (token(), token());
        assert!(is_valid_token(&a) && a.len() == 32);
        assert_ne!(a, b);
        assert!(!is_valid_token("abc"));
        assert!(!is_valid_token(&"g".repeat(32)));
    }
}
