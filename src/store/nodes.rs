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

/// What a heartbeat learns.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    /// The database clock.
    pub db_now: DateTime<Utc>,
    /// Active replicas whose heartbeat is within the lease (this one
    /// included), sorted by id: every replica sees the same order.
    pub active: Vec<Uuid>,
}

/// Records this replica (or refreshes it, if a leader dropped it as dead while
/// it was cut off), and reads which replicas are alive — one statement.
pub async fn heartbeat(
    client: &impl GenericClient,
    node_id: Uuid,
    hostname: &str,
    version: &str,
    state: &str,
    lease: std::time::Duration,
) -> Result<Beat, StoreError> {
    let lease_secs = lease.as_secs_f64();
    let row = client
        .query_one(
            "WITH me AS ( \
                 INSERT INTO scheduler_nodes (node_id, hostname, version, state) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), state = $4 \
                 RETURNING now() AS db_now) \
             SELECT (SELECT db_now FROM me), \
                    coalesce(array_agg(node_id ORDER BY node_id), '{}') \
             FROM scheduler_nodes \
             WHERE state = 'active' AND node_id <> $1 \
               AND heartbeat_at > now() - make_interval(secs => $5)",
            &[&node_id, &hostname, &version, &state, &lease_secs],
        )
        .await?;
    let mut active: Vec<Uuid> = row.try_get(1)?;
    if state == "active" {
        active.push(node_id);
        active.sort();
    }
    Ok(Beat {
        db_now: row.try_get(0)?,
        active,
    })
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
