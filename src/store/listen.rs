//! A dedicated LISTEN connection (G6): schedule changes and waiting runs are
//! announced with NOTIFY, and every replica hears them within milliseconds.

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{connect, runs, StoreError};

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

/// Connects and listens on the schedules, runs and leader channels.
pub async fn listen(url: &str) -> Result<Listener, StoreError> {
    let (client, mut connection) = connect::config(url)?.connect(NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let notice = Notice {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    };
                    if tx.send(notice).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "LISTEN connection lost");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {SCHEDULES_CHANNEL}; LISTEN {}; LISTEN {};",
            runs::RUNS_CHANNEL,
            super::leader::LEADER_CHANNEL
        ))
        .await?;
    Ok(Listener {
        _client: client,
        notices: rx,
    })
}
