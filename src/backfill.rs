//! Backfills: running a schedule's past ticks on purpose — the domain. Pure,
//! as `schedule` is: no database, no clock reads; callers pass the instant.
//!
//! A backfill (`POST /v1/schedules/{name}/backfill`) is a durable row of
//! `scheduler_backfills` naming a schedule, a range `[start, end)` and a
//! [`BackfillMode`]. Replicas *step* it (`engine::backfill`): one replica at
//! a time per backfill (a step locks the row, `FOR UPDATE SKIP LOCKED`, in
//! one short transaction) takes the next ticks after the backfill's cursor
//! from the schedule's own iteration ([`Schedule::next_fire_after`]),
//! writes a `pending` ledger row (trigger `backfill`) for each tick it may
//! start now, and moves the cursor, all in that one transaction. The
//! existing pickup of pending runs (`engine::pending`) runs them on any
//! replica. A replica that dies mid-step loses nothing (the step rolls back
//! and is taken again); the ledger's unique keys make sure a tick never gets
//! two rows from one backfill, whoever steps it.
//!
//! What is here: the request and its limits ([`parse_request`],
//! [`check_request`]), the enumeration of ticks ([`count_ticks`],
//! [`next_ticks`]), and the decisions of a step — how many runs may start
//! ([`slots`]), which ticks get a row and where the cursor moves
//! ([`decide`], [`after_insert`]), which ticks have settled ([`settle`]).
//!
//! # Semantics
//!
//! - **Which ticks.** Mode `missing` (the default) creates a row only for a
//!   tick that has no ledger row at all, whatever its trigger or status (a
//!   tick recorded `missed` or `skipped` has one: use `all` to run it). Mode
//!   `all` runs every tick; a tick that has rows gets one more attempt
//!   (`attempt` = its highest + 1), so the ledger's unique key on
//!   (schedule, tick, attempt) still holds, and a second unique key on
//!   (backfill, tick) keeps one backfill from running a tick twice.
//! - **In order, one at a time** by default: the next tick's row is created
//!   once the previous tick has *settled* — its run finished and, when it
//!   failed, the retries the schedule's policy allows are done too. With
//!   `overlap_policy: allow_all` up to the schedule's `max_instances` ticks
//!   run at once (rows still created in tick order). Either way a backfill
//!   never starts a run while the schedule's other running runs already use
//!   `max_instances`, and it creates at most [`RATE_PER_SECOND`] rows a
//!   second.
//! - **The past only.** Ticks are run only once the database clock has
//!   reached them; `end` may be at most [`FUTURE_SLACK`] ahead of it.
//! - **Limits.** At most [`MAX_TICKS`] ticks, or [`MAX_TICKS_LARGE`] with
//!   `allow_large: true`.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::schedule::fields::Fields;
use crate::schedule::OverlapPolicy;
use crate::schedule::{Schedule, Trigger, ValidationError, ValidationErrors};
use crate::types::{BackfillMode, RunStatus};

/// Most ticks a backfill may cover without `allow_large`.
pub const MAX_TICKS: usize = 10_000;
/// Most ticks a backfill may cover at all (with `allow_large: true`);
/// split a larger range into several backfills.
pub const MAX_TICKS_LARGE: usize = 100_000;
/// How far past the database clock `end` may be (a client's clock a little
/// ahead); ticks are run only once they are due anyway.
pub const FUTURE_SLACK: Duration = Duration::seconds(60);
/// Most ledger rows a backfill creates per second.
pub const RATE_PER_SECOND: u32 = 10;
/// Most ticks a step looks at (in `missing` mode most may already have rows).
pub const TICKS_PER_STEP: usize = 1000;
/// How long after a failure the leader still creates its retry
/// (`store::housekeeping`'s retry sweep looks back this far): a failed
/// tick older than this is settled whatever its policy says.
pub const RETRY_HORIZON: Duration = Duration::days(1);

/// The keys a backfill request may have.
pub const KEYS: &[&str] = &["start", "end", "mode", "overlap_policy", "allow_large"];

/// A backfill request, read and checked for shape (not yet against the clock
/// or the schedule: see [`check_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    /// The first instant of the range (inclusive).
    pub start: DateTime<Utc>,
    /// The end of the range (exclusive).
    pub end: DateTime<Utc>,
    /// Which ticks run.
    pub mode: BackfillMode,
    /// As given; `None` and everything but `allow_all` mean one at a time.
    pub overlap_policy: Option<OverlapPolicy>,
    /// Allows up to [`MAX_TICKS_LARGE`] ticks instead of [`MAX_TICKS`].
    pub allow_large: bool,
}

