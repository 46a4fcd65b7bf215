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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
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

/// Deadlines armed once per subject and never stopped: the re-login timer
/// every session has (issue 18, memory per session). In [`Timers`] each cost
/// a B-tree entry and a hash-map slot, about 160 bytes per session; here it is
/// one 32-byte heap entry. A session that ends or re-logs in is not looked
/// up to cancel its entry: the entry goes dead (the caller's `live` test
/// says so from the session itself) and is dropped when it reaches the front.
///
/// Invariants:
/// - After [`Lazy::purge`] the front entry is live, so [`Lazy::next_deadline`]
///   never names a dead one: a removed session's timer causes no wake-up.
/// - Dead entries behind a live front are dropped when they reach it, or all
///   at once by [`Lazy::purge`] once they could outnumber the live ones
///   (more than twice `live_max` entries held): memory stays within about
///   twice the live subjects, at amortised O(1) per arming.
/// - Deadlines may arrive in any order (resumed sessions keep their ticket's);
///   equal deadlines fire in the subjects' order.
#[derive(Debug)]
pub struct Lazy<T: Ord> {
    heap: BinaryHeap<Reverse<(Instant, T)>>,
}

impl<T: Ord> Default for Lazy<T> {
    fn default() -> Self {
        Lazy {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord + Copy> Lazy<T> {
    pub fn arm(&mut self, at: Instant, what: T) {
        self.heap.push(Reverse((at, what)));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0 .0)
    }

    /// Takes the earliest entry due at or before `now`, with its deadline
    /// (live or not: the caller checks, as for anything that fires).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|e| e.0)
    }

    /// Drops dead entries from the front, so the next deadline is a live one;
    /// and every dead entry once more than `2 * live_max + 64` are held
    /// (`live_max`: how many subjects can be live, e.g. sessions online).
    pub fn purge(&mut self, live_max: usize, mut live: impl FnMut(Instant, &T) -> bool) {
        if self.heap.len() > 2 * live_max + 64 {
            self.heap.retain(|e| live(e.0 .0, &e.0 .1));
            if self.heap.capacity() > SHRINK_ABOVE && self.heap.len() < self.heap.capacity() / 4 {
                self.heap.shrink_to(self.heap.len() * 2);
            }
        }
        while let Some(Reverse((at, what))) = self.heap.peek() {
            if live(*at, what) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Entries held, dead ones behind a live front included.
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
    fn lazy_pops_in_deadline_order_whatever_the_arming_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Lazy::default();
        l.arm(t0 + s(3), 'c');
        l.arm(t0 + s(1), 'a');
        l.arm(t0 + s(2), 'b');
        assert_eq!(l.next_deadline(), Some(t0 + s(1)));
        assert_eq!(l.pop_due(t0), None);
        assert_eq!(l.pop_due(t0 + s(2)), Some((t0 + s(1), 'a')));
        assert_eq!(l.pop_due(t0 + s(2)), Some((t0 + s(2), 'b')));
        assert_eq!(l.pop_due(t0 + s(2)), None);
        assert_eq!(l.next_deadline(), Some(t0 + s(3)));
    }

    /// The no-stale-wakeup property: a dead entry (its session ended) never
    /// sets the deadline once purged, even at the front.
    #[test]
    fn a_dead_entry_never_sets_the_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Lazy::default();
        l.arm(t0 + s(1), 1u32);
        l.arm(t0 + s(2), 2);
        l.arm(t0 + s(3), 3);
        let ended = [1u32, 2];
        l.purge(3, |_, w| !ended.contains(w));
        assert_eq!(l.next_deadline(), Some(t0 + s(3)));
        l.purge(3, |_, _| false);
        assert_eq!(l.next_deadline(), None);
        assert!(l.is_empty());
    }

    /// Sessions that come and go leave dead entries behind a live front; once
    /// they outnumber the live ones they are dropped, so memory follows the
    /// sessions online, not the logins ever made.
    #[test]
    fn dead_entries_behind_a_live_front_are_bounded() {
        let t0 = Instant::now();
        let mut l = Lazy::default();
        // One long-lived subject at the front, then 100,000 that each end at once.
        l.arm(t0, 0u32);
        for i in 1..100_000u32 {
            l.arm(t0 + Duration::from_millis(u64::from(i)), i);
            l.purge(1, |_, w| *w == 0);
            assert!(l.len() <= 2 + 64 + 1, "{} entries held", l.len());
        }
        assert_eq!(l.next_deadline(), Some(t0));
        assert!(l.heap.capacity() <= SHRINK_ABOVE, "{}", l.heap.capacity());
    }

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
