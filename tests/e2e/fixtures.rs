//! The transcripts in `fixtures/` without time jumps, replayed against the real
//! server binary (the engine tests replay all of them on a virtual clock).

use std::collections::HashMap;

use peerline::transcript::{self, Step};

use crate::harness::{Line, Server};

fn replay(name: &str) {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let steps = transcript::parse(&text).unwrap();
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Wait(_))),
        "{name} has time jumps"
    );
    let server = Server::start(&[]);
    let mut conns: HashMap<String, Line> = HashMap::new();
    for (i, step) in steps.into_iter().enumerate() {
        let ctx = format!("{name} step {}", i + 1);
        match step {
            Step::Connect(n) => {
                conns.insert(n, server.connect());
            }
            Step::Send(n, line) => conns.get_mut(&n).unwrap().send(&line),
            Step::Expect(n, pattern) => {
                let c = conns.get_mut(&n).unwrap();
                let got = c.next(&pattern);
                assert!(
                    transcript::matches(&pattern, &got),
                    "{ctx}: wanted {pattern:?}, got {got:?}\n{}",
                    c.dump()
                );
            }
            Step::Closed(n) => {
                let c = conns.get_mut(&n).unwrap();
                let rest = c.expect_closed();
                assert!(rest.is_empty(), "{ctx}: lines before close: {rest:?}");
            }
            Step::Wait(_) => unreachable!(),
        }
    }
}

#[test]
fn transcript_accounts() {
    replay("accounts.transcript");
}

#[test]
fn transcript_replaced() {
    replay("replaced.transcript");
}

#[test]
fn transcript_introductions() {
    replay("introductions.transcript");
}

#[test]
fn transcript_broadcast_tcp() {
    replay("broadcast-tcp.transcript");
}
