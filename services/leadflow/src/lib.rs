//! The leadflow application: which services run in this process, their databases and
//! Redis, the health monitor and the gRPC server, built from settings and run until shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use leadflow_bus::{
    Consumer, ConsumerSettings, DeadLetter, EmbeddedBus, EmbeddedConsumer, EventHandler, GroupLag,
    Relay, RelaySettings,
};
use leadflow_capture::{ExportPeers, IngressServer, RetentionPolicy};
use leadflow_platform::{
    DependencyProbe, GrpcServer, HealthMonitor, Settings,
    server::ServerError,
    time::{Clock, SystemClock},
};
use leadflow_storage::{
    EmbeddedDatabase, PostgresSettings, RedisKeySpace, RedisStore, ServiceDatabase, ServiceStore,
    StorageError, postgres::Migrator,
};
use secrecy::{ExposeSecret, SecretString};

pub mod bench;
mod capture_front;
pub mod cli;
pub mod console;
pub mod demo;
pub mod key_expiry;
mod nurture_mailer;

/// One of the four services of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ServiceKind {
    /// Forms, consent, contacts, buying units and the activity stream.
    Capture,
    /// Fit and engagement scores, lead classes and the lifecycle.
    Scoring,
    /// Role-by-stage content, tracks and nurture mail.
    Nurturing,
    /// Reps, teams, rules and assignments.
    Routing,
}

impl ServiceKind {
    /// All four, in funnel order.
    pub const ALL: [Self; 4] = [Self::Capture, Self::Scoring, Self::Nurturing, Self::Routing];

    /// The PostgreSQL schema the service owns.
    pub fn schema(self) -> &'static str {
        match self {
            Self::Capture => leadflow_capture::SCHEMA,
            Self::Scoring => leadflow_scoring::SCHEMA,
            Self::Nurturing => leadflow_nurturing::SCHEMA,
            Self::Routing => leadflow_routing::SCHEMA,
        }
    }

    /// The fully-qualified gRPC service name, which is also its named health entry.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::Capture => leadflow_capture::SERVICE_NAME,
            Self::Scoring => leadflow_scoring::SERVICE_NAME,
            Self::Nurturing => leadflow_nurturing::SERVICE_NAME,
            Self::Routing => leadflow_routing::SERVICE_NAME,
        }
    }

    /// Adds this service, on `store` (and Redis, in production), to the server and to what
    /// runs beside it: capture comes with its HTTP ingress, scoring, nurturing and routing with
    /// their event consumers and the tasks that keep their state moving.
    async fn add_to(
        self,
        server: &mut GrpcServer,
        store: ServiceStore,
        redis: Option<RedisStore>,
        settings: &Settings,
        clock: &Arc<dyn Clock>,
        beside: &mut Beside,
    ) -> Result<(), AppError> {
        match self {
            Self::Capture => {
                let (mut api, ingress, links) =
                    capture_front::capture_with_ingress(settings, store, clock.clone()).await?;
                if let Some(peers) = beside.export_peers.take() {
                    api = api.with_export_peers(peers);
                }
                beside.retention = Some(api.retention_policy(settings.contact_retention()));
                server.add_service(leadflow_capture::grpc_service(api));
                beside.ingress = Some(ingress);
                beside.links = Some(links);
            }
            Self::Scoring => {
                let scoring = leadflow_scoring::scoring(&store, redis, clock.clone());
                server.add_service(leadflow_scoring::grpc_service(&store, scoring.clone()));
                beside.workers.scoring = Some(scoring.clone());
                beside.subscriptions.push(Subscription {
                    group: leadflow_scoring::CONSUMER_GROUP,
                    sources: &leadflow_scoring::SOURCES,
                    handler: Arc::new(scoring),
                    store,
                });
            }
            Self::Nurturing => {
                let embedded = matches!(store, ServiceStore::Embedded(_));
                let mailer =
                    nurture_mailer::nurture_mailer(settings, embedded, beside.links.clone())?;
                let nurturing = leadflow_nurturing::nurturing(&store, clock.clone(), mailer);
                server.add_service(leadflow_nurturing::grpc_service(nurturing.clone()));
                beside.workers.nurturing = Some(nurturing.clone());
                beside.subscriptions.push(Subscription {
                    group: leadflow_nurturing::CONSUMER_GROUP,
                    sources: &leadflow_nurturing::SOURCES,
                    handler: Arc::new(nurturing),
                    store,
                });
            }
            Self::Routing => {
                let routing = leadflow_routing::routing(&store, clock.clone());
                server.add_service(leadflow_routing::grpc_service(routing.clone()));
                beside.workers.routing = Some(routing.clone());
                beside.subscriptions.push(Subscription {
                    group: leadflow_routing::CONSUMER_GROUP,
                    sources: &leadflow_routing::SOURCES,
                    handler: Arc::new(routing),
                    store,
                });
            }
        }
        Ok(())
    }

    /// The consumer group the service reads events in, and the producers it reads.
    fn consumer_group(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Self::Scoring => Some((leadflow_scoring::CONSUMER_GROUP, &leadflow_scoring::SOURCES)),
            Self::Routing => Some((leadflow_routing::CONSUMER_GROUP, &leadflow_routing::SOURCES)),
            Self::Nurturing => Some((
                leadflow_nurturing::CONSUMER_GROUP,
                &leadflow_nurturing::SOURCES,
            )),
            Self::Capture => None,
        }
    }

    fn sqlite_migrator(self) -> &'static Migrator {
        match self {
            Self::Capture => &leadflow_capture::SQLITE_MIGRATOR,
            Self::Scoring => &leadflow_scoring::SQLITE_MIGRATOR,
            Self::Nurturing => &leadflow_nurturing::SQLITE_MIGRATOR,
            Self::Routing => &leadflow_routing::SQLITE_MIGRATOR,
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Capture => &leadflow_capture::MIGRATOR,
            Self::Scoring => &leadflow_scoring::MIGRATOR,
            Self::Nurturing => &leadflow_nurturing::MIGRATOR,
            Self::Routing => &leadflow_routing::MIGRATOR,
        }
    }
}

