//! Generated protobuf messages, gRPC clients and servers for every leadflow contract,
//! plus the encoded descriptor set that server reflection serves.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    unused_qualifications,
    missing_debug_implementations
)]

/// The encoded `FileDescriptorSet` of every contract under `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/leadflow_descriptor.bin"));

pub mod domain;

pub mod common {
    pub mod v1 {
        tonic::include_proto!("leadflow.common.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("leadflow.events.v1");
    }
}

pub mod capture {
    pub mod v1 {
        tonic::include_proto!("leadflow.capture.v1");
    }
}

pub mod scoring {
    pub mod v1 {
        tonic::include_proto!("leadflow.scoring.v1");
    }
}

pub mod nurturing {
    pub mod v1 {
        tonic::include_proto!("leadflow.nurturing.v1");
    }
}

pub mod routing {
    pub mod v1 {
        tonic::include_proto!("leadflow.routing.v1");
    }
}
