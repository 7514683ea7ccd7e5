//! The original's schedule operations (`spine/api/scheduler.py`): list,
//! create (or replace), delete, run now, pause, resume — each through the
//! function its `/v1` counterpart uses, so validation, ownership and
//! concurrency rules are those of `/v1`.

use axum::extract::{Extension, State};
use axum::Json as Reply;
use serde_json::Value;

use super::detail::{
    or_not_found, schedule_not_found, Conflict, DetailBody, Invalid, NoSuchSchedule, NotJson,
    ReadOnly, Refused, TooLarge, Unauthorized,
};
use super::input::{translate, ScheduleCreate};
use super::types::{Deleted, Paused, Resumed, RunStarted, ScheduleResponse};
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::extract::{Json, OptionalJson, Path};
use crate::api::params::ScheduleName;
use crate::api::preview::database_now;
use crate::api::schedules::changes::{self, Write};
use crate::api::schedules::{actor, parse_definition, replacement, request_run};
use crate::api::AppState;
use crate::schedule::controls::{self, PauseNote, RunRequest};
use crate::schedule::validate_name;
use crate::store::schedules::{self, ScheduleFilter};

/// Schedules read per page while listing them all.
const LIST_PAGE: i64 = 1000;

/// How often a create-or-replace retries when the name is created or
/// changed by someone else between its read and its write.
const SAVE_ATTEMPTS: usize = 3;

/// A name from the path: one that no schedule can have is not found, as
/// the original (which had no rules for names) would say.
fn known_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|_| schedule_not_found(name))
}

/// Whether a save failed because someone created, changed or deleted the
/// schedule between its read and its write: the original's last writer
/// wins, so the save reads again.
fn raced(e: &ApiError) -> bool {
    matches!(
        e.code(),
        "already_exists" | "version_conflict" | "not_found"
    )
}

/// List all schedules.
///
/// Every schedule, by name, in the original's `ScheduleResponse` shape
/// (no paging, as in the original; `/v1/schedules` pages). Rows that no
/// longer pass validation are left out here (`/v1/schedules` lists them).
#[utoipa::path(
    get,
    path = "/scheduler/schedules",
    operation_id = "compat_list_schedules",
    tag = super::TAG,
    responses(
        (status = 200, description = "Every schedule", body = Vec<ScheduleResponse>),
        Unauthorized,
    )
)]
pub async fn list(State(app): State<AppState>) -> Result<Reply<Vec<ScheduleResponse>>, ApiError> {
    let db = app.db().await?;
    let now = database_now(&app);
    let mut out = Vec::new();
    let mut filter = ScheduleFilter {
        limit: Some(LIST_PAGE),
        ..ScheduleFilter::default()
    };
    loop {
        let page = schedules::list(&**db, &filter).await?;
        out.extend(page.schedules.iter().map(|s| ScheduleResponse::of(s, now)));
        match page.next_after {
            Some(after) => filter.after = Some(after),
            None => break,
        }
    }
    Ok(Reply(out))
}

/// Create a schedule, or replace the one of that name.
///
/// The original's `ScheduleCreate`: `cron` (read in `timezone`) or
/// `interval_minutes`. A new name is created as `POST /v1/schedules` does;
/// an existing one is replaced as `PUT /v1/schedules/{name}` does (the
/// original's `replace_existing=True`): keys the original has no word for
/// take their defaults, and a paused schedule stays paused. The pipeline
/// must be defined on the replicas. Answers the schedule as the list shows
/// it (with its real `next_run`; the original always said `null` here).
#[utoipa::path(
    post,
    path = "/scheduler/schedules",
    operation_id = "compat_create_schedule",
    tag = super::TAG,
    request_body = ScheduleCreate,
    responses(
        (status = 200, description = "Created or replaced", body = ScheduleResponse),
        // Spelled out (not `Invalid`) so that DetailBody is among the
        // document's schemas: utoipa collects the bodies of tuples only.
        (status = 400, description = "A body outside the documented shape, every problem named", body = DetailBody),
        Refused,
        Unauthorized,
        ReadOnly,
        Conflict,
        TooLarge,
        NotJson,
    )
)]
pub async fn create(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Json(body): Json<Value>,
) -> Result<Reply<ScheduleResponse>, ApiError> {
    let map = translate(&body)?;
    // Every problem of the definition, before the database is asked.
    let schedule = parse_definition(&app, &Value::Object(map.clone()))?;
    let actor = actor(caller);
    let write = Write {
        actor: &actor,
        accepted: None,
        take_over: false,
    };
    let mut db = app.db().await?;
    let mut attempt = 1;
    let saved = loop {
        let result = match schedules::get(&**db, schedule.name()).await? {
            Some(_) => {
                changes::update(&mut db, schedule.name(), &write, |stored| {
                    replacement(&app, stored, map.clone())
                })
                .await
            }
            None => changes::create(&mut db, &schedule, &actor).await,
        };
        match result {
            Err(e) if raced(&e) && attempt < SAVE_ATTEMPTS => attempt += 1,
            other => break other?,
        }
    };
    Ok(Reply(ScheduleResponse::of(&saved, database_now(&app))))
}

