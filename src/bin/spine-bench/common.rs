//! What every scenario shares: replicas as processes, bulk schedules, the
//! database's counters, /proc readings, percentiles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// The ledger lifecycle alone: batched inserts, then batched completions.
pub async fn ledger_baseline(client: &Client, rows: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let base: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(1000);
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let names: Vec<String> = (0..n).map(|i| format!("b{}", (done + i) % 1000)).collect();
        let ticks: Vec<DateTime<Utc>> = (0..n)
            .map(|i| base + chrono::Duration::seconds(((done + i) / 1000) as i64))
            .collect();
        // As a claim and its results do: the rows with their in-flight
        // listing (`store::inflight`), then the completions with its deletion.
        let claim_id = uuid::Uuid::now_v7();
        client
            .execute(
                "WITH runs AS (
                     INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, status, started_at)
                     SELECT u.id, u.name, 'p', 'schedule', u.t, 'running', now()
                     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(id, name, t)
                     RETURNING run_id, schedule_name, scheduled_at)
                 INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks)
                 SELECT $4, $4, array_agg(run_id), array_agg(schedule_name), array_agg(scheduled_at)
                 FROM runs",
                &[&ids, &names, &ticks, &claim_id],
            )
            .await?;
        client
            .execute(
                "WITH listed AS (DELETE FROM scheduler_inflight WHERE claim_id = $3)
                 UPDATE scheduler_runs r SET status = 'completed', completed_at = now()
                 FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, t)
                 WHERE r.run_id = u.id AND r.scheduled_at = u.t AND r.status = 'running'",
                &[&ids, &ticks, &claim_id],
            )
            .await?;
        done += n;
    }
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    // The baseline wrote ~150 MB of WAL. A checkpoint now lets the server
    // recycle those segments, as one that has been up for a while does;
    // otherwise every 16 MB segment in the measured window is created and
    // zero-filled on the spot, stalling every commit for tens of ms. Needs
    // superuser or pg_checkpoint; without it the run just stays pessimistic.
    if let Err(e) = client.batch_execute("CHECKPOINT").await {
        eprintln!("spine-bench: CHECKPOINT after the baseline failed ({e}); WAL segments will be created during the run");
    }
    Ok(rate)
}

/// Calls and mean time per statement since the reset, most total time
/// first, each statement's text cut to 70 characters.
pub async fn statement_calls(client: &Client) -> anyhow::Result<Vec<(String, i64, f64)>> {
    statement_calls_cut(client, 70).await
}

/// [`statement_calls`], each statement's text (whitespace collapsed) cut
/// to `chars` characters.
pub async fn statement_calls_cut(
    client: &Client,
    chars: i32,
) -> anyhow::Result<Vec<(String, i64, f64)>> {
    let rows = client
        .query(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), $1), calls, mean_exec_time
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat%'
             ORDER BY total_exec_time DESC",
            &[&chars],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Fire lags in ms (`started_at − scheduled_at`) of the scheduled runs
/// (trigger `schedule`: not retries or manual runs, whose start is not a
/// tick's) ticked in `[lo, hi]` that started, ascending.
pub async fn fire_lags(
    client: &Client,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> anyhow::Result<Vec<f64>> {
    Ok(client
        .query(
            "SELECT extract(epoch FROM started_at - scheduled_at)::float8 * 1000
             FROM scheduler_runs WHERE scheduled_at BETWEEN $1 AND $2 AND started_at IS NOT NULL
               AND trigger = 'schedule'
             ORDER BY 1",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub async fn db_counters(client: &Client) -> anyhow::Result<(i64, DateTime<Utc>)> {
    // Statistics are cached per transaction; clear the snapshot first.
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = client
        .query_one(
            "SELECT xact_commit + xact_rollback, now() FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

pub fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user+sys) and peak RSS in KiB of a process, from /proc.
pub fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / 100.0, hwm)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found next to {}; build it first (cargo build --release)",
            path.display(),
            me.display()
        );
    }
    Ok(path)
}

/// The pipelines every benchmark replica gets: one `log` pipeline that
/// records nothing but its ledger row.
const PIPELINES: &str = "pipelines:\n  - name: bench.record\n    kind: log\n    sleep: 0s\n";

