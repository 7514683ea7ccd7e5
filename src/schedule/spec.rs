//! Building a [`Schedule`] from loosely typed input (a YAML item, a JSON
//! body) or from its canonical [`Definition`] (a stored row), reporting
//! every problem at once: one key table ([`KEYS`]), one builder.
//!
//! Accepted keys (the seed's YAML format plus the engine's policies):
//!
//! | key | meaning |
//! |---|---|
//! | `name`, `pipeline` | required |
//! | `cron` (alias `cron_expression`) | crontab expression: makes a cron schedule |
//! | `interval` | minutes as a number (seed format), or a duration string (`90s`, `15m`, `1h 30m`) |
//! | `interval_seconds`, `interval_minutes`, `interval_hours` | the same, in explicit units |
//! | `start_at` | RFC 3339 anchor for interval schedules (default: the Unix epoch) |
//! | `run_at` | RFC 3339 instant, or a local `YYYY-MM-DDTHH:MM:SS` read in `timezone`: makes a one-time (`date`) schedule |
//! | `end_at` | RFC 3339 instant: no tick after it (default: never ends); after `start_at`/`run_at` |
//! | `schedule_type` | optional; when given it must agree with the keys above |
//! | `timezone` | IANA zone, default `UTC` |
//! | `params` | a mapping handed to the pipeline |
//! | `enabled` | default true |
//! | `max_instances` | default 1 |
//! | `overlap_policy` | `skip` (default), `buffer_one`, `buffer_all`, `allow_all`, `cancel_other`, `terminate_other` (see `schedule::OverlapPolicy`) |
//! | `misfire_grace_time` | seconds or a duration string, default 60 |
//! | `coalesce` | default true |
//! | `timeout` | seconds or a duration string, default none |
//! | `jitter` | seconds or a duration string, default 0 (none), at most 1 h: each tick falls due at a deterministic delay in `[0, jitter)`, before the next tick (`Schedule::jitter_delay`) |
//! | `retry` | `{max_attempts, backoff, backoff_max}`; default 1 attempt (no retry) |
//! | `description` | free text |

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::fields::Fields;
use super::{
    parse_timezone, validate_name, validate_pipeline, OverlapPolicy, RetryPolicy, Schedule,
    ScheduleType, Trigger, ValidationError, ValidationErrors,
};

/// What a key of a schedule sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Anything but when it fires.
    Setting,
    /// `schedule_type`: optional, must agree with the trigger key given.
    TypeName,
    /// A trigger key: it makes a schedule of this type. A number given for an
    /// interval key counts `unit_secs` seconds.
    Trigger {
        /// The type of schedule the key makes.
        kind: ScheduleType,
        /// Seconds per unit of a number (1 for keys that take no number).
        unit_secs: u64,
    },
}

/// One accepted key of a schedule definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// As written in files and API bodies.
    pub name: &'static str,
    /// What it sets.
    pub role: KeyRole,
}

const fn setting(name: &'static str) -> Key {
    Key {
        name,
        role: KeyRole::Setting,
    }
}

const fn trigger(name: &'static str, kind: ScheduleType, unit_secs: u64) -> Key {
    Key {
        name,
        role: KeyRole::Trigger { kind, unit_secs },
    }
}

/// Every key a schedule definition accepts, in the order error messages
/// list them: the one table the file reader, the API (its PATCH's trigger
/// keys, its documented input) and the store's typed rows go by.
pub const KEYS: &[Key] = &[
    setting("name"),
    setting("pipeline"),
    Key {
        name: "schedule_type",
        role: KeyRole::TypeName,
    },
    trigger("cron", ScheduleType::Cron, 1),
    trigger("cron_expression", ScheduleType::Cron, 1),
    trigger("interval", ScheduleType::Interval, 60),
    trigger("interval_seconds", ScheduleType::Interval, 1),
    trigger("interval_minutes", ScheduleType::Interval, 60),
    trigger("interval_hours", ScheduleType::Interval, 3600),
    setting("start_at"),
    trigger("run_at", ScheduleType::Date, 1),
    setting("end_at"),
    setting("timezone"),
    setting("params"),
    setting("enabled"),
    setting("max_instances"),
    setting("overlap_policy"),
    setting("misfire_grace_time"),
    setting("coalesce"),
    setting("timeout"),
    setting("jitter"),
    setting("retry"),
    setting("description"),
];

