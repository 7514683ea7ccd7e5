//! Run history: per schedule and across schedules, newest tick first,
//! keyset-paginated; one run by id; and a rerun of a finished run.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody, NotJson, ReadOnly, TooLarge, Unauthorized, Unprocessable};
use super::extract::{OptionalJson, Path, Query};
use super::params::{RunStatusList, RunTriggerName, ScheduleName};
use super::schedules::InvalidControl;
use super::{cursor, page_limit, AppState};
use crate::schedule::{controls, validate_name};
use crate::store::runs::{self, ManualRun, Run, RunFilter};
use crate::store::schedules;
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
    /// Stopped on request: by a newer tick (overlap policy `cancel_other`
    /// or `terminate_other`) or through the API.
    Cancelled,
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
            RunStatus::Cancelled => RunStatusName::Cancelled,
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
    /// The params a manual run (run now, rerun, and their retries) was
    /// given: the schedule's when it was asked for, with the request's
    /// override merged over them. `null` for ticks (and manual runs from
    /// before this was recorded): they run with the schedule's params as
    /// they are when the run starts.
    #[schema(value_type = Option<Object>)]
    pub params: Option<Map<String, Value>>,
    /// For a rerun: the run it repeats.
    pub rerun_of: Option<Uuid>,
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
            params: r.params,
            rerun_of: r.rerun_of,
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
    #[param(value_type = Option<RunStatusList>)]
    pub status: Option<String>,
    /// Only this trigger: `schedule`, `manual`, `retry` or `backfill`.
    #[param(value_type = Option<RunTriggerName>)]
    pub trigger: Option<String>,
    /// Only ticks at or after this RFC 3339 instant.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only ticks before this RFC 3339 instant (after `since`).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (422 for one this listing
    /// did not issue).
    #[param(pattern = r"^r1\.([0-9a-fA-F]{2}){0,512}$")]
    pub cursor: Option<String>,
}

/// Filters and paging of the history across schedules.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllRunsQuery {
    /// Only this schedule's runs.
    #[param(value_type = Option<ScheduleName>)]
    pub schedule: Option<String>,
    /// Only these statuses, comma-separated (`failed,abandoned`).
    #[param(value_type = Option<RunStatusList>)]
    pub status: Option<String>,
    /// Only this trigger: `schedule`, `manual`, `retry` or `backfill`.
    #[param(value_type = Option<RunTriggerName>)]
    pub trigger: Option<String>,
    /// Only ticks at or after this RFC 3339 instant.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only ticks before this RFC 3339 instant (after `since`).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (422 for one this listing
    /// did not issue).
    #[param(pattern = r"^r1\.([0-9a-fA-F]{2}){0,512}$")]
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
    let bad = cursor::unknown;
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
                return Err(ApiError::invalid("until", "must be after since").unprocessable());
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
    params(("name" = ScheduleName, Path, description = "The schedule's name"), RunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Invalid name or filter", body = ErrorBody),
        Unauthorized,
        Unprocessable,
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
        (status = 400, description = "Invalid filter", body = ErrorBody),
        Unauthorized,
        Unprocessable,
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

fn parse_run_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::invalid("run_id", format!("{text:?} is not a run id (a UUID)")))
}

/// One run.
#[utoipa::path(
    get,
    path = "/v1/runs/{run_id}",
    operation_id = "get_run",
    tag = "runs",
    params(("run_id" = Uuid, Path, description = "The run's id")),
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
    let id = parse_run_id(&run_id)?;
    let db = app.db().await?;
    let run = runs::get(&**db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    Ok(axum::Json(run.into()))
}

