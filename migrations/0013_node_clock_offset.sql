-- Each replica's estimate of its clock offset from the database's, as of
-- its previous heartbeat, so the cluster view (API, console) shows every
-- replica's, not only the answering one's.
--
-- Safe on any table size: a nullable column without a default (a catalog
-- change only). NULL until the replica has measured it (and for replicas of
-- an older version).
ALTER TABLE scheduler_nodes ADD COLUMN clock_offset_ms integer;
