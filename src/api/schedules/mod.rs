//! `/v1/schedules`: the seed's operations (list, create, delete, run now,
//! pause, resume) plus get, full and partial update, and the next fire
//! times of a stored schedule. The controls' optional bodies (run now with
//! a params override, pause with a note) are read by
//! [`crate::schedule::controls`]; a key they do not know is refused.
//!
//! Bodies use the keys of the schedules file (`spec::parse_schedule` reads
//! both), so what works in YAML works here, and every problem is reported at
//! once. Updates take the expected `version` from `If-Match` (or a `version`
//! key); a stale one is a 409, and nothing is written on any error.
//!
//! Here: the handlers. `types.rs`: what they return and the documented
//! input; `patch.rs`: PUT/PATCH bodies and the merge patch;
//! `trigger_rule.rs`: the "exactly one trigger" rule in the document.

pub(crate) mod changes;
mod history;
mod patch;
pub(super) mod trigger_rule;
mod types;

use std::collections::HashMap;

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use self::history::{__path_history, history};
use self::patch::{body_map, patched, pin_name, take_version};
pub(super) use self::types::InvalidControl;
use self::types::{
    InvalidName, InvalidScheduleView, ListQuery, NextFires, NextQuery, NoSuchSchedule, PauseInput,
    RunNowAccepted, RunNowInput, ScheduleInput, SchedulePage, SchedulePatchInput,
    ScheduleReplaceInput, ScheduleView, StaleVersion, TakeOverQuery,
};
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, NotJson, ReadOnly, TooLarge, Unauthorized, Unprocessable};
use super::extract::{etag, if_match, Json, OptionalJson, Path, Query};
use super::params::{IfMatchHeader, ScheduleName};
use super::preview::{database_now, Preview};
use super::{cursor, page_limit, AppState};
use crate::schedule::controls::{self, PauseNote, RunRequest};
use crate::schedule::spec::parse_schedule;
use crate::schedule::{validate_name, Schedule, ValidationError, ValidationErrors};
use crate::store::api_queries::{self, LastRun};
use crate::store::runs::{self, ManualRun, Run};
use crate::store::schedules::{self, ScheduleFilter, StoredSchedule};

/// Checks a schedule name taken from the path.
fn path_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::from(ValidationErrors::from(e)))
}

/// Parses a definition and checks its pipeline against this replica's
/// registry, reporting every problem at once (400 listing them).
pub(in crate::api) fn parse_definition(app: &AppState, body: &Value) -> Result<Schedule, ApiError> {
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
        _ => Err(ApiError::refused(ValidationErrors(errors))),
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
        (status = 400, description = "Invalid filter", body = ErrorBody),
        Unauthorized,
        Unprocessable,
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<SchedulePage>, ApiError> {
    // Every parameter is checked before any answer, the empty ones too.
    let after = q
        .cursor
        .as_deref()
        .map(|c| cursor::decode('s', c))
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let enabled = match (q.enabled, q.paused) {
        // Both filters apply; `enabled=true&paused=true` asks for
        // schedules that are both, and there are none.
        (Some(e), Some(p)) if e == p => return Ok(axum::Json(SchedulePage::empty())),
        (e, p) => e.or(p.map(|p| !p)),
    };
    // No name or pipeline contains U+0000 (names are checked, pipelines
    // come from a YAML file), and PostgreSQL cannot take it in text.
    let has_nul = |f: &Option<String>| f.as_deref().is_some_and(|t| t.contains('\0'));
    if has_nul(&q.pipeline) || has_nul(&q.name_prefix) {
        return Ok(axum::Json(SchedulePage::empty()));
    }
    let filter = ScheduleFilter {
        enabled,
        pipeline: q.pipeline,
        name_prefix: q.name_prefix,
        after,
        limit: Some(limit),
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
/// on the replicas. A `run_at` more than the misfire grace in the past is
/// refused (it would never run); within the grace the schedule runs at once.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    operation_id = "create_schedule",
    tag = "schedules",
    request_body = ScheduleInput,
    responses(
        (status = 201, description = "Created", body = ScheduleView,
         headers(("ETag" = String, description = "The version"), ("Location" = String))),
        (status = 400, description = "The body cannot be read: not JSON, not an object, a key twice, U+0000 in a string", body = ErrorBody),
        Unauthorized,
        ReadOnly,
        (status = 409, description = "The name is taken", body = ErrorBody),
        TooLarge,
        NotJson,
        Unprocessable,
    )
)]
pub async fn create(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    if !body.is_object() {
        return Err(ApiError::invalid(
            "schedule",
            "the body must be a JSON object of schedule keys",
        ));
    }
    let schedule = parse_definition(&app, &body)?;
    let mut db = app.db().await?;
    let stored = changes::create(&mut db, &schedule, &actor(caller)).await?;
    tracing::info!(schedule = %schedule.name(), "schedule created through the API");
    respond(&db, StatusCode::CREATED, &stored).await
}

/// Get a schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    operation_id = "get_schedule",
    tag = "schedules",
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView,
         headers(("ETag" = String, description = "The version, for If-Match"))),
        InvalidName,
        Unauthorized,
        NoSuchSchedule,
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

