//! Encrypted direct links: the bytes of one client-to-client connection,
//! decoded. A connection is either a plaintext link (`PEER <user> <token>`
//! lines, what `nc` speaks) or a Noise link (`Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`,
//! keyed by the p2p token); its first byte tells which (see `docs/PROTOCOL.md`).
//!
//! Pure and sans-IO, like the `snow` state machines inside it: bytes in,
//! events and bytes out; no socket, no clock. The client engine owns one
//! [`LinkWire`] per link and decides everything about tokens and users.
//!
//! Invariants:
//! - The token leaves this module only as the 32-byte HKDF output used as the
//!   Noise pre-shared key; [`LinkKey`] never prints its value.
//! - A decrypted line is handed out only after its tag verified; any failure
//!   (bad tag, bad frame, truncated handshake) is terminal: the wire yields one
//!   [`WireEvent::Failed`] and nothing after it, so a tampered byte can never
//!   turn into a shown message.
//! - Memory per link is bounded: at most [`MAGIC`] plus one frame
//!   ([`MAX_FRAME_BODY`]) plus the chunk being pushed is buffered.
//! - Both directions change keys every [`REKEY_EVERY`] frames
//!   (`rekey_outgoing`/`rekey_incoming` on the same count, no extra message).

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use snow::{Builder, HandshakeState, TransportState};

use super::framing::{Frame, LineReader, MAX_LINE};

/// The Noise protocol name: no static keys (peerline users have none; the
/// server's introduction is the identity), the token-derived PSK mixed in
/// before the first message so a stranger's hello is rejected before any
/// Diffie-Hellman, and fresh ephemeral keys on both sides for forward secrecy.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// First bytes of an encrypted hello. A plaintext hello starts with a letter
/// (`PEER …`), never with NUL, so the first byte alone tells them apart.
pub const MAGIC: &[u8; 8] = b"\0PLINK1\n";

/// Frame kinds: `kind (1 byte) | length (2 bytes, big-endian) | body`.
pub const FRAME_HANDSHAKE: u8 = 1;
pub const FRAME_DATA: u8 = 2;
/// An unauthenticated refusal (`bad-token`, `busy`), only before the handshake
/// completes: it can end a link attempt, never an established link.
pub const FRAME_REFUSE: u8 = 3;

/// AEAD tag added to every encrypted frame.
const TAG: usize = 16;
/// Largest frame body accepted: one line (without its `\n`) plus the tag.
pub const MAX_FRAME_BODY: usize = MAX_LINE + TAG;
const HEADER: usize = 3;

/// Frames sent (or received) in one direction under one key; after this many
/// the key is replaced (Noise `REKEY`). Lines are at most 1 KiB, so one key
/// protects at most ~1 MiB.
pub const REKEY_EVERY: u64 = 1000;

const HKDF_SALT: &[u8] = b"peerline link psk v1";
const PROLOGUE_LABEL: &[u8] = b"peerline-link/1\0";

/// The Noise PSK of one introduction, derived from the p2p token. Its
/// `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkKey([u8; 32]);

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

impl LinkKey {
    /// HKDF-SHA256 of the token, bound to both usernames and their roles: the
    /// key for `alice` dialing `bob` differs from `bob` dialing `alice`, so a
    /// hello cannot be reflected back at its sender or replayed by another user.
    pub fn derive(token: &str, initiator: &str, responder: &str) -> LinkKey {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), token.to_ascii_lowercase().as_bytes());
        let mut info = Vec::with_capacity(32 + initiator.len() + responder.len());
        info.extend_from_slice(b"initiator\0");
        info.extend_from_slice(initiator.as_bytes());
        info.extend_from_slice(b"\0responder\0");
        info.extend_from_slice(responder.as_bytes());
        let mut okm = [0u8; 32];
        hk.expand(&info, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        LinkKey(okm)
    }
}

/// Both usernames in the handshake transcript: a handshake between other
/// names, or with the roles swapped, does not complete.
fn prologue(initiator: &str, responder: &str) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    p.extend_from_slice(initiator.as_bytes());
    p.push(0);
    p.extend_from_slice(responder.as_bytes());
    p
}

