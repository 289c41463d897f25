//! The console: commands that call a running suite through its gRPC contracts and print the
//! answers, as tables for a person or as the contracts' own JSON mapping for scripts.

pub mod import;
pub mod lead;
pub mod report;
pub mod reps;
pub mod table;

use std::{io::Write, sync::OnceLock, time::Duration};

use leadflow_proto::{
    capture::v1::capture_service_client::CaptureServiceClient,
    nurturing::v1::nurturing_service_client::NurturingServiceClient,
    routing::v1::routing_service_client::RoutingServiceClient,
    scoring::v1::scoring_service_client::ScoringServiceClient,
};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use secrecy::{ExposeSecret, SecretString};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_types::StatusExt;

use crate::cli::ConsoleArgs;

/// What a console command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The suite does not answer at the address.
    #[error(
        "cannot reach the suite at {server}: {reason} (is `leadflow serve` running? pass --server)"
    )]
    Connect {
        /// The address tried.
        server: String,
        /// Why it failed.
        reason: String,
    },
    /// A call was refused or failed.
    #[error("{call} failed: {reason}")]
    Call {
        /// The RPC.
        call: &'static str,
        /// The status, with the fields it names.
        reason: String,
    },
    /// The command's input cannot be used.
    #[error("{0}")]
    Input(String),
    /// The output cannot be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl ConsoleError {
    /// The failure of `call` with `status`, naming every field the status names.
    pub fn call(call: &'static str, status: &tonic::Status) -> Self {
        let mut reason = format!("{:?}: {}", status.code(), status.message());
        if let Some(bad_request) = status.get_details_bad_request() {
            for violation in bad_request.field_violations {
                reason.push_str(&format!("; {} {}", violation.field, violation.description));
            }
        }
        Self::Call { call, reason }
    }
}

/// Turns a call's status into a [`ConsoleError`] naming the call.
pub trait CallResult<T> {
    /// The answer, or the call's failure.
    fn or_fail(self, call: &'static str) -> Result<T, ConsoleError>;
}

impl<T> CallResult<T> for Result<tonic::Response<T>, tonic::Status> {
    fn or_fail(self, call: &'static str) -> Result<T, ConsoleError> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| ConsoleError::call(call, &status))
    }
}

/// Puts `authorization: Bearer TOKEN` on every call when a token is given.
#[derive(Clone, Default)]
pub struct BearerToken {
    /// The header value, marked sensitive so no HTTP/2 debug output shows it.
    value: Option<MetadataValue<Ascii>>,
}

impl BearerToken {
    /// Sends `token`, or nothing when None.
    pub fn new(token: Option<&SecretString>) -> Result<Self, ConsoleError> {
        let Some(token) = token else {
            return Ok(Self::default());
        };
        // The error names neither the token nor the offending character.
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.expose_secret().trim())
            .parse()
            .map_err(|_| {
                ConsoleError::Input(
                    "the token holds characters a header cannot carry (use printable ASCII)"
                        .to_owned(),
                )
            })?;
        value.set_sensitive(true);
        Ok(Self { value: Some(value) })
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.value.is_some() {
            "[REDACTED]"
        } else {
            "none"
        };
        f.debug_tuple("BearerToken").field(&shown).finish()
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry the console's bearer token.
pub type AuthorizedChannel = InterceptedService<Channel, BearerToken>;

/// Clients of the four services: over one channel to a suite in one process, or over one
/// channel per service when each runs in its own.
#[derive(Debug, Clone)]
pub struct Clients {
    capture: Channel,
    scoring: Channel,
    nurturing: Channel,
    routing: Channel,
    token: BearerToken,
}

impl Clients {
    /// Connects to the suite at `server`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(server: &str) -> Result<Self, ConsoleError> {
        Self::connect_with(server, None).await
    }

    /// Connects to the suite at `server`, over `tls` for an `https://` one.
    pub async fn connect_with(
        server: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, ConsoleError> {
        let failed = |reason: String| ConsoleError::Connect {
            server: server.to_owned(),
            reason,
        };
        let mut endpoint =
            Channel::from_shared(server.to_owned()).map_err(|error| failed(error.to_string()))?;
        if let Some(tls) = tls
            && server.starts_with("https://")
        {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| failed(error.to_string()))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|error| failed(error.to_string()))?;
        Ok(Self::over(channel))
    }

    /// Connects to the suite a console command names, with its token if it has one.
    pub async fn for_console(args: &ConsoleArgs) -> Result<Self, ConsoleError> {
        let token = BearerToken::new(args.token.as_ref())?;
        let tls = leadflow_platform::tls::peer_config(&leadflow_platform::TlsSettings {
            cert_file: args.cert_file.clone(),
            key_file: args.key_file.clone(),
            ca_file: args.ca_file.clone(),
        })
        .map_err(|error| ConsoleError::Connect {
            server: args.server.clone(),
            reason: error.to_string(),
        })?;
        Ok(Self::connect_with(&args.server, tls)
            .await?
            .with_token(token))
    }

    /// Clients that call every service over `channel`.
    pub fn over(channel: Channel) -> Self {
        Self::per_service(channel.clone(), channel.clone(), channel.clone(), channel)
    }

    /// Clients that call each service over its own channel.
    pub fn per_service(
        capture: Channel,
        scoring: Channel,
        nurturing: Channel,
        routing: Channel,
    ) -> Self {
        Self {
            capture,
            scoring,
            nurturing,
            routing,
            token: BearerToken::default(),
        }
    }

    /// The same clients, sending `token` with every call.
    pub fn with_token(mut self, token: BearerToken) -> Self {
        self.token = token;
        self
    }

    fn authorized(&self, channel: &Channel) -> AuthorizedChannel {
        InterceptedService::new(channel.clone(), self.token.clone())
    }

    /// A capture client.
    pub fn capture(&self) -> CaptureServiceClient<AuthorizedChannel> {
        CaptureServiceClient::new(self.authorized(&self.capture))
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// A scoring client.
    pub fn scoring(&self) -> ScoringServiceClient<AuthorizedChannel> {
        ScoringServiceClient::new(self.authorized(&self.scoring))
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// A nurturing client.
    pub fn nurturing(&self) -> NurturingServiceClient<AuthorizedChannel> {
        NurturingServiceClient::new(self.authorized(&self.nurturing))
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// A routing client.
    pub fn routing(&self) -> RoutingServiceClient<AuthorizedChannel> {
        RoutingServiceClient::new(self.authorized(&self.routing))
            .max_decoding_message_size(64 * 1024 * 1024)
    }
}

fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is built from the same contracts at compile time; it always decodes.
        DescriptorPool::decode(leadflow_proto::FILE_DESCRIPTOR_SET).unwrap_or_default()
    })
}

/// The message in the contract's JSON mapping (proto3 JSON: camelCase names, enum names,
/// RFC 3339 times), with unset fields shown at their defaults so every figure is there.
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    let Some(descriptor) = descriptors().get_message_by_name(&M::full_name()) else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()) else {
        return serde_json::Value::Null;
    };
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(serde_json::Value::Null)
}

/// Writes `text` to standard output.
pub fn print(text: &str) -> Result<(), ConsoleError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Writes `value` as pretty JSON to standard output.
pub fn print_json(value: &serde_json::Value) -> Result<(), ConsoleError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| ConsoleError::Input(format!("cannot encode the output: {error}")))?;
    print(&format!("{text}\n"))
}
