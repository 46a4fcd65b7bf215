//! The data file loaders (users, broadcasts, deliveries; version 2 and the
//! version 1 CSV they migrate from): never panic; every record read writes
//! back to a line that reads as the same record; a skipped line is reported
//! with a line number inside the file; broadcast ids stay below the next id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::server::accounts::UserIdx;
use peerline::server::records;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let users = records::parse_users(data);
    assert!(users.whole_len <= data.len());
    for s in &users.skipped {
        assert!(s.line >= 1 && s.line <= lines, "{}", s.line);
    }
    for r in &users.records {
        let line = records::format_user(r);
        let again = records::parse_users(format!("{}\n{line}", records::USERS_V2).as_bytes());
        assert_eq!(again.records, vec![r.clone()], "{line:?}");
    }
    let (file, meta) = records::parse_broadcasts(data);
    assert!(meta.whole_len <= data.len());
    for b in &file.records {
        assert!(file.next_id > b.id);
        let line = records::format_broadcast(b);
        let (again, _) =
            records::parse_broadcasts(format!("{}\n{line}", records::BROADCASTS_V2).as_bytes());
        assert_eq!(again.records, vec![b.clone()], "{line:?}");
    }
    let deliveries = records::parse_deliveries(data, |n| Some(UserIdx(n.len() as u32)));
    for d in &deliveries.records {
        let line = records::format_delivery(d);
        let again = records::parse_deliveries(
            format!("{}\n{line}", records::DELIVERIES_V2).as_bytes(),
            |_| None,
        );
        assert_eq!(again.records, vec![d.clone()], "{line:?}");
    }
});
