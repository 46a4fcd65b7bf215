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

/// Session and link tokens: 32 or more hex digits (128 bits or more).
pub fn is_valid_token(s: &str) -> bool {
    s.len() >= 32 && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A fresh random token of 128 bits, as 32 lowercase hex digits.
pub fn random_token() -> String {
    Token128::random().to_string()
}

/// A 128-bit token as the server keeps it: 16 bytes rather than a 32-byte
/// string on the heap (one per session, and again as a map key). Written as
/// 32 lowercase hex digits; parsed from 32 hex digits in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token128([u8; 16]);

impl Token128 {
    pub fn random() -> Token128 {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).expect("the OS random source failed");
        Token128(bytes)
    }

    /// `None` unless `s` is exactly 32 hex digits (longer tokens are valid on
    /// the wire but are never issued by this server, so they match nothing).
    pub fn parse(s: &str) -> Option<Token128> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(Token128(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for Token128 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = [0u8; 32];
        hex::encode_to_slice(self.0, &mut text).expect("32 hex digits for 16 bytes");
        f.write_str(std::str::from_utf8(&text).expect("hex is ASCII"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_other_lengths() {
        let t = Token128::random();
        let text = t.to_string();
        assert!(text.len() == 32 && is_valid_token(&text));
        assert_eq!(Token128::parse(&text), Some(t));
        assert_eq!(Token128::parse(&text.to_ascii_uppercase()), Some(t));
        assert_eq!(Token128::parse(&text[..31]), None);
        assert_eq!(Token128::parse(&format!("{text}00")), None);
        assert_eq!(Token128::parse(&"g".repeat(32)), None);
        assert_ne!(Token128::random(), t);
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
        let (a, b) = (random_token(), random_token());
        assert!(is_valid_token(&a) && a.len() == 32);
        assert_ne!(a, b);
        assert!(!is_valid_token("abc"));
        assert!(!is_valid_token(&"g".repeat(32)));
    }
}