/// The keys of `retry`.
pub const RETRY_KEYS: &[&str] = &["max_attempts", "backoff", "backoff_max"];

/// The accepted key called `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

impl Key {
    /// True for the keys that say when a schedule fires (`schedule_type`
    /// and the trigger keys): naming one replaces the whole trigger.
    pub fn sets_trigger(&self) -> bool {
        self.role != KeyRole::Setting
    }

    /// The type of schedule a trigger key makes.
    pub fn makes(&self) -> Option<ScheduleType> {
        match self.role {
            KeyRole::Trigger { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// A schedule parsed from input, with what the input said explicitly.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSchedule {
    /// The validated schedule (with defaults filled in).
    pub schedule: Schedule,
    /// Whether `enabled` was given. A declarative `apply` leaves a schedule
    /// paused through the API alone unless the file states `enabled`.
    pub enabled_given: bool,
}

/// Builds a schedule from a JSON/YAML mapping, collecting every problem.
pub fn parse_schedule(input: &Value) -> Result<ParsedSchedule, ValidationErrors> {
    let Some(map) = input.as_object() else {
        return Err(ValidationError::new("schedule", "must be a mapping of keys to values").into());
    };
    let mut r = Fields::new(map);
    for k in map.keys().filter(|k| key(k).is_none()) {
        let expected: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        r.fail(
            k,
            format!("unknown key; expected one of: {}", expected.join(", ")),
        );
    }
    let name = r.required_str("name").filter(|n| r.check(validate_name(n)));
    let pipeline = r
        .required_str("pipeline")
        .filter(|p| r.check(validate_pipeline(p)));
    let zone = parse_timezone(r.opt_str("timezone").unwrap_or("UTC"));
    let zone = zone.map_err(|e| r.fail(&e.field, e.message)).ok();
    let trigger = read_trigger(&mut r);
    let params = read_params(&mut r);
    let enabled = r.opt_bool("enabled");
    let parts = Parts {
        name,
        pipeline,
        zone,
        trigger,
        params,
        enabled,
        max_instances: r.opt_u32("max_instances"),
        overlap_policy: r.opt_str("overlap_policy").and_then(|p| {
            OverlapPolicy::parse(p)
                .map_err(|e| r.fail(&e.field, e.message))
                .ok()
        }),
        misfire: r.opt_duration_secs("misfire_grace_time"),
        coalesce: r.opt_bool("coalesce"),
        timeout: r.opt_duration_secs("timeout"),
        jitter: r.opt_duration_secs("jitter"),
        retry: read_retry(&mut r),
        description: r.opt_str("description").map(str::to_string),
        start_at: r.opt_instant("start_at"),
        end_at: r.opt_instant("end_at"),
    };
    let schedule = parts.build(r.into_errors())?;
    Ok(ParsedSchedule {
        schedule,
        enabled_given: enabled.is_some(),
    })
}

/// When a schedule fires, as its input said it.
enum TriggerInput<'a> {
    Cron(&'a str),
    Interval(Duration),
    /// `run_at` as written: RFC 3339, or local time in the schedule's zone.
    Once(&'a str),
    /// `run_at` as an instant (a stored row).
    At(DateTime<Utc>),
}

/// A schedule's parts, each already typed and read on its own (the core's
/// absent ones having been reported); [`Parts::build`] makes one schedule of
/// them. Both ways in — loose input and stored rows — end here.
struct Parts<'a> {
    name: Option<&'a str>,
    pipeline: Option<&'a str>,
    /// `None` when the zone was invalid (and reported).
    zone: Option<Tz>,
    trigger: Option<TriggerInput<'a>>,
    params: Option<Map<String, Value>>,
    enabled: Option<bool>,
    max_instances: Option<u32>,
    overlap_policy: Option<OverlapPolicy>,
    misfire: Option<Duration>,
    coalesce: Option<bool>,
    timeout: Option<Duration>,
    jitter: Option<Duration>,
    retry: Option<RetryPolicy>,
    description: Option<String>,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
}

impl Parts<'_> {
    /// The schedule, or `errors` with every further problem found.
    fn build(self, mut errors: Vec<ValidationError>) -> Result<Schedule, ValidationErrors> {
        let base = match (self.name, self.pipeline, self.trigger) {
            (Some(name), Some(pipeline), Some(trigger)) => match trigger {
                TriggerInput::Cron(expr) => Schedule::cron(name, pipeline, expr).map(Some),
                TriggerInput::Interval(every) => {
                    Schedule::interval(name, pipeline, every).map(Some)
                }
                TriggerInput::Once(raw) => resolve_run_at(raw, self.zone)
                    .and_then(|t| t.map(|t| Schedule::once(name, pipeline, t)).transpose()),
                TriggerInput::At(t) => Schedule::once(name, pipeline, t).map(Some),
            },
            _ => Ok(None),
        };
        // When the core is unusable, the policies are still checked against a
        // stand-in so that one bad field does not hide the next.
        let mut schedule = match base {
            Ok(Some(s)) => s,
            Ok(None) => Schedule::stand_in(),
            Err(e) => {
                errors.push(e);
                Schedule::stand_in()
            }
        };
        // Apply each refinement, keeping the schedule and recording failures, so
        // that one bad field does not hide the next.
        let mut refine = |s: Schedule, step: Result<Schedule, ValidationError>| match step {
            Ok(next) => next,
            Err(e) => {
                errors.push(e);
                s
            }
        };
        if let Some(zone) = self.zone {
            schedule = refine(schedule.clone(), schedule.with_timezone(zone.name()));
        }
        if let Some(p) = self.params {
            schedule = refine(schedule.clone(), schedule.with_params(p));
        }
        if let Some(e) = self.enabled {
            schedule = schedule.with_enabled(e);
        }
        if let Some(m) = self.max_instances {
            schedule = refine(schedule.clone(), schedule.with_max_instances(m));
        }
        if let Some(p) = self.overlap_policy {
            schedule = schedule.with_overlap_policy(p);
        }
        if let Some(g) = self.misfire {
            schedule = refine(schedule.clone(), schedule.with_misfire_grace(g));
        }
        if let Some(c) = self.coalesce {
            schedule = schedule.with_coalesce(c);
        }
        if self.timeout.is_some() {
            schedule = refine(schedule.clone(), schedule.with_timeout(self.timeout));
        }
        if let Some(j) = self.jitter {
            schedule = refine(schedule.clone(), schedule.with_jitter(j));
        }
        if let Some(policy) = self.retry {
            schedule = schedule.with_retry(policy);
        }
        if self.description.is_some() {
            schedule = refine(
                schedule.clone(),
                schedule.with_description(self.description),
            );
        }
        if let Some(anchor) = self.start_at {
            schedule = refine(schedule.clone(), schedule.with_start_at(anchor));
        }
        // Last: it is checked against the trigger's anchor or instant.
        if self.end_at.is_some() {
            schedule = refine(schedule.clone(), schedule.with_end_at(self.end_at));
        }
        if errors.is_empty() {
            Ok(schedule)
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// The trigger key that decides, of the trigger keys `given` (in [`KEYS`]
/// order): exactly one, agreeing with `schedule_type` when declared.
fn choose_trigger(
    given: &[&'static Key],
    declared: Option<&str>,
) -> Result<&'static Key, ValidationError> {
    let names: Vec<&str> = given.iter().map(|k| k.name).collect();
    let more_than_one = || {
        ValidationError::new(
            "schedule",
            format!(
                "has more than one trigger ({}); keep exactly one",
                names.join(", ")
            ),
        )
    };
    let mut kinds: Vec<ScheduleType> = given.iter().filter_map(|k| k.makes()).collect();
    kinds.dedup();
    let inferred =
        match kinds[..] {
            [kind] => kind,
            [] => return Err(ValidationError::new(
                "schedule",
                "needs exactly one of cron, interval (or interval_seconds/minutes/hours) or run_at",
            )),
            _ => return Err(more_than_one()),
        };
    if let Some(d) = declared {
        if d != inferred.as_str() {
            return Err(ValidationError::new(
                "schedule_type",
                format!(
                    "is {d:?} but the keys given ({}) make it {:?}",
                    names.join(", "),
                    inferred.as_str()
                ),
            ));
        }
    }
    match given {
        [one] => Ok(one),
        _ => Err(more_than_one()),
    }
}

fn read_trigger<'a>(r: &mut Fields<'a>) -> Option<TriggerInput<'a>> {
    let given: Vec<&'static Key> = KEYS
        .iter()
        .filter(|k| k.makes().is_some() && r.present(k.name).is_some())
        .collect();
    let declared = r.opt_str("schedule_type");
    let key = choose_trigger(&given, declared)
        .map_err(|e| r.fail(&e.field, e.message))
        .ok()?;
    match key.role {
        KeyRole::Trigger {
            kind: ScheduleType::Cron,
            ..
        } => r.opt_str(key.name).map(TriggerInput::Cron),
        KeyRole::Trigger {
            kind: ScheduleType::Interval,
            unit_secs,
        } => {
            let v = r.present(key.name)?;
            r.duration(key.name, v, unit_secs)
                .map(TriggerInput::Interval)
        }
        _ => r.opt_str(key.name).map(TriggerInput::Once),
    }
}

fn read_params(r: &mut Fields<'_>) -> Option<Map<String, Value>> {
    match r.present("params")? {
        Value::Object(m) => Some(m.clone()),
        other => {
            r.fail(
                "params",
                format!("must be a mapping, got {}", super::fields::kind_of(other)),
            );
            None
        }
    }
}

fn read_retry(r: &mut Fields<'_>) -> Option<RetryPolicy> {
    let v = r.present("retry")?;
    let Some(m) = v.as_object() else {
        r.fail(
            "retry",
            "must be a mapping with max_attempts, backoff and backoff_max",
        );
        return None;
    };
    let defaults = RetryPolicy::default();
    for key in m.keys().filter(|k| !RETRY_KEYS.contains(&k.as_str())) {
        r.fail(
            &format!("retry.{key}"),
            "unknown key; expected max_attempts, backoff or backoff_max",
        );
    }
    let max_attempts = match m.get("max_attempts") {
        None => defaults.max_attempts(),
        Some(v) => match super::fields::whole(v).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                r.fail(
                    "retry.max_attempts",
                    format!("must be a whole number, got {v}"),
                );
                return None;
            }
        },
    };
    let backoff = match m.get("backoff") {
        None => defaults.backoff(),
        Some(v) => r.duration("retry.backoff", v, 1)?,
    };
    let backoff_max = match m.get("backoff_max") {
        None => defaults.backoff_max().max(backoff),
        Some(v) => r.duration("retry.backoff_max", v, 1)?,
    };
    RetryPolicy::new(max_attempts, backoff, backoff_max)
        .map_err(|e| r.fail(&e.field, e.message))
        .ok()
}

/// A schedule's definition in canonical form: the keys of the schedules
/// file, every one present (`null` when unset). What the API returns, what
/// a PATCH applies to, and what the store writes and reads back.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Definition {
    /// Unique name: 1–128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(example = "finra_otc_t1")]
    pub name: String,
    /// The pipeline a run executes (defined in the replicas' pipelines file).
    #[schema(example = "finra.otc_transparency.ingest_week")]
    pub pipeline: String,
    /// Which trigger it has.
    pub schedule_type: ScheduleType,
    /// The crontab expression (cron schedules).
    #[schema(example = "0 6 * * 1-5")]
    pub cron: Option<String>,
    /// Seconds between ticks (interval schedules).
    pub interval_seconds: Option<u64>,
    /// The instant interval ticks are counted from (interval schedules).
    pub start_at: Option<DateTime<Utc>>,
    /// The one instant it fires at (date schedules).
    pub run_at: Option<DateTime<Utc>>,
    /// No tick after this instant (`null`: it never ends). Ticks at or
    /// before it fire.
    pub end_at: Option<DateTime<Utc>>,
    /// IANA zone the cron fields are read in.
    #[schema(example = "America/New_York")]
    pub timezone: String,
    /// Handed to the pipeline.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// False while paused.
    pub enabled: bool,
    /// Runs of it allowed at once across the cluster.
    pub max_instances: u32,
    /// What a tick does when `max_instances` runs are unfinished.
    pub overlap_policy: OverlapPolicy,
    /// Seconds a tick may be late and still start (else it is recorded `missed`).
    pub misfire_grace_time: u64,
    /// A backlog of missed ticks runs once rather than once per tick.
    pub coalesce: bool,
    /// Seconds a run may take before it is cancelled.
    pub timeout: Option<u64>,
    /// Seconds over which ticks are spread (0: none): each tick falls due
    /// at a delay in `[0, jitter)` after it, the same on every replica, and
    /// before the next tick; `scheduled_at` stays the tick.
    pub jitter: u64,
    /// Retries of failed runs.
    pub retry: RetryDefinition,
    /// Free text.
    pub description: Option<String>,
}

