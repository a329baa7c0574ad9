//! Operations endpoints: liveness, readiness and Prometheus metrics
//! (latencies as histograms, whose buckets add up across replicas; the
//! process's CPU, memory, threads and descriptors; the database
//! connections), served beside the rest or on a listen address of their own
//! (`metrics_listen`).

use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The upper bounds, in seconds, of every histogram's buckets: from a
/// cached look-up to a request near its timeout.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn install_metrics() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Fixed buckets are valid, so the builder keeps them.
        let builder = builder.set_buckets(&BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        metrics_process::Collector::default().describe();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's);
        // then Roster's metrics go there and this handle renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `/healthz` and `/readyz`, and `/metrics` unless it has a listen address of its own.
pub fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz));
    match with_metrics {
        true => router.merge(metrics_router()),
        false => router,
    }
}

/// `/metrics` alone.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_text))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.roster.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    metrics_process::Collector::default().collect();
    let connections = state.roster.store().connections();
    let backend = state.roster.store().backend();
    metrics::gauge!("roster_db_connections", "backend" => backend, "state" => "in_use").set(connections.in_use);
    metrics::gauge!("roster_db_connections", "backend" => backend, "state" => "idle").set(connections.idle);
    metrics::gauge!("roster_db_connections_max", "backend" => backend).set(connections.max);
    let body = install_metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
