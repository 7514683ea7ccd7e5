//! The ledger's write cost (issue 20, migration 15): completions are HOT
//! updates, which needs that no index of the ledger uses a column a
//! completion writes; running runs are listed per claim in
//! `scheduler_inflight`, and every way a run stops running takes its
//! listing away.
//!
//! The figures (WAL bytes per fire) are `spine-bench wal`'s; these tests
//! check the mechanisms, against a real server, through the store's own
//! statements.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use spine_scheduler::store::claims::{self, ClaimOutcome, ClaimRequest};
use spine_scheduler::store::runs::{self, Completion};
use spine_scheduler::store::{housekeeping, inflight};
use spine_scheduler::types::{RunStatus, RunTrigger};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::harness::{claim_batch, claim_request, db_second, eventually, no_finished, TestDb};

/// What a completion writes (`runs::FINISH_BATCH`): no index may use them.
const COMPLETION_COLUMNS: &[&str] = &["status", "completed_at", "started_at", "error", "result"];

async fn claim(db: &TestDb, node: Uuid, batch: Vec<ClaimRequest>) -> ClaimOutcome {
    claim_batch(db, node, batch, &[]).await
}

fn completion(run_id: Uuid, scheduled_at: DateTime<Utc>, status: RunStatus) -> Completion {
    Completion {
        run_id,
        scheduled_at,
        schedule_name: String::new(),
        trigger: RunTrigger::Schedule,
        status,
        error: (status == RunStatus::Failed).then(|| "boom".to_string()),
        result: None,
        started_at: None,
        completed_at: None,
        urgent: true,
    }
}

/// Entries listed in `scheduler_inflight`, and rows there.
async fn listed(c: &Client) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT coalesce(sum(cardinality(run_ids)), 0)::int8, count(*) FROM scheduler_inflight",
            &[],
        )
        .await
        .expect("inflight");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn no_index_of_the_ledger_uses_a_column_a_completion_writes() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // Key columns, expressions and predicates, as the server prints them.
    let rows = c
        .query(
            "SELECT c.relname,
                    coalesce((SELECT string_agg(a.attname, ' ') FROM pg_attribute a
                              WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)), '')
                    || ' ' || coalesce(pg_get_expr(i.indexprs, i.indrelid), '')
                    || ' ' || coalesce(pg_get_expr(i.indpred, i.indrelid), '')
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = 'scheduler_runs'::regclass",
            &[],
        )
        .await
        .expect("indexes");
    assert!(rows.len() >= 3, "pkey, tick key, time index at least");
    for row in rows {
        let (name, used): (String, String) = (row.get(0), row.get(1));
        let words: Vec<&str> = used
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .collect();
        for column in COMPLETION_COLUMNS {
            assert!(
                !words.contains(column),
                "index {name} uses {column} ({used}): every completion would leave HOT"
            );
        }
    }
}

#[tokio::test]
async fn completions_are_hot_updates_and_take_their_claims_listing_away() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    let t = db_second(&c).await - Duration::seconds(1);
    let batch: Vec<ClaimRequest> = (0..60)
        .map(|i| claim_request(&format!("s{i:02}"), t))
        .collect();
    let out = claim(&db, node, batch).await;
    assert_eq!(out.claimed.len(), 60);
    assert!(out.claimed.iter().all(|r| r.status == RunStatus::Running));
    let claim_id = out.claimed[0].claim_id;
    assert!(out.claimed.iter().all(|r| r.claim_id == claim_id));
    assert_eq!(listed(&c).await, (60, 1), "one row lists the claim's runs");

    // Two result batches, as the writer sends them: the first leaves the
    // listing, the second (with the row's last runs) deletes it.
    let pool = spine_scheduler::store::pool(&db.url, 1).expect("pool");
    let writer = pool.get().await.expect("connection");
    let (first, last) = out.claimed.split_at(40);
    let done = |rows: &[claims::Claimed]| -> Vec<Completion> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let status = if i % 10 == 0 {
                    RunStatus::Failed
                } else {
                    RunStatus::Completed
                };
                completion(r.run_id, r.scheduled_at, status)
            })
            .collect()
    };
    let lost = runs::finish_batch(&writer, node, &done(first), &[])
        .await
        .expect("first results");
    assert!(lost.is_empty());
    assert_eq!(listed(&c).await, (60, 1));
    let lost = runs::finish_batch(&writer, node, &done(last), &[claim_id])
        .await
        .expect("last results");
    assert!(lost.is_empty());
    assert_eq!(listed(&c).await, (0, 0));
    let failed: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE failed_at IS NOT NULL AND status = 'failed'",
            &[],
        )
        .await
        .expect("failed")
        .get(0);
    assert_eq!(failed, 6, "failures are marked for the retry sweep");

    // The writer's session flushes its table statistics when idle.
    writer
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush");
    writer.batch_execute("SELECT 1").await.expect("idle");
    let stats =
        "SELECT coalesce(sum(s.n_tup_upd), 0)::int8, coalesce(sum(s.n_tup_hot_upd), 0)::int8
                 FROM pg_stat_user_tables s
                 WHERE s.relid IN (SELECT relid FROM pg_partition_tree('scheduler_runs'))";
    eventually(
        StdDuration::from_secs(10),
        "the updates show in the statistics",
        || async {
            c.query_one(stats, &[])
                .await
                .is_ok_and(|row| row.get::<_, i64>(0) >= 60)
        },
    )
    .await;
    let row = c.query_one(stats, &[]).await.expect("statistics");
    let (updates, hot): (i64, i64) = (row.get(0), row.get(1));
    // Successful completions change no indexed column and have room on the
    // page (fillfactor 45); failures set `failed_at`, which is indexed.
    assert!(
        hot >= 50,
        "{hot} of {updates} completions were HOT (54 successes)"
    );
}