/// A scratch directory holding the benchmark pipelines file; returns both.
pub fn bench_dir() -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("spine-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let pipelines = dir.join("pipelines.yaml");
    std::fs::write(&pipelines, PIPELINES)?;
    Ok((dir, pipelines))
}

/// `spine-scheduler serve` for one benchmark replica: quiet
/// (`RUST_LOG=warn`, or `SPINE_BENCH_LOG`), unauthenticated API on a free port unless `extra`
/// names `--listen`, stderr inherited. Callers may override any of it.
pub fn replica_command(
    url: &str,
    pipelines: &Path,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Command> {
    let binary = sibling_binary("spine-scheduler")?;
    let mut cmd = Command::new(&binary);
    cmd.arg("serve")
        .args(["--pipelines", &pipelines.display().to_string()])
        .args(["--node-name", name])
        .args(["--max-concurrent-runs", "20000"])
        .args(if extra.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        })
        .arg("--insecure-no-auth")
        .args(extra)
        .env("DATABASE_URL", url)
        // SPINE_BENCH_LOG turns on replica logs for profiling, e.g.
        // `SPINE_BENCH_LOG=spine_scheduler::engine::claimer=debug`.
        .env(
            "RUST_LOG",
            std::env::var("SPINE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Ok(cmd)
}

/// Starts `n` replicas of the real binary (separate processes) on `url`.
/// Returns them and their scratch directory.
pub fn spawn_replicas(
    url: &str,
    n: usize,
    extra: &[&str],
) -> anyhow::Result<(Vec<Child>, PathBuf)> {
    let (dir, pipelines) = bench_dir()?;
    let children = (0..n)
        .map(|i| {
            replica_command(url, &pipelines, &format!("bench-{i}"), extra)?
                .spawn()
                .context("starting spine-scheduler")
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((children, dir))
}

/// SIGTERM every replica (by PID), wait for them, remove the scratch directory.
pub fn stop_replicas(children: &mut [Child], dir: &Path) {
    for c in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Creates `n` schedules `bench000000…` of pipeline `bench.record` in one
/// statement, `cron(i)` giving each one's expression (far faster than the
/// API for 100,000 rows; the definitions are ordinary rows all the same).
pub async fn bulk_schedules(
    client: &Client,
    n: usize,
    cron: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let names: Vec<String> = (0..n).map(|i| format!("bench{i:06}")).collect();
    let crons: Vec<String> = (0..n).map(cron).collect();
    for chunk in names.chunks(20_000).zip(crons.chunks(20_000)) {
        client
            .execute(
                "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression)
                 SELECT u.name, 'bench.record', 'cron', u.cron
                 FROM unnest($1::text[], $2::text[]) AS u(name, cron)",
                &[&chunk.0, &chunk.1],
            )
            .await?;
    }
    Ok(())
}

/// The ledger's scheduled ticks in `[lo, hi]`, counted per (schedule,
/// tick): completed, doubled (more than one row), recorded `missed`, and
/// present (any row), in that column order.
pub async fn tick_audit(
    client: &Client,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> anyhow::Result<tokio_postgres::Row> {
    Ok(client
        .query_one(
            "WITH t AS (
                SELECT schedule_name, scheduled_at, count(*) AS n,
                       bool_or(status = 'completed') AS done,
                       bool_or(status = 'missed') AS missed
                FROM scheduler_runs WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule'
                GROUP BY 1, 2)
             SELECT count(*) FILTER (WHERE done), count(*) FILTER (WHERE n > 1),
                    count(*) FILTER (WHERE missed), count(*)
             FROM t",
            &[&lo, &hi],
        )
        .await?)
}

/// How many scheduled ticks in `[lo, hi]` have each status other than
/// `completed` and `missed` (what the audit reports besides them).
pub async fn other_statuses(
    client: &Client,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(client
        .query(
            "SELECT status, count(*) FROM scheduler_runs
             WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule'
               AND status NOT IN ('completed', 'missed')
             GROUP BY 1 ORDER BY 1",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