/// A schedule's retry policy (durations in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct RetryDefinition {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Delay before the first retry, in seconds; doubles per attempt.
    pub backoff: u64,
    /// Longest delay between attempts, in seconds.
    pub backoff_max: u64,
}

impl Definition {
    /// The canonical definition of a schedule.
    pub fn of(s: &Schedule) -> Self {
        let (cron, interval_seconds, start_at, run_at) = match s.trigger() {
            Trigger::Cron(expr) => (Some(expr.as_str().to_string()), None, None, None),
            Trigger::Interval { every, start_at } => {
                (None, Some(every.as_secs()), Some(*start_at), None)
            }
            Trigger::Once { run_at } => (None, None, None, Some(*run_at)),
        };
        Definition {
            name: s.name().to_string(),
            pipeline: s.pipeline().to_string(),
            schedule_type: s.schedule_type(),
            cron,
            interval_seconds,
            start_at,
            run_at,
            end_at: s.end_at(),
            timezone: s.timezone().name().to_string(),
            params: s.params().clone(),
            enabled: s.enabled(),
            max_instances: s.max_instances(),
            overlap_policy: s.overlap_policy(),
            misfire_grace_time: s.misfire_grace().as_secs(),
            coalesce: s.coalesce(),
            timeout: s.timeout().map(|t| t.as_secs()),
            jitter: s.jitter().as_secs(),
            retry: RetryDefinition {
                max_attempts: s.retry().max_attempts(),
                backoff: s.retry().backoff().as_secs(),
                backoff_max: s.retry().backoff_max().as_secs(),
            },
            description: s.description().map(str::to_string),
        }
    }

