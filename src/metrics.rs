//! Prometheus metrics for one replica.
//!
//! One [`Metrics`] is created per process (or per embedded scheduler) and
//! handed to whatever records: the engine (fires, claims, leadership) and the
//! admin API (HTTP requests, and the gauges it refreshes at scrape time). It
//! owns its own [`prometheus::Registry`], never the crate-global default one,
//! so two schedulers in one process (tests, embedding) do not collide.
//!
//! Names follow Prometheus conventions: `spine_` prefix, base units
//! (`_seconds`), `_total` on counters. Per-schedule series carry a `schedule`
//! label; with [`MetricsOptions::per_schedule_labels`] off (large
//! installations) its value is always [`ALL_SCHEDULES`], so the number of
//! series no longer grows with the number of schedules.
//!
//! | metric | type | labels | recorded by |
//! |---|---|---|---|
//! | `spine_runs_total` | counter | schedule, status, trigger | [`Metrics::fired`], [`Metrics::skipped`], [`Metrics::missed`] |
//! | `spine_fire_lag_seconds` | histogram | | [`Metrics::fire_lag`] |
//! | `spine_run_duration_seconds` | histogram | schedule | [`Metrics::run_duration`] |
//! | `spine_claims_total` | counter | outcome (`won`, `lost`) | [`Metrics::claims`] |
//! | `spine_claim_round_trip_seconds` | histogram | | [`Metrics::claim_round_trip`] |
//! | `spine_handoff_checks_total` | counter | how (`digest`, `probe`) | [`Metrics::handoff_checks`] |
//! | `spine_runs_in_flight` | gauge | | [`Metrics::runs_in_flight`] |
//! | `spine_is_leader` | gauge | | [`Metrics::set_leader`] |
//! | `spine_leader_changes_total` | counter | | [`Metrics::set_leader`] (on each flip) |
//! | `spine_schedules` | gauge | state (`enabled`, `paused`) | [`Metrics::schedules_by_state`] |
//! | `spine_db_pool_max_connections` | gauge | pool | [`Metrics::pool`] |
//! | `spine_db_pool_connections` | gauge | pool, state (`in_use`, `idle`) | [`Metrics::pool`] |
//! | `spine_db_pool_waiting` | gauge | pool | [`Metrics::pool`] |
//! | `spine_schedule_next_fire_timestamp_seconds` | gauge | schedule | [`Metrics::next_fire`] |
//! | `spine_schedule_expected_interval_seconds` | gauge | schedule | [`Metrics::expected_interval`] |
//! | `spine_schedule_last_success_timestamp_seconds` | gauge | schedule | [`Metrics::last_successes`] (API, at scrape) |
//! | `spine_pending_runs` | gauge | | [`Metrics::pending_runs`] (API, at scrape) |
//! | `spine_replicas_alive` | gauge | | [`Metrics::replicas_alive`] (API, at scrape) |
//! | `spine_clock_offset_seconds` | gauge | | [`Metrics::clock_offset`] |
//! | `spine_database_unreachable_since_seconds` | gauge | | [`Metrics::database_unreachable_since`] |
//! | `spine_ledger_default_partition_rows` | gauge | | [`Metrics::ledger_default_partition_rows`] (leader) |
//! | `spine_http_requests_total` | counter | route, method, status | [`Metrics::http_request`] |
//! | `spine_http_request_duration_seconds` | histogram | route | [`Metrics::http_request`] |
//! | `spine_build_info` | gauge (always 1) | version | [`Metrics::new`] |
//! | `process_*` | | | the `prometheus` crate's process collector (Linux) |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::types::{RunStatus, RunTrigger};

/// The `schedule` label value used for every schedule when per-schedule
/// labels are off.
pub const ALL_SCHEDULES: &str = "_all";

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Fire lag buckets: a healthy cluster starts ticks within milliseconds
/// (G5); a failover waits out the handoff delay (about a second); anything
/// past a minute is a misfire in the making.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Run duration buckets: pipelines range from a log line to hour-long ingests.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];
/// Claim and HTTP round trips: one database transaction, normally sub-millisecond to tens of ms.
const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How metrics are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Label per-schedule series with the schedule's name (default). Off:
    /// every such series is labelled [`ALL_SCHEDULES`] and the next-fire
    /// gauge is not exported, for installations with many thousands of
    /// schedules.
    pub per_schedule_labels: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            per_schedule_labels: true,
        }
    }
}

