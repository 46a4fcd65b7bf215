//! Randomness as an input. The engines never read a random source
//! themselves: the server's driver hands its engine [`OsRandom`], tests hand
//! it a [`Seeded`] generator, so an engine transcript is exact, tokens
//! included.

/// Where an engine's random bytes come from (session and p2p tokens, salts,
/// the cookie key).
pub trait Random {
    fn fill(&mut self, buf: &mut [u8]);
}

/// The OS random source: what the server runs with.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        getrandom::getrandom(buf).expect("the OS random source failed");
    }
}

/// A small, seedable generator (SplitMix64): spread, not secrecy. The
/// client's reconnect jitter uses it, and engine tests, where a fixed seed
/// makes every token exact.
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_bytes_and_another_seed_others() {
        let fill = |seed| {
            let mut b = [0u8; 20];
            Seeded::new(seed).fill(&mut b);
            b
        };
        assert_eq!(fill(7), fill(7));
        assert_ne!(fill(7), fill(8));
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        OsRandom.fill(&mut a);
        OsRandom.fill(&mut b);
        assert_ne!(a, b);
    }
}
