//! Claiming due ticks: the heart of exactly-once (G1, G4).
//!
//! One transaction per batch, two statements:
//!
//! 1. [`LOCK`] finds the ticks whose row already exists (done: someone has
//!    them) and takes `pg_try_advisory_xact_lock` on every schedule with a
//!    tick still to claim. A schedule another replica is claiming right now
//!    is skipped without waiting; the caller keeps its ticks and asks again
//!    (the other replica's transaction may still roll back). The statement
//!    also reads the database clock, `now()`, which is the only clock claims
//!    trust.
//! 2. [`INSERT`] writes one ledger row per due tick of the locked schedules,
//!    `ON CONFLICT DO NOTHING` on the unique tick key. It starts after the
//!    locks are held, so its snapshot sees every claim committed before
//!    ours — which is what makes the cluster-wide `max_instances` count right.
//!    The row's status applies the schedule's policies: `missed` when the tick
//!    is older than its misfire grace or was coalesced into a newer tick,
//!    `skipped` when `max_instances` runs are already running, else `running`.
//!
//! Rows are only ever inserted for `scheduled_at <= now()` on the database
//! clock, so a replica with a fast clock cannot fire early.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::runs::RunStatus;
use super::StoreError;

/// One (schedule, tick) to claim, with the policies the claim applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// The schedule.
    pub schedule_name: String,
    /// Its pipeline (recorded in the ledger).
    pub pipeline: String,
    /// The tick.
    pub scheduled_at: DateTime<Utc>,
    /// Cluster-wide limit of concurrently running runs of this schedule.
    pub max_instances: u32,
    /// How late, in seconds, the tick may start.
    pub misfire_grace_secs: u32,
    /// Whether older due ticks in the same batch collapse into the newest.
    pub coalesce: bool,
    /// Whether this tick is part of this replica's own backlog (ticks that
    /// fell due together in its queue) and may be coalesced. Ticks checked on
    /// behalf of another replica (handoff) are not: a failover must not turn
    /// a tick that is merely late into a coalesced one.
    pub backlog: bool,
}

/// A ledger row this replica created.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The new row's id.
    pub run_id: Uuid,
    /// Its schedule.
    pub schedule_name: String,
    /// Its tick.
    pub scheduled_at: DateTime<Utc>,
    /// `running` (ours to execute), or `missed`/`skipped` (recorded, nothing to run).
    pub status: RunStatus,
}

/// What became of a batch.
#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    /// The database's `now()` for this claim (the transaction's start).
    pub db_now: Option<DateTime<Utc>>,
    /// Local clock just before BEGIN was sent and when it returned: `db_now`
    /// lies in between, which makes a clock-offset sample.
    pub begin_window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Rows we created.
    pub claimed: Vec<Claimed>,
    /// Requests whose row already existed: someone else has it. Done.
    pub taken: usize,
    /// Requests to ask again: schedule locked by another replica, or not yet due.
    pub retry: Vec<ClaimRequest>,
}

/// Statement 1: which ticks already have their row (committed), the
/// per-schedule try-locks for the schedules with a tick still to claim, and
/// the database clock. Ticks already claimed take no lock, so a replica
/// double-checking another's share never contends with that replica.
pub const LOCK: &str = "\
WITH u AS (
    SELECT u.name, u.t, u.ord,
           EXISTS (SELECT 1 FROM scheduler_runs r
                    WHERE r.schedule_name = u.name AND r.scheduled_at = u.t
                      AND r.attempt = 1 AND r.trigger <> 'manual') AS present
    FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS u(name, t, ord)
), todo AS (
    SELECT DISTINCT name FROM u WHERE NOT present
), locked AS (
    SELECT name FROM todo
    WHERE pg_try_advisory_xact_lock(hashtextextended('spine-scheduler:' || name, 0))
)
SELECT now() AS db_now,
       coalesce((SELECT array_agg(name) FROM locked), '{}') AS locked,
       coalesce((SELECT array_agg(ord::int4) FROM u WHERE present), '{}') AS present";

/// Statement 2: the ledger rows, with the misfire, coalesce and overlap policies.
pub const INSERT: &str = "\
WITH c AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
                $5::int[], $6::int[], $7::bool[], $9::bool[])
         AS c(run_id, schedule_name, pipeline, scheduled_at,
              max_instances, grace_secs, coalesce, backlog)
    WHERE c.scheduled_at <= now()
), running AS (
    -- One pass over the (few) unfinished runs rather than a probe per tick.
    SELECT r.schedule_name, count(*) AS n
    FROM scheduler_runs r
    WHERE r.status = 'running' AND r.schedule_name = ANY($2::text[])
    GROUP BY r.schedule_name
), judged AS (
    SELECT c.*, coalesce(running.n, 0) AS running,
           CASE
             WHEN now() - c.scheduled_at > make_interval(secs => c.grace_secs) THEN 'late'
             WHEN c.coalesce AND c.backlog
                  AND c.scheduled_at < max(c.scheduled_at) FILTER (WHERE c.backlog)
                                         OVER (PARTITION BY c.schedule_name) THEN 'coalesced'
           END AS dropped
    FROM c LEFT JOIN running USING (schedule_name)
), decided AS (
    SELECT judged.*,
           CASE
             WHEN dropped IS NOT NULL THEN 'missed'
             WHEN running + row_number() OVER (PARTITION BY schedule_name, dropped IS NULL
                                              ORDER BY scheduled_at) > max_instances THEN 'skipped'
             ELSE 'running'
           END AS status
    FROM judged
)
INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, attempt,
                            node_id, status, claimed_at, started_at, completed_at, error)
