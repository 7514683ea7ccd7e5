-- Run controls: run-now with a params override, rerun, pause with a note,
-- and an end to a schedule (`end_at`).
--
-- Safe on a large ledger: every column is nullable and has no default, so
-- adding it changes only the catalog (no table rewrite, no scan), and the
-- one CHECK is NOT VALID (enforced on rows written from now on; existing
-- rows, all NULL in the new column, are not scanned). Existing rows keep
-- working: NULL means "as before" everywhere below.

-- The params a manual run (run-now, rerun, and the retries of either) was
-- given: the schedule's params when it was asked for, with the request's
-- override merged over them. NULL on the rows the engine writes for ticks
-- (and on manual runs from before this migration): those run with their
-- schedule's params as they are when the run starts.
ALTER TABLE scheduler_runs ADD COLUMN params jsonb;
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_params_object
    CHECK (params IS NULL OR jsonb_typeof(params) = 'object') NOT VALID;

-- A rerun names the run it repeats. No foreign key: history is pruned by
-- age, and a rerun may outlive its original.
ALTER TABLE scheduler_runs ADD COLUMN rerun_of uuid;

-- No tick after this instant (NULL: the schedule never ends).
ALTER TABLE scheduler_schedules ADD COLUMN end_at timestamptz;

-- While a schedule is paused (enabled = false): since when, by whom and
-- why, as the pause said (NULL when not said, and for schedules paused
-- before this migration). Cleared when it is resumed.
ALTER TABLE scheduler_schedules ADD COLUMN paused_at timestamptz;
ALTER TABLE scheduler_schedules ADD COLUMN paused_by text;
ALTER TABLE scheduler_schedules ADD COLUMN paused_note text;
