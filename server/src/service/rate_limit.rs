//! Token-bucket rate limiting, per key (client IP or account), in process memory.

// In-memory only, never serialised: iteration order cannot reach the wire.
#![allow(clippy::disallowed_types)]

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::config::Bucket;

/// A set of buckets with one shape, keyed by IP or user id.
#[derive(Debug)]
pub struct RateLimiter {
    enabled: bool,
    shape: Bucket,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Above this many keys, full buckets are forgotten (they are indistinguishable from new ones).
const PRUNE_AT: usize = 10_000;

impl RateLimiter {
    pub fn new(enabled: bool, shape: Bucket) -> Self {
        Self { enabled, shape, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; `Err(retry_after_ms)` when the bucket is empty.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let burst = f64::from(self.shape.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_AT {
            let rate = self.shape.per_second;
            buckets.retain(|_, (level, at)| *level + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (level, at) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.shape.per_second).min(burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *level) / self.shape.per_second;
            Err((wait * 1000.0).ceil() as u64)
        }
    }

    /// Whether `key` still has a token, without taking one.
    pub fn would_allow(&self, key: &str) -> bool {
        if !self.enabled {
            return true;
        }
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(key) {
            None => true,
            Some((level, at)) => level + now.duration_since(*at).as_secs_f64() * self.shape.per_second >= 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(true, Bucket { per_second: 2.0, burst: 3 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check_at("ip", t0).is_ok());
        }
        let retry = rl.check_at("ip", t0).unwrap_err();
        assert!(retry > 0 && retry <= 500, "{retry}");
        assert!(rl.check_at("other", t0).is_ok(), "keys are independent");
        assert!(rl.check_at("ip", t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn disabled_allows_everything() {
        let rl = RateLimiter::new(false, Bucket { per_second: 0.001, burst: 1 });
        for _ in 0..100 {
            assert!(rl.check("k").is_ok());
        }
    }
}
