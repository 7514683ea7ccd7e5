//! Run history: per schedule and across schedules, newest tick first,
//! keyset-paginated; and one run by id.

use axum::extract::State;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody, Unauthorized};
use super::extract::{Path, Query};
use super::{cursor, page_limit, AppState};
use crate::schedule::validate_name;
use crate::store::runs::{self, Run, RunFilter};
use crate::types::{RunStatus, RunTrigger};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatusName {
    /// Waiting to start (a manual run, or a retry before its backoff ends).
    Pending,
    /// Executing.
    Running,
    /// The pipeline succeeded.
    Completed,
    /// The pipeline failed or timed out.
    Failed,
    /// Not run: `max_instances` runs were already running.
    Skipped,
    /// Not run: it could not start within the misfire grace.
    Missed,
    /// Its replica died while running it.
    Abandoned,
}

impl From<RunStatus> for RunStatusName {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Pending => RunStatusName::Pending,
            RunStatus::Running => RunStatusName::Running,
            RunStatus::Completed => RunStatusName::Completed,
            RunStatus::Failed => RunStatusName::Failed,
            RunStatus::Skipped => RunStatusName::Skipped,
            RunStatus::Missed => RunStatusName::Missed,
            RunStatus::Abandoned => RunStatusName::Abandoned,
        }
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerName {
    /// A due tick.
    Schedule,
    /// Asked for through the API.
    Manual,
    /// A retry of a failed or abandoned attempt.
    Retry,
    /// A past tick run by a backfill.
    Backfill,
}

impl From<RunTrigger> for TriggerName {
    fn from(t: RunTrigger) -> Self {
        match t {
            RunTrigger::Schedule => TriggerName::Schedule,
            RunTrigger::Manual => TriggerName::Manual,
            RunTrigger::Retry => TriggerName::Retry,
            RunTrigger::Backfill => TriggerName::Backfill,
        }
    }
}

/// One run: a row of the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Time-ordered id (UUIDv7).
    pub run_id: Uuid,
    /// The schedule it belongs to.
    pub schedule: String,
    /// The pipeline it runs.
    pub pipeline: String,
    /// Why it exists.
    pub trigger: TriggerName,
    /// The tick (for manual runs: when it was asked for).
    pub scheduled_at: DateTime<Utc>,
    /// 1, then 2, 3, … for retries.
    pub attempt: i32,
    /// The replica that claimed (or recorded) it.
    pub node_id: Option<Uuid>,
    /// Where it is.
    pub status: RunStatusName,
    /// When its row was written.
    pub claimed_at: DateTime<Utc>,
    /// Earliest start of a pending retry.
    pub not_before: Option<DateTime<Utc>>,
    /// When the pipeline started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// `completed_at − started_at`, in seconds.
    pub duration_seconds: Option<f64>,
    /// Why it failed, was skipped or missed.
    pub error: Option<String>,
    /// What the pipeline returned.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// For a `skipped` tick: the run it overlapped (the oldest of the
    /// schedule's runs that had started and not finished when it fell due).
    pub overlapped_run_id: Option<Uuid>,
    /// For trigger `backfill` (and retries of such runs): the backfill, at
    /// `/v1/backfills/{backfill_id}`.
    pub backfill_id: Option<Uuid>,
}

impl From<Run> for RunView {
    fn from(r: Run) -> Self {
        let duration_seconds = match (r.started_at, r.completed_at) {
            (Some(s), Some(c)) => Some((c - s).num_microseconds().unwrap_or(0) as f64 / 1e6),
            _ => None,
        };
        RunView {
            run_id: r.run_id,
            schedule: r.schedule_name,
            pipeline: r.pipeline,
            trigger: r.trigger.into(),
            scheduled_at: r.scheduled_at,
            attempt: r.attempt,
            node_id: r.node_id,
            status: r.status.into(),
            claimed_at: r.claimed_at,
            not_before: r.not_before,
            started_at: r.started_at,
            completed_at: r.completed_at,
            duration_seconds,
            error: r.error,
            result: r.result,
            overlapped_run_id: r.overlapped_run_id,
            backfill_id: r.backfill_id,
        }
    }
}

/// One page of runs, newest tick first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// The runs.
    pub items: Vec<RunView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Filters and paging of one schedule's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only these statuses, comma-separated (`failed,abandoned`).
    pub status: Option<String>,
    /// Only this trigger: `schedule`, `manual`, `retry` or `backfill`.
    pub trigger: Option<String>,
    /// Only ticks at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// Only ticks before this RFC 3339 instant.
    pub until: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters and paging of the history across schedules.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllRunsQuery {
    /// Only this schedule's runs.
    pub schedule: Option<String>,
    /// Only these statuses, comma-separated (`failed,abandoned`).
    pub status: Option<String>,
    /// Only this trigger: `schedule`, `manual`, `retry` or `backfill`.
    pub trigger: Option<String>,
    /// Only ticks at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// Only ticks before this RFC 3339 instant.
    pub until: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn instant(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::invalid(
                    field,
                    format!("{t:?} is not an RFC 3339 instant ({e}), e.g. 2027-01-01T06:00:00Z"),
                )
            })
    })
    .transpose()
}

