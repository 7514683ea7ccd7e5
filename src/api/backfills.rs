//! Backfills: run a schedule's past ticks (`crate::backfill` has the rules,
//! `engine::backfill` steps them), follow their progress, cancel them.
//!
//! `POST /v1/schedules/{name}/backfill` answers 202 with the new backfill,
//! or 200 with the one that already does the same work (the schedule's
//! active backfill, or the one made with the same `Idempotency-Key`), so a
//! repeated request adds nothing. Reads need any token; creating and
//! cancelling, the admin token.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, IntoResponses, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody, NotJson, ReadOnly, TooLarge, Unauthorized, Unprocessable};
use super::extract::{Json, Path, Query};
use super::params::{IdempotencyKeyHeader, ScheduleName};
use super::{cursor, page_limit, AppState};
use crate::backfill;
use crate::schedule::OverlapPolicy;
use crate::schedule::{validate_name, ValidationErrors};
use crate::store::api_queries;
use crate::store::backfills::{self, Backfill, Created, NewBackfill};
use crate::store::schedules;
use crate::types::{BackfillMode, BackfillState};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Which ticks a backfill runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackfillModeName {
    /// Only ticks with no ledger row at all (the default).
    Missing,
    /// Every tick; one that has rows gets one more attempt.
    All,
}

impl From<BackfillMode> for BackfillModeName {
    fn from(m: BackfillMode) -> Self {
        match m {
            BackfillMode::Missing => BackfillModeName::Missing,
            BackfillMode::All => BackfillModeName::All,
        }
    }
}

/// Where a backfill is in its life.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStateName {
    /// Accepted; not stepped yet.
    Queued,
    /// Creating its runs.
    Running,
    /// Every tick dealt with, every run it created settled.
    Done,
    /// Cancelled: no further runs are created.
    Cancelled,
    /// Stopped by a problem (see `error`).
    Failed,
}

impl From<BackfillState> for BackfillStateName {
    fn from(s: BackfillState) -> Self {
        match s {
            BackfillState::Queued => BackfillStateName::Queued,
            BackfillState::Running => BackfillStateName::Running,
            BackfillState::Done => BackfillStateName::Done,
            BackfillState::Cancelled => BackfillStateName::Cancelled,
            BackfillState::Failed => BackfillStateName::Failed,
        }
    }
}

/// A backfill request. Unknown keys are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: bodies are read by `backfill::parse_request`
pub struct BackfillInput {
    /// First instant of the range, inclusive (RFC 3339); not in the future.
    #[schema(example = "2027-01-01T00:00:00Z", format = DateTime)]
    pub start: String,
    /// End of the range, exclusive (RFC 3339); after `start`, at most 60 s
    /// past the database clock. Ticks run only once they are due.
    #[schema(example = "2027-02-01T00:00:00Z", format = DateTime)]
    pub end: String,
    /// `missing` (default): only ticks with no ledger row at all. `all`:
    /// every tick; one that has rows gets one more attempt.
    pub mode: Option<BackfillModeName>,
    /// `allow_all`: up to the schedule's `max_instances` ticks at once;
    /// anything else, or none: one at a time, in tick order.
    pub overlap_policy: Option<OverlapPolicy>,
    /// Allow up to 100,000 ticks (without it: 10,000).
    pub allow_large: Option<bool>,
}

