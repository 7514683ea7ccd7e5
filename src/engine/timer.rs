//! The timer task: sleeps until the earliest due tick (on the database
//! clock) and hands every due tick to the claimer. It never waits on the
//! database itself, so a slow claim or a slow job cannot make it oversleep.
//!
//! "Due" is a tick's due instant (`Tick::due`: the tick plus the schedule's
//! jitter delay): the horizon, the backlog rule, the handoff delay, the
//! give-up and the take-over all count from it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::queue::{DueQueue, Tick};
use super::share::Share;
use super::DbClock;
use crate::cluster::Membership;
use crate::metrics::Metrics;
use crate::store::schedules::StoredSchedule;
use crate::timing;

/// How the set of schedules changed.
#[derive(Debug)]
pub enum Change {
    /// The full list of enabled schedules at start: ticks within each
    /// schedule's misfire grace before now (and after its last change) are
    /// still claimed.
    Load(Vec<Arc<StoredSchedule>>),
    /// A resync's findings: definitions that differ from what this replica
    /// held, and names no longer enabled.
    Resync {
        /// Created or changed since last seen.
        changed: Vec<Arc<StoredSchedule>>,
        /// Deleted, paused or unreadable.
        gone: Vec<String>,
    },
    /// One schedule created or changed.
    Upsert(Arc<StoredSchedule>),
    /// One schedule deleted.
    Remove(String),
}

/// A tick to offer the claimer again at `at` (database time).
#[derive(Debug)]
pub struct Retry {
    /// The tick.
    pub tick: Tick,
    /// When to try again.
    pub at: DateTime<Utc>,
}

/// What the timer uses of the replica: no pool, on purpose (see the module docs).
pub(crate) struct Deps {
    /// Whose share this replica's is.
    pub node_id: Uuid,
    /// How long before they fall due batches go to the claimer.
    pub claim_lead: Duration,
    /// How long after their tick the others' ticks are offered.
    pub handoff_delay: Duration,
    /// The database clock the ticks fall due on.
    pub clock: Arc<DbClock>,
    /// Who is alive: the share, and when it changes.
    pub membership: Arc<Membership>,
    /// Each schedule's next due instant.
    pub metrics: Metrics,
}

/// Runs until shutdown.
pub async fn run(
    deps: Arc<Deps>,
    mut changes: mpsc::UnboundedReceiver<Change>,
    mut retries_in: mpsc::UnboundedReceiver<Vec<Retry>>,
    claims: mpsc::UnboundedSender<Vec<Tick>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut queue = DueQueue::new();
    let mut retries: Vec<Retry> = Vec::new();
    let mut membership = deps.membership.subscribe();
    // Batches go to the claimer this long before they fall due: it locks
    // ahead and inserts at the due instant (see `store::claims`).
    let lead = timing::chrono(deps.claim_lead);
    loop {
        let next_tick = queue.next_due();
        let next_retry = retries.iter().map(|r| r.at).min();
        let wake_at = match (next_tick, next_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = wake_at
            .map(|t| deps.clock.until(t - lead))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            Some(change) = changes.recv() => {
                apply(&deps, &mut queue, change);
                continue;
            }
            Some(more) = retries_in.recv() => {
                retries.extend(more);
                continue;
            }
            Ok(()) = membership.changed() => {
                take_over(&deps, &mut retries);
                continue;
            }
            _ = tokio::time::sleep(sleep) => {}
        }
        let now = deps.clock.now();
        let horizon = now + lead;
        let mut due = queue.take_due(horizon);
        for t in &mut due {
            t.backlog = now - t.due > crate::timing::BACKLOG_AFTER;
        }
        let mut seen = std::collections::HashSet::new();
        for t in &due {
            if seen.insert(t.name()) {
                publish_next(&deps.metrics, &queue, t.name());
            }
        }
        // Our share goes now; the rest waits the handoff delay (see `share`).
        let share = Share::current(&deps.membership, deps.node_id);
        let handoff = timing::chrono(deps.handoff_delay);
        let (mut batch, others): (Vec<Tick>, Vec<Tick>) =
            due.into_iter().partition(|t| share.prefers(t.name()));
        tracing::trace!(
            ?share,
            own = batch.len(),
            handed_off = others.len(),
            "due ticks"
        );
        retries.extend(others.into_iter().map(|tick| Retry {
            at: tick.due + handoff,
            tick,
        }));
        // Handed-off ticks fall due a whole handoff delay after their tick,
        // which for frequent schedules is exactly when the next batch goes:
        // they ride along with it and cost no transaction of their own.
        let (ready, later): (Vec<Retry>, Vec<Retry>) =
            retries.drain(..).partition(|r| r.at <= horizon);
        retries = later;
        for r in ready {
            let grace = timing::misfire_grace(&r.tick.schedule.schedule);
            if now - r.tick.due > grace + timing::OFFER_MARGIN {
                // Past its grace: the leader's misfire sweep records it.
                tracing::debug!(schedule = r.tick.name(), tick = %r.tick.at, "giving up on an unclaimable tick");
                continue;
            }
            batch.push(r.tick);
        }
        if !batch.is_empty() && claims.send(batch).is_err() {
            return;
        }
    }
}

