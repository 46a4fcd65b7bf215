//! The terminal's input line, as pure code: bytes from a raw-mode terminal
//! become [`Key`]s ([`KeyParser`]), keys edit a buffer with a cursor
//! ([`Editor`]), and the screen is described as text to write
//! ([`Editor::render`]). No I/O: the driver reads bytes and writes what this
//! returns, so unit tests drive it key by key.
//!
//! Invariants:
//! - The cursor is always a char index within `0..=buf.len()`.
//! - The rendered input line never exceeds the terminal width: a long line
//!   scrolls horizontally so the cursor stays visible; widths are terminal
//!   columns (`unicode-width`: CJK counts 2, combining marks 0), never bytes
//!   or chars.
//! - A hidden (password) line is never rendered, never kept in history, and
//!   its buffer is cleared as soon as it is submitted.
//! - Lines carrying a password (`/login u p`, `/signup …`, `/passwd …`) are
//!   never added to history.
//! - The parser keeps at most one unfinished escape sequence or UTF-8
//!   character (a few bytes); anything it does not know becomes
//!   [`Key::Unknown`], never a panic or a stray character.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Most history lines kept (in memory and in the file).
pub const HISTORY_CAP: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    Tab,
    /// Ctrl-W: delete the word before the cursor.
    DeleteWord,
    /// Ctrl-U: delete everything before the cursor.
    DeleteToStart,
    /// Ctrl-K: delete from the cursor to the end.
    DeleteToEnd,
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D.
    Eof,
    /// Ctrl-L: redraw.
    Redraw,
    Unknown,
}

/// Raw terminal bytes → keys, across reads (a sequence may be split).
#[derive(Debug, Default)]
pub struct KeyParser {
    pending: Vec<u8>,
}

impl KeyParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Key> {
        self.pending.extend_from_slice(bytes);
        let mut keys = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            match parse_one(&self.pending[i..]) {
                Parsed::Key(k, n) => {
                    keys.push(k);
                    i += n;
                }
                Parsed::Incomplete => break,
            }
        }
        self.pending.drain(..i);
        keys
    }
}

enum Parsed {
    Key(Key, usize),
    Incomplete,
}

fn parse_one(b: &[u8]) -> Parsed {
    let k = |key, n| Parsed::Key(key, n);
    match b[0] {
        b'\r' | b'\n' => k(Key::Enter, 1),
        0x7f | 0x08 => k(Key::Backspace, 1),
        b'\t' => k(Key::Tab, 1),
        0x01 => k(Key::Home, 1),
        0x05 => k(Key::End, 1),
        0x02 => k(Key::Left, 1),
        0x06 => k(Key::Right, 1),
        0x10 => k(Key::Up, 1),
        0x0e => k(Key::Down, 1),
        0x17 => k(Key::DeleteWord, 1),
        0x15 => k(Key::DeleteToStart, 1),
        0x0b => k(Key::DeleteToEnd, 1),
        0x03 => k(Key::Interrupt, 1),
        0x04 => k(Key::Eof, 1),
        0x0c => k(Key::Redraw, 1),
        0x1b => parse_escape(b),
        c if c < 0x20 => k(Key::Unknown, 1),
        c if c < 0x80 => k(Key::Char(c as char), 1),
        c => {
            let len = match c {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => return k(Key::Unknown, 1),
            };
            if b.len() < len {
                return Parsed::Incomplete;
            }
            match std::str::from_utf8(&b[..len])
                .ok()
                .and_then(|s| s.chars().next())
            {
                Some(ch) => k(Key::Char(ch), len),
                None => k(Key::Unknown, 1),
            }
        }
    }
}

/// `ESC [ …` (CSI) and `ESC O …` (SS3) sequences for arrows, home/end, delete.
fn parse_escape(b: &[u8]) -> Parsed {
    let k = |key, n| Parsed::Key(key, n);
    let Some(&second) = b.get(1) else {
        return Parsed::Incomplete;
    };
    match second {
        b'[' | b'O' => {}
        // Alt-something or a lone ESC followed by a key: drop the ESC.
        _ => return k(Key::Unknown, 1),
    }
    // Parameters, then one final byte in 0x40..=0x7e.
    let mut j = 2;
    while let Some(&c) = b.get(j) {
        if (0x40..=0x7e).contains(&c) {
            let params = &b[2..j];
            let key = match (c, params) {
                (b'A', _) => Key::Up,
                (b'B', _) => Key::Down,
                (b'C', _) => Key::Right,
                (b'D', _) => Key::Left,
                (b'H', _) => Key::Home,
                (b'F', _) => Key::End,
                (b'~', b"1" | b"7") => Key::Home,
                (b'~', b"4" | b"8") => Key::End,
                (b'~', b"3") => Key::Delete,
                _ => Key::Unknown,
            };
            return k(key, j + 1);
        }
        if j > 16 {
            return k(Key::Unknown, j);
        }
        j += 1;
    }
    Parsed::Incomplete
}