/// The application could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The settings do not describe a runnable installation.
    #[error("{0}")]
    Configuration(String),
    /// PostgreSQL or Redis could not be reached or migrated.
    #[error("{what}: {source}")]
    Storage { what: String, source: StorageError },
    /// The gRPC server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Where the records and the hot state live.
#[derive(Debug, Clone)]
pub struct Backends {
    postgres: PostgresSettings,
    redis_url: SecretString,
    redis_key_space: RedisKeySpace,
}

impl Backends {
    /// Reads the backends from settings, refusing what cannot work with a message that
    /// says which flag or variable to set.
    pub fn from_settings(settings: &Settings) -> Result<Self, AppError> {
        let postgres = postgres_settings(settings)?;
        let (redis_url, redis_key_space) = redis_settings(settings)?;
        Ok(Self {
            postgres,
            redis_url,
            redis_key_space,
        })
    }
}

/// The Redis URL and key space, or a message saying which flag or variable to set.
fn redis_settings(settings: &Settings) -> Result<(SecretString, RedisKeySpace), AppError> {
    let Some(redis_url) = settings.redis_url.clone() else {
        return Err(AppError::Configuration(
            "no redis configured: pass --redis-url redis://... (or set LEADFLOW_REDIS_URL)"
                .to_owned(),
        ));
    };
    let redis_scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|scheme| redis_url.expose_secret().starts_with(scheme));
    if !redis_scheme_ok {
        return Err(AppError::Configuration(
            "--redis-url must start with redis://, rediss:// or unix://".to_owned(),
        ));
    }
    Ok((
        redis_url,
        RedisKeySpace::new(settings.redis_key_prefix.clone()),
    ))
}

/// The PostgreSQL settings, or a message saying which flag or variable to set.
fn postgres_settings(settings: &Settings) -> Result<PostgresSettings, AppError> {
    let Some(database_url) = settings.database_url.clone() else {
        return Err(AppError::Configuration(
            "no database configured: pass --database-url postgres://... \
             (or set LEADFLOW_DATABASE_URL)"
                .to_owned(),
        ));
    };
    let scheme_ok = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| database_url.expose_secret().starts_with(scheme));
    if !scheme_ok {
        return Err(AppError::Configuration(
            "--database-url must start with postgres:// or postgresql://".to_owned(),
        ));
    }
    Ok(PostgresSettings {
        url: database_url,
        max_connections: settings.database_max_connections,
        acquire_timeout: settings.database_acquire_timeout(),
    })
}

