//! Who is alive, from the database's own view of sessions.
//!
//! Every replica holds a session-level advisory lock keyed by its
//! `scheduler_nodes.liveness_key` on a dedicated session
//! (`store::session`). The server releases it the instant that session
//! ends — a crash, `kill -9`, an OOM kill, a node lost with a RST — so
//! reading `pg_locks` tells who is alive without waiting for a heartbeat
//! lease. A replica whose liveness session is down (or an older version
//! without one) has no key and is judged by its heartbeat, as before.
//!
//! [`ALIVE`] is the one definition of "alive", shared by the membership
//! read and by the leader's reaper (`housekeeping::reap`).

use std::time::Duration;

use tokio_postgres::{GenericClient, Statement};
use uuid::Uuid;

use super::{locks, StoreError};

/// The liveness keys whose lock is held in this database: a CTE named
/// `held (key)`. `$1` is `locks::LIVENESS_CLASS`.
pub const HELD: &str = "\
held AS (
    SELECT l.objid::int8 AS key FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
      AND l.classid = $1::int4::oid
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
)";

/// Whether node row `n` is alive, given [`HELD`] and the lease in seconds
/// as `$2`: its liveness lock is held, or — with no key (lease mode) — its
/// heartbeat is within the lease.
pub const ALIVE: &str = "\
CASE WHEN n.liveness_key IS NULL
     THEN n.heartbeat_at > now() - make_interval(secs => $2)
     ELSE EXISTS (SELECT 1 FROM held WHERE held.key = n.liveness_key)
END";

/// The cluster as one read sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    /// Alive replicas in state `active`, sorted by id: they share the ticks.
    pub members: Vec<Uuid>,
    /// Replicas recorded `active` or `draining` that are not alive: their
    /// `running` runs no longer count against `max_instances`, and the
    /// leader reaps them once confirmed.
    pub gone: Vec<Uuid>,
}

/// The membership read: one statement, one row. `$1` the liveness class,
/// `$2` the lease in seconds.
fn read_sql() -> String {
    format!(
        "WITH {HELD}, nodes AS ( \
             SELECT n.node_id, n.state, {ALIVE} AS alive \
             FROM scheduler_nodes n WHERE n.state IN ('active', 'draining')) \
         SELECT coalesce(array_agg(node_id ORDER BY node_id) \
                         FILTER (WHERE alive AND state = 'active'), '{{}}') AS members, \
                coalesce(array_agg(node_id ORDER BY node_id) FILTER (WHERE NOT alive), '{{}}') AS gone \
         FROM nodes"
    )
}

/// Prepares the membership read once, for a session that repeats it (the
/// liveness session reads ten times a second).
pub async fn prepare(client: &impl GenericClient) -> Result<Statement, StoreError> {
    Ok(client.prepare(&read_sql()).await?)
}

/// Reads the membership with a statement from [`prepare`].
pub async fn read_prepared(
    client: &impl GenericClient,
    statement: &Statement,
    lease: Duration,
) -> Result<View, StoreError> {
    let row = client
        .query_one(statement, &[&locks::LIVENESS_CLASS, &lease.as_secs_f64()])
        .await?;
    Ok(View {
        members: row.try_get("members")?,
        gone: row.try_get("gone")?,
    })
}

/// Reads the membership once (the heartbeat's fallback in lease mode).
pub async fn read(client: &impl GenericClient, lease: Duration) -> Result<View, StoreError> {
    let statement = prepare(client).await?;
    read_prepared(client, &statement, lease).await
}

/// Takes the liveness lock `key` on `session` without waiting: false when
/// another session holds it (another replica drew the same key, or this
/// replica's own earlier session is still open on the server).
pub async fn try_lock(client: &impl GenericClient, key: i32) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&locks::LIVENESS_CLASS, &key],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Records `key` as this replica's liveness key (creating its row if need
/// be), and takes it off any other row — a long-dead replica that once drew
/// the same key must not look alive. Call it holding the lock.
pub async fn register(
    client: &impl GenericClient,
    node_id: Uuid,
    hostname: &str,
    version: &str,
    state: crate::types::NodeState,
    key: i32,
) -> Result<(), StoreError> {
    client
        .execute(
            "WITH cleared AS ( \
                 UPDATE scheduler_nodes SET liveness_key = NULL \
                 WHERE liveness_key = $5 AND node_id <> $1) \
             INSERT INTO scheduler_nodes (node_id, hostname, version, state, liveness_key) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE \
             SET liveness_key = $5, heartbeat_at = now(), state = $4",
            &[&node_id, &hostname, &version, &state.as_str(), &key],
        )
        .await?;
    Ok(())
}

/// Lease mode: the replica lost its liveness session but lives. Dropping
/// the key (while the server may still hold the old session's lock, or has
/// just released it) makes the others judge it by its heartbeat, which this
/// refreshes. Only if `key` is still the recorded one.
pub async fn lease_mode(
    client: &impl GenericClient,
    node_id: Uuid,
    key: i32,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE scheduler_nodes SET liveness_key = NULL, heartbeat_at = now() \
             WHERE node_id = $1 AND liveness_key = $2",
            &[&node_id, &key],
        )
        .await?;
    Ok(())
}
