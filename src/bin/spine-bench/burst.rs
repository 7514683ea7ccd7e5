//! `burst`: every schedule is due at the top of the same minute. Are all of
//! them started within a second of it, and is none doubled? With
//! `--jitter`, the same herd spread over the jitter: the lag is measured
//! from each tick's due instant, and "within 1 s" from it too.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store;

use crate::common::{
    bulk_schedules, pct, proc_usage, spawn_replicas, statement_calls, stop_replicas,
};
use crate::steady::statements_available;
use crate::Args;

/// Runs the scenario on the (fresh) database at `url` and returns the report.
pub async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let (n_replicas, schedules) = (args.replicas(3), args.schedules(20_000));
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    let statements = statements_available(args, &client).await;
    bulk_schedules(&client, schedules, |_| "* * * * *".to_string()).await?;
    let jitter = args.jitter.unwrap_or_default();
    if !jitter.is_zero() {
        let secs = i32::try_from(jitter.as_secs()).unwrap_or(i32::MAX);
        client
            .execute(
                "UPDATE scheduler_schedules SET jitter_seconds = $1",
                &[&secs],
            )
            .await?;
    }
    let (mut replicas, dir) = spawn_replicas(url, n_replicas, &[])?;

    // The first top of the minute at least 15 s away, so every replica has
    // loaded every schedule.
    let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let mut top = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        + chrono::Duration::minutes(1);
    if top - now < chrono::Duration::seconds(15) {
        top += chrono::Duration::minutes(1);
    }
    // Statement figures cover the burst alone: from 3 s before the minute.
    let before = (top - now - chrono::Duration::seconds(3))
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(before).await;
    if statements {
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(23) + jitter).await;
    let per_statement = if statements {
        statement_calls(&client).await?
    } else {
        Vec::new()
    };
    let usage: Vec<(f64, u64)> = replicas.iter().map(|c| proc_usage(c.id())).collect();
    stop_replicas(&mut replicas, &dir);

    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT schedule_name),
                    count(*) FILTER (WHERE status = 'completed'),
                    extract(epoch FROM max(claimed_at) - min(claimed_at))::float8 * 1000
             FROM scheduler_runs WHERE scheduled_at = $1 AND trigger = 'schedule'",
            &[&top],
        )
        .await?;
    let rows: i64 = row.get(0);
    let distinct: i64 = row.get(1);
    let completed: i64 = row.get(2);
    let claim_span: Option<f64> = row.get(3);
    // The lag from each tick's due instant, as the domain computes it (the
    // tick itself without a jitter).
    let mut lags: Vec<f64> = Vec::new();
    for r in client
        .query(
            "SELECT schedule_name, started_at FROM scheduler_runs
             WHERE scheduled_at = $1 AND started_at IS NOT NULL",
            &[&top],
        )
        .await?
    {
        let name: String = r.get(0);
        let started: DateTime<Utc> = r.get(1);
        let due = Schedule::cron(&name, "bench.record", "* * * * *")
            .and_then(|s| s.with_jitter(jitter))
            .map(|s| s.due_at(top))
            .unwrap_or(top);
        lags.push((started - due).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    let within = lags.iter().filter(|l| **l <= 1000.0).count();
    let by_node = client
        .query(
            "SELECT n.hostname, count(*) FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id)
             WHERE r.scheduled_at = $1 GROUP BY 1 ORDER BY 1",
            &[&top],
        )
        .await?
        .iter()
        .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
        .join(" ");
    let cpu: f64 = usage.iter().map(|u| u.0).sum();
    let rss = usage.iter().map(|u| u.1).max().unwrap_or(0);
    let mut out = format!(
        "scenario burst: {n_replicas} replicas x {schedules} schedules due at {top}, jitter {}\n\
         {:<38}{schedules}\n\
         {:<38}{rows} ({distinct} distinct)\n\
         {:<38}{}\n\
         {:<38}{}\n\
         {:<38}{within} of {schedules}\n\
         {:<38}{completed}\n\
         {:<38}p50 {:.1}  p99 {:.1}  max {:.1}\n\
         {:<38}{:.1} ms\n\
         {:<38}{by_node}\n\
         {:<38}{cpu:.1} s total, peak RSS {} MB",
        humantime::format_duration(jitter),
        "ticks due",
        "rows",
        "doubled",
        rows - distinct,
        "missing",
        schedules as i64 - distinct,
        "started within 1 s of falling due",
        "completed",
        "start lag ms (from the due instant)",
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        "first to last claim",
        claim_span.unwrap_or(f64::NAN),
        "wins by replica",
        "replica CPU (user+sys)",
        rss / 1024
    );
    if !per_statement.is_empty() {
        out.push_str("\nstatements from 3 s before the minute (calls, mean ms, total ms, query):");
        for (query, calls, mean_ms) in per_statement.iter().take(12) {
            out.push_str(&format!(
                "\n  {calls:>8}  {mean_ms:>8.3}  {:>9.1}  {query}",
                *calls as f64 * mean_ms
            ));
        }
    }
    Ok(out)
}
