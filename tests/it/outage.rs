//! Database outages, end to end: real binaries against a private cluster
//! that the tests stop, start and restart.
//!
//! - every due tick of an enabled schedule has exactly one ledger row after
//!   a 20 s outage (one replica and three), with the statuses the README
//!   documents for misfire grace and coalescing ("Overlap and backlogs");
//! - a replica stays quiet while the database is down (a few log lines, not
//!   one per retry), says so on /readyz and /metrics, and is ready again soon
//!   after the server is back;
//! - SIGTERM during an outage returns within the shutdown grace, and the
//!   results it could not write are logged and later reaped `abandoned`;
//! - replicas ride out a `pg_ctl restart` and an immediate (crash) stop.
//!
//! Timing figures are asserted, so each test holds [`SERIAL`] for its
//! whole length. The figures are printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use spine_scheduler::pg_cluster::{find_bin_dir, ClusterOptions, PgCluster};
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::schedules;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::harness::{connect, db_now};
use crate::replica::{audit, eventually, log_pipelines, seconds, temp_dir, ticks, Replica};
use crate::test_cluster::{FAST, SERIAL};

/// The gauge a replica exports while its database is unreachable.
const UNREACHABLE_SINCE: &str = "spine_database_unreachable_since_seconds";

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// A private cluster of this test's own (it will be stopped and started).
/// `durable`: fsync and synchronous commit on, for tests that crash the
/// server (an immediate stop must not lose acknowledged claims).
async fn private_cluster(durable: bool) -> Arc<PgCluster> {
    let cluster = tokio::task::spawn_blocking(move || {
        PgCluster::start(ClusterOptions {
            fast_unsafe: !durable,
            ..Default::default()
        })
    })
    .await
    .expect("join")
    .expect("private cluster");
    let mut c = connect(&cluster.url("postgres")).await;
    spine_scheduler::store::migrate::migrate(&mut c)
        .await
        .expect("migrate");
    Arc::new(cluster)
}

/// `pg_ctl stop -m fast`; returns how long it took.
async fn stop_server(cluster: &Arc<PgCluster>) -> Duration {
    let cluster = Arc::clone(cluster);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("join")
        .expect("pg_ctl stop -m fast");
    started.elapsed()
}

/// `pg_ctl start` on the same port; returns how long it took.
async fn start_server(cluster: &Arc<PgCluster>) -> Duration {
    let cluster = Arc::clone(cluster);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || cluster.start_again())
        .await
        .expect("join")
        .expect("pg_ctl start");
    started.elapsed()
}

/// `pg_ctl restart -m fast`.
async fn restart_server(cluster: &Arc<PgCluster>) -> Duration {
    let cluster = Arc::clone(cluster);
    let started = Instant::now();
    tokio::task::spawn_blocking(move || cluster.restart())
        .await
        .expect("join")
        .expect("pg_ctl restart -m fast");
    started.elapsed()
}

