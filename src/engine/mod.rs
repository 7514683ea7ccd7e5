//! The engine: one replica's tick path (`docs/design.md` §3).
//!
//! Separate tasks, joined by channels, so that no stage can delay another:
//!
//! ```text
//!  sync ──changes──▶ timer ──due ticks──▶ claimer ──jobs──▶ executor ──▶ completions
//!   ▲  (LISTEN +       ▲  (sleeps to the     │ (one tx per    ▲ (bounded      (batched
//!   │   resync)        │   earliest tick)    │  batch)        │  concurrency)  CAS UPDATE)
//!   │                  └──────retries────────┘                │
//!   ├── NOTIFY spine_runs ──▶ pending (run-now, retries, ────┘
//!   │                          backfill runs)                 ▲ (pending rows)
//!   └── NOTIFY spine_backfills ──▶ backfill (steps: SKIP LOCKED)
//! ```
//!
//! plus the heartbeat. [`Scheduler::run`] wires them up and shuts them down
//! in order (G7): stop claiming, drain in-flight runs, record the rest
//! `abandoned`, flush results, mark the node `left`.

mod backfill;
pub mod cancel;
pub mod catalog;
mod claimer;
pub mod clock;
mod completions;
pub mod config;
mod digest;
mod executor;
mod handoff;
mod heartbeat;
mod inflight;
pub mod outage;
mod pending;
mod priority;
pub mod queue;
pub mod share;
mod sync;
mod timer;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;
use uuid::Uuid;

pub use self::clock::DbClock;
pub use self::config::{ConfigError, EngineConfig};
use crate::cluster;
use crate::cluster::Leadership;
use crate::metrics::{Metrics, MetricsOptions};
use crate::pipeline::{Pipeline, Registry, RegistryError};
use crate::store::{self, StoreError};
use crate::types::NodeState;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A pipeline could not be registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The database failed during start-up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// The replica's state, as the [`Scheduler`] (and its [`EngineHandle`]s)
/// keep it for start-up, probes and the ordered shutdown. No task sees it:
/// each is handed the pieces it uses (`timer::Deps`, `cluster::Context`...),
/// built from it here, so what a task can touch is visible where it starts.
pub(crate) struct Shared {
    pub node_id: Uuid,
    pub leadership: Arc<Leadership>,
    /// What the heartbeat records: active, draining, left.
    pub node_state: Arc<RwLock<NodeState>>,
    pub config: EngineConfig,
    pub database_url: String,
    pub pool: Pool,
    pub clock: Arc<DbClock>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    /// Runs executing now (kept by the executor).
    pub inflight: Arc<AtomicUsize>,
    /// Claims executing now: results wait for them (see `priority`).
    pub claims: Arc<priority::ClaimActivity>,
    /// Finished runs whose results are not written yet (see `priority`).
    pub unwritten: Arc<priority::Unwritten>,
    /// Which `scheduler_inflight` row lists each running run (see `inflight`).
    pub inflight_rows: Arc<inflight::InFlightRows>,
    /// Whether the database answers, and the claim path's retry delays.
    pub health: Arc<outage::DatabaseHealth>,
    /// Every schedule this replica knows (see `catalog`).
    pub catalog: Arc<catalog::Catalog>,
    /// Who is alive, from the liveness locks (see `cluster::membership`).
    pub membership: Arc<cluster::Membership>,
    /// Set at SIGTERM: the instant by which the replica must have exited,
    /// database or not (`shutdown_grace` + [`AFTER_GRACE`]).
    stop_by: Arc<OnceLock<tokio::time::Instant>>,
}

