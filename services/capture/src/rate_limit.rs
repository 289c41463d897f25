//! Per-client rate limits on the public HTTP ingress: a token bucket per client address,
//! so that one script cannot flood form posts, confirmations or tracking hits. A request
//! over the limit gets 429 with `Retry-After` and reaches no handler.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How many clients are tracked before the idle ones (whose buckets are full again) are
/// dropped, so a scan from many addresses cannot grow the table without bound.
const TRACKED_CLIENTS: usize = 100_000;

/// The buckets of every client seen lately; cheap to clone, shared by all requests.
#[derive(Debug, Clone)]
pub struct ClientBuckets {
    buckets: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
    per_second: f64,
    burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl ClientBuckets {
    /// `per_minute` requests a minute per client, up to `burst` at once. None when
    /// `per_minute` is 0: no limit.
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            buckets: Arc::new(Mutex::new(HashMap::new())),
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
        })
    }

    /// Takes one request from `client`'s bucket at `now`, or answers how long until the
    /// bucket holds one again.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= TRACKED_CLIENTS && !buckets.contains_key(&client) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, bucket| refilled(*bucket, now, per_second, burst) < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let tokens = refilled(*bucket, now, self.per_second, self.burst);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                updated: now,
            };
            Ok(())
        } else {
            *bucket = Bucket {
                tokens,
                updated: now,
            };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

/// The tokens `bucket` holds at `now`, refilled at `per_second` up to `burst`.
fn refilled(bucket: Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 8));

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_rate() {
        let buckets = ClientBuckets::new(60, 3).expect("a limit");
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take(CLIENT, start), Ok(()));
        }
        let wait = buckets.take(CLIENT, start).expect_err("over the burst");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            buckets.take(OTHER, start),
            Ok(()),
            "another client has its own"
        );
        assert_eq!(
            buckets.take(CLIENT, start + Duration::from_secs(1)),
            Ok(()),
            "one a second comes back"
        );
        assert!(
            buckets
                .take(CLIENT, start + Duration::from_secs(1))
                .is_err()
        );
        // A long pause fills the bucket up to the burst, not beyond it.
        let later = start + Duration::from_secs(3_600);
        for _ in 0..3 {
            assert_eq!(buckets.take(CLIENT, later), Ok(()));
        }
        assert!(buckets.take(CLIENT, later).is_err());
    }

    #[test]
    fn zero_per_minute_means_no_limit() {
        assert!(ClientBuckets::new(0, 10).is_none());
    }
}
