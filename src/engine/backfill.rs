//! Steps backfills (`crate::backfill` has the rules). Every replica runs
//! this task; a step is one transaction that locks the backfill's row
//! (`FOR UPDATE SKIP LOCKED`), so each backfill is stepped by one replica
//! at a time and any replica carries on where another stopped. A step
//! settles the ticks whose runs ended, writes the next ticks' `pending`
//! rows (which the pending pickup runs, on any replica), moves the cursor
//! and sets when to step next — all committed together or not at all, so a
//! replica dying mid-step loses and doubles nothing.
//!
//! The task wakes when a backfill is created (NOTIFY), when the next one
//! is due, and at least every [`IDLE_POLL`].

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{watch, Notify};

use super::outage::Reporter;
use crate::backfill::{self, TICKS_PER_STEP};
use crate::store::backfills::{self, Backfill, StepRecord};
use crate::store::{schedules, StoreError};
use crate::types::BackfillState;

/// How often a replica looks for backfills when none is active.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// The shortest wait between two looks while backfills are active.
const ACTIVE_POLL: Duration = Duration::from_millis(100);
/// Most steps in a row before the task looks at the clock again.
const STEPS_PER_ROUND: usize = 50;
/// How long a backfill whose step a statement refused waits for the next.
const AFTER_REFUSAL_SECS: f64 = 10.0;

/// What the backfill stepper uses of the replica.
pub(crate) struct Deps {
    /// The engine's pool.
    pub pool: Pool,
    /// Whether the database answers.
    pub db: Reporter,
}

/// Runs until shutdown. `wake` is notified when a backfill is announced.
///
/// A replica asks one cheap question per look — when is the next active
/// backfill due? — and steps only when one is; an idle cluster costs a
/// query per replica per [`IDLE_POLL`].
pub async fn run(deps: Arc<Deps>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        wait = round(&deps, &shutdown).await;
    }
}

/// Steps due backfills until none is (at most [`STEPS_PER_ROUND`]); how
/// long to wait before the next look.
async fn round(deps: &Deps, shutdown: &watch::Receiver<bool>) -> Duration {
    for _ in 0..STEPS_PER_ROUND {
        if *shutdown.borrow() {
            return IDLE_POLL;
        }
        match next_due(deps).await {
            Ok(None) => return IDLE_POLL,
            Ok(Some(secs)) if secs > 0.0 => {
                return Duration::try_from_secs_f64(secs)
                    .unwrap_or(IDLE_POLL)
                    .clamp(ACTIVE_POLL, IDLE_POLL)
            }
            Ok(Some(_)) => {}
            Err(e) => {
                deps.db.failed("looking for backfills", &e);
                return IDLE_POLL;
            }
        }
        match step(deps).await {
            Ok(true) => {}
            // Due, but another replica is stepping it.
            Ok(false) => return ACTIVE_POLL,
            Err(e) => {
                deps.db.failed("stepping a backfill", &e);
                return IDLE_POLL;
            }
        }
    }
    Duration::ZERO
}

async fn next_due(deps: &Deps) -> Result<Option<f64>, StoreError> {
    let client = deps.pool.get().await?;
    backfills::next_due_in(&**client).await
}

