//! Flow control for one control connection: when the driver stops reading
//! it, and what makes it read again.
//!
//! Invariants:
//! - Input is taken one frame at a time, and the gate is looked at after each
//!   one, so no limit is overshot by more than one command's worth: the
//!   engine's backlog never holds more than its limit, and a connection's
//!   queued output passes [`OUT_HIGH_WATER`] by at most one command's replies.
//!   Bytes not yet taken stay in the kernel's receive queue (TCP then slows
//!   the sender down), or, at most one read chunk of them, in the line reader.
//! - Work done for a connection is bounded by what it reads back, not by what
//!   it sends: a client that sends `LIST` forever and reads nothing stops
//!   being read once [`OUT_HIGH_WATER`] bytes wait for it.
//! - Every reason to close the gate has one event that opens it again, and
//!   that event reports "open now" so the driver schedules a read itself:
//!   edge-triggered readiness does not repeat for bytes already waiting.
//!     - the engine is working on its last command (a hash, a store write) →
//!       `Output::Resume` ([`ReadGate::engine_resumed`]);
//!     - output above the high-water mark → written down to [`OUT_LOW_WATER`]
//!       ([`ReadGate::output_drained`]).
//!
//!   The third reason to stop, the per-turn read budget, reschedules at once.

/// A client that stops reading may have this much queued before it is
/// dropped (`EVENT CLOSING slow-reader`). Only output it did not ask for
/// (broadcasts, events) can get it there: its own commands stop being read at
/// [`OUT_HIGH_WATER`].
pub const OUT_CAP: usize = 1 << 20;
/// Queued output at which a connection's input stops being read. Large enough
/// to keep a fast reader's socket busy between turns (a `LIST` of 2,000 users
/// fits), small enough that a client that asks and never reads holds some
/// 64–128 KiB (the buffer's allocation), not the 1 MiB cap.
pub const OUT_HIGH_WATER: usize = 64 * 1024;
/// Queued output below which reading resumes; the gap keeps a connection
/// that reads slowly from flipping between stopped and reading every turn.
pub const OUT_LOW_WATER: usize = 16 * 1024;

/// Why a connection's input is not being taken. Open when both are false.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadGate {
    /// The engine takes no input from it now (a hash or store write is pending).
    engine_full: bool,
    /// Its queued output passed [`OUT_HIGH_WATER`] and has not yet gone
    /// below [`OUT_LOW_WATER`].
    output_full: bool,
}

impl ReadGate {
    /// May the next frame be taken?
    pub fn is_open(&self) -> bool {
        !self.engine_full && !self.output_full
    }

    /// After one frame was handed to the engine and its outputs queued: may
    /// the next one be taken?
    pub fn after_frame(&mut self, engine_accepts: bool, queued_out: usize) -> bool {
        self.engine_full |= !engine_accepts;
        self.output_full |= queued_out >= OUT_HIGH_WATER;
        self.is_open()
    }

    /// The engine took up the connection's input again. True: read it now.
    pub fn engine_resumed(&mut self) -> bool {
        self.engine_full = false;
        self.is_open()
    }

    /// Output was written. True only when this reopened the gate: read now.
    pub fn output_drained(&mut self, queued_out: usize) -> bool {
        if self.output_full && queued_out <= OUT_LOW_WATER {
            self.output_full = false;
            return self.is_open();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_stops_input_at_the_high_mark_and_resumes_below_the_low_one() {
        let mut g = ReadGate::default();
        assert!(g.after_frame(true, OUT_HIGH_WATER - 1));
        assert!(!g.after_frame(true, OUT_HIGH_WATER));
        // Draining to between the marks does not reopen it (no flapping).
        assert!(!g.output_drained(OUT_LOW_WATER + 1));
        assert!(!g.is_open());
        assert!(g.output_drained(OUT_LOW_WATER));
        assert!(g.is_open());
        // Once open, more draining is not a second wake-up.
        assert!(!g.output_drained(0));
    }

    #[test]
    fn both_reasons_must_clear_and_the_last_one_to_clear_wakes_the_reader() {
        let mut g = ReadGate::default();
        assert!(!g.after_frame(false, OUT_HIGH_WATER));
        assert!(!g.engine_resumed(), "output still above the mark");
        assert!(g.output_drained(0), "the last reason cleared: read now");

        let mut g = ReadGate::default();
        assert!(!g.after_frame(false, OUT_HIGH_WATER));
        assert!(!g.output_drained(0), "the engine is still full");
        assert!(g.engine_resumed(), "the last reason cleared: read now");
    }

    #[test]
    fn a_command_in_progress_alone_closes_and_resume_reopens() {
        let mut g = ReadGate::default();
        assert!(!g.after_frame(false, 0));
        assert!(!g.is_open());
        assert!(g.engine_resumed());
        assert!(g.after_frame(true, 0));
    }
}
