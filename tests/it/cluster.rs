//! Faults: leader crash, database restart, whole-cluster outage, frozen
//! replica, network partition, clock skew, overlap. Real binaries, real
//! Postgres, and a ledger audit after each.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};
use spine_scheduler::schedule::RetryPolicy;
use spine_scheduler::store::schedules;

use crate::harness::{db_now, eventually, wait_for};
use crate::proxy::Proxy;
use crate::replica::{
    audit, audit_all, doubled_retries, seconds, ticks, EarlyCommitWatcher, Replica,
};
use crate::test_cluster::{
    every_second, insert_every_second, leader, wait_for_leader, TestCluster, FAST,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_and_its_runs_reaped_and_retried() {
    let mut cluster = TestCluster::new("leader-crash", &[("test.slow", "4s")]).await;
    let c = cluster.client().await;
    // Six schedules so every replica owns some; runs take 4 s, so the
    // leader always has some in flight when it dies.
    let retry =
        RetryPolicy::new(2, Duration::from_secs(1), Duration::from_secs(1)).expect("policy");
    let names: Vec<String> = (0..6).map(|i| format!("slow{i}")).collect();
    insert_every_second(&c, &names, "test.slow", |s| {
        s.with_max_instances(10).expect("valid").with_retry(retry)
    })
    .await;
    cluster.start(3, &FAST);
    let old = wait_for_leader(&c, Duration::from_secs(10)).await;
    let from = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let victim = cluster.take(&old);
    let killed = Instant::now();
    victim.kill9();
    let new = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "a new leader",
        || async { leader(&c).await.filter(|l| *l != old) },
    )
    .await;
    let failover = killed.elapsed();
    println!("leader {old} killed; {new} leads after {failover:?}");
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?} (bound 2 s + slack)"
    );

    // The dead replica's in-flight runs: abandoned after the lease, then retried once.
    eventually(Duration::from_secs(15), "the dead leader's runs are abandoned and retried", || async {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE r.status = 'abandoned'), \
                        count(*) FILTER (WHERE r.status = 'running') \
                 FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) \
                 WHERE n.hostname = $1 AND r.attempt = 1",
                &[&old],
            )
            .await
            .expect("abandoned");
        let (abandoned, running): (i64, i64) = (row.get(0), row.get(1));
        let retried: i64 = c
            .query_one(
                "SELECT count(*) FROM scheduler_runs r WHERE r.attempt = 2 AND r.status = 'completed' \
                 AND EXISTS (SELECT 1 FROM scheduler_runs a JOIN scheduler_nodes n USING (node_id) \
                             WHERE n.hostname = $1 AND a.status = 'abandoned' \
                               AND a.schedule_name = r.schedule_name AND a.scheduled_at = r.scheduled_at)",
                &[&old],
            )
            .await
            .expect("retried")
            .get(0);
        abandoned > 0 && running == 0 && retried == abandoned
    })
    .await;
    let to = db_now(&c).await - chrono::Duration::seconds(6);
    cluster.stop_all();
    // Every tick: exactly one first attempt; completed, or abandoned by the crash.
    audit_all(&c, &names, from, to, &["completed", "abandoned"]).await;
    assert_eq!(doubled_retries(&c).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_ride_out_a_database_restart() {
    let pg = tokio::task::spawn_blocking(|| {
        PgCluster::start(ClusterOptions {
            fast_unsafe: true,
            ..Default::default()
        })
    })
    .await
    .expect("join")
    .expect("private cluster");
    let url = pg.url("postgres");
    {
        let mut c = crate::harness::connect(&url).await;
        spine_scheduler::store::migrate::migrate(&mut c)
            .await
            .expect("migrate");
        schedules::insert(&c, &every_second("through_restart", "test.record"))
            .await
            .expect("insert");
    }
    let mut cluster = TestCluster::on(&url, "db-restart", &[("test.record", "0s")]);
    cluster.start(3, &FAST);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = db_now(&cluster.client().await).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart().expect("pg_ctl restart -m fast");
        pg
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c = cluster.client().await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    for r in &mut cluster.replicas {
        assert!(
            r.is_running(),
            "{} died with the database:\n{}",
            r.name,
            r.log_tail()
        );
    }
    cluster.stop_all();
    let found = ticks(&c, "through_restart", from, to).await;
    let wins = audit(
        "through_restart",
        &seconds(from, to),
        &found,
        &["completed", "missed"],
    );
    println!("database restart: {} ticks, wins {wins:?}", found.len());
    // After the restart, ticks are fired again (not all missed).
    let late = found
        .iter()
        .filter(|t| t.at > to - chrono::Duration::seconds(5));
    assert!(late.clone().all(|t| t.statuses[0] == "completed"));
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_outage_is_coalesced_and_recorded() {
    let mut cluster = TestCluster::new("outage", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let s = every_second("through_outage", "test.record")
        .with_misfire_grace(Duration::from_secs(3))
        .expect("valid");
    schedules::insert(&c, &s).await.expect("insert");
    cluster.start(3, &FAST);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.stop_all();
    let down_at = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let up_at = db_now(&c).await;
    cluster.start(3, &FAST);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    cluster.stop_all();
    let found = ticks(&c, "through_outage", from, to).await;
    audit(
        "through_outage",
        &seconds(from, to),
        &found,
        &["completed", "missed", "skipped"],
    );
    // The coalesced backlog run starts as the replicas come back. Ticks
    // around it — the next tick, or a backlog tick within the grace that
    // another replica checks on the owner's behalf (never coalesced) — may
    // be judged while it runs: max_instances 1 records them skipped.
    // Anywhere else a skipped tick is a fault.
    let skipped: Vec<_> = found
        .iter()
        .filter(|t| t.statuses[0] == "skipped")
        .map(|t| t.at)
        .collect();
    assert!(
        skipped
            .iter()
            .all(|at| *at >= up_at - chrono::Duration::seconds(4)
                && *at <= up_at + chrono::Duration::seconds(5)),
        "skipped outside the restart: {skipped:?} (restart at {up_at})"
    );
    let outage: Vec<_> = found
        .iter()
        .filter(|t| t.at > down_at + chrono::Duration::seconds(1) && t.at < up_at)
        .collect();
    let ran = outage
        .iter()
        .filter(|t| t.statuses[0] == "completed")
        .count();
    assert!(outage.len() >= 7, "outage ticks: {}", outage.len());
    assert!(
        ran <= 1,
        "the backlog ran {ran} times; coalesce runs it once (outage {down_at}..{up_at}: {:?})",
        outage
            .iter()
            .map(|t| (t.at, &t.statuses, &t.nodes))
            .collect::<Vec<_>>()
    );
    println!(
        "outage: {} ticks, {} ran (coalesced), {} missed",
        outage.len(),
        ran,
        outage.len() - ran
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_loses_its_runs_and_rejoins_as_follower() {
    let mut cluster = TestCluster::new("frozen", &[("test.slow", "2s")]).await;
    let c = cluster.client().await;
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    insert_every_second(&c, &names, "test.slow", |s| {
        s.with_max_instances(10).expect("valid")
    })
    .await;
    cluster.start(3, &FAST);
    let frozen = wait_for_leader(&c, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = db_now(&c).await;
    let victim = cluster.get(&frozen);
    victim.signal("STOP");
    let stopped_at = db_now(&c).await;
    // Longer than the lease (3 s) and the leader session's idle timeout (5 s).
    tokio::time::sleep(Duration::from_secs(9)).await;
    let during = leader(&c).await;
    assert!(
        during.as_ref().is_some_and(|l| *l != frozen),
        "another replica leads while {frozen} is frozen (got {during:?})"
    );
    victim.signal("CONT");
    let resumed_at = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(3);
    let now_leader = leader(&c).await;
    assert!(
        now_leader.is_some_and(|l| l != frozen),
        "{frozen} rejoined as a follower"
    );
    // Its runs in flight at the freeze were reaped, and stayed reaped.
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE r.status = 'abandoned'), \
                    count(*) FILTER (WHERE r.status = 'running' AND r.scheduled_at <= $3), \
                    count(*) FILTER (WHERE r.scheduled_at > $2::timestamptz + interval '1 second') \
             FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) WHERE n.hostname = $1",
            &[&frozen, &resumed_at, &stopped_at],
        )
        .await
        .expect("frozen runs");
    let (abandoned, running, after): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(abandoned > 0, "its in-flight runs were reaped");
    assert_eq!(running, 0, "no run from before the freeze left running");
    assert!(after > 0, "{frozen} fires again after it resumed");
    let state: String = c
        .query_one(
            "SELECT state FROM scheduler_nodes WHERE hostname = $1",
            &[&frozen],
        )
        .await
        .expect("state")
        .get(0);
    assert_eq!(state, "active");
    cluster.stop_all();
    audit_all(&c, &names, from, to, &["completed", "abandoned"]).await;
    for name in &names {
        for t in ticks(&c, name, from, to).await {
            if t.statuses[0] == "abandoned" {
                assert!(
                    t.at >= stopped_at - chrono::Duration::seconds(3) && t.at <= stopped_at,
                    "{}: abandoned outside the freeze",
                    t.at
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_and_rejoins() {
    let mut cluster = TestCluster::new("partition", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    // max_instances 10: the cut-off replica's stuck runs (running until
    // reaped) must not make the others skip ticks.
    let names: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    insert_every_second(&c, &names, "test.record", |s| {
        s.with_max_instances(10).expect("valid")
    })
    .await;
    let mut proxy = Proxy::in_front_of(&cluster.url, Duration::from_secs(5)).await;
    let via_proxy = proxy.url(&cluster.url);
    let cut_off = Replica::start(&via_proxy, &cluster.pipelines, "cut-off", &FAST);
    assert_eq!(
        wait_for_leader(&c, Duration::from_secs(10)).await,
        "cut-off"
    );
    cluster.start(2, &FAST);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = db_now(&c).await;
    proxy.cut();
    let cut_at = Instant::now();
    let cut_wall = Utc::now();
    let new = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "a new leader while the old one is cut off",
        || async { leader(&c).await.filter(|l| l != "cut-off") },
    )
    .await;
    let takeover = cut_at.elapsed();
    println!("partition: {new} took over after {takeover:?}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.heal();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    let log = std::fs::read_to_string(&cut_off.log).unwrap_or_default();
    cluster.stop_all();
    assert!(cut_off.terminate(Duration::from_secs(30)));
    // The cut-off leader noticed on its own, within ping interval + timeout.
    let stepped_down = log
        .lines()
        .find(|l| l.contains("stepped down as leader"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .expect("a step-down line in the cut-off replica's log");
    let noticed = stepped_down - cut_wall;
    println!(
        "partition: the cut-off leader stepped down after {} ms",
        noticed.num_milliseconds()
    );
    assert!(
        noticed < chrono::Duration::milliseconds(4000),
        "stepped down {noticed} after the cut (ping interval 1 s + timeout 2 s)"
    );
    let rejoined: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) \
             WHERE n.hostname = 'cut-off' AND r.scheduled_at > $1 AND r.status = 'completed'",
            &[&(to - chrono::Duration::seconds(5))],
        )
        .await
        .expect("rejoined")
        .get(0);
    assert!(rejoined > 0, "the healed replica fires again");
    audit_all(&c, &names, from, to, &["completed", "abandoned"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_fast_clock_fires_nothing_early_or_twice() {
    let mut cluster = TestCluster::new("skew", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let names: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    insert_every_second(&c, &names, "test.record", |s| s).await;
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--test-clock-skew", "30s"]);
    let watcher = EarlyCommitWatcher::start(&cluster.url).await;
    cluster.add("fast-clock", &args);
    cluster.add("normal", &FAST);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    assert_eq!(
        leader(&c).await.as_deref(),
        Some("normal"),
        "a skewed clock does not lead"
    );
    cluster.stop_all_within(Duration::from_secs(20));
    let by_node = audit_all(&c, &names, from, to, &["completed"]).await;
    assert!(
        by_node.get("fast-clock").is_some_and(|&n| n > 0),
        "the skewed replica fired: {by_node:?}"
    );
    // Claims are written ahead of the tick but must become visible only
    // after it, on the database clock, whatever the replica's own clock says.
    let early = watcher.stop().await;
    assert!(
        early.is_empty(),
        "committed before the tick on the database clock: {early:?}"
    );
    let stamped_early: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE claimed_at < scheduled_at",
            &[],
        )
        .await
        .expect("early")
        .get(0);
    assert_eq!(stamped_early, 0, "claimed_at before the tick");
    println!("clock skew +30s: wins {by_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_is_enforced_across_replicas() {
    let mut cluster = TestCluster::new("overlap", &[("test.long", "2500ms")]).await;
    let c = cluster.client().await;
    schedules::insert(&c, &every_second("one_at_a_time", "test.long"))
        .await
        .expect("insert");
    cluster.start(3, &FAST);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(4);
    cluster.stop_all();
    let found = ticks(&c, "one_at_a_time", from, to).await;
    audit(
        "one_at_a_time",
        &seconds(from, to),
        &found,
        &["completed", "skipped"],
    );
    let skipped = found.iter().filter(|t| t.statuses[0] == "skipped").count();
    assert!(
        skipped >= found.len() / 2,
        "overlapping ticks are skipped ({skipped}/{})",
        found.len()
    );
    let overlaps: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs a JOIN scheduler_runs b \
               ON a.schedule_name = b.schedule_name AND a.run_id < b.run_id \
             WHERE a.status = 'completed' AND b.status = 'completed' \
               AND tstzrange(a.claimed_at, a.completed_at) && tstzrange(b.claimed_at, b.completed_at)",
            &[],
        )
        .await
        .expect("overlaps")
        .get(0);
    assert_eq!(
        overlaps, 0,
        "two runs of a max_instances=1 schedule overlapped"
    );
}
