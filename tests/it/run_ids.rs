//! Run ids that carry their tick (`store::run_ids`): every writer of the
//! ledger gives its row an id whose time field is the row's
//! `scheduled_at`, a run looked up by id reads only the partition its id
//! points at, and a run whose id does not point at its tick (written by an
//! earlier version, or by hand) is found all the same.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use spine_scheduler::store::backfills;
use spine_scheduler::store::housekeeping::{self, Unclaimed};
use spine_scheduler::store::partitions::partition_name;
use spine_scheduler::store::run_ids;
use spine_scheduler::store::runs::{self, CancelAsked, Completion};
use spine_scheduler::types::{RunStatus, RunTrigger};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::harness::{claim_batch, claim_request, db_second, TestDb};

/// The Unix milliseconds in a UUIDv7's time field.
fn id_millis(id: Uuid) -> i64 {
    let (secs, nanos) = id.get_timestamp().expect("a UUIDv7").to_unix();
    secs as i64 * 1000 + i64::from(nanos / 1_000_000)
}

/// Every row's (trigger, run id, tick).
async fn ledger(c: &Client) -> Vec<(String, Uuid, DateTime<Utc>)> {
    c.query(
        "SELECT trigger, run_id, scheduled_at FROM scheduler_runs ORDER BY trigger, scheduled_at",
        &[],
    )
    .await
    .expect("ledger")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn every_writer_gives_its_run_an_id_that_carries_its_tick() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression, \
                                          retry_max_attempts, retry_backoff_seconds) \
         VALUES ('retried', 'p', 'cron', '* * * * *', 3, 3600)",
    )
    .await
    .expect("schedule");
    let node = Uuid::now_v7();
    let now = db_second(&c).await;
    // A claim (its tick a few seconds back, with milliseconds), then its
    // failure and the retry the sweep writes for it.
    let tick = now - Duration::seconds(3) + Duration::milliseconds(250);
    let out = claim_batch(&db, node, vec![claim_request("retried", tick)], &[]).await;
    assert_eq!(out.claimed.len(), 1);
    let failed = Completion {
        run_id: out.claimed[0].run_id,
        scheduled_at: tick,
        schedule_name: "retried".into(),
        trigger: RunTrigger::Schedule,
        status: RunStatus::Failed,
        error: Some("boom".into()),
        result: None,
        started_at: None,
        completed_at: None,
        urgent: true,
    };
    let pool = spine_scheduler::store::pool(&db.url, 1).expect("pool");
    let writer = pool.get().await.expect("connection");
    runs::finish_batch(&writer, node, &[failed], &[])
        .await
        .expect("result");
    assert_eq!(
        housekeeping::schedule_retries(&c, node)
            .await
            .expect("retry sweep"),
        1
    );
    // A manual run (its instant is the database's `now()`), a tick nobody
    // claimed, and a backfill's tick a week back.
    runs::insert_manual(&c, "manual", "p")
        .await
        .expect("run now");
    let missed = Unclaimed {
        schedule_name: "missed".into(),
        pipeline: "p".into(),
        scheduled_at: now - Duration::hours(2),
        due_at: now - Duration::hours(2),
        grace_secs: 1,
    };
    housekeeping::record_missed(&c, node, &[missed])
        .await
        .expect("missed");
    let week_ago = now - Duration::days(7);
    backfills::insert_runs(&c, Uuid::now_v7(), "filled", "p", &[(week_ago, 1)])
        .await
        .expect("backfill");

    let rows = ledger(&c).await;
    let triggers: Vec<&str> = rows.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        triggers,
        ["backfill", "manual", "retry", "schedule", "schedule"],
        "{rows:?}"
    );
    for (trigger, id, at) in &rows {
        assert_eq!(id.get_version_num(), 7, "{trigger}: {id}");
        assert_eq!(
            id_millis(*id),
            at.timestamp_millis(),
            "{trigger}: the id {id} carries the tick {at}"
        );
    }
}

/// The partitions a statement read (with ANALYZE: the scans that ran).
async fn scanned(
    c: &Client,
    sql: &str,
    id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<String> {
    let row = c
        .query_one(
            &format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"),
            &[&id, &from, &to],
        )
        .await
        .expect("explain");
    let plan: Value = row.get(0);
    let mut out = Vec::new();
    collect(&plan[0]["Plan"], &mut out);
    out.sort();
    out
}

fn collect(node: &Value, out: &mut Vec<String>) {
    if let (Some(name), Some(loops)) = (
        node["Relation Name"].as_str(),
        node["Actual Loops"].as_u64(),
    ) {
        if loops > 0 {
            out.push(name.to_string());
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        collect(child, out);
    }
}

#[tokio::test]
async fn a_run_by_id_reads_the_partition_its_id_points_at_and_other_ids_are_found_too() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    // The migration makes daily partitions days ahead: tomorrow noon sits
    // mid-way in tomorrow's.
    let tomorrow = (db_second(&c).await + Duration::days(1))
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .expect("noon")
        .and_utc();
    let runs = [
        // An id made from its tick.
        (run_ids::for_tick(tomorrow), tomorrow),
        // A UUIDv4 (by hand, another tool): no range of its own.
        (
            Uuid::from_u128(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427),
            tomorrow + Duration::seconds(1),
        ),
        // A UUIDv7 made two days from its tick (an earlier version's retry,
        // say): its range misses the row.
        (
            run_ids::for_tick(tomorrow + Duration::days(2)),
            tomorrow + Duration::seconds(2),
        ),
    ];
    for (id, tick) in runs {
        c.execute(
            "WITH r AS ( \
                 INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, \
                                             scheduled_at, node_id, status, started_at) \
                 VALUES ($1, 's', 'p', 'schedule', $2, $3, 'running', now()) \
                 RETURNING run_id, schedule_name, scheduled_at, node_id) \
             INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks) \
             SELECT gen_random_uuid(), node_id, ARRAY[run_id], ARRAY[schedule_name], \
                    ARRAY[scheduled_at] FROM r",
            &[&id, &tick, &node],
        )
        .await
        .expect("insert");
    }
    let (from, to) = run_ids::tick_range(runs[0].0).expect("a range");
    assert_eq!(
        scanned(&c, &runs::get_sql(), runs[0].0, from, to).await,
        [partition_name(tomorrow - Duration::hours(12))],
        "a run by id reads its tick's partition only"
    );

    let pool = spine_scheduler::store::pool(&db.url, 1).expect("pool");
    let pooled = pool.get().await.expect("connection");
    for (id, tick) in runs {
        let run = runs::get(&c, id).await.expect("get").expect("found");
        assert_eq!((run.run_id, run.scheduled_at), (id, tick));
        assert_eq!(
            runs::running_on(&pooled, id).await.expect("running_on"),
            Some(node),
            "{id}"
        );
        assert_eq!(
            runs::request_cancel(&c, id, "graceful")
                .await
                .expect("cancel"),
            CancelAsked::Requested,
            "{id}"
        );
    }
    let absent = run_ids::for_tick(tomorrow);
    assert_eq!(runs::get(&c, absent).await.expect("get"), None);
    assert_eq!(
        runs::running_on(&pooled, absent).await.expect("running_on"),
        None
    );
    assert_eq!(
        runs::request_cancel(&c, absent, "graceful")
            .await
            .expect("cancel"),
        CancelAsked::NotFound
    );
}
