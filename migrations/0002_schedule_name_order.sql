-- The API lists schedules by name in byte order (COLLATE "C", so cursors
-- compare the same way on every database whatever its default collation).
-- Without an index in that order every page sorted the whole table: 10.7 ms
-- of server time for the first page of 10,000 schedules, 0.14 ms with it.
CREATE INDEX scheduler_schedules_name_c_idx ON scheduler_schedules (name COLLATE "C");
