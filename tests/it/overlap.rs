//! Overlap (`max_instances`): a tick is `skipped` only when that many runs
//! of its schedule had really started and not finished, and the skipped
//! row names the run it overlapped (`overlapped_run_id`). Ticks of one
//! schedule claimed together all run, one after another (`after`); the runs
//! of replicas that are gone do not count.
//!
//! The claim statement on its own first, then the real binary with a real
//! 3 s command.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use spine_scheduler::store::claims::{ClaimOutcome, ClaimRequest, Claimed};
use spine_scheduler::store::schedules;
use spine_scheduler::types::RunStatus;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::harness::{claim_batch as claim, claim_request, db_now, db_second, eventually, TestDb};
use crate::replica::{audit, seconds, temp_dir, ticks, Replica};
use crate::test_cluster::{every_second, FAST, SERIAL};

fn request(name: &str, at: DateTime<Utc>, coalesce: bool, backlog: bool) -> ClaimRequest {
    ClaimRequest {
        coalesce,
        backlog,
        ..claim_request(name, at)
    }
}

fn claimed_at<'a>(out: &'a ClaimOutcome, name: &str, at: DateTime<Utc>) -> &'a Claimed {
    out.claimed
        .iter()
        .find(|c| c.schedule_name == name && c.scheduled_at == at)
        .unwrap_or_else(|| panic!("no row claimed for {name} at {at}: {:?}", out.claimed))
}

/// A ledger row as stored: status, started_at, overlapped_run_id.
async fn stored(c: &Client, run_id: Uuid) -> (String, Option<DateTime<Utc>>, Option<Uuid>) {
    let row = c
        .query_one(
            "SELECT status, started_at, overlapped_run_id FROM scheduler_runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .expect("stored row");
    (row.get(0), row.get(1), row.get(2))
}

/// Two due ticks of one `max_instances = 1` schedule in one claim — a late
/// one and an on-time one — are both written `running`: nothing was
/// running, so neither is a skip. The later one waits for the earlier
/// (`after`, and no `started_at` until it starts). Checked for a handed-off
/// late tick (not backlog, coalesce on), for a short backlog of two (coalesce
/// on: two ticks are not coalesced) and for a backlog without coalesce.
#[tokio::test]
async fn ticks_of_one_schedule_claimed_together_run_one_after_the_other() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    let t = db_second(&c).await;
    let late = t - Duration::seconds(2);
    for (name, coalesce, backlog) in [
        ("handed_off", true, false),
        ("short_backlog", true, true),
        ("no_coalesce", false, true),
    ] {
        let out = claim(
            &db,
            node,
            vec![
                request(name, late, coalesce, backlog),
                request(name, t, coalesce, backlog),
            ],
            &[],
        )
        .await;
        assert_eq!(out.claimed.len(), 2, "{name}: {:?}", out.claimed);
        let first = claimed_at(&out, name, late);
        let second = claimed_at(&out, name, t);
        assert_eq!(first.status, RunStatus::Running, "{name}: the late tick");
        assert_eq!(
            second.status,
            RunStatus::Running,
            "{name}: the on-time tick"
        );
        assert_eq!(first.after, None, "{name}: the first starts at once");
        assert_eq!(
            second.after,
            Some(first.run_id),
            "{name}: the second waits for the first"
        );
        let (status, started, overlapped) = stored(&c, first.run_id).await;
        assert_eq!(status, "running");
        assert!(started.is_some(), "{name}: the first has started");
        assert_eq!(overlapped, None);
        let (status, started, overlapped) = stored(&c, second.run_id).await;
        assert_eq!(status, "running");
        assert_eq!(started, None, "{name}: the second has not started yet");
        assert_eq!(
            overlapped,
            Some(first.run_id),
            "{name}: the waiting row names the run it waits for"
        );
    }
}