/// Delete a schedule.
///
/// As `DELETE /v1/schedules/{name}`: its run history stays.
#[utoipa::path(
    delete,
    path = "/scheduler/schedules/{name}",
    operation_id = "compat_delete_schedule",
    tag = super::TAG,
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        Unauthorized,
        ReadOnly,
        NoSuchSchedule,
        Conflict,
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> Result<Reply<Deleted>, ApiError> {
    known_name(&name)?;
    let actor = actor(caller);
    let write = Write {
        actor: &actor,
        accepted: None,
        take_over: false,
    };
    let mut db = app.db().await?;
    changes::delete(&mut db, &name, &write)
        .await
        .map_err(|e| or_not_found(&name, e))?;
    Ok(Reply(Deleted { deleted: name }))
}

/// Run a schedule now.
///
/// As `POST /v1/schedules/{name}/run` without params: a `pending` run that a
/// replica starts within about a second (the original ran it before
/// answering); its record is at `/scheduler/runs/{run_id}`. Takes no body
/// (an empty object is accepted; any key is refused).
#[utoipa::path(
    post,
    path = "/scheduler/schedules/{name}/run",
    operation_id = "compat_run_schedule",
    tag = super::TAG,
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The run was recorded", body = RunStarted),
        Invalid,
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
) -> Result<Reply<RunStarted>, ApiError> {
    known_name(&name)?;
    controls::no_keys(body.as_ref(), "run").map_err(ApiError::from)?;
    let db = app.db().await?;
    let (run, _) = request_run(&db, &name, &RunRequest::default())
        .await
        .map_err(|e| or_not_found(&name, e))?;
    Ok(Reply(RunStarted {
        run_id: run.run_id.to_string(),
    }))
}

/// Pause a schedule.
///
/// As `POST /v1/schedules/{name}/pause` without a note: its ticks stop on
/// every replica. Idempotent. Takes no body (an empty object is accepted;
/// any key is refused).
#[utoipa::path(
    post,
    path = "/scheduler/schedules/{name}/pause",
    operation_id = "compat_pause_schedule",
    tag = super::TAG,
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Paused", body = Paused),
        Invalid,
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
) -> Result<Reply<Paused>, ApiError> {
    known_name(&name)?;
    controls::no_keys(body.as_ref(), "pause").map_err(ApiError::from)?;
    let mut db = app.db().await?;
    changes::pause(&mut db, &name, &PauseNote::default(), &actor(caller))
        .await
        .map_err(|e| or_not_found(&name, e))?;
    Ok(Reply(Paused { paused: name }))
}

/// Resume a paused schedule.
///
/// As `POST /v1/schedules/{name}/resume`: firing restarts from the next
/// tick. Idempotent. Takes no body (an empty object is accepted; any key
/// is refused).
#[utoipa::path(
    post,
    path = "/scheduler/schedules/{name}/resume",
    operation_id = "compat_resume_schedule",
    tag = super::TAG,
    params(("name" = ScheduleName, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Resumed", body = Resumed),
        Invalid,
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
) -> Result<Reply<Resumed>, ApiError> {
    known_name(&name)?;
    controls::no_keys(body.as_ref(), "resume").map_err(ApiError::from)?;
    let mut db = app.db().await?;
    changes::resume(&mut db, &name, &actor(caller))
        .await
        .map_err(|e| or_not_found(&name, e))?;
    Ok(Reply(Resumed { resumed: name }))
}
