//! Return-routability cookies for `REGISTER` (the idea of QUIC's Retry token
//! and DTLS's HelloVerifyRequest cookie).
//!
//! Invariants:
//! - Stateless: a cookie is a MAC (HMAC-SHA256, cut to 96 bits) over the
//!   source address, the session token and a coarse time bucket, under a
//!   server secret drawn at start. Nothing is stored per source before it is
//!   validated, so a flood of forged `REGISTER`s costs the server no memory.
//! - Bounded life: a cookie is accepted in the bucket it was made in and the
//!   next one, so for between [`BUCKET`] and twice that.
//! - A cookie made for one address, session or secret is worthless for any
//!   other; it is compared in constant time.
//! - The secret's type never prints its value.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::proto::datagram::{Cookie, COOKIE_LEN};

/// Width of a time bucket: a cookie lives between one and two of them.
pub const BUCKET: Duration = Duration::from_secs(30);

/// The server's cookie secret.
pub struct CookieKey([u8; 32]);

impl CookieKey {
    /// A fresh secret (from the OS in the server): cookies die with the
    /// server process.
    pub fn random(rng: &mut dyn crate::rng::Random) -> CookieKey {
        let mut k = [0u8; 32];
        rng.fill(&mut k);
        CookieKey(k)
    }

    /// A given secret (tests).
    pub fn from_bytes(k: [u8; 32]) -> CookieKey {
        CookieKey(k)
    }

    /// The cookie for `from` and the session `subject` in time bucket `bucket`
    /// (seconds since an epoch of the caller's choosing, divided by [`BUCKET`]).
    pub fn make(&self, bucket: u64, from: SocketAddr, subject: &[u8]) -> Cookie {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"peerline register cookie v1");
        mac.update(&bucket.to_be_bytes());
        // The address in one canonical form, so an IPv4 peer of a dual-stack
        // socket (`::ffff:a.b.c.d`) and of a v4 socket make the same cookie.
        let ip = match from.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        mac.update(&ip.octets());
        mac.update(&from.port().to_be_bytes());
        mac.update(subject);
        let full = mac.finalize().into_bytes();
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&full[..COOKIE_LEN]);
        Cookie(c)
    }

    /// True if `cookie` was made for `from` and `subject` in `bucket` or the one before.
    pub fn check(&self, bucket: u64, from: SocketAddr, subject: &[u8], cookie: &Cookie) -> bool {
        let ok = |b: u64| bool::from(self.make(b, from, subject).0.ct_eq(&cookie.0));
        ok(bucket) || (bucket > 0 && ok(bucket - 1))
    }
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_cookie_is_valid_for_its_address_and_session_for_two_buckets_only() {
        let k = CookieKey::from_bytes([7; 32]);
        let a = addr("127.0.0.1:5000");
        let c = k.make(10, a, b"session-a");
        assert!(k.check(10, a, b"session-a", &c));
        assert!(
            k.check(11, a, b"session-a", &c),
            "still good in the next bucket"
        );
        assert!(!k.check(12, a, b"session-a", &c), "too old");
        assert!(!k.check(9, a, b"session-a", &c), "from the future");
        assert!(!k.check(10, addr("127.0.0.1:5001"), b"session-a", &c));
        assert!(!k.check(10, addr("127.0.0.2:5000"), b"session-a", &c));
        assert!(!k.check(10, a, b"session-b", &c));
        assert!(!CookieKey::from_bytes([8; 32]).check(10, a, b"session-a", &c));
        let mut flipped = c;
        flipped.0[COOKIE_LEN - 1] ^= 1;
        assert!(!k.check(10, a, b"session-a", &flipped));
    }

    #[test]
    fn v4_and_v4_mapped_v6_are_one_address() {
        let k = CookieKey::from_bytes([1; 32]);
        let c = k.make(0, addr("127.0.0.1:9"), b"s");
        assert!(k.check(0, addr("[::ffff:127.0.0.1]:9"), b"s", &c));
    }

    #[test]
    fn random_keys_differ_and_never_print() {
        let os = &mut crate::rng::OsRandom;
        let (a, b) = (CookieKey::random(os), CookieKey::random(os));
        let at = addr("127.0.0.1:1");
        assert_ne!(a.make(0, at, b"s"), b.make(0, at, b"s"));
        assert_eq!(format!("{a:?}"), "CookieKey(<redacted>)");
    }
}
