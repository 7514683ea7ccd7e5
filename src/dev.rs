//! The zero-setup local mode, `spine-scheduler dev`: a whole cluster on one
//! machine in one command.
//!
//! Without a database URL it starts a private PostgreSQL in a data folder
//! (with [`PgCluster`], kept across runs), applies the migrations, loads the
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

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply::{self, ApplyOptions, Change};
use crate::pg_cluster::{ClusterError, ClusterOptions, PgCluster};
use crate::pipeline::{self, Registry};
use crate::schedule::spec::ParsedSchedule;
use crate::schedule_file::{self, ScheduleFile};

/// `examples/pipelines.yaml`, built in so `dev` works from any folder.
pub const EXAMPLE_PIPELINES: &str = include_str!("../examples/pipelines.yaml");
/// `examples/schedules.yaml` (the seed's five schedules), built in.
pub const EXAMPLE_SCHEDULES: &str = include_str!("../examples/schedules.yaml");
/// `examples/demo-schedules.yaml`: one schedule firing every five seconds.
pub const DEMO_SCHEDULES: &str = include_str!("../examples/demo-schedules.yaml");
/// The pipeline the demo schedule runs; the demo is added only when the
/// pipelines in use define it.
pub const DEMO_PIPELINE: &str = "demo.hello";

/// How long each replica may take to report ready (`/readyz` 200).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The drain grace handed to each replica (`serve --shutdown-grace`): the
/// example pipelines finish in about a second, and Ctrl-C should feel quick.
const REPLICA_SHUTDOWN_GRACE: &str = "5s";
/// The replicas' log filter unless RUST_LOG is set: each run as one line
/// (the log pipeline's), leadership changes and every warning, so the
/// banner is not buried under three lines per fire. `RUST_LOG=info` shows
/// everything.
const REPLICA_LOG_FILTER: &str =
    "warn,spine_scheduler::pipeline=info,spine_scheduler::cluster::elector=info";
/// How long to wait for the replicas' last log lines after they exit.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

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
    let setup = prepare(&options)?;
    let (url, cluster) = match &options.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let cluster = start_postgres(&setup.data_dir).await?;
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
        stop_postgres(cluster).await;
    }
    result
}

/// Everything checked before anything is started.
struct Setup {
    data_dir: PathBuf,
    pipelines_path: PathBuf,
    pipelines_shown: String,
    schedules: Vec<ParsedSchedule>,
    schedules_shown: String,
    demo: Option<String>,
    ports: Vec<u16>,
    binary: PathBuf,
}

