//! Plaintext UDP datagrams, both directions: never panics; what parses prints
//! back to bytes that parse to the same datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::{ClientDatagram, ServerDatagram, UdpRequest};

fuzz_target!(|data: &[u8]| {
    if let Some(d) = ClientDatagram::parse(data) {
        let again = d.wire();
        assert_eq!(ClientDatagram::parse(&again).as_ref(), Some(&d));
    }
    if let Some(d) = ServerDatagram::parse(data) {
        let again = d.to_string();
        assert_eq!(ServerDatagram::parse(again.as_bytes()).as_ref(), Some(&d));
    }
    if let Some(r) = UdpRequest::parse(data) {
        let again = r.to_string();
        assert_eq!(UdpRequest::parse(again.as_bytes()).as_ref(), Some(&r));
    }
});
