//! Events that are never lost. A producer writes its record and an outbox row in one
//! transaction ([`outbox::append`]); a [`Relay`] publishes the outbox to one Redis stream
//! per producer and refills a stream that Redis lost; a [`Consumer`] reads with a consumer
//! group, applies each event and records its id in one transaction, acknowledges it,
//! claims what a dead replica left pending, and sets aside what keeps failing in a
//! dead-letter stream.

pub mod consumer;
pub mod envelope;
pub mod lag;
pub mod outbox;
pub mod relay;

pub use consumer::{Consumer, ConsumerSettings, EventHandler, HandlerError};
pub use envelope::new_envelope;
pub use lag::{
    DeadLetter, GroupLag, LagSamples, dead_letters, lag_report, register_lag_gauges,
    spawn_lag_sampler,
};
pub use relay::{Relay, RelaySettings};

use leadflow_storage::RedisKeySpace;

/// The stream a producer's events are published to, e.g. `leadflow:events:capture`.
pub fn stream_key(key_space: &RedisKeySpace, producer: &str) -> String {
    key_space.key(&format!("events:{producer}"))
}

/// The stream a consumer group sets aside events it could not apply.
pub fn dead_letter_key(key_space: &RedisKeySpace, group: &str) -> String {
    key_space.key(&format!("events:dead-letter:{group}"))
}
