//! The time-partitioned ledger (migration 0014, `store::partitions`): the
//! common queries scan only their partitions, the migration converts a
//! populated ledger keeping every row, retention drops whole partitions
//! and honours keep-last, and a tick no partition covers lands in the
//! DEFAULT partition.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use spine_scheduler::store::migrate::{migrate, MIGRATIONS};
use spine_scheduler::store::partitions::{self, partition_name, DEFAULT_PARTITION};
use spine_scheduler::store::{claims, runs};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient};

use crate::api_replica::{start_api_replica, start_api_replica_with, Http, PIPELINE, READER};
use crate::harness::{db_now, eventually, TestDb};
use crate::replica::temp_dir;

const DAY: Duration = Duration::from_secs(86_400);
const LEGACY: &str = "scheduler_runs_legacy";

/// The migration's boundary: the upper bound of the legacy partition.
async fn boundary(c: &Client) -> DateTime<Utc> {
    partitions::list(c)
        .await
        .expect("partitions")
        .into_iter()
        .find(|p| p.name == LEGACY)
        .and_then(|p| p.upper)
        .expect("the legacy partition has an upper bound")
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// Inserts `n` runs of `schedule` in state `status`, one a minute from
/// `from`; running ones are listed in `scheduler_inflight` as a claim lists
/// them.
async fn insert_runs(c: &Client, schedule: &str, from: DateTime<Utc>, n: i32, status: &str) {
    c.execute(
        "WITH runs AS ( \
             INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                         node_id, status, pending_since, completed_at) \
             SELECT gen_random_uuid(), $1::text, 'p', 'schedule', \
                    $2::timestamptz + make_interval(mins => g), gen_random_uuid(), $4::text, \
                    CASE WHEN $4::text = 'pending' THEN now() END, \
                    CASE WHEN $4::text IN ('pending', 'running') THEN NULL ELSE now() END \
             FROM generate_series(0, $3::int4 - 1) g \
             RETURNING run_id, schedule_name, scheduled_at, node_id, status) \
         INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks) \
         SELECT gen_random_uuid(), node_id, ARRAY[run_id], ARRAY[schedule_name], ARRAY[scheduled_at] \
         FROM runs WHERE status = 'running'",
        &[&schedule, &from, &n, &status],
    )
    .await
    .expect("insert runs");
}

/// The tables the statement read: with `ANALYZE`, the scan nodes that ran
/// at least once (a partition pruned at plan time is absent from the plan;
/// one pruned while executing shows as never executed).
async fn scanned(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> BTreeSet<String> {
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
    let row = c.query_one(&explain, params).await.expect("explain");
    let plan: Value = row.get(0);
    let mut out = BTreeSet::new();
    collect(&plan[0]["Plan"], &mut out);
    out
}

fn collect(node: &Value, out: &mut BTreeSet<String>) {
    if let Some(name) = node["Relation Name"].as_str() {
        if node["Actual Loops"].as_u64().unwrap_or(0) > 0 {
            out.insert(name.to_string());
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        collect(child, out);
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_common_queries_scan_only_their_partitions() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let b = boundary(&c).await;
    let (p0, p1, p2) = (
        partition_name(b),
        partition_name(b + days(1)),
        partition_name(b + days(2)),
    );
    for (i, day) in [b - days(1), b, b + days(1), b + days(2)]
        .into_iter()
        .enumerate()
    {
        for s in ["alpha", "beta"] {
            insert_runs(
                &c,
                s,
                day + chrono::Duration::hours(1),
                20 + i as i32,
                "completed",
            )
            .await;
        }
    }
    c.batch_execute("ANALYZE scheduler_runs")
        .await
        .expect("analyze");
    let list = runs::list_sql();
    let none_t: Option<DateTime<Utc>> = None;
    let none_id: Option<uuid::Uuid> = None;
    let none_s: Option<Vec<String>> = None;
    let none_name: Option<String> = None;
    let limit: i64 = 100;

    // A schedule's runs in a time window: the one partition of that window.
    let name = Some("alpha".to_string());
    let (since, until) = (
        Some(b + days(1)),
        Some(b + days(1) + chrono::Duration::hours(6)),
    );
    let got = scanned(
        &c,
        &list,
        &[
            &name, &none_s, &none_name, &since, &until, &none_t, &none_id, &limit,
        ],
    )
    .await;
    assert_eq!(got, set(&[&p1]), "a schedule's runs in a window");

    // Runs since T: the partitions from T on, and the DEFAULT one (ticks
    // past the last partition).
    let since = Some(b + days(2));
    let got = scanned(
        &c,
        &list,
        &[
            &none_name, &none_s, &none_name, &since, &none_t, &none_t, &none_id, &limit,
        ],
    )
    .await;
    assert_eq!(got, set(&[&p2, DEFAULT_PARTITION]), "runs since T");

    // The claim's tick lookup: each tick's own partition, pruned while
    // executing (the ticks are an array parameter).
    let tick = b + chrono::Duration::hours(1);
    let names = vec!["alpha".to_string(), "beta".to_string()];
    let ticks = vec![tick, tick + chrono::Duration::minutes(3)];
    let keys: Vec<i64> = vec![1, 2];
    let idle = "5s".to_string();
    let mut c = c;
    let tx = c.transaction().await.expect("begin");
    let got = scanned(&tx, claims::LOCK, &[&names, &ticks, &keys, &idle]).await;
    tx.rollback().await.expect("rollback");
    assert_eq!(got, set(&[&p0]), "the claim's tick lookup");

    // And a window in the past, before the migration: the legacy partition.
    let (since, until) = (Some(b - days(1)), Some(b - chrono::Duration::hours(1)));
    let got = scanned(
        &c,
        &list,
        &[
            &name, &none_s, &none_name, &since, &until, &none_t, &none_id, &limit,
        ],
    )
    .await;
    assert_eq!(got, set(&[LEGACY]), "a window before the migration");
}

/// Applies the migrations before 0014 and records them, as a database of
/// the previous release would be.
async fn migrate_before_partitioning(c: &Client) {
    c.batch_execute(
        "CREATE TABLE scheduler_migrations (version integer PRIMARY KEY, name text NOT NULL, \
         checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .expect("migrations table");
    for m in MIGRATIONS.iter().filter(|m| m.version < 14) {
        c.batch_execute(m.sql).await.expect("older migration");
        c.execute(
            "INSERT INTO scheduler_migrations (version, name, checksum) VALUES ($1, $2, md5($3))",
            &[&m.version, &m.name, &m.sql],
        )
        .await
        .expect("record");
    }
}

const FINGERPRINT: &str = "\
SELECT count(*), md5(string_agg(concat_ws('|', run_id, schedule_name, pipeline, trigger, scheduled_at,
                                          attempt, node_id, status, claimed_at, completed_at, error,
                                          result::text, params::text, backfill_id),
                                ',' ORDER BY run_id))
FROM scheduler_runs";

#[tokio::test]
async fn the_migration_converts_a_populated_ledger_keeping_every_row() {
    let db = TestDb::new().await;
    let mut c = db.client().await;
    migrate_before_partitioning(&c).await;
    // 40 days of history for three schedules, every status, a few with
    // results, params and errors; one running run.
    c.batch_execute(
        "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, attempt,
                                     status, completed_at, error, result, params)
         SELECT gen_random_uuid(), 'sched' || (g % 3), 'p',
                CASE WHEN g % 50 = 0 THEN 'manual' ELSE 'schedule' END,
                date_trunc('second', now()) - make_interval(mins => g * 5), 1,
                (ARRAY['completed', 'failed', 'skipped', 'missed'])[1 + g % 4],
                now() - make_interval(mins => g * 5 - 1),
                CASE WHEN g % 4 = 1 THEN 'boom ' || g END,
                CASE WHEN g % 7 = 0 THEN jsonb_build_object('n', g) END,
                CASE WHEN g % 50 = 0 THEN jsonb_build_object('tier', 'T' || g) END
         FROM generate_series(1, 11520) g;
         INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, node_id,
                                     status)
         VALUES (gen_random_uuid(), 'sched0', 'p', 'schedule', date_trunc('second', now()),
                 gen_random_uuid(), 'running');",
    )
    .await
    .expect("populate");
    let before = c.query_one(FINGERPRINT, &[]).await.expect("fingerprint");
    let (n_before, sum_before): (i64, String) = (before.get(0), before.get(1));
    assert_eq!(n_before, 11521);

    let report = migrate(&mut c).await.expect("migrate");
    assert_eq!(report.applied, [14, 15]);
    // 15: the running run is listed where the overlap check and the reaper
    // look for it.
    let listed: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_inflight f, unnest(f.run_ids) AS e(run_id) \
             JOIN scheduler_runs r USING (run_id) WHERE r.status = 'running'",
            &[],
        )
        .await
        .expect("listed")
        .get(0);
    assert_eq!(listed, 1);
    let after = c.query_one(FINGERPRINT, &[]).await.expect("fingerprint");
    assert_eq!(
        (after.get::<_, i64>(0), after.get::<_, String>(1)),
        (n_before, sum_before)
    );
    let kind: String = c
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE relname = 'scheduler_runs'",
            &[],
        )
        .await
        .expect("relkind")
        .get(0);
    assert_eq!(kind, "p", "scheduler_runs is a partitioned table");
    let in_legacy: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE tableoid = 'scheduler_runs_legacy'::regclass",
            &[],
        )
        .await
        .expect("legacy rows")
        .get(0);
    assert_eq!(
        in_legacy, n_before,
        "the old table is a partition, nothing was copied"
    );
    // The tick key still refuses a second claim of a converted tick.
    let dup = c
        .execute(
            "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, status)
             SELECT gen_random_uuid(), schedule_name, pipeline, 'schedule', scheduled_at, 'running'
             FROM scheduler_runs WHERE trigger = 'schedule' LIMIT 1
             ON CONFLICT (schedule_name, scheduled_at, attempt, (trigger = 'manual')) DO NOTHING",
            &[],
        )
        .await
        .expect("claim again");
    assert_eq!(dup, 0);

    // The API reads the converted history, page by page.
    let expected: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE schedule_name = 'sched1'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    let dir = temp_dir("ledger-partitions-api");
    // A retention longer than the history: the leader prunes nothing meanwhile.
    let node = start_api_replica_with(
        &db.url,
        &dir,
        "ledger-partitions-api",
        &[(PIPELINE, "0s")],
        &["--retention", "400days"],
    )
    .await;
    let http = Http::new();
    let mut seen = 0i64;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cur) => format!("/v1/schedules/sched1/runs?limit=1000&cursor={cur}"),
            None => "/v1/schedules/sched1/runs?limit=1000".to_string(),
        };
        let reply = http.get(&node.base, &path, Some(READER)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        seen += body["items"].as_array().expect("items").len() as i64;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, expected, "the API lists every converted run");
}