impl BackfillRequest {
    /// Whether `other` asks for the same work (`allow_large` aside, which
    /// only lifts a limit).
    pub fn same_work(&self, other: &BackfillRequest) -> bool {
        self.start == other.start
            && self.end == other.end
            && self.mode == other.mode
            && self.overlap_policy == other.overlap_policy
    }

    /// How many runs of the backfill may be unfinished at once.
    pub fn concurrency(&self, max_instances: u32) -> u32 {
        concurrency(self.overlap_policy, max_instances)
    }
}

/// How many runs of a backfill may be unfinished at once: the schedule's
/// `max_instances` with `allow_all`, else one.
pub fn concurrency(policy: Option<OverlapPolicy>, max_instances: u32) -> u32 {
    match policy {
        Some(OverlapPolicy::AllowAll) => max_instances.max(1),
        _ => 1,
    }
}

/// Reads a request body, reporting every problem at once (unknown keys by
/// name, `start`/`end` required RFC 3339 instants, `mode` and
/// `overlap_policy` among their values, `allow_large` a boolean).
pub fn parse_request(body: &Value) -> Result<BackfillRequest, ValidationErrors> {
    let Some(map) = body.as_object() else {
        return Err(ValidationError::new(
            "backfill",
            "must be a JSON object with start and end (RFC 3339 instants)",
        )
        .into());
    };
    let mut f = Fields::new(map);
    for key in map.keys().filter(|k| !KEYS.contains(&k.as_str())) {
        f.fail(
            key,
            format!("unknown key; expected one of: {}", KEYS.join(", ")),
        );
    }
    let start = required_instant(&mut f, "start");
    let end = required_instant(&mut f, "end");
    let mode = match f.opt_str("mode") {
        None => Some(BackfillMode::Missing),
        Some(m) => match m.parse::<BackfillMode>() {
            Ok(m) => Some(m),
            Err(_) => {
                f.fail(
                    "mode",
                    format!("{m:?} is not a mode; expected missing (the default) or all"),
                );
                None
            }
        },
    };
    let overlap_policy = match f.opt_str("overlap_policy") {
        None => Some(None),
        Some(p) => match OverlapPolicy::parse(p) {
            Ok(p) => Some(Some(p)),
            Err(e) => {
                f.fail(&e.field, e.message);
                None
            }
        },
    };
    let allow_large = f.opt_bool("allow_large").unwrap_or(false);
    match (start, end, mode, overlap_policy) {
        (Some(start), Some(end), Some(mode), Some(overlap_policy)) if f.errors().is_empty() => {
            Ok(BackfillRequest {
                start,
                end,
                mode,
                overlap_policy,
                allow_large,
            })
        }
        _ => Err(ValidationErrors(f.into_errors())),
    }
}

fn required_instant(f: &mut Fields, key: &str) -> Option<DateTime<Utc>> {
    if f.present(key).is_none() {
        f.fail(
            key,
            "is required (an RFC 3339 instant, e.g. 2027-01-01T00:00:00Z)",
        );
        return None;
    }
    // Kept to the microsecond, PostgreSQL's precision: a request repeated
    // with the same nanosecond instants (an idempotent retry) then matches
    // the stored one exactly.
    f.opt_instant(key)
        .map(|t| chrono::SubsecRound::trunc_subsecs(t, 6))
}

