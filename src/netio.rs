//! Non-blocking socket plumbing shared by both drivers: one connection life
//! cycle ([`Connection`], in `netio/conn.rs`), bounded output buffers, fair
//! reads into a [`LineReader`], and a UDP send queue that never drops on
//! `WouldBlock`. No protocol knowledge lives here.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::proto::{Frame, LineReader};

mod conn;
pub use conn::{Connection, Fate, HalfClose, Next, ReadsDue};

/// How much one connection may read in one turn before others get theirs.
pub const READ_BUDGET: usize = 64 * 1024;
/// One `read(2)`: the most a [`LineReader`] is handed at once, so the most
/// unconsumed input it holds is this plus a partial line.
pub const READ_CHUNK: usize = 8192;

/// Bytes waiting to be written to a stream, with a hard cap.
///
/// The cap bounds the allocation too, not just the content: the buffer never
/// grows past `cap` bytes of capacity (already-written bytes are dropped
/// before it would), except by the one line [`OutBuffer::replace_with_line`]
/// adds after a partly written one.
#[derive(Debug)]
pub struct OutBuffer {
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    /// The bytes written so far end on a `\n`: the peer holds whole lines only.
    at_boundary: bool,
}

/// The peer is not reading: the buffer would pass its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl OutBuffer {
    pub fn with_cap(cap: usize) -> Self {
        OutBuffer {
            buf: Vec::new(),
            pos: 0,
            cap,
            at_boundary: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes allocated (what dropping it gives back to the allocator).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Queues `line` plus `\n`. Fails, queueing nothing, past the cap.
    pub fn push_line(&mut self, line: &str) -> Result<(), Overflow> {
        self.push_parts(&[line.as_bytes(), b"\n"])
    }

    /// Queues bytes as they are (encrypted frames). Fails, queueing nothing, past the cap.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.push_parts(&[bytes])
    }

    fn push_parts(&mut self, parts: &[&[u8]]) -> Result<(), Overflow> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.len() + total > self.cap {
            return Err(Overflow);
        }
        let need = total;
        if self.pos > 0 && self.buf.len() + need > self.buf.capacity() {
            // Growing would count written bytes against the allocation.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() + need > self.buf.capacity() {
            // Amortised doubling, but never past the cap: a buffer just over
            // half full must not take twice the cap in memory.
            let want = (self.buf.capacity() * 2).clamp(self.buf.len() + need, self.cap);
            self.buf.reserve_exact(want - self.buf.len());
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        Ok(())
    }

    /// Throws away what is queued and queues `line` instead — except the rest
    /// of a line already partly written, which goes out first so the peer
    /// never sees `line` glued to half a line. `line` is queued past the cap
    /// (it is the last thing sent: the caller closes after it).
    pub fn replace_with_line(&mut self, line: &str) {
        let keep = if self.at_boundary {
            0
        } else {
            // Through the `\n` that ends the partly written line.
            self.buf[self.pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.len(), |i| i + 1)
        };
        let mut buf = Vec::with_capacity(keep + line.len() + 1);
        buf.extend_from_slice(&self.buf[self.pos..self.pos + keep]);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.buf = buf;
        self.pos = 0;
    }

    /// Writes until empty or `WouldBlock`. `Ok(true)` when everything is out.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while !self.is_empty() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n;
                    self.at_boundary = self.buf[self.pos - 1] == b'\n';
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() {
            // Give the memory back: most connections are idle most of the
            // time, and a kept buffer would be per-connection RSS for nothing.
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(self.is_empty())
    }
}

/// What a read turn ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// The socket returned `WouldBlock`: wait for the next readiness event.
    Drained,
    /// The peer closed its side (or the connection failed).
    Closed,
    /// [`READ_BUDGET`] was used up with data still waiting: read again next turn
    /// without waiting for an event (edge-triggered readiness will not repeat).
    MoreWaiting,
}

/// What one [`read_chunk`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes are now in the reader.
    Got(usize),
    /// `WouldBlock`: wait for the next readiness event.
    Drained,
    /// The peer closed its side (or the connection failed).
    Closed,
}

