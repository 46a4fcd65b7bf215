//! Keeping the server connection: when to try again after losing it, and how
//! to notice that it died without telling us. Pure: time and randomness come
//! in as arguments, so tests are exact on a virtual clock.
//!
//! Invariants:
//! - A reconnect delay is always within [`MIN_DELAY`]/2 ..= [`MAX_DELAY`]; the
//!   n-th delay in a row is drawn uniformly from the upper half of
//!   `min(MIN_DELAY · 2ⁿ, MAX_DELAY)` ("equal jitter"), so 10,000 clients that
//!   lose a restarting server together spread their returns over seconds
//!   instead of arriving in one burst, and none waits longer than a minute.
//! - The backoff only resets once the server has taken us back (a login
//!   answered, or a welcome when there is nobody to log in as), so a server
//!   that accepts and drops at once still sees growing delays.
//! - While connected, at most one heartbeat `PING` is outstanding; a server
//!   that sends nothing at all for [`PING_IDLE`] + [`PING_DEADLINE`] while we
//!   wait for that ping is declared dead. Nothing is sent on a busy
//!   connection: any line from the server proves it alive.
//! - A resumption ticket ([`HeldTicket`]) lives in memory only, is handed
//!   out once ([`HeldTicket::take_usable`]: the server takes each once) and
//!   never printed: its `Debug` shows the user and the expiry, not the ticket.

use std::time::{Duration, Instant};

/// The first reconnect waits about this long.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// No reconnect waits longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Silence from the server after which we send a `PING` of our own.
pub const PING_IDLE: Duration = Duration::from_secs(30);
/// How long that `PING` may go unanswered before the connection counts as dead.
pub const PING_DEADLINE: Duration = Duration::from_secs(20);

/// Where the server connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Up,
    /// A connect is in progress since then.
    Connecting {
        since: Instant,
    },
    /// Lost; the next attempt is due then.
    Waiting {
        until: Instant,
    },
    /// Lost for good: the server replaced or removed this session, or the
    /// user is leaving.
    Off,
}

/// Jitter needs spread, not secrecy, and a fixed seed makes every delay in
/// a test exact: the shared SplitMix64.
pub use crate::rng::Seeded as Rng;

/// The delay before attempt number `attempt` (0-based) given a random word.
pub fn delay(attempt: u32, random: u64) -> Duration {
    let ceiling = MIN_DELAY
        .checked_mul(1u32 << attempt.min(16))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY);
    let half = ceiling / 2;
    let ms = half.as_millis() as u64;
    half + Duration::from_millis(random % (ms + 1))
}

/// Exponential backoff with jitter over consecutive failed attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            rng: Rng::new(seed),
        }
    }

    /// The wait before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.attempt, self.rng.next_u64());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Attempts made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The session resumption ticket the server gave (`OK TICKET`, `OK RESUME`):
/// after a reconnect, `RESUME` with it skips the server's password hash
/// until `expires` (the session's re-login deadline).
#[derive(Debug, Clone)]
pub struct HeldTicket {
    pub user: String,
    pub ticket: crate::proto::Ticket,
    /// Unix seconds.
    pub expires: u64,
}

/// Seconds before `expires` after which a ticket is not worth offering: a
/// RESUME that lands after the deadline costs a round trip for an `ERR`.
pub const TICKET_MARGIN_SECS: u64 = 5;

impl HeldTicket {
    /// Takes the ticket out of `slot` if it can still be redeemed at
    /// `now_unix` for `user`; an unusable one is dropped as well.
    pub fn take_usable(
        slot: &mut Option<HeldTicket>,
        user: &str,
        now_unix: u64,
    ) -> Option<HeldTicket> {
        let t = slot.take()?;
        (t.user.eq_ignore_ascii_case(user) && now_unix + TICKET_MARGIN_SECS < t.expires)
            .then_some(t)
    }
}

/// What the heartbeat wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Nothing,
    /// Send a `PING`: the connection has been quiet.
    Ping,
    /// The `PING` went unanswered: treat the connection as lost.
    Dead,
}

/// Liveness of the server connection, from what arrives on it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last_heard: Instant,
    ping_sent: Option<Instant>,
}

