//! The leader's lock and its bookkeeping. The lock is a session-level
//! advisory lock held on a dedicated connection outside the pool (a pooled
//! connection could be recycled or reused by other work, leaking or dropping
//! the lock).

use uuid::Uuid;

use super::{locks, StoreError};

/// NOTIFY channel on which a resigning leader tells followers to bid now.
pub const LEADER_CHANNEL: &str = "spine_leader";

pub use super::session::SessionSettings;

/// The leader's dedicated session.
pub type LeaderSession = super::session::Session;

/// Opens the election session with keepalives on both ends.
pub async fn open(url: &str, s: &SessionSettings) -> Result<LeaderSession, StoreError> {
    super::session::open(url, s, "spine-scheduler leader election").await
}

/// Listens on [`LEADER_CHANNEL`] on the election session: a follower hears
/// a resigning leader there and bids at once.
pub async fn listen_for_resignations(session: &LeaderSession) -> Result<(), StoreError> {
    session
        .client
        .batch_execute(&format!("LISTEN {LEADER_CHANNEL}"))
        .await?;
    Ok(())
}

/// Tries to take the leader lock without waiting.
pub async fn try_acquire(session: &LeaderSession) -> Result<bool, StoreError> {
    let row = session
        .client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&locks::LEADER])
        .await?;
    Ok(row.try_get(0)?)
}

/// The backend pid now: the ping. Any error (or a different pid) means the
/// lock can no longer be trusted.
pub async fn ping(session: &LeaderSession) -> Result<i32, StoreError> {
    Ok(session
        .client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .try_get(0)?)
}

/// Records who leads (and that nobody else does) in `scheduler_nodes`.
pub async fn record_leader(session: &LeaderSession, node_id: Uuid) -> Result<(), StoreError> {
    session
        .client
        .execute(
            "UPDATE scheduler_nodes \
             SET leader_since = CASE WHEN node_id = $1 THEN now() END \
             WHERE node_id = $1 OR leader_since IS NOT NULL",
            &[&node_id],
        )
        .await?;
    Ok(())
}

/// Gives the lock up, clears the record and tells followers to bid at once.
pub async fn resign(session: &LeaderSession, node_id: Uuid) -> Result<(), StoreError> {
    session
        .client
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock_all(); \
             UPDATE scheduler_nodes SET leader_since = NULL WHERE node_id = '{node_id}'; \
             NOTIFY {LEADER_CHANNEL}, '{node_id}';"
        ))
        .await?;
    Ok(())
}