/// One `read(2)` of at most [`READ_CHUNK`] bytes into `reader`. Callers that
/// may stop taking frames part-way (backpressure) read with this, one chunk at
/// a time, and only once the reader has no complete frame left: the bytes
/// they are not ready for stay in the kernel, not in our memory.
pub fn read_chunk(r: &mut impl Read, reader: &mut LineReader) -> Chunk {
    let mut chunk = [0u8; READ_CHUNK];
    let got = read_once(r, &mut chunk);
    if let Chunk::Got(n) = got {
        reader.push(&chunk[..n]);
    }
    got
}

/// One `read(2)` into `buf`, retried on `EINTR`.
fn read_once(r: &mut impl Read, buf: &mut [u8]) -> Chunk {
    loop {
        match r.read(buf) {
            Ok(0) => return Chunk::Closed,
            Ok(n) => return Chunk::Got(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Chunk::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Chunk::Closed,
        }
    }
}

/// Reads up to [`READ_BUDGET`] bytes, handing each complete frame to `on_frame`
/// as soon as its chunk arrives, so the reader's buffer stays bounded.
pub fn read_frames(
    r: &mut impl Read,
    reader: &mut LineReader,
    mut on_frame: impl FnMut(Frame),
) -> ReadStatus {
    read_chunks(r, |chunk| {
        reader.push(chunk);
        while let Some(frame) = reader.next_frame() {
            on_frame(frame);
        }
    })
}

/// Reads up to [`READ_BUDGET`] bytes in chunks of at most [`READ_CHUNK`],
/// handing each to `on_chunk` (for decoders other than lines: encrypted links).
pub fn read_chunks(r: &mut impl Read, mut on_chunk: impl FnMut(&[u8])) -> ReadStatus {
    let mut chunk = [0u8; READ_CHUNK];
    let mut taken = 0;
    loop {
        if taken >= READ_BUDGET {
            return ReadStatus::MoreWaiting;
        }
        match read_once(r, &mut chunk) {
            Chunk::Got(n) => {
                taken += n;
                on_chunk(&chunk[..n]);
            }
            Chunk::Drained => return ReadStatus::Drained,
            Chunk::Closed => return ReadStatus::Closed,
        }
    }
}

/// Interest to register for a stream, computed from its state (never flipped ad hoc).
/// `None` means "nothing": deregister.
pub fn interest(read: bool, write: bool) -> Option<Interest> {
    match (read, write) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}

/// Datagrams that met `WouldBlock`, sent in order when the socket is writable.
#[derive(Debug)]
pub struct UdpQueue {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    cap: usize,
    /// Payload bytes queued, and their bound.
    bytes: usize,
    max_bytes: usize,
    /// Datagrams dropped because the queue was full (reported in logs).
    pub dropped: u64,
}

impl UdpQueue {
    pub fn with_cap(cap: usize) -> Self {
        Self::with_caps(cap, usize::MAX)
    }

    /// A queue of at most `cap` datagrams and `max_bytes` payload bytes.
    pub fn with_caps(cap: usize, max_bytes: usize) -> Self {
        UdpQueue {
            queue: VecDeque::new(),
            cap,
            bytes: 0,
            max_bytes,
            dropped: 0,
        }
    }

    /// Payload bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends now if nothing is queued and the socket takes it; queues (a copy)
    /// otherwise.
    pub fn send(&mut self, sock: &UdpSocket, to: SocketAddr, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        if self.queue.is_empty() {
            match sock.send_to(bytes, to) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // ICMP errors and the like: UDP is best effort, the retransmit
                    // schedule above us covers a lost datagram.
                    log::debug!("udp send to {to} failed: {e}");
                    return;
                }
            }
        }
        if self.queue.len() >= self.cap || self.bytes.saturating_add(bytes.len()) > self.max_bytes {
            self.dropped += 1;
            return;
        }
        self.bytes += bytes.len();
        self.queue.push_back((to, bytes.to_vec()));
    }

    /// Sends queued datagrams until empty or `WouldBlock`.
    pub fn flush(&mut self, sock: &UdpSocket) {
        while let Some((to, bytes)) = self.queue.front() {
            match sock.send_to(bytes, *to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => log::debug!("udp send to {to} failed: {e}"),
                Ok(_) => {}
            }
            if let Some((_, sent)) = self.queue.pop_front() {
                self.bytes -= sent.len();
            }
        }
        // Drained after a burst: do not keep its memory resident.
        self.queue = VecDeque::new();
    }
}

