//! The claimer task: turns due ticks into ledger rows, one transaction per
//! batch (see `store::claims`), and hands the runs it won to the executor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use super::executor::{self, Job};
use super::handoff;
use super::outage::Reporter;
use super::priority::{ClaimActivity, Unwritten};
use super::queue::Tick;
use super::share::Share;
use super::timer::Retry;
use super::DbClock;
use crate::cluster::Membership;
use crate::metrics::Metrics;
use crate::store::claims::{self, ClaimRequest};
use crate::store::locks;
use crate::types::{RunStatus, RunTrigger};

/// Small margin after the due instant, so the database (whose clock the
/// INSERT checks) agrees the tick is due despite clock-estimate jitter.
const DUE_MARGIN: chrono::Duration = chrono::Duration::milliseconds(1);

/// What the claimer (and each chunk's claim) uses of the replica.
pub(crate) struct Deps {
    /// The claims' owner.
    pub node_id: Uuid,
    /// About how many ticks one claim transaction takes.
    pub claim_batch_size: usize,
    /// Claim transactions open at once (`EngineConfig::claim_chunks_at_once`).
    pub claim_chunks_at_once: usize,
    /// How soon a tick of our own share locked by another replica is asked again.
    pub claim_retry_delay: Duration,
    /// The claim transactions' idle-in-transaction timeout
    /// (`EngineConfig::claim_idle_timeout`).
    pub claim_idle_timeout: Duration,
    /// How soon others' ticks locked by another replica are asked again.
    pub handoff_delay: Duration,
    /// The engine's pool.
    pub pool: Pool,
    /// The database clock the claims wait on (and calibrate).
    pub clock: Arc<DbClock>,
    /// Who is alive: the share, and whose runs no longer count.
    pub membership: Arc<Membership>,
    /// Claims, skipped and missed ticks, handoff checks.
    pub metrics: Metrics,
    /// Whether the database answers, and the claim path's retry delays.
    pub db: Reporter,
    /// Marked while a claim executes, so results wait (see `priority`).
    pub claims: Arc<ClaimActivity>,
    /// Finished runs a claim must not count as running (see `priority`).
    pub unwritten: Arc<Unwritten>,
    /// The in-flight rows the claims write (see `inflight`).
    pub inflight_rows: Arc<super::inflight::InFlightRows>,
}

/// Runs until shutdown or until the timer goes away.
pub async fn run(
    deps: Arc<Deps>,
    mut ticks: mpsc::UnboundedReceiver<Vec<Tick>>,
    retries: mpsc::UnboundedSender<Vec<Retry>>,
    jobs: mpsc::UnboundedSender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut settled = handoff::Settled::default();
    // With `claim_concurrency` above 1 the chunks of a batch form a
    // pipeline: the next one starts as soon as the one before has written
    // its rows ahead and only waits for its tick (or is done). So when
    // thousands of ticks fall due together, several chunks are written
    // during the claim lead, each holding its transaction open on its own
    // pooled connection until the tick — but this replica never runs two
    // claim statements at once: past the tick the database is busy anyway,
    // and chunks executed side by side only contend for the same index
    // pages while results wait for them (`priority`).
    let open_at_most = deps.claim_chunks_at_once;
    loop {
        let mut batch = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            b = ticks.recv() => match b { Some(b) => b, None => return },
        };
        // Everything queued while the last claim ran goes in this one.
        while let Ok(more) = ticks.try_recv() {
            batch.extend(more);
        }
        // Others' ticks their owner's digest shows settled need no probe.
        let batch = handoff::confirm(
            deps.node_id,
            &deps.membership,
            &deps.pool,
            &deps.metrics,
            batch,
        )
        .await;
        let mut claiming = tokio::task::JoinSet::new();
        for chunk in chunks(batch, deps.claim_batch_size) {
            while claiming.len() >= open_at_most {
                let Some(done) = claiming.join_next().await else {
                    break;
                };
                if !take(&deps, done, &mut settled, &retries) {
                    return;
                }
            }
            let (waits, waiting_for_tick) = oneshot::channel();
            claiming.spawn(claim_chunk(deps.clone(), chunk, jobs.clone(), waits).in_current_span());
            // One claim statement at a time: the next chunk starts once this
            // one only waits for its tick, or is done (the sender dropped).
            let _ = waiting_for_tick.await;
        }
        while let Some(done) = claiming.join_next().await {
            if !take(&deps, done, &mut settled, &retries) {
                return;
            }
        }
        settled
            .publish(deps.node_id, &deps.pool, &deps.clock, &deps.db)
            .await;
    }
}

