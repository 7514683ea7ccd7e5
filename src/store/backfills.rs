//! `scheduler_backfills` (migration 0008) and the ledger rows backfills
//! write. The decisions are `crate::backfill`'s; here are the statements:
//! creating a backfill (one active per schedule, an optional idempotency
//! key), reading and cancelling it, and what a step runs inside its
//! transaction — take a due backfill with `FOR UPDATE SKIP LOCKED`, read
//! its ticks' rows, insert new `pending` rows (trigger `backfill`), record
//! where it stands.

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::{runs, StoreError};
use crate::backfill::{BackfillRequest, Progress, Tally, TickRuns, TickState};
use crate::schedule::OverlapPolicy;
use crate::types::{BackfillState, RunStatus};

/// NOTIFY channel announcing a new backfill, so a replica steps it at once.
pub const BACKFILLS_CHANNEL: &str = "spine_backfills";

/// One backfill, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Backfill {
    /// Time-ordered id (UUIDv7).
    pub backfill_id: Uuid,
    /// The schedule whose ticks it runs.
    pub schedule_name: String,
    /// What was asked for.
    pub request: BackfillRequest,
    /// The schedule's trigger when it was made (`backfill::trigger_key`).
    pub trigger_key: String,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// Where it is.
    pub state: BackfillState,
    /// Ticks in the range when it was made.
    pub ticks_planned: i32,
    /// Ledger rows it wrote.
    pub ticks_created: i32,
    /// Ticks passed over because they had a row (mode `missing`).
    pub ticks_existing: i32,
    /// Settled ticks whose newest attempt completed.
    pub ticks_succeeded: i32,
    /// Settled ticks that ended otherwise.
    pub ticks_failed: i32,
    /// Ticks created and not settled.
    pub ticks_in_flight: i32,
    /// The last tick dealt with.
    pub cursor_at: Option<DateTime<Utc>>,
    /// Where its settled prefix stands (see [`Progress`]).
    pub progress: Progress,
    /// When a replica should step it next.
    pub next_step_at: DateTime<Utc>,
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

const COLUMNS: &str = "backfill_id, schedule_name, range_start, range_end, mode, overlap_policy, \
    allow_large, trigger_key, idempotency_key, state, ticks_planned, ticks_created, ticks_existing, \
    ticks_succeeded, ticks_failed, ticks_in_flight, cursor_at, settled_through, settled_succeeded, \
    settled_failed, next_step_at, created_at, started_at, finished_at, updated_at, error";

fn count(row: &Row, column: &str) -> Result<u32, StoreError> {
    let n: i32 = row.try_get(column)?;
    u32::try_from(n).map_err(|_| StoreError::Schema(format!("scheduler_backfills: {column} {n}")))
}

fn from_row(row: &Row) -> Result<Backfill, StoreError> {
    let bad = |what: String| StoreError::Schema(format!("scheduler_backfills: {what}"));
    let mode: String = row.try_get("mode")?;
    let state: String = row.try_get("state")?;
    let policy: Option<String> = row.try_get("overlap_policy")?;
    Ok(Backfill {
        backfill_id: row.try_get("backfill_id")?,
        schedule_name: row.try_get("schedule_name")?,
        request: BackfillRequest {
            start: row.try_get("range_start")?,
            end: row.try_get("range_end")?,
            mode: mode.parse().map_err(bad)?,
            overlap_policy: policy
                .map(|p| OverlapPolicy::parse(&p).map_err(|e| e.message))
                .transpose()
                .map_err(bad)?,
            allow_large: row.try_get("allow_large")?,
        },
        trigger_key: row.try_get("trigger_key")?,
        idempotency_key: row.try_get("idempotency_key")?,
        state: state.parse().map_err(bad)?,
        ticks_planned: row.try_get("ticks_planned")?,
        ticks_created: row.try_get("ticks_created")?,
        ticks_existing: row.try_get("ticks_existing")?,
        ticks_succeeded: row.try_get("ticks_succeeded")?,
        ticks_failed: row.try_get("ticks_failed")?,
        ticks_in_flight: row.try_get("ticks_in_flight")?,
        cursor_at: row.try_get("cursor_at")?,
        progress: Progress {
            settled_through: row.try_get("settled_through")?,
            prefix: Tally {
                succeeded: count(row, "settled_succeeded")?,
                failed: count(row, "settled_failed")?,
            },
            total: Tally {
                succeeded: count(row, "ticks_succeeded")?,
                failed: count(row, "ticks_failed")?,
            },
            in_flight: count(row, "ticks_in_flight")?,
        },
        next_step_at: row.try_get("next_step_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        error: row.try_get("error")?,
    })
}

/// A backfill to create.
#[derive(Debug, Clone)]
pub struct NewBackfill<'a> {
    /// The schedule.
    pub schedule_name: &'a str,
    /// What is asked for (checked: `backfill::check_request`).
    pub request: &'a BackfillRequest,
    /// The schedule's trigger now (`backfill::trigger_key`).
    pub trigger_key: String,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<&'a str>,
    /// Ticks in the range.
    pub ticks_planned: i32,
}

