-- The `catchup` trigger was never written (a coalesced backlog runs as its
-- newest tick, trigger `schedule`); the code no longer knows it. New rows
-- may not use it. NOT VALID: existing rows are not scanned (there are none
-- with it), so this takes no time on a large ledger.
ALTER TABLE scheduler_runs DROP CONSTRAINT scheduler_runs_trigger_check;
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'retry')) NOT VALID;
