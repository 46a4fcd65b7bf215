//! A session resumption ticket as it travels (`OK TICKET`, `RESUME`,
//! `OK RESUME`): opaque hex to the client, checked by the server
//! (`server/resume.rs`). The type exists so that a ticket never ends up in a
//! log or a debug print by accident: `Debug` shows only its length.
//! `Display` gives the wire text and is only for formatting lines.

use std::fmt;

/// Shortest and longest ticket text accepted on the wire (hex digits). The
/// server's are 74; the bounds let the format grow without a client change.
const MIN_HEX: usize = 32;
const MAX_HEX: usize = 256;

#[derive(Clone, PartialEq, Eq)]
pub struct Ticket(String);

impl Ticket {
    /// `None` unless `s` is an even number of hex digits within the bounds.
    pub fn parse(s: &str) -> Option<Ticket> {
        let ok = (MIN_HEX..=MAX_HEX).contains(&s.len())
            && s.len() % 2 == 0
            && s.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Ticket(s.to_ascii_lowercase()))
    }

    /// The wire text (for the server's checks).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket(<{} hex digits redacted>)", self.0.len())
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_within_bounds_and_never_debug_prints_it() {
        let text = "ab".repeat(37);
        let t = Ticket::parse(&text).unwrap();
        assert_eq!(t.to_string(), text);
        assert_eq!(Ticket::parse(&text.to_ascii_uppercase()), Some(t.clone()));
        let shown = format!("{t:?} {:?}", Some(&t));
        assert!(!shown.contains("abab"), "{shown}");
        for bad in [
            "",
            "abc",
            &"ab".repeat(15),
            &"ab".repeat(129),
            &"zz".repeat(37),
        ] {
            assert_eq!(Ticket::parse(bad), None, "{bad:?}");
        }
    }
}
