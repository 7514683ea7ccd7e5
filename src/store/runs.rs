//! The run ledger, `scheduler_runs`: one row per (schedule, tick, attempt).
//!
//! Rows are created by the claim (status `running`), by the API's run-now
//! (`pending`, trigger `manual`), by backfills (`pending`, trigger
//! `backfill`: `store::backfills`) and by the leader's sweeps (`missed`,
//! `abandoned`, retries). Final updates are compare-and-set on
//! `status = 'running' AND node_id = me`, so a replica the reaper declared
//! dead cannot overwrite the verdict.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::{run_ids, StoreError};
use crate::types::{RunStatus, RunTrigger};

/// One ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Time-ordered id (UUIDv7).
    pub run_id: Uuid,
    /// The schedule it belongs to.
    pub schedule_name: String,
    /// The pipeline it runs.
    pub pipeline: String,
    /// Why it exists.
    pub trigger: RunTrigger,
    /// The tick (for manual runs, when it was asked for).
    pub scheduled_at: DateTime<Utc>,
    /// 1 for the first attempt, then 2, 3, … for retries.
    pub attempt: i32,
    /// The replica that claimed it (or recorded it).
    pub node_id: Option<Uuid>,
    /// Where it is.
    pub status: RunStatus,
    /// When the row was written.
    pub claimed_at: DateTime<Utc>,
    /// Earliest start of a pending retry.
    pub not_before: Option<DateTime<Utc>>,
    /// When the pipeline started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it failed, was skipped or missed.
    pub error: Option<String>,
    /// What the pipeline returned.
    pub result: Option<Value>,
    /// For a `skipped` tick: the run it overlapped (the oldest of the
    /// schedule's runs that were running when it fell due).
    pub overlapped_run_id: Option<Uuid>,
    /// The params a manual run (and its retries) was given: the schedule's
    /// when it was asked for, with the request's override merged over them.
    /// `None` for ticks, which run with their schedule's params as they are
    /// when the run starts.
    pub params: Option<Map<String, Value>>,
    /// For a rerun: the run it repeats.
    pub rerun_of: Option<Uuid>,
    /// The backfill that created it (trigger `backfill`, and its retries).
    pub backfill_id: Option<Uuid>,
}

/// A manual run to record, for [`insert_manual_run`].
#[derive(Debug, Clone, Copy)]
pub struct ManualRun<'a> {
    /// Its schedule.
    pub schedule_name: &'a str,
    /// The schedule's pipeline.
    pub pipeline: &'a str,
    /// The params it is to run with (`None`: the schedule's, when it starts).
    pub params: Option<&'a Map<String, Value>>,
    /// For a rerun: the run it repeats.
    pub rerun_of: Option<Uuid>,
}

/// NOTIFY channel announcing runs waiting to be picked up.
pub const RUNS_CHANNEL: &str = "spine_runs";

const COLUMNS: &str = "run_id, schedule_name, pipeline, trigger, scheduled_at, attempt, node_id, \
    status, claimed_at, not_before, started_at, completed_at, error, result, overlapped_run_id, \
    params, rerun_of, backfill_id";

fn from_row(row: &Row) -> Result<Run, StoreError> {
    let status: String = row.try_get("status")?;
    let trigger: String = row.try_get("trigger")?;
    let bad = |what: String| StoreError::Schema(format!("scheduler_runs: {what}"));
    Ok(Run {
        run_id: row.try_get("run_id")?,
        schedule_name: row.try_get("schedule_name")?,
        pipeline: row.try_get("pipeline")?,
        trigger: trigger.parse().map_err(bad)?,
        scheduled_at: row.try_get("scheduled_at")?,
        attempt: row.try_get("attempt")?,
        node_id: row.try_get("node_id")?,
        status: status.parse().map_err(bad)?,
        claimed_at: row.try_get("claimed_at")?,
        not_before: row.try_get("not_before")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        error: row.try_get("error")?,
        result: row.try_get("result")?,
        overlapped_run_id: row.try_get("overlapped_run_id")?,
        params: match row.try_get::<_, Option<Value>>("params")? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            // The column's CHECK keeps this out, unless edited away.
            Some(_) => return Err(bad("params is not a JSON object".to_string())),
        },
        rerun_of: row.try_get("rerun_of")?,
        backfill_id: row.try_get("backfill_id")?,
    })
}