/// Takes in what a chunk's claim left: its settled ticks, and the ticks to
/// offer again. False once the timer is gone.
fn take(
    deps: &Deps,
    done: Result<ChunkDone, tokio::task::JoinError>,
    settled: &mut handoff::Settled,
    retries: &mpsc::UnboundedSender<Vec<Retry>>,
) -> bool {
    let done = match done {
        Ok(done) => done,
        Err(error) => {
            tracing::error!(%error, "a claim task failed");
            return true;
        }
    };
    settled.record(
        Share::current(&deps.membership, deps.node_id),
        done.settled.iter().map(|(name, at)| (name.as_str(), *at)),
    );
    done.again.is_empty() || retries.send(done.again).is_ok()
}

/// Splits a batch into chunks of about `max_ticks` ticks. A claim locks
/// stripes (`store::locks::stripe`), so all ticks of a stripe stay in one
/// chunk: chunks open at the same time never want the same lock, and a
/// retried tick riding along with the next one costs nothing.
fn chunks(batch: Vec<Tick>, max_ticks: usize) -> Vec<Vec<Tick>> {
    let mut by_stripe: Vec<Vec<Tick>> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    for tick in batch {
        let stripe = locks::stripe(tick.name());
        match index.get(&stripe) {
            Some(&i) => by_stripe[i].push(tick),
            None => {
                index.insert(stripe, by_stripe.len());
                by_stripe.push(vec![tick]);
            }
        }
    }
    let mut chunks: Vec<Vec<Tick>> = Vec::new();
    for group in by_stripe {
        match chunks.last_mut() {
            Some(last) if last.len() + group.len() <= max_ticks.max(1) => last.extend(group),
            _ => chunks.push(group),
        }
    }
    chunks
}

/// What one chunk's claim left to do.
#[derive(Debug, Default)]
struct ChunkDone {
    /// Ticks to offer again.
    again: Vec<Retry>,
    /// Ticks that now have a committed row (ours or another replica's).
    settled: Vec<(String, DateTime<Utc>)>,
}

