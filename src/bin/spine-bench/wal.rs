//! `wal`: what a fired tick costs the database in write-ahead log — the
//! bytes every standby, backup and logical consumer must carry — and in
//! commits, with the ledger's indexes and its size per million runs.
//!
//! 3 replicas × 200 every-second schedules by default, 20 s measured after a
//! warm-up. WAL is `pg_current_wal_lsn()` before and after the window; fires
//! are the ledger rows whose tick falls inside it. Meant for `--private`: on
//! a shared server everyone else's WAL is counted too. With `--private` the
//! window's WAL is also broken down by record type (`pg_waldump --stats`),
//! which tells heap inserts, index inserts, HOT updates and full-page images
//! apart. The replicas migrate the database (the schema is theirs), and
//! `--ledger-sql` then changes it for an A/B of one lever.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use spine_scheduler::store;
use tokio_postgres::Client;

use crate::common::{bulk_schedules, spawn_replicas, stop_replicas};
use crate::steady::wait_for_replicas;
use crate::Args;

/// The ledger and its partitions, if it has any (`pg_partition_tree`
/// lists nothing for a plain table).
const TREE: &str = "SELECT 'scheduler_runs'::regclass AS relid
    UNION SELECT relid FROM pg_partition_tree('scheduler_runs')";

/// The server's WAL position and counters at one instant.
struct WalMark {
    /// `pg_current_wal_lsn()`, as text (for pg_waldump).
    lsn: String,
    /// Commits of the benchmark database (`pg_stat_database.xact_commit`).
    commits: i64,
    /// The database clock.
    at: DateTime<Utc>,
}

async fn mark(client: &Client) -> anyhow::Result<WalMark> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = client
        .query_one(
            "SELECT pg_current_wal_lsn()::text, xact_commit, now()
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    Ok(WalMark {
        lsn: row.get(0),
        commits: row.get(1),
        at: row.get(2),
    })
}

/// Runs the scenario on the (fresh) database at `url`; `data_dir` is the
/// private cluster's, for the per-record breakdown.
pub async fn run(args: &Args, url: &str, data_dir: Option<&Path>) -> anyhow::Result<String> {
    let (n_replicas, schedules, seconds) =
        (args.replicas(3), args.schedules(200), args.seconds(20));
    let client = store::connect(url).await?;
    // The replicas migrate the fresh database themselves, so the schema is
    // their binary's own: an older spine-scheduler next to this spine-bench
    // measures the ledger as it was.
    let (mut children, dir) = spawn_replicas(url, n_replicas, &[])?;
    let measured = async {
        wait_for_schema(&client).await?;
        wait_for_replicas(&client, n_replicas).await?;
        if let Some(sql) = &args.ledger_sql {
            client.batch_execute(sql).await.context("--ledger-sql")?;
        }
        bulk_schedules(&client, schedules, |_| "* * * * * *".to_string()).await?;
        measure(&client, seconds).await
    }
    .await;
    stop_replicas(&mut children, &dir);
    let (before, after) = measured?;

    let wal_bytes: f64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::float8",
            &[&before.lsn, &after.lsn],
        )
        .await?
        .get(0);
    let fires: i64 = client
        .query_one(
            "SELECT count(*) FROM scheduler_runs
             WHERE scheduled_at >= $1 AND scheduled_at < $2 AND trigger = 'schedule'",
            &[&before.at, &after.at],
        )
        .await?
        .get(0);
    let per = |x: f64| x / (fires.max(1) as f64);

    let mut out = format!(
        "scenario wal: {n_replicas} replicas x {schedules} schedules every second, {seconds} s measured\n"
    );
    out.push_str(&format!("{:<38}{}\n", "fires (ticks in the window)", fires));
    out.push_str(&format!(
        "{:<38}{:.0} ({:.1} MB in the window)\n",
        "WAL bytes per fire",
        per(wal_bytes),
        wal_bytes / 1e6
    ));
    out.push_str(&format!(
        "{:<38}{:.3} ({} commits)\n",
        "commits per fire",
        per((after.commits - before.commits) as f64),
        after.commits - before.commits
    ));
    out.push_str(&ledger_size(&client).await?);
    out.push_str(&hot_updates(&client).await?);
    if let Some(data_dir) = data_dir {
        match waldump_stats(data_dir, &before.lsn, &after.lsn, fires) {
            Ok(s) => out.push_str(&s),
            Err(e) => out.push_str(&format!("pg_waldump: {e:#}\n")),
        }
    }
    Ok(out.trim_end().to_string())
}

/// Waits (up to 60 s) until the replicas have created the schema.
async fn wait_for_schema(client: &Client) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready: bool = client
            .query_one(
                "SELECT to_regclass('scheduler_nodes') IS NOT NULL
                        AND to_regclass('scheduler_runs') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the replicas did not migrate the database within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Warm-up, then the window: the marks at both ends.
async fn measure(client: &Client, seconds: u64) -> anyhow::Result<(WalMark, WalMark)> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = mark(client).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = mark(client).await?;
    Ok((before, after))
}

