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

use super::cancel::{CancelMode, CancelRequest};
use super::completions::Results;
use super::DbClock;
use crate::cluster::Membership;
use crate::metrics::Metrics;
use crate::pipeline::{CancelSignal, PipelineError, PipelineOutcome, Registry, RunContext};
use crate::store::runs::{self, Completion};
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
    /// When it fell due: the tick plus its jitter delay (`Schedule::due_at`)
    /// for a scheduled tick, the tick itself for other runs. The fire lag
    /// and the misfire grace of a run that waits count from here, so a
    /// jitter shows as neither lag nor lateness.
    pub due_at: DateTime<Utc>,
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
    /// A run outside its claim, on any replica, this one starts after (the
    /// overlap policy made it wait; see `store::claims::INSERT`).
    pub waits_for: Option<Uuid>,
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
    /// Reads whether a run waited for on another replica has ended.
    pub pool: deadpool_postgres::Pool,
    /// Who is alive: a run waited for whose replica is gone has ended.
    pub membership: Arc<Membership>,
}

/// How often a run waiting for a run on another replica looks at the ledger.
const REMOTE_POLL: Duration = Duration::from_millis(100);

/// How long a gracefully cancelled pipeline has before it is dropped: a
/// command's own SIGTERM-to-SIGKILL grace, and a margin.
const CANCEL_BOUND: Duration =
    Duration::from_secs(crate::pipeline::command::KILL_GRACE.as_secs() + 5);

