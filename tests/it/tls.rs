//! Mutual TLS: a suite with a certificate and a CA serves only clients whose certificate
//! that CA signed, and capture's export reaches the other services over the same mutual TLS.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use leadflow_platform::TlsSettings;
use leadflow_proto::capture::v1::{
    CreateFormRequest, ExportContactRequest, ListFormsRequest,
    capture_service_client::CaptureServiceClient, export_contact_request,
};
use leadflow_tests::TestSuite;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use uuid::Uuid;

use crate::intake::{submission, trade_fair_form};

/// A CA and a certificate it signed for `localhost` (server and client use), made with the
/// openssl command line in a scratch folder that is removed when dropped.
struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl Pki {
    /// The CA `name` and its leaf, in a new folder.
    fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("leadflow-pki-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=leadflow test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&dir, &ca)?;
        let mut request = vec!["req"];
        request.extend(ec);
        request.extend([
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&dir, &request)?;
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             basicConstraints=critical,CA:FALSE\n",
        )?;
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        )?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert_file: Some(self.path("leaf.pem")),
            key_file: Some(self.path("leaf.key")),
            ca_file: Some(self.path("ca.pem")),
        }
    }

    fn ca(&self) -> anyhow::Result<Certificate> {
        Ok(Certificate::from_pem(std::fs::read(self.path("ca.pem"))?))
    }

    fn identity(&self) -> anyhow::Result<Identity> {
        Ok(Identity::from_pem(
            std::fs::read(self.path("leaf.pem"))?,
            std::fs::read(self.path("leaf.key"))?,
        ))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A capture client on `channel`, its first call's outcome.
async fn lists_forms(channel: Channel) -> Result<(), tonic::Status> {
    CaptureServiceClient::new(channel)
        .list_forms(ListFormsRequest::default())
        .await
        .map(|_| ())
}

async fn connect(port: u16, tls: Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let endpoint = match tls {
        Some(tls) => Channel::from_shared(format!("https://localhost:{port}"))?.tls_config(tls)?,
        None => Channel::from_shared(format!("http://127.0.0.1:{port}"))?,
    };
    Ok(endpoint.connect_lazy())
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_the_ca_signed_and_carries_the_export() -> anyhow::Result<()>
{
    let pki = Pki::new("suite")?;
    let stranger = Pki::new("stranger")?;
    let data_dir = crate::embedded::temporary_data_dir();
    let client = ClientTlsConfig::new()
        .ca_certificate(pki.ca()?)
        .identity(pki.identity()?)
        .domain_name("localhost");
    let suite = TestSuite::start_embedded_with_tls(&data_dir, pki.settings(), client).await?;
    let port = suite.address().port();

    // The suite's own client shows the CA's certificate: it is served, and capture's export
    // gathers scoring's, nurturing's and routing's parts over the same mutual TLS.
    let mut capture = suite.capture();
    let form = capture
        .create_form(CreateFormRequest {
            form: Some(trade_fair_form()),
            idempotency_key: Uuid::now_v7().to_string(),
        })
        .await?
        .into_inner()
        .form
        .expect("form");
    let submitted = capture
        .submit_form(submission(
            &form.form_id,
            &Uuid::now_v7().to_string(),
            &[
                ("email", "tls.check@example-gmbh.de"),
                ("first_name", "Tao"),
                ("company", "Example GmbH"),
            ],
        ))
        .await?
        .into_inner();
    let export = capture
        .export_contact(ExportContactRequest {
            contact: Some(export_contact_request::Contact::ContactId(
                submitted.contact_id.clone(),
            )),
        })
        .await?
        .into_inner();
    let document: serde_json::Value = serde_json::from_str(&export.document)?;
    assert!(document["scoring"].is_object(), "{document:#}");
    assert!(
        document["routing"]["assignments"].is_array(),
        "{document:#}"
    );

    // Everyone else is turned away before a call is read.
    let refused = [
        ("plain text", connect(port, None).await?),
        (
            "TLS without a client certificate",
            connect(
                port,
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(pki.ca()?)
                        .domain_name("localhost"),
                ),
            )
            .await?,
        ),
        (
            "a client certificate of another CA",
            connect(
                port,
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(pki.ca()?)
                        .identity(stranger.identity()?)
                        .domain_name("localhost"),
                ),
            )
            .await?,
        ),
    ];
    for (who, channel) in refused {
        let outcome = lists_forms(channel).await;
        assert!(outcome.is_err(), "{who} was served");
    }
    // A client that does not trust the server's CA does not talk to it either.
    let distrusting = connect(
        port,
        Some(
            ClientTlsConfig::new()
                .ca_certificate(stranger.ca()?)
                .identity(stranger.identity()?)
                .domain_name("localhost"),
        ),
    )
    .await?;
    assert!(
        lists_forms(distrusting).await.is_err(),
        "a server of another CA was trusted"
    );

    // The console reaches the suite with the same files, and without them it does not.
    let server = format!("https://localhost:{port}");
    let console = |with_certificate: bool| {
        let binary = leadflow_tests::leadflow_binary();
        let settings = pki.settings();
        let server = server.clone();
        async move {
            let mut command = Command::new(binary?);
            command
                .args(["reps", "list", "--server", &server])
                .env_remove("RUST_LOG")
                .env("LEADFLOW_TLS__CA_FILE", settings.ca_file.expect("ca"));
            if with_certificate {
                command
                    .env("LEADFLOW_TLS__CERT_FILE", settings.cert_file.expect("cert"))
                    .env("LEADFLOW_TLS__KEY_FILE", settings.key_file.expect("key"));
            }
            anyhow::Ok(tokio::task::spawn_blocking(move || command.output()).await??)
        }
    };
    let listed = console(true).await?;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let refused = console(false).await?;
    assert!(
        !refused.status.success(),
        "the console without a certificate was served"
    );

    suite.stop().await?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
