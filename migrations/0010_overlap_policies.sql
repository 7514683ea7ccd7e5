-- Overlap policies (Temporal's ScheduleOverlapPolicy): what a tick does
-- when its schedule already has max_instances runs unfinished.
-- Metadata-only changes (no table rewrite): a column with a constant
-- default, nullable columns, CHECK constraints NOT VALID.
ALTER TABLE scheduler_schedules ADD COLUMN overlap_policy text NOT NULL DEFAULT 'skip';
ALTER TABLE scheduler_schedules ADD CONSTRAINT scheduler_schedules_overlap_policy_check
    CHECK (overlap_policy IN ('skip', 'buffer_one', 'buffer_all', 'allow_all',
                              'cancel_other', 'terminate_other')) NOT VALID;

-- A run ends `cancelled`: by a newer tick under cancel_other/terminate_other
-- (cancel_requested_by names its run), or through the API (NULL).
-- cancel_requested_at is set when the cancel is asked for; the replica
-- running the run hears it (NOTIFY spine_runs 'cancel:<run_id>') and
-- stops it: 'graceful' tells the pipeline and gives a command SIGTERM, then
-- SIGKILL after its kill grace; 'immediate' kills at once.
-- A buffered tick's row names the run it waited for in overlapped_run_id.
ALTER TABLE scheduler_runs ADD COLUMN cancel_requested_at timestamptz;
ALTER TABLE scheduler_runs ADD COLUMN cancel_requested_by uuid;
ALTER TABLE scheduler_runs ADD COLUMN cancel_mode text
    CHECK (cancel_mode IN ('graceful', 'immediate'));
ALTER TABLE scheduler_runs DROP CONSTRAINT scheduler_runs_status_check;
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed',
                      'skipped', 'missed', 'abandoned', 'cancelled')) NOT VALID;
