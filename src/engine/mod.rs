//! The engine: one replica's tick path (`docs/design.md` §3).
//!
//! Separate tasks, joined by channels, so that no stage can delay another:
//!
//! ```text
//!  sync ──changes──▶ timer ──due ticks──▶ claimer ──jobs──▶ executor ──▶ completions
//!   ▲  (LISTEN +       ▲  (sleeps to the     │ (one tx per    ▲ (bounded      (batched
//!   │   resync)        │   earliest tick)    │  batch)        │  concurrency)  CAS UPDATE)
//!   │                  └──────retries────────┘                │
//!   └── NOTIFY spine_runs ──▶ pending (run-now, retries) ─────┘
//! ```
//!
//! plus the heartbeat. [`Scheduler::run`] wires them up and shuts them down
//! in order (G7): stop claiming, drain in-flight runs, record the rest
//! `abandoned`, flush results, mark the node `left`.

pub mod catalog;
mod claimer;
pub mod clock;
mod completions;
pub mod config;
mod digest;
mod executor;
mod handoff;
mod heartbeat;
pub mod outage;
mod pending;
mod priority;
pub mod queue;
pub mod share;
mod sync;
mod timer;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

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

/// State shared by the engine's tasks (and the cluster's).
pub(crate) struct Shared {
    pub node_id: Uuid,
    pub leadership: Arc<Leadership>,
    /// What the heartbeat records: active, draining, left.
    pub node_state: Arc<RwLock<NodeState>>,
    pub config: EngineConfig,
    pub database_url: String,
    pub pool: Pool,
    pub clock: Arc<DbClock>,
    pub registry: Registry,
    pub metrics: Metrics,
    pub inflight: AtomicUsize,
    /// Claims executing now: results wait for them (see `priority`).
    pub claims: priority::ClaimActivity,
    /// Finished runs whose results are not written yet (see `priority`).
    pub unwritten: priority::Unwritten,
    /// Whether the database answers, and the claim path's retry delays.
    pub health: Arc<outage::DatabaseHealth>,
    /// Every schedule this replica knows (see `catalog`).
    pub catalog: Arc<catalog::Catalog>,
    /// Who is alive, from the liveness locks (see `cluster::membership`).
    pub membership: Arc<cluster::Membership>,
    /// Set at SIGTERM: the instant by which the replica must have exited,
    /// database or not (`shutdown_grace` + [`AFTER_GRACE`]).
    stop_by: std::sync::OnceLock<tokio::time::Instant>,
}

/// How long after the shutdown grace a replica may still spend writing
/// results and leaving the cluster before it exits regardless.
pub const AFTER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Shared {
    /// The live replicas as this one sees them (sorted ids).
    pub fn peers(&self) -> Vec<Uuid> {
        self.membership.members()
    }

    /// This replica's share of the ticks: (its index, number of live replicas).
    pub fn share(&self) -> share::Share {
        share::Share::of(&self.membership.members(), self.node_id)
    }

    /// The shutdown deadline, once shutting down.
    pub fn stop_by(&self) -> Option<tokio::time::Instant> {
        self.stop_by.get().copied()
    }

    /// A database operation worked (ends an outage: logged and exported once).
    pub fn db_succeeded(&self) {
        outage::succeeded(&self.health, &self.metrics);
    }

    /// A database operation (`what`) failed: the outage is logged once and
    /// then at most every 10 s (see `outage`).
    pub fn db_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        outage::failed(&self.health, &self.metrics, what, error);
    }

    pub fn set_node_state(&self, state: NodeState) {
        *self.node_state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn node_state(&self) -> NodeState {
        *self.node_state.read().unwrap_or_else(|p| p.into_inner())
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
                registry: self.registry,
                metrics,
                inflight: AtomicUsize::new(0),
                claims: priority::ClaimActivity::default(),
                unwritten: priority::Unwritten::default(),
                health: Arc::default(),
                catalog: Arc::default(),
                membership: Arc::default(),
                stop_by: std::sync::OnceLock::new(),
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
        heartbeat::beat(&shared).await;
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
        let (done_tx, done_rx) = completions::Results::channel(shared.clone());
        let pending_wake = Arc::new(Notify::new());

        let mut front = tokio::task::JoinSet::new();
        front.spawn(
            sync::run(
                shared.clone(),
                change_tx,
                pending_wake.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            timer::run(
                shared.clone(),
                change_rx,
                retry_rx,
                tick_tx,
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            claimer::run(
                shared.clone(),
                tick_rx,
                retry_tx,
                job_tx.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            pending::run(
                shared.clone(),
                pending_wake,
                job_tx,
                done_tx.clone(),
                stop_rx.clone(),
            )
            .in_current_span(),
        );
        front.spawn(
            cluster::run_elector(cluster_context.clone(), stop_rx.clone()).in_current_span(),
        );
        front.spawn(cluster::run_duties(cluster_context, stop_rx.clone()).in_current_span());
        // The heartbeat outlives the drain: a draining replica is alive, and
        // its in-flight runs must not be reaped.
        let beats = tokio::spawn(heartbeat::run(shared.clone(), beat_stop_rx).in_current_span());
        let executor =
            tokio::spawn(executor::run(shared.clone(), job_rx, done_tx, stop_rx).in_current_span());
        let writer = tokio::spawn(completions::run(shared.clone(), done_rx).in_current_span());

        shutdown.await;
        // Every step below is bounded, so the process exits by `stop_by`
        // whether or not the database answers (a hung shutdown would keep
        // a Kubernetes rollout waiting until SIGKILL).
        let stop_by = tokio::time::Instant::now() + shared.config.shutdown_grace + AFTER_GRACE;
        let _ = shared.stop_by.set(stop_by);
        tracing::info!("shutting down: claiming stopped");
        shared.set_node_state(NodeState::Draining);
        let _ = stop_tx.send(true);
        bounded("recording draining", STEP, heartbeat::beat(&shared)).await;
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
            bounded("recording left", STEP, heartbeat::beat(&shared)).await;
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
