//! Retransmit deadlines of broadcast datagrams: one FIFO lane per attempt.
//!
//! A fan-out arms one retransmit per datagram (100,000s in a burst) and
//! almost every one is cancelled by its ACK a few ms later. In the general
//! timer table (`timers.rs`: a B-tree plus a hash map) each of those cost an
//! insert, a hash and a removal; here arming is a `push_back` and an ACK
//! cancels by ending the delivery's in-flight entry (`delivery::Inflight`),
//! which is what the liveness test reads: nothing is looked up at all.
//!
//! Why lanes work: the wait after the k-th datagram is a constant per k
//! (`broadcast::after_send`), and the engine's clock never goes back, so
//! within a lane the deadlines arrive in order. The earliest deadline is the
//! earliest of at most [`LANES`] fronts.
//!
//! Invariants:
//! - Within a lane, deadlines never decrease (an out-of-order `arm` is
//!   clamped up to the lane's last deadline: at most that much late).
//! - After [`Lanes::purge`] every lane's front is live, so
//!   [`Lanes::next_deadline`] never names a cancelled retransmit: a
//!   cancelled one causes no wake-up. Cancelled entries behind a live front
//!   wait in memory until they reach the front, and are dropped then unseen.
//! - Memory follows what is armed: a drained burst gives its capacity back.

use std::collections::VecDeque;
use std::time::Instant;

use super::accounts::UserIdx;
use super::broadcast::UDP_ATTEMPTS;

/// One lane per datagram sent (the 1st, …, the last before the TCP fallback).
pub const LANES: usize = UDP_ATTEMPTS as usize;

/// Capacities up to this many entries per lane are kept however empty it gets.
const SHRINK_ABOVE: usize = 4096;

/// A retransmit (or the TCP fallback) of broadcast `id` to `user`'s session
/// `serial`, after its `sent`-th datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub user: UserIdx,
    pub serial: u64,
    pub id: u64,
    pub sent: u32,
}

impl Pending {
    /// The lane of a retransmit after the `sent`-th datagram.
    pub fn lane(&self) -> usize {
        (self.sent.max(1) as usize - 1).min(LANES - 1)
    }
}

#[derive(Debug)]
pub struct Lanes<T> {
    lanes: [VecDeque<(Instant, T)>; LANES],
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Lanes {
            lanes: std::array::from_fn(|_| VecDeque::new()),
        }
    }
}

impl<T> Lanes<T> {
    /// Appends `what`, due at `at`, to `lane` (whose wait is a constant).
    pub fn arm(&mut self, lane: usize, at: Instant, what: T) {
        let l = &mut self.lanes[lane];
        let at = l.back().map_or(at, |&(last, _)| at.max(last));
        l.push_back((at, what));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|l| l.front())
            .map(|e| e.0)
            .min()
    }

    /// Takes the earliest entry due at or before `now` (live or not: the
    /// caller checks, as it must for anything that fires).
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let lane = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.front().map(|e| (e.0, i)))
            .min()
            .filter(|&(at, _)| at <= now)?
            .1;
        let (_, what) = self.lanes[lane].pop_front()?;
        self.shrink(lane);
        Some(what)
    }

    /// Drops cancelled entries from the lanes' fronts, so the next deadline is
    /// a live one. Amortised O(1): each entry is dropped once.
    pub fn purge(&mut self, mut live: impl FnMut(&T) -> bool) {
        for lane in 0..LANES {
            let mut dropped = false;
            while self.lanes[lane].front().is_some_and(|e| !live(&e.1)) {
                self.lanes[lane].pop_front();
                dropped = true;
            }
            if dropped {
                self.shrink(lane);
            }
        }
    }

    fn shrink(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if l.capacity() > SHRINK_ABOVE && l.len() < l.capacity() / 4 {
            l.shrink_to(l.len() * 2);
        }
    }

    /// Entries held, cancelled ones behind a live front included.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_earliest_front_fires_first_across_lanes() {
        let t0 = Instant::now();
        let mut l = Lanes::default();
        l.arm(1, t0 + ms(1000), "second datagram's");
        l.arm(0, t0 + ms(500), "a");
        l.arm(0, t0 + ms(600), "b");
        assert_eq!(l.next_deadline(), Some(t0 + ms(500)));
        assert_eq!(l.pop_due(t0 + ms(499)), None);
        let due: Vec<_> = std::iter::from_fn(|| l.pop_due(t0 + ms(2000))).collect();
        assert_eq!(due, ["a", "b", "second datagram's"]);
        assert!(l.is_empty() && l.next_deadline().is_none());
    }

    #[test]
    fn a_cancelled_entry_never_sets_the_deadline() {
        let t0 = Instant::now();
        let mut l = Lanes::default();
        for i in 0..10u32 {
            l.arm(0, t0 + ms(500 + u64::from(i)), i);
        }
        // ACKs for 0..=6 and 8 arrive (out of order); 7 and 9 stay in flight.
        let acked: HashSet<u32> = [3, 0, 1, 2, 4, 8, 6, 5].into();
        l.purge(|i| !acked.contains(i));
        assert_eq!(l.next_deadline(), Some(t0 + ms(507)));
        assert_eq!(l.pop_due(t0 + ms(507)), Some(7));
        // 8 was cancelled behind a live front; it surfaces now and is purged
        // before anything asks for the deadline.
        l.purge(|i| !acked.contains(i));
        assert_eq!(l.next_deadline(), Some(t0 + ms(509)));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn an_early_arm_is_clamped_so_the_lane_stays_ordered() {
        let t0 = Instant::now();
        let mut l = Lanes::default();
        l.arm(2, t0 + ms(10), 'a');
        l.arm(2, t0 + ms(5), 'b');
        assert_eq!(l.pop_due(t0 + ms(9)), None);
        assert_eq!(l.pop_due(t0 + ms(10)), Some('a'));
        assert_eq!(l.pop_due(t0 + ms(10)), Some('b'));
    }

    #[test]
    fn lanes_follow_the_attempt_number() {
        let p = |sent| Pending {
            user: UserIdx(1),
            serial: 1,
            id: 1,
            sent,
        };
        assert_eq!(p(1).lane(), 0);
        assert_eq!(p(UDP_ATTEMPTS).lane(), LANES - 1);
        assert_eq!(p(UDP_ATTEMPTS + 5).lane(), LANES - 1);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let t0 = Instant::now();
        let mut l = Lanes::default();
        for i in 0..100_000u32 {
            l.arm(0, t0 + ms(500), i);
        }
        assert!(l.lanes[0].capacity() >= 100_000);
        l.purge(|&i| i >= 99_000);
        assert!(l.lanes[0].capacity() < 10_000, "{}", l.lanes[0].capacity());
        while l.pop_due(t0 + ms(500)).is_some() {}
        assert!(l.lanes[0].capacity() <= SHRINK_ABOVE);
    }
}
