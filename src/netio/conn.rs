//! One connection's life cycle, the same for both drivers: the server's
//! control connections and the client's server connection and peer links.
//!
//! [`Connection`] holds a stream, the [`Layer`] (plain or TLS) between it and
//! the line reader, the line reader and the capped output buffer, and the
//! state of its ending. The drivers keep what is theirs beside it (the
//! server's read gate and dirty list, the client's dial in progress and link
//! id) and make the protocol decisions; the sequence is the same on both
//! sides:
//!
//! - readable → [`Connection::next_input`] until it says stop: one socket read
//!   at a time (through the layer) into the line reader, frames handed out
//!   one at a time, so a driver may stop between two frames (backpressure);
//! - queued output → [`Connection::flush`] until `WouldBlock`;
//! - interest computed from state ([`Connection::wanted`]) and applied by
//!   [`Connection::sync_interest`], never flipped ad hoc;
//! - orderly close: [`Connection::begin_close`] with a linger deadline; the
//!   queued bytes go out, then TLS `close_notify` and FIN (half-close); input
//!   is read and thrown away ([`Connection::discard_input`]) until the peer
//!   closes too or the deadline passes ([`Connection::settle`]);
//! - an error (write failed, TLS failure) → the connection is gone.
//!
//! Invariants:
//! - At most [`READ_BUDGET`] socket bytes are read per turn per connection;
//!   a read that stops at the budget says so ([`Next::Budget`]) and the
//!   driver schedules the next read itself ([`ReadsDue`]): edge-triggered
//!   readiness does not repeat for bytes already waiting.
//! - Whatever stops reading before `WouldBlock` puts the connection on
//!   [`ReadsDue`]; a connection is on it at most once while its flag is set,
//!   and taking it off always clears the flag, so the next scheduling cannot
//!   be lost (issue 10, defect 11: a flag left set lost the wake-up for good).
//! - Frames that arrived with the end of input are handed out before
//!   [`Next::Ended`], which is reported exactly once.
//! - FIN is written once, and only when everything queued (TLS records
//!   included) is out: the peer never loses our last lines to our close.
//! - A gone connection reads nothing, writes nothing and wants no interest.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::{interest, Chunk, OutBuffer, ReadStatus, READ_BUDGET};
use crate::proto::sealed::UdpSecret;
use crate::proto::{Frame, LineReader};
use crate::tls::layer::TlsFailure;
use crate::tls::Layer;

/// Shutting down the write side only (FIN), for streams that can.
pub trait HalfClose {
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl HalfClose for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// What [`Connection::next_input`] produced.
#[derive(Debug)]
pub enum Next {
    /// One complete frame for the engine.
    Frame(Frame),
    /// The TLS handshake has just finished: this is the connection's
    /// datagram secret, handed out once, before any frame that came with
    /// the handshake's end (so a `LOGIN` among them starts a sealed session).
    Secret(UdpSecret),
    /// [`READ_BUDGET`] used up: read again next turn without an event.
    Budget,
    /// The socket said `WouldBlock`: wait for the next readiness event.
    Drained,
    /// The peer closed its side (or the read failed), and every frame before
    /// that was handed out. Reported once; [`Next::Drained`] after that.
    Ended,
    /// The TLS session failed; its alert was sent if the socket took it, and
    /// the connection is gone.
    Failed(TlsFailure),
}

/// What [`Connection::settle`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Still open (or still lingering).
    Open,
    /// A write failed just now: the connection is gone, and whoever holds
    /// its session should hear of it.
    Failed,
    /// Gone: closed in order, lingered out, or failed earlier. Free it.
    Finished,
}

/// A stream, its layer, its line reader and its output, and how far its
/// ending has got. See the module comment for the life cycle.
pub struct Connection<S> {
    pub stream: S,
    /// Plain or TLS between the stream and `reader`/`out`; the rustls
    /// connection (for `export_keying_material`) is `layer.tls_conn()`.
    pub layer: Layer,
    pub reader: LineReader,
    pub out: OutBuffer,
    registered: Option<Interest>,
    /// On a [`ReadsDue`] list: read next turn without waiting for an edge.
    read_again: bool,
    /// The datagram secret was handed out ([`Next::Secret`]).
    secret_given: bool,
    /// Set once we decided to close: when to give up lingering.
    closing: Option<Instant>,
    wrote_fin: bool,
    /// The peer sent FIN (or the read failed): nothing more to read, though
    /// it may still read our replies (`nc -N`), so this is not `gone`.
    input_ended: bool,
    /// [`Next::Ended`] was handed out.
    end_told: bool,
    gone: bool,
}

