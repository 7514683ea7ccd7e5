//! Database outages, seen from one replica: one place that knows whether
//! the database answers, says so in the log once (and then at most every
//! [`REPORT_EVERY`]), exports it (`spine_database_unreachable_since_seconds`,
//! `/readyz`), and gives every retry loop its delays.
//!
//! PostgreSQL restarts, failovers and short outages are routine (managed
//! databases restart for patching; Patroni and CloudNativePG fail over in
//! seconds). While the server is away every loop that talks to it — claims,
//! results, heartbeats, LISTEN, leader bids, the liveness session — fails
//! at once; retried without a pause, a replica would make hundreds of
//! connection attempts and log lines a second. So each loop waits a
//! [`Backoff`] delay between attempts, and reports through
//! [`DatabaseHealth`] instead of logging each failure itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How often, at most, a replica repeats that the database is unreachable.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The first retry delay.
const FIRST_DELAY: Duration = Duration::from_millis(50);
/// The delay stops growing here; jitter stretches it by up to as much
/// again, so no wait exceeds 5 s.
const LONGEST_DELAY: Duration = Duration::from_millis(2500);

/// Retry delays for one loop: 50 ms, doubling to 2.5 s, each stretched by
/// a random share of itself (backon's jitter), so replicas that lost the
/// database together do not come back in step. [`Backoff::reset`] after a
/// success.
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delays: builder().build(),
        }
    }
}

fn builder() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(LONGEST_DELAY)
        .with_jitter()
        .without_max_times()
}

impl Backoff {
    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(LONGEST_DELAY)
    }

    /// The last attempt worked: start again from the first delay.
    pub fn reset(&mut self) {
        self.delays = builder().build();
    }
}

#[derive(Debug, Default)]
struct State {
    /// Since when (monotonic, and wall clock for the metric) nothing worked.
    down_since: Option<(Instant, DateTime<Utc>)>,
    /// Failed attempts since then.
    failures: u64,
    /// When the outage was last reported.
    reported_at: Option<Instant>,
    /// The delays of the claim path, shared by its chunks.
    claims: Backoff,
    /// When the last outage ended (none yet: `None`).
    up_since: Option<Instant>,
}

/// Whether the database answers this replica, and since when not.
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    state: Mutex<State>,
    /// Woken when an outage ends, so that a task sleeping out its backoff
    /// (the result writer) retries at once: a result held back after the
    /// database is back makes another replica see its run still running.
    recovered: tokio::sync::Notify,
}

/// What changed with a report, for the caller to export.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Nothing changed.
    Same,
    /// The database stopped answering at this instant.
    Down(DateTime<Utc>),
    /// It answers again.
    Up,
}

impl DatabaseHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain fields, each updated in place: usable after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the last database operation succeeded.
    pub fn is_up(&self) -> bool {
        self.state().down_since.is_none()
    }

    /// When the current outage began (the replica's clock), if there is one.
    pub fn down_since(&self) -> Option<DateTime<Utc>> {
        self.state().down_since.map(|(_, at)| at)
    }

    /// A database operation worked; ends an outage (logged once).
    pub fn succeeded(&self) -> Transition {
        let mut s = self.state();
        s.claims.reset();
        let Some((since, _)) = s.down_since.take() else {
            return Transition::Same;
        };
        tracing::info!(
            down_ms = since.elapsed().as_millis() as u64,
            failures = s.failures,
            "the database answers again"
        );
        s.failures = 0;
        s.reported_at = None;
        s.up_since = Some(Instant::now());
        drop(s);
        self.recovered.notify_waiters();
        Transition::Up
    }

    /// How long the database has answered since the last outage: `None`
    /// while it does not, `Duration::MAX` when there was no outage.
    pub fn answering_for(&self) -> Option<Duration> {
        let s = self.state();
        if s.down_since.is_some() {
            return None;
        }
        Some(s.up_since.map_or(Duration::MAX, |t| t.elapsed()))
    }

    /// Completes when the database answers again (any task's success ends
    /// the outage), at once if it already does.
    pub async fn answering(&self) {
        let notified = self.recovered.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_up() {
            return;
        }
        notified.await;
    }

    /// A database operation (`what`) failed. The first failure of an outage
    /// is logged at warn; later ones at most every [`REPORT_EVERY`], the
    /// rest at debug.
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) -> Transition {
        let mut s = self.state();
        s.failures += 1;
        let now = Instant::now();
        match s.down_since {
            None => {
                let at = Utc::now();
                s.down_since = Some((now, at));
                s.reported_at = Some(now);
                tracing::warn!(%error, during = what,
                    "database unreachable; retrying with backoff (reported again at most every 10 s)");
                Transition::Down(at)
            }
            Some((since, _)) => {
                if s.reported_at.is_none_or(|t| now - t >= REPORT_EVERY) {
                    s.reported_at = Some(now);
                    tracing::warn!(%error, during = what, failures = s.failures,
                        down_ms = since.elapsed().as_millis() as u64, "database still unreachable");
                } else {
                    tracing::debug!(%error, during = what, "database operation failed");
                }
                Transition::Same
            }
        }
    }

    /// The next retry delay of the claim path (its chunks share it; reset
    /// by any success).
    pub fn claim_retry_delay(&self) -> Duration {
        self.state().claims.next_delay()
    }
}

