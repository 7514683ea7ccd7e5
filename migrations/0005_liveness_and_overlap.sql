-- Liveness from the database session (failover in milliseconds).
--
-- Each replica holds a session-level advisory lock on a dedicated
-- connection, keyed (spine_liveness_class, liveness_key); pg_locks shows it
-- as locktype 'advisory', classid = 1936746860 ("spil"), objid =
-- liveness_key, objsubid = 2. The server releases it the moment the
-- replica's session ends (crash, kill -9, OOM kill, node loss with a RST),
-- so the others see the replica gone within one membership poll instead of
-- a heartbeat lease. NULL: the replica is in lease mode (its liveness
-- session is down, or it is an older version) and is judged by heartbeat_at
-- as before.
ALTER TABLE scheduler_nodes ADD COLUMN liveness_key integer CHECK (liveness_key > 0);

-- A `skipped` row names the run it overlapped: the oldest run of the
-- schedule that was running when the tick fell due ("why was 06:00
-- skipped?" -> that run, and its replica and start).
ALTER TABLE scheduler_runs ADD COLUMN overlapped_run_id uuid;
