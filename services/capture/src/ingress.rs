//! The HTTP ingress: what browsers and mail clients reach, since they cannot speak gRPC.
//! Form posts (JSON or `application/x-www-form-urlencoded`, with CORS), the open-tracking
//! pixel, tracked-link redirects, and the double opt-in confirmation and unsubscribe links.
//! Every route calls the same handlers as the gRPC API, so the rules are the same.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use leadflow_proto::{
    capture::v1::{self as pb, capture_service_server::CaptureService},
    common::v1 as common,
    events::v1::ConsentChannel,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::{
    api::CaptureApi,
    consent::{CONFIRM_PATH, UNSUBSCRIBE_PATH},
    links::{LinkClaims, LinkError, LinkPurpose, LinkSigner},
    rate_limit::ClientBuckets,
};

// Defined beside the link signer so that other services can mail links to these routes.
pub use leadflow_platform::links::{CLICK_PATH, OPEN_PATH};

/// A transparent 1x1 GIF, the smallest image every mail client shows.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// How the ingress behaves beyond what each form says.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Origins allowed to post every form.
    pub allowed_origins: Vec<String>,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Verifies the tokens of tracked links and the pixel.
    pub signer: LinkSigner,
    /// Requests per client address; None takes every request.
    pub rate_limit: Option<ClientBuckets>,
}

#[derive(Debug, Clone)]
struct Ingress {
    api: CaptureApi,
    config: IngressConfig,
}

/// The ingress routes over the capture handlers.
fn router(api: CaptureApi, config: IngressConfig) -> Router {
    let max_body_bytes = config.max_body_bytes;
    let state = Ingress { api, config };
    Router::new()
        .route(
            "/v1/forms/{form_id}/submissions",
            post(submit_form).options(preflight),
        )
        .route(CONFIRM_PATH, get(confirm_opt_in))
        .route(UNSUBSCRIBE_PATH, get(unsubscribe_page).post(unsubscribe))
        .route(OPEN_PATH, get(open_pixel))
        .route(CLICK_PATH, get(click))
        // On the routes above only: probes of /healthz are never refused.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_rate,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Refuses a request over its client's rate with 429 and the seconds to wait.
async fn limit_rate(
    State(ingress): State<Ingress>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(buckets) = &ingress.config.rate_limit else {
        return next.run(request).await;
    };
    match buckets.take(peer.ip(), std::time::Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            // The client's address is personal data: counted, never logged.
            tracing::debug!("ingress request over its client's rate refused");
            let seconds = wait.as_secs().saturating_add(1);
            let body = serde_json::json!({
                "error": format!("too many requests from this client; retry in {seconds} s"),
                "fields": [],
            });
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                axum::Json(body),
            )
                .into_response()
        }
    }
}

/// The ingress bound to its address, ready to serve.
#[derive(Debug)]
pub struct IngressServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl IngressServer {
    /// The ingress over `api` on a bound listener (bound first, so that links can name
    /// its address before the handlers exist).
    pub fn new(listener: tokio::net::TcpListener, api: CaptureApi, config: IngressConfig) -> Self {
        Self {
            listener,
            router: router(api, config),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

/// A key for a call that came without one: the same content on the same day is a retry
/// (a double click, a resent post), not a second event.
fn derived_key(kind: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let hex: String = digest
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("http-{kind}-{hex}")
}

/// The browser a request came from, as consent evidence.
fn client_info(headers: &HeaderMap, peer: SocketAddr) -> pb::ClientInfo {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(2_000)
            .collect::<String>()
    };
    pb::ClientInfo {
        ip_address: peer.ip().to_string(),
        user_agent: text(header::USER_AGENT),
        page_url: text(header::REFERER),
        referrer_url: String::new(),
    }
}

/// The error a failed call answers with: JSON for programs, the status mapped to HTTP.
fn error_response(status: &Status) -> Response {
    let http_status = match status.code() {
        Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let fields: Vec<serde_json::Value> = status
        .get_details_bad_request()
        .map(|details| {
            details
                .field_violations
                .into_iter()
                .map(|violation| {
                    serde_json::json!({"field": violation.field, "reason": violation.description})
                })
                .collect()
        })
        .unwrap_or_default();
    let body = serde_json::json!({"error": status.message(), "fields": fields});
    (http_status, axum::Json(body)).into_response()
}

/// A short page for a person who followed a link.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    (status, Html(body)).into_response()
}

/// The page a link answers with when its call failed.
fn link_failed(status: &Status) -> Response {
    match status.code() {
        Code::InvalidArgument => page(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "Please use the link exactly as it came in the mail.",
        ),
        Code::FailedPrecondition => page(
            StatusCode::GONE,
            "This link is no longer valid",
            "It has expired or its request was withdrawn.",
        ),
        Code::NotFound => page(
            StatusCode::NOT_FOUND,
            "Nothing to confirm",
            "We hold no data about you.",
        ),
        _ => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "We could not handle this link just now.",
        ),
    }
}

/// The origin allowed to post this form, when the request's is one of them.
fn allowed_origin(config: &IngressConfig, form: &pb::Form, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let origin = origin.trim_end_matches('/');
    form.allowed_origins
        .iter()
        .chain(&config.allowed_origins)
        .any(|allowed| allowed.trim_end_matches('/') == origin)
        .then(|| origin.to_owned())
}

fn with_cors(mut response: Response, origin: Option<&str>) -> Response {
    if let Some(origin) = origin
        && let Ok(value) = HeaderValue::from_str(origin)
    {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

async fn form_of(api: &CaptureApi, form_id: &str) -> Result<pb::Form, Status> {
    api.get_form(Request::new(pb::GetFormRequest {
        form_id: form_id.to_owned(),
    }))
    .await?
    .into_inner()
    .form
    .ok_or_else(|| Status::not_found("form not found"))
}

async fn preflight(
    State(ingress): State<Ingress>,
    Path(form_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let form = match form_of(&ingress.api, &form_id).await {
        Ok(form) => form,
        Err(status) => return error_response(&status),
    };
    let Some(origin) = allowed_origin(&ingress.config, &form, &headers) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let mut response = with_cors(StatusCode::NO_CONTENT.into_response(), Some(&origin));
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, idempotency-key"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Reads a posted body as flat text values, by its content type.
fn posted_values(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<(String, String)>, bool), Status> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| Status::invalid_argument("the body is not valid JSON"))?;
        let serde_json::Value::Object(object) = value else {
            return Err(Status::invalid_argument("the body must be a JSON object"));
        };
        let mut values = Vec::with_capacity(object.len());
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Bool(flag) => flag.to_string(),
                serde_json::Value::Number(number) => number.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "{name:?} must be a string, number or boolean"
                    )));
                }
            };
            values.push((name, text));
        }
        return Ok((values, false));
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let values = serde_urlencoded::from_bytes(body)
            .map_err(|_| Status::invalid_argument("the form body cannot be read"))?;
        return Ok((values, true));
    }
    Err(Status::invalid_argument(
        "the body must be application/json or application/x-www-form-urlencoded",
    ))
}

