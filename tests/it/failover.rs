//! Failover in milliseconds: liveness from the database session.
//!
//! Each replica holds an advisory lock on a dedicated "liveness" session;
//! a crashed replica's session ends at once and the server frees the lock,
//! so the others see it gone within one membership poll (100 ms) instead of
//! a heartbeat lease. These tests run the real binary (three replicas,
//! every-second schedules) and check, on the database clock and in the
//! ledger: a killed replica's share fires on time, a killed leader is
//! replaced within 500 ms and its runs are reaped within a second and
//! retried, a rolling restart loses and doubles nothing, and a replica that
//! only loses its liveness session (recycled, or its network path cut while
//! the pool still works) is never declared dead.
//!
//! Timing bounds are asserted, so these tests take [`SERIAL`] and run one
//! at a time (the CI machine has two cores). The figures are printed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use spine_scheduler::schedule::RetryPolicy;
use spine_scheduler::store::locks;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::harness::{db_now, eventually, sleep_until_db, wait_for};
use crate::proxy::Proxy;
use crate::replica::{audit_all, doubled_retries, false_skips, rows_with_status, Replica};
use crate::test_cluster::{
    insert_every_second, leader_other_than, node_states, wait_for_leader_other_than, TestCluster,
    FAST,
};

/// Held for a whole test: the tests that assert timing bounds run one at a
/// time (also taken by `overlap`'s and `outage`'s end-to-end tests).
use crate::test_cluster::SERIAL;

/// The default handoff delay: the safety net claims a share this late.
const HANDOFF: chrono::Duration = chrono::Duration::milliseconds(1000);

/// A tick started later than this after its instant is late.
const LATE: chrono::Duration = chrono::Duration::milliseconds(200);

/// How long the server keeps a silent liveness session (its
/// `idle_session_timeout`, 2 s by default): the proxy closes its server
/// side of a cut connection after this, as the server itself would.
const SERVER_GIVES_UP: Duration = Duration::from_secs(2);

/// `application_name` of the liveness sessions.
const LIVENESS_APP: &str = "spine-scheduler liveness";

/// Sleeps until `before` ahead of a whole second on the database clock
/// (at least 300 ms from now): a kill then lands while the victim's claim
/// for that tick is written ahead and waiting to commit, the worst moment.
async fn sleep_until_just_before_a_tick(c: &Client, before: chrono::Duration) {
    let now = db_now(c).await;
    let mut target =
        DateTime::from_timestamp(now.timestamp() + 1, 0).expect("valid instant") - before;
    if target - now < chrono::Duration::milliseconds(300) {
        target += chrono::Duration::seconds(1);
    }
    if let Ok(wait) = (target - now).to_std() {
        tokio::time::sleep(wait).await;
    }
}

fn ms(d: chrono::Duration) -> i64 {
    d.num_milliseconds()
}

/// `{prefix}00`, `{prefix}01`, … up to `n` names.
fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// The three replicas most tests here run.
const THREE: [&str; 3] = ["replica-1", "replica-2", "replica-3"];

/// Starts [`THREE`] and waits until each is a member and fires its share.
async fn start_three_firing(cluster: &mut TestCluster, c: &Client) {
    cluster.start(3, &FAST);
    wait_until_all_fire(c, &THREE).await;
}

/// Polls every 100 ms until `count` (a count over the hostnames in `$1`)
/// counts every named replica.
async fn wait_until_counted(c: &Client, names: &[&str], limit: Duration, what: &str, count: &str) {
    let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let want = &want;
    eventually(limit, &format!("{want:?} {what}"), || async move {
        c.query_one(count, &[want])
            .await
            .map(|r| r.get::<_, i64>(0) == want.len() as i64)
            .unwrap_or(false)
    })
    .await;
}

/// Waits until every named replica is an active node holding a liveness key.
async fn wait_for_members(c: &Client, names: &[&str], limit: Duration) {
    wait_until_counted(
        c,
        names,
        limit,
        "registered, active, with a liveness key",
        "SELECT count(*) FROM scheduler_nodes \
         WHERE hostname = ANY($1) AND state = 'active' AND liveness_key IS NOT NULL",
    )
    .await;
}

