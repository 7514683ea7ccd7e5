//! Integration tests: one binary, one module per area, all against a real
//! PostgreSQL (see `harness`).

mod apply;
mod claims;
mod cli;
mod engine;
mod harness;
mod migrate;
mod pg_cluster;
mod pipelines;
mod replica;
mod runs;
mod schedules;
