//! A heap of deadlines. Entries are never removed early: each names what it is
//! for (with a serial number), and the engine checks on firing whether it still
//! applies. That keeps arming O(log n) and cancelling free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Capacities up to this many entries are kept however empty the heap gets.
const SHRINK_ABOVE: usize = 4096;

#[derive(Debug)]
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<(Instant, u64, T)>>,
    seq: u64,
}

impl<T: Ord> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T: Ord> Timers<T> {
    pub fn arm(&mut self, at: Instant, what: T) {
        // The sequence number keeps equal deadlines in arming order.
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, what)));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops one entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_deadline()? > now {
            return None;
        }
        let what = self.heap.pop().map(|Reverse((_, _, what))| what);
        // A broadcast burst arms a retransmit timer per delivery (100,000s);
        // give that memory back once the burst is over rather than keep it
        // resident for good.
        if self.heap.capacity() > SHRINK_ABOVE && self.heap.len() < self.heap.capacity() / 4 {
            self.heap.shrink_to(self.heap.len() * 2);
        }
        what
    }

    /// How many armed entries match (tests count timers per kind).
    pub fn count(&self, f: impl Fn(&T) -> bool) -> usize {
        self.heap.iter().filter(|Reverse((_, _, w))| f(w)).count()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_arming_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(t0 + Duration::from_secs(2), "b");
        t.arm(t0 + Duration::from_secs(1), "a");
        t.arm(t0 + Duration::from_secs(2), "c");
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some("a"));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some("b"));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some("c"));
        assert!(t.is_empty());
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..100_000u32 {
            t.arm(t0 + Duration::from_millis(u64::from(i % 100)), i);
        }
        assert!(t.heap.capacity() >= 100_000);
        while t.pop_due(t0 + Duration::from_secs(1)).is_some() {}
        assert!(t.heap.capacity() <= SHRINK_ABOVE, "{}", t.heap.capacity());
    }
}
