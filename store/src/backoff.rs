//! The one backoff of trailbook: exponential, bounded, with jitter.
//!
//! Used by the event store's conflict retry, by every log consumer's failing batch (projector runners, the
//! reactor) and by the workers' job retries. The delay before retry `n` (1-based: the retry after the first
//! failure is `n = 1`) is drawn from `[d/2, d]` where `d = min(base * 2^(n-1), max)` ("equal jitter"): the
//! schedule still grows, so a failing partner or database sees fewer and fewer attempts, while the jitter
//! spreads the retries of many callers that failed together so they do not come back as one burst.
//!
//! A function of `n` rather than a stateful iterator (as the `backon` crate offers) because a job's
//! retry count is stored in the database and its next delay is computed from it, by whichever worker
//! claims the job next; and `backon`'s jitter adds up to a whole delay on top, which would break the bound.

use std::time::Duration;

/// A capped exponential schedule with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay scale of the first retry (its delay is between half of this and this).
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
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

    /// A delay lies between half its ceiling and the ceiling, whatever the jitter.
    #[test]
    fn a_delay_lies_between_half_its_ceiling_and_the_ceiling() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay_with(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay_with(3, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay_with(3, 7.0), Duration::from_millis(400));
        for _ in 0..100 {
            let d = b.delay(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }
}
