//! The `command` pipeline: each run executes a program.
//!
//! The program is started directly from `argv` — never through a shell, so
//! nothing in a schedule's params can become shell syntax. It gets:
//!
//! * the schedule's params as one JSON document on stdin (then end of file);
//! * `SPINE_RUN_ID`, `SPINE_SCHEDULE`, `SPINE_PIPELINE`, `SPINE_SCHEDULED_AT`
//!   (RFC 3339, UTC), `SPINE_ATTEMPT` and `SPINE_TRIGGER`;
//! * the configured `env`, on top of a few variables passed through from the
//!   scheduler ([`PASSED_THROUGH_ENV`]). Nothing else is inherited: the
//!   scheduler's environment holds its database URL and signing secrets,
//!   which a job has no business seeing.
//!
//! The exit status decides the outcome; the last [`TAIL_BYTES`] of stdout and
//! stderr go into the run's result.
//!
//! A run owns its processes. The program starts in a new process group, and
//! that whole group is killed with `SIGKILL` when the program exits (so
//! forgotten background children do not pile up), when the pipeline's
//! timeout passes, and when the engine drops the run's future.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{Pipeline, PipelineError, PipelineFuture, PipelineOutcome, RunContext};
use crate::schedule::{ValidationError, ValidationErrors};

/// How long a run may take when the configuration does not say: one hour,
/// generous for batch jobs while still catching a hung one the same day.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How much of the end of stdout and of stderr is kept for the result.
pub const TAIL_BYTES: usize = 4096;

/// Variables copied from the scheduler's environment into every command's,
/// so programs are found and behave as they would in a login shell.
pub const PASSED_THROUGH_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// Variables the pipeline sets for each run; configuring them is an error.
const RUN_ENV: &[&str] = &[
    "SPINE_RUN_ID",
    "SPINE_SCHEDULE",
    "SPINE_PIPELINE",
    "SPINE_SCHEDULED_AT",
    "SPINE_ATTEMPT",
    "SPINE_TRIGGER",
];

/// After the program exits and its group is killed, how long to wait for the
/// output pipes to close. Only a process that escaped the group (`setsid`)
/// can keep them open, and it must not hold the run hostage.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Fallback for noticing the exit if `SIGCHLD` cannot be watched.
const EXIT_POLL: Duration = Duration::from_millis(200);

/// What a `command` pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// The program and its arguments; `argv[0]` is looked up in `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// The directory to run in (absolute); the scheduler's own when unset.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// How long one run may take before its process group is killed.
    pub timeout: Duration,
}

