//! The original's response models: `ScheduleResponse`, the `JobRun`
//! record, and the small acknowledgements of its actions.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::runs::{RunStatusName, RunView};
use crate::schedule::spec::Definition;
use crate::schedule::ScheduleType;
use crate::store::runs::Run;
use crate::store::schedules::StoredSchedule;

/// A schedule as the original's `ScheduleResponse` showed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleResponse {
    /// Its name.
    pub name: String,
    /// The pipeline its runs execute.
    pub pipeline: String,
    /// `cron`, `interval`, or `date` (a one-time `run_at` schedule, the
    /// original's `ScheduleType.DATE`; neither `cron_expression` nor
    /// `interval_minutes` is set for it).
    pub schedule_type: ScheduleType,
    /// The crontab expression (cron schedules), else `null`.
    #[schema(required = true)]
    pub cron_expression: Option<String>,
    /// Minutes between runs (interval schedules), else `null`; also `null`
    /// for an interval that is not a whole number of minutes (e.g. `90s`,
    /// set through `/v1`).
    #[schema(required = true, minimum = 1)]
    pub interval_minutes: Option<u64>,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// False while paused.
    pub enabled: bool,
    /// Its next run, ISO 8601 with the offset of its time zone (as
    /// APScheduler's `next_run_time.isoformat()`, e.g.
    /// `2027-01-04T06:00:00-05:00`); `null` while paused, and once it has
    /// ended.
    #[schema(required = true, format = DateTime)]
    pub next_run: Option<String>,
}

impl ScheduleResponse {
    /// The view of `stored` at `now` (the database clock).
    pub fn of(stored: &StoredSchedule, now: DateTime<Utc>) -> Self {
        let s = &stored.schedule;
        let d = Definition::of(s);
        let next_run = s.next_fire_after(now).filter(|_| s.enabled()).map(|t| {
            t.with_timezone(&s.timezone())
                .to_rfc3339_opts(SecondsFormat::AutoSi, false)
        });
        ScheduleResponse {
            name: d.name,
            pipeline: d.pipeline,
            schedule_type: d.schedule_type,
            cron_expression: d.cron,
            interval_minutes: d
                .interval_seconds
                .filter(|secs| secs % 60 == 0)
                .map(|secs| secs / 60),
            timezone: d.timezone,
            enabled: d.enabled,
            next_run,
        }
    }
}

/// A run as the original's `JobRun` record.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobRun {
    /// The run's id (a UUID here; the original's were 8 hex digits).
    #[schema(format = Uuid)]
    pub run_id: String,
    /// Its schedule.
    pub schedule_name: String,
    /// The pipeline it runs.
    pub pipeline: String,
    /// The original's `pending`, `running`, `completed`, `failed`,
    /// `skipped`; and this scheduler's additions: `missed` (it could not
    /// start within its misfire grace), `abandoned` (its replica died
    /// while running it), `cancelled` (stopped on request).
    pub status: RunStatusName,
    /// The tick it ran for (a manual run: when it was asked for).
    pub scheduled_at: DateTime<Utc>,
    /// When the pipeline started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it failed (or was skipped, missed, abandoned, cancelled).
    #[schema(required = true)]
    pub error: Option<String>,
    /// What the pipeline returned: an object (a result that is not one
    /// is shown as `{"value": …}`).
    #[schema(required = true, value_type = Option<Object>)]
    pub result: Option<Map<String, Value>>,
    /// `completed_at − started_at` in seconds, once both are known.
    #[schema(required = true)]
    pub duration_seconds: Option<f64>,
}

impl From<Run> for JobRun {
    fn from(run: Run) -> Self {
        let v = RunView::from(run);
        JobRun {
            run_id: v.run_id.to_string(),
            schedule_name: v.schedule,
            pipeline: v.pipeline,
            status: v.status,
            scheduled_at: v.scheduled_at,
            started_at: v.started_at,
            completed_at: v.completed_at,
            error: v.error,
            result: v.result.map(|r| match r {
                Value::Object(m) => m,
                other => Map::from_iter([("value".to_string(), other)]),
            }),
            duration_seconds: v.duration_seconds,
        }
    }
}

/// The answer of a delete.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The name deleted.
    pub deleted: String,
}

/// The answer of a run now.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    /// The new run (`pending` until a replica starts it, about a second);
    /// its record is at `/scheduler/runs/{run_id}`.
    #[schema(format = Uuid)]
    pub run_id: String,
}

/// The answer of a pause.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paused {
    /// The name paused.
    pub paused: String,
}

/// The answer of a resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resumed {
    /// The name resumed.
    pub resumed: String,
}