/// Where a task reports how its database operations went. The health and
/// the gauge travel together so that one call updates both: a task cannot
/// end an outage in the log and leave it on the dashboard.
#[derive(Clone)]
pub(crate) struct Reporter {
    health: Arc<DatabaseHealth>,
    metrics: Metrics,
}

impl Reporter {
    /// Reports into the replica's `health` and its `metrics`.
    pub fn new(health: Arc<DatabaseHealth>, metrics: Metrics) -> Self {
        Reporter { health, metrics }
    }

    /// A database operation worked (ends an outage: logged and exported once).
    pub fn succeeded(&self) {
        succeeded(&self.health, &self.metrics);
    }

    /// A database operation (`what`) failed: the outage is logged once and
    /// then at most every [`REPORT_EVERY`].
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        failed(&self.health, &self.metrics, what, error);
    }

    /// The health reported into: the claim path takes its retry delays
    /// from it, so they start over with any success.
    pub fn health(&self) -> &DatabaseHealth {
        &self.health
    }
}

/// Reports a success to `health` and, at the end of an outage, to the
/// `spine_database_unreachable_since_seconds` gauge.
pub fn succeeded(health: &DatabaseHealth, metrics: &crate::metrics::Metrics) {
    if health.succeeded() == Transition::Up {
        metrics.database_unreachable_since(None);
    }
}

/// Reports a failed database operation (`what`) to `health` and, at the
/// start of an outage, to the gauge.
pub fn failed(
    health: &DatabaseHealth,
    metrics: &crate::metrics::Metrics,
    what: &str,
    error: &dyn std::fmt::Display,
) {
    if let Transition::Down(at) = health.failed(what, error) {
        metrics.database_unreachable_since(Some(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_long_the_database_has_answered_since_an_outage() {
        let health = DatabaseHealth::default();
        assert_eq!(health.answering_for(), Some(Duration::MAX), "never down");
        health.failed("test", &"refused");
        assert_eq!(health.answering_for(), None, "down");
        health.succeeded();
        let up = health.answering_for().expect("answering");
        assert!(up < Duration::from_secs(1), "{up:?}");
    }

    #[test]
    fn delays_grow_to_at_most_five_seconds_and_reset() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= FIRST_DELAY && first < FIRST_DELAY * 2, "{first:?}");
        let later: Vec<Duration> = (0..30).map(|_| b.next_delay()).collect();
        assert!(
            later.iter().all(|d| *d <= Duration::from_secs(5)),
            "{later:?}"
        );
        assert!(
            later.last().is_some_and(|d| *d >= LONGEST_DELAY),
            "{later:?}"
        );
        b.reset();
        assert!(b.next_delay() < FIRST_DELAY * 2);
    }

    #[test]
    fn an_outage_begins_once_and_ends_once() {
        let h = DatabaseHealth::default();
        assert!(h.is_up());
        assert!(matches!(h.failed("claim", &"refused"), Transition::Down(_)));
        assert_eq!(h.failed("heartbeat", &"refused"), Transition::Same);
        assert!(!h.is_up() && h.down_since().is_some());
        assert_eq!(h.succeeded(), Transition::Up);
        assert_eq!(h.succeeded(), Transition::Same);
        assert!(h.is_up());
    }
}