/// How long after the shutdown grace a replica may still spend writing
/// results and leaving the cluster before it exits regardless.
pub const AFTER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Shared {
    /// Sets the state the heartbeat records next (the shutdown's steps).
    pub fn set_node_state(&self, state: NodeState) {
        *self.node_state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Where the tasks report their database operations.
    fn db(&self) -> outage::Reporter {
        outage::Reporter::new(self.health.clone(), self.metrics.clone())
    }

    /// What the heartbeat uses (the shutdown's beats too).
    fn heartbeat(&self) -> heartbeat::Deps {
        heartbeat::Deps {
            node_id: self.node_id,
            node_name: self.config.node_name.clone(),
            heartbeat_interval: self.config.heartbeat_interval,
            node_lease: self.config.node_lease,
            node_state: self.node_state.clone(),
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            membership: self.membership.clone(),
            leadership: self.leadership.clone(),
            db: self.db(),
        }
    }

    /// What the schedule sync uses.
    fn sync(&self) -> sync::Deps {
        sync::Deps {
            node_id: self.node_id,
            database_url: self.database_url.clone(),
            resync_interval: self.config.resync_interval,
            pool: self.pool.clone(),
            catalog: self.catalog.clone(),
            db: self.db(),
        }
    }

    /// What the timer uses.
    fn timer(&self) -> timer::Deps {
        timer::Deps {
            node_id: self.node_id,
            claim_lead: self.config.claim_lead,
            handoff_delay: self.config.handoff_delay,
            clock: self.clock.clone(),
            membership: self.membership.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// What the claimer uses.
    fn claimer(&self) -> claimer::Deps {
        claimer::Deps {
            node_id: self.node_id,
            claim_batch_size: self.config.claim_batch_size,
            claim_chunks_at_once: self.config.claim_chunks_at_once(),
            claim_retry_delay: self.config.claim_retry_delay,
            claim_idle_timeout: self.config.claim_idle_timeout(),
            handoff_delay: self.config.handoff_delay,
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            membership: self.membership.clone(),
            metrics: self.metrics.clone(),
            db: self.db(),
            claims: self.claims.clone(),
            unwritten: self.unwritten.clone(),
            inflight_rows: self.inflight_rows.clone(),
        }
    }

    /// What the pending-run taker uses.
    fn pending(&self) -> pending::Deps {
        pending::Deps {
            node_id: self.node_id,
            pending_poll_interval: self.config.pending_poll_interval,
            max_concurrent_runs: self.config.max_concurrent_runs,
            inflight: self.inflight.clone(),
            inflight_rows: self.inflight_rows.clone(),
            pool: self.pool.clone(),
            catalog: self.catalog.clone(),
            db: self.db(),
        }
    }

    /// What the backfill stepper uses.
    fn backfill(&self) -> backfill::Deps {
        backfill::Deps {
            pool: self.pool.clone(),
            db: self.db(),
        }
    }

    /// What the executor uses.
    fn executor(&self) -> executor::Deps {
        executor::Deps {
            node_id: self.node_id,
            node_name: self.config.node_name.clone(),
            max_concurrent_runs: self.config.max_concurrent_runs,
            shutdown_grace: self.config.shutdown_grace,
            registry: self.registry.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            inflight: self.inflight.clone(),
            pool: self.pool.clone(),
            membership: self.membership.clone(),
        }
    }

    /// What the completion writer uses.
    fn completions(&self) -> completions::Deps {
        completions::Deps {
            node_id: self.node_id,
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
            db: self.db(),
            claims: self.claims.clone(),
            unwritten: self.unwritten.clone(),
            inflight_rows: self.inflight_rows.clone(),
            stop_by: self.stop_by.clone(),
        }
    }
}

/// The longest one step of the shutdown may take (writing `draining` or
/// `left`, stopping the claim path, the heartbeat or the liveness session).
const STEP: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `f` for at most `limit`; `None` (and a log line) if it did not finish.
async fn bounded<T>(
    what: &str,
    limit: std::time::Duration,
    f: impl Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(step = what, limit = ?limit, "shutdown step did not finish in time; going on");
            None
        }
    }
}

/// A handle on a running engine's state, for probes and the API.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl EngineHandle {
    /// This replica's node id.
    pub fn node_id(&self) -> Uuid {
        self.shared.node_id
    }
    /// Whether the last database operation succeeded.
    pub fn database_ok(&self) -> bool {
        self.shared.health.is_up()
    }
    /// Runs executing now.
    pub fn in_flight(&self) -> usize {
        self.shared.inflight.load(Ordering::Relaxed)
    }
    /// Whether this replica leads the cluster now.
    pub fn is_leader(&self) -> bool {
        self.shared.leadership.is_leader()
    }
    /// How often leadership was gained or lost on this replica.
    pub fn leader_changes(&self) -> u64 {
        self.shared.leadership.changes()
    }
    /// Estimated database clock minus local clock.
    pub fn clock_offset(&self) -> chrono::Duration {
        self.shared.clock.offset()
    }
    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }
    /// Replicas sharing the ticks (alive, `active`) in this replica's
    /// latest membership view.
    pub fn replicas_alive(&self) -> usize {
        self.shared.membership.members().len()
    }
}

