//! Percentiles and summaries of latency samples. Pure code.

/// Nearest-rank percentile (`p` in 0..=100) of already sorted samples.
/// `None` for no samples.
pub fn percentile_sorted(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summary of a sample set (any unit; the caller knows which).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(samples: &[u64]) -> Option<Summary> {
        let mut s = samples.to_vec();
        s.sort_unstable();
        Some(Summary {
            n: s.len(),
            p50: percentile_sorted(&s, 50.0)?,
            p99: percentile_sorted(&s, 99.0)?,
            max: *s.last()?,
            mean: s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&s, 50.0), Some(50));
        assert_eq!(percentile_sorted(&s, 99.0), Some(99));
        assert_eq!(percentile_sorted(&s, 100.0), Some(100));
        assert_eq!(percentile_sorted(&s, 0.0), Some(1));
    }

    #[test]
    fn small_sets_take_the_top_for_p99() {
        // With 20 repeats p99 is the worst one: nearest rank ceil(0.99*20) = 20.
        let s: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile_sorted(&s, 99.0), Some(20));
        assert_eq!(percentile_sorted(&s, 50.0), Some(10));
        assert_eq!(percentile_sorted(&[7], 50.0), Some(7));
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&[5, 1, 4, 2, 3]).unwrap();
        assert_eq!((s.n, s.p50, s.p99, s.max), (5, 3, 5, 5));
        assert!((s.mean - 3.0).abs() < 1e-9);
        assert!(Summary::of(&[]).is_none());
    }
}
