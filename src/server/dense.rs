//! A map from small dense integer keys (connection ids, account indexes) to
//! values, for the engine's per-connection and per-session tables.
//!
//! Why not a `HashMap`: at 10,000 sessions a hash table of 150-byte entries
//! spreads them over a power-of-two bucket array whose every page is touched,
//! so it costs up to twice the live data in RSS, and it grows by rehashing
//! everything at once (a latency spike on the one thread). Here the values
//! live in a [`Slab`] (a vector that reuses freed slots and grows by appending,
//! so untouched capacity is never resident) and a key finds its slot through
//! a `Vec<u32>`: 4 bytes per key ever used.
//!
//! [`DenseMap::reserve`] sizes both up front (the server reserves its
//! per-connection tables to the most connections it can have): the slab then
//! never doubles, and a reservation costs address space, not memory — a
//! large allocation is mmapped by glibc and its pages are zero-filled by the
//! kernel when first written, and nothing here writes past the entries in
//! use (`Vec::with_capacity` does not initialise, `Slab` pushes one entry at
//! a time, the key index is extended by `resize` only up to the largest key).

use slab::Slab;

/// Keys are small integers handed out densely (slab keys, signup order).
pub trait DenseKey: Copy {
    fn index(self) -> usize;
}

impl DenseKey for usize {
    fn index(self) -> usize {
        self
    }
}

pub struct DenseMap<K, V> {
    /// Key index → slot in `values` + 1; 0 means absent.
    slots: Vec<u32>,
    values: Slab<(K, V)>,
}

impl<K, V> Default for DenseMap<K, V> {
    fn default() -> Self {
        DenseMap {
            slots: Vec::new(),
            values: Slab::new(),
        }
    }
}

impl<K: DenseKey, V> DenseMap<K, V> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Room for `values` entries and keys below `keys` without reallocating.
    pub fn reserve(&mut self, keys: usize, values: usize) {
        self.slots
            .reserve_exact(keys.saturating_sub(self.slots.len()));
        self.values
            .reserve_exact(values.saturating_sub(self.values.len()));
    }

    /// Entries the value slab holds without reallocating.
    pub fn capacity(&self) -> usize {
        self.values.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn slot(&self, key: K) -> Option<usize> {
        match self.slots.get(key.index()) {
            Some(&s) if s != 0 => Some(s as usize - 1),
            _ => None,
        }
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.slot(*key).is_some()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.slot(*key).map(|s| &self.values[s].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slot(*key).map(|s| &mut self.values[s].1)
    }

    /// Inserts or replaces; returns the value that was there.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(s) = self.slot(key) {
            return Some(std::mem::replace(&mut self.values[s].1, value));
        }
        let i = key.index();
        if self.slots.len() <= i {
            self.slots.resize(i + 1, 0);
        }
        let slot = self.values.insert((key, value));
        self.slots[i] = u32::try_from(slot + 1).expect("fewer than 2^32 live entries");
        None
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let s = self.slot(*key)?;
        self.slots[key.index()] = 0;
        Some(self.values.remove(s).1)
    }

    /// Keys of the live entries, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.values.iter().map(|(_, (k, _))| *k)
    }
}

impl<K: DenseKey, V> std::ops::Index<&K> for DenseMap<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for key")
    }
}

impl<K: DenseKey + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for DenseMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.values.iter().map(|(_, (k, v))| (k, v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_under_reuse() {
        let mut m: DenseMap<usize, &str> = DenseMap::default();
        assert!(m.is_empty() && m.get(&3).is_none());
        assert_eq!(m.insert(3, "c"), None);
        assert_eq!(m.insert(0, "a"), None);
        assert_eq!(m.insert(3, "C"), Some("c"));
        assert_eq!((m.len(), m[&3], m.get(&0)), (2, "C", Some(&"a")));
        assert_eq!(m.remove(&3), Some("C"));
        assert_eq!(m.remove(&3), None);
        assert!(!m.contains_key(&3) && m.get(&7).is_none());
        // A freed value slot is reused by another key without confusing the two.
        assert_eq!(m.insert(9, "z"), None);
        assert_eq!((m.get(&9), m.get(&3), m.len()), (Some(&"z"), None, 2));
        let mut keys: Vec<usize> = m.keys().collect();
        keys.sort();
        assert_eq!(keys, [0, 9]);
        *m.get_mut(&0).unwrap() = "A";
        assert_eq!(m[&0], "A");
    }

    /// Reserved once, the map never reallocates (so never doubles) while its
    /// keys and entries stay within the reservation — the server's slabs
    /// rely on this for memory per session that does not step.
    #[test]
    fn a_reserved_map_does_not_reallocate_within_its_reservation() {
        let mut m: DenseMap<usize, [u64; 16]> = DenseMap::default();
        m.reserve(1000, 1000);
        let (values, keys) = (m.capacity(), m.slots.capacity());
        assert!(values >= 1000 && keys >= 1000);
        for i in 0..1000 {
            m.insert(i, [i as u64; 16]);
        }
        for i in (0..1000).step_by(2) {
            m.remove(&i);
        }
        for i in 0..500 {
            m.insert(i * 2, [0; 16]);
        }
        assert_eq!((m.capacity(), m.slots.capacity()), (values, keys));
        assert_eq!(m.len(), 1000);
    }
}
