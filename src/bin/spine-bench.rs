//! Benchmark program: N real replicas (separate processes) firing S
//! schedules against one PostgreSQL, audited through the ledger, with the
//! database's own ceiling for the same ledger work measured in the same run.
//!
//! ```sh
//! cargo build --release && target/release/spine-bench steady
//! target/release/spine-bench steady --replicas 3 --schedules 1000 --seconds 60
//! ```
//!
//! Figures are printed, never asserted: this machine is shared and noisy.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Parser;
use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::{self, schedules};
use tokio_postgres::Client;

/// Measure fire lag, throughput and database cost of real replicas.
#[derive(Parser)]
struct Args {
    /// Scenario: `steady` (every schedule fires every second).
    #[arg(default_value = "steady")]
    scenario: String,
    /// Replicas to start.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Schedules to create.
    #[arg(long, default_value_t = 1000)]
    schedules: usize,
    /// Seconds to measure (after a warm-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Server to use (a fresh database is created on it and dropped after).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Rows for the ledger-only baseline.
    #[arg(long, default_value_t = 100_000)]
    baseline_rows: usize,
    /// Start a private PostgreSQL (initdb/pg_ctl) with pg_stat_statements
    /// instead of using --database-url; adds per-statement figures.
    #[arg(long)]
    private: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario != "steady" {
        bail!("unknown scenario {:?}; available: steady", args.scenario);
    }
    let load_start = loadavg();
    // Kept alive for the whole run; stopped and deleted on drop.
    let cluster = if args.private {
        let c = PgCluster::start(ClusterOptions {
            settings: vec![(
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            )],
            ..Default::default()
        })?;
        Some(c)
    } else {
        None
    };
    let server_url = match &cluster {
        Some(c) => c.url("postgres"),
        None => args.database_url.clone(),
    };
    let db_name = format!("spine_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = store::connect(&server_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let url = store::with_database(&server_url, &db_name);
    let result = run(&args, &url).await;
    drop(admin);
    let admin = store::connect(&server_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await?;
    let report = result?;
    println!("{report}");
    println!("load average: start {load_start}, end {}", loadavg());
    Ok(())
}

async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    let statements = args.private
        && client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .is_ok();

    let baseline = ledger_baseline(&client, args.baseline_rows).await?;
    client.batch_execute("TRUNCATE scheduler_runs").await?;

    for i in 0..args.schedules {
        let s = Schedule::cron(&format!("bench{i:06}"), "bench.record", "* * * * * *")?;
        schedules::insert(&client, &s).await?;
    }
    let dir = std::env::temp_dir().join(format!("spine-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let pipelines = dir.join("pipelines.yaml");
    std::fs::write(
        &pipelines,
        "pipelines:\n  - name: bench.record\n    kind: log\n    sleep: 0s\n",
    )?;
    let binary = sibling_binary("spine-scheduler")?;
    let mut replicas: Vec<Child> = (0..args.replicas)
        .map(|i| {
            Command::new(&binary)
                .arg("serve")
                .args(["--pipelines", &pipelines.display().to_string()])
                .args(["--node-name", &format!("bench-{i}")])
                .args(["--max-concurrent-runs", "2000"])
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))
        })
        .collect::<anyhow::Result<_>>()?;

    // Warm up, then measure a whole number of seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    if statements {
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
    }
    let (xacts_before, from) = db_counters(&client).await?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (xacts_after, to) = db_counters(&client).await?;
    let elapsed = wall.elapsed().as_secs_f64();
    let per_statement = if statements {
        statement_calls(&client).await?
    } else {
        Vec::new()
    };
    let usage: Vec<(f64, u64)> = replicas.iter().map(|c| proc_usage(c.id())).collect();
    for c in &replicas {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in &mut replicas {
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Ticks strictly inside the window, minus the last two seconds (runs may still finish).
    let first = from.timestamp() + 1;
    let last = to.timestamp() - 2;
    let window_secs = (last - first + 1).max(0);
    let due = window_secs as usize * args.schedules;
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
    let fires_in_measure = (args.schedules as f64) * elapsed;
    let fires_per_sec = fired as f64 / window_secs.max(1) as f64;
    let cpu: f64 = usage.iter().map(|u| u.0).sum();
    let rss = usage.iter().map(|u| u.1).max().unwrap_or(0);

    let mut out = String::new();
    out.push_str(&format!(
        "scenario steady: {} replicas x {} schedules every second, {} s measured\n",
        args.replicas, args.schedules, args.seconds
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
        xacts as f64 / (elapsed * args.replicas as f64)
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
                *calls as f64 / (elapsed * args.replicas as f64),
                mean_ms,
                query
            ));
        }
    }
    Ok(out)
}

/// The ledger lifecycle alone: batched inserts, then batched completions.
async fn ledger_baseline(client: &Client, rows: usize) -> anyhow::Result<f64> {
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
        client
            .execute(
                "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, status, started_at)
                 SELECT u.id, u.name, 'p', 'schedule', u.t, 'running', now()
                 FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(id, name, t)",
                &[&ids, &names, &ticks],
            )
            .await?;
        client
            .execute(
                "UPDATE scheduler_runs SET status = 'completed', completed_at = now()
                 WHERE run_id = ANY($1) AND status = 'running'",
                &[&ids],
            )
            .await?;
        done += n;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// Calls and mean time per statement since the reset, busiest first.
async fn statement_calls(client: &Client) -> anyhow::Result<Vec<(String, i64, f64)>> {
    let rows = client
        .query(
            "SELECT regexp_replace(left(query, 70), '\\s+', ' ', 'g'), calls, mean_exec_time
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat%'
             ORDER BY calls DESC",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

async fn db_counters(client: &Client) -> anyhow::Result<(i64, DateTime<Utc>)> {
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

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user+sys) and peak RSS in KiB of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
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
