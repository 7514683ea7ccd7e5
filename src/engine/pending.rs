//! Picks up runs waiting in the ledger — run-now requests and retries past
//! their backoff — when a NOTIFY says there is one, or every poll interval.

use std::sync::Arc;

use tokio::sync::{mpsc, watch, Notify};

use super::completions::Results;
use super::executor::Job;
use super::Shared;
use crate::store::runs::{self, Completion};
use crate::types::RunStatus;

/// Most runs taken per poll.
const MAX_TAKE: i64 = 100;

/// Runs until shutdown.
pub async fn run(
    shared: Arc<Shared>,
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
            _ = tokio::time::sleep(shared.config.pending_poll_interval) => {}
        }
        let free = shared
            .config
            .max_concurrent_runs
            .saturating_sub(shared.inflight.load(std::sync::atomic::Ordering::Relaxed));
        if free == 0 {
            continue;
        }
        let limit = i64::try_from(free).unwrap_or(MAX_TAKE).min(MAX_TAKE);
        let taken = async {
            let client = shared.pool.get().await?;
            runs::take_pending(&**client, shared.node_id, limit).await
        }
        .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                shared.db_failed("looking for pending runs", &e);
                continue;
            }
        };
        for run in taken {
            // Paused schedules are not in the catalog but may still be run by hand.
            let schedule = match shared.catalog.get(&run.schedule_name) {
                Some(s) => Some(s),
                None => read_schedule(&shared, &run.schedule_name).await,
            };
            match schedule {
                Some(schedule) => {
                    let job = Job {
                        run_id: run.run_id,
                        schedule,
                        scheduled_at: run.scheduled_at,
                        attempt: run.attempt,
                        trigger: run.trigger,
                        after: None,
                        done: None,
                    };
                    if jobs.send(job).is_err() {
                        return;
                    }
                }
                None => {
                    completions.send(Completion {
                        run_id: run.run_id,
                        schedule_name: run.schedule_name.clone(),
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
    shared: &Shared,
    name: &str,
) -> Option<Arc<crate::store::schedules::StoredSchedule>> {
    let read = async {
        let client = shared.pool.get().await?;
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
