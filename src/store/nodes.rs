//! Cluster membership, `scheduler_nodes`: one row per replica process.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;

/// A replica as the cluster sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Fresh per process.
    pub node_id: Uuid,
    /// Host or pod name.
    pub hostname: String,
    /// The binary's version.
    pub version: String,
    /// When the process registered.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Since when it leads, if it does.
    pub leader_since: Option<DateTime<Utc>>,
    /// Its recorded state.
    pub state: crate::types::NodeState,
    /// The database's `now()` when this was read (ages are relative to it).
    pub read_at: DateTime<Utc>,
    /// Its liveness key, while it holds a liveness session.
    pub liveness_key: Option<i32>,
    /// Alive by `store::membership::ALIVE` (its liveness lock is held, or in
    /// lease mode its heartbeat is within the lease) and not gone.
    pub alive: bool,
    /// Its estimate of the database clock minus its own, in milliseconds,
    /// as of its previous heartbeat (`None` until measured).
    pub clock_offset_ms: Option<i32>,
}

/// Records this replica in `state` (or refreshes it, if a leader dropped it
/// as dead while it was cut off); returns the database clock. Who is alive
/// is `store::membership`'s question.
pub async fn heartbeat(
    client: &impl GenericClient,
    node_id: Uuid,
    hostname: &str,
    version: &str,
    state: crate::types::NodeState,
    clock_offset_ms: Option<i32>,
) -> Result<DateTime<Utc>, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO scheduler_nodes (node_id, hostname, version, state, clock_offset_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE \
                 SET heartbeat_at = now(), state = $4, clock_offset_ms = $5 \
             RETURNING now()",
            &[
                &node_id,
                &hostname,
                &version,
                &state.as_str(),
                &clock_offset_ms,
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// All known replicas, most recently started first; `lease` judges the
/// ones in lease mode.
pub async fn list(
    client: &impl GenericClient,
    lease: std::time::Duration,
) -> Result<Vec<Node>, StoreError> {
    use super::membership::{ALIVE, HELD};
    let rows = client
        .query(
            &format!(
                "WITH {HELD} \
                 SELECT n.node_id, n.hostname, n.version, n.started_at, n.heartbeat_at, \
                        n.leader_since, n.state, now() AS read_at, n.liveness_key, \
                        n.clock_offset_ms, \
                        n.state IN ('active', 'draining') AND {ALIVE} AS alive \
                 FROM scheduler_nodes n ORDER BY n.started_at DESC"
            ),
            &[&super::locks::LIVENESS_CLASS, &lease.as_secs_f64()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Node {
                node_id: r.try_get("node_id")?,
                hostname: r.try_get("hostname")?,
                version: r.try_get("version")?,
                started_at: r.try_get("started_at")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
                leader_since: r.try_get("leader_since")?,
                state: r
                    .try_get::<_, String>("state")?
                    .parse()
                    .map_err(|e: String| StoreError::Schema(format!("scheduler_nodes: {e}")))?,
                read_at: r.try_get("read_at")?,
                liveness_key: r.try_get("liveness_key")?,
                alive: r.try_get("alive")?,
                clock_offset_ms: r.try_get("clock_offset_ms")?,
            })
        })
        .collect()
}