/// The statement [`get`] runs: $1 the run id, $2 and $3 the range of
/// ticks to look in (tests read its EXPLAIN).
pub fn get_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM scheduler_runs \
         WHERE run_id = $1 AND scheduled_at >= $2 AND scheduled_at < $3"
    )
}

/// Reads one run: first among the ticks its id points at (a partition or
/// two), then, if not found there, over the whole ledger
/// ([`run_ids::ranges`]).
pub async fn get(client: &impl GenericClient, run_id: Uuid) -> Result<Option<Run>, StoreError> {
    let sql = get_sql();
    for (from, to) in run_ids::ranges(run_id) {
        if let Some(row) = client.query_opt(&sql, &[&run_id, &from, &to]).await? {
            return from_row(&row).map(Some);
        }
    }
    Ok(None)
}

/// Records a run-now request: a `pending` manual run that a replica will
/// pick up, with its schedule's params as they are when it starts.
pub async fn insert_manual(
    client: &impl GenericClient,
    schedule_name: &str,
    pipeline: &str,
) -> Result<Run, StoreError> {
    insert_manual_run(
        client,
        &ManualRun {
            schedule_name,
            pipeline,
            params: None,
            rerun_of: None,
        },
    )
    .await
}

/// Records a manual run (run-now, rerun): `pending`, trigger `manual`,
/// with the params it is to run with and the run it repeats, if any.
pub async fn insert_manual_run(
    client: &impl GenericClient,
    run: &ManualRun<'_>,
) -> Result<Run, StoreError> {
    // The NOTIFY wakes an idle replica at once instead of at its next poll.
    // A manual run's key in the tick key is (schedule, when asked, 1, true):
    // two asked within the same microsecond would collide, so the later one
    // is moved on by a microsecond ($6) and written again.
    // Its id carries the instant it is written with (`run_ids`).
    let at = "now() + $6::int4 * interval '1 microsecond'";
    let run_id = run_ids::sql_for_tick("$1::uuid", at);
    let sql = format!(
        "WITH ins AS ( \
             INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                         status, pending_since, params, rerun_of) \
             VALUES ({run_id}, $2, $3, 'manual', {at}, 'pending', now(), $4, $5) \
             ON CONFLICT (schedule_name, scheduled_at, attempt, (trigger = 'manual')) DO NOTHING \
             RETURNING {COLUMNS}) \
         SELECT ins.*, pg_notify('{RUNS_CHANNEL}', ins.run_id::text) FROM ins"
    );
    let params = run.params.map(|m| Value::Object(m.clone()));
    for shift in 0..MANUAL_SHIFTS {
        let row = client
            .query_opt(
                &sql,
                &[
                    &Uuid::now_v7(),
                    &run.schedule_name,
                    &run.pipeline,
                    &params,
                    &run.rerun_of,
                    &shift,
                ],
            )
            .await?;
        if let Some(row) = row {
            return from_row(&row);
        }
    }
    Err(StoreError::Schema(format!(
        "no free instant for a manual run of {:?} within {MANUAL_SHIFTS} microseconds",
        run.schedule_name
    )))
}

/// How many microseconds [`insert_manual_run`] moves a manual run on
/// before giving up (each step is a collision with one asked for at the
/// same instant).
const MANUAL_SHIFTS: i32 = 1000;

/// Moves a run this node holds from `running` to a final status. Returns
/// false when the row is no longer ours to finish (the reaper marked it
/// `abandoned` because our heartbeat lapsed): the caller must not retry.
pub async fn finish(
    client: &impl GenericClient,
    run_id: Uuid,
    node_id: Uuid,
    status: RunStatus,
    error: Option<&str>,
    result: Option<&Value>,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "UPDATE scheduler_runs \
             SET status = $3, completed_at = now(), error = $4, result = $5, \
                 failed_at = CASE WHEN $3 IN ('failed', 'abandoned') THEN now() END \
             WHERE run_id = $1 AND node_id = $2 AND status = 'running'",
            &[&run_id, &node_id, &status.as_str(), &error, &result],
        )
        .await?;
    Ok(n == 1)
}

