use spine_scheduler::store::migrate::{is_current, migrate, MIGRATIONS};
use spine_scheduler::store::StoreError;

use crate::harness::{binary, TestDb};

const TABLES: &str = "SELECT count(*) FROM pg_tables WHERE tablename IN \
    ('scheduler_schedules', 'scheduler_runs', 'scheduler_nodes', 'scheduler_migrations')";

#[tokio::test]
async fn migrate_twice_is_a_no_op() {
    let db = TestDb::new().await;
    let mut c = db.client().await;
    assert!(!is_current(&c).await.expect("is_current"));
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let first = migrate(&mut c).await.expect("first");
    assert_eq!(first.applied, all);
    let second = migrate(&mut c).await.expect("second");
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, all);
    assert!(is_current(&c).await.expect("is_current"));
    let n: i64 = c.query_one(TABLES, &[]).await.expect("tables").get(0);
    assert_eq!(n, 4);
}

/// A database at version 1 (the first release) is brought up to date and
/// keeps its data.
#[tokio::test]
async fn a_version_one_database_is_upgraded() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    c.batch_execute(
        "DROP INDEX scheduler_schedules_name_c_idx;
         -- 14 made the ledger partitioned: back to version 1's table.
         DROP TABLE scheduler_runs;
         CREATE TABLE scheduler_runs (
             run_id uuid PRIMARY KEY, schedule_name text NOT NULL, pipeline text NOT NULL,
             trigger text NOT NULL
                 CHECK (trigger IN ('schedule', 'manual', 'retry', 'catchup')),
             scheduled_at timestamptz NOT NULL,
             attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1), node_id uuid,
             status text NOT NULL
                 CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                   'skipped', 'missed', 'abandoned')),
             claimed_at timestamptz NOT NULL DEFAULT now(), not_before timestamptz,
             started_at timestamptz, completed_at timestamptz, error text, result jsonb);
         CREATE UNIQUE INDEX scheduler_runs_tick_key
             ON scheduler_runs (schedule_name, scheduled_at, attempt) WHERE trigger <> 'manual';
         CREATE INDEX scheduler_runs_schedule_time_idx
             ON scheduler_runs (schedule_name, scheduled_at DESC, run_id DESC);
         CREATE INDEX scheduler_runs_time_idx ON scheduler_runs (scheduled_at DESC, run_id DESC);
         CREATE INDEX scheduler_runs_retryable_idx ON scheduler_runs (completed_at)
             WHERE status IN ('failed', 'abandoned');
         CREATE INDEX scheduler_runs_unfinished_idx ON scheduler_runs (schedule_name, node_id)
             WHERE status IN ('pending', 'running');
         INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, status)
         VALUES (gen_random_uuid(), 'kept', 'p', 'schedule', now() - interval '1 day', 'completed');
         -- Two manual runs asked for in one transaction: one instant.
         INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, status)
         VALUES (gen_random_uuid(), 'twin', 'p', 'manual', now(), 'completed'),
                (gen_random_uuid(), 'twin', 'p', 'manual', now(), 'completed');
         DROP TABLE scheduler_tick_digests;
         DROP TABLE scheduler_sweep;
         ALTER TABLE scheduler_nodes DROP COLUMN liveness_key;
         ALTER TABLE scheduler_schedules DROP COLUMN end_at, DROP COLUMN paused_at,
             DROP COLUMN paused_by, DROP COLUMN paused_note;
         ALTER TABLE scheduler_schedules DROP COLUMN overlap_policy;
         ALTER TABLE scheduler_schedules DROP COLUMN jitter_seconds;
         ALTER TABLE scheduler_schedules DROP COLUMN managed_by, DROP COLUMN managed_source;
         DROP TABLE scheduler_schedule_changes;
         ALTER TABLE scheduler_nodes DROP COLUMN clock_offset_ms;
         DROP TABLE scheduler_backfills;
         DROP TABLE scheduler_inflight;
         DELETE FROM scheduler_migrations WHERE version > 1;
         INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression)
         VALUES ('kept', 'p', 'cron', '0 6 * * *');",
    )
    .await
    .expect("rewind to version 1");
    assert!(!is_current(&c).await.expect("is_current"));
    let report = migrate(&mut c).await.expect("upgrade");
    let later: Vec<i32> = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > 1)
        .collect();
    assert_eq!(report.applied, later);
    assert_eq!(report.already_applied, [1]);
    let kept: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_schedules WHERE name = 'kept'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(kept, 1);
    let runs: i64 = c
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE schedule_name = 'kept'",
            &[],
        )
        .await
        .expect("count runs")
        .get(0);
    assert_eq!(
        runs, 1,
        "the version-1 ledger's row survives the partitioning"
    );
    let twins = c
        .query_one(
            "SELECT count(*), max(scheduled_at) - min(scheduled_at) = interval '1 microsecond' \
             FROM scheduler_runs WHERE schedule_name = 'twin'",
            &[],
        )
        .await
        .expect("twins");
    assert_eq!(
        (twins.get::<_, i64>(0), twins.get::<_, bool>(1)),
        (2, true),
        "manual runs of one instant are a microsecond apart under the tick key (15)"
    );
    let indexes: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE indexname IN \
             ('scheduler_schedules_name_c_idx', 'scheduler_runs_pending_idx')",
            &[],
        )
        .await
        .expect("indexes")
        .get(0);
    assert_eq!(indexes, 2);
    let digests: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'scheduler_tick_digests'",
            &[],
        )
        .await
        .expect("tables")
        .get(0);
    assert_eq!(digests, 1);
}

#[tokio::test]
async fn three_processes_migrating_at_once_leave_one_schema() {
    let db = TestDb::new().await;
    // Spawned back to back so the three race for the lock.
    let children: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new(binary())
                .arg("migrate")
                .env("DATABASE_URL", &db.url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn migrate")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait for migrate");
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = db.client().await;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM scheduler_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, MIGRATIONS.len() as i64);
    let n: i64 = c.query_one(TABLES, &[]).await.expect("tables").get(0);
    assert_eq!(n, 4);
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    c.execute(
        "UPDATE scheduler_migrations SET checksum = 'edited' WHERE version = 1",
        &[],
    )
    .await
    .expect("tamper");
    match migrate(&mut c).await {
        Err(StoreError::Schema(msg)) => assert!(msg.contains("migration 1"), "{msg}"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}