impl Heartbeat {
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            last_heard: now,
            ping_sent: None,
        }
    }

    /// Any line from the server.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.ping_sent = None;
    }

    pub fn next_deadline(&self) -> Instant {
        match self.ping_sent {
            Some(at) => at + PING_DEADLINE,
            None => self.last_heard + PING_IDLE,
        }
    }

    /// `can_ping`: no reply is pending that the server may legitimately take
    /// long over (a queued password hash), so a PING's reply would not be
    /// delayed behind it.
    pub fn check(&mut self, now: Instant, can_ping: bool) -> Beat {
        match self.ping_sent {
            Some(at) if now >= at + PING_DEADLINE => Beat::Dead,
            Some(_) => Beat::Nothing,
            None if now >= self.last_heard + PING_IDLE && can_ping => {
                self.ping_sent = Some(now);
                Beat::Ping
            }
            None => Beat::Nothing,
        }
    }

    /// True while our heartbeat `PING` awaits its `OK PING`.
    pub fn ping_outstanding(&self) -> bool {
        self.ping_sent.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_double_and_stay_within_bounds() {
        for attempt in 0..40 {
            let ceiling = if attempt >= 6 {
                MAX_DELAY
            } else {
                MIN_DELAY * (1 << attempt)
            };
            assert_eq!(delay(attempt, 0), ceiling / 2, "attempt {attempt}");
            let top = delay(attempt, ceiling.as_millis() as u64 / 2);
            assert_eq!(top, ceiling, "attempt {attempt}");
            assert!(delay(attempt, u64::MAX) <= MAX_DELAY);
            assert!(delay(attempt, u64::MAX) >= MIN_DELAY / 2);
        }
    }

    #[test]
    fn seeded_backoff_is_exact_and_resets() {
        let mut a = Backoff::new(42);
        let mut b = Backoff::new(42);
        let first: Vec<Duration> = (0..10).map(|_| a.next_delay()).collect();
        let second: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(first, second);
        assert_eq!(a.attempts(), 10);
        // Each delay within its step's half-open window.
        let mut rng = Rng::new(42);
        for (i, d) in first.iter().enumerate() {
            assert_eq!(*d, delay(i as u32, rng.next_u64()));
        }
        a.reset();
        assert!(a.next_delay() <= MIN_DELAY);
    }

    #[test]
    fn jitter_spreads_a_herd() {
        // 10,000 clients with different seeds losing the server at once: their
        // first retries spread over the whole half-second window, not a spike.
        let mut buckets = [0u32; 10];
        for seed in 0..10_000u64 {
            let d = Backoff::new(seed.wrapping_mul(0x1234_5678_9abc)).next_delay();
            let slot = ((d - MIN_DELAY / 2).as_millis() as usize * 10 / 501).min(9);
            buckets[slot] += 1;
        }
        for (i, n) in buckets.iter().enumerate() {
            assert!((700..1300).contains(n), "bucket {i} has {n}: {buckets:?}");
        }
    }

    #[test]
    fn a_held_ticket_is_given_out_once_for_its_user_before_it_expires() {
        let held = || {
            Some(HeldTicket {
                user: "alice".into(),
                ticket: crate::proto::Ticket::parse(&"5a".repeat(37)).unwrap(),
                expires: 1000,
            })
        };
        let mut slot = held();
        assert!(HeldTicket::take_usable(&mut slot, "Alice", 900).is_some());
        assert!(slot.is_none(), "single use: taken out");
        let mut slot = held();
        assert!(HeldTicket::take_usable(&mut slot, "bob", 900).is_none());
        assert!(slot.is_none(), "another user's is dropped");
        let mut slot = held();
        assert!(HeldTicket::take_usable(&mut slot, "alice", 1000 - TICKET_MARGIN_SECS).is_none());
        let shown = format!("{:?}", held());
        assert!(!shown.contains("5a5a"), "{shown}");
    }

    #[test]
    fn heartbeat_pings_when_quiet_and_declares_death_after_deadline() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(t0);
        assert_eq!(h.check(t0 + PING_IDLE / 2, true), Beat::Nothing);
        assert_eq!(h.next_deadline(), t0 + PING_IDLE);
        // Busy with a login hash: no ping yet.
        assert_eq!(h.check(t0 + PING_IDLE, false), Beat::Nothing);
        assert_eq!(h.check(t0 + PING_IDLE, true), Beat::Ping);
        assert!(h.ping_outstanding());
        assert_eq!(h.next_deadline(), t0 + PING_IDLE + PING_DEADLINE);
        assert_eq!(
            h.check(t0 + PING_IDLE + Duration::from_secs(1), true),
            Beat::Nothing
        );
        assert_eq!(h.check(t0 + PING_IDLE + PING_DEADLINE, true), Beat::Dead);
        // A reply in time resets everything.
        let mut h = Heartbeat::new(t0);
        assert_eq!(h.check(t0 + PING_IDLE, true), Beat::Ping);
        h.heard(t0 + PING_IDLE + Duration::from_secs(3));
        assert!(!h.ping_outstanding());
        assert_eq!(h.check(t0 + PING_IDLE + PING_DEADLINE, true), Beat::Nothing);
    }
}
