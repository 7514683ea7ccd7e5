//! The schedule model: what fires, when, and under which policies.
//!
//! Pure domain code: no database, no clock reads, no I/O. A [`Schedule`] is
//! immutable and always valid; it is built by the `cron`, `interval` and
//! `once` constructors (the seed's `Schedule.cron(...)` etc.) refined with
//! `with_*` methods, or from loosely typed input (YAML, JSON) through
//! [`spec::parse_schedule`], which reports every problem at once.

pub mod controls;
pub mod cron;
mod error;
pub(crate) mod fields;
mod overlap;
pub mod ownership;
mod retry;
pub mod spec;

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

pub use self::cron::{CronError, CronExpr, DstPolicy};
pub use self::error::{ValidationError, ValidationErrors};
pub use self::overlap::OverlapPolicy;
pub use self::retry::RetryPolicy;

/// Longest schedule name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest pipeline name accepted.
pub const MAX_PIPELINE_LEN: usize = 200;
/// Longest description accepted, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1000;
/// Largest `params` object accepted, serialised as JSON.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;
/// Largest `max_instances`.
pub const MAX_INSTANCES: u32 = 1000;
/// Shortest interval between ticks.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval between ticks (366 days).
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest misfire grace, timeout or retry backoff (7 days).
pub const MAX_POLICY_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default misfire grace, as in the seed (APScheduler's job default).
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(60);
/// Longest `jitter` (1 hour). Spreading a herd over more than an hour is a
/// different schedule, not a jitter; and every lateness threshold (grace,
/// sweep, the timer's give-up, a restart's look-back) stretches by the
/// jitter, so it stays bounded.
pub const MAX_JITTER: Duration = Duration::from_secs(3600);

/// `cron`, `interval` or `date`: the three kinds of schedule, as the seed names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleType {
    /// A crontab expression.
    Cron,
    /// Every N seconds from `start_at`.
    Interval,
    /// Once, at `run_at`.
    Date,
}

impl ScheduleType {
    /// The name stored in the database and used in files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleType::Cron => "cron",
            ScheduleType::Interval => "interval",
            ScheduleType::Date => "date",
        }
    }

    /// The type [`as_str`](Self::as_str) names, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [
            ScheduleType::Cron,
            ScheduleType::Interval,
            ScheduleType::Date,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

/// When a schedule is due.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Fires whenever the wall clock in the schedule's zone matches.
    Cron(CronExpr),
    /// Fires at `start_at + k × every` for every integer k ≥ 0, in absolute time,
    /// so every replica computes the same ticks.
    Interval {
        /// Time between ticks (whole seconds).
        every: Duration,
        /// The anchor; defaults to the Unix epoch, which aligns ticks to
        /// multiples of the interval (a 15-minute interval fires at :00, :15, …).
        start_at: DateTime<Utc>,
    },
    /// Fires once.
    Once {
        /// The instant to fire at.
        run_at: DateTime<Utc>,
    },
}

/// An immutable, validated schedule definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    name: String,
    pipeline: String,
    trigger: Trigger,
    timezone: Tz,
    params: Map<String, Value>,
    enabled: bool,
    max_instances: u32,
    overlap_policy: OverlapPolicy,
    misfire_grace: Duration,
    coalesce: bool,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    description: Option<String>,
    end_at: Option<DateTime<Utc>>,
    jitter: Duration,
}

impl Schedule {
    /// A cron schedule in UTC with the seed's defaults.
    pub fn cron(name: &str, pipeline: &str, expression: &str) -> Result<Self, ValidationError> {
        let expr =
            CronExpr::parse(expression).map_err(|e| ValidationError::new("cron", e.to_string()))?;
        Self::new(name, pipeline, Trigger::Cron(expr))
    }

    /// An interval schedule anchored at the Unix epoch.
    pub fn interval(name: &str, pipeline: &str, every: Duration) -> Result<Self, ValidationError> {
        validate_interval(every)?;
        Self::new(
            name,
            pipeline,
            Trigger::Interval {
                every,
                start_at: DateTime::UNIX_EPOCH,
            },
        )
    }

    /// A one-time schedule.
    pub fn once(
        name: &str,
        pipeline: &str,
        run_at: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        Self::new(name, pipeline, Trigger::Once { run_at })
    }

    fn new(name: &str, pipeline: &str, trigger: Trigger) -> Result<Self, ValidationError> {
        validate_name(name)?;
        validate_pipeline(pipeline)?;
        Ok(Schedule {
            name: name.to_string(),
            pipeline: pipeline.to_string(),
            trigger,
            ..Self::stand_in()
        })
    }

