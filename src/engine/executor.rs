//! The executor task: runs claimed jobs with bounded concurrency, enforces
//! the schedule's timeout, and reports every outcome to the completion
//! writer. On shutdown it stops taking jobs, lets running ones finish within
//! the grace, then cancels the rest (dropping their futures, which kills
//! command pipelines' process groups) and reports them `abandoned`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::Instrument;
use uuid::Uuid;

use super::completions::Results;
use super::DbClock;
use crate::metrics::Metrics;
use crate::pipeline::{PipelineError, PipelineOutcome, Registry, RunContext};
use crate::store::runs::Completion;
use crate::store::schedules::StoredSchedule;
use crate::types::{RunStatus, RunTrigger};

/// A run this replica owns (its ledger row is `running` with our node id).
#[derive(Debug)]
pub struct Job {
    /// The ledger row.
    pub run_id: Uuid,
    /// The schedule, as known when claimed.
    pub schedule: Arc<StoredSchedule>,
    /// The tick.
    pub scheduled_at: DateTime<Utc>,
    /// Attempt number.
    pub attempt: i32,
    /// Why it runs.
    pub trigger: RunTrigger,
    /// The params the ledger row says it runs with (a manual run's, with
    /// the request's override merged in); `None`: the schedule's.
    pub params: Option<Map<String, Value>>,
    /// The run of the same claim this one starts after (`max_instances`
    /// reached within the claim, see `store::claims::INSERT`).
    pub after: Option<Waiting>,
    /// Dropped when this job ends, which starts the one waiting for it.
    pub done: Option<oneshot::Sender<()>>,
}

/// A run to wait for: resolves (with an error: the sender is dropped, never
/// used) when that run's job has ended, however it ended.
#[derive(Debug)]
pub struct Waiting {
    /// The run waited for.
    pub run_id: Uuid,
    /// Resolves when it ends.
    pub finished: oneshot::Receiver<()>,
}

/// What the executor uses of the replica.
pub(crate) struct Deps {
    /// Named in the error of a run whose pipeline this replica lacks.
    pub node_id: Uuid,
    /// Named with it.
    pub node_name: String,
    /// Runs executing at once.
    pub max_concurrent_runs: usize,
    /// How long running jobs may finish after the shutdown signal.
    pub shutdown_grace: Duration,
    /// The pipelines the runs execute.
    pub registry: Arc<Registry>,
    /// Start and finish instants, on the database clock.
    pub clock: Arc<DbClock>,
    /// Fire lag, run durations, runs in flight.
    pub metrics: Metrics,
    /// Runs executing now, kept here; read by the pending-run taker (how
    /// many it may take) and by `EngineHandle::in_flight`.
    pub inflight: Arc<AtomicUsize>,
}

/// Runs until shutdown, then drains. Returns when every job is finished or abandoned.
pub async fn run(
    deps: Arc<Deps>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    completions: Results,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(deps.max_concurrent_runs));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut owners: HashMap<tokio::task::Id, Owner> = HashMap::new();
    let spawn =
        |job: Job, running: &mut JoinSet<()>, owners: &mut HashMap<tokio::task::Id, Owner>| {
            let owner = (job.run_id, job.schedule.schedule.name().to_string());
            let task = execute(deps.clone(), job, permits.clone(), completions.clone());
            let handle = running.spawn(task.in_current_span());
            owners.insert(handle.id(), owner);
            let n = deps
                .inflight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            deps.metrics.runs_in_flight(n + 1);
        };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(job) = jobs.recv() => spawn(job, &mut running, &mut owners),
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                finished(&deps, &mut owners, done);
            }
        }
    }
    // Draining. The grace runs from the signal. Jobs keep arriving until the
    // claimer and the pending-run taker have finished what they were doing
    // (a claim committed during the signal is ours to run) and dropped their
    // senders, which closes the channel.
    let grace = tokio::time::sleep(deps.shutdown_grace);
    tokio::pin!(grace);
    tracing::info!(in_flight = running.len(), grace = ?deps.shutdown_grace, "draining in-flight runs");
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            job = jobs.recv(), if open => match job {
                Some(job) => spawn(job, &mut running, &mut owners),
                None => open = false,
            },
            done = running.join_next_with_id(), if !running.is_empty() => {
                if let Some(done) = done {
                    finished(&deps, &mut owners, done);
                }
            }
            _ = &mut grace => break,
        }
    }
    running.abort_all();
    while let Some(done) = running.join_next_with_id().await {
        finished(&deps, &mut owners, done);
    }
    // Claimed after the grace ran out: never started, recorded abandoned too.
    jobs.close();
    let mut never_started = Vec::new();
    while let Ok(job) = jobs.try_recv() {
        never_started.push((job.run_id, job.schedule.schedule.name().to_string()));
    }
    for (run_id, schedule_name) in owners.into_values().chain(never_started) {
        tracing::warn!(%run_id, "run cut off by shutdown; recorded abandoned");
        completions.send(Completion {
            run_id,
            schedule_name,
            status: RunStatus::Abandoned,
            error: Some(format!(
                "the replica shut down before the run finished (grace {})",
                humantime::format_duration(deps.shutdown_grace)
            )),
            result: None,
            started_at: None,
            completed_at: None,
            urgent: true,
        });
    }
}

