//! Time: the clock services read (the system's, or one a test moves by hand), and
//! conversions between protobuf timestamps and chrono times.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};

/// Where a service reads the current time, so that tests can run months in milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, in microseconds (the precision PostgreSQL keeps).
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that stands still until it is set or advanced; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start.trunc_subsecs(6))),
        }
    }

    /// Moves the clock to `time`.
    pub fn set(&self, time: DateTime<Utc>) {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = time.trunc_subsecs(6);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A protobuf timestamp for `time`.
pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf duration for a chrono one (negative stays negative: seconds and nanos share
/// the sign, as the protobuf type requires).
pub fn to_duration(duration: chrono::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: duration.num_seconds(),
        nanos: duration.subsec_nanos(),
    }
}

/// The time of a protobuf timestamp, or `None` when it is out of range.
pub fn from_timestamp(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let time = DateTime::from_timestamp(1_790_000_000, 123_456_789).expect("in range");
        assert_eq!(from_timestamp(&to_timestamp(time)), Some(time));
        assert_eq!(
            from_timestamp(&prost_types::Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
    }
}
