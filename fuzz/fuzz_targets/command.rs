//! Client commands: parsing never panics, and what parses prints back to a
//! line that parses to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::Command;

fuzz_target!(|line: &str| {
    if let Ok(cmd) = Command::parse(line) {
        let again = cmd.to_string();
        assert_eq!(
            Command::parse(&again).as_ref(),
            Ok(&cmd),
            "{line:?} → {again:?}"
        );
    }
});