/// Checks the options, files, ports and data folder; writes the built-in
/// pipelines file the replicas will read. Starts nothing.
fn prepare(options: &DevOptions) -> Result<Setup, DevError> {
    if !(1..=16).contains(&options.replicas) {
        return Err(DevError::Setup(format!(
            "--replicas {}: between 1 and 16, please",
            options.replicas
        )));
    }
    let last = u32::from(options.base_port) + u32::from(options.replicas) - 1;
    if options.base_port == 0 || last > u32::from(u16::MAX) {
        return Err(DevError::Setup(format!(
            "--base-port {}: the replicas need ports {}..={last}; pick a port from 1 to {}",
            options.base_port,
            options.base_port,
            u16::MAX - (options.replicas - 1)
        )));
    }
    if options.stop_timeout.is_zero() {
        return Err(DevError::Setup("--stop-timeout must be above zero".into()));
    }
    let ports: Vec<u16> = (0..options.replicas)
        .map(|i| options.base_port + i)
        .collect();
    for port in &ports {
        // Checked before PostgreSQL starts, so a taken port costs nothing.
        if let Err(e) = TcpListener::bind(("127.0.0.1", *port)) {
            return Err(DevError::Setup(format!(
                "127.0.0.1:{port} is not free ({e}); is another `spine-scheduler dev` or server \
                 running? Pick other ports with --base-port"
            )));
        }
    }
    let binary = match &options.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| {
            DevError::Setup(format!("cannot find this program's own executable: {e}"))
        })?,
    };

    let data_dir = std::path::absolute(&options.data_dir)
        .map_err(|e| DevError::Setup(format!("data folder {}: {e}", options.data_dir.display())))?;
    make_data_dir(&data_dir)?;
    if options.database_url.is_none() && is_root() {
        check_reachable_by_postgres_user(&data_dir)?;
    }

    let (pipelines_text, pipelines_path, pipelines_shown) = match &options.pipelines {
        Some(path) => {
            let text = read(path, "pipelines file")?;
            let abs = std::path::absolute(path)
                .map_err(|e| DevError::Setup(format!("{}: {e}", path.display())))?;
            (text, abs, path.display().to_string())
        }
        None => {
            let path = data_dir.join("pipelines.yaml");
            let text = format!(
                "# Written by `spine-scheduler dev` from examples/pipelines.yaml at each start;\n\
                 # edits here are overwritten (use `dev --pipelines FILE` for your own).\n{EXAMPLE_PIPELINES}"
            );
            std::fs::write(&path, text)
                .map_err(|e| DevError::Setup(format!("write {}: {e}", path.display())))?;
            (
                EXAMPLE_PIPELINES.to_string(),
                path,
                "examples/pipelines.yaml (built in)".to_string(),
            )
        }
    };
    let registry = pipeline::config::parse(&pipelines_text)
        .map_err(|e| DevError::Setup(format!("pipelines file {pipelines_shown}: {e}")))?;

    let (schedules_text, schedules_shown) = match &options.schedules {
        Some(path) => (read(path, "schedules file")?, path.display().to_string()),
        None => (
            EXAMPLE_SCHEDULES.to_string(),
            "examples/schedules.yaml (built in)".to_string(),
        ),
    };
    let mut schedules = checked_schedules(&schedules_text, &schedules_shown, &registry)?;
    let mut demo = None;
    if registry.contains(DEMO_PIPELINE) {
        for parsed in checked_schedules(DEMO_SCHEDULES, "examples/demo-schedules.yaml", &registry)?
        {
            let name = parsed.schedule.name().to_string();
            // A schedules file of one's own that defines it wins.
            if !schedules.iter().any(|s| s.schedule.name() == name) {
                schedules.push(parsed);
                demo = Some(name);
            }
        }
    } else {
        say_err(&format!(
            "note: the pipelines define no {DEMO_PIPELINE:?}, so the demo schedule that fires \
             every 5 seconds is not loaded"
        ));
    }
    Ok(Setup {
        data_dir,
        pipelines_path,
        pipelines_shown,
        schedules,
        schedules_shown,
        demo,
        ports,
        binary,
    })
}

fn read(path: &Path, what: &str) -> Result<String, DevError> {
    std::fs::read_to_string(path)
        .map_err(|e| DevError::Setup(format!("cannot read {what} {}: {e}", path.display())))
}

/// Parses a schedules text and checks every pipeline exists; every problem
/// is reported at once, as `validate` does.
fn checked_schedules(
    text: &str,
    shown: &str,
    registry: &Registry,
) -> Result<Vec<ParsedSchedule>, DevError> {
    let mut file: ScheduleFile =
        schedule_file::parse(text).map_err(|e| DevError::Setup(format!("{shown}: {e}")))?;
    let missing = schedule_file::unknown_pipelines(&file, |name| registry.contains(name));
    file.problems.extend(missing);
    if file.problems.is_empty() {
        return Ok(file.schedules);
    }
    let lines: Vec<String> = file
        .problems
        .iter()
        .map(|p| format!("  {shown}: {p}"))
        .collect();
    Err(DevError::Setup(format!(
        "{} problem(s) in the schedules:\n{}",
        file.problems.len(),
        lines.join("\n")
    )))
}

