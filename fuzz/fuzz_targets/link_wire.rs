//! The peer-link wire (`proto::link_noise::LinkWire`): the listening side's
//! sniffing, plaintext lines and Noise framing, and the dialing side's
//! handshake, fed arbitrary bytes in arbitrary pieces. Never panics; nothing
//! comes after `Failed`; a dialer never becomes ready or yields a line from
//! bytes that did not complete its handshake; plaintext lines obey the line
//! rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::link_noise::{LinkWire, WireEvent};
use peerline::proto::{Frame, MAX_LINE};

fn drive(wire: &mut LinkWire, data: &[u8], step: usize, dialer: bool) {
    let mut failed = false;
    for chunk in data.chunks(step) {
        wire.push(chunk);
        // Bounded: each event consumes input or ends the wire.
        for _ in 0..=data.len() + 1 {
            let Some(ev) = wire.next_event() else {
                break;
            };
            assert!(!failed, "an event after Failed: {ev:?}");
            match ev {
                WireEvent::Failed(_) => failed = true,
                WireEvent::Refused(code) => {
                    assert!(dialer && code.len() <= 32);
                    failed = true;
                }
                WireEvent::Secured | WireEvent::Line(_) => {
                    panic!("forged handshake accepted: {ev:?}")
                }
                WireEvent::Hello(hello) => {
                    assert!(!dialer);
                    // No token issued, or one the fuzzer does not hold (the
                    // hello is authenticated by it): the hello stays pending.
                    assert!(wire.answer_hello(&hello, "bob", []).is_none());
                    let issued = [("alice", "00112233445566778899aabbccddeeff")];
                    assert!(wire.answer_hello(&hello, "bob", issued).is_none());
                }
                WireEvent::Plain(f) => {
                    assert!(!dialer);
                    if let Frame::Line(l) = f {
                        assert!(l.len() < MAX_LINE && !l.contains('\n') && !l.is_empty());
                    }
                }
            }
        }
        assert!(!wire.is_ready());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1);
    drive(&mut LinkWire::incoming(), data, step, false);
    let (mut dialer, _hello) = LinkWire::dial("00112233445566778899aabbccddeeff", "alice", "bob");
    drive(&mut dialer, data, step, true);
});
