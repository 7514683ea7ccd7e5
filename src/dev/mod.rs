//! The zero-setup local mode, `spine-scheduler dev`: a whole cluster on one
//! machine in one command.
//!
//! Without a database URL it starts a private PostgreSQL in a data folder
//! (with [`PgCluster`](crate::pg_cluster::PgCluster), kept across runs), applies the migrations, loads the
//! example pipelines and schedules built into the binary (or the files
//! given) plus a demo schedule that fires every five seconds, runs N
//! replicas as child processes of the same binary (`serve` on consecutive
//! loopback ports), prints where to look, and on SIGINT, SIGTERM or SIGHUP
//! stops everything it started: SIGTERM to each replica, SIGKILL after a
//! timeout, then the private PostgreSQL.
//!
//! Why child processes and not N engines in one process: the replicas are
//! then exactly what production runs (`serve`), each with its own API port,
//! metrics and node row, and killing one (`kill -9 <pid>`) shows a failover.
//!
//! Children are put in their own process group, so a Ctrl-C in the terminal
//! reaches only this process, which then sends each replica exactly one
//! SIGTERM (a second signal would make `serve` exit at once, skipping the
//! drain). On Linux they also get `PR_SET_PDEATHSIG`, so they stop even when
//! this process is killed with SIGKILL. The private PostgreSQL is
//! daemonised by `pg_ctl` and cannot be tied to us that way; a server left
//! over by a killed `dev` is detected at the next start and named.
//!
//! Where things are: [`run`](crate::dev::run) below is the whole life in order;
//! `setup.rs` checks everything before anything starts and loads the
//! schedules, `postgres.rs` starts and stops the private server,
//! `replica.rs` starts one `serve` child and owns its process,
//! `supervisor.rs` waits for the replicas, watches them and stops them,
//! `signals.rs` turns signals into events, `banner.rs` prints where to look.

mod banner;
mod postgres;
mod replica;
mod setup;
mod signals;
mod supervisor;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::pg_cluster::{ClusterError, PgCluster};
use setup::Setup;
use signals::Interrupts;
use supervisor::Event;

/// `examples/pipelines.yaml`, built in so `dev` works from any folder.
pub const EXAMPLE_PIPELINES: &str = include_str!("../../examples/pipelines.yaml");
/// `examples/schedules.yaml` (the seed's five schedules), built in.
pub const EXAMPLE_SCHEDULES: &str = include_str!("../../examples/schedules.yaml");
/// `examples/demo-schedules.yaml`: one schedule firing every five seconds.
pub const DEMO_SCHEDULES: &str = include_str!("../../examples/demo-schedules.yaml");
/// The pipeline the demo schedule runs; the demo is added only when the
/// pipelines in use define it.
pub const DEMO_PIPELINE: &str = "demo.hello";

/// What `spine-scheduler dev` runs.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Use this database instead of starting a private PostgreSQL.
    pub database_url: Option<String>,
    /// Folder for the private PostgreSQL (`pgdata/`) and the files the
    /// replicas read; created if missing, reused across runs.
    pub data_dir: PathBuf,
    /// How many replicas to run (1–16).
    pub replicas: u16,
    /// API port of the first replica; replica `i` listens on `base_port + i`.
    pub base_port: u16,
    /// Pipelines file; `None`: [`EXAMPLE_PIPELINES`].
    pub pipelines: Option<PathBuf>,
    /// Schedules file; `None`: [`EXAMPLE_SCHEDULES`].
    pub schedules: Option<PathBuf>,
    /// How long the replicas get to stop after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// The `spine-scheduler` executable to run as replicas; `None`: this
    /// process's own executable.
    pub binary: Option<PathBuf>,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            database_url: None,
            data_dir: PathBuf::from(".spine-dev"),
            replicas: 3,
            base_port: 8080,
            pipelines: None,
            schedules: None,
            stop_timeout: Duration::from_secs(15),
            binary: None,
        }
    }
}