fn builder_for<'a>(key: &'a LinkKey, prologue: &'a [u8]) -> Builder<'a> {
    let params = PATTERN.parse().expect("PATTERN is a valid Noise name");
    Builder::new(params).psk(0, &key.0).prologue(prologue)
}

/// Why a link cannot go on. Every one is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The first bytes were not [`MAGIC`].
    BadMagic,
    /// A frame announced more than [`MAX_FRAME_BODY`] bytes.
    FrameTooLong,
    /// A frame kind we do not know.
    UnknownFrame,
    /// The other side answered in plain text: it does not speak encrypted links.
    PlaintextPeer,
    /// The handshake did not authenticate: the other side does not hold the
    /// token (or a man in the middle changed the bytes).
    Handshake,
    /// An encrypted frame failed authentication (tampered, corrupted or replayed).
    Decrypt,
    /// A frame arrived in a state where it makes no sense.
    Unexpected,
    /// A line too long to fit in one frame (a local error).
    LineTooLong,
}

impl LinkError {
    /// Plain words for the person at the terminal.
    pub fn plain_words(self) -> &'static str {
        match self {
            LinkError::BadMagic => "it did not start like an encrypted link",
            LinkError::FrameTooLong => "it sent a frame longer than allowed",
            LinkError::UnknownFrame => "it sent a frame of an unknown kind",
            LinkError::PlaintextPeer => {
                "it answered in plain text (it does not speak encrypted links)"
            }
            LinkError::Handshake => {
                "the handshake failed: the other side does not hold the link token \
                 (wrong or used token, or a man in the middle)"
            }
            LinkError::Decrypt => {
                "a frame failed authentication (tampered with, corrupted or replayed)"
            }
            LinkError::Unexpected => "it sent a frame out of order",
            LinkError::LineTooLong => "that line is too long for one frame",
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plain_words())
    }
}

/// One frame on the wire.
pub fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("frame bodies are at most MAX_FRAME_BODY");
    let mut v = Vec::with_capacity(HEADER + body.len());
    v.push(kind);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// An unauthenticated refusal frame carrying an error code (`bad-token`, `busy`).
pub fn refusal(code: &str) -> Vec<u8> {
    frame(FRAME_REFUSE, code.as_bytes())
}

/// Splits received bytes into frames; checks [`MAGIC`] first when asked to.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`: frames are taken by moving
    /// this, so a chunk of many small frames costs linear time.
    start: usize,
    /// Bytes of [`MAGIC`] still expected at the front.
    magic_left: usize,
}

impl FrameReader {
    fn new(expect_magic: bool) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            magic_left: if expect_magic { MAGIC.len() } else { 0 },
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// True when part of a frame (or of the magic) is buffered: a connection
    /// ending now ended inside a frame.
    pub fn mid_frame(&self) -> bool {
        !self.pending().is_empty() || (self.magic_left > 0 && self.magic_left < MAGIC.len())
    }

    fn next(&mut self) -> Option<Result<(u8, Vec<u8>), LinkError>> {
        if self.magic_left > 0 {
            let done = MAGIC.len() - self.magic_left;
            let n = self.magic_left.min(self.pending().len());
            if self.pending()[..n] != MAGIC[done..done + n] {
                return Some(Err(LinkError::BadMagic));
            }
            self.start += n;
            self.magic_left -= n;
            if self.magic_left > 0 {
                return None;
            }
        }
        let rest = self.pending();
        let &kind = rest.first()?;
        if !matches!(kind, FRAME_HANDSHAKE | FRAME_DATA | FRAME_REFUSE) {
            return Some(Err(if kind.is_ascii_alphabetic() {
                LinkError::PlaintextPeer
            } else {
                LinkError::UnknownFrame
            }));
        }
        if rest.len() < HEADER {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        if len > MAX_FRAME_BODY {
            return Some(Err(LinkError::FrameTooLong));
        }
        if rest.len() < HEADER + len {
            return None;
        }
        let body = rest[HEADER..HEADER + len].to_vec();
        self.start += HEADER + len;
        if self.start == self.buf.len() {
            // Most links are idle most of the time: keep no buffer for them.
            self.buf = Vec::new();
            self.start = 0;
        }
        Some(Ok((kind, body)))
    }
}

/// An established Noise session: seals and opens lines, rekeying on a count.
pub struct Session {
    t: TransportState,
    sent: u64,
    received: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(t: TransportState) -> Session {
        Session {
            t,
            sent: 0,
            received: 0,
        }
    }

