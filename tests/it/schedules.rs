use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use spine_scheduler::schedule::{RetryPolicy, Schedule};
use spine_scheduler::store::schedules::{self, ScheduleFilter};
use spine_scheduler::store::StoreError;

use crate::harness::TestDb;

fn full_cron() -> Schedule {
    let params = json!({"tier": "T1", "nested": {"n": [1, 2]}});
    Schedule::cron(
        "finra_otc_t1",
        "finra.otc_transparency.ingest_week",
        "0 6 * * 1-5",
    )
    .and_then(|s| s.with_timezone("America/New_York"))
    .and_then(|s| s.with_params(params.as_object().cloned().unwrap_or_default()))
    .and_then(|s| s.with_max_instances(2))
    .and_then(|s| s.with_misfire_grace(Duration::from_secs(300)))
    .and_then(|s| s.with_timeout(Some(Duration::from_secs(3600))))
    .and_then(|s| s.with_description(Some("weekday ingest".into())))
    .map(|s| {
        s.with_coalesce(false).with_retry(
            RetryPolicy::new(3, Duration::from_secs(30), Duration::from_secs(600)).expect("policy"),
        )
    })
    .expect("valid schedule")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("instant")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn every_kind_round_trips_exactly() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let interval = Schedule::interval("every_90s", "p", Duration::from_secs(90))
        .and_then(|s| s.with_start_at(at("2027-01-01T00:00:10Z")))
        .expect("interval");
    let once = Schedule::once("one_shot", "p", at("2027-06-01T12:00:00Z"))
        .expect("once")
        .with_enabled(false);
    for s in [full_cron(), interval, once] {
        let stored = schedules::insert(&c, &s).await.expect("insert");
        assert_eq!(stored.schedule, s);
        assert_eq!(stored.version, 1);
        let read = schedules::get(&c, s.name()).await.expect("get");
        assert_eq!(read.map(|r| r.schedule), Some(s));
    }
}

#[tokio::test]
async fn duplicate_names_are_refused() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    schedules::insert(&c, &full_cron()).await.expect("first");
    match schedules::insert(&c, &full_cron()).await {
        Err(StoreError::AlreadyExists(n)) => assert_eq!(n, "finra_otc_t1"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

#[tokio::test]
async fn updates_are_optimistic() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let v1 = schedules::insert(&c, &full_cron()).await.expect("insert");
    let changed = Schedule::cron("finra_otc_t1", "other.pipeline", "*/5 * * * *").expect("valid");
    let v2 = schedules::update(&c, &changed, Some(v1.version))
        .await
        .expect("update at v1");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.schedule, changed);
    assert!(v2.updated_at >= v1.updated_at);
    match schedules::update(&c, &full_cron(), Some(1)).await {
        Err(StoreError::VersionConflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (1, 2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The stale write changed nothing.
    let now = schedules::get(&c, "finra_otc_t1").await.expect("get");
    assert_eq!(now.map(|s| s.schedule), Some(changed));
    let missing = Schedule::cron("nope", "p", "* * * * *").expect("valid");
    assert!(matches!(
        schedules::update(&c, &missing, None).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn pause_resume_and_delete() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    schedules::insert(&c, &full_cron()).await.expect("insert");
    let paused = schedules::set_enabled(&c, "finra_otc_t1", false)
        .await
        .expect("pause");
    assert!(!paused.schedule.enabled());
    assert_eq!(paused.version, 2);
    let again = schedules::set_enabled(&c, "finra_otc_t1", false)
        .await
        .expect("pause again");
    assert_eq!(
        again.version, 2,
        "pausing a paused schedule changes nothing"
    );
    let resumed = schedules::set_enabled(&c, "finra_otc_t1", true)
        .await
        .expect("resume");
    assert!(resumed.schedule.enabled());
    assert!(matches!(
        schedules::delete(&c, "finra_otc_t1", Some(1)).await,
        Err(StoreError::VersionConflict { current: 3, .. })
    ));
    schedules::delete(&c, "finra_otc_t1", Some(3))
        .await
        .expect("delete");
    assert!(matches!(
        schedules::delete(&c, "finra_otc_t1", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        schedules::set_enabled(&c, "finra_otc_t1", true).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_filters_and_pages() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    for i in 0..25 {
        let pipeline = if i % 2 == 0 { "even" } else { "odd" };
        let s = Schedule::cron(&format!("job_{i:02}"), pipeline, "0 * * * *")
            .expect("valid")
            .with_enabled(i % 5 != 0);
        schedules::insert(&c, &s).await.expect("insert");
    }
    let mut seen = Vec::new();
    let mut filter = ScheduleFilter {
        limit: Some(10),
        ..Default::default()
    };
    loop {
        let page = schedules::list(&c, &filter).await.expect("list");
        seen.extend(page.schedules.iter().map(|s| s.schedule.name().to_string()));
        match page.next_after {
            Some(after) => filter.after = Some(after),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("job_{i:02}")).collect();
    assert_eq!(seen, want);

    let paused = schedules::list(
        &c,
        &ScheduleFilter {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .expect("paused");
    assert_eq!(paused.schedules.len(), 5);
    let odd_1x = schedules::list(
        &c,
        &ScheduleFilter {
            pipeline: Some("odd".into()),
            name_prefix: Some("job_1".into()),
            ..Default::default()
        },
    )
    .await
    .expect("odd");
    let names: Vec<&str> = odd_1x.schedules.iter().map(|s| s.schedule.name()).collect();
    assert_eq!(names, ["job_11", "job_13", "job_15", "job_17", "job_19"]);
    // A prefix is literal, not a LIKE pattern.
    let none = schedules::list(
        &c,
        &ScheduleFilter {
            name_prefix: Some("job%".into()),
            ..Default::default()
        },
    )
    .await
    .expect("literal");
    assert!(none.schedules.is_empty());
}

#[tokio::test]
async fn a_row_edited_into_nonsense_is_reported_not_trusted() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    schedules::insert(&c, &full_cron()).await.expect("insert");
    let other = Schedule::cron("fine", "p", "@daily").expect("valid");
    schedules::insert(&c, &other).await.expect("insert");
    c.execute(
        "UPDATE scheduler_schedules SET cron_expression = '0 25 * * *' WHERE name = 'finra_otc_t1'",
        &[],
    )
    .await
    .expect("tamper");
    match schedules::get(&c, "finra_otc_t1").await {
        Err(StoreError::InvalidRow { name, errors }) => {
            assert_eq!(name, "finra_otc_t1");
            assert_eq!(errors.0[0].field, "cron");
        }
        other => panic!("expected InvalidRow, got {other:?}"),
    }
    let page = schedules::list(&c, &ScheduleFilter::default())
        .await
        .expect("list");
    assert_eq!(page.schedules.len(), 1);
    assert_eq!(page.invalid.len(), 1);
    assert_eq!(page.invalid[0].name, "finra_otc_t1");
}

#[tokio::test]
async fn the_schema_refuses_what_the_model_refuses() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    for bad in [
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression) VALUES ('has space', 'p', 'cron', '* * * * *')",
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type) VALUES ('a', 'p', 'cron')",
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression, interval_seconds) VALUES ('a', 'p', 'cron', '* * * * *', 5)",
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, interval_seconds) VALUES ('a', 'p', 'interval', 0)",
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression, params) VALUES ('a', 'p', 'cron', '* * * * *', '[]')",
    ] {
        assert!(c.execute(bad, &[]).await.is_err(), "accepted: {bad}");
    }
}
