//! Bearer tokens on every RPC, table-driven from the contracts' descriptor set: each method
//! of each leadflow service is called raw (an empty message, no per-RPC code), without a
//! token, with an unknown one, with a token holding every scope but the one it needs, and
//! with that scope alone; so a new RPC is checked the day it is added. Health and
//! reflection stay open; the console sends its token.

use std::{collections::BTreeMap, path::PathBuf, process::Output, time::Duration};

use leadflow::ServiceKind;
use leadflow_platform::auth::{MethodScopes, Scope};
use leadflow_tests::{TestSuite, leadflow_binary};
use prost_reflect::DescriptorPool;
use sha2::{Digest, Sha256};
use tonic::{Code, Status, codegen::http::uri::PathAndQuery, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

pub(crate) const ADMIN: &str = "admin";
pub(crate) const EVERY_AREA_SCOPE: &str = "every-area-scope";
const UNKNOWN_TOKEN: &str = "not-a-configured-token-0123456789";

/// The secret of the token named `name`.
pub(crate) fn secret(name: &str) -> String {
    format!("tok-{name}-0123456789abcdef")
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Every `/package.Service/Method` of the leadflow services in the descriptor set, read
/// here and not from the server's own table, so nothing the contracts define is skipped.
fn leadflow_methods() -> anyhow::Result<Vec<String>> {
    let pool = DescriptorPool::decode(leadflow_proto::FILE_DESCRIPTOR_SET)?;
    let mut methods = Vec::new();
    for service in pool.services() {
        if !service.package_name().starts_with("leadflow.") {
            continue;
        }
        for method in service.methods() {
            methods.push(format!("/{}/{}", service.full_name(), method.name()));
        }
    }
    methods.sort();
    Ok(methods)
}

/// Every area scope (`capture:read`, `capture:write`, ...).
fn area_scopes() -> Vec<String> {
    MethodScopes::leadflow()
        .areas()
        .flat_map(|area| [format!("{area}:read"), format!("{area}:write")])
        .collect()
}

/// The token named `only-SCOPE`, holding just that scope.
fn only(scope: &str) -> String {
    format!("only-{}", scope.replace(':', "-"))
}

/// The token named `all-but-SCOPE`, holding every area scope but that one.
fn all_but(scope: &str) -> String {
    format!("all-but-{}", scope.replace(':', "-"))
}

/// A tokens file with `admin`, `every-area-scope` and, per area scope, `only-...` and
/// `all-but-...`; the `all-but` ones are written as digests, the others as secrets.
fn tokens_file() -> String {
    let scopes = area_scopes();
    let mut file = String::new();
    let mut add = |name: &str, held: &[String], as_digest: bool| {
        let token = if as_digest {
            format!("sha256 = \"{}\"", sha256_hex(&secret(name)))
        } else {
            format!("token = \"{}\"", secret(name))
        };
        file.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\nscopes = {held:?}\n{token}\n\n"
        ));
    };
    add(ADMIN, &[ADMIN.to_owned()], false);
    add(EVERY_AREA_SCOPE, &scopes, true);
    for scope in &scopes {
        add(&only(scope), std::slice::from_ref(scope), false);
        let rest: Vec<String> = scopes
            .iter()
            .filter(|other| *other != scope)
            .cloned()
            .collect();
        add(&all_but(scope), &rest, true);
    }
    file
}

/// A scratch folder with the tokens file, removed when dropped.
pub(crate) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("leadflow-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("tokens.toml"), tokens_file())?;
        Ok(Self { dir })
    }

    pub(crate) fn tokens(&self) -> PathBuf {
        self.dir.join("tokens.toml")
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Calls `path` with an empty message (a one-message stream, which every kind of method
/// takes on the wire) and the token `token`, and reads the first answer. A call that is
/// still streaming after a while got past authentication.
async fn call(channel: &Channel, path: &str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let mut request = tonic::Request::new(tokio_stream::once(()));
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("the token is no header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let path = PathAndQuery::try_from(path).map_err(|error| Status::internal(error.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        grpc.streaming(request, path, codec),
    )
    .await
    .map_err(|_| Status::deadline_exceeded("no answer in 30 s"))??;
    let mut answers = answer.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), answers.message()).await {
        Ok(first) => first.map(|_| ()),
        Err(_still_streaming) => Ok(()),
    }
}

fn code_of(result: &Result<(), Status>) -> Option<Code> {
    result.as_ref().err().map(Status::code)
}

fn is_refused(result: &Result<(), Status>) -> bool {
    matches!(
        code_of(result),
        Some(Code::Unauthenticated | Code::PermissionDenied)
    )
}