/// What a key asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Only the input line changed (redraw it).
    Edited,
    /// Enter: this line goes to the engine.
    Submit(String),
    /// Tab found several candidates: show them above the input line.
    Candidates(Vec<String>),
    Interrupt,
    /// Ctrl-D on an empty line: end of input.
    Eof,
    Nothing,
}

#[derive(Debug, Default)]
pub struct Editor {
    buf: Vec<char>,
    cursor: usize,
    /// Shown before the buffer (`> `, or a question like `password: `).
    pub prompt: String,
    /// Password entry: nothing echoed, nothing remembered.
    pub hidden: bool,
    history: Vec<String>,
    /// Position while browsing history; `None` when editing a new line.
    browsing: Option<usize>,
    /// The new line being written when browsing started.
    draft: Vec<char>,
}

/// True for lines whose words include a password (by the command table).
pub use super::input::carries_password;

impl Editor {
    pub fn new(prompt: &str, history: Vec<String>) -> Editor {
        Editor {
            prompt: prompt.to_owned(),
            history,
            ..Editor::default()
        }
    }

    pub fn line(&self) -> String {
        self.buf.iter().collect()
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// Handles one key. `complete` maps the word being completed (and
    /// whether it is the first word of a `/command`) to candidates.
    pub fn key(&mut self, key: Key, complete: &dyn Fn(&str, bool) -> Vec<String>) -> Action {
        match key {
            Key::Char(c) => {
                self.buf.insert(self.cursor, c);
                self.cursor += 1;
            }
            Key::Enter => return self.submit(),
            Key::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.buf.remove(self.cursor);
            }
            Key::Delete if self.cursor < self.buf.len() => {
                self.buf.remove(self.cursor);
            }
            Key::Left if self.cursor > 0 => self.cursor -= 1,
            Key::Right if self.cursor < self.buf.len() => self.cursor += 1,
            Key::Home => self.cursor = 0,
            Key::End => self.cursor = self.buf.len(),
            Key::DeleteWord => {
                let mut start = self.cursor;
                while start > 0 && self.buf[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && self.buf[start - 1] != ' ' {
                    start -= 1;
                }
                self.buf.drain(start..self.cursor);
                self.cursor = start;
            }
            Key::DeleteToStart => {
                self.buf.drain(..self.cursor);
                self.cursor = 0;
            }
            Key::DeleteToEnd => self.buf.truncate(self.cursor),
            Key::Up if !self.hidden => self.history_step(true),
            Key::Down if !self.hidden => self.history_step(false),
            Key::Tab if !self.hidden => return self.complete(complete),
            Key::Interrupt => return Action::Interrupt,
            Key::Eof if self.buf.is_empty() => return Action::Eof,
            Key::Eof => {
                if self.cursor < self.buf.len() {
                    self.buf.remove(self.cursor);
                }
            }
            Key::Redraw => {}
            _ => return Action::Nothing,
        }
        Action::Edited
    }

    fn submit(&mut self) -> Action {
        let line: String = self.buf.iter().collect();
        self.buf.clear();
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
        if !self.hidden && !line.trim().is_empty() && !carries_password(&line) {
            // Completion leaves a trailing space; history keeps the words.
            let kept = line.trim_end().to_owned();
            if self.history.last() != Some(&kept) {
                self.history.push(kept);
            }
            if self.history.len() > HISTORY_CAP {
                let extra = self.history.len() - HISTORY_CAP;
                self.history.drain(..extra);
            }
        }
        Action::Submit(line)
    }

    fn history_step(&mut self, older: bool) {
        let n = self.history.len();
        let next = match (self.browsing, older) {
            (None, true) if n > 0 => {
                self.draft = self.buf.clone();
                Some(n - 1)
            }
            (None, _) => return,
            (Some(0), true) => Some(0),
            (Some(i), true) => Some(i - 1),
            (Some(i), false) if i + 1 < n => Some(i + 1),
            (Some(_), false) => None,
        };
        self.browsing = next;
        self.buf = match next {
            Some(i) => self.history[i].chars().collect(),
            None => std::mem::take(&mut self.draft),
        };
        self.cursor = self.buf.len();
    }

    fn complete(&mut self, complete: &dyn Fn(&str, bool) -> Vec<String>) -> Action {
        let mut start = self.cursor;
        while start > 0 && self.buf[start - 1] != ' ' {
            start -= 1;
        }
        let word: String = self.buf[start..self.cursor].iter().collect();
        let first = self.buf[..start].iter().all(|c| *c == ' ');
        let command = first && word.starts_with('/');
        let mut candidates: Vec<String> = complete(&word, command)
            .into_iter()
            .filter(|c| c.starts_with(&word))
            .collect();
        candidates.sort();
        candidates.dedup();
        match candidates.as_slice() {
            [] => Action::Nothing,
            [one] => {
                let rest: Vec<char> = one[word.len()..].chars().chain([' ']).collect();
                self.insert(&rest);
                Action::Edited
            }
            many => {
                let common = common_prefix(many);
                if common.len() > word.len() {
                    let rest: Vec<char> = common[word.len()..].chars().collect();
                    self.insert(&rest);
                    Action::Edited
                } else {
                    Action::Candidates(candidates)
                }
            }
        }
    }

    fn insert(&mut self, chars: &[char]) {
        for (i, c) in chars.iter().enumerate() {
            self.buf.insert(self.cursor + i, *c);
        }
        self.cursor += chars.len();
    }

    /// The input line for a terminal `width` columns wide: the text to write
    /// after returning to column 0 (it includes clearing the rest of the line)
    /// and the column to leave the cursor at.
    pub fn render(&self, width: usize) -> (String, usize) {
        let width = width.max(8);
        let prompt_w = self.prompt.width();
        if self.hidden {
            return (format!("{}\x1b[K", self.prompt), prompt_w.min(width - 1));
        }
        // Room for the text, keeping the last column free for the cursor.
        let room = width.saturating_sub(prompt_w + 1).max(1);
        let widths: Vec<usize> = self.buf.iter().map(|c| c.width().unwrap_or(0)).collect();
        // Scroll: the first char shown is the leftmost one that keeps the
        // cursor within `room` columns.
        let mut first = 0;
        let upto_cursor = |from: usize| widths[from..self.cursor].iter().sum::<usize>();
        while first < self.cursor && upto_cursor(first) >= room {
            first += 1;
        }
        let mut shown = String::new();
        let mut used = 0;
        for (c, w) in self.buf[first..].iter().zip(&widths[first..]) {
            if used + w > room {
                break;
            }
            shown.push(*c);
            used += w;
        }
        let col = prompt_w + upto_cursor(first);
        (format!("{}{shown}\x1b[K", self.prompt), col)
    }
}

fn common_prefix(words: &[String]) -> String {
    let mut prefix: &str = &words[0];
    for w in &words[1..] {
        let n = prefix
            .char_indices()
            .zip(w.chars())
            .take_while(|((_, a), b)| a == b)
            .count();
        let end = prefix
            .char_indices()
            .nth(n)
            .map_or(prefix.len(), |(i, _)| i);
        prefix = &prefix[..end];
    }
    prefix.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str, _: bool) -> Vec<String> {
        Vec::new()
    }