/// The membership changed: ticks left to another replica (waiting for the
/// handoff delay) that now fall in this replica's share are claimed as they
/// fall due — at once for those already due. That is how a dead replica's
/// tick in flight is late by one membership read rather than a handoff
/// delay, even when the change arrives in the claim lead before the tick.
fn take_over(deps: &Deps, retries: &mut [Retry]) {
    let share = Share::current(&deps.membership, deps.node_id);
    let now = deps.clock.now();
    let mut moved = 0;
    for r in retries.iter_mut() {
        let due = r.tick.due.max(now);
        if r.at > due && share.prefers(r.tick.name()) {
            r.at = due;
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::debug!(
            ticks = moved,
            ?share,
            "took over due ticks of a changed share"
        );
    }
}

/// Exports a schedule's next due instant (kube-state-metrics style).
fn publish_next(metrics: &Metrics, queue: &DueQueue, name: &str) {
    let next = queue
        .next_of(name)
        .map(|t| t.timestamp_millis() as f64 / 1000.0);
    metrics.next_fire(name, next);
    metrics.expected_interval(name, queue.interval_of(name));
}

fn apply(deps: &Deps, queue: &mut DueQueue, change: Change) {
    let touched: Vec<String> = match &change {
        Change::Load(all) => all.iter().map(|s| s.schedule.name().to_string()).collect(),
        Change::Resync { changed, gone } => {
            for name in gone {
                deps.metrics.forget_schedule(name);
            }
            changed
                .iter()
                .map(|s| s.schedule.name().to_string())
                .collect()
        }
        Change::Upsert(s) => vec![s.schedule.name().to_string()],
        Change::Remove(name) => {
            deps.metrics.forget_schedule(name);
            Vec::new()
        }
    };
    apply_change(&deps.clock, queue, change);
    for name in touched {
        publish_next(&deps.metrics, queue, &name);
    }
}

fn apply_change(clock: &DbClock, queue: &mut DueQueue, change: Change) {
    let now = clock.now();
    match change {
        Change::Load(all) => {
            for s in all {
                // Ticks from before the schedule's current definition (creation,
                // change, resume) never were due; ticks that fell due longer
                // ago than the grace are the misfire sweep's (a tick falls
                // due up to its jitter after it).
                let grace = timing::misfire_grace(&s.schedule);
                let jitter = timing::chrono(s.schedule.jitter());
                let after = (now - grace - jitter).max(s.schedule.due_after(s.updated_at));
                queue.upsert(s, after);
            }
        }
        Change::Resync { changed, gone } => {
            for name in gone {
                queue.remove(&name);
            }
            for s in changed {
                replace(queue, s, now);
            }
        }
        Change::Upsert(s) => replace(queue, s, now),
        Change::Remove(name) => queue.remove(&name),
    }
}

/// Queues a changed schedule. Its ticks restart from where the old version
/// stood (or now), so a tick falling due while the change arrives is kept.
fn replace(queue: &mut DueQueue, s: Arc<StoredSchedule>, now: DateTime<Utc>) {
    if queue.identity_of(s.schedule.name()) == Some((s.created_at, s.version)) {
        return;
    }
    let after = queue
        .next_of(s.schedule.name())
        .map(|next| (next - chrono::Duration::microseconds(1)).min(now))
        .unwrap_or(now);
    // A one-time schedule defined after its run_at, within its grace, runs at once.
    let after = match s.schedule.overdue_tick(s.updated_at) {
        Some(tick) => after.min(tick - chrono::Duration::microseconds(1)),
        None => after,
    };
    queue.upsert(s, after);
}
