//! The ledger's partitions (migration 0014): `scheduler_runs` is
//! partitioned by RANGE of `scheduled_at`. The leader creates partitions
//! ahead of time, watches the DEFAULT partition (ticks no partition
//! covers), and drops whole partitions once every row in them is past
//! retention.
//!
//! Partitions are named `scheduler_runs_pYYYYMMDDTHHMM` after their lower
//! bound in UTC, plus `scheduler_runs_legacy` (the table as it was before
//! the migration, every tick before the migration's boundary) and
//! `scheduler_runs_default`. Bounds sit on a grid of the partition
//! interval counted from the Unix epoch (so daily partitions start at
//! midnight UTC); new partitions always start at the highest existing upper
//! bound, so a changed interval never makes two overlap.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::StoreError;

/// The DEFAULT partition's name.
pub const DEFAULT_PARTITION: &str = "scheduler_runs_default";

/// How long partition DDL waits for its lock before giving up until the
/// next pass. Creating or dropping a partition takes ACCESS EXCLUSIVE on
/// `scheduler_runs` for a moment, and while it waits every claim and
/// completion queues behind it: so the wait is bounded well under a tick's
/// budget (claim transactions last about the claim lead, 100 ms, so one
/// normally ends within it). Giving up is harmless: partitions are made
/// three days ahead and the leader tries again every five minutes.
const DDL_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '250ms'";

/// Every partition of the ledger with its bounds (NULL: MINVALUE below, or
/// the DEFAULT partition). The bounds are read back from PostgreSQL's own
/// text of the bound, cast in the same session, so its DateStyle and
/// TimeZone cannot skew them.
const LIST: &str = "\
SELECT c.relname::text AS name,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS lower,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'scheduler_runs'::regclass
ORDER BY upper NULLS FIRST, name";

/// Whether the DEFAULT partition holds a row in [$1, $2): creating a
/// partition for that range would fail (PostgreSQL refuses a partition
/// whose rows sit in the default one), and the leader moves nothing.
const DEFAULT_HAS_RANGE: &str = "\
SELECT EXISTS (SELECT 1 FROM scheduler_runs_default WHERE scheduled_at >= $1 AND scheduled_at < $2)";

/// How many rows the DEFAULT partition holds, counted up to $1.
const DEFAULT_ROWS: &str = "SELECT count(*) FROM (SELECT 1 FROM scheduler_runs_default LIMIT $1) d";

/// `CREATE TABLE` for one partition; `{name}`, `{from}` and `{to}` are
/// filled by [`create_sql`] (DDL takes no bind parameters). Over half of
/// each page is left free: a completion's new row version goes on its
/// row's page (a HOT update, migration 15), and a completion batch updates
/// every row a claim has just put there.
const CREATE: &str = "CREATE TABLE IF NOT EXISTS {name} PARTITION OF scheduler_runs \
                      FOR VALUES FROM ('{from}') TO ('{to}') WITH (fillfactor = 45)";

/// `DROP TABLE` for one partition, `{name}` filled by [`drop_sql`].
const DROP: &str = "DROP TABLE IF EXISTS {name}";

/// Whether the rows ticked in [$1, $2) are all ones the row-by-row
/// retention (`housekeeping::prune_runs`) would delete at cutoff $3: none
/// unfinished, no backfill row finished after the cutoff. ($1 NULL: from
/// the beginning.) Partition pruning keeps this to the one partition; the
/// pending and backfill rows are found through their partial indexes, the
/// running ones through `scheduler_inflight` (which may still list ended
/// runs: a range is then kept one pass longer).
const ALL_EXPIRED: &str = "\
SELECT NOT EXISTS (
    SELECT 1 FROM scheduler_runs r
    WHERE r.scheduled_at >= coalesce($1, '-infinity'::timestamptz) AND r.scheduled_at < $2
      AND (r.pending_since IS NOT NULL
           OR (r.backfill_id IS NOT NULL
               AND (r.completed_at IS NULL OR r.completed_at >= $3))))
   AND NOT EXISTS (
    SELECT 1 FROM scheduler_inflight f, unnest(f.ticks) AS e(tick)
    WHERE e.tick >= coalesce($1, '-infinity'::timestamptz) AND e.tick < $2)";