fn encode_cursor(position: (DateTime<Utc>, Uuid)) -> String {
    let (at, id) = position;
    cursor::encode(
        'r',
        &format!("{}|{id}", at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    )
}

fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::invalid("cursor", "is not a cursor returned by this listing");
    let raw = cursor::decode('r', text)?;
    let (at, id) = raw.split_once('|').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at.with_timezone(&Utc), id))
}

impl RunsQuery {
    fn filter(self, schedule_name: Option<String>) -> Result<RunFilter, ApiError> {
        let statuses = match self.status.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| s.trim().parse::<RunStatus>())
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| ApiError::invalid("status", e))?,
        };
        let trigger = self
            .trigger
            .as_deref()
            .map(str::parse::<RunTrigger>)
            .transpose()
            .map_err(|e| ApiError::invalid("trigger", e))?;
        let since = instant("since", self.since.as_deref())?;
        let until = instant("until", self.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                return Err(ApiError::invalid("until", "must be after since"));
            }
        }
        Ok(RunFilter {
            schedule_name,
            statuses,
            trigger,
            since,
            until,
            before: self.cursor.as_deref().map(decode_cursor).transpose()?,
            limit: Some(page_limit(self.limit)?),
        })
    }
}

async fn page(app: &AppState, filter: RunFilter) -> Result<axum::Json<RunPage>, ApiError> {
    let db = app.db().await?;
    let page = runs::list(&**db, &filter).await?;
    Ok(axum::Json(RunPage {
        items: page.runs.into_iter().map(RunView::from).collect(),
        next_cursor: page.next.map(encode_cursor),
    }))
}

/// A schedule's run history.
///
/// Newest tick first. History outlives a deleted schedule, so an unknown
/// name gives an empty page, not a 404.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}/runs",
    operation_id = "list_schedule_runs",
    tag = "runs",
    params(("name" = String, Path, description = "The schedule's name"), RunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Invalid name, filter or cursor", body = ErrorBody),
        Unauthorized,
    )
)]
pub async fn list_for_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<axum::Json<RunPage>, ApiError> {
    validate_name(&name).map_err(|e| ApiError::invalid(&e.field, e.message))?;
    page(&app, q.filter(Some(name))?).await
}

/// Run history across schedules.
///
/// Newest tick first, filtered.
#[utoipa::path(
    get,
    path = "/v1/runs",
    operation_id = "list_runs",
    tag = "runs",
    params(AllRunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Invalid filter or cursor", body = ErrorBody),
        Unauthorized,
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<AllRunsQuery>,
) -> Result<axum::Json<RunPage>, ApiError> {
    if let Some(name) = &q.schedule {
        validate_name(name).map_err(|e| ApiError::invalid("schedule", e.message))?;
    }
    let rest = RunsQuery {
        status: q.status,
        trigger: q.trigger,
        since: q.since,
        until: q.until,
        limit: q.limit,
        cursor: q.cursor,
    };
    page(&app, rest.filter(q.schedule)?).await
}

/// One run.
#[utoipa::path(
    get,
    path = "/v1/runs/{run_id}",
    operation_id = "get_run",
    tag = "runs",
    params(("run_id" = String, Path, description = "The run's id (a UUID)")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        Unauthorized,
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<axum::Json<RunView>, ApiError> {
    let id = Uuid::parse_str(&run_id)
        .map_err(|_| ApiError::invalid("run_id", format!("{run_id:?} is not a run id (a UUID)")))?;
    let db = app.db().await?;
    let run = runs::get(&**db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    Ok(axum::Json(run.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_cursor_round_trips() -> Result<(), ApiError> {
        let at = DateTime::parse_from_rfc3339("2027-01-01T06:00:00.123456Z")
            .map_err(|e| ApiError::internal(e.to_string()))?
            .with_timezone(&Utc);
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor((at, id)))?, (at, id));
        assert!(decode_cursor(&cursor::encode('s', "name")).is_err());
        Ok(())
    }

    #[test]
    fn filters_are_checked() {
        let q = |status: &str| RunsQuery {
            status: Some(status.into()),
            trigger: None,
            since: None,
            until: None,
            limit: None,
            cursor: None,
        };
        assert!(q("failed, abandoned").filter(None).is_ok());
        let e = q("faild").filter(None).err().map(|e| e.code());
        assert_eq!(e, Some("invalid_input"));
    }
}