/// A run of the schedule already running on another replica (started):
/// the tick is `skipped` and its row names that run. Once that replica is
/// gone (its id in `gone`), its run no longer counts: the next tick runs.
#[tokio::test]
async fn a_skipped_tick_names_the_run_it_overlapped_and_gone_replicas_do_not_count() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let me = Uuid::now_v7();
    let other = Uuid::now_v7();
    let t = db_second(&c).await;
    c.execute(
        "INSERT INTO scheduler_nodes (node_id, hostname, version, state) \
         VALUES ($1, 'other', 'test', 'active')",
        &[&other],
    )
    .await
    .expect("other node");
    let busy = Uuid::now_v7();
    let started = t - Duration::seconds(5);
    c.execute(
        "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                     attempt, node_id, status, claimed_at, started_at) \
         VALUES ($1, 'busy', 'p', 'schedule', $2, 1, $3, 'running', $2, $2)",
        &[&busy, &started, &other],
    )
    .await
    .expect("running run");
    // As its claim would have listed it (`store::inflight`).
    c.execute(
        "INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks) \
         VALUES (gen_random_uuid(), $2, ARRAY[$1::uuid], ARRAY['busy'], ARRAY[$3::timestamptz])",
        &[&busy, &other, &started],
    )
    .await
    .expect("its in-flight row");

    let tick = t - Duration::seconds(1);
    let out = claim(&db, me, vec![request("busy", tick, true, true)], &[]).await;
    let skipped = claimed_at(&out, "busy", tick);
    assert_eq!(skipped.status, RunStatus::Skipped);
    assert_eq!(skipped.after, None);
    let (status, started_at, overlapped) = stored(&c, skipped.run_id).await;
    assert_eq!(status, "skipped");
    assert_eq!(started_at, None, "a skipped tick never starts");
    assert_eq!(
        overlapped,
        Some(busy),
        "the skipped row names the run it overlapped"
    );

    // The other replica is gone: its run does not count any more.
    let out = claim(&db, me, vec![request("busy", t, true, true)], &[other]).await;
    let ran = claimed_at(&out, "busy", t);
    assert_eq!(ran.status, RunStatus::Running);
    assert_eq!(ran.after, None, "nothing of ours to wait for");
    let (status, started_at, overlapped) = stored(&c, ran.run_id).await;
    assert_eq!(status, "running");
    assert!(started_at.is_some(), "it starts at once");
    assert_eq!(overlapped, None);
    // Only the ids in `gone` are excluded: an unrelated one changes nothing.
    let next = t + Duration::seconds(1);
    let wait = (next - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + StdDuration::from_millis(20)).await;
    let out = claim(
        &db,
        me,
        vec![request("busy", next, true, true)],
        &[Uuid::now_v7()],
    )
    .await;
    let skipped = claimed_at(&out, "busy", next);
    assert_eq!(skipped.status, RunStatus::Skipped);
    let (_, _, overlapped) = stored(&c, skipped.run_id).await;
    assert_eq!(
        overlapped,
        Some(busy),
        "the oldest running run is the one named"
    );
}

