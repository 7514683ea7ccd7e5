//! The original's `JobRun` records (its `scheduler_runs` table), read from
//! the ledger. The original served no route for them; these are the
//! closest faithful form: a list filtered by `schedule_name`, and one run.

use axum::extract::State;
use axum::Json as Reply;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::detail::{Invalid, Unauthorized};
use super::types::JobRun;
use crate::api::error::ApiError;
use crate::api::extract::{Path, Query};
use crate::api::params::ScheduleName;
use crate::api::{page_limit, AppState};
use crate::schedule::validate_name;
use crate::store::runs::{self, RunFilter};

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobRunsQuery {
    /// Only this schedule's runs (also those of a schedule since deleted).
    #[param(value_type = Option<ScheduleName>)]
    pub schedule_name: Option<String>,
    /// How many runs, newest tick first: 1–1000 (default 100). Older
    /// history: `/v1/runs`, which pages.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// 404: `Run not found: {run_id}`.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "Run not found: {run_id}")]
#[allow(dead_code)] // documentation only
pub struct NoSuchRun(super::detail::DetailBody);

/// List runs.
///
/// The newest runs first (by tick), as the original's `JobRun` records;
/// every trigger (ticks, manual runs, retries, backfills).
#[utoipa::path(
    get,
    path = "/scheduler/runs",
    operation_id = "compat_list_runs",
    tag = super::TAG,
    params(JobRunsQuery),
    responses(
        (status = 200, description = "The runs, newest first", body = Vec<JobRun>),
        Invalid,
        Unauthorized,
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<JobRunsQuery>,
) -> Result<Reply<Vec<JobRun>>, ApiError> {
    if let Some(name) = &q.schedule_name {
        validate_name(name).map_err(|e| ApiError::invalid("schedule_name", e.message))?;
    }
    let filter = RunFilter {
        schedule_name: q.schedule_name,
        limit: Some(page_limit(q.limit)?),
        ..RunFilter::default()
    };
    let db = app.db().await?;
    let page = runs::list(&**db, &filter).await?;
    Ok(Reply(page.runs.into_iter().map(JobRun::from).collect()))
}

/// Get one run.
#[utoipa::path(
    get,
    path = "/scheduler/runs/{run_id}",
    operation_id = "compat_get_run",
    tag = super::TAG,
    params(("run_id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = JobRun),
        Unauthorized,
        NoSuchRun,
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Reply<JobRun>, ApiError> {
    let missing = || ApiError::not_found(format!("Run not found: {run_id}"));
    let id = Uuid::parse_str(&run_id).map_err(|_| missing())?;
    let db = app.db().await?;
    let run = runs::get(&**db, id).await?.ok_or_else(missing)?;
    Ok(Reply(JobRun::from(run)))
}