/// Run a finished run again.
///
/// Records a new `pending` run with trigger `manual` and `rerun_of` naming
/// the original, for the same schedule and with the same params: the ones
/// the original recorded (a manual run's), or — for a tick, which records
/// none — the schedule's params as they are now. It runs the schedule's
/// current pipeline, like any run. Only a finished run (`completed`,
/// `failed`, `skipped`, `missed`, `abandoned`, `cancelled`) can be rerun: 409
/// `run_not_finished` otherwise; 409 `schedule_deleted` when its schedule
/// no longer exists. Takes no body (an empty object is accepted).
#[utoipa::path(
    post,
    path = "/v1/runs/{run_id}/rerun",
    operation_id = "rerun",
    tag = "runs",
    params(("run_id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Accepted: the new run", body = RunView,
         headers(("Location" = String, description = "The new run"))),
        InvalidControl,
        Unauthorized,
        ReadOnly,
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has not finished, or its schedule was deleted", body = ErrorBody),
        TooLarge,
        NotJson,
    )
)]
pub async fn rerun(
    State(app): State<AppState>,
    Path(run_id_text): Path<String>,
    OptionalJson(body): OptionalJson,
) -> Result<Response, ApiError> {
    let id = parse_run_id(&run_id_text)?;
    controls::no_keys(body.as_ref(), "rerun")?;
    let db = app.db().await?;
    let original = runs::get(&**db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    if !original.status.is_final() {
        return Err(ApiError::conflict(
            "run_not_finished",
            format!(
                "run {id} is {}; only a finished run can be rerun (wait for it, or run the schedule now)",
                original.status
            ),
        ));
    }
    let stored = schedules::get(&**db, &original.schedule_name)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "schedule_deleted",
                format!(
                    "run {id} belongs to schedule {:?}, which has been deleted; a rerun needs its schedule",
                    original.schedule_name
                ),
            )
        })?;
    let params = original
        .params
        .clone()
        .unwrap_or_else(|| stored.schedule.params().clone());
    let run = runs::insert_manual_run(
        &**db,
        &ManualRun {
            schedule_name: &original.schedule_name,
            pipeline: stored.schedule.pipeline(),
            params: Some(&params),
            rerun_of: Some(id),
        },
    )
    .await?;
    tracing::info!(
        schedule = %run.schedule_name,
        run_id = %run.run_id,
        rerun_of = %id,
        "rerun requested through the API"
    );
    let location = format!("/v1/runs/{}", run.run_id);
    let mut response = (StatusCode::ACCEPTED, axum::Json(RunView::from(run))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// How to stop a run (the body is optional: `{}` or none is `graceful`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// `graceful` (default): the pipeline is told; a command gets SIGTERM,
    /// then SIGKILL 10 s later. `immediate`: killed at once.
    pub mode: Option<CancelModeName>,
}

/// How a run is stopped.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelModeName {
    /// Told first, killed after the kill grace.
    Graceful,
    /// Killed at once.
    Immediate,
}

/// A cancel request that stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelAccepted {
    /// The run.
    pub run_id: Uuid,
    /// How it is being stopped (a standing `immediate` request stays so).
    pub mode: CancelModeName,
}

/// Cancel a running run.
///
/// The replica running it stops it (a run still waiting for another is
/// never started) and records it `cancelled`; read the run to see it end.
#[utoipa::path(
    post,
    path = "/v1/runs/{run_id}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    params(("run_id" = Uuid, Path, description = "The run's id")),
    request_body(content = Option<CancelInput>, content_type = "application/json",
                 description = "Optional; `{\"mode\": \"immediate\"}` kills at once"),
    responses(
        (status = 202, description = "The request stands; the run stops shortly", body = CancelAccepted),
        (status = 400, description = "Not a UUID, or a bad body", body = ErrorBody),
        Unauthorized,
        ReadOnly,
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is not running", body = ErrorBody),
        TooLarge,
        NotJson,
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    OptionalJson(body): OptionalJson,
) -> Result<(axum::http::StatusCode, axum::Json<CancelAccepted>), ApiError> {
    let id = Uuid::parse_str(&run_id)
        .map_err(|_| ApiError::invalid("run_id", format!("{run_id:?} is not a run id (a UUID)")))?;
    let input: CancelInput = match body {
        None | Some(Value::Null) => CancelInput::default(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body: {e}")))?,
    };
    let mode = input.mode.unwrap_or(CancelModeName::Graceful);
    let mode_text = match mode {
        CancelModeName::Graceful => "graceful",
        CancelModeName::Immediate => "immediate",
    };
    let db = app.db().await?;
    match runs::request_cancel(&**db, id, mode_text).await? {
        runs::CancelAsked::Requested => {
            tracing::info!(run_id = %id, mode = mode_text, "cancel requested through the API");
            Ok((
                axum::http::StatusCode::ACCEPTED,
                axum::Json(CancelAccepted { run_id: id, mode }),
            ))
        }
        runs::CancelAsked::NotFound => Err(ApiError::not_found(format!("run {id} not found"))),
        runs::CancelAsked::NotRunning(status) => Err(ApiError::conflict(
            "not_running",
            format!("run {id} is {status}, not running: there is nothing to cancel"),
        )),
    }
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
