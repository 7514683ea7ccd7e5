//! Benchmark program: N real replicas (separate processes) firing S
//! schedules against one PostgreSQL, audited through the ledger, with the
//! database's own ceiling for the same ledger work measured in the same run.
//!
//! ```sh
//! cargo build --release && target/release/spine-bench steady
//! target/release/spine-bench steady --replicas 3 --schedules 1000 --seconds 60
//! ```
//!
//! Figures are printed, never asserted: this machine is shared and noisy.

mod api;
mod burst;
mod common;
mod failover;
mod floor;
mod history;
mod scale;
mod steady;
mod throughput;
mod wal;

use anyhow::bail;
use clap::Parser;
use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};
use spine_scheduler::store;

use crate::common::loadavg;
use crate::failover::KillTarget;

/// Measure fire lag, throughput and database cost of real replicas.
#[derive(Parser)]
pub struct Args {
    /// Scenario: `steady` (3 replicas x 1,000 schedules every second, 60 s),
    /// `burst` (3 x 20,000 schedules due at the top of the minute), `scale`
    /// (1 replica loading 100,000 schedules, then 60 s of firing), `api`
    /// (list/get/create latency under concurrent load, 10,000 stored),
    /// `throughput` (the steady measurement at each of `--rates`, 20 s each:
    /// the highest rate sustained, as a share of the ledger baseline),
    /// `failover` (3 x 1,000 schedules every second; `kill -9` of one replica
    /// at a random instant, see `--kill`: lag against a steady window of the
    /// same run, late/skipped/missed/doubled/abandoned ticks, time until the
    /// killed replica's share is on time again and until a new leader;
    /// `--seconds` is the length of each window, default 20), `wal` (3 x 200
    /// schedules every second, 20 s: WAL bytes and commits per fire, the
    /// ledger's indexes and size per million runs; use `--private`),
    /// `history` (3 x 1,000 schedules every second with run-history API
    /// load, on an empty ledger and then on `--history-rows` generated over
    /// 30 daily partitions; then the oldest day dropped while firing, and
    /// the unbounded queries EXPLAINed; use `--private`), `floor` (3 x 5,000
    /// schedules every second, 30 s, into an `http` pipeline whose receiver
    /// writes one row per run: work-row lag against a floor of the same rows
    /// written at each whole second with no scheduler, measured before and
    /// after in the same run; use `--private`).
    #[arg(default_value = "steady")]
    scenario: String,
    /// Replicas to start (default per scenario).
    #[arg(long)]
    replicas: Option<usize>,
    /// Schedules to create (default per scenario).
    #[arg(long)]
    schedules: Option<usize>,
    /// Seconds to measure (default per scenario).
    #[arg(long)]
    seconds: Option<u64>,
    /// Concurrent HTTP clients (`api`).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Server to use (a fresh database is created on it and dropped after).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Schedules firing every second, one measurement each (`throughput`;
    /// `--schedules` tries a single rate).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,6000,8000"
    )]
    rates: Vec<usize>,
    /// Rows for the ledger-only baseline.
    #[arg(long, default_value_t = 100_000)]
    baseline_rows: usize,
    /// Start a private PostgreSQL (initdb/pg_ctl) with pg_stat_statements
    /// instead of using --database-url; adds per-statement figures.
    #[arg(long)]
    private: bool,
    /// Extra server setting for the private cluster, `name=value`
    /// (repeatable), e.g. `--pg-setting wal_init_zero=off`.
    #[arg(long = "pg-setting", value_name = "NAME=VALUE", requires = "private")]
    pg_settings: Vec<String>,
    /// Which replica `failover` kills: the `leader`, a `follower`, or any
    /// (`random`).
    #[arg(long, value_enum, default_value_t = KillTarget::Random)]
    kill: KillTarget,
    /// Give the `burst` schedules this jitter (e.g. `2s`): their ticks fall
    /// due spread over it (`Schedule::jitter_delay`); the start lag is then
    /// measured from each tick's due instant.
    #[arg(long, value_parser = humantime::parse_duration)]
    jitter: Option<std::time::Duration>,
    /// SQL run once the replicas have migrated the database, before the
    /// schedules are created (`wal`): one lever of the ledger's write cost
    /// for an A/B, e.g. `ALTER TABLE scheduler_runs SET (fillfactor = 100)`.
    #[arg(long, value_name = "SQL")]
    ledger_sql: Option<String>,
    /// Keep the benchmark database afterwards (not with --private), to look
    /// at the ledger; its name is printed.
    #[arg(long)]
    keep_database: bool,
    /// Ledger rows `history` generates over the 30 days before today.
    #[arg(long, default_value_t = 50_000_000)]
    history_rows: u64,
    /// How `history` loads each day: `attach` (a plain table loaded, then
    /// attached, which builds its indexes) or `insert` (into the partition,
    /// through its indexes).
    #[arg(long, default_value = "attach")]
    history_load: String,
    /// Run-history requests per second, all `history` clients together.
    #[arg(long, default_value_t = 100.0)]
    api_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if ![
        "steady",
        "burst",
        "scale",
        "api",
        "throughput",
        "failover",
        "wal",
        "history",
        "floor",
    ]
    .contains(&args.scenario.as_str())
    {
        bail!(
            "unknown scenario {:?}; available: steady, burst, scale, api, throughput, failover, wal, history, floor",
            args.scenario
        );
    }
    let load_start = loadavg();
    // Kept alive for the whole run; stopped and deleted on drop.
    let cluster = if args.private {
        let mut settings = vec![(
            "shared_preload_libraries".to_string(),
            "pg_stat_statements".to_string(),
        )];
        for s in &args.pg_settings {
            let Some((name, value)) = s.split_once('=') else {
                bail!("--pg-setting {s:?}: expected name=value");
            };
            settings.push((name.trim().to_string(), value.trim().to_string()));
        }
        let c = PgCluster::start(ClusterOptions {
            settings,
            ..Default::default()
        })?;
        Some(c)
    } else {
        None
    };
    let server_url = match &cluster {
        Some(c) => c.url("postgres"),
        None => args.database_url.clone(),
    };
    let db_name = format!("spine_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = store::connect(&server_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let url = store::with_database(&server_url, &db_name);
    let result = match args.scenario.as_str() {
        "burst" => burst::run(&args, &url).await,
        "scale" => scale::run(&args, &url).await,
        "api" => api::run(&args, &url).await,
        "throughput" => throughput::run(&args, &url).await,
        "failover" => failover::run(&args, &url).await,
        "floor" => floor::run(&args, &url, cluster.as_ref().map(|c| c.data_dir())).await,
        "wal" => wal::run(&args, &url, cluster.as_ref().map(|c| c.data_dir())).await,
        "history" => history::run(&args, &url, cluster.as_ref().map(|c| c.data_dir())).await,
        _ => steady::run(&args, &url).await,
    };
    drop(admin);
    if args.keep_database && cluster.is_none() {
        println!("kept database {db_name}");
    } else {
        let admin = store::connect(&server_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await?;
    }
    let report = result?;
    println!("{report}");
    println!("load average: start {load_start}, end {}", loadavg());
    Ok(())
}

impl Args {
    /// Replicas for this run: the flag, or the scenario's default.
    pub fn replicas(&self, default: usize) -> usize {
        self.replicas.unwrap_or(default)
    }
    /// Schedules for this run.
    pub fn schedules(&self, default: usize) -> usize {
        self.schedules.unwrap_or(default)
    }
    /// Measured seconds for this run.
    pub fn seconds(&self, default: u64) -> u64 {
        self.seconds.unwrap_or(default)
    }
}
