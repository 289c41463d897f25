//! Bearer-token authentication and scope authorisation of every gRPC call, in one tower
//! layer the server puts in front of all its routes: no or an unknown token is
//! `UNAUTHENTICATED`, a token without the method's scope `PERMISSION_DENIED`. Health and
//! reflection stay open, so probes and tools find the server without a token.

mod scopes;
mod tokens;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Status, body::Body};

pub use scopes::{Access, MethodScopes, Scope, UnknownScope, classify};
pub use tokens::{Caller, MIN_TOKEN_CHARS, Tokens, TokensError};

/// Services every caller may call without a token: Kubernetes probes and tools such as
/// grpcurl must reach them before they hold one, and they reveal no records.
pub const OPEN_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The tokens to check calls against, and the scope each method needs.
#[derive(Debug)]
struct Guard {
    tokens: Tokens,
    methods: &'static MethodScopes,
}

impl Guard {
    /// Whether a call of `path` with `headers` may go on, as whom (None for the open
    /// services), or the status it is refused with.
    fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<CallerName>, Status> {
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map_or("", |(service, _)| service);
        if OPEN_SERVICES.contains(&service) {
            return Ok(None);
        }
        let Some(presented) = bearer_token(headers) else {
            tracing::debug!(method = %path, "call without a bearer token refused");
            return Err(Status::unauthenticated(
                "this call needs a bearer token: send the metadata `authorization: Bearer TOKEN`",
            ));
        };
        let Some(caller) = self.tokens.find(presented.as_bytes()) else {
            tracing::debug!(method = %path, "call with an unknown bearer token refused");
            return Err(Status::unauthenticated("the bearer token is not valid"));
        };
        let needed = self.methods.required(path);
        if caller.may(needed) {
            return Ok(Some(CallerName(caller.name().to_owned())));
        }
        tracing::info!(token = caller.name(), method = %path, needs = %needed, "call denied: the token lacks the scope");
        Err(Status::permission_denied(format!(
            "the token lacks the scope this call needs: {needed}"
        )))
    }
}

/// The name of the token a call was authenticated with, in the call's extensions for the
/// handlers that record who asked (e.g. who erased a contact); absent when calls are not
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerName(pub String);

/// The token of an `authorization: Bearer TOKEN` header (the scheme in any case).
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The layer that checks every call's token, or, without tokens, lets every call through.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    guard: Option<Arc<Guard>>,
}

impl AuthLayer {
    /// Checks calls against `tokens` and the contracts' scopes; None lets every call through.
    pub fn new(tokens: Option<Tokens>) -> Self {
        Self {
            guard: tokens.map(|tokens| {
                Arc::new(Guard {
                    tokens,
                    methods: MethodScopes::leadflow(),
                })
            }),
        }
    }

    /// Whether calls are checked.
    pub fn is_on(&self) -> bool {
        self.guard.is_some()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// A service behind [`AuthLayer`]: it sees only the calls the token allows.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    guard: Option<Arc<Guard>>,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(guard) = &self.guard {
            match guard.check(request.uri().path(), request.headers()) {
                Ok(Some(caller)) => {
                    request.extensions_mut().insert(caller);
                }
                Ok(None) => {}
                Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READER: &str = "reader-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn guard() -> Guard {
        let text = format!(
            "[[tokens]]\nname = \"reader\"\nscopes = [\"scoring:read\"]\ntoken = \"{READER}\"\n\
             [[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\ntoken = \"{ADMIN}\"\n"
        );
        Guard {
            tokens: Tokens::parse(&text).expect("valid tokens"),
            methods: MethodScopes::leadflow(),
        }
    }

    fn code(path: &str, authorization: Option<&str>) -> Option<tonic::Code> {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                http::header::AUTHORIZATION,
                value.parse().expect("a header value"),
            );
        }
        guard()
            .check(path, &headers)
            .err()
            .map(|status| status.code())
    }

    #[test]
    fn calls_are_checked_by_token_then_scope() {
        use tonic::Code::{PermissionDenied, Unauthenticated};
        let get_score = "/leadflow.scoring.v1.ScoringService/GetScore";
        let rebuild = "/leadflow.scoring.v1.ScoringService/RebuildScores";
        let bearer = |token: &str| format!("Bearer {token}");
        assert_eq!(code(get_score, None), Some(Unauthenticated));
        assert_eq!(
            code(get_score, Some(&format!("Basic {READER}"))),
            Some(Unauthenticated)
        );
        assert_eq!(code(get_score, Some("Bearer ")), Some(Unauthenticated));
        assert_eq!(
            code(get_score, Some(&bearer("not-a-token"))),
            Some(Unauthenticated)
        );
        assert_eq!(code(get_score, Some(&bearer(READER))), None);
        assert_eq!(code(get_score, Some(&format!("bearer  {READER}"))), None);
        assert_eq!(code(rebuild, Some(&bearer(READER))), Some(PermissionDenied));
        assert_eq!(code(rebuild, Some(&bearer(ADMIN))), None);
        let unknown = "/leadflow.scoring.v1.ScoringService/GetSecrets";
        assert_eq!(code(unknown, None), Some(Unauthenticated));
        assert_eq!(code(unknown, Some(&bearer(READER))), Some(PermissionDenied));
    }

    #[test]
    fn health_and_reflection_stay_open() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(code(path, None), None, "{path}");
            assert_eq!(code(path, Some("Bearer wrong")), None, "{path}");
        }
        // Only the exact service name opens a path.
        assert_eq!(
            code("/grpc.health.v1.HealthX/Check", None),
            Some(tonic::Code::Unauthenticated)
        );
    }
}
