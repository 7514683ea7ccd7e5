//! Read-only queries the admin API and its probes need beyond the CRUD in
//! `schedules`, `runs` and `nodes`: the database clock, each schedule's last
//! run, counts for the metrics, and this replica's own node row.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;
use crate::types::{RunStatus, RunTrigger};

/// The newest run of a schedule, as shown beside it in the API.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRun {
    /// The run.
    pub run_id: Uuid,
    /// Where it is.
    pub status: RunStatus,
    /// Why it exists.
    pub trigger: RunTrigger,
    /// Its tick.
    pub scheduled_at: DateTime<Utc>,
    /// When its pipeline started, if it has.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status, if it has.
    pub completed_at: Option<DateTime<Utc>>,
}

/// One index probe per name (the `LATERAL ... LIMIT 1` walks the tick key
/// `scheduler_runs_tick_key` backwards, an incremental sort ordering one
/// tick's attempts by `run_id`), so the cost does not grow
/// with the length of the history. The outer join on a single row makes the
/// result never empty, so the database clock rides along in the same round
/// trip.
const LAST_RUNS: &str = "\
SELECT now() AS db_now, x.*
FROM (SELECT 1) AS one
LEFT JOIN (
    SELECT n.name, r.run_id, r.status, r.trigger, r.scheduled_at, r.started_at, r.completed_at
    FROM unnest($1::text[]) AS n(name)
    CROSS JOIN LATERAL (
        SELECT run_id, status, trigger, scheduled_at, started_at, completed_at
        FROM scheduler_runs
        WHERE schedule_name = n.name
        ORDER BY scheduled_at DESC, run_id DESC
        LIMIT 1) r
) AS x ON true";

const SCHEDULE_COUNTS: &str = "\
SELECT count(*) FILTER (WHERE enabled), count(*) FILTER (WHERE NOT enabled)
FROM scheduler_schedules";

// Per stored schedule, one walk of the tick key (scheduler_runs_tick_key), newest
// first, over at most its last LAST_SUCCESS_WINDOW runs (a schedule that
// keeps failing must not make every scrape read its whole history): the
// cost grows with the number of schedules, not with the ledger. On 2 million
// runs of 200 schedules, a tenth of them never successful: about 40 ms,
// against 350 ms without the bound.
const LAST_SUCCESSES: &str = "\
SELECT s.name, extract(epoch FROM r.completed_at)::float8
FROM scheduler_schedules s
CROSS JOIN LATERAL (
    SELECT completed_at FROM (
        SELECT status, completed_at, scheduled_at, run_id FROM scheduler_runs r
        WHERE r.schedule_name = s.name
        ORDER BY r.scheduled_at DESC, r.run_id DESC
        LIMIT $1
    ) recent
    WHERE status = 'completed' AND completed_at IS NOT NULL
    ORDER BY scheduled_at DESC, run_id DESC
    LIMIT 1
) r";

/// How many of a schedule's newest runs [`last_successes`] looks through.
pub const LAST_SUCCESS_WINDOW: i64 = 1000;

// Rides the partial index of pending runs (migration 15).
const PENDING_DUE: &str = "\
SELECT count(*) FROM scheduler_runs
WHERE pending_since IS NOT NULL AND status = 'pending'
  AND (not_before IS NULL OR not_before <= now())";

const NODE_STATE: &str = "\
SELECT state, extract(epoch FROM now() - heartbeat_at)::float8
FROM scheduler_nodes WHERE node_id = $1";

/// Whether the database answers at all (one round trip, no table read).
pub async fn ping(client: &impl GenericClient) -> Result<(), StoreError> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// The database clock (the one that decides when ticks are due).
pub async fn db_now(client: &impl GenericClient) -> Result<DateTime<Utc>, StoreError> {
    Ok(client.query_one("SELECT now()", &[]).await?.try_get(0)?)
}

/// The database clock, and the newest run (by tick) of each named schedule
/// that has one — in one round trip.
pub async fn last_runs(
    client: &impl GenericClient,
    names: &[&str],
) -> Result<(DateTime<Utc>, HashMap<String, LastRun>), StoreError> {
    let rows = client.query(LAST_RUNS, &[&names]).await?;
    let bad = |what: String| StoreError::Schema(format!("scheduler_runs: {what}"));
    let mut now = None;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        now = Some(row.try_get("db_now")?);
        let Some(name) = row.try_get::<_, Option<String>>("name")? else {
            continue;
        };
        let status: String = row.try_get("status")?;
        let trigger: String = row.try_get("trigger")?;
        out.insert(
            name,
            LastRun {
                run_id: row.try_get("run_id")?,
                status: status.parse().map_err(bad)?,
                trigger: trigger.parse().map_err(bad)?,
                scheduled_at: row.try_get("scheduled_at")?,
                started_at: row.try_get("started_at")?,
                completed_at: row.try_get("completed_at")?,
            },
        );
    }
    let now = now.ok_or_else(|| StoreError::Schema("last runs: no row".into()))?;
    Ok((now, out))
}

/// How many schedules are enabled and how many paused.
pub async fn schedule_counts(client: &impl GenericClient) -> Result<(u64, u64), StoreError> {
    let row = client.query_one(SCHEDULE_COUNTS, &[]).await?;
    let n = |i: usize| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
    };
    Ok((n(0)?, n(1)?))
}

/// Each stored schedule's newest completed run's completion time (Unix
/// seconds), among its last [`LAST_SUCCESS_WINDOW`] runs; schedules without
/// a completed run among them are left out.
pub async fn last_successes(client: &impl GenericClient) -> Result<Vec<(String, f64)>, StoreError> {
    let rows = client
        .query(LAST_SUCCESSES, &[&LAST_SUCCESS_WINDOW])
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Pending runs whose earliest start has passed (database clock).
pub async fn pending_due(client: &impl GenericClient) -> Result<u64, StoreError> {
    let row = client.query_one(PENDING_DUE, &[]).await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
}

/// A node's recorded state and the age of its last heartbeat in seconds
/// (database clock), or `None` when it has no row yet.
pub async fn node_state(
    client: &impl GenericClient,
    node_id: Uuid,
) -> Result<Option<(String, f64)>, StoreError> {
    match client.query_opt(NODE_STATE, &[&node_id]).await? {
        Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
        None => Ok(None),
    }
}