    /// A valid placeholder used to keep checking policies when the core of a
    /// definition is broken (see `spec`).
    fn stand_in() -> Self {
        Schedule {
            name: "stand-in".to_string(),
            pipeline: "stand-in".to_string(),
            trigger: Trigger::Interval {
                every: Duration::from_secs(60),
                start_at: DateTime::UNIX_EPOCH,
            },
            timezone: Tz::UTC,
            params: Map::new(),
            enabled: true,
            max_instances: 1,
            overlap_policy: OverlapPolicy::Skip,
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            coalesce: true,
            timeout: None,
            retry: RetryPolicy::default(),
            description: None,
            end_at: None,
            jitter: Duration::ZERO,
        }
    }

    /// The same schedule in another IANA zone (e.g. `America/New_York`).
    pub fn with_timezone(self, zone: &str) -> Result<Self, ValidationError> {
        let timezone = parse_timezone(zone)?;
        Ok(Schedule { timezone, ..self })
    }

    /// The same schedule with these pipeline parameters.
    pub fn with_params(self, params: Map<String, Value>) -> Result<Self, ValidationError> {
        let size = Value::Object(params.clone()).to_string().len();
        if size > MAX_PARAMS_BYTES {
            return Err(ValidationError::new(
                "params",
                format!("is {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}"),
            ));
        }
        Ok(Schedule { params, ..self })
    }

    /// The same schedule, enabled or paused.
    pub fn with_enabled(self, enabled: bool) -> Self {
        Schedule { enabled, ..self }
    }

    /// The same schedule with another cluster-wide concurrency limit.
    pub fn with_max_instances(self, max_instances: u32) -> Result<Self, ValidationError> {
        if !(1..=MAX_INSTANCES).contains(&max_instances) {
            return Err(ValidationError::new(
                "max_instances",
                format!("must be between 1 and {MAX_INSTANCES}, got {max_instances}"),
            ));
        }
        Ok(Schedule {
            max_instances,
            ..self
        })
    }

    /// The same schedule with another misfire grace (how late a tick may still start).
    pub fn with_misfire_grace(self, grace: Duration) -> Result<Self, ValidationError> {
        check_policy_duration("misfire_grace_time", grace, Duration::ZERO)?;
        Ok(Schedule {
            misfire_grace: grace,
            ..self
        })
    }

    /// The same schedule with another overlap policy (see [`OverlapPolicy`]).
    pub fn with_overlap_policy(self, overlap_policy: OverlapPolicy) -> Self {
        Schedule {
            overlap_policy,
            ..self
        }
    }

    /// The same schedule, coalescing a backlog of missed ticks into one run or not.
    pub fn with_coalesce(self, coalesce: bool) -> Self {
        Schedule { coalesce, ..self }
    }

    /// The same schedule with another jitter: each tick falls due at a
    /// delay in `[0, jitter)` after it (see [`jitter_delay`](Self::jitter_delay)),
    /// so a herd of schedules ticking at the same instant is spread instead
    /// of claimed and started all at once. Whole seconds, at most
    /// [`MAX_JITTER`]; zero (the default) means none.
    pub fn with_jitter(self, jitter: Duration) -> Result<Self, ValidationError> {
        if jitter > MAX_JITTER {
            return Err(ValidationError::new(
                "jitter",
                format!(
                    "must be between 0s and {}, got {}",
                    humantime::format_duration(MAX_JITTER),
                    humantime::format_duration(jitter)
                ),
            ));
        }
        if jitter.subsec_nanos() != 0 {
            return Err(ValidationError::new(
                "jitter",
                "must be a whole number of seconds",
            ));
        }
        Ok(Schedule { jitter, ..self })
    }

    /// The same schedule with a run timeout (`None`: runs may take as long as they need).
    pub fn with_timeout(self, timeout: Option<Duration>) -> Result<Self, ValidationError> {
        if let Some(t) = timeout {
            check_policy_duration("timeout", t, Duration::from_secs(1))?;
        }
        Ok(Schedule { timeout, ..self })
    }

