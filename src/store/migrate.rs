//! Applies the SQL files in `migrations/` in order, once each.
//!
//! All pending migrations run in one transaction that first takes an
//! advisory transaction lock, so replicas that start at the same moment
//! queue up: the first applies, the rest wait, then see the rows it recorded
//! and do nothing. Each applied file is recorded with its checksum; a file
//! edited after it was applied is an error, not a silent drift.

use tokio_postgres::Client;

use super::{locks, StoreError};

/// One migration: its number, a name, and the SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in ascending order.
    pub version: i32,
    /// The file's name without the number.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// Every migration this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "schedule_name_order",
        sql: include_str!("../../migrations/0002_schedule_name_order.sql"),
    },
    Migration {
        version: 3,
        name: "pending_runs_index",
        sql: include_str!("../../migrations/0003_pending_runs_index.sql"),
    },
    Migration {
        version: 4,
        name: "tick_digests",
        sql: include_str!("../../migrations/0004_tick_digests.sql"),
    },
    Migration {
        version: 5,
        name: "liveness_and_overlap",
        sql: include_str!("../../migrations/0005_liveness_and_overlap.sql"),
    },
    Migration {
        version: 6,
        name: "sweep_watermark",
        sql: include_str!("../../migrations/0006_sweep_watermark.sql"),
    },
    Migration {
        version: 7,
        name: "no_catchup_trigger",
        sql: include_str!("../../migrations/0007_no_catchup_trigger.sql"),
    },
    Migration {
        version: 8,
        name: "backfill",
        sql: include_str!("../../migrations/0008_backfill.sql"),
    },
    Migration {
        version: 9,
        name: "run_controls",
        sql: include_str!("../../migrations/0009_run_controls.sql"),
    },
    Migration {
        version: 10,
        name: "overlap_policies",
        sql: include_str!("../../migrations/0010_overlap_policies.sql"),
    },
    Migration {
        version: 11,
        name: "jitter",
        sql: include_str!("../../migrations/0011_jitter.sql"),
    },
    Migration {
        version: 12,
        name: "ownership_and_history",
        sql: include_str!("../../migrations/0012_ownership_and_history.sql"),
    },
    Migration {
        version: 13,
        name: "node_clock_offset",
        sql: include_str!("../../migrations/0013_node_clock_offset.sql"),
    },
    Migration {
        version: 14,
        name: "partitioned_ledger",
        sql: include_str!("../../migrations/0014_partitioned_ledger.sql"),
    },
    Migration {
        version: 15,
        name: "ledger_write_cost",
        sql: include_str!("../../migrations/0015_ledger_write_cost.sql"),
    },
];

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions that were already in place.
    pub already_applied: Vec<i32>,
}

const CREATE_TABLE: &str = "
CREATE TABLE IF NOT EXISTS scheduler_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

const APPLIED: &str =
    "SELECT version, checksum = md5($1::text) AS same FROM scheduler_migrations WHERE version = $2";
const RECORD: &str =
    "INSERT INTO scheduler_migrations (version, name, checksum) VALUES ($1, $2, md5($3::text))";
const NEWEST: &str = "SELECT max(version) FROM scheduler_migrations";

/// Brings the schema up to date. Safe to run concurrently from many processes.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::MIGRATE])
        .await?;
    tx.batch_execute(CREATE_TABLE).await?;
    let mut report = MigrationReport::default();
    for m in MIGRATIONS {
        let row = tx.query_opt(APPLIED, &[&m.sql, &m.version]).await?;
        match row {
            Some(row) if row.get::<_, bool>("same") => report.already_applied.push(m.version),
            Some(_) => {
                return Err(StoreError::Schema(format!(
                    "migration {} ({}) was applied from a different file; \
                     never edit an applied migration, add a new one",
                    m.version, m.name
                )))
            }
            None => {
                tx.batch_execute(m.sql).await?;
                tx.execute(RECORD, &[&m.version, &m.name, &m.sql]).await?;
                report.applied.push(m.version);
            }
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// Checks that the database has exactly the migrations this binary knows.
/// A newer schema (from a newer binary during a rolling upgrade) is reported
/// as `Ok(false)`: older replicas keep running, since migrations are additive.
pub async fn is_current(client: &impl tokio_postgres::GenericClient) -> Result<bool, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('scheduler_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let newest: Option<i32> = client.query_one(NEWEST, &[]).await?.get(0);
    let known = MIGRATIONS.last().map(|m| m.version);
    Ok(newest == known)
}
