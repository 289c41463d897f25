//! TLS from the settings: the server's identity and, for mutual TLS, the CA its clients'
//! certificates must chain to; the same identity and CA for the calls a service makes to its
//! peers.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsSettings;

/// The TLS settings are incomplete or name files that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate without its key, or the other way round.
    #[error("LEADFLOW_TLS__CERT_FILE and LEADFLOW_TLS__KEY_FILE go together: set both or neither")]
    HalfAnIdentity,
    /// A CA without an identity: mutual TLS needs this process's own certificate too.
    #[error("LEADFLOW_TLS__CA_FILE needs LEADFLOW_TLS__CERT_FILE and LEADFLOW_TLS__KEY_FILE")]
    CaWithoutIdentity,
    /// A file could not be read.
    #[error("cannot read {variable} {path}: {source}")]
    Unreadable {
        variable: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        variable,
        path: path.display().to_string(),
        source,
    })
}

/// This process's identity and the CA, as the settings give them.
fn parts(settings: &TlsSettings) -> Result<Option<(Identity, Option<Certificate>)>, TlsError> {
    let identity = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => Identity::from_pem(
            read("LEADFLOW_TLS__CERT_FILE", cert)?,
            read("LEADFLOW_TLS__KEY_FILE", key)?,
        ),
        (None, None) if settings.ca_file.is_some() => return Err(TlsError::CaWithoutIdentity),
        (None, None) => return Ok(None),
        _ => return Err(TlsError::HalfAnIdentity),
    };
    let ca = match &settings.ca_file {
        Some(path) => Some(Certificate::from_pem(read("LEADFLOW_TLS__CA_FILE", path)?)),
        None => None,
    };
    Ok(Some((identity, ca)))
}

/// The server's TLS: its identity, and with a CA only clients whose certificate it signed.
/// None serves plain text.
pub fn server_config(settings: &TlsSettings) -> Result<Option<ServerTlsConfig>, TlsError> {
    Ok(parts(settings)?.map(|(identity, ca)| {
        let config = ServerTlsConfig::new().identity(identity);
        match ca {
            Some(ca) => config.client_ca_root(ca),
            None => config,
        }
    }))
}

/// The TLS of calls to peers: their certificates checked against the CA, this process's
/// own shown to them. None (no CA) calls in plain text.
pub fn peer_config(settings: &TlsSettings) -> Result<Option<ClientTlsConfig>, TlsError> {
    Ok(parts(settings)?.and_then(|(identity, ca)| {
        ca.map(|ca| ClientTlsConfig::new().ca_certificate(ca).identity(identity))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_an_identity_or_a_ca_alone_is_refused_and_nothing_is_plain_text() {
        let none = TlsSettings::default();
        assert!(server_config(&none).expect("plain").is_none());
        assert!(peer_config(&none).expect("plain").is_none());
        let half = TlsSettings {
            cert_file: Some("cert.pem".into()),
            ..TlsSettings::default()
        };
        assert!(matches!(
            server_config(&half),
            Err(TlsError::HalfAnIdentity)
        ));
        let ca_alone = TlsSettings {
            ca_file: Some("ca.pem".into()),
            ..TlsSettings::default()
        };
        assert!(matches!(
            server_config(&ca_alone),
            Err(TlsError::CaWithoutIdentity)
        ));
        let missing = TlsSettings {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            ca_file: None,
        };
        let error = server_config(&missing).expect_err("unreadable");
        assert!(
            error.to_string().contains("LEADFLOW_TLS__CERT_FILE"),
            "{error}"
        );
    }
}