/// Creates the data folder (searchable by others, since the PostgreSQL
/// server may run as another user) with a `.gitignore` so that a folder made
/// inside a git checkout does not show up as untracked.
fn make_data_dir(dir: &Path) -> Result<(), DevError> {
    let io = |what: &str, e: std::io::Error| {
        DevError::Setup(format!("data folder {}: {what}: {e}", dir.display()))
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", e))?;
    }
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(
            &ignore,
            "# Made by `spine-scheduler dev`: nothing here belongs in git.\n*\n",
        )
        .map_err(|e| io("write .gitignore", e))?;
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// As root the server runs as the `postgres` user (Postgres refuses root),
/// which must be able to walk down to the data folder. `/root` (mode 700) is
/// the usual trap; initdb's own error would only say "permission denied".
fn check_reachable_by_postgres_user(dir: &Path) -> Result<(), DevError> {
    for ancestor in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        if meta.mode() & 0o001 == 0 {
            return Err(DevError::Setup(format!(
                "running as root, the private PostgreSQL runs as the 'postgres' OS user, which \
                 cannot reach {} ({} is not searchable by other users); use a data folder \
                 elsewhere, e.g. --data-dir /var/tmp/spine-dev",
                dir.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
}

/// Starts (initialising on the first run) the private PostgreSQL in
/// `<data_dir>/pgdata`.
async fn start_postgres(data_dir: &Path) -> Result<PgCluster, DevError> {
    let pgdata = data_dir.join("pgdata");
    if let Some(pid) = running_postmaster(&pgdata) {
        return Err(DevError::Setup(format!(
            "a PostgreSQL server (pid {pid}) is already running on {}: another \
             `spine-scheduler dev` is using this data folder, or one that was killed left its \
             server behind. Stop the other one, or in the second case stop the server with \
             `kill -INT {pid}`; or pass another --data-dir",
            pgdata.display()
        )));
    }
    if pgdata.join("PG_VERSION").exists() {
        say_err(&format!("starting PostgreSQL in {}", pgdata.display()));
    } else {
        say_err(&format!(
            "creating a PostgreSQL cluster in {} (first run; kept for the next ones)",
            pgdata.display()
        ));
    }
    let options = ClusterOptions {
        data_dir: Some(pgdata),
        ..ClusterOptions::default()
    };
    // initdb and pg_ctl block for seconds; keep the runtime's threads free.
    let started = tokio::task::spawn_blocking(move || PgCluster::start(options))
        .await
        .map_err(|e| DevError::Setup(format!("starting PostgreSQL: {e}")))?;
    Ok(started?)
}

/// The pid in `postmaster.pid` when that process exists.
fn running_postmaster(pgdata: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    (pid > 0 && alive).then_some(pid)
}

/// Stops the private PostgreSQL cleanly (fast mode), so the next start needs
/// no crash recovery. The handle's drop would stop it too, but immediately.
async fn stop_postgres(cluster: PgCluster) {
    say_err("stopping PostgreSQL");
    let stopped = tokio::task::spawn_blocking(move || {
        let result = cluster.stop();
        drop(cluster);
        result
    })
    .await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => say_err(&format!("stopping PostgreSQL: {e}")),
        Err(e) => say_err(&format!("stopping PostgreSQL: {e}")),
    }
}

/// With the database up: migrate, load the schedules, run the replicas.
async fn run_on(
    options: &DevOptions,
    setup: &Setup,
    url: &str,
    cluster: Option<&PgCluster>,
    interrupts: &mut Interrupts,
) -> Result<(), DevError> {
    let load = load_schedules(url, &setup.schedules);
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
        match spawn_replica(setup, url, index, *port, exits_tx.clone()) {
            Ok(r) => replicas.push(r),
            Err(e) => {
                stop_replicas(&mut replicas, &mut exits, interrupts, options.stop_timeout).await;
                return Err(e);
            }
        }
    }
    say_err(&format!(
        "started {} replicas; waiting until they are ready",
        replicas.len()
    ));

    let outcome = match wait_ready(&mut replicas, &mut exits, interrupts).await {
        None => {
            print_banner(setup, url, cluster, &replicas);
            watch_running(&mut replicas, &mut exits, interrupts).await
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
    stop_replicas(&mut replicas, &mut exits, interrupts, options.stop_timeout).await;
    result
}

/// Migrates and applies the schedules (no pruning: schedules made through
/// the API in an earlier run stay). Returns the plan's one-line summary.
async fn load_schedules(url: &str, schedules: &[ParsedSchedule]) -> Result<String, DevError> {
    let plan = apply::connect_and_apply(url, schedules, ApplyOptions::default())
        .await
        .map_err(|e| DevError::Database(e.to_string()))?;
    let created = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Create(_)))
        .count();
    Ok(format!(
        "{created} created, {} updated, {} unchanged, {} others kept",
        plan.changes.len() - created,
        plan.unchanged.len(),
        plan.kept.len()
    ))
}

/// What the supervisor asks of a replica's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopRequest {
    Run,
    Term,
    Kill,
}

/// A running replica, as seen from here. Its process is owned by a
/// supervising task, so a signal can only ever reach our own, still
/// unreaped child (never a recycled pid).
struct Replica {
    name: String,
    port: u16,
    stop: watch::Sender<StopRequest>,
    exited: Option<String>,
    ready: bool,
    logs: Vec<JoinHandle<()>>,
}

/// (replica index, how its process ended).
type ExitReport = (usize, std::io::Result<ExitStatus>);

fn spawn_replica(
    setup: &Setup,
    url: &str,
    index: usize,
    port: u16,
    exits: mpsc::UnboundedSender<ExitReport>,
) -> Result<Replica, DevError> {
    let name = format!("dev-{}", index + 1);
    let mut cmd = Command::new(&setup.binary);
    cmd.arg("serve")
        .arg("--pipelines")
        .arg(&setup.pipelines_path)
        .args(["--node-name", &name])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--insecure-no-auth")
        .args(["--shutdown-grace", REPLICA_SHUTDOWN_GRACE])
        // In the environment, not argv: a URL may hold a password, and argv
        // is visible to every user in `ps`.
        .env("DATABASE_URL", url)
        // The schedules were applied once above; an inherited file setting
        // would make every replica apply (and maybe prune) another set.
        .env_remove("SPINE_SCHEDULES_FILE")
        .env_remove("SPINE_SCHEDULES_PRUNE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Our own process group: the terminal's Ctrl-C reaches only us, and
        // each replica gets exactly one SIGTERM from us (a second signal
        // would make `serve` skip its drain).
        .process_group(0)
        // A safety net if this process unwinds without stopping them.
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", REPLICA_LOG_FILTER);
    }
    tie_to_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        DevError::Replica(format!(
            "cannot start replica {name} ({} serve): {e}",
            setup.binary.display()
        ))
    })?;
    let mut logs = Vec::new();
    if let Some(out) = child.stdout.take() {
        logs.push(tokio::spawn(forward(out, name.clone(), false)));
    }
    if let Some(err) = child.stderr.take() {
        logs.push(tokio::spawn(forward(err, name.clone(), true)));
    }
    let (stop, stop_rx) = watch::channel(StopRequest::Run);
    tokio::spawn(supervise(child, index, stop_rx, exits));
    Ok(Replica {
        name,
        port,
        stop,
        exited: None,
        ready: false,
        logs,
    })
}

