//! Token buckets: how fast lines may leave on a connection. A [`Pacer`] is one bucket
//! shared by everything that writes to one connection (the outlet's messages and, on IRC,
//! the adapter's own WHOIS, JOIN and PONG lines), so together they stay under the server's
//! flood limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Rate;

/// A bucket of `burst` tokens refilled at `per_second`. Tokens may go below zero: a line
/// that must go at once (a PONG) is charged anyway, and later lines wait the longer.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: Rate, now: Instant) -> Bucket {
        let per_second = if rate.per_second.is_finite() && rate.per_second > 0.0 {
            rate.per_second
        } else {
            1.0
        };
        Bucket {
            tokens: rate.burst.max(1) as f64,
            burst: rate.burst.max(1) as f64,
            per_second,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = self.last.max(now);
    }

    /// How long until a token is there (zero if one is there now); takes nothing.
    pub fn wait_needed(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }

    /// Takes a token now and says how long to wait before using it: lines that reserve in
    /// turn go out in turn, each at the bucket's rate.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.reserve_cost(now, 1)
    }

    /// The same for a line the server counts as `cost` lines (InspIRCd counts a WHOIS or a
    /// JOIN as two): the line waits until that many tokens are there, and takes them.
    pub fn reserve_cost(&mut self, now: Instant, cost: u32) -> Duration {
        let cost = f64::from(cost.max(1)).min(self.burst);
        self.refill(now);
        let wait = if self.tokens >= cost {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((cost - self.tokens) / self.per_second)
        };
        self.tokens -= cost;
        wait
    }

    /// Takes a token for a line that goes now, whatever the bucket holds.
    pub fn charge(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// One connection's bucket, shared between tasks.
#[derive(Debug, Clone)]
pub struct Pacer {
    inner: Arc<Mutex<Bucket>>,
}

impl Pacer {
    pub fn new(rate: Rate) -> Pacer {
        Pacer {
            inner: Arc::new(Mutex::new(Bucket::new(rate, Instant::now()))),
        }
    }

    /// See [`Bucket::reserve`].
    pub fn reserve(&self) -> Duration {
        match self.inner.lock() {
            Ok(mut b) => b.reserve(Instant::now()),
            Err(_) => Duration::from_secs(1),
        }
    }

    /// See [`Bucket::reserve_cost`].
    pub fn reserve_cost(&self, cost: u32) -> Duration {
        match self.inner.lock() {
            Ok(mut b) => b.reserve_cost(Instant::now(), cost),
            Err(_) => Duration::from_secs(1),
        }
    }

    /// See [`Bucket::charge`].
    pub fn charge(&self) {
        if let Ok(mut b) = self.inner.lock() {
            b.charge(Instant::now());
        }
    }

    /// Waits for a token and takes it.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_queue_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(
            Rate {
                burst: 2,
                per_second: 2.0,
            },
            t0,
        );
        assert_eq!(b.reserve(t0), Duration::ZERO);
        assert_eq!(b.reserve(t0), Duration::ZERO);
        // The third waits one refill (0.5 s), the fourth two.
        assert_eq!(b.reserve(t0), Duration::from_millis(500));
        assert_eq!(b.reserve(t0), Duration::from_millis(1000));
        // A charged line pushes the next one further.
        b.charge(t0);
        assert_eq!(b.wait_needed(t0), Duration::from_millis(2000));
        // A line that counts double waits for two tokens.
        let mut d = Bucket::new(
            Rate {
                burst: 5,
                per_second: 1.0,
            },
            t0,
        );
        assert_eq!(d.reserve_cost(t0, 2), Duration::ZERO);
        assert_eq!(d.reserve_cost(t0, 2), Duration::ZERO);
        assert_eq!(d.reserve_cost(t0, 2), Duration::from_secs(1));
        assert_eq!(d.reserve_cost(t0, 2), Duration::from_secs(3));
        // Time refills, up to the burst only.
        assert_eq!(b.wait_needed(t0 + Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(b.reserve(t0 + Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(b.reserve(t0 + Duration::from_secs(60)), Duration::ZERO);
        assert!(b.reserve(t0 + Duration::from_secs(60)) > Duration::ZERO);
    }
}