/// Waits until every named replica is a member (within 20 s), then until
/// each has claimed a tick in the last 2 s (within 15 s).
async fn wait_until_all_fire(c: &Client, names: &[&str]) {
    wait_for_members(c, names, Duration::from_secs(20)).await;
    wait_until_counted(
        c,
        names,
        Duration::from_secs(15),
        "all fire their shares",
        "SELECT count(DISTINCT n.hostname) FROM scheduler_runs r \
         JOIN scheduler_nodes n USING (node_id) \
         WHERE n.hostname = ANY($1) AND r.trigger = 'schedule' \
           AND r.scheduled_at > now() - interval '2 seconds'",
    )
    .await;
}

async fn node_id(c: &Client, name: &str) -> Uuid {
    c.query_one(
        "SELECT node_id FROM scheduler_nodes WHERE hostname = $1 ORDER BY started_at DESC LIMIT 1",
        &[&name],
    )
    .await
    .unwrap_or_else(|e| panic!("node row of {name}: {e}"))
    .get(0)
}

/// The session holding `node`'s liveness lock right now: its backend pid,
/// its `application_name`, and the key (`pg_advisory_lock(LIVENESS_CLASS,
/// key)`: classid = LIVENESS_CLASS, objid = key, objsubid = 2).
async fn liveness_holder(c: &Client, node: Uuid) -> Option<(i32, String, i32)> {
    let rows = c
        .query(
            "SELECT l.pid, coalesce(a.application_name, ''), n.liveness_key \
             FROM scheduler_nodes n \
             JOIN pg_locks l ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted \
                  AND l.classid = $2::int4::oid AND l.objid = n.liveness_key::oid \
                  AND l.database = (SELECT d.oid FROM pg_database d \
                                    WHERE d.datname = current_database()) \
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE n.node_id = $1",
            &[&node, &locks::LIVENESS_CLASS],
        )
        .await
        .expect("liveness holder query");
    assert!(rows.len() <= 1, "{} sessions hold one key", rows.len());
    rows.first().map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Polls every 20 ms until `node`'s liveness lock is held by a session
/// other than `old_pid`; how long that took, and the new holder.
async fn wait_for_new_liveness(
    c: &Client,
    node: Uuid,
    old_pid: i32,
    limit: Duration,
) -> (Duration, (i32, String, i32)) {
    let start = Instant::now();
    let holder = wait_for(
        limit,
        Duration::from_millis(20),
        &format!("a new liveness session holding a key for {node}"),
        || async { liveness_holder(c, node).await.filter(|h| h.0 != old_pid) },
    )
    .await;
    (start.elapsed(), holder)
}

/// What [`NodeWatcher`] saw of one replica's node row.
#[derive(Debug, Default)]
struct Watched {
    /// Every state seen.
    states: BTreeSet<String>,
    /// When (database clock) it was first seen `dead`.
    dead_at: Option<DateTime<Utc>>,
    /// The most `abandoned` rows of it seen at once.
    abandoned: i64,
    /// Whether it was seen in lease mode (no liveness key).
    lease_mode_seen: bool,
    /// Polls that found its row.
    polls: usize,
}

/// Watches one replica's node row every 20 ms for as long as it lives: a
/// `dead` state shows only briefly (its next heartbeat revives the row), so
/// it must be looked at continuously.
struct NodeWatcher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Watched>,
}