/// Whether no schedule with a row ticked in [$1, $2) has fewer than $3
/// rows ticked from $2 on, i.e. the range holds none of any schedule's
/// newest $3 runs (`--retention-keep-last`). The schedules of the range are
/// walked one index probe each (a loose index scan), not row by row.
const NONE_OF_THE_LAST: &str = "\
WITH RECURSIVE names AS (
    (SELECT r.schedule_name FROM scheduler_runs r
     WHERE r.scheduled_at >= coalesce($1, '-infinity'::timestamptz) AND r.scheduled_at < $2
     ORDER BY r.schedule_name LIMIT 1)
    UNION ALL
    SELECT (SELECT r.schedule_name FROM scheduler_runs r
            WHERE r.scheduled_at >= coalesce($1, '-infinity'::timestamptz) AND r.scheduled_at < $2
              AND r.schedule_name > n.schedule_name
            ORDER BY r.schedule_name LIMIT 1)
    FROM names n WHERE n.schedule_name IS NOT NULL)
SELECT NOT EXISTS (
    SELECT 1 FROM names n
    WHERE n.schedule_name IS NOT NULL
      AND (SELECT count(*) FROM (SELECT 1 FROM scheduler_runs k
                                 WHERE k.schedule_name = n.schedule_name AND k.scheduled_at >= $2
                                 LIMIT $3) x) < $3)";

/// One partition of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The table's name.
    pub name: String,
    /// Inclusive lower bound of `scheduled_at`; `None`: unbounded below
    /// (the legacy partition) or the DEFAULT partition.
    pub lower: Option<DateTime<Utc>>,
    /// Exclusive upper bound; `None` only for the DEFAULT partition.
    pub upper: Option<DateTime<Utc>>,
}

/// What a pass over the partitions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Partitions created.
    pub created: Vec<String>,
    /// Partitions not created because the DEFAULT partition holds rows in
    /// their range (those ticks stay in the DEFAULT partition).
    pub blocked: Vec<String>,
    /// Partitions dropped by retention.
    pub dropped: Vec<String>,
    /// Partitions past retention kept because they hold unfinished runs,
    /// backfill runs finished recently or a schedule's newest runs under
    /// `--retention-keep-last` (the row-by-row retention thins them).
    pub kept: Vec<String>,
}

/// Every partition of the ledger, the DEFAULT one first, then by upper bound.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Partition>, StoreError> {
    client
        .query(LIST, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(Partition {
                name: r.try_get("name")?,
                lower: r.try_get("lower")?,
                upper: r.try_get("upper")?,
            })
        })
        .collect()
}

