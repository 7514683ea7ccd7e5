//! `/v1/preview`: the next fire times of a trigger, computed exactly as the
//! engine would, without storing anything. [`Preview::of`] is also what
//! `GET /v1/schedules/{name}/next` answers for a stored schedule.

use axum::extract::State;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Unauthorized, Unprocessable};
use super::extract::Query;
use super::AppState;
use crate::schedule::spec::parse_schedule;
use crate::schedule::{DstPolicy, Schedule, Trigger};

/// Most fire times one preview returns.
const MAX_COUNT: u32 = 1000;

/// What to preview: exactly one of `cron`, `interval`, `run_at` (with
/// `start_at` only beside `interval`); the values are checked as a
/// schedule's are. Breaking these rules, which no schema of separate query
/// parameters can state, is a 422 naming the parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// A crontab expression (`0 6 * * 1-5`, 6 fields with seconds, `@daily`).
    pub cron: Option<String>,
    /// An interval such as `90s`, `15m` or `1h 30m`.
    pub interval: Option<String>,
    /// RFC 3339 anchor of the interval (default the Unix epoch).
    #[param(format = DateTime)]
    pub start_at: Option<String>,
    /// A one-time instant (RFC 3339, or local time in `timezone`).
    pub run_at: Option<String>,
    /// RFC 3339 instant after which no tick fires (as a schedule's `end_at`).
    #[param(format = DateTime)]
    pub end_at: Option<String>,
    /// IANA zone the expression is read in (default `UTC`).
    pub timezone: Option<String>,
    /// How many fire times, 1–1000 (default 10).
    #[param(minimum = 1, maximum = 1000)]
    pub count: Option<u32>,
    /// Fire times strictly after this RFC 3339 instant (default now, on the database clock).
    #[param(format = DateTime)]
    pub after: Option<String>,
}

/// One fire time.
#[derive(Debug, Serialize, ToSchema)]
pub struct FireTime {
    /// The instant, in UTC.
    pub at: DateTime<Utc>,
    /// The same instant as wall-clock time in the zone, with its offset.
    #[schema(example = "2027-03-15T06:00:00-04:00")]
    pub local: String,
}

/// The next fire times.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// `cron`, `interval` or `date`.
    pub schedule_type: String,
    /// The zone used.
    pub timezone: String,
    /// For cron: `fixed_time` (no `*` in minute and hour: a skipped local
    /// time runs after the jump, a repeated one once) or `wildcard`
    /// (follows real time).
    pub dst_policy: Option<String>,
    /// Fire times are strictly after this instant.
    pub after: DateTime<Utc>,
    /// The fire times, earliest first (fewer than asked when the schedule ends).
    pub fires: Vec<FireTime>,
}

impl Preview {
    /// The first `count` fire times of `schedule` strictly after `after`,
    /// through the schedule's own iteration (its `end_at` included), as the
    /// engine computes its ticks.
    pub(super) fn of(schedule: &Schedule, after: DateTime<Utc>, count: usize) -> Preview {
        let zone = schedule.timezone();
        let dst_policy = match schedule.trigger() {
            Trigger::Cron(expr) => Some(match expr.dst_policy() {
                DstPolicy::FixedTime => "fixed_time".to_string(),
                DstPolicy::Wildcard => "wildcard".to_string(),
            }),
            _ => None,
        };
        let fires = schedule
            .upcoming(after, count)
            .into_iter()
            .map(|at| FireTime {
                at,
                local: at
                    .with_timezone(&zone)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false),
            })
            .collect();
        Preview {
            schedule_type: schedule.schedule_type().as_str().to_string(),
            timezone: zone.name().to_string(),
            dst_policy,
            after,
            fires,
        }
    }
}

/// The engine's estimate of the database clock: no round trip needed.
pub(super) fn database_now(app: &AppState) -> DateTime<Utc> {
    let now = Utc::now();
    now.checked_add_signed(app.engine().clock_offset())
        .unwrap_or(now)
}

/// Preview a trigger's next fire times.
///
/// Validation is the same as for a stored schedule, so an error here is the
/// error creating the schedule would give. Nothing is stored.
#[utoipa::path(
    get,
    path = "/v1/preview",
    operation_id = "preview",
    tag = "preview",
    params(PreviewQuery),
    responses(
        (status = 200, description = "The next fire times", body = Preview),
        (status = 400, description = "A parameter of the wrong type, or an unknown one", body = ErrorBody),
        Unauthorized,
        Unprocessable,
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Query(q): Query<PreviewQuery>,
) -> Result<axum::Json<Preview>, ApiError> {
    let count = match q.count {
        None => 10,
        Some(n) if (1..=MAX_COUNT).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid(
                "count",
                format!("must be between 1 and {MAX_COUNT}, got {n}"),
            ))
        }
    };
    let after = match q.after.as_deref() {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::invalid(
                    "after",
                    format!("{t:?} is not an RFC 3339 instant ({e}), e.g. 2027-01-01T06:00:00Z"),
                )
            })?,
        None => database_now(&app),
    };
    // A stand-in name and pipeline: only the trigger is being checked.
    let mut input = Map::new();
    input.insert("name".into(), Value::from("preview"));
    input.insert("pipeline".into(), Value::from("preview"));
    for (key, value) in [
        ("cron", q.cron),
        ("interval", q.interval),
        ("start_at", q.start_at),
        ("run_at", q.run_at),
        ("end_at", q.end_at),
        ("timezone", q.timezone),
    ] {
        if let Some(v) = value {
            input.insert(key.into(), Value::from(v));
        }
    }
    let schedule = parse_schedule(&Value::Object(input))
        .map_err(ApiError::refused)?
        .schedule;
    Ok(axum::Json(Preview::of(&schedule, after, count as usize)))
}
