//! spine-scheduler: a distributed cron scheduler on PostgreSQL.
//!
//! Run several identical replicas against one database; for every due tick
//! they race to claim it in the run ledger, and exactly one wins. See
//! `ARCHITECTURE.md` for the map of modules, `docs/design.md` for the
//! guarantees (G1–G8) and the design, and `README.md` for operating it.

pub mod api;
pub mod apply;
pub mod backfill;
pub mod client;
pub mod cluster;
/// `spine-scheduler dev` (the binary's); not a library API.
#[doc(hidden)]
pub mod dev;
pub mod engine;
pub mod metrics;
/// Private PostgreSQL clusters for `dev` and the tests; not a library API.
#[doc(hidden)]
pub mod pg_cluster;
pub mod pipeline;
pub mod schedule;
pub mod schedule_file;
pub mod store;
pub mod timing;
pub mod types;

/// This build's version, as recorded in `scheduler_nodes`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
