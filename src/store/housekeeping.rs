//! The leader's duties, as idempotent statements: running them twice, or
//! from two replicas that both briefly believe they lead, changes nothing
//! more than running them once.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Marks replicas dead, and their running runs `abandoned`: replicas in
/// lease mode (no liveness key) whose heartbeat is older than `lease`, and
/// the keyed replicas in `confirmed_gone` whose liveness lock is still not
/// held (checked again here: one that came back is left alone). A run is
/// orphaned when its replica is not `active`/`draining` any more (dead,
/// left, forgotten). Returns the nodes marked dead and the schedule of every
/// run abandoned.
pub async fn reap(
    client: &impl GenericClient,
    lease: Duration,
    confirmed_gone: &[Uuid],
) -> Result<(u64, Vec<(String, String)>), StoreError> {
    use super::membership::{ALIVE, HELD};
    let dead = client
        .execute(
            &format!(
                "WITH {HELD} \
                 UPDATE scheduler_nodes n SET state = 'dead', leader_since = NULL \
                 WHERE n.state IN ('active', 'draining') AND NOT ({ALIVE}) \
                   AND (n.liveness_key IS NULL OR n.node_id = ANY($3::uuid[]))"
            ),
            &[&super::locks::LIVENESS_CLASS, &secs(lease), &confirmed_gone],
        )
        .await?;
    let abandoned: Vec<(String, String)> = client
        .query(ABANDON, &[])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    super::inflight::sweep(client).await?;
    Ok((dead, abandoned))
}

/// The runs of replicas that are not `active`/`draining` any more, found
/// through `scheduler_inflight` (`store::inflight`), whose rows go with
/// them: `abandoned`.
const ABANDON: &str = "\
WITH orphaned AS (
    DELETE FROM scheduler_inflight f
    WHERE NOT EXISTS (
        SELECT 1 FROM scheduler_nodes n
        WHERE n.node_id = f.node_id AND n.state IN ('active', 'draining'))
    RETURNING f.run_ids, f.ticks
)
UPDATE scheduler_runs r
SET status = 'abandoned', completed_at = now(), failed_at = now(),
    error = format('replica %s was gone while the run was in flight',
                   coalesce((SELECT n.hostname FROM scheduler_nodes n WHERE n.node_id = r.node_id),
                            r.node_id::text))
FROM orphaned o CROSS JOIN LATERAL unnest(o.run_ids, o.ticks) AS e(run_id, tick)
WHERE r.run_id = e.run_id AND r.scheduled_at = e.tick AND r.status = 'running'
RETURNING r.schedule_name, r.trigger";

/// Most failures one pass of [`schedule_retries`] handles.
const RETRY_BATCH: i64 = 1000;

