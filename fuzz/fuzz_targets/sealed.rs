//! Sealed datagrams (`proto::sealed`): a channel opens nothing it did not
//! seal, never panics on any bytes, and never accepts a datagram twice.
//!
//! The input drives a short session: the client seals bodies taken from the
//! input, and the server is handed either those datagrams (possibly with
//! bytes flipped, truncated or replayed) or raw input bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerline::proto::sealed::{self, Channel, OpenError, Role, UdpSecret, SECRET_LEN};

/// What a fresh client channel seals as `body` under the counter `d` names;
/// `None` past the counters an input of at most 4096 bytes can reach.
fn client_seal(secret: &UdpSecret, d: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let n = u64::from_be_bytes(d.get(9..17)?.try_into().ok()?);
    if n >= 4096 {
        return None;
    }
    let mut c = Channel::new(secret, Role::Client);
    for _ in 0..n {
        c.seal(b"");
    }
    c.seal(body)
}

fuzz_target!(|data: &[u8]| {
    let secret = UdpSecret::from_bytes([7; SECRET_LEN]);
    let mut client = Channel::new(&secret, Role::Client);
    let mut server = Channel::new(&secret, Role::Server);
    let mut sent: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut opened = std::collections::HashSet::new();
    let mut raw_opened = false;
    // Commands: [op, len, bytes...]
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (arg, tail) = tail.split_at(n);
        rest = tail;
        let _ = sealed::session_id(arg);
        let _ = sealed::unpad(arg);
        match op % 4 {
            // Seal a body and deliver it intact: it opens to that body, once.
            0 => {
                let d = client.seal(arg).expect("few datagrams");
                match server.open(&d) {
                    Ok(body) => assert_eq!(body, arg),
                    // Only if an authentic raw datagram (op 3) took this
                    // counter first, or moved the window past it.
                    Err(e) => assert!(raw_opened && e == OpenError::Replayed, "{e:?}"),
                }
                assert!(opened.insert(d.clone()));
                sent.push((d, arg.to_vec()));
            }
            // Replay one already delivered: refused.
            1 if !sent.is_empty() => {
                let (d, _) = &sent[usize::from(*len) % sent.len()];
                assert_eq!(server.open(d), Err(OpenError::Replayed));
            }
            // A sealed datagram with bytes changed or cut: never opens as
            // something that was not sealed.
            2 => {
                let mut d = client.seal(b"PING").expect("few datagrams");
                for (i, b) in arg.iter().enumerate() {
                    let at = (usize::from(*b) + i * 31) % d.len();
                    d[at] ^= b | 1;
                }
                if arg.len() % 3 == 1 {
                    d.truncate(d.len() - arg.len().min(d.len()));
                }
                if let Ok(body) = server.open(&d) {
                    assert_eq!(body, b"PING", "an altered datagram opened");
                    assert!(opened.insert(d));
                }
            }
            // Raw bytes open only if they are exactly what the client seals
            // at that counter. (They can be: the key is fixed, and libFuzzer's
            // compare tracing hands it datagrams sealed in earlier runs,
            // which a fresh server has not seen: authentic, not forged.)
            _ => {
                if let Ok(body) = server.open(arg) {
                    raw_opened = true;
                    assert_eq!(Some(arg), client_seal(&secret, arg, &body).as_deref());
                }
            }
        }
    }
});
