//! Telling a running pipeline to stop: a graceful cancel (overlap policy
//! `cancel_other`, `POST /v1/runs/{id}/cancel`) sets the signal; the
//! pipeline may wind down (a command pipeline sends SIGTERM to its process
//! group, then SIGKILL after [`super::command::KILL_GRACE`]). A pipeline that
//! ignores it is dropped by the engine after the kill grace and a margin,
//! as on a timeout.

use tokio::sync::watch;

/// The receiving end, handed to a pipeline in its `RunContext`.
#[derive(Debug, Clone)]
pub struct CancelSignal(Option<watch::Receiver<bool>>);

/// The sending end, kept by the engine for the run.
#[derive(Debug)]
pub struct CancelHandle(watch::Sender<bool>);

impl CancelSignal {
    /// A signal that is never given (tests, runs outside the engine).
    pub fn never() -> Self {
        CancelSignal(None)
    }

    /// A signal and the handle that gives it.
    pub fn new() -> (CancelHandle, Self) {
        let (tx, rx) = watch::channel(false);
        (CancelHandle(tx), CancelSignal(Some(rx)))
    }

    /// Whether a cancel was asked for.
    pub fn is_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Completes once a cancel is asked for; never, if it never is (the
    /// handle dropped without asking counts as never).
    pub async fn requested(&mut self) {
        let Some(rx) = &mut self.0 else {
            return std::future::pending().await;
        };
        if rx.wait_for(|asked| *asked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Signals carry no data of the run: any two are alike for `RunContext`'s
/// equality (which compares what a pipeline is told about the run).
impl PartialEq for CancelSignal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl CancelHandle {
    /// Asks the pipeline to stop.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_is_seen_by_every_clone_and_never_fires_without_one() {
        let (handle, signal) = CancelSignal::new();
        let mut a = signal.clone();
        assert!(!a.is_requested());
        handle.cancel();
        a.requested().await;
        assert!(signal.is_requested());
        let mut never = CancelSignal::never();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), never.requested()).await;
        assert!(waited.is_err(), "a never-signal fired");
    }
}
