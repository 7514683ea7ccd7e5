-- Where the leader's missed-tick sweep stands, durably: at `swept_at` (the
-- database clock of that pass) every tick of every enabled schedule up to
-- swept_at - its misfire grace - 2 s had a ledger row. A new leader — or
-- the same replica leading again after a database outage — walks every
-- schedule's ticks from there, so no gap is left unwalked (before this,
-- a new term started from each schedule's newest row older than its grace,
-- and after an outage that row could be one written at recovery, past the
-- gap). One row; a pass that could not walk everything leaves it alone.
CREATE TABLE scheduler_sweep (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    swept_at  timestamptz NOT NULL
);