/// A backfill and its progress. Counts are of ticks: `ticks_planned` in the
/// range; of those dealt with so far, `ticks_created` got a ledger row and
/// `ticks_existing` were passed over (they had one, mode `missing`); of the
/// created, `ticks_succeeded` and `ticks_failed` have settled (their newest
/// attempt, retries included, completed or not) and `ticks_in_flight` have
/// not.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillView {
    /// Its id; follow it at `/v1/backfills/{backfill_id}`.
    pub backfill_id: Uuid,
    /// The schedule.
    pub schedule: String,
    /// First instant of the range (inclusive).
    pub start: DateTime<Utc>,
    /// End of the range (exclusive).
    pub end: DateTime<Utc>,
    /// Which ticks run.
    pub mode: BackfillModeName,
    /// As given (`null`: one at a time).
    pub overlap_policy: Option<OverlapPolicy>,
    /// Whether the large limit was asked for.
    pub allow_large: bool,
    /// The `Idempotency-Key` it was made with.
    pub idempotency_key: Option<String>,
    /// Where it is.
    pub state: BackfillStateName,
    /// Ticks in the range.
    pub ticks_planned: i32,
    /// Ticks that got a ledger row (trigger `backfill`).
    pub ticks_created: i32,
    /// Ticks passed over because they had a row.
    pub ticks_existing: i32,
    /// Created ticks whose newest attempt completed.
    pub ticks_succeeded: i32,
    /// Created ticks that ended otherwise (no retry left).
    pub ticks_failed: i32,
    /// Created ticks still running, waiting to, or waiting for a retry.
    pub ticks_in_flight: i32,
    /// The last tick dealt with (`null`: none yet).
    pub cursor: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Its first step.
    pub started_at: Option<DateTime<Utc>>,
    /// When it became done, cancelled or failed.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<Backfill> for BackfillView {
    fn from(b: Backfill) -> Self {
        BackfillView {
            backfill_id: b.backfill_id,
            schedule: b.schedule_name,
            start: b.request.start,
            end: b.request.end,
            mode: b.request.mode.into(),
            overlap_policy: b.request.overlap_policy,
            allow_large: b.request.allow_large,
            idempotency_key: b.idempotency_key,
            state: b.state.into(),
            ticks_planned: b.ticks_planned,
            ticks_created: b.ticks_created,
            ticks_existing: b.ticks_existing,
            ticks_succeeded: b.ticks_succeeded,
            ticks_failed: b.ticks_failed,
            ticks_in_flight: b.ticks_in_flight,
            cursor: b.cursor_at,
            created_at: b.created_at,
            started_at: b.started_at,
            finished_at: b.finished_at,
            updated_at: b.updated_at,
            error: b.error,
        }
    }
}

/// One page of a schedule's backfills, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillPage {
    /// The backfills.
    pub items: Vec<BackfillView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Paging of a schedule's backfills.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackfillsQuery {
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (422 for one this listing
    /// did not issue).
    #[param(pattern = r"^b1\.([0-9a-fA-F]{2}){0,512}$")]
    pub cursor: Option<String>,
}

/// 404: no backfill has the id in the path.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such backfill")]
#[allow(dead_code)] // documentation only
pub struct NoSuchBackfill(ErrorBody);

fn path_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::from(ValidationErrors::from(e)))
}

fn path_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::invalid(
            "backfill_id",
            format!("{id:?} is not a backfill id (a UUID)"),
        )
    })
}

/// The `Idempotency-Key` header: 1–200 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "Idempotency-Key",
            format!("must be 1–{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let text = raw.to_str().map_err(|_| bad())?;
    if text.is_empty()
        || text.len() > MAX_IDEMPOTENCY_KEY
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(text.to_string()))
}

