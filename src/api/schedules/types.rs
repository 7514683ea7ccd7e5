//! The shapes of `/v1/schedules`: what it returns, its list query, and its
//! documented input (bodies themselves are read by `spec::parse_schedule`,
//! whose key table [`KEYS`](crate::schedule::spec::KEYS) the input is
//! checked against), and the error responses its operations share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, IntoResponses, ToSchema};
use uuid::Uuid;

use crate::api::error::ErrorBody;
use crate::api::preview::Preview;
use crate::api::runs::{RunStatusName, TriggerName};
use crate::schedule::ownership::Manager;
use crate::schedule::spec::Definition;
use crate::store::api_queries::LastRun;
use crate::store::schedules::{Pause, StoredSchedule};

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
    /// When its pipeline started (`null` until it has).
    pub started_at: Option<DateTime<Utc>>,
    /// How late it started: `started_at − scheduled_at` in seconds, for
    /// ticks (trigger `schedule`) that have started; `null` otherwise.
    pub lag_seconds: Option<f64>,
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
            started_at: r.started_at,
            lag_seconds: r
                .started_at
                .filter(|_| matches!(r.trigger, crate::types::RunTrigger::Schedule))
                .map(|s| (s - r.scheduled_at).num_microseconds().unwrap_or(0) as f64 / 1e6),
            completed_at: r.completed_at,
        }
    }
}

/// Why and since when a schedule is paused, as its pause said.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseView {
    /// When it was paused (`null` for schedules paused before this was recorded).
    pub at: Option<DateTime<Utc>>,
    /// Who paused it, as the pause said (`by`).
    pub by: Option<String>,
    /// Why, as the pause said (`note`).
    pub note: Option<String>,
}

