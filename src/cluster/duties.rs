//! The leader's housekeeping loop. Runs on every replica, acts only while
//! [`Leadership::is_leader`](super::Leadership::is_leader) holds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use super::context::Context;
use crate::store::housekeeping::{self, Unclaimed};
use crate::store::schedules::StoredSchedule;
use crate::store::StoreError;

/// How far back a new leader looks for unclaimed ticks.
const MAX_LOOKBACK: chrono::Duration = chrono::Duration::days(7);
/// Most unclaimed ticks of one schedule recorded per pass.
const MAX_TICKS_PER_PASS: usize = 1000;
/// Retention deletes at most this many rows per statement, and runs this often.
const PRUNE_BATCH: i64 = 10_000;
const PRUNE_EVERY: Duration = Duration::from_secs(300);
// How long a replica with a liveness key must stay gone before the leader
// reaps it (marks it dead and its runs `abandoned`). A live replica that
// loses its liveness session switches itself to lease mode within a few
// milliseconds (`membership`); this covers that switch with room to spare.
use crate::timing::REAP_CONFIRM;
// Margin past a tick's grace before the sweep calls it missed (see `timing`).
use crate::timing::SWEEP_MARGIN;

/// Where the misfire sweep stands for one schedule.
struct Watermark {
    /// Ticks up to here are accounted for.
    through: DateTime<Utc>,
    /// The schedule definition it was computed for.
    updated_at: DateTime<Utc>,
    /// The first tick after `through` and its due instant
    /// (`Schedule::due_at`), computed once: most schedules are not due
    /// between passes, and recomputing 100,000 cron successors every pass
    /// would cost seconds.
    next: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// `s`'s first tick after `after`, with its due instant.
fn next_with_due(
    s: &StoredSchedule,
    after: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    s.schedule
        .next_fire_after(after)
        .map(|t| (t, s.schedule.due_at(t)))
}

/// Runs until shutdown.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &ctx.config;
    let mut marks: HashMap<String, Watermark> = HashMap::new();
    let mut last_prune: Option<Instant> = None;
    let mut leading = false;
    let mut suspects = Suspects::default();
    let mut membership = ctx.membership.subscribe();
    let mut next_pass = Instant::now() + cfg.housekeeping_interval;
    loop {
        // A pass every interval; sooner when a replica vanished (so its
        // runs are reaped once confirmed gone), and at once on becoming
        // leader.
        let wake = suspects
            .confirm_at()
            .map_or(next_pass, |t| t.min(next_pass));
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(wake) => {}
            Ok(()) = membership.changed() => {}
            _ = ctx.leadership.gained.notified() => {}
        }
        suspects.observe(&ctx.membership.gone());
        if !ctx.leadership.is_leader() {
            if leading {
                // A later term must not trust what this one swept.
                marks.clear();
                leading = false;
            }
            if Instant::now() >= next_pass {
                next_pass = Instant::now() + cfg.housekeeping_interval;
            }
            continue;
        }
        let was_leading = std::mem::replace(&mut leading, true);
        let confirmed = suspects.confirmed();
        if was_leading && Instant::now() < next_pass && confirmed.is_empty() {
            continue;
        }
        next_pass = Instant::now() + cfg.housekeeping_interval;
        if let Err(e) = pass(&ctx, &confirmed, &mut marks, &mut last_prune).await {
            ctx.db_failed("housekeeping", &e);
        }
    }
}

/// Replicas seen gone (liveness lock released), and since when.
#[derive(Debug, Default)]
struct Suspects {
    since: HashMap<uuid::Uuid, Instant>,
}

impl Suspects {
    /// Takes the latest `gone` list: new ones start their confirmation,
    /// those that came back are forgotten.
    fn observe(&mut self, gone: &[uuid::Uuid]) {
        self.since.retain(|id, _| gone.contains(id));
        let now = Instant::now();
        for id in gone {
            self.since.entry(*id).or_insert(now);
        }
    }

    /// When the next suspect will have been gone for [`REAP_CONFIRM`].
    fn confirm_at(&self) -> Option<Instant> {
        self.since
            .values()
            .map(|t| *t + REAP_CONFIRM)
            .filter(|t| *t > Instant::now())
            .min()
    }

    /// Suspects gone for at least [`REAP_CONFIRM`].
    fn confirmed(&self) -> Vec<uuid::Uuid> {
        self.since
            .iter()
            .filter(|(_, t)| t.elapsed() >= REAP_CONFIRM)
            .map(|(id, _)| *id)
            .collect()
    }
}

