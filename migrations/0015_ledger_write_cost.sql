-- Half the ledger's write cost per fire (issue 20): completions become HOT
-- updates and a fired tick writes three index entries instead of five.
--
-- Why: PostgreSQL (15) updates a row "HOT" — the new version on the same
-- page, no index touched — only when no column any index uses changes,
-- predicate columns of partial indexes included. The completion changes
-- `status` and `completed_at`, which the partial indexes of unfinished,
-- pending and failed runs named, so every completion wrote a new row
-- version elsewhere and an entry in every index again. Now:
--
-- - no index names `status`, `completed_at`, `started_at`, `error` or
--   `result` (what a completion writes);
-- - pending runs are marked by `pending_since` (set while `pending`, CHECK
--   below), failed and abandoned runs by `failed_at` (set when they fail,
--   cleared by the retry sweep's pass that handles them): each has a
--   partial index over its own column, so only the rare transitions into
--   and out of those states leave HOT;
-- - running runs are listed in `scheduler_inflight`, one row per claim (or
--   take of pending runs) and replica, not per run, deleted by that replica
--   once all its runs have ended (`store::inflight`); the overlap check, the
--   reaper and cancel requests read it and look the runs up by key;
-- - the per-schedule history rides on the tick key, which now covers manual
--   runs too (a fourth key column tells them apart, so a manual run can
--   never take a tick's key) — `scheduler_runs_schedule_time_idx` goes;
-- - the time index is ascending: new ticks go to its right edge, where a
--   B-tree splits a full page 90/10, not 50/50 as at the left edge of the
--   descending one (half the size, a fraction of the splits); a backward
--   scan still reads it newest first;
-- - partitions get `fillfactor = 45`: a completion batch updates every row
--   a claim just put on a page, and the new versions (8 bytes longer) need
--   room on that page (measured in BENCHMARKS.md: 39 % HOT at 80, 90 % at
--   50, 100 % at 45).
--
-- Locks and time: the ledger is locked (ACCESS EXCLUSIVE) for the whole
-- migration. The column additions are catalog changes; the UPDATEs of
-- pending and recently failed rows find them through the partial indexes
-- that are dropped afterwards; the manual runs are found by one scan of the
-- ledger, and the new tick key and time index are built over it (like 14's
-- primary key: of the order of a second per million rows each on a small
-- server). Plan a large ledger's upgrade as for 14.

-- The whole migration's lock, taken at once rather than upgraded later.
LOCK TABLE scheduler_runs IN ACCESS EXCLUSIVE MODE;

-- Manual runs were outside any unique key: two asked for in one
-- transaction share an instant. Such a pair is moved apart by a
-- microsecond each, as `runs::insert_manual_run` now does, so that the
-- index can be built.
UPDATE scheduler_runs r
SET scheduled_at = r.scheduled_at + (d.rn - 1) * interval '1 microsecond'
FROM (SELECT run_id, scheduled_at,
             row_number() OVER (PARTITION BY schedule_name, scheduled_at, attempt
                                ORDER BY run_id) AS rn
      FROM scheduler_runs WHERE trigger = 'manual') d
WHERE r.run_id = d.run_id AND r.scheduled_at = d.scheduled_at AND d.rn > 1;
ALTER TABLE scheduler_runs ADD COLUMN pending_since timestamptz;
ALTER TABLE scheduler_runs ADD COLUMN failed_at timestamptz;
UPDATE scheduler_runs SET pending_since = claimed_at WHERE status = 'pending';
UPDATE scheduler_runs SET failed_at = completed_at
WHERE status IN ('failed', 'abandoned') AND completed_at > now() - interval '1 day';
-- NOT VALID: checked for every row written from now on, without a scan of
-- the ledger now (the UPDATE above made the old rows agree anyway).
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_pending_since
    CHECK ((status = 'pending') = (pending_since IS NOT NULL)) NOT VALID;
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_failed_at
    CHECK (failed_at IS NULL OR status IN ('failed', 'abandoned')) NOT VALID;

CREATE TABLE scheduler_inflight (
    claim_id       uuid          PRIMARY KEY,
    node_id        uuid          NOT NULL,
    -- Parallel arrays, one element per run: its id, schedule and tick (the
    -- tick finds its partition).
    run_ids        uuid[]        NOT NULL,
    schedule_names text[]        NOT NULL,
    ticks          timestamptz[] NOT NULL,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    CHECK (cardinality(run_ids) = cardinality(schedule_names)
           AND cardinality(run_ids) = cardinality(ticks))
);
INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks)
SELECT gen_random_uuid(), node_id, array_agg(run_id), array_agg(schedule_name),
       array_agg(scheduled_at)
FROM scheduler_runs
WHERE status = 'running' AND node_id IS NOT NULL
GROUP BY node_id;

DROP INDEX scheduler_runs_unfinished_idx;
DROP INDEX scheduler_runs_pending_idx;
DROP INDEX scheduler_runs_retryable_idx;
DROP INDEX scheduler_runs_schedule_time_idx;
CREATE INDEX scheduler_runs_pending_idx ON scheduler_runs (pending_since)
    WHERE pending_since IS NOT NULL;
CREATE INDEX scheduler_runs_failed_idx ON scheduler_runs (failed_at)
    WHERE failed_at IS NOT NULL;
DROP INDEX scheduler_runs_time_idx;
CREATE INDEX scheduler_runs_time_idx ON scheduler_runs (scheduled_at, run_id);

-- The tick key for every run. Ticks (every trigger but `manual`) share the
-- key space, as before: a backfill or a retry of a tick that has a row
-- conflicts with it. A manual run's `scheduled_at` is when it was asked
-- for and may fall on a tick's instant: the fourth column keeps them apart.
DROP INDEX scheduler_runs_tick_key;
CREATE UNIQUE INDEX scheduler_runs_tick_key
    ON scheduler_runs (schedule_name, scheduled_at, attempt, (trigger = 'manual'));

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT relid FROM pg_partition_tree('scheduler_runs') WHERE isleaf
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 45)', r.relid::regclass);
    END LOOP;
END
$$;
