//! SIGINT, SIGTERM and SIGHUP as events `dev` handles instead of dying, so
//! nothing it started (a PostgreSQL in particular) is left behind.

use tokio::sync::watch;

use super::DevError;

/// SIGINT/SIGTERM/SIGHUP as a counter: signals become events this mode handles
/// (instead of killing the process) from the moment it starts.
pub(super) struct Interrupts {
    count: watch::Receiver<u32>,
}

impl Interrupts {
    /// Starts listening; from here on those signals no longer end the process.
    pub(super) fn install() -> Result<Interrupts, DevError> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind: SignalKind| {
            signal(kind).map_err(|e| DevError::Setup(format!("cannot handle signals: {e}")))
        };
        let mut int = handler(SignalKind::interrupt())?;
        let mut term = handler(SignalKind::terminate())?;
        // A closed terminal: stop as for Ctrl-C rather than die and leave
        // PostgreSQL running.
        let mut hup = handler(SignalKind::hangup())?;
        let (tx, count) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Interrupts { count })
    }

    /// Whether a signal arrived that was not yet handled (and marks it handled).
    pub(super) fn pending(&mut self) -> bool {
        let changed = self.count.has_changed().unwrap_or(false);
        self.count.borrow_and_update();
        changed
    }

    /// Waits for the next signal not yet handled.
    pub(super) async fn next(&mut self) {
        if self.count.changed().await.is_err() {
            // The listener is gone (runtime shutting down): no more signals.
            std::future::pending::<()>().await;
        }
    }
}