fn is_yes(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "on" | "yes" | "1"
    )
}

async fn submit_form(
    State(ingress): State<Ingress>,
    Path(form_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match form_of(&ingress.api, &form_id).await {
        Ok(form) => form,
        Err(status) => return error_response(&status),
    };
    let origin = allowed_origin(&ingress.config, &form, &headers);
    // A browser always names the page's origin on a cross-site post; one that is not
    // allowed is refused before anything is read. Posts without an Origin come from
    // servers, which CORS does not concern.
    if headers.contains_key(header::ORIGIN) && origin.is_none() {
        return error_response(&Status::permission_denied(
            "this origin may not post the form",
        ));
    }
    let (posted, browser_form) = match posted_values(&headers, &body) {
        Ok(posted) => posted,
        Err(status) => return with_cors(error_response(&status), origin.as_deref()),
    };
    let mut request = pb::SubmitFormRequest {
        form_id: form.form_id.clone(),
        client: Some(client_info(&headers, peer)),
        ..Default::default()
    };
    let mut attribution = common::CampaignAttribution::default();
    for (name, value) in posted {
        match name.as_str() {
            "consent_given" => request.consent_given = is_yes(&value),
            "visitor_id" => request.visitor_id = value,
            "source" => request.source = value,
            "idempotency_key" => request.idempotency_key = value,
            "utm_source" => attribution.source = value,
            "utm_medium" => attribution.medium = value,
            "utm_campaign" => attribution.campaign = value,
            "utm_term" => attribution.term = value,
            "utm_content" => attribution.content = value,
            _ => {
                request.values.insert(name, value);
            }
        }
    }
    if attribution != common::CampaignAttribution::default() {
        request.attribution = Some(attribution);
    }
    if let Some(key) = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
    {
        request.idempotency_key = key.to_owned();
    }
    if request.idempotency_key.is_empty() {
        let day = ingress.api.now().date_naive().to_string();
        request.idempotency_key =
            derived_key("form", &[form.form_id.as_bytes(), day.as_bytes(), &body]);
    }
    let answer = match ingress.api.submit_form(Request::new(request)).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return with_cors(error_response(&status), origin.as_deref()),
    };
    if browser_form && !form.success_url.is_empty() {
        return with_cors(
            Redirect::to(&form.success_url).into_response(),
            origin.as_deref(),
        );
    }
    let next_fields: Vec<&str> = answer
        .next_fields
        .iter()
        .map(|field| field.name.as_str())
        .collect();
    let body = serde_json::json!({
        "status": "accepted",
        "consent_state": answer.consent_state().as_str_name(),
        "confirmation_sent": answer.confirmation_sent,
        "next_fields": next_fields,
    });
    with_cors(
        (StatusCode::OK, axum::Json(body)).into_response(),
        origin.as_deref(),
    )
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

async fn confirm_opt_in(
    State(ingress): State<Ingress>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let request = pb::ConfirmDoubleOptInRequest {
        idempotency_key: derived_key("confirm", &[query.token.as_bytes()]),
        token: query.token,
        client: Some(client_info(&headers, peer)),
    };
    match ingress
        .api
        .confirm_double_opt_in(Request::new(request))
        .await
    {
        Ok(_) => page(
            StatusCode::OK,
            "Thank you",
            "Your subscription is confirmed.",
        ),
        Err(status) => link_failed(&status),
    }
}

/// An unsubscribe link shows a button rather than acting on GET: mail scanners follow
/// every link in a mail, and must not unsubscribe anyone.
async fn unsubscribe_page(Query(query): Query<TokenQuery>) -> Response {
    let token: String = query
        .token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><h1>Unsubscribe</h1><form method=\"post\" action=\"{UNSUBSCRIBE_PATH}?token={token}\">\
         <button type=\"submit\">Stop all mails</button></form></body></html>"
    );
    (StatusCode::OK, Html(body)).into_response()
}