async fn connect_database(
    postgres: &PostgresSettings,
    kind: ServiceKind,
) -> Result<ServiceDatabase, AppError> {
    ServiceDatabase::connect(postgres, kind.schema())
        .await
        .map_err(|source| AppError::Storage {
            what: format!("cannot connect the {} database", kind.schema()),
            source,
        })
}

/// Applies the migrations of `services`, each into its own schema (PostgreSQL only, no
/// Redis); without a database URL, into the embedded store's files under the data directory.
pub async fn migrate(settings: &Settings, services: &[ServiceKind]) -> Result<(), AppError> {
    if settings.database_url.is_none() {
        for &kind in services {
            open_embedded(&settings.data_dir, kind).await?;
            tracing::info!(service = kind.schema(), data_dir = %settings.data_dir.display(), "migrated");
        }
        return Ok(());
    }
    let postgres = postgres_settings(settings)?;
    for &kind in services {
        let database = connect_database(&postgres, kind).await?;
        migrate_one(kind, &database).await?;
        tracing::info!(schema = kind.schema(), "migrated");
    }
    Ok(())
}

/// Opens and migrates a service's embedded store.
async fn open_embedded(
    data_dir: &std::path::Path,
    kind: ServiceKind,
) -> Result<EmbeddedDatabase, AppError> {
    let storage_error = |source| AppError::Storage {
        what: format!(
            "cannot open the {} store in {}",
            kind.schema(),
            data_dir.display()
        ),
        source,
    };
    let database = EmbeddedDatabase::open(data_dir, kind.schema())
        .await
        .map_err(storage_error)?;
    database
        .migrate(kind.sqlite_migrator())
        .await
        .map_err(storage_error)?;
    Ok(database)
}

async fn migrate_one(kind: ServiceKind, database: &ServiceDatabase) -> Result<(), AppError> {
    database
        .migrate(kind.migrator())
        .await
        .map_err(|source| AppError::Storage {
            what: format!("cannot migrate the {} schema", kind.schema()),
            source,
        })
}

/// Removes from `command`'s environment what this process inherited that would reconfigure a
/// `leadflow` child: the LEADFLOW_* settings, RUST_LOG and OTEL_* exporters. A harness that
/// starts the suite (the bench, the process tests) passes only the settings it means.
pub fn without_inherited_configuration(
    command: &mut std::process::Command,
) -> &mut std::process::Command {
    for (variable, _) in std::env::vars_os() {
        let inherited = variable.to_str().is_some_and(|variable| {
            variable.starts_with("LEADFLOW_")
                || variable == "RUST_LOG"
                || variable.starts_with("OTEL_")
        });
        if inherited {
            command.env_remove(&variable);
        }
    }
    command
}

/// How far every consumer group is behind: on the Redis streams of the four services, or
/// on the embedded bus when no database URL is set.
pub async fn events_lag(settings: &Settings) -> Result<Vec<GroupLag>, AppError> {
    EventReader::open(settings).await?.lag_report().await
}

/// The newest `limit` dead-lettered events of every service's consumer group, newest first.
pub async fn dead_letters(settings: &Settings, limit: usize) -> Result<Vec<DeadLetter>, AppError> {
    let reader = EventReader::open(settings).await?;
    let mut letters = Vec::new();
    for kind in ServiceKind::ALL {
        let group = reader
            .dead_letters(kind.schema(), limit)
            .await
            .map_err(|source| AppError::Storage {
                what: "cannot read the dead letters".to_owned(),
                source,
            })?;
        letters.extend(group);
    }
    Ok(letters)
}

/// Where the consumer groups' lag and dead letters are read, in either mode: opened once
/// by a caller that asks again and again.
#[derive(Debug, Clone)]
pub enum EventReader {
    /// The Redis streams of a production deployment.
    Redis(RedisStore),
    /// The embedded bus in the SQLite files of the data directory.
    Embedded(EmbeddedBus),
}

impl EventReader {
    /// Connects to the events of the deployment `settings` describe.
    pub async fn open(settings: &Settings) -> Result<Self, AppError> {
        Ok(match settings.database_url {
            Some(_) => Self::Redis(connect_redis(settings).await?),
            None => Self::Embedded(open_embedded_bus(settings).await?),
        })
    }