/// Linux: the replica gets SIGTERM when the thread that spawned it dies, so
/// even a `kill -9` of `dev` leaves no replica behind.
#[cfg(target_os = "linux")]
fn tie_to_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec; it only calls prctl and
    // getppid, which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie_to_parent(_cmd: &mut Command) {}

/// Owns a replica's process: reaps it, reports its exit, and signals it on
/// request (by pid only while it is unreaped, so never a stranger).
async fn supervise(
    mut child: Child,
    index: usize,
    mut stop: watch::Receiver<StopRequest>,
    exits: mpsc::UnboundedSender<ExitReport>,
) {
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            changed = stop.changed() => {
                let request = match changed {
                    Ok(()) => *stop.borrow_and_update(),
                    // The supervisor is gone: nobody will stop it gracefully.
                    Err(_) => StopRequest::Kill,
                };
                match request {
                    StopRequest::Run => {}
                    StopRequest::Term => {
                        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                            // SAFETY: kill has no memory-safety preconditions;
                            // `pid` is our unreaped child.
                            unsafe { libc::kill(pid, libc::SIGTERM) };
                        }
                    }
                    StopRequest::Kill => {
                        let _ = child.start_kill();
                    }
                }
                if changed.is_err() {
                    break child.wait().await;
                }
            }
        }
    };
    let _ = exits.send((index, status));
}

/// Copies a replica's output to ours, each line prefixed with its name (as
/// `docker compose` does), until the pipe closes.
async fn forward(stream: impl AsyncRead + Unpin, name: String, to_stderr: bool) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                // Output we cannot write (a closed terminal) is dropped, not fatal.
                if to_stderr {
                    let _ = writeln!(std::io::stderr().lock(), "{name} | {text}");
                } else {
                    let _ = writeln!(std::io::stdout().lock(), "{name} | {text}");
                }
            }
        }
    }
}

/// What ended a wait.
enum Event {
    Interrupted,
    Exited(String),
    Failed(DevError),
}

impl Event {
    fn from_exit(report: Option<ExitReport>, replicas: &mut [Replica]) -> Event {
        match report {
            Some((index, status)) => Event::Exited(record_exit(replicas, index, status)),
            None => Event::Failed(DevError::Replica(
                "lost track of the replicas (their supervisors ended)".into(),
            )),
        }
    }
}

