//! `/v1/schedules`: the seed's operations (list, create, delete, run now,
//! pause, resume) plus get, full and partial update.
//!
//! Bodies use the keys of the schedules file (`spec::parse_schedule` reads
//! both), so what works in YAML works here, and every problem is reported at
//! once. Updates take the expected `version` from `If-Match` (or a `version`
//! key); a stale one is a 409, and nothing is written on any error.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{etag, if_match, Json, Path, Query};
use super::runs::{RunStatusName, TriggerName};
use super::{cursor, page_limit, AppState};
use crate::schedule::spec::{key, parse_schedule, Definition, Key, KEYS};
use crate::schedule::{validate_name, Schedule, ScheduleType, ValidationError, ValidationErrors};
use crate::store::api_queries::{self, LastRun};
use crate::store::runs;
use crate::store::schedules::{self, ScheduleFilter, StoredSchedule};

/// Keys a GET returns that are not part of the definition. PUT and PATCH
/// ignore them, so a GET's output can be edited and sent back.
const READ_ONLY_KEYS: &[&str] = &["created_at", "updated_at", "next_run", "last_run"];

/// The newest run of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastRunView {
    /// The run.
    pub run_id: Uuid,
    /// Where it is.
    pub status: RunStatusName,
    /// Why it exists.
    pub trigger: TriggerName,
    /// Its tick.
    pub scheduled_at: DateTime<Utc>,
    /// When it reached its final status.
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<&LastRun> for LastRunView {
    fn from(r: &LastRun) -> Self {
        LastRunView {
            run_id: r.run_id,
            status: r.status.into(),
            trigger: r.trigger.into(),
            scheduled_at: r.scheduled_at,
            completed_at: r.completed_at,
        }
    }
}

/// A stored schedule: its definition, bookkeeping and what comes next.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// The definition.
    #[serde(flatten)]
    pub definition: Definition,
    /// Bumped by every change; send it back in `If-Match` to update safely.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Its next tick on the database clock (`null` when paused or when a
    /// one-time schedule has passed).
    pub next_run: Option<DateTime<Utc>>,
    /// Its newest run, if it has one.
    pub last_run: Option<LastRunView>,
}

impl ScheduleView {
    fn of(s: &StoredSchedule, now: DateTime<Utc>, last: Option<&LastRun>) -> Self {
        let next_run = s
            .schedule
            .enabled()
            .then(|| s.schedule.next_fire_after(now))
            .flatten();
        ScheduleView {
            definition: Definition::of(&s.schedule),
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
            next_run,
            last_run: last.map(LastRunView::from),
        }
    }
}

/// A stored row that no longer passes validation (edited by hand).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidScheduleView {
    /// Its name.
    pub name: String,
    /// What is wrong with it.
    pub error: String,
}

/// One page of schedules, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulePage {
    /// The schedules.
    pub items: Vec<ScheduleView>,
    /// Rows on this page that could not be read; fix or delete them.
    pub invalid: Vec<InvalidScheduleView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Filters and paging of the schedule list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only enabled (`true`) or only paused (`false`) schedules.
    pub enabled: Option<bool>,
    /// Only paused (`true`) or only enabled (`false`) schedules.
    pub paused: Option<bool>,
    /// Only schedules of this pipeline.
    pub pipeline: Option<String>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Seconds as a number, or a duration such as `90s`, `15m`, `1h 30m`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only: bodies are read by `spec::parse_schedule`
pub enum SecondsOrDuration {
    /// Seconds (for `interval`: minutes, as in the seed's files).
    Number(u64),
    /// A duration.
    Text(String),
}

/// Retry policy input.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct RetryInput {
    /// Attempts in all, the first included (default 1: no retry).
    pub max_attempts: Option<u32>,
    /// Delay before the first retry (default 10s).
    pub backoff: Option<SecondsOrDuration>,
    /// Longest delay between attempts (default 1h).
    pub backoff_max: Option<SecondsOrDuration>,
}

