//! A dedicated LISTEN connection (G6): schedule changes and waiting runs are
//! announced with NOTIFY, and every replica hears them within milliseconds.

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::{backfills, connect, runs, StoreError};

/// NOTIFY channel of `scheduler_schedules` changes (see the migration's trigger).
pub const SCHEDULES_CHANNEL: &str = "spine_schedules";

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The channel it came on.
    pub channel: String,
    /// Its payload.
    pub payload: String,
}

/// An open LISTEN session. Notifications arrive on `notices`; the channel
/// closes when the connection is lost, which is the caller's cue to
/// reconnect and resynchronise.
pub struct Listener {
    /// Keeps the session open; dropping it closes the connection.
    _client: tokio_postgres::Client,
    /// Incoming notifications.
    pub notices: mpsc::UnboundedReceiver<Notice>,
}

/// Connects and listens on the schedules, runs and backfills channels (the
/// leader's channel is the elector's own, on its session).
pub async fn listen(url: &str) -> Result<Listener, StoreError> {
    let (config, tls) = connect::config(url)?;
    let (client, connection) = config.connect(tls).await?;
    let (_task, rx) = forward_notices(connection);
    client
        .batch_execute(&format!(
            "LISTEN {SCHEDULES_CHANNEL}; LISTEN {}; LISTEN {};",
            runs::RUNS_CHANNEL,
            backfills::BACKFILLS_CHANNEL
        ))
        .await?;
    Ok(Listener {
        _client: client,
        notices: rx,
    })
}

/// Drives `connection` on a task of its own, sending every notification it
/// receives to the returned channel; the channel closes when the connection
/// does, which is the reader's cue to reconnect.
pub fn forward_notices<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<Notice>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let notice = Notice {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    };
                    // The reader went away: keep driving the connection.
                    let _ = tx.send(notice);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "database connection closed");
                    return;
                }
                None => return,
            }
        }
    });
    (task, rx)
}
