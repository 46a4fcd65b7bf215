//! What the engine shows, as data ([`Shown`]), and how it becomes text on
//! stdout: plain lines for pipes and files, coloured lines with a bell for a
//! terminal, or one JSON object per line for scripts (`--json`). Pure.
//!
//! Invariants:
//! - Every plain or terminal line starts with a `[HH:MM:SS]` stamp; a date
//!   line (`--- 2026-11-30 ---`) comes before the first line of a new day.
//! - Colour escapes and the bell are only ever produced when [`Style::terminal`]
//!   is set, and colours never when `NO_COLOR` was set ([`Style::color`]).
//! - A JSON line is one complete object with at least `type`, `time` and
//!   `text`; network text reaches it unsanitized but JSON-escaped (it cannot
//!   break the line), and reaches plain text only through `display::sanitize`.

use std::fmt;

use super::display::{self, Origin};

/// What kind of line, for colour and for the JSON `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Tagged with its origin (`[client]`, `[server]`, `[event]`, `[peer]`).
    Note(Origin),
    /// A command the server refused (`[server] … failed`).
    Refused,
    /// A chat message from a peer.
    Message,
    /// Our own chat message, echoed.
    Own,
    Broadcast,
    /// A watched user came online or went offline.
    Presence,
}

/// One line for the user, before formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub kind: Kind,
    /// When it was shown (unix seconds).
    pub at: u64,
    /// For a broadcast: when it was made, which is the time shown.
    pub made: Option<u64>,
    /// The peer or user it is from (messages, broadcasts, presence) or to (own).
    pub who: Option<String>,
    pub text: String,
    /// Broadcast id.
    pub id: Option<u64>,
    /// Worth a bell: an incoming request or message.
    pub bell: bool,
}

impl Shown {
    pub fn note(origin: Origin, at: u64, text: &str) -> Shown {
        Shown {
            kind: Kind::Note(origin),
            at,
            made: None,
            who: None,
            text: text.to_owned(),
            id: None,
            bell: false,
        }
    }

    pub fn of(kind: Kind, at: u64, who: &str, text: &str) -> Shown {
        Shown {
            kind,
            at,
            made: None,
            who: Some(who.to_owned()),
            text: text.to_owned(),
            id: None,
            bell: false,
        }
    }

    pub fn json_type(&self) -> &'static str {
        match self.kind {
            Kind::Note(Origin::Client) => "client",
            Kind::Note(Origin::Server) => "reply",
            Kind::Note(Origin::Event) => "event",
            Kind::Note(Origin::Peer) => "peer",
            Kind::Refused => "error",
            Kind::Message => "message",
            Kind::Own => "sent",
            Kind::Broadcast => "broadcast",
            Kind::Presence => "presence",
        }
    }
}

/// The line without its stamp, as it always read: `[server] …`, `<bob> hi`,
/// `me -> bob: hi`, `[broadcast] <bob> hi`. Network text is sanitized here.
impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = display::sanitize(self.who.as_deref().unwrap_or("?"));
        match self.kind {
            Kind::Note(origin) => f.write_str(&display::tagged(origin, &self.text)),
            Kind::Refused => f.write_str(&display::tagged(Origin::Server, &self.text)),
            Kind::Message => write!(f, "<{who}> {}", display::sanitize(&self.text)),
            Kind::Own => write!(f, "me -> {who}: {}", display::sanitize(&self.text)),
            Kind::Broadcast => write!(f, "[broadcast] <{who}> {}", display::sanitize(&self.text)),
            Kind::Presence => write!(f, "[event] {}", self.text),
        }
    }
}

/// How lines are written out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// stdout is a terminal (bell allowed, colour allowed unless `color` is off).
    pub terminal: bool,
    /// Colour wanted: terminal and no `NO_COLOR`.
    pub color: bool,
    pub bell: bool,
    pub json: bool,
    /// Seconds east of UTC, for stamps and dates.
    pub utc_offset: i64,
}

impl Style {
    /// The style for this environment: `no_color` is whether `NO_COLOR` is
    /// set to anything non-empty (no-color.org).
    pub fn detect(
        terminal: bool,
        no_color: bool,
        no_bell: bool,
        json: bool,
        utc_offset: i64,
    ) -> Style {
        Style {
            terminal: terminal && !json,
            color: terminal && !json && !no_color,
            bell: terminal && !json && !no_bell,
            json,
            utc_offset,
        }
    }
}

/// Formats [`Shown`]s; remembers the day of the last line for date lines.
#[derive(Debug, Default)]
pub struct Renderer {
    pub style: Style,
    last_day: Option<i64>,
}

const RESET: &str = "\x1b[0m";

fn colour(kind: Kind) -> &'static str {
    match kind {
        Kind::Note(Origin::Client) => "\x1b[2m",  // dim
        Kind::Note(Origin::Server) => "\x1b[34m", // blue
        Kind::Note(Origin::Event) => "\x1b[36m",  // cyan
        Kind::Note(Origin::Peer) => "\x1b[33m",   // yellow
        Kind::Refused => "\x1b[31m",              // red
        Kind::Message => "\x1b[1m",               // bold
        Kind::Own => "\x1b[32m",                  // green
        Kind::Broadcast => "\x1b[35m",            // magenta
        Kind::Presence => "\x1b[36m",
    }
}

