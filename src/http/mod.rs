//! HTTP: the router, its layers (request id, tracing, metrics, body limit,
//! timeout) and the server with graceful shutdown.

pub mod admin;
pub mod error;
pub mod extract;
pub mod limits;
mod openapi;
mod operator;
mod ops;
mod pages;
mod portal;
pub mod scim;
pub mod scim_log;
pub(crate) mod setup;
pub mod sso;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::domains::dns::{DnsSettings, TxtChecker};
use crate::service::{DomainPolicy, Roster, Settings, SsoPolicy};
use crate::sso::{OidcHttp, RelyingParty};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub roster: Roster,
    pub config: Arc<Config>,
    pub limits: Arc<limits::RateLimits>,
    /// Where this replica's sender delivers email.
    pub mailer: Arc<crate::mail::Mailer>,
    /// How this replica delivers webhooks.
    pub webhooks: Arc<crate::webhooks::Dispatcher>,
    /// Where SCIM requests are noted for their organizations' request logs.
    pub scim_log: Arc<scim_log::ScimLog>,
}

impl AppState {
    /// Connects the configured store (migrating it when `auto_migrate` is on) on the system clock.
    pub async fn from_config(config: Config) -> anyhow::Result<Self> {
        Self::with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`AppState::from_config`], reading time from `clock`.
    pub async fn with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = crate::store::connect(config.database_url.expose(), config.database_max_connections).await?;
        if config.auto_migrate {
            store.migrate().await?;
        }
        let sso = sso_policy(&config, clock.clone())?;
        let settings = Settings {
            sso: Some(sso),
            sealing: config.sealing_keys.clone(),
            mail: crate::service::MailPolicy {
                base_url: config.public_base_url.clone(),
                retry_for: chrono::Duration::from_std(config.mail.retry_for)?,
            },
            invitation_ttl: chrono::Duration::days(config.invitation_ttl_days.into()),
            domains: DomainPolicy {
                challenge_prefix: config.domain_challenge_prefix.clone(),
                reverify_interval: chrono::Duration::seconds(config.domain_reverify_interval_secs as i64),
                retry_interval: chrono::Duration::seconds(config.domain_retry_interval_secs as i64),
                lapse_after_failures: config.domain_lapse_after_failures.into(),
            },
            webhooks: crate::service::WebhookPolicy {
                allow_private_addresses: config.webhooks.allow_private_addresses,
                allow_http: config.sso_dev_mode,
                retry_for: chrono::Duration::from_std(config.webhooks.retry_for)?,
            },
            self_serve_seats: config.billing.self_serve_seats,
        };
        let dns = TxtChecker::new(&DnsSettings {
            name_servers: config.dns_name_servers.clone(),
            timeout: Duration::from_millis(config.dns_timeout_ms),
            attempts: config.dns_attempts,
        })?;
        let limits = limits::RateLimits {
            failed_auth: limits::RateLimiter::new("failed_auth", config.rate_limit_failed_auth_per_minute),
            sign_in: limits::RateLimiter::new("sign_in", config.rate_limit_sign_in_per_minute),
            sign_in_links: limits::RateLimiter::new("sign_in_links", SIGN_IN_LINKS_PER_ADDRESS_PER_MINUTE),
            proxies: limits::TrustedProxies {
                nets: config.trusted_proxies.clone(),
                any_peer_one_hop: config.trust_forwarded_for,
            },
        };
        let mailer = Arc::new(crate::mail::Mailer::from_config(&config.mail)?);
        let webhooks = Arc::new(crate::webhooks::Dispatcher::from_config(&config.webhooks)?);
        let roster = Roster::new(store, clock, dns, settings);
        Ok(Self {
            scim_log: Arc::new(scim_log::ScimLog::start(roster.clone())),
            roster,
            config: Arc::new(config),
            limits: Arc::new(limits),
            mailer,
            webhooks,
        })
    }
}