async fn pass(
    ctx: &Context,
    confirmed_gone: &[uuid::Uuid],
    marks: &mut HashMap<String, Watermark>,
    last_prune: &mut Option<Instant>,
) -> Result<(), StoreError> {
    let cfg = &ctx.config;
    let client = ctx.pool.get().await?;
    let node = ctx.node_id;

    // No replica can show it is alive while the database is away: after an
    // outage, each gets one node lease to take its liveness lock again (or
    // heartbeat) before any is reaped, or a replica already claiming and
    // running again would have its runs recorded `abandoned`.
    let settled = ctx
        .health
        .answering_for()
        .is_some_and(|d| d >= ctx.node_lease);
    let (dead, abandoned) = if settled {
        housekeeping::reap(&**client, ctx.node_lease, confirmed_gone).await?
    } else {
        (0, Vec::new())
    };
    for (schedule, trigger) in &abandoned {
        // The column's CHECK admits only known triggers.
        if let Ok(trigger) = trigger.parse() {
            ctx.metrics
                .fired(schedule, crate::types::RunStatus::Abandoned, trigger);
        }
    }
    if dead > 0 || !abandoned.is_empty() {
        tracing::warn!(
            nodes = dead,
            runs = abandoned.len(),
            "reaped replicas that are gone"
        );
    }
    let retries = housekeeping::schedule_retries(&**client, node).await?;
    if retries > 0 {
        tracing::info!(retries, "scheduled retries");
    }
    let missed = sweep_misfires(ctx, &client, marks).await?;
    if missed > 0 {
        tracing::warn!(ticks = missed, "recorded ticks nobody claimed as missed");
    }
    if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
        *last_prune = Some(Instant::now());
        // Partition DDL gives way to a busy ledger (lock timeout) and is
        // retried on the next retention pass; its failure is not a database
        // outage, and must not hold up the row-by-row retention below.
        if let Err(e) = maintain_partitions(ctx).await {
            tracing::warn!(error = %e, "ledger partition maintenance failed; retrying on the next pass");
        }
        let mut pruned = housekeeping::prune_runs(&**client, cfg.retention, PRUNE_BATCH).await?;
        if let Some(keep) = cfg.retention_keep_last {
            pruned += housekeeping::prune_runs_beyond(&**client, keep, PRUNE_BATCH).await?;
        }
        let nodes = housekeeping::prune_nodes(&**client, cfg.node_retention).await?;
        if pruned > 0 || nodes > 0 {
            tracing::info!(runs = pruned, nodes, "pruned history");
        }
    }
    Ok(())
}

/// How far ahead of now the leader keeps the ledger's partitions created:
/// this, or two partition intervals if longer.
const PARTITIONS_AHEAD: chrono::Duration = chrono::Duration::days(3);

/// Creates the ledger's partitions ahead, drops those past retention
/// (before the row-by-row retention, which then only thins what is kept)
/// and warns of rows in the DEFAULT partition.
async fn maintain_partitions(ctx: &Context) -> Result<(), StoreError> {
    use crate::store::partitions;
    let cfg = &ctx.config;
    let mut client = ctx.pool.get().await?;
    let now = ctx.clock.now();
    let interval = cfg.ledger_partition_interval;
    let ahead = chrono::Duration::from_std(interval * 2)
        .unwrap_or(PARTITIONS_AHEAD)
        .max(PARTITIONS_AHEAD);
    let made = partitions::create_ahead(&mut **client, interval, now, now + ahead).await?;
    if !made.created.is_empty() {
        tracing::info!(partitions = ?made.created, "created ledger partitions");
    }
    if !made.blocked.is_empty() {
        tracing::warn!(
            partitions = ?made.blocked,
            "ledger partitions not created: the default partition holds ticks in their range"
        );
    }
    let gone = partitions::drop_expired(&mut **client, now, cfg.retention, cfg.retention_keep_last)
        .await?;
    if !gone.dropped.is_empty() {
        tracing::info!(partitions = ?gone.dropped, "dropped ledger partitions past retention");
    }
    let stray = partitions::default_rows(&**client, 1_000_000).await?;
    ctx.metrics.ledger_default_partition_rows(stray);
    if stray > 0 {
        tracing::warn!(
            rows = stray,
            partition = partitions::DEFAULT_PARTITION,
            "ledger rows in the default partition: ticks no partition covered when written"
        );
    }
    Ok(())
}

