//! Building a [`Schedule`] from loosely typed input (a YAML item, a JSON
//! body), reporting every problem at once.
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
//! | `schedule_type` | optional; when given it must agree with the keys above |
//! | `timezone` | IANA zone, default `UTC` |
//! | `params` | a mapping handed to the pipeline |
//! | `enabled` | default true |
//! | `max_instances` | default 1 |
//! | `misfire_grace_time` | seconds or a duration string, default 60 |
//! | `coalesce` | default true |
//! | `timeout` | seconds or a duration string, default none |
//! | `retry` | `{max_attempts, backoff, backoff_max}`; default 1 attempt (no retry) |
//! | `description` | free text |

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{
    parse_timezone, validate_name, validate_pipeline, RetryPolicy, Schedule, ScheduleType,
    ValidationError, ValidationErrors,
};

const KNOWN_KEYS: &[&str] = &[
    "name",
    "pipeline",
    "schedule_type",
    "cron",
    "cron_expression",
    "interval",
    "interval_seconds",
    "interval_minutes",
    "interval_hours",
    "start_at",
    "run_at",
    "timezone",
    "params",
    "enabled",
    "max_instances",
    "misfire_grace_time",
    "coalesce",
    "timeout",
    "retry",
    "description",
];

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
    let mut errors = Vec::new();
    for key in map.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            errors.push(ValidationError::new(
                key.clone(),
                format!("unknown key; expected one of: {}", KNOWN_KEYS.join(", ")),
            ));
        }
    }
    let mut r = Reader {
        map,
        errors: &mut errors,
    };
    let name = r.required_str("name").filter(|n| r.check(validate_name(n)));
    let pipeline = r
        .required_str("pipeline")
        .filter(|p| r.check(validate_pipeline(p)));
    let timezone = r.opt_str("timezone").unwrap_or("UTC").to_string();
    let zone = match parse_timezone(&timezone) {
        Ok(z) => Some(z),
        Err(e) => {
            r.errors.push(e);
            None
        }
    };
    let kind = r.trigger_kind();
    let params = r.params();
    let enabled = r.opt_bool("enabled");
    let max_instances = r.opt_u32("max_instances");
    let misfire = r.opt_duration_secs("misfire_grace_time");
    let coalesce = r.opt_bool("coalesce");
    let timeout = r.opt_duration_secs("timeout");
    let retry = r.retry();
    let description = r.opt_str("description").map(str::to_string);
    let start_at = r.opt_instant("start_at");

    let base = match (name, pipeline, kind) {
        (Some(name), Some(pipeline), Some(kind)) => match kind {
            TriggerInput::Cron(expr) => Schedule::cron(name, pipeline, expr).map(Some),
            TriggerInput::Interval(every) => Schedule::interval(name, pipeline, every).map(Some),
            TriggerInput::Once(raw) => resolve_run_at(raw, zone)
                .and_then(|t| t.map(|t| Schedule::once(name, pipeline, t)).transpose()),
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
    if zone.is_some() {
        schedule = refine(schedule.clone(), schedule.with_timezone(&timezone));
    }
    if let Some(p) = params {
        schedule = refine(schedule.clone(), schedule.with_params(p));
    }
    if let Some(e) = enabled {
        schedule = schedule.with_enabled(e);
    }
    if let Some(m) = max_instances {
        schedule = refine(schedule.clone(), schedule.with_max_instances(m));
    }
    if let Some(g) = misfire {
        schedule = refine(schedule.clone(), schedule.with_misfire_grace(g));
    }
    if let Some(c) = coalesce {
        schedule = schedule.with_coalesce(c);
    }
    if timeout.is_some() {
        schedule = refine(schedule.clone(), schedule.with_timeout(timeout));
    }
    if let Some(policy) = retry {
        schedule = schedule.with_retry(policy);
    }
    if description.is_some() {
        schedule = refine(schedule.clone(), schedule.with_description(description));
    }
    if let Some(anchor) = start_at {
        schedule = refine(schedule.clone(), schedule.with_start_at(anchor));
    }
    if errors.is_empty() {
        Ok(ParsedSchedule {
            schedule,
            enabled_given: enabled.is_some(),
        })
    } else {
        Err(ValidationErrors(errors))
    }
}

enum TriggerInput<'a> {
    Cron(&'a str),
    Interval(Duration),
    Once(&'a str),
}

struct Reader<'a, 'e> {
    map: &'a Map<String, Value>,
    errors: &'e mut Vec<ValidationError>,
}

impl<'a> Reader<'a, '_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ValidationError::new(field, message));
    }

    /// Records the error, if any; true when there was none.
    fn check(&mut self, result: Result<(), ValidationError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                self.errors.push(e);
                false
            }
        }
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required_str(&mut self, key: &str) -> Option<&'a str> {
        match self.present(key) {
            None => {
                self.fail(key, "is required");
                None
            }
            Some(_) => self.opt_str(key),
        }
    }

    fn opt_str(&mut self, key: &str) -> Option<&'a str> {
        match self.present(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                self.fail(key, format!("must be a string, got {}", kind_of(other)));
                None
            }
        }
    }

    fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.present(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.fail(
                    key,
                    format!("must be true or false, got {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn opt_u32(&mut self, key: &str) -> Option<u32> {
        let v = self.present(key)?;
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.fail(key, format!("must be a whole number ≥ 0, got {v}"));
                None
            }
        }
    }

    /// Seconds as a number, or a duration string (`30s`, `5m`, `1h 30m`).
    fn opt_duration_secs(&mut self, key: &str) -> Option<Duration> {
        let v = self.present(key)?;
        self.duration(key, v, 1)
    }

    fn duration(&mut self, key: &str, v: &Value, unit_secs: u64) -> Option<Duration> {
        match duration_value(v, unit_secs) {
            Ok(d) => Some(d),
            Err(message) => {
                self.fail(key, message);
                None
            }
        }
    }

    fn opt_instant(&mut self, key: &str) -> Option<DateTime<Utc>> {
        let s = self.opt_str(key)?;
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.fail(
                    key,
                    format!("{s:?} is not an RFC 3339 instant ({e}), e.g. 2027-01-01T06:00:00Z"),
                );
                None
            }
        }
    }

    fn trigger_kind(&mut self) -> Option<TriggerInput<'a>> {
        let cron_keys = ["cron", "cron_expression"];
        let interval_keys = [
            ("interval", 60),
            ("interval_seconds", 1),
            ("interval_minutes", 60),
            ("interval_hours", 3600),
        ];
        let cron: Vec<&str> = cron_keys
            .into_iter()
            .filter(|k| self.present(k).is_some())
            .collect();
        let interval: Vec<(&str, u64)> = interval_keys
            .into_iter()
            .filter(|(k, _)| self.present(k).is_some())
            .collect();
        let once = self.present("run_at").is_some();
        let given: Vec<&str> = cron
            .iter()
            .copied()
            .chain(interval.iter().map(|(k, _)| *k))
            .chain(once.then_some("run_at"))
            .collect();
        let declared = self.opt_str("schedule_type");
        let inferred = match (cron.is_empty(), interval.is_empty(), once) {
            (false, true, false) => ScheduleType::Cron,
            (true, false, false) => ScheduleType::Interval,
            (true, true, true) => ScheduleType::Date,
            (true, true, false) => {
                self.fail(
                    "schedule",
                    "needs exactly one of cron, interval (or interval_seconds/minutes/hours) or run_at",
                );
                return None;
            }
            _ => {
                self.fail(
                    "schedule",
                    format!(
                        "has more than one trigger ({}); keep exactly one",
                        given.join(", ")
                    ),
                );
                return None;
            }
        };
        if let Some(d) = declared {
            if d != inferred.as_str() {
                self.fail(
                    "schedule_type",
                    format!(
                        "is {d:?} but the keys given ({}) make it {:?}",
                        given.join(", "),
                        inferred.as_str()
                    ),
                );
                return None;
            }
        }
        if given.len() > 1 {
            self.fail(
                "schedule",
                format!(
                    "has more than one trigger ({}); keep exactly one",
                    given.join(", ")
                ),
            );
            return None;
        }
        match inferred {
            ScheduleType::Cron => self.opt_str(cron[0]).map(TriggerInput::Cron),
            ScheduleType::Interval => {
                let (key, unit) = interval[0];
                let v = self.present(key)?;
                self.duration(key, v, unit).map(TriggerInput::Interval)
            }
            ScheduleType::Date => self.opt_str("run_at").map(TriggerInput::Once),
        }
    }

    fn params(&mut self) -> Option<Map<String, Value>> {
        match self.present("params")? {
            Value::Object(m) => Some(m.clone()),
            other => {
                self.fail(
                    "params",
                    format!("must be a mapping, got {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn retry(&mut self) -> Option<RetryPolicy> {
        let v = self.present("retry")?;
        let Some(m) = v.as_object() else {
            self.fail(
                "retry",
                "must be a mapping with max_attempts, backoff and backoff_max",
            );
            return None;
        };
        let defaults = RetryPolicy::default();
        for key in m.keys() {
            if !["max_attempts", "backoff", "backoff_max"].contains(&key.as_str()) {
                self.fail(
                    &format!("retry.{key}"),
                    "unknown key; expected max_attempts, backoff or backoff_max",
                );
            }
        }
        let max_attempts = match m.get("max_attempts") {
            None => defaults.max_attempts(),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    self.fail(
                        "retry.max_attempts",
                        format!("must be a whole number, got {v}"),
                    );
                    return None;
                }
            },
        };
        let backoff = match m.get("backoff") {
            None => defaults.backoff(),
            Some(v) => self.duration("retry.backoff", v, 1)?,
        };
        let backoff_max = match m.get("backoff_max") {
            None => defaults.backoff_max().max(backoff),
            Some(v) => self.duration("retry.backoff_max", v, 1)?,
        };
        match RetryPolicy::new(max_attempts, backoff, backoff_max) {
            Ok(p) => Some(p),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }
}

/// A duration written as a whole number of `unit_secs` units, or as a
/// duration string (`90s`, `15m`, `1h 30m`). Shared by every file format
/// that takes durations (schedules, pipelines). `Err` is the message.
pub fn duration_value(v: &Value, unit_secs: u64) -> Result<Duration, String> {
    let unit = match unit_secs {
        1 => "seconds",
        60 => "minutes",
        3600 => "hours",
        _ => "units",
    };
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| n.checked_mul(unit_secs))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("must be a whole number of {unit} ≥ 0, got {n}")),
        Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 90s, 15m or 1h 30m")),
        other => Err(format!(
            "must be a number of {unit} or a duration string, got {}",
            kind_of(other)
        )),
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

/// What a JSON/YAML value is, as error messages name it ("a list").
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
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
}
