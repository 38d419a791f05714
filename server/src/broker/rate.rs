//! Request rate limits: a token bucket per broker-port connection and one
//! per named token (shared by HTTP and the broker port).
//!
//! A bucket holds up to one second's worth of requests and refills
//! continuously, so a client may burst to its rate and then keeps to it.
//! The fronts ask before handing a request to the broker; a refusal is
//! answered at once (HTTP 429, wire `Unavailable` with "rate limit") and
//! counted in [`super::limits::Refusals`]. Time is passed in, so the logic
//! is tested without clocks or sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `per_sec` requests a second.
    pub fn new(per_sec: u32, now: Instant) -> Bucket {
        Bucket {
            per_sec: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: now,
        }
    }

    /// Takes one request's token, if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The per-token buckets (`rate_limit_per_token`; 0 turns them off).
#[derive(Debug)]
pub struct TokenRates {
    per_sec: u32,
    /// One bucket per token name; the names are the configured tokens, so
    /// the map is bounded by the config. A std mutex: held for a few
    /// arithmetic steps, never across an await.
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl TokenRates {
    pub fn new(per_sec: u32) -> Arc<TokenRates> {
        Arc::new(TokenRates {
            per_sec,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The limit in requests per second (0: none).
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Whether the token named `name` may make one more request now.
    pub fn allow(&self, name: &Arc<str>, now: Instant) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(name.clone())
            .or_insert_with(|| Bucket::new(self.per_sec, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_to_the_rate_then_keeps_to_it() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        assert_eq!((0..15).filter(|_| b.take(t0)).count(), 10);
        // 0.5 s later: five more, not ten.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..15).filter(|_| b.take(t1)).count(), 5);
        // A long pause refills to one second's worth, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..30).filter(|_| b.take(t2)).count(), 10);
    }

    #[test]
    fn each_token_has_its_own_bucket_and_zero_is_no_limit() {
        let t0 = Instant::now();
        let rates = TokenRates::new(2);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(rates.allow(&a, t0) && rates.allow(&a, t0));
        assert!(!rates.allow(&a, t0));
        assert!(rates.allow(&b, t0));
        let open = TokenRates::new(0);
        assert!((0..1000).all(|_| open.allow(&a, t0)));
    }
}