/// Builds a [`Scheduler`]: the library form of `spine-scheduler serve`.
///
/// ```no_run
/// # async fn demo() -> Result<(), spine_scheduler::engine::EngineError> {
/// use spine_scheduler::engine::Scheduler;
/// use spine_scheduler::pipeline::RunContext;
///
/// let scheduler = Scheduler::builder("postgres://postgres@127.0.0.1/app")
///     .pipeline("finra.otc_transparency.ingest_week", |run: RunContext| async move {
///         println!("ingesting tier {}", run.params["tier"]);
///         Ok(None)
///     })?
///     .build()?;
/// scheduler.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct SchedulerBuilder {
    database_url: String,
    config: EngineConfig,
    registry: Registry,
    metrics: Option<Metrics>,
}

impl SchedulerBuilder {
    /// Registers an async handler for a pipeline name (the seed's `set_executor`).
    pub fn pipeline(
        mut self,
        name: &str,
        handler: impl Pipeline + 'static,
    ) -> Result<Self, RegistryError> {
        self.registry.register(name, handler)?;
        Ok(self)
    }

    /// Adds every pipeline of a registry (e.g. one loaded from a pipelines file).
    pub fn pipelines(mut self, registry: Registry) -> Result<Self, RegistryError> {
        self.registry.merge(registry)?;
        Ok(self)
    }

    /// Reports into these metrics (shared with the API's `/metrics`);
    /// by default the engine keeps its own.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Replaces the engine settings.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Validates the settings and opens the pool (connections are made lazily).
    pub fn build(self) -> Result<Scheduler, EngineError> {
        self.config.validate()?;
        let pool = store::pool(&self.database_url, self.config.pool_size)?;
        let clock = DbClock::with_skew(self.config.test_clock_skew);
        let metrics = match self.metrics {
            Some(m) => m,
            None => Metrics::new(MetricsOptions {
                per_schedule_labels: true,
            })
            .map_err(|e| EngineError::Metrics(e.to_string()))?,
        };
        Ok(Scheduler {
            shared: Arc::new(Shared {
                node_id: Uuid::now_v7(),
                leadership: Arc::default(),
                node_state: Arc::new(RwLock::new(NodeState::Active)),
                config: self.config,
                database_url: self.database_url,
                pool,
                clock: Arc::new(clock),
                registry: Arc::new(self.registry),
                metrics,
                inflight: Arc::default(),
                claims: Arc::default(),
                unwritten: Arc::default(),
                inflight_rows: Arc::default(),
                health: Arc::default(),
                catalog: Arc::default(),
                membership: Arc::default(),
                stop_by: Arc::default(),
            }),
        })
    }
}