    /// The schedule this definition describes, through the same checks as
    /// files and API bodies (a stored row edited into nonsense is refused
    /// here, every problem named).
    pub fn to_schedule(&self) -> Result<Schedule, ValidationErrors> {
        let mut errors = Vec::new();
        let mut check = |r: Result<(), ValidationError>| r.map_err(|e| errors.push(e)).is_ok();
        let name = Some(self.name.as_str()).filter(|n| check(validate_name(n)));
        let pipeline = Some(self.pipeline.as_str()).filter(|p| check(validate_pipeline(p)));
        let zone = parse_timezone(&self.timezone)
            .map_err(|e| errors.push(e))
            .ok();
        let given: Vec<(&'static Key, TriggerInput<'_>)> = [
            ("cron", self.cron.as_deref().map(TriggerInput::Cron)),
            (
                "interval_seconds",
                self.interval_seconds
                    .map(|s| TriggerInput::Interval(Duration::from_secs(s))),
            ),
            ("run_at", self.run_at.map(TriggerInput::At)),
        ]
        .into_iter()
        .filter_map(|(name, input)| Some((key(name)?, input?)))
        .collect();
        let keys: Vec<&'static Key> = given.iter().map(|(k, _)| *k).collect();
        let trigger = match choose_trigger(&keys, Some(self.schedule_type.as_str())) {
            Ok(_) => given.into_iter().next().map(|(_, input)| input),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let retry = RetryPolicy::new(
            self.retry.max_attempts,
            Duration::from_secs(self.retry.backoff),
            Duration::from_secs(self.retry.backoff_max),
        )
        .map_err(|e| errors.push(e))
        .ok();
        Parts {
            name,
            pipeline,
            zone,
            trigger,
            params: Some(self.params.clone()),
            enabled: Some(self.enabled),
            max_instances: Some(self.max_instances),
            overlap_policy: Some(self.overlap_policy),
            misfire: Some(Duration::from_secs(self.misfire_grace_time)),
            coalesce: Some(self.coalesce),
            timeout: self.timeout.map(Duration::from_secs),
            jitter: Some(Duration::from_secs(self.jitter)),
            retry,
            description: self.description.clone(),
            start_at: self.start_at,
            end_at: self.end_at,
        }
        .build(errors)
    }
}

/// `run_at` as RFC 3339, or as a local time in the schedule's zone (as the
/// seed's `DateTrigger(run_date, timezone)` read it).
fn resolve_run_at(
    raw: &str,
    zone: Option<chrono_tz::Tz>,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .ok_or_else(|| {
            ValidationError::new(
                "run_at",
                format!("{raw:?} is not a date-time; write 2027-01-01T06:00:00Z or a local 2027-01-01T06:00:00"),
            )
        })?;
    // Without a valid zone the timezone error has been reported already.
    let Some(zone) = zone else { return Ok(None) };
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(Some(t.with_timezone(&Utc))),
        LocalResult::Ambiguous(first, _) => Ok(Some(first.with_timezone(&Utc))),
        LocalResult::None => Err(ValidationError::new(
            "run_at",
            format!("{raw} does not exist in {zone} (the clocks skip it); pick another time or give an offset"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(r: Result<ParsedSchedule, ValidationErrors>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(ValidationErrors(v)) => v.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn seed_item_parses() -> Result<(), ValidationErrors> {
        let p = parse_schedule(&json!({
            "name": "finra_otc_t1",
            "pipeline": "finra.otc_transparency.ingest_week",
            "cron": "0 6 * * 1-5",
            "timezone": "America/New_York",
            "params": {"tier": "T1"}
        }))?;
        assert_eq!(p.schedule.params()["tier"], "T1");
        assert!(!p.enabled_given);
        let hourly = parse_schedule(
            &json!({"name": "hourly_prices", "pipeline": "prices.ingest", "interval": 60}),
        )?;
        assert_eq!(
            hourly.schedule.trigger(),
            &super::super::Trigger::Interval {
                every: Duration::from_secs(3600),
                start_at: DateTime::UNIX_EPOCH
            }
        );
        Ok(())
    }

    #[test]
    fn every_problem_is_reported() {
        let got = fields(parse_schedule(&json!({
            "name": "bad name",
            "pipeline": "p",
            "cron": "0 25 * * *",
            "timezone": "Nowhere/Land",
            "max_instances": 0,
            "colesce": true
        })));
        for want in ["colesce", "timezone", "name"] {
            assert!(got.contains(&want.to_string()), "{want} missing in {got:?}");
        }
        let got = fields(parse_schedule(&json!({
            "name": "ok", "pipeline": "p", "cron": "0 25 * * *", "max_instances": 0, "timeout": "soon"
        })));
        assert_eq!(got, ["timeout", "cron", "max_instances"]);
    }

    #[test]
    fn exactly_one_trigger() {
        assert_eq!(
            fields(parse_schedule(&json!({"name": "a", "pipeline": "p"}))),
            ["schedule"]
        );
        assert_eq!(
            fields(parse_schedule(
                &json!({"name": "a", "pipeline": "p", "cron": "* * * * *", "interval": 5})
            )),
            ["schedule"]
        );
        assert_eq!(
            fields(parse_schedule(
                &json!({"name": "a", "pipeline": "p", "cron": "* * * * *", "schedule_type": "interval"})
            )),
            ["schedule_type"]
        );
    }

    #[test]
    fn durations_and_run_at() -> Result<(), ValidationErrors> {
        let p = parse_schedule(&json!({
            "name": "a", "pipeline": "p", "interval": "90s", "timeout": "1h 30m",
            "retry": {"max_attempts": 3, "backoff": "30s"}
        }))?;
        assert_eq!(p.schedule.timeout(), Some(Duration::from_secs(5400)));
        assert_eq!(p.schedule.retry().max_attempts(), 3);
        let once = parse_schedule(&json!({
            "name": "a", "pipeline": "p", "run_at": "2027-07-01T06:00:00", "timezone": "Europe/Berlin"
        }))?;
        assert_eq!(
            once.schedule
                .next_fire_after(DateTime::UNIX_EPOCH)
                .map(|t| t.to_rfc3339()),
            Some("2027-07-01T04:00:00+00:00".to_string())
        );
        assert_eq!(
            fields(parse_schedule(&json!({
                "name": "a", "pipeline": "p", "run_at": "2027-03-14T02:30:00", "timezone": "America/New_York"
            }))),
            ["run_at"]
        );
        Ok(())
    }

    #[test]
    fn end_at_is_a_key() -> Result<(), ValidationErrors> {
        let p = parse_schedule(&json!({
            "name": "a", "pipeline": "p", "cron": "@daily", "end_at": "2027-12-31T00:00:00Z"
        }))?;
        let end = DateTime::parse_from_rfc3339("2027-12-31T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(p.schedule.end_at(), end);
        assert_eq!(Definition::of(&p.schedule).end_at, end);
        assert_eq!(Definition::of(&p.schedule).to_schedule()?, p.schedule);
        assert_eq!(
            fields(parse_schedule(&json!({
                "name": "a", "pipeline": "p", "cron": "@daily", "end_at": "soon"
            }))),
            ["end_at"]
        );
        assert_eq!(
            fields(parse_schedule(&json!({
                "name": "a", "pipeline": "p", "interval": "1m",
                "start_at": "2027-01-01T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"
            }))),
            ["end_at"]
        );
        Ok(())
    }

    #[test]
    fn jitter_is_a_key() -> Result<(), ValidationErrors> {
        let p = parse_schedule(&json!({
            "name": "a", "pipeline": "p", "cron": "@daily", "jitter": "30s"
        }))?;
        assert_eq!(p.schedule.jitter(), Duration::from_secs(30));
        assert_eq!(Definition::of(&p.schedule).jitter, 30);
        assert_eq!(Definition::of(&p.schedule).to_schedule()?, p.schedule);
        let n =
            parse_schedule(&json!({"name": "a", "pipeline": "p", "cron": "@daily", "jitter": 5}))?;
        assert_eq!(n.schedule.jitter(), Duration::from_secs(5));
        let none = parse_schedule(&json!({"name": "a", "pipeline": "p", "cron": "@daily"}))?;
        assert_eq!(none.schedule.jitter(), Duration::ZERO);
        for bad in [
            json!(-1),
            json!("2h"),
            json!("soon"),
            json!(1.5),
            json!("1500ms"),
        ] {
            assert_eq!(
                fields(parse_schedule(&json!({
                    "name": "a", "pipeline": "p", "cron": "@daily", "jitter": bad
                }))),
                ["jitter"],
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_definition_round_trips_and_refuses_nonsense() -> Result<(), ValidationErrors> {
        let body = json!({
            "name": "a", "pipeline": "p", "interval": "90s", "start_at": "2027-01-01T00:00:00Z",
            "timezone": "Europe/Berlin", "timeout": 30, "retry": {"max_attempts": 2}
        });
        let s = parse_schedule(&body)?.schedule;
        assert_eq!(Definition::of(&s).to_schedule()?, s);
        let mut bad = Definition::of(&s);
        bad.cron = Some("0 25 * * *".into());
        bad.max_instances = 0;
        assert_eq!(
            fields(bad.to_schedule().map(|schedule| ParsedSchedule {
                schedule,
                enabled_given: true
            })),
            ["schedule", "max_instances"]
        );
        Ok(())
    }
}
