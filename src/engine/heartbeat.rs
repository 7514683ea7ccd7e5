//! The replica's row in `scheduler_nodes`, refreshed every heartbeat
//! interval: its state (`active`, `draining`, `left`), a database-clock
//! sample and a probe of the database. Liveness comes from the replica's
//! session lock (`cluster::membership`); the heartbeat's age decides only
//! for a replica without one (lease mode), and then this also refreshes the
//! membership view through the pool.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::watch;
use uuid::Uuid;

use super::outage::Reporter;
use super::DbClock;
use crate::cluster::{Leadership, Membership};
use crate::store::{membership, nodes};
use crate::types::NodeState;

/// What the heartbeat uses of the replica. The shutdown beats with it too,
/// to record `draining` and `left` at once rather than an interval later.
pub(crate) struct Deps {
    /// The row's key.
    pub node_id: Uuid,
    /// Host or pod name, recorded in the row.
    pub node_name: String,
    /// How often it beats; also how old a membership view may be before
    /// the heartbeat reads it itself (lease mode).
    pub heartbeat_interval: Duration,
    /// A replica in lease mode whose heartbeat is older than this is dead.
    pub node_lease: Duration,
    /// The state to record (`active`, `draining`, `left`), set by the shutdown.
    pub node_state: Arc<RwLock<NodeState>>,
    /// The engine's pool.
    pub pool: Pool,
    /// Calibrated by each beat's round trip.
    pub clock: Arc<DbClock>,
    /// Refreshed by the beat when the liveness session is not.
    pub membership: Arc<Membership>,
    /// Its elector is woken when a view the beat publishes lost a replica
    /// (it may have been the leader).
    pub leadership: Arc<Leadership>,
    /// Whether the database answers.
    pub db: Reporter,
}

/// Records the node in its current state once; returns whether the database took it.
pub async fn beat(deps: &Deps) -> bool {
    let state = *deps.node_state.read().unwrap_or_else(|p| p.into_inner());
    let sent = Utc::now();
    let result = async {
        let client = deps.pool.get().await?;
        // The estimate so far (from earlier beats): one statement a beat.
        let offset_ms = deps
            .clock
            .is_calibrated()
            .then(|| i32::try_from(deps.clock.offset().num_milliseconds()).unwrap_or(i32::MAX));
        let db_now = nodes::heartbeat(
            &**client,
            deps.node_id,
            &deps.node_name,
            crate::VERSION,
            state,
            offset_ms,
        )
        .await?;
        // The liveness session reads the membership ten times a second; if
        // it is down, the view comes from here.
        let stale = !deps.membership.is_fresh(deps.heartbeat_interval);
        let view = if stale {
            Some(membership::read(&**client, deps.node_lease).await?)
        } else {
            None
        };
        Ok::<_, crate::store::StoreError>((db_now, view))
    }
    .await;
    match result {
        Ok((db_now, view)) => {
            deps.clock.observe(sent, Utc::now(), db_now);
            if let Some(view) = view {
                crate::cluster::membership::publish(&deps.membership, &deps.leadership, view);
            }
            let offset = deps.clock.offset();
            if offset.num_milliseconds().abs() > 1000 {
                tracing::warn!(offset_ms = offset.num_milliseconds(),
                    "this replica's clock is more than 1 s from the database's; timers follow the database clock");
            }
            deps.db.succeeded();
            true
        }
        Err(e) => {
            deps.db.failed("heartbeat", &e);
            false
        }
    }
}

/// Beats every interval until shutdown.
pub async fn run(deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(deps.heartbeat_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => { beat(&deps).await; }
        }
    }
}