/// One replica of the scheduler.
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Starts building a scheduler on the database at `database_url`.
    pub fn builder(database_url: &str) -> SchedulerBuilder {
        SchedulerBuilder {
            database_url: database_url.to_string(),
            config: EngineConfig::default(),
            registry: Registry::new(),
            metrics: None,
        }
    }

    /// A handle for probes and the API.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            shared: self.shared.clone(),
        }
    }

    /// The registered pipelines.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Migrates, registers the node, fires schedules until `shutdown`
    /// completes, then shuts down gracefully (G7). Every log line of the
    /// replica's tasks carries its node id through one `replica` span.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        let span = tracing::info_span!("replica", node_id = %self.shared.node_id);
        self.run_in_span(shutdown).instrument(span).await
    }

    async fn run_in_span(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        let shared = self.shared;
        {
            let mut client = shared.pool.get().await.map_err(StoreError::from)?;
            store::migrate::migrate(&mut client).await?;
        }
        let beat = Arc::new(shared.heartbeat());
        heartbeat::beat(&beat).await;
        // The liveness lock outlives the drain, as the heartbeat does: a
        // draining replica is alive, and its in-flight runs must not be reaped.
        let (live_stop_tx, live_stop_rx) = watch::channel(false);
        let (registered_tx, registered) = tokio::sync::oneshot::channel();
        let cluster_context = Arc::new(cluster::Context {
            node_id: shared.node_id,
            node_name: shared.config.node_name.clone(),
            database_url: shared.database_url.clone(),
            config: shared.config.cluster.clone(),
            node_lease: shared.config.node_lease,
            pool: shared.pool.clone(),
            clock: shared.clock.clone(),
            metrics: shared.metrics.clone(),
            membership: shared.membership.clone(),
            leadership: shared.leadership.clone(),
            catalog: shared.catalog.clone(),
            health: shared.health.clone(),
            node_state: shared.node_state.clone(),
        });
        let liveness = tokio::spawn(
            cluster::run_liveness(cluster_context.clone(), Some(registered_tx), live_stop_rx)
                .in_current_span(),
        );
        // Claim as a member from the first tick; without a liveness session
        // the replica still runs, judged by its heartbeat (lease mode).
        if tokio::time::timeout(std::time::Duration::from_secs(5), registered)
            .await
            .is_err()
        {
            tracing::warn!("no liveness session yet; starting in heartbeat lease mode");
        }
        tracing::info!(
            node_name = %shared.config.node_name,
            pipelines = ?shared.registry,
            "replica started"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let (beat_stop_tx, beat_stop_rx) = watch::channel(false);
        let (change_tx, change_rx) = mpsc::unbounded_channel();
        let (tick_tx, tick_rx) = mpsc::unbounded_channel();
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let (job_tx, job_rx) = mpsc::unbounded_channel();
        // Cancel requests heard on LISTEN, for the executor (see `cancel`).
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = completions::Results::channel(shared.unwritten.clone());
        let pending_wake = Arc::new(Notify::new());
        let backfill_wake = Arc::new(Notify::new());

        let mut front = tokio::task::JoinSet::new();
        front.spawn(
            sync::run(
                Arc::new(shared.sync()),
                change_tx,
                pending_wake.clone(),
                cancel_tx,
                backfill_wake.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            timer::run(
                Arc::new(shared.timer()),
                change_rx,
                retry_rx,
                tick_tx,
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            claimer::run(
                Arc::new(shared.claimer()),
                tick_rx,
                retry_tx,
                job_tx.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            pending::run(
                Arc::new(shared.pending()),
                pending_wake,
                job_tx,
                done_tx.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            backfill::run(Arc::new(shared.backfill()), backfill_wake, stop_rx.clone())
                .in_current_span(),
        );
        front.spawn(
            cluster::run_elector(cluster_context.clone(), stop_rx.clone()).in_current_span(),
        );
        front.spawn(cluster::run_duties(cluster_context, stop_rx.clone()).in_current_span());
        // The heartbeat outlives the drain: a draining replica is alive, and
        // its in-flight runs must not be reaped.
        let beats = tokio::spawn(heartbeat::run(beat.clone(), beat_stop_rx).in_current_span());
        let executor = tokio::spawn(
            executor::run(
                Arc::new(shared.executor()),
                job_rx,
                done_tx,
                cancel_rx,
                stop_rx,
            )
            .in_current_span(),
        );
        let writer = tokio::spawn(
            completions::run(Arc::new(shared.completions()), done_rx).in_current_span(),
        );

        shutdown.await;
        // Every step below is bounded, so the process exits by `stop_by`
        // whether or not the database answers (a hung shutdown would keep
        // a Kubernetes rollout waiting until SIGKILL).
        let stop_by = tokio::time::Instant::now() + shared.config.shutdown_grace + AFTER_GRACE;
        let _ = shared.stop_by.set(stop_by);
        tracing::info!("shutting down: claiming stopped");
        shared.set_node_state(NodeState::Draining);
        let _ = stop_tx.send(true);
        bounded("recording draining", STEP, heartbeat::beat(&beat)).await;
        // Stops claiming (a claim already sent commits; its runs are ours)
        // and resigns leadership (the elector NOTIFYs followers).
        let joined = bounded("stopping the claim path", STEP, async {
            while front.join_next().await.is_some() {}
        })
        .await;
        if joined.is_none() {
            front.abort_all();
        }
        // The executor drains (within the grace) and drops its senders, which
        // lets the completion writer flush and end (by `stop_by`).
        let _ = executor.await;
        // From here on one budget for the rest: the process is gone by
        // `stop_by` + STEP (grace + 7 s), below the orchestrators' usual
        // termination grace (Kubernetes manifest: grace + 15 s).
        let last = stop_by + STEP;
        let _ = tokio::time::timeout_at(last, writer).await;
        let leave = async {
            let _ = beat_stop_tx.send(true);
            let _ = tokio::time::timeout(STEP, beats).await;
            shared.set_node_state(NodeState::Left);
            bounded("recording left", STEP, heartbeat::beat(&beat)).await;
            // Left: the lock can go now.
            let _ = live_stop_tx.send(true);
            let _ = tokio::time::timeout(STEP, liveness).await;
        };
        // At least a moment to record `left`, even when the writer used it all.
        let leave_by =
            last.max(tokio::time::Instant::now() + std::time::Duration::from_millis(500));
        if tokio::time::timeout_at(leave_by, leave).await.is_err() {
            tracing::warn!(
                "leaving the cluster did not finish in time; the lock goes with the process"
            );
        }
        tracing::info!("replica left the cluster");
        Ok(())
    }
}
