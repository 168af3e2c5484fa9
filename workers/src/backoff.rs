//! Exponential backoff with jitter, for job retries and loops that retry the database.
//!
//! The delay before retry `n` (1-based: the retry after the first failed attempt is `n = 1`) is drawn from
//! `[d/2, d]` where `d = min(base * 2^(n-1), max)` ("equal jitter"): the schedule still grows, so a failing
//! partner sees fewer and fewer calls, while the jitter spreads the retries of many jobs that failed together
//! (a partner outage) so they do not come back as one burst.

use std::time::Duration;

/// A capped exponential schedule with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay scale of the first retry.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The ceiling `d` of retry `n`'s delay, before jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let factor = 1u32 << exp;
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry `n`, with a random jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, rand::random::<f64>())
    }

    /// The delay before retry `n` for a given jitter in `[0, 1]` (0: half the ceiling, 1: the ceiling).
    pub fn delay_with(&self, retry: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ceiling doubles per retry until the cap.
    #[test]
    fn ceiling_doubles_until_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let c: Vec<u64> = (1..=6).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(c, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(10));
    }
}
