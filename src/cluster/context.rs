//! What the cluster's tasks (liveness, election, the leader's duties) use
//! of the replica — and nothing else: they see the shared pieces they work
//! with, not the engine's whole state.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::{ClusterConfig, Leadership, Membership};
use crate::engine::catalog::Catalog;
use crate::engine::outage::{self, DatabaseHealth};
use crate::engine::DbClock;
use crate::metrics::Metrics;
use crate::types::NodeState;

/// The replica, as the cluster's tasks see it.
pub(crate) struct Context {
    /// This replica's id.
    pub node_id: Uuid,
    /// Its host or pod name.
    pub node_name: String,
    /// The main database URL (`ClusterConfig::session_url` picks the one
    /// for dedicated sessions).
    pub database_url: String,
    /// Election, liveness and housekeeping settings.
    pub config: ClusterConfig,
    /// A replica in lease mode whose heartbeat is older than this is dead.
    pub node_lease: Duration,
    /// The engine's pool (lease-mode writes, housekeeping).
    pub pool: Pool,
    /// The database clock.
    pub clock: Arc<DbClock>,
    /// Metrics.
    pub metrics: Metrics,
    /// Who is alive (written by the liveness task).
    pub membership: Arc<Membership>,
    /// Whether this replica leads.
    pub leadership: Arc<Leadership>,
    /// The schedules (the misfire sweep walks them).
    pub catalog: Arc<Catalog>,
    /// Whether the database answers.
    pub health: Arc<DatabaseHealth>,
    /// The state this replica records (`active`, `draining`, `left`).
    pub node_state: Arc<RwLock<NodeState>>,
}

impl Context {
    /// The state this replica records now.
    pub fn node_state(&self) -> NodeState {
        *self.node_state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A database operation (`what`) failed (see `engine::outage`).
    pub fn db_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        outage::failed(&self.health, &self.metrics, what, error);
    }
}