/// Checks a request against the database clock `now` and the schedule, and
/// counts its ticks (the number returned). Refused, naming the field:
/// `end` not after `start`; `start` in the future; `end` more than
/// [`FUTURE_SLACK`] ahead; more than [`MAX_TICKS`] ticks (`allow_large`)
/// or, with `allow_large`, more than [`MAX_TICKS_LARGE`] (`end`).
pub fn check_request(
    request: &BackfillRequest,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<usize, ValidationErrors> {
    let mut errors = Vec::new();
    if request.end <= request.start {
        errors.push(ValidationError::new("end", "must be after start"));
    }
    if request.start > now {
        errors.push(ValidationError::new(
            "start",
            format!(
                "is in the future (the database clock reads {}); a backfill runs past ticks",
                now.to_rfc3339()
            ),
        ));
    }
    if request.end > now + FUTURE_SLACK {
        errors.push(ValidationError::new(
            "end",
            format!(
                "is more than {} s past the database clock ({}); a backfill runs past ticks",
                FUTURE_SLACK.num_seconds(),
                now.to_rfc3339()
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(ValidationErrors(errors));
    }
    let limit = if request.allow_large {
        MAX_TICKS_LARGE
    } else {
        MAX_TICKS
    };
    match count_ticks(schedule, request.start, request.end, limit) {
        Some(n) => Ok(n),
        None if request.allow_large => Err(ValidationError::new(
            "end",
            format!(
                "the range holds more than {MAX_TICKS_LARGE} ticks, the most one backfill may \
                 run; split it into several backfills"
            ),
        )
        .into()),
        None => Err(ValidationError::new(
            "allow_large",
            format!(
                "the range holds more than {MAX_TICKS} ticks; send \"allow_large\": true to \
                 backfill up to {MAX_TICKS_LARGE}"
            ),
        )
        .into()),
    }
}

/// The first tick at or after `from`.
fn first_at_or_after(schedule: &Schedule, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_fire_after(from - Duration::nanoseconds(1))
}

/// How many ticks `schedule` has in `[start, end)`; `None` when more than
/// `limit` (it stops counting there, so a huge range costs `limit` steps).
pub fn count_ticks(
    schedule: &Schedule,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Option<usize> {
    let mut n = 0;
    let mut next = first_at_or_after(schedule, start);
    while let Some(t) = next.filter(|t| *t < end) {
        if n == limit {
            return None;
        }
        n += 1;
        next = schedule.next_fire_after(t);
    }
    Some(n)
}

/// What comes after the cursor of a backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextTicks {
    /// The due ticks after the cursor, in order (at most the `max` asked for).
    pub due: Vec<DateTime<Utc>>,
    /// The first tick of the range after those, if any: not due yet (past
    /// `now`), or beyond `max`.
    pub later: Option<DateTime<Utc>>,
}

/// The ticks of `schedule` in `[start, end)` after `cursor` (all of them
/// from `start` when there is no cursor yet) that are due at `now`, at
/// most `max`.
pub fn next_ticks(
    schedule: &Schedule,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    cursor: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    max: usize,
) -> NextTicks {
    let mut due = Vec::new();
    let mut next = match cursor {
        Some(c) => schedule.next_fire_after(c.max(start - Duration::nanoseconds(1))),
        None => first_at_or_after(schedule, start),
    };
    while let Some(t) = next.filter(|t| *t < end) {
        if t > now || due.len() == max {
            return NextTicks {
                due,
                later: Some(t),
            };
        }
        due.push(t);
        next = schedule.next_fire_after(t);
    }
    NextTicks { due, later: None }
}

/// How many new runs a step may start: what the backfill's concurrency
/// leaves (`in_flight`: its unsettled ticks), what the schedule's
/// `max_instances` leaves beside its other running runs, and at most
/// [`RATE_PER_SECOND`].
pub fn slots(
    policy: Option<OverlapPolicy>,
    max_instances: u32,
    in_flight: u32,
    others_running: u32,
) -> usize {
    let by_policy = concurrency(policy, max_instances).saturating_sub(in_flight);
    let by_limit = max_instances.saturating_sub(in_flight.saturating_add(others_running));
    by_policy.min(by_limit).min(RATE_PER_SECOND) as usize
}

/// What the ledger holds for one tick, as a step sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickState {
    /// The tick.
    pub at: DateTime<Utc>,
    /// Whether it has any ledger row of the schedule (any trigger).
    pub has_row: bool,
    /// Whether this backfill already created its row.
    pub ours: bool,
    /// Its highest attempt among the rows the unique tick key covers
    /// (every trigger but `manual`); 0 without one.
    pub max_attempt: i32,
}

/// What a step does with one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create its row, with this attempt number.
    Create(i32),
    /// Leave it: it has a row already (mode `missing`).
    Existing,
    /// Leave it: this backfill has its row already.
    Ours,
}

/// A step's plan: the ticks it deals with, in order, and what it does with
/// each. The cursor moves to the last of them (see [`after_insert`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The ticks dealt with and their actions.
    pub steps: Vec<(DateTime<Utc>, Action)>,
}

impl Decision {
    /// The rows to create: (tick, attempt).
    pub fn to_create(&self) -> Vec<(DateTime<Utc>, i32)> {
        self.steps
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Create(attempt) => Some((*t, *attempt)),
                _ => None,
            })
            .collect()
    }
}

/// Decides a step over `ticks` (in order): ticks that need no row are
/// passed over, the first `slots` that need one get it, and the step stops
/// at the first tick needing a row it has no slot for.
pub fn decide(mode: BackfillMode, ticks: &[TickState], slots: usize) -> Decision {
    let mut left = slots;
    let mut steps = Vec::new();
    for t in ticks {
        let action = if t.ours {
            Action::Ours
        } else if mode == BackfillMode::Missing && t.has_row {
            Action::Existing
        } else if left > 0 {
            left -= 1;
            Action::Create(t.max_attempt.max(0) + 1)
        } else {
            break;
        };
        steps.push((t.at, action));
    }
    Decision { steps }
}