    /// How far every consumer group is behind.
    pub async fn lag_report(&self) -> Result<Vec<GroupLag>, AppError> {
        self.group_lags().await.map_err(|source| AppError::Storage {
            what: "cannot read the consumer groups".to_owned(),
            source,
        })
    }

    async fn group_lags(&self) -> Result<Vec<GroupLag>, StorageError> {
        match self {
            Self::Redis(redis) => leadflow_bus::lag_report(redis, &producers()).await,
            Self::Embedded(bus) => bus.lag_report().await,
        }
    }

    async fn dead_letters(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        match self {
            Self::Redis(redis) => leadflow_bus::dead_letters(redis, group, limit).await,
            Self::Embedded(bus) => bus.dead_letters(group, limit).await,
        }
    }
}

/// Every service's name as a producer of events.
fn producers() -> Vec<&'static str> {
    ServiceKind::ALL.iter().map(|kind| kind.schema()).collect()
}

/// The embedded bus over the services' stores: each service's outbox as a producer.
fn embedded_bus(stores: &[(ServiceKind, EmbeddedDatabase)]) -> EmbeddedBus {
    let mut bus = EmbeddedBus::new(RelaySettings::default().retention);
    for (kind, store) in stores {
        bus.add_producer(kind.schema(), store.pool().clone());
    }
    bus
}

/// The embedded bus over the four stores under the data directory.
async fn open_embedded_bus(settings: &Settings) -> Result<EmbeddedBus, AppError> {
    let mut stores = Vec::with_capacity(ServiceKind::ALL.len());
    for kind in ServiceKind::ALL {
        stores.push((kind, open_embedded(&settings.data_dir, kind).await?));
    }
    let mut bus = embedded_bus(&stores);
    for (kind, store) in &stores {
        if let Some((group, sources)) = kind.consumer_group() {
            bus.watch(group, store.pool().clone(), sources);
        }
    }
    Ok(bus)
}

async fn connect_redis(settings: &Settings) -> Result<RedisStore, AppError> {
    let (redis_url, key_space) = redis_settings(settings)?;
    RedisStore::connect(&redis_url, key_space)
        .await
        .map_err(|source| AppError::Storage {
            what: "cannot connect to redis".to_owned(),
            source,
        })
}

/// How often consumer lag is sampled for the metrics.
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// The services in this process whose work goes on between calls: scoring keeps its hot
/// state built, nurturing sends what falls due, routing works its queues and SLAs. A running
/// application spawns their loops; a simulation runs their passes by hand.
#[derive(Debug, Default)]
struct Workers {
    scoring: Option<leadflow_scoring::Scoring>,
    nurturing: Option<leadflow_nurturing::Nurturing>,
    routing: Option<leadflow_routing::Routing>,
}

impl Workers {
    /// Starts each service's loop, to run until `stop` fires.
    fn spawn(self, stop: &tokio::sync::watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(scoring) = self.scoring {
            tasks.push(scoring.spawn_hot_state_keeper(stop.clone()));
        }
        if let Some(nurturing) = self.nurturing {
            tasks.push(nurturing.spawn_scheduler(stop.clone()));
        }
        if let Some(routing) = self.routing {
            tasks.push(routing.spawn_ticker(stop.clone()));
        }
        tasks
    }
}

/// A service's consumer group: the events it reads and where it applies them.
#[derive(Debug)]
struct Subscription {
    group: &'static str,
    sources: &'static [&'static str],
    handler: Arc<dyn EventHandler>,
    store: ServiceStore,
}

/// What runs beside the gRPC services of this process.
#[derive(Debug, Default)]
struct Beside {
    /// Capture's HTTP ingress.
    ingress: Option<IngressServer>,
    /// The signed links of capture's ingress, for the mail nurturing sends.
    links: Option<leadflow_platform::links::LinkUrls>,
    /// The consumer groups of the services in this process.
    subscriptions: Vec<Subscription>,
    /// Their work between calls.
    workers: Workers,
    /// Where capture's data-protection export reaches the other services.
    export_peers: Option<ExportPeers>,
    /// Capture's retention policy.
    retention: Option<RetentionPolicy>,
}

