//! Everything that talks to PostgreSQL. SQL lives here, as constants you can
//! paste into `psql`; the rest of the crate sees typed functions.
//!
//! Functions take `&impl GenericClient` (a client, a pooled connection or a
//! transaction) unless they need a transaction of their own, in which case
//! they take `&mut Client` and open it themselves.

pub mod api_queries;
pub mod backfills;
pub mod claims;
mod connect;
pub mod conninfo;
pub mod digests;
pub mod housekeeping;
pub mod inflight;
pub mod leader;
pub mod listen;
pub mod locks;
pub mod membership;
pub mod migrate;
pub mod nodes;
pub mod partitions;
pub mod run_ids;
pub mod runs;
pub mod schedule_changes;
pub mod schedules;
pub mod session;
pub mod tls;

pub use connect::{connect, pool, settings, with_database};

use crate::schedule::ValidationErrors;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or a statement failed. Shown with
    /// its causes (tokio-postgres's own message is only the kind: "db
    /// error", "error performing TLS handshake"), so it carries no source.
    #[error("database error: {}", with_causes(.0))]
    Db(tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("database pool: {0}")]
    Pool(String),
    /// The connection string is malformed, or its settings contradict each other.
    #[error("invalid database URL: {0}")]
    Config(String),
    /// A file the connection settings name (password, certificate, key)
    /// could not be read or used.
    #[error("database connection settings: {0}")]
    Settings(String),
    /// A schedule with this name already exists.
    #[error("schedule {0:?} already exists")]
    AlreadyExists(String),
    /// No schedule with this name.
    #[error("schedule {0:?} not found")]
    NotFound(String),
    /// The caller's version is stale: someone else changed the schedule first.
    #[error(
        "schedule {name:?} is at version {current}, not {expected}: it was changed concurrently"
    )]
    VersionConflict {
        /// The schedule.
        name: String,
        /// The version the caller read.
        expected: i64,
        /// The version now stored.
        current: i64,
    },
    /// A stored row no longer passes validation (edited by hand, or by a newer version).
    #[error("stored schedule {name:?} is invalid: {errors}")]
    InvalidRow {
        /// The schedule.
        name: String,
        /// What is wrong.
        errors: ValidationErrors,
    },
    /// The database has migrations this binary does not know, or a known one was edited.
    #[error("schema mismatch: {0}")]
    Schema(String),
}

impl StoreError {
    /// Whether a statement broke a unique key (SQLSTATE 23505).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Db(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(e)
    }
}

/// "error performing TLS handshake: invalid peer certificate: UnknownIssuer".
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(db) => StoreError::Db(db),
            other => StoreError::Pool(other.to_string()),
        }
    }
}
