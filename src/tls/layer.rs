//! The byte-stream layer between a TCP socket and the line protocol, as in
//! rustls' `tlsserver-mio`: socket bytes → `read_tls` → `process_new_packets`
//! → `reader()` → [`LineReader`]; queued lines → `writer()` → `write_tls` →
//! socket. Both drivers keep one [`Layer`] per connection; the engines above
//! still see only lines.
//!
//! Invariants:
//! - Reads take at most [`READ_BUDGET`] socket bytes per call, like
//!   [`netio::read_frames`]; plaintext is drained from rustls after every
//!   record batch, so rustls' buffers stay bounded.
//! - rustls holds at most [`TLS_BUFFER_LIMIT`] bytes of plaintext or records
//!   waiting; the rest stays in the connection's capped [`OutBuffer`], so the
//!   slow-reader rule still sees every queued byte.
//! - While a server connection is [`Layer::Sniffing`], nothing is written:
//!   the first byte decides whether what we queued goes out in clear or
//!   inside TLS.

use std::io::{self, Read, Write};
use std::time::Instant;

use crate::netio::{self, Chunk, OutBuffer, ReadStatus, READ_BUDGET};
use crate::proto::sealed::{UdpSecret, EXPORTER_LABEL, SECRET_LEN};
use crate::proto::{Frame, LineReader};

/// Plaintext or TLS records rustls may hold per connection.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;
/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// What carries a connection's lines.
pub enum Layer {
    /// Server side, before the first byte: output is held back until it says
    /// TLS (`0x16`) or plain, or until `until` passes in silence (plain).
    Sniffing {
        until: Instant,
    },
    Plain,
    /// Boxed: a rustls connection is a few KiB, plain connections pay nothing.
    Tls(Box<rustls::Connection>),
}

/// The TLS session failed (bad record, refused certificate, alert): close.
#[derive(Debug)]
pub struct TlsFailure(pub rustls::Error);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

/// rustls' plaintext writer, saying `WouldBlock` when its buffer is full
/// (it answers `Ok(0)`, which [`OutBuffer::write_to`] would take for an error).
struct PlainIn<'a>(&'a mut rustls::Connection);

impl Write for PlainIn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Layer {
    /// A TLS layer around a fresh rustls connection, with bounded buffers.
    pub fn tls(conn: impl Into<rustls::Connection>) -> Layer {
        let mut conn: rustls::Connection = conn.into();
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Layer::Tls(Box::new(conn))
    }

    /// The rustls connection, for whoever needs its handshake results
    /// (`export_keying_material`, the peer's certificate, the protocol version).
    pub fn tls_conn(&self) -> Option<&rustls::Connection> {
        match self {
            Layer::Tls(t) => Some(t),
            _ => None,
        }
    }

    /// The secret this connection's sealed datagrams are keyed from, once
    /// its handshake is done: the TLS exporter output (RFC 5705 / RFC 8446
    /// §7.5) for [`EXPORTER_LABEL`], no context. `None` for plain.
    pub fn udp_secret(&self) -> Option<UdpSecret> {
        match self {
            Layer::Tls(t) if !t.is_handshaking() => t
                .export_keying_material([0u8; SECRET_LEN], EXPORTER_LABEL, None)
                .ok()
                .map(UdpSecret::from_bytes),
            _ => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Layer::Tls(_))
    }

