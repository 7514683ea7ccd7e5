-- Every replica asks once a second (and on each NOTIFY) for pending runs:
-- run-now requests and retries past their backoff. Without an index of
-- their own that question walked the unfinished-runs index, i.e. every
-- running run plus every entry a completed run left behind until vacuum:
-- 10-17 ms per poll per replica at 8,000 fires/s, to find nothing. Pending
-- runs are few, so this index stays small; rows in other states only cost
-- the predicate check.
-- (Built inside the migration transaction: on a very large ledger, writes
-- to it wait for one scan of the table.)
CREATE INDEX scheduler_runs_pending_idx ON scheduler_runs (scheduled_at)
    WHERE status = 'pending';