impl<S: Read + Write + HalfClose> Connection<S> {
    pub fn new(stream: S, layer: Layer, out_cap: usize) -> Self {
        Connection {
            stream,
            layer,
            reader: LineReader::new(),
            out: OutBuffer::with_cap(out_cap),
            registered: None,
            read_again: false,
            secret_given: false,
            closing: None,
            wrote_fin: false,
            input_ended: false,
            end_told: false,
            gone: false,
        }
    }

    /// Closed, failed or lingered out: nothing more happens on it.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Ends it now, without the orderly close (the engine forgot it, or the
    /// driver gave up on it).
    pub fn mark_gone(&mut self) {
        self.gone = true;
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// When a closing connection stops lingering.
    pub fn closing_deadline(&self) -> Option<Instant> {
        self.closing
    }

    pub fn input_ended(&self) -> bool {
        self.input_ended
    }

    /// Bytes wait to go to the socket (queued lines, or TLS records).
    pub fn wants_write(&self) -> bool {
        self.layer.wants_write(&self.out)
    }

    /// Everything queued has reached the socket.
    pub fn flushed(&self) -> bool {
        self.layer.flushed(&self.out)
    }

    /// Starts the orderly close: what is queued goes out, then FIN; input is
    /// discarded until the peer closes too or `linger_until`. True the first
    /// time (the caller tracks lingering connections).
    pub fn begin_close(&mut self, linger_until: Instant) -> bool {
        if self.closing.is_some() {
            return false;
        }
        self.closing = Some(linger_until);
        true
    }

    /// Writes until empty or `WouldBlock`; once closing and everything is
    /// out, sends `close_notify` and FIN, once. `Ok(true)` when all is out.
    /// A failed write makes the connection gone.
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.gone {
            return Ok(false);
        }
        if let Err(e) = self.layer.flush(&mut self.out, &mut self.stream) {
            self.gone = true;
            return Err(e);
        }
        if self.closing.is_some() && !self.wrote_fin && self.flushed() {
            self.layer.close_notify();
            let _ = self.layer.flush(&mut self.out, &mut self.stream);
            let _ = self.stream.shutdown_write();
            self.wrote_fin = true;
        }
        Ok(self.flushed())
    }

    /// The end of a turn for this connection: writes what waits (and FIN
    /// when closing), and ends a closing one once both directions are done
    /// or its linger deadline passed.
    pub fn settle(&mut self, now: Instant) -> Fate {
        if self.gone {
            return Fate::Finished;
        }
        let fin_due = self.closing.is_some() && !self.wrote_fin;
        if (self.wants_write() || fin_due) && self.flush().is_err() {
            return Fate::Failed;
        }
        if let Some(deadline) = self.closing {
            if now >= deadline || (self.wrote_fin && self.input_ended) {
                self.gone = true;
                return Fate::Finished;
            }
        }
        Fate::Open
    }

    /// The next thing the connection's input has for the engine: a frame
    /// already in the line reader, else one socket read (at most one chunk,
    /// through the layer) and look again. `taken` counts this turn's bytes
    /// against [`READ_BUDGET`]. The bytes a caller that stops between frames
    /// is not ready for stay in the kernel, at most one chunk of them here.
    pub fn next_input(&mut self, taken: &mut usize) -> Next {
        let mut drained = false;
        loop {
            if self.gone {
                return Next::Drained;
            }
            if !self.secret_given {
                if let Some(secret) = self.layer.udp_secret() {
                    self.secret_given = true;
                    return Next::Secret(secret);
                }
            }
            if let Some(frame) = self.reader.next_frame() {
                return Next::Frame(frame);
            }
            if self.input_ended {
                if self.end_told {
                    return Next::Drained;
                }
                self.end_told = true;
                return Next::Ended;
            }
            if drained {
                return Next::Drained;
            }
            if *taken >= READ_BUDGET {
                return Next::Budget;
            }
            match self.layer.read_chunk(&mut self.stream, &mut self.reader) {
                Ok(Chunk::Got(n)) => *taken += n,
                // Look at the reader once more: a TLS read can leave frames.
                Ok(Chunk::Drained) => drained = true,
                Ok(Chunk::Closed) => self.input_ended = true,
                Err(e) => {
                    // Send rustls' alert if the socket takes it; then drop.
                    let _ = self.layer.flush(&mut self.out, &mut self.stream);
                    self.gone = true;
                    return Next::Failed(e);
                }
            }
        }
    }

