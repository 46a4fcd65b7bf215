//! A work queue that is fair per source, not per item: sources take turns,
//! and each source's items wait in arrival order behind its first one. The
//! server's password hashing runs through it, so a hundred hashes queued from
//! one address take one turn in every round, not a hundred, and another
//! address's login waits for at most one slice per busy source.
//!
//! Invariants: every source in `turns` has a non-empty queue in `items` and
//! appears in `turns` exactly once; a source with no items is in neither.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct FairQueue<K, T> {
    turns: VecDeque<K>,
    items: HashMap<K, VecDeque<T>>,
    len: usize,
}

impl<K, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        FairQueue {
            turns: VecDeque::new(),
            items: HashMap::new(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Copy, T> FairQueue<K, T> {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues `item` behind `source`'s earlier items.
    pub fn push(&mut self, source: K, item: T) {
        self.insert(source, item, false);
    }

    /// Puts back an unfinished item at the head of its source's queue; the
    /// source has had its turn and waits for the next round.
    pub fn push_front(&mut self, source: K, item: T) {
        self.insert(source, item, true);
    }

    fn insert(&mut self, source: K, item: T, front: bool) {
        let q = self.items.entry(source).or_default();
        if q.is_empty() {
            self.turns.push_back(source);
        }
        if front {
            q.push_front(item);
        } else {
            q.push_back(item);
        }
        self.len += 1;
    }

    /// The head item of the source whose turn it is; that source moves to
    /// the end of the round.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let source = self.turns.pop_front()?;
        let q = self
            .items
            .get_mut(&source)
            .expect("a source in turn has items");
        let item = q.pop_front().expect("a source in turn has items");
        self.len -= 1;
        if q.is_empty() {
            self.items.remove(&source);
        } else {
            self.turns.push_back(source);
        }
        Some((source, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_take_turns_and_items_keep_their_order_within_a_source() {
        let mut q = FairQueue::default();
        for i in 0..3 {
            q.push('a', i);
        }
        q.push('b', 10);
        q.push('c', 20);
        q.push('b', 11);
        let order: Vec<(char, i32)> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [
                ('a', 0),
                ('b', 10),
                ('c', 20),
                ('a', 1),
                ('b', 11),
                ('a', 2)
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn an_unfinished_item_resumes_first_but_after_the_other_sources() {
        let mut q = FairQueue::default();
        q.push('a', 0);
        q.push('a', 1);
        q.push('b', 10);
        let (s, i) = q.pop().unwrap();
        assert_eq!((s, i), ('a', 0));
        q.push_front(s, i);
        assert_eq!(q.pop(), Some(('b', 10)));
        assert_eq!(q.pop(), Some(('a', 0)));
        assert_eq!(q.pop(), Some(('a', 1)));
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 0);
    }

    /// Work measured in slices on a virtual clock: one slice per tick.
    #[test]
    fn a_hundred_jobs_from_one_source_delay_another_source_by_one_slice_a_round() {
        const SLICES: u32 = 5; // slices per job
        let mut q = FairQueue::default();
        for i in 0..100u32 {
            q.push("attacker", (i, SLICES));
        }
        q.push("bystander", (1000, SLICES));
        let mut tick = 0u32;
        let done_at = loop {
            let (src, (id, left)) = q.pop().expect("work remains");
            tick += 1;
            if left > 1 {
                q.push_front(src, (id, left - 1));
            } else if id == 1000 {
                break tick;
            }
        };
        // Alone it takes SLICES ticks; with one other busy source, 2 × SLICES.
        assert_eq!(done_at, 2 * SLICES);
    }
}