/// Withdraws consent: from the page's button, or as a mail client's one-click
/// unsubscribe (RFC 8058, body `List-Unsubscribe=One-Click`).
async fn unsubscribe(
    State(ingress): State<Ingress>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    body: Bytes,
) -> Response {
    let one_click = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body)
        .ok()
        .and_then(|fields| fields.get("List-Unsubscribe").cloned())
        .is_some_and(|value| value == "One-Click");
    let channel = if one_click {
        ConsentChannel::ListUnsubscribe
    } else {
        ConsentChannel::UnsubscribeLink
    };
    let request = pb::WithdrawConsentRequest {
        idempotency_key: derived_key("unsubscribe", &[query.token.as_bytes()]),
        subject: Some(pb::withdraw_consent_request::Subject::UnsubscribeToken(
            query.token,
        )),
        channel: channel.into(),
        client: Some(client_info(&headers, peer)),
        ..Default::default()
    };
    match ingress.api.withdraw_consent(Request::new(request)).await {
        Ok(_) => page(
            StatusCode::OK,
            "You are unsubscribed",
            "You will receive no more of these mails.",
        ),
        Err(status) => link_failed(&status),
    }
}

/// Records the activity a tracking link stands for; its key makes the first use of each
/// token the one that counts. A token that does not verify is refused; a recording that
/// fails is logged, since the person following the link must not notice.
async fn track_link(
    ingress: &Ingress,
    token: &str,
    purpose: LinkPurpose,
    activity_type: common::ActivityType,
) -> Result<LinkClaims, LinkError> {
    let claims = ingress
        .config
        .signer
        .verify(token, purpose, ingress.api.now())?;
    let mut attributes = BTreeMap::new();
    if let Some(url) = claims.target_url() {
        attributes.insert("url".to_owned(), url.to_owned());
    }
    let request = pb::TrackActivityRequest {
        activity: Some(pb::ActivityInput {
            subject: Some(pb::activity_input::Subject::ContactId(
                claims.contact_id().to_string(),
            )),
            r#type: activity_type.into(),
            source: "email".to_owned(),
            send_id: if claims.subject_id().is_nil() {
                String::new()
            } else {
                claims.subject_id().to_string()
            },
            attributes,
            ..Default::default()
        }),
        idempotency_key: derived_key(purpose.as_str(), &[token.as_bytes()]),
    };
    if let Err(status) = ingress.api.track_activity(Request::new(request)).await {
        tracing::warn!(code = ?status.code(), purpose = purpose.as_str(), "tracked link not recorded");
    }
    Ok(claims)
}

async fn open_pixel(State(ingress): State<Ingress>, Query(query): Query<TokenQuery>) -> Response {
    if let Err(error) = track_link(
        &ingress,
        &query.token,
        LinkPurpose::Open,
        common::ActivityType::EmailOpened,
    )
    .await
    {
        // The image shows either way: a broken pixel helps nobody.
        tracing::debug!(%error, "open pixel with a token that does not verify");
    }
    let mut response = (StatusCode::OK, PIXEL).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, max-age=0"),
    );
    response
}

async fn click(State(ingress): State<Ingress>, Query(query): Query<TokenQuery>) -> Response {
    let claims = track_link(
        &ingress,
        &query.token,
        LinkPurpose::Click,
        common::ActivityType::LinkClicked,
    )
    .await;
    // Only to the URL the token signed, never to one from the query: no open redirect.
    match claims {
        Ok(claims) => match claims.target_url() {
            Some(target) => Redirect::to(target).into_response(),
            None => link_failed(&Status::invalid_argument("a click link without a target")),
        },
        Err(LinkError::Expired) => link_failed(&Status::failed_precondition("expired")),
        Err(_) => link_failed(&Status::invalid_argument("not a valid link")),
    }
}