/// The run (and its schedule) a task executes.
type Owner = (Uuid, String);

/// Forgets a task that ended; a cancelled one stays in `owners` to be abandoned.
fn finished(
    deps: &Deps,
    owners: &mut HashMap<tokio::task::Id, Owner>,
    done: Result<(tokio::task::Id, ()), JoinError>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(e) if e.is_cancelled() => return,
        Err(e) => e.id(),
    };
    owners.remove(&id);
    let n = deps
        .inflight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    deps.metrics.runs_in_flight(n.saturating_sub(1));
}

async fn execute(deps: Arc<Deps>, mut job: Job, permits: Arc<Semaphore>, completions: Results) {
    let (after, _done) = (job.after.take(), job.done.take());
    let schedule = &job.schedule.schedule;
    let span = tracing::info_span!(
        "run",
        run_id = %job.run_id,
        schedule = %schedule.name(),
        pipeline = %schedule.pipeline(),
        attempt = job.attempt,
        trigger = %job.trigger,
    );
    async {
        if let Some(waiting) = after {
            let _ = waiting.finished.await;
            let grace = crate::timing::misfire_grace(schedule);
            let now = deps.clock.now();
            if now - job.scheduled_at > grace {
                // Waited past its grace: recorded missed, not run.
                let error = format!(
                    "not started within the misfire grace of {} s: it waited for run {} of this schedule (max_instances {}), which ended {:.3} s after this tick",
                    grace.num_seconds(),
                    waiting.run_id,
                    schedule.max_instances(),
                    (now - job.scheduled_at).num_milliseconds() as f64 / 1000.0
                );
                tracing::warn!(%error, "tick recorded without running");
                completions.send(Completion {
                    run_id: job.run_id,
                    schedule_name: schedule.name().to_string(),
                    status: RunStatus::Missed,
                    error: Some(error),
                    result: None,
                    started_at: None,
                    completed_at: Some(now),
                    urgent: true,
                });
                return;
            }
        }
        let _permit = permits.acquire().await;
        let started_at = deps.clock.now();
        let started = std::time::Instant::now();
        let lag_ms = (started_at - job.scheduled_at).num_milliseconds();
        if job.trigger == RunTrigger::Schedule {
            deps.metrics.fire_lag(lag_ms as f64 / 1000.0);
        }
        tracing::info!(tick = %job.scheduled_at, lag_ms, "run started");
        let outcome = run_pipeline(&deps, &job).await;
        // The clock estimate may have been corrected meanwhile: never before the start.
        let finished = deps.clock.now().max(started_at);
        let completed_at = Some(finished);
        let urgent = schedule
            .next_fire_after(finished)
            .is_some_and(|next| next - finished < crate::timing::URGENT_WITHIN);
        deps
            .metrics
            .run_duration(schedule.name(), started.elapsed().as_secs_f64());
        let completion = match outcome {
            Ok(result) => {
                tracing::info!("run completed");
                Completion {
                    run_id: job.run_id,
                    schedule_name: schedule.name().to_string(),
                    status: RunStatus::Completed,
                    error: None,
                    result,
                    started_at: Some(started_at),
                    completed_at,
                    urgent,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "run failed");
                Completion {
                    run_id: job.run_id,
                    schedule_name: schedule.name().to_string(),
                    status: RunStatus::Failed,
                    error: Some(e.message),
                    result: e.result,
                    started_at: Some(started_at),
                    completed_at,
                    urgent,
                }
            }
        };
        completions.send(completion);
    }
    .instrument(span)
    .await
}

async fn run_pipeline(deps: &Deps, job: &Job) -> PipelineOutcome {
    let schedule = &job.schedule.schedule;
    let Some(pipeline) = deps.registry.get(schedule.pipeline()) else {
        return Err(PipelineError::new(format!(
            "pipeline {:?} is not defined on replica {} ({}); define it in the pipelines file",
            schedule.pipeline(),
            deps.node_name,
            deps.node_id
        )));
    };
    let ctx = RunContext {
        run_id: job.run_id,
        schedule: schedule.name().to_string(),
        pipeline: schedule.pipeline().to_string(),
        scheduled_at: job.scheduled_at,
        attempt: job.attempt,
        trigger: job.trigger,
        params: job
            .params
            .clone()
            .unwrap_or_else(|| schedule.params().clone()),
    };
    // Its own task, so a panicking handler fails the run instead of the replica.
    let task = AbortOnDrop(tokio::spawn(pipeline.run(ctx).in_current_span()));
    let joined = match schedule.timeout() {
        Some(limit) => match tokio::time::timeout(limit, task).await {
            Ok(r) => r,
            Err(_) => {
                return Err(PipelineError::new(format!(
                    "timed out after {} (the schedule's timeout); the run was cancelled",
                    humantime::format_duration(limit)
                )))
            }
        },
        None => task.await,
    };
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err(PipelineError::new(format!(
            "the pipeline panicked: {}",
            panic_message(e)
        ))),
        Err(e) => Err(PipelineError::new(format!("the pipeline task ended: {e}"))),
    }
}

fn panic_message(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string()),
        Err(e) => e.to_string(),
    }
}

/// A spawned task that is cancelled when its handle is dropped (a plain
/// `JoinHandle` would detach it and let a timed-out run go on).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
