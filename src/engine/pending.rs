//! Picks up runs waiting in the ledger — run-now requests (and reruns),
//! backfill runs (`engine::backfill` writes them) and retries past their
//! backoff — when a NOTIFY says there is one, or every poll interval. A run
//! whose row recorded params (a manual run's, with its override merged in)
//! runs with those; others with their schedule's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify};
use uuid::Uuid;

use super::catalog::Catalog;
use super::completions::Results;
use super::executor::Job;
use super::outage::Reporter;
use crate::store::runs::{self, Completion};
use crate::types::RunStatus;

/// Most runs taken per poll.
const MAX_TAKE: i64 = 100;

/// What the pending-run taker uses of the replica.
pub(crate) struct Deps {
    /// The runs taken become this replica's.
    pub node_id: Uuid,
    /// How often to look without a NOTIFY.
    pub pending_poll_interval: Duration,
    /// With `inflight`, how many runs there is room for.
    pub max_concurrent_runs: usize,
    /// Runs executing now (kept by the executor).
    pub inflight: Arc<AtomicUsize>,
    /// The in-flight rows the takes write (see `inflight`).
    pub inflight_rows: Arc<super::inflight::InFlightRows>,
    /// The engine's pool.
    pub pool: Pool,
    /// The taken runs' schedules, as far as this replica knows them.
    pub catalog: Arc<Catalog>,
    /// Whether the database answers.
    pub db: Reporter,
}

/// Runs until shutdown.
pub async fn run(
    deps: Arc<Deps>,
    wake: Arc<Notify>,
    jobs: mpsc::UnboundedSender<Job>,
    completions: Results,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(deps.pending_poll_interval) => {}
        }
        let free = deps
            .max_concurrent_runs
            .saturating_sub(deps.inflight.load(Ordering::Relaxed));
        if free == 0 {
            continue;
        }
        let limit = i64::try_from(free).unwrap_or(MAX_TAKE).min(MAX_TAKE);
        let claim_id = Uuid::now_v7();
        let taken = async {
            let client = deps.pool.get().await?;
            runs::take_pending(&**client, deps.node_id, claim_id, limit).await
        }
        .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                deps.db.failed("looking for pending runs", &e);
                continue;
            }
        };
        deps.inflight_rows
            .record(claim_id, taken.iter().map(|r| r.run_id));
        for run in taken {
            // Paused schedules are not in the catalog but may still be run by hand.
            let schedule = match deps.catalog.get(&run.schedule_name) {
                Some(s) => Some(s),
                None => read_schedule(&deps.pool, &run.schedule_name).await,
            };
            match schedule {
                Some(schedule) => {
                    let job = Job {
                        run_id: run.run_id,
                        schedule,
                        scheduled_at: run.scheduled_at,
                        // Run by hand, retried or backfilled: no jitter.
                        due_at: run.scheduled_at,
                        attempt: run.attempt,
                        trigger: run.trigger,
                        params: run.params,
                        after: None,
                        waits_for: None,
                        done: None,
                    };
                    if jobs.send(job).is_err() {
                        return;
                    }
                }
                None => {
                    completions.send(Completion {
                        run_id: run.run_id,
                        scheduled_at: run.scheduled_at,
                        schedule_name: run.schedule_name.clone(),
                        trigger: run.trigger,
                        status: RunStatus::Failed,
                        error: Some(format!(
                            "schedule {:?} no longer exists or is invalid",
                            run.schedule_name
                        )),
                        result: None,
                        started_at: None,
                        completed_at: None,
                        urgent: true,
                    });
                }
            }
        }
    }
}

async fn read_schedule(
    pool: &Pool,
    name: &str,
) -> Option<Arc<crate::store::schedules::StoredSchedule>> {
    let read = async {
        let client = pool.get().await?;
        crate::store::schedules::get(&**client, name).await
    }
    .await;
    match read {
        Ok(found) => found.map(Arc::new),
        Err(e) => {
            tracing::warn!(schedule = name, error = %e, "could not read the schedule of a pending run");
            None
        }
    }
}