#[tokio::test]
async fn retention_drops_old_partitions_and_honours_keep_last() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let b = boundary(&c).await;
    let now = db_now(&c).await;
    // Partitions for three more days: created once, however often asked.
    let made = partitions::create_ahead(&mut c, DAY, now, b + days(6))
        .await
        .expect("create ahead");
    let later: Vec<String> = (3..6).map(|d| partition_name(b + days(d))).collect();
    assert_eq!(made.created, later);
    let again = partitions::create_ahead(&mut c, DAY, now, b + days(6))
        .await
        .expect("create ahead again");
    assert!(again.created.is_empty(), "{again:?}");

    let (p0, p1, p2, p3) = (
        partition_name(b),
        partition_name(b + days(1)),
        partition_name(b + days(2)),
        partition_name(b + days(3)),
    );
    // Day 0: five of alpha, two of beta. Day 1: five of alpha (its newest).
    // Day 2: three of beta (its newest). Day 3: one of each. The legacy
    // partition: one unfinished run.
    insert_runs(&c, "alpha", b, 5, "completed").await;
    insert_runs(&c, "beta", b, 2, "failed").await;
    insert_runs(&c, "alpha", b + days(1), 5, "completed").await;
    insert_runs(&c, "beta", b + days(2), 3, "completed").await;
    insert_runs(&c, "alpha", b + days(3), 1, "completed").await;
    insert_runs(&c, "beta", b + days(3), 1, "completed").await;
    insert_runs(&c, "gamma", b - days(2), 1, "running").await;

    // As the leader would see it 4 days and 1 hour after the boundary, with
    // one day of retention: every partition ending by day 3 is past it.
    let later_now = b + days(4) + chrono::Duration::hours(1);
    // Keep-last 4: day 0 holds none of alpha's newest 4 (day 1 has 5 and
    // day 3 one) nor of beta's (days 2 and 3 have 4): dropped. Day 1 holds
    // alpha's, day 2 beta's: kept, as is the legacy partition with its
    // running run.
    let report = partitions::drop_expired(&mut c, later_now, DAY, Some(4))
        .await
        .expect("drop expired");
    assert_eq!(report.dropped, std::slice::from_ref(&p0));
    assert_eq!(report.kept, [LEGACY.to_string(), p1.clone(), p2.clone()]);
    let names: BTreeSet<String> = partitions::list(&c)
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(!names.contains(&p0) && names.contains(&p1) && names.contains(&p3));
    let counts: Vec<(String, i64)> = c
        .query(
            "SELECT schedule_name, count(*) FROM scheduler_runs GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        counts,
        [("alpha".into(), 6), ("beta".into(), 4), ("gamma".into(), 1)]
    );

    // Without keep-last, days 1 and 2 go too; day 3 is within retention
    // and the unfinished run keeps the legacy partition.
    let report = partitions::drop_expired(&mut c, later_now, DAY, None)
        .await
        .expect("drop expired");
    assert_eq!(report.dropped, [p1, p2]);
    assert_eq!(report.kept, [LEGACY.to_string()]);
    let left: i64 = c
        .query_one("SELECT count(*) FROM scheduler_runs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 3, "day 3's two runs and the running one");
}

