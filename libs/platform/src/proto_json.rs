//! Protobuf messages in the canonical proto3 JSON mapping (field names in lowerCamelCase,
//! enums by name, timestamps in RFC 3339), for documents people read, such as the
//! data-protection export.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

/// A message could not be written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ProtoJsonError {
    /// The contracts compiled into this build hold no message of this name.
    #[error("no message {0} in the contracts")]
    UnknownMessage(String),
    /// The message's bytes do not fit its descriptor.
    #[error("message {name} does not decode: {reason}")]
    Undecodable { name: String, reason: String },
}

/// The contracts compiled into this build, decoded once for every reader of them (the JSON
/// mapping here, the scope of each method in [`crate::auth`]).
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(leadflow_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into leadflow-proto decodes")
    })
}

/// `message`, whose full protobuf name is `full_name` (e.g. `leadflow.capture.v1.Contact`),
/// as a JSON value.
pub fn to_json<M: prost::Message>(
    full_name: &str,
    message: &M,
) -> Result<serde_json::Value, ProtoJsonError> {
    let descriptor = descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| ProtoJsonError::UnknownMessage(full_name.to_owned()))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).map_err(
        |error| ProtoJsonError::Undecodable {
            name: full_name.to_owned(),
            reason: error.to_string(),
        },
    )?;
    serde_json::to_value(&dynamic).map_err(|error| ProtoJsonError::Undecodable {
        name: full_name.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_as_canonical_json() {
        let activity = leadflow_proto::capture::v1::Activity {
            activity_id: "a1".to_owned(),
            r#type: leadflow_proto::common::v1::ActivityType::PageVisited as i32,
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = to_json("leadflow.capture.v1.Activity", &activity).expect("json");
        assert_eq!(json["activityId"], "a1");
        assert_eq!(json["type"], "ACTIVITY_TYPE_PAGE_VISITED");
        assert_eq!(json["occurredAt"], "2023-11-14T22:13:20Z");
        assert!(matches!(
            to_json("leadflow.capture.v1.NoSuchThing", &activity),
            Err(ProtoJsonError::UnknownMessage(_))
        ));
    }
}
