//! Layered configuration: built-in defaults, then an optional TOML file, then `LEADFLOW_*`
//! environment variables, then command-line flags. Secrets are wrapped so they never print.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything a leadflow process is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The address the gRPC server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The PostgreSQL URL (`LEADFLOW_DATABASE_URL`); absent selects the embedded mode.
    pub database_url: Option<SecretString>,
    /// The Redis URL (`LEADFLOW_REDIS_URL`).
    pub redis_url: Option<SecretString>,
    /// The prefix of every Redis key, so several installations can share one server.
    pub redis_key_prefix: String,
    /// Where the embedded mode keeps its files.
    pub data_dir: PathBuf,
    /// The most PostgreSQL connections each service's pool opens.
    pub database_max_connections: u32,
    /// How long a call waits for a database connection before it fails as unavailable.
    pub database_acquire_timeout_ms: u64,
    /// How often the health monitor probes PostgreSQL and Redis.
    pub health_check_interval_ms: u64,
    /// How long in-flight calls may run on after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// How long an event stays pending with a consumer before another consumer of the
    /// group (or the same one, after a failed apply) claims it: what a replica that died
    /// mid-batch, or an event that failed, waits before it is applied.
    pub event_claim_idle_ms: u64,
    /// How long an idempotency key is kept: a retry within it gets the first answer, a call
    /// with the key after it is a new call. Covers re-imports of the same file, too.
    pub idempotency_key_retention_hours: u64,
    /// How long a contact may stay inactive (no activity, no change) before the retention
    /// policy erases it (`LEADFLOW_CONTACT_RETENTION_DAYS`); 0 keeps contacts for ever.
    pub contact_retention_days: u64,
    /// Where the other services answer, for the calls one makes to another.
    pub peers: PeerSettings,
    /// Log output.
    pub log: LogSettings,
    /// Capture's public HTTP ingress and the signed links that point at it.
    pub ingress: IngressSettings,
    /// How nurture mail is sent.
    pub mail: MailSettings,
    /// Who may call the gRPC API.
    pub auth: AuthSettings,
    /// TLS on the gRPC API and between the services.
    pub tls: TlsSettings,
}

/// Where the other services answer (`LEADFLOW_PEERS__SCORING_URL` and so on), e.g.
/// `http://leadflow-scoring:50051`: a data-protection export in capture gathers the parts
/// of scoring, nurturing and routing. Empty means the service runs in this process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PeerSettings {
    /// Scoring's gRPC URL.
    pub scoring_url: String,
    /// Nurturing's gRPC URL.
    pub nurturing_url: String,
    /// Routing's gRPC URL.
    pub routing_url: String,
}

/// TLS on the gRPC API (`LEADFLOW_TLS__CERT_FILE` and `LEADFLOW_TLS__KEY_FILE`), mutual
/// when a CA is given (`LEADFLOW_TLS__CA_FILE`): the server then takes only clients with a
/// certificate the CA signed, and a service checks the peers it calls against it and shows
/// them its own certificate. All unset: plain text, e.g. behind a mesh that brings its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// The PEM certificate chain this process presents, as a server and to its peers.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of that certificate.
    pub key_file: Option<PathBuf>,
    /// The PEM certificates of the CA that signs the clients' and the peers' certificates.
    pub ca_file: Option<PathBuf>,
}

/// Who may call the gRPC API: callers present a bearer token from the tokens file, and each
/// method needs a scope (see [`crate::auth`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// The TOML file that lists the tokens, each with a name, its scopes and the token or
    /// its SHA-256 (`LEADFLOW_AUTH__TOKENS_FILE`; on Kubernetes a mounted Secret). Absent,
    /// authentication is off and every caller may call every method.
    pub tokens_file: Option<PathBuf>,
}

impl AuthSettings {
    /// The configured tokens, None when authentication is off.
    pub fn tokens(&self) -> Result<Option<crate::auth::Tokens>, crate::auth::TokensError> {
        self.tokens_file
            .as_deref()
            .map(crate::auth::Tokens::load)
            .transpose()
    }
}

/// How nurture mail leaves: through an SMTP relay, or, without one, as `.eml` files in the
/// data directory (the embedded mode's default, nothing to install).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MailSettings {
    /// The sender of nurture mails, e.g. `Example GmbH <news@example.com>`.
    pub from: String,
    /// The SMTP relay's host (`LEADFLOW_MAIL__SMTP_HOST`); empty writes each mail as an
    /// `.eml` file into `<data_dir>/mail` instead.
    pub smtp_host: String,
    /// The relay's port.
    pub smtp_port: u16,
    /// Whether the connection to the relay must be upgraded with STARTTLS; only a relay on
    /// the same host or a trusted network should go without.
    pub smtp_starttls: bool,
    /// The login at the relay, when it needs one.
    pub smtp_username: Option<String>,
    /// The password of that login.
    pub smtp_password: Option<SecretString>,
    /// The name sent in EHLO; some relays refuse the default.
    pub smtp_hello_name: Option<String>,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            from: "leadflow <nurture@localhost>".to_owned(),
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_starttls: true,
            smtp_username: None,
            smtp_password: None,
            smtp_hello_name: None,
        }
    }
}