impl NodeWatcher {
    async fn start(url: &str, node: Uuid) -> NodeWatcher {
        let c = crate::harness::connect(url).await;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut seen = Watched::default();
            loop {
                if let Ok(Some(row)) = c
                    .query_opt(
                        "SELECT n.state, n.liveness_key IS NULL, now(), \
                                (SELECT count(*) FROM scheduler_runs r \
                                 WHERE r.node_id = n.node_id AND r.status = 'abandoned') \
                         FROM scheduler_nodes n WHERE n.node_id = $1",
                        &[&node],
                    )
                    .await
                {
                    let state: String = row.get(0);
                    if state == "dead" && seen.dead_at.is_none() {
                        seen.dead_at = Some(row.get(2));
                    }
                    seen.states.insert(state);
                    seen.lease_mode_seen |= row.get::<_, bool>(1);
                    seen.abandoned = seen.abandoned.max(row.get(3));
                    seen.polls += 1;
                }
                tokio::select! {
                    _ = &mut stopped => return seen,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        NodeWatcher { stop, task }
    }

    async fn stop(self) -> Watched {
        let _ = self.stop.send(());
        self.task.await.expect("node watcher")
    }
}

/// One first-attempt ledger row of a tick.
#[derive(Debug)]
struct TickRow {
    schedule: String,
    at: DateTime<Utc>,
    status: String,
    started: Option<DateTime<Utc>>,
    node: String,
}

/// The first-attempt scheduled rows with ticks in `(from, to]`.
async fn tick_rows(c: &Client, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<TickRow> {
    c.query(
        "SELECT r.schedule_name, r.scheduled_at, r.status, r.started_at, \
                coalesce(n.hostname, r.node_id::text, '-') \
         FROM scheduler_runs r LEFT JOIN scheduler_nodes n USING (node_id) \
         WHERE r.trigger = 'schedule' AND r.attempt = 1 \
           AND r.scheduled_at > $1 AND r.scheduled_at <= $2 \
         ORDER BY r.schedule_name, r.scheduled_at",
        &[&from, &to],
    )
    .await
    .expect("ledger rows")
    .iter()
    .map(|r| TickRow {
        schedule: r.get(0),
        at: r.get(1),
        status: r.get(2),
        started: r.get(3),
        node: r.get(4),
    })
    .collect()
}

/// p50 / p99 / max of start lags, in ms.
fn lag_summary(lags: &[i64]) -> String {
    if lags.is_empty() {
        return "no starts".into();
    }
    let mut v = lags.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "{} starts, lag p50 {} ms, p99 {} ms, max {} ms",
        v.len(),
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    )
}

/// (a) A replica owning a share of 20 every-second schedules is killed with
/// SIGKILL just before a tick: the survivors take its share over at once.
/// In the 15 s after the kill every tick has exactly one row, none skipped
/// or missed, at most one tick per schedule starts more than 200 ms late,
/// and none later than the handoff delay (1 s) + 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_share_fires_on_time() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("failover-kill", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let names = numbered("k", 20);
    insert_every_second(&c, &names, "test.record", |s| s).await;
    start_three_firing(&mut cluster, &c).await;
    // Past the start-up transient (shares moving as members join).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The owner of the largest share: the replica that wrote most of the
    // last 3 s of rows.
    let owners: Vec<(String, i64)> = c
        .query(
            "SELECT n.hostname, count(*) FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) \
             WHERE r.trigger = 'schedule' AND r.scheduled_at > now() - interval '3 seconds' \
             GROUP BY n.hostname ORDER BY count(*) DESC, n.hostname",
            &[],
        )
        .await
        .expect("owners")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let victim_name = owners.first().expect("rows in the last 3 s").0.clone();
    let victim = cluster.take(&victim_name);
    sleep_until_just_before_a_tick(&c, chrono::Duration::milliseconds(60)).await;
    let killed_at = db_now(&c).await;
    victim.kill9();
    println!(
        "failover/kill: killed {victim_name} (rows in the last 3 s by node: {owners:?}) at {killed_at}"
    );

    let to = killed_at + chrono::Duration::seconds(15);
    // Until every tick of the window has started (late ones within 1.2 s)
    // and its 0 s run is written.
    sleep_until_db(&c, to + chrono::Duration::seconds(3)).await;
    let wins = audit_all(&c, &names, killed_at, to, &["completed", "abandoned"]).await;
    let rows = tick_rows(&c, killed_at, to).await;
    // Only a run in flight at the kill may be abandoned: none is after it.
    let abandoned: Vec<&TickRow> = rows.iter().filter(|r| r.status == "abandoned").collect();
    assert!(
        abandoned
            .iter()
            .all(|r| r.at <= killed_at + chrono::Duration::milliseconds(20)),
        "abandoned ticks after the kill: {abandoned:?}"
    );
    // Per schedule: (tick, lag in ms, node).
    type Starts<'a> = Vec<(DateTime<Utc>, i64, &'a str)>;
    let mut by_schedule: BTreeMap<&str, Starts> = BTreeMap::new();
    for r in &rows {
        let started = r
            .started
            .unwrap_or_else(|| panic!("{} {}: {} with no start", r.schedule, r.at, r.status));
        by_schedule
            .entry(&r.schedule)
            .or_default()
            .push((r.at, ms(started - r.at), &r.node));
    }
    let lags: Vec<i64> = by_schedule.values().flatten().map(|t| t.1).collect();
    let late: Vec<_> = by_schedule
        .iter()
        .flat_map(|(s, v)| v.iter().filter(|t| t.1 > ms(LATE)).map(move |t| (*s, t)))
        .collect();
    println!(
        "failover/kill: 15 s after the kill: {}; {} late (> {} ms): {late:?}; wins {wins:?}",
        lag_summary(&lags),
        late.len(),
        ms(LATE)
    );
    let max = lags.iter().copied().max().unwrap_or(0);
    assert!(
        max <= ms(HANDOFF + LATE),
        "a tick started {max} ms late (bound: handoff delay + {} ms)",
        ms(LATE)
    );
    for (schedule, v) in &by_schedule {
        let n = v.iter().filter(|t| t.1 > ms(LATE)).count();
        assert!(
            n <= 1,
            "{schedule}: {n} ticks started more than {} ms late: {v:?}",
            ms(LATE)
        );
    }
    cluster.stop_all();
}

