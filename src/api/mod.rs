//! The admin HTTP API, the probes and the metrics endpoint (`docs/design.md` §7).
//!
//! Every replica serves it; any replica answers any request, since all state
//! is in PostgreSQL. JSON under `/v1`, one error shape ([`error`]), bearer
//! tokens ([`auth`]), and an OpenAPI document generated from the handlers
//! themselves ([`openapi()`]), so the document and the router cannot drift.
//!
//! ```text
//!  request ─▶ record (metrics) ─▶ timeout ─▶ enforce_shape ─▶ header_limit ─▶ require_token ─▶ body limit ─▶ handler
//! ```
//!
//! The API has its own small connection pool: a burst of API requests must
//! never hold up the engine's claims (G5).
//!
//! Library use: build an [`AppState`] and mount [`router`] in your own server,
//! or call [`start`] as `spine-scheduler serve` does.

pub mod auth;
mod backfills;
mod cluster;
mod compat;
mod console;
pub mod error;
mod extract;
pub mod links;
pub mod openapi;
mod params;
mod preview;
mod probes;
mod runs;
mod schedules;
mod whoami;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use deadpool_postgres::{Object, Pool, Timeouts};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::auth::{Auth, AuthSources};
pub use self::error::ApiError;
use crate::engine::EngineHandle;
use crate::metrics::Metrics;
use crate::pipeline::Registry;
use crate::store::{self, StoreError};

/// Largest request body accepted (413 above it). A schedule definition is a
/// few hundred bytes; `params` may be up to 64 KiB of JSON.
pub const BODY_LIMIT: usize = 256 * 1024;
/// Largest total size of a request's header fields handled in the API's
/// error shape (each field counts its name, its value and 4 bytes for `: `
/// and the line end): above it, 431 `headers_too_large`. hyper refuses a
/// request head over its own buffer (about 400 KiB) or with more than 100
/// fields itself, with a bare 431 before any of this code runs.
pub const HEADER_LIMIT: usize = 32 * 1024;
/// Default address of `--listen`: loopback, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Connections in the API's own pool.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// How long a request may wait for a pooled connection before a 503.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long a request may take in all before a 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`RunningApi::stop`] waits for open requests.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the replica is in its life, as the probes report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving and firing.
    Running,
    /// Shutdown began: the engine drains; `/readyz` answers 503.
    Draining,
    /// The engine stopped; the server closes.
    Stopped,
}

/// What the API needs besides the engine.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Address to listen on (port 0: any free port; see [`RunningApi::local_addr`]).
    pub listen: SocketAddr,
    /// Who may call it.
    pub auth: Auth,
    /// The database (the API opens its own small pool on it).
    pub database_url: String,
    /// Connections in the API's pool.
    pub pool_size: usize,
    /// A replica whose heartbeat is older than this is not ready (the engine's node lease).
    pub node_lease: Duration,
    /// The process's metrics, served on `/metrics`.
    pub metrics: Metrics,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database URL is malformed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the admin API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    engine: EngineHandle,
    registry: Registry,
    metrics: Metrics,
    pool: Pool,
    auth: Auth,
    phase: watch::Receiver<Phase>,
    node_lease: Duration,
}

impl AppState {
    /// The state for a replica's engine, with a pool of its own and the
    /// lifecycle reported by `phase`.
    pub fn new(
        options: &ApiOptions,
        engine: EngineHandle,
        registry: Registry,
        phase: watch::Receiver<Phase>,
    ) -> Result<AppState, StoreError> {
        let pool = store::pool(&options.database_url, options.pool_size)?;
        Ok(AppState {
            inner: Arc::new(StateInner {
                engine,
                registry,
                metrics: options.metrics.clone(),
                pool,
                auth: options.auth.clone(),
                phase,
                node_lease: options.node_lease,
            }),
        })
    }

    fn engine(&self) -> &EngineHandle {
        &self.inner.engine
    }

    fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// A pooled connection, or 503 when none comes within [`POOL_WAIT`].
    async fn db(&self) -> Result<Object, ApiError> {
        let timeouts = Timeouts {
            wait: Some(POOL_WAIT),
            ..Timeouts::default()
        };
        self.inner
            .pool
            .timeout_get(&timeouts)
            .await
            .map_err(|e| ApiError::from(StoreError::from(e)))
    }
}

/// Every route, with its OpenAPI description. The router and the document
/// are both built from this one list, so neither can have a route the other
/// lacks.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(
            schedules::get,
            schedules::replace,
            schedules::patch,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::run_now))
        .routes(routes!(schedules::next))
        .routes(routes!(schedules::history))
        .routes(routes!(backfills::create))
        .routes(routes!(backfills::list_for_schedule))
        .routes(routes!(backfills::get))
        .routes(routes!(backfills::cancel))
        .routes(routes!(runs::list_for_schedule))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::rerun))
        .routes(routes!(runs::cancel))
        .routes(routes!(cluster::get))
        .routes(routes!(whoami::get))
        .routes(routes!(preview::get))
        .routes(routes!(openapi::get))
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz))
        .routes(routes!(probes::metrics))
        .routes(routes!(compat::schedules::list, compat::schedules::create))
        .routes(routes!(compat::schedules::delete))
        .routes(routes!(compat::schedules::run_now))
        .routes(routes!(compat::schedules::pause))
        .routes(routes!(compat::schedules::resume))
        .routes(routes!(compat::runs::list))
        .routes(routes!(compat::runs::get))
}

/// The OpenAPI document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    links::add(&mut doc);
    schedules::trigger_rule::state(&mut doc);
    compat::input::state_trigger_rule(&mut doc);
    doc
}

/// The complete service: routes, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .merge(console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn(header_limit))
        .layer(middleware::from_fn(error::enforce_shape))
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn(compat::detail_shape))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::from_status(axum::http::StatusCode::METHOD_NOT_ALLOWED, "")
}

/// Middleware: request headers over [`HEADER_LIMIT`] in all get a 431 in
/// the error shape (before the token is checked: the token is a header too).
async fn header_limit(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > HEADER_LIMIT {
        return ApiError::headers_too_large(size).into_response();
    }
    next.run(request).await
}

/// Middleware: a request that takes longer than [`REQUEST_TIMEOUT`] (a
/// database that stopped answering mid-statement) gets a 503 instead of
/// hanging its client.
async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(format!(
            "the request did not finish within {}s; the database may be slow or unreachable",
            REQUEST_TIMEOUT.as_secs()
        ))
        .into_response(),
    }
}

/// Middleware: counts requests by route template (not raw path, which would
/// put every schedule name into a label), method and status.
async fn record(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    app.metrics()
        .http_request(&route, method, status, started.elapsed().as_secs_f64());
    tracing::debug!(%route, method, status, "admin API request");
    response
}

/// Serves `router` on `listener` until `phase` becomes [`Phase::Stopped`]
/// (or its sender is dropped), then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut phase: watch::Receiver<Phase>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = phase.wait_for(|p| *p == Phase::Stopped).await;
        })
        .await
}

/// A running API server (see [`start`]).
pub struct RunningApi {
    addr: SocketAddr,
    phase: watch::Sender<Phase>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Binds `options.listen` and serves the API for `engine` in the background.
/// Binding happens here, so a taken port fails the caller at once.
pub async fn start(
    options: ApiOptions,
    engine: EngineHandle,
    registry: Registry,
) -> Result<RunningApi, StartError> {
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let state = AppState::new(&options, engine, registry, phase_rx.clone())?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: options.listen,
        source,
    })?;
    if !options.auth.is_enforced() {
        tracing::warn!(%addr, "admin API without authentication (--insecure-no-auth): anyone who can reach it can change schedules");
    }
    tracing::info!(%addr, auth = options.auth.is_enforced(), "admin API listening");
    let task = tokio::spawn(serve(listener, router(state), phase_rx));
    Ok(RunningApi {
        addr,
        phase: phase_tx,
        task,
    })
}