/// The channels capture's export reaches scoring, nurturing and routing on: each peer's
/// configured URL, or this process's own server when it runs that service; over mutual TLS
/// when the settings give a CA. None, and
/// exports answer UNAVAILABLE, when a peer runs elsewhere at an address not configured.
fn export_peers(
    settings: &Settings,
    services: &[ServiceKind],
    local: SocketAddr,
) -> Result<Option<ExportPeers>, AppError> {
    // Over mutual TLS a peer in this process is called by the name its certificate holds
    // for the loopback, `localhost`.
    let peer_tls = leadflow_platform::tls::peer_config(&settings.tls)
        .map_err(|error| AppError::Configuration(error.to_string()))?;
    let local = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, local.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    };
    let peers = &settings.peers;
    let mut channels = Vec::with_capacity(3);
    for (kind, url, variable) in [
        (
            ServiceKind::Scoring,
            &peers.scoring_url,
            "LEADFLOW_PEERS__SCORING_URL",
        ),
        (
            ServiceKind::Nurturing,
            &peers.nurturing_url,
            "LEADFLOW_PEERS__NURTURING_URL",
        ),
        (
            ServiceKind::Routing,
            &peers.routing_url,
            "LEADFLOW_PEERS__ROUTING_URL",
        ),
    ] {
        let url = match url.trim() {
            "" if services.contains(&kind) && peer_tls.is_some() => {
                format!("https://localhost:{}", local.port())
            }
            "" if services.contains(&kind) => format!("http://{local}"),
            "" => {
                tracing::warn!(
                    "{variable} is not set: contact exports answer UNAVAILABLE until it is"
                );
                return Ok(None);
            }
            url => url.to_owned(),
        };
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).map_err(|error| {
            AppError::Configuration(format!("{variable} {url:?} is not a URL: {error}"))
        })?;
        let endpoint = match &peer_tls {
            Some(tls) if url.starts_with("https://") => endpoint
                .tls_config(tls.clone())
                .map_err(|error| AppError::Configuration(format!("{variable} {url:?}: {error}")))?,
            _ => endpoint,
        };
        channels.push(endpoint.connect_lazy());
    }
    let [scoring, nurturing, routing] = <[_; 3]>::try_from(channels)
        .map_err(|_| AppError::Configuration("three peers expected".to_owned()))?;
    Ok(Some(ExportPeers::new(scoring, nurturing, routing)))
}

/// A consumer group reading events in this process.
#[derive(Debug)]
enum EventConsumer {
    Redis(Consumer<Arc<dyn EventHandler>>),
    Embedded(EmbeddedConsumer<Arc<dyn EventHandler>>),
}

impl EventConsumer {
    async fn poll_once(&self) -> Result<usize, StorageError> {
        match self {
            Self::Redis(consumer) => consumer.poll_once().await,
            Self::Embedded(consumer) => consumer.poll_once().await,
        }
    }

    fn spawn(self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        match self {
            Self::Redis(consumer) => consumer.spawn(stop),
            Self::Embedded(consumer) => consumer.spawn(stop),
        }
    }
}

/// What carries the events between the services.
#[derive(Debug)]
enum EventTransport {
    /// Each service's relay publishes its outbox to Redis Streams.
    Redis {
        redis: RedisStore,
        relays: Vec<Relay>,
    },
    /// The embedded bus reads the SQLite outboxes in this process.
    Embedded(EmbeddedBus),
}

/// The gRPC server bound to the listen address, requiring the configured bearer tokens.
/// The tokens file is read before the port is bound, so a bad one stops the process before
/// it takes a call.
async fn bind_server(settings: &Settings) -> Result<GrpcServer, AppError> {
    let tokens = settings
        .auth
        .tokens()
        .map_err(|error| AppError::Configuration(error.to_string()))?;
    let tls = leadflow_platform::tls::server_config(&settings.tls)
        .map_err(|error| AppError::Configuration(error.to_string()))?;
    let mut server = GrpcServer::bind(settings.listen).await?;
    if let Some(tokens) = tokens {
        server.require_tokens(tokens);
    }
    if let Some(tls) = tls {
        server.use_tls(tls);
    }
    Ok(server)
}