/// Notes a replica's exit; returns a sentence about it.
fn record_exit(
    replicas: &mut [Replica],
    index: usize,
    status: std::io::Result<ExitStatus>,
) -> String {
    let how = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("cannot be waited for: {e}"),
    };
    match replicas.get_mut(index) {
        Some(r) => {
            let sentence = format!("replica {} exited ({how}); see its lines above", r.name);
            r.exited = Some(how);
            sentence
        }
        None => format!("a replica exited ({how})"),
    }
}

/// Runs until a signal, or until no replica is left. A replica that exits
/// once all were up is reported and the others go on: killing one is how a
/// newcomer sees its ticks move to the others.
async fn watch_running(
    replicas: &mut [Replica],
    exits: &mut mpsc::UnboundedReceiver<ExitReport>,
    interrupts: &mut Interrupts,
) -> Event {
    loop {
        tokio::select! {
            exit = exits.recv() => match Event::from_exit(exit, replicas) {
                Event::Exited(message) if replicas.iter().any(|r| r.exited.is_none()) => {
                    say_err(&format!(
                        "{message}; the other replicas take over its ticks (Ctrl-C stops them all)"
                    ));
                }
                Event::Exited(message) => return Event::Exited(format!("{message}; no replica is left")),
                other => return other,
            },
            () = interrupts.next() => return Event::Interrupted,
        }
    }
}

/// Polls each replica's `/readyz` until all answer 200 (`None`), or returns
/// what came first: an exit, a signal, or [`READY_TIMEOUT`] passing.
async fn wait_ready(
    replicas: &mut [Replica],
    exits: &mut mpsc::UnboundedReceiver<ExitReport>,
    interrupts: &mut Interrupts,
) -> Option<Event> {
    let client = match pipeline::http::build_client() {
        Ok(c) => c,
        Err(e) => {
            return Some(Event::Failed(DevError::Replica(format!(
                "HTTP client for the readiness checks: {e}"
            ))))
        }
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for r in replicas.iter_mut().filter(|r| !r.ready) {
            let url = format!("http://127.0.0.1:{}/readyz", r.port);
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            r.ready = answer.is_ok_and(|a| a.status().is_success());
        }
        if replicas.iter().all(|r| r.ready) {
            return None;
        }
        if Instant::now() >= deadline {
            let slow: Vec<&str> = replicas
                .iter()
                .filter(|r| !r.ready)
                .map(|r| r.name.as_str())
                .collect();
            return Some(Event::Failed(DevError::Replica(format!(
                "replica(s) {} not ready within {}s (GET /readyz); see their lines above",
                slow.join(", "),
                READY_TIMEOUT.as_secs()
            ))));
        }
        tokio::select! {
            exit = exits.recv() => return Some(Event::from_exit(exit, replicas)),
            () = interrupts.next() => return Some(Event::Interrupted),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// SIGTERM to every replica still running; SIGKILL to those still running
/// after `timeout` (or at once on another signal). Returns when every
/// replica has been reaped and its output flushed.
async fn stop_replicas(
    replicas: &mut [Replica],
    exits: &mut mpsc::UnboundedReceiver<ExitReport>,
    interrupts: &mut Interrupts,
    timeout: Duration,
) {
    for r in replicas.iter().filter(|r| r.exited.is_none()) {
        let _ = r.stop.send(StopRequest::Term);
    }
    let mut deadline = Instant::now() + timeout;
    let mut killed = false;
    while replicas.iter().any(|r| r.exited.is_none()) {
        let kill = tokio::select! {
            exit = exits.recv() => match exit {
                Some((index, status)) => {
                    record_exit(replicas, index, status);
                    false
                }
                // Every supervisor is gone, so every process is reaped.
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                if killed {
                    // SIGKILL cannot be ignored; this only guards a hang of our own.
                    say_err("replicas did not report their exit after SIGKILL; giving up waiting");
                    break;
                }
                let slow: Vec<&str> = replicas.iter().filter(|r| r.exited.is_none()).map(|r| r.name.as_str()).collect();
                say_err(&format!("{} still running after {}s: killing", slow.join(", "), timeout.as_secs_f32()));
                true
            }
            () = interrupts.next(), if !killed => {
                say_err("second signal: killing the replicas");
                true
            }
        };
        if kill && !killed {
            killed = true;
            deadline = Instant::now() + Duration::from_secs(10);
            for r in replicas.iter().filter(|r| r.exited.is_none()) {
                let _ = r.stop.send(StopRequest::Kill);
            }
        }
    }
    for r in replicas.iter_mut() {
        for log in r.logs.drain(..) {
            // A grandchild could hold the pipe open; don't wait for it forever.
            let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, log).await;
        }
    }
    let stopped: Vec<String> = replicas
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.name,
                r.exited.as_deref().unwrap_or("state unknown")
            )
        })
        .collect();
    if !stopped.is_empty() {
        say_err(&format!("replicas stopped: {}", stopped.join(", ")));
    }
}

