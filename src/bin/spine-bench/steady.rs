//! `steady`: every schedule fires every second; the audit, lag, database
//! cost and the ledger-only baseline. [`every_second`] is the measurement
//! the `throughput` scenario repeats at rising rates.

use anyhow::Context;
use std::time::{Duration, Instant};

use chrono::DateTime;
use spine_scheduler::store;
use tokio_postgres::Client;

use crate::common::{
    bulk_schedules, db_counters, ledger_baseline, pct, proc_usage, spawn_replicas, statement_calls,
    stop_replicas, tick_audit,
};
use crate::Args;

/// What one window of every-second firing showed.
pub struct Window {
    /// Ticks due in the audited seconds.
    pub due: usize,
    /// Of those, completed.
    pub fired: i64,
    /// Ticks with more than one row.
    pub doubled: i64,
    /// Ticks with no row at all.
    pub no_row: i64,
    /// Ticks recorded `missed`.
    pub missed_rows: i64,
    /// Fire lag of every started run, sorted (ms).
    pub lags: Vec<f64>,
    /// Audited seconds.
    pub audited_secs: i64,
    /// Wall-clock seconds measured.
    pub elapsed: f64,
    /// Committed + rolled back transactions in the database meanwhile.
    pub xacts: i64,
    /// Replica CPU seconds (user+sys), summed.
    pub cpu: f64,
    /// Largest replica peak RSS (KiB).
    pub rss_kib: u64,
    /// Per statement: query, calls, mean ms (with pg_stat_statements).
    pub statements: Vec<(String, i64, f64)>,
    /// The slowest seconds: tick, replica, runs, p50 and max lag (ms).
    pub slowest: Vec<(String, String, i64, f64, f64)>,
    /// Rows in the audited seconds neither completed nor missed, by status
    /// (a run still running at the audit, abandoned, failed, skipped).
    pub unfinished: Vec<(String, i64)>,
}

impl Window {
    /// Completed runs per audited second.
    pub fn fires_per_sec(&self) -> f64 {
        self.fired as f64 / self.audited_secs.max(1) as f64
    }
    /// Due ticks without a completed run: no row, or recorded missed.
    pub fn missed(&self) -> i64 {
        self.no_row + self.missed_rows
    }

