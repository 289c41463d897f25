//! The consuming side's port, the same in both modes: a consumer group is handed each
//! event as a [`Delivery`], and its handler answers with [`Applied`], a proof that the
//! effect and the event's id were written in one transaction (see [`crate::inbox`]) or that
//! the event asked for nothing. Whether the events came through Redis Streams or the
//! embedded bus, the handler never knows. A consumer hands over what one read returned
//! as a batch, so that a handler may apply it in one transaction.

use leadflow_proto::events::v1::EventEnvelope;
use leadflow_storage::StorageError;
use tracing::Instrument;

/// Why a handler could not apply an event; kept with the event if it is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<StorageError> for HandlerError {
    fn from(error: StorageError) -> Self {
        Self(error.to_string())
    }
}

/// One event handed to one consumer group.
#[derive(Debug, Clone)]
pub struct Delivery {
    group: String,
    event_id: uuid::Uuid,
    envelope: EventEnvelope,
}

impl Delivery {
    /// The delivery of `envelope` to `group`; refused when the event id is not a UUID,
    /// since a redelivery could then not be recognised.
    pub fn new(group: &str, envelope: EventEnvelope) -> Result<Self, HandlerError> {
        let event_id = uuid::Uuid::parse_str(&envelope.event_id)
            .map_err(|_| HandlerError("event id is not a UUID".to_owned()))?;
        Ok(Self {
            group: group.to_owned(),
            event_id,
            envelope,
        })
    }

    /// The consumer group the event is delivered to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The event's id, under which the group records it as applied.
    pub fn event_id(&self) -> uuid::Uuid {
        self.event_id
    }

    /// The event.
    pub fn envelope(&self) -> &EventEnvelope {
        &self.envelope
    }
}

/// Proof that a delivery was dealt with. Only [`crate::inbox`] makes one for an event
/// with an effect, so a handler cannot acknowledge an event it did not record as applied.
#[derive(Debug)]
#[must_use = "a handler returns the proof that it applied the event"]
pub struct Applied(());

impl Applied {
    /// For an event this group has nothing to do with: applying it twice changes nothing
    /// either, so there is nothing to record.
    pub fn nothing_to_do() -> Self {
        Self(())
    }

    pub(crate) fn recorded() -> Self {
        Self(())
    }
}

/// What a consuming service does with the events of its group.
#[async_trait::async_trait]
pub trait EventHandler: Send + Sync + std::fmt::Debug {
    /// Applies `delivery`, recording its id in the same transaction as the effect; an
    /// error changes nothing and the event is retried, then dead-lettered.
    async fn handle(&self, delivery: &Delivery) -> Result<Applied, HandlerError>;

    /// Applies the deliveries of one read, answering for each in the same order. A handler
    /// that can commit many events at once overrides this; the default applies them one by
    /// one.
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Result<Applied, HandlerError>> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(self.handle(delivery).instrument(apply_span(delivery)).await);
        }
        outcomes
    }
}

/// The span a delivery is applied in: a consumer span in the trace of the span that
/// produced the event.
pub fn apply_span(delivery: &Delivery) -> tracing::Span {
    let envelope = delivery.envelope();
    let span = tracing::info_span!(
        "event.apply",
        otel.kind = "consumer",
        event_id = %delivery.event_id(),
        event_type = %envelope.event_type,
        group = %delivery.group(),
    );
    leadflow_platform::trace_context::set_parent_from_map(&span, &envelope.trace_context);
    span
}

/// A shared handler handles like the one it shares, so that one process can keep the
/// handlers of several services side by side as `Arc<dyn EventHandler>`.
#[async_trait::async_trait]
impl<H: EventHandler + ?Sized> EventHandler for std::sync::Arc<H> {
    async fn handle(&self, delivery: &Delivery) -> Result<Applied, HandlerError> {
        (**self).handle(delivery).await
    }

    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Result<Applied, HandlerError>> {
        (**self).handle_batch(deliveries).await
    }
}
