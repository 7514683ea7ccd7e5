use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use spine_scheduler::store::runs::{self, RunFilter};
use spine_scheduler::types::{RunStatus, RunTrigger};
use uuid::Uuid;

use crate::harness::TestDb;

const INSERT_TICK: &str = "INSERT INTO scheduler_runs \
    (run_id, schedule_name, pipeline, trigger, scheduled_at, attempt, node_id, status) \
    VALUES ($1, $2, 'p', $3, $4, $5, $6, 'running') \
    ON CONFLICT (schedule_name, scheduled_at, attempt, (trigger = 'manual')) DO NOTHING";

fn tick(i: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(i)
}

#[tokio::test]
async fn a_tick_can_be_claimed_once_per_attempt() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let t = tick(0);
    let won = c
        .execute(
            INSERT_TICK,
            &[&Uuid::now_v7(), &"s", &"schedule", &t, &1i32, &a],
        )
        .await
        .expect("first claim");
    let lost = c
        .execute(
            INSERT_TICK,
            &[&Uuid::now_v7(), &"s", &"schedule", &t, &1i32, &b],
        )
        .await
        .expect("second claim");
    assert_eq!((won, lost), (1, 0));
    // A retry is a new attempt of the same tick; a second retry of it is not.
    let retry = c
        .execute(
            INSERT_TICK,
            &[&Uuid::now_v7(), &"s", &"retry", &t, &2i32, &b],
        )
        .await
        .expect("retry");
    let retry_again = c
        .execute(
            INSERT_TICK,
            &[&Uuid::now_v7(), &"s", &"retry", &t, &2i32, &a],
        )
        .await
        .expect("retry again");
    assert_eq!((retry, retry_again), (1, 0));
    // Manual runs are outside the key: asking twice runs twice.
    runs::insert_manual(&c, "s", "p").await.expect("manual 1");
    runs::insert_manual(&c, "s", "p").await.expect("manual 2");
    let n: i64 = c
        .query_one("SELECT count(*) FROM scheduler_runs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 4);
}

#[tokio::test]
async fn finishing_is_compare_and_set_on_owner_and_state() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let (me, other) = (Uuid::now_v7(), Uuid::now_v7());
    let run_id = Uuid::now_v7();
    c.execute(
        INSERT_TICK,
        &[&run_id, &"s", &"schedule", &tick(1), &1i32, &me],
    )
    .await
    .expect("claim");
    let result = json!({"rows": 42});
    assert!(
        !runs::finish(&c, run_id, other, RunStatus::Completed, None, None)
            .await
            .expect("finish by another node")
    );
    assert!(
        runs::finish(&c, run_id, me, RunStatus::Completed, None, Some(&result))
            .await
            .expect("finish")
    );
    assert!(
        !runs::finish(&c, run_id, me, RunStatus::Failed, Some("late"), None)
            .await
            .expect("finish twice")
    );
    let run = runs::get(&c, run_id).await.expect("get").expect("exists");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.result, Some(result));
    assert_eq!(run.node_id, Some(me));
    assert!(run.completed_at.is_some());
    // A run the reaper took away cannot be finished by its old owner.
    let abandoned = Uuid::now_v7();
    c.execute(
        INSERT_TICK,
        &[&abandoned, &"s", &"schedule", &tick(2), &1i32, &me],
    )
    .await
    .expect("claim");
    c.execute(
        "UPDATE scheduler_runs SET status = 'abandoned' WHERE run_id = $1",
        &[&abandoned],
    )
    .await
    .expect("reap");
    assert!(
        !runs::finish(&c, abandoned, me, RunStatus::Completed, None, None)
            .await
            .expect("finish")
    );
}

#[tokio::test]
async fn history_is_newest_first_with_filters_and_cursor() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    for i in 0..30 {
        let name = if i % 3 == 0 { "a" } else { "b" };
        c.execute(
            INSERT_TICK,
            &[&Uuid::now_v7(), &name, &"schedule", &tick(i), &1i32, &node],
        )
        .await
        .expect("insert");
    }
    c.execute(
        "UPDATE scheduler_runs SET status = 'failed' WHERE scheduled_at < $1",
        &[&tick(5)],
    )
    .await
    .expect("fail some");
    let manual = runs::insert_manual(&c, "a", "p").await.expect("manual");
    assert_eq!(manual.trigger, RunTrigger::Manual);
    assert_eq!(manual.status, RunStatus::Pending);

    let mut filter = RunFilter {
        limit: Some(7),
        ..Default::default()
    };
    let mut all = Vec::new();
    loop {
        let page = runs::list(&c, &filter).await.expect("page");
        all.extend(page.runs);
        match page.next {
            Some(cursor) => filter.before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(all.len(), 31);
    assert_eq!(all[0].run_id, manual.run_id, "the manual run is the newest");
    for pair in all.windows(2) {
        assert!(pair[0].scheduled_at >= pair[1].scheduled_at);
    }

    let failed_a = runs::list(
        &c,
        &RunFilter {
            schedule_name: Some("a".into()),
            statuses: vec![RunStatus::Failed],
            ..Default::default()
        },
    )
    .await
    .expect("failed a");
    let ticks: Vec<DateTime<Utc>> = failed_a.runs.iter().map(|r| r.scheduled_at).collect();
    assert_eq!(ticks, [tick(3), tick(0)]);

    let window = runs::list(
        &c,
        &RunFilter {
            since: Some(tick(10)),
            until: Some(tick(20)),
            trigger: Some(RunTrigger::Schedule),
            ..Default::default()
        },
    )
    .await
    .expect("window");
    assert_eq!(window.runs.len(), 10);
    assert!(window.next.is_none());
}

/// `list` reads back in time window by window (a day, two, four, …): a page
/// spanning several windows, and the pages after it, are the same as one
/// statement over the whole ledger would give.
#[tokio::test]
async fn a_page_spanning_windows_back_in_time_is_whole_and_in_order() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let node = Uuid::now_v7();
    let now = Utc::now();
    let ages = [
        Duration::minutes(5),
        Duration::hours(30),
        Duration::days(3),
        Duration::days(40),
        Duration::days(2000),
    ];
    for age in ages {
        c.execute(
            INSERT_TICK,
            &[
                &Uuid::now_v7(),
                &"w",
                &"schedule",
                &(now - age),
                &1i32,
                &node,
            ],
        )
        .await
        .expect("insert");
    }
    let filter = |before| RunFilter {
        schedule_name: Some("w".into()),
        limit: Some(3),
        before,
        ..RunFilter::default()
    };
    let first = runs::list(&c, &filter(None)).await.expect("first page");
    let got: Vec<DateTime<Utc>> = first.runs.iter().map(|r| r.scheduled_at).collect();
    let expected: Vec<DateTime<Utc>> = ages[..3].iter().map(|a| now - *a).collect();
    assert_eq!(got.len(), 3, "three windows' runs make the page: {got:?}");
    for (g, e) in got.iter().zip(&expected) {
        assert!((*g - *e).num_microseconds().unwrap_or(i64::MAX).abs() <= 1);
    }
    let second = runs::list(&c, &filter(first.next))
        .await
        .expect("second page");
    assert_eq!(
        second.runs.len(),
        2,
        "the rest, the oldest beyond every window"
    );
    assert!(second.runs[0].scheduled_at > second.runs[1].scheduled_at);
    assert_eq!(second.next, None);
}
