//! `/v1/cluster`: the replicas, their heartbeats, and who leads; and what
//! only the answering replica knows: its clock offset and its fire lag.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, Unauthorized};
use super::AppState;
use crate::store::nodes::{self, Node};

/// One replica.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// Fresh per process.
    pub node_id: Uuid,
    /// Host or pod name.
    pub hostname: String,
    /// Its build's version.
    pub version: String,
    /// `active`, `draining`, `left` or `dead`.
    pub state: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Seconds since its last heartbeat (database clock).
    pub heartbeat_age_seconds: f64,
    /// Whether it is alive: its liveness lock is held (or, in lease mode,
    /// its heartbeat is within the node lease) and it has not left.
    pub alive: bool,
    /// Its liveness key (`pg_locks.objid` of its liveness lock); `null` in
    /// heartbeat lease mode.
    pub liveness_key: Option<i32>,
    /// Since when it leads, if it does.
    pub leader_since: Option<DateTime<Utc>>,
    /// Whether it is the leader now.
    pub is_leader: bool,
    /// Whether it is the replica that answered this request.
    pub is_self: bool,
    /// Its estimate of the database clock minus its own, in seconds
    /// (positive: its clock is behind): the answering replica's current
    /// one, the others' as of their last heartbeat (`null` until measured,
    /// or from a replica of an older version).
    pub clock_offset_seconds: Option<f64>,
}

/// How late the answering replica started its ticks' pipelines since it
/// started (`started_at − scheduled_at`, schedule ticks only): percentiles
/// estimated from its `spine_fire_lag_seconds` histogram as PromQL's
/// `histogram_quantile` would, in seconds; `null` before its first tick.
/// Values past the largest bucket (60 s) are reported as 60.
#[derive(Debug, Serialize, ToSchema)]
pub struct FireLagView {
    /// The replica these figures are from (the one that answered).
    pub node_id: Uuid,
    /// Ticks it started.
    pub count: u64,
    /// Median.
    pub p50_seconds: Option<f64>,
    /// 90th percentile.
    pub p90_seconds: Option<f64>,
    /// 99th percentile.
    pub p99_seconds: Option<f64>,
}

/// The cluster's leader.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderView {
    /// Its node id.
    pub node_id: Uuid,
    /// Its host or pod name.
    pub hostname: String,
    /// Since when it leads.
    pub since: DateTime<Utc>,
}

/// The replicas and the leader.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The database clock when this was read.
    pub read_at: DateTime<Utc>,
    /// The replica that answered.
    pub this_node: Uuid,
    /// The leader, if a live replica holds the leadership.
    pub leader: Option<LeaderView>,
    /// Every known replica, most recently started first.
    pub nodes: Vec<NodeView>,
    /// The answering replica's fire lag.
    pub fire_lag: FireLagView,
}

fn age_seconds(n: &Node) -> f64 {
    (n.read_at - n.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0
}

/// The cluster's replicas and leader.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    operation_id = "get_cluster",
    tag = "cluster",
    responses(
        (status = 200, description = "Replicas and leader", body = ClusterView),
        Unauthorized,
    )
)]
pub async fn get(State(app): State<AppState>) -> Result<axum::Json<ClusterView>, ApiError> {
    let db = app.db().await?;
    let all = nodes::list(&**db, app.inner.node_lease).await?;
    let alive = |n: &Node| n.alive;
    // A dead leader's row may still say leader_since until the next leader
    // clears it: only a live holder counts, the most recent one if two do.
    let leader = all
        .iter()
        .filter(|n| alive(n))
        .filter_map(|n| n.leader_since.map(|since| (since, n)))
        .max_by_key(|(since, _)| *since)
        .map(|(since, n)| LeaderView {
            node_id: n.node_id,
            hostname: n.hostname.clone(),
            since,
        });
    let leader_id = leader.as_ref().map(|l| l.node_id);
    let read_at = match all.first() {
        Some(n) => n.read_at,
        None => crate::store::api_queries::db_now(&**db).await?,
    };
    let this_node = app.engine().node_id();
    let offset = app.engine().clock_offset();
    let offset_seconds = offset.num_microseconds().unwrap_or(0) as f64 / 1e6;
    let lag = app.metrics().fire_lag_summary();
    Ok(axum::Json(ClusterView {
        read_at,
        this_node,
        nodes: all
            .iter()
            .map(|n| NodeView {
                node_id: n.node_id,
                hostname: n.hostname.clone(),
                version: n.version.clone(),
                state: n.state.to_string(),
                started_at: n.started_at,
                heartbeat_at: n.heartbeat_at,
                heartbeat_age_seconds: age_seconds(n),
                alive: alive(n),
                liveness_key: n.liveness_key,
                leader_since: n.leader_since,
                is_leader: Some(n.node_id) == leader_id,
                is_self: n.node_id == this_node,
                clock_offset_seconds: if n.node_id == this_node {
                    Some(offset_seconds)
                } else {
                    n.clock_offset_ms.map(|ms| f64::from(ms) / 1000.0)
                },
            })
            .collect(),
        leader,
        fire_lag: FireLagView {
            node_id: this_node,
            count: lag.count,
            p50_seconds: lag.p50,
            p90_seconds: lag.p90,
            p99_seconds: lag.p99,
        },
    }))
}
