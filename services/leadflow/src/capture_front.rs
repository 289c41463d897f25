//! Capture's public front beside its gRPC service: the HTTP ingress browsers and mail
//! clients reach, and the key that signs the links capture mails point at it.

use std::{io::Write, path::Path, sync::Arc};

use leadflow_capture::{
    CaptureApi, CaptureLimits, ConsentLinks, IngressConfig, IngressServer, links::LinkSigner,
};
use leadflow_platform::{Settings, links::LinkUrls, time::Clock};
use leadflow_storage::ServiceStore;
use secrecy::ExposeSecret;

use crate::AppError;

/// The file the embedded mode keeps its generated link key in.
const LINK_KEY_FILE: &str = "link-signing.key";
/// The length of a generated link key, in bytes.
const LINK_KEY_BYTES: usize = 32;

/// The link key: from the settings, or with the embedded store one made on first start and
/// kept in the data directory (so links mailed before a restart still work).
fn link_key(settings: &Settings, embedded: bool) -> Result<Vec<u8>, AppError> {
    if let Some(key) = &settings.ingress.link_key {
        return Ok(key.expose_secret().as_bytes().to_vec());
    }
    if !embedded {
        return Err(AppError::Configuration(
            "no link key configured: set LEADFLOW_INGRESS__LINK_KEY to a secret of at least 32 \
             bytes (it signs the confirmation, unsubscribe and tracking links in mails)"
                .to_owned(),
        ));
    }
    embedded_link_key(&settings.data_dir)
}

fn embedded_link_key(data_dir: &Path) -> Result<Vec<u8>, AppError> {
    let path = data_dir.join(LINK_KEY_FILE);
    let unreadable = |error: std::io::Error| {
        AppError::Configuration(format!(
            "cannot use the link key {}: {error}",
            path.display()
        ))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(text.trim().as_bytes().to_vec()),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(unreadable(error));
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(data_dir).map_err(unreadable)?;
    let mut bytes = [0_u8; LINK_KEY_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|error| AppError::Configuration(format!("cannot make a link key: {error}")))?;
    let key: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(unreadable)?;
    file.write_all(key.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(unreadable)?;
    tracing::info!(path = %path.display(), "made the link signing key");
    Ok(key.into_bytes())
}

/// The signer of the links in mails, with the keys of earlier rotations.
pub(crate) fn link_signer(settings: &Settings, embedded: bool) -> Result<LinkSigner, AppError> {
    let key = link_key(settings, embedded)?;
    let previous: Vec<&[u8]> = settings
        .ingress
        .previous_link_keys
        .iter()
        .map(|key| key.expose_secret().as_bytes())
        .collect();
    LinkSigner::new(&key, &previous)
        .map_err(|error| AppError::Configuration(format!("LEADFLOW_INGRESS__LINK_KEY: {error}")))
}

/// Capture's handlers with their ingress, bound and ready to serve, and the links under the
/// ingress's public URL that other mailers in this process sign.
pub(crate) async fn capture_with_ingress(
    settings: &Settings,
    store: ServiceStore,
    clock: Arc<dyn Clock>,
) -> Result<(CaptureApi, IngressServer, LinkUrls), AppError> {
    let embedded = matches!(store, ServiceStore::Embedded(_));
    let signer = link_signer(settings, embedded)?;
    let listener = tokio::net::TcpListener::bind(settings.ingress.listen)
        .await
        .map_err(|error| {
            AppError::Configuration(format!(
                "cannot listen for HTTP on {} (set --ingress-listen): {error}",
                settings.ingress.listen
            ))
        })?;
    let address = listener.local_addr().map_err(|error| {
        AppError::Configuration(format!("cannot read the ingress address: {error}"))
    })?;
    let public_url = match settings.ingress.public_url.trim() {
        "" => format!("http://{address}"),
        url => url.to_owned(),
    };
    let urls = LinkUrls::new(signer.clone(), &public_url);
    let links = ConsentLinks::new(
        signer.clone(),
        &public_url,
        chrono::Duration::hours(i64::from(settings.ingress.confirmation_link_hours)),
    );
    let api = leadflow_capture::capture_api(store, links, CaptureLimits::default(), clock);
    let ingress = IngressServer::new(
        listener,
        api.clone(),
        IngressConfig {
            allowed_origins: settings.ingress.allowed_origins.clone(),
            max_body_bytes: settings.ingress.max_body_bytes,
            signer,
            rate_limit: leadflow_capture::rate_limit::ClientBuckets::new(
                settings.ingress.rate_limit_per_minute,
                settings.ingress.rate_limit_burst,
            ),
        },
    );
    Ok((api, ingress, urls))
}
