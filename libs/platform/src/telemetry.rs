//! Telemetry in one place: a tracing subscriber with human or JSON output, and OpenTelemetry
//! trace and metric export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (nothing is
//! exported otherwise). The W3C trace-context propagator is always installed, so trace ids travel.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider,
};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, fmt::writer::BoxMakeWriter, layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::{LogFormat, LogSettings};

/// Keeps the exporters alive; dropping it flushes the spans and metrics not yet exported.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {error}");
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("metric exporter shutdown failed: {error}");
        }
    }
}

/// The telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter directive does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built from its environment variables.
    #[error("otlp exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("telemetry already initialised")]
    AlreadyInitialised,
}

/// Installs the global subscriber for `service_name`. `RUST_LOG` wins over the configured
/// filter when set. Call once, early in `main`; keep the guard until exit.
pub fn init(service_name: &str, settings: &LogSettings) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter_directive = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.filter.clone());
    let filter =
        EnvFilter::try_new(&filter_directive).map_err(|source| TelemetryError::Filter {
            filter: filter_directive.clone(),
            source,
        })?;

    let (writer, ansi) = if settings.to_stderr {
        (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        )
    } else {
        (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        )
    };
    let output = match settings.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
    };

    let (tracer_provider, meter_provider) =
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build();
            let span_exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
            let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
            (
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(span_exporter)
                        .with_resource(resource.clone())
                        .build(),
                ),
                Some(
                    SdkMeterProvider::builder()
                        .with_periodic_exporter(metric_exporter)
                        .with_resource(resource)
                        .build(),
                ),
            )
        } else {
            (None, None)
        };
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name.to_owned()))
    });

    Registry::default()
        .with(filter)
        .with(output)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;

    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    if let Some(provider) = &meter_provider {
        opentelemetry::global::set_meter_provider(provider.clone());
        tracing::info!(
            service = service_name,
            "exporting traces and metrics over otlp"
        );
    }
    Ok(TelemetryGuard {
        tracer_provider,
        meter_provider,
    })
}