    /// The same schedule with another retry policy.
    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        Schedule { retry, ..self }
    }

    /// The same schedule with a human description.
    pub fn with_description(self, description: Option<String>) -> Result<Self, ValidationError> {
        if let Some(d) = &description {
            let n = d.chars().count();
            if n > MAX_DESCRIPTION_LEN {
                return Err(ValidationError::new(
                    "description",
                    format!("is {n} characters; the limit is {MAX_DESCRIPTION_LEN}"),
                ));
            }
        }
        Ok(Schedule {
            description,
            ..self
        })
    }

    /// The same interval schedule with another anchor. Refused for other
    /// types, and when it is not before the schedule's `end_at`.
    pub fn with_start_at(self, start_at: DateTime<Utc>) -> Result<Self, ValidationError> {
        match self.trigger {
            Trigger::Interval { every, .. } => {
                if let Some(end) = self.end_at.filter(|end| *end <= start_at) {
                    return Err(ValidationError::new(
                        "start_at",
                        format!(
                            "{} is not before end_at ({}); the schedule would never fire",
                            rfc3339(start_at),
                            rfc3339(end)
                        ),
                    ));
                }
                Ok(Schedule {
                    trigger: Trigger::Interval { every, start_at },
                    ..self
                })
            }
            _ => Err(ValidationError::new(
                "start_at",
                "only interval schedules have an anchor",
            )),
        }
    }

    /// The same schedule ending at `end_at` (`None`: it never ends). Ticks
    /// at or before `end_at` fire; none after it. It must be later than the
    /// anchor of an interval schedule (`start_at`) and the instant of a
    /// one-time one (`run_at`), or the schedule could never fire; an
    /// `end_at` already past is accepted: the schedule has ended (it keeps
    /// its history and can still be run by hand).
    pub fn with_end_at(self, end_at: Option<DateTime<Utc>>) -> Result<Self, ValidationError> {
        if let Some(end) = end_at {
            let (key, first) = match self.trigger {
                Trigger::Interval { start_at, .. } => ("start_at", start_at),
                Trigger::Once { run_at } => ("run_at", run_at),
                Trigger::Cron(_) => return Ok(Schedule { end_at, ..self }),
            };
            if end <= first {
                return Err(ValidationError::new(
                    "end_at",
                    format!(
                        "{} must be after {key} ({}); the schedule would never fire",
                        rfc3339(end),
                        rfc3339(first)
                    ),
                ));
            }
        }
        Ok(Schedule { end_at, ..self })
    }

    /// The unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The pipeline a run executes.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
    /// When it is due.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }
    /// Cron, interval or date.
    pub fn schedule_type(&self) -> ScheduleType {
        match self.trigger {
            Trigger::Cron(_) => ScheduleType::Cron,
            Trigger::Interval { .. } => ScheduleType::Interval,
            Trigger::Once { .. } => ScheduleType::Date,
        }
    }
    /// The IANA zone cron fields are read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }
    /// Parameters handed to the pipeline.
    pub fn params(&self) -> &Map<String, Value> {
        &self.params
    }
    /// Whether ticks fire (false = paused).
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    /// How many runs of this schedule may run at once across the cluster.
    pub fn max_instances(&self) -> u32 {
        self.max_instances
    }
    /// What a tick does when `max_instances` runs are unfinished.
    pub fn overlap_policy(&self) -> OverlapPolicy {
        self.overlap_policy
    }
    /// How late a tick may start before it is recorded `missed`.
    pub fn misfire_grace(&self) -> Duration {
        self.misfire_grace
    }
    /// Whether a backlog of due ticks runs once rather than once per tick.
    pub fn coalesce(&self) -> bool {
        self.coalesce
    }
    /// The run timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
    /// The human description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The instant after which it fires no more, if any.
    pub fn end_at(&self) -> Option<DateTime<Utc>> {
        self.end_at
    }
    /// The spread of its ticks' start (zero: none; see [`with_jitter`](Self::with_jitter)).
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// How long after `tick` it falls due: the jitter rule. Zero without a
    /// jitter. Otherwise a whole number of milliseconds in
    /// `[0, min(jitter, gap))`, where `gap` is the time to the schedule's
    /// next tick (the jitter alone for its last tick): the first 8 bytes of
    /// SHA-256 over `"spine-jitter"`, the schedule's name and the tick's
    /// Unix milliseconds (big-endian), read as a big-endian integer, modulo
    /// that bound. So every replica, process and version computes the same
    /// delay for a (schedule, tick), different ticks and schedules spread
    /// evenly, and a tick always falls due before the next one does — a
    /// schedule's due instants keep its ticks' order.
    pub fn jitter_delay(&self, tick: DateTime<Utc>) -> chrono::Duration {
        let Ok(jitter_ms) = i64::try_from(self.jitter.as_millis()) else {
            return chrono::Duration::zero();
        };
        if jitter_ms == 0 {
            return chrono::Duration::zero();
        }
        let bound = match self.next_fire_after(tick) {
            Some(next) => (next - tick).num_milliseconds().min(jitter_ms),
            None => jitter_ms,
        };
        let Ok(bound) = u64::try_from(bound) else {
            return chrono::Duration::zero();
        };
        if bound == 0 {
            return chrono::Duration::zero();
        }
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"spine-jitter");
        h.update([0]);
        h.update(self.name.as_bytes());
        h.update([0]);
        h.update(tick.timestamp_millis().to_be_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let delay = u64::from_be_bytes(first) % bound;
        // Below the bound, itself an i64 of milliseconds.
        chrono::Duration::milliseconds(i64::try_from(delay).unwrap_or(0))
    }

    /// The instant `tick` falls due: `tick` plus its
    /// [`jitter_delay`](Self::jitter_delay). Everything that asks "is it
    /// time yet" or "how late is it" — the engine's queue and timer, the
    /// claim, the fire lag, the misfire grace, the sweep — counts from here;
    /// the ledger keeps `tick` as `scheduled_at` (its identity).
    pub fn due_at(&self, tick: DateTime<Utc>) -> DateTime<Utc> {
        tick + self.jitter_delay(tick)
    }

    /// Whether it will never fire again after `now`: its `end_at` has
    /// passed, or it is a one-time schedule whose `run_at` has (paused or
    /// not: that is [`enabled`](Self::enabled)).
    pub fn has_ended(&self, now: DateTime<Utc>) -> bool {
        self.next_fire_after(now).is_none()
    }

    /// Checks what only the present can tell, at `now` (passed in: the
    /// domain reads no clock). A one-time schedule whose `run_at` is more
    /// than its misfire grace before `now` would never run — its one tick is
    /// already too late to start and would leave no ledger row — so it is
    /// refused, naming `run_at`. Within the grace it is accepted and runs at
    /// once (see [`overdue_tick`](Self::overdue_tick)).
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), ValidationError> {
        let Trigger::Once { run_at } = self.trigger else {
            return Ok(());
        };
        let late = now.signed_duration_since(run_at);
        let grace = chrono::Duration::from_std(self.misfire_grace).unwrap_or(chrono::Duration::MAX);
        if late <= grace {
            return Ok(());
        }
        let whole =
            |d: chrono::Duration| Duration::from_secs(d.num_seconds().max(0).unsigned_abs());
        Err(ValidationError::new(
            "run_at",
            format!(
                "{} is {} in the past, more than its misfire grace ({}): it would never run; \
                 give a later time (or a longer misfire_grace_time)",
                run_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                humantime::format_duration(whole(late)),
                humantime::format_duration(self.misfire_grace),
            ),
        ))
    }

    /// [`validate_at`](Self::validate_at) for a definition replacing
    /// `stored` (an update, or an `apply` of a file it is already in): a
    /// one-time schedule that keeps its stored `run_at` is not checked
    /// again. That `run_at` was checked when it was set and may have run
    /// since; a file re-applied at every restart, or a change of another key,
    /// must keep working after the instant has passed.
    pub fn validate_change_at(
        &self,
        stored: Option<&Schedule>,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationError> {
        match (&self.trigger, stored.map(|s| &s.trigger)) {
            (Trigger::Once { run_at }, Some(Trigger::Once { run_at: kept })) if run_at == kept => {
                Ok(())
            }
            _ => self.validate_at(now),
        }
    }

    /// The tick a one-time schedule owes although its `run_at` had already
    /// passed when it was defined (created, changed or resumed) at
    /// `defined_at`, by no more than its misfire grace: it runs at once, at
    /// that tick. Every other tick before a definition never was due (a
    /// schedule does not fire for times before it existed); this one is what
    /// "within the grace it runs" means for a one-time schedule. `None` for
    /// every other schedule.
    pub fn overdue_tick(&self, defined_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Trigger::Once { run_at } = self.trigger else {
            return None;
        };
        let grace = chrono::Duration::from_std(self.misfire_grace).unwrap_or(chrono::Duration::MAX);
        (run_at <= defined_at && defined_at.signed_duration_since(run_at) <= grace)
            .then_some(run_at)
    }

    /// The instant after which the ticks of a definition made at
    /// `defined_at` are due: `defined_at` itself, or just before the
    /// [`overdue_tick`](Self::overdue_tick) of a one-time schedule defined late.
    pub fn due_after(&self, defined_at: DateTime<Utc>) -> DateTime<Utc> {
        self.overdue_tick(defined_at)
            .map_or(defined_at, |t| t - chrono::Duration::microseconds(1))
    }

    /// The names of the fields in which `other` differs from `self`, in the
    /// vocabulary of files and the API (used to show what an apply changes).
    pub fn differences(&self, other: &Schedule) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |field: &'static str, same: bool| {
            if !same {
                out.push(field);
            }
        };
        check("name", self.name == other.name);
        check("pipeline", self.pipeline == other.pipeline);
        check("trigger", self.trigger == other.trigger);
        check("timezone", self.timezone == other.timezone);
        check("params", self.params == other.params);
        check("enabled", self.enabled == other.enabled);
        check("max_instances", self.max_instances == other.max_instances);
        check(
            "overlap_policy",
            self.overlap_policy == other.overlap_policy,
        );
        check(
            "misfire_grace_time",
            self.misfire_grace == other.misfire_grace,
        );
        check("coalesce", self.coalesce == other.coalesce);
        check("timeout", self.timeout == other.timeout);
        check("retry", self.retry == other.retry);
        check("description", self.description == other.description);
        check("end_at", self.end_at == other.end_at);
        check("jitter", self.jitter == other.jitter);
        out
    }

    /// The first tick strictly after `after`, or `None` when there is none
    /// (a one-time schedule that has passed, or a schedule past its
    /// `end_at`). Every enumeration of ticks goes through here — the
    /// engine's due queue, the claim's coalescing, the misfire sweep, the
    /// API's `next_run` and fire times — so `end_at` stops all of them.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match &self.trigger {
            Trigger::Cron(expr) => expr.next_after(after, self.timezone),
            Trigger::Interval { every, start_at } => next_interval_tick(*start_at, *every, after),
            Trigger::Once { run_at } => (*run_at > after).then_some(*run_at),
        }?;
        match self.end_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// The next `count` ticks strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut cursor = after;
        while out.len() < count {
            match self.next_fire_after(cursor) {
                Some(t) => {
                    out.push(t);
                    cursor = t;
                }
                None => break,
            }
        }
        out
    }
}

