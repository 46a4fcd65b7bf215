//! Line framing shared by every peerline connection (control, peer links).
//!
//! The receive buffer owns the size cap: a line longer than [`MAX_LINE`] bytes,
//! terminator included, becomes exactly one [`Frame::TooLong`] however it is
//! split across reads, and the rest of it is discarded without being stored.
//! Memory per connection is therefore bounded by `MAX_LINE` plus one read chunk.

/// Longest accepted line in bytes, counting the `\n` (and a `\r` before it).
pub const MAX_LINE: usize = 1024;

/// One unit of input taken off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-empty line without its terminator (`\n` or `\r\n`).
    Line(String),
    /// A line exceeded [`MAX_LINE`]; it has been (or is being) discarded whole.
    TooLong,
    /// A line of acceptable length that is not valid UTF-8; discarded.
    BadUtf8,
}

/// Incremental line splitter with a hard cap.
///
/// Feed it bytes with [`LineReader::push`], then call [`LineReader::next_frame`]
/// until it returns `None`. It remembers how far it has searched for `\n`, so
/// input arriving one byte at a time costs linear, not quadratic, time.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// Bytes in `buf[start..scanned]` are known to contain no `\n`.
    scanned: usize,
    /// Inside an over-long line that was already reported: drop until `\n`.
    discarding: bool,
}

impl LineReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Call `next_frame` until `None` before the next push
    /// to keep memory bounded.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a complete line.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes allocated (what dropping it gives back to the allocator).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// True while the reader is skipping the tail of an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// The next complete frame, if any. Empty lines are skipped.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let from = self.scanned.max(self.start);
            match self.buf[from..].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let newline = from + i;
                    let line_start = self.start;
                    self.start = newline + 1;
                    self.scanned = self.start;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if newline + 1 - line_start > MAX_LINE {
                        return Some(Frame::TooLong);
                    }
                    let mut line = &self.buf[line_start..newline];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    if line.is_empty() {
                        continue;
                    }
                    return Some(match std::str::from_utf8(line) {
                        Ok(s) => Frame::Line(s.to_owned()),
                        Err(_) => Frame::BadUtf8,
                    });
                }
                None => {
                    let pending = self.buf.len() - self.start;
                    if self.discarding || pending >= MAX_LINE {
                        // Without a `\n` in MAX_LINE bytes the line is already too long;
                        // its bytes are never kept.
                        let report = !self.discarding;
                        self.discarding = true;
                        self.buf.clear();
                        self.start = 0;
                        self.scanned = 0;
                        return report.then_some(Frame::TooLong);
                    }
                    if pending == 0 {
                        // Nothing partial is held: free the buffer, so an idle
                        // connection costs no heap (most of them are idle).
                        *self = LineReader::new();
                        return None;
                    }
                    self.scanned = self.buf.len();
                    self.compact();
                    return None;
                }
            }
        }
    }

    /// Moves the unconsumed tail to the front once the consumed prefix dominates.
    fn compact(&mut self) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(reader: &mut LineReader) -> Vec<Frame> {
        std::iter::from_fn(|| reader.next_frame()).collect()
    }

    #[test]
    fn an_idle_reader_holds_no_memory_but_a_partial_line_is_kept() {
        let mut r = LineReader::new();
        r.push(b"PING\nLI");
        assert_eq!(frames_of(&mut r), [Frame::Line("PING".into())]);
        assert_eq!(r.buffered(), 2);
        r.push(b"ST\n");
        assert_eq!(frames_of(&mut r), [Frame::Line("LIST".into())]);
        assert_eq!(r.buf.capacity(), 0);
    }

    /// Feeds `input` whole, byte by byte, and split at every index; all must agree.
    fn all_ways(input: &[u8]) -> Vec<Frame> {
        let mut whole = LineReader::new();
        whole.push(input);
        let expected = frames_of(&mut whole);

        let mut bytewise = LineReader::new();
        let mut got = Vec::new();
        for b in input {
            bytewise.push(std::slice::from_ref(b));
            got.extend(frames_of(&mut bytewise));
        }
        assert_eq!(got, expected, "byte-by-byte differs");

        for split in 0..=input.len() {
            let mut r = LineReader::new();
            r.push(&input[..split]);
            let mut got = frames_of(&mut r);
            r.push(&input[split..]);
            got.extend(frames_of(&mut r));
            assert_eq!(got, expected, "split at {split} differs");
        }
        expected
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_owned())
    }

    #[test]
    fn lf_and_crlf_terminate_lines() {
        assert_eq!(
            all_ways(b"PING\nLIST\r\n"),
            vec![line("PING"), line("LIST")]
        );
    }

    #[test]
    fn empty_lines_are_ignored() {
        assert_eq!(all_ways(b"\n\r\n\nPING\n\n"), vec![line("PING")]);
    }

    #[test]
    fn incomplete_line_waits() {
        let mut r = LineReader::new();
        r.push(b"PI");
        assert_eq!(r.next_frame(), None);
        r.push(b"NG\n");
        assert_eq!(r.next_frame(), Some(line("PING")));
    }

    #[test]
    fn line_of_exactly_max_is_accepted() {
        let mut input = vec![b'a'; MAX_LINE - 1];
        input.push(b'\n');
        assert_eq!(all_ways(&input), vec![line(&"a".repeat(MAX_LINE - 1))]);
        let mut crlf = vec![b'a'; MAX_LINE - 2];
        crlf.extend_from_slice(b"\r\n");
        assert_eq!(all_ways(&crlf), vec![line(&"a".repeat(MAX_LINE - 2))]);
    }

    #[test]
    fn one_byte_over_is_too_long_once_and_next_line_survives() {
        let mut input = vec![b'a'; MAX_LINE];
        input.extend_from_slice(b"\nPING\n");
        assert_eq!(all_ways(&input), vec![Frame::TooLong, line("PING")]);
        let mut crlf = vec![b'a'; MAX_LINE - 1];
        crlf.extend_from_slice(b"\r\nPING\n");
        assert_eq!(all_ways(&crlf), vec![Frame::TooLong, line("PING")]);
    }

    #[test]
    fn huge_line_is_reported_once_and_not_stored() {
        let mut r = LineReader::new();
        let chunk = vec![b'x'; 4096];
        let mut frames = Vec::new();
        for _ in 0..100 {
            r.push(&chunk);
            frames.extend(frames_of(&mut r));
            assert!(r.buffered() <= MAX_LINE, "buffer grew to {}", r.buffered());
        }
        r.push(b"tail\nPING\n");
        frames.extend(frames_of(&mut r));
        assert_eq!(frames, vec![Frame::TooLong, line("PING")]);
    }

    #[test]
    fn invalid_utf8_is_its_own_frame() {
        assert_eq!(
            all_ways(b"\xff\xfe\nPING\n"),
            vec![Frame::BadUtf8, line("PING")]
        );
    }

    #[test]
    fn multibyte_utf8_split_anywhere_is_fine() {
        assert_eq!(
            all_ways("MSG héllo ✓\n".as_bytes()),
            vec![line("MSG héllo ✓")]
        );
    }
}