/// Records `missed` for every due tick of an enabled schedule that has no
/// row once its grace (plus a margin) has passed (G2).
async fn sweep_misfires(
    ctx: &Context,
    client: &tokio_postgres::Client,
    marks: &mut HashMap<String, Watermark>,
) -> Result<u64, StoreError> {
    // A leader elected before its replica has read the schedules must not
    // sweep: with nothing to walk, the pass would count as complete and
    // record a watermark past ticks nobody accounted for (seen in CI: a
    // whole-cluster restart left three ticks of the outage without a row).
    if !ctx.catalog.is_loaded() {
        return Ok(0);
    }
    let schedules = ctx.catalog.enabled();
    let now = ctx.clock.now();
    let current: HashSet<&str> = schedules.iter().map(|s| s.schedule.name()).collect();
    marks.retain(|name, _| current.contains(name.as_str()));
    let new: Vec<&StoredSchedule> = schedules
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| !marks.contains_key(s.schedule.name()))
        .collect();
    if !new.is_empty() {
        // A new term (or new schedules) starts where the last complete
        // pass — of any leader — stood. Only a database that never had one
        // falls back to each schedule's newest row older than its grace.
        let swept_at = housekeeping::swept_at(client).await?;
        let last = match swept_at {
            Some(_) => HashMap::new(),
            None => {
                let names: Vec<&str> = new.iter().map(|s| s.schedule.name()).collect();
                let cutoffs: Vec<DateTime<Utc>> = new
                    .iter()
                    .map(|s| now - grace_of(s) - SWEEP_MARGIN)
                    .collect();
                housekeeping::last_ticks(client, &names, &cutoffs).await?
            }
        };
        for s in new {
            // A pass at `at` accounted for the ticks due by `at - grace -
            // margin`: surely those up to a jitter before that.
            let accounted = match swept_at {
                Some(at) => Some(at - grace_of(s) - SWEEP_MARGIN - jitter_of(s)),
                None => last.get(s.schedule.name()).copied(),
            };
            // Ticks before the definition never were due, but for the one a
            // one-time schedule defined late still owes (`Schedule::due_after`).
            let defined = s.schedule.due_after(s.updated_at);
            let from = accounted
                .unwrap_or(defined)
                .max(defined)
                .max(now - MAX_LOOKBACK);
            marks.insert(
                s.schedule.name().to_string(),
                Watermark {
                    through: from,
                    updated_at: s.updated_at,
                    next: next_with_due(s, from),
                },
            );
        }
    }
    let mut unclaimed = Vec::new();
    let mut complete = true;
    for s in &schedules {
        let Some(mark) = marks.get_mut(s.schedule.name()) else {
            continue;
        };
        if s.updated_at > mark.updated_at {
            // Ticks of an older definition (or of a pause) never were due.
            mark.through = mark.through.max(s.schedule.due_after(s.updated_at));
            mark.updated_at = s.updated_at;
            mark.next = next_with_due(s, mark.through);
        }
        let grace = grace_of(s);
        // Lateness counts from the due instant (the tick plus its jitter),
        // which keeps tick order: the first not yet overdue ends the walk.
        let until = now - grace - SWEEP_MARGIN;
        let mut taken = 0;
        while let Some((t, due)) = mark.next {
            if due > until {
                break;
            }
            if taken == MAX_TICKS_PER_PASS {
                complete = false;
                break;
            }
            unclaimed.push(Unclaimed {
                schedule_name: s.schedule.name().to_string(),
                pipeline: s.schedule.pipeline().to_string(),
                scheduled_at: t,
                due_at: due,
                grace_secs: i32::try_from(grace.num_seconds()).unwrap_or(i32::MAX),
            });
            mark.through = t;
            mark.next = next_with_due(s, t);
            taken += 1;
        }
    }
    let mut written = 0;
    for chunk in unclaimed.chunks(5000) {
        for schedule in housekeeping::record_missed(client, ctx.node_id, chunk).await? {
            ctx.metrics.missed(&schedule);
            written += 1;
        }
    }
    if complete {
        housekeeping::record_swept(client, now).await?;
    }
    Ok(written)
}

fn grace_of(s: &StoredSchedule) -> chrono::Duration {
    crate::timing::misfire_grace(&s.schedule)
}

fn jitter_of(s: &StoredSchedule) -> chrono::Duration {
    crate::timing::chrono(s.schedule.jitter())
}
