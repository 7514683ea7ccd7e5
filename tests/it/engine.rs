//! The engine end to end: real binaries as separate processes, real Postgres,
//! every test audits the ledger (one row per due tick, none doubled, none missing).

use std::time::Duration;

use chrono::{DateTime, Utc};
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::runs;
use spine_scheduler::store::schedules;
use spine_scheduler::types::RunStatus;

use crate::harness::TestDb;
use crate::replica::{audit, eventually, log_pipelines, seconds, temp_dir, ticks, Replica};

fn every_second(name: &str, pipeline: &str) -> Schedule {
    Schedule::cron(name, pipeline, "* * * * * *").expect("valid schedule")
}

async fn db_now(c: &tokio_postgres::Client) -> DateTime<Utc> {
    c.query_one("SELECT now()", &[]).await.expect("now").get(0)
}

fn spread(by_node: &std::collections::BTreeMap<String, usize>) -> String {
    by_node
        .iter()
        .map(|(n, c)| format!("{n}={c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_fire_each_second_exactly_once() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("three");
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    schedules::insert(&c, &every_second("each_second", "test.record"))
        .await
        .expect("insert");
    let replicas: Vec<Replica> = (1..=3)
        .map(|i| Replica::start(&db.url, &pipelines, &format!("replica-{i}"), &[]))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(33)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    for r in replicas {
        assert!(
            r.terminate(Duration::from_secs(20)),
            "replica exited uncleanly"
        );
    }
    let expected = seconds(from, to);
    assert!(expected.len() >= 30, "window too short: {}", expected.len());
    let found = ticks(&c, "each_second", from, to).await;
    let by_node = audit("each_second", &expected, &found, &["completed"]);
    println!(
        "3 replicas x 1 schedule x {} ticks: wins {}",
        expected.len(),
        spread(&by_node)
    );
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_nodes WHERE state = 'left'",
            &[],
        )
        .await
        .expect("nodes")
        .get(0);
    assert_eq!(left, 3, "every replica marked itself left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_fire_two_hundred_schedules_exactly_once() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("two-hundred");
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    for i in 0..200 {
        schedules::insert(&c, &every_second(&format!("s{i:03}"), "test.record"))
            .await
            .expect("insert");
    }
    // Two of them claim in small chunks, three transactions open at once
    // (the claim pipeline; see `engine::claimer`): ~67 own ticks a second
    // are 3–4 chunks, each written while the one before waits for the tick.
    let pipelined = ["--claim-batch-size", "20", "--claim-concurrency", "3"];
    let replicas: Vec<Replica> = (1..=3)
        .map(|i| {
            let extra: &[&str] = if i == 1 { &[] } else { &pipelined };
            Replica::start(&db.url, &pipelines, &format!("replica-{i}"), extra)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    for r in replicas {
        assert!(r.terminate(Duration::from_secs(20)));
    }
    let expected = seconds(from, to);
    let mut total = std::collections::BTreeMap::new();
    for i in 0..200 {
        let name = format!("s{i:03}");
        let found = ticks(&c, &name, from, to).await;
        for (node, n) in audit(&name, &expected, &found, &["completed"]) {
            *total.entry(node).or_insert(0) += n;
        }
    }
    println!(
        "3 replicas x 200 schedules x {} ticks: wins {}",
        expected.len(),
        spread(&total)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_loses_no_tick() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("kill9");
    // Runs take 2.5 s, so a replica always has some in flight when it dies.
    let pipelines = log_pipelines(&dir, &[("test.slow", "2500ms")]);
    let s = every_second("slow", "test.slow")
        .with_max_instances(10)
        .expect("valid");
    schedules::insert(&c, &s).await.expect("insert");
    let mut replicas: Vec<Replica> = (1..=3)
        .map(|i| Replica::start(&db.url, &pipelines, &format!("replica-{i}"), &[]))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Kill the replica that is running something right now.
    let busy: String = c
        .query_one(
            "SELECT n.hostname FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) \
             WHERE r.status = 'running' ORDER BY r.scheduled_at DESC LIMIT 1",
            &[],
        )
        .await
        .expect("a running run")
        .get(0);
    let idx = replicas
        .iter()
        .position(|r| r.name == busy)
        .expect("busy replica is one of ours");
    let victim = replicas.remove(idx);
    let killed_at = db_now(&c).await;
    victim.kill9();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(4);
    for r in replicas {
        assert!(r.terminate(Duration::from_secs(30)));
    }
    let expected = seconds(from, to);
    let found = ticks(&c, "slow", from, to).await;
    // The victim's in-flight runs stay `running` until the leader's reaper
    // marks them `abandoned`; every other tick completed, and none is
    // missing or doubled.
    let by_node = audit(
        "slow",
        &expected,
        &found,
        &["completed", "running", "abandoned"],
    );
    for t in &found {
        if t.statuses[0] != "completed" {
            assert_eq!(
                t.nodes[0], busy,
                "{}: only the killed replica's runs may hang",
                t.at
            );
            assert!(
                t.at <= killed_at,
                "{}: claimed after the kill by the dead replica?",
                t.at
            );
        }
    }
    let after_kill = found.iter().filter(|t| t.at > killed_at).count();
    assert!(
        after_kill >= 8,
        "survivors kept firing ({after_kill} ticks after the kill)"
    );
    println!(
        "kill -9 {busy}: {} ticks audited, wins {}",
        expected.len(),
        spread(&by_node)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing_and_finishes_in_flight_runs() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("rolling");
    let pipelines = log_pipelines(&dir, &[("test.slowish", "1500ms")]);
    let s = every_second("rolling", "test.slowish")
        .with_max_instances(10)
        .expect("valid");
    schedules::insert(&c, &s).await.expect("insert");
    let mut replicas: Vec<Replica> = (1..=3)
        .map(|i| Replica::start(&db.url, &pipelines, &format!("gen1-{i}"), &[]))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    for i in 1..=3 {
        let old = replicas.remove(0);
        assert!(
            old.terminate(Duration::from_secs(20)),
            "{} exited uncleanly",
            i
        );
        replicas.push(Replica::start(
            &db.url,
            &pipelines,
            &format!("gen2-{i}"),
            &[],
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(3);
    for r in replicas {
        assert!(r.terminate(Duration::from_secs(20)));
    }
    let expected = seconds(from, to);
    let found = ticks(&c, "rolling", from, to).await;
    let by_node = audit("rolling", &expected, &found, &["completed"]);
    println!(
        "rolling restart: {} ticks, wins {}",
        expected.len(),
        spread(&by_node)
    );
}

/// The safety net under NOTIFY: with notifications switched off, the
/// periodic resync alone picks up a created, a changed and a deleted
/// schedule (it re-reads only what differs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_resync_catches_changes_nobody_announced() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("resync");
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    schedules::insert(&c, &every_second("steady", "test.record"))
        .await
        .expect("insert");
    let replica = Replica::start(
        &db.url,
        &pipelines,
        "replica-1",
        &["--resync-interval", "2s"],
    );
    eventually(
        Duration::from_secs(10),
        "the first schedule fires",
        || async {
            let now = db_now(&c).await;
            !ticks(&c, "steady", now - chrono::Duration::seconds(3), now)
                .await
                .is_empty()
        },
    )
    .await;
    c.batch_execute("ALTER TABLE scheduler_schedules DISABLE TRIGGER scheduler_schedules_notify")
        .await
        .expect("silence notifications");

    let created_at = db_now(&c).await;
    schedules::insert(&c, &every_second("unannounced", "test.record"))
        .await
        .expect("insert");
    eventually(
        Duration::from_secs(8),
        "the unannounced schedule fires",
        || async {
            !ticks(&c, "unannounced", created_at, db_now(&c).await)
                .await
                .is_empty()
        },
    )
    .await;

    schedules::delete(&c, "unannounced", None)
        .await
        .expect("delete");
    // A change: `steady` now fires every 3 seconds.
    c.execute(
        "UPDATE scheduler_schedules SET cron_expression = '*/3 * * * * *', version = version + 1, updated_at = now() WHERE name = 'steady'",
        &[],
    )
    .await
    .expect("change");
    let changed_at = db_now(&c).await;
    // Two resync intervals and a margin, then a quiet window to look at.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(1);
    let after_delete = ticks(&c, "unannounced", from, to).await;
    assert!(after_delete.is_empty(), "fired after delete");
    let steady = ticks(&c, "steady", from, to).await;
    assert!(!steady.is_empty(), "the changed schedule stopped firing");
    assert!(
        steady.iter().all(|t| t.at.timestamp() % 3 == 0),
        "still firing every second after the change at {changed_at}: {:?}",
        steady.iter().map(|t| t.at).collect::<Vec<_>>()
    );
    drop(replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_replica_at_once() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("notify");
    let pipelines = log_pipelines(&dir, &[("test.record", "0s")]);
    // A long resync interval: only NOTIFY can explain a prompt reaction.
    let slow_resync = ["--resync-interval", "1h"];
    let replicas: Vec<Replica> = (1..=3)
        .map(|i| Replica::start(&db.url, &pipelines, &format!("replica-{i}"), &slow_resync))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let created_at = db_now(&c).await;
    schedules::insert(&c, &every_second("late_comer", "test.record"))
        .await
        .expect("insert");
    let first_due = created_at + chrono::Duration::seconds(2);
    eventually(Duration::from_secs(5), "the new schedule fires", || async {
        let found = ticks(
            &c,
            "late_comer",
            first_due,
            first_due + chrono::Duration::seconds(1),
        )
        .await;
        !found.is_empty()
    })
    .await;

    let paused_at = db_now(&c).await;
    schedules::set_enabled(&c, "late_comer", false)
        .await
        .expect("pause");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after_pause = ticks(
        &c,
        "late_comer",
        paused_at + chrono::Duration::seconds(1),
        db_now(&c).await,
    )
    .await;
    assert!(after_pause.is_empty(), "fired after pause: {after_pause:?}");

    schedules::set_enabled(&c, "late_comer", true)
        .await
        .expect("resume");
    let resumed_at = db_now(&c).await;
    eventually(
        Duration::from_secs(5),
        "the resumed schedule fires",
        || async {
            !ticks(
                &c,
                "late_comer",
                resumed_at,
                resumed_at + chrono::Duration::seconds(3),
            )
            .await
            .is_empty()
        },
    )
    .await;

    // A manual run is picked up at once (NOTIFY on the runs channel).
    let manual = runs::insert_manual(&c, "late_comer", "test.record")
        .await
        .expect("run now");
    eventually(
        Duration::from_secs(3),
        "the manual run completes",
        || async {
            runs::get(&c, manual.run_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.status == RunStatus::Completed)
        },
    )
    .await;

    schedules::delete(&c, "late_comer", None)
        .await
        .expect("delete");
    let deleted_at = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_delete = ticks(
        &c,
        "late_comer",
        deleted_at + chrono::Duration::seconds(1),
        db_now(&c).await,
    )
    .await;
    assert!(
        after_delete.is_empty(),
        "fired after delete: {after_delete:?}"
    );

    // Everything before the pause was fired exactly once.
    let found = ticks(
        &c,
        "late_comer",
        first_due,
        paused_at - chrono::Duration::seconds(1),
    )
    .await;
    audit(
        "late_comer",
        &seconds(first_due, paused_at - chrono::Duration::seconds(1)),
        &found,
        &["completed"],
    );
    for r in replicas {
        assert!(r.terminate(Duration::from_secs(20)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_missing_pipelines_fail_runs_clearly() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("failures");
    let pipelines = log_pipelines(&dir, &[("test.sleepy", "10s")]);
    let slow = Schedule::cron("too_slow", "test.sleepy", "*/2 * * * * *")
        .and_then(|s| s.with_timeout(Some(Duration::from_secs(1))))
        .and_then(|s| s.with_max_instances(5))
        .expect("valid");
    schedules::insert(&c, &slow).await.expect("insert");
    schedules::insert(&c, &every_second("orphan", "not.defined.anywhere"))
        .await
        .expect("insert");
    let replica = Replica::start(&db.url, &pipelines, "replica-1", &["--log-format", "json"]);
    let failed = |name: &'static str| {
        let c = &c;
        async move {
            c.query_opt(
                "SELECT error FROM scheduler_runs WHERE schedule_name = $1 AND status = 'failed' LIMIT 1",
                &[&name],
            )
            .await
            .expect("query")
            .map(|r| r.get::<_, String>(0))
        }
    };
    eventually(Duration::from_secs(8), "the slow run times out", || async {
        failed("too_slow").await.is_some()
    })
    .await;
    eventually(Duration::from_secs(5), "the orphan run fails", || async {
        failed("orphan").await.is_some()
    })
    .await;
    let timeout_error = failed("too_slow").await.unwrap_or_default();
    assert!(
        timeout_error.contains("timed out after 1s"),
        "{timeout_error}"
    );
    let orphan_error = failed("orphan").await.unwrap_or_default();
    assert!(
        orphan_error.contains("pipeline \"not.defined.anywhere\" is not defined"),
        "{orphan_error}"
    );
    let log = replica.log.clone();
    assert!(replica.terminate(Duration::from_secs(20)));
    // JSON logs: every line about a run carries its run_id and schedule.
    let text = std::fs::read_to_string(&log).expect("log");
    let mut run_lines = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let msg = v["fields"]["message"].as_str().unwrap_or_default();
        if msg.starts_with("run ") {
            run_lines += 1;
            let span = &v["span"];
            assert!(span["run_id"].is_string(), "no run_id: {line}");
            assert!(span["schedule"].is_string(), "no schedule: {line}");
        }
    }
    assert!(
        run_lines >= 4,
        "expected run lines in the log, found {run_lines}"
    );
}