/// Steps the most overdue backfill, if one is due and not being stepped
/// elsewhere. `Ok(true)`: one was stepped (another may be due).
async fn step(deps: &Deps) -> Result<bool, StoreError> {
    let mut client = deps.pool.get().await?;
    let tx = client.transaction().await?;
    let Some((b, now)) = backfills::take_due(&*tx).await? else {
        tx.commit().await?;
        return Ok(false);
    };
    match step_locked(&tx, &b, now).await {
        Ok(record) => {
            backfills::record_step(&*tx, b.backfill_id, &record).await?;
            tx.commit().await?;
            deps.db.succeeded();
            log_step(&b, &record);
            Ok(true)
        }
        // A statement the database refused will be refused again: put the
        // backfill off instead of reporting the database down.
        Err(StoreError::Db(e)) if e.as_db_error().is_some() => {
            drop(tx);
            tracing::error!(backfill_id = %b.backfill_id, schedule = %b.schedule_name, error = %e,
                            "a backfill step failed; trying again later");
            backfills::postpone(&**client, b.backfill_id, AFTER_REFUSAL_SECS).await?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

fn log_step(b: &Backfill, r: &StepRecord) {
    if b.state == BackfillState::Queued {
        tracing::info!(backfill_id = %b.backfill_id, schedule = %b.schedule_name,
                       ticks = b.ticks_planned, mode = %b.request.mode, "backfill started");
    }
    match r.state {
        BackfillState::Done => tracing::info!(
            backfill_id = %b.backfill_id, schedule = %b.schedule_name,
            created = b.ticks_created as i64 + i64::from(r.created),
            existing = b.ticks_existing as i64 + i64::from(r.existing),
            succeeded = r.progress.total.succeeded, failed = r.progress.total.failed,
            "backfill done"),
        BackfillState::Failed => tracing::warn!(
            backfill_id = %b.backfill_id, schedule = %b.schedule_name,
            error = r.error.as_deref().unwrap_or(""), "backfill failed"),
        _ => tracing::debug!(
            backfill_id = %b.backfill_id, schedule = %b.schedule_name,
            created = r.created, existing = r.existing, in_flight = r.progress.in_flight,
            cursor = ?r.cursor_at, "backfill stepped"),
    }
}

/// The step itself, inside the transaction that holds the row's lock;
/// returns what to record.
async fn step_locked(
    tx: &deadpool_postgres::Transaction<'_>,
    b: &Backfill,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<StepRecord, StoreError> {
    let stop = |error: String| StepRecord {
        state: BackfillState::Failed,
        cursor_at: b.cursor_at,
        created: 0,
        existing: 0,
        progress: b.progress,
        next_step_at: now,
        error: Some(error),
    };
    let stored = match schedules::get(&**tx, &b.schedule_name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Ok(stop(format!(
                "schedule {:?} was deleted; the runs already created finish",
                b.schedule_name
            )))
        }
        Err(StoreError::InvalidRow { errors, .. }) => {
            return Ok(stop(format!(
                "schedule {:?} is stored invalid ({errors}); fix it and start a new backfill",
                b.schedule_name
            )))
        }
        Err(e) => return Err(e),
    };
    let schedule = &stored.schedule;
    let key = backfill::trigger_key(schedule);
    if key != b.trigger_key {
        return Ok(stop(format!(
            "the schedule's trigger changed from {} to {}; its ticks are not the ones planned, \
             so start a new backfill",
            b.trigger_key, key
        )));
    }
    let window = backfills::window(&**tx, b.backfill_id, b.progress.settled_through).await?;
    let mut progress = backfill::settle(b.progress, &window, schedule.retry().max_attempts(), now);
    let others = backfills::others_running(&**tx, &b.schedule_name, b.backfill_id).await?;
    let free = backfill::slots(
        b.request.overlap_policy,
        schedule.max_instances(),
        progress.in_flight,
        others,
    );
    let (start, end) = (b.request.start, b.request.end);
    let next = backfill::next_ticks(schedule, start, end, b.cursor_at, now, TICKS_PER_STEP);
    let states = if next.due.is_empty() {
        Vec::new()
    } else {
        backfills::tick_states(&**tx, &b.schedule_name, b.backfill_id, &next.due).await?
    };
    let decision = backfill::decide(b.request.mode, &states, free);
    let inserted = backfills::insert_runs(
        &**tx,
        b.backfill_id,
        &b.schedule_name,
        schedule.pipeline(),
        &decision.to_create(),
    )
    .await?;
    let outcome = backfill::after_insert(b.request.mode, &decision, &inserted);
    let cursor_at = outcome.cursor.or(b.cursor_at);
    progress.in_flight += outcome.created;
    // The first tick after the cursor, due or not.
    let after = backfill::next_ticks(
        schedule,
        start,
        end,
        cursor_at,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
        1,
    );
    let remaining = after.due.first().copied().or(after.later);
    let (done, next_step_at) =
        backfill::after_step(now, outcome.created, progress.in_flight, free, remaining);
    Ok(StepRecord {
        state: if done {
            BackfillState::Done
        } else {
            BackfillState::Running
        },
        cursor_at,
        created: outcome.created,
        existing: outcome.existing,
        progress,
        next_step_at,
        error: None,
    })
}
