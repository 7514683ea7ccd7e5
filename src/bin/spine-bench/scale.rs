//! `scale`: one replica loads 100,000 schedules (how long, how much memory),
//! then fires the every-second ones among them for a minute.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use spine_scheduler::store;

use crate::common::{bench_dir, bulk_schedules, pct, proc_usage, replica_command};
use crate::Args;

/// Every-second schedules among the loaded ones.
const FREQUENT: usize = 1000;

/// Runs the scenario on the (fresh) database at `url` and returns the report.
pub async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let (schedules, seconds) = (args.schedules(100_000), args.seconds(60));
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    // The rest are daily at spread-out times: loaded and queued, rarely due.
    bulk_schedules(&client, schedules, |i| {
        if i < FREQUENT {
            "* * * * * *".to_string()
        } else {
            format!("{} {} * * *", (i * 7) % 60, (i * 13) % 24)
        }
    })
    .await?;
    let (dir, pipelines) = bench_dir()?;
    let started = Instant::now();
    // The initial load's log line marks its end.
    let mut child = replica_command(url, &pipelines, "bench-scale", &[])?
        .env("RUST_LOG", "warn,spine_scheduler::engine::sync=debug")
        .env("SPINE_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .context("starting spine-scheduler")?;
    let stderr = child.stderr.take().context("replica stderr")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::task::spawn_blocking(move || {
        let mut loaded = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if loaded.is_none() && line.contains("loaded schedules") {
                loaded = Some(started.elapsed());
                let _ = tx.send(loaded);
            }
            // Keep draining: a full pipe would stall the replica's logging.
        }
        let _ = tx.send(loaded);
    });
    let load_time = tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .context("the replica did not load its schedules within 120 s")?
        .flatten()
        .context("the replica exited before loading")?;
    let rss_loaded = proc_usage(child.id()).1;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let from: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let to: chrono::DateTime<chrono::Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let (cpu, rss_peak) = proc_usage(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let lo = from + chrono::Duration::seconds(1);
    let hi = to - chrono::Duration::seconds(2);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) - count(DISTINCT (schedule_name, scheduled_at))
             FROM scheduler_runs WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule'",
            &[&lo, &hi],
        )
        .await?;
    let fired: i64 = row.get(0);
    let doubled: i64 = row.get(1);
    let window = (hi.timestamp() - lo.timestamp()).max(0) + 1;
    let lags: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM started_at - scheduled_at)::float8 * 1000
             FROM scheduler_runs WHERE scheduled_at BETWEEN $1 AND $2 AND started_at IS NOT NULL ORDER BY 1",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(format!(
        "scenario scale: 1 replica, {schedules} schedules ({FREQUENT} every second), {seconds} s of firing\n\
         {:<38}{:.2} s (spawn to schedules loaded)\n\
         {:<38}{} MB after load, {} MB peak\n\
         {:<38}{fired} (expected about {})\n\
         {:<38}{doubled}\n\
         {:<38}p50 {:.1}  p99 {:.1}  max {:.1}\n\
         {:<38}{cpu:.1} s",
        "load time",
        load_time.as_secs_f64(),
        "replica RSS",
        rss_loaded / 1024,
        rss_peak / 1024,
        "fired in window",
        window as usize * FREQUENT,
        "doubled",
        "fire lag ms",
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        "replica CPU (user+sys)",
    ))
}