/// Filters for [`list`]; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this schedule's runs.
    pub schedule_name: Option<String>,
    /// Only runs in one of these states.
    pub statuses: Vec<RunStatus>,
    /// Only runs with this trigger.
    pub trigger: Option<RunTrigger>,
    /// Only ticks at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only ticks before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Cursor: only runs older than this (scheduled_at, run_id), as returned in `next`.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<Run>,
    /// The cursor for the next (older) page, when this one was full.
    pub next: Option<(DateTime<Utc>, Uuid)>,
}

/// The statement [`list`] runs. Parameters: $1 schedule name, $2 statuses
/// (text[]), $3 trigger, $4 since, $5 until, $6 and $7 the cursor
/// (scheduled_at, run_id), $8 the page size; NULL: no such filter. A given
/// `since`/`until` prunes the ledger's partitions (tests read its EXPLAIN).
pub fn list_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM scheduler_runs \
         WHERE ($1::text IS NULL OR schedule_name = $1) \
           AND ($2::text[] IS NULL OR status = ANY($2)) \
           AND ($3::text IS NULL OR trigger = $3) \
           AND ($4::timestamptz IS NULL OR scheduled_at >= $4) \
           AND ($5::timestamptz IS NULL OR scheduled_at < $5) \
           AND ($6::timestamptz IS NULL OR (scheduled_at, run_id) < ($6, $7::uuid)) \
         ORDER BY scheduled_at DESC, run_id DESC LIMIT $8"
    )
}

/// The first window of ticks [`list`] reads, back from the newest it may
/// return; each next one is twice as long.
const FIRST_WINDOW_DAYS: i64 = 1;

/// Past this long a window, [`list`] reads the rest of the ledger at once.
const LAST_WINDOW_DAYS: i64 = 1024;

/// Run history, newest tick first, keyset-paginated on (scheduled_at, run_id).
///
/// Read window by window back in time (a day, then two, four, …, then all
/// the rest), each a statement of its own with a tick range, so that each
/// reads and plans only the partitions it covers: a page of recent runs
/// costs a partition or two however long the history, where one statement
/// without a range would plan and probe every partition (34 of them hold a
/// month: 1.7 ms of planning alone, `spine-bench history`). The pages are
/// the same as one statement's.
pub async fn list(client: &impl GenericClient, filter: &RunFilter) -> Result<RunPage, StoreError> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let statuses: Option<Vec<&str>> =
        (!filter.statuses.is_empty()).then(|| filter.statuses.iter().map(|s| s.as_str()).collect());
    let (before_at, before_id) = match filter.before {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    let sql = list_sql();
    let trigger = filter.trigger.map(RunTrigger::as_str);
    // The newest tick the page may hold: windows count back from there.
    let top = [filter.until, before_at]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(Utc::now);
    let mut upper = filter.until;
    let mut days = FIRST_WINDOW_DAYS;
    let mut runs: Vec<Run> = Vec::new();
    loop {
        let lower = top - chrono::Duration::days(days);
        let (since, last) = match filter.since {
            Some(since) if since >= lower => (Some(since), true),
            since if days > LAST_WINDOW_DAYS => (since, true),
            _ => (Some(lower), false),
        };
        let wanted = limit - runs.len() as i64;
        let rows = client
            .query(
                &sql,
                &[
                    &filter.schedule_name,
                    &statuses,
                    &trigger,
                    &since,
                    &upper,
                    &before_at,
                    &before_id,
                    &wanted,
                ],
            )
            .await?;
        for row in &rows {
            runs.push(from_row(row)?);
        }
        if runs.len() as i64 >= limit || last {
            break;
        }
        upper = since;
        days *= 2;
    }
    let next = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|r| (r.scheduled_at, r.run_id)))
        .flatten();
    Ok(RunPage { runs, next })
}

/// Takes up to `limit` pending runs whose time has come (manual runs,
/// backfill runs, and retries past their backoff) and marks them `running` on this node,
/// listed in `scheduler_inflight` under `claim_id` (`store::inflight`).
/// `SKIP LOCKED` lets replicas take disjoint sets without waiting.
pub async fn take_pending(
    client: &impl GenericClient,
    node_id: Uuid,
    claim_id: Uuid,
    limit: i64,
) -> Result<Vec<Run>, StoreError> {
    // Pending runs are found through `pending_since` (migration 15): an
    // index over `status` would keep every completion from being HOT.
    let sql = format!(
        "WITH taken AS ( \
             UPDATE scheduler_runs \
             SET status = 'running', node_id = $1, started_at = now(), pending_since = NULL \
             WHERE (run_id, scheduled_at) IN ( \
                 SELECT run_id, scheduled_at FROM scheduler_runs \
                 WHERE pending_since IS NOT NULL AND status = 'pending' \
                   AND (not_before IS NULL OR not_before <= now()) \
                 ORDER BY scheduled_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}), \
         tracked AS ( \
             INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks) \
             SELECT $3, $1, array_agg(run_id), array_agg(schedule_name), array_agg(scheduled_at) \
             FROM taken HAVING count(*) > 0) \
         SELECT * FROM taken"
    );
    let rows = client.query(&sql, &[&node_id, &limit, &claim_id]).await?;
    rows.iter().map(from_row).collect()
}

