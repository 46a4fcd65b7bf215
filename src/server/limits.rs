//! Limits against abuse, as pure state: rate buckets (GCRA), a bounded table
//! that forgets the oldest source first, the password-guessing rules, and the
//! per-source connection count. Time comes in as `now`; nothing here touches
//! a socket or the clock.
//!
//! Invariants:
//! - Memory is bounded whatever the sources do: every per-source or
//!   per-account record lives in a [`BoundedTable`] of fixed capacity whose
//!   records are a few fixed-size words (O(1) per tracked address); when it is
//!   full, a new key evicts the oldest record, preferring one that no longer
//!   limits anything. An attacker with many addresses can only make the server
//!   forget old records, never grow it.
//! - A source is an IPv4 address, or an IPv6 /64 (one subscriber's usual
//!   allocation: counting single IPv6 addresses would let one host use 2^64 of
//!   them). IPv4-mapped IPv6 addresses count as their IPv4 address.
//! - A guess is checked when its hash is about to start, not only when it
//!   arrives: hashes from one source run one at a time (`fair.rs`), so each
//!   is checked against every earlier failure of that source, and N
//!   connections sending LOGIN at once from one address get no more hashes
//!   than one connection would. A right password is never charged to its
//!   source, so many right logins at once from one address (a NAT) all pass.
//!   The account's count is charged at the start (hashes of several sources
//!   run at once) and refunded if the password was right.
//! - A right password from a source with no failure in the last
//!   [`RECENT_FAILURE`] is never refused, whatever the account's own count
//!   says: the per-account limit binds only sources that have failed recently.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a source counts as having "failed recently" after its last wrong
/// password: the per-account limit applies to it for this long.
pub const RECENT_FAILURE: Duration = Duration::from_secs(3600);

/// Default capacity of each tracking table: 65,536 records of ≤ 48 bytes.
pub const TABLE_CAPACITY: usize = 65_536;

/// How many records eviction looks at for one that no longer limits anything
/// before it evicts the oldest regardless (keeps eviction O(1)).
const EVICT_PROBES: usize = 8;

/// Where a connection comes from, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                Source(IpAddr::V6(bits.into()))
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// A rate: `burst` events at once, then one every `interval` (the generic
/// cell rate algorithm). In any window of length W at most
/// `burst + floor(W / interval)` events conform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub interval: Duration,
}

impl Rate {
    /// At most `n` events in any window of length `window`, with a quarter of
    /// them (at least one) allowed at once. `None` for `n == 0` (no limit).
    pub fn at_most(n: u32, window: Duration) -> Option<Rate> {
        if n == 0 {
            return None;
        }
        let burst = (n / 4).max(1);
        let spaced = n - burst;
        let interval = if spaced == 0 {
            // One event per window: the next conforms just after it closes.
            window + Duration::from_millis(1)
        } else {
            window / spaced
        };
        Some(Rate { burst, interval })
    }

    fn tolerance(&self) -> Duration {
        self.interval * self.burst.saturating_sub(1)
    }

    /// `Err(retry_after)` if an event now would not conform.
    pub fn check(&self, tat: Option<Instant>, now: Instant) -> Result<(), Duration> {
        match tat {
            Some(t) if t > now + self.tolerance() => Err(t - self.tolerance() - now),
            _ => Ok(()),
        }
    }

    /// Counts one event at `now` (whether or not it conformed).
    pub fn charge(&self, tat: &mut Option<Instant>, now: Instant) {
        let base = tat.map_or(now, |t| t.max(now));
        *tat = Some(base + self.interval);
    }

    /// Takes back one charge (a guess that turned out right).
    pub fn refund(&self, tat: &mut Option<Instant>, now: Instant) {
        if let Some(t) = *tat {
            let back = t.checked_sub(self.interval).unwrap_or(now);
            *tat = if back <= now { None } else { Some(back) };
        }
    }

    /// True when the record says nothing a fresh one would not.
    pub fn is_clear(&self, tat: Option<Instant>, now: Instant) -> bool {
        tat.map_or(true, |t| t <= now)
    }
}

