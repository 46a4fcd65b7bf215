//! The transcripts in `fixtures/` without time jumps, replayed against the real
//! server binary (the engine tests replay all of them on a virtual clock).

use std::collections::HashMap;
use std::time::Duration;

use crate::transcript::{self, Player, Step};

use crate::harness::{Line, Server};

/// The real server as a transcript player.
struct BinaryPlayer<'a> {
    server: &'a Server,
    conns: HashMap<String, Line>,
}

impl Player for BinaryPlayer<'_> {
    fn connect(&mut self, name: &str) {
        self.conns.insert(name.to_owned(), self.server.connect());
    }
    fn send(&mut self, name: &str, line: &str) {
        self.conns.get_mut(name).unwrap().send(line);
    }
    fn next_line(&mut self, name: &str) -> String {
        self.conns.get_mut(name).unwrap().next("a transcript line")
    }
    fn assert_closed(&mut self, name: &str, ctx: &str) {
        let rest = self.conns.get_mut(name).unwrap().expect_closed();
        assert!(rest.is_empty(), "{ctx}: lines before close: {rest:?}");
    }
    fn wait(&mut self, _: Duration) {
        unreachable!("transcripts with time jumps are not replayed against the binary");
    }
    fn exact_tokens(&self) -> bool {
        false // the binary's come from the OS: renamed consistently
    }
}

#[test]
fn fixture_transcripts_without_time_jumps_replay_on_the_binary() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    let mut played = 0;
    for (name, steps) in transcript::load_dir(dir) {
        if steps.iter().any(|s| matches!(s, Step::Wait(_))) {
            continue;
        }
        let server = Server::start(&[]);
        let mut player = BinaryPlayer {
            server: &server,
            conns: HashMap::new(),
        };
        transcript::replay(&steps, &mut player, &name);
        played += 1;
    }
    assert!(played >= 4, "only {played} transcripts replayed");
}
