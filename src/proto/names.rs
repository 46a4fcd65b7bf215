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
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source failed");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