/// What [`create`] did.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new backfill.
    New(Backfill),
    /// None: this one stood in the way — the one with the same idempotency
    /// key (`by_key`), or the schedule's active backfill.
    Conflict {
        /// The backfill found.
        existing: Backfill,
        /// Found by the idempotency key.
        by_key: bool,
    },
}

/// Creates a backfill, unless the schedule has an active one or the
/// idempotency key was used before (then that one is returned, for the
/// caller to compare). Announces a new one on [`BACKFILLS_CHANNEL`].
pub async fn create(
    client: &impl GenericClient,
    new: &NewBackfill<'_>,
) -> Result<Created, StoreError> {
    let insert = format!(
        "WITH ins AS ( \
             INSERT INTO scheduler_backfills (backfill_id, schedule_name, range_start, range_end, \
                 mode, overlap_policy, allow_large, trigger_key, idempotency_key, ticks_planned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}) \
         SELECT ins.*, pg_notify('{BACKFILLS_CHANNEL}', ins.backfill_id::text) FROM ins"
    );
    let by_key = format!(
        "SELECT {COLUMNS} FROM scheduler_backfills WHERE schedule_name = $1 AND idempotency_key = $2"
    );
    let active = format!(
        "SELECT {COLUMNS} FROM scheduler_backfills \
         WHERE schedule_name = $1 AND state IN ('queued', 'running')"
    );
    let r = new.request;
    let policy = r.overlap_policy.map(OverlapPolicy::as_str);
    // The one in the way may finish between the INSERT and the look-up:
    // then the INSERT is tried again.
    for _ in 0..3 {
        let id = Uuid::now_v7();
        let rows = client
            .query(
                &insert,
                &[
                    &id,
                    &new.schedule_name,
                    &r.start,
                    &r.end,
                    &r.mode.as_str(),
                    &policy,
                    &r.allow_large,
                    &new.trigger_key,
                    &new.idempotency_key,
                    &new.ticks_planned,
                ],
            )
            .await?;
        if let Some(row) = rows.first() {
            return Ok(Created::New(from_row(row)?));
        }
        if let Some(key) = new.idempotency_key {
            if let Some(row) = client
                .query_opt(&by_key, &[&new.schedule_name, &key])
                .await?
            {
                return Ok(Created::Conflict {
                    existing: from_row(&row)?,
                    by_key: true,
                });
            }
        }
        if let Some(row) = client.query_opt(&active, &[&new.schedule_name]).await? {
            return Ok(Created::Conflict {
                existing: from_row(&row)?,
                by_key: false,
            });
        }
    }
    Err(StoreError::Schema(format!(
        "scheduler_backfills: a backfill of {:?} could neither be created nor found",
        new.schedule_name
    )))
}

/// Reads one backfill.
pub async fn get(client: &impl GenericClient, id: Uuid) -> Result<Option<Backfill>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM scheduler_backfills WHERE backfill_id = $1");
    match client.query_opt(&sql, &[&id]).await? {
        Some(row) => from_row(&row).map(Some),
        None => Ok(None),
    }
}

/// A page of a schedule's backfills, newest first.
#[derive(Debug, Clone, Default)]
pub struct BackfillPage {
    /// The backfills.
    pub backfills: Vec<Backfill>,
    /// The cursor of the next (older) page, when this one was full.
    pub next: Option<Uuid>,
}