/// Runs until shutdown, then drains. Returns when every job is finished or abandoned.
pub async fn run(
    deps: Arc<Deps>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    completions: Results,
    mut cancels: mpsc::UnboundedReceiver<CancelRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(deps.max_concurrent_runs));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut owners: HashMap<tokio::task::Id, Owner> = HashMap::new();
    let mut cancel_of: HashMap<Uuid, watch::Sender<Option<CancelRequest>>> = HashMap::new();
    let spawn =
        |job: Job,
         running: &mut JoinSet<()>,
         owners: &mut HashMap<tokio::task::Id, Owner>,
         cancel_of: &mut HashMap<Uuid, watch::Sender<Option<CancelRequest>>>| {
            let owner = (
                job.run_id,
                job.schedule.schedule.name().to_string(),
                job.trigger,
                job.scheduled_at,
            );
            let (cancel_tx, cancel_rx) = watch::channel(None);
            cancel_of.insert(job.run_id, cancel_tx);
            let task = execute(
                deps.clone(),
                job,
                permits.clone(),
                completions.clone(),
                cancel_rx,
            );
            let handle = running.spawn(task.in_current_span());
            owners.insert(handle.id(), owner);
            let n = deps
                .inflight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            deps.metrics.runs_in_flight(n + 1);
        };
    let deliver =
        |request: CancelRequest,
         cancel_of: &HashMap<Uuid, watch::Sender<Option<CancelRequest>>>| {
            if let Some(tx) = cancel_of.get(&request.run_id) {
                tracing::info!(run_id = %request.run_id, mode = request.mode.as_str(), "cancel requested");
                tx.send_replace(Some(request));
            }
        };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(job) = jobs.recv() => spawn(job, &mut running, &mut owners, &mut cancel_of),
            Some(request) = cancels.recv() => deliver(request, &cancel_of),
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                finished(&deps, &mut owners, &mut cancel_of, done);
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
                Some(job) => spawn(job, &mut running, &mut owners, &mut cancel_of),
                None => open = false,
            },
            Some(request) = cancels.recv() => deliver(request, &cancel_of),
            done = running.join_next_with_id(), if !running.is_empty() => {
                if let Some(done) = done {
                    finished(&deps, &mut owners, &mut cancel_of, done);
                }
            }
            _ = &mut grace => break,
        }
    }
    running.abort_all();
    while let Some(done) = running.join_next_with_id().await {
        finished(&deps, &mut owners, &mut cancel_of, done);
    }
    // Claimed after the grace ran out: never started, recorded abandoned too.
    jobs.close();
    let mut never_started = Vec::new();
    while let Ok(job) = jobs.try_recv() {
        never_started.push((
            job.run_id,
            job.schedule.schedule.name().to_string(),
            job.trigger,
            job.scheduled_at,
        ));
    }
    for (run_id, schedule_name, trigger, scheduled_at) in owners.into_values().chain(never_started)
    {
        tracing::warn!(%run_id, "run cut off by shutdown; recorded abandoned");
        completions.send(Completion {
            run_id,
            scheduled_at,
            schedule_name,
            trigger,
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
/// A running job's run, schedule, trigger and tick.
type Owner = (Uuid, String, RunTrigger, DateTime<Utc>);

/// Forgets a task that ended; a cancelled one stays in `owners` to be abandoned.
fn finished(
    deps: &Deps,
    owners: &mut HashMap<tokio::task::Id, Owner>,
    cancel_of: &mut HashMap<Uuid, watch::Sender<Option<CancelRequest>>>,
    done: Result<(tokio::task::Id, ()), JoinError>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(e) if e.is_cancelled() => return,
        Err(e) => e.id(),
    };
    if let Some((run_id, _, _, _)) = owners.remove(&id) {
        cancel_of.remove(&run_id);
    }
    let n = deps
        .inflight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    deps.metrics.runs_in_flight(n.saturating_sub(1));
}

async fn execute(
    deps: Arc<Deps>,
    mut job: Job,
    permits: Arc<Semaphore>,
    completions: Results,
    mut cancel: watch::Receiver<Option<CancelRequest>>,
) {
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
        let ended = |status: RunStatus, error: String, completed_at: DateTime<Utc>| Completion {
            run_id: job.run_id,
            scheduled_at: job.scheduled_at,
            schedule_name: schedule.name().to_string(),
            trigger: job.trigger,
            status,
            error: Some(error),
            result: None,
            started_at: None,
            completed_at: Some(completed_at),
            urgent: true,
        };
        let waited_for = after.as_ref().map(|w| w.run_id).or(job.waits_for);
        if let Some(waited_for) = waited_for {
            let wait = async {
                match after {
                    Some(waiting) => {
                        let _ = waiting.finished.await;
                    }
                    None => wait_remote(&deps, waited_for).await,
                }
            };
            let grace = crate::timing::misfire_grace(schedule);
            let give_up = deps.clock.until(job.due_at + grace);
            tokio::select! {
                _ = wait => {}
                _ = tokio::time::sleep(give_up) => {}
                request = next_cancel(&mut cancel) => {
                    let error = format!("{} before it started (it waited for run {waited_for})", request.reason());
                    tracing::info!(%error, "waiting run cancelled");
                    completions.send(ended(RunStatus::Cancelled, error, deps.clock.now()));
                    return;
                }
            }
            let now = deps.clock.now();
            if now - job.due_at > grace {
                // Waited past its grace: recorded missed, not run.
                let error = format!(
                    "not started within the misfire grace of {} s: it waited for run {} of this schedule (max_instances {}, overlap_policy {}), still unfinished {:.3} s after this tick fell due",
                    grace.num_seconds(),
                    waited_for,
                    schedule.max_instances(),
                    schedule.overlap_policy(),
                    (now - job.due_at).num_milliseconds() as f64 / 1000.0
                );
                tracing::warn!(%error, "tick recorded without running");
                completions.send(ended(RunStatus::Missed, error, now));
                return;
            }
            // Its row was written waiting (no start): from now on the
            // overlap counts of every replica see it as started.
            mark_started(&deps, job.run_id, job.scheduled_at, now).await;
        }
        let _permit = permits.acquire().await;
        let started_at = deps.clock.now();
        let started = std::time::Instant::now();
        // Measured from the due instant: a jitter is not lag.
        let lag_ms = (started_at - job.due_at).num_milliseconds();
        if job.trigger == RunTrigger::Schedule {
            deps.metrics.fire_lag(lag_ms as f64 / 1000.0);
        }
        tracing::info!(tick = %job.scheduled_at, due = %job.due_at, lag_ms, "run started");
        let outcome = run_cancellable(&deps, &job, &mut cancel).await;
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
            Ran::Done(Ok(result)) => {
                tracing::info!("run completed");
                Completion {
                    run_id: job.run_id,
                    scheduled_at: job.scheduled_at,
                    schedule_name: schedule.name().to_string(),
                    trigger: job.trigger,
                    status: RunStatus::Completed,
                    error: None,
                    result,
                    started_at: Some(started_at),
                    completed_at,
                    urgent,
                }
            }
            Ran::Done(Err(e)) => {
                tracing::warn!(error = %e.message, "run failed");
                Completion {
                    run_id: job.run_id,
                    scheduled_at: job.scheduled_at,
                    schedule_name: schedule.name().to_string(),
                    trigger: job.trigger,
                    status: RunStatus::Failed,
                    error: Some(e.message),
                    result: e.result,
                    started_at: Some(started_at),
                    completed_at,
                    urgent,
                }
            }
            Ran::Cancelled(request, pipeline) => {
                let (detail, result) = match pipeline {
                    Some(e) => (format!(": {}", e.message), e.result),
                    None => (String::new(), None),
                };
                let error = format!("{}{detail}", request.reason());
                tracing::info!(%error, "run cancelled");
                Completion {
                    run_id: job.run_id,
                    scheduled_at: job.scheduled_at,
                    schedule_name: schedule.name().to_string(),
                    trigger: job.trigger,
                    status: RunStatus::Cancelled,
                    error: Some(error),
                    result,
                    started_at: Some(started_at),
                    completed_at,
                    // Whoever asked waits for this row to end.
                    urgent: true,
                }
            }
        };
        completions.send(completion);
    }
    .instrument(span)
    .await
}