/// Who the audit trail names for a request: its token, or nobody known
/// (without authentication).
pub(in crate::api) fn actor(caller: Option<Extension<Caller>>) -> crate::types::Actor {
    caller.map_or_else(crate::types::Actor::anonymous, |Extension(c)| c.actor())
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
        ("name" = ScheduleName, Path, description = "The schedule's name"),
        IfMatchHeader,
        TakeOverQuery,
    ),
    request_body = ScheduleReplaceInput,
    responses(
        (status = 200, description = "Updated", body = ScheduleView),
        (status = 400, description = "Invalid name or If-Match, or a body that cannot be read (not JSON, not an object, a key twice, U+0000 in a string, a `version` that is not a whole number)", body = ErrorBody),
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        StaleVersion,
        TooLarge,
        NotJson,
        Unprocessable,
    )
)]
pub async fn replace(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    Query(query): Query<TakeOverQuery>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let mut map = body_map(body)?;
    let expected = take_version(&mut map, &headers)?;
    pin_name(&mut map, &name)?;
    let actor = actor(caller);
    let write = changes::Write {
        actor: &actor,
        accepted: expected.as_deref(),
        take_over: query.take_over.unwrap_or(false),
    };
    let mut db = app.db().await?;
    let updated = changes::update(&mut db, &name, &write, |stored| {
        replacement(&app, stored, map)
    })
    .await?;
    saved(&db, &updated, "replaced").await
}

/// The schedule a PUT of `map` over `stored` makes (also the compatibility
/// routes' create-or-replace): keys left out take their defaults, except
/// `enabled`, which stays as stored (a paused schedule stays paused).
pub(in crate::api) fn replacement(
    app: &AppState,
    stored: &StoredSchedule,
    mut map: serde_json::Map<String, Value>,
) -> Result<Schedule, ApiError> {
    if map.get("enabled").is_none_or(Value::is_null) {
        map.insert("enabled".into(), Value::Bool(stored.schedule.enabled()));
    }
    parse_definition(app, &Value::Object(map))
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
        ("name" = ScheduleName, Path, description = "The schedule's name"),
        IfMatchHeader,
        TakeOverQuery,
    ),
    request_body(content = SchedulePatchInput, content_type = "application/merge-patch+json",
                 description = "Any subset of the schedule's keys (also accepted as application/json)"),
    responses(
        (status = 200, description = "Updated", body = ScheduleView),
        (status = 400, description = "Invalid name or If-Match, or a body that cannot be read (not JSON, not an object, a key twice, U+0000 in a string, a `version` that is not a whole number)", body = ErrorBody),
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        StaleVersion,
        TooLarge,
        NotJson,
        Unprocessable,
    )
)]
pub async fn patch(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    Query(query): Query<TakeOverQuery>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let mut map = body_map(body)?;
    let expected = take_version(&mut map, &headers)?;
    if map.contains_key("name") {
        pin_name(&mut map, &name)?;
    }
    let actor = actor(caller);
    let write = changes::Write {
        actor: &actor,
        accepted: expected.as_deref(),
        take_over: query.take_over.unwrap_or(false),
    };
    let mut db = app.db().await?;
    let updated = changes::update(&mut db, &name, &write, |stored| {
        let merged = patched(&stored.schedule, &map)?;
        parse_definition(&app, &merged)
    })
    .await?;
    saved(&db, &updated, "patched").await
}