/// An instant as RFC 3339 in UTC, for messages.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn next_interval_tick(
    start_at: DateTime<Utc>,
    every: Duration,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if after < start_at {
        return Some(start_at);
    }
    let every_ms = i64::try_from(every.as_millis()).ok()?.max(1);
    let elapsed_ms = (after - start_at).num_milliseconds();
    let k = elapsed_ms / every_ms + 1;
    start_at.checked_add_signed(chrono::Duration::milliseconds(k.checked_mul(every_ms)?))
}

/// Checks a schedule name: 1–128 characters from `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit (safe in URLs, metric labels and shells).
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    check_identifier("name", name, MAX_NAME_LEN)
}

/// Checks a pipeline name: same charset as schedule names, up to 200 characters.
pub fn validate_pipeline(pipeline: &str) -> Result<(), ValidationError> {
    check_identifier("pipeline", pipeline, MAX_PIPELINE_LEN)
}

pub(crate) fn check_identifier(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValidationError::new(
            field,
            format!("is {len} characters; the limit is {max}"),
        ));
    }
    if let Some((i, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "character {c:?} at position {} is not allowed (use A-Z a-z 0-9 . _ -)",
                i + 1
            ),
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ValidationError::new(
            field,
            "must start with a letter or a digit",
        ));
    }
    Ok(())
}