/// A built application: bound, migrated, connected, not yet serving.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    /// Capture's HTTP ingress, when this process runs capture.
    ingress: Option<IngressServer>,
    /// The event consumers of the services in this process.
    consumers: Vec<EventConsumer>,
    /// The services' work between calls: scoring's hot-state keeper, nurturing's scheduler,
    /// routing's ticker.
    workers: Workers,
    monitor: HealthMonitor,
    events: EventTransport,
    services: Vec<ServiceKind>,
    /// Forgets the idempotency keys past their retention.
    key_expiry: key_expiry::KeyExpiry,
    /// Erases the contacts inactive for longer than their retention, when capture runs here.
    retention: Option<RetentionPolicy>,
    health_check_interval: Duration,
    shutdown_grace: Duration,
}

impl Application {
    /// Connects every service in `services` to its database (migrating it) and to Redis,
    /// and binds the listen address. Without a database URL the suite runs embedded: all
    /// four services in this process, records in SQLite files under the data directory.
    pub async fn build(settings: &Settings, services: &[ServiceKind]) -> Result<Self, AppError> {
        Self::build_with_clock(settings, services, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with the services reading the time from `clock`, so that a
    /// simulation can run months in minutes.
    pub async fn build_with_clock(
        settings: &Settings,
        services: &[ServiceKind],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        if settings.database_url.is_none() {
            return Self::build_embedded(settings, services, clock).await;
        }
        let backends = Backends::from_settings(settings)?;
        let redis = RedisStore::connect(&backends.redis_url, backends.redis_key_space.clone())
            .await
            .map_err(|source| AppError::Storage {
                what: "cannot connect to redis".to_owned(),
                source,
            })?;
        let mut server = bind_server(settings).await?;
        let mut monitor = HealthMonitor::new(server.health_reporter());
        let mut relays = Vec::with_capacity(services.len());
        let mut beside = Beside::default();
        let mut key_expiry =
            key_expiry::KeyExpiry::new(settings.idempotency_key_retention(), clock.clone());
        if services.contains(&ServiceKind::Capture) {
            beside.export_peers = export_peers(settings, services, server.local_addr())?;
        }
        for &kind in services {
            let database = connect_database(&backends.postgres, kind).await?;
            migrate_one(kind, &database).await?;
            relays.push(Relay::new(
                database.pool().clone(),
                redis.clone(),
                kind.schema(),
                RelaySettings::default(),
            ));
            let store = ServiceStore::Postgres(database);
            key_expiry.watch(store.clone());
            let dependencies: Vec<Arc<dyn DependencyProbe>> =
                vec![Arc::new(store.clone()), Arc::new(redis.clone())];
            monitor = monitor.watch(kind.grpc_name(), dependencies);
            kind.add_to(
                &mut server,
                store,
                Some(redis.clone()),
                settings,
                &clock,
                &mut beside,
            )
            .await?;
        }
        let mut consumers = Vec::new();
        for subscription in beside.subscriptions {
            // A consumer blocks on its stream reads: on a connection of its own, so the
            // calls that share the main connection never queue behind a blocked read, and
            // for less than a reply may take.
            let own = RedisStore::connect(&backends.redis_url, backends.redis_key_space.clone())
                .await
                .map_err(|source| AppError::Storage {
                    what: "cannot connect to redis".to_owned(),
                    source,
                })?;
            let consumer_settings = ConsumerSettings {
                block: Duration::from_millis(200),
                claim_idle: settings.event_claim_idle(),
                ..ConsumerSettings::new(subscription.group)
            };
            consumers.push(EventConsumer::Redis(Consumer::new(
                own,
                subscription.sources,
                consumer_settings,
                subscription.handler,
            )));
        }
        Ok(Self {
            server,
            ingress: beside.ingress,
            consumers,
            workers: beside.workers,
            monitor,
            events: EventTransport::Redis { redis, relays },
            services: services.to_vec(),
            key_expiry,
            retention: beside.retention,
            health_check_interval: settings.health_check_interval(),
            shutdown_grace: settings.shutdown_grace(),
        })
    }

    async fn build_embedded(
        settings: &Settings,
        services: &[ServiceKind],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        if services != ServiceKind::ALL {
            return Err(AppError::Configuration(
                "--service needs --database-url: the embedded mode runs all four services in one \
                 process (pass --database-url postgres://... and --redis-url redis://... to run one \
                 service per process)"
                    .to_owned(),
            ));
        }
        if settings.redis_url.is_some() {
            return Err(AppError::Configuration(
                "--redis-url needs --database-url: the embedded mode keeps hot state in memory"
                    .to_owned(),
            ));
        }
        let mut server = bind_server(settings).await?;
        let mut monitor = HealthMonitor::new(server.health_reporter());
        let mut stores = Vec::with_capacity(services.len());
        let mut beside = Beside::default();
        let mut key_expiry =
            key_expiry::KeyExpiry::new(settings.idempotency_key_retention(), clock.clone());
        if services.contains(&ServiceKind::Capture) {
            beside.export_peers = export_peers(settings, services, server.local_addr())?;
        }
        for &kind in services {
            let database = open_embedded(&settings.data_dir, kind).await?;
            let store = ServiceStore::Embedded(database.clone());
            key_expiry.watch(store.clone());
            monitor = monitor.watch(kind.grpc_name(), vec![Arc::new(store.clone())]);
            kind.add_to(&mut server, store, None, settings, &clock, &mut beside)
                .await?;
            stores.push((kind, database));
        }
        let mut bus = embedded_bus(&stores);
        let mut consumers = Vec::new();
        for subscription in beside.subscriptions {
            let ServiceStore::Embedded(database) = &subscription.store else {
                continue;
            };
            let consumer = bus
                .consumer(
                    database.pool().clone(),
                    subscription.sources,
                    ConsumerSettings::new(subscription.group),
                    subscription.handler,
                )
                .map_err(|source| AppError::Storage {
                    what: format!(
                        "cannot subscribe {} to the embedded bus",
                        subscription.group
                    ),
                    source,
                })?;
            consumers.push(EventConsumer::Embedded(consumer));
        }
        tracing::info!(data_dir = %settings.data_dir.display(), "embedded mode: records in SQLite files");
        Ok(Self {
            server,
            ingress: beside.ingress,
            consumers,
            workers: beside.workers,
            monitor,
            events: EventTransport::Embedded(bus),
            services: services.to_vec(),
            key_expiry,
            retention: beside.retention,
            health_check_interval: settings.health_check_interval(),
            shutdown_grace: settings.shutdown_grace(),
        })
    }

    /// `production` on PostgreSQL and Redis, `embedded` on the SQLite files.
    fn mode(&self) -> &'static str {
        match self.events {
            EventTransport::Redis { .. } => "production",
            EventTransport::Embedded(_) => "embedded",
        }
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The address capture's HTTP ingress is bound to, when this process runs capture.
    pub fn ingress_addr(&self) -> Option<SocketAddr> {
        self.ingress
            .as_ref()
            .and_then(|ingress| ingress.local_addr().ok())
    }

    /// Serves the gRPC API without any background task: nothing moves until the returned
    /// [`Simulation`] is told to [`settle`](Simulation::settle). With a [`ManualClock`]
    /// (`leadflow_platform::time::ManualClock`) passed to [`Application::build_with_clock`],
    /// months pass in minutes and every run of the same inputs gives the same records.
    pub async fn into_simulation(mut self) -> Simulation {
        self.monitor.check_once().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let address = self.server.local_addr();
        let grace = self.shutdown_grace;
        let server = tokio::spawn(self.server.serve(
            async move {
                let _ = stopped.await;
            },
            grace,
        ));
        Simulation {
            address,
            consumers: self.consumers,
            nurturing: self.workers.nurturing,
            routing: self.workers.routing,
            stop: Some(stop),
            server,
        }
    }

    /// Serves until `shutdown` completes. Health entries go SERVING once the first probe
    /// passes, and NOT_SERVING as soon as shutdown begins.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let names: Vec<&str> = self.services.iter().map(|kind| kind.grpc_name()).collect();
        if !self.server.requires_tokens() {
            tracing::warn!(
                "authentication is off: every caller may call every method; set auth.tokens_file \
                 (LEADFLOW_AUTH__TOKENS_FILE) to require bearer tokens"
            );
        }
        tracing::info!(address = %self.local_addr(), ingress = ?self.ingress_addr(), mode = self.mode(), services = ?names, "leadflow listening");
        self.monitor.check_once().await;
        let (drain_sender, drain_receiver) = tokio::sync::oneshot::channel::<()>();
        let monitor_task = self
            .monitor
            .spawn(self.health_check_interval, drain_receiver);
        // The event tasks stop once the server has drained.
        let (stop_events, events_stopped) = tokio::sync::watch::channel(false);
        let lag_samples = leadflow_bus::LagSamples::default();
        // Consumer lag as metrics (exported when OTLP is configured).
        leadflow_bus::register_lag_gauges(&opentelemetry::global::meter("leadflow"), &lag_samples);
        let (mut event_tasks, reader) = match self.events {
            EventTransport::Redis { redis, relays } => {
                // Each service publishes its own outbox.
                let relays: Vec<_> = relays
                    .into_iter()
                    .map(|relay| relay.spawn(events_stopped.clone()))
                    .collect();
                (relays, EventReader::Redis(redis))
            }
            EventTransport::Embedded(bus) => (
                vec![bus.clone().spawn_purge(events_stopped.clone())],
                EventReader::Embedded(bus),
            ),
        };
        for consumer in self.consumers {
            event_tasks.push(consumer.spawn(events_stopped.clone()));
        }
        event_tasks.extend(self.workers.spawn(&events_stopped));
        event_tasks.push(self.key_expiry.spawn(events_stopped.clone()));
        if let Some(retention) = self.retention {
            event_tasks.push(retention.spawn(events_stopped.clone()));
        }
        event_tasks.push(leadflow_bus::spawn_lag_sampler(
            move || {
                let reader = reader.clone();
                async move { reader.group_lags().await }
            },
            lag_samples,
            LAG_SAMPLE_INTERVAL,
            events_stopped,
        ));
        // The ingress stops taking requests when shutdown begins, like the gRPC server.
        let (stop_ingress, ingress_stopped) = tokio::sync::watch::channel(false);
        let ingress_task = self.ingress.map(|ingress| {
            let mut stopped = ingress_stopped;
            tokio::spawn(ingress.serve(async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            }))
        });
        let shutdown = async move {
            shutdown.await;
            let _ = stop_ingress.send(true);
            let _ = drain_sender.send(());
        };
        let result = self.server.serve(shutdown, self.shutdown_grace).await;
        if let Some(task) = ingress_task {
            match task.await {
                Ok(Err(error)) => tracing::warn!(%error, "the HTTP ingress failed"),
                Err(error) => tracing::warn!(%error, "the HTTP ingress task failed"),
                Ok(Ok(())) => {}
            }
        }
        monitor_task.abort();
        let _ = stop_events.send(true);
        for task in event_tasks {
            let _ = task.await;
        }
        result.map_err(AppError::from)
    }
}