impl RunningApi {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Wraps the engine's shutdown signal: when `signal` completes, the API
    /// reports draining (`/readyz` 503) and the engine begins its shutdown.
    pub fn draining_on(&self, signal: impl Future<Output = ()>) -> impl Future<Output = ()> {
        let phase = self.phase.clone();
        async move {
            signal.await;
            let _ = phase.send(Phase::Draining);
        }
    }

    /// Stops accepting, lets open requests finish (up to a few seconds) and
    /// returns. Call after the engine has shut down.
    pub async fn stop(self) {
        let _ = self.phase.send(Phase::Stopped);
        let mut task = self.task;
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin API server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "admin API server task failed"),
            Err(_) => {
                tracing::warn!("admin API: open requests did not finish in time; closing them");
                task.abort();
            }
        }
    }
}

/// Opaque pagination cursors: a kind letter, a format version, and the
/// hex of the position, so clients treat them as tokens and a cursor of one
/// listing is refused by another. The document states their syntax
/// (`cursor::pattern`); one that has it but was not issued by the listing
/// is a 422 (no schema can tell issued positions from others).
mod cursor {
    use super::ApiError;

    /// Longest position, in bytes (1024 hex digits).
    const MAX_POSITION: usize = 512;

    pub fn encode(kind: char, position: &str) -> String {
        let mut out = format!("{kind}1.");
        for b in position.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The syntax of a cursor of listing `kind`, as the document states it.
    #[cfg(test)]
    pub fn pattern(kind: char) -> String {
        format!(r"^{kind}1\.([0-9a-fA-F]{{2}}){{0,{MAX_POSITION}}}$")
    }

    /// 422: a cursor this listing did not issue.
    pub fn unknown() -> ApiError {
        ApiError::invalid("cursor", "is not a cursor returned by this listing").unprocessable()
    }

    pub fn decode(kind: char, cursor: &str) -> Result<String, ApiError> {
        let hex = cursor
            .strip_prefix(kind)
            .and_then(|c| c.strip_prefix("1."))
            .ok_or_else(unknown)?;
        if hex.len() % 2 != 0 || hex.len() > 2 * MAX_POSITION {
            return Err(unknown());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(unknown)?;
        // Positions are names, instants and ids: never U+0000, which
        // PostgreSQL text cannot hold anyway.
        String::from_utf8(bytes)
            .ok()
            .filter(|p| !p.contains('\0'))
            .ok_or_else(unknown)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trip_and_refusal() {
            let c = super::encode('s', "finra_otc_t1");
            assert_eq!(super::decode('s', &c).ok().as_deref(), Some("finra_otc_t1"));
            assert!(super::decode('r', &c).is_err());
            assert!(super::decode('s', "s1.zz").is_err());
            assert!(super::decode('s', "garbage").is_err());
            assert!(super::decode('s', "s1.00455c").is_err());
        }

        /// The patterns the listings' `cursor` parameters state.
        #[test]
        fn the_documented_patterns_are_the_syntax() {
            let doc = serde_json::to_value(crate::api::openapi()).unwrap_or_default();
            for (path, kind) in [
                ("/v1/schedules", 's'),
                ("/v1/runs", 'r'),
                ("/v1/schedules/{name}/runs", 'r'),
                ("/v1/schedules/{name}/backfills", 'b'),
            ] {
                let params = doc["paths"][path]["get"]["parameters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let cursor = params.iter().find(|p| p["name"] == "cursor");
                assert_eq!(
                    cursor.map(|p| p["schema"]["pattern"].clone()),
                    Some(serde_json::Value::from(super::pattern(kind))),
                    "{path}"
                );
            }
        }
    }
}

/// Page size of listings: 1–1000, default 100.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and 1000, got {n}"),
        )),
    }
}
