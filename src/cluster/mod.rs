//! The cluster: leader election (`docs/design.md` §4) and the leader's housekeeping.
//!
//! Every replica holds its liveness lock (`membership`): who is alive comes
//! from the database's sessions, so a crashed replica is noticed within
//! about 100 ms. Every replica runs the elector; the one holding the session advisory lock
//! is the leader and runs the duties: reap runs of dead replicas, schedule
//! retries, record ticks nobody claimed as `missed`, prune history and dead
//! nodes. Every duty is an idempotent statement, so a brief overlap of two
//! leaders (bounded by the session settings) does no harm.

pub mod config;
mod context;
mod duties;
mod elector;
pub mod membership;

pub use self::config::ClusterConfig;
pub(crate) use self::context::Context;
pub(crate) use self::duties::run as run_duties;
pub(crate) use self::elector::{run as run_elector, Leadership};
pub(crate) use self::membership::run as run_liveness;
pub use self::membership::Membership;