/// `setsockopt` for the integer-valued options; mio exposes none of these.
pub fn set_int_option(
    sock: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's lifetime; the option value is a
    // live c_int whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// TCP keepalive: a peer whose host vanished (power loss, cable pulled: no
/// FIN, no RST) is noticed after `idle_secs` of silence plus 3 probes 10 s
/// apart. The server uses it on control connections (so such a client leaves
/// LIST), the client on its server connection (so a server that vanished is
/// noticed even when nothing is being sent). A live peer never notices: the
/// kernel answers the probes.
pub fn enable_keepalive(stream: &impl std::os::fd::AsRawFd, idle_secs: libc::c_int) {
    let set = |level, name, value| set_int_option(stream, level, name, value);
    let result = set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)
        .and_then(|()| set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs))
        .and_then(|()| set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10))
        .and_then(|()| set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3));
    if let Err(e) = result {
        log::debug!("cannot set TCP keepalive: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `room` bytes, then says `WouldBlock`.
    struct Choked {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Choked {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn out_buffer_caps_and_resumes_short_writes() {
        let mut out = OutBuffer::with_cap(16);
        out.push_line("hello").unwrap();
        out.push_line("world").unwrap();
        assert_eq!(out.push_line("overflowing"), Err(Overflow));
        let mut w = Choked {
            got: Vec::new(),
            room: 4,
        };
        assert!(!out.write_to(&mut w).unwrap());
        w.room = 100;
        assert!(out.write_to(&mut w).unwrap());
        assert_eq!(w.got, b"hello\nworld\n");
        assert_eq!(out.buf.capacity(), 0, "a drained buffer keeps no memory");
        assert!(out.push_line("overflowing").is_ok());
    }

    #[test]
    fn udp_queue_is_bounded_in_bytes() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut q = UdpQueue::with_caps(100, 250);
        // Nothing is sent while something is queued, so queue by hand first.
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        q.queue.push_back((to, vec![0; 100]));
        q.bytes = 100;
        q.send(&sock, to, [1u8; 100]);
        assert_eq!((q.queue.len(), q.queued_bytes(), q.dropped), (2, 200, 0));
        q.send(&sock, to, [2u8; 100]);
        assert_eq!((q.queue.len(), q.queued_bytes(), q.dropped), (2, 200, 1));
        q.send(&sock, to, [3u8; 50]);
        assert_eq!((q.queue.len(), q.queued_bytes(), q.dropped), (3, 250, 1));
        q.flush(&sock);
        assert_eq!((q.queue.len(), q.queued_bytes()), (0, 0));
    }

    #[test]
    fn replacing_keeps_the_rest_of_a_partly_written_line_only() {
        let mut out = OutBuffer::with_cap(1024);
        out.push_line("first line").unwrap();
        out.push_line("second").unwrap();
        let mut w = Choked {
            got: Vec::new(),
            room: 4,
        };
        out.write_to(&mut w).unwrap();
        out.replace_with_line("EVENT CLOSING slow-reader");
        w.room = 1000;
        assert!(out.write_to(&mut w).unwrap());
        assert_eq!(w.got, b"first line\nEVENT CLOSING slow-reader\n");

        // Written up to a line's end: nothing of the next line goes out.
        let mut out = OutBuffer::with_cap(1024);
        out.push_line("one").unwrap();
        out.push_line("two").unwrap();
        let mut w = Choked {
            got: Vec::new(),
            room: 4,
        };
        out.write_to(&mut w).unwrap();
        out.replace_with_line("bye");
        w.room = 1000;
        out.write_to(&mut w).unwrap();
        assert_eq!(w.got, b"one\nbye\n");
    }

    #[test]
    fn a_partly_written_line_is_tracked_across_compaction() {
        // Written past half the buffer, mid-line: the written prefix is
        // dropped, and the boundary must still be known.
        let mut out = OutBuffer::with_cap(1024);
        out.push_line("aaaaaaaa").unwrap();
        out.push_line("bb").unwrap();
        let mut w = Choked {
            got: Vec::new(),
            room: 10,
        };
        out.write_to(&mut w).unwrap();
        out.replace_with_line("bye");
        w.room = 1000;
        out.write_to(&mut w).unwrap();
        assert_eq!(w.got, b"aaaaaaaa\nbb\nbye\n");
    }

    #[test]
    fn the_allocation_never_passes_the_cap() {
        let cap = 1000;
        let mut out = OutBuffer::with_cap(cap);
        let mut w = Choked {
            got: Vec::new(),
            room: 0,
        };
        for round in 0..50 {
            while out.push_line("0123456789abcdef").is_ok() {}
            assert!(
                out.buf.capacity() <= cap,
                "round {round}: {}",
                out.buf.capacity()
            );
            // The reader takes a little, then stalls: written bytes must not
            // count against the allocation.
            w.room = 37;
            out.write_to(&mut w).unwrap();
        }
    }

    #[test]
    fn read_frames_stops_at_budget() {
        let data = b"PING\n".repeat(READ_BUDGET / 4);
        let mut src = &data[..];
        let mut reader = LineReader::new();
        let mut n = 0;
        assert_eq!(
            read_frames(&mut src, &mut reader, |_| n += 1),
            ReadStatus::MoreWaiting
        );
        assert!(n > 0 && n < READ_BUDGET / 4);
        assert_eq!(
            read_frames(&mut src, &mut reader, |_| n += 1),
            ReadStatus::Closed
        );
        assert_eq!(n, READ_BUDGET / 4);
    }
}

/// An address as peerline shows and compares it: an IPv4 peer of a
/// dual-stack socket arrives as `::ffff:a.b.c.d` and is `a.b.c.d` everywhere
/// after this (LIST, EVENT REQUEST, `CONNECT <ip>`, logs).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The form a socket of family `local` can send to: a canonical IPv4 address
/// becomes IPv4-mapped again for an IPv6 (dual-stack) socket.
pub fn for_socket(addr: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (local, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod addr_tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip_through_canonical_form() {
        let mapped: SocketAddr = "[::ffff:203.0.113.5]:4400".parse().unwrap();
        let v4: SocketAddr = "203.0.113.5:4400".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4400".parse().unwrap();
        let dual: SocketAddr = "[::]:4400".parse().unwrap();
        let only4: SocketAddr = "0.0.0.0:4400".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        assert_eq!(canonical(v6), v6);
        assert_eq!(for_socket(v4, dual), mapped);
        assert_eq!(for_socket(v4, only4), v4);
        assert_eq!(for_socket(v6, dual), v6);
    }
}

/// The parts of a side-channel connection (admin socket, metrics) that the
/// end of a turn needs: its stream, its queued reply, whether the reply is
/// complete, and the interest it is registered with.
pub struct ReplyParts<'a, S> {
    pub stream: &'a mut S,
    pub out: &'a mut OutBuffer,
    pub answered: bool,
    pub registered: &'a mut Interest,
}

/// The end of a turn for a side channel, one request and one reply per
/// connection: writes what is queued, keeps each connection's interest in
/// step with it, closes a connection once its reply is out (or its write
/// failed) and frees the closed ones (those in `dead`, queued by reads too).
/// Connection `k` has token `base + k`.
pub fn end_side_turn<C, S: Write + Source>(
    conns: &mut Slab<C>,
    dead: &mut Vec<usize>,
    registry: &Registry,
    base: usize,
    parts: impl Fn(&mut C) -> ReplyParts<'_, S>,
) {
    for (key, c) in conns.iter_mut() {
        let c = parts(c);
        if c.out.is_empty() && !c.answered {
            continue;
        }
        match c.out.write_to(c.stream) {
            Ok(true) if c.answered => dead.push(key),
            Ok(_) => {}
            Err(_) => dead.push(key),
        }
        let want = if c.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if want != *c.registered {
            let _ = registry.reregister(c.stream, Token(base + key), want);
            *c.registered = want;
        }
    }
    dead.sort_unstable();
    dead.dedup();
    for key in dead.drain(..) {
        if let Some(mut c) = conns.try_remove(key) {
            let _ = registry.deregister(parts(&mut c).stream);
        }
    }
}