/// (b) The leader is killed while its (3 s) runs are in flight: another
/// replica is recorded leader within 500 ms, the dead one's runs are
/// `abandoned` within 1 s of the kill (database clock) and retried (attempt
/// 2, trigger `retry`) until completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_in_milliseconds_and_its_runs_reaped_within_a_second() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("failover-leader", &[("test.slow", "3s")]).await;
    let c = cluster.client().await;
    let retry =
        RetryPolicy::new(2, Duration::from_secs(1), Duration::from_secs(1)).expect("policy");
    let names = numbered("slow", 15);
    insert_every_second(&c, &names, "test.slow", |s| {
        s.with_max_instances(10).expect("valid").with_retry(retry)
    })
    .await;
    start_three_firing(&mut cluster, &c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old = wait_for_leader_other_than(&c, "", Duration::from_secs(10)).await;
    let old_id = node_id(&c, &old).await;
    // Runs take 3 s: wait until the leader has a few in flight.
    let (cc, id) = (&c, old_id);
    eventually(
        Duration::from_secs(10),
        "the leader has runs in flight",
        || async move {
            cc.query_one(
                "SELECT count(*) FROM scheduler_runs WHERE node_id = $1 AND status = 'running'",
                &[&id],
            )
            .await
            .map(|r| r.get::<_, i64>(0) >= 3)
            .unwrap_or(false)
        },
    )
    .await;
    let from = db_now(&c).await - chrono::Duration::seconds(1);
    let victim = cluster.take(&old);
    let killed_at = db_now(&c).await;
    let killed = Instant::now();
    victim.kill9();

    let new = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "a new leader",
        || leader_other_than(&c, &old),
    )
    .await;
    let failover = killed.elapsed();
    let since: Option<DateTime<Utc>> = c
        .query_one(
            "SELECT leader_since FROM scheduler_nodes WHERE hostname = $1",
            &[&new],
        )
        .await
        .expect("leader_since")
        .get(0);
    println!(
        "failover/leader: {old} killed; {new} recorded leader after {} ms (leader_since {:?} ms after the kill, database clock)",
        failover.as_millis(),
        since.map(|s| ms(s - killed_at))
    );
    assert!(
        failover <= Duration::from_millis(500),
        "a new leader after {failover:?} (bound 500 ms)"
    );

    // Its in-flight runs: abandoned within 1 s of the kill.
    let reaped = wait_for(
        Duration::from_secs(10).saturating_sub(killed.elapsed()),
        Duration::from_millis(20),
        "the dead leader's runs reaped within 10 s",
        || async {
            let running: i64 = c
                .query_one(
                    "SELECT count(*) FROM scheduler_runs WHERE node_id = $1 AND status = 'running'",
                    &[&old_id],
                )
                .await
                .expect("running")
                .get(0);
            (running == 0).then(|| killed.elapsed())
        },
    )
    .await;
    let row = c
        .query_one(
            "SELECT count(*), min(completed_at), max(completed_at) FROM scheduler_runs \
             WHERE node_id = $1 AND status = 'abandoned'",
            &[&old_id],
        )
        .await
        .expect("abandoned");
    let (abandoned, first, last): (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (row.get(0), row.get(1), row.get(2));
    let (first, last) = (
        first.expect("abandoned rows"),
        last.expect("abandoned rows"),
    );
    println!(
        "failover/leader: {abandoned} runs of {old} abandoned {}..{} ms after the kill (database clock); none running after {} ms",
        ms(first - killed_at),
        ms(last - killed_at),
        reaped.as_millis()
    );
    assert!(abandoned >= 3, "its in-flight runs were reaped");
    assert!(
        last - killed_at <= chrono::Duration::milliseconds(1000),
        "abandoned {} ms after the kill (bound 1 s)",
        ms(last - killed_at)
    );

    // Retried: attempt 2 of each, completed.
    let cc = &c;
    eventually(
        Duration::from_secs(15),
        "every abandoned run retried and completed",
        || async move {
            cc.query_one(
                "SELECT count(*) FILTER (WHERE NOT EXISTS ( \
                     SELECT 1 FROM scheduler_runs n WHERE n.schedule_name = a.schedule_name \
                       AND n.scheduled_at = a.scheduled_at AND n.attempt = 2 \
                       AND n.trigger = 'retry' AND n.status = 'completed')) \
                 FROM scheduler_runs a WHERE a.node_id = $1 AND a.status = 'abandoned'",
                &[&old_id],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 0)
            .unwrap_or(false)
        },
    )
    .await;
    let retried = killed.elapsed();
    assert_eq!(doubled_retries(&c).await, 0, "a retry doubled");
    println!(
        "failover/leader: all retries completed {} ms after the kill",
        retried.as_millis()
    );
    // Every tick around the kill: one first attempt, completed or (the dead
    // leader's, in flight at the kill) abandoned.
    let to = killed_at + chrono::Duration::seconds(2);
    sleep_until_db(&c, to + chrono::Duration::seconds(4)).await;
    audit_all(&c, &names, from, to, &["completed", "abandoned"]).await;
    let late_abandoned: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE status = 'abandoned' \
             AND (node_id <> $1 OR scheduled_at > $2)",
            &[&old_id, &killed_at],
        )
        .await
        .expect("abandoned elsewhere")
        .get(0);
    assert_eq!(
        late_abandoned, 0,
        "abandoned rows other than the dead leader's in-flight runs"
    );
    cluster.stop_all();
}

