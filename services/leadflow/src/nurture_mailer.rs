//! How nurture mail leaves this process: the sender, the signed links it carries (the same
//! key and public URL as capture's ingress, which verifies them), and the transport, an
//! SMTP relay when one is configured and `.eml` files in the data directory otherwise.

use std::{sync::Arc, time::Duration};

use leadflow_nurturing::{
    Mailer,
    mail::{
        EmlDirectory, MailTransport, SmtpCredentials, SmtpSecurity, SmtpSettings, SmtpTransport,
    },
};
use leadflow_platform::{Settings, links::LinkUrls};

use crate::{AppError, capture_front::link_signer};

/// The directory under the data directory that keeps mails without a relay.
const MAIL_DIRECTORY: &str = "mail";

/// How long one SMTP command may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The nurture mailer from the settings; `capture_links` are the links of capture's ingress
/// when it runs in this process.
pub(crate) fn nurture_mailer(
    settings: &Settings,
    embedded: bool,
    capture_links: Option<LinkUrls>,
) -> Result<Mailer, AppError> {
    let from = settings.mail.from.parse().map_err(|error| {
        AppError::Configuration(format!(
            "LEADFLOW_MAIL__FROM {:?} is not a mailbox: {error}",
            settings.mail.from
        ))
    })?;
    let links = match capture_links {
        Some(links) => links,
        None => {
            let public_url = settings.ingress.public_url.trim();
            if public_url.is_empty() {
                return Err(AppError::Configuration(
                    "nurturing runs without capture: set LEADFLOW_INGRESS__PUBLIC_URL to the \
                     ingress's public URL, which the links in nurture mails point at"
                        .to_owned(),
                ));
            }
            LinkUrls::new(link_signer(settings, embedded)?, public_url)
        }
    };
    Ok(Mailer {
        from,
        links,
        transport: transport(settings)?,
    })
}

fn transport(settings: &Settings) -> Result<Arc<dyn MailTransport>, AppError> {
    let mail = &settings.mail;
    if mail.smtp_host.trim().is_empty() {
        let directory = settings.data_dir.join(MAIL_DIRECTORY);
        tracing::info!(directory = %directory.display(), "no SMTP relay configured: nurture mails are written as .eml files");
        return Ok(Arc::new(EmlDirectory::new(directory)));
    }
    let credentials = match (&mail.smtp_username, &mail.smtp_password) {
        (Some(username), Some(password)) => Some(SmtpCredentials {
            username: username.clone(),
            password: password.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(AppError::Configuration(
                "set both LEADFLOW_MAIL__SMTP_USERNAME and LEADFLOW_MAIL__SMTP_PASSWORD, or \
                 neither"
                    .to_owned(),
            ));
        }
    };
    let relay = SmtpSettings {
        host: mail.smtp_host.trim().to_owned(),
        port: mail.smtp_port,
        security: if mail.smtp_starttls {
            SmtpSecurity::StartTls
        } else {
            SmtpSecurity::Plain
        },
        credentials,
        hello_name: mail.smtp_hello_name.clone(),
        timeout: SMTP_TIMEOUT,
    };
    let transport = SmtpTransport::new(&relay)
        .map_err(|error| AppError::Configuration(format!("LEADFLOW_MAIL__SMTP_HOST: {error}")))?;
    Ok(Arc::new(transport))
}