    /// `unfinished` as `status n, ...` (empty when there are none).
    pub fn unfinished_summary(&self) -> String {
        self.unfinished
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Starts `replicas` replicas on a database holding `schedules` schedules
/// that fire every second, measures `seconds` after a 5 s warm-up, stops
/// them and audits the ledger. The database must be migrated and hold no
/// schedules or runs.
pub async fn every_second(
    client: &Client,
    url: &str,
    replicas: usize,
    schedules: usize,
    seconds: u64,
    statements: bool,
) -> anyhow::Result<Window> {
    bulk_schedules(client, schedules, |_| "* * * * * *".to_string()).await?;
    let (mut children, dir) = spawn_replicas(url, replicas, &[])?;

    // Warm up, then measure a whole number of seconds. The warm-up counts
    // from when every replica has registered: until then the first ones
    // take every tick, and at high rates their results fall seconds behind
    // — the new owners of those schedules then see the previous runs still
    // `running` and record ticks `skipped` (a start-up transient, not the
    // rate the replicas sustain).
    wait_for_replicas(client, replicas).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    if statements {
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
    }
    let (xacts_before, from) = db_counters(client).await?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (xacts_after, to) = db_counters(client).await?;
    let elapsed = wall.elapsed().as_secs_f64();
    let per_statement = if statements {
        statement_calls(client).await?
    } else {
        Vec::new()
    };
    let usage: Vec<(f64, u64)> = children.iter().map(|c| proc_usage(c.id())).collect();
    stop_replicas(&mut children, &dir);

    // Ticks strictly inside the window, minus the last two seconds (runs may still finish).
    let first = from.timestamp() + 1;
    let last = to.timestamp() - 2;
    let audited_secs = (last - first + 1).max(0);
    let lo = DateTime::from_timestamp(first, 0).context("window start")?;
    let hi = DateTime::from_timestamp(last, 0).context("window end")?;
    let audit = tick_audit(client, lo, hi).await?;
    let due = audited_secs as usize * schedules;
    let present: i64 = audit.get(3);
    let lags: Vec<f64> = crate::common::fire_lags(client, lo, hi).await?;
    let slowest = client
        .query(
            "SELECT to_char(r.scheduled_at, 'HH24:MI:SS'), coalesce(n.hostname, '?'), count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.started_at - r.scheduled_at))::float8 * 1000,
                    max(extract(epoch FROM r.started_at - r.scheduled_at))::float8 * 1000 AS worst
             FROM scheduler_runs r LEFT JOIN scheduler_nodes n USING (node_id)
             WHERE r.scheduled_at BETWEEN $1 AND $2 AND r.started_at IS NOT NULL
             GROUP BY 1, 2 ORDER BY worst DESC LIMIT 5",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let unfinished = crate::common::other_statuses(client, lo, hi).await?;
    Ok(Window {
        slowest,
        unfinished,
        due,
        fired: audit.get(0),
        doubled: audit.get(1),
        no_row: due as i64 - present,
        missed_rows: audit.get(2),
        lags,
        audited_secs,
        elapsed,
        xacts: xacts_after - xacts_before,
        cpu: usage.iter().map(|u| u.0).sum(),
        rss_kib: usage.iter().map(|u| u.1).max().unwrap_or(0),
        statements: per_statement,
    })
}

/// Waits (up to 60 s) until `n` replicas are registered as active.
pub async fn wait_for_replicas(client: &Client, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active: i64 = client
            .query_one(
                "SELECT count(*) FROM scheduler_nodes WHERE state = 'active'",
                &[],
            )
            .await?
            .get(0);
        if active >= n as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {active} of {n} replicas registered within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `pg_stat_statements` can be used (only on the private cluster,
/// which preloads it).
pub async fn statements_available(args: &Args, client: &Client) -> bool {
    args.private
        && client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .is_ok()
}

/// Runs the scenario on the (fresh) database at `url` and returns the report.
pub async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let (n_replicas, schedules, seconds) =
        (args.replicas(3), args.schedules(1000), args.seconds(60));
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    let statements = statements_available(args, &client).await;

    let baseline = ledger_baseline(&client, args.baseline_rows).await?;
    client.batch_execute("TRUNCATE scheduler_runs").await?;
    let w = every_second(&client, url, n_replicas, schedules, seconds, statements).await?;

    let fires_in_measure = (schedules as f64) * w.elapsed;
    let mut out = String::new();
    out.push_str(&format!(
        "scenario steady: {} replicas x {} schedules every second, {} s measured\n",
        n_replicas, schedules, seconds
    ));
    out.push_str(&format!("{:<38}{}\n", "ticks due (window)", w.due));
    out.push_str(&format!("{:<38}{}\n", "fired (completed)", w.fired));
    if !w.unfinished.is_empty() {
        out.push_str(&format!(
            "{:<38}{}\n",
            "other rows, by status",
            w.unfinished_summary()
        ));
    }
    out.push_str(&format!("{:<38}{}\n", "doubled", w.doubled));
    out.push_str(&format!(
        "{:<38}{} (no row {}, recorded missed {})\n",
        "missed",
        w.missed(),
        w.no_row,
        w.missed_rows
    ));
    out.push_str(&format!(
        "{:<38}p50 {:.1}  p99 {:.1}  max {:.1}\n",
        "fire lag ms (started - tick, db clock)",
        pct(&w.lags, 0.50),
        pct(&w.lags, 0.99),
        w.lags.last().copied().unwrap_or(f64::NAN)
    ));
    for (tick, node, runs, p50, max) in &w.slowest {
        out.push_str(&format!(
            "{:<38}{tick} {node}: {runs} runs, lag p50 {p50:.1} max {max:.1}\n",
            "  slowest second"
        ));
    }
    out.push_str(&format!(
        "{:<38}{:.0}\n",
        "fires per second",
        w.fires_per_sec()
    ));
    out.push_str(&format!(
        "{:<38}{:.3} (all sessions, {} commits)\n",
        "db transactions per fire",
        w.xacts as f64 / fires_in_measure.max(1.0),
        w.xacts
    ));
    out.push_str(&format!(
        "{:<38}{:.2}\n",
        "db transactions per replica-second",
        w.xacts as f64 / (w.elapsed * n_replicas as f64)
    ));
    out.push_str(&format!(
        "{:<38}{:.1} s total, peak RSS {} MB\n",
        "replica CPU (user+sys)",
        w.cpu,
        w.rss_kib / 1024
    ));
    out.push_str(&format!(
        "{:<38}{:.0} rows/s (insert+complete, batches of 1000, one client)\n",
        "ledger baseline", baseline
    ));
    out.push_str(&format!(
        "{:<38}{:.1}%",
        "fires/s as share of baseline",
        100.0 * w.fires_per_sec() / baseline.max(1.0)
    ));
    if !w.statements.is_empty() {
        let total: i64 = w.statements.iter().map(|s| s.1).sum();
        out.push_str(&format!(
            "\n{:<38}{:.3}\nstatements (calls per replica-second, mean ms, query):",
            "db statements per fire",
            total as f64 / fires_in_measure.max(1.0)
        ));
        for (query, calls, mean_ms) in w.statements.iter().take(12) {
            out.push_str(&format!(
                "\n  {:>8.2}  {:>7.3}  {}",
                *calls as f64 / (w.elapsed * n_replicas as f64),
                mean_ms,
                query
            ));
        }
    }
    Ok(out)
}
