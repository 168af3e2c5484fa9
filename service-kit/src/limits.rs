//! Request budgets no caller can dodge, shared by the REST and GraphQL APIs.
//!
//! - A token bucket per **verified** caller: the token's role and subject once its signature checked
//!   out, or the partner whose signature a callback carries. A new (junk) token buys no new bucket.
//! - A separate, smaller budget per **client address** for everything that is not verified: requests
//!   without a token, with an invalid or expired one, callbacks with a bad signature. Flooding it with
//!   cheap 401s starves only that address, never a real caller or partner.
//! - A cap on the concurrent waits one subject may hold (GraphQL `minPosition`), so one caller cannot
//!   pin the server's connections and tasks for the length of the wait timeout.
//!
//! Each refusal carries the seconds to wait, for `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use domain::values::Actor;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The smallest burst a verified caller's bucket allows, whatever its rate.
pub const CALLER_MIN_BURST: u32 = 1000;

/// Who a request is charged to.
#[derive(Debug, Clone, Copy)]
pub enum Charge<'a> {
    /// A caller whose bearer token verified.
    Verified(&'a Actor),
    /// A partner (or the payment provider) whose signature verified.
    Partner(&'a str),
    /// Anyone else, by client address.
    Address(IpAddr),
}

/// The budgets (see the module docs).
pub struct Limits {
    callers: Option<DefaultKeyedRateLimiter<String>>,
    addresses: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
    waits: Mutex<HashMap<String, usize>>,
    max_waits: usize,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("max_waits", &self.max_waits)
            .finish_non_exhaustive()
    }
}

/// A bucket of `per_second` sustained requests with bursts of twice that, and at least `min_burst`;
/// `None` for 0 (no limit).
fn bucket<K: std::hash::Hash + Eq + Clone>(
    per_second: u32,
    min_burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2).max(min_burst)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// Whole seconds until `not_until`, at least 1.
fn seconds(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Limits {
    /// `per_caller` requests per second per verified caller (bursts of twice that and at least
    /// [`CALLER_MIN_BURST`], so batch imports pass), `per_address` per client address for unverified
    /// requests (bursts of twice that); 0 turns that limit off. At most `max_waits` concurrent waits
    /// per subject (0: none allowed).
    pub fn new(per_caller: u32, per_address: u32, max_waits: usize) -> Arc<Self> {
        Arc::new(Self {
            callers: bucket(per_caller, CALLER_MIN_BURST),
            addresses: bucket(per_address, 0),
            checks: AtomicU64::new(0),
            waits: Mutex::new(HashMap::new()),
            max_waits,
        })
    }

    /// No limit at all (tests, benchmarks).
    pub fn unlimited() -> Arc<Self> {
        Self::new(0, 0, usize::MAX)
    }

    /// Charges one request; `Err(seconds)` to wait when the budget is spent.
    pub fn check(&self, charge: Charge<'_>) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            if let Some(callers) = &self.callers {
                callers.retain_recent();
            }
            if let Some(addresses) = &self.addresses {
                addresses.retain_recent();
            }
        }
        let checked = match charge {
            Charge::Verified(actor) => self.callers.as_ref().map(|callers| {
                callers.check_key(&format!("{}:{}", actor.role.as_str(), actor.subject))
            }),
            Charge::Partner(name) => self
                .callers
                .as_ref()
                .map(|callers| callers.check_key(&format!("partner-signature:{name}"))),
            Charge::Address(ip) => self
                .addresses
                .as_ref()
                .map(|addresses| addresses.check_key(&ip)),
        };
        match checked {
            None | Some(Ok(())) => Ok(()),
            Some(Err(not_until)) => {
                metrics::counter!("trailbook_rate_limited_total").increment(1);
                Err(seconds(not_until))
            }
        }
    }

    /// One of `subject`'s concurrent waits, held until the guard drops; `None` when it holds its
    /// maximum already.
    pub fn wait(self: &Arc<Self>, subject: &str) -> Option<WaitGuard> {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let held = waits.entry(subject.to_string()).or_insert(0);
        if *held >= self.max_waits {
            metrics::counter!("trailbook_waits_refused_total").increment(1);
            return None;
        }
        *held += 1;
        Some(WaitGuard {
            limits: self.clone(),
            subject: subject.to_string(),
        })
    }
}

/// A wait counted against its subject (see [`Limits::wait`]).
#[derive(Debug)]
pub struct WaitGuard {
    limits: Arc<Limits>,
    subject: String,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut waits = self.limits.waits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = waits.get_mut(&self.subject) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                waits.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::values::Role;

    fn actor(subject: &str) -> Actor {
        Actor {
            subject: subject.into(),
            role: Role::Client,
        }
    }

    /// A spent address budget refuses only that address; verified callers keep their own buckets.
    #[test]
    fn budgets_are_separate() {
        let limits = Limits::new(5, 2, 1);
        let junk: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let refused = (0..10)
            .filter(|_| limits.check(Charge::Address(junk)).is_err())
            .count();
        assert_eq!(refused, 6, "a burst of 2 × 2 passes, the rest waits");
        assert!(limits.check(Charge::Address(other)).is_ok());
        let ada = actor("ada");
        let burst = CALLER_MIN_BURST as usize;
        assert!((0..burst).all(|_| limits.check(Charge::Verified(&ada)).is_ok()));
        assert!(limits.check(Charge::Verified(&ada)).is_err());
        assert!(limits.check(Charge::Verified(&actor("bob"))).is_ok());
        assert!(limits.check(Charge::Partner("acme")).is_ok());
    }

    /// Waits are capped per subject and given back when the guard drops.
    #[test]
    fn waits_are_capped_per_subject() {
        let limits = Limits::new(0, 0, 2);
        let first = limits.wait("ada");
        let second = limits.wait("ada");
        assert!(first.is_some() && second.is_some());
        assert!(limits.wait("ada").is_none());
        assert!(limits.wait("bob").is_some());
        drop(first);
        assert!(limits.wait("ada").is_some());
    }
}