/// Why metrics could not be set up or encoded.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// One replica's metrics. Cheap to clone (an `Arc` inside); every method
/// takes `&self` and is safe to call from any task.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_schedule_labels", &self.inner.per_schedule)
            .finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    per_schedule: bool,
    runs: IntCounterVec,
    fire_lag: Histogram,
    run_duration: HistogramVec,
    claims: IntCounterVec,
    claim_round_trip: Histogram,
    handoff_checks: IntCounterVec,
    runs_in_flight: IntGauge,
    is_leader: IntGauge,
    was_leader: AtomicBool,
    leader_changes: IntCounter,
    schedules: IntGaugeVec,
    pool_max: IntGaugeVec,
    pool_connections: IntGaugeVec,
    pool_waiting: IntGaugeVec,
    next_fire: GaugeVec,
    expected_interval: GaugeVec,
    last_success: GaugeVec,
    pending_runs: IntGauge,
    replicas_alive: IntGauge,
    clock_offset: Gauge,
    database_down_since: Gauge,
    ledger_default_rows: IntGauge,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

/// Registers a collector and hands it back.
fn reg<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

fn histogram_vec(
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> Result<HistogramVec, prometheus::Error> {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
}

// `with_label_values` panics only when the number of values differs from the
// number of label names; every call below passes a fixed-size array that
// matches its metric's definition, so it cannot.
impl Metrics {
    /// Creates and registers every metric (and the process collector on Linux).
    pub fn new(options: MetricsOptions) -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        let inner = Inner {
            per_schedule: options.per_schedule_labels,
            runs: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "spine_runs_total",
                        "Runs this replica brought to a final status (completed, failed, abandoned, cancelled, skipped, missed).",
                    ),
                    &["schedule", "status", "trigger"],
                )?,
            )?,
            fire_lag: reg(
                &r,
                histogram(
                    "spine_fire_lag_seconds",
                    "Delay from a tick's due instant to its pipeline's start (database clock).",
                    LAG_BUCKETS,
                )?,
            )?,
            run_duration: reg(
                &r,
                histogram_vec(
                    "spine_run_duration_seconds",
                    "How long pipelines ran, from start to final status.",
                    DURATION_BUCKETS,
                    &["schedule"],
                )?,
            )?,
            claims: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "spine_claims_total",
                        "Ticks this replica tried to claim: won (it inserted the ledger row) or lost (another replica had it).",
                    ),
                    &["outcome"],
                )?,
            )?,
            handoff_checks: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "spine_handoff_checks_total",
                        "Other replicas' ticks this replica checked after the handoff delay: settled by their owner's digest, or probed one by one.",
                    ),
                    &["how"],
                )?,
            )?,
            claim_round_trip: reg(
                &r,
                histogram(
                    "spine_claim_round_trip_seconds",
                    "Time a claim transaction spends on the tick path: from the due instant (or its start, if later) to commit.",
                    ROUND_TRIP_BUCKETS,
                )?,
            )?,
            runs_in_flight: reg(
                &r,
                IntGauge::new("spine_runs_in_flight", "Runs executing on this replica now.")?,
            )?,
            is_leader: reg(
                &r,
                IntGauge::new(
                    "spine_is_leader",
                    "1 while this replica is the cluster leader, else 0.",
                )?,
            )?,
            was_leader: AtomicBool::new(false),
            leader_changes: reg(
                &r,
                IntCounter::new(
                    "spine_leader_changes_total",
                    "Times this replica gained or lost the leadership.",
                )?,
            )?,
            schedules: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("spine_schedules", "Stored schedules by state."),
                    &["state"],
                )?,
            )?,
            pool_max: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "spine_db_pool_max_connections",
                        "Most connections the database pool may open.",
                    ),
                    &["pool"],
                )?,
            )?,
            pool_connections: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "spine_db_pool_connections",
                        "Open connections of the database pool, in use or idle.",
                    ),
                    &["pool", "state"],
                )?,
            )?,
            pool_waiting: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "spine_db_pool_waiting",
                        "Tasks waiting for a connection from the database pool.",
                    ),
                    &["pool"],
                )?,
            )?,
            next_fire: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "spine_schedule_next_fire_timestamp_seconds",
                        "Unix time of each enabled schedule's next tick.",
                    ),
                    &["schedule"],
                )?,
            )?,
            expected_interval: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "spine_schedule_expected_interval_seconds",
                        "Gap between each enabled schedule's next two ticks: its expected period.",
                    ),
                    &["schedule"],
                )?,
            )?,
            last_success: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "spine_schedule_last_success_timestamp_seconds",
                        "Unix time at which each schedule's newest completed run completed (from the database, any replica's).",
                    ),
                    &["schedule"],
                )?,
            )?,
            pending_runs: reg(
                &r,
                IntGauge::new(
                    "spine_pending_runs",
                    "Runs waiting to start whose earliest start has passed (manual runs, retries; from the database).",
                )?,
            )?,
            replicas_alive: reg(
                &r,
                IntGauge::new(
                    "spine_replicas_alive",
                    "Replicas sharing the ticks (alive by their liveness lock, active), as this replica sees them.",
                )?,
            )?,
            clock_offset: reg(
                &r,
                Gauge::new(
                    "spine_clock_offset_seconds",
                    "Database clock minus this replica's clock, as estimated from round trips.",
                )?,
            )?,
            database_down_since: reg(
                &r,
                Gauge::new(
                    "spine_database_unreachable_since_seconds",
                    "Unix time at which the database stopped answering this replica; 0 while it answers.",
                )?,
            )?,
            ledger_default_rows: reg(
                &r,
                IntGauge::new(
                    "spine_ledger_default_partition_rows",
                    "Rows in the ledger's DEFAULT partition (ticks no partition covered), as the leader last counted them (up to a million); 0 on other replicas.",
                )?,
            )?,
            http_requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "spine_http_requests_total",
                        "Admin API requests answered, by route template, method and status code.",
                    ),
                    &["route", "method", "status"],
                )?,
            )?,
            http_duration: reg(
                &r,
                histogram_vec(
                    "spine_http_request_duration_seconds",
                    "Admin API request handling time, by route template.",
                    ROUND_TRIP_BUCKETS,
                    &["route"],
                )?,
            )?,
            registry: r,
        };
        let build_info = reg(
            &inner.registry,
            IntGaugeVec::new(
                Opts::new(
                    "spine_build_info",
                    "Always 1; labelled with the build's version.",
                ),
                &["version"],
            )?,
        )?;
        build_info.with_label_values(&[crate::VERSION]).set(1);
        // Series that alerts use with rate()/absent() exist from the start.
        for outcome in ["won", "lost"] {
            inner.claims.with_label_values(&[outcome]);
        }
        for state in ["enabled", "paused"] {
            inner.schedules.with_label_values(&[state]);
        }
        #[cfg(target_os = "linux")]
        inner.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            inner: Arc::new(inner),
        })
    }

    /// Whether per-schedule series carry the schedule's name.
    pub fn per_schedule_labels(&self) -> bool {
        self.inner.per_schedule
    }

    /// The `schedule` label value for a schedule under the current options.
    pub fn schedule_label<'a>(&self, schedule: &'a str) -> &'a str {
        if self.inner.per_schedule {
            schedule
        } else {
            ALL_SCHEDULES
        }
    }

    /// A run reached a final status on this replica: `completed`, `failed`
    /// or `abandoned` (and `skipped`/`missed`, see [`Metrics::skipped`]).
    /// Non-final statuses (`pending`, `running`) are ignored.
    ///
    /// Engine: the completion writer, once per run whose final UPDATE
    /// succeeded (so a run the reaper took over is not counted twice), and
    /// the shutdown path for runs recorded `abandoned`; the leader's reaper
    /// for the runs of dead replicas it marks `abandoned`.
    ///
    /// `trigger` is what started the run (`schedule`, `manual`, `retry`,
    /// `backfill`), so that a retry's failure is told from its first
    /// attempt's: at most 4 × 7 series per schedule, most of which never
    /// appear.
    pub fn fired(&self, schedule: &str, status: RunStatus, trigger: RunTrigger) {
        if !status.is_final() {
            return;
        }
        self.inner
            .runs
            .with_label_values(&[
                self.schedule_label(schedule),
                status.as_str(),
                trigger.as_str(),
            ])
            .inc();
    }

    /// A tick was recorded `skipped` (its schedule already had
    /// `max_instances` runs running). Engine: the claimer, for each
    /// `skipped` row its claim inserted.
    pub fn skipped(&self, schedule: &str) {
        self.fired(schedule, RunStatus::Skipped, RunTrigger::Schedule);
    }

    /// A tick was recorded `missed` (not started within its misfire grace).
    /// Engine: the claimer for the `missed` rows its claim inserted, and the
    /// leader's sweep for the ticks no replica claimed.
    pub fn missed(&self, schedule: &str) {
        self.fired(schedule, RunStatus::Missed, RunTrigger::Schedule);
    }

    /// How late a tick's pipeline started: `started_at − scheduled_at`, in
    /// seconds, both on the database clock. Engine: the executor, when it
    /// starts a run with trigger `schedule` (manual runs and
    /// retries have no due instant to be late for). Negative values (clock
    /// estimate noise) count as zero.
    pub fn fire_lag(&self, seconds: f64) {
        self.inner.fire_lag.observe(seconds.max(0.0));
    }

    /// This process's fire lag so far ([`Metrics::fire_lag`]'s histogram),
    /// summarised as `GET /v1/cluster` reports it: the count and the 50th,
    /// 90th and 99th percentiles in seconds, estimated from the buckets as
    /// PromQL's `histogram_quantile` does (`None` before any tick started).
    pub fn fire_lag_summary(&self) -> LagSummary {
        use prometheus::core::Collector;
        let families = self.inner.fire_lag.collect();
        let buckets: Vec<(f64, u64)> = families
            .first()
            .and_then(|f| f.get_metric().first())
            .map(|m| {
                m.get_histogram()
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect()
            })
            .unwrap_or_default();
        let count = self.inner.fire_lag.get_sample_count();
        LagSummary {
            count,
            p50: histogram_quantile(0.5, &buckets, count),
            p90: histogram_quantile(0.9, &buckets, count),
            p99: histogram_quantile(0.99, &buckets, count),
        }
    }

    /// How long a pipeline ran, in seconds. Engine: the executor, when a run
    /// finishes (completed, failed or timed out).
    pub fn run_duration(&self, schedule: &str, seconds: f64) {
        self.inner
            .run_duration
            .with_label_values(&[self.schedule_label(schedule)])
            .observe(seconds.max(0.0));
    }

    /// The outcome of one claim transaction: ticks `won` (rows this replica
    /// inserted, whatever their status) and `lost` (ticks whose row another
    /// replica had). Engine: the claimer, after each batch commits.
    pub fn claims(&self, won: u64, lost: u64) {
        self.inner.claims.with_label_values(&["won"]).inc_by(won);
        self.inner.claims.with_label_values(&["lost"]).inc_by(lost);
    }

    /// Other replicas' ticks checked after the handoff delay: `by_digest`
    /// were settled by their owner's published digest, `probed` went to the
    /// per-tick existence check. Engine: the claimer, per batch.
    pub fn handoff_checks(&self, by_digest: u64, probed: u64) {
        self.inner
            .handoff_checks
            .with_label_values(&["digest"])
            .inc_by(by_digest);
        self.inner
            .handoff_checks
            .with_label_values(&["probe"])
            .inc_by(probed);
    }

    /// The part of one claim transaction on the tick path, in seconds: from
    /// the batch's due instant (the lock statement runs ahead of it) or the
    /// transaction's start, whichever is later, to commit. Engine: the claimer.
    pub fn claim_round_trip(&self, seconds: f64) {
        self.inner.claim_round_trip.observe(seconds.max(0.0));
    }

    /// Runs executing on this replica now. Engine: the executor, whenever
    /// its count changes (the API also refreshes it at each scrape).
    pub fn runs_in_flight(&self, n: usize) {
        self.inner
            .runs_in_flight
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Since when (Unix time) the database has not answered this replica,
    /// or `None` once it answers again. Engine: `outage::failed` and
    /// `outage::succeeded` (through `outage::Reporter` and the cluster's
    /// `Context`), at the start and the end of an outage.
    pub fn database_unreachable_since(&self, since: Option<chrono::DateTime<chrono::Utc>>) {
        self.inner
            .database_down_since
            .set(since.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0));
    }

    /// Whether this replica is the leader now. Counts a leader change each
    /// time the value flips, so calling it repeatedly with the same value is
    /// harmless. Engine: the leader elector, on taking the lock (`true`) and
    /// on stepping down for any reason, shutdown included (`false`).
    pub fn set_leader(&self, leader: bool) {
        self.inner.is_leader.set(i64::from(leader));
        if self.inner.was_leader.swap(leader, Ordering::Relaxed) != leader {
            self.inner.leader_changes.inc();
        }
    }

    /// Stored schedules by state. The API refreshes it at each scrape with
    /// one count query; the leader may also publish it.
    pub fn schedules_by_state(&self, enabled: u64, paused: u64) {
        let set = |state: &str, n: u64| {
            self.inner
                .schedules
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("enabled", enabled);
        set("paused", paused);
    }

    /// A database pool's state; `pool` names it (`engine`, `api`). The API
    /// refreshes both at each scrape.
    pub fn pool(&self, pool: &str, status: deadpool_postgres::Status) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let i = &self.inner;
        i.pool_max
            .with_label_values(&[pool])
            .set(n(status.max_size));
        i.pool_connections
            .with_label_values(&[pool, "in_use"])
            .set(n(status.size.saturating_sub(status.available)));
        i.pool_connections
            .with_label_values(&[pool, "idle"])
            .set(n(status.available));
        i.pool_waiting
            .with_label_values(&[pool])
            .set(n(status.waiting));
    }

    /// A schedule's next tick as Unix seconds, or `None` when it has none
    /// (paused, a one-time schedule that has fired, deleted), which removes
    /// the series. Not exported without per-schedule labels (one value for
    /// all schedules would mean nothing). Engine: the timer, whenever it
    /// (re)computes a schedule's next due tick.
    pub fn next_fire(&self, schedule: &str, unix_seconds: Option<f64>) {
        if !self.inner.per_schedule {
            return;
        }
        match unix_seconds {
            Some(t) => self.inner.next_fire.with_label_values(&[schedule]).set(t),
            // Err only means the series did not exist.
            None => {
                let _ = self.inner.next_fire.remove_label_values(&[schedule]);
            }
        }
    }

    /// Drops every series of a deleted schedule so it stops being exported.
    /// Engine: the sync task, when it learns that a schedule was deleted.
    pub fn forget_schedule(&self, schedule: &str) {
        if !self.inner.per_schedule {
            return;
        }
        let i = &self.inner;
        for status in RunStatus::ALL {
            for trigger in RunTrigger::ALL {
                let _ = i
                    .runs
                    .remove_label_values(&[schedule, status.as_str(), trigger.as_str()]);
            }
        }
        let _ = i.run_duration.remove_label_values(&[schedule]);
        let _ = i.next_fire.remove_label_values(&[schedule]);
        let _ = i.expected_interval.remove_label_values(&[schedule]);
        let _ = i.last_success.remove_label_values(&[schedule]);
    }

    /// The gap in seconds between a schedule's next two ticks, or `None`
    /// when it has no two more (paused, one-time, deleted), which removes
    /// the series. Like [`Metrics::next_fire`], not exported without
    /// per-schedule labels. Engine: the timer, beside [`Metrics::next_fire`].
    pub fn expected_interval(&self, schedule: &str, seconds: Option<f64>) {
        if !self.inner.per_schedule {
            return;
        }
        match seconds {
            Some(s) => self
                .inner
                .expected_interval
                .with_label_values(&[schedule])
                .set(s),
            None => {
                let _ = self
                    .inner
                    .expected_interval
                    .remove_label_values(&[schedule]);
            }
        }
    }

    /// Each schedule's newest success (Unix seconds). Schedules absent from
    /// `latest` keep what they had: the ledger query looks only at each
    /// schedule's recent runs, so a long run of failures must not erase the
    /// success before it; a never-successful schedule has no series, and a
    /// deleted one loses it in [`Metrics::forget_schedule`]. Not exported
    /// without per-schedule labels (the newest success of all schedules
    /// together says nothing about any one; the API then skips the query).
    /// The API, at each scrape, from the ledger.
    pub fn last_successes(&self, latest: &[(String, f64)]) {
        if !self.inner.per_schedule {
            return;
        }
        for (schedule, t) in latest {
            self.inner
                .last_success
                .with_label_values(&[schedule.as_str()])
                .set(*t);
        }
    }

    /// Pending runs whose earliest start has passed. The API, at each
    /// scrape, from the ledger.
    pub fn pending_runs(&self, n: u64) {
        self.inner
            .pending_runs
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Replicas sharing the ticks, from this replica's membership view. The
    /// API, at each scrape.
    pub fn replicas_alive(&self, n: usize) {
        self.inner
            .replicas_alive
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Rows in the ledger's DEFAULT partition, counted by the leader's
    /// partition pass (`store::partitions::default_rows`); any is worth an
    /// alert.
    pub fn ledger_default_partition_rows(&self, rows: i64) {
        self.inner.ledger_default_rows.set(rows);
    }

    /// Database clock minus this replica's clock, in seconds. The API
    /// refreshes it from the engine's estimate at each scrape.
    pub fn clock_offset(&self, seconds: f64) {
        self.inner.clock_offset.set(seconds);
    }

    /// One admin API request: its route template (`/v1/schedules/{name}`,
    /// never the raw path, to bound cardinality), method, status and time.
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.inner
            .http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.inner
            .http_duration
            .with_label_values(&[route])
            .observe(seconds.max(0.0));
    }

    /// Everything, in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let families = self.inner.registry.gather();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf)?;
        String::from_utf8(buf)
            .map_err(|e| MetricsError(prometheus::Error::Msg(format!("not UTF-8: {e}"))))
    }
}