    /// Reads raw bytes up to [`READ_BUDGET`], past the line reader: for
    /// streams whose bytes the engine decodes itself (peer links, whose
    /// encryption is the engine's). Plain streams only.
    pub fn read_bytes(&mut self, on_chunk: impl FnMut(&[u8])) -> ReadStatus {
        debug_assert!(!self.layer.is_tls(), "raw bytes are read past the layer");
        if self.gone || self.input_ended {
            return ReadStatus::Drained;
        }
        let status = super::read_chunks(&mut self.stream, on_chunk);
        if status == ReadStatus::Closed {
            self.input_ended = true;
            self.end_told = true;
        }
        status
    }

    /// A closing connection's input, read and thrown away until the peer
    /// closes too; through the layer, so a TLS peer still gets the handshake
    /// our last lines need.
    pub fn discard_input(&mut self) {
        if self.gone || self.input_ended {
            return;
        }
        let mut sink = LineReader::new();
        if !matches!(
            self.layer.read_frames(&mut self.stream, &mut sink, |_| {}),
            Ok(ReadStatus::Drained | ReadStatus::MoreWaiting)
        ) {
            self.input_ended = true;
            self.end_told = true;
        }
    }

    /// Interest from state: readable while not gone (input, EOF, draining),
    /// writable while bytes wait or `also_write` (a dial in progress).
    pub fn wanted(&self, also_write: bool) -> Option<Interest> {
        let live = !self.gone;
        interest(live, live && (also_write || self.wants_write()))
    }

    /// Brings the registration in line with [`Connection::wanted`]:
    /// registers, re-registers or deregisters as needed.
    pub fn sync_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        also_write: bool,
    ) -> io::Result<()>
    where
        S: Source,
    {
        let want = self.wanted(also_write);
        if want == self.registered {
            return Ok(());
        }
        let result = match (self.registered, want) {
            (None, Some(i)) => registry.register(&mut self.stream, token, i),
            (Some(_), Some(i)) => registry.reregister(&mut self.stream, token, i),
            (Some(_), None) => registry.deregister(&mut self.stream),
            (None, None) => Ok(()),
        };
        self.registered = want;
        result
    }

    /// Takes it out of the poll, if it is in.
    pub fn deregister(&mut self, registry: &Registry)
    where
        S: Source,
    {
        if self.registered.take().is_some() {
            let _ = registry.deregister(&mut self.stream);
        }
    }

    /// Off a [`ReadsDue`] list: was a read due? Clears the flag either way,
    /// so whatever makes it readable later can schedule it again.
    pub fn take_read_again(&mut self) -> bool {
        std::mem::replace(&mut self.read_again, false)
    }
}

/// Connections to read next turn without waiting for a readiness event, by
/// slab key (checked again when taken: a slot may be freed and reused).
#[derive(Debug, Default)]
pub struct ReadsDue(Vec<usize>);

impl ReadsDue {
    /// Reads connection `key` next turn (once, however often asked).
    pub fn schedule<S>(&mut self, key: usize, c: &mut Connection<S>) {
        if !c.read_again {
            c.read_again = true;
            self.0.push(key);
        }
    }

