//! Dedicated sessions outside the pool, for the two session-level advisory
//! locks a replica may hold: its liveness lock (`store::membership`) and the
//! leader's lock (`store::leader`). A pooled connection could be recycled or
//! reused by other work, which would leak or drop such a lock; and a
//! transaction-mode pooler cannot hold one at all.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::{connect, StoreError};

/// Network settings of a dedicated session (`docs/design.md` §4): both ends give up
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
    /// frozen (SIGSTOPped) replica loses the session's locks, as it cannot
    /// send its next statement.
    pub idle_session_timeout: Duration,
}

impl SessionSettings {
    /// The longest a silent peer keeps the session (and its locks) on the
    /// server: idle timeout, or the keepalive/user timeouts of a partition,
    /// whichever ends it first. A replica must stop relying on the lock
    /// before this (see `ClusterConfig::validate`).
    pub fn server_gives_up_after(&self) -> Duration {
        let keepalive = self.keepalive_idle + self.keepalive_interval * self.keepalive_count.max(1);
        self.idle_session_timeout
            .min(keepalive.max(self.tcp_user_timeout))
    }
}

/// A dedicated session.
pub struct Session {
    /// The session's client.
    pub client: Client,
    /// Ends when the connection does; a finished task means the session's
    /// locks are gone.
    pub connection: JoinHandle<()>,
    /// The backend process id: if it changes between statements, a
    /// transaction-mode pooler sits in between and session locks cannot work.
    pub backend_pid: i32,
    /// Notifications on the channels this session LISTENs to.
    pub notices: tokio::sync::mpsc::UnboundedReceiver<super::listen::Notice>,
}

/// Opens a dedicated session with keepalives on both ends, named
/// `application_name` in `pg_stat_activity`.
pub async fn open(
    url: &str,
    s: &SessionSettings,
    application_name: &str,
) -> Result<Session, StoreError> {
    let (mut config, tls) = connect::config(url)?;
    config
        .application_name(application_name)
        .keepalives(true)
        .keepalives_idle(s.keepalive_idle)
        .keepalives_interval(s.keepalive_interval)
        .keepalives_retries(s.keepalive_count)
        .tcp_user_timeout(s.tcp_user_timeout);
    let (client, connection) = config.connect(tls).await?;
    let (connection, notices) = super::listen::forward_notices(connection);
    client
        .batch_execute(&format!(
            "SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; \
             SET tcp_keepalives_count = {}; SET tcp_user_timeout = {}; \
             SET idle_session_timeout = {};",
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
    Ok(Session {
        client,
        connection,
        backend_pid,
        notices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gives_up_at_the_first_timeout_that_applies() {
        let s = SessionSettings {
            keepalive_idle: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(1),
            keepalive_count: 3,
            tcp_user_timeout: Duration::from_secs(5),
            idle_session_timeout: Duration::from_secs(5),
        };
        assert_eq!(s.server_gives_up_after(), Duration::from_secs(5));
        let s = SessionSettings {
            idle_session_timeout: Duration::from_secs(2),
            ..s
        };
        assert_eq!(s.server_gives_up_after(), Duration::from_secs(2));
    }
}