#[tokio::test]
async fn the_reaper_abandons_a_gone_replicas_listed_runs_and_the_sweep_drops_stale_rows() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let (gone, alive) = (Uuid::now_v7(), Uuid::now_v7());
    c.execute(
        "INSERT INTO scheduler_nodes (node_id, hostname, version, state) \
         VALUES ($1, 'gone-host', 'test', 'dead'), ($2, 'alive-host', 'test', 'active')",
        &[&gone, &alive],
    )
    .await
    .expect("nodes");
    let t = db_second(&c).await - Duration::seconds(1);
    let theirs = claim(
        &db,
        gone,
        vec![claim_request("a", t), claim_request("b", t)],
    )
    .await;
    let ours = claim(&db, alive, vec![claim_request("c", t)]).await;
    assert_eq!(listed(&c).await, (3, 2));

    let (_, abandoned) = housekeeping::reap(&c, StdDuration::from_secs(3600), &[])
        .await
        .expect("reap");
    let mut names: Vec<String> = abandoned.into_iter().map(|(name, _)| name).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(listed(&c).await, (1, 1), "the gone replica's row went");
    for r in &theirs.claimed {
        let row = c
            .query_one(
                "SELECT status, error, failed_at IS NOT NULL FROM scheduler_runs WHERE run_id = $1",
                &[&r.run_id],
            )
            .await
            .expect("run");
        assert_eq!(row.get::<_, String>(0), "abandoned");
        assert!(row.get::<_, String>(1).contains("gone-host"));
        assert!(row.get::<_, bool>(2), "marked for the retry sweep");
    }

    // A row whose runs all ended but which its replica never deleted goes
    // once it is a minute old; one with a run still running stays.
    let run = &ours.claimed[0];
    c.execute(
        "UPDATE scheduler_inflight SET created_at = now() - interval '2 minutes'",
        &[],
    )
    .await
    .expect("age");
    assert_eq!(inflight::sweep(&c).await.expect("sweep"), 0);
    let pool = spine_scheduler::store::pool(&db.url, 1).expect("pool");
    let writer = pool.get().await.expect("connection");
    runs::finish_batch(
        &writer,
        alive,
        &[completion(
            run.run_id,
            run.scheduled_at,
            RunStatus::Completed,
        )],
        &[],
    )
    .await
    .expect("result");
    assert_eq!(inflight::sweep(&c).await.expect("sweep"), 1);
    assert_eq!(listed(&c).await, (0, 0));
}

#[tokio::test]
async fn taken_pending_runs_are_listed_and_manual_runs_never_take_a_ticks_key() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    // Two manual runs asked at one instant (one transaction's `now()`): the
    // second moves on by a microsecond. A tick at that instant is claimed
    // all the same.
    let mut tc = db.client().await;
    let tx = tc.transaction().await.expect("begin");
    let ask = runs::ManualRun {
        schedule_name: "m",
        pipeline: "p",
        params: None,
        rerun_of: None,
    };
    let one = runs::insert_manual_run(&tx, &ask).await.expect("first");
    let two = runs::insert_manual_run(&tx, &ask).await.expect("second");
    tx.commit().await.expect("commit");
    assert_eq!(
        two.scheduled_at - one.scheduled_at,
        Duration::microseconds(1)
    );
    let out = claim(&db, node, vec![claim_request("m", one.scheduled_at)]).await;
    assert_eq!(
        out.claimed.len(),
        1,
        "a manual run at the tick's instant does not take the tick's key"
    );

    let claim_id = Uuid::now_v7();
    let taken = runs::take_pending(&c, node, claim_id, 10)
        .await
        .expect("take");
    assert_eq!(taken.len(), 2);
    let row = c
        .query_one(
            "SELECT node_id, cardinality(run_ids) FROM scheduler_inflight WHERE claim_id = $1",
            &[&claim_id],
        )
        .await
        .expect("the take's row");
    assert_eq!(row.get::<_, Uuid>(0), node);
    assert_eq!(row.get::<_, i32>(1), 2);
    let pending: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE pending_since IS NOT NULL",
            &[],
        )
        .await
        .expect("pending")
        .get(0);
    assert_eq!(pending, 0, "taken runs are no longer marked pending");
    // Nothing else to take.
    assert!(runs::take_pending(&c, node, Uuid::now_v7(), 10)
        .await
        .expect("take again")
        .is_empty());
    assert_eq!(listed(&c).await.1, 2, "an empty take writes no row");
}