/// What a step did, once its INSERT has answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepOutcome {
    /// The new cursor (`None`: unchanged).
    pub cursor: Option<DateTime<Utc>>,
    /// Rows created.
    pub created: u32,
    /// Ticks passed over because they had a row (mode `missing`).
    pub existing: u32,
}

/// The outcome of `decision` given the ticks whose rows were `inserted`. A
/// row not inserted met a row written meanwhile (the unique tick key): in
/// mode `missing` that tick has a row now and is passed over; in mode `all`
/// another attempt took its number, so the cursor stops before it and a
/// later step tries again with the next number.
pub fn after_insert(
    mode: BackfillMode,
    decision: &Decision,
    inserted: &[DateTime<Utc>],
) -> StepOutcome {
    let mut out = StepOutcome {
        created: u32::try_from(inserted.len()).unwrap_or(u32::MAX),
        ..StepOutcome::default()
    };
    for (t, action) in &decision.steps {
        match action {
            Action::Create(_) if !inserted.contains(t) => {
                if mode == BackfillMode::All {
                    break;
                }
                out.existing += 1;
            }
            Action::Existing => out.existing += 1,
            Action::Create(_) | Action::Ours => {}
        }
        out.cursor = Some(*t);
    }
    out
}

/// A tick this backfill created a row for, and the newest attempt of it
/// (its own row, or a retry of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickRuns {
    /// The tick.
    pub at: DateTime<Utc>,
    /// The attempt of the row the backfill created.
    pub first_attempt: i32,
    /// The newest attempt of the tick within the backfill.
    pub newest_attempt: i32,
    /// Its status.
    pub status: RunStatus,
    /// When it reached it.
    pub completed_at: Option<DateTime<Utc>>,
}

/// How a tick of a backfill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Running, waiting to run, or waiting for a retry.
    No,
    /// Its newest attempt completed.
    Succeeded,
    /// Its newest attempt ended otherwise, and no retry will follow.
    Failed,
}

/// Whether a tick has settled: its newest attempt is final and, if it
/// failed or was abandoned, the schedule's retry policy (`max_attempts`,
/// counted from the backfill's first attempt) allows no further retry — or
/// the failure is older than [`RETRY_HORIZON`], past which the leader
/// creates none.
pub fn settled(tick: &TickRuns, max_attempts: u32, now: DateTime<Utc>) -> Settled {
    if !tick.status.is_final() {
        return Settled::No;
    }
    if tick.status == RunStatus::Completed {
        return Settled::Succeeded;
    }
    let retryable = matches!(tick.status, RunStatus::Failed | RunStatus::Abandoned);
    let used = i64::from(tick.newest_attempt) - i64::from(tick.first_attempt) + 1;
    let recent = tick.completed_at.is_none_or(|c| c > now - RETRY_HORIZON);
    if retryable && used < i64::from(max_attempts) && recent {
        Settled::No
    } else {
        Settled::Failed
    }
}

/// The counts of a backfill's settled ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Ticks whose newest attempt completed.
    pub succeeded: u32,
    /// Ticks that ended otherwise.
    pub failed: u32,
}

/// Where a backfill's settling stands: the prefix of its ticks that have
/// all settled (kept, so a step only reads the ticks after it), and the
/// counts shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Every tick of the backfill up to here has settled (counted in `prefix`).
    pub settled_through: Option<DateTime<Utc>>,
    /// The outcomes of the ticks up to `settled_through`.
    pub prefix: Tally,
    /// Every settled tick (the prefix and those settled after it).
    pub total: Tally,
    /// Ticks not settled yet: the backfill's runs in flight.
    pub in_flight: u32,
}

/// Moves `progress` over `window` — the backfill's ticks after its
/// `settled_through`, in tick order: the leading settled ones join the
/// prefix, and the counts are taken again.
pub fn settle(
    progress: Progress,
    window: &[TickRuns],
    max_attempts: u32,
    now: DateTime<Utc>,
) -> Progress {
    let mut out = Progress {
        total: progress.prefix,
        in_flight: 0,
        ..progress
    };
    let mut prefix_open = true;
    for tick in window {
        let s = settled(tick, max_attempts, now);
        let add = |tally: &mut Tally| match s {
            Settled::Succeeded => tally.succeeded += 1,
            Settled::Failed => tally.failed += 1,
            Settled::No => {}
        };
        add(&mut out.total);
        if s == Settled::No {
            prefix_open = false;
            out.in_flight += 1;
        } else if prefix_open {
            add(&mut out.prefix);
            out.settled_through = Some(tick.at);
        }
    }
    out
}

