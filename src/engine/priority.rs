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
//!
//! A held result must not look like a running run to the overlap policy
//! (`max_instances`): the next tick of an every-second schedule would be
//! recorded `skipped` because its previous run's row still says `running`.
//! [`Unwritten`] lists the runs that finished and wait to be written; the
//! claim leaves them out of its count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

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

/// Runs of this replica that have finished but whose results are not yet
/// in the ledger, by schedule.
#[derive(Debug, Default)]
pub struct Unwritten {
    by_schedule: Mutex<HashMap<String, Vec<Uuid>>>,
}

impl Unwritten {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Uuid>>> {
        // Single inserts and removals: a panic cannot leave it half-updated.
        self.by_schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run finished; its result is on its way to the writer.
    pub fn finished(&self, schedule: &str, run_id: Uuid) {
        self.map()
            .entry(schedule.to_string())
            .or_default()
            .push(run_id);
    }

    /// These results are in the ledger now (or were refused there).
    pub fn written<'a>(&self, runs: impl IntoIterator<Item = (&'a str, Uuid)>) {
        let mut map = self.map();
        for (schedule, run_id) in runs {
            if let Some(ids) = map.get_mut(schedule) {
                ids.retain(|id| *id != run_id);
                if ids.is_empty() {
                    map.remove(schedule);
                }
            }
        }
    }

    /// The unwritten runs of these schedules.
    pub fn of<'a>(&self, schedules: impl IntoIterator<Item = &'a str>) -> Vec<Uuid> {
        let map = self.map();
        if map.is_empty() {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        schedules
            .into_iter()
            .filter(|s| seen.insert(*s))
            .filter_map(|s| map.get(s))
            .flatten()
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_runs_are_listed_by_schedule_until_written() {
        let u = Unwritten::default();
        let (a1, a2, b1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        u.finished("a", a1);
        u.finished("a", a2);
        u.finished("b", b1);
        assert_eq!(u.of(["a", "a", "c"]), vec![a1, a2]);
        u.written([("a", a1), ("b", b1)]);
        assert_eq!(u.of(["a", "b"]), vec![a2]);
        u.written([("a", a2)]);
        assert!(u.of(["a", "b"]).is_empty());
        assert!(u.map().is_empty(), "no empty entries left behind");
    }

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