impl From<&Pause> for PauseView {
    fn from(p: &Pause) -> Self {
        PauseView {
            at: p.at,
            by: p.by.clone(),
            note: p.note.clone(),
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
    /// Its next tick on the database clock (`null` when paused, or when it
    /// has ended).
    pub next_run: Option<DateTime<Utc>>,
    /// True when it will never fire again: its `end_at` has passed, or (a
    /// one-time schedule) its `run_at` has. Paused or not; it can still be
    /// run by hand, and a PATCH of `end_at` brings it back.
    pub ended: bool,
    /// While paused (`enabled` false): since when, by whom and why; `null`
    /// while enabled. Kept until it is resumed.
    pub pause: Option<PauseView>,
    /// Its newest run, if it has one.
    pub last_run: Option<LastRunView>,
    /// Who manages its definition: the API, or a schedules file by its
    /// source name. `null` for a schedule stored before managers were
    /// recorded, until an apply adopts it or the API changes it.
    pub managed_by: Option<ManagerView>,
}

/// Who manages a schedule's definition (see README, "Schedules from files
/// and from the API").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ManagerView {
    /// Created or taken over through the API; files leave it alone.
    Api,
    /// Created or adopted by a schedules file; the API changes its
    /// definition only with `take_over=true`.
    File {
        /// The file's source name (`apply --source`, its `source:` key, or
        /// its file name).
        source: String,
    },
}

impl From<&Manager> for ManagerView {
    fn from(m: &Manager) -> Self {
        match m {
            Manager::Api => ManagerView::Api,
            Manager::File { source } => ManagerView::File {
                source: source.clone(),
            },
        }
    }
}

impl ScheduleView {
    pub(super) fn of(s: &StoredSchedule, now: DateTime<Utc>, last: Option<&LastRun>) -> Self {
        let next = s.schedule.next_fire_after(now);
        ScheduleView {
            definition: Definition::of(&s.schedule),
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
            next_run: next.filter(|_| s.schedule.enabled()),
            ended: next.is_none(),
            pause: s.pause.as_ref().map(PauseView::from),
            last_run: last.map(LastRunView::from),
            managed_by: s.manager.as_ref().map(ManagerView::from),
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

impl SchedulePage {
    /// A last page with nothing on it.
    pub(super) fn empty() -> Self {
        SchedulePage {
            items: Vec::new(),
            invalid: Vec::new(),
            next_cursor: None,
        }
    }
}

/// Filters and paging of the schedule list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only enabled (`true`) or only paused (`false`) schedules.
    pub enabled: Option<bool>,
    /// Only paused (`true`) or only enabled (`false`) schedules. With
    /// `enabled` too, both apply: `enabled=true&paused=true` matches
    /// nothing (an empty page).
    pub paused: Option<bool>,
    /// Only schedules of this pipeline.
    pub pipeline: Option<String>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (422 for one this listing
    /// did not issue).
    #[param(pattern = r"^s1\.([0-9a-fA-F]{2}){0,512}$")]
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

/// A schedule definition (POST): the keys of the schedules file. Exactly
/// one of `cron` (or `cron_expression`), `interval` (or
/// `interval_seconds`, `interval_minutes`, `interval_hours`) and `run_at`.
/// Unknown keys are refused. PUT and PATCH take [`ScheduleUpdateInput`].
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct ScheduleInput {
    /// Unique name: 1–128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(schema_with = crate::api::params::schedule_name)]
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
    #[schema(format = DateTime)]
    pub start_at: Option<String>,
    /// RFC 3339 instant, or local `YYYY-MM-DDTHH:MM:SS` in `timezone`: fires once.
    pub run_at: Option<String>,
    /// RFC 3339 instant: no tick after it (ticks at it still fire). Must be
    /// after `start_at`/`run_at`; one already past makes an ended schedule.
    #[schema(format = DateTime)]
    pub end_at: Option<String>,
    /// IANA zone (default `UTC`).
    #[schema(example = "America/New_York")]
    pub timezone: Option<String>,
    /// Handed to the pipeline (at most 64 KiB as JSON).
    #[schema(value_type = Option<Object>)]
    pub params: Option<Map<String, Value>>,
    /// Default true; false creates it paused. Omitted in a PUT: unchanged.
    pub enabled: Option<bool>,
    /// Runs allowed at once across the cluster, 1–1000 (default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_instances: Option<u32>,
    /// What a tick does when `max_instances` runs are unfinished (default
    /// `skip`): `buffer_one`/`buffer_all` wait, `allow_all` ignores the
    /// limit, `cancel_other`/`terminate_other` stop the unfinished runs.
    pub overlap_policy: Option<crate::schedule::OverlapPolicy>,
    /// How late a tick may start (default 60 seconds).
    pub misfire_grace_time: Option<SecondsOrDuration>,
    /// Run a backlog of missed ticks once (default true).
    pub coalesce: Option<bool>,
    /// Cancel runs that take longer (default none).
    pub timeout: Option<SecondsOrDuration>,
    /// Spread of the ticks' start, 0 to 1 hour (default 0: none): each tick
    /// falls due at a delay in `[0, jitter)` after it, the same on every
    /// replica and always before the next tick. The ledger keeps the tick
    /// in `scheduled_at` and the real start in `started_at`.
    pub jitter: Option<SecondsOrDuration>,
    /// Retries of failed runs.
    pub retry: Option<RetryInput>,
    /// Free text, up to 1000 characters.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
}

/// The body of a PUT (`patch: false`) or a PATCH (`patch: true`):
/// [`ScheduleInput`]'s keys, `name` optional (it must be the path's), plus
/// `version` (like `If-Match`). PUT and PATCH also ignore the read-only keys
/// a GET returns (`created_at`, `updated_at`, `next_run`, `ended`, `pause`,
/// `last_run`), so a GET's output can be sent back; they are not input and
/// so not in this schema. In a PATCH every key is optional and `null`
/// resets a key to its default.
fn update_schema(patch: bool) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut object)) = <ScheduleInput as utoipa::PartialSchema>::schema()
    else {
        return <ScheduleInput as utoipa::PartialSchema>::schema();
    };
    object.required.retain(|k| !patch && k != "name");
    object.properties.insert(
        "version".into(),
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some(
                "The version the change is based on (409 if stale); as If-Match",
            ))
            .into(),
    );
    object.description = Some(if patch {
        "A JSON merge patch (RFC 7396) of a schedule's keys: any subset; `null` resets \
         a key to its default. `version` is as If-Match."
            .into()
    } else {
        "A schedule's full definition (keys left out take their defaults, except \
         `enabled`); `name`, if given, must be the path's. `version` is as If-Match."
            .into()
    });
    Schema::Object(object).into()
}

/// The body of a PUT (see [`update_schema`]).
#[allow(dead_code)] // documentation only
pub struct ScheduleReplaceInput;

impl utoipa::PartialSchema for ScheduleReplaceInput {
    fn schema() -> RefOr<Schema> {
        update_schema(false)
    }
}

impl ToSchema for ScheduleReplaceInput {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <ScheduleInput as ToSchema>::schemas(schemas);
    }
}

/// The body of a PATCH (see [`update_schema`]).
#[allow(dead_code)] // documentation only
pub struct SchedulePatchInput;

impl utoipa::PartialSchema for SchedulePatchInput {
    fn schema() -> RefOr<Schema> {
        update_schema(true)
    }
}

impl ToSchema for SchedulePatchInput {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <ScheduleInput as ToSchema>::schemas(schemas);
    }
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
    /// The params the run is given: the schedule's, with the request's
    /// `params` merged over them.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// The optional body of a run-now request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: read by `controls::RunRequest`
pub struct RunNowInput {
    /// Merged over the schedule's params for this run only: each top-level
    /// key replaces the schedule's (a shallow merge, not a merge patch:
    /// `null` is passed as `null`, a nested object replaces the whole
    /// value). At most 64 KiB as JSON once merged.
    #[schema(value_type = Option<Object>, example = json!({"days": 30}))]
    pub params: Option<Map<String, Value>>,
}