    fn typed(e: &mut Editor, s: &str) {
        for c in s.chars() {
            e.key(Key::Char(c), &none);
        }
    }

    fn keys(bytes: &[u8]) -> Vec<Key> {
        KeyParser::default().feed(bytes)
    }

    #[test]
    fn parser_knows_the_usual_keys() {
        assert_eq!(
            keys(b"a\x1b[A\x1b[B\x1b[C\x1b[D\x1bOH\x1bOF\x1b[1~\x1b[4~\x1b[3~\x7f\r\t"),
            vec![
                Key::Char('a'),
                Key::Up,
                Key::Down,
                Key::Right,
                Key::Left,
                Key::Home,
                Key::End,
                Key::Home,
                Key::End,
                Key::Delete,
                Key::Backspace,
                Key::Enter,
                Key::Tab
            ]
        );
        assert_eq!(
            keys(b"\x01\x05\x17\x15\x03\x04"),
            vec![
                Key::Home,
                Key::End,
                Key::DeleteWord,
                Key::DeleteToStart,
                Key::Interrupt,
                Key::Eof
            ]
        );
        assert_eq!(
            keys("é中".as_bytes()),
            vec![Key::Char('é'), Key::Char('中')]
        );
        assert_eq!(keys(b"\x1b[1;5C"), vec![Key::Right]);
        assert_eq!(keys(b"\x1b[99~x"), vec![Key::Unknown, Key::Char('x')]);
        assert_eq!(keys(b"\xff"), vec![Key::Unknown]);
    }