/// The HTTP ingress browsers and mail clients talk to (form posts, the open pixel, tracked
/// links, double opt-in confirmation and unsubscribe links), and how its links are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IngressSettings {
    /// The address the ingress binds, in the process that runs capture; port 0 picks a
    /// free port.
    pub listen: SocketAddr,
    /// The public base URL links point at, e.g. `https://go.example.com`; empty means
    /// `http://` and the bound address, which only suits a single machine.
    pub public_url: String,
    /// The HMAC key links are signed with, at least 32 bytes
    /// (`LEADFLOW_INGRESS__LINK_KEY`). Required with a database; the embedded mode makes
    /// one and keeps it in its data directory.
    pub link_key: Option<SecretString>,
    /// Keys used before a rotation: links signed with them are still accepted.
    pub previous_link_keys: Vec<SecretString>,
    /// Web origins allowed to post every form (CORS), besides each form's own.
    pub allowed_origins: Vec<String>,
    /// How long a double opt-in confirmation link stays valid, in hours.
    pub confirmation_link_hours: u32,
    /// The largest request body the ingress reads, in bytes.
    pub max_body_bytes: usize,
    /// Requests a minute the ingress takes from one client address; 0 takes every request.
    /// Behind a proxy that hides the clients' addresses, set 0 and limit at the proxy.
    pub rate_limit_per_minute: u32,
    /// How many requests one client may send at once before the rate applies.
    pub rate_limit_burst: u32,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            link_key: None,
            previous_link_keys: Vec::new(),
            allowed_origins: Vec::new(),
            confirmation_link_hours: 7 * 24,
            max_body_bytes: 64 * 1024,
            // A company's mail gateway may follow every link of a mailing from one address.
            rate_limit_per_minute: 600,
            rate_limit_burst: 100,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info,leadflow_capture=debug`.
    pub filter: String,
    /// Write the log to standard error, leaving standard output to a command's own output.
    #[serde(skip)]
    pub to_stderr: bool,
}

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            redis_url: None,
            redis_key_prefix: "leadflow".to_owned(),
            data_dir: PathBuf::from("data"),
            database_max_connections: 16,
            database_acquire_timeout_ms: 5_000,
            health_check_interval_ms: 2_000,
            shutdown_grace_ms: 10_000,
            event_claim_idle_ms: 30_000,
            idempotency_key_retention_hours: 30 * 24,
            // Three years, the limitation period most B2B records are kept for.
            contact_retention_days: 3 * 365,
            peers: PeerSettings::default(),
            log: LogSettings::default(),
            ingress: IngressSettings::default(),
            mail: MailSettings::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".to_owned(),
            to_stderr: false,
        }
    }
}

/// The configuration could not be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source (file, variable, flag) held a value of the wrong shape.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// The configuration file named does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
}

impl Settings {
    /// Reads the layers in order: defaults, `file` (if given), `LEADFLOW_*` variables
    /// (nested keys with `__`, e.g. `LEADFLOW_LOG__FORMAT=json`), then `overrides`
    /// (command-line flags; fields that are `None` are skipped by the caller's serde attributes).
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: impl Serialize,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(Env::prefixed("LEADFLOW_").split("__").ignore(&["config"]))
            .merge(Serialized::defaults(overrides));
        figment
            .extract()
            .map_err(|error| ConfigError::Invalid(Box::new(error)))
    }

    /// The database acquire timeout as a duration.
    pub fn database_acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.database_acquire_timeout_ms)
    }

    /// The health probe interval as a duration.
    pub fn health_check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.health_check_interval_ms)
    }

    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The contact retention as a duration; zero keeps contacts for ever.
    pub fn contact_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.contact_retention_days.saturating_mul(86_400))
    }

    /// The event claim idle time as a duration.
    pub fn event_claim_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.event_claim_idle_ms)
    }

    /// The idempotency key retention as a duration.
    pub fn idempotency_key_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idempotency_key_retention_hours.saturating_mul(3_600))
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<SocketAddr>,
    }

    #[test]
    fn each_layer_overrides_the_one_before() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "leadflow.toml",
                r#"
                    listen = "127.0.0.1:7000"
                    redis_key_prefix = "from-file"
                    database_max_connections = 3
                    [log]
                    format = "json"
                "#,
            )?;
            jail.set_env("LEADFLOW_REDIS_KEY_PREFIX", "from-env");
            jail.set_env("LEADFLOW_DATABASE_URL", "postgres://u:secret@db/leadflow");
            jail.set_env("LEADFLOW_LOG__FILTER", "debug");
            let flags = Flags {
                listen: Some(SocketAddr::from(([0, 0, 0, 0], 9000))),
            };
            let settings = Settings::load(Some(std::path::Path::new("leadflow.toml")), flags)
                .map_err(|error| error.to_string())?;
            assert_eq!(
                settings.listen,
                SocketAddr::from(([0, 0, 0, 0], 9000)),
                "flag wins"
            );
            assert_eq!(settings.redis_key_prefix, "from-env", "env beats file");
            assert_eq!(settings.database_max_connections, 3, "file beats default");
            assert_eq!(settings.log.format, LogFormat::Json);
            assert_eq!(settings.log.filter, "debug");
            assert_eq!(settings.shutdown_grace_ms, 10_000, "default");
            assert_eq!(
                settings.idempotency_key_retention(),
                std::time::Duration::from_secs(30 * 24 * 3_600),
                "keys are kept 30 days by default"
            );
            assert_eq!(
                settings.contact_retention(),
                std::time::Duration::from_secs(3 * 365 * 86_400),
                "inactive contacts are kept three years by default"
            );
            let url = settings.database_url.expect("url");
            assert_eq!(url.expose_secret(), "postgres://u:secret@db/leadflow");
            assert!(
                !format!("{url:?}").contains("secret"),
                "secrets never print"
            );
            Ok(())
        });
    }

    #[test]
    fn the_ingress_is_configured_by_nested_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADFLOW_INGRESS__LISTEN", "0.0.0.0:8081");
            jail.set_env(
                "LEADFLOW_INGRESS__LINK_KEY",
                "a-secret-of-at-least-thirty-two-bytes",
            );
            jail.set_env(
                "LEADFLOW_INGRESS__ALLOWED_ORIGINS",
                "[\"https://www.example.com\", \"https://shop.example.com\"]",
            );
            let settings =
                Settings::load(None, Flags { listen: None }).map_err(|error| error.to_string())?;
            assert_eq!(
                settings.ingress.listen,
                SocketAddr::from(([0, 0, 0, 0], 8081))
            );
            assert_eq!(
                settings.ingress.allowed_origins,
                ["https://www.example.com", "https://shop.example.com"]
            );
            let key = settings.ingress.link_key.expect("key");
            assert_eq!(key.expose_secret(), "a-secret-of-at-least-thirty-two-bytes");
            assert_eq!(settings.ingress.confirmation_link_hours, 168, "default");
            Ok(())
        });
    }

    #[test]
    fn authentication_is_off_until_a_tokens_file_is_named() {
        figment::Jail::expect_with(|jail| {
            let settings =
                Settings::load(None, Flags { listen: None }).map_err(|error| error.to_string())?;
            assert!(settings.auth.tokens_file.is_none());
            assert!(
                settings
                    .auth
                    .tokens()
                    .map_err(|error| error.to_string())?
                    .is_none()
            );

            jail.create_file(
                "tokens.toml",
                r#"
                    [[tokens]]
                    name = "crm"
                    scopes = ["capture:write"]
                    token = "crm-token-0123456789abcdef"
                "#,
            )?;
            jail.set_env("LEADFLOW_AUTH__TOKENS_FILE", "tokens.toml");
            let settings =
                Settings::load(None, Flags { listen: None }).map_err(|error| error.to_string())?;
            let tokens = settings
                .auth
                .tokens()
                .map_err(|error| error.to_string())?
                .expect("tokens");
            assert!(tokens.find(b"crm-token-0123456789abcdef").is_some());

            jail.set_env("LEADFLOW_AUTH__TOKENS_FILE", "missing.toml");
            let settings =
                Settings::load(None, Flags { listen: None }).map_err(|error| error.to_string())?;
            let error = settings
                .auth
                .tokens()
                .expect_err("no such file")
                .to_string();
            assert!(error.contains("missing.toml"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_or_a_missing_file_is_a_clear_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADFLOW_LISTEN", "not-an-address");
            let error = Settings::load(None, Flags { listen: None }).expect_err("bad address");
            let message = error.to_string();
            assert!(
                message.contains("LISTEN") && message.contains("LEADFLOW_"),
                "{message}"
            );
            let missing = Settings::load(
                Some(std::path::Path::new("nope.toml")),
                Flags { listen: None },
            )
            .expect_err("missing file");
            assert!(missing.to_string().contains("nope.toml"), "{missing}");
            Ok(())
        });
    }
}
