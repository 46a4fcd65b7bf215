//! Readable protocol transcripts (`fixtures/*.transcript`), replayed both
//! against the engine on a virtual clock and against the real binary.
//!
//! ```text
//! # a comment
//! connect a            open connection `a` (the WELCOME is consumed)
//! a> LOGIN alice pw    `a` sends a line
//! a< OK LOGIN alice *  `a` must receive this line next (`*` ends a prefix match,
//!                      `<n>` stands for any number: a clock reading)
//! wait 30m             advance the clock (engine replays only)
//! a closed             `a` must have been closed by the server
//! ```
//!
//! Tokens are written out, exactly: the engine replays a transcript with a
//! seeded generator, so its tokens are the transcript's (a changed draw
//! order or a token from the wrong place fails). The real binary draws from
//! the OS; replayed there, a transcript's token stands for the token the
//! server gave in its place, consistently: the same token for the same one
//! everywhere, different ones for different ones ([`TokenNames`]), so the
//! binary is still held to *which* token goes where.
//!
//! Test code, not library code: compiled into the engine tests
//! (`src/server/tests.rs`) and the e2e binary (`tests/e2e/fixtures.rs`) by
//! `#[path]`, so it is no part of the library's public surface. Each of the
//! two uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

/// One step of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Connect(String),
    Send(String, String),
    Expect(String, String),
    Wait(Duration),
    Closed(String),
}

/// Parses a transcript; the error names the line.
pub fn parse(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: cannot read {line:?}", i + 1);
        let step = if let Some(name) = line.strip_prefix("connect ") {
            Step::Connect(name.trim().to_owned())
        } else if let Some(d) = line.strip_prefix("wait ") {
            Step::Wait(
                peerline::duration::parse_duration(d)
                    .map_err(|e| format!("line {}: {e}", i + 1))?,
            )
        } else if let Some(name) = line.strip_suffix(" closed") {
            Step::Closed(name.to_owned())
        } else {
            // `name> line` or `name< line`: the marker ends the first word.
            let (head, rest) = line.split_once(' ').ok_or_else(bad)?;
            if let Some(name) = head.strip_suffix('>') {
                Step::Send(name.to_owned(), rest.to_owned())
            } else if let Some(name) = head.strip_suffix('<') {
                Step::Expect(name.to_owned(), rest.to_owned())
            } else {
                return Err(bad());
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// Something a transcript can be played against: the engine on a virtual
/// clock, or the real binary over loopback.
pub trait Player {
    fn connect(&mut self, name: &str);
    fn send(&mut self, name: &str, line: &str);
    /// The next line `name` receives (each player bounds its own wait).
    fn next_line(&mut self, name: &str) -> String;
    /// Panics unless the server closed `name` with nothing more sent.
    fn assert_closed(&mut self, name: &str, ctx: &str);
    fn wait(&mut self, d: Duration);
    /// True if the player's tokens are the transcript's (the engine with its
    /// seeded generator); false if they are its own (the real binary), and
    /// a transcript's token names one of them ([`TokenNames`]).
    fn exact_tokens(&self) -> bool;
}

/// The real server's token for each token a transcript names: a bijection,
/// built as lines are matched.
#[derive(Debug, Default, Clone)]
pub struct TokenNames {
    theirs: HashMap<String, String>,
    ours: HashMap<String, String>,
}

impl TokenNames {
    /// Binds `ours` (the transcript's) to `theirs` (the server's); false if
    /// either is bound to another already.
    fn bind(&mut self, ours: &str, theirs: &str) -> bool {
        match (self.theirs.get(ours), self.ours.get(theirs)) {
            (None, None) => {
                self.theirs.insert(ours.to_owned(), theirs.to_owned());
                self.ours.insert(theirs.to_owned(), ours.to_owned());
                true
            }
            (Some(t), Some(o)) => t == theirs && o == ours,
            _ => false,
        }
    }
}

/// Plays `steps` against `player`, panicking at the first mismatch with `ctx`.
pub fn replay(steps: &[Step], player: &mut impl Player, ctx: &str) {
    let mut names = (!player.exact_tokens()).then(TokenNames::default);
    for (i, step) in steps.iter().enumerate() {
        let here = format!("{ctx} step {}", i + 1);
        match step {
            Step::Connect(n) => player.connect(n),
            Step::Send(n, line) => player.send(n, line),
            Step::Expect(n, pattern) => {
                let got = player.next_line(n);
                assert!(
                    matches_renaming(pattern, &got, names.as_mut()),
                    "{here}: {n} wanted {pattern:?}, got {got:?} (tokens named so far: {names:?})"
                );
            }
            Step::Closed(n) => player.assert_closed(n, &here),
            Step::Wait(d) => player.wait(*d),
        }
    }
}

/// Every `*.transcript` in `dir`, parsed, sorted by name.
pub fn load_dir(dir: &std::path::Path) -> Vec<(String, Vec<Step>)> {
    let mut out: Vec<(String, Vec<Step>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "transcript"))
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let steps = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), steps)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether `actual` fits `pattern` (see the module docs for the wildcards),
/// tokens exactly.
pub fn matches(pattern: &str, actual: &str) -> bool {
    matches_renaming(pattern, actual, None)
}

/// Like [`matches`]; with `names`, a token in `pattern` matches the token in
/// `actual` it is bound to, or binds to it if neither is bound yet (bindings
/// are kept only if the whole line matches).
pub fn matches_renaming(pattern: &str, actual: &str, names: Option<&mut TokenNames>) -> bool {
    let (pattern, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p.trim_end(), true),
        None => (pattern, false),
    };
    let p: Vec<&str> = pattern.split(' ').collect();
    let a: Vec<&str> = actual.split(' ').collect();
    if a.len() < p.len() || (!prefix && a.len() != p.len()) {
        return false;
    }
    let is_token = peerline::proto::names::is_valid_token;
    let Some(names) = names else {
        return p.iter().zip(&a).all(|(p, a)| word_matches(p, a));
    };
    let mut bound = names.clone();
    let all = p.iter().zip(&a).all(|(p, a)| {
        if is_token(p) {
            is_token(a) && bound.bind(p, a)
        } else {
            word_matches(p, a)
        }
    });
    if all {
        *names = bound;
    }
    all
}