/// A run's final state, for [`finish_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The run.
    pub run_id: Uuid,
    /// Its tick (the row's `scheduled_at`: finds its partition).
    pub scheduled_at: DateTime<Utc>,
    /// Its schedule (for metrics and logs; not written).
    pub schedule_name: String,
    /// What started it (for metrics; not written).
    pub trigger: RunTrigger,
    /// `completed` or `failed` (or `abandoned` at shutdown).
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// What the pipeline returned.
    pub result: Option<Value>,
    /// When the pipeline actually started (database time, estimated by the
    /// replica); `None` keeps the claim time.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (database time, estimated by the replica); `None`
    /// means when the row is written. Results may be written a little after
    /// the run ends (they wait for claims, see `engine::priority`).
    pub completed_at: Option<DateTime<Utc>>,
    /// Whether the schedule's next tick is close: its result must not wait
    /// for claims, or that tick — possibly claimed by another replica, which
    /// cannot know the run has finished — would find it still running and
    /// be recorded skipped. (Not written.)
    pub urgent: bool,
}

/// One primary-key probe per run, pruned to its partition by the tick
/// (`$8`). `IS NOT DISTINCT FROM` (same meaning here: a running run always
/// has its node) keeps the generic plan of the prepared statement from
/// choosing an index by node. No column an index uses changes for a
/// successful run, so its update is HOT (`failed_at` is set, and indexed,
/// only for failures: migration 15). The `scheduler_inflight` rows whose
/// last runs these are (`$9`, `engine::inflight`) go in the same statement.
const FINISH_BATCH: &str = "\
WITH listed AS (
    DELETE FROM scheduler_inflight WHERE claim_id = ANY($9::uuid[])
)
UPDATE scheduler_runs r
SET status = u.status, completed_at = coalesce(u.completed_at, now()), error = u.error,
    result = u.result, started_at = coalesce(u.started_at, r.started_at),
    failed_at = CASE WHEN u.status IN ('failed', 'abandoned')
                     THEN coalesce(u.completed_at, now()) END
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $6::timestamptz[], $7::timestamptz[],
            $8::timestamptz[])
     AS u(run_id, status, error, result, started_at, completed_at, tick)
WHERE r.run_id = u.run_id AND r.scheduled_at = u.tick
  AND r.node_id IS NOT DISTINCT FROM $5 AND r.status = 'running'
RETURNING r.run_id";

/// Finishes many runs in one statement, each compare-and-set as in
/// [`finish`], and deletes the `scheduler_inflight` rows `ended_claims`
/// (those whose last runs these are). Returns the ids that were no longer
/// ours to finish.
pub async fn finish_batch(
    client: &impl deadpool_postgres::GenericClient,
    node_id: Uuid,
    completions: &[Completion],
    ended_claims: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    if completions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = completions.iter().map(|c| c.run_id).collect();
    let statuses: Vec<&str> = completions.iter().map(|c| c.status.as_str()).collect();
    let errors: Vec<Option<&str>> = completions.iter().map(|c| c.error.as_deref()).collect();
    let results: Vec<Option<&Value>> = completions.iter().map(|c| c.result.as_ref()).collect();
    let started: Vec<Option<DateTime<Utc>>> = completions.iter().map(|c| c.started_at).collect();
    let finished: Vec<Option<DateTime<Utc>>> = completions.iter().map(|c| c.completed_at).collect();
    let ticks: Vec<DateTime<Utc>> = completions.iter().map(|c| c.scheduled_at).collect();
    let stmt = client.prepare_cached(FINISH_BATCH).await?;
    let rows = client
        .query(
            &stmt,
            &[
                &ids,
                &statuses,
                &errors,
                &results,
                &node_id,
                &started,
                &finished,
                &ticks,
                &ended_claims,
            ],
        )
        .await?;
    let done: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    Ok(ids.into_iter().filter(|id| !done.contains(id)).collect())
}