    /// TLS and its handshake not finished yet.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Layer::Tls(t) if t.is_handshaking())
    }

    /// Bytes wait to go to the socket (queued lines, or TLS records).
    pub fn wants_write(&self, out: &OutBuffer) -> bool {
        match self {
            Layer::Sniffing { .. } => false,
            Layer::Plain => !out.is_empty(),
            Layer::Tls(t) => !out.is_empty() || t.wants_write(),
        }
    }

    /// Everything queued has reached the socket.
    pub fn flushed(&self, out: &OutBuffer) -> bool {
        out.is_empty() && !matches!(self, Layer::Tls(t) if t.wants_write())
    }

    /// Reads up to [`READ_BUDGET`] socket bytes and hands every complete
    /// plaintext frame to `on_frame`. A sniffing layer reads nothing.
    pub fn read_frames(
        &mut self,
        sock: &mut impl Read,
        reader: &mut LineReader,
        on_frame: impl FnMut(Frame),
    ) -> Result<ReadStatus, TlsFailure> {
        match self {
            Layer::Sniffing { .. } => Ok(ReadStatus::Drained),
            Layer::Plain => Ok(netio::read_frames(sock, reader, on_frame)),
            Layer::Tls(t) => read_tls_frames(t, sock, reader, on_frame),
        }
    }

    /// One socket read (at most one chunk, or what rustls takes at once)
    /// into `reader`, decrypted for TLS; the frames stay in `reader` for the
    /// caller to take one at a time (backpressure: what it is not ready for
    /// stays in the kernel). A sniffing layer reads nothing.
    pub fn read_chunk(
        &mut self,
        sock: &mut impl Read,
        reader: &mut LineReader,
    ) -> Result<Chunk, TlsFailure> {
        match self {
            Layer::Sniffing { .. } => Ok(Chunk::Drained),
            Layer::Plain => Ok(netio::read_chunk(sock, reader)),
            Layer::Tls(t) => {
                let got = loop {
                    match t.read_tls(sock) {
                        Ok(0) => break Chunk::Closed,
                        Ok(n) => break Chunk::Got(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Chunk::Drained,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break Chunk::Closed,
                    }
                };
                // Also after EOF: records that came with the FIN count.
                let closed = drain_plaintext(t, reader)?;
                Ok(if closed { Chunk::Closed } else { got })
            }
        }
    }

    /// Writes what it can: queued lines (through rustls for TLS) until the
    /// socket says `WouldBlock`. `Ok(true)` once everything is out.
    pub fn flush(&mut self, out: &mut OutBuffer, sock: &mut impl Write) -> io::Result<bool> {
        match self {
            Layer::Sniffing { .. } => Ok(out.is_empty()),
            Layer::Plain => out.write_to(sock),
            Layer::Tls(t) => {
                // Alternate: lines into rustls (up to its limit), records out;
                // bounded, since each round either moves bytes or stops.
                for _ in 0..64 {
                    if !out.is_empty() {
                        out.write_to(&mut PlainIn(t))?;
                    }
                    let mut blocked = false;
                    while t.wants_write() {
                        match t.write_tls(sock) {
                            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                blocked = true;
                                break;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    if blocked || out.is_empty() {
                        break;
                    }
                }
                Ok(out.is_empty() && !t.wants_write())
            }
        }
    }

    /// Queues TLS `close_notify` (nothing for plain): call once, before FIN.
    pub fn close_notify(&mut self) {
        if let Layer::Tls(t) = self {
            t.send_close_notify();
        }
    }
}

/// Processes the records rustls has read and moves their plaintext into
/// `reader`; true once the peer has sent `close_notify`.
fn drain_plaintext(
    t: &mut rustls::Connection,
    reader: &mut LineReader,
) -> Result<bool, TlsFailure> {
    let state = t.process_new_packets().map_err(TlsFailure)?;
    let mut left = state.plaintext_bytes_to_read();
    let mut chunk = [0u8; 8192];
    while left > 0 {
        match t.reader().read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                left = left.saturating_sub(n);
                reader.push(&chunk[..n]);
            }
        }
    }
    Ok(state.peer_has_closed())
}

