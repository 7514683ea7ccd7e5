//! `steady`: every schedule fires every second; the audit, lag, database
//! cost and the ledger-only baseline.

use anyhow::Context;
use std::time::{Duration, Instant};

use chrono::DateTime;
use spine_scheduler::store;

use crate::common::{
    bulk_schedules, db_counters, ledger_baseline, pct, proc_usage, spawn_replicas, statement_calls,
    stop_replicas,
};
use crate::Args;

/// Runs the scenario on the (fresh) database at `url` and returns the report.
pub async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let (n_replicas, schedules, seconds) =
        (args.replicas(3), args.schedules(1000), args.seconds(60));
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    let statements = args.private
        && client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .is_ok();

    let baseline = ledger_baseline(&client, args.baseline_rows).await?;
    client.batch_execute("TRUNCATE scheduler_runs").await?;

    bulk_schedules(&client, schedules, |_| "* * * * * *".to_string()).await?;
    let (mut replicas, dir) = spawn_replicas(url, n_replicas, &[])?;

    // Warm up, then measure a whole number of seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    if statements {
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
    }
    let (xacts_before, from) = db_counters(&client).await?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (xacts_after, to) = db_counters(&client).await?;
    let elapsed = wall.elapsed().as_secs_f64();
    let per_statement = if statements {
        statement_calls(&client).await?
    } else {
        Vec::new()
    };
    let usage: Vec<(f64, u64)> = replicas.iter().map(|c| proc_usage(c.id())).collect();
    stop_replicas(&mut replicas, &dir);

    // Ticks strictly inside the window, minus the last two seconds (runs may still finish).
    let first = from.timestamp() + 1;
    let last = to.timestamp() - 2;
    let window_secs = (last - first + 1).max(0);
    let due = window_secs as usize * schedules;
    let lo = DateTime::from_timestamp(first, 0).context("window start")?;
    let hi = DateTime::from_timestamp(last, 0).context("window end")?;
    let audit = client
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
        .await?;
    let fired: i64 = audit.get(0);
    let doubled: i64 = audit.get(1);
    let missed_rows: i64 = audit.get(2);
    let present: i64 = audit.get(3);
    let lags: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM started_at - scheduled_at)::float8 * 1000
             FROM scheduler_runs WHERE scheduled_at BETWEEN $1 AND $2 AND started_at IS NOT NULL
             ORDER BY 1",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let xacts = xacts_after - xacts_before;
    let fires_in_measure = (schedules as f64) * elapsed;
    let fires_per_sec = fired as f64 / window_secs.max(1) as f64;
    let cpu: f64 = usage.iter().map(|u| u.0).sum();
    let rss = usage.iter().map(|u| u.1).max().unwrap_or(0);

    let mut out = String::new();
    out.push_str(&format!(
        "scenario steady: {} replicas x {} schedules every second, {} s measured\n",
        n_replicas, schedules, seconds
    ));
    out.push_str(&format!("{:<38}{}\n", "ticks due (window)", due));
    out.push_str(&format!("{:<38}{}\n", "fired (completed)", fired));
    out.push_str(&format!("{:<38}{}\n", "doubled", doubled));
    out.push_str(&format!(
        "{:<38}{} (no row {}, recorded missed {})\n",
        "missed",
        (due as i64 - present) + missed_rows,
        due as i64 - present,
        missed_rows
    ));
    out.push_str(&format!(
        "{:<38}p50 {:.1}  p99 {:.1}  max {:.1}\n",
        "fire lag ms (started - tick, db clock)",
        pct(&lags, 0.50),
        pct(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    ));
    out.push_str(&format!("{:<38}{:.0}\n", "fires per second", fires_per_sec));
    out.push_str(&format!(
        "{:<38}{:.3} (all sessions, {} commits)\n",
        "db transactions per fire",
        xacts as f64 / fires_in_measure.max(1.0),
        xacts
    ));
    out.push_str(&format!(
        "{:<38}{:.2}\n",
        "db transactions per replica-second",
        xacts as f64 / (elapsed * n_replicas as f64)
    ));
    out.push_str(&format!(
        "{:<38}{:.1} s total, peak RSS {} MB\n",
        "replica CPU (user+sys)",
        cpu,
        rss / 1024
    ));
    out.push_str(&format!(
        "{:<38}{:.0} rows/s (insert+complete, batches of 1000, one client)\n",
        "ledger baseline", baseline
    ));
    out.push_str(&format!(
        "{:<38}{:.1}%",
        "fires/s as share of baseline",
        100.0 * fires_per_sec / baseline.max(1.0)
    ));
    if !per_statement.is_empty() {
        let total: i64 = per_statement.iter().map(|s| s.1).sum();
        out.push_str(&format!(
            "\n{:<38}{:.3}\nstatements (calls per replica-second, mean ms, query):",
            "db statements per fire",
            total as f64 / fires_in_measure.max(1.0)
        ));
        for (query, calls, mean_ms) in per_statement.iter().take(8) {
            out.push_str(&format!(
                "\n  {:>8.2}  {:>7.3}  {}",
                *calls as f64 / (elapsed * n_replicas as f64),
                mean_ms,
                query
            ));
        }
    }
    Ok(out)
}