    /// The keys due; each one's flag is taken with
    /// [`Connection::take_read_again`] before it is read.
    pub fn take(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;

    /// One scripted answer of the mock socket's `read`.
    enum R {
        Data(&'static [u8]),
        Block,
        Intr,
        Eof,
    }

    /// A socket that answers reads from a script and takes at most `room`
    /// bytes of writes (then `WouldBlock`), with an `EINTR` first when asked.
    struct Mock {
        reads: VecDeque<R>,
        written: Vec<u8>,
        room: usize,
        interrupt_write: bool,
        fail_write: bool,
        fin: bool,
    }

    fn mock(reads: Vec<R>) -> Mock {
        Mock {
            reads: reads.into(),
            written: Vec::new(),
            room: usize::MAX,
            interrupt_write: false,
            fail_write: false,
            fin: false,
        }
    }

    impl Read for Mock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                None | Some(R::Block) => Err(io::ErrorKind::WouldBlock.into()),
                Some(R::Intr) => Err(io::ErrorKind::Interrupted.into()),
                Some(R::Eof) => Ok(0),
                Some(R::Data(d)) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    if n < d.len() {
                        self.reads.push_front(R::Data(&d[n..]));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Mock {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            assert!(!self.fin, "a write after FIN");
            if self.fail_write {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            if std::mem::take(&mut self.interrupt_write) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.written.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl HalfClose for Mock {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.fin = true;
            Ok(())
        }
    }

    fn conn(reads: Vec<R>) -> Connection<Mock> {
        Connection::new(mock(reads), Layer::Plain, 1024)
    }

    fn lines(c: &mut Connection<Mock>, taken: &mut usize) -> (Vec<String>, Next) {
        let mut got = Vec::new();
        loop {
            match c.next_input(taken) {
                Next::Frame(Frame::Line(l)) => got.push(l),
                Next::Frame(other) => panic!("{other:?}"),
                other => return (got, other),
            }
        }
    }

    #[test]
    fn input_is_read_until_would_block_across_eintr_and_split_lines() {
        let mut c = conn(vec![
            R::Data(b"PI"),
            R::Intr,
            R::Data(b"NG\nLIST\nQU"),
            R::Data(b"IT\n"),
            R::Block,
            R::Data(b"late\n"),
        ]);
        let mut taken = 0;
        let (got, next) = lines(&mut c, &mut taken);
        assert_eq!(got, ["PING", "LIST", "QUIT"]);
        assert!(matches!(next, Next::Drained), "{next:?}");
        assert_eq!(taken, 15);
        // Nothing read past `WouldBlock`: the next event's read gets it.
        assert_eq!(lines(&mut c, &mut 0).0, ["late"]);
    }

    #[test]
    fn a_reader_may_stop_between_frames_and_resume_where_it_stopped() {
        let mut c = conn(vec![R::Data(b"one\ntwo\nthree\n")]);
        let mut taken = 0;
        assert!(matches!(c.next_input(&mut taken), Next::Frame(_)));
        // The driver's gate closed here; later it takes the rest.
        let (got, _) = lines(&mut c, &mut taken);
        assert_eq!(got, ["two", "three"]);
    }

    #[test]
    fn the_read_budget_stops_a_busy_connection_and_says_so() {
        let count = READ_BUDGET / 5 + 100;
        let big: &'static [u8] = Box::leak(b"PING\n".repeat(count).into_boxed_slice());
        let mut c = conn(vec![R::Data(big), R::Block]);
        let mut taken = 0;
        let (got, next) = lines(&mut c, &mut taken);
        assert!(matches!(next, Next::Budget), "{next:?}");
        assert!(taken >= READ_BUDGET && got.len() < count);
        // Next turn, a fresh budget takes the rest.
        let (rest, next) = lines(&mut c, &mut 0);
        assert!(matches!(next, Next::Drained), "{next:?}");
        assert_eq!(got.len() + rest.len(), count);
    }

    #[test]
    fn frames_before_the_end_come_first_and_the_end_is_told_once() {
        let mut c = conn(vec![R::Data(b"BROADCAST hi\nPING"), R::Eof]);
        let (got, next) = lines(&mut c, &mut 0);
        assert_eq!(got, ["BROADCAST hi"]);
        assert!(matches!(next, Next::Ended), "{next:?}");
        for _ in 0..3 {
            let again = c.next_input(&mut 0);
            assert!(matches!(again, Next::Drained), "told twice: {again:?}");
        }
        assert!(c.input_ended() && !c.is_gone(), "half-closed, not gone");
    }

    #[test]
    fn short_writes_keep_write_interest_until_everything_is_out() {
        let mut c = conn(vec![]);
        c.out.push_line("EVENT WELCOME").unwrap();
        c.stream.room = 5;
        c.stream.interrupt_write = true;
        assert!(!c.flush().unwrap());
        assert_eq!(
            c.wanted(false),
            Some(Interest::READABLE | Interest::WRITABLE)
        );
        c.stream.room = 100;
        assert!(c.flush().unwrap());
        assert_eq!(c.stream.written, b"EVENT WELCOME\n");
        assert_eq!(c.wanted(false), Some(Interest::READABLE));
        assert_eq!(
            c.wanted(true),
            Some(Interest::READABLE | Interest::WRITABLE),
            "a dial in progress waits for writable"
        );
    }

    #[test]
    fn fin_goes_out_only_after_the_last_line_and_the_close_ends_with_both_sides() {
        let t0 = Instant::now();
        let mut c = conn(vec![R::Block, R::Eof]);
        c.out.push_line("OK QUIT").unwrap();
        c.stream.room = 3;
        assert!(c.begin_close(t0 + Duration::from_secs(2)));
        assert!(!c.begin_close(t0 + Duration::from_secs(9)), "once");
        assert_eq!(c.settle(t0), Fate::Open);
        assert!(!c.stream.fin, "FIN before the last line was out");
        c.stream.room = 100;
        assert_eq!(c.settle(t0), Fate::Open, "the peer has not closed yet");
        assert!(c.stream.fin);
        assert_eq!(c.stream.written, b"OK QUIT\n");
        c.discard_input();
        assert!(!c.input_ended());
        c.discard_input();
        assert!(c.input_ended());
        assert_eq!(c.settle(t0), Fate::Finished);
        assert!(c.is_gone() && c.wanted(false).is_none());
    }

    #[test]
    fn a_peer_that_never_reads_is_dropped_at_the_linger_deadline() {
        let t0 = Instant::now();
        let mut c = conn(vec![]);
        c.out.push_line("EVENT CLOSING slow-reader").unwrap();
        c.stream.room = 0;
        c.begin_close(t0 + Duration::from_secs(2));
        assert_eq!(c.settle(t0 + Duration::from_secs(1)), Fate::Open);
        assert_eq!(c.settle(t0 + Duration::from_secs(2)), Fate::Finished);
        assert!(!c.stream.fin);
    }

    #[test]
    fn a_failed_write_ends_the_connection_once() {
        let mut c = conn(vec![R::Data(b"PING\n")]);
        c.out.push_line("OK PING").unwrap();
        c.stream.fail_write = true;
        assert_eq!(c.settle(Instant::now()), Fate::Failed);
        assert_eq!(c.settle(Instant::now()), Fate::Finished);
        assert!(
            matches!(c.next_input(&mut 0), Next::Drained),
            "gone reads nothing"
        );
        assert_eq!(c.wanted(false), None);
    }

    #[test]
    fn raw_bytes_bypass_the_line_reader_and_note_the_end() {
        let mut c = conn(vec![R::Data(b"\x00\x01no newline"), R::Eof]);
        let mut got = Vec::new();
        assert_eq!(
            c.read_bytes(|b| got.extend_from_slice(b)),
            ReadStatus::Closed
        );
        assert_eq!(got, b"\x00\x01no newline");
        assert!(c.input_ended());
        assert_eq!(
            c.read_bytes(|_| panic!("read after the end")),
            ReadStatus::Drained
        );
    }

    /// Issue 10, defect 11: a connection taken off the list without being
    /// read (its gate was closed) kept its flag set, so the next scheduling
    /// was a no-op and the connection was never read again.
    #[test]
    fn taking_a_due_read_always_allows_the_next_scheduling() {
        let mut due = ReadsDue::default();
        let mut c = conn(vec![]);
        due.schedule(3, &mut c);
        due.schedule(3, &mut c);
        assert_eq!(due.take(), [3], "scheduled once");
        // Taken but not read (say, still paused): the flag is cleared anyway.
        assert!(c.take_read_again());
        assert!(due.is_empty());
        due.schedule(3, &mut c);
        assert_eq!(due.take(), [3], "the next scheduling is not lost");
        assert!(c.take_read_again());
        assert!(!c.take_read_again());
    }
}