/// Percentiles of a histogram (see [`Metrics::fire_lag_summary`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagSummary {
    /// Observations in all.
    pub count: u64,
    /// Median, in seconds.
    pub p50: Option<f64>,
    /// 90th percentile, in seconds.
    pub p90: Option<f64>,
    /// 99th percentile, in seconds.
    pub p99: Option<f64>,
}

/// The `q` quantile of `count` observations in cumulative buckets (upper
/// bound, observations at or below it; ascending), as PromQL's
/// `histogram_quantile`: linear within the bucket it falls in, from 0 for the
/// first; past the last finite bound, that bound (the histogram knows no more).
fn histogram_quantile(q: f64, buckets: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            let inside = cumulative.saturating_sub(below);
            if inside == 0 {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below as f64) / inside as f64);
        }
        (lower, below) = (upper, cumulative);
    }
    buckets.last().map(|&(upper, _)| upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_lag_percentiles_follow_histogram_quantile() -> Result<(), MetricsError> {
        let m = Metrics::new(MetricsOptions::default())?;
        assert_eq!(m.fire_lag_summary().p50, None);
        // 90 ticks in (0.001, 0.0025], 10 in (0.5, 1].
        for _ in 0..90 {
            m.fire_lag(0.002);
        }
        for _ in 0..10 {
            m.fire_lag(0.8);
        }
        let s = m.fire_lag_summary();
        assert_eq!(s.count, 100);
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(s.p50, 0.001 + 0.0015 * 50.0 / 90.0), "{s:?}");
        assert!(close(s.p90, 0.0025), "{s:?}");
        assert!(close(s.p99, 0.5 + 0.5 * 9.0 / 10.0), "{s:?}");
        // Beyond the last bound: the last bound.
        assert!(close(
            histogram_quantile(1.0, &[(1.0, 1), (60.0, 1)], 2),
            60.0
        ));
        Ok(())
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn records_and_encodes() -> Result<(), MetricsError> {
        let m = Metrics::new(MetricsOptions::default())?;
        m.fired("nightly", RunStatus::Completed, RunTrigger::Schedule);
        m.fired("nightly", RunStatus::Completed, RunTrigger::Schedule);
        m.fired("nightly", RunStatus::Failed, RunTrigger::Schedule);
        m.fired("nightly", RunStatus::Failed, RunTrigger::Retry);
        m.fired("nightly", RunStatus::Running, RunTrigger::Schedule);
        m.missed("nightly");
        m.claims(3, 1);
        m.set_leader(true);
        m.set_leader(true);
        m.set_leader(false);
        m.next_fire("nightly", Some(1_800_000_000.0));
        let text = m.encode()?;
        let get = |s: &str| sample(&text, s);
        assert_eq!(
            get(r#"spine_runs_total{schedule="nightly",status="completed",trigger="schedule"}"#),
            Some(2.0)
        );
        assert_eq!(
            get(r#"spine_runs_total{schedule="nightly",status="missed",trigger="schedule"}"#),
            Some(1.0)
        );
        // A retry's failure is told from the first attempt's.
        for trigger in ["schedule", "retry"] {
            assert_eq!(
                get(&format!(
                    r#"spine_runs_total{{schedule="nightly",status="failed",trigger="{trigger}"}}"#
                )),
                Some(1.0)
            );
        }
        assert!(!text.contains(r#"status="running""#));
        assert_eq!(get(r#"spine_claims_total{outcome="won"}"#), Some(3.0));
        assert_eq!(get("spine_leader_changes_total"), Some(2.0));
        assert_eq!(get("spine_is_leader"), Some(0.0));
        assert_eq!(
            get(r#"spine_schedule_next_fire_timestamp_seconds{schedule="nightly"}"#),
            Some(1_800_000_000.0)
        );
        m.expected_interval("nightly", Some(86_400.0));
        m.last_successes(&[("nightly".to_string(), 1_700_000_000.5)]);
        m.pending_runs(4);
        m.replicas_alive(3);
        let text = m.encode()?;
        let get = |s: &str| sample(&text, s);
        assert_eq!(
            get(r#"spine_schedule_expected_interval_seconds{schedule="nightly"}"#),
            Some(86_400.0)
        );
        assert_eq!(
            get(r#"spine_schedule_last_success_timestamp_seconds{schedule="nightly"}"#),
            Some(1_700_000_000.5)
        );
        assert_eq!(get("spine_pending_runs"), Some(4.0));
        assert_eq!(get("spine_replicas_alive"), Some(3.0));
        m.last_successes(&[("other".to_string(), 1.0)]);
        assert_eq!(
            sample(
                &m.encode()?,
                r#"spine_schedule_last_success_timestamp_seconds{schedule="nightly"}"#
            ),
            Some(1_700_000_000.5),
            "kept when the ledger query no longer finds it"
        );
        m.forget_schedule("nightly");
        m.forget_schedule("other");
        assert!(!m.encode()?.contains("nightly"));
        Ok(())
    }

    #[test]
    fn schedule_label_can_be_dropped() -> Result<(), MetricsError> {
        let m = Metrics::new(MetricsOptions {
            per_schedule_labels: false,
        })?;
        m.fired("a", RunStatus::Failed, RunTrigger::Manual);
        m.fired("b", RunStatus::Failed, RunTrigger::Manual);
        m.run_duration("a", 1.5);
        m.next_fire("a", Some(1.0));
        m.expected_interval("a", Some(60.0));
        m.last_successes(&[("a".to_string(), 1.0)]);
        let text = m.encode()?;
        assert_eq!(
            sample(
                &text,
                r#"spine_runs_total{schedule="_all",status="failed",trigger="manual"}"#
            ),
            Some(2.0)
        );
        assert!(!text.contains(r#"schedule="a""#));
        assert!(!text.contains("spine_schedule_next_fire_timestamp_seconds{"));
        assert!(!text.contains("spine_schedule_expected_interval_seconds{"));
        assert!(!text.contains("spine_schedule_last_success_timestamp_seconds{"));
        Ok(())
    }

    #[test]
    fn two_instances_do_not_collide() -> Result<(), MetricsError> {
        let a = Metrics::new(MetricsOptions::default())?;
        let b = Metrics::new(MetricsOptions::default())?;
        a.claims(1, 0);
        assert!(b
            .encode()?
            .contains(r#"spine_claims_total{outcome="won"} 0"#));
        Ok(())
    }
}
