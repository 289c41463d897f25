//! Events that are never lost. A producer writes its record and an outbox row in one
//! transaction ([`outbox`]); a consumer group's [`EventHandler`] applies each event and
//! records its id in one transaction ([`inbox`]), so a redelivery changes nothing twice.
//!
//! Between the two, one of two adapters carries the events. In production a [`Relay`]
//! publishes each outbox to a Redis stream per producer (refilling a stream Redis lost), and
//! a [`Consumer`] reads it with a consumer group, claims what a dead replica left pending
//! and sets aside what keeps failing in a dead-letter stream. In the embedded mode the
//! [`EmbeddedBus`] reads the SQLite outboxes in-process, with the same guarantees for one
//! process.

pub mod consumer;
pub mod embedded;
pub mod envelope;
pub mod handler;
pub mod inbox;
pub mod lag;
pub mod outbox;
pub mod relay;

pub use consumer::{Consumer, ConsumerSettings};
pub use embedded::{EmbeddedBus, EmbeddedConsumer};
pub use envelope::new_envelope;
pub use handler::{Applied, Delivery, EventHandler, HandlerError, apply_span};
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