#[tokio::test]
async fn a_tick_no_partition_covers_lands_in_the_default_partition() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let b = boundary(&c).await;
    let now = db_now(&c).await;
    assert_eq!(partitions::default_rows(&c, 1000).await.expect("rows"), 0);
    let far = b + days(4) + chrono::Duration::hours(1);
    let year_2100: DateTime<Utc> = "2100-01-01T06:00:00Z".parse().expect("instant");
    for t in [far, year_2100] {
        let table: String = c
            .query_one(
                "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, status, pending_since) \
                 VALUES (gen_random_uuid(), 'future', 'p', 'schedule', $1, 'pending', now()) \
                 RETURNING tableoid::regclass::text",
                &[&t],
            )
            .await
            .expect("a far-future tick is written")
            .get(0);
        assert_eq!(table, DEFAULT_PARTITION, "{t}");
    }
    assert_eq!(partitions::default_rows(&c, 1000).await.expect("rows"), 2);
    // The leader creates around it: the range holding that row is left to
    // the DEFAULT partition, the others are created.
    let made = partitions::create_ahead(&mut c, DAY, now, b + days(6))
        .await
        .expect("create ahead");
    assert_eq!(
        made.created,
        [partition_name(b + days(3)), partition_name(b + days(5))]
    );
    assert_eq!(made.blocked, [partition_name(b + days(4))]);
    let still: String = c
        .query_one(
            "SELECT tableoid::regclass::text FROM scheduler_runs WHERE scheduled_at = $1",
            &[&far],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(still, DEFAULT_PARTITION);

    // A replica taking the lead counts them on its first pass, and says so
    // in its metrics.
    let dir = temp_dir("ledger-partitions-default");
    let node = start_api_replica(&db.url, &dir, "ledger-partitions-default").await;
    let http = Http::new();
    eventually(
        Duration::from_secs(30),
        "spine_ledger_default_partition_rows 2",
        || async {
            let r = http.get(&node.base, "/metrics", None).await;
            r.status == 200
                && r.text
                    .lines()
                    .any(|l| l == "spine_ledger_default_partition_rows 2")
        },
    )
    .await;
}

