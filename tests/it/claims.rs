//! The claim statement on its own: exactly-once under racing clients, the
//! database clock, and the misfire/coalesce/overlap policies.

use chrono::{Duration, Utc};
use spine_scheduler::store::claims::{self, ClaimRequest};
use spine_scheduler::store::locks;
use spine_scheduler::types::RunStatus;
use uuid::Uuid;

use crate::harness::{claim_request, db_second, no_finished, sleep_until_db, TestDb};

fn pool(db: &TestDb) -> deadpool_postgres::Pool {
    spine_scheduler::store::pool(&db.url, 8).expect("pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claimers_create_each_row_once() {
    let db = TestDb::migrated().await;
    let pool = pool(&db);
    let base = db_second(&db.client().await).await - Duration::seconds(30);
    // 300 schedules x 5 ticks (each schedule runs every tick: no overlap).
    let batch: Vec<ClaimRequest> = (0..300)
        .flat_map(|s| {
            (0..5).map(move |t| ClaimRequest {
                coalesce: false,
                max_instances: 100,
                ..claim_request(&format!("s{s}"), base + Duration::seconds(t))
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let pool = pool.clone();
        let mut pending = batch.clone();
        tasks.push(tokio::spawn(async move {
            let node = Uuid::now_v7();
            let mut won = 0;
            // Retry what was locked by a rival until nothing is left.
            for _ in 0..50 {
                if pending.is_empty() {
                    break;
                }
                let mut client = pool.get().await.expect("connection");
                let out = claims::claim(
                    &mut client,
                    node,
                    pending,
                    no_finished,
                    &[],
                    std::future::ready(()),
                )
                .await
                .expect("claim");
                won += out.claimed.len();
                pending = out.retry;
            }
            assert!(pending.is_empty(), "{} ticks never settled", pending.len());
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert_eq!(total, 1500, "rows won across the three claimers");
    let c = db.client().await;
    let (rows, distinct): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(DISTINCT (schedule_name, scheduled_at)) FROM scheduler_runs",
                &[],
            )
            .await
            .expect("count");
        (r.get(0), r.get(1))
    };
    assert_eq!((rows, distinct), (1500, 1500));
}

#[tokio::test]
async fn nothing_is_claimed_before_the_database_says_it_is_due() {
    let db = TestDb::migrated().await;
    let pool = pool(&db);
    let mut client = pool.get().await.expect("connection");
    let future = db_second(&db.client().await).await + Duration::seconds(30);
    let out = claims::claim(
        &mut client,
        Uuid::now_v7(),
        vec![claim_request("s", future)],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert!(out.claimed.is_empty());
    assert_eq!(out.retry.len(), 1, "a tick not yet due is kept for later");
    assert!(out.db_now.is_some());
}

/// The claim lead: the lock statement runs before the tick, the INSERT only
/// once the database says the tick is due, and the rival that asks meanwhile
/// finds the schedule's stripe locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_sent_ahead_locks_early_and_inserts_when_due() {
    let db = TestDb::migrated().await;
    let pool = pool(&db);
    let tick = db_second(&db.client().await).await + Duration::seconds(3);
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let early = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut client = pool.get().await.expect("connection");
            claims::claim(
                &mut client,
                Uuid::now_v7(),
                vec![claim_request("ahead", tick)],
                no_finished,
                &[],
                async move {
                    let _ = locked_tx.send(());
                    let _ = go_rx.await;
                },
            )
            .await
            .expect("claim")
        })
    };
    locked_rx.await.expect("lock statement ran");
    // The early claim locks the stripe of "ahead": another schedule of that
    // stripe waits too, while one of another stripe is claimed.
    let stripe = locks::stripe("ahead");
    let name_in = |same: bool| {
        (0..)
            .map(|i| format!("s{i}"))
            .find(|n| (locks::stripe(n) == stripe) == same)
            .unwrap_or_default()
    };
    let (neighbour, stranger) = (name_in(true), name_in(false));
    let past = tick - Duration::seconds(4);
    let mut rival = pool.get().await.expect("connection");
    let out = claims::claim(
        &mut rival,
        Uuid::now_v7(),
        vec![
            claim_request("ahead", tick),
            claim_request(&neighbour, past),
            claim_request(&stranger, past),
        ],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("rival claim");
    let claimed: Vec<&str> = out
        .claimed
        .iter()
        .map(|c| c.schedule_name.as_str())
        .collect();
    assert_eq!(claimed, [stranger.as_str()], "another stripe is free");
    let mut retried: Vec<&str> = out.retry.iter().map(|r| r.schedule_name.as_str()).collect();
    retried.sort_unstable();
    let mut want = vec!["ahead", neighbour.as_str()];
    want.sort_unstable();
    assert_eq!(retried, want, "the stripe is locked by the early claim");
    // Resolve the wait seconds before the tick: the database says not yet
    // due, too far off to wait for.
    let _ = go_tx.send(());
    let out = early.await.expect("join");
    assert!(out.claimed.is_empty(), "{:?}", out.claimed);
    assert_eq!(out.retry.len(), 1, "a tick not yet due goes back to retry");
    assert!(out.db_now.is_some_and(|t| t < tick));

    // Sent ahead again and resolved 400 ms before the tick (a local clock
    // running fast): the claim waits on the database clock, and nobody sees
    // the row before the tick.
    let watcher = crate::replica::EarlyCommitWatcher::start(&db.url).await;
    let mut client = pool.get().await.expect("connection");
    let wait = (tick - Utc::now() - Duration::milliseconds(400))
        .to_std()
        .unwrap_or_default();
    let out = claims::claim(
        &mut client,
        Uuid::now_v7(),
        vec![claim_request("ahead", tick)],
        no_finished,
        &[],
        tokio::time::sleep(wait),
    )
    .await
    .expect("claim");
    let early = watcher.stop().await;
    assert!(early.is_empty(), "visible before its tick: {early:?}");
    assert_eq!(out.claimed.len(), 1);
    assert_eq!(out.claimed[0].status, RunStatus::Running);
    assert!(out.db_now.is_some_and(|t| t >= tick));
    let row = db
        .client()
        .await
        .query_one(
            "SELECT claimed_at >= scheduled_at FROM scheduler_runs WHERE schedule_name = 'ahead'",
            &[],
        )
        .await
        .expect("row");
    assert!(row.get::<_, bool>(0), "claimed_at before the tick");
}

#[tokio::test]
async fn policies_decide_the_recorded_status() {
    let db = TestDb::migrated().await;
    let pool = pool(&db);
    let mut client = pool.get().await.expect("connection");
    let node = Uuid::now_v7();
    let t = db_second(&db.client().await).await;
    let batch = vec![
        // Two minutes late with a 60 s grace: missed.
        claim_request("late", t - Duration::seconds(120)),
        // A backlog of three with coalesce: the newest runs, the rest (whose
        // next tick is due too) are missed.
        ClaimRequest {
            next_at: Some(t - Duration::seconds(2)),
            ..claim_request("backlog", t - Duration::seconds(3))
        },
        ClaimRequest {
            next_at: Some(t - Duration::seconds(1)),
            ..claim_request("backlog", t - Duration::seconds(2))
        },
        ClaimRequest {
            next_at: Some(t + Duration::seconds(60)),
            ..claim_request("backlog", t - Duration::seconds(1))
        },
        // Without coalesce and max_instances 2: two run, the third waits
        // for the first (nothing else was running: not a skip).
        ClaimRequest {
            coalesce: false,
            max_instances: 2,
            ..claim_request("overlap", t - Duration::seconds(3))
        },
        ClaimRequest {
            coalesce: false,
            max_instances: 2,
            ..claim_request("overlap", t - Duration::seconds(2))
        },
        ClaimRequest {
            coalesce: false,
            max_instances: 2,
            ..claim_request("overlap", t - Duration::seconds(1))
        },
    ];
    let out = claims::claim(
        &mut client,
        node,
        batch,
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    let status_of = |name: &str, ago: i64| {
        out.claimed
            .iter()
            .find(|c| c.schedule_name == name && c.scheduled_at == t - Duration::seconds(ago))
            .map(|c| c.status)
    };
    assert_eq!(status_of("late", 120), Some(RunStatus::Missed));
    assert_eq!(status_of("backlog", 3), Some(RunStatus::Missed));
    assert_eq!(status_of("backlog", 2), Some(RunStatus::Missed));
    assert_eq!(status_of("backlog", 1), Some(RunStatus::Running));
    assert_eq!(status_of("overlap", 3), Some(RunStatus::Running));
    assert_eq!(status_of("overlap", 2), Some(RunStatus::Running));
    assert_eq!(status_of("overlap", 1), Some(RunStatus::Running));
    let run_of = |name: &str, ago: i64| {
        out.claimed
            .iter()
            .find(|c| c.schedule_name == name && c.scheduled_at == t - Duration::seconds(ago))
            .map(|c| (c.run_id, c.after))
    };
    let first = run_of("overlap", 3).map(|(id, _)| id);
    assert_eq!(run_of("overlap", 1).and_then(|(_, after)| after), first);
    assert_eq!(run_of("overlap", 2).and_then(|(_, after)| after), None);
    // A handed-off tick is never coalesced: it runs (or is skipped by the
    // overlap rule), it is not recorded missed.
    let handoff = claims::claim(
        &mut client,
        node,
        vec![
            ClaimRequest {
                backlog: false,
                max_instances: 5,
                ..claim_request("failover", t - Duration::seconds(1))
            },
            ClaimRequest {
                max_instances: 5,
                ..claim_request("failover", t)
            },
        ],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert!(
        handoff
            .claimed
            .iter()
            .all(|c| c.status == RunStatus::Running),
        "{:?}",
        handoff.claimed
    );
    // The "backlog" run started after tick t fell due: it did not overlap
    // that tick, which waits for it instead of being skipped.
    let backlog_run = run_of("backlog", 1).map(|(id, _)| id);
    let waits = claims::claim(
        &mut client,
        node,
        vec![claim_request("backlog", t)],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert_eq!(waits.claimed[0].status, RunStatus::Running);
    assert_eq!(
        waits.claimed[0].waits_for, backlog_run,
        "{:?}",
        waits.claimed
    );
    // A tick due after it started, while it runs, is skipped (max_instances 1).
    sleep_until_db(&db.client().await, t + Duration::seconds(1)).await;
    let next = claims::claim(
        &mut client,
        node,
        vec![claim_request("backlog", t + Duration::seconds(1))],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert_eq!(next.claimed[0].status, RunStatus::Skipped);
    let c = db.client().await;
    let error: String = c
        .query_one(
            "SELECT error FROM scheduler_runs WHERE schedule_name = 'late'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert!(error.contains("misfire grace of 60 s"), "{error}");
}

/// A run that has finished on this replica but whose result is not written
/// yet (results wait for claims) does not count against `max_instances`:
/// the next tick runs instead of being recorded skipped.
#[tokio::test]
async fn a_finished_run_awaiting_its_result_does_not_block_the_next_tick() {
    let db = TestDb::migrated().await;
    let pool = pool(&db);
    let mut client = pool.get().await.expect("connection");
    let node = Uuid::now_v7();
    let t = db_second(&db.client().await).await;
    let first = claims::claim(
        &mut client,
        node,
        vec![claim_request("every", t - Duration::seconds(2))],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    let previous = first.claimed[0].run_id;
    assert_eq!(first.claimed[0].status, RunStatus::Running);

    // Its row still says running: without the hint, a tick due after it
    // started is skipped.
    sleep_until_db(&db.client().await, t + Duration::seconds(1)).await;
    let skipped = claims::claim(
        &mut client,
        node,
        vec![claim_request("every", t + Duration::seconds(1))],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert_eq!(skipped.claimed[0].status, RunStatus::Skipped);

    // The run finishes while a claim sent ahead waits for its tick: the
    // claim asks which runs finished right before it judges the tick, not
    // when it began, so the tick runs at once (without the hint it would
    // wait for that run). Unrelated ids change nothing.
    let finished = std::sync::Mutex::new(vec![Uuid::now_v7()]);
    let ran = claims::claim(
        &mut client,
        node,
        vec![claim_request("every", t)],
        |_: &[&str]| finished.lock().map(|f| f.clone()).unwrap_or_default(),
        &[],
        async {
            if let Ok(mut f) = finished.lock() {
                f.push(previous);
            }
        },
    )
    .await
    .expect("claim");
    assert_eq!(ran.claimed[0].status, RunStatus::Running);
    assert_eq!(ran.claimed[0].waits_for, None, "{:?}", ran.claimed);
    assert_eq!(ran.claimed[0].after, None);
}

/// A jittered tick falls due at its due instant, not at its tick: the
/// claim commits nothing before it, the grace counts from it, and the row
/// keeps the tick in `scheduled_at` with the start at the due instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jittered_tick_is_judged_by_its_due_instant() {
    let db = TestDb::migrated().await;
    let pool = pool(&db);
    let mut client = pool.get().await.expect("connection");
    let node = Uuid::now_v7();
    let t = db_second(&db.client().await).await;
    // 90 s after its tick but 30 s after it fell due (grace 60 s): it runs.
    let late_tick = t - Duration::seconds(90);
    let late_due = t - Duration::seconds(30);
    // Its tick has passed but it falls due in 5 s: handed back, no row.
    let early_tick = t - Duration::seconds(1);
    let out = claims::claim(
        &mut client,
        node,
        vec![
            ClaimRequest {
                due_at: late_due,
                ..claim_request("jittered", late_tick)
            },
            ClaimRequest {
                due_at: t + Duration::seconds(5),
                ..claim_request("not_yet", early_tick)
            },
        ],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    // The DUE check refuses to commit before the newest due instant: the
    // whole batch comes back, nothing is written.
    assert!(out.claimed.is_empty(), "{:?}", out.claimed);
    assert_eq!(out.retry.len(), 2);
    let out = claims::claim(
        &mut client,
        node,
        vec![ClaimRequest {
            due_at: late_due,
            ..claim_request("jittered", late_tick)
        }],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert_eq!(out.claimed.len(), 1);
    assert_eq!(out.claimed[0].status, RunStatus::Running);
    assert_eq!(out.claimed[0].scheduled_at, late_tick);
    // Past the grace counted from the due instant: missed.
    let out = claims::claim(
        &mut client,
        node,
        vec![ClaimRequest {
            due_at: t - Duration::seconds(61),
            ..claim_request("too_late", t - Duration::seconds(62))
        }],
        no_finished,
        &[],
        std::future::ready(()),
    )
    .await
    .expect("claim");
    assert_eq!(out.claimed.len(), 1);
    assert_eq!(out.claimed[0].status, RunStatus::Missed);
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT scheduled_at, started_at, claimed_at FROM scheduler_runs \
             WHERE schedule_name = 'jittered'",
            &[],
        )
        .await
        .expect("row");
    let scheduled: chrono::DateTime<Utc> = row.get(0);
    let started: chrono::DateTime<Utc> = row.get(1);
    assert_eq!(scheduled, late_tick);
    assert!(
        started >= t,
        "started {started} at the claim, after its due instant"
    );
}