/// `retry-after` seconds for the wire: whole seconds, rounded up, at least 1.
pub fn retry_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// A map of at most `capacity` records; inserting into a full table evicts
/// the oldest record, preferring (among the oldest few) one whose `idle`
/// predicate holds. Every operation is O(1).
#[derive(Debug)]
pub struct BoundedTable<K, V> {
    map: HashMap<K, V>,
    /// Every key of `map` exactly once, oldest insertion first.
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V> BoundedTable<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedTable {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// The record for `k`, made with `make` if absent (evicting if full).
    pub fn entry(&mut self, k: K, make: impl FnOnce() -> V, idle: impl Fn(&V) -> bool) -> &mut V {
        if !self.map.contains_key(&k) {
            if self.map.len() >= self.capacity {
                self.evict(&idle);
            }
            self.map.insert(k, make());
            self.order.push_back(k);
        }
        self.map.get_mut(&k).expect("present")
    }

    fn evict(&mut self, idle: &impl Fn(&V) -> bool) {
        for _ in 0..EVICT_PROBES.min(self.order.len()) {
            let k = self.order.pop_front().expect("order mirrors map");
            if self.map.get(&k).is_some_and(idle) {
                self.map.remove(&k);
                return;
            }
            // Still limiting something: a second chance at the back.
            self.order.push_back(k);
        }
        if let Some(k) = self.order.pop_front() {
            self.map.remove(&k);
        }
    }
}

/// The password-guessing rules' knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessRules {
    /// Wrong passwords per source.
    pub per_source: Rate,
    /// Wrong passwords per account, all sources together (binding only
    /// sources that failed recently).
    pub per_account: Rate,
    pub capacity: usize,
}

impl Default for GuessRules {
    fn default() -> Self {
        GuessRules {
            // ≤ 4 + 60/10 = 10 in any minute; 6 a minute sustained.
            per_source: Rate {
                burst: 4,
                interval: Duration::from_secs(10),
            },
            // ≤ 20 + 3600/45 = 100 in any hour; 80 an hour sustained.
            per_account: Rate {
                burst: 20,
                interval: Duration::from_secs(45),
            },
            capacity: TABLE_CAPACITY,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct SourceRecord {
    tat: Option<Instant>,
    last_failure: Option<Instant>,
}

/// Which limit refused a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Source(Duration),
    Account(Duration),
}

impl Refusal {
    pub fn retry_after(self) -> Duration {
        match self {
            Refusal::Source(d) | Refusal::Account(d) => d,
        }
    }
}

/// Password guessing, per source and per account. The account is keyed by a
/// keyed hash of its lower-cased name (unknown names too, so the rule says
/// nothing about which accounts exist), which keeps each record fixed-size.
#[derive(Debug)]
pub struct Guesses {
    rules: GuessRules,
    sources: BoundedTable<Source, SourceRecord>,
    accounts: BoundedTable<u64, Option<Instant>>,
    hasher: RandomState,
}

impl Guesses {
    pub fn new(rules: GuessRules) -> Guesses {
        Guesses {
            rules,
            sources: BoundedTable::new(rules.capacity),
            accounts: BoundedTable::new(rules.capacity),
            hasher: RandomState::new(),
        }
    }

    fn account_key(&self, name: &str) -> u64 {
        self.hasher.hash_one(name.to_ascii_lowercase())
    }

    fn failed_recently(&self, src: Source, now: Instant) -> bool {
        self.sources
            .get(&src)
            .and_then(|r| r.last_failure)
            .is_some_and(|t| now < t + RECENT_FAILURE)
    }

    /// Whether a guess for `name` from `src` would be refused now (nothing
    /// is charged): the early answer, before the hash is even queued.
    pub fn check(&self, now: Instant, src: Source, name: &str) -> Result<(), Refusal> {
        let rules = self.rules;
        let tat = self.sources.get(&src).and_then(|r| r.tat);
        rules.per_source.check(tat, now).map_err(Refusal::Source)?;
        if self.failed_recently(src, now) {
            let tat = self
                .accounts
                .get(&self.account_key(name))
                .copied()
                .flatten();
            rules
                .per_account
                .check(tat, now)
                .map_err(Refusal::Account)?;
        }
        Ok(())
    }

    /// The hash of a password for `name` from `src` is about to start:
    /// refuse, or charge the account (refunded by [`Guesses::right`]).
    pub fn begin(&mut self, now: Instant, src: Source, name: &str) -> Result<(), Refusal> {
        self.check(now, src, name)?;
        let rules = self.rules;
        let key = self.account_key(name);
        let a = self
            .accounts
            .entry(key, || None, |t| rules.per_account.is_clear(*t, now));
        rules.per_account.charge(a, now);
        Ok(())
    }

    /// The guess begun for `name` was right: it costs nothing.
    pub fn right(&mut self, now: Instant, name: &str) {
        let rules = self.rules;
        let key = self.account_key(name);
        if let Some(a) = self.accounts.map.get_mut(&key) {
            rules.per_account.refund(a, now);
        }
    }

    /// The guess begun from `src` was wrong: charged to the source, which
    /// has now failed recently.
    pub fn wrong(&mut self, now: Instant, src: Source) {
        let rules = self.rules;
        let r = self.sources.entry(src, SourceRecord::default, |r| {
            rules.per_source.is_clear(r.tat, now)
                && r.last_failure.map_or(true, |t| t + RECENT_FAILURE <= now)
        });
        rules.per_source.charge(&mut r.tat, now);
        r.last_failure = Some(now);
    }

    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.accounts.len())
    }
}