#[tokio::test]
async fn a_claim_racing_another_writer_of_its_tick_hands_the_batch_back() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    let t = db_second(&c).await - Duration::seconds(1);
    // Another writer (as the missed-tick sweep would) has the tick's row
    // written but not committed when the claim writes its own.
    let mut other = db.client().await;
    let sweep = other.transaction().await.expect("begin");
    sweep
        .execute(
            "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                         status, completed_at) \
             VALUES (gen_random_uuid(), 'a', 'p', 'schedule', $1, 'missed', now())",
            &[&t],
        )
        .await
        .expect("the other row");
    let racing = {
        let url = db.url.clone();
        tokio::spawn(async move {
            let pool = spine_scheduler::store::pool(&url, 1).expect("pool");
            let mut client = pool.get().await.expect("connection");
            claims::claim(
                &mut client,
                node,
                vec![claim_request("a", t), claim_request("b", t)],
                no_finished,
                &[],
                std::future::ready(()),
            )
            .await
        })
    };
    eventually(
        StdDuration::from_secs(10),
        "the claim waits on the other row",
        || async {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE '%scheduler_inflight%'",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        },
    )
    .await;
    sweep.commit().await.expect("commit");
    let out = racing.await.expect("task").expect("no error: handed back");
    assert!(out.claimed.is_empty(), "{:?}", out.claimed);
    assert_eq!(out.retry.len(), 2, "the whole batch is asked again");
    assert_eq!(listed(&c).await, (0, 0), "nothing of the claim was kept");
    // Asked again: the tick with a row is passed over, the other claimed.
    let again = claim(&db, node, out.retry).await;
    assert_eq!(again.taken, 1);
    assert_eq!(again.claimed.len(), 1);
    assert_eq!(again.claimed[0].schedule_name, "b");
}

#[tokio::test]
async fn the_retry_sweep_handles_each_failure_once_and_unmarks_it() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    c.batch_execute(
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression, \
                                          retry_max_attempts, retry_backoff_seconds) \
         VALUES ('retried', 'p', 'cron', '* * * * *', 3, 10), \
                ('once', 'p', 'cron', '* * * * *', 1, 10)",
    )
    .await
    .expect("schedules");
    let t = db_second(&c).await - Duration::seconds(1);
    let out = claim(
        &db,
        node,
        vec![
            claim_request("retried", t),
            claim_request("once", t),
            claim_request("gone", t),
        ],
    )
    .await;
    let pool = spine_scheduler::store::pool(&db.url, 1).expect("pool");
    let writer = pool.get().await.expect("connection");
    let failures: Vec<Completion> = out
        .claimed
        .iter()
        .map(|r| completion(r.run_id, r.scheduled_at, RunStatus::Failed))
        .collect();
    runs::finish_batch(&writer, node, &failures, &[])
        .await
        .expect("results");
    let marked = || async {
        c.query_one(
            "SELECT count(*) FROM scheduler_runs WHERE failed_at IS NOT NULL",
            &[],
        )
        .await
        .expect("marked")
        .get::<_, i64>(0)
    };
    assert_eq!(marked().await, 3);

    // Only the schedule with retries left gets one; every failure is seen
    // once (a schedule without retries, one deleted since).
    let leader = Uuid::now_v7();
    assert_eq!(
        housekeeping::schedule_retries(&c, leader)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(marked().await, 0);
    assert_eq!(
        housekeeping::schedule_retries(&c, leader)
            .await
            .expect("sweep again"),
        0
    );
    let retry = c
        .query_one(
            "SELECT schedule_name, attempt, status, pending_since IS NOT NULL, \
                    not_before > now() + interval '5 seconds' \
             FROM scheduler_runs WHERE trigger = 'retry'",
            &[],
        )
        .await
        .expect("the retry");
    assert_eq!(retry.get::<_, String>(0), "retried");
    assert_eq!(retry.get::<_, i32>(1), 2);
    assert_eq!(retry.get::<_, String>(2), "pending");
    assert!(retry.get::<_, bool>(3));
    assert!(retry.get::<_, bool>(4), "after its backoff (10 s)");
}
