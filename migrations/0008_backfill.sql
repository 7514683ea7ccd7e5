-- Backfills: a schedule's past ticks run on purpose
-- (`POST /v1/schedules/{name}/backfill`, `src/backfill.rs`).
--
-- One row per backfill. Replicas step it (`engine::backfill`): a step locks
-- the row (FOR UPDATE SKIP LOCKED, so one replica at a time), writes the
-- next ticks' ledger rows (`pending`, trigger 'backfill', `backfill_id`
-- set) and moves `cursor_at`, in one transaction; the pending-run pickup
-- runs them. What a step has counted is kept here, so progress is one read.
CREATE TABLE scheduler_backfills (
    backfill_id       uuid        PRIMARY KEY,            -- UUIDv7: time-ordered
    schedule_name     text        NOT NULL,               -- no FK: a deleted schedule fails it
    range_start       timestamptz NOT NULL,               -- inclusive
    range_end         timestamptz NOT NULL,               -- exclusive
    mode              text        NOT NULL CHECK (mode IN ('missing', 'all')),
    overlap_policy    text        CHECK (overlap_policy IN ('skip', 'buffer_one', 'buffer_all',
                                                            'allow_all', 'cancel_other',
                                                            'terminate_other')),
    allow_large       boolean     NOT NULL DEFAULT false,
    -- The schedule's trigger when the backfill was made (`backfill::trigger_key`):
    -- if it reads otherwise later, the backfill fails instead of running other ticks.
    trigger_key       text        NOT NULL,
    idempotency_key   text,
    state             text        NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'cancelled', 'failed')),
    ticks_planned     integer     NOT NULL CHECK (ticks_planned >= 0),
    ticks_created     integer     NOT NULL DEFAULT 0,     -- ledger rows written
    ticks_existing    integer     NOT NULL DEFAULT 0,     -- passed over: a row was there (missing)
    ticks_succeeded   integer     NOT NULL DEFAULT 0,     -- settled, newest attempt completed
    ticks_failed      integer     NOT NULL DEFAULT 0,     -- settled otherwise
    ticks_in_flight   integer     NOT NULL DEFAULT 0,     -- created, not settled
    cursor_at         timestamptz,                        -- the last tick dealt with
    -- Every created tick up to here has settled, with these outcomes: a
    -- step only reads the ledger rows after it.
    settled_through   timestamptz,
    settled_succeeded integer     NOT NULL DEFAULT 0,
    settled_failed    integer     NOT NULL DEFAULT 0,
    next_step_at      timestamptz NOT NULL DEFAULT now(), -- the rate cap; a tick not due yet
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    error             text,
    CHECK (range_end > range_start)
);

-- One active backfill per schedule (ticks run in order; a second request
-- for the same work finds the first).
CREATE UNIQUE INDEX scheduler_backfills_active_key ON scheduler_backfills (schedule_name)
    WHERE state IN ('queued', 'running');
CREATE UNIQUE INDEX scheduler_backfills_idempotency_key
    ON scheduler_backfills (schedule_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- A schedule's backfills, newest first.
CREATE INDEX scheduler_backfills_schedule_idx ON scheduler_backfills (schedule_name, backfill_id DESC);

-- The ledger rows of a backfill (its own and their retries) name it.
ALTER TABLE scheduler_runs ADD COLUMN backfill_id uuid;

-- A backfill writes at most one row per tick, whoever steps it. (Its rows
-- are under the tick key too: in mode `all` a tick that has rows gets the
-- next attempt number.)
CREATE UNIQUE INDEX scheduler_runs_backfill_key ON scheduler_runs (backfill_id, scheduled_at)
    WHERE trigger = 'backfill';
-- What a step reads: the newest attempt of each of its ticks.
-- (Both built inside the migration transaction: on a very large ledger,
-- writes to it wait for one scan of the table. Their entries are only the
-- backfills' rows.)
CREATE INDEX scheduler_runs_backfill_idx ON scheduler_runs (backfill_id, scheduled_at, attempt)
    WHERE backfill_id IS NOT NULL;

-- The new trigger. NOT VALID, as in 0007: existing rows are not scanned.
ALTER TABLE scheduler_runs DROP CONSTRAINT scheduler_runs_trigger_check;
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'retry', 'backfill')) NOT VALID;
-- A backfill's own rows always name it.
ALTER TABLE scheduler_runs ADD CONSTRAINT scheduler_runs_backfill_named
    CHECK (trigger <> 'backfill' OR backfill_id IS NOT NULL) NOT VALID;