/// A schedule definition: the keys of the schedules file. Exactly one of
/// `cron` (or `cron_expression`), `interval` (or `interval_seconds`,
/// `interval_minutes`, `interval_hours`) and `run_at`. Unknown keys are
/// refused. PUT and PATCH also accept `version` (like `If-Match`) and ignore
/// the read-only keys a GET returns (`created_at`, `updated_at`, `next_run`,
/// `last_run`); in a PATCH every key is optional and `null` resets a key to
/// its default.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ScheduleInput {
    /// Unique name: 1–128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(example = "finra_otc_t1")]
    pub name: String,
    /// A pipeline defined in the replicas' pipelines file.
    #[schema(example = "finra.otc_transparency.ingest_week")]
    pub pipeline: String,
    /// Optional; must agree with the trigger key given.
    pub schedule_type: Option<String>,
    /// Crontab expression: 5 fields, or 6 with leading seconds, or `@daily` etc.
    #[schema(example = "0 6 * * 1-5")]
    pub cron: Option<String>,
    /// Alias of `cron`.
    pub cron_expression: Option<String>,
    /// Minutes as a number (the seed's format), or a duration string.
    pub interval: Option<SecondsOrDuration>,
    /// Interval in seconds.
    pub interval_seconds: Option<u64>,
    /// Interval in minutes.
    pub interval_minutes: Option<u64>,
    /// Interval in hours.
    pub interval_hours: Option<u64>,
    /// RFC 3339 anchor of interval ticks (default the Unix epoch).
    pub start_at: Option<String>,
    /// RFC 3339 instant, or local `YYYY-MM-DDTHH:MM:SS` in `timezone`: fires once.
    pub run_at: Option<String>,
    /// IANA zone (default `UTC`).
    #[schema(example = "America/New_York")]
    pub timezone: Option<String>,
    /// Handed to the pipeline (at most 64 KiB as JSON).
    #[schema(value_type = Option<Object>)]
    pub params: Option<Map<String, Value>>,
    /// Default true; false creates it paused. Omitted in a PUT: unchanged.
    pub enabled: Option<bool>,
    /// Runs allowed at once across the cluster, 1–1000 (default 1).
    pub max_instances: Option<u32>,
    /// How late a tick may start (default 60 seconds).
    pub misfire_grace_time: Option<SecondsOrDuration>,
    /// Run a backlog of missed ticks once (default true).
    pub coalesce: Option<bool>,
    /// Cancel runs that take longer (default none).
    pub timeout: Option<SecondsOrDuration>,
    /// Retries of failed runs.
    pub retry: Option<RetryInput>,
    /// Free text, up to 1000 characters.
    pub description: Option<String>,
    /// PUT/PATCH only: the version the change is based on (409 if stale).
    pub version: Option<i64>,
}

/// The answer to a run-now request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunNowAccepted {
    /// The new run; follow it at `/v1/runs/{run_id}`.
    pub run_id: Uuid,
    /// The schedule.
    pub schedule: String,
    /// `pending` until a replica picks it up (within about a second).
    pub status: RunStatusName,
    /// When it was asked for (database clock).
    pub scheduled_at: DateTime<Utc>,
}

/// Checks a schedule name taken from the path.
fn path_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::from(ValidationErrors::from(e)))
}

/// Parses a definition and checks its pipeline against this replica's
/// registry, reporting every problem at once.
fn parse_definition(app: &AppState, body: &Value) -> Result<Schedule, ApiError> {
    let parsed = parse_schedule(body);
    let mut errors = match &parsed {
        Ok(_) => Vec::new(),
        Err(ValidationErrors(e)) => e.clone(),
    };
    let pipeline = body.get("pipeline").and_then(Value::as_str);
    if let Some(p) = pipeline {
        if !errors.iter().any(|e| e.field == "pipeline") && !app.registry().contains(p) {
            errors.push(unknown_pipeline(app, p));
        }
    }
    match parsed {
        Ok(p) if errors.is_empty() => Ok(p.schedule),
        _ => Err(ValidationErrors(errors).into()),
    }
}

fn unknown_pipeline(app: &AppState, name: &str) -> ValidationError {
    let mut known: Vec<&str> = app.registry().names().collect();
    known.sort_unstable();
    let listed = if known.is_empty() {
        "none are defined (start the replicas with --pipelines)".to_string()
    } else if known.len() > 20 {
        format!("defined: {}, …", known[..20].join(", "))
    } else {
        format!("defined: {}", known.join(", "))
    };
    ValidationError::new("pipeline", format!("unknown pipeline {name:?}; {listed}"))
}

/// Takes `version` out of a PUT/PATCH body and reconciles it with `If-Match`.
fn take_version(
    body: &mut Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Option<i64>, ApiError> {
    let header = if_match(headers)?;
    let in_body = match body.remove("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::invalid("version", format!("must be a whole number, got {v}"))
        })?),
    };
    match (header, in_body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::invalid(
            "version",
            format!("is {b} but If-Match says {h}; send one of them"),
        )),
        (h, b) => Ok(h.or(b)),
    }
}