/// A simple per-key rate (signups per source, broadcasts per user).
#[derive(Debug)]
pub struct Throttle<K> {
    rate: Option<Rate>,
    table: BoundedTable<K, Option<Instant>>,
}

impl<K: Hash + Eq + Copy> Throttle<K> {
    pub fn new(rate: Option<Rate>, capacity: usize) -> Throttle<K> {
        Throttle {
            rate,
            table: BoundedTable::new(capacity),
        }
    }

    /// A new rate (a configuration reload); records already kept stay.
    pub fn set_rate(&mut self, rate: Option<Rate>) {
        self.rate = rate;
    }

    /// Counts one event for `k`, or `Err(retry_after)` (not counted).
    pub fn take(&mut self, now: Instant, k: K) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        rate.check(self.table.get(&k).copied().flatten(), now)?;
        let t = self.table.entry(k, || None, |t| rate.is_clear(*t, now));
        rate.charge(t, now);
        Ok(())
    }
}

/// Open connections per source, and how many have not logged in.
#[derive(Debug, Default)]
pub struct ConnCount {
    per_source: HashMap<Source, u32>,
    unauthenticated: usize,
}

impl ConnCount {
    pub fn of(&self, src: Source) -> u32 {
        self.per_source.get(&src).copied().unwrap_or(0)
    }

    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated
    }

    pub fn opened(&mut self, src: Source) {
        *self.per_source.entry(src).or_insert(0) += 1;
        self.unauthenticated += 1;
    }

    pub fn logged_in(&mut self) {
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
    }

    pub fn closed(&mut self, src: Source, was_logged_in: bool) {
        if let Some(n) = self.per_source.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&src);
            }
        }
        if !was_logged_in {
            self.unauthenticated = self.unauthenticated.saturating_sub(1);
        }
    }

    /// Sources with an open connection (the table never outgrows the connections).
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

/// How many of `max_clients` connections may be unauthenticated at once: a
/// quarter (rounded down) is kept for connections that have logged in, so a
/// flood of connections that never log in cannot crowd out the sessions.
pub fn unauthenticated_cap(max_clients: usize) -> usize {
    (max_clients - max_clients / 4).max(1)
}

