//! The leader's lock and its bookkeeping. The lock is a session-level
//! advisory lock held on a dedicated connection outside the pool (a pooled
//! connection could be recycled or reused by other work, leaking or dropping
//! the lock).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use super::{connect, locks, StoreError};

/// NOTIFY channel on which a resigning leader tells followers to bid now.
pub const LEADER_CHANNEL: &str = "spine_leader";

/// Network settings of the leader's session (DESIGN §4): both ends give up
/// on a dead peer within seconds, not the kernel's two hours.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// Idle time before TCP keepalive probes start.
    pub keepalive_idle: Duration,
    /// Time between probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub keepalive_count: u32,
    /// How long sent data may stay unacknowledged.
    pub tcp_user_timeout: Duration,
    /// The server ends the session when the client is silent this long: a
    /// frozen (SIGSTOPped) leader loses the lock, as it cannot ping.
    pub idle_session_timeout: Duration,
}

/// A dedicated session for leader election.
pub struct LeaderSession {
    /// The session's client.
    pub client: Client,
    /// Ends when the connection does; a finished task means the lock is gone.
    pub connection: JoinHandle<()>,
    /// The backend process id: if it changes between statements, a
    /// transaction-mode pooler sits in between and session locks cannot work.
    pub backend_pid: i32,
}

/// Opens the election session with keepalives on both ends.
pub async fn open(url: &str, s: &SessionSettings) -> Result<LeaderSession, StoreError> {
    let mut config = connect::config(url)?;
    config
        .keepalives(true)
        .keepalives_idle(s.keepalive_idle)
        .keepalives_interval(s.keepalive_interval)
        .keepalives_retries(s.keepalive_count)
        .tcp_user_timeout(s.tcp_user_timeout);
    let (client, connection) = config.connect(NoTls).await?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "leader session closed");
        }
    });
    client
        .batch_execute(&format!(
            "SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; \
             SET tcp_keepalives_count = {}; SET tcp_user_timeout = {}; \
             SET idle_session_timeout = {}; SET application_name = 'spine-scheduler leader election'",
            s.keepalive_idle.as_secs().max(1),
            s.keepalive_interval.as_secs().max(1),
            s.keepalive_count,
            s.tcp_user_timeout.as_millis(),
            s.idle_session_timeout.as_millis(),
        ))
        .await?;
    let backend_pid = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .try_get(0)?;
    Ok(LeaderSession {
        client,
        connection,
        backend_pid,
    })
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
