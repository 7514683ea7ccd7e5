-- Who manages each schedule, and the audit trail of every change to one.
--
-- Safe on a large table: the new columns are nullable without a default
-- (a catalog change only) and the CHECK is NOT VALID (existing rows, all
-- NULL in the new columns, are not scanned).

-- Who manages a schedule: 'api' (created or taken over through the API) or
-- 'file' (created or adopted by `apply`/`serve --schedules` of the schedules
-- file named by managed_source). NULL: not claimed yet — a schedule stored
-- before this migration. The first apply that names it adopts it; the
-- first API write makes it the API's. Nothing prunes an unclaimed schedule.
ALTER TABLE scheduler_schedules ADD COLUMN managed_by text;
ALTER TABLE scheduler_schedules ADD COLUMN managed_source text;
ALTER TABLE scheduler_schedules ADD CONSTRAINT scheduler_schedules_manager CHECK (
    (managed_by IS NULL AND managed_source IS NULL)
    OR (managed_by = 'api' AND managed_source IS NULL)
    OR (managed_by = 'file' AND managed_source IS NOT NULL)
) NOT VALID;

-- One row per change to a schedule, written in the transaction that makes
-- the change. Kept when the schedule is deleted (history is read by name);
-- never pruned by the ledger's retention (a few rows per change, not per
-- tick).
CREATE TABLE scheduler_schedule_changes (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule_name  text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    -- create, update, delete, pause, resume, take_over
    action         text        NOT NULL CHECK (action IN
                       ('create', 'update', 'delete', 'pause', 'resume', 'take_over')),
    -- Who: an API token by its name ('token'), a schedules file by its
    -- source name ('file'), or nobody known ('anonymous': --insecure-no-auth).
    actor_kind     text        NOT NULL CHECK (actor_kind IN ('token', 'file', 'anonymous')),
    actor_name     text,
    -- The schedule's version before and after (NULL: did not exist / gone).
    version_before bigint,
    version_after  bigint,
    -- The definition keys that changed (updates).
    fields         text[]      NOT NULL DEFAULT '{}',
    -- The canonical definitions before and after, as GET shows them.
    before         jsonb,
    after          jsonb,
    -- A pause's note and who it says paused; a take-over's former source.
    note           text,
    paused_by      text,
    former_manager text
);
CREATE INDEX scheduler_schedule_changes_name_idx
    ON scheduler_schedule_changes (schedule_name, id DESC);
