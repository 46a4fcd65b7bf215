//! Server lines (what the client parses): never panics; what parses prints
//! back to a line that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::ServerLine;

fuzz_target!(|line: &str| {
    if let Some(l) = ServerLine::parse(line) {
        let again = l.wire().to_string();
        assert_eq!(
            ServerLine::parse(&again).as_ref(),
            Some(&l),
            "{line:?} → {again:?}"
        );
    }
});