    /// One line as a data frame.
    pub fn seal(&mut self, line: &str) -> Result<Vec<u8>, LinkError> {
        // The plaintext rule: a line and its `\n` fit in MAX_LINE.
        if line.len() >= MAX_LINE {
            return Err(LinkError::LineTooLong);
        }
        let mut body = vec![0u8; line.len() + TAG];
        let n = self
            .t
            .write_message(line.as_bytes(), &mut body)
            .map_err(|_| LinkError::LineTooLong)?;
        body.truncate(n);
        self.sent += 1;
        if self.sent % REKEY_EVERY == 0 {
            self.t.rekey_outgoing();
        }
        Ok(frame(FRAME_DATA, &body))
    }

    /// The plaintext of one data frame's body, or `Decrypt`.
    pub fn open(&mut self, body: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut plain = vec![0u8; body.len()];
        let n = self
            .t
            .read_message(body, &mut plain)
            .map_err(|_| LinkError::Decrypt)?;
        plain.truncate(n);
        self.received += 1;
        if self.received % REKEY_EVERY == 0 {
            self.t.rekey_incoming();
        }
        Ok(plain)
    }
}

/// What the bytes of a link amount to, one event at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireEvent {
    /// A line from a plaintext peer (`nc`).
    Plain(Frame),
    /// Listening side: an encrypted hello, to be tried against the tokens
    /// issued ([`LinkWire::answer_hello`]).
    Hello(Vec<u8>),
    /// Dialing side: the listener proved it holds the token; lines may be sealed.
    Secured,
    /// A decrypted, authenticated line.
    Line(Frame),
    /// The other side refused before any key existed; its error code (not
    /// authenticated, so only ever shown as a refusal, never as a message).
    Refused(String),
    /// The link is unusable; nothing else comes after this.
    Failed(LinkError),
}

enum Crypto {
    /// Listening: no hello yet.
    AwaitHello,
    /// Listening: the hello was handed out and waits for `answer_hello`.
    HelloPending,
    /// Dialing: our hello is out, waiting for the listener's answer.
    Dialing(Box<HandshakeState>),
    Ready(Session),
}

enum Mode {
    /// Listening, nothing received yet.
    Sniff,
    Plain(LineReader),
    Noise {
        frames: FrameReader,
        crypto: Crypto,
    },
}

/// The decoder and encoder of one link's bytes.
pub struct LinkWire {
    mode: Mode,
    failed: bool,
}

impl fmt::Debug for LinkWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Sniff => "sniff",
            Mode::Plain(_) => "plain",
            Mode::Noise { crypto, .. } => match crypto {
                Crypto::AwaitHello => "noise/await-hello",
                Crypto::HelloPending => "noise/hello-pending",
                Crypto::Dialing(_) => "noise/dialing",
                Crypto::Ready(_) => "noise/ready",
            },
        };
        write!(
            f,
            "LinkWire({mode}{})",
            if self.failed { ", failed" } else { "" }
        )
    }
}

impl LinkWire {
    /// A connection our listener accepted: plaintext or encrypted, the first
    /// byte will tell.
    pub fn incoming() -> LinkWire {
        LinkWire {
            mode: Mode::Sniff,
            failed: false,
        }
    }