/// Prints where to look, once every replica is ready.
fn print_banner(setup: &Setup, url: &str, cluster: Option<&PgCluster>, replicas: &[Replica]) {
    let now = Utc::now();
    let first = replicas.first().map_or(8080, |r| r.port);
    let other = replicas.get(1).map_or(first, |r| r.port);
    let third = replicas.get(2).map_or(other, |r| r.port);
    let auth = if std::env::var_os("SPINE_API_TOKEN").is_some() {
        " -H \"Authorization: Bearer $SPINE_API_TOKEN\""
    } else {
        ""
    };
    let width = setup
        .schedules
        .iter()
        .map(|s| s.schedule.name().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!(
        "\nspine-scheduler dev: {} replica(s) sharing one PostgreSQL, each tick fired by exactly one of them.\n\n",
        replicas.len()
    ));
    out.push_str("  replica  API, /metrics, /readyz, /openapi.json\n");
    for r in replicas {
        out.push_str(&format!("  {:<7}  http://127.0.0.1:{}\n", r.name, r.port));
    }
    out.push_str(&format!(
        "\n  schedules from {}{} (next fire, in the schedule's zone):\n",
        setup.schedules_shown,
        if setup.demo.is_some() {
            " and examples/demo-schedules.yaml"
        } else {
            ""
        }
    ));
    for s in &setup.schedules {
        let schedule = &s.schedule;
        let next = if setup.demo.as_deref() == Some(schedule.name()) {
            "every 5 seconds: the demo, so you see a fire at once (its runs log \"log pipeline ran\" below)".to_string()
        } else {
            match schedule.next_fire_after(now) {
                Some(t) => t
                    .with_timezone(&schedule.timezone())
                    .format("%a %Y-%m-%d %H:%M %Z")
                    .to_string(),
                None => "never again".to_string(),
            }
        };
        out.push_str(&format!("    {:<width$}  {next}\n", schedule.name()));
    }
    out.push_str(&format!(
        "  pipelines from {}, read from {}\n",
        setup.pipelines_shown,
        setup.pipelines_path.display()
    ));
    match cluster {
        Some(c) => out.push_str(&format!(
            "\n  database  {url}\n            private PostgreSQL, data in {}\n",
            c.data_dir().display()
        )),
        None => out.push_str(&format!(
            "\n  database  {} (from DATABASE_URL)\n",
            describe_url(url)
        )),
    }
    let watched = setup
        .demo
        .clone()
        .or_else(|| {
            setup
                .schedules
                .first()
                .map(|s| s.schedule.name().to_string())
        })
        .unwrap_or_else(|| "NAME".to_string());
    let run_now = setup
        .schedules
        .iter()
        .map(|s| s.schedule.name())
        .find(|n| Some(*n) != setup.demo.as_deref())
        .unwrap_or("NAME");
    out.push_str("\nTry it (any replica answers anything; all state is in the database):\n");
    out.push_str(&format!(
        "  curl -s{auth} 'http://127.0.0.1:{first}/v1/schedules/{watched}/runs?limit=3'\n"
    ));
    out.push_str(&format!(
        "  curl -s{auth} -X POST http://127.0.0.1:{other}/v1/schedules/{run_now}/run     # run now\n"
    ));
    out.push_str(&format!(
        "  curl -s{auth} 'http://127.0.0.1:{third}/v1/runs?schedule={run_now}'\n"
    ));
    out.push_str(&format!(
        "  curl -s{auth} http://127.0.0.1:{first}/v1/cluster                  # replicas and the leader\n"
    ));
    out.push_str(&format!(
        "  curl -s http://127.0.0.1:{first}/metrics | grep '^spine_runs_total'\n"
    ));
    if cluster.is_some() {
        out.push_str(&format!(
            "  psql '{url}' -c 'SELECT schedule_name, scheduled_at, status FROM scheduler_runs ORDER BY claimed_at DESC LIMIT 5'\n"
        ));
    }
    out.push_str(&format!(
        "\nCtrl-C stops the replicas{}.",
        if cluster.is_some() {
            " and PostgreSQL; the data stays in the data folder (delete it to start over)"
        } else {
            ""
        }
    ));
    out.push('\n');
    say(&out);
}

