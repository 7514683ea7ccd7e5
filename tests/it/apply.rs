use spine_scheduler::apply::{apply, ApplyError, ApplyOptions, Change};
use spine_scheduler::schedule_file;
use spine_scheduler::store::schedules::{self, ScheduleFilter};

use crate::harness::TestDb;

const SEED: &str = include_str!("../../examples/schedules.yaml");

async fn names(c: &tokio_postgres::Client) -> Vec<String> {
    schedules::list(c, &ScheduleFilter::default())
        .await
        .expect("list")
        .schedules
        .into_iter()
        .map(|s| s.schedule.name().to_string())
        .collect()
}

#[tokio::test]
async fn the_seed_file_applies_and_reapplies_as_a_no_op() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let file = schedule_file::parse(SEED).expect("seed parses");
    let dry = apply(
        &mut c,
        &file.schedules,
        &ApplyOptions {
            dry_run: true,
            prune: false,
            source: "test".into(),
            force_conflicts: false,
        },
    )
    .await
    .expect("dry run");
    assert_eq!(dry.changes.len(), 5);
    assert!(names(&c).await.is_empty(), "a dry run writes nothing");
    let done = apply(&mut c, &file.schedules, &ApplyOptions::new("test"))
        .await
        .expect("apply");
    assert_eq!(done.changes.len(), 5);
    assert_eq!(names(&c).await.len(), 5);
    let again = apply(&mut c, &file.schedules, &ApplyOptions::new("test"))
        .await
        .expect("reapply");
    assert!(again.is_empty());
    assert_eq!(again.unchanged.len(), 5);
    let stored = schedules::get(&c, "finra_otc_t1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.schedule.timezone().name(), "America/New_York");
    assert_eq!(stored.schedule.params()["tier"], "T1");
}

#[tokio::test]
async fn prune_deletes_what_the_file_does_not_name() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let seed = schedule_file::parse(SEED).expect("seed");
    apply(&mut c, &seed.schedules, &ApplyOptions::new("test"))
        .await
        .expect("apply");
    let one = schedule_file::parse(
        "schedules:\n  - name: daily_cleanup\n    pipeline: maintenance.cleanup_old_data\n    cron: \"0 3 * * *\"\n",
    )
    .expect("one");
    let kept = apply(&mut c, &one.schedules, &ApplyOptions::new("test"))
        .await
        .expect("no prune");
    assert_eq!(kept.kept.len(), 4);
    assert_eq!(names(&c).await.len(), 5);
    let pruned = apply(
        &mut c,
        &one.schedules,
        &ApplyOptions {
            prune: true,
            dry_run: false,
            source: "test".into(),
            force_conflicts: false,
        },
    )
    .await
    .expect("prune");
    let deletes = pruned
        .changes
        .iter()
        .filter(|ch| matches!(ch, Change::Delete { .. }))
        .count();
    assert_eq!(deletes, 4);
    assert_eq!(names(&c).await, ["daily_cleanup"]);
}

#[tokio::test]
async fn an_unreadable_stored_row_stops_the_apply_before_any_write() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let seed = schedule_file::parse(SEED).expect("seed");
    apply(&mut c, &seed.schedules[..2], &ApplyOptions::new("test"))
        .await
        .expect("apply two");
    c.execute(
        "UPDATE scheduler_schedules SET timezone = 'Nowhere/Land' WHERE name = 'finra_otc_t2'",
        &[],
    )
    .await
    .expect("tamper");
    match apply(
        &mut c,
        &seed.schedules,
        &ApplyOptions {
            prune: true,
            dry_run: false,
            source: "test".into(),
            force_conflicts: false,
        },
    )
    .await
    {
        Err(ApplyError::InvalidStoredRow { name, .. }) => assert_eq!(name, "finra_otc_t2"),
        other => panic!("expected InvalidStoredRow, got {other:?}"),
    }
    assert_eq!(names(&c).await, ["finra_otc_t1"], "nothing was written");
}
