//! The open endpoints: liveness, readiness and the Prometheus scrape.
//! None needs a token: kubelets and scrapers carry none.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, FieldProblem};
use super::{AppState, Phase};
use crate::metrics::CONTENT_TYPE;
use crate::store::{api_queries, migrate};

/// How long all readiness checks together may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the scrape waits for its database-derived gauges before serving
/// without (the ones not refreshed keep their previous values).
const SCRAPE_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// A probe's answer when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeStatus {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: &'static str,
}

/// The process is alive.
///
/// Answers as long as the process can serve HTTP; it does not touch the
/// database (a database outage must not get every replica restarted).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Alive", body = ProbeStatus))
)]
pub async fn healthz() -> axum::Json<ProbeStatus> {
    axum::Json(ProbeStatus { status: "ok" })
}

/// The replica can do its work.
///
/// Ready when: not shutting down, the database answers, its migrations are
/// the ones this build knows, and this replica's engine is heartbeating as
/// `active`. Otherwise 503, with each failing check in `details`.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = ProbeStatus),
        (status = 503, description = "Not ready; `details` names each failing check (`lifecycle`, `database`, `migrations`, `engine`)", body = ErrorBody),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let problems = match tokio::time::timeout(READY_TIMEOUT, ready_problems(&app)).await {
        Ok(p) => p,
        Err(_) => vec![problem(
            "database",
            format!(
                "the checks did not finish within {}s",
                READY_TIMEOUT.as_secs()
            ),
        )],
    };
    if problems.is_empty() {
        return axum::Json(ProbeStatus { status: "ready" }).into_response();
    }
    let message = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    not_ready(message, problems).into_response()
}

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_string(),
        message: message.into(),
    }
}

fn not_ready(message: String, details: Vec<FieldProblem>) -> Response {
    let body = ErrorBody {
        error: super::error::ErrorDetail {
            code: "not_ready",
            message,
            field: details.first().map(|d| d.field.clone()),
            details,
        },
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn ready_problems(app: &AppState) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    match app.phase() {
        Phase::Running => {}
        Phase::Draining | Phase::Stopped => out.push(problem("lifecycle", "shutting down")),
    }
    let db = match app.db().await {
        Ok(db) => db,
        Err(e) => {
            out.push(problem("database", format!("no connection: {e}")));
            return out;
        }
    };
    if let Err(e) = api_queries::ping(&**db).await {
        out.push(problem("database", format!("not answering: {e}")));
        return out;
    }
    match migrate::is_current(&**db).await {
        Ok(true) => {}
        Ok(false) => out.push(problem(
            "migrations",
            "the schema is not the one this build knows (missing or newer migrations; \
             run `spine-scheduler migrate`)",
        )),
        Err(e) => out.push(problem("migrations", format!("cannot be read: {e}"))),
    }
    let lease = app.inner.node_lease.as_secs_f64();
    match api_queries::node_state(&**db, app.engine().node_id()).await {
        Ok(None) => out.push(problem("engine", "not started yet (no heartbeat recorded)")),
        Ok(Some((state, _))) if state != "active" => {
            out.push(problem("engine", format!("the replica is {state}")))
        }
        Ok(Some((_, age))) if age > lease => out.push(problem(
            "engine",
            format!("last heartbeat {age:.1}s ago (lease {lease:.0}s)"),
        )),
        Ok(Some(_)) => {}
        Err(e) => out.push(problem("engine", format!("heartbeat cannot be read: {e}"))),
    }
    out
}

/// Prometheus metrics.
///
/// Text exposition format. Gauges the API can compute (pools, runs in
/// flight, clock offset, replicas alive, schedules by state, pending runs,
/// each schedule's last success) are refreshed at each scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Metrics in the Prometheus text format", body = String,
         content_type = "text/plain; version=0.0.4"),
        (status = 500, description = "Encoding failed", body = ErrorBody),
    )
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let m = app.metrics();
    let engine = app.engine();
    m.pool("engine", engine.pool().status());
    m.pool("api", app.pool().status());
    m.runs_in_flight(engine.in_flight());
    m.replicas_alive(engine.replicas_alive());
    let offset = engine.clock_offset();
    m.clock_offset(offset.num_microseconds().unwrap_or(0) as f64 / 1e6);
    // A few cheap queries (counts, a bounded index walk per schedule); a slow
    // database must not fail the scrape: what did not answer in time keeps
    // its previous value.
    let per_schedule = m.per_schedule_labels();
    let refresh = async {
        let Ok(db) = app.db().await else {
            return;
        };
        if let Ok((enabled, paused)) = api_queries::schedule_counts(&**db).await {
            m.schedules_by_state(enabled, paused);
        }
        if let Ok(n) = api_queries::pending_due(&**db).await {
            m.pending_runs(n);
        }
        if per_schedule {
            if let Ok(latest) = api_queries::last_successes(&**db).await {
                m.last_successes(&latest);
            }
        }
    };
    let _ = tokio::time::timeout(SCRAPE_QUERY_TIMEOUT, refresh).await;
    match m.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            ApiError::internal(e.to_string()).into_response()
        }
    }
}