/// (c) A rolling restart: each of three replicas in turn gets SIGTERM and a
/// new replica (new node) starts. Over the whole window every tick of 20
/// every-second schedules has exactly one row, and it completed: nothing
/// skipped, missed, abandoned or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("failover-rolling", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let names = numbered("r", 20);
    insert_every_second(&c, &names, "test.record", |s| s).await;
    start_three_firing(&mut cluster, &c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = db_now(&c).await;
    for i in 0..3 {
        let old = cluster.replicas.remove(0);
        let old_name = old.name.clone();
        let t = Instant::now();
        assert!(
            old.terminate(Duration::from_secs(30)),
            "{old_name} exited uncleanly"
        );
        let stopped = t.elapsed();
        let new = format!("replica-{}", 4 + i);
        cluster.add(&new, &FAST);
        let t = Instant::now();
        wait_for_members(&c, &[new.as_str()], Duration::from_secs(20)).await;
        println!(
            "failover/rolling: {old_name} stopped in {} ms; {new} a member {} ms after its start",
            stopped.as_millis(),
            t.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    cluster.stop_all();
    let wins = audit_all(&c, &names, from, to, &["completed"]).await;
    let lags: Vec<i64> = tick_rows(&c, from, to)
        .await
        .iter()
        .filter_map(|r| r.started.map(|s| ms(s - r.at)))
        .collect();
    println!(
        "failover/rolling: {} ticks over {} s, {}; wins {wins:?}",
        lags.len(),
        (to - from).num_seconds(),
        lag_summary(&lags)
    );
    let states = node_states(&c).await;
    assert!(
        states.iter().all(|(_, s)| s == "left"),
        "every replica left cleanly: {states:?}"
    );
}

/// (d) One replica's liveness session is ended by the server
/// (`pg_terminate_backend`) while the replica lives: it switches to lease
/// mode, takes a new liveness key within about a second, and is never
/// declared dead — no `abandoned` rows, its node never `dead`, every tick
/// once, completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_liveness_session_does_not_make_a_replica_dead() {
    let _serial = SERIAL.lock().await;
    // Runs of 1.5 s: every replica always has some in flight, so a replica
    // wrongly declared dead would show as `abandoned` rows.
    let mut cluster = TestCluster::new("failover-recycled", &[("test.busy", "1500ms")]).await;
    let c = cluster.client().await;
    let names = numbered("l", 12);
    insert_every_second(&c, &names, "test.busy", |s| {
        s.with_max_instances(5).expect("valid")
    })
    .await;
    start_three_firing(&mut cluster, &c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A follower, so that the leader (who reaps) is another replica.
    let leader = wait_for_leader_other_than(&c, "", Duration::from_secs(10)).await;
    let target = THREE
        .iter()
        .find(|n| **n != leader)
        .expect("a follower")
        .to_string();
    let target_id = node_id(&c, &target).await;
    let (old_pid, app, key) = liveness_holder(&c, target_id)
        .await
        .unwrap_or_else(|| panic!("{target} holds its liveness lock"));
    assert_eq!(
        app, LIVENESS_APP,
        "application_name of the liveness session"
    );
    let watcher = NodeWatcher::start(&cluster.url, target_id).await;
    let from = db_now(&c).await - chrono::Duration::seconds(1);
    let terminated: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&old_pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(terminated, "pg_terminate_backend({old_pid})");
    let cut_at = db_now(&c).await;
    let (retaken, (new_pid, _, new_key)) =
        wait_for_new_liveness(&c, target_id, old_pid, Duration::from_secs(10)).await;
    println!(
        "failover/recycled: {target}'s liveness session (pid {old_pid}, key {key}) terminated; \
         pid {new_pid} holds key {new_key} after {} ms",
        retaken.as_millis()
    );
    assert!(
        retaken <= Duration::from_millis(1500),
        "a new liveness key after {retaken:?} (bound ~1 s)"
    );
    // Past the reaper's confirmation and the heartbeat lease (3 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    let seen = watcher.stop().await;
    println!("failover/recycled: {target}'s node row as watched: {seen:?}");
    let fired_after: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE node_id = $1 AND status = 'completed' \
             AND scheduled_at > $2::timestamptz + interval '1 second'",
            &[&target_id, &cut_at],
        )
        .await
        .expect("fired")
        .get(0);
    let abandoned = rows_with_status(&c, "abandoned").await;
    cluster.stop_all();
    assert!(seen.polls > 20, "the watcher polled ({})", seen.polls);
    assert_eq!(
        seen.dead_at, None,
        "{target} was declared dead while it lived"
    );
    assert_eq!(
        seen.states,
        BTreeSet::from(["active".to_string()]),
        "{target}'s node row stays active"
    );
    assert_eq!(abandoned, 0, "runs abandoned though every replica lived");
    assert!(fired_after > 0, "{target} keeps firing its share");
    let wins = audit_all(&c, &names, from, to, &["completed"]).await;
    println!("failover/recycled: wins {wins:?}");
}

/// (e) Only the liveness path of a replica is cut (its session goes through
/// a proxy with `--leader-database-url`, its pool connects directly): it
/// notices, switches to lease mode before the server drops the silent
/// session, and keeps firing. It is never declared dead (no `abandoned`
/// rows, node never `dead`), every tick has one completed row, and after
/// the heal it holds a liveness key again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_liveness_path_is_cut_is_not_declared_dead() {
    let _serial = SERIAL.lock().await;
    // Runs of 1.5 s: the cut replica always has some in flight, so being
    // wrongly declared dead would show as `abandoned` rows.
    let mut cluster = TestCluster::new("failover-liveness-cut", &[("test.busy", "1500ms")]).await;
    let c = cluster.client().await;
    let names = numbered("c", 12);
    insert_every_second(&c, &names, "test.busy", |s| {
        s.with_max_instances(5).expect("valid")
    })
    .await;
    let mut proxy = Proxy::in_front_of(&cluster.url, SERVER_GIVES_UP).await;
    let via_proxy = proxy.url(&cluster.url);
    // The others first, so that one of them leads (the leader session of
    // the cut replica goes through the proxy too).
    cluster.start(2, &FAST);
    wait_for_leader_other_than(&c, "", Duration::from_secs(15)).await;
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--leader-database-url", &via_proxy]);
    cluster.add("split", &args);
    let all = ["replica-1", "replica-2", "split"];
    wait_until_all_fire(&c, &all).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let split_id = node_id(&c, "split").await;
    let (old_pid, app, _) = liveness_holder(&c, split_id)
        .await
        .expect("split holds its liveness lock");
    assert_eq!(
        app, LIVENESS_APP,
        "application_name of the liveness session"
    );
    let watcher = NodeWatcher::start(&cluster.url, split_id).await;
    let from = db_now(&c).await - chrono::Duration::seconds(1);
    let cut_at = db_now(&c).await;
    proxy.cut();
    // Past the server dropping the silent session (2 s), the reaper's
    // confirmation and the heartbeat lease (3 s).
    tokio::time::sleep(SERVER_GIVES_UP + Duration::from_secs(5)).await;
    let still_held = liveness_holder(&c, split_id).await;
    let healed_at = db_now(&c).await;
    proxy.heal();
    let (retaken, (new_pid, _, new_key)) =
        wait_for_new_liveness(&c, split_id, old_pid, Duration::from_secs(15)).await;
    println!(
        "failover/liveness-cut: cut for {} ms (old session on the server at the heal: {still_held:?}); \
         split holds key {new_key} (pid {new_pid}) {} ms after the heal",
        ms(healed_at - cut_at),
        retaken.as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    let seen = watcher.stop().await;
    println!("failover/liveness-cut: split's node row as watched: {seen:?}");
    let fired_during: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE node_id = $1 AND status = 'completed' \
             AND scheduled_at > $2::timestamptz + interval '1 second' AND scheduled_at < $3",
            &[&split_id, &cut_at, &healed_at],
        )
        .await
        .expect("fired")
        .get(0);
    let abandoned = rows_with_status(&c, "abandoned").await;
    cluster.stop_all();
    assert_eq!(still_held, None, "the server dropped the silent session");
    assert!(seen.polls > 20, "the watcher polled ({})", seen.polls);
    assert_eq!(seen.dead_at, None, "split was declared dead while it acted");
    assert_eq!(
        seen.states,
        BTreeSet::from(["active".to_string()]),
        "split's node row stays active"
    );
    assert!(seen.lease_mode_seen, "split switched to lease mode");
    assert_eq!(abandoned, 0, "runs abandoned though every replica acted");
    assert!(
        fired_during > 0,
        "split kept firing its share while its liveness path was cut"
    );
    let wins = audit_all(&c, &names, from, to, &["completed"]).await;
    println!(
        "failover/liveness-cut: split fired {fired_during} ticks during the cut; wins {wins:?}"
    );
}

