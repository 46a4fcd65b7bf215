//! Plaintext peer-link lines: never panics; what parses prints back to a
//! line that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::LinkLine;

fuzz_target!(|line: &str| {
    if let Ok(l) = LinkLine::parse(line) {
        let again = l.to_string();
        assert_eq!(
            LinkLine::parse(&again).as_ref(),
            Ok(&l),
            "{line:?} → {again:?}"
        );
    }
});