/// Why the local mode could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The options, the files or this machine are not usable as they are;
    /// the message says what to do.
    #[error("{0}")]
    Setup(String),
    /// The private PostgreSQL could not be started (the message names what
    /// to install when the server binaries are missing).
    #[error("private PostgreSQL: {0}")]
    Postgres(#[from] ClusterError),
    /// The database failed while migrating or loading the schedules.
    #[error("database: {0}")]
    Database(String),
    /// A replica could not be started or did not become ready (the others
    /// were stopped), or every replica exited by itself.
    #[error("{0}")]
    Replica(String),
}

/// Runs the local cluster until SIGINT or SIGTERM, then stops everything it
/// started. Returns `Ok` after a signal-initiated stop, `Err` when setup
/// failed or no replica is left running (everything started is stopped in
/// either case). A replica that exits once all were ready is reported and
/// the others go on.
///
/// Call it from the thread that keeps running for the life of the process
/// (e.g. the `#[tokio::main]` future): on Linux the replicas are tied to the
/// thread that spawns them (`PR_SET_PDEATHSIG`).
pub async fn run(options: DevOptions) -> Result<(), DevError> {
    // Installed first: from here on a Ctrl-C no longer kills us outright, so
    // nothing we start (a PostgreSQL in particular) can be left behind.
    let mut interrupts = Interrupts::install()?;
    let setup = setup::prepare(&options)?;
    let (url, cluster) = match &options.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let cluster = postgres::start(&setup.data_dir).await?;
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let result = if interrupts.pending() {
        say_err("signal received: stopping");
        Ok(())
    } else {
        run_on(&options, &setup, &url, cluster.as_ref(), &mut interrupts).await
    };
    if let Some(cluster) = cluster {
        postgres::stop(cluster).await;
    }
    result
}

/// With the database up: migrate, load the schedules, run the replicas.
async fn run_on(
    options: &DevOptions,
    setup: &Setup,
    url: &str,
    cluster: Option<&PgCluster>,
    interrupts: &mut Interrupts,
) -> Result<(), DevError> {
    let load = setup::load_schedules(url, &setup.schedules);
    let summary = tokio::select! {
        r = load => r?,
        () = interrupts.next() => {
            say_err("signal received: stopping");
            return Ok(());
        }
    };
    say_err(&format!(
        "schema up to date; schedules from {}: {summary}",
        setup.schedules_shown
    ));

    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let mut replicas = Vec::with_capacity(setup.ports.len());
    for (index, port) in setup.ports.iter().enumerate() {
        match replica::spawn(setup, url, index, *port, exits_tx.clone()) {
            Ok(r) => replicas.push(r),
            Err(e) => {
                supervisor::stop(&mut replicas, &mut exits, interrupts, options.stop_timeout).await;
                return Err(e);
            }
        }
    }
    say_err(&format!(
        "started {} replicas; waiting until they are ready",
        replicas.len()
    ));

    let outcome = match supervisor::wait_ready(&mut replicas, &mut exits, interrupts).await {
        None => {
            banner::print(setup, url, cluster, &replicas);
            supervisor::watch(&mut replicas, &mut exits, interrupts).await
        }
        Some(event) => event,
    };
    let result = match outcome {
        Event::Interrupted => {
            say_err("signal received: stopping the replicas (again to kill them at once)");
            Ok(())
        }
        Event::Exited(message) => {
            say_err(&format!("{message}; stopping the others"));
            Err(DevError::Replica(message))
        }
        Event::Failed(e) => {
            say_err(&format!("{e}; stopping the replicas"));
            Err(e)
        }
    };
    supervisor::stop(&mut replicas, &mut exits, interrupts, options.stop_timeout).await;
    result
}

/// A line for the user on stdout; a closed stdout is not an error worth dying for.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A progress or problem line on stderr.
fn say_err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "dev: {text}");
}