/// One replica, one every-second schedule running a real `sleep 3`
/// (`max_instances` 1): every tick that falls while a run is in progress is
/// `skipped` and names that run (started at or before the tick, finished
/// after it); every tick that falls while nothing runs, runs; and no two
/// runs overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_during_a_long_command_are_skipped_and_name_the_run_in_progress() {
    let _serial = SERIAL.lock().await;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("overlap-command");
    let pipelines = dir.join("pipelines.yaml");
    std::fs::write(
        &pipelines,
        "pipelines:\n  - name: test.sleep3\n    kind: command\n    argv: [\"sleep\", \"3\"]\n    timeout: 30s\n",
    )
    .expect("write pipelines file");
    schedules::insert(&c, &every_second("sleeper", "test.sleep3"))
        .await
        .expect("insert");
    let replica = Replica::start(&db.url, &pipelines, "solo", &FAST);
    let cc = &c;
    eventually(
        StdDuration::from_secs(20),
        "a first sleep 3 completed",
        || async move {
            cc.query_one(
                "SELECT count(*) FROM scheduler_runs WHERE schedule_name = 'sleeper' AND status = 'completed'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
        },
    )
    .await;
    let from = db_now(&c).await;
    tokio::time::sleep(StdDuration::from_secs(13)).await;
    // Every run covering a tick of the window has finished by then.
    let to: DateTime<Utc> = c
        .query_one("SELECT now() - interval '5 seconds'", &[])
        .await
        .expect("now")
        .get(0);
    assert!(
        replica.terminate(StdDuration::from_secs(30)),
        "solo exited uncleanly"
    );
    let found = ticks(&c, "sleeper", from, to).await;
    audit(
        "sleeper",
        &seconds(from, to),
        &found,
        &["completed", "skipped"],
    );

    struct Row {
        run_id: Uuid,
        at: DateTime<Utc>,
        status: String,
        started: Option<DateTime<Utc>>,
        completed: Option<DateTime<Utc>>,
        overlapped: Option<Uuid>,
    }
    let rows: Vec<Row> = c
        .query(
            "SELECT run_id, scheduled_at, status, started_at, completed_at, overlapped_run_id \
             FROM scheduler_runs WHERE schedule_name = 'sleeper' AND trigger = 'schedule' \
             ORDER BY scheduled_at",
            &[],
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
        })
        .collect();
    let runs: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> = rows
        .iter()
        .filter(|r| r.status == "completed")
        .map(|r| {
            (
                r.run_id,
                r.started.expect("a completed run started"),
                r.completed.expect("a completed run finished"),
            )
        })
        .collect();
    let window = |r: &&Row| r.at > from && r.at <= to;
    let mut problems = Vec::new();
    let mut skipped = 0;
    for r in rows.iter().filter(window) {
        match r.status.as_str() {
            "skipped" => {
                skipped += 1;
                match r
                    .overlapped
                    .and_then(|id| runs.iter().find(|run| run.0 == id))
                {
                    Some((id, started, completed)) => {
                        if !(*started <= r.at && r.at < *completed) {
                            problems.push(format!(
                                "{}: skipped, names {id} which ran {started}..{completed}",
                                r.at
                            ));
                        }
                    }
                    None => problems.push(format!(
                        "{}: skipped, names {:?}: not a completed run of the schedule",
                        r.at, r.overlapped
                    )),
                }
            }
            _ => {
                // It ran: no other run was clearly in progress at its tick
                // (50 ms either side for the race at a run's edges).
                let margin = Duration::milliseconds(50);
                if let Some(run) = runs
                    .iter()
                    .find(|run| run.0 != r.run_id && run.1 + margin < r.at && r.at + margin < run.2)
                {
                    problems.push(format!(
                        "{}: ran although run {} was in progress ({}..{})",
                        r.at, run.0, run.1, run.2
                    ));
                }
                if r.overlapped.is_some() {
                    problems.push(format!("{}: ran but names {:?}", r.at, r.overlapped));
                }
            }
        }
    }
    // max_instances 1: the runs never overlap.
    for pair in runs.windows(2) {
        if pair[1].1 < pair[0].2 {
            problems.push(format!(
                "runs {} ({}..{}) and {} ({}..{}) overlap",
                pair[0].0, pair[0].1, pair[0].2, pair[1].0, pair[1].1, pair[1].2
            ));
        }
    }
    let in_window = rows.iter().filter(window).count();
    println!(
        "overlap/command: {in_window} ticks, {} ran, {skipped} skipped; runs took {:?} ms",
        in_window - skipped,
        runs.iter()
            .map(|r| (r.2 - r.1).num_milliseconds())
            .collect::<Vec<_>>()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        skipped >= in_window / 2,
        "a 3 s run every second: most ticks overlap ({skipped}/{in_window} skipped)"
    );
}
