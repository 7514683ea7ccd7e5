-- Jitter: each tick of a schedule falls due at a deterministic delay in
-- [0, jitter_seconds) after it (schedule::Schedule::jitter_delay), so herds
-- of schedules ticking at the same instant are spread. 0: none.
-- Metadata-only (no table rewrite): a constant default, a CHECK NOT VALID.
ALTER TABLE scheduler_schedules ADD COLUMN jitter_seconds integer NOT NULL DEFAULT 0;
ALTER TABLE scheduler_schedules ADD CONSTRAINT scheduler_schedules_jitter_check
    CHECK (jitter_seconds BETWEEN 0 AND 3600) NOT VALID;