/// The session's `jit` setting.
async fn jit(c: &Client) -> String {
    let row = c.query_one("SHOW jit", &[]).await.expect("SHOW jit");
    row.get(0)
}

/// JIT compiles by estimated cost, and estimates over a month of
/// partitions made the leader's retry pass compile for a second every pass
/// (`store::connect::NO_JIT`): every session of the scheduler — pooled or
/// dedicated — turns it off, unless the URL's options say otherwise.
#[tokio::test]
async fn the_schedulers_sessions_run_without_jit() {
    let db = TestDb::migrated().await;
    let pool = spine_scheduler::store::pool(&db.url, 1).expect("pool");
    let pooled = pool.get().await.expect("pooled connection");
    assert_eq!(jit(&pooled).await, "off", "a pooled session");
    let dedicated = spine_scheduler::store::connect(&db.url)
        .await
        .expect("dedicated connection");
    assert_eq!(jit(&dedicated).await, "off", "a dedicated session");
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let own = spine_scheduler::store::connect(&format!("{}{sep}options=-c%20jit%3Don", db.url))
        .await
        .expect("connection with its own options");
    assert_eq!(jit(&own).await, "on", "the URL's own setting is kept");
}

/// Rows read by the scans of ledger partitions in an `EXPLAIN (ANALYZE,
/// FORMAT JSON)` plan (rows × loops).
fn ledger_rows_read(node: &Value) -> u64 {
    let own = match node["Relation Name"].as_str() {
        Some(name) if name.starts_with("scheduler_runs") => {
            node["Actual Rows"].as_u64().unwrap_or(0) * node["Actual Loops"].as_u64().unwrap_or(0)
        }
        _ => 0,
    };
    own + node["Plans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ledger_rows_read)
        .sum::<u64>()
}

/// The claim's check of which ticks have their row probes the tick key per
/// tick, whatever the partition's statistics say: a day's partition fills
/// faster than they follow, and PostgreSQL hashed all its first attempts
/// instead (38,000 rows read for 624 ticks a minute into `spine-bench
/// floor`, more through the day).
#[tokio::test]
async fn the_claims_tick_check_reads_its_ticks_not_the_partition() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let now = db_now(&c).await;
    // 20,000 first attempts of 500 schedules in the last hour, not analyzed.
    c.execute(
        "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                     status, completed_at) \
         SELECT gen_random_uuid(), 's' || (g % 500), 'p', 'schedule', \
                date_trunc('second', $1::timestamptz) - make_interval(secs => g / 500 + 1), \
                'completed', $1 \
         FROM generate_series(0, 19999) g",
        &[&now],
    )
    .await
    .expect("history");
    // This second's ticks of the same 500 schedules: none has its row yet.
    let tick = now + chrono::Duration::seconds(5);
    let names: Vec<String> = (0..500).map(|i| format!("s{i}")).collect();
    let ticks = vec![tick; 500];
    let keys: Vec<i64> = (0..500).collect();
    let idle = "5s".to_string();
    let mut c = c;
    let tx = c.transaction().await.expect("begin");
    let row = tx
        .query_one(
            &format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", claims::LOCK),
            &[&names, &ticks, &keys, &idle],
        )
        .await
        .expect("explain");
    tx.rollback().await.expect("rollback");
    let plan: Value = row.get(0);
    let read = ledger_rows_read(&plan[0]["Plan"]);
    assert!(
        read <= 500,
        "the tick check read {read} ledger rows for 500 ticks: {plan:#}"
    );
}