/// The answer to PUT and PATCH (`how`: replaced, patched), with its log line.
async fn saved(
    db: &deadpool_postgres::Object,
    updated: &StoredSchedule,
    how: &str,
) -> Result<Response, ApiError> {
    tracing::info!(schedule = %updated.schedule.name(), version = updated.version, "schedule {how} through the API");
    respond(db, StatusCode::OK, updated).await
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
        ("name" = ScheduleName, Path, description = "The schedule's name"),
        IfMatchHeader,
        TakeOverQuery,
    ),
    responses(
        (status = 204, description = "Deleted"),
        InvalidName,
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        StaleVersion,
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    Query(query): Query<TakeOverQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    path_name(&name)?;
    let accepted = if_match(&headers)?;
    let actor = actor(caller);
    let write = changes::Write {
        actor: &actor,
        accepted: accepted.as_deref(),
        take_over: query.take_over.unwrap_or(false),
    };
    let mut db = app.db().await?;
    changes::delete(&mut db, &name, &write).await?;
    tracing::info!(schedule = %name, "schedule deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule.
///
/// Its ticks stop firing on every replica. The optional body says why and
/// who: `{"note": "…", "by": "…"}` (`by` is the caller's word; the
/// schedule's history also names the token); both are shown in the
/// schedule's `pause` until it is resumed, and an `apply` of the schedules
/// file keeps them (as it keeps the pause). Open whoever manages the
/// schedule's definition (no take-over needed). Idempotent: pausing a paused schedule without a body changes
/// nothing; with a note or `by`, those replace the old ones (`pause.at`
/// stays). Any other key, or a body that is not an object, is refused.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    operation_id = "pause_schedule",
    tag = "schedules",
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    request_body(content = Option<PauseInput>, content_type = "application/json",
                 description = "Optional: why, and who"),
    responses(
        (status = 200, description = "Paused", body = ScheduleView),
        InvalidControl,
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        TooLarge,
        NotJson,
    )
)]
pub async fn pause(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    OptionalJson(body): OptionalJson,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let note = PauseNote::from_body(body.as_ref())?;
    let mut db = app.db().await?;
    let stored = changes::pause(&mut db, &name, &note, &actor(caller)).await?;
    tracing::info!(
        schedule = %name,
        by = note.by.as_deref().unwrap_or_default(),
        note = note.note.as_deref().unwrap_or_default(),
        "schedule paused through the API"
    );
    respond(&db, StatusCode::OK, &stored).await
}

/// Resume a paused schedule.
///
/// Firing restarts from the next tick (ticks missed while paused are not
/// made up); the pause's note is forgotten. Idempotent. Takes no body (an
/// empty object is accepted; any key is refused).
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    operation_id = "resume_schedule",
    tag = "schedules",
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Resumed", body = ScheduleView),
        InvalidControl,
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        TooLarge,
        NotJson,
    )
)]
pub async fn resume(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    OptionalJson(body): OptionalJson,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    controls::no_keys(body.as_ref(), "resume")?;
    let mut db = app.db().await?;
    let stored = changes::resume(&mut db, &name, &actor(caller)).await?;
    tracing::info!(schedule = %name, "schedule resumed through the API");
    respond(&db, StatusCode::OK, &stored).await
}