/// The partition interval's grid point after `t` (strictly): bounds are
/// multiples of `interval` since the Unix epoch, in UTC.
pub fn next_boundary(t: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX).max(1);
    let secs = t.timestamp();
    let next = secs.div_euclid(step).saturating_add(1).saturating_mul(step);
    DateTime::from_timestamp(next, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The name of the partition starting at `from`.
pub fn partition_name(from: DateTime<Utc>) -> String {
    format!("scheduler_runs_p{}", from.format("%Y%m%dT%H%M"))
}

fn create_sql(name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    CREATE
        .replace("{name}", &quote_ident(name))
        .replace("{from}", &from.to_rfc3339())
        .replace("{to}", &to.to_rfc3339())
}

fn drop_sql(name: &str) -> String {
    DROP.replace("{name}", &quote_ident(name))
}

/// A double-quoted identifier (names come from the catalog or from
/// [`partition_name`]; quoting keeps any name literal).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the partitions of `interval` from the highest existing upper
/// bound until `until` is covered, each in a transaction of its own that
/// waits at most 2 s for its lock. A range whose ticks already sit in the
/// DEFAULT partition is left to it (reported in `blocked`). Idempotent:
/// two leaders racing create each partition once.
pub async fn create_ahead(
    client: &mut impl GenericClient,
    interval: Duration,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<PartitionReport, StoreError> {
    let mut report = PartitionReport::default();
    let parts = list(&*client).await?;
    let mut from = parts
        .iter()
        .filter_map(|p| p.upper)
        .max()
        .unwrap_or_else(|| next_boundary(now, interval) - interval);
    // A ledger left without a leader for long is covered again from where
    // its partitions end; this bounds one pass all the same.
    for _ in 0..10_000 {
        if from >= until {
            break;
        }
        let to = next_boundary(from, interval);
        let name = partition_name(from);
        let blocked: bool = client
            .query_one(DEFAULT_HAS_RANGE, &[&from, &to])
            .await?
            .try_get(0)?;
        if blocked {
            report.blocked.push(name);
        } else {
            let tx = client.transaction().await?;
            tx.batch_execute(DDL_LOCK_TIMEOUT).await?;
            tx.batch_execute(&create_sql(&name, from, to)).await?;
            tx.commit().await?;
            report.created.push(name);
        }
        from = to;
    }
    Ok(report)
}

/// How many rows the DEFAULT partition holds (counted up to `cap`): ticks
/// no partition covered when they were written. Any is worth an alert:
/// their range can get no partition until they are gone.
pub async fn default_rows(client: &impl GenericClient, cap: i64) -> Result<i64, StoreError> {
    Ok(client.query_one(DEFAULT_ROWS, &[&cap]).await?.try_get(0)?)
}

/// Drops every partition whose upper bound is at least `retention` old and
/// whose rows are all ones the row-by-row retention would delete: none
/// unfinished, no backfill run finished within `retention`, and (with
/// `keep_last`) none of a schedule's newest `keep_last` runs. The others
/// are reported in `kept`; the row-by-row retention thins them and a later
/// pass drops them. The DEFAULT partition is never dropped.
pub async fn drop_expired(
    client: &mut impl GenericClient,
    now: DateTime<Utc>,
    retention: Duration,
    keep_last: Option<i64>,
) -> Result<PartitionReport, StoreError> {
    let mut report = PartitionReport::default();
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = now.checked_sub_signed(retention).unwrap_or(now);
    for p in list(&*client).await? {
        let Some(upper) = p.upper else { continue };
        if upper > cutoff {
            continue;
        }
        let expired: bool = client
            .query_one(ALL_EXPIRED, &[&p.lower, &upper, &cutoff])
            .await?
            .try_get(0)?;
        let beyond_last = match keep_last {
            Some(keep) if expired => client
                .query_one(NONE_OF_THE_LAST, &[&p.lower, &upper, &keep])
                .await?
                .try_get(0)?,
            _ => expired,
        };
        if !beyond_last {
            report.kept.push(p.name);
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(DDL_LOCK_TIMEOUT).await?;
        tx.batch_execute(&drop_sql(&p.name)).await?;
        tx.commit().await?;
        report.dropped.push(p.name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn boundaries_sit_on_the_grid_from_the_epoch() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            next_boundary(t("2026-11-30T08:20:00Z"), day),
            t("2026-12-01T00:00:00Z")
        );
        // A bound is never its own successor.
        assert_eq!(
            next_boundary(t("2026-12-01T00:00:00Z"), day),
            t("2026-12-02T00:00:00Z")
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(
            next_boundary(t("2026-11-30T08:20:00Z"), hour),
            t("2026-11-30T09:00:00Z")
        );
        assert_eq!(
            partition_name(t("2026-11-30T09:00:00Z")),
            "scheduler_runs_p20261130T0900"
        );
    }

    #[test]
    fn ddl_quotes_the_name() {
        assert_eq!(
            drop_sql("scheduler_runs_p20261130T0900"),
            "DROP TABLE IF EXISTS \"scheduler_runs_p20261130T0900\""
        );
        assert!(
            create_sql("x\"y", t("2026-11-30T00:00:00Z"), t("2026-12-01T00:00:00Z"))
                .starts_with("CREATE TABLE IF NOT EXISTS \"x\"\"y\" PARTITION OF scheduler_runs")
        );
    }
}