/// The suite serving its API with its background work done by hand: events delivered, due
/// nurture mail sent and routing's queues and SLAs worked only when [`Simulation::settle`]
/// is called, at whatever time the services' clock shows.
#[derive(Debug)]
pub struct Simulation {
    address: SocketAddr,
    consumers: Vec<EventConsumer>,
    nurturing: Option<leadflow_nurturing::Nurturing>,
    routing: Option<leadflow_routing::Routing>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), ServerError>>,
}

/// What one [`Simulation::settle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Events the consumer groups applied.
    pub events: usize,
    /// Nurture mails sent.
    pub mails: usize,
    /// Leads routing assigned from its queues, moved or escalated.
    pub routed: usize,
}

impl Simulation {
    /// The address the gRPC API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Delivers every event, runs nurturing's scheduler and routing's ticker, and repeats
    /// until a round finds nothing more to do.
    pub async fn settle(&self) -> Result<Settled, StorageError> {
        let mut settled = Settled::default();
        loop {
            let mut events = 0;
            for consumer in &self.consumers {
                events += consumer.poll_once().await?;
            }
            let mut work = 0;
            if let Some(routing) = &self.routing {
                let tick = routing.tick().await?;
                let routed = tick.breached + tick.moved + tick.routed + tick.dequeued;
                settled.routed += routed;
                work += routed;
            }
            if let Some(nurturing) = &self.nurturing {
                let pass = nurturing.run_due().await?;
                settled.mails += pass.sent;
                work += pass.sent + pass.exhausted + pass.flagged + pass.stopped;
            }
            settled.events += events;
            if events == 0 && work == 0 {
                return Ok(settled);
            }
        }
    }

    /// Stops serving.
    pub async fn stop(mut self) -> Result<(), AppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.server).await {
            Ok(result) => result.map_err(AppError::from),
            Err(error) => Err(AppError::Configuration(format!(
                "the server task failed: {error}"
            ))),
        }
    }
}
