//! The private PostgreSQL of `dev` (a [`PgCluster`](crate::pg_cluster::PgCluster) in `<data_dir>/pgdata`),
//! kept across runs: started, stopped cleanly, and a server left behind by
//! a killed `dev` named instead of fought with.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{say_err, DevError};
use crate::pg_cluster::{ClusterOptions, PgCluster};

/// As root the server runs as the `postgres` user (Postgres refuses root),
/// which must be able to walk down to the data folder. `/root` (mode 700) is
/// the usual trap; initdb's own error would only say "permission denied".
/// Checked before anything starts.
pub(super) fn check_reachable(dir: &Path) -> Result<(), DevError> {
    if !is_root() {
        return Ok(());
    }
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Starts (initialising on the first run) the private PostgreSQL in
/// `<data_dir>/pgdata`.
pub(super) async fn start(data_dir: &Path) -> Result<PgCluster, DevError> {
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
pub(super) async fn stop(cluster: PgCluster) {
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