/// A schedule's backfills, newest first, keyset-paginated on the
/// (time-ordered) id: `before` is the last id of the previous page.
pub async fn list_for_schedule(
    client: &impl GenericClient,
    schedule_name: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<BackfillPage, StoreError> {
    let limit = limit.clamp(1, 1000);
    let sql = format!(
        "SELECT {COLUMNS} FROM scheduler_backfills \
         WHERE schedule_name = $1 AND ($2::uuid IS NULL OR backfill_id < $2) \
         ORDER BY backfill_id DESC LIMIT $3"
    );
    let rows = client
        .query(&sql, &[&schedule_name, &before, &limit])
        .await?;
    let backfills = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let next = (backfills.len() as i64 == limit)
        .then(|| backfills.last().map(|b| b.backfill_id))
        .flatten();
    Ok(BackfillPage { backfills, next })
}

/// Cancels an active backfill: no further rows are created (those created
/// run to their end). Returns the backfill as it is afterwards (`None`: no
/// such backfill); one already finished is returned unchanged.
pub async fn cancel(client: &impl GenericClient, id: Uuid) -> Result<Option<Backfill>, StoreError> {
    let sql = format!(
        "UPDATE scheduler_backfills \
         SET state = 'cancelled', finished_at = now(), updated_at = now() \
         WHERE backfill_id = $1 AND state IN ('queued', 'running') RETURNING {COLUMNS}"
    );
    match client.query_opt(&sql, &[&id]).await? {
        Some(row) => from_row(&row).map(Some),
        None => get(client, id).await,
    }
}

/// Takes the backfill most overdue for a step, locking its row until the
/// transaction ends; backfills other replicas are stepping are skipped.
/// With it, the database clock (the transaction's start).
pub async fn take_due(
    client: &impl GenericClient,
) -> Result<Option<(Backfill, DateTime<Utc>)>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS}, now() AS db_now FROM scheduler_backfills \
         WHERE state IN ('queued', 'running') AND next_step_at <= now() \
         ORDER BY next_step_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    );
    match client.query_opt(&sql, &[]).await? {
        Some(row) => Ok(Some((from_row(&row)?, row.try_get("db_now")?))),
        None => Ok(None),
    }
}

/// How long until the next active backfill is due for a step (negative:
/// overdue); `None` when there is no active backfill.
pub async fn next_due_in(client: &impl GenericClient) -> Result<Option<f64>, StoreError> {
    let row = client
        .query_one(
            "SELECT extract(epoch FROM min(next_step_at) - now())::float8 \
             FROM scheduler_backfills WHERE state IN ('queued', 'running')",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// What the ledger holds for each of `ticks` of the schedule (in order):
/// any row, this backfill's own row, the highest attempt under the tick key.
pub async fn tick_states(
    client: &impl GenericClient,
    schedule_name: &str,
    backfill_id: Uuid,
    ticks: &[DateTime<Utc>],
) -> Result<Vec<TickState>, StoreError> {
    let rows = client
        .query(
            "SELECT u.t, \
                    EXISTS (SELECT 1 FROM scheduler_runs r \
                            WHERE r.schedule_name = $1 AND r.scheduled_at = u.t) AS has_row, \
                    EXISTS (SELECT 1 FROM scheduler_runs r \
                            WHERE r.backfill_id = $2 AND r.scheduled_at = u.t \
                              AND r.trigger = 'backfill') AS ours, \
                    coalesce((SELECT max(r.attempt) FROM scheduler_runs r \
                              WHERE r.schedule_name = $1 AND r.scheduled_at = u.t \
                                AND r.trigger <> 'manual'), 0) AS max_attempt \
             FROM unnest($3::timestamptz[]) AS u(t) ORDER BY u.t",
            &[&schedule_name, &backfill_id, &ticks],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TickState {
                at: r.try_get("t")?,
                has_row: r.try_get("has_row")?,
                ours: r.try_get("ours")?,
                max_attempt: r.try_get("max_attempt")?,
            })
        })
        .collect()
}

/// Writes `pending` rows (trigger `backfill`) for (tick, attempt) pairs;
/// returns the ticks written. A row that meets one written meanwhile (the
/// tick key, or this backfill's key) is not written. Only ticks the
/// database clock has reached are written, and the pending pickup is
/// woken (at COMMIT).
pub async fn insert_runs(
    client: &impl GenericClient,
    backfill_id: Uuid,
    schedule_name: &str,
    pipeline: &str,
    runs: &[(DateTime<Utc>, i32)],
) -> Result<Vec<DateTime<Utc>>, StoreError> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = runs
        .iter()
        .map(|(t, _)| super::run_ids::for_tick(*t))
        .collect();
    let ticks: Vec<DateTime<Utc>> = runs.iter().map(|(t, _)| *t).collect();
    let attempts: Vec<i32> = runs.iter().map(|(_, a)| *a).collect();
    let rows = client
        .query(
            "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                         attempt, status, pending_since, claimed_at, backfill_id) \
             SELECT u.id, $2, $3, 'backfill', u.t, u.attempt, 'pending', statement_timestamp(), \
                    statement_timestamp(), $1 \
             FROM unnest($4::uuid[], $5::timestamptz[], $6::int4[]) AS u(id, t, attempt) \
             WHERE u.t <= statement_timestamp() \
             ON CONFLICT DO NOTHING \
             RETURNING scheduled_at",
            &[
                &backfill_id,
                &schedule_name,
                &pipeline,
                &ids,
                &ticks,
                &attempts,
            ],
        )
        .await?;
    let written = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<DateTime<Utc>>, _>>()?;
    if !written.is_empty() {
        client
            .batch_execute(&format!("NOTIFY {}", runs::RUNS_CHANNEL))
            .await?;
    }
    Ok(written)
}

