//! When to try the fleet server again after failed fetches. The daemon's passes keep their
//! interval while the server is down (drift on the last fetched commit is corrected on time); only
//! the fetch backs off, doubling per failure up to max(interval, 10 min).

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct FetchBackoff {
    failures: u32,
    next_try: Option<Instant>,
}

impl FetchBackoff {
    /// Whether a pass starting `now` should fetch.
    pub fn due(&self, now: Instant) -> bool {
        self.next_try.is_none_or(|t| now >= t)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn succeeded(&mut self) {
        *self = FetchBackoff::default();
    }

    /// A fetch at `now` failed: hold the next one back.
    pub fn failed(&mut self, now: Instant, interval: Duration) {
        self.failures = self.failures.saturating_add(1);
        let cap = interval.max(Duration::from_secs(600));
        // The first retry comes with the next pass; then 2, 4, 8 ... intervals.
        let wait = interval
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(cap);
        // A pass starts up to 10 % early (jitter): do not miss the retry by a hair.
        self.next_try = Some(now + wait.mul_f64(0.85));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let i = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut b = FetchBackoff::default();
        assert!(b.due(t0));
        b.failed(t0, i);
        assert!(!b.due(t0 + Duration::from_secs(30)));
        assert!(
            b.due(t0 + Duration::from_secs(55)),
            "retried at the next pass"
        );
        b.failed(t0, i);
        assert!(!b.due(t0 + Duration::from_secs(90)));
        assert!(b.due(t0 + Duration::from_secs(110)));
        for _ in 0..40 {
            b.failed(t0, i);
        }
        assert!(b.due(t0 + Duration::from_secs(600)), "capped at 10 min");
        assert_eq!(b.failures(), 42);
        b.succeeded();
        assert!(b.due(t0));
    }
}
