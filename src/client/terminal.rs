//! Terminal mode, used only when stdin and stdout are both terminals: raw
//! input, a protected input line that incoming lines print above, and the
//! history file. The editing rules are in [`super::lineedit`]; this is the
//! thin layer that touches the terminal and the file.
//!
//! Invariants:
//! - The terminal settings found at start are put back on every way out:
//!   `Drop` (normal exit, errors), the panic hook, and SIGINT/SIGTERM (which
//!   the poll loop turns into a normal exit). Only SIGKILL can leave it raw.
//! - Every line printed while the input line is shown first clears that line
//!   and then redraws it, so typed text is never interleaved with output.
//! - The history file is written 0600 and never receives a hidden (password)
//!   line or a line carrying a password (see `lineedit`).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::lineedit::{Action, Editor, KeyParser, HISTORY_CAP};

/// The settings to restore, reachable from the panic hook.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

fn restore_saved() {
    let saved = SAVED.lock().map(|g| *g).unwrap_or(None);
    if let Some(t) = saved {
        // SAFETY: fd 0 and a termios read from it by tcgetattr.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}

/// True when both stdin and stdout are terminals.
pub fn both_are_terminals() -> bool {
    // SAFETY: isatty only inspects the descriptors.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 && libc::isatty(libc::STDOUT_FILENO) == 1 }
}

/// Columns of the terminal on stdout (80 when unknown).
pub fn width() -> usize {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `$XDG_STATE_HOME/peerline/history`, else `~/.local/state/peerline/history`.
pub fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".local/state"))
        })?;
    Some(base.join("peerline").join("history"))
}

pub fn load_history(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !super::lineedit::carries_password(l))
        .map(str::to_owned)
        .collect();
    let skip = lines.len().saturating_sub(HISTORY_CAP);
    lines[skip..].to_vec()
}

pub fn save_history(path: &Path, lines: &[String]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, path)
}

/// What the terminal's input produced for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    Line(String),
    Interrupt,
    End,
}

/// Raw mode plus the input line.
pub struct Terminal {
    parser: KeyParser,
    pub editor: Editor,
    history_file: Option<PathBuf>,
    /// Text waiting to be written to stdout (the driver flushes it).
    out: String,
}

impl Terminal {
    /// Puts the terminal in raw mode (no echo, no line buffering, no signal
    /// keys: Ctrl-C arrives as a key) and installs the restoring panic hook.
    pub fn enter() -> io::Result<Terminal> {
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked by the caller); t is ours.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        *SAVED.lock().map_err(|_| io::Error::other("poisoned"))? = Some(t);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_saved();
            previous(info);
        }));
        let mut raw = t;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // Output processing stays on: "\n" still moves to column 0.
        // SAFETY: as above.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let history_file = history_path();
        let history = history_file
            .as_deref()
            .map(load_history)
            .unwrap_or_default();
        let mut term = Terminal {
            parser: KeyParser::default(),
            editor: Editor::new("> ", history),
            history_file,
            out: String::new(),
        };
        term.redraw();
        Ok(term)
    }

    /// Bytes typed → lines for the engine; the screen work is queued in
    /// [`Terminal::take_output`]. `complete` lists completion candidates.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        complete: &dyn Fn(&str, bool) -> Vec<String>,
    ) -> Vec<Typed> {
        let mut typed = Vec::new();
        for key in self.parser.feed(bytes) {
            match self.editor.key(key, complete) {
                Action::Edited => self.redraw(),
                Action::Nothing => {}
                Action::Submit(line) => {
                    // Leave the typed line on screen (without the prompt's
                    // secret, if any), then start a fresh input line.
                    let shown = if self.editor.hidden {
                        String::new()
                    } else {
                        line.clone()
                    };
                    self.out
                        .push_str(&format!("\r{}{shown}\x1b[K\n", self.editor.prompt));
                    typed.push(Typed::Line(line));
                    self.redraw();
                }
                Action::Candidates(c) => self.print_above(&c.join("  ")),
                Action::Interrupt => typed.push(Typed::Interrupt),
                Action::Eof => typed.push(Typed::End),
            }
        }
        typed
    }

    /// Prints a complete line above the input line, which is then redrawn.
    pub fn print_above(&mut self, line: &str) {
        self.out.push_str("\r\x1b[K");
        self.out.push_str(line);
        self.out.push('\n');
        self.redraw();
    }

    /// A question from the engine (`username: `, `password: `).
    pub fn set_prompt(&mut self, prompt: &str) {
        self.editor.prompt = prompt.to_owned();
        self.redraw();
    }

    /// Password entry on or off; the prompt goes back to `> ` when it ends.
    pub fn set_hidden(&mut self, hidden: bool) {
        self.editor.hidden = hidden;
        if !hidden {
            self.editor.prompt = "> ".to_owned();
        }
        self.redraw();
    }

    /// After a line is submitted: back to the normal prompt (the engine
    /// sets a question again if it has another).
    pub fn reset_prompt(&mut self) {
        if self.editor.prompt != "> " {
            self.editor.prompt = "> ".to_owned();
            self.redraw();
        }
    }

    fn redraw(&mut self) {
        let (text, col) = self.editor.render(width());
        self.out.push('\r');
        self.out.push_str(&text);
        self.out.push('\r');
        if col > 0 {
            self.out.push_str(&format!("\x1b[{col}C"));
        }
    }

    pub fn take_output(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// Clears the input line and restores the terminal; saves history.
    pub fn leave(&mut self) -> String {
        if let Some(path) = &self.history_file {
            if let Err(e) = save_history(path, self.editor.history()) {
                log::warn!("cannot save history to {}: {e}", path.display());
            }
        }
        self.history_file = None;
        restore_saved();
        let mut out = self.take_output();
        out.push_str("\r\x1b[K");
        out
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore_saved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_file_round_trips_private_and_without_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/peerline/history");
        let lines: Vec<String> = vec!["/list".into(), "/msg bob hi".into()];
        save_history(&path, &lines).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A password line smuggled in by hand is dropped on load.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("/login alice secret\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(load_history(&path), lines);
        let many: Vec<String> = (0..HISTORY_CAP + 10).map(|i| format!("l{i}")).collect();
        save_history(&path, &many).unwrap();
        let loaded = load_history(&path);
        assert_eq!(loaded.len(), HISTORY_CAP);
        assert_eq!(loaded[0], "l10");
    }
}