/// The SSO settings and relying party a configuration describes.
fn sso_policy(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<SsoPolicy> {
    let http = OidcHttp::new(Duration::from_millis(config.sso_http_timeout_ms), config.sso_dev_mode, 1024 * 1024)?;
    let rp = RelyingParty::new(
        http,
        clock,
        Duration::from_secs(config.sso_metadata_ttl_secs),
        Duration::from_secs(config.sso_clock_skew_secs),
    );
    let secs = |s: u64| chrono::Duration::seconds(s as i64);
    Ok(SsoPolicy {
        rp,
        callback_url: config.public_base_url.join("sso/callback")?.to_string(),
        tenant: config.tenant_connection.clone(),
        attempt_ttl: secs(config.sso_attempt_ttl_secs),
        code_ttl: secs(config.sso_code_ttl_secs),
        session_ttl: secs(config.sso_session_ttl_secs),
        dev_mode: config.sso_dev_mode,
    })
}

/// Sign-in links one email address may be sent a minute (in bursts of as many).
pub const SIGN_IN_LINKS_PER_ADDRESS_PER_MINUTE: u32 = 3;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `/metrics` alone, for `metrics_listen`.
pub fn metrics_app(state: AppState) -> Router {
    ops::install_metrics();
    ops::metrics_router().with_state(state)
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.request_body_limit_bytes;
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let (api, openapi) = admin::router().merge(operator::router()).merge(sso::router()).split_for_parts();
    let openapi = Arc::new(openapi::document(openapi));
    Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(ops::router(state.config.metrics_listen.is_none()))
        .merge(pages::router())
        .merge(portal::router())
        .merge(setup::router())
        .nest(
            "/scim/v2",
            scim::router().layer(axum::middleware::from_fn_with_state(state.clone(), scim_log::record)),
        )
        .fallback(|| async { error::Problem::new(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error::Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this route does not take that method")
        })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(axum::middleware::from_fn_with_state(state, with_client_address))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(error::error_dialect))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                let path = logged_path(req.uri().path());
                tracing::info_span!("request", request_id, method = %req.method(), path = %path, org = tracing::field::Empty)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(tower_http::LatencyUnit::Micros)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::AUTHORIZATION]))
}

/// A request's path as the log shows it: a setup link's token, which is a
/// bearer secret in the path, is left out.
fn logged_path(path: &str) -> &str {
    if path.starts_with("/setup/rsl_") {
        "/setup/{token}"
    } else {
        path
    }
}

/// Serves the request with its client's address known to the services
/// ([`crate::service::CLIENT_ADDRESS`]), for the audit records it makes.
async fn with_client_address(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let client = state.limits.proxies.client_address(req.headers(), req.extensions().get());
    crate::service::CLIENT_ADDRESS.scope(client, next.run(req)).await
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let res = next.run(req).await;
    let labels = [("method", method), ("route", route), ("status", res.status().as_u16().to_string())];
    metrics::counter!("roster_http_requests_total", &labels).increment(1);
    metrics::histogram!("roster_http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    res
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes the requests in flight.
///
/// Each connection must send a request's headers within
/// `header_read_timeout_secs` of opening or of its last answer (slow or idle
/// clients are cut off), and at most `max_connections` are served at once.
/// Beyond that, [`OVERFLOW_CONNECTIONS`] more are answered for health checks
/// only (`/healthz`, `/readyz`; anything else 503 with `Retry-After`) and
/// closed after one request; further ones are closed at once. An orchestrator's
/// probes thus keep their answer while idle clients crowd the server.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    ops::install_metrics();
    let header_timeout = Duration::from_secs(state.config.header_read_timeout_secs);
    let max_connections = within_descriptor_limit(state.config.max_connections);
    let app = router(state);
    let served = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let overflow = Arc::new(tokio::sync::Semaphore::new(OVERFLOW_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or the peer left before the accept:
                    // pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (permit, health_only) = match served.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) => {
                    metrics::counter!("roster_http_connections_refused_total").increment(1);
                    drop(stream);
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let app = app.clone();
            async move {
                if health_only && !matches!(req.uri().path(), "/healthz" | "/readyz") {
                    return Ok::<_, std::convert::Infallible>(over_capacity());
                }
                tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_headers(error::HTTP_MAX_HEADERS)
            .keep_alive(!health_only);
        builder.http2().timer(hyper_util::rt::TokioTimer::new()).keep_alive_interval(header_timeout);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            // The protocol is told by the first bytes, which hyper waits for
            // with no timer of its own: a connection that sends nothing is
            // cut off here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `wanted` connections, or fewer when the process may not open that many
/// descriptors (the database, the log and the overflow need some too).
fn within_descriptor_limit(wanted: usize) -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    match soft_limit {
        Some(limit) if wanted + OVERFLOW_CONNECTIONS + 128 > limit => {
            let fitted = limit.saturating_sub(OVERFLOW_CONNECTIONS + 128).max(1);
            tracing::warn!(
                max_connections = wanted,
                descriptor_limit = limit,
                serving = fitted,
                "max_connections exceeds what the descriptor limit allows (raise it with ulimit -n)"
            );
            fitted
        }
        _ => wanted,
    }
}

/// Connections answered for health checks only once `max_connections` are served.
pub const OVERFLOW_CONNECTIONS: usize = 32;

fn over_capacity() -> Response {
    let mut res = axum::response::IntoResponse::into_response(error::Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "over-capacity",
        "the server is serving as many connections as it takes; try again shortly",
    ));
    res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn setup_link_tokens_stay_out_of_the_request_log() {
        assert_eq!(super::logged_path("/setup/rsl_abcdef"), "/setup/{token}");
        assert_eq!(super::logged_path("/setup/domains"), "/setup/domains");
        assert_eq!(super::logged_path("/scim/v2/Users"), "/scim/v2/Users");
    }
}
