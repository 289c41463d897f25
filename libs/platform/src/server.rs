//! The gRPC server bootstrap: binds first (so port 0 works and the real address is known),
//! serves the given services with `grpc.health.v1` and server reflection (v1 and v1alpha), puts each request
//! in a span that continues the caller's trace, checks every call's bearer token when tokens
//! are configured, and drains gracefully on SIGTERM or Ctrl-C.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::server::{HealthReporter, HealthService};

use crate::{
    auth::{AuthLayer, Tokens},
    trace_context::request_span,
};

/// How long a client connection lives before the server asks the client to reconnect.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// A bound gRPC server that services are added to before it serves.
#[derive(Debug)]
pub struct GrpcServer {
    listener: TcpListener,
    routes: RoutesBuilder,
    health_reporter: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<HealthService>,
    /// The bearer tokens calls must carry; None serves every call.
    tokens: Option<Tokens>,
    /// TLS (mutual when it names a client CA); None serves plain text.
    tls: Option<ServerTlsConfig>,
}

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// The reflection service could not read the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed while serving.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl GrpcServer {
    /// Binds `address` (port 0 picks a free port).
    pub async fn bind(address: SocketAddr) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        // The reporter starts with the empty name SERVING: it stands for the whole server.
        let health_reporter = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(health_reporter.clone()),
        );
        Ok(Self {
            listener,
            routes: RoutesBuilder::default(),
            health_reporter,
            health_service,
            tokens: None,
            tls: None,
        })
    }

    /// Requires one of `tokens`, with the scope the method needs, on every call but
    /// health's and reflection's.
    pub fn require_tokens(&mut self, tokens: Tokens) -> &mut Self {
        self.tokens = Some(tokens);
        self
    }

    /// Serves over TLS as `config` says.
    pub fn use_tls(&mut self, config: ServerTlsConfig) -> &mut Self {
        self.tls = Some(config);
        self
    }

    /// Whether calls must carry a bearer token.
    pub fn requires_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// The reporter that sets the named health entries.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health_reporter.clone()
    }

    /// Adds a gRPC service to be served.
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self
    }

    /// Serves until `shutdown` completes, then stops accepting calls and lets in-flight ones
    /// finish for at most `grace`.
    pub async fn serve(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), ServerError> {
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(leadflow_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        self.routes.add_service(self.health_service.clone());
        self.routes.add_service(reflection().build_v1()?);
        // Many tools (older grpcurl, Postman, grpcio-reflection) still ask v1alpha.
        self.routes.add_service(reflection().build_v1alpha()?);

        let (draining_sender, mut draining) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: no new calls, draining in-flight ones");
            let _ = draining_sender.send(true);
        };
        let mut builder = Server::builder();
        if let Some(tls) = self.tls.take() {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            // Clients reconnect now and then, so new replicas behind a headless Service get
            // their share of the long-lived HTTP/2 connections.
            .max_connection_age(MAX_CONNECTION_AGE)
            .trace_fn(request_span)
            // Around the routes, so no service (and no service added later) is left out.
            .layer(AuthLayer::new(self.tokens.take()))
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming(self.listener), shutdown);
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            () = async {
                let _ = draining.wait_for(|draining| *draining).await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!(grace_ms = grace.as_millis() as u64, "drain grace elapsed, dropping calls still in flight"),
        }
        Ok(())
    }
}

/// The connections the server accepts on `listener`, with Nagle's algorithm off: tonic sets
/// TCP_NODELAY only on listeners it binds itself.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_answers_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let address = listener.local_addr().expect("an address");
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(address)
            .await
            .expect("connected");
        let connection = accepted
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        // Nagle's algorithm would hold a small unary answer until the client's delayed ACK,
        // some 40 ms on Linux, on every call.
        assert!(connection.nodelay().expect("readable"));
    }
}
