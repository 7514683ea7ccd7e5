//! A private PostgreSQL cluster started with `initdb` and `pg_ctl`: for the
//! tests that stop or restart the database, for the test harness when no
//! server answers, and for the zero-setup local mode.
//!
//! Postgres refuses to run as root, so when we are root every server command
//! runs as the `postgres` OS user (through `runuser`) and the data directory
//! is handed to that user. The cluster is stopped (and an ephemeral one
//! deleted) when the handle drops, including while a test panics.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a cluster could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `initdb`/`pg_ctl` anywhere we looked.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in \
         /usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: apt-get install postgresql; \
         macOS: brew install postgresql) or point DATABASE_URL at a running server"
    )]
    NotInstalled,
    /// We are root and there is no `postgres` user to run the server as.
    #[error("running as root and there is no 'postgres' OS user to run the server as; create one (useradd postgres) or run as another user")]
    NoPostgresUser,
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// What was run.
        command: String,
        /// Its output or the error.
        detail: String,
    },
    /// File system trouble around the data directory.
    #[error("{0}")]
    Io(String),
}

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Keep the data here (created if missing, reused if initialised).
    /// `None`: a fresh directory under the system temp dir, deleted on drop.
    pub data_dir: Option<PathBuf>,
    /// Listen on this port; `None` picks a free one.
    pub port: Option<u16>,
    /// Trade durability for speed (fsync off): for throwaway test clusters.
    pub fast_unsafe: bool,
    /// Extra server settings (`-c name=value`), e.g. `shared_preload_libraries`.
    pub settings: Vec<(String, String)>,
}

/// A running private cluster. Trust auth on 127.0.0.1, superuser `postgres`.
#[derive(Debug)]
pub struct PgCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    ephemeral: bool,
    run_as: Option<(u32, u32)>,
    server_options: String,
}

impl PgCluster {
    /// Initialises (if needed) and starts a cluster.
    pub fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let bin_dir = find_bin_dir().ok_or(ClusterError::NotInstalled)?;
        let run_as = if is_root() {
            Some(postgres_user().ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        let (data_dir, ephemeral) = match options.data_dir {
            Some(d) => (d, false),
            None => (
                std::env::temp_dir().join(format!("spine-pg-{}", uuid::Uuid::now_v7().simple())),
                true,
            ),
        };
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut server_options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c max_connections=200 -k {}",
            data_dir.display()
        );
        for (name, value) in &options.settings {
            server_options.push_str(&format!(" -c {name}={value}"));
        }
        if options.fast_unsafe {
            server_options
                .push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let cluster = PgCluster {
            bin_dir,
            data_dir,
            port,
            ephemeral,
            run_as,
            server_options,
        };
        cluster.init()?;
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    fn init(&self) -> Result<(), ClusterError> {
        if self.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| ClusterError::Io(format!("create {}: {e}", self.data_dir.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))
                .map_err(|e| ClusterError::Io(format!("chown {}: {e}", self.data_dir.display())))?;
        }
        let data = self.data_dir.display().to_string();
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .map(|_| ())
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let data = self.data_dir.display().to_string();
        let log = self.data_dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "start",
                "-D",
                &data,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &self.server_options,
            ],
        )
        .map(|_| ())
        .map_err(|e| self.with_log(e))
    }

    /// Stops the server (fast mode: sessions are disconnected, no crash recovery needed).
    pub fn stop(&self) -> Result<(), ClusterError> {
        let data = self.data_dir.display().to_string();
        self.run(
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "60"],
        )
        .map(|_| ())
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        self.pg_ctl_start()
    }

    /// `pg_ctl restart -m fast`: every session is cut, the server comes back.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.pg_ctl_start()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where its data lives.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn with_log(&self, e: ClusterError) -> ClusterError {
        let log = std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        match e {
            ClusterError::Command { command, detail } => ClusterError::Command {
                command,
                detail: format!(
                    "{detail}\nserver.log (last lines):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            },
            other => other,
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let exe = self.bin_dir.join(program);
        let mut cmd = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(std::env::temp_dir());
        // pg_ctl's server inherits our stdio unless redirected; `-l` sends the
        // server's own output to its log, and we capture the tool's.
        cmd.stdin(std::process::Stdio::null());
        let shown = format!("{} {}", exe.display(), args.join(" "));
        let out = cmd.output().map_err(|e| ClusterError::Command {
            command: shown.clone(),
            detail: e.to_string(),
        })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(ClusterError::Command {
                command: shown,
                detail: format!(
                    "{}\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir.display().to_string();
        // Immediate: nothing in a private cluster needs a clean checkpoint.
        let _ = self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
        if self.ephemeral {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Finds the directory holding `initdb` and `pg_ctl`: PATH first, then the
/// usual install locations (newest version first).
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            return Some(d);
        }
    }
    let mut candidates: Vec<PathBuf> = [
        "/usr/lib/postgresql",
        "/usr/local/pgsql",
        "/opt/homebrew/opt",
    ]
    .iter()
    .filter_map(|root| std::fs::read_dir(root).ok())
    .flat_map(|rd| rd.filter_map(Result::ok).map(|e| e.path().join("bin")))
    .chain(["/usr/local/pgsql/bin", "/usr/pgsql/bin"].map(PathBuf::from))
    .filter(|d| has_tools(d))
    .collect();
    // Versioned directories sort numerically: prefer the newest server.
    candidates.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` OS user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != "postgres" {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A free port below Linux's ephemeral range (32768-60999 by default).
/// Port 0 would hand out an ephemeral one, and a client reconnecting to a
/// stopped server can then be given that very port as its own source port
/// and connect to itself (a TCP simultaneous open), which keeps the server
/// from starting on it again.
fn free_port() -> Result<u16, ClusterError> {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let seed = uuid::Uuid::now_v7().as_u128() as u16;
    for i in 0..200u16 {
        let port = FIRST + (seed.wrapping_add(i.wrapping_mul(7919))) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(ClusterError::Io(
        "no free port in 20000-31999 on 127.0.0.1".to_string(),
    ))
}