/// A username fit for a log line that fail2ban parses: printable ASCII
/// without spaces or quotes, at most 32 characters (longer gets `…`).
pub fn sanitize_for_log(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if name.chars().count() > 32 {
        out.push('…');
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    /// Drives `rate` with an attempt every `step` for `total`, charging every
    /// conforming one; returns the instants that conformed.
    fn hammer(rate: Rate, step: Duration, total: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut tat = None;
        let mut ok = Vec::new();
        let mut t = Duration::ZERO;
        while t <= total {
            let now = t0 + t;
            if rate.check(tat, now).is_ok() {
                rate.charge(&mut tat, now);
                ok.push(t);
            }
            t += step;
        }
        ok
    }

    fn max_in_window(times: &[Duration], window: Duration) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|&&t| t <= times[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn guess_rates_hold_in_every_window() {
        let r = GuessRules::default();
        let got = hammer(r.per_source, ms(100), secs(600));
        assert_eq!(max_in_window(&got, secs(60)), 10, "per source per minute");
        // Sustained: 6 a minute after the burst.
        assert!((got.len() as i64 - (4 + 60)).abs() <= 1, "{}", got.len());
        let got = hammer(r.per_account, secs(1), secs(4 * 3600));
        assert_eq!(max_in_window(&got, secs(3600)), 100, "per account per hour");
    }

    #[test]
    fn at_most_n_per_window_holds_for_every_n() {
        for n in 1..=40 {
            let rate = Rate::at_most(n, secs(3600)).unwrap();
            let got = hammer(rate, secs(7), secs(3 * 3600));
            let max = max_in_window(&got, secs(3600));
            assert!(max <= n as usize, "n={n}: {max} in an hour");
            assert!(2 * max >= n as usize, "n={n}: only {max}");
        }
        assert_eq!(Rate::at_most(0, secs(1)), None);
    }

    #[test]
    fn retry_after_is_when_the_next_event_conforms() {
        let rate = Rate {
            burst: 2,
            interval: secs(10),
        };
        let t0 = Instant::now();
        let mut tat = None;
        for _ in 0..2 {
            rate.check(tat, t0).unwrap();
            rate.charge(&mut tat, t0);
        }
        let wait = rate.check(tat, t0).unwrap_err();
        assert_eq!(wait, secs(10));
        assert!(rate.check(tat, t0 + wait - ms(1)).is_err());
        assert!(rate.check(tat, t0 + wait).is_ok());
        assert_eq!(retry_secs(ms(1)), 1);
        assert_eq!(retry_secs(ms(1500)), 2);
        assert_eq!(retry_secs(secs(10)), 10);
    }

    #[test]
    fn refund_gives_back_exactly_one_charge() {
        let rate = Rate {
            burst: 1,
            interval: secs(10),
        };
        let t0 = Instant::now();
        let mut tat = None;
        rate.charge(&mut tat, t0);
        assert!(rate.check(tat, t0).is_err());
        rate.refund(&mut tat, t0);
        assert!(rate.is_clear(tat, t0));
        rate.refund(&mut tat, t0);
        assert!(rate.is_clear(tat, t0), "a refund never makes credit");
    }

    #[test]
    fn sources_are_ipv4_or_ipv6_slash_64() {
        let a = Source::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:ffff:1:2:3".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let v4 = Source::of("203.0.113.5".parse().unwrap());
        assert_eq!(v4, Source::of("::ffff:203.0.113.5".parse().unwrap()));
        assert_eq!(v4.to_string(), "203.0.113.5");
        assert_ne!(v4, Source::of("203.0.113.6".parse().unwrap()));
    }

    #[test]
    fn bounded_table_never_outgrows_its_capacity_and_keeps_busy_records() {
        let mut t: BoundedTable<u32, bool> = BoundedTable::new(8);
        // Key 0 is "busy" (not idle): many newcomers must not push it out
        // while idle records remain to evict.
        *t.entry(0, || true, |&busy| !busy) = true;
        for k in 1..10_000 {
            t.entry(k, || false, |&busy| !busy);
            assert!(t.len() <= 8);
            assert_eq!(t.order.len(), t.map.len());
        }
        assert!(t.get(&0).is_some(), "the busy record was evicted");
        // When everything is busy, the oldest goes regardless.
        let mut t: BoundedTable<u32, bool> = BoundedTable::new(4);
        for k in 0..100 {
            t.entry(k, || true, |&busy| !busy);
            assert!(t.len() <= 4);
        }
        assert!(t.get(&99).is_some());
    }

    fn ip(s: &str) -> Source {
        Source::of(s.parse().unwrap())
    }

    #[test]
    fn a_source_gets_its_burst_then_is_refused_without_charge() {
        let mut g = Guesses::new(GuessRules::default());
        let t0 = Instant::now();
        let src = ip("10.0.0.1");
        for _ in 0..4 {
            g.begin(t0, src, "alice").unwrap();
            g.wrong(t0, src);
        }
        let refused = g.begin(t0, src, "alice").unwrap_err();
        assert_eq!(refused, Refusal::Source(secs(10)));
        // Other names from that source are refused too; other sources are not.
        assert!(g.begin(t0, src, "bob").is_err());
        g.begin(t0, ip("10.0.0.2"), "alice").unwrap();
        // Refusals are not charged: after the wait, one more conforms.
        assert!(g.begin(t0 + secs(10), src, "alice").is_ok());
    }

    #[test]
    fn right_passwords_are_refunded() {
        let mut g = Guesses::new(GuessRules::default());
        let t0 = Instant::now();
        let src = ip("10.0.0.1");
        for i in 0..100 {
            g.begin(t0 + ms(i), src, "alice").unwrap();
            g.right(t0 + ms(i), "alice");
        }
    }

    #[test]
    fn many_sources_exhaust_an_account_but_a_clean_source_still_gets_in() {
        let mut g = Guesses::new(GuessRules::default());
        let t0 = Instant::now();
        let mut allowed = 0;
        // 50 sources, each guessing as fast as it is allowed, for an hour.
        for s in 0..3600u64 {
            let now = t0 + secs(s);
            for n in 0..50u8 {
                let src = ip(&format!("10.0.1.{n}"));
                if g.begin(now, src, "Alice").is_ok() {
                    g.wrong(now, src);
                    allowed += 1;
                }
            }
        }
        // The account rule binds sources that failed; each of the 50 got its
        // first guess through as a clean source.
        assert!(allowed <= 100 + 50, "{allowed} wrong guesses in an hour");
        let now = t0 + secs(1800);
        assert!(matches!(
            g.begin(now, ip("10.0.1.7"), "alice"),
            Err(Refusal::Account(_)) | Err(Refusal::Source(_))
        ));
        // A clean address with the right password is never refused.
        let clean = ip("192.0.2.1");
        g.begin(now, clean, "alice").unwrap();
        g.right(now, "alice");
        g.begin(now, clean, "alice").unwrap();
    }

    #[test]
    fn a_flood_of_sources_cannot_grow_the_tables() {
        let mut g = Guesses::new(GuessRules {
            capacity: 100,
            ..GuessRules::default()
        });
        let t0 = Instant::now();
        for n in 0..10_000u32 {
            let src = Source::of(IpAddr::V4(n.into()));
            let _ = g.begin(t0, src, &format!("u{n}"));
            g.wrong(t0, src);
        }
        let (s, a) = g.tracked();
        assert!(s <= 100 && a <= 100, "{s} sources, {a} accounts");
    }

    #[test]
    fn throttle_counts_per_key_and_zero_means_none() {
        let t0 = Instant::now();
        let mut th = Throttle::new(Rate::at_most(3, secs(3600)), 16);
        let src = ip("10.0.0.1");
        let ok = (0..10).filter(|_| th.take(t0, src).is_ok()).count();
        assert_eq!(ok, 1, "burst is a quarter, at least one");
        assert!(th.take(t0, ip("10.0.0.2")).is_ok());
        let wait = th.take(t0, src).unwrap_err();
        assert!(th.take(t0 + wait, src).is_ok());
        let mut none = Throttle::new(None, 16);
        assert!((0..1000).all(|_| none.take(t0, src).is_ok()));
    }

    #[test]
    fn conn_count_tracks_sources_and_unauthenticated() {
        let mut c = ConnCount::default();
        let a = ip("10.0.0.1");
        c.opened(a);
        c.opened(a);
        assert_eq!((c.of(a), c.unauthenticated()), (2, 2));
        c.logged_in();
        c.closed(a, true);
        assert_eq!((c.of(a), c.unauthenticated()), (1, 1));
        c.closed(a, false);
        assert_eq!((c.of(a), c.unauthenticated(), c.sources()), (0, 0, 0));
        assert_eq!(unauthenticated_cap(10_000), 7_500);
        assert_eq!(unauthenticated_cap(2), 2);
        assert_eq!(unauthenticated_cap(1), 1);
    }

    #[test]
    fn log_names_are_sanitised() {
        assert_eq!(sanitize_for_log("alice"), "alice");
        assert_eq!(sanitize_for_log("a b\n\x1b[31m"), "a?b???31m");
        assert_eq!(sanitize_for_log(""), "-");
        let long = "x".repeat(100);
        assert_eq!(sanitize_for_log(&long), format!("{}…", "x".repeat(32)));
    }
}
