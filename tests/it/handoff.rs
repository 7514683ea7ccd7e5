//! The safety net with settled-tick digests: a replica checks another's
//! share by comparing that owner's digest instead of probing every tick, and
//! falls back to probing whenever the two disagree — here, because the owner
//! does not know some schedules at all.

use std::time::Duration;

use crate::api_replica::{start_api_replica, Http, PIPELINE};
use crate::exposition::parse_exposition;
use crate::harness::{db_now, TestDb};
use crate::replica::{audit, audit_all, seconds, temp_dir, ticks};
use crate::test_cluster::{insert_every_second, TestCluster};

/// Two replicas that agree on everything settle each other's shares by
/// digest; the ledger still has one row per tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_agree_check_each_other_by_digest() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let names: Vec<String> = (0..20).map(|i| format!("agreed-{i:02}")).collect();
    insert_every_second(&c, &names, PIPELINE, |s| s).await;
    let a = start_api_replica(&db.url, &temp_dir("digest-a"), "replica-a").await;
    let b = start_api_replica(&db.url, &temp_dir("digest-b"), "replica-b").await;
    // Both see each other (heartbeats every 500 ms), then a window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);

    let http = Http::new();
    for node in [&a, &b] {
        let r = http.get(&node.base, "/metrics", None).await;
        let m = parse_exposition(&r.text).expect("exposition");
        let by_digest = m
            .value("spine_handoff_checks_total", &[("how", "digest")])
            .unwrap_or(0.0);
        assert!(
            by_digest > 0.0,
            "{} settled no handoff check by digest:\n{}",
            node.base,
            r.text
        );
    }
    for node in [a, b] {
        assert!(node.replica.terminate(Duration::from_secs(20)));
    }
    audit_all(&c, &names, from, to, &["completed"]).await;
}

/// The owner does not know some schedules (created while notifications were
/// off, before its next resync): its digests never match what the other
/// replica expects of it, so that replica probes and claims the owner's
/// share one handoff delay late. Nothing is missed, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_the_owner_does_not_know_are_still_claimed() {
    let mut cluster = TestCluster::new("digest-unknown", &[(PIPELINE, "0s")]).await;
    let c = cluster.client().await;
    // Schedules both know, so that replica-a publishes digests, which then
    // differ from what replica-b expects of it.
    let known: Vec<String> = (0..8).map(|i| format!("known-{i:02}")).collect();
    insert_every_second(&c, &known, PIPELINE, |s| s).await;
    let quiet = ["--resync-interval", "10m"];
    cluster.add("replica-a", &quiet);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.batch_execute("ALTER TABLE scheduler_schedules DISABLE TRIGGER scheduler_schedules_notify")
        .await
        .expect("silence notifications");
    let names: Vec<String> = (0..16).map(|i| format!("unknown-{i:02}")).collect();
    insert_every_second(&c, &names, PIPELINE, |s| s).await;
    // B loads every schedule at start; A never hears of these.
    cluster.add("replica-b", &quiet);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(3);
    cluster.stop_all_within(Duration::from_secs(20));

    let expected = seconds(from, to);
    assert!(expected.len() >= 5, "window too short");
    for name in &names {
        let by_node = audit(
            name,
            &expected,
            &ticks(&c, name, from, to).await,
            &["completed"],
        );
        assert_eq!(
            by_node.keys().collect::<Vec<_>>(),
            ["replica-b"],
            "{name}: only replica-b knows it"
        );
    }
    audit_all(&c, &known, from, to, &["completed"]).await;
    // Half of them (by the share hash) are replica-a's share: replica-b
    // claimed those through the fallback, a handoff delay late.
    let late: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs
             WHERE schedule_name LIKE 'unknown-%' AND scheduled_at BETWEEN $1 AND $2
               AND claimed_at - scheduled_at > interval '500 ms'",
            &[&from, &to],
        )
        .await
        .expect("late claims")
        .get(0);
    assert!(late > 0, "no tick went through the handoff fallback");
}