/// The optional body of a pause.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: read by `controls::PauseNote`
pub struct PauseInput {
    /// Why it is paused (up to 1000 characters); shown with the schedule
    /// until it is resumed.
    #[schema(
        example = "upstream feed down, see INC-1234",
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub note: Option<String>,
    /// Who paused it (up to 200 characters), in the caller's words; the
    /// schedule's history also names the token that paused it.
    #[schema(
        example = "alice",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    pub by: Option<String>,
}

/// The explicit take-over of a file-managed schedule by a definition
/// change (PUT, PATCH, DELETE).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TakeOverQuery {
    /// `true`: change a schedule a schedules file manages, which the API
    /// manages from then on (the file's next apply leaves it alone and
    /// reports so). Without it such a change is a 409 naming the file.
    /// Pausing and resuming need no take-over.
    pub take_over: Option<bool>,
}

/// How many fire times of a stored schedule.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// How many, 1–100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub count: Option<u32>,
}

/// The next fire times of a stored schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextFires {
    /// The schedule.
    pub name: String,
    /// True while it is paused: then `fires` is empty (resume it to fire;
    /// `/v1/preview` shows a trigger's times regardless).
    pub paused: bool,
    /// No tick after this instant.
    pub end_at: Option<DateTime<Utc>>,
    /// True when it will never fire again (its `end_at` or one-time
    /// `run_at` has passed).
    pub ended: bool,
    /// The fire times, as `/v1/preview` computes them.
    #[serde(flatten)]
    pub preview: Preview,
}

/// 400: the name in the path is not a schedule name.
#[derive(IntoResponses)]
#[response(status = 400, description = "Invalid name")]
#[allow(dead_code)] // documentation only
pub struct InvalidName(ErrorBody);

/// 404: no schedule has the name in the path.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such schedule")]
#[allow(dead_code)] // documentation only
pub struct NoSuchSchedule(ErrorBody);

/// 400: the optional body is not a JSON object of the control's keys.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Invalid path parameter, or a body that is not a JSON object of the control's keys (each unknown key is named)"
)]
#[allow(dead_code)] // documentation only
pub struct InvalidControl(ErrorBody);

/// 409: the version given (`If-Match` or `version`) is not the stored one
/// (`version_conflict`), or a schedules file manages the schedule and the
/// request did not take it over (`managed_by_file`, naming the file).
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "Stale version (`version_conflict`), or the schedule is managed by a schedules file and `take_over=true` was not given (`managed_by_file`)"
)]
#[allow(dead_code)] // documentation only
pub struct StaleVersion(ErrorBody);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::spec::{KEYS, RETRY_KEYS};

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
        let mut want: Vec<String> = KEYS.iter().map(|k| k.name.to_string()).collect();
        want.sort();
        assert_eq!(properties::<ScheduleInput>(), want);
        want.push("version".into());
        want.sort();
        assert_eq!(properties::<ScheduleReplaceInput>(), want);
        assert_eq!(properties::<SchedulePatchInput>(), want);
        let required =
            |s: RefOr<Schema>| serde_json::to_value(s).unwrap_or_default()["required"].clone();
        assert_eq!(
            required(<ScheduleInput as utoipa::PartialSchema>::schema()),
            serde_json::json!(["name", "pipeline"])
        );
        assert_eq!(
            required(update_schema(false)),
            serde_json::json!(["pipeline"])
        );
        assert_eq!(required(update_schema(true)), Value::Null);
    }

    #[test]
    fn the_documented_limits_are_the_code_s() {
        use crate::schedule::{MAX_DESCRIPTION_LEN, MAX_INSTANCES};
        let schema = serde_json::to_value(<ScheduleInput as utoipa::PartialSchema>::schema())
            .unwrap_or_default();
        let p = &schema["properties"];
        assert_eq!(p["max_instances"]["minimum"], 1);
        assert_eq!(p["max_instances"]["maximum"], MAX_INSTANCES);
        assert_eq!(p["description"]["maxLength"], MAX_DESCRIPTION_LEN);
        assert_eq!(schema["additionalProperties"], false);
        let mut retry: Vec<String> = RETRY_KEYS.iter().map(|k| k.to_string()).collect();
        retry.sort();
        assert_eq!(properties::<RetryInput>(), retry);
        use crate::schedule::controls::{MAX_PAUSED_BY_LEN, MAX_PAUSE_NOTE_LEN};
        let pause = serde_json::to_value(<PauseInput as utoipa::PartialSchema>::schema())
            .unwrap_or_default();
        let p = &pause["properties"];
        assert_eq!(p["note"]["maxLength"], MAX_PAUSE_NOTE_LEN);
        assert_eq!(p["by"]["maxLength"], MAX_PAUSED_BY_LEN);
        for key in ["note", "by"] {
            assert_eq!(p[key]["minLength"], 1, "{key}");
            assert_eq!(
                p[key]["pattern"], r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
                "{key}"
            );
        }
    }
}
