-- spine-scheduler schema, version 1.
-- Applied by `spine-scheduler migrate` (and at `serve` start) inside one
-- transaction, serialised across replicas by an advisory lock.

-- Schedule definitions: the seed's columns plus what the engine needs.
CREATE TABLE scheduler_schedules (
    name                      text        PRIMARY KEY
                              CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    pipeline                  text        NOT NULL
                              CHECK (pipeline ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$'),
    schedule_type             text        NOT NULL
                              CHECK (schedule_type IN ('cron', 'interval', 'date')),
    cron_expression           text,
    interval_seconds          bigint      CHECK (interval_seconds > 0),
    start_at                  timestamptz,
    run_at                    timestamptz,
    timezone                  text        NOT NULL DEFAULT 'UTC',
    params                    jsonb       NOT NULL DEFAULT '{}'
                              CHECK (jsonb_typeof(params) = 'object'),
    enabled                   boolean     NOT NULL DEFAULT true,
    max_instances             integer     NOT NULL DEFAULT 1 CHECK (max_instances >= 1),
    misfire_grace_time        integer     NOT NULL DEFAULT 60 CHECK (misfire_grace_time >= 0),
    coalesce                  boolean     NOT NULL DEFAULT true,
    timeout_seconds           integer     CHECK (timeout_seconds > 0),
    retry_max_attempts        integer     NOT NULL DEFAULT 1 CHECK (retry_max_attempts >= 1),
    retry_backoff_seconds     integer     NOT NULL DEFAULT 10 CHECK (retry_backoff_seconds >= 0),
    retry_backoff_max_seconds integer     NOT NULL DEFAULT 3600
                              CHECK (retry_backoff_max_seconds >= retry_backoff_seconds),
    description               text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    -- Optimistic concurrency: every update bumps it; writers say which version they read.
    version                   bigint      NOT NULL DEFAULT 1,
    CONSTRAINT scheduler_schedules_trigger_shape CHECK (
        (schedule_type = 'cron'     AND cron_expression IS NOT NULL AND interval_seconds IS NULL AND run_at IS NULL)
     OR (schedule_type = 'interval' AND cron_expression IS NULL AND interval_seconds IS NOT NULL AND run_at IS NULL)
     OR (schedule_type = 'date'     AND cron_expression IS NULL AND interval_seconds IS NULL AND run_at IS NOT NULL)
    )
);

CREATE INDEX scheduler_schedules_enabled_idx ON scheduler_schedules (name) WHERE enabled;
CREATE INDEX scheduler_schedules_pipeline_idx ON scheduler_schedules (pipeline, name);

-- The run ledger. One row per (schedule, tick, attempt) for scheduled work;
-- the partial unique index below is what makes a claim exactly-once (G1):
-- replicas insert with ON CONFLICT DO NOTHING and only the row's creator runs it.
CREATE TABLE scheduler_runs (
    run_id        uuid        PRIMARY KEY,            -- UUIDv7: time-ordered
    schedule_name text        NOT NULL,               -- no FK: history outlives a deleted schedule
    pipeline      text        NOT NULL,
    trigger       text        NOT NULL
                  CHECK (trigger IN ('schedule', 'manual', 'retry', 'catchup')),
    scheduled_at  timestamptz NOT NULL,               -- the tick (for manual runs: when asked)
    attempt       integer     NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    node_id       uuid,                               -- the replica that claimed or recorded it
    status        text        NOT NULL
                  CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                    'skipped', 'missed', 'abandoned')),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    not_before    timestamptz,                        -- earliest start of a pending retry
    started_at    timestamptz,
    completed_at  timestamptz,
    error         text,
    result        jsonb
);

CREATE UNIQUE INDEX scheduler_runs_tick_key
    ON scheduler_runs (schedule_name, scheduled_at, attempt)
    WHERE trigger <> 'manual';

-- History per schedule and across schedules, newest first, cursor-paginated.
CREATE INDEX scheduler_runs_schedule_time_idx
    ON scheduler_runs (schedule_name, scheduled_at DESC, run_id DESC);
CREATE INDEX scheduler_runs_time_idx
    ON scheduler_runs (scheduled_at DESC, run_id DESC);
-- What the leader's reaper and the overlap check look at: unfinished runs.
-- (No general index on status: every index is paid for on each claim and
-- each completion, and status filters ride on the time-ordered indexes.)
-- What the leader's retry sweep looks at: recent failures (a small set).
CREATE INDEX scheduler_runs_retryable_idx
    ON scheduler_runs (completed_at)
    WHERE status IN ('failed', 'abandoned');
CREATE INDEX scheduler_runs_unfinished_idx
    ON scheduler_runs (schedule_name, node_id)
    WHERE status IN ('pending', 'running');

-- Cluster membership, one row per replica process.
CREATE TABLE scheduler_nodes (
    node_id      uuid        PRIMARY KEY,
    hostname     text        NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    leader_since timestamptz,
    state        text        NOT NULL DEFAULT 'active'
                 CHECK (state IN ('active', 'draining', 'left', 'dead'))
);

CREATE INDEX scheduler_nodes_heartbeat_idx ON scheduler_nodes (heartbeat_at);

-- Every change to a schedule is announced so replicas update at once (G6).
-- The payload is small (well under NOTIFY's 8000-byte limit): replicas
-- re-read the row.
CREATE FUNCTION scheduler_schedules_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('spine_schedules',
            json_build_object('op', 'delete', 'name', OLD.name)::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('spine_schedules',
        json_build_object('op', lower(TG_OP), 'name', NEW.name, 'version', NEW.version)::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER scheduler_schedules_notify
    AFTER INSERT OR UPDATE OR DELETE ON scheduler_schedules
    FOR EACH ROW EXECUTE FUNCTION scheduler_schedules_notify();
