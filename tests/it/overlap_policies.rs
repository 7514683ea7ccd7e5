//! The overlap policies against real replicas: one schedule per policy,
//! every second, `max_instances` 1, a 2 s command, two `serve` processes.
//! After a few seconds the schedules are paused, every row is left to end,
//! and the ledger says who ran, who waited (and for whom), who was skipped
//! and who was cancelled (by which tick, how) — each checked against the
//! runs' real intervals. And a run cancelled through the API.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use spine_scheduler::schedule::{OverlapPolicy, Schedule};
use spine_scheduler::store::schedules;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::api_replica::Http;
use crate::harness::{db_second, eventually, sleep_until_db};
use crate::replica::{audit, false_skips, seconds, ticks};
use crate::test_cluster::{TestCluster, FAST, SERIAL};

/// A ledger row as the checks need it.
#[derive(Debug, Clone)]
struct Row {
    run_id: Uuid,
    at: DateTime<Utc>,
    status: String,
    started: Option<DateTime<Utc>>,
    completed: Option<DateTime<Utc>>,
    overlapped: Option<Uuid>,
    cancel_by: Option<Uuid>,
    cancel_mode: Option<String>,
    error: Option<String>,
}

async fn rows(c: &Client, name: &str) -> Vec<Row> {
    c.query(
        "SELECT run_id, scheduled_at, status, started_at, completed_at, overlapped_run_id, \
                cancel_requested_by, cancel_mode, error \
         FROM scheduler_runs WHERE schedule_name = $1 AND trigger = 'schedule' \
         ORDER BY scheduled_at",
        &[&name],
    )
    .await
    .expect("rows")
    .iter()
    .map(|r| Row {
        run_id: r.get(0),
        at: r.get(1),
        status: r.get(2),
        started: r.get(3),
        completed: r.get(4),
        overlapped: r.get(5),
        cancel_by: r.get(6),
        cancel_mode: r.get(7),
        error: r.get(8),
    })
    .collect()
}

/// The runs that started, by start: each must have ended before the next
/// began (one instance at a time).
fn assert_one_at_a_time(name: &str, rows: &[Row]) {
    let mut ran: Vec<&Row> = rows.iter().filter(|r| r.started.is_some()).collect();
    ran.sort_by_key(|r| r.started);
    for pair in ran.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.completed.is_some_and(|end| Some(end) <= b.started),
            "{name}: run of {} ({:?}..{:?}) overlaps run of {} (from {:?})",
            a.at,
            a.started,
            a.completed,
            b.at,
            b.started
        );
    }
}

fn by_id(rows: &[Row]) -> BTreeMap<Uuid, &Row> {
    rows.iter().map(|r| (r.run_id, r)).collect()
}

fn statuses(rows: &[Row]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.status.clone()).or_insert(0) += 1;
    }
    out
}