fn with_location(status: StatusCode, b: Backfill) -> Response {
    let location = format!("/v1/backfills/{}", b.backfill_id);
    let mut response = (status, axum::Json(BackfillView::from(b))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Backfill a schedule.
///
/// Runs every tick of the schedule in `[start, end)` that has no ledger row
/// (`mode: missing`, the default) or every tick (`mode: all`), in tick
/// order, one at a time (`overlap_policy: allow_all`: up to the schedule's
/// `max_instances` at once), at most 10 new runs a second, each a ledger
/// row with trigger `backfill`; failed ones are retried per the schedule's
/// policy before the next tick starts. Works on paused schedules too.
///
/// 202 with the new backfill. A schedule has one active backfill at a
/// time: a request for the same work (range, mode, policy) while it is
/// active, or with the same `Idempotency-Key` as an earlier one, answers
/// 200 with that backfill and adds nothing; different work is a 409. A
/// `missing` backfill of a range already done creates nothing. Refused
/// (400, naming the field): `end` not after `start`, `start` in the
/// future, `end` more than 60 s past the database clock, more than 10,000
/// ticks without `allow_large: true` (at most 100,000 with it).
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/backfill",
    operation_id = "backfill_schedule",
    tag = "backfills",
    params(
        ("name" = ScheduleName, Path, description = "The schedule's name"),
        IdempotencyKeyHeader,
    ),
    request_body = BackfillInput,
    responses(
        (status = 202, description = "Accepted: a new backfill", body = BackfillView,
         headers(("Location" = String, description = "The backfill"))),
        (status = 200, description = "The backfill that already does this work (active, or made with the same Idempotency-Key)",
         body = BackfillView, headers(("Location" = String, description = "The backfill"))),
        (status = 400, description = "Invalid name or Idempotency-Key, or a body that cannot be read (not JSON, not an object, a key twice, U+0000 in a string)", body = ErrorBody),
        Unauthorized,
        ReadOnly,
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "Another backfill of the schedule is active, or the Idempotency-Key was used for other work", body = ErrorBody),
        TooLarge,
        NotJson,
        Unprocessable,
    )
)]
pub async fn create(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let key = idempotency_key(&headers)?;
    if !body.is_object() {
        return Err(ApiError::invalid(
            "backfill",
            "must be a JSON object with start and end (RFC 3339 instants)",
        ));
    }
    let request = backfill::parse_request(&body).map_err(ApiError::refused)?;
    let db = app.db().await?;
    let stored = schedules::get(&**db, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {name:?} not found")))?;
    let now = api_queries::db_now(&**db).await?;
    // Counting up to 100,000 cron ticks takes a moment: off the runtime.
    let (schedule, checked) = (stored.schedule.clone(), request.clone());
    let planned =
        tokio::task::spawn_blocking(move || backfill::check_request(&checked, &schedule, now))
            .await
            .map_err(|e| ApiError::internal(format!("counting the ticks: {e}")))?
            .map_err(ApiError::refused)?;
    let new = NewBackfill {
        schedule_name: &name,
        request: &request,
        trigger_key: backfill::trigger_key(&stored.schedule),
        idempotency_key: key.as_deref(),
        ticks_planned: i32::try_from(planned).unwrap_or(i32::MAX),
    };
    match backfills::create(&**db, &new).await? {
        Created::New(b) => {
            tracing::info!(schedule = %name, backfill_id = %b.backfill_id, ticks = planned,
                           mode = %request.mode, "backfill requested through the API");
            Ok(with_location(StatusCode::ACCEPTED, b))
        }
        Created::Conflict { existing, .. } if existing.request.same_work(&request) => {
            Ok(with_location(StatusCode::OK, existing))
        }
        Created::Conflict {
            existing,
            by_key: true,
        } => Err(ApiError::conflict(
            "idempotency_key_reused",
            format!(
                "Idempotency-Key {:?} was used for backfill {} of other work ({} to {}, mode {})",
                key.as_deref().unwrap_or_default(),
                existing.backfill_id,
                existing.request.start.to_rfc3339(),
                existing.request.end.to_rfc3339(),
                existing.request.mode
            ),
        )
        .with_field("Idempotency-Key")),
        Created::Conflict { existing, .. } => Err(ApiError::conflict(
            "backfill_active",
            format!(
                "schedule {name:?} has an active backfill, {} ({} to {}, mode {}); wait for it \
                 (GET /v1/backfills/{}) or cancel it (POST /v1/backfills/{}/cancel)",
                existing.backfill_id,
                existing.request.start.to_rfc3339(),
                existing.request.end.to_rfc3339(),
                existing.request.mode,
                existing.backfill_id,
                existing.backfill_id
            ),
        )),
    }
}

/// A schedule's backfills.
///
/// Newest first, with their progress. Backfills outlive a deleted
/// schedule, so an unknown name gives an empty page, not a 404.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}/backfills",
    operation_id = "list_schedule_backfills",
    tag = "backfills",
    params(("name" = ScheduleName, Path, description = "The schedule's name"), BackfillsQuery),
    responses(
        (status = 200, description = "A page of backfills", body = BackfillPage),
        (status = 400, description = "Invalid name or limit", body = ErrorBody),
        Unauthorized,
        Unprocessable,
    )
)]
pub async fn list_for_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<BackfillsQuery>,
) -> Result<axum::Json<BackfillPage>, ApiError> {
    path_name(&name)?;
    let limit = page_limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode('b', c)
                .and_then(|raw| Uuid::parse_str(&raw).map_err(|_| cursor::unknown()))
        })
        .transpose()?;
    let db = app.db().await?;
    let page = backfills::list_for_schedule(&**db, &name, before, limit).await?;
    Ok(axum::Json(BackfillPage {
        items: page.backfills.into_iter().map(BackfillView::from).collect(),
        next_cursor: page.next.map(|id| cursor::encode('b', &id.to_string())),
    }))
}

