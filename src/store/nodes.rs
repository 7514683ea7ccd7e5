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
    /// `active`, `draining`, `left` or `dead`.
    pub state: String,
    /// The database's `now()` when this was read (ages are relative to it).
    pub read_at: DateTime<Utc>,
}

/// Records this replica in `state` (or refreshes it, if a leader dropped it
/// as dead while it was cut off); returns the database clock. Who is alive
/// is `store::membership`'s question.
pub async fn heartbeat(
    client: &impl GenericClient,
    node_id: Uuid,
    hostname: &str,
    version: &str,
    state: &str,
) -> Result<DateTime<Utc>, StoreError> {
    let row = client
        .query_one(
            "INSERT INTO scheduler_nodes (node_id, hostname, version, state) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), state = $4 \
             RETURNING now()",
            &[&node_id, &hostname, &version, &state],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// All known replicas, most recently started first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Node>, StoreError> {
    let rows = client
        .query(
            "SELECT node_id, hostname, version, started_at, heartbeat_at, leader_since, state, \
                    now() AS read_at \
             FROM scheduler_nodes ORDER BY started_at DESC",
            &[],
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
                state: r.try_get("state")?,
                read_at: r.try_get("read_at")?,
            })
        })
        .collect()
}