fn read_tls_frames(
    t: &mut rustls::Connection,
    sock: &mut impl Read,
    reader: &mut LineReader,
    mut on_frame: impl FnMut(Frame),
) -> Result<ReadStatus, TlsFailure> {
    let mut taken = 0;
    loop {
        if taken >= READ_BUDGET {
            return Ok(ReadStatus::MoreWaiting);
        }
        let mut end = None;
        match t.read_tls(sock) {
            Ok(0) => end = Some(ReadStatus::Closed),
            Ok(n) => taken += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => end = Some(ReadStatus::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => end = Some(ReadStatus::Closed),
        }
        // Also after EOF: records that came with the FIN are still processed.
        let closed = drain_plaintext(t, reader)?;
        while let Some(frame) = reader.next_frame() {
            on_frame(frame);
        }
        if closed {
            return Ok(ReadStatus::Closed);
        }
        if let Some(status) = end {
            return Ok(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An in-memory pipe pair standing in for a socket: `WouldBlock` when empty.
    #[derive(Default)]
    struct Pipe {
        inbox: Vec<u8>,
    }
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.inbox.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.inbox.len());
            buf[..n].copy_from_slice(&self.inbox[..n]);
            self.inbox.drain(..n);
            Ok(n)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inbox.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pair() -> (Layer, Layer) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let c = rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap())
            .unwrap();
        (Layer::tls(s), Layer::tls(c))
    }

    #[test]
    fn lines_cross_a_tls_pair_both_ways_and_more_than_the_buffer_limit() {
        let (mut s, mut c) = pair();
        let (mut to_s, mut to_c) = (Pipe::default(), Pipe::default());
        let (mut s_out, mut c_out) = (OutBuffer::with_cap(1 << 20), OutBuffer::with_cap(1 << 20));
        let (mut s_rd, mut c_rd) = (LineReader::new(), LineReader::new());
        // Queued before the handshake: rustls or the OutBuffer holds it.
        let long = "x".repeat(900);
        for i in 0..200 {
            c_out.push_line(&format!("LINE {i} {long}")).unwrap();
        }
        s_out.push_line("EVENT WELCOME hi").unwrap();
        let (mut at_s, mut at_c) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            c.flush(&mut c_out, &mut to_s).unwrap();
            s.read_frames(&mut to_s, &mut s_rd, |f| at_s.push(f))
                .unwrap();
            s.flush(&mut s_out, &mut to_c).unwrap();
            c.read_frames(&mut to_c, &mut c_rd, |f| at_c.push(f))
                .unwrap();
            if at_s.len() == 200 && !at_c.is_empty() {
                break;
            }
        }
        assert_eq!(at_c, vec![Frame::Line("EVENT WELCOME hi".into())]);
        assert_eq!(at_s.len(), 200);
        assert_eq!(at_s[199], Frame::Line(format!("LINE 199 {long}")));
        assert!(s.flushed(&s_out) && c.flushed(&c_out));
        // Both ends derive the same exporter keys (what sealed datagrams use).
        let ks = s
            .tls_conn()
            .unwrap()
            .export_keying_material([0u8; 32], b"test", None)
            .unwrap();
        let kc = c
            .tls_conn()
            .unwrap()
            .export_keying_material([0u8; 32], b"test", None)
            .unwrap();
        assert_eq!(ks, kc);
    }

    #[test]
    fn garbage_instead_of_records_is_a_tls_failure() {
        let (mut s, _) = pair();
        let mut sock = Pipe {
            inbox: b"\x16\x03\x01\x00\x05hello-not-a-client-hello".to_vec(),
        };
        let mut rd = LineReader::new();
        assert!(s.read_frames(&mut sock, &mut rd, |_| {}).is_err());
    }

    #[test]
    fn sniffing_holds_output_back() {
        let mut l = Layer::Sniffing {
            until: Instant::now(),
        };
        let mut out = OutBuffer::with_cap(100);
        out.push_line("EVENT WELCOME").unwrap();
        let mut sock = Pipe::default();
        assert!(!l.flush(&mut out, &mut sock).unwrap());
        assert!(sock.inbox.is_empty() && !l.wants_write(&out));
        l = Layer::Plain;
        assert!(l.flush(&mut out, &mut sock).unwrap());
        assert_eq!(sock.inbox, b"EVENT WELCOME\n");
    }
}