/// Each waiting row names a run that really was unfinished, and started
/// only after that run ended.
fn assert_waits_are_real(name: &str, rows: &[Row]) -> usize {
    let ids = by_id(rows);
    let mut waited = 0;
    for r in rows.iter().filter(|r| r.status != "skipped") {
        let Some(other) = r.overlapped.and_then(|id| ids.get(&id)) else {
            continue;
        };
        waited += 1;
        if let (Some(start), Some(end)) = (r.started, other.completed) {
            assert!(
                start >= end,
                "{name}: the run of {} started at {start} before the run it waited for ({}) ended at {end}",
                r.at,
                other.at
            );
        }
    }
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_decides_who_runs_waits_is_skipped_or_cancelled() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("overlap-policies", &[]).await;
    std::fs::write(
        &cluster.pipelines,
        "pipelines:\n  - name: two_seconds\n    kind: command\n    argv: [\"sleep\", \"2\"]\n",
    )
    .expect("write pipelines");
    let c = cluster.client().await;
    for policy in OverlapPolicy::ALL {
        let s = Schedule::cron(policy.as_str(), "two_seconds", "* * * * * *")
            .expect("schedule")
            .with_overlap_policy(policy);
        schedules::insert(&c, &s).await.expect("insert");
    }
    cluster.start(2, &FAST);
    eventually(
        StdDuration::from_secs(30),
        "every policy's schedule has run",
        || async {
            let n: i64 = c
                .query_one(
                    "SELECT count(DISTINCT schedule_name) FROM scheduler_runs WHERE started_at IS NOT NULL",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            n == OverlapPolicy::ALL.len() as i64
        },
    )
    .await;
    let from = db_second(&c).await;
    let to = from + Duration::seconds(6);
    sleep_until_db(&c, to + Duration::milliseconds(300)).await;
    for policy in OverlapPolicy::ALL {
        schedules::set_enabled(&c, policy.as_str(), false)
            .await
            .expect("pause");
    }
    // Let every row end: the queue of buffer_all drains one 2 s run at a time.
    eventually(
        StdDuration::from_secs(60),
        "every run has ended",
        || async {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM scheduler_runs WHERE status IN ('running', 'pending')",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(1);
            n == 0
        },
    )
    .await;
    let window = |rows: Vec<Row>| -> Vec<Row> {
        rows.into_iter()
            .filter(|r| r.at > from && r.at <= to)
            .collect()
    };
    for policy in OverlapPolicy::ALL {
        let name = policy.as_str();
        // One row per due tick, none doubled, none missing.
        let found = ticks(&c, name, from, to).await;
        audit(
            name,
            &seconds(from, to),
            &found,
            &["completed", "skipped", "cancelled"],
        );
        let all = rows(&c, name).await;
        let ids = by_id(&all);
        let seen = window(all.clone());
        let count = statuses(&seen);
        println!("overlap-policies: {name}: {count:?}");
        match policy {
            OverlapPolicy::Skip => {
                assert_one_at_a_time(name, &all);
                assert!(
                    count.get("skipped").copied().unwrap_or(0) >= 3,
                    "{name}: {count:?}"
                );
                assert!(!count.contains_key("cancelled"), "{name}: {count:?}");
            }
            OverlapPolicy::BufferOne => {
                assert_one_at_a_time(name, &all);
                assert!(
                    assert_waits_are_real(name, &all) >= 1,
                    "{name}: nothing waited"
                );
                assert!(
                    count.get("skipped").copied().unwrap_or(0) >= 1,
                    "{name}: {count:?}"
                );
                for r in seen.iter().filter(|r| r.status == "skipped") {
                    let why = r.error.as_deref().unwrap_or_default();
                    assert!(
                        why.contains("buffer_one"),
                        "{name}: skipped at {}: {why}",
                        r.at
                    );
                }
            }
            OverlapPolicy::BufferAll => {
                assert_one_at_a_time(name, &all);
                assert_eq!(
                    count.get("completed"),
                    Some(&seen.len()),
                    "{name}: {count:?}"
                );
                assert!(
                    assert_waits_are_real(name, &all) >= 3,
                    "{name}: too few waited"
                );
                // First in, first out.
                let mut by_start: Vec<&Row> = all.iter().filter(|r| r.started.is_some()).collect();
                by_start.sort_by_key(|r| r.started);
                let order: Vec<DateTime<Utc>> = by_start.iter().map(|r| r.at).collect();
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(order, sorted, "{name}: runs started out of tick order");
            }
            OverlapPolicy::AllowAll => {
                assert_eq!(
                    count.get("completed"),
                    Some(&seen.len()),
                    "{name}: {count:?}"
                );
                let at_once = seen
                    .iter()
                    .map(|r| {
                        seen.iter()
                            .filter(|o| o.started <= r.started && o.completed > r.started)
                            .count()
                    })
                    .max()
                    .unwrap_or(0);
                assert!(at_once >= 2, "{name}: never two runs at once");
            }
            OverlapPolicy::CancelOther | OverlapPolicy::TerminateOther => {
                assert_one_at_a_time(name, &all);
                let mode = if policy == OverlapPolicy::CancelOther {
                    "graceful"
                } else {
                    "immediate"
                };
                let cancelled: Vec<&Row> =
                    seen.iter().filter(|r| r.status == "cancelled").collect();
                assert!(cancelled.len() >= 3, "{name}: {count:?}");
                assert!(!count.contains_key("skipped"), "{name}: {count:?}");
                for r in cancelled {
                    assert_eq!(r.cancel_mode.as_deref(), Some(mode), "{name}: {r:?}");
                    let asker = r
                        .cancel_by
                        .and_then(|id| ids.get(&id))
                        .unwrap_or_else(|| panic!("{name}: {} names no asker: {r:?}", r.at));
                    assert!(
                        asker.at > r.at,
                        "{name}: {} was cancelled by an older tick",
                        r.at
                    );
                    assert_eq!(
                        asker.overlapped,
                        Some(r.run_id),
                        "{name}: the asker waited for it"
                    );
                    let why = r.error.as_deref().unwrap_or_default();
                    assert!(why.contains(&asker.run_id.to_string()), "{name}: {why}");
                    if r.started.is_some() && mode == "graceful" {
                        assert!(why.contains("SIGTERM"), "{name}: {why}");
                    }
                }
            }
        }
    }
    let false_skips = false_skips(&c, from, to).await;
    assert!(false_skips.is_empty(), "{false_skips:?}");
    cluster.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_through_the_api_ends_cancelled() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("cancel-api", &[]).await;
    std::fs::write(
        &cluster.pipelines,
        "pipelines:\n  - name: long\n    kind: command\n    argv: [\"sleep\", \"60\"]\n",
    )
    .expect("write pipelines");
    let c = cluster.client().await;
    let s = Schedule::cron("long", "long", "0 0 1 1 *").expect("schedule");
    schedules::insert(&c, &s).await.expect("insert");
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--log-format", "json"]);
    cluster.start(1, &args);
    let log = cluster.get("replica-1").log.clone();
    let api = crate::harness::wait_for(
        StdDuration::from_secs(30),
        StdDuration::from_millis(100),
        "the replica's API address",
        || {
            let log = log.clone();
            async move { crate::api_replica::listening_addr(&log).map(|a| format!("http://{a}")) }
        },
    )
    .await;
    let http = Http::new();
    let asked = http.post(&api, "/v1/schedules/long/run", None).await;
    assert_eq!(asked.status, 202, "{}", asked.text);
    let run_id = asked.json()["run_id"].as_str().expect("run id").to_string();
    eventually(StdDuration::from_secs(20), "the run started", || async {
        let r = http.get(&api, &format!("/v1/runs/{run_id}"), None).await;
        r.status == 200 && r.json()["status"] == "running"
    })
    .await;
    // A bad body is refused; nothing is asked.
    let bad = http
        .call(
            reqwest::Method::POST,
            &format!("{api}/v1/runs/{run_id}/cancel"),
            None,
            &[],
            crate::api_replica::Body::Json(serde_json::json!({"mode": "now"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let cancel = http
        .post(&api, &format!("/v1/runs/{run_id}/cancel"), None)
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.text);
    assert_eq!(cancel.json()["mode"], "graceful");
    eventually(
        StdDuration::from_secs(20),
        "the run ended cancelled",
        || async {
            let r = http.get(&api, &format!("/v1/runs/{run_id}"), None).await;
            r.status == 200 && r.json()["status"] == "cancelled"
        },
    )
    .await;
    let run = http
        .get(&api, &format!("/v1/runs/{run_id}"), None)
        .await
        .json();
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("through the API") && error.contains("SIGTERM"),
        "{error}"
    );
    // Not running any more: 409; unknown: 404.
    let again = http
        .post(&api, &format!("/v1/runs/{run_id}/cancel"), None)
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    let unknown = http
        .post(&api, &format!("/v1/runs/{}/cancel", Uuid::now_v7()), None)
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    cluster.stop_all();
}
