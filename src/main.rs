//! The `spine-scheduler` command line. Errors become messages here, at the edge.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use spine_scheduler::api::{self, ApiOptions, Auth, AuthSources};
use spine_scheduler::apply::{self, ApplyOptions};
use spine_scheduler::client::{self, ClientError};
use spine_scheduler::cluster::ClusterConfig;
use spine_scheduler::engine::{EngineConfig, Scheduler};
use spine_scheduler::metrics::{Metrics, MetricsOptions};
use spine_scheduler::pipeline::{self, Registry};
use spine_scheduler::schedule::ownership::resolve_source;
use spine_scheduler::schedule::{parse_timezone, CronExpr};
use spine_scheduler::schedule_file::{self, CheckError};
use spine_scheduler::store;

/// A distributed cron scheduler: run N replicas against one PostgreSQL and
/// every tick fires exactly once.
#[derive(Parser)]
#[command(name = "spine-scheduler", version, about, long_about = None)]
struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, global = true, env = "SPINE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a replica: claim and fire due ticks until SIGTERM/SIGINT.
    Serve(Box<ServeArgs>),
    /// Print the next fire times of a cron expression, in its zone and in UTC.
    Next {
        /// A crontab expression: 5 fields, 6 with leading seconds, or @daily etc.
        expression: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// How many fire times to print.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
        /// Start after this RFC 3339 instant (default: now).
        #[arg(long)]
        from: Option<String>,
    },
    /// Create or upgrade the database schema (safe to run from many replicas at once).
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Check a schedules file and report every problem; exit 1 if there is any.
    Validate {
        /// The schedules file (YAML).
        #[arg(short, long)]
        file: PathBuf,
        /// Also check that every schedule names a pipeline defined in this pipelines file.
        #[arg(long, env = "SPINE_PIPELINES_FILE")]
        pipelines: Option<PathBuf>,
    },
    /// Sync a schedules file into the database in one transaction.
    Apply {
        /// The schedules file (YAML).
        #[arg(short, long)]
        file: PathBuf,
        /// Delete schedules this file's source manages that the file no longer names (never
        /// those the API manages or another file's).
        #[arg(long)]
        prune: bool,
        /// Print the plan, with each changed key's stored and new value, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The source name this file applies as: it manages the schedules it creates or adopts
        /// [default: the file's `source:` key, else its file name].
        #[arg(long)]
        source: Option<String>,
        /// Take over schedules another file's source manages instead of refusing the apply.
        #[arg(long)]
        force_conflicts: bool,
        /// Refuse schedules whose pipeline this pipelines file does not define.
        #[arg(long, env = "SPINE_PIPELINES_FILE")]
        pipelines: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Run a local cluster: a private PostgreSQL (unless DATABASE_URL is set), the example
    /// schedules and three replicas on 127.0.0.1, until Ctrl-C.
    Dev(DevArgs),
    /// Manage schedules through a replica's admin API (list, get, create, pause, trigger, …).
    Schedules(client::SchedulesArgs),
    /// Inspect and control runs through the admin API (list, get, cancel, rerun).
    Runs(client::RunsArgs),
    /// Show the replicas, their heartbeats and the leader, from the admin API.
    Cluster(client::ClusterArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// Use this PostgreSQL instead of starting a private one in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Folder for the private PostgreSQL and the files the replicas read (kept across runs).
    #[arg(long, env = "SPINE_DEV_DATA_DIR", default_value = ".spine-dev")]
    data_dir: PathBuf,
    /// How many replicas to run.
    #[arg(long, env = "SPINE_DEV_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
    /// API port of the first replica; the others listen on the next ports.
    #[arg(long, env = "SPINE_DEV_BASE_PORT", default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    base_port: u16,
    /// Pipelines file (default: examples/pipelines.yaml, built into the binary).
    #[arg(long, env = "SPINE_PIPELINES_FILE")]
    pipelines: Option<PathBuf>,
    /// Schedules file (default: examples/schedules.yaml, built in); a demo schedule firing every 5 s is added.
    #[arg(long, env = "SPINE_SCHEDULES_FILE")]
    schedules: Option<PathBuf>,
    /// How long the replicas get to stop after Ctrl-C before they are killed.
    #[arg(long, env = "SPINE_DEV_STOP_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Pipelines file (YAML) defining the http/command/log pipelines this replica can run.
    #[arg(long, env = "SPINE_PIPELINES_FILE")]
    pipelines: Option<PathBuf>,
    /// Schedules file applied at start (as `apply` does; replicas starting together queue up).
    #[arg(long, env = "SPINE_SCHEDULES_FILE")]
    schedules: Option<PathBuf>,
    /// With --schedules: delete schedules the file's source manages that it no longer names.
    #[arg(long, env = "SPINE_SCHEDULES_PRUNE")]
    prune_schedules: bool,
    /// With --schedules: the source name the file applies as [default: its `source:` key, else its file name].
    #[arg(long, env = "SPINE_SCHEDULES_SOURCE")]
    schedules_source: Option<String>,
    /// Name recorded for this replica (default: $HOSTNAME).
    #[arg(long, env = "SPINE_NODE_NAME")]
    node_name: Option<String>,
    /// Pooled database connections.
    #[arg(long, env = "SPINE_POOL_SIZE", default_value_t = EngineConfig::default().pool_size)]
    pool_size: usize,
    /// Runs executing at once on this replica.
    #[arg(long, env = "SPINE_MAX_CONCURRENT_RUNS", default_value_t = EngineConfig::default().max_concurrent_runs)]
    max_concurrent_runs: usize,
    /// Most ticks claimed in one transaction.
    #[arg(long, env = "SPINE_CLAIM_BATCH_SIZE", default_value_t = EngineConfig::default().claim_batch_size)]
    claim_batch_size: usize,
    /// Most claim transactions open at once: the next chunk of a large
    /// instant is written while the one before waits for its tick (at most
    /// --pool-size less one).
    #[arg(long, env = "SPINE_CLAIM_CONCURRENCY", default_value_t = EngineConfig::default().claim_concurrency)]
    claim_concurrency: usize,
    /// Full reload of the schedules, the safety net under LISTEN/NOTIFY.
    #[arg(long, env = "SPINE_RESYNC_INTERVAL", default_value_t = HumanDuration(EngineConfig::default().resync_interval))]
    resync_interval: HumanDuration,
    /// How often this replica records that it is alive.
    #[arg(long, env = "SPINE_HEARTBEAT_INTERVAL", default_value_t = HumanDuration(EngineConfig::default().heartbeat_interval))]
    heartbeat_interval: HumanDuration,
    /// A replica without a liveness session (lease mode) silent for this long is presumed dead.
    #[arg(long, env = "SPINE_NODE_LEASE", default_value_t = HumanDuration(EngineConfig::default().node_lease))]
    node_lease: HumanDuration,
    /// How long after a tick the replicas other than its preferred owner claim it.
    #[arg(long, env = "SPINE_HANDOFF_DELAY", default_value_t = HumanDuration(EngineConfig::default().handoff_delay))]
    handoff_delay: HumanDuration,
    /// How long before its ticks fall due a claim transaction starts (existence check and locks ahead of time).
    #[arg(long, env = "SPINE_CLAIM_LEAD", default_value_t = HumanDuration(EngineConfig::default().claim_lead))]
    claim_lead: HumanDuration,
    /// Direct PostgreSQL URL for the leader's and the liveness session, when DATABASE_URL goes through a transaction-mode pooler.
    #[arg(long, env = "SPINE_LEADER_DATABASE_URL", hide_env_values = true)]
    leader_database_url: Option<String>,
    /// How often a follower bids for leadership.
    #[arg(long, env = "SPINE_LEADER_RETRY_INTERVAL", default_value_t = HumanDuration(ClusterConfig::default().leader_retry_interval))]
    leader_retry_interval: HumanDuration,
    /// How often the leader checks its session.
    #[arg(long, env = "SPINE_LEADER_PING_INTERVAL", default_value_t = HumanDuration(ClusterConfig::default().leader_ping_interval))]
    leader_ping_interval: HumanDuration,
    /// How long a leader ping may take before the leader steps down.
    #[arg(long, env = "SPINE_LEADER_PING_TIMEOUT", default_value_t = HumanDuration(ClusterConfig::default().leader_ping_timeout))]
    leader_ping_timeout: HumanDuration,
    /// How often each replica reads who is alive (liveness locks) on its own session: a crashed replica is noticed within this.
    #[arg(long, env = "SPINE_LIVENESS_INTERVAL", default_value_t = HumanDuration(ClusterConfig::default().liveness_interval))]
    liveness_interval: HumanDuration,
    /// How long a liveness read may take before the replica counts its liveness session as lost (and is judged by its heartbeat meanwhile).
    #[arg(long, env = "SPINE_LIVENESS_TIMEOUT", default_value_t = HumanDuration(ClusterConfig::default().liveness_timeout))]
    liveness_timeout: HumanDuration,
    /// How often the leader reaps dead replicas' runs, schedules retries and records missed ticks.
    #[arg(long, env = "SPINE_HOUSEKEEPING_INTERVAL", default_value_t = HumanDuration(ClusterConfig::default().housekeeping_interval))]
    housekeeping_interval: HumanDuration,
    /// Finished runs older than this are deleted.
    #[arg(long, env = "SPINE_RETENTION", default_value_t = HumanDuration(ClusterConfig::default().retention))]
    retention: HumanDuration,
    /// Keep at most this many finished runs per schedule (default: no limit).
    #[arg(long, env = "SPINE_RETENTION_KEEP_LAST")]
    retention_keep_last: Option<i64>,
    /// The span of tick time each ledger partition covers: whole hours dividing a day (1h, 2h, 3h, 4h, 6h, 8h, 12h) or whole days up to 31days.
    #[arg(long, env = "SPINE_LEDGER_PARTITION_INTERVAL", default_value_t = HumanDuration(ClusterConfig::default().ledger_partition_interval))]
    ledger_partition_interval: HumanDuration,
    /// Replicas that left or died are forgotten after this.
    #[arg(long, env = "SPINE_NODE_RETENTION", default_value_t = HumanDuration(ClusterConfig::default().node_retention))]
    node_retention: HumanDuration,
    /// A replica whose clock is further than this from the database's does not take leadership.
    #[arg(long, env = "SPINE_MAX_CLOCK_OFFSET", default_value_t = HumanDuration(ClusterConfig::default().max_clock_offset))]
    max_clock_offset: HumanDuration,
    /// Test only: pretend the local clock is off by this much (e.g. 30s or -30s).
    #[arg(long, hide = true, default_value = "0s", value_parser = parse_signed_duration, allow_hyphen_values = true)]
    test_clock_skew: chrono::Duration,
    /// How often run-now requests and due retries are looked for without a NOTIFY.
    #[arg(long, env = "SPINE_PENDING_POLL_INTERVAL", default_value_t = HumanDuration(EngineConfig::default().pending_poll_interval))]
    pending_poll_interval: HumanDuration,
    /// How long in-flight runs may finish after SIGTERM before they are recorded abandoned.
    #[arg(long, env = "SPINE_SHUTDOWN_GRACE", default_value_t = HumanDuration(EngineConfig::default().shutdown_grace))]
    shutdown_grace: HumanDuration,
    /// Address of the admin API, probes and metrics (0.0.0.0:8080 to serve beyond this host).
    #[arg(long, env = "SPINE_LISTEN", default_value = api::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// File holding the admin API token (instead of SPINE_API_TOKEN).
    #[arg(long, env = "SPINE_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// File holding the read-only API token, which may only GET (instead of SPINE_API_READONLY_TOKEN).
    #[arg(long, env = "SPINE_API_READONLY_TOKEN_FILE")]
    api_readonly_token_file: Option<PathBuf>,
    /// File of named API tokens, one `NAME:ROLE:TOKEN` a line (ROLE admin or read-only; `#` comments); the audit trail names the token (also SPINE_API_TOKENS, entries separated by spaces).
    #[arg(long, env = "SPINE_API_TOKENS_FILE")]
    api_tokens_file: Option<PathBuf>,
    /// Serve the API without authentication when no token is configured (local use only).
    #[arg(long, env = "SPINE_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Label per-schedule metrics schedule="_all" instead of each name (many thousands of schedules).
    #[arg(long, env = "SPINE_METRICS_DROP_SCHEDULE_LABEL")]
    metrics_drop_schedule_label: bool,
}

#[derive(clap::Args)]
struct DbArgs {
    /// PostgreSQL connection string, a URL or libpq's key=value form, with libpq's TLS keywords (sslmode, sslrootcert, sslcert, sslkey). Without it: libpq's PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY; without those, postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file holding the database password (a mounted Secret); it replaces any password in the URL or PGPASSWORD, and is used for --leader-database-url too.
    #[arg(long, env = "SPINE_DATABASE_PASSWORD_FILE")]
    database_password_file: Option<PathBuf>,
}

/// The database when neither a URL nor libpq's variables name one.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl DbArgs {
    /// The connection string, from the flags and libpq's variables (see
    /// `store::conninfo` for the order).
    fn conninfo(&self) -> anyhow::Result<String> {
        self.with_password(self.database_url.as_deref())
    }

    /// `url` (or, when `None`, libpq's variables) with the password file
    /// applied.
    fn with_password(&self, url: Option<&str>) -> anyhow::Result<String> {
        Ok(store::conninfo::resolve(
            url,
            self.database_password_file.as_deref(),
            DEFAULT_DATABASE_URL,
            |var| std::env::var(var).ok(),
        )?)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, matches!(cli.command, Command::Serve(_)));
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` wins; otherwise `info` for `serve` and `warn` for one-shot commands.
fn init_logging(format: LogFormat, serving: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" })
    });
    // Colour only for people at a terminal, never into log files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // Span fields (run_id, schedule, …) ride on every line of a run.
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Schedules(args) => Ok(client_outcome(client::run_schedules(args).await)),
        Command::Runs(args) => Ok(client_outcome(client::run_runs(args).await)),
        Command::Cluster(args) => Ok(client_outcome(client::run_cluster(args).await)),
        Command::Dev(args) => {
            spine_scheduler::dev::run(spine_scheduler::dev::DevOptions {
                database_url: args.database_url,
                data_dir: args.data_dir,
                replicas: args.replicas,
                base_port: args.base_port,
                pipelines: args.pipelines,
                schedules: args.schedules,
                stop_timeout: args.stop_timeout,
                binary: None,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Next {
            expression,
            tz,
            count,
            from,
        } => next(&expression, &tz, count, from.as_deref()),
        Command::Migrate { db } => {
            let mut client = store::connect(&db.conninfo()?).await?;
            let report = store::migrate::migrate(&mut client).await?;
            if report.applied.is_empty() {
                println!(
                    "schema is up to date (version {})",
                    report.already_applied.last().copied().unwrap_or(0)
                );
            } else {
                for v in &report.applied {
                    println!("applied migration {v}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { file, pipelines } => {
            let registry = optional_pipelines(pipelines.as_deref())?;
            // Problems are the answer here, so they go to stdout; only an
            // unreadable file is an error. With the clock: a `run_at` past its
            // grace is a problem too (apply keeps one already stored).
            let pipelines = registry.as_ref().map(|(r, p)| (r, *p));
            match schedule_file::load_checked_at(&file, pipelines, Utc::now()) {
                Ok(checked) => {
                    println!(
                        "{}: {} schedules, all valid",
                        file.display(),
                        checked.schedules.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(CheckError::Refused(refused)) => {
                    for line in refused.lines() {
                        println!("{line}");
                    }
                    println!("{}: {} problem(s)", file.display(), refused.problems.len());
                    Ok(ExitCode::FAILURE)
                }
                Err(CheckError::File(e)) => Err(e.into()),
            }
        }
        Command::Apply {
            file,
            prune,
            dry_run,
            source,
            force_conflicts,
            pipelines,
            db,
        } => {
            let registry = optional_pipelines(pipelines.as_deref())?;
            let checked = checked_file(
                &file,
                registry.as_ref().map(|(r, p)| (r, *p)),
                "nothing was applied",
            )?;
            let source = resolve_source(source.as_deref(), checked.source.as_deref(), &file)?;
            let plan = apply::connect_and_apply(
                &db.conninfo()?,
                &checked.schedules,
                &ApplyOptions {
                    source,
                    prune,
                    dry_run,
                    force_conflicts,
                },
            )
            .await?;
            println!("{plan}");
            if dry_run && !plan.conflicts.is_empty() {
                println!("dry run: nothing was changed; applying would be refused (conflicts)");
                return Ok(ExitCode::FAILURE);
            }
            if dry_run {
                println!("dry run: nothing was changed");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A client command's error printed as the API worded it, and its exit
/// code (the client's own classes, see `client::EXIT_CODES_HELP`).
fn client_outcome(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn next(expression: &str, tz: &str, count: u16, from: Option<&str>) -> anyhow::Result<ExitCode> {
    let cron = CronExpr::parse(expression).with_context(|| format!("expression {expression:?}"))?;
    let zone = parse_timezone(tz)?;
    let from = match from {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| {
                format!("--from {s:?} is not an RFC 3339 instant such as 2027-03-12T00:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let fires = cron.upcoming(from, zone, usize::from(count));
    if fires.is_empty() {
        println!("no fire times after {}", from.to_rfc3339());
    }
    for t in fires {
        let local = t.with_timezone(&zone);
        println!(
            "{}  {}",
            local.format("%a %Y-%m-%d %H:%M:%S %Z (%:z)"),
            t.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_pipelines(path: &Path) -> anyhow::Result<Registry> {
    pipeline::config::load(path).with_context(|| format!("pipelines file {}", path.display()))
}

/// `--pipelines` of `validate` and `apply`: the registry with the file it
/// came from (problems name it), or `None` when no file was given.
fn optional_pipelines(path: Option<&Path>) -> anyhow::Result<Option<(Registry, &Path)>> {
    path.map(|p| load_pipelines(p).map(|r| (r, p))).transpose()
}

/// [`schedule_file::load_checked`] for `apply` and `serve`: a refused file
/// has every problem printed on stderr, and `consequence` says what the
/// refusal means.
fn checked_file(
    path: &Path,
    pipelines: Option<(&Registry, &Path)>,
    consequence: &str,
) -> anyhow::Result<schedule_file::Checked> {
    match schedule_file::load_checked(path, pipelines) {
        Ok(checked) => Ok(checked),
        Err(CheckError::Refused(refused)) => {
            for line in refused.lines() {
                eprintln!("{line}");
            }
            anyhow::bail!("{refused}; {consequence}")
        }
        Err(CheckError::File(e)) => Err(e.into()),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    // Refuse a missing token before touching anything (not even --schedules).
    let auth = Auth::load(&AuthSources::from_env(
        args.api_token_file.clone(),
        args.api_readonly_token_file.clone(),
        args.api_tokens_file.clone(),
        args.insecure_no_auth,
    ))?;
    // One registry for the engine's and the API's metrics, served on /metrics.
    let metrics = Metrics::new(MetricsOptions {
        per_schedule_labels: !args.metrics_drop_schedule_label,
    })?;
    let registry = match &args.pipelines {
        Some(path) => load_pipelines(path)?,
        None => Registry::new(),
    };
    if registry.names().next().is_none() {
        tracing::warn!(
            "no pipelines defined (--pipelines / SPINE_PIPELINES_FILE): every run will fail"
        );
    }
    let database = args.db.conninfo()?;
    let leader_database = match &args.leader_database_url {
        Some(url) => Some(args.db.with_password(Some(url))?),
        None => None,
    };
    if let Some(path) = &args.schedules {
        let checked = checked_file(
            path,
            // Always checked: without a pipelines file, no schedule can run.
            Some((
                &registry,
                args.pipelines
                    .as_deref()
                    .unwrap_or(Path::new("no --pipelines file given")),
            )),
            "not starting",
        )?;
        let source = resolve_source(
            args.schedules_source.as_deref(),
            checked.source.as_deref(),
            path,
        )?;
        let plan = apply::connect_and_apply(
            &database,
            &checked.schedules,
            &ApplyOptions {
                source,
                prune: args.prune_schedules,
                dry_run: false,
                force_conflicts: false,
            },
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
        tracing::info!(file = %path.display(), changes = plan.changes.len(), unchanged = plan.unchanged.len(), "schedules file applied");
    }
    let defaults = EngineConfig::default();
    let config = EngineConfig {
        node_name: args.node_name.unwrap_or(defaults.node_name),
        pool_size: args.pool_size,
        max_concurrent_runs: args.max_concurrent_runs,
        claim_batch_size: args.claim_batch_size,
        claim_concurrency: args.claim_concurrency,
        resync_interval: args.resync_interval.0,
        heartbeat_interval: args.heartbeat_interval.0,
        node_lease: args.node_lease.0,
        handoff_delay: args.handoff_delay.0,
        claim_lead: args.claim_lead.0,
        pending_poll_interval: args.pending_poll_interval.0,
        shutdown_grace: args.shutdown_grace.0,
        test_clock_skew: args.test_clock_skew,
        cluster: ClusterConfig {
            leader_database_url: leader_database,
            leader_retry_interval: args.leader_retry_interval.0,
            leader_ping_interval: args.leader_ping_interval.0,
            leader_ping_timeout: args.leader_ping_timeout.0,
            liveness_interval: args.liveness_interval.0,
            liveness_timeout: args.liveness_timeout.0,
            housekeeping_interval: args.housekeeping_interval.0,
            retention: args.retention.0,
            retention_keep_last: args.retention_keep_last,
            ledger_partition_interval: args.ledger_partition_interval.0,
            node_retention: args.node_retention.0,
            max_clock_offset: args.max_clock_offset.0,
            ..defaults.cluster.clone()
        },
        ..defaults
    };
    let scheduler = Scheduler::builder(&database)
        .pipelines(registry)?
        .config(config)
        .metrics(metrics.clone())
        .build()?;
    // Admin API, probes and metrics (src/api), bound before the engine starts
    // so a taken port or a missing token stops `serve` at once. It reports
    // draining from the first signal and closes once the engine is done.
    let api_options = ApiOptions {
        listen: args.listen,
        auth,
        database_url: database.clone(),
        pool_size: api::DEFAULT_POOL_SIZE,
        node_lease: args.node_lease.0,
        metrics,
    };
    let api = api::start(
        api_options,
        scheduler.handle(),
        scheduler.registry().clone(),
    )
    .await?;
    scheduler.run(api.draining_on(shutdown)).await?;
    api.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Installs the SIGTERM/SIGINT handlers now and returns what completes on
/// the first signal; a second one exits at once. Installed at the start of
/// `serve`: a signal while it migrates, applies its schedules file or waits
/// for its liveness session (when /readyz may already say ready) is then
/// held until the engine runs and drains it, instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: draining (send it again to exit at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("second signal: exiting immediately");
            std::process::exit(130);
        });
    }
}

/// A duration written as people write it (`100ms`, `2s`, `30days`): the
/// type of every duration flag, so that each default is the library's own
/// (`EngineConfig::default()`, `ClusterConfig::default()`) and `--help`
/// prints it — defaults are written once.
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl std::str::FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// A duration with an optional leading minus sign (`-30s`).
fn parse_signed_duration(s: &str) -> Result<chrono::Duration, String> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let d = humantime::parse_duration(rest).map_err(|e| e.to_string())?;
    let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
    Ok(if negative { -d } else { d })
}