    /// A connection we dial as `me` to `peer` with the token from `EVENT PEER`:
    /// the wire, and the hello to send (magic plus the first handshake message).
    pub fn dial(token: &str, me: &str, peer: &str) -> (LinkWire, Vec<u8>) {
        let key = LinkKey::derive(token, me, peer);
        let pro = prologue(me, peer);
        let mut hs = builder_for(&key, &pro)
            .build_initiator()
            .expect("static Noise parameters build");
        let mut msg = [0u8; 128];
        let n = hs
            .write_message(&[], &mut msg)
            .expect("the first NNpsk0 message fits in 128 bytes");
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&frame(FRAME_HANDSHAKE, &msg[..n]));
        let wire = LinkWire {
            mode: Mode::Noise {
                frames: FrameReader::new(false),
                crypto: Crypto::Dialing(Box::new(hs)),
            },
            failed: false,
        };
        (wire, hello)
    }

    /// True once the first byte showed an encrypted link (or we dialed one).
    pub fn is_encrypted(&self) -> bool {
        matches!(self.mode, Mode::Noise { .. })
    }

    /// True for a plaintext link (an `nc` user).
    pub fn is_plain(&self) -> bool {
        matches!(self.mode, Mode::Plain(_))
    }

    /// True when the connection ending now would end inside a frame.
    pub fn mid_frame(&self) -> bool {
        match &self.mode {
            Mode::Noise { frames, .. } => !self.failed && frames.mid_frame(),
            _ => false,
        }
    }

    /// Takes received bytes; then call [`LinkWire::next_event`] until `None`.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed || bytes.is_empty() {
            return;
        }
        if let Mode::Sniff = self.mode {
            self.mode = if bytes[0] == MAGIC[0] {
                Mode::Noise {
                    frames: FrameReader::new(true),
                    crypto: Crypto::AwaitHello,
                }
            } else {
                Mode::Plain(LineReader::new())
            };
        }
        match &mut self.mode {
            Mode::Sniff => {}
            Mode::Plain(reader) => reader.push(bytes),
            Mode::Noise { frames, .. } => frames.push(bytes),
        }
    }

    fn fail(&mut self, e: LinkError) -> Option<WireEvent> {
        self.failed = true;
        if let Mode::Noise { frames, .. } = &mut self.mode {
            *frames = FrameReader::default();
        }
        Some(WireEvent::Failed(e))
    }

    /// The next event from what was pushed; `None` when more bytes are needed
    /// (or after a failure).
    pub fn next_event(&mut self) -> Option<WireEvent> {
        if self.failed {
            return None;
        }
        let (frames, crypto) = match &mut self.mode {
            Mode::Sniff => return None,
            Mode::Plain(reader) => return reader.next_frame().map(WireEvent::Plain),
            Mode::Noise { frames, crypto } => (frames, crypto),
        };
        let (kind, body) = match frames.next()? {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        match (kind, &mut *crypto) {
            (FRAME_HANDSHAKE, Crypto::AwaitHello) => {
                *crypto = Crypto::HelloPending;
                Some(WireEvent::Hello(body))
            }
            (FRAME_HANDSHAKE, Crypto::Dialing(hs)) => {
                let mut payload = [0u8; 128];
                let done =
                    hs.read_message(&body, &mut payload).is_ok() && hs.is_handshake_finished();
                if !done {
                    return self.fail(LinkError::Handshake);
                }
                let Crypto::Dialing(hs) = std::mem::replace(crypto, Crypto::AwaitHello) else {
                    unreachable!("matched Dialing above");
                };
                match hs.into_transport_mode() {
                    Ok(t) => {
                        *crypto = Crypto::Ready(Session::new(t));
                        Some(WireEvent::Secured)
                    }
                    Err(_) => self.fail(LinkError::Handshake),
                }
            }
            (FRAME_DATA, Crypto::Ready(session)) => match session.open(&body) {
                Ok(plain) => Some(WireEvent::Line(line_frame(plain))),
                Err(e) => self.fail(e),
            },
            (FRAME_REFUSE, Crypto::Dialing(_)) => {
                self.failed = true;
                let code: String = String::from_utf8_lossy(&body)
                    .chars()
                    .filter(|c| c.is_ascii_lowercase() || *c == '-')
                    .take(32)
                    .collect();
                Some(WireEvent::Refused(code))
            }
            _ => self.fail(LinkError::Unexpected),
        }
    }

    /// Listening side: tries the hello from [`WireEvent::Hello`] against each
    /// `(peer, token)` we issued, as `me`. On the first that authenticates,
    /// returns its index and the answer to send; the link is then encrypted
    /// (the peer still has to prove it is live by sending a first data frame,
    /// since a recorded hello authenticates too). `None` leaves the hello
    /// pending, to retry when another token is issued.
    pub fn answer_hello<'a>(
        &mut self,
        hello: &[u8],
        me: &str,
        candidates: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<(usize, Vec<u8>)> {
        let Mode::Noise { crypto, .. } = &mut self.mode else {
            return None;
        };
        if !matches!(crypto, Crypto::HelloPending) || self.failed {
            return None;
        }
        for (i, (peer, token)) in candidates.into_iter().enumerate() {
            let key = LinkKey::derive(token, peer, me);
            let pro = prologue(peer, me);
            let Ok(mut hs) = builder_for(&key, &pro).build_responder() else {
                continue;
            };
            let mut payload = [0u8; 128];
            if hs.read_message(hello, &mut payload).is_err() {
                continue;
            }
            let mut msg = [0u8; 128];
            let Ok(n) = hs.write_message(&[], &mut msg) else {
                continue;
            };
            let Ok(t) = hs.into_transport_mode() else {
                continue;
            };
            *crypto = Crypto::Ready(Session::new(t));
            return Some((i, frame(FRAME_HANDSHAKE, &msg[..n])));
        }
        None
    }

    /// One line for the peer as a sealed data frame; only once the handshake
    /// is done (plaintext links are written as lines by the caller).
    pub fn seal(&mut self, line: &str) -> Result<Vec<u8>, LinkError> {
        match &mut self.mode {
            Mode::Noise {
                crypto: Crypto::Ready(session),
                ..
            } if !self.failed => session.seal(line),
            _ => Err(LinkError::Unexpected),
        }
    }

    /// True once lines can be sealed.
    pub fn is_ready(&self) -> bool {
        matches!(
            self.mode,
            Mode::Noise {
                crypto: Crypto::Ready(_),
                ..
            }
        ) && !self.failed
    }
}

