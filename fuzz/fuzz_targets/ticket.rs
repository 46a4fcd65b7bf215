//! Resumption tickets: the wire type (`proto::Ticket`) and the server's
//! checks (`server::resume`). Any text never panics; the wire type round
//! trips; no text but the one issued redeems, and it redeems once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::Ticket;
use peerline::server::resume::{self, Binding, ResumeKey, Tickets};

const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|text: &str| {
    if let Some(t) = Ticket::parse(text) {
        assert_eq!(Ticket::parse(&t.to_string()).as_ref(), Some(&t));
        assert!(t.expose().eq_ignore_ascii_case(text));
    }
    let _ = resume::peek(text);
    let mut tickets = Tickets::new(ResumeKey::from_bytes([3; resume::KEY_LEN]));
    let binding = Binding::of("alice", 1, 1_700_000_000, b"salt", b"hash");
    let issued = tickets.issue(NOW_MS, 1, NOW_MS / 1000 + 3600, &binding);
    // The fuzzer's text, and the issued ticket with the text written over
    // its start: only the issued ticket itself (in any letter case) redeems.
    let mut altered = issued.clone().into_bytes();
    for (a, b) in altered.iter_mut().zip(text.bytes()) {
        *a = b;
    }
    let altered = String::from_utf8(altered).unwrap_or_default();
    for candidate in [text, &altered] {
        let lower = candidate.to_ascii_lowercase();
        let res = tickets.redeem(NOW_MS, candidate, 1, &binding);
        if lower == issued {
            assert!(res.is_ok(), "{res:?}");
            let again = tickets.redeem(NOW_MS, candidate, 1, &binding);
            assert_eq!(again, Err(resume::Refusal::Used));
            return;
        }
        assert!(res.is_err(), "{candidate:?} redeemed");
    }
});
