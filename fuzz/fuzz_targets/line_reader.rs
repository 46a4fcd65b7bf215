//! The line reader: any bytes, split anywhere, give the same frames as the
//! whole input at once; no line is longer than the cap or holds a newline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::{Frame, LineReader, MAX_LINE};

fn frames(chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<Frame> {
    let mut r = LineReader::new();
    let mut out = Vec::new();
    for c in chunks {
        r.push(c);
        while let Some(f) = r.next_frame() {
            out.push(f);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = frames(&mut std::iter::once(input));
    let step = usize::from(split).max(1);
    let pieces = frames(&mut input.chunks(step));
    assert_eq!(whole, pieces, "split every {step} bytes");
    for f in &whole {
        if let Frame::Line(l) = f {
            assert!(l.len() < MAX_LINE && !l.contains('\n') && !l.is_empty());
        }
    }
});