/// A decrypted line as a [`Frame`], with the same rules as a plaintext line.
fn line_frame(plain: Vec<u8>) -> Frame {
    if plain.len() >= MAX_LINE {
        return Frame::TooLong;
    }
    match String::from_utf8(plain) {
        Ok(s) => Frame::Line(s),
        Err(_) => Frame::BadUtf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "ffffffffffffffffffffffffffffffff";

    fn events(w: &mut LinkWire, bytes: &[u8]) -> Vec<WireEvent> {
        w.push(bytes);
        std::iter::from_fn(|| w.next_event()).collect()
    }

    /// Feeds `bytes` one at a time, collecting every event.
    fn events_bytewise(w: &mut LinkWire, bytes: &[u8]) -> Vec<WireEvent> {
        let mut all = Vec::new();
        for b in bytes {
            all.extend(events(w, std::slice::from_ref(b)));
        }
        all
    }

    /// alice dials bob; bob's listener holds `bob_tokens`. Returns both wires
    /// after the handshake, and the hello (for replays).
    fn handshake(bob_tokens: &[(&str, &str)]) -> (LinkWire, LinkWire, Vec<u8>) {
        let (mut alice, hello) = LinkWire::dial(TOKEN, "alice", "bob");
        let mut bob = LinkWire::incoming();
        let ev = events(&mut bob, &hello);
        let [WireEvent::Hello(h)] = &ev[..] else {
            panic!("{ev:?}");
        };
        let (_, answer) = bob
            .answer_hello(h, "bob", bob_tokens.iter().copied())
            .expect("bob holds the token");
        assert_eq!(events(&mut alice, &answer), vec![WireEvent::Secured]);
        (alice, bob, hello)
    }

    fn line(s: &str) -> WireEvent {
        WireEvent::Line(Frame::Line(s.into()))
    }

    #[test]
    fn both_holders_of_the_token_talk_and_nothing_is_in_clear() {
        let (mut alice, mut bob, hello) = handshake(&[("carol", OTHER), ("alice", TOKEN)]);
        assert!(hello.starts_with(MAGIC));
        assert!(!hello
            .windows(8)
            .any(|w| TOKEN.as_bytes().windows(8).any(|t| t == w)));
        let f = alice.seal("PEER alice").unwrap();
        assert!(
            !f.windows(5).any(|w| w == b"alice"),
            "sealed frames hide text"
        );
        assert_eq!(events(&mut bob, &f), vec![line("PEER alice")]);
        let f = bob.seal("MSG hi alice").unwrap();
        assert_eq!(events_bytewise(&mut alice, &f), vec![line("MSG hi alice")]);
        // Two frames in one read, then a frame split across reads.
        let mut two = alice.seal("MSG one").unwrap();
        two.extend(alice.seal("MSG two").unwrap());
        assert_eq!(
            events(&mut bob, &two),
            vec![line("MSG one"), line("MSG two")]
        );
        let f = alice.seal("MSG three").unwrap();
        assert_eq!(events(&mut bob, &f[..5]), vec![]);
        assert!(bob.mid_frame());
        assert_eq!(events(&mut bob, &f[5..]), vec![line("MSG three")]);
        assert!(!bob.mid_frame());
    }

    #[test]
    fn whole_handshake_works_fed_one_byte_at_a_time() {
        let (mut alice, hello) = LinkWire::dial(TOKEN, "alice", "bob");
        let mut bob = LinkWire::incoming();
        let ev = events_bytewise(&mut bob, &hello);
        let [WireEvent::Hello(h)] = &ev[..] else {
            panic!("{ev:?}");
        };
        let (i, answer) = bob.answer_hello(h, "bob", [("alice", TOKEN)]).unwrap();
        assert_eq!(i, 0);
        assert_eq!(
            events_bytewise(&mut alice, &answer),
            vec![WireEvent::Secured]
        );
    }

    #[test]
    fn a_wrong_token_wrong_user_or_reflected_hello_does_not_authenticate() {
        let (_, hello) = LinkWire::dial(TOKEN, "alice", "bob");
        let h = &hello[MAGIC.len() + HEADER..];
        let tries: [(&str, &[(&str, &str)]); 4] = [
            ("bob", &[("alice", OTHER)]),   // another token
            ("bob", &[("mallory", TOKEN)]), // the token issued for someone else
            ("carol", &[("alice", TOKEN)]), // meant for another listener
            ("alice", &[("bob", TOKEN)]),   // reflected: roles swapped
        ];
        for (me, cands) in tries {
            let mut w = LinkWire::incoming();
            assert_eq!(events(&mut w, &hello), vec![WireEvent::Hello(h.to_vec())]);
            assert_eq!(
                w.answer_hello(h, me, cands.iter().copied()),
                None,
                "{me} {cands:?}"
            );
            // Still pending: the right token, issued later, is tried then.
            assert!(w.answer_hello(h, "bob", [("alice", TOKEN)]).is_some());
        }
    }

    #[test]
    fn a_listener_without_the_token_cannot_fool_the_dialer() {
        let (mut alice, hello) = LinkWire::dial(TOKEN, "alice", "bob");
        // A man in the middle answers with its own handshake under a guessed key.
        let mut mitm = LinkWire::incoming();
        let ev = events(&mut mitm, &hello);
        let [WireEvent::Hello(h)] = &ev[..] else {
            panic!("{ev:?}");
        };
        assert_eq!(mitm.answer_hello(h, "bob", [("alice", OTHER)]), None);
        // It cannot even read alice's hello; answering blindly fails too.
        let mut fake = LinkWire::incoming();
        let (_, fake_hello) = LinkWire::dial(OTHER, "alice", "bob");
        let ev = events(&mut fake, &fake_hello);
        let [WireEvent::Hello(fh)] = &ev[..] else {
            panic!("{ev:?}");
        };
        let (_, answer) = fake.answer_hello(fh, "bob", [("alice", OTHER)]).unwrap();
        assert_eq!(
            events(&mut alice, &answer),
            vec![WireEvent::Failed(LinkError::Handshake)]
        );
        assert!(alice.seal("MSG secret").is_err());
    }

    #[test]
    fn a_flipped_bit_or_a_replayed_frame_ends_the_link_and_shows_nothing() {
        for corrupt in [0usize, 1, 2] {
            let (mut alice, mut bob, _) = handshake(&[("alice", TOKEN)]);
            let first = alice.seal("MSG first").unwrap();
            let mut f = alice.seal("MSG secret").unwrap();
            let mut bytes = first.clone();
            match corrupt {
                0 => {
                    let last = f.len() - 1;
                    f[last] ^= 1; // in the tag
                    bytes.extend(&f);
                }
                1 => {
                    f[HEADER + 2] ^= 0x20; // in the ciphertext
                    bytes.extend(&f);
                }
                _ => bytes.extend(&first), // a replay
            }
            let after = alice.seal("MSG after").unwrap();
            bytes.extend(&after);
            assert_eq!(
                events(&mut bob, &bytes),
                vec![line("MSG first"), WireEvent::Failed(LinkError::Decrypt)],
                "case {corrupt}"
            );
            assert_eq!(events(&mut bob, &after), vec![], "nothing after a failure");
            assert!(!bob.mid_frame());
        }
    }

    #[test]
    fn bad_frames_are_terminal_errors() {
        let cases: [(&[u8], LinkError); 3] = [
            (b"\0PLINK2\n", LinkError::BadMagic),
            (b"\0PLINK1\n\x01\xff\xff", LinkError::FrameTooLong),
            (b"\0PLINK1\n\x09\x00\x00", LinkError::UnknownFrame),
        ];
        for (bytes, e) in cases {
            let mut w = LinkWire::incoming();
            assert_eq!(events(&mut w, bytes), vec![WireEvent::Failed(e)]);
        }
        // A data frame before any handshake.
        let mut w = LinkWire::incoming();
        let mut b = MAGIC.to_vec();
        b.extend(frame(FRAME_DATA, &[0; 20]));
        assert_eq!(
            events(&mut w, &b),
            vec![WireEvent::Failed(LinkError::Unexpected)]
        );
    }

    #[test]
    fn the_dialer_reports_refusals_and_plaintext_answers() {
        let (mut alice, _) = LinkWire::dial(TOKEN, "alice", "bob");
        assert_eq!(
            events(&mut alice, &refusal("bad-token")),
            vec![WireEvent::Refused("bad-token".into())]
        );
        let (mut alice, _) = LinkWire::dial(TOKEN, "alice", "bob");
        assert_eq!(
            events(&mut alice, b"ERR encryption-required\n"),
            vec![WireEvent::Failed(LinkError::PlaintextPeer)]
        );
        // An established link ignores no unauthenticated refusal: it is an error.
        let (mut alice, _, _) = handshake(&[("alice", TOKEN)]);
        assert_eq!(
            events(&mut alice, &refusal("bad-token")),
            vec![WireEvent::Failed(LinkError::Unexpected)]
        );
    }

    #[test]
    fn a_plaintext_first_byte_means_a_line_link() {
        let mut w = LinkWire::incoming();
        let ev = events_bytewise(&mut w, b"PEER alice 0123\nMSG hi\n");
        assert_eq!(
            ev,
            vec![
                WireEvent::Plain(Frame::Line("PEER alice 0123".into())),
                WireEvent::Plain(Frame::Line("MSG hi".into()))
            ]
        );
        assert!(w.is_plain() && !w.is_encrypted());
    }

    #[test]
    fn keys_change_every_rekey_every_frames_in_step() {
        let (mut alice, mut bob, _) = handshake(&[("alice", TOKEN)]);
        let n = 2 * REKEY_EVERY + 10;
        for i in 0..n {
            let f = alice.seal(&format!("MSG {i}")).unwrap();
            assert_eq!(events(&mut bob, &f), vec![line(&format!("MSG {i}"))]);
            let f = bob.seal(&format!("MSG back {i}")).unwrap();
            assert_eq!(events(&mut alice, &f), vec![line(&format!("MSG back {i}"))]);
        }
        // The sender really rekeyed: a receiver that skips the rekey cannot
        // read the frame after REKEY_EVERY.
        let (mut alice, mut bob, _) = handshake(&[("alice", TOKEN)]);
        let Mode::Noise {
            crypto: Crypto::Ready(receiver),
            ..
        } = &mut bob.mode
        else {
            panic!("bob is ready");
        };
        let mut buf = vec![0u8; MAX_FRAME_BODY];
        for i in 0..=REKEY_EVERY {
            let f = alice.seal("MSG x").unwrap();
            let ok = receiver.t.read_message(&f[HEADER..], &mut buf).is_ok();
            assert_eq!(ok, i < REKEY_EVERY, "frame {i}");
        }
    }

    #[test]
    fn keys_never_print() {
        let k = LinkKey::derive(TOKEN, "alice", "bob");
        assert_eq!(format!("{k:?}"), "LinkKey(<redacted>)");
        assert_ne!(k, LinkKey::derive(TOKEN, "bob", "alice"));
        assert_eq!(k, LinkKey::derive(&TOKEN.to_uppercase(), "alice", "bob"));
    }
}