/// Run a schedule now.
///
/// Records a `pending` run with trigger `manual`; a replica picks it up
/// within about a second. Works on paused and ended schedules too. The
/// optional body `{"params": {…}}` is merged over the schedule's params for
/// this run only — a shallow merge: each top-level key given replaces the
/// schedule's (nested objects are replaced whole, `null` is passed as
/// `null`), keys not given keep the schedule's value. The run's params are
/// recorded in the ledger (`params` of `/v1/runs/{run_id}`) and handed to
/// the pipeline, and to its retries. Any other key is refused.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/run",
    operation_id = "run_schedule_now",
    tag = "schedules",
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    request_body(content = Option<RunNowInput>, content_type = "application/json",
                 description = "Optional: params merged over the schedule's for this run"),
    responses(
        (status = 202, description = "Accepted", body = RunNowAccepted,
         headers(("Location" = String, description = "The run"))),
        InvalidControl,
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        TooLarge,
        NotJson,
    )
)]
pub async fn run_now(
    State(app): State<AppState>,
    Path(name): Path<String>,
    OptionalJson(body): OptionalJson,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let request = RunRequest::from_body(body.as_ref())?;
    let db = app.db().await?;
    let (run, params) = request_run(&db, &name, &request).await?;
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(RunNowAccepted {
            run_id: run.run_id,
            schedule: run.schedule_name,
            status: run.status.into(),
            scheduled_at: run.scheduled_at,
            params,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{}", run.run_id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Records a manual run of schedule `name` with `request`'s params merged
/// over the schedule's, as `…/run` does (also used by the compatibility
/// routes): the `pending` run and the params it got; 404 when the schedule
/// is absent.
pub(in crate::api) async fn request_run(
    db: &deadpool_postgres::Object,
    name: &str,
    request: &RunRequest,
) -> Result<(Run, serde_json::Map<String, Value>), ApiError> {
    let stored = current(db, name).await?;
    let params = request
        .params_over(stored.schedule.params())
        .map_err(ValidationErrors::from)?;
    let run = runs::insert_manual_run(
        &***db,
        &ManualRun {
            schedule_name: name,
            pipeline: stored.schedule.pipeline(),
            params: Some(&params),
            rerun_of: None,
        },
    )
    .await?;
    tracing::info!(
        schedule = %name,
        run_id = %run.run_id,
        overridden = request.params.is_some(),
        "run requested through the API"
    );
    Ok((run, params))
}

/// Most fire times one `next` returns.
const MAX_NEXT: u32 = 100;

/// The next fire times of a stored schedule.
///
/// Computed as the engine computes its ticks (the schedule's own trigger,
/// zone and `end_at`), strictly after now on the database clock; fewer than
/// `count` when the schedule ends first. A paused schedule has none
/// (`paused` true, `fires` empty): it fires nothing until resumed.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}/next",
    operation_id = "next_fire_times",
    tag = "schedules",
    params(("name" = ScheduleName, Path, description = "The schedule's name"), NextQuery),
    responses(
        (status = 200, description = "The next fire times", body = NextFires),
        (status = 400, description = "Invalid name or count", body = ErrorBody),
        Unauthorized,
        NoSuchSchedule,
    )
)]
pub async fn next(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<axum::Json<NextFires>, ApiError> {
    path_name(&name)?;
    let count = match q.count {
        None => 10,
        Some(n) if (1..=MAX_NEXT).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "count",
                format!("must be between 1 and {MAX_NEXT}, got {n}"),
            ))
        }
    };
    let db = app.db().await?;
    let stored = current(&db, &name).await?;
    let schedule = &stored.schedule;
    let now = database_now(&app);
    let paused = !schedule.enabled();
    let shown = if paused { 0 } else { count as usize };
    Ok(axum::Json(NextFires {
        name,
        paused,
        end_at: schedule.end_at(),
        ended: schedule.has_ended(now),
        preview: Preview::of(schedule, now, shown),
    }))
}
