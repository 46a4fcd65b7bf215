//! Property tests of every parser, in the normal test run (the same checks as
//! the cargo-fuzz targets in `fuzz/`, which explore further with coverage
//! guidance): any input never panics, and what parses prints back to text
//! that parses to the same value. Inputs are built from the protocol's own
//! words, names and numbers mixed with arbitrary text, so most of them get
//! past the verb and exercise the field rules. `PEERLINE_PARSER_CASES` raises
//! the number of cases (1,000 by default).

use proptest::prelude::*;

use super::command::Verb;
use super::{ClientDatagram, Command, Frame, LineReader, LinkLine, ServerDatagram, ServerLine};
use super::{UdpRequest, MAX_LINE};
use crate::server::accounts::UserIdx;
use crate::server::records;

/// The protocol's words besides the command verbs (which come from
/// [`Verb::ALL`], so a new verb is exercised here without being listed).
const OTHER_WORDS: &[&str] = &[
    "OK",
    "ERR",
    "EVENT",
    "CLIENT",
    "WELCOME",
    "REQUEST",
    "PEER",
    "DENIED",
    "REAUTH",
    "CLOSING",
    "CANCELLED",
    "ONLINE",
    "OFFLINE",
    "REGISTER",
    "ACK",
    "PONG",
    "BCAST",
    "CHALLENGE",
    "MSG",
    "BYE",
    "signup",
    "alice",
    "bob",
    "127.0.0.1",
    "::1",
    "[::1]:5",
    "127.0.0.1:5555",
    "0",
    "1",
    "65535",
    "65536",
    "18446744073709551616",
    "-1",
    "reached=1",
    "pending=0",
    "expires=1800000000",
    "retry-after=5",
    "slow-reader",
    "replaced",
    "idle",
    "bad-credentials",
    "+bob",
    "-bob",
    "00112233445566778899aabbccddeeff",
    "0011223344556677",
    "",
    " ",
    "\t",
    "é",
    "a,b",
    "\"",
    "\\",
];

fn words() -> Vec<&'static str> {
    let verbs = Verb::ALL.into_iter().map(Verb::name);
    verbs.chain(OTHER_WORDS.iter().copied()).collect()
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(words()).prop_map(str::to_owned),
        1 => "[ -~]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

/// A line of protocol-ish words joined by one space, sometimes two.
fn line() -> impl Strategy<Value = String> {
    (prop::collection::vec(word(), 0..7), any::<bool>())
        .prop_map(|(w, double)| w.join(if double { "  " } else { " " }))
}

fn cases() -> u32 {
    std::env::var("PEERLINE_PARSER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn frames(reader: &mut LineReader, chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<Frame> {
    let mut out = Vec::new();
    for c in chunks {
        reader.push(c);
        while let Some(f) = reader.next_frame() {
            out.push(f);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn line_reader_gives_the_same_frames_however_input_is_split(
        parts in prop::collection::vec(
            prop_oneof![
                line().prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..40),
                (1usize..1500).prop_map(|n| vec![b'x'; n]),
                Just(b"\n".to_vec()),
                Just(b"\r\n".to_vec()),
            ],
            0..12,
        ),
        step in 1usize..64,
    ) {
        let input: Vec<u8> = parts.concat();
        let whole = frames(&mut LineReader::new(), &mut std::iter::once(&input[..]));
        let split = frames(&mut LineReader::new(), &mut input.chunks(step));
        prop_assert_eq!(&whole, &split);
        for f in &whole {
            if let Frame::Line(l) = f {
                prop_assert!(l.len() < MAX_LINE && !l.contains('\n') && !l.is_empty());
            }
        }
    }

    #[test]
    fn commands_round_trip(l in line()) {
        if let Ok(cmd) = Command::parse(&l) {
            let again = cmd.to_string();
            prop_assert_eq!(Command::parse(&again), Ok(cmd), "{:?} -> {:?}", l, again);
        }
    }

    #[test]
    fn server_lines_round_trip(l in line()) {
        if let Some(sl) = ServerLine::parse(&l) {
            let again = sl.wire().to_string();
            prop_assert_eq!(ServerLine::parse(&again), Some(sl), "{:?} -> {:?}", l, again);
        }
    }

    #[test]
    fn datagrams_round_trip(l in line(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        for bytes in [l.as_bytes(), &raw[..]] {
            if let Some(d) = ClientDatagram::parse(bytes) {
                let again = d.wire();
                prop_assert_eq!(ClientDatagram::parse(&again), Some(d));
            }
            if let Some(d) = ServerDatagram::parse(bytes) {
                let again = d.to_string();
                prop_assert_eq!(ServerDatagram::parse(again.as_bytes()), Some(d));
            }
            if let Some(r) = UdpRequest::parse(bytes) {
                let again = r.to_string();
                prop_assert_eq!(UdpRequest::parse(again.as_bytes()), Some(r));
            }
        }
    }

    #[test]
    fn link_lines_round_trip(l in line()) {
        if let Ok(ll) = LinkLine::parse(&l) {
            let again = ll.to_string();
            prop_assert_eq!(LinkLine::parse(&again), Ok(ll), "{:?} -> {:?}", l, again);
        }
    }

    /// The data file loaders, fed files whose lines are protocol-ish words
    /// joined by commas under each version line (and the version 1 headers).
    #[test]
    fn data_file_loaders_never_panic_and_records_round_trip(
        header in prop::sample::select(&[
            records::USERS_V2, records::BROADCASTS_V2, records::DELIVERIES_V2,
            records::USERS_V1_HEADER, records::BROADCASTS_V1_HEADER,
            records::DELIVERIES_V1_HEADER, "",
        ][..]),
        rows in prop::collection::vec(
            (prop::collection::vec(word(), 0..8), any::<bool>()),
            0..8,
        ),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut text = format!("{header}\n").into_bytes();
        for (fields, newline) in rows {
            text.extend_from_slice(fields.join(",").as_bytes());
            if newline {
                text.push(b'\n');
            }
        }
        text.extend_from_slice(&tail);
        let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
        let users = records::parse_users(&text);
        prop_assert!(users.whole_len <= text.len());
        prop_assert!(users.skipped.iter().all(|s| s.line >= 1 && s.line <= lines));
        for r in &users.records {
            let f = format!("{}\n{}", records::USERS_V2, records::format_user(r));
            prop_assert_eq!(&records::parse_users(f.as_bytes()).records, &vec![r.clone()]);
        }
        let (file, _) = records::parse_broadcasts(&text);
        for b in &file.records {
            prop_assert!(file.next_id > b.id);
            let f = format!("{}\n{}", records::BROADCASTS_V2, records::format_broadcast(b));
            prop_assert_eq!(&records::parse_broadcasts(f.as_bytes()).0.records, &vec![b.clone()]);
        }
        let d = records::parse_deliveries(&text, |n| Some(UserIdx(n.len() as u32)));
        for r in &d.records {
            let f = format!("{}\n{}", records::DELIVERIES_V2, records::format_delivery(r));
            prop_assert_eq!(&records::parse_deliveries(f.as_bytes(), |_| None).records, &vec![r.clone()]);
        }
    }
}