impl CommandConfig {
    /// Runs `argv` with the default timeout, in the scheduler's directory, with no extra env.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        CommandConfig {
            argv: argv.into_iter().map(Into::into).collect(),
            working_dir: None,
            env: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Runs a program for each run; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct CommandPipeline {
    config: Arc<CommandConfig>,
}

impl CommandPipeline {
    /// Checks `config` (every problem, each naming its field as the pipelines
    /// file spells it) and builds the pipeline.
    pub fn new(config: CommandConfig) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        match config.argv.first() {
            None => errors.push(ValidationError::new(
                "argv",
                "must not be empty; give the program and its arguments, e.g. [\"/usr/local/bin/cleanup\", \"--days\", \"90\"]",
            )),
            Some(program) if program.is_empty() => errors.push(ValidationError::new(
                "argv",
                "the program (the first element) must not be empty",
            )),
            Some(_) => {}
        }
        for (i, arg) in config.argv.iter().enumerate() {
            if arg.contains('\0') {
                errors.push(ValidationError::new(
                    format!("argv[{i}]"),
                    "contains a NUL character",
                ));
            }
        }
        if let Some(dir) = &config.working_dir {
            if !dir.is_absolute() {
                errors.push(ValidationError::new(
                    "working_dir",
                    format!("{} must be an absolute path", dir.display()),
                ));
            }
        }
        for (key, value) in &config.env {
            let field = format!("env.{key}");
            if key.is_empty() || key.contains(['=', '\0']) {
                errors.push(ValidationError::new(
                    field,
                    "is not a valid variable name (empty, or contains = or NUL)",
                ));
            } else if RUN_ENV.contains(&key.as_str()) {
                errors.push(ValidationError::new(
                    field,
                    "is set by the scheduler for each run and cannot be configured",
                ));
            } else if value.contains('\0') {
                errors.push(ValidationError::new(
                    field,
                    "value contains a NUL character",
                ));
            }
        }
        if config.timeout.is_zero() {
            errors.push(ValidationError::new("timeout", "must be greater than 0"));
        }
        if errors.is_empty() {
            Ok(CommandPipeline {
                config: Arc::new(config),
            })
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

impl Pipeline for CommandPipeline {
    fn run(&self, ctx: RunContext) -> PipelineFuture {
        let config = Arc::clone(&self.config);
        Box::pin(async move { execute(&config, &ctx).await })
    }
}

/// The spawned program; kills its process group when dropped.
struct Group {
    child: Child,
    pgid: libc::pid_t,
    armed: bool,
}

impl Group {
    /// Asks every process in the group to stop (SIGTERM); the group stays
    /// armed for the SIGKILL that follows.
    fn terminate(&mut self) {
        if self.armed {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours;
            // the leader is unreaped, so the group id is still ours.
            unsafe {
                libc::kill(-self.pgid, libc::SIGTERM);
            }
        }
    }

    /// Kills every process in the group, once.
    ///
    /// Only call this while the leader is unreaped (running, or a zombie):
    /// then the group id cannot have been reused by an unrelated process.
    fn kill(&mut self) {
        if self.armed {
            self.armed = false;
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            // Its only failure here is ESRCH (the group is already empty), which is the goal.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    // Runs before `child` is dropped (fields drop after `drop`), so the
    // leader is still unreaped; tokio reaps the killed leader afterwards.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why waiting for the program ended early.
enum Stop {
    Timeout,
    /// Asked to stop, it was still running `KILL_GRACE` after SIGTERM.
    Cancelled,
    Wait(io::Error),
}

/// How long a command asked to stop (a graceful cancel) has between SIGTERM
/// and SIGKILL to its process group: Kubernetes' default termination grace
/// is 30 s; a scheduled job's cleanup is expected to be quicker.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

async fn execute(config: &CommandConfig, ctx: &RunContext) -> PipelineOutcome {
    let Some((program, args)) = config.argv.split_first() else {
        return Err(PipelineError::new("command has an empty argv"));
    };
    if let Some(dir) = &config.working_dir {
        check_dir(dir).await?;
    }
    let input = serde_json::to_vec(&Value::Object(ctx.params.clone()))
        .map_err(|e| PipelineError::new(format!("cannot encode the params: {e}")))?;

    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear();
    for key in PASSED_THROUGH_ENV {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command
        .envs(&config.env)
        .env("SPINE_RUN_ID", ctx.run_id.to_string())
        .env("SPINE_SCHEDULE", &ctx.schedule)
        .env("SPINE_PIPELINE", &ctx.pipeline)
        .env(
            "SPINE_SCHEDULED_AT",
            ctx.scheduled_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        )
        .env("SPINE_ATTEMPT", ctx.attempt.to_string())
        .env("SPINE_TRIGGER", ctx.trigger.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }

    // Subscribed before spawning, so the child's SIGCHLD cannot be missed.
    // Without it (no signal driver) the exit is noticed by polling.
    let mut sigchld = signal(SignalKind::child()).ok();
    let child = command.spawn().map_err(|e| spawn_error(program, &e))?;
    let Some(pid) = child.id().and_then(|id| libc::pid_t::try_from(id).ok()) else {
        return Err(PipelineError::new(format!(
            "{program:?} started but its process id is unknown"
        )));
    };
    let mut group = Group {
        child,
        pgid: pid,
        armed: true,
    };
    let stdin = group.child.stdin.take();
    let stdout = group.child.stdout.take();
    let stderr = group.child.stderr.take();

    let deadline = tokio::time::Instant::now() + config.timeout;
    let mut cancel = ctx.cancel.clone();
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut out = Tail::new(TAIL_BYTES);
    let mut err = Tail::new(TAIL_BYTES);
    let waited = {
        let io = async {
            tokio::join!(
                feed(stdin, &input),
                drain(stdout, &mut out),
                drain(stderr, &mut err)
            )
        };
        tokio::pin!(io);
        let exited = wait_exited(pid, sigchld.as_mut());
        tokio::pin!(exited);
        let mut io_done = false;
        let waited = loop {
            tokio::select! {
                r = &mut exited => break r.map_err(Stop::Wait),
                _ = &mut io, if !io_done => io_done = true,
                _ = tokio::time::sleep_until(deadline) => break Err(Stop::Timeout),
                _ = cancel.requested(), if kill_at.is_none() => {
                    group.terminate();
                    kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
                _ = tokio::time::sleep_until(kill_at.unwrap_or(deadline)), if kill_at.is_some() => {
                    break Err(Stop::Cancelled)
                }
            }
        };
        // The leader is now a zombie (or still running, on timeout); either
        // way it holds the group id, so killing the group is safe.
        group.kill();
        if !io_done {
            let _ = tokio::time::timeout(OUTPUT_GRACE, &mut io).await;
        }
        waited
    };
    // Reaps the leader; after SIGKILL this is immediate.
    let status = group.child.wait().await;

    if kill_at.is_some() {
        let how = match (&waited, &status) {
            (Err(Stop::Cancelled), _) => format!(
                "still running {} after SIGTERM: its process group was killed (SIGKILL)",
                humantime::format_duration(KILL_GRACE)
            ),
            (_, Ok(status)) if status.success() => "it then exited with status 0".to_string(),
            (_, Ok(status)) => format!("then: {}", describe_failure(*status)),
            (_, Err(e)) => format!("its exit status is unknown: {e}"),
        };
        return Err(PipelineError {
            message: format!("cancelled: SIGTERM sent to its process group; {how}"),
            result: Some(result(status.as_ref().ok().copied(), &out, &err)),
        });
    }
    match waited {
        Err(Stop::Cancelled) => Err(PipelineError::new("cancelled")),
        Err(Stop::Timeout) => Err(PipelineError {
            message: format!(
                "command timed out after {}; its process group was killed",
                humantime::format_duration(config.timeout)
            ),
            result: Some(result(None, &out, &err)),
        }),
        Err(Stop::Wait(e)) => Err(PipelineError {
            message: format!("cannot wait for the command: {e}; its process group was killed"),
            result: Some(result(None, &out, &err)),
        }),
        Ok(()) => match status {
            Err(e) => Err(PipelineError {
                message: format!("cannot read the command's exit status: {e}"),
                result: Some(result(None, &out, &err)),
            }),
            Ok(status) if status.success() => Ok(Some(result(Some(status), &out, &err))),
            Ok(status) => Err(PipelineError {
                message: describe_failure(status),
                result: Some(result(Some(status), &out, &err)),
            }),
        },
    }
}

async fn check_dir(dir: &Path) -> Result<(), PipelineError> {
    let owned = dir.to_path_buf();
    // Off the runtime's threads: a stat on a hung network mount can block.
    let meta = tokio::task::spawn_blocking(move || std::fs::metadata(owned))
        .await
        .map_err(|e| PipelineError::new(format!("cannot check the working directory: {e}")))?;
    match meta {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(PipelineError::new(format!(
            "working directory {} is not a directory",
            dir.display()
        ))),
        Err(e) => Err(PipelineError::new(format!(
            "working directory {}: {e}",
            dir.display()
        ))),
    }
}

fn spawn_error(program: &str, e: &io::Error) -> PipelineError {
    let message = match e.kind() {
        io::ErrorKind::NotFound if program.contains('/') => {
            format!("cannot run {program:?}: no such file")
        }
        io::ErrorKind::NotFound => format!("cannot run {program:?}: not found in PATH"),
        io::ErrorKind::PermissionDenied => {
            format!("cannot run {program:?}: permission denied (is it an executable file?)")
        }
        _ => format!("cannot run {program:?}: {e}"),
    };
    PipelineError::new(message)
}

fn describe_failure(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("command exited with status {code}"),
        (None, Some(sig)) => match signal_name(sig) {
            Some(name) => format!("command was killed by signal {sig} ({name})"),
            None => format!("command was killed by signal {sig}"),
        },
        (None, None) => format!("command failed: {status}"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

fn result(status: Option<ExitStatus>, out: &Tail, err: &Tail) -> Value {
    let mut result = json!({
        "exit_code": status.and_then(|s| s.code()),
        "stdout_tail": out.text(),
        "stderr_tail": err.text(),
    });
    if let Some(sig) = status.and_then(|s| s.signal()) {
        result["signal"] = json!(sig);
    }
    result
}

/// Writes the params and closes stdin. A program that does not read its
/// input may exit (closing the pipe) first; that is not an error.
async fn feed(stdin: Option<ChildStdin>, input: &[u8]) {
    if let Some(mut stdin) = stdin {
        if let Err(e) = stdin.write_all(input).await {
            tracing::debug!(error = %e, "command did not read all of its params");
        }
    }
}

async fn drain(pipe: Option<impl AsyncRead + Unpin>, tail: &mut Tail) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => tail.push(&buf[..n]),
            Err(e) => {
                tracing::debug!(error = %e, "reading command output failed");
                return;
            }
        }
    }
}

/// Completes when `pid` has exited, without reaping it: the zombie keeps the
/// process group id reserved until the group has been killed.
async fn wait_exited(pid: libc::pid_t, mut sigchld: Option<&mut Signal>) -> io::Result<()> {
    loop {
        if has_exited(pid)? {
            return Ok(());
        }
        // SIGCHLD is shared by all children, so every wake-up re-checks; the
        // timer covers a signal coalesced with another child's.
        let signals_ended = match sigchld.as_deref_mut() {
            Some(sigchld) => tokio::select! {
                received = sigchld.recv() => received.is_none(),
                _ = tokio::time::sleep(EXIT_POLL) => false,
            },
            None => {
                tokio::time::sleep(EXIT_POLL).await;
                false
            }
        };
        if signals_ended {
            sigchld = None;
        }
    }
}

fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "negative process id",
        ));
    };
    // SAFETY: an all-zero siginfo_t is a valid value; waitid only writes into
    // the struct we pass, which lives for the whole call.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; WNOWAIT leaves the child unreaped.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    // SAFETY: waitid succeeded, so `info` is initialised; with WNOHANG its
    // si_pid stays 0 while the child is still running.
    Ok(unsafe { info.si_pid() } != 0)
}

/// The last `cap` bytes of a stream, in bounded memory.
#[derive(Debug)]
struct Tail {
    cap: usize,
    buf: std::collections::VecDeque<u8>,
    truncated: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            cap,
            buf: std::collections::VecDeque::with_capacity(cap),
            truncated: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.cap {
            self.truncated = true;
            &bytes[bytes.len() - self.cap..]
        } else {
            bytes
        };
        self.buf.extend(bytes);
        if self.buf.len() > self.cap {
            self.truncated = true;
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
    }

    /// The tail as text. A cut through a multi-byte character would show as
    /// a replacement character, so its leftover continuation bytes are dropped.
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.buf.iter().copied().collect();
        let start = if self.truncated {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (*b & 0xC0) == 0x80)
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: ValidationErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(8);
        t.push(b"abc");
        t.push(b"def");
        assert_eq!(t.text(), "abcdef");
        t.push(b"ghij");
        assert_eq!(t.text(), "cdefghij");
        t.push(b"0123456789");
        assert_eq!(t.text(), "23456789");
        assert!(t.buf.len() <= 8);
    }

    #[test]
    fn tail_does_not_start_inside_a_character() {
        let mut t = Tail::new(4);
        // "é" is C3 A9; the cut leaves A9 at the front.
        t.push("aé€".as_bytes()); // 61 C3 A9 E2 82 AC
        assert_eq!(t.buf.len(), 4);
        assert_eq!(t.text(), "€");
        let mut whole = Tail::new(4);
        whole.push(&[0x80, b'x']);
        // Not truncated: the bytes are the program's own, shown as they are.
        assert_eq!(whole.text(), "\u{fffd}x");
    }

    #[test]
    fn valid_config_builds() {
        let mut c = CommandConfig::new(["/usr/local/bin/cleanup", "--days", "90"]);
        c.working_dir = Some("/srv".into());
        c.env.insert("LOG_LEVEL".into(), "info".into());
        assert!(CommandPipeline::new(c).is_ok());
        assert_eq!(CommandConfig::new(["x"]).timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn every_config_problem_is_named() {
        let e = CommandPipeline::new(CommandConfig::new(Vec::<String>::new())).expect_err("empty");
        assert_eq!(fields(e), ["argv"]);
        let mut c = CommandConfig::new(["", "a\0b"]);
        c.working_dir = Some("relative/dir".into());
        c.env.insert("A=B".into(), "x".into());
        c.env.insert("SPINE_RUN_ID".into(), "x".into());
        c.env.insert("OK".into(), "nul\0".into());
        c.timeout = Duration::ZERO;
        let e = CommandPipeline::new(c).expect_err("invalid");
        assert_eq!(
            fields(e),
            [
                "argv",
                "argv[1]",
                "working_dir",
                "env.A=B",
                "env.OK",
                "env.SPINE_RUN_ID",
                "timeout"
            ]
        );
    }

    #[test]
    fn failures_are_described() {
        assert_eq!(
            describe_failure(ExitStatus::from_raw(3 << 8)),
            "command exited with status 3"
        );
        assert_eq!(
            describe_failure(ExitStatus::from_raw(libc::SIGKILL)),
            "command was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            spawn_error("nope", &io::Error::from(io::ErrorKind::NotFound)).message,
            "cannot run \"nope\": not found in PATH"
        );
        assert_eq!(
            spawn_error("/x/nope", &io::Error::from(io::ErrorKind::NotFound)).message,
            "cannot run \"/x/nope\": no such file"
        );
    }
}
