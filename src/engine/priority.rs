//! Claims before completions.
//!
//! Both go to the same database on the same few cores. A claim is on the
//! tick path — every millisecond it waits is fire lag for a whole batch —
//! while a finished run's result can wait a moment without anyone noticing
//! (its `completed_at` is the replica's reading of when it finished, not
//! when the row was written). When many ticks fall due together, results
//! written between the claims would take database time from them: 20,000
//! schedules due at one instant are 20 claim transactions per 3 replicas,
//! and the first runs' results would otherwise be written while the last
//! ticks are still being claimed.
//!
//! So the claimer marks the time it spends executing claim statements (not
//! the time a claim waits for its tick), and the completion writer holds
//! its batch while any claim is executing, up to a limit, so results are
//! never held back for long by a claimer that is always busy.

use std::time::Duration;

use tokio::sync::watch;

/// Counts the claims executing right now.
#[derive(Debug)]
pub struct ClaimActivity {
    executing: watch::Sender<usize>,
}

impl Default for ClaimActivity {
    fn default() -> Self {
        Self {
            executing: watch::Sender::new(0),
        }
    }
}

impl ClaimActivity {
    /// Marks a claim as executing until the guard is dropped.
    pub fn executing(&self) -> Executing<'_> {
        self.executing.send_modify(|n| *n += 1);
        Executing(self)
    }

    /// Waits until no claim is executing, or `limit` has passed.
    pub async fn idle_or(&self, limit: Duration) {
        let mut rx = self.executing.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }
}

/// A claim executing; see [`ClaimActivity::executing`].
#[derive(Debug)]
pub struct Executing<'a>(&'a ClaimActivity);

impl Drop for Executing<'_> {
    fn drop(&mut self) {
        self.0.executing.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_claims_to_finish() {
        let activity = std::sync::Arc::new(ClaimActivity::default());
        let a = activity.clone();
        let claim = tokio::spawn(async move {
            let _guard = a.executing();
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        activity.idle_or(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        claim.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_waiting_at_the_limit() {
        let activity = ClaimActivity::default();
        let _busy = activity.executing();
        let start = tokio::time::Instant::now();
        activity.idle_or(Duration::from_millis(250)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_wait_when_idle() {
        let activity = ClaimActivity::default();
        drop(activity.executing());
        let start = tokio::time::Instant::now();
        activity.idle_or(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
