//! The completion writer: final statuses go to the ledger in batches (one
//! UPDATE for everything that finished within a few milliseconds), each
//! row compare-and-set on `status = 'running' AND node_id = me`. A batch
//! waits while this replica is executing a claim (see `priority`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::outage::{Backoff, Reporter};
use super::priority::{ClaimActivity, Unwritten};
use crate::metrics::Metrics;
use crate::store::runs::{self, Completion};

/// Most rows per UPDATE.
const MAX_BATCH: usize = 500;
/// How long to wait for more completions before writing.
const GATHER: Duration = Duration::from_millis(2);
/// Longest a batch waits for the claims to finish: a claimer that is never
/// idle must not hold results back for long (`timing` states why urgent
/// results skip the hold).
const MAX_HOLD: Duration = crate::timing::RESULT_HOLD;

/// Hands finished runs' results to the writer. Each is listed in
/// `unwritten` until it is written, so that the claim's overlap count does
/// not take it for a running run meanwhile.
#[derive(Clone)]
pub struct Results {
    tx: mpsc::UnboundedSender<Completion>,
    unwritten: Arc<Unwritten>,
}

impl Results {
    /// The sender and the writer's end; results sent are listed in `unwritten`.
    pub fn channel(unwritten: Arc<Unwritten>) -> (Self, mpsc::UnboundedReceiver<Completion>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, unwritten }, rx)
    }

    /// Queues a result for the writer.
    pub fn send(&self, completion: Completion) {
        self.unwritten
            .finished(&completion.schedule_name, completion.run_id);
        // The writer is gone only after every sender is dropped.
        let _ = self.tx.send(completion);
    }
}

/// What the completion writer uses of the replica.
pub(crate) struct Deps {
    /// The rows are compare-and-set on being this replica's.
    pub node_id: Uuid,
    /// The engine's pool.
    pub pool: Pool,
    /// Runs by final status.
    pub metrics: Metrics,
    /// Whether the database answers.
    pub db: Reporter,
    /// Batches wait while a claim executes (see `priority`).
    pub claims: Arc<ClaimActivity>,
    /// Results sent and not yet written (see [`Results`]).
    pub unwritten: Arc<Unwritten>,
    /// Which in-flight rows the results empty (see `inflight`).
    pub inflight_rows: Arc<super::inflight::InFlightRows>,
    /// Set at the shutdown signal: the instant by which the replica must
    /// have exited, database or not. The writer stops retrying there.
    pub stop_by: Arc<OnceLock<Instant>>,
}

/// Runs until every sender is gone and everything received is written.
pub async fn run(deps: Arc<Deps>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        if !batch[0].urgent {
            // Claims first — unless an urgent result comes in meanwhile.
            let hold = deps.claims.idle_or(MAX_HOLD);
            tokio::pin!(hold);
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    _ = &mut hold => break,
                    more = rx.recv() => match more {
                        Some(c) => {
                            let urgent = c.urgent;
                            batch.push(c);
                            if urgent {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        }
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(c)) => batch.push(c),
                _ => break,
            }
        }
        write(&deps, &batch).await;
    }
}

/// Writes one batch, retrying (with backoff) until the database takes it: a
/// final status is never dropped because the database blinked. Once the
/// replica is shutting down, only until its deadline (`Deps::stop_by`):
/// then each result is logged and left `running` for the leader, which
/// records it `abandoned` when this replica is gone — a shutdown never
/// hangs on a database that is away.
async fn write(deps: &Deps, batch: &[Completion]) {
    let mut backoff = Backoff::default();
    let ended: Vec<Uuid> = batch.iter().map(|c| c.run_id).collect();
    let emptied = deps.inflight_rows.emptied_by(&ended);
    loop {
        let attempt = async {
            match deps.pool.get().await {
                Ok(client) => runs::finish_batch(&client, deps.node_id, batch, &emptied)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let result = match deps.stop_by.get().copied() {
            Some(deadline) => tokio::time::timeout_at(deadline, attempt)
                .await
                .unwrap_or_else(|_| Err("timed out at the shutdown deadline".to_string())),
            None => attempt.await,
        };
        match result {
            Ok(lost) => {
                deps.unwritten
                    .written(batch.iter().map(|c| (c.schedule_name.as_str(), c.run_id)));
                deps.inflight_rows.written(&ended);
                for c in batch.iter().filter(|c| !lost.contains(&c.run_id)) {
                    deps.metrics.fired(&c.schedule_name, c.status, c.trigger);
                }
                for run_id in lost {
                    tracing::warn!(
                        %run_id,
                        "run was no longer ours to finish (the reaper marked it abandoned)"
                    );
                }
                return;
            }
            Err(error) => {
                deps.db.failed("recording run results", &error);
                let delay = backoff.next_delay();
                if deps
                    .stop_by
                    .get()
                    .is_some_and(|deadline| tokio::time::Instant::now() + delay >= *deadline)
                {
                    give_up(&deps.unwritten, batch, &error);
                    return;
                }
                // Back off, but retry as soon as another task finds the
                // database answering again.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = deps.db.health().answering() => {}
                }
            }
        }
    }
}

/// Shutting down and out of time: says what could not be recorded. The
/// rows stay `running` under this replica's id; once it is gone the
/// leader's reaper records them `abandoned` (and retries them as their
/// schedule's policy says).
fn give_up(unwritten: &Unwritten, batch: &[Completion], error: &str) {
    for c in batch {
        tracing::error!(
            run_id = %c.run_id, schedule = %c.schedule_name,
            status = %c.status, %error,
            "could not record the run's result before shutting down; the leader will record it abandoned"
        );
    }
    unwritten.written(batch.iter().map(|c| (c.schedule_name.as_str(), c.run_id)));
}