/// The body of a PUT/PATCH as a mapping, without the read-only keys.
fn body_map(body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::invalid(
            "schedule",
            "the body must be a JSON object of schedule keys",
        ));
    };
    for key in READ_ONLY_KEYS {
        map.remove(*key);
    }
    Ok(map)
}

/// Refuses a body that names another schedule than the path (renaming is
/// not an update), and fills the name in when the body leaves it out.
fn pin_name(map: &mut Map<String, Value>, name: &str) -> Result<(), ApiError> {
    match map.get("name") {
        None | Some(Value::Null) => {
            map.insert("name".into(), Value::String(name.to_string()));
            Ok(())
        }
        Some(Value::String(n)) if n == name => Ok(()),
        Some(other) => Err(ApiError::invalid(
            "name",
            format!(
                "is {other} but the path names {name:?}; schedules cannot be renamed \
                 (create the new one, then delete this one)"
            ),
        )),
    }
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes,
/// anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in patch {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The current definition with a patch applied. A patch naming a trigger
/// key replaces the trigger (so `{"interval": "5m"}` turns a cron schedule
/// into an interval one), dropping the old anchor unless the new trigger is
/// an interval too.
fn patched(current: &Schedule, patch: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut base = serde_json::to_value(Definition::of(current))
        .map_err(|e| ApiError::internal(format!("serialising the stored schedule: {e}")))?;
    if let Value::Object(b) = &mut base {
        let named = |want: fn(&Key) -> bool| patch.keys().any(|k| key(k).is_some_and(want));
        if named(Key::sets_trigger) {
            for k in KEYS.iter().filter(|k| k.sets_trigger()) {
                b.remove(k.name);
            }
            if !named(|k| k.makes() == Some(ScheduleType::Interval)) {
                b.remove("start_at");
            }
        }
    }
    merge_patch(&mut base, &Value::Object(patch.clone()));
    Ok(base)
}

/// The response for one schedule, with its `ETag`.
async fn respond(
    db: &deadpool_postgres::Object,
    status: StatusCode,
    stored: &StoredSchedule,
) -> Result<Response, ApiError> {
    let (now, last) = api_queries::last_runs(&***db, &[stored.schedule.name()]).await?;
    let view = ScheduleView::of(stored, now, last.get(stored.schedule.name()));
    let mut response = (status, axum::Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(stored.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED {
        let location = format!("/v1/schedules/{}", stored.schedule.name());
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(response)
}

/// List schedules.
///
/// By name, filtered, a page at a time; each with its next fire time and its
/// newest run.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of schedules", body = SchedulePage),
        (status = 400, description = "Invalid filter or cursor", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<SchedulePage>, ApiError> {
    let enabled = match (q.enabled, q.paused) {
        (Some(e), Some(p)) if e == p => {
            return Err(ApiError::invalid(
                "paused",
                "contradicts enabled; give one of them",
            ))
        }
        (e, p) => e.or(p.map(|p| !p)),
    };
    let filter = ScheduleFilter {
        enabled,
        pipeline: q.pipeline,
        name_prefix: q.name_prefix,
        after: q
            .cursor
            .as_deref()
            .map(|c| cursor::decode('s', c))
            .transpose()?,
        limit: Some(page_limit(q.limit)?),
    };
    let db = app.db().await?;
    let page = schedules::list(&**db, &filter).await?;
    let names: Vec<&str> = page.schedules.iter().map(|s| s.schedule.name()).collect();
    let (now, last): (_, HashMap<String, LastRun>) = api_queries::last_runs(&**db, &names).await?;
    Ok(axum::Json(SchedulePage {
        items: page
            .schedules
            .iter()
            .map(|s| ScheduleView::of(s, now, last.get(s.schedule.name())))
            .collect(),
        invalid: page
            .invalid
            .iter()
            .map(|r| InvalidScheduleView {
                name: r.name.clone(),
                error: r.error.to_string(),
            })
            .collect(),
        next_cursor: page.next_after.as_deref().map(|n| cursor::encode('s', n)),
    }))
}

/// Create a schedule.
///
/// The body has the keys of the schedules file. Its pipeline must be defined
/// on the replicas.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    operation_id = "create_schedule",
    tag = "schedules",
    request_body = ScheduleInput,
    responses(
        (status = 201, description = "Created", body = ScheduleView,
         headers(("ETag" = String, description = "The version"), ("Location" = String))),
        (status = 400, description = "Invalid definition (every problem listed in `details`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let schedule = parse_definition(&app, &body)?;
    let db = app.db().await?;
    let stored = schedules::insert(&**db, &schedule).await?;
    tracing::info!(schedule = %schedule.name(), "schedule created through the API");
    respond(&db, StatusCode::CREATED, &stored).await
}

/// Get a schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    operation_id = "get_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView,
         headers(("ETag" = String, description = "The version, for If-Match"))),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let db = app.db().await?;
    let stored = schedules::get(&**db, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {name:?} not found")))?;
    respond(&db, StatusCode::OK, &stored).await
}

/// The stored schedule, or 404.
async fn current(db: &deadpool_postgres::Object, name: &str) -> Result<StoredSchedule, ApiError> {
    schedules::get(&***db, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {name:?} not found")))
}

/// 409 unless the caller's version (if any) is the stored one.
fn check_version(stored: &StoredSchedule, expected: Option<i64>) -> Result<(), ApiError> {
    match expected {
        Some(v) if v != stored.version => {
            Err(ApiError::from(crate::store::StoreError::VersionConflict {
                name: stored.schedule.name().to_string(),
                expected: v,
                current: stored.version,
            }))
        }
        _ => Ok(()),
    }
}

/// Replace a schedule's definition.
///
/// Keys left out take their defaults, except `enabled`, which stays as it is
/// (a schedule paused through the API stays paused). With `If-Match` (or
/// `version`), a stale version is a 409; without, the change is still made
/// against the version read, so a concurrent change is never overwritten
/// silently.
#[utoipa::path(
    put,
    path = "/v1/schedules/{name}",
    operation_id = "replace_schedule",
    tag = "schedules",
    params(
        ("name" = String, Path, description = "The schedule's name"),
        ("If-Match" = Option<String>, Header, description = "The version it is based on, as in the ETag"),
    ),
    request_body = ScheduleInput,
    responses(
        (status = 200, description = "Updated", body = ScheduleView),
        (status = 400, description = "Invalid definition", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "Stale version", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    )
)]
pub async fn replace(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let mut map = body_map(body)?;
    let expected = take_version(&mut map, &headers)?;
    pin_name(&mut map, &name)?;
    let db = app.db().await?;
    let stored = current(&db, &name).await?;
    check_version(&stored, expected)?;
    if map.get("enabled").is_none_or(Value::is_null) {
        map.insert("enabled".into(), Value::Bool(stored.schedule.enabled()));
    }
    let schedule = parse_definition(&app, &Value::Object(map))?;
    let updated = schedules::update(&**db, &schedule, Some(stored.version)).await?;
    tracing::info!(schedule = %name, version = updated.version, "schedule replaced through the API");
    respond(&db, StatusCode::OK, &updated).await
}

/// Change some keys of a schedule.
///
/// A JSON merge patch (RFC 7396) onto the current definition: keys given
/// replace, `null` resets to the default, nested objects (`params`, `retry`)
/// merge. Naming a trigger key (`cron`, `interval`, `run_at`, …) replaces
/// the trigger. The result is validated as a whole.
#[utoipa::path(
    patch,
    path = "/v1/schedules/{name}",
    operation_id = "patch_schedule",
    tag = "schedules",
    params(
        ("name" = String, Path, description = "The schedule's name"),
        ("If-Match" = Option<String>, Header, description = "The version it is based on, as in the ETag"),
    ),
    request_body(content = ScheduleInput, content_type = "application/merge-patch+json",
                 description = "Any subset of the schedule's keys (also accepted as application/json)"),
    responses(
        (status = 200, description = "Updated", body = ScheduleView),
        (status = 400, description = "The result is invalid", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "Stale version", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    )
)]
pub async fn patch(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let mut map = body_map(body)?;
    let expected = take_version(&mut map, &headers)?;
    if map.contains_key("name") {
        pin_name(&mut map, &name)?;
    }
    let db = app.db().await?;
    let stored = current(&db, &name).await?;
    check_version(&stored, expected)?;
    let merged = patched(&stored.schedule, &map)?;
    let schedule = parse_definition(&app, &merged)?;
    let updated = schedules::update(&**db, &schedule, Some(stored.version)).await?;
    tracing::info!(schedule = %name, version = updated.version, "schedule patched through the API");
    respond(&db, StatusCode::OK, &updated).await
}

/// Delete a schedule.
///
/// Its run history stays. With `If-Match`, only that version is deleted.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    operation_id = "delete_schedule",
    tag = "schedules",
    params(
        ("name" = String, Path, description = "The schedule's name"),
        ("If-Match" = Option<String>, Header, description = "Delete only this version"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "Stale version", body = ErrorBody),
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    path_name(&name)?;
    let expected = if_match(&headers)?;
    let db = app.db().await?;
    schedules::delete(&**db, &name, expected).await?;
    tracing::info!(schedule = %name, "schedule deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(app: AppState, name: String, enabled: bool) -> Result<Response, ApiError> {
    path_name(&name)?;
    let db = app.db().await?;
    let stored = schedules::set_enabled(&**db, &name, enabled).await?;
    tracing::info!(schedule = %name, enabled, "schedule paused/resumed through the API");
    respond(&db, StatusCode::OK, &stored).await
}

/// Pause a schedule.
///
/// Its ticks stop firing on every replica. Idempotent.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    operation_id = "pause_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Paused", body = ScheduleView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn pause(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(app, name, false).await
}

/// Resume a paused schedule.
///
/// Firing restarts from the next tick (ticks missed while paused are not
/// made up). Idempotent.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    operation_id = "resume_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Resumed", body = ScheduleView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn resume(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(app, name, true).await
}

/// Run a schedule now.
///
/// Records a `pending` run with trigger `manual`; a replica picks it up
/// within about a second. Works on paused schedules too.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/run",
    operation_id = "run_schedule_now",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 202, description = "Accepted", body = RunNowAccepted,
         headers(("Location" = String, description = "The run"))),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
    )
)]
pub async fn run_now(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let db = app.db().await?;
    let stored = current(&db, &name).await?;
    let run = runs::insert_manual(&**db, &name, stored.schedule.pipeline()).await?;
    tracing::info!(schedule = %name, run_id = %run.run_id, "run requested through the API");
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(RunNowAccepted {
            run_id: run.run_id,
            schedule: run.schedule_name,
            status: run.status.into(),
            scheduled_at: run.scheduled_at,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{}", run.run_id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Trigger;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": 9}, "e": [2], "f": "x"}),
        );
        assert_eq!(doc, json!({"b": {"c": 9, "d": 3}, "e": [2], "f": "x"}));
    }

    #[test]
    fn patching_a_trigger_replaces_it() -> Result<(), ApiError> {
        let cron = Schedule::cron("s", "p", "0 6 * * *").map_err(ValidationErrors::from)?;
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        let to_interval = patched(&cron, &map(json!({"interval": "15m"})))?;
        let parsed = parse_schedule(&to_interval).map_err(ApiError::from)?;
        assert!(matches!(
            parsed.schedule.trigger(),
            Trigger::Interval { .. }
        ));
        let back = patched(&parsed.schedule, &map(json!({"cron": "*/5 * * * *"})))?;
        let parsed = parse_schedule(&back).map_err(ApiError::from)?;
        assert_eq!(
            Definition::of(&parsed.schedule).cron.as_deref(),
            Some("*/5 * * * *")
        );
        let tz_only = patched(&parsed.schedule, &map(json!({"timezone": "Europe/Berlin"})))?;
        let parsed = parse_schedule(&tz_only).map_err(ApiError::from)?;
        assert_eq!(parsed.schedule.timezone().name(), "Europe/Berlin");
        assert_eq!(parsed.schedule.schedule_type().as_str(), "cron");
        Ok(())
    }

    #[test]
    fn canonical_definition_round_trips() -> Result<(), ApiError> {
        let body = json!({
            "name": "finra_otc_t1", "pipeline": "finra.ingest", "cron": "0 6 * * 1-5",
            "timezone": "America/New_York", "params": {"tier": "T1"}, "timeout": "1h",
            "retry": {"max_attempts": 3, "backoff": "30s"}, "description": "d"
        });
        let first = parse_schedule(&body).map_err(ApiError::from)?.schedule;
        let canonical = serde_json::to_value(Definition::of(&first))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let again = parse_schedule(&canonical).map_err(ApiError::from)?.schedule;
        assert_eq!(first, again);
        Ok(())
    }
}
