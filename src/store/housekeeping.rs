//! The leader's duties, as idempotent statements: running them twice, or
//! from two replicas that both briefly believe they lead, changes nothing
//! more than running them once.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
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

/// `used`: the attempts the policy counts. A backfill's run (and its
/// retries, which name the backfill) counts from the backfill's own first
/// attempt of the tick: in mode `all` that is the tick's next attempt
/// number, and the backfill gets the policy's retries all the same
/// (`backfill::settled` waits for them by the same rule and horizon).
const RETRY_CANDIDATES: &str = "\
SELECT r.schedule_name, r.pipeline, r.scheduled_at, r.attempt, r.params, r.backfill_id,
       least(s.retry_backoff_seconds * power(2, b.used - 1), s.retry_backoff_max_seconds)::float8 AS delay
FROM scheduler_runs r
JOIN scheduler_schedules s ON s.name = r.schedule_name
CROSS JOIN LATERAL (
    SELECT r.attempt - coalesce(
               (SELECT f.attempt FROM scheduler_runs f
                WHERE f.backfill_id = r.backfill_id AND f.scheduled_at = r.scheduled_at
                  AND f.trigger = 'backfill'), 1) + 1 AS used) b
WHERE r.failed_at > now() - interval '1 day'
  AND r.status IN ('failed', 'abandoned')
  AND b.used < s.retry_max_attempts
  AND NOT EXISTS (
      SELECT 1 FROM scheduler_runs n
      WHERE n.schedule_name = r.schedule_name AND n.scheduled_at = r.scheduled_at
        AND n.attempt = r.attempt + 1 AND n.trigger <> 'manual')
LIMIT 1000";

const INSERT_RETRIES: &str = "\
INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, attempt,
                            node_id, status, pending_since, not_before, params, backfill_id)
SELECT u.run_id, u.name, u.pipeline, 'retry', u.t, u.attempt, $6, 'pending', now(),
       now() + make_interval(secs => u.delay), u.params, u.backfill_id
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[], $7::float8[],
            $8::jsonb[], $9::uuid[])
     AS u(run_id, name, pipeline, t, attempt, delay, params, backfill_id)
ON CONFLICT (schedule_name, scheduled_at, attempt, (trigger = 'manual')) DO NOTHING";

/// Creates the next attempt (`pending`, trigger `retry`, after the backoff)
/// for every failed or abandoned run its schedule's retry policy allows.
/// A retry keeps the params its attempt was given (a manual run's override)
/// and, for a backfill's run, names the backfill too. Returns how many were
/// created.
pub async fn schedule_retries(
    client: &impl GenericClient,
    leader: Uuid,
) -> Result<u64, StoreError> {
    let rows = client.query(RETRY_CANDIDATES, &[]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut names: Vec<String> = Vec::with_capacity(rows.len());
    let mut pipelines: Vec<String> = Vec::with_capacity(rows.len());
    let mut ticks: Vec<DateTime<Utc>> = Vec::with_capacity(rows.len());
    let mut attempts: Vec<i32> = Vec::with_capacity(rows.len());
    let mut delays: Vec<f64> = Vec::with_capacity(rows.len());
    let mut params: Vec<Option<Value>> = Vec::with_capacity(rows.len());
    let mut backfills: Vec<Option<Uuid>> = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(Uuid::now_v7());
        names.push(r.try_get("schedule_name")?);
        pipelines.push(r.try_get("pipeline")?);
        ticks.push(r.try_get("scheduled_at")?);
        attempts.push(r.try_get::<_, i32>("attempt")? + 1);
        delays.push(r.try_get("delay")?);
        params.push(r.try_get("params")?);
        backfills.push(r.try_get("backfill_id")?);
    }
    let n = client
        .execute(
            INSERT_RETRIES,
            &[
                &ids, &names, &pipelines, &ticks, &attempts, &leader, &delays, &params, &backfills,
            ],
        )
        .await?;
    if n > 0 {
        client
            .batch_execute(&format!("NOTIFY {}", super::runs::RUNS_CHANNEL))
            .await?;
    }
    Ok(n)
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
    let ids: Vec<Uuid> = ticks.iter().map(|_| Uuid::now_v7()).collect();
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