/// `pg_ctl stop -m immediate`: the postmaster SIGQUITs every backend and
/// exits without a checkpoint, as a crash would; the next start runs crash
/// recovery. Run as the `postgres` OS user when we are root, as `PgCluster`
/// does.
async fn crash_server(cluster: &Arc<PgCluster>) {
    let bin = find_bin_dir().expect("pg_ctl").join("pg_ctl");
    let data = cluster.data_dir().display().to_string();
    tokio::task::spawn_blocking(move || {
        let root = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self").expect("stat /proc/self"),
        ) == 0;
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd
            .args(["stop", "-D", &data, "-m", "immediate", "-w", "-t", "60"])
            .current_dir(std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
    .expect("join");
}

/// Sleeps until the local clock reads `at` (the server runs on this host,
/// so its clock is ours).
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

fn start_replicas(url: &str, pipelines: &Path, n: usize, extra: &[&str]) -> Vec<Replica> {
    (1..=n)
        .map(|i| Replica::start(url, pipelines, &format!("replica-{i}"), extra))
        .collect()
}

fn assert_all_running(replicas: &mut [Replica], when: &str) {
    for r in replicas.iter_mut() {
        assert!(
            r.is_running(),
            "{} exited {when}; log:\n{}",
            r.name,
            r.log_tail()
        );
    }
}

/// SIGTERM each; returns how long each took to exit.
fn stop_all(replicas: Vec<Replica>) -> Vec<(String, Duration)> {
    replicas
        .into_iter()
        .map(|r| {
            let name = r.name.clone();
            let started = Instant::now();
            assert!(
                r.terminate(Duration::from_secs(30)),
                "{name} exited uncleanly"
            );
            (name, started.elapsed())
        })
        .collect()
}

/// The active leader whose leadership began at or after `since` (database clock).
async fn leader_since(c: &Client, since: DateTime<Utc>) -> Option<String> {
    c.query_opt(
        "SELECT hostname FROM scheduler_nodes \
         WHERE leader_since >= $1 AND state = 'active' LIMIT 1",
        &[&since],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

async fn wait_for_leader_since(
    c: &Client,
    since: DateTime<Utc>,
    limit: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(l) = leader_since(c, since).await {
            return (l, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected since {since} within {limit:?}");
}

/// Waits until a tick at or after `after` was completed; how long that took.
async fn wait_for_completed_after(c: &Client, after: DateTime<Utc>, limit: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        limit,
        &format!("a tick at or after {after} completed"),
        || async {
            c.query_one(
                "SELECT count(*) FROM scheduler_runs \
                 WHERE trigger = 'schedule' AND status = 'completed' AND scheduled_at >= $1",
                &[&after],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
        },
    )
    .await;
    started.elapsed()
}

/// One line of a replica's text log: its timestamp and level.
fn stamp_and_level(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let mut words = line.split_whitespace();
    let at = DateTime::parse_from_rfc3339(words.next()?).ok()?;
    let level = words.next()?;
    matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
        .then(|| (at.with_timezone(&Utc), level))
}

/// The lines of `log` at INFO, WARN or ERROR stamped within `[from, to]`.
fn loud_lines_between(log: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            stamp_and_level(l).is_some_and(|(at, level)| {
                at >= from && at <= to && matches!(level, "INFO" | "WARN" | "ERROR")
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. a 20 s outage: every tick accounted for
// ---------------------------------------------------------------------------

/// The four schedules of the outage tests: (name, grace, coalesce).
const OUTAGE_SCHEDULES: [(&str, u64, bool); 4] = [
    ("g5_coalesce", 5, true),
    ("g5_each", 5, false),
    ("g60_coalesce", 60, true),
    ("g60_each", 60, false),
];

async fn an_outage_of_20_s_accounts_for_every_tick(n: usize) {
    let _serial = SERIAL.lock().await;
    let cluster = private_cluster(false).await;
    let url = cluster.url("postgres");
    let c = connect(&url).await;
    for (name, grace, coalesce) in OUTAGE_SCHEDULES {
        let s = Schedule::cron(name, "test.record", "*/2 * * * * *")
            .expect("valid")
            .with_misfire_grace(Duration::from_secs(grace))
            .expect("valid grace")
            .with_coalesce(coalesce);
        schedules::insert(&c, &s).await.expect("insert");
    }
    let dir = temp_dir(&format!("outage-20s-{n}"));
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    let mut replicas = start_replicas(&url, &pipelines, n, &FAST);
    let began = db_now(&c).await;
    wait_for_leader_since(&c, began - secs(5), Duration::from_secs(15)).await;
    wait_for_completed_after(&c, began, Duration::from_secs(15)).await;
    let from = db_now(&c).await;
    drop(c);
    tokio::time::sleep(Duration::from_secs(6)).await;

    let down_begin = Utc::now();
    let stopping = stop_server(&cluster).await;
    let down_done = Utc::now();
    sleep_until(down_begin + secs(20)).await;
    let up_begin = Utc::now();
    let starting = start_server(&cluster).await;
    let up_at = Utc::now();
    println!(
        "{n} replica(s): server down from {down_begin} (stop took {stopping:?}) \
         to {up_begin} (start took {starting:?})"
    );
    let c = connect(&url).await;
    let refired = wait_for_completed_after(&c, up_at, Duration::from_secs(15)).await;
    println!("{n} replica(s): first tick after the restart completed {refired:?} after it");
    sleep_until(up_at + secs(15)).await;
    let to = db_now(&c).await - secs(5);
    assert_all_running(&mut replicas, "during the outage");
    let exits = stop_all(replicas);
    println!("{n} replica(s): SIGTERM to exit {exits:?}");

    let mut problems = Vec::new();
    for (name, grace, coalesce) in OUTAGE_SCHEDULES {
        let expected: Vec<_> = seconds(from, to)
            .into_iter()
            .filter(|t| t.timestamp() % 2 == 0)
            .collect();
        let found = ticks(&c, name, from, to).await;
        // Exactly one row per due tick; nothing skipped (no run overlapped).
        audit(name, &expected, &found, &["completed", "missed"]);
        // Per tick: its error, and when it was claimed and started (ms after the tick).
        let details: BTreeMap<DateTime<Utc>, (String, i64, Option<i64>)> = c
            .query(
                "SELECT scheduled_at, coalesce(error, ''), \
                        (extract(epoch FROM claimed_at - scheduled_at) * 1000)::int8, \
                        (extract(epoch FROM started_at - scheduled_at) * 1000)::int8 \
                 FROM scheduler_runs \
                 WHERE schedule_name = $1 AND trigger = 'schedule' AND attempt = 1 \
                   AND scheduled_at BETWEEN $2 AND $3",
                &[&name, &from, &to],
            )
            .await
            .expect("details")
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let errors: BTreeMap<DateTime<Utc>, String> = details
            .iter()
            .map(|(at, (e, _, _))| (*at, e.clone()))
            .collect();
        let status = |at: &DateTime<Utc>| -> &str {
            found
                .iter()
                .find(|t| t.at == *at)
                .map(|t| t.statuses[0].as_str())
                .unwrap_or("-")
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &found {
            *counts.entry(t.statuses[0].as_str()).or_default() += 1;
        }
        // The outage's ticks: due while the server was certainly down.
        let outage: Vec<DateTime<Utc>> = expected
            .iter()
            .copied()
            .filter(|t| *t > down_done && *t < up_begin)
            .collect();
        let mut outage_counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &outage {
            *outage_counts.entry(status(t)).or_default() += 1;
        }
        let grace = secs(grace as i64);
        println!(
            "{n} replica(s): {name} (grace {}s, coalesce {coalesce}): window {counts:?}; \
             outage ticks {} {outage_counts:?}",
            grace.num_seconds(),
            outage.len()
        );
        // The outage and the recovery, tick by tick.
        let timeline = found
            .iter()
            .filter(|t| t.at > down_begin - secs(2) && t.at < up_at + secs(8))
            .map(|t| {
                let (error, claimed, started) = &details[&t.at];
                let started = started.map_or("-".to_string(), |s| format!("{s}"));
                let error: String = error.chars().take(60).collect();
                format!(
                    "  {} {:9} {:9} claimed +{claimed} ms, started +{started} ms {error}",
                    t.at.format("%H:%M:%S"),
                    t.statuses[0],
                    t.nodes[0],
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        println!("{name} around the outage:\n{timeline}");
        // Before the stop: on time, completed.
        for t in expected.iter().filter(|t| **t < down_begin - secs(1)) {
            if status(t) != "completed" {
                problems.push(format!("{name} {t}: {} before the outage", status(t)));
            }
        }
        // A tick whose grace was over before the server came back cannot
        // have run: missed.
        for t in expected.iter().filter(|t| **t + grace < up_begin) {
            if *t > down_done && status(t) != "missed" {
                problems.push(format!(
                    "{name} {t}: {} although its grace ended before the server was back",
                    status(t)
                ));
            }
        }
        // Well after the recovery (backoff cap 5 s + slack): on time again.
        for t in expected.iter().filter(|t| **t > up_at + secs(8)) {
            if status(t) != "completed" {
                problems.push(format!("{name} {t}: {} after the recovery", status(t)));
            }
        }
        let ran = outage_counts.get("completed").copied().unwrap_or(0);
        // Coalesced: the backlog runs once (its newest tick, or the tick
        // just before the server was back if it was claimed within 1 s of
        // falling due); the rest is coalesced into it.
        if coalesce && ran > 2 {
            problems.push(format!(
                "{name}: {ran} of the outage's {} ticks ran; coalesce runs a backlog once",
                outage.len()
            ));
        }
        // A backlog tick (not claimed within 1 s of falling due) whose next
        // tick was already due when it was claimed is coalesced, never run.
        if coalesce {
            for t in found.iter().filter(|t| t.statuses[0] == "completed") {
                let (_, claimed, _) = &details[&t.at];
                if *claimed >= 2_000 + 100 {
                    problems.push(format!(
                        "{name} {}: completed, claimed {claimed} ms after its tick (the next \
                         tick was due 2000 ms after it): a backlog tick ran instead of being coalesced",
                        t.at
                    ));
                }
            }
        }
        if grace.num_seconds() == 60 {
            for t in &expected {
                let error = errors.get(t).map(String::as_str).unwrap_or("");
                if !coalesce && status(t) != "completed" {
                    // Not coalesced, all within the grace: every tick ran.
                    problems.push(format!(
                        "{name} {t}: {} (coalesce off, grace 60 s: every tick runs)",
                        status(t)
                    ));
                }
                if coalesce
                    && outage.contains(t)
                    && status(t) == "missed"
                    && !error.starts_with("coalesced")
                {
                    // No grace ran out: a missed outage tick was coalesced.
                    problems.push(format!(
                        "{name} {t}: missed with error {error:?}, not coalesced"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{n} replica(s), outage {down_begin}..{up_begin}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_20_s_accounts_for_every_tick_with_one_replica() {
    an_outage_of_20_s_accounts_for_every_tick(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_20_s_accounts_for_every_tick_with_three_replicas() {
    an_outage_of_20_s_accounts_for_every_tick(3).await;
}

// ---------------------------------------------------------------------------
// 2. quiet logs and honest probes while the database is down
// ---------------------------------------------------------------------------

/// The admin API address from the "admin API listening addr=..." line.
fn api_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.contains("admin API listening"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .map(str::to_string)
        })
}

async fn wait_for_api(replica: &Replica) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = api_addr(&replica.log) {
            return format!("http://{a}");
        }
        assert!(
            Instant::now() < deadline,
            "{} did not report its API address; log:\n{}",
            replica.name,
            replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET with a 5 s timeout: the status and body, or the error.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// The gauge's value on /metrics, whatever its labels.
async fn unreachable_since(http: &reqwest::Client, base: &str) -> Result<f64, String> {
    let (status, text) = get(http, &format!("{base}/metrics")).await?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    let exposition = crate::metrics::parse_exposition(&text)?;
    exposition
        .samples
        .iter()
        .find(|s| s.name == UNREACHABLE_SINCE)
        .map(|s| s.value)
        .ok_or_else(|| format!("{UNREACHABLE_SINCE} not on /metrics"))
}

/// Polls `probe` every 100 ms until it returns true; how long it took, or
/// the last thing seen.
async fn poll<F, Fut>(limit: Duration, mut probe: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let started = Instant::now();
    let mut last = String::from("never polled");
    while started.elapsed() < limit {
        match probe().await {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) => last = "condition false".to_string(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_stay_few_while_the_database_is_down() {
    let _serial = SERIAL.lock().await;
    let cluster = private_cluster(false).await;
    let url = cluster.url("postgres");
    let c = connect(&url).await;
    for i in 0..3 {
        let s = Schedule::cron(&format!("quiet{i}"), "test.record", "* * * * * *").expect("valid");
        schedules::insert(&c, &s).await.expect("insert");
    }
    let dir = temp_dir("outage-logs");
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    let mut replica = Replica::start(&url, &pipelines, "replica-1", &FAST);
    let base = wait_for_api(&replica).await;
    let http = spine_scheduler::pipeline::http::build_client().expect("HTTP client");
    let ready = poll(Duration::from_secs(20), || async {
        get(&http, &format!("{base}/readyz"))
            .await
            .map(|(s, _)| s == 200)
    })
    .await;
    assert!(ready.is_ok(), "not ready before the outage: {ready:?}");
    let began = db_now(&c).await;
    wait_for_completed_after(&c, began, Duration::from_secs(10)).await;
    drop(c);
    let before = unreachable_since(&http, &base).await;
    assert_eq!(
        before,
        Ok(0.0),
        "{UNREACHABLE_SINCE} while the database is reachable"
    );

    let down_begin = Utc::now();
    stop_server(&cluster).await;
    // /readyz says so.
    let not_ready = poll(Duration::from_secs(8), || async {
        get(&http, &format!("{base}/readyz"))
            .await
            .map(|(s, _)| s == 503)
    })
    .await;
    let (status, body) = get(&http, &format!("{base}/readyz"))
        .await
        .unwrap_or((0, "no answer".into()));
    println!("/readyz while down: {status} {body} (503 after {not_ready:?})");
    assert!(
        not_ready.is_ok(),
        "/readyz did not answer 503 while the database was down: {not_ready:?}"
    );
    // So does /metrics.
    let flagged = poll(Duration::from_secs(8), || async {
        unreachable_since(&http, &base).await.map(|v| v > 0.0)
    })
    .await;
    let since = unreachable_since(&http, &base).await.unwrap_or(0.0);
    println!(
        "{UNREACHABLE_SINCE} while down: {since} (stop began at {}; flagged after {flagged:?})",
        down_begin.timestamp()
    );
    assert!(
        flagged.is_ok(),
        "{UNREACHABLE_SINCE} not > 0 while the database was down: {flagged:?}"
    );
    assert!(
        since >= (down_begin.timestamp() - 1) as f64
            && since <= Utc::now().timestamp_millis() as f64 / 1000.0 + 1.0,
        "{UNREACHABLE_SINCE} = {since}: not a time within the outage (began {})",
        down_begin.timestamp()
    );

    // For the rest of the outage, probe as a kubelet and a scraper would
    // (readiness every second, a scrape every 5 s): always 503, always
    // answered at once, and the gauge keeps the outage's start.
    let mut probes = 0;
    let mut slowest = Duration::ZERO;
    let mut next_scrape = Utc::now() + secs(5);
    while Utc::now() < down_begin + secs(15) - chrono::Duration::milliseconds(500) {
        let asked = Instant::now();
        let answer = get(&http, &format!("{base}/readyz")).await;
        slowest = slowest.max(asked.elapsed());
        probes += 1;
        assert!(
            matches!(answer, Ok((503, _))),
            "/readyz while the database is down: {answer:?}"
        );
        if Utc::now() >= next_scrape {
            next_scrape += secs(5);
            let v = unreachable_since(&http, &base).await;
            assert_eq!(
                v,
                Ok(since),
                "{UNREACHABLE_SINCE} changed during one outage"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("{probes} readiness probes while down: all 503, slowest answered in {slowest:?}");
    sleep_until(down_begin + secs(15)).await;
    let up_begin = Utc::now();
    start_server(&cluster).await;
    let up_at = Utc::now();
    let ready_again = poll(Duration::from_secs(10), || async {
        get(&http, &format!("{base}/readyz"))
            .await
            .map(|(s, _)| s == 200)
    })
    .await;
    println!("/readyz 200 again {ready_again:?} after the server was back");
    assert!(
        ready_again.is_ok(),
        "/readyz not 200 within 10 s of the server being back: {ready_again:?}; log:\n{}",
        replica.log_tail()
    );
    let cleared = poll(Duration::from_secs(10), || async {
        unreachable_since(&http, &base).await.map(|v| v == 0.0)
    })
    .await;
    assert!(
        cleared.is_ok(),
        "{UNREACHABLE_SINCE} not back to 0 after the outage: {cleared:?}"
    );
    assert!(replica.is_running(), "the replica exited during the outage");
    let c = connect(&url).await;
    let refired = wait_for_completed_after(&c, up_at, Duration::from_secs(10)).await;
    println!("first tick after the restart completed {refired:?} after it");
    let log_path = replica.log.clone();
    assert!(replica.terminate(Duration::from_secs(30)), "unclean exit");

    let log = std::fs::read_to_string(&log_path).expect("read log");
    let loud = loud_lines_between(&log, down_begin, up_begin);
    let window = (up_begin - down_begin).num_milliseconds() as f64 / 1000.0;
    let per_second = loud.len() as f64 / window;
    let all_between = log
        .lines()
        .filter(|l| stamp_and_level(l).is_some_and(|(at, _)| at >= down_begin && at <= up_begin))
        .count();
    let mut by_level: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &loud {
        if let Some((_, level)) = stamp_and_level(l) {
            *by_level.entry(level).or_default() += 1;
        }
    }
    println!(
        "while down ({window:.1} s): {} INFO/WARN/ERROR lines ({per_second:.2}/s) {by_level:?}, \
         {all_between} lines with DEBUG/TRACE",
        loud.len()
    );
    println!("INFO/WARN/ERROR lines while down:");
    for l in loud.iter().take(40) {
        println!("  {}", l.chars().take(300).collect::<String>());
    }
    let unreachable: Vec<&&str> = loud
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("unreachable"))
        .collect();
    let back: Vec<&str> = log
        .lines()
        .filter(|l| {
            stamp_and_level(l).is_some_and(|(at, level)| level == "INFO" && at >= up_begin)
                && l.to_ascii_lowercase().contains("database")
        })
        .take(3)
        .collect();
    println!("INFO lines about the database after the restart: {back:#?}");
    assert!(
        per_second < 5.0,
        "{} INFO/WARN/ERROR lines in {window:.1} s while the database was down:\n{}",
        loud.len(),
        loud.join("\n")
    );
    assert!(
        unreachable
            .iter()
            .any(|l| stamp_and_level(l).is_some_and(|(_, level)| level == "WARN")),
        "no WARN line saying the database is unreachable:\n{}",
        loud.join("\n")
    );
    // After the first moments (each session noticing its loss), the engine
    // is quiet: only its "still unreachable" reminder, about every 10 s.
    // (The admin API's line per failed request comes from our probes.)
    let steady: Vec<&&str> = loud
        .iter()
        .filter(|l| {
            stamp_and_level(l).is_some_and(|(at, _)| at > down_begin + secs(2))
                && !l.contains("spine_scheduler::api")
        })
        .collect();
    let api_lines = loud
        .iter()
        .filter(|l| l.contains("spine_scheduler::api"))
        .count();
    println!(
        "after the first 2 s: {} engine lines; the admin API logged {api_lines} lines \
         (one per request that found no connection)",
        steady.len()
    );
    assert!(
        steady.len() <= 1 + (window / 10.0).ceil() as usize,
        "the engine kept logging while the database was down:\n{}",
        steady
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Once, then at most about once every 10 s.
    let repeats_allowed = 1 + (window / 10.0).ceil() as usize;
    assert!(
        unreachable.len() <= repeats_allowed,
        "{} 'unreachable' lines in {window:.1} s (at most {repeats_allowed})",
        unreachable.len()
    );
    drop(cluster);
}

// ---------------------------------------------------------------------------
// 3. SIGTERM during an outage
// ---------------------------------------------------------------------------

/// `(run_id, status)` of the runs of replica `name` that are not finished.
async fn running_of(c: &Client, name: &str) -> Result<Vec<(Uuid, String)>, tokio_postgres::Error> {
    Ok(c.query(
        "SELECT r.run_id, r.status FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) \
         WHERE n.hostname = $1 AND r.status = 'running' ORDER BY r.run_id",
        &[&name],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_is_bounded_and_leaves_no_run_running() {
    let _serial = SERIAL.lock().await;
    let cluster = private_cluster(false).await;
    let url = cluster.url("postgres");
    let c = connect(&url).await;
    let s = Schedule::cron("slow", "test.slow", "* * * * * *")
        .expect("valid")
        .with_max_instances(5)
        .expect("valid");
    schedules::insert(&c, &s).await.expect("insert");
    let dir = temp_dir("outage-sigterm");
    let pipelines = log_pipelines(&dir, &[("test.slow", "1500ms")]);
    let grace = Duration::from_secs(3);
    let mut args = FAST.to_vec();
    args.extend(["--shutdown-grace", "3s"]);
    let first = Replica::start(&url, &pipelines, "replica-1", &args);
    let began = db_now(&c).await;
    wait_for_completed_after(&c, began, Duration::from_secs(15)).await;
    // Stop 200 ms after a tick: the run claimed at it has 1.3 s to go, so
    // it finishes while the server is down and its result stays unwritten.
    let now = db_now(&c).await;
    let next = DateTime::from_timestamp(now.timestamp() + 1, 0).expect("instant");
    sleep_until(next + chrono::Duration::milliseconds(200)).await;
    let in_flight = running_of(&c, "replica-1").await.expect("running");
    drop(c);
    let down_begin = Utc::now();
    let stopping = stop_server(&cluster).await;
    println!(
        "server stopped at {down_begin} in {stopping:?} with {} run(s) of replica-1 in flight",
        in_flight.len()
    );
    assert!(!in_flight.is_empty(), "no run in flight at the stop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log_path = first.log.clone();
    let sigterm = Instant::now();
    // The replica's own deadline is grace + 5 s after the signal; a little
    // more is allowed here for the process to exit and for the polling.
    let bound = grace + Duration::from_secs(5) + Duration::from_millis(500);
    let clean = first.terminate(bound);
    let exit = sigterm.elapsed();
    println!("replica-1 exited {exit:?} after SIGTERM (grace {grace:?}; clean exit: {clean})");

    start_server(&cluster).await;
    let c = connect(&url).await;
    let left = running_of(&c, "replica-1").await.expect("running rows");
    println!(
        "after the restart, replica-1 rows still running: {:?}",
        left.iter().map(|(id, _)| id).collect::<Vec<_>>()
    );
    let second = Replica::start(&url, &pipelines, "replica-2", &FAST);
    let reaped = Instant::now();
    eventually(
        Duration::from_secs(15),
        "no run of replica-1 left running",
        || async {
            running_of(&c, "replica-1")
                .await
                .map(|r| r.is_empty())
                .unwrap_or(false)
        },
    )
    .await;
    println!(
        "replica-1's runs settled {:?} after replica-2 started",
        reaped.elapsed()
    );
    let mut settled = Vec::new();
    for (id, _) in &left {
        let row = c
            .query_one(
                "SELECT status, coalesce(error, '') FROM scheduler_runs WHERE run_id = $1",
                &[id],
            )
            .await
            .expect("run row");
        let (status, error): (String, String) = (row.get(0), row.get(1));
        println!("  {id}: {status} {error}");
        assert!(
            status == "abandoned" || status == "completed",
            "{id}: {status}, expected abandoned (or completed)"
        );
        settled.push((*id, status));
    }
    assert!(
        second.terminate(Duration::from_secs(30)),
        "replica-2 exited uncleanly"
    );

    let log = std::fs::read_to_string(&log_path).expect("read log");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| stamp_and_level(l).is_some_and(|(_, level)| level == "ERROR"))
        .collect();
    let named: Vec<Uuid> = left
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| errors.iter().any(|l| l.contains(&id.to_string())))
        .collect();
    println!(
        "replica-1 logged {} ERROR line(s); {} of the {} unwritten run(s) named:",
        errors.len(),
        named.len(),
        left.len()
    );
    for l in &errors {
        println!("  {l}");
    }
    if !left.is_empty() {
        assert!(
            !named.is_empty(),
            "replica-1 left {} run(s) running ({:?}) but no ERROR line names one:\n{}",
            left.len(),
            left,
            errors.join("\n")
        );
    }
    // Exited within the grace + 5 s (terminate panics otherwise).
    assert!(exit <= bound);
    drop(cluster);
}

// ---------------------------------------------------------------------------
// 4. a restart and a crash restart of the server
// ---------------------------------------------------------------------------

async fn postmaster_started(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT pg_postmaster_start_time()", &[])
        .await
        .expect("postmaster start time")
        .get(0)
}

/// After the server came back at `back` (database clock): every replica is
/// still running, a leader elected since, and ticks after it completed.
async fn check_recovered(c: &Client, replicas: &mut [Replica], back: DateTime<Utc>, what: &str) {
    assert_all_running(replicas, &format!("after the {what}"));
    let (leader, took) = wait_for_leader_since(c, back, Duration::from_secs(10)).await;
    let refired = wait_for_completed_after(c, back, Duration::from_secs(10)).await;
    println!("{what}: leader {leader} elected {took:?}, a tick completed {refired:?} after it");
    assert_all_running(replicas, &format!("after the {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_from_a_restart_and_a_crash_restart() {
    let _serial = SERIAL.lock().await;
    let cluster = private_cluster(true).await;
    let url = cluster.url("postgres");
    let c = connect(&url).await;
    let names: Vec<String> = (0..3).map(|i| format!("restart{i}")).collect();
    for name in &names {
        let s = Schedule::cron(name, "test.record", "* * * * * *").expect("valid");
        schedules::insert(&c, &s).await.expect("insert");
    }
    let dir = temp_dir("outage-restarts");
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    let mut replicas = start_replicas(&url, &pipelines, 3, &FAST);
    let began = db_now(&c).await;
    wait_for_leader_since(&c, began - secs(5), Duration::from_secs(15)).await;
    wait_for_completed_after(&c, began, Duration::from_secs(15)).await;
    let from = db_now(&c).await;
    let first_start = postmaster_started(&c).await;
    drop(c);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // (a) pg_ctl restart -m fast.
    let took = restart_server(&cluster).await;
    let c = connect(&url).await;
    let back = postmaster_started(&c).await;
    println!("restart -m fast took {took:?}; postmaster started {back}");
    assert!(back > first_start, "the server restarted");
    check_recovered(&c, &mut replicas, back, "fast restart").await;
    drop(c);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // (b) an immediate stop (no checkpoint, crash recovery on start).
    let crash = Instant::now();
    crash_server(&cluster).await;
    start_server(&cluster).await;
    let took = crash.elapsed();
    let c = connect(&url).await;
    let recovered = postmaster_started(&c).await;
    println!("immediate stop + start took {took:?}; postmaster started {recovered}");
    assert!(recovered > back, "the server was restarted after the crash");
    check_recovered(&c, &mut replicas, recovered, "crash restart").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let to = db_now(&c).await - secs(3);
    assert_all_running(&mut replicas, "after both restarts");
    let exits = stop_all(replicas);
    println!("SIGTERM to exit {exits:?}");

    for name in &names {
        let found = ticks(&c, name, from, to).await;
        let wins = audit(name, &seconds(from, to), &found, &["completed", "missed"]);
        let missed = found.iter().filter(|t| t.statuses[0] == "missed").count();
        println!(
            "{name}: {} ticks, {missed} missed, wins {wins:?}",
            found.len()
        );
    }
    drop(cluster);
}
