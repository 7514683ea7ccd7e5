//! Where the `running` runs are: `scheduler_inflight`, one row per claim
//! (or take of pending runs) listing the runs it made `running` on its
//! replica, as parallel arrays (run id, schedule, tick).
//!
//! Why not an index on `status`: a completion changes `status`, and
//! PostgreSQL updates a row in place (HOT: no index entry, a small WAL
//! record) only when no indexed column changes, predicate columns of
//! partial indexes included. A partial index of unfinished runs made every
//! completion a full new row version with an entry in every index. One
//! row per claim costs a few dozen bytes per run instead (migration 15,
//! BENCHMARKS.md "the ledger's write cost").
//!
//! **Invariant**: every `running` ledger row is listed by a row here; a row
//! here may still list runs that have ended (it goes once all of its runs
//! have). Readers therefore look each listed run up by its key and keep the
//! ones still `running`. Rows are written in the transaction that makes the
//! runs `running` (`claims::INSERT`, `runs::take_pending`), deleted by
//! their replica with the result of its last run (`runs::finish_batch`,
//! tracked in memory by `engine::inflight`), by the leader's reaper with a
//! gone replica's runs (`housekeeping::reap`), and by [`SWEEP`] when a
//! replica lost track of one.

use tokio_postgres::GenericClient;

use super::StoreError;

/// The runs still `running` among those listed here, as a parenthesised
/// FROM item without its alias (columns `run_id, schedule_name, node_id,
/// started_at, scheduled_at, cancel_requested_at, cancel_mode,
/// cancel_requested_by`), for statements to narrow with their own WHERE.
/// Schedule, node and tick come from the entry, so that a WHERE on them
/// applies before the ledger is read; the tick prunes the lookup to one
/// partition. A macro so that `concat!` can build constant statements.
#[macro_export]
macro_rules! unfinished_runs {
    () => {
        "(
    SELECT e.run_id, e.schedule_name, f.node_id, r.started_at, e.tick AS scheduled_at,
           r.cancel_requested_at, r.cancel_mode, r.cancel_requested_by
    FROM scheduler_inflight f
    CROSS JOIN LATERAL unnest(f.run_ids, f.schedule_names, f.ticks) AS e(run_id, schedule_name, tick)
    JOIN scheduler_runs r ON r.run_id = e.run_id AND r.scheduled_at = e.tick
    WHERE r.status = 'running'
)"
    };
}

/// [`unfinished_runs!`] as a constant, for statements built with `format!`.
pub const UNFINISHED: &str = unfinished_runs!();

/// Deletes rows older than a minute all of whose runs have ended: a
/// replica that lost track of one (it cannot know it did) leaves it to this.
/// Each pass looks at the rows of long runs again, one key lookup per run.
pub const SWEEP: &str = "\
DELETE FROM scheduler_inflight f
WHERE f.created_at < now() - interval '1 minute'
  AND NOT EXISTS (
      SELECT 1
      FROM unnest(f.run_ids, f.ticks) AS e(run_id, tick)
      JOIN scheduler_runs r ON r.run_id = e.run_id AND r.scheduled_at = e.tick
      WHERE r.status = 'running')";

/// Runs [`SWEEP`]; returns the rows deleted.
pub async fn sweep(client: &impl GenericClient) -> Result<u64, StoreError> {
    Ok(client.execute(SWEEP, &[]).await?)
}