/// One backfill, with its progress.
#[utoipa::path(
    get,
    path = "/v1/backfills/{backfill_id}",
    operation_id = "get_backfill",
    tag = "backfills",
    params(("backfill_id" = Uuid, Path, description = "The backfill's id")),
    responses(
        (status = 200, description = "The backfill", body = BackfillView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        Unauthorized,
        NoSuchBackfill,
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Path(backfill_id): Path<String>,
) -> Result<axum::Json<BackfillView>, ApiError> {
    let id = path_id(&backfill_id)?;
    let db = app.db().await?;
    let b = backfills::get(&**db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("backfill {id} not found")))?;
    Ok(axum::Json(b.into()))
}

/// Cancel a backfill.
///
/// No further ticks get a run; runs already created finish (a failed one
/// is still retried per the schedule's policy), and the backfill's counts
/// stay as they were (follow those runs in `/v1/runs`). Idempotent on a
/// cancelled backfill; 409 on one that is done or failed.
#[utoipa::path(
    post,
    path = "/v1/backfills/{backfill_id}/cancel",
    operation_id = "cancel_backfill",
    tag = "backfills",
    params(("backfill_id" = Uuid, Path, description = "The backfill's id")),
    responses(
        (status = 200, description = "Cancelled", body = BackfillView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        Unauthorized,
        ReadOnly,
        NoSuchBackfill,
        (status = 409, description = "The backfill is done or failed already", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    Path(backfill_id): Path<String>,
) -> Result<axum::Json<BackfillView>, ApiError> {
    let id = path_id(&backfill_id)?;
    let db = app.db().await?;
    let b = backfills::cancel(&**db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("backfill {id} not found")))?;
    if matches!(b.state, BackfillState::Done | BackfillState::Failed) {
        return Err(ApiError::conflict(
            "backfill_finished",
            format!(
                "backfill {id} is {} already; there is nothing to cancel",
                b.state
            ),
        ));
    }
    tracing::info!(backfill_id = %id, schedule = %b.schedule_name, "backfill cancelled through the API");
    Ok(axum::Json(b.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap_or_default();
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    #[test]
    fn the_documented_input_is_the_key_table() {
        let mut want: Vec<String> = backfill::KEYS.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(properties::<BackfillInput>(), want);
    }

    #[test]
    fn documented_names_are_the_stored_ones() {
        for m in BackfillMode::ALL {
            assert_eq!(
                serde_json::to_value(BackfillModeName::from(*m)).ok(),
                Some(Value::String(m.as_str().into()))
            );
        }
        for s in BackfillState::ALL {
            assert_eq!(
                serde_json::to_value(BackfillStateName::from(*s)).ok(),
                Some(Value::String(s.as_str().into()))
            );
        }
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert("idempotency-key", v);
            }
            h
        };
        assert_eq!(idempotency_key(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(
            idempotency_key(&with("nightly-2027-01")).ok(),
            Some(Some("nightly-2027-01".to_string()))
        );
        assert!(idempotency_key(&with("has space")).is_err());
        assert!(idempotency_key(&with(&"k".repeat(201))).is_err());
        // The document states the same rule.
        let doc = serde_json::to_value(crate::api::openapi()).unwrap_or_default();
        let params = doc["paths"]["/v1/schedules/{name}/backfill"]["post"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let key = params.iter().find(|p| p["name"] == "Idempotency-Key");
        assert_eq!(
            key.map(|p| p["schema"]["pattern"].clone()),
            Some(Value::from(format!("^[!-~]{{1,{MAX_IDEMPOTENCY_KEY}}}$")))
        );
    }
}