/// (e) A replica cut off entirely (pool and liveness session through the
/// proxy): the server drops its silent liveness session, the others take
/// its share over — every tick once, nothing doubled — and the cut replica
/// records nothing while cut off. After the heal it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_entirely_is_replaced_and_records_nothing_meanwhile() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("failover-full-cut", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    // max_instances 10: the cut replica's last runs stay `running` until
    // reaped, and the overlap rule is not what this test is about.
    let names = numbered("f", 12);
    insert_every_second(&c, &names, "test.record", |s| {
        s.with_max_instances(10).expect("valid")
    })
    .await;
    let mut proxy = Proxy::in_front_of(&cluster.url, SERVER_GIVES_UP).await;
    let via_proxy = proxy.url(&cluster.url);
    cluster.start(2, &FAST);
    wait_for_leader_other_than(&c, "", Duration::from_secs(15)).await;
    let mut cut_off = Replica::start(&via_proxy, &cluster.pipelines, "cut-off", &FAST);
    let all = ["replica-1", "replica-2", "cut-off"];
    wait_until_all_fire(&c, &all).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut_id = node_id(&c, "cut-off").await;
    let (old_pid, _, _) = liveness_holder(&c, cut_id)
        .await
        .expect("cut-off holds its liveness lock");
    let from = db_now(&c).await - chrono::Duration::seconds(1);
    let cut_at = db_now(&c).await;
    proxy.cut();
    let cut = Instant::now();
    // Its membership ends when the server drops the silent session.
    let released = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the server dropped the cut-off liveness session",
        || async {
            let held = liveness_holder(&c, cut_id).await;
            held.is_none().then(|| cut.elapsed())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let healed_at = db_now(&c).await;
    proxy.heal();
    let (rejoined, _) = wait_for_new_liveness(&c, cut_id, old_pid, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to = db_now(&c).await - chrono::Duration::seconds(2);
    assert!(
        cut_off.is_running(),
        "cut-off died:\n{}",
        cut_off.log_tail()
    );
    // Nothing claimed by the cut-off replica while it was cut off (a claim
    // in flight at the cut may have committed just before it).
    let during: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = c
        .query(
            "SELECT schedule_name, scheduled_at, claimed_at FROM scheduler_runs \
             WHERE node_id = $1 AND claimed_at > $2::timestamptz + interval '20 milliseconds' AND claimed_at < $3",
            &[&cut_id, &cut_at, &healed_at],
        )
        .await
        .expect("rows during the cut")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let fired_after: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE node_id = $1 AND status = 'completed' \
             AND scheduled_at > $2",
            &[&cut_id, &healed_at],
        )
        .await
        .expect("fired after")
        .get(0);
    let rows = tick_rows(&c, cut_at, healed_at).await;
    let lags: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.started.map(|s| ms(s - r.at)))
        .collect();
    let abandoned: Vec<(String, DateTime<Utc>, String)> = tick_rows(&c, from, to)
        .await
        .iter()
        .filter(|r| r.status == "abandoned")
        .map(|r| (r.schedule.clone(), r.at, r.node.clone()))
        .collect();
    println!(
        "failover/full-cut: the server dropped the liveness session {} ms after the cut; \
         during the cut: {}; abandoned {abandoned:?}; cut-off holds a key {} ms after the heal \
         and fired {fired_after} ticks since",
        released.as_millis(),
        lag_summary(&lags),
        rejoined.as_millis()
    );
    cluster.stop_all();
    assert!(
        cut_off.terminate(Duration::from_secs(30)),
        "cut-off exited uncleanly"
    );
    assert!(
        during.is_empty(),
        "the cut-off replica recorded rows while cut off: {during:?}"
    );
    // Only its runs in flight at the cut may have been abandoned.
    assert!(
        abandoned
            .iter()
            .all(|(_, at, n)| n == "cut-off" && *at <= cut_at + chrono::Duration::milliseconds(20)),
        "abandoned rows other than runs in flight at the cut: {abandoned:?}"
    );
    let wins = audit_all(&c, &names, from, to, &["completed", "abandoned"]).await;
    println!("failover/full-cut: wins {wins:?}");
    assert!(fired_after > 0, "the healed replica fires again");
}

