//! Conversions between protobuf timestamps and chrono times.

use chrono::{DateTime, Utc};

/// A protobuf timestamp for `time`.
pub fn to_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
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