/// Records the start of a run that waited (its row had no `started_at`). A
/// failure only leaves the start to the completion write.
async fn mark_started(deps: &Deps, run_id: Uuid, tick: DateTime<Utc>, at: DateTime<Utc>) {
    let result = match deps.pool.get().await {
        Ok(client) => runs::mark_started(&client, run_id, tick, at)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "could not record the start of a run that waited");
    }
}

/// Waits until `run_id` (on any replica) has ended: its row is no longer
/// `running`, or its replica is gone.
async fn wait_remote(deps: &Deps, run_id: Uuid) {
    loop {
        let unfinished = match deps.pool.get().await {
            Ok(client) => runs::running_on(&client, run_id).await.ok(),
            Err(_) => None,
        };
        match unfinished {
            Some(None) => return,
            Some(Some(node)) if !deps.membership.members().contains(&node) => return,
            // Running on a live replica, or the database did not answer.
            _ => tokio::time::sleep(REMOTE_POLL).await,
        }
    }
}

/// The next cancel request for this run (never, if none comes).
async fn next_cancel(cancel: &mut watch::Receiver<Option<CancelRequest>>) -> CancelRequest {
    loop {
        if let Some(request) = *cancel.borrow_and_update() {
            return request;
        }
        if cancel.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// How a started run ended.
enum Ran {
    /// The pipeline's own outcome.
    Done(PipelineOutcome),
    /// Stopped on request; the pipeline's error when it wound down itself.
    Cancelled(CancelRequest, Option<PipelineError>),
}

/// Runs the pipeline; a cancel request stops it: `immediate` drops it at
/// once, `graceful` tells it and drops it after [`CANCEL_BOUND`]. A pipeline
/// that finished successfully meanwhile counts as completed.
async fn run_cancellable(
    deps: &Deps,
    job: &Job,
    cancel: &mut watch::Receiver<Option<CancelRequest>>,
) -> Ran {
    let (handle, signal) = CancelSignal::new();
    let pipeline = run_pipeline(deps, job, signal);
    tokio::pin!(pipeline);
    let request = tokio::select! {
        outcome = &mut pipeline => return Ran::Done(outcome),
        request = next_cancel(cancel) => request,
    };
    if request.mode == CancelMode::Immediate {
        return Ran::Cancelled(request, None);
    }
    handle.cancel();
    match tokio::time::timeout(CANCEL_BOUND, &mut pipeline).await {
        Ok(Ok(result)) => Ran::Done(Ok(result)),
        Ok(Err(e)) => Ran::Cancelled(request, Some(e)),
        Err(_) => Ran::Cancelled(request, None),
    }
}

async fn run_pipeline(deps: &Deps, job: &Job, cancel: CancelSignal) -> PipelineOutcome {
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
        cancel,
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