SELECT run_id, schedule_name, pipeline, 'schedule', scheduled_at, 1, $8, status, now(),
       CASE WHEN status = 'running' THEN now() END,
       CASE WHEN status <> 'running' THEN now() END,
       CASE
         WHEN status = 'running' THEN NULL
         WHEN dropped = 'late' THEN
           format('not started within the misfire grace of %s s (claimed %s s after the tick)',
                  grace_secs, round(extract(epoch FROM now() - scheduled_at)::numeric, 3))
         WHEN dropped = 'coalesced' THEN 'coalesced: a newer due tick of this schedule ran instead'
         ELSE format('max_instances (%s) runs of this schedule were already running', max_instances)
       END
FROM decided
ON CONFLICT (schedule_name, scheduled_at, attempt) WHERE trigger <> 'manual' DO NOTHING
RETURNING run_id, schedule_name, scheduled_at, status";

/// Claims a batch in one transaction (two statements, prepared once per
/// pooled connection). The client must not be inside a transaction.
pub async fn claim(
    client: &mut deadpool_postgres::Client,
    node_id: Uuid,
    batch: Vec<ClaimRequest>,
) -> Result<ClaimOutcome, StoreError> {
    let mut outcome = ClaimOutcome::default();
    if batch.is_empty() {
        return Ok(outcome);
    }
    let names: Vec<&str> = batch.iter().map(|r| r.schedule_name.as_str()).collect();
    let ticks: Vec<DateTime<Utc>> = batch.iter().map(|r| r.scheduled_at).collect();

    let sent = Utc::now();
    let tx = client.transaction().await?;
    outcome.begin_window = Some((sent, Utc::now()));
    let lock = tx.prepare_cached(LOCK).await?;
    let row = tx.query_one(&lock, &[&names, &ticks]).await?;
    let db_now: DateTime<Utc> = row.try_get("db_now")?;
    let locked: Vec<String> = row.try_get("locked")?;
    let locked: HashSet<String> = locked.into_iter().collect();
    let present: Vec<i32> = row.try_get("present")?;
    let present: HashSet<usize> = present
        .into_iter()
        .filter_map(|i| usize::try_from(i).ok())
        .collect();
    outcome.db_now = Some(db_now);

    let mut mine = Vec::new();
    for (i, req) in batch.into_iter().enumerate() {
        // WITH ORDINALITY counts from 1.
        if present.contains(&(i + 1)) {
            outcome.taken += 1;
        } else if locked.contains(&req.schedule_name) && req.scheduled_at <= db_now {
            mine.push(req);
        } else {
            outcome.retry.push(req);
        }
    }
    if mine.is_empty() {
        tx.commit().await?;
        return Ok(outcome);
    }
    let run_ids: Vec<Uuid> = mine.iter().map(|_| Uuid::now_v7()).collect();
    let schedule_names: Vec<&str> = mine.iter().map(|r| r.schedule_name.as_str()).collect();
    let pipelines: Vec<&str> = mine.iter().map(|r| r.pipeline.as_str()).collect();
    let ticks: Vec<DateTime<Utc>> = mine.iter().map(|r| r.scheduled_at).collect();
    let max_instances: Vec<i32> = mine
        .iter()
        .map(|r| i32::try_from(r.max_instances).unwrap_or(i32::MAX))
        .collect();
    let graces: Vec<i32> = mine
        .iter()
        .map(|r| i32::try_from(r.misfire_grace_secs).unwrap_or(i32::MAX))
        .collect();
    let coalesce: Vec<bool> = mine.iter().map(|r| r.coalesce).collect();
    let backlog: Vec<bool> = mine.iter().map(|r| r.backlog).collect();
    let insert = tx.prepare_cached(INSERT).await?;
    let rows = tx
        .query(
            &insert,
            &[
                &run_ids,
                &schedule_names,
                &pipelines,
                &ticks,
                &max_instances,
                &graces,
                &coalesce,
                &node_id,
                &backlog,
            ],
        )
        .await?;
    tx.commit().await?;
    for row in &rows {
        let status: String = row.try_get("status")?;
        outcome.claimed.push(Claimed {
            run_id: row.try_get("run_id")?,
            schedule_name: row.try_get("schedule_name")?,
            scheduled_at: row.try_get("scheduled_at")?,
            status: status.parse().map_err(|e: String| StoreError::Schema(e))?,
        });
    }
    outcome.taken += mine.len() - rows.len();
    Ok(outcome)
}