/// One pass of the retry sweep, as one statement (so a failure is handled
/// exactly once, whichever replica leads): the oldest `$2` failures still
/// marked (`failed_at`, set when a run fails or is abandoned) are unmarked,
/// and each one its schedule's retry policy allows gets its next attempt,
/// `pending` after the backoff. Unmarking keeps the partial index over
/// `failed_at` down to the failures no pass has seen yet: a pass reads the
/// new failures, not a day of them again and again (with a month of
/// partitions, re-reading 17,000 failures every pass took seconds and held
/// up retention's partition drops; `spine-bench history`).
///
/// `used`: the attempts the policy counts. A backfill's run (and its
/// retries, which name the backfill) counts from the backfill's own first
/// attempt of the tick: in mode `all` that is the tick's next attempt
/// number, and the backfill gets the policy's retries all the same
/// (`backfill::settled` waits for them by the same rule and horizon). The
/// next attempt's id is the `n`-th of `$1` (UUIDv7s made by the caller)
/// with the tick put in its time field (`{retry_id}`, see `run_ids`).
const RETRY_PASS: &str = "\
WITH seen AS (
    UPDATE scheduler_runs r SET failed_at = NULL
    FROM (SELECT run_id, scheduled_at FROM scheduler_runs
          WHERE failed_at IS NOT NULL
          ORDER BY failed_at LIMIT $2
          FOR UPDATE SKIP LOCKED) f
    WHERE r.run_id = f.run_id AND r.scheduled_at = f.scheduled_at
    RETURNING r.schedule_name, r.pipeline, r.scheduled_at, r.attempt, r.params, r.backfill_id,
              r.status
), candidates AS (
    SELECT seen.*, s.retry_backoff_seconds, s.retry_backoff_max_seconds, s.retry_max_attempts,
           seen.attempt - CASE WHEN seen.backfill_id IS NULL THEN 1 ELSE coalesce(
               (SELECT f.attempt FROM scheduler_runs f
                WHERE f.backfill_id = seen.backfill_id AND f.scheduled_at = seen.scheduled_at
                  AND f.trigger = 'backfill'), 1) END + 1 AS used
    FROM seen
    JOIN scheduler_schedules s ON s.name = seen.schedule_name
    WHERE s.retry_max_attempts > 1 AND seen.status IN ('failed', 'abandoned')
), due AS (
    SELECT c.*, row_number() OVER (ORDER BY c.scheduled_at, c.schedule_name) AS n,
           least(c.retry_backoff_seconds * power(2, c.used - 1),
                 c.retry_backoff_max_seconds)::float8 AS delay
    FROM candidates c
    WHERE c.used < c.retry_max_attempts
), inserted AS (
    INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, attempt,
                                node_id, status, pending_since, not_before, params, backfill_id)
    SELECT {retry_id}, d.schedule_name, d.pipeline, 'retry', d.scheduled_at,
           d.attempt + 1, $3, 'pending', now(), now() + make_interval(secs => d.delay),
           d.params, d.backfill_id
    FROM due d
    ON CONFLICT (schedule_name, scheduled_at, attempt, (trigger = 'manual')) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM seen) AS seen, (SELECT count(*) FROM inserted) AS created";

/// Creates the next attempt (`pending`, trigger `retry`, after the backoff)
/// for every failed or abandoned run its schedule's retry policy allows,
/// in passes of at most 1,000 failures. A retry keeps the params its
/// attempt was given (a manual run's override) and, for a backfill's run,
/// names the backfill too. Returns how many were created.
pub async fn schedule_retries(
    client: &impl GenericClient,
    leader: Uuid,
) -> Result<u64, StoreError> {
    let pass = RETRY_PASS.replace(
        "{retry_id}",
        &super::run_ids::sql_for_tick("($1::uuid[])[d.n]", "d.scheduled_at"),
    );
    let mut created = 0;
    loop {
        let ids: Vec<Uuid> = (0..RETRY_BATCH).map(|_| Uuid::now_v7()).collect();
        let row = client
            .query_one(&pass, &[&ids, &RETRY_BATCH, &leader])
            .await?;
        let (seen, n): (i64, i64) = (row.try_get("seen")?, row.try_get("created")?);
        created += u64::try_from(n).unwrap_or(0);
        // A full pass may have left more behind it; a short one did not
        // (failures locked by another pass are that pass's).
        if seen < RETRY_BATCH {
            break;
        }
    }
    if created > 0 {
        client
            .batch_execute(&format!("NOTIFY {}", super::runs::RUNS_CHANNEL))
            .await?;
    }
    Ok(created)
}

/// The newest tick with a ledger row before each schedule's cutoff: where
/// a misfire sweep taking over starts. (Rows after the cutoff may follow a
/// gap — an outage — that the sweep must still walk through.)
pub async fn last_ticks(
    client: &impl GenericClient,
    names: &[&str],
    cutoffs: &[DateTime<Utc>],
) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
    let rows = client
        .query(
            "SELECT s.name, (SELECT max(r.scheduled_at) FROM scheduler_runs r \
                             WHERE r.schedule_name = s.name AND r.trigger <> 'manual' \
                               AND r.scheduled_at < s.cutoff) \
             FROM unnest($1::text[], $2::timestamptz[]) AS s(name, cutoff)",
            &[&names, &cutoffs],
        )
        .await?;
    let mut out = HashMap::new();
    for r in rows {
        if let Some(t) = r.try_get::<_, Option<DateTime<Utc>>>(1)? {
            out.insert(r.try_get(0)?, t);
        }
    }
    Ok(out)
}

/// Where the misfire sweep stands (see migration 0006): the database clock
/// of the last pass that walked every schedule, if any.
pub async fn swept_at(client: &impl GenericClient) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(client
        .query_opt("SELECT swept_at FROM scheduler_sweep", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?)
}