/// A replica frozen (SIGSTOP) while its claim for the next tick is written
/// ahead and waits to commit: its claim transaction (and the stripe locks it
/// holds) ends at the claim's idle timeout (claim lead + 300 ms), its
/// liveness session at the server's idle session timeout (2 s), so its
/// share is claimed one handoff delay late until then and on time after.
/// Nothing is missed or doubled, and nothing skipped unless a run really
/// overlapped (a handed-over tick, started late, may still be running when
/// another replica claims the next one); thawed, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_holds_no_tick_for_long() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::new("failover-freeze", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    let names = numbered("z", 20);
    insert_every_second(&c, &names, "test.record", |s| s).await;
    start_three_firing(&mut cluster, &c).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = &cluster.replicas[1];
    let victim_id = node_id(&c, &victim.name).await;
    println!("failover/freeze: freezing {} ({victim_id})", victim.name);
    sleep_until_just_before_a_tick(&c, chrono::Duration::milliseconds(60)).await;
    let frozen_at = db_now(&c).await;
    victim.signal("STOP");
    let to = frozen_at + chrono::Duration::seconds(8);
    sleep_until_db(&c, to + chrono::Duration::seconds(3)).await;
    victim.signal("CONT");
    let thawed_at = db_now(&c).await;
    // A skip is allowed only where a run really overlapped: a handed-over
    // tick started late can still be running when the next one is claimed
    // by another replica (max_instances 1), which is the policy at work.
    let false_skips = false_skips(&c, frozen_at, to).await;
    assert!(
        false_skips.is_empty(),
        "ticks skipped with no run really overlapping:\n{}",
        false_skips.join("\n")
    );
    let wins = audit_all(&c, &names, frozen_at, to, &["completed", "skipped"]).await;
    let rows = tick_rows(&c, frozen_at, to).await;
    let lag_of = |r: &TickRow| r.started.map(|s| ms(s - r.at)).unwrap_or(i64::MAX);
    let lags: Vec<i64> = rows
        .iter()
        .filter(|r| r.status != "skipped")
        .map(lag_of)
        .collect();
    // Late ticks by second after the freeze: only the first two may be.
    let mut late_by_second = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.status != "skipped" && lag_of(r) > ms(LATE))
    {
        *late_by_second.entry(r.at).or_insert(0) += 1;
    }
    println!(
        "failover/freeze: 8 s after the freeze: {}; late ticks by instant: {late_by_second:?}; wins {wins:?}",
        lag_summary(&lags)
    );
    let max = lags.iter().copied().max().unwrap_or(0);
    assert!(
        max <= ms(HANDOFF + chrono::Duration::milliseconds(600)),
        "a tick started {max} ms late (bound: handoff delay + claim idle timeout + 200 ms)"
    );
    // The liveness session ends 2 s after the victim's last read: from the
    // third tick after the freeze on, its share is the others'.
    let settled = frozen_at + chrono::Duration::milliseconds(2500);
    let late_after: Vec<_> = late_by_second.keys().filter(|t| **t > settled).collect();
    assert!(
        late_after.is_empty(),
        "ticks late after the frozen replica's session ended: {late_after:?}"
    );
    // Thawed: it takes a liveness key again and fires.
    eventually(
        Duration::from_secs(10),
        "the thawed replica holds a liveness key again",
        || async { liveness_holder(&c, victim_id).await.is_some() },
    )
    .await;
    let _ = thawed_at;
    cluster.stop_all();
}