    #[test]
    fn parser_handles_sequences_split_at_every_byte() {
        let input = "x\x1b[A中\x1b[3~é\r".as_bytes();
        let whole = keys(input);
        for split in 0..=input.len() {
            let mut p = KeyParser::default();
            let mut got = p.feed(&input[..split]);
            got.extend(p.feed(&input[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
        let mut p = KeyParser::default();
        let got: Vec<Key> = input.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn editing_keys() {
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, "hello world");
        e.key(Key::DeleteWord, &none);
        assert_eq!(e.line(), "hello ");
        e.key(Key::Home, &none);
        typed(&mut e, "> ");
        assert_eq!(e.line(), "> hello ");
        e.key(Key::End, &none);
        e.key(Key::Backspace, &none);
        e.key(Key::Left, &none);
        e.key(Key::Left, &none);
        e.key(Key::Delete, &none);
        assert_eq!(e.line(), "> helo");
        assert_eq!(e.cursor(), 5);
        e.key(Key::DeleteToStart, &none);
        assert_eq!((e.line().as_str(), e.cursor()), ("o", 0));
        e.key(Key::Right, &none);
        e.key(Key::Right, &none);
        assert_eq!(e.cursor(), 1);
        assert_eq!(e.key(Key::Enter, &none), Action::Submit("o".into()));
        assert_eq!((e.line().as_str(), e.cursor()), ("", 0));
        assert_eq!(e.key(Key::Eof, &none), Action::Eof);
        assert_eq!(e.key(Key::Interrupt, &none), Action::Interrupt);
    }

    #[test]
    fn history_browses_and_keeps_the_draft_but_never_passwords() {
        let mut e = Editor::new("> ", vec!["/list".into()]);
        typed(&mut e, "/msg bob hi");
        e.key(Key::Enter, &none);
        typed(&mut e, "/login alice secret");
        e.key(Key::Enter, &none);
        e.hidden = true;
        typed(&mut e, "hunter2");
        assert_eq!(e.key(Key::Enter, &none), Action::Submit("hunter2".into()));
        e.hidden = false;
        assert_eq!(e.history(), &["/list".to_owned(), "/msg bob hi".to_owned()]);
        typed(&mut e, "draft");
        e.key(Key::Up, &none);
        assert_eq!(e.line(), "/msg bob hi");
        e.key(Key::Up, &none);
        assert_eq!(e.line(), "/list");
        e.key(Key::Up, &none);
        assert_eq!(e.line(), "/list");
        e.key(Key::Down, &none);
        e.key(Key::Down, &none);
        assert_eq!(e.line(), "draft");
        assert!(carries_password("/signup a b b"));
        assert!(carries_password("/PASSWD a b b"));
        assert!(!carries_password("/login"));
    }

    #[test]
    fn tab_completes_commands_and_users() {
        let complete = |word: &str, command: bool| -> Vec<String> {
            if command {
                vec!["/msg".into(), "/list".into(), "/login".into()]
            } else {
                let _ = word;
                vec!["bob".into(), "bobby".into(), "carol".into()]
            }
        };
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, "/m");
        assert_eq!(e.key(Key::Tab, &complete), Action::Edited);
        assert_eq!(e.line(), "/msg ");
        typed(&mut e, "c");
        e.key(Key::Tab, &complete);
        assert_eq!(e.line(), "/msg carol ");
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, "/msg b");
        e.key(Key::Tab, &complete);
        assert_eq!(e.line(), "/msg bob", "common prefix first");
        assert_eq!(
            e.key(Key::Tab, &complete),
            Action::Candidates(vec!["bob".into(), "bobby".into()])
        );
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, "/l");
        assert_eq!(
            e.key(Key::Tab, &complete),
            Action::Candidates(vec!["/list".into(), "/login".into()])
        );
        // Completion in the middle of the line inserts at the cursor.
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, "/msg  hi");
        for _ in 0..3 {
            e.key(Key::Left, &none);
        }
        typed(&mut e, "ca");
        e.key(Key::Tab, &complete);
        assert_eq!(e.line(), "/msg carol  hi");
    }

    #[test]
    fn render_measures_columns_and_scrolls() {
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, "中文e\u{301}");
        // Two wide chars (4 columns), e + combining acute (1 column).
        assert_eq!(e.render(80), ("> 中文e\u{301}\x1b[K".to_owned(), 7));
        e.key(Key::Home, &none);
        e.key(Key::Right, &none);
        assert_eq!(e.render(80).1, 4);
        // A line longer than the terminal scrolls to keep the cursor in view.
        let mut e = Editor::new("> ", vec![]);
        typed(&mut e, &"x".repeat(100));
        let (text, col) = e.render(20);
        assert!(col < 20, "{col}");
        assert!(text.width() <= 20 + "\x1b[K".len(), "{text}");
        e.key(Key::Home, &none);
        let (text, col) = e.render(20);
        assert_eq!(col, 2);
        assert!(text.starts_with("> xxx"));
        // Hidden entry shows the prompt only.
        let mut e = Editor::new("password: ", vec![]);
        e.hidden = true;
        typed(&mut e, "secret");
        assert_eq!(e.render(80), ("password: \x1b[K".to_owned(), 10));
    }
}