/// Records that a pass at `at` walked every schedule (never moves back).
pub async fn record_swept(
    client: &impl GenericClient,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO scheduler_sweep (swept_at) VALUES ($1) \
             ON CONFLICT (singleton) DO UPDATE \
             SET swept_at = greatest(scheduler_sweep.swept_at, EXCLUDED.swept_at)",
            &[&at],
        )
        .await?;
    Ok(())
}

/// A tick nobody claimed within its grace.
#[derive(Debug, Clone)]
pub struct Unclaimed {
    /// The schedule.
    pub schedule_name: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The tick.
    pub scheduled_at: DateTime<Utc>,
    /// When it fell due (the tick plus its jitter delay): the grace counts
    /// from here.
    pub due_at: DateTime<Utc>,
    /// The grace it missed, in seconds (for the message).
    pub grace_secs: i32,
}

/// Records `missed` rows for ticks that have no row (G2). Returns the
/// schedule of every row written; ticks a replica claimed meanwhile are left alone.
pub async fn record_missed(
    client: &impl GenericClient,
    leader: Uuid,
    ticks: &[Unclaimed],
) -> Result<Vec<String>, StoreError> {
    if ticks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = ticks
        .iter()
        .map(|t| super::run_ids::for_tick(t.scheduled_at))
        .collect();
    let names: Vec<&str> = ticks.iter().map(|t| t.schedule_name.as_str()).collect();
    let pipelines: Vec<&str> = ticks.iter().map(|t| t.pipeline.as_str()).collect();
    let at: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.scheduled_at).collect();
    let graces: Vec<i32> = ticks.iter().map(|t| t.grace_secs).collect();
    let due: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.due_at).collect();
    let n = client
        .query(
            "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                         attempt, node_id, status, completed_at, error) \
             SELECT u.id, u.name, u.pipeline, 'schedule', u.t, 1, $5, 'missed', now(), \
                    format('no replica claimed this tick within its misfire grace of %s s \
(was every replica down or cut off?)', u.grace) \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $6::int4[], \
                         $7::timestamptz[]) \
                  AS u(id, name, pipeline, t, grace, due) \
             WHERE u.due < now() - make_interval(secs => u.grace) \
             ON CONFLICT (schedule_name, scheduled_at, attempt, (trigger = 'manual')) DO NOTHING \
             RETURNING schedule_name",
            &[&ids, &names, &pipelines, &at, &leader, &graces, &due],
        )
        .await?;
    n.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Deletes finished runs older than `max_age`, at most `batch` per call.
/// A backfill's rows are for old ticks: their age counts from when they
/// finished, so they are kept as long as runs of today are (and a second
/// backfill of the same range still finds them).
pub async fn prune_runs(
    client: &impl GenericClient,
    max_age: Duration,
    batch: i64,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM scheduler_runs WHERE run_id IN ( \
                 SELECT run_id FROM scheduler_runs \
                 WHERE scheduled_at < now() - make_interval(secs => $1) \
                   AND status NOT IN ('pending', 'running') \
                   AND (backfill_id IS NULL OR completed_at < now() - make_interval(secs => $1)) \
                 LIMIT $2)",
            &[&secs(max_age), &batch],
        )
        .await?)
}

/// Deletes finished runs beyond the newest `keep` of each schedule, at most
/// `batch` per call.
pub async fn prune_runs_beyond(
    client: &impl GenericClient,
    keep: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM scheduler_runs WHERE run_id IN ( \
                 SELECT run_id FROM ( \
                     SELECT run_id, status, row_number() OVER ( \
                         PARTITION BY schedule_name ORDER BY scheduled_at DESC, run_id DESC) AS rn \
                     FROM scheduler_runs) x \
                 WHERE x.rn > $1 AND x.status NOT IN ('pending', 'running') \
                 LIMIT $2)",
            &[&keep, &batch],
        )
        .await?)
}

/// Forgets replicas that left or died longer than `after` ago.
pub async fn prune_nodes(client: &impl GenericClient, after: Duration) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "DELETE FROM scheduler_nodes \
             WHERE state IN ('left', 'dead') AND heartbeat_at < now() - make_interval(secs => $1)",
            &[&secs(after)],
        )
        .await?)
}