/// How long a backfill waits between steps while its runs are in flight
/// (or the schedule's other runs use its `max_instances`): how soon a
/// settled tick is noticed.
pub const STEP_PAUSE: Duration = Duration::milliseconds(200);

/// After a step: whether the backfill is done, and when to step it next.
/// `created`: rows this step wrote; `in_flight`: its unsettled ticks, those
/// included; `free`: the slots the step had; `remaining`: the first tick
/// of the range after the cursor.
pub fn after_step(
    now: DateTime<Utc>,
    created: u32,
    in_flight: u32,
    free: usize,
    remaining: Option<DateTime<Utc>>,
) -> (bool, DateTime<Utc>) {
    let done = remaining.is_none() && in_flight == 0;
    // The rate cap: `created` rows take created / RATE_PER_SECOND seconds.
    let pace = Duration::milliseconds(i64::from(created) * 1000 / i64::from(RATE_PER_SECOND));
    let next = match remaining {
        _ if in_flight > 0 => now + pace.max(STEP_PAUSE),
        Some(t) if t > now => t.max(now + pace),
        Some(_) if free == 0 => now + pace.max(STEP_PAUSE),
        _ => now + pace,
    };
    (done, next)
}

/// A schedule's trigger in words: what a backfill's ticks come from. A
/// backfill whose schedule's trigger no longer reads the same stops
/// (`failed`) rather than run ticks of another definition.
pub fn trigger_key(schedule: &Schedule) -> String {
    match schedule.trigger() {
        Trigger::Cron(expr) => format!("cron {:?} in {}", expr.as_str(), schedule.timezone()),
        Trigger::Interval { every, start_at } => format!(
            "every {} s from {}",
            every.as_secs(),
            start_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ),
        Trigger::Once { run_at } => format!(
            "once at {}",
            run_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn hourly() -> Schedule {
        Schedule::cron("h", "p", "0 * * * *").unwrap_or_else(|e| panic!("{e}"))
    }

    fn fields(e: ValidationErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn requests_are_read_with_every_problem_named() {
        let ok = parse_request(&json!({
            "start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00+01:00"
        }));
        assert_eq!(
            ok,
            Ok(BackfillRequest {
                start: at("2027-01-01T00:00:00Z"),
                end: at("2027-01-01T23:00:00Z"),
                mode: BackfillMode::Missing,
                overlap_policy: None,
                allow_large: false,
            })
        );
        let full = parse_request(&json!({
            "start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z",
            "mode": "all", "overlap_policy": "allow_all", "allow_large": true
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.mode, BackfillMode::All);
        assert_eq!(full.overlap_policy, Some(OverlapPolicy::AllowAll));
        assert!(full.allow_large);

        let bad = parse_request(&json!({
            "start": "yesterday", "mode": "some", "overlap_policy": "queue",
            "allow_large": "yes", "colour": 1
        }));
        let mut got = bad.map_err(fields).err().unwrap_or_default();
        got.sort();
        assert_eq!(
            got,
            [
                "allow_large",
                "colour",
                "end",
                "mode",
                "overlap_policy",
                "start"
            ]
        );
        let not_object = parse_request(&json!(["start"])).map_err(fields);
        assert_eq!(not_object, Err(vec!["backfill".to_string()]));
        let null_end = parse_request(&json!({"start": "2027-01-01T00:00:00Z", "end": null}));
        assert_eq!(null_end.map_err(fields), Err(vec!["end".to_string()]));
    }

    fn request(start: &str, end: &str) -> BackfillRequest {
        BackfillRequest {
            start: at(start),
            end: at(end),
            mode: BackfillMode::Missing,
            overlap_policy: None,
            allow_large: false,
        }
    }

    #[test]
    fn requests_are_checked_against_the_clock_and_the_limits() {
        let now = at("2027-01-10T00:00:00Z");
        let s = hourly();
        let check = |r: &BackfillRequest| check_request(r, &s, now).map_err(fields);
        assert_eq!(
            check(&request("2027-01-09T00:00:00Z", "2027-01-10T00:00:00Z")),
            Ok(24)
        );
        // A little past the clock is fine (the ticks wait); more is not.
        assert_eq!(
            check(&request("2027-01-09T23:30:00Z", "2027-01-10T00:01:00Z")),
            Ok(1)
        );
        assert_eq!(
            check(&request("2027-01-09T00:00:00Z", "2027-01-10T00:01:01Z")),
            Err(vec!["end".to_string()])
        );
        assert_eq!(
            check(&request("2027-01-10T00:00:01Z", "2027-01-10T00:00:30Z")),
            Err(vec!["start".to_string()])
        );
        assert_eq!(
            check(&request("2027-01-09T00:00:00Z", "2027-01-09T00:00:00Z")),
            Err(vec!["end".to_string()])
        );
        assert_eq!(
            check(&request("2027-01-09T00:00:00Z", "2027-01-08T00:00:00Z")),
            Err(vec!["end".to_string()])
        );
        // An empty range is no error: there is nothing to do.
        assert_eq!(
            check(&request("2027-01-09T00:10:00Z", "2027-01-09T00:20:00Z")),
            Ok(0)
        );
        // 10,000 hourly ticks end 10,000 hours before the clock.
        let limit_start = now - Duration::hours(MAX_TICKS as i64);
        let mut big = request("2000-01-01T00:00:00Z", "2027-01-10T00:00:00Z");
        big.start = limit_start;
        assert_eq!(check(&big), Ok(MAX_TICKS));
        big.start = limit_start - Duration::hours(1);
        assert_eq!(check(&big), Err(vec!["allow_large".to_string()]));
        big.allow_large = true;
        assert_eq!(check(&big), Ok(MAX_TICKS + 1));
        big.start = now - Duration::hours(MAX_TICKS_LARGE as i64 + 1);
        assert_eq!(check(&big), Err(vec!["end".to_string()]));
    }

    #[test]
    fn ticks_come_from_the_schedule_start_inclusive_end_exclusive() {
        let s = hourly();
        let (start, end) = (at("2027-01-01T00:00:00Z"), at("2027-01-01T03:00:00Z"));
        let now = at("2027-02-01T00:00:00Z");
        let all = next_ticks(&s, start, end, None, now, 100);
        assert_eq!(
            all.due,
            [
                at("2027-01-01T00:00:00Z"),
                at("2027-01-01T01:00:00Z"),
                at("2027-01-01T02:00:00Z")
            ]
        );
        assert_eq!(all.later, None);
        assert_eq!(count_ticks(&s, start, end, 100), Some(3));
        assert_eq!(count_ticks(&s, start, end, 2), None);
        // After a cursor; at most `max`, the rest named as later.
        let next = next_ticks(&s, start, end, Some(at("2027-01-01T00:00:00Z")), now, 1);
        assert_eq!(next.due, [at("2027-01-01T01:00:00Z")]);
        assert_eq!(next.later, Some(at("2027-01-01T02:00:00Z")));
        // Not yet due: waits.
        let early = next_ticks(&s, start, end, None, at("2027-01-01T01:30:00Z"), 100);
        assert_eq!(early.due.len(), 2);
        assert_eq!(early.later, Some(at("2027-01-01T02:00:00Z")));
        // Sub-second instants and interval schedules: the same rule.
        let every_90s = Schedule::interval("i", "p", std::time::Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("{e}"));
        let t0 = at("2027-01-01T00:00:00Z");
        let got = next_ticks(&every_90s, t0, t0 + Duration::seconds(180), None, now, 10);
        assert_eq!(got.due, [t0, t0 + Duration::seconds(90)]);
        let from_mid = next_ticks(
            &every_90s,
            t0 + Duration::milliseconds(1),
            t0 + Duration::seconds(181),
            None,
            now,
            10,
        );
        assert_eq!(
            from_mid.due,
            [t0 + Duration::seconds(90), t0 + Duration::seconds(180)]
        );
        // A one-time schedule has its one tick, if in the range.
        let once =
            Schedule::once("o", "p", at("2027-01-01T01:30:00Z")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count_ticks(&once, start, end, 10), Some(1));
        assert_eq!(count_ticks(&once, end, now, 10), Some(0));
    }

    #[test]
    fn slots_follow_the_policy_max_instances_and_the_rate() {
        use OverlapPolicy::*;
        // One at a time unless allow_all.
        assert_eq!(slots(None, 5, 0, 0), 1);
        assert_eq!(slots(None, 5, 1, 0), 0);
        assert_eq!(slots(Some(BufferAll), 5, 0, 0), 1);
        assert_eq!(slots(Some(AllowAll), 5, 0, 0), 5);
        assert_eq!(slots(Some(AllowAll), 5, 2, 0), 3);
        // Never past max_instances with the schedule's other runs.
        assert_eq!(slots(None, 1, 0, 1), 0);
        assert_eq!(slots(Some(AllowAll), 5, 2, 2), 1);
        assert_eq!(slots(Some(AllowAll), 5, 2, 9), 0);
        // And at most the rate per step.
        assert_eq!(slots(Some(AllowAll), 1000, 0, 0), RATE_PER_SECOND as usize);
    }

    fn tick(h: u32, has_row: bool, ours: bool, max_attempt: i32) -> TickState {
        TickState {
            at: at("2027-01-01T00:00:00Z") + Duration::hours(i64::from(h)),
            has_row,
            ours,
            max_attempt,
        }
    }

    #[test]
    fn a_step_creates_in_order_and_passes_over_what_needs_no_row() {
        let ticks = [
            tick(0, true, false, 1),
            tick(1, false, false, 0),
            tick(2, true, false, 2),
            tick(3, false, false, 0),
        ];
        let t = |h: i64| at("2027-01-01T00:00:00Z") + Duration::hours(h);
        // missing: ticks with rows are passed over; one slot, so it stops at 3.
        let d = decide(BackfillMode::Missing, &ticks, 1);
        assert_eq!(
            d.steps,
            [
                (t(0), Action::Existing),
                (t(1), Action::Create(1)),
                (t(2), Action::Existing)
            ]
        );
        assert_eq!(d.to_create(), [(t(1), 1)]);
        let out = after_insert(BackfillMode::Missing, &d, &[t(1)]);
        assert_eq!(
            out,
            StepOutcome {
                cursor: Some(t(2)),
                created: 1,
                existing: 2
            }
        );
        // all: every tick, one attempt past the highest.
        let d = decide(BackfillMode::All, &ticks, 10);
        assert_eq!(d.to_create(), [(t(0), 2), (t(1), 1), (t(2), 3), (t(3), 1)]);
        // No slot: nothing, the cursor stays.
        let none = decide(BackfillMode::All, &ticks, 0);
        assert!(none.steps.is_empty());
        assert_eq!(after_insert(BackfillMode::All, &none, &[]).cursor, None);
        // Rows this backfill already has are passed over in both modes.
        let ours = [tick(0, true, true, 1), tick(1, false, false, 0)];
        assert_eq!(
            decide(BackfillMode::All, &ours, 1).steps,
            [(t(0), Action::Ours), (t(1), Action::Create(1))]
        );
    }

    #[test]
    fn a_row_written_meanwhile_is_passed_over_or_retried_by_mode() {
        let t = |h: i64| at("2027-01-01T00:00:00Z") + Duration::hours(h);
        let ticks = [tick(0, false, false, 0), tick(1, false, false, 0)];
        // missing: tick 0 got its row from someone else: it has one, done.
        let d = decide(BackfillMode::Missing, &ticks, 2);
        assert_eq!(
            after_insert(BackfillMode::Missing, &d, &[t(1)]),
            StepOutcome {
                cursor: Some(t(1)),
                created: 1,
                existing: 1
            }
        );
        // all: attempt 1 of tick 0 was taken (a claim, a retry): try again
        // next step; tick 1's row is made and will be passed over as ours.
        let d = decide(BackfillMode::All, &ticks, 2);
        assert_eq!(
            after_insert(BackfillMode::All, &d, &[t(1)]),
            StepOutcome {
                cursor: None,
                created: 1,
                existing: 0
            }
        );
    }

    fn runs(h: i64, first: i32, newest: i32, status: RunStatus) -> TickRuns {
        TickRuns {
            at: at("2027-01-01T00:00:00Z") + Duration::hours(h),
            first_attempt: first,
            newest_attempt: newest,
            status,
            completed_at: status
                .is_final()
                .then(|| at("2027-01-01T00:00:00Z") + Duration::hours(h)),
        }
    }

    #[test]
    fn a_tick_settles_when_its_retries_are_done() {
        let now = at("2027-01-01T12:00:00Z");
        use RunStatus::*;
        assert_eq!(settled(&runs(0, 1, 1, Pending), 1, now), Settled::No);
        assert_eq!(settled(&runs(0, 1, 1, Running), 1, now), Settled::No);
        assert_eq!(
            settled(&runs(0, 1, 1, Completed), 3, now),
            Settled::Succeeded
        );
        assert_eq!(settled(&runs(0, 1, 1, Failed), 1, now), Settled::Failed);
        // Two more attempts allowed: waits for the retry.
        assert_eq!(settled(&runs(0, 1, 1, Failed), 3, now), Settled::No);
        assert_eq!(settled(&runs(0, 1, 2, Abandoned), 3, now), Settled::No);
        assert_eq!(settled(&runs(0, 1, 3, Failed), 3, now), Settled::Failed);
        // Counted from the backfill's first attempt (mode all: 4th of the tick).
        assert_eq!(settled(&runs(0, 4, 4, Failed), 2, now), Settled::No);
        assert_eq!(settled(&runs(0, 4, 5, Failed), 2, now), Settled::Failed);
        // Past the retry horizon no retry comes.
        let later = now + RETRY_HORIZON + Duration::hours(1);
        assert_eq!(settled(&runs(0, 1, 1, Failed), 3, later), Settled::Failed);
        // Not retried by the leader: recorded as failed outright.
        assert_eq!(settled(&runs(0, 1, 1, Missed), 3, now), Settled::Failed);
    }

    #[test]
    fn settling_keeps_a_prefix_and_counts_everything() {
        use RunStatus::*;
        let now = at("2027-01-02T00:00:00Z");
        let window = [
            runs(0, 1, 1, Completed),
            runs(1, 1, 1, Failed),
            runs(2, 1, 1, Running),
            runs(3, 1, 1, Completed),
        ];
        let p = settle(Progress::default(), &window, 1, now);
        assert_eq!(p.settled_through, Some(window[1].at));
        assert_eq!(
            p.prefix,
            Tally {
                succeeded: 1,
                failed: 1
            }
        );
        assert_eq!(
            p.total,
            Tally {
                succeeded: 2,
                failed: 1
            }
        );
        assert_eq!(p.in_flight, 1);
        // The next step reads only the ticks after the prefix.
        let rest = [runs(2, 1, 1, Completed), runs(3, 1, 1, Completed)];
        let q = settle(p, &rest, 1, now);
        assert_eq!(q.settled_through, Some(rest[1].at));
        assert_eq!(
            q.total,
            Tally {
                succeeded: 3,
                failed: 1
            }
        );
        assert_eq!(q.prefix, q.total);
        assert_eq!(q.in_flight, 0);
    }

    #[test]
    fn the_next_step_waits_for_runs_ticks_and_the_rate() {
        let now = at("2027-01-01T00:00:00Z");
        let past = Some(now - Duration::hours(1));
        // Runs in flight: look again shortly (or after the rate's pause).
        assert_eq!(after_step(now, 1, 1, 1, past), (false, now + STEP_PAUSE));
        assert_eq!(
            after_step(now, 10, 10, 10, past),
            (false, now + Duration::seconds(1))
        );
        // Nothing in flight, more due ticks: at once.
        assert_eq!(after_step(now, 0, 0, 1, past), (false, now));
        // No slot (the schedule's other runs): shortly.
        assert_eq!(after_step(now, 0, 0, 0, past), (false, now + STEP_PAUSE));
        // The next tick is not due yet: when it is.
        let soon = now + Duration::seconds(30);
        assert_eq!(after_step(now, 0, 0, 1, Some(soon)), (false, soon));
        // Nothing left and nothing in flight: done.
        assert!(after_step(now, 0, 0, 1, None).0);
        assert!(!after_step(now, 1, 1, 1, None).0);
    }

    #[test]
    fn the_trigger_key_names_what_ticks_come_from() -> Result<(), ValidationError> {
        let cron = Schedule::cron("c", "p", "0 6 * * 1-5")?.with_timezone("Europe/Berlin")?;
        assert_eq!(trigger_key(&cron), "cron \"0 6 * * 1-5\" in Europe/Berlin");
        let other = Schedule::cron("c", "p", "0 7 * * 1-5")?.with_timezone("Europe/Berlin")?;
        assert_ne!(trigger_key(&cron), trigger_key(&other));
        let every = Schedule::interval("i", "p", std::time::Duration::from_secs(90))?;
        assert_eq!(trigger_key(&every), "every 90 s from 1970-01-01T00:00:00Z");
        Ok(())
    }

    #[test]
    fn instants_are_kept_to_the_microsecond_as_stored() {
        let body = serde_json::json!({
            "start": "2027-01-01T00:00:00.123456789Z",
            "end": "2027-01-02T00:00:00.000000001Z",
        });
        let request = parse_request(&body).ok();
        let shown = request.map(|r| (r.start.to_rfc3339(), r.end.to_rfc3339()));
        assert_eq!(
            shown,
            Some((
                "2027-01-01T00:00:00.123456+00:00".to_string(),
                "2027-01-02T00:00:00+00:00".to_string()
            ))
        );
    }
}
