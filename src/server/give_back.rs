//! Giving freed memory back to the OS once connections that held large
//! buffers are gone (issue 10, defect 14: 300 clients that never read took
//! 1.9 GB, and RSS stayed at 1.97 GB after all of them closed).
//!
//! Why this is needed: glibc's malloc hands freed memory back to the kernel
//! only from the top of the heap (past `M_TRIM_THRESHOLD`) and as whole
//! mmapped chunks (at least `M_MMAP_THRESHOLD`, which rises to the size of
//! any such chunk freed, so the second crowd's buffers come from the heap).
//! Connection buffers — the output of a client that does not read (up to
//! the 64 KiB high-water mark, or the 1 MiB cap for broadcasts), read chunks
//! — are allocated all over the heap, and once they are freed the pages stay
//! resident for reuse: a first crowd of 60 parked clients mostly came back
//! (its 128 KiB buffers were mmapped), a second took RSS from 12.2 to 17.5
//! MB and 16.7 MB stayed after it left; with this, 11.4 MB (the start) after
//! each (`e2e backpressure::parked_pingers_…`). `malloc_trim(0)` also releases free
//! pages in the middle of the heap (`madvise(MADV_DONTNEED)`), not only its
//! top. Shrinking buffers when drained (which `OutBuffer` and `LineReader`
//! already do) returns them to malloc, not to the kernel.
//!
//! Invariants:
//! - Bookkeeping only, time passed in; the driver calls the trim it is given.
//! - A trim walks the heap (its cost grows with the heap), so it runs only
//!   once [`TRIM_AFTER`] bytes of connection buffers were dropped since the
//!   last one, and at most once per [`MIN_INTERVAL`]: a churn of small
//!   connections does not pay it per close.
//! - A trim that is due is never lost: inside the interval, [`GiveBack::due_at`]
//!   gives the driver a deadline for it (no periodic wake-up otherwise: an
//!   idle server with nothing to give back sleeps).
//! - Where the allocator is not glibc, [`trim`] does nothing.

use std::time::{Duration, Instant};

/// Bytes of dropped connection buffers that make a trim worth its walk.
pub const TRIM_AFTER: usize = 1 << 20;
/// Least time between two trims.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Freed bytes not yet given back, and when the last trim ran.
#[derive(Debug, Default)]
pub struct GiveBack {
    freed: usize,
    last: Option<Instant>,
    /// Trims done (reported with the driver's counters).
    pub trims: u64,
}

impl GiveBack {
    /// A connection's buffers of `bytes` (their allocation) were dropped.
    pub fn freed(&mut self, bytes: usize) {
        self.freed = self.freed.saturating_add(bytes);
    }

    /// When the next trim is due; `None` while there is too little to give back.
    pub fn due_at(&self, now: Instant) -> Option<Instant> {
        if self.freed < TRIM_AFTER {
            return None;
        }
        Some(self.last.map_or(now, |l| (l + MIN_INTERVAL).max(now)))
    }

    /// At the end of a turn: runs `trim` if one is due. True if it ran.
    pub fn end_turn(&mut self, now: Instant, trim: impl FnOnce()) -> bool {
        if self.due_at(now).is_some_and(|at| at <= now) {
            trim();
            self.freed = 0;
            self.last = Some(now);
            self.trims += 1;
            true
        } else {
            false
        }
    }
}

/// Gives the heap's free pages back to the kernel (glibc); elsewhere nothing.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and madvises malloc's own free chunks;
    // single-threaded here, and safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_enough_was_freed_and_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut g = GiveBack::default();
        let mut ran = 0;
        g.freed(TRIM_AFTER - 1);
        assert_eq!(g.due_at(t0), None);
        assert!(!g.end_turn(t0, || ran += 1));
        g.freed(1);
        assert_eq!(g.due_at(t0), Some(t0));
        assert!(g.end_turn(t0, || ran += 1));
        assert_eq!((ran, g.trims), (1, 1));
        // Freed again at once: due, but only once the interval is over, and
        // the driver is given that deadline so the trim is not lost.
        g.freed(TRIM_AFTER);
        let soon = t0 + MIN_INTERVAL / 2;
        assert_eq!(g.due_at(soon), Some(t0 + MIN_INTERVAL));
        assert!(!g.end_turn(soon, || ran += 1));
        assert!(g.end_turn(t0 + MIN_INTERVAL, || ran += 1));
        assert_eq!(ran, 2);
        assert_eq!(g.due_at(t0 + MIN_INTERVAL * 5), None);
    }

    #[test]
    fn trim_can_be_called_any_time() {
        let v = vec![1u8; 4 << 20];
        drop(v);
        trim();
        trim();
    }
}