#[tokio::test]
async fn every_rpc_needs_a_valid_token_with_its_scope() -> anyhow::Result<()> {
    let scratch = Scratch::new()?;
    let suite = TestSuite::start_embedded_with_tokens(&scratch.data(), &scratch.tokens()).await?;
    let channel = suite.channel();
    let methods = leadflow_methods()?;
    assert!(!methods.is_empty(), "the descriptor set lists no methods");
    for kind in ServiceKind::ALL {
        let prefix = format!("/{}/", kind.grpc_name());
        assert!(
            methods.iter().any(|method| method.starts_with(&prefix)),
            "no methods of {kind:?}"
        );
    }

    let mut checked = 0;
    let mut per_scope: BTreeMap<String, usize> = BTreeMap::new();
    for method in &methods {
        let needed = MethodScopes::leadflow().required(method).clone();
        let (right, lacking) = match &needed {
            Scope::Admin => (ADMIN.to_owned(), EVERY_AREA_SCOPE.to_owned()),
            scope => (only(&scope.to_string()), all_but(&scope.to_string())),
        };

        let without = call(&channel, method, None).await;
        assert_eq!(
            code_of(&without),
            Some(Code::Unauthenticated),
            "{method} without a token: {without:?}"
        );
        let unknown = call(&channel, method, Some(UNKNOWN_TOKEN)).await;
        assert_eq!(
            code_of(&unknown),
            Some(Code::Unauthenticated),
            "{method} with an unknown token: {unknown:?}"
        );
        let denied = call(&channel, method, Some(&secret(&lacking))).await;
        assert_eq!(
            code_of(&denied),
            Some(Code::PermissionDenied),
            "{method} needs {needed}, {lacking} lacks it: {denied:?}"
        );
        let allowed = call(&channel, method, Some(&secret(&right))).await;
        assert!(!is_refused(&allowed), "{method} with {right}: {allowed:?}");
        let as_admin = call(&channel, method, Some(&secret(ADMIN))).await;
        assert!(!is_refused(&as_admin), "{method} as admin: {as_admin:?}");

        checked += 1;
        *per_scope.entry(needed.to_string()).or_default() += 1;
    }
    assert_eq!(checked, methods.len());
    assert_eq!(
        checked,
        MethodScopes::leadflow().methods().len(),
        "the server's table and the descriptor set disagree"
    );
    // Personal-data export and erasure in capture, scoring and nurturing need admin.
    assert!(
        per_scope.get(ADMIN).copied().unwrap_or(0) >= 6,
        "{per_scope:?}"
    );
    for scope in area_scopes() {
        assert!(
            per_scope.contains_key(&scope),
            "no method needs {scope}: {per_scope:?}"
        );
    }
    suite.stop().await
}

#[tokio::test]
async fn what_no_contract_defines_is_refused_to_all_but_admin() -> anyhow::Result<()> {
    let scratch = Scratch::new()?;
    let suite = TestSuite::start_embedded_with_tokens(&scratch.data(), &scratch.tokens()).await?;
    let channel = suite.channel();
    for path in [
        "/leadflow.capture.v1.CaptureService/GetEverything",
        "/leadflow.billing.v1.BillingService/GetInvoice",
    ] {
        let without = call(&channel, path, None).await;
        assert_eq!(code_of(&without), Some(Code::Unauthenticated), "{path}");
        let every = call(&channel, path, Some(&secret(EVERY_AREA_SCOPE))).await;
        assert_eq!(code_of(&every), Some(Code::PermissionDenied), "{path}");
        let admin = call(&channel, path, Some(&secret(ADMIN))).await;
        assert_eq!(code_of(&admin), Some(Code::Unimplemented), "{path}");
    }
    suite.stop().await
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_token() -> anyhow::Result<()> {
    let scratch = Scratch::new()?;
    let suite = TestSuite::start_embedded_with_tokens(&scratch.data(), &scratch.tokens()).await?;
    for service in ["", ServiceKind::Capture.grpc_name()] {
        let status = suite
            .health()
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(suite.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    assert!(
        answers.message().await?.is_some(),
        "reflection lists the services"
    );
    suite.stop().await
}

async fn leadflow(args: &[&str], token: Option<&str>) -> anyhow::Result<Output> {
    let binary = leadflow_binary()?;
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let token = token.map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(binary);
        command
            .args(&args)
            .env_remove("RUST_LOG")
            .env_remove("LEADFLOW_SERVER")
            .env_remove("LEADFLOW_TOKEN");
        if let Some(token) = token {
            command.env("LEADFLOW_TOKEN", token);
        }
        command.output()
    })
    .await??;
    Ok(output)
}

#[tokio::test]
async fn the_console_sends_its_token() -> anyhow::Result<()> {
    let scratch = Scratch::new()?;
    let suite = TestSuite::start_embedded_with_tokens(&scratch.data(), &scratch.tokens()).await?;
    let server = format!("http://{}", suite.address());
    let list = ["reps", "list", "--server", &server, "--format", "json"];

    let without = leadflow(&list, None).await?;
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        !without.status.success() && stderr.contains("Unauthenticated"),
        "{stderr}"
    );

    let reader = secret(&only("routing:read"));
    let with = leadflow(&list, Some(&reader)).await?;
    let stderr = String::from_utf8_lossy(&with.stderr);
    assert!(with.status.success(), "{stderr}");
    assert!(
        !stderr.contains(&reader),
        "the token is not printed: {stderr}"
    );

    let writer = secret(&only("routing:write"));
    let mut flagged = list.to_vec();
    flagged.extend(["--token", &writer]);
    let denied = leadflow(&flagged, None).await?;
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && stderr.contains("PermissionDenied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routing:read") && !stderr.contains(&writer),
        "{stderr}"
    );
    suite.stop().await
}