/// Claims one chunk and hands the runs it won to the executor. `waits` is
/// told when the chunk's rows are written and it only waits for its tick
/// (dropped unsent when it ends without waiting).
async fn claim_chunk(
    deps: Arc<Deps>,
    chunk: Vec<Tick>,
    jobs: mpsc::UnboundedSender<Job>,
    waits: oneshot::Sender<()>,
) -> ChunkDone {
    let mut by_key: HashMap<(String, DateTime<Utc>), Tick> = HashMap::with_capacity(chunk.len());
    let mut requests = Vec::with_capacity(chunk.len());
    for tick in chunk {
        let s = &tick.schedule.schedule;
        requests.push(ClaimRequest {
            schedule_name: s.name().to_string(),
            pipeline: s.pipeline().to_string(),
            scheduled_at: tick.at,
            due_at: tick.due,
            max_instances: s.max_instances(),
            misfire_grace_secs: u32::try_from(s.misfire_grace().as_secs()).unwrap_or(u32::MAX),
            coalesce: s.coalesce(),
            backlog: tick.backlog,
            overlap_policy: s.overlap_policy(),
            next_at: s.next_fire_after(tick.at).map(|next| s.due_at(next)),
        });
        by_key.insert((s.name().to_string(), tick.at), tick);
    }
    let retry_delay = crate::timing::chrono(deps.claim_retry_delay);
    // The batch may arrive up to the claim lead early: the INSERT waits
    // until its newest tick is due on our estimate of the database clock.
    let due = by_key.values().map(|t| t.due).max();
    let begun = std::time::Instant::now();
    let resumed = std::sync::OnceLock::new();
    // Executing, except while it waits for the tick (see `priority`).
    let mut executing = Some(deps.claims.executing());
    let result = {
        let until_due = async {
            let _ = waits.send(());
            if let Some(due) = due {
                executing = None;
                tokio::time::sleep(deps.clock.until(due + DUE_MARGIN)).await;
                executing = Some(deps.claims.executing());
            }
            // What follows is the part of the claim on the tick path.
            let _ = resumed.set(std::time::Instant::now());
        };
        match deps.pool.get().await {
            Ok(mut client) => {
                let finished = |names: &[&str]| deps.unwritten.of(names.iter().copied());
                let gone = deps.membership.gone();
                claims::claim_with_idle_timeout(
                    &mut client,
                    deps.node_id,
                    requests,
                    finished,
                    &gone,
                    deps.claim_idle_timeout,
                    until_due,
                )
                .await
                .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    drop(executing);
    let outcome = match result {
        Ok(o) => o,
        Err(error) => {
            deps.db.failed("claim", &error);
            tracing::debug!(%error, ticks = by_key.len(), "claim failed; will retry");
            // Backed off (and shared by the chunks): a database that is
            // down is not asked again hundreds of times a second.
            let now = deps.clock.now();
            let at = now + crate::timing::chrono(deps.db.health().claim_retry_delay());
            // Held up by the database: overdue ticks are a backlog now.
            let again = by_key
                .into_values()
                .map(|tick| Retry {
                    at,
                    // Overdue by the time it is asked again: a backlog now
                    // (`timing` step 1), whether it was ours or handed over.
                    tick: Tick {
                        backlog: tick.backlog || at - tick.due > crate::timing::BACKLOG_AFTER,
                        ..tick
                    },
                })
                .collect();
            return ChunkDone {
                again,
                settled: Vec::new(),
            };
        }
    };
    deps.db.succeeded();
    let on_tick_path = resumed.get().unwrap_or(&begun).elapsed().as_secs_f64();
    deps.metrics.claim_round_trip(on_tick_path);
    deps.metrics
        .claims(outcome.claimed.len() as u64, outcome.taken as u64);
    if let Some((sent, received, db_now)) = outcome.clock_sample {
        deps.clock.observe(sent, received, db_now);
    }
    let mut settled: Vec<(String, DateTime<Utc>)> = outcome
        .claimed
        .iter()
        .map(|c| (c.schedule_name.clone(), c.scheduled_at))
        .collect();
    tracing::debug!(
        won = outcome.claimed.len(),
        taken = outcome.taken,
        retry = outcome.retry.len(),
        elapsed_ms = on_tick_path * 1e3,
        "claimed a batch"
    );
    record_in_flight(&deps, &outcome.claimed);
    if !dispatch(&deps.metrics, outcome.claimed, &mut by_key, &jobs) {
        return ChunkDone::default();
    }
    let db_now = outcome.db_now.unwrap_or_else(|| deps.clock.now());
    let again = to_retry(&deps, outcome.retry, &mut by_key, db_now, retry_delay);
    // What is left had its row already: taken by another replica, settled all the same.
    settled.extend(by_key.into_keys());
    ChunkDone { again, settled }
}

/// Notes which in-flight row lists each run the claim made `running`, before
/// any of them can start (and so end).
fn record_in_flight(deps: &Deps, claimed: &[claims::Claimed]) {
    let mut rows: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for c in claimed.iter().filter(|c| c.status == RunStatus::Running) {
        rows.entry(c.claim_id).or_default().push(c.run_id);
    }
    for (claim_id, runs) in rows {
        deps.inflight_rows.record(claim_id, runs);
    }
}

/// Hands the runs a claim won to the executor, in tick order, and records
/// the ticks it wrote without running (`skipped`, `missed`). A run that waits
/// for another of the same claim (see `claims::INSERT`) starts when that
/// one's job ends: its `done` sender drops. False once the executor is gone.
fn dispatch(
    metrics: &Metrics,
    mut claimed_rows: Vec<claims::Claimed>,
    by_key: &mut HashMap<(String, DateTime<Utc>), Tick>,
    jobs: &mpsc::UnboundedSender<Job>,
) -> bool {
    let mut waits: HashMap<Uuid, executor::Waiting> = HashMap::new();
    claimed_rows.sort_by_key(|c| c.scheduled_at);
    for claimed in claimed_rows {
        let Some(tick) = by_key.remove(&(claimed.schedule_name.clone(), claimed.scheduled_at))
        else {
            continue;
        };
        match claimed.status {
            RunStatus::Running => {
                let (done, finished) = oneshot::channel();
                waits.insert(
                    claimed.run_id,
                    executor::Waiting {
                        run_id: claimed.run_id,
                        finished,
                    },
                );
                let job = Job {
                    run_id: claimed.run_id,
                    schedule: tick.schedule,
                    scheduled_at: claimed.scheduled_at,
                    due_at: tick.due,
                    attempt: 1,
                    trigger: RunTrigger::Schedule,
                    params: None,
                    after: claimed.after.and_then(|id| waits.remove(&id)),
                    waits_for: claimed.waits_for,
                    done: Some(done),
                };
                if jobs.send(job).is_err() {
                    return false;
                }
            }
            other => {
                if other == RunStatus::Skipped {
                    metrics.skipped(&claimed.schedule_name);
                } else {
                    metrics.missed(&claimed.schedule_name);
                }
                tracing::info!(
                    run_id = %claimed.run_id,
                    schedule = %claimed.schedule_name,
                    tick = %claimed.scheduled_at,
                    status = %other,
                    "tick recorded without running"
                );
            }
        }
    }
    true
}

/// When to offer again the ticks a claim handed back.
fn to_retry(
    deps: &Deps,
    retry: Vec<ClaimRequest>,
    by_key: &mut HashMap<(String, DateTime<Utc>), Tick>,
    db_now: DateTime<Utc>,
    retry_delay: chrono::Duration,
) -> Vec<Retry> {
    let share = Share::current(&deps.membership, deps.node_id);
    let handoff = crate::timing::chrono(deps.handoff_delay);
    retry
        .into_iter()
        .filter_map(|req| by_key.remove(&(req.schedule_name, req.scheduled_at)))
        .map(|tick| {
            // Not yet due on the database clock: ask again as it falls due.
            // Locked by another replica: ask again in case its transaction
            // rolls back — soon for our own share (so the others' handoff
            // checks find the row and never race us for it), at the next
            // handoff for the others' share (riding along with the next batch).
            let at = if tick.due > db_now {
                tick.due
            } else if share.prefers(tick.name()) {
                db_now + retry_delay
            } else {
                db_now + handoff
            };
            Retry { tick, at }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use crate::store::schedules::StoredSchedule;

    fn tick(name: &str, second: i64) -> Tick {
        let schedule =
            Schedule::interval(name, "p", std::time::Duration::from_secs(1)).expect("valid");
        Tick {
            schedule: Arc::new(StoredSchedule {
                schedule,
                version: 1,
                created_at: DateTime::UNIX_EPOCH,
                updated_at: DateTime::UNIX_EPOCH,
                pause: None,
                manager: None,
            }),
            at: DateTime::UNIX_EPOCH + chrono::Duration::seconds(second),
            due: DateTime::UNIX_EPOCH + chrono::Duration::seconds(second),
            backlog: true,
        }
    }

    #[test]
    fn chunks_keep_a_stripe_together_and_stay_near_the_size() {
        // Two ticks each of 3,000 schedules: about three stripes' worth per
        // stripe, so a stripe holds a few dozen ticks.
        let batch: Vec<Tick> = (0..3000)
            .flat_map(|i| [tick(&format!("s{i}"), 0), tick(&format!("s{i}"), 1)])
            .collect();
        let out = chunks(batch, 1000);
        assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 6000);
        let mut home = HashMap::new();
        for (c, chunk) in out.iter().enumerate() {
            for t in chunk {
                let at = *home.entry(locks::stripe(t.name())).or_insert(c);
                assert_eq!(at, c, "{} is in two chunks", t.name());
            }
        }
        let largest_stripe = 6000 / locks::STRIPES as usize * 4;
        assert!(
            out.iter().all(|c| c.len() <= 1000),
            "{:?}",
            out.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert!(
            out[..out.len() - 1]
                .iter()
                .all(|c| c.len() + largest_stripe > 1000),
            "chunks are filled"
        );
        // A stripe larger than the size is one chunk of its own.
        assert_eq!(chunks(vec![tick("a", 0), tick("a", 1)], 1).len(), 1);
    }
}