/// host:port/database of a URL, without the user or password.
fn describe_url(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "the database in DATABASE_URL".to_string();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default database)");
    format!("{host}:{port}/{db}")
}

/// SIGINT/SIGTERM/SIGHUP as a counter: signals become events this mode handles
/// (instead of killing the process) from the moment it starts.
struct Interrupts {
    count: watch::Receiver<u32>,
}

impl Interrupts {
    fn install() -> Result<Interrupts, DevError> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind: SignalKind| {
            signal(kind).map_err(|e| DevError::Setup(format!("cannot handle signals: {e}")))
        };
        let mut int = handler(SignalKind::interrupt())?;
        let mut term = handler(SignalKind::terminate())?;
        // A closed terminal: stop as for Ctrl-C rather than die and leave
        // PostgreSQL running.
        let mut hup = handler(SignalKind::hangup())?;
        let (tx, count) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Interrupts { count })
    }

    /// Whether a signal arrived that was not yet handled (and marks it handled).
    fn pending(&mut self) -> bool {
        let changed = self.count.has_changed().unwrap_or(false);
        self.count.borrow_and_update();
        changed
    }

    /// Waits for the next signal not yet handled.
    async fn next(&mut self) {
        if self.count.changed().await.is_err() {
            // The listener is gone (runtime shutting down): no more signals.
            std::future::pending::<()>().await;
        }
    }
}

/// A line for the user on stdout; a closed stdout is not an error worth dying for.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A progress or problem line on stderr.
fn say_err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "dev: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_examples_are_valid_and_agree() {
        let registry = pipeline::config::parse(EXAMPLE_PIPELINES).expect("example pipelines");
        let seed = checked_schedules(EXAMPLE_SCHEDULES, "seed", &registry).expect("seed");
        assert_eq!(seed.len(), 5, "the seed's five schedules");
        let demo = checked_schedules(DEMO_SCHEDULES, "demo", &registry).expect("demo");
        assert_eq!(demo.len(), 1);
        assert_eq!(demo[0].schedule.pipeline(), DEMO_PIPELINE);
        // "Every few seconds": a newcomer sees a fire well within a minute.
        let now = Utc::now();
        let ticks = demo[0].schedule.upcoming(now, 2);
        assert_eq!(ticks.len(), 2);
        assert!((ticks[1] - ticks[0]).num_seconds() <= 10);
    }

    #[test]
    fn bad_options_are_refused_before_anything_starts() {
        let dir = std::env::temp_dir().join(format!("spine-dev-unit-{}", std::process::id()));
        let refused = |o: DevOptions| match prepare(&o) {
            Err(DevError::Setup(m)) => m,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted"),
        };
        let base = DevOptions {
            data_dir: dir.clone(),
            ..DevOptions::default()
        };
        assert!(refused(DevOptions {
            replicas: 0,
            ..base.clone()
        })
        .contains("--replicas"));
        assert!(refused(DevOptions {
            base_port: 65535,
            ..base.clone()
        })
        .contains("--base-port"));
        assert!(refused(DevOptions {
            schedules: Some(dir.join("missing.yaml")),
            base_port: 0,
            ..base.clone()
        })
        .contains("--base-port"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_pipelines_are_all_reported() {
        let registry = pipeline::config::parse("pipelines: []").expect("empty pipelines");
        let e = checked_schedules(EXAMPLE_SCHEDULES, "seed", &registry).expect_err("refused");
        let message = e.to_string();
        assert!(message.starts_with("5 problem(s)"), "{message}");
        assert!(message.contains("finra_otc_t1"), "{message}");
    }

    #[test]
    fn url_description_hides_credentials() {
        let shown = describe_url("postgres://spine:secret@db.example:6432/jobs");
        assert_eq!(shown, "db.example:6432/jobs");
        assert!(!shown.contains("secret"));
    }
}