/// This backfill's ticks after `after` (all with `None`), in order, each
/// with its newest attempt (the backfill's own row or a retry of it).
pub async fn window(
    client: &impl GenericClient,
    backfill_id: Uuid,
    after: Option<DateTime<Utc>>,
) -> Result<Vec<TickRuns>, StoreError> {
    let rows = client
        .query(
            "SELECT b.scheduled_at, b.attempt AS first_attempt, n.attempt AS newest_attempt, \
                    n.status, n.completed_at \
             FROM scheduler_runs b \
             CROSS JOIN LATERAL ( \
                 SELECT r.attempt, r.status, r.completed_at FROM scheduler_runs r \
                 WHERE r.backfill_id = b.backfill_id AND r.scheduled_at = b.scheduled_at \
                   AND r.schedule_name = b.schedule_name \
                 ORDER BY r.attempt DESC LIMIT 1) n \
             WHERE b.backfill_id = $1 AND b.trigger = 'backfill' \
               AND ($2::timestamptz IS NULL OR b.scheduled_at > $2) \
             ORDER BY b.scheduled_at",
            &[&backfill_id, &after],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok(TickRuns {
                at: r.try_get("scheduled_at")?,
                first_attempt: r.try_get("first_attempt")?,
                newest_attempt: r.try_get("newest_attempt")?,
                status: status
                    .parse::<RunStatus>()
                    .map_err(|e| StoreError::Schema(format!("scheduler_runs: {e}")))?,
                completed_at: r.try_get("completed_at")?,
            })
        })
        .collect()
}

/// The schedule's running runs that are not this backfill's.
pub async fn others_running(
    client: &impl GenericClient,
    schedule_name: &str,
    backfill_id: Uuid,
) -> Result<u32, StoreError> {
    let n: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} u \
                 JOIN scheduler_runs r ON r.run_id = u.run_id AND r.scheduled_at = u.scheduled_at \
                 WHERE u.schedule_name = $1 AND r.backfill_id IS DISTINCT FROM $2",
                super::inflight::UNFINISHED
            ),
            &[&schedule_name, &backfill_id],
        )
        .await?
        .try_get(0)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Where a step left a backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Its state now.
    pub state: BackfillState,
    /// The last tick dealt with.
    pub cursor_at: Option<DateTime<Utc>>,
    /// Rows created by this step.
    pub created: u32,
    /// Ticks passed over by this step because they had a row.
    pub existing: u32,
    /// The settled prefix and the counts.
    pub progress: Progress,
    /// When to step it next.
    pub next_step_at: DateTime<Utc>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Records a step (in the step's transaction, which holds the row's lock).
pub async fn record_step(
    client: &impl GenericClient,
    backfill_id: Uuid,
    step: &StepRecord,
) -> Result<(), StoreError> {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let p = &step.progress;
    let finished = !step.state.is_active();
    client
        .execute(
            "UPDATE scheduler_backfills SET \
                 state = $2, cursor_at = $3, \
                 ticks_created = ticks_created + $4, ticks_existing = ticks_existing + $5, \
                 ticks_succeeded = $6, ticks_failed = $7, ticks_in_flight = $8, \
                 settled_through = $9, settled_succeeded = $10, settled_failed = $11, \
                 next_step_at = $12, error = $13, \
                 started_at = coalesce(started_at, now()), \
                 finished_at = CASE WHEN $14 THEN now() END, updated_at = now() \
             WHERE backfill_id = $1",
            &[
                &backfill_id,
                &step.state.as_str(),
                &step.cursor_at,
                &n(step.created),
                &n(step.existing),
                &n(p.total.succeeded),
                &n(p.total.failed),
                &n(p.in_flight),
                &p.settled_through,
                &n(p.prefix.succeeded),
                &n(p.prefix.failed),
                &step.next_step_at,
                &step.error,
                &finished,
            ],
        )
        .await?;
    Ok(())
}

/// Puts off a backfill's next step (after a step failed on a statement).
pub async fn postpone(
    client: &impl GenericClient,
    backfill_id: Uuid,
    seconds: f64,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE scheduler_backfills \
             SET next_step_at = now() + make_interval(secs => $2), updated_at = now() \
             WHERE backfill_id = $1 AND state IN ('queued', 'running')",
            &[&backfill_id, &seconds],
        )
        .await?;
    Ok(())
}