/// Parses an IANA zone name such as `Europe/Berlin` or `UTC`.
pub fn parse_timezone(zone: &str) -> Result<Tz, ValidationError> {
    zone.parse::<Tz>().map_err(|_| {
        ValidationError::new(
            "timezone",
            format!("unknown time zone {zone:?}; use an IANA name such as \"America/New_York\" or \"UTC\""),
        )
    })
}

fn validate_interval(every: Duration) -> Result<(), ValidationError> {
    if every < MIN_INTERVAL || every > MAX_INTERVAL {
        return Err(ValidationError::new(
            "interval",
            format!(
                "must be between 1 second and 366 days, got {}",
                humantime::format_duration(every)
            ),
        ));
    }
    if every.subsec_nanos() != 0 {
        return Err(ValidationError::new(
            "interval",
            "must be a whole number of seconds",
        ));
    }
    Ok(())
}

fn check_policy_duration(
    field: &'static str,
    value: Duration,
    min: Duration,
) -> Result<(), ValidationError> {
    if value < min || value > MAX_POLICY_DURATION {
        return Err(ValidationError::new(
            field,
            format!(
                "must be between {} and 7 days, got {}",
                humantime::format_duration(min),
                humantime::format_duration(value)
            ),
        ));
    }
    if value.subsec_nanos() != 0 {
        return Err(ValidationError::new(
            field,
            "must be a whole number of seconds",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn seed_constructors_and_defaults() -> Result<(), ValidationError> {
        let s = Schedule::cron(
            "daily_finra",
            "finra.otc_transparency.ingest_week",
            "0 6 * * 1-5",
        )?
        .with_timezone("America/New_York")?;
        assert_eq!(s.schedule_type(), ScheduleType::Cron);
        assert_eq!(s.max_instances(), 1);
        assert_eq!(s.misfire_grace(), Duration::from_secs(60));
        assert!(s.enabled() && s.coalesce());
        let next = s.next_fire_after(at("2027-03-12T00:00:00Z"));
        assert_eq!(next, Some(at("2027-03-12T11:00:00Z")));
        Ok(())
    }

    #[test]
    fn interval_ticks_are_absolute() -> Result<(), ValidationError> {
        let s = Schedule::interval("every_90s", "p", Duration::from_secs(90))?
            .with_start_at(at("2027-01-01T00:00:10Z"))?;
        assert_eq!(
            s.upcoming(at("2027-01-01T00:00:00Z"), 3),
            [
                at("2027-01-01T00:00:10Z"),
                at("2027-01-01T00:01:40Z"),
                at("2027-01-01T00:03:10Z")
            ]
        );
        // From any instant, the same grid: replicas agree whatever their start.
        assert_eq!(
            s.next_fire_after(at("2027-01-01T00:01:40Z")),
            Some(at("2027-01-01T00:03:10Z"))
        );
        assert_eq!(
            s.next_fire_after(at("2027-01-01T00:01:39.999Z")),
            Some(at("2027-01-01T00:01:40Z"))
        );
        // Default anchor is the epoch: a 15-minute interval fires on the quarter hour.
        let q = Schedule::interval("q", "p", Duration::from_secs(900))?;
        assert_eq!(
            q.next_fire_after(at("2027-05-05T10:07:00Z")),
            Some(at("2027-05-05T10:15:00Z"))
        );
        // Real time, not wall time: a 1h interval crosses DST at even spacing.
        let h = Schedule::interval("h", "p", Duration::from_secs(3600))?
            .with_timezone("America/New_York")?;
        let ticks = h.upcoming(at("2027-11-07T04:30:00Z"), 4);
        for pair in ticks.windows(2) {
            assert_eq!((pair[1] - pair[0]).num_seconds(), 3600);
        }
        Ok(())
    }

    #[test]
    fn end_at_stops_every_enumeration_of_ticks() -> Result<(), ValidationError> {
        let end = at("2027-01-01T00:00:30Z");
        let s = Schedule::interval("e", "p", Duration::from_secs(10))?.with_end_at(Some(end))?;
        // A tick at end_at still fires; none after it.
        assert_eq!(
            s.upcoming(at("2027-01-01T00:00:05Z"), 10),
            [
                at("2027-01-01T00:00:10Z"),
                at("2027-01-01T00:00:20Z"),
                at("2027-01-01T00:00:30Z")
            ]
        );
        assert_eq!(s.next_fire_after(end), None);
        assert!(s.has_ended(end));
        assert!(!s.has_ended(at("2027-01-01T00:00:29Z")));
        // Cron too, in its zone.
        let c = Schedule::cron("c", "p", "0 6 * * *")?
            .with_timezone("Europe/Berlin")?
            .with_end_at(Some(at("2027-03-03T05:00:00Z")))?;
        assert_eq!(
            c.upcoming(at("2027-03-01T00:00:00Z"), 10),
            [
                at("2027-03-01T05:00:00Z"),
                at("2027-03-02T05:00:00Z"),
                at("2027-03-03T05:00:00Z")
            ]
        );
        // None again: it never ends.
        let forever = c.with_end_at(None)?;
        assert_eq!(forever.upcoming(at("2027-03-01T00:00:00Z"), 10).len(), 10);
        // Past end_at is allowed: the schedule has ended.
        let ended =
            Schedule::cron("c", "p", "* * * * *")?.with_end_at(Some(at("2000-01-01T00:00:00Z")))?;
        assert!(ended.has_ended(at("2027-01-01T00:00:00Z")));
        Ok(())
    }

    #[test]
    fn end_at_must_follow_the_anchor_or_instant() -> Result<(), ValidationError> {
        let start = at("2027-01-01T00:00:00Z");
        let interval =
            Schedule::interval("i", "p", Duration::from_secs(60))?.with_start_at(start)?;
        let field = |r: Result<Schedule, ValidationError>| r.map(|_| ()).map_err(|e| e.field);
        assert_eq!(
            field(interval.clone().with_end_at(Some(start))),
            Err("end_at".into())
        );
        assert!(interval
            .clone()
            .with_end_at(Some(at("2027-01-01T00:00:01Z")))
            .is_ok());
        let once = Schedule::once("o", "p", start)?;
        assert_eq!(
            field(once.clone().with_end_at(Some(at("2026-12-31T00:00:00Z")))),
            Err("end_at".into())
        );
        assert!(once.with_end_at(Some(at("2027-01-02T00:00:00Z"))).is_ok());
        // And the anchor must stay before an end already set.
        let ends = Schedule::interval("i", "p", Duration::from_secs(60))?
            .with_end_at(Some(at("2026-06-01T00:00:00Z")))?;
        assert_eq!(field(ends.with_start_at(start)), Err("start_at".into()));
        Ok(())
    }

    #[test]
    fn once_fires_once() -> Result<(), ValidationError> {
        let s = Schedule::once("one", "p", at("2027-06-01T12:00:00Z"))?;
        assert_eq!(
            s.upcoming(at("2027-01-01T00:00:00Z"), 5),
            [at("2027-06-01T12:00:00Z")]
        );
        assert_eq!(s.next_fire_after(at("2027-06-01T12:00:00Z")), None);
        Ok(())
    }

    #[test]
    fn a_run_at_past_its_grace_is_refused() -> Result<(), ValidationError> {
        let s = Schedule::once("one", "p", at("2027-06-01T12:00:00Z"))?
            .with_misfire_grace(Duration::from_secs(300))?;
        // Before it, and within the grace after it: fine.
        assert_eq!(s.validate_at(at("2027-01-01T00:00:00Z")), Ok(()));
        assert_eq!(s.validate_at(at("2027-06-01T12:05:00Z")), Ok(()));
        // Past the grace: refused, naming run_at and saying why.
        let err = s
            .validate_at(at("2027-06-01T14:05:01Z"))
            .expect_err("past the grace");
        assert_eq!(err.field, "run_at");
        assert_eq!(
            err.message,
            "2027-06-01T12:00:00Z is 2h 5m 1s in the past, more than its misfire grace (5m): \
             it would never run; give a later time (or a longer misfire_grace_time)"
        );
        // Other kinds have nothing to check.
        let cron = Schedule::cron("c", "p", "@daily")?;
        assert_eq!(cron.validate_at(at("2099-01-01T00:00:00Z")), Ok(()));
        Ok(())
    }

    #[test]
    fn a_kept_run_at_is_not_checked_again() -> Result<(), ValidationError> {
        let late = at("2027-07-01T00:00:00Z");
        let stored = Schedule::once("one", "p", at("2027-06-01T12:00:00Z"))?;
        let described = stored
            .clone()
            .with_description(Some("ran already".into()))?;
        assert_eq!(described.validate_change_at(Some(&stored), late), Ok(()));
        // A new run_at, a new schedule, or another kind before: checked.
        let moved = Schedule::once("one", "p", at("2027-06-02T12:00:00Z"))?;
        assert!(moved.validate_change_at(Some(&stored), late).is_err());
        assert!(described.validate_change_at(None, late).is_err());
        let was_cron = Schedule::cron("one", "p", "@daily")?;
        assert!(described.validate_change_at(Some(&was_cron), late).is_err());
        Ok(())
    }

    #[test]
    fn a_late_one_time_schedule_owes_its_tick_within_the_grace() -> Result<(), ValidationError> {
        let run_at = at("2027-06-01T12:00:00Z");
        let s = Schedule::once("one", "p", run_at)?;
        // Defined 30 s after run_at (grace 60 s): due at once, at run_at.
        assert_eq!(s.overdue_tick(at("2027-06-01T12:00:30Z")), Some(run_at));
        assert_eq!(s.overdue_tick(run_at), Some(run_at));
        // Defined before it (the usual case) or past the grace: nothing owed.
        assert_eq!(s.overdue_tick(at("2027-06-01T11:00:00Z")), None);
        assert_eq!(s.overdue_tick(at("2027-06-01T12:01:01Z")), None);
        let cron = Schedule::cron("c", "p", "* * * * *")?;
        assert_eq!(cron.overdue_tick(run_at), None);
        // Where due ticks start: just before the owed tick, else the definition.
        let defined = at("2027-06-01T12:00:30Z");
        assert_eq!(s.next_fire_after(s.due_after(defined)), Some(run_at));
        assert_eq!(cron.due_after(defined), defined);
        Ok(())
    }

    #[test]
    fn jitter_is_deterministic_spread_and_before_the_next_tick() -> Result<(), ValidationError> {
        let base = at("2027-01-01T00:00:00Z");
        // Zero jitter (the default): due at the tick.
        let plain = Schedule::interval("plain", "p", Duration::from_secs(10))?;
        assert_eq!(plain.jitter(), Duration::ZERO);
        assert_eq!(plain.due_at(base), base);
        // The same (name, tick): the same delay, on every call and for
        // every copy (every replica builds its own Schedule).
        let s = Schedule::interval("spread", "p", Duration::from_secs(60))?
            .with_jitter(Duration::from_secs(30))?;
        let copy = Schedule::interval("spread", "p", Duration::from_secs(60))?
            .with_jitter(Duration::from_secs(30))?;
        for k in 0..50 {
            let tick = base + chrono::Duration::minutes(k);
            assert_eq!(s.jitter_delay(tick), copy.jitter_delay(tick));
            assert_eq!(s.due_at(tick), tick + s.jitter_delay(tick));
        }
        // A pinned value (computed independently, with Python's hashlib):
        // the rule must not change between versions, or replicas of two
        // versions would disagree during a rolling upgrade.
        assert_eq!(s.jitter_delay(base).num_milliseconds(), 7_220);
        // Spread over [0, jitter): 1,000 ticks land in every tenth of the range.
        let delays: Vec<i64> = (0..1000)
            .map(|k| {
                s.jitter_delay(base + chrono::Duration::minutes(k))
                    .num_milliseconds()
            })
            .collect();
        assert!(delays.iter().all(|d| (0..30_000).contains(d)));
        for tenth in 0..10 {
            let n = delays.iter().filter(|d| **d / 3_000 == tenth).count();
            assert!((50..=150).contains(&n), "tenth {tenth}: {n} of 1000");
        }
        // Different schedules at the same tick differ (a herd is spread).
        let distinct: std::collections::HashSet<i64> = (0..100)
            .map(|i| {
                Schedule::interval(&format!("herd{i}"), "p", Duration::from_secs(60))
                    .and_then(|s| s.with_jitter(Duration::from_secs(30)))
                    .map(|s| s.jitter_delay(base).num_milliseconds())
                    .unwrap_or(-1)
            })
            .collect();
        assert!(distinct.len() > 90, "{} distinct delays", distinct.len());
        Ok(())
    }

    #[test]
    fn jitter_never_reaches_the_next_tick() -> Result<(), ValidationError> {
        let base = at("2027-01-01T00:00:00Z");
        // A jitter longer than the interval is bounded by the gap.
        let fast = Schedule::interval("fast", "p", Duration::from_secs(2))?
            .with_jitter(Duration::from_secs(3600))?;
        let mut last_due = None;
        for k in 0..500 {
            let tick = base + chrono::Duration::seconds(2 * k);
            let due = fast.due_at(tick);
            let next = fast.next_fire_after(tick).expect("next tick");
            assert!(due >= tick && due < next, "{tick}: due {due}, next {next}");
            // Due instants keep tick order.
            assert!(last_due.is_none_or(|d| d < due));
            last_due = Some(due);
        }
        // Cron ticks one second apart, every second of a minute.
        let cron = Schedule::cron("c", "p", "* * * * * *")?.with_jitter(Duration::from_secs(10))?;
        for k in 0..120 {
            let tick = base + chrono::Duration::seconds(k);
            assert!(cron.jitter_delay(tick) < chrono::Duration::seconds(1));
        }
        // The last tick (end_at) and a one-time schedule: the jitter alone bounds it.
        let once = Schedule::once("o", "p", base)?.with_jitter(Duration::from_secs(5))?;
        assert!(once.jitter_delay(base) < chrono::Duration::seconds(5));
        Ok(())
    }

    #[test]
    fn jitter_is_range_checked() -> Result<(), ValidationError> {
        let s = Schedule::interval("j", "p", Duration::from_secs(60))?;
        assert!(s.clone().with_jitter(MAX_JITTER).is_ok());
        let field = |r: Result<Schedule, ValidationError>| r.map(|_| ()).map_err(|e| e.field);
        assert_eq!(
            field(s.clone().with_jitter(MAX_JITTER + Duration::from_secs(1))),
            Err("jitter".into())
        );
        assert_eq!(
            field(s.clone().with_jitter(Duration::from_millis(1500))),
            Err("jitter".into())
        );
        let j = s.clone().with_jitter(Duration::from_secs(5))?;
        assert_eq!(j.differences(&s), ["jitter"]);
        Ok(())
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("finra_otc_t1").is_ok());
        assert!(validate_name("a.b-c_9").is_ok());
        for bad in [
            "",
            "-lead",
            "has space",
            "semi;colon",
            "ü",
            &"x".repeat(129),
        ] {
            let err = validate_name(bad).expect_err(bad);
            assert_eq!(err.field, "name");
        }
        assert!(validate_name(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn policies_are_range_checked() -> Result<(), ValidationError> {
        let s = Schedule::cron("n", "p", "* * * * *")?;
        assert_eq!(
            s.clone()
                .with_max_instances(0)
                .map(|_| ())
                .map_err(|e| e.field),
            Err("max_instances".into())
        );
        assert!(s.clone().with_timeout(Some(Duration::ZERO)).is_err());
        assert!(s
            .clone()
            .with_misfire_grace(Duration::from_secs(8 * 86400))
            .is_err());
        assert!(s.clone().with_timezone("Mars/Olympus").is_err());
        assert!(Schedule::interval("n", "p", Duration::ZERO).is_err());
        assert!(s.with_start_at(DateTime::UNIX_EPOCH).is_err());
        Ok(())
    }
}
