-- What each replica has settled of its own share, per tick instant: a
-- digest (XOR of a 128-bit hash of each schedule name) of the ticks at that
-- instant that have a committed ledger row and that the replica counts as
-- its own share. Another replica checking that share after the handoff
-- delay computes the digest of the ticks it expects there; when the two
-- match, every one of them has its row and the per-tick existence checks
-- are skipped. Any disagreement (membership, a schedule one side does not
-- know, a tick still being retried) makes them differ, and the per-tick
-- check runs as before. Rows of a forgotten replica go with it.
CREATE TABLE scheduler_tick_digests (
    node_id      uuid        NOT NULL REFERENCES scheduler_nodes (node_id) ON DELETE CASCADE,
    scheduled_at timestamptz NOT NULL,
    digest_hi    bigint      NOT NULL,
    digest_lo    bigint      NOT NULL,
    ticks        integer     NOT NULL,
    PRIMARY KEY (node_id, scheduled_at)
);
