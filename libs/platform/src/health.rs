//! Readiness per service: a monitor probes each service's dependencies (its PostgreSQL
//! pool or embedded store, Redis) and sets the service's named `grpc.health.v1` entry to NOT_SERVING while
//! one of them is lost. The empty-name entry always stays SERVING, so probes must name a service.

use std::{sync::Arc, time::Duration};

use leadflow_storage::{RedisStore, ServiceStore};
use tonic_health::{ServingStatus, server::HealthReporter};

/// Something a service needs in order to serve, that can be asked whether it answers.
#[async_trait::async_trait]
pub trait DependencyProbe: Send + Sync + std::fmt::Debug {
    /// A short name for logs, e.g. `postgres/capture` or `redis`.
    fn name(&self) -> String;

    /// `Ok` when the dependency answers now; otherwise what went wrong.
    async fn probe(&self) -> Result<(), String>;
}

#[async_trait::async_trait]
impl DependencyProbe for ServiceStore {
    fn name(&self) -> String {
        ServiceStore::name(self)
    }

    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|error| error.to_string())
    }
}

#[async_trait::async_trait]
impl DependencyProbe for RedisStore {
    fn name(&self) -> String {
        "redis".to_owned()
    }

    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|error| error.to_string())
    }
}

#[derive(Debug)]
struct WatchedService {
    name: String,
    dependencies: Vec<Arc<dyn DependencyProbe>>,
    serving: Option<bool>,
}

/// Keeps each named health entry in step with the dependencies of its service.
#[derive(Debug)]
pub struct HealthMonitor {
    reporter: HealthReporter,
    services: Vec<WatchedService>,
    probe_timeout: Duration,
}

impl HealthMonitor {
    /// A monitor that reports through `reporter`.
    pub fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            services: Vec::new(),
            probe_timeout: Duration::from_secs(2),
        }
    }

    /// Watches the service with the fully-qualified name `service_name` (e.g.
    /// `leadflow.capture.v1.CaptureService`), which serves while all `dependencies` answer.
    pub fn watch(
        mut self,
        service_name: &str,
        dependencies: Vec<Arc<dyn DependencyProbe>>,
    ) -> Self {
        self.services.push(WatchedService {
            name: service_name.to_owned(),
            dependencies,
            serving: None,
        });
        self
    }

    /// Probes every dependency once and updates every watched entry.
    pub async fn check_once(&mut self) {
        for service in &mut self.services {
            let mut failure = None;
            for dependency in &service.dependencies {
                let outcome = tokio::time::timeout(self.probe_timeout, dependency.probe())
                    .await
                    .unwrap_or_else(|_| Err("probe timed out".to_owned()));
                if let Err(error) = outcome {
                    failure = Some((dependency.name(), error));
                    break;
                }
            }
            let serving = failure.is_none();
            if service.serving != Some(serving) {
                match &failure {
                    None => tracing::info!(service = %service.name, "serving"),
                    Some((dependency, error)) => tracing::warn!(
                        service = %service.name, dependency, error, "not serving: dependency lost"
                    ),
                }
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                self.reporter
                    .set_service_status(&service.name, status)
                    .await;
                service.serving = Some(serving);
            }
        }
    }

    /// Marks every watched entry NOT_SERVING, e.g. while draining before shutdown.
    pub async fn set_all_not_serving(&self) {
        for service in &self.services {
            self.reporter
                .set_service_status(&service.name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Probes every `interval` until `drain` fires (or its sender is dropped), then marks
    /// every watched entry NOT_SERVING so that load balancers stop sending calls.
    pub fn spawn(
        mut self,
        interval: Duration,
        drain: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(drain);
            loop {
                tokio::select! {
                    _ = ticker.tick() => self.check_once().await,
                    _ = &mut drain => {
                        self.set_all_not_serving().await;
                        break;
                    }
                }
            }
        })
    }
}