/// Where `run_id` is running: `Some(node)` while its row is `running`, `None`
/// once it has ended (or does not exist). A run waiting for it polls this.
pub async fn running_on(
    client: &impl deadpool_postgres::GenericClient,
    run_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT status, node_id FROM scheduler_runs \
             WHERE run_id = $1 AND scheduled_at >= $2 AND scheduled_at < $3",
        )
        .await?;
    for (from, to) in run_ids::ranges(run_id) {
        if let Some(row) = client.query_opt(&stmt, &[&run_id, &from, &to]).await? {
            let status: String = row.try_get(0)?;
            return Ok(if status == "running" {
                row.try_get(1)?
            } else {
                None
            });
        }
    }
    Ok(None)
}

/// Records the start of the run of `tick` that was written waiting (no
/// `started_at`).
pub async fn mark_started(
    client: &impl deadpool_postgres::GenericClient,
    run_id: Uuid,
    tick: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE scheduler_runs SET started_at = $3 \
             WHERE run_id = $1 AND scheduled_at = $2 AND status = 'running' \
               AND started_at IS NULL",
            &[&run_id, &tick, &at],
        )
        .await?;
    Ok(())
}

/// The cancel requests standing for `node`'s running runs: `(run_id, mode,
/// asked by)`. Read when a replica listens again, so that a request whose
/// notification it missed is still carried out.
pub async fn cancel_requests_of(
    client: &impl GenericClient,
    node: Uuid,
) -> Result<Vec<(Uuid, String, Option<Uuid>)>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT run_id, cancel_mode, cancel_requested_by FROM {} u \
                 WHERE node_id = $1 AND cancel_requested_at IS NOT NULL",
                super::inflight::UNFINISHED
            ),
            &[&node],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get::<_, Option<String>>(1)?
                    .unwrap_or_else(|| "graceful".into()),
                r.try_get(2)?,
            ))
        })
        .collect()
}

/// What became of a cancel request made through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAsked {
    /// The run is running (or waiting): the request stands and was announced.
    Requested,
    /// No run with this id.
    NotFound,
    /// The run is not running (its status), nothing to cancel.
    NotRunning(RunStatus),
}

/// Asks the replica running `run_id` to stop it (`mode`: `graceful` or
/// `immediate`), announcing it on [`RUNS_CHANNEL`]; a request already
/// standing keeps its asker and becomes `immediate` if asked so.
pub async fn request_cancel(
    client: &impl GenericClient,
    run_id: Uuid,
    mode: &str,
) -> Result<CancelAsked, StoreError> {
    let sql = format!(
        "WITH asked AS (
             UPDATE scheduler_runs
             SET cancel_requested_at = coalesce(cancel_requested_at, now()),
                 cancel_mode = CASE WHEN $2 = 'immediate' THEN 'immediate'
                                    ELSE coalesce(cancel_mode, $2) END
             WHERE run_id = $1 AND scheduled_at >= $3 AND scheduled_at < $4
               AND status = 'running'
             RETURNING run_id, cancel_mode, cancel_requested_by
         )
         SELECT r.status,
                (SELECT count(pg_notify('{RUNS_CHANNEL}',
                        'cancel:' || a.run_id || ':' || a.cancel_mode || ':'
                        || coalesce(a.cancel_requested_by::text, '')))
                 FROM asked a) AS announced
         FROM scheduler_runs r
         WHERE r.run_id = $1 AND r.scheduled_at >= $3 AND r.scheduled_at < $4"
    );
    let mut found = None;
    for (from, to) in run_ids::ranges(run_id) {
        found = client
            .query_opt(&sql, &[&run_id, &mode, &from, &to])
            .await?;
        if found.is_some() {
            break;
        }
    }
    let Some(row) = found else {
        return Ok(CancelAsked::NotFound);
    };
    let status: String = row.try_get(0)?;
    let announced: i64 = row.try_get(1)?;
    if announced > 0 {
        return Ok(CancelAsked::Requested);
    }
    let status: RunStatus = status.parse().map_err(StoreError::Schema)?;
    Ok(CancelAsked::NotRunning(status))
}
