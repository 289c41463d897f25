//! What every leadflow service stands on: layered configuration, telemetry with trace
//! context carried across gRPC calls, the gRPC server bootstrap (health, reflection,
//! bearer-token authentication, graceful shutdown) and the mapping of errors to gRPC status
//! codes.

pub mod auth;
pub mod config;
pub mod error;
pub mod health;
pub mod links;
pub mod proto_json;
pub mod server;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace_context;
pub mod validate;

pub use config::{
    AuthSettings, ConfigError, IngressSettings, LogFormat, LogSettings, MailSettings, PeerSettings,
    Settings, TlsSettings,
};
pub use error::{FieldViolations, storage_status};
pub use health::{DependencyProbe, HealthMonitor};
pub use server::{GrpcServer, shutdown_signal};
