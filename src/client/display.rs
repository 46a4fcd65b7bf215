//! Everything the user sees passes through here: each line is tagged with
//! where it came from, text that arrived over the network is sanitized, clock
//! stamps are formatted, and small tables are laid out. Pure functions.

/// Where a printed line came from. Every line the client prints starts with
/// one of these tags (or a clock stamp for chat text), so a reader always
/// knows whether the server, a peer or the client itself is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client itself: hints, local errors, connection state.
    Client,
    /// A reply to a command the user sent.
    Server,
    /// An unsolicited `EVENT` from the server.
    Event,
    /// Direct-link state (a link went up, down, was refused).
    Peer,
}

impl Origin {
    fn label(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Server => "server",
            Origin::Event => "event",
            Origin::Peer => "peer",
        }
    }
}

/// One printed line: `[origin] text`.
pub fn tagged(origin: Origin, text: &str) -> String {
    format!("[{}] {}", origin.label(), text)
}

/// A chat line received on a direct link: `[HH:MM:SS] <alice> text`.
pub fn peer_message(stamp: &str, from: &str, text: &str) -> String {
    format!("[{stamp}] <{}> {}", sanitize(from), sanitize(text))
}

/// Our own chat line, echoed so the conversation reads in order. Shaped
/// differently from a received one (`me -> bob:`) so it is never mistaken for it.
pub fn own_message(stamp: &str, to: &str, text: &str) -> String {
    format!("[{stamp}] me -> {to}: {}", sanitize(text))
}

/// A broadcast, stamped with the time it was made (not received).
pub fn broadcast(stamp: &str, from: &str, text: &str) -> String {
    format!(
        "[{stamp}] [broadcast] <{}> {}",
        sanitize(from),
        sanitize(text)
    )
}

/// Makes untrusted text safe to print on a terminal: control characters
/// (ESC sequences, carriage returns, backspaces…) and bidirectional overrides
/// become U+FFFD, so a peer can neither move the cursor nor disguise a line.
/// Tabs become a space.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() || is_bidi_control(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `HH:MM:SS` for a unix time, shifted by the local UTC offset in seconds.
pub fn clock(unix: u64, utc_offset: i64) -> String {
    let secs = (unix as i64 + utc_offset).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Lays out rows under a header with columns padded to their widest cell.
/// Cells must already be sanitized.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat(' ').take(w - cell.chars().count()));
        }
        line.trim_end().to_owned()
    };
    let mut out = vec![render(&mut header.iter().copied())];
    out.extend(
        rows.iter()
            .map(|r| render(&mut r.iter().map(String::as_str))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_terminal_escapes() {
        assert_eq!(
            sanitize("hi\x1b[2J\rthere\x07"),
            "hi\u{FFFD}[2J\u{FFFD}there\u{FFFD}"
        );
        assert_eq!(sanitize("a\tb"), "a b");
        assert_eq!(sanitize("evil\u{202E}txt.exe"), "evil\u{FFFD}txt.exe");
        assert_eq!(sanitize("héllo ✓"), "héllo ✓");
        // C1 controls (8-bit CSI) are control characters too.
        assert_eq!(sanitize("x\u{9b}31m"), "x\u{FFFD}31m");
    }

    #[test]
    fn messages_are_sanitized_and_name_the_sender() {
        assert_eq!(
            peer_message("12:00:00", "alice", "hi \x1b]0;pwned\x07"),
            "[12:00:00] <alice> hi \u{FFFD}]0;pwned\u{FFFD}"
        );
        assert_eq!(
            broadcast("01:02:03", "bob", "all\rhands"),
            "[01:02:03] [broadcast] <bob> all\u{FFFD}hands"
        );
    }

    #[test]
    fn clock_wraps_days_and_applies_offset() {
        assert_eq!(clock(0, 0), "00:00:00");
        assert_eq!(clock(86_400 + 3_661, 0), "01:01:01");
        assert_eq!(clock(3_600, -7_200), "23:00:00");
        assert_eq!(clock(1_700_000_000, 0), "22:13:20");
    }

    #[test]
    fn table_pads_columns() {
        let rows = vec![
            vec!["alice".to_owned(), "127.0.0.1".to_owned()],
            vec!["bo".to_owned(), "::1".to_owned()],
        ];
        assert_eq!(
            table(&["USER", "IP"], &rows),
            vec!["USER   IP", "alice  127.0.0.1", "bo     ::1"]
        );
    }
}
