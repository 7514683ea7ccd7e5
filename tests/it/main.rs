//! Integration tests: one binary, one module per area, all against a real
//! PostgreSQL (see `harness`).

mod api;
mod apply;
mod claims;
mod cli;
mod cluster;
mod deploy;
mod dev;
mod engine;
mod failover;
mod handoff;
mod harness;
mod metrics;
mod migrate;
mod overlap;
mod pg_cluster;
mod pipelines;
mod proxy;
mod replica;
mod runs;
mod schedules;
