//! A timer table (quinn-proto's `TimerTable`, for many subjects): one slot
//! per timer kind and subject, named by the timer value itself. Arming a
//! slot again overwrites its deadline, `stop` cancels it, and the next
//! deadline is the earliest slot — so a timer whose subject moved on is
//! stopped rather than left to wake the loop for nothing.
//!
//! Invariants:
//! - `by_deadline` and `slots` hold the same timers: each armed timer once,
//!   under the deadline and arming number its slot records.
//! - Equal deadlines fire in arming order (the arming number breaks ties).
//! - Memory follows what is armed: a drained burst gives its capacity back.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Capacities up to this many entries are kept however empty the table gets.
const SHRINK_ABOVE: usize = 4096;

#[derive(Debug)]
pub struct Timers<T> {
    by_deadline: BTreeMap<(Instant, u64), T>,
    slots: HashMap<T, (Instant, u64)>,
    seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            by_deadline: BTreeMap::new(),
            slots: HashMap::new(),
            seq: 0,
        }
    }
}

impl<T: Copy + Eq + Hash> Timers<T> {
    /// Sets `what` to fire at `at`, replacing any deadline it had.
    pub fn arm(&mut self, at: Instant, what: T) {
        self.seq += 1;
        let key = (at, self.seq);
        if let Some(old) = self.slots.insert(what, key) {
            self.by_deadline.remove(&old);
        }
        self.by_deadline.insert(key, what);
    }

    /// Cancels `what` if it is armed.
    pub fn stop(&mut self, what: &T) {
        if let Some(key) = self.slots.remove(what) {
            self.by_deadline.remove(&key);
            self.shrink();
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.keys().next().map(|&(at, _)| at)
    }

    /// Takes one timer due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_deadline()? > now {
            return None;
        }
        let (_, what) = self.by_deadline.pop_first()?;
        self.slots.remove(&what);
        self.shrink();
        Some(what)
    }

    /// A broadcast burst arms a retransmit timer per delivery (100,000s):
    /// give that memory back once the burst is over.
    fn shrink(&mut self) {
        if self.slots.capacity() > SHRINK_ABOVE && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }

    /// How many armed timers match (tests count timers per kind).
    pub fn count(&self, f: impl Fn(&T) -> bool) -> usize {
        self.slots.keys().filter(|w| f(w)).count()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
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
    fn arming_again_overwrites_and_stop_cancels() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Timers::default();
        t.arm(t0 + s(1), "idle");
        t.arm(t0 + s(5), "idle");
        t.arm(t0 + s(3), "login");
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_deadline(), Some(t0 + s(3)));
        t.stop(&"login");
        t.stop(&"never armed");
        assert_eq!(t.next_deadline(), Some(t0 + s(5)));
        assert_eq!(t.pop_due(t0 + s(4)), None);
        assert_eq!(t.pop_due(t0 + s(5)), Some("idle"));
        assert_eq!(t.next_deadline(), None);
        assert!(t.is_empty() && t.by_deadline.is_empty());
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..100_000u32 {
            t.arm(t0 + Duration::from_millis(u64::from(i % 100)), i);
        }
        assert!(t.slots.capacity() >= 100_000);
        while t.pop_due(t0 + Duration::from_secs(1)).is_some() {}
        assert!(t.slots.capacity() <= SHRINK_ABOVE, "{}", t.slots.capacity());
    }
}