fn word_matches(p: &str, a: &str) -> bool {
    match p.strip_suffix("<n>") {
        // `<n>` may end a word: `expires=<n>`.
        Some(head) => a
            .strip_prefix(head)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => p == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_step() {
        let t = "# c\nconnect a\na> PING\na< OK PING\nwait 2m\na closed\n";
        assert_eq!(
            parse(t).unwrap(),
            vec![
                Step::Connect("a".into()),
                Step::Send("a".into(), "PING".into()),
                Step::Expect("a".into(), "OK PING".into()),
                Step::Wait(Duration::from_secs(120)),
                Step::Closed("a".into()),
            ]
        );
        assert!(parse("gibberish").is_err());
        assert_eq!(
            parse("b< X <n> y").unwrap(),
            vec![Step::Expect("b".into(), "X <n> y".into())]
        );
    }

    #[test]
    fn tokens_match_exactly_or_by_a_consistent_renaming() {
        let (t1, t2, t3) = ("ab".repeat(16), "cd".repeat(16), "ef".repeat(16));
        let line = |t: &str| format!("OK LOGIN alice {t}");
        // Exact (the seeded engine): only the very token.
        assert!(matches(&line(&t1), &line(&t1)));
        assert!(!matches(&line(&t1), &line(&t2)));
        assert!(!matches("OK LOGIN alice <token>", &line(&t1)));
        // Renamed (the real binary): t1 stands for whatever came first…
        let mut names = TokenNames::default();
        assert!(matches_renaming(&line(&t1), &line(&t3), Some(&mut names)));
        assert!(!matches_renaming(
            &line(&t1),
            "OK LOGIN alice xyz",
            Some(&mut names)
        ));
        // …and for nothing else afterwards, and nothing else stands for it.
        assert!(!matches_renaming(&line(&t1), &line(&t2), Some(&mut names)));
        assert!(!matches_renaming(&line(&t2), &line(&t3), Some(&mut names)));
        assert!(matches_renaming(&line(&t2), &line(&t1), Some(&mut names)));
        assert!(matches_renaming(&line(&t1), &line(&t3), Some(&mut names)));
        // A line that fails binds nothing.
        let mut fresh = TokenNames::default();
        assert!(!matches_renaming(
            &format!("X {t1} y"),
            &format!("X {t2} z"),
            Some(&mut fresh)
        ));
        assert!(matches_renaming(
            &format!("X {t3}"),
            &format!("X {t2}"),
            Some(&mut fresh)
        ));
    }

    #[test]
    fn wildcards() {
        assert!(matches(
            "ERR bad-credentials *",
            "ERR bad-credentials wrong username or password"
        ));
        assert!(!matches("OK PING", "OK PING extra"));
        assert!(matches(
            "OK BROADCAST 1 expires=<n>",
            "OK BROADCAST 1 expires=17"
        ));
        assert!(!matches(
            "OK BROADCAST 1 expires=<n>",
            "OK BROADCAST 1 expires="
        ));
        assert!(!matches("a <n>", "a 1x"));
    }
}
