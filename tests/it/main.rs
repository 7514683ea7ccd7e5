//! Integration tests: one binary, one module per area, all against a real
//! PostgreSQL (see `harness`).

// The shared setup (zero2prod's `helpers`), by what it offers.
mod api_replica; // a replica serving the admin API, and an HTTP client for it
mod exposition; // a strict parser of the Prometheus text format
mod harness; // a fresh database per test, the binary, the database clock, waiting
mod proxy; // a TCP proxy that can cut a replica off like a partition
mod replica; // one `serve` process, and audits of the ledger
mod test_cluster; // replicas over one database, every-second schedules, the leader

// The tests, one module per area.
mod api;
mod apply;
mod backfill;
mod claims;
mod cli;
mod client;
mod cluster;
mod console;
mod deploy;
mod dev;
mod engine;
mod failover;
mod handoff;
mod jitter;
mod ledger_partitions;
mod ledger_write_cost;
mod metrics;
mod migrate;
mod outage;
mod overlap;
mod overlap_policies;
mod ownership;
mod pg_cluster;
mod pipelines;
mod run_at;
mod run_ids;
mod runs;
mod schedules;
mod tls;
