//! The engine end to end: real binaries as separate processes, real Postgres,
//! every test audits the ledger (one row per due tick, none doubled, none missing).

use std::time::Duration;

use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::runs;
use spine_scheduler::store::schedules;
use spine_scheduler::types::RunStatus;

use crate::harness::{db_now, eventually};
use crate::replica::{audit, audit_all, seconds, ticks, wait_for_tick};
use crate::test_cluster::{every_second, insert_every_second, TestCluster};

fn spread(by_node: &std::collections::BTreeMap<String, usize>) -> String {
    by_node
        .iter()
        .map(|(n, c)| format!("{n}={c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_fire_each_second_exactly_once() {
    let mut cluster = TestCluster::new("three", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    schedules::insert(&c, &every_second("each_second", "test.record"))
        .await
        .expect("insert");
    cluster.start(3, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(33)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    cluster.stop_all_within(Duration::from_secs(20));
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
    let mut cluster = TestCluster::new("two-hundred", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let names: Vec<String> = (0..200).map(|i| format!("s{i:03}")).collect();
    insert_every_second(&c, &names, "test.record", |s| s).await;
    // Two of them claim in small chunks, three transactions open at once
    // (the claim pipeline; see `engine::claimer`): ~67 own ticks a second
    // are 3–4 chunks, each written while the one before waits for the tick.
    let pipelined = ["--claim-batch-size", "20", "--claim-concurrency", "3"];
    cluster.add("replica-1", &[]);
    cluster.add("replica-2", &pipelined);
    cluster.add("replica-3", &pipelined);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    cluster.stop_all_within(Duration::from_secs(20));
    let expected = seconds(from, to);
    let total = audit_all(&c, &names, from, to, &["completed"]).await;
    println!(
        "3 replicas x 200 schedules x {} ticks: wins {}",
        expected.len(),
        spread(&total)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_loses_no_tick() {
    // Runs take 2.5 s, so a replica always has some in flight when it dies.
    let mut cluster = TestCluster::new("kill9", &[("test.slow", "2500ms")]).await;
    let c = cluster.client().await;
    let s = every_second("slow", "test.slow")
        .with_max_instances(10)
        .expect("valid");
    schedules::insert(&c, &s).await.expect("insert");
    cluster.start(3, &[]);
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
    let victim = cluster.take(&busy);
    let killed_at = db_now(&c).await;
    victim.kill9();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(4);
    cluster.stop_all();
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
    let mut cluster = TestCluster::new("rolling", &[("test.slowish", "1500ms")]).await;
    let c = cluster.client().await;
    let s = every_second("rolling", "test.slowish")
        .with_max_instances(10)
        .expect("valid");
    schedules::insert(&c, &s).await.expect("insert");
    for i in 1..=3 {
        cluster.add(&format!("gen1-{i}"), &[]);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    for i in 1..=3 {
        let old = cluster.replicas.remove(0);
        assert!(
            old.terminate(Duration::from_secs(20)),
            "{} exited uncleanly",
            i
        );
        cluster.add(&format!("gen2-{i}"), &[]);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(3);
    cluster.stop_all_within(Duration::from_secs(20));
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
    let mut cluster = TestCluster::new("resync", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    schedules::insert(&c, &every_second("steady", "test.record"))
        .await
        .expect("insert");
    cluster.add("replica-1", &["--resync-interval", "2s"]);
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
    wait_for_tick(
        &c,
        "unannounced",
        created_at,
        None,
        Duration::from_secs(8),
        "the unannounced schedule fires",
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
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_replica_at_once() {
    let mut cluster = TestCluster::new("notify", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    // A long resync interval: only NOTIFY can explain a prompt reaction.
    let slow_resync = ["--resync-interval", "1h"];
    cluster.start(3, &slow_resync);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let created_at = db_now(&c).await;
    schedules::insert(&c, &every_second("late_comer", "test.record"))
        .await
        .expect("insert");
    let first_due = created_at + chrono::Duration::seconds(2);
    wait_for_tick(
        &c,
        "late_comer",
        first_due,
        Some(first_due + chrono::Duration::seconds(1)),
        Duration::from_secs(5),
        "the new schedule fires",
    )
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
    wait_for_tick(
        &c,
        "late_comer",
        resumed_at,
        Some(resumed_at + chrono::Duration::seconds(3)),
        Duration::from_secs(5),
        "the resumed schedule fires",
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
    cluster.stop_all_within(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_missing_pipelines_fail_runs_clearly() {
    let mut cluster = TestCluster::new("failures", &[("test.sleepy", "10s")]).await;
    let c = cluster.client().await;
    let slow = Schedule::cron("too_slow", "test.sleepy", "*/2 * * * * *")
        .and_then(|s| s.with_timeout(Some(Duration::from_secs(1))))
        .and_then(|s| s.with_max_instances(5))
        .expect("valid");
    schedules::insert(&c, &slow).await.expect("insert");
    schedules::insert(&c, &every_second("orphan", "not.defined.anywhere"))
        .await
        .expect("insert");
    cluster.add("replica-1", &["--log-format", "json"]);
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
    let log = cluster.get("replica-1").log.clone();
    cluster.stop_all_within(Duration::from_secs(20));
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

/// A SIGTERM while a replica is still starting — here waiting (up to 5 s)
/// for its liveness session, on a server that accepts and never answers,
/// while its API may already say ready — is held and drained once the
/// engine runs: the process exits 0 and records `left`, instead of dying of
/// the signal (the handlers are installed when `serve` starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_start_up_is_drained_not_fatal() {
    let mut cluster = TestCluster::new("early-term", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a silent server");
    let port = silent.local_addr().expect("address").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let silent_url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    cluster.add("early", &["--leader-database-url", &silent_url]);
    eventually(
        Duration::from_secs(20),
        "the starting replica has written its node row",
        || async {
            crate::test_cluster::node_states(&c)
                .await
                .iter()
                .any(|(name, _)| name == "early")
        },
    )
    .await;
    let replica = cluster.take("early");
    let log = replica.log.clone();
    assert!(
        replica.terminate(Duration::from_secs(30)),
        "a SIGTERM during start-up killed the replica instead of draining it; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let states = crate::test_cluster::node_states(&c).await;
    assert!(
        states.iter().any(|(n, s)| n == "early" && s == "left"),
        "the replica did not record leaving: {states:?}"
    );
}