/// The ledger's indexes with their sizes, and table+index bytes per million
/// rows. Partitioned or not: sizes are summed over the partition tree.
async fn ledger_size(client: &Client) -> anyhow::Result<String> {
    let total = client
        .query_one(
            &format!(
                "WITH tree AS ({TREE})
             SELECT (SELECT count(*) FROM scheduler_runs),
                    (SELECT sum(pg_total_relation_size(relid))::int8 FROM tree),
                    (SELECT sum(pg_relation_size(relid))::int8 FROM tree)"
            ),
            &[],
        )
        .await?;
    let (rows, total_bytes, heap_bytes): (i64, i64, i64) =
        (total.get(0), total.get(1), total.get(2));
    let indexes = client
        .query(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
                    (SELECT sum(pg_relation_size(t.relid))::int8
                     FROM (SELECT i.indexrelid AS relid
                           UNION SELECT relid FROM pg_partition_tree(i.indexrelid)) t)
             FROM pg_index i WHERE i.indrelid = 'scheduler_runs'::regclass
             ORDER BY 1",
            &[],
        )
        .await?;
    // Bytes per row are MB per million rows.
    let per_million = |b: i64| b as f64 / rows.max(1) as f64;
    let mut out = format!(
        "{:<38}{} rows: {:.0} MB table+index per million runs (heap {:.0} MB)\n",
        "ledger size",
        rows,
        per_million(total_bytes),
        per_million(heap_bytes)
    );
    out.push_str(&format!(
        "ledger indexes ({}), MB per million runs:\n",
        indexes.len()
    ));
    for row in &indexes {
        let (name, def, bytes): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let def = def.split_once(" USING ").map_or(def.as_str(), |(_, d)| d);
        out.push_str(&format!("  {:>8.1}  {name}: {def}\n", per_million(bytes)));
    }
    Ok(out)
}

/// How many of the ledger's updates were HOT (no index entry written), over
/// the whole run (the replicas have exited, so their counts are flushed).
async fn hot_updates(client: &Client) -> anyhow::Result<String> {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = client
        .query_one(
            &format!(
                "WITH tree AS ({TREE})
                 SELECT coalesce(sum(s.n_tup_upd), 0)::int8, coalesce(sum(s.n_tup_hot_upd), 0)::int8
                 FROM tree JOIN pg_stat_user_tables s ON s.relid = tree.relid"
            ),
            &[],
        )
        .await?;
    let (updates, hot): (i64, i64) = (row.get(0), row.get(1));
    Ok(format!(
        "{:<38}{hot} of {updates} ({:.1}%, whole run)\n",
        "ledger HOT updates",
        100.0 * hot as f64 / updates.max(1) as f64
    ))
}

/// `pg_waldump --stats=record` over the window: bytes per fire by record
/// type, largest first.
fn waldump_stats(data_dir: &Path, from: &str, to: &str, fires: i64) -> anyhow::Result<String> {
    let bin = spine_scheduler::pg_cluster::find_bin_dir().context("no PostgreSQL binaries")?;
    // PATH may hold links to initdb and pg_ctl only (Debian's /usr/local/bin):
    // pg_waldump is then next to where pg_ctl really lives.
    let waldump = [bin.clone(), std::fs::canonicalize(bin.join("pg_ctl"))?]
        .iter()
        .filter_map(|p| {
            let dir = if p.is_dir() { p.as_path() } else { p.parent()? };
            Some(dir.join("pg_waldump"))
        })
        .find(|p| p.is_file())
        .context("pg_waldump not found next to pg_ctl")?;
    let output = Command::new(waldump)
        .arg("--path")
        .arg(data_dir.join("pg_wal"))
        .args(["--start", from, "--end", to, "--stats=record"])
        .output()
        .context("running pg_waldump")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Lines: "Heap/INSERT   N (pct)   record bytes (pct)   FPI bytes (pct)   combined (pct)".
    let mut lines: Vec<(String, f64, f64, f64)> = text
        .lines()
        .filter_map(|l| {
            // The percentages, "(  0.01)", are dropped before splitting.
            let mut plain = String::with_capacity(l.len());
            let mut depth = 0;
            for c in l.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ if depth == 0 => plain.push(c),
                    _ => {}
                }
            }
            let f: Vec<&str> = plain.split_whitespace().collect();
            if f.len() < 5 || !f[0].contains('/') {
                return None;
            }
            let n: f64 = f[1].parse().ok()?;
            let rec: f64 = f[2].parse().ok()?;
            let fpi: f64 = f[3].parse().ok()?;
            Some((f[0].to_string(), n, rec, fpi))
        })
        .collect();
    anyhow::ensure!(
        !lines.is_empty(),
        "no statistics ({})",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    lines.sort_by(|a, b| (b.2 + b.3).total_cmp(&(a.2 + a.3)));
    let fires = fires.max(1) as f64;
    let total = |f: fn(&(String, f64, f64, f64)) -> f64| lines.iter().map(f).sum::<f64>() / fires;
    let mut out = format!(
        "WAL by record type, per fire (records, bytes, full-page image bytes); all: {:.2} records, {:.0} + {:.0} bytes\n",
        total(|l| l.1),
        total(|l| l.2),
        total(|l| l.3)
    );
    for (kind, n, rec, fpi) in lines.iter().take(14) {
        out.push_str(&format!(
            "  {kind:<32}{:>7.2}{:>9.0}{:>9.0}\n",
            n / fires,
            rec / fires,
            fpi / fires
        ));
    }
    Ok(out)
}
