//! One replica: a `serve` child of this same binary, its process owned by a
//! supervising task, its output copied to ours with its name in front.
//!
//! Only the supervising task ever signals the process, and only while it is
//! unreaped, so a signal can never reach a recycled pid (a stranger).

use std::io::Write;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::setup::Setup;
use super::DevError;

/// The drain grace handed to each replica (`serve --shutdown-grace`): the
/// example pipelines finish in about a second, and Ctrl-C should feel quick.
const REPLICA_SHUTDOWN_GRACE: &str = "5s";
/// The replicas' log filter unless RUST_LOG is set: each run as one line
/// (the log pipeline's), leadership changes and every warning, so the
/// banner is not buried under three lines per fire. `RUST_LOG=info` shows
/// everything.
const REPLICA_LOG_FILTER: &str =
    "warn,spine_scheduler::pipeline=info,spine_scheduler::cluster::elector=info";

/// What the supervisor asks of a replica's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopRequest {
    /// Keep running (the initial state).
    Run,
    /// SIGTERM: drain and exit.
    Term,
    /// SIGKILL.
    Kill,
}

/// A running replica, as seen from here. Its process is owned by a
/// supervising task, so a signal can only ever reach our own, still
/// unreaped child (never a recycled pid).
pub(super) struct Replica {
    /// Its node name, `dev-N`, also the prefix of its output lines.
    pub(super) name: String,
    /// Its API port on 127.0.0.1.
    pub(super) port: u16,
    /// Asks the supervising task to signal the process.
    pub(super) stop: watch::Sender<StopRequest>,
    /// How it ended, once it has.
    pub(super) exited: Option<String>,
    /// Whether its `/readyz` answered 200.
    pub(super) ready: bool,
    /// The tasks copying its stdout and stderr.
    pub(super) logs: Vec<JoinHandle<()>>,
}

/// (replica index, how its process ended).
pub(super) type ExitReport = (usize, std::io::Result<ExitStatus>);

/// Starts replica `index` on `port`; its exit is reported on `exits`.
pub(super) fn spawn(
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
