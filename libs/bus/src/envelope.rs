//! Building the envelope every event travels in: its id, type, producer, time, the
//! aggregate it is about, and the trace context of the span that produced it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadflow_platform::time::to_timestamp;
use leadflow_proto::events::v1::{EventEnvelope, event_envelope::Payload};

/// The `event_type` of an erasure, which the relay looks for without decoding every event.
pub const CONTACT_ERASED: &str = "leadflow.events.v1.ContactErased";

/// The full protobuf name of a payload, which is the envelope's `event_type`.
pub fn event_type(payload: &Payload) -> &'static str {
    match payload {
        Payload::ContactCaptured(_) => "leadflow.events.v1.ContactCaptured",
        Payload::ActivityRecorded(_) => "leadflow.events.v1.ActivityRecorded",
        Payload::ConsentChanged(_) => "leadflow.events.v1.ConsentChanged",
        Payload::ContactErased(_) => CONTACT_ERASED,
        Payload::ScoreChanged(_) => "leadflow.events.v1.ScoreChanged",
        Payload::ClassChanged(_) => "leadflow.events.v1.ClassChanged",
        Payload::StageChanged(_) => "leadflow.events.v1.StageChanged",
        Payload::SalesReady(_) => "leadflow.events.v1.SalesReady",
        Payload::EmailSent(_) => "leadflow.events.v1.EmailSent",
        Payload::NurtureExhausted(_) => "leadflow.events.v1.NurtureExhausted",
        Payload::LeadAssigned(_) => "leadflow.events.v1.LeadAssigned",
        Payload::AssignmentAccepted(_) => "leadflow.events.v1.AssignmentAccepted",
        Payload::AssignmentRejected(_) => "leadflow.events.v1.AssignmentRejected",
        Payload::LeadRecycled(_) => "leadflow.events.v1.LeadRecycled",
        Payload::SlaBreached(_) => "leadflow.events.v1.SlaBreached",
        Payload::DealClosed(_) => "leadflow.events.v1.DealClosed",
        Payload::LeadQualified(_) => "leadflow.events.v1.LeadQualified",
        Payload::OpportunityOpened(_) => "leadflow.events.v1.OpportunityOpened",
    }
}

/// A new envelope for `payload`, produced by `producer` about `aggregate_id` at `now`,
/// carrying the current span's trace context.
pub fn new_envelope(
    producer: &str,
    aggregate_id: &str,
    payload: Payload,
    now: DateTime<Utc>,
) -> EventEnvelope {
    let mut trace_context = BTreeMap::new();
    leadflow_platform::trace_context::inject_into_map(&mut trace_context);
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type(&payload).to_owned(),
        producer: producer.to_owned(),
        occurred_at: Some(to_timestamp(now)),
        trace_context,
        aggregate_id: aggregate_id.to_owned(),
        payload: Some(payload),
    }
}
