-- The ledger partitioned by tick time (`scheduled_at`, RANGE), so that
-- retention drops whole partitions instead of deleting row by row
-- (`store::partitions`, issue 20).
--
-- What it does, without losing or copying a row:
-- 1. The existing table becomes `scheduler_runs_legacy`, its indexes
--    renamed with it (its CHECK constraints keep their names: the
--    parent's must match them); its primary key on run_id is dropped.
-- 2. A CHECK constraint bounds its ticks below B, the start of the UTC day
--    after both now and its newest tick, so that ATTACH trusts it instead
--    of scanning a second time.
-- 3. A new partitioned `scheduler_runs` with the same columns, defaults and
--    CHECK constraints is created; the legacy table is attached as its
--    partition for every tick before B; a DEFAULT partition takes any tick
--    no partition covers (a row never fails for want of one); daily
--    partitions are created for the three days from B (the leader creates
--    the rest ahead, at `--ledger-partition-interval`).
-- 4. The indexes are created on the parent. Each one the legacy table
--    already has (same columns, same predicate) is attached, not rebuilt.
--    The primary key cannot stay `run_id` alone (a unique key of a
--    partitioned table must contain the partition key): it becomes
--    (run_id, scheduled_at), which is built once over the legacy rows, and
--    `run_id` stays unique in practice because it is a UUIDv7 (48 bits of
--    milliseconds, 74 random bits) made by the writer of the row. Every
--    other unique key already contains `scheduled_at`: the tick key
--    (schedule_name, scheduled_at, attempt), which every ON CONFLICT names,
--    and the backfill key (backfill_id, scheduled_at). No foreign key
--    references the ledger.
--
-- Locks, and for how long: like every migration this runs in one
-- transaction, and its first statement (the RENAME) takes ACCESS EXCLUSIVE
-- on the ledger until commit: no replica can claim, complete or read a run
-- meanwhile (they retry; ticks are claimed late, within their misfire
-- grace, or recorded missed past it). That time is one sequential scan of
-- the ledger (validating the CHECK) plus one index build over it (the new
-- primary key): 1.3 s for a million rows measured on a small shared test
-- server (see README, "Partitioned ledger"). On a large ledger, shrink it
-- first (a shorter `--retention` for a while) or plan the upgrade for a
-- quiet hour.
DO $$
DECLARE
    boundary timestamptz;
    day      timestamptz;
    r        record;
BEGIN
    ALTER TABLE scheduler_runs RENAME TO scheduler_runs_legacy;
    -- Index names are per schema: free them for the parent's.
    FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = 'scheduler_runs_legacy'::regclass
               AND c.relname LIKE 'scheduler\_runs\_%'
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname,
                       'scheduler_runs_legacy' || substr(r.relname, length('scheduler_runs') + 1));
    END LOOP;
    -- The primary key is replaced by (run_id, scheduled_at) below.
    EXECUTE 'ALTER TABLE scheduler_runs_legacy DROP CONSTRAINT scheduler_runs_legacy_pkey';

    SELECT date_trunc('day', greatest(max(scheduled_at), now()), 'UTC') + interval '1 day'
      INTO boundary FROM scheduler_runs_legacy;
    EXECUTE format('ALTER TABLE scheduler_runs_legacy ADD CONSTRAINT scheduler_runs_legacy_bound '
                   'CHECK (scheduled_at < %L)', boundary);

    CREATE TABLE scheduler_runs (LIKE scheduler_runs_legacy INCLUDING DEFAULTS)
        PARTITION BY RANGE (scheduled_at);
    -- The same CHECK constraints under the same names, NOT VALID where the
    -- legacy table's are (ATTACH refuses a valid parent constraint over a
    -- NOT VALID one, and validating would scan the ledger once more).
    FOR r IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'scheduler_runs_legacy'::regclass AND contype = 'c'
               AND conname <> 'scheduler_runs_legacy_bound'
             ORDER BY conname
    LOOP
        EXECUTE format('ALTER TABLE scheduler_runs ADD CONSTRAINT %I %s', r.conname, r.def);
    END LOOP;
    EXECUTE format('ALTER TABLE scheduler_runs ATTACH PARTITION scheduler_runs_legacy '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', boundary);
    CREATE TABLE scheduler_runs_default PARTITION OF scheduler_runs DEFAULT;
    FOR i IN 0..2 LOOP
        day := boundary + make_interval(days => i);
        EXECUTE format('CREATE TABLE %I PARTITION OF scheduler_runs FOR VALUES FROM (%L) TO (%L)',
                       'scheduler_runs_p' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MI'),
                       day, day + interval '1 day');
    END LOOP;
END
$$;

ALTER TABLE scheduler_runs ADD PRIMARY KEY (run_id, scheduled_at);
CREATE UNIQUE INDEX scheduler_runs_tick_key
    ON scheduler_runs (schedule_name, scheduled_at, attempt)
    WHERE trigger <> 'manual';
CREATE INDEX scheduler_runs_schedule_time_idx
    ON scheduler_runs (schedule_name, scheduled_at DESC, run_id DESC);
CREATE INDEX scheduler_runs_time_idx
    ON scheduler_runs (scheduled_at DESC, run_id DESC);
CREATE INDEX scheduler_runs_retryable_idx
    ON scheduler_runs (completed_at)
    WHERE status IN ('failed', 'abandoned');
CREATE INDEX scheduler_runs_unfinished_idx
    ON scheduler_runs (schedule_name, node_id)
    WHERE status IN ('pending', 'running');
CREATE INDEX scheduler_runs_pending_idx ON scheduler_runs (scheduled_at)
    WHERE status = 'pending';
CREATE UNIQUE INDEX scheduler_runs_backfill_key ON scheduler_runs (backfill_id, scheduled_at)
    WHERE trigger = 'backfill';
CREATE INDEX scheduler_runs_backfill_idx ON scheduler_runs (backfill_id, scheduled_at, attempt)
    WHERE backfill_id IS NOT NULL;