impl Renderer {
    pub fn new(style: Style) -> Renderer {
        Renderer {
            style,
            last_day: None,
        }
    }

    /// The lines (without `\n`) for one [`Shown`]: maybe a date line, then
    /// the line itself. A bell, when due, ends the last line.
    pub fn render(&mut self, s: &Shown) -> Vec<String> {
        if self.style.json {
            return vec![json_line(s)];
        }
        let mut out = Vec::new();
        let local = s.at as i64 + self.style.utc_offset;
        let day = local.div_euclid(86_400);
        if self.last_day.is_some_and(|d| d != day) {
            out.push(format!("--- {} ---", date(day)));
        }
        self.last_day = Some(day);
        let stamp = display::clock(s.made.unwrap_or(s.at), self.style.utc_offset);
        let body = s.to_string();
        let mut line = if self.style.color {
            format!("[{stamp}] {}{body}{RESET}", colour(s.kind))
        } else {
            format!("[{stamp}] {body}")
        };
        if self.style.bell && s.bell {
            line.push('\x07');
        }
        out.push(line);
        out
    }
}

/// One JSON object: `type`, `time`, `text`, and where they apply `from`, `to`, `id`.
pub fn json_line(s: &Shown) -> String {
    let mut m = serde_json::Map::new();
    m.insert("type".into(), s.json_type().into());
    m.insert("time".into(), s.made.unwrap_or(s.at).into());
    match s.kind {
        Kind::Own => {
            m.insert("to".into(), s.who.clone().into());
        }
        _ if s.who.is_some() => {
            m.insert("from".into(), s.who.clone().into());
        }
        _ => {}
    }
    if let Some(id) = s.id {
        m.insert("id".into(), id.into());
    }
    m.insert("text".into(), s.text.clone().into());
    serde_json::Value::Object(m).to_string()
}

/// `YYYY-MM-DD` for a day number since 1970-01-01 (Howard Hinnant's
/// civil-from-days algorithm).
pub fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

    fn plain() -> Renderer {
        Renderer::new(Style::detect(false, false, false, false, 0))
    }

    #[test]
    fn plain_lines_are_stamped_and_have_no_escapes() {
        let mut r = plain();
        let msg = Shown {
            bell: true,
            ..Shown::of(Kind::Message, T, "bob", "hi \x1b[2J")
        };
        assert_eq!(r.render(&msg), vec!["[22:13:20] <bob> hi \u{FFFD}[2J"]);
        let note = Shown::note(Origin::Server, T, "ok");
        assert_eq!(r.render(&note), vec!["[22:13:20] [server] ok"]);
    }

    #[test]
    fn a_new_day_gets_a_date_line() {
        let mut r = plain();
        r.render(&Shown::note(Origin::Client, T, "a"));
        let next_day = r.render(&Shown::note(Origin::Client, T + 7200, "b"));
        assert_eq!(
            next_day,
            vec!["--- 2023-11-15 ---", "[00:13:20] [client] b"]
        );
        assert_eq!(
            r.render(&Shown::note(Origin::Client, T + 7300, "c")).len(),
            1
        );
    }

    #[test]
    fn colour_and_bell_only_on_a_terminal_and_never_with_no_color() {
        let msg = Shown {
            bell: true,
            ..Shown::of(Kind::Message, T, "bob", "hi")
        };
        let mut tty = Renderer::new(Style::detect(true, false, false, false, 0));
        let line = tty.render(&msg).remove(0);
        assert!(
            line.contains("\x1b[1m") && line.ends_with('\x07'),
            "{line:?}"
        );
        let mut no_color = Renderer::new(Style::detect(true, true, false, false, 0));
        let line = no_color.render(&msg).remove(0);
        assert!(!line.contains('\x1b') && line.ends_with('\x07'), "{line:?}");
        let mut no_bell = Renderer::new(Style::detect(true, true, true, false, 0));
        assert!(!no_bell.render(&msg)[0].contains('\x07'));
        let mut pipe = plain();
        let line = pipe.render(&msg).remove(0);
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields() {
        let mut r = Renderer::new(Style::detect(true, false, false, true, 0));
        let b = Shown {
            made: Some(T - 5),
            id: Some(7),
            ..Shown::of(Kind::Broadcast, T, "bob", "all \"hands\"\n")
        };
        let line = r.render(&b).remove(0);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "broadcast");
        assert_eq!(v["from"], "bob");
        assert_eq!(v["time"], T - 5);
        assert_eq!(v["id"], 7);
        assert_eq!(v["text"], "all \"hands\"\n");
        assert!(!line.contains('\n'));
        let own = json_line(&Shown::of(Kind::Own, T, "alice", "yo"));
        let v: serde_json::Value = serde_json::from_str(&own).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["to"].as_str()),
            (Some("sent"), Some("alice"))
        );
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_675), "2023-11-14");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(-1), "1969-12-31");
    }
}
