//! The replica's row in `scheduler_nodes`, refreshed every heartbeat
//! interval: its state (`active`, `draining`, `left`), a database-clock
//! sample and a probe of the database. Liveness comes from the replica's
//! session lock (`cluster::membership`); the heartbeat's age decides only
//! for a replica without one (lease mode), and then this also refreshes the
//! membership view through the pool.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use super::Shared;
use crate::store::{membership, nodes};

/// Records the node in its current state once; returns whether the database took it.
pub async fn beat(shared: &Shared) -> bool {
    let state = shared.node_state();
    let sent = Utc::now();
    let result = async {
        let client = shared.pool.get().await?;
        let db_now = nodes::heartbeat(
            &**client,
            shared.node_id,
            &shared.config.node_name,
            crate::VERSION,
            state,
        )
        .await?;
        // The liveness session reads the membership ten times a second; if
        // it is down, the view comes from here.
        let stale = !shared.membership.is_fresh(shared.config.heartbeat_interval);
        let view = if stale {
            Some(membership::read(&**client, shared.config.node_lease).await?)
        } else {
            None
        };
        Ok::<_, crate::store::StoreError>((db_now, view))
    }
    .await;
    match result {
        Ok((db_now, view)) => {
            shared.clock.observe(sent, Utc::now(), db_now);
            if let Some(view) = view {
                crate::cluster::membership::publish(&shared.membership, &shared.leadership, view);
            }
            let offset = shared.clock.offset();
            if offset.num_milliseconds().abs() > 1000 {
                tracing::warn!(offset_ms = offset.num_milliseconds(),
                    "this replica's clock is more than 1 s from the database's; timers follow the database clock");
            }
            shared.db_succeeded();
            true
        }
        Err(e) => {
            shared.db_failed("heartbeat", &e);
            false
        }
    }
}

/// Beats every interval until shutdown.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(shared.config.heartbeat_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => { beat(&shared).await; }
        }
    }
}
