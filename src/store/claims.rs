//! Claiming due ticks: the heart of exactly-once (G1, G4).
//!
//! One transaction per batch:
//!
//! 1. [`LOCK`] finds the ticks whose row already exists (done: someone has
//!    them) and takes `pg_try_advisory_xact_lock` on the stripe
//!    (`locks::stripe`) of every schedule with a tick still to claim. A
//!    stripe another replica is claiming right now is skipped without
//!    waiting; the caller keeps its ticks and asks again (the other
//!    replica's transaction may still roll back). The statement also reads
//!    the database clock, `now()`.
//! 2. [`INSERT`] writes one ledger row per tick of the locked schedules,
//!    `ON CONFLICT DO NOTHING` on the unique tick key. It starts after the
//!    locks are held, so its snapshot sees every claim committed before
//!    ours — which is what makes the cluster-wide `max_instances` count right.
//!    The row's status applies the schedule's policies: `missed` when the tick
//!    is older than its misfire grace or was coalesced into a newer tick,
//!    `skipped` when `max_instances` runs had really started and not
//!    finished (naming the oldest), else `running` — possibly waiting for a
//!    run of the same claim.
//! 3. [`DUE`] reads the database clock; the transaction commits only once it
//!    has reached the newest due instant written.
//!
//! A tick's *due instant* ([`ClaimRequest::due_at`]) is the tick plus the
//! schedule's jitter delay (`schedule::Schedule::due_at`; the tick itself
//! without a jitter). Every "is it time" and "how late" below counts from
//! it — the due filter, the misfire grace, `claimed_at`/`started_at`, the
//! overlap's "started by the time it fell due", the DUE check — while the
//! row's `scheduled_at` (its identity in the unique key) stays the tick.
//!
//! The engine sends a batch a little *before* its ticks fall due (the claim
//! lead). Steps 1 and 2 run ahead — the INSERT in "early" mode writes only
//! the rows that will simply run, uncommitted and so invisible to everyone —
//! and at the due instant only the clock check and the COMMIT are left: a
//! claim takes effect at its commit, never before its tick on the database
//! clock (G4), so a replica with a fast clock cannot fire early. Ticks whose
//! policies say something else (late, coalesced, overlapping) are judged and
//! written after the clock check, as are ticks already due. A tick the
//! database does not yet consider due is handed back to retry.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::locks;
use super::StoreError;
use crate::schedule::OverlapPolicy;
use crate::types::RunStatus;

/// One (schedule, tick) to claim, with the policies the claim applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// The schedule.
    pub schedule_name: String,
    /// Its pipeline (recorded in the ledger).
    pub pipeline: String,
    /// The tick.
    pub scheduled_at: DateTime<Utc>,
    /// When it falls due: the tick plus the schedule's jitter delay
    /// (`schedule::Schedule::due_at`), never before the tick. The claim
    /// commits no row before it, and lateness counts from it.
    pub due_at: DateTime<Utc>,
    /// Cluster-wide limit of concurrently running runs of this schedule.
    pub max_instances: u32,
    /// How late, in seconds, the tick may start.
    pub misfire_grace_secs: u32,
    /// Whether older due ticks in the same batch collapse into the newest.
    pub coalesce: bool,
    /// Whether this tick is part of a backlog (the claiming replica's queue
    /// or database was behind: see `engine::queue::Tick::backlog`) and may
    /// be coalesced. A tick that is merely late — handed over from a replica
    /// that died, held up by a short database hiccup — is not: a failover
    /// must not turn it into a coalesced one.
    pub backlog: bool,
    /// What the tick does when `max_instances` runs are unfinished.
    pub overlap_policy: OverlapPolicy,
    /// When the schedule's next tick after this one falls due (its due
    /// instant): with `coalesce`, a backlog tick whose next tick is already
    /// due is coalesced into it (APScheduler's rule: of several missed run
    /// times, only the latest runs). Whichever replica and claim judge it,
    /// the answer is the same.
    pub next_at: Option<DateTime<Utc>>,
}

/// A ledger row this replica created.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The new row's id.
    pub run_id: Uuid,
    /// Its schedule.
    pub schedule_name: String,
    /// Its tick.
    pub scheduled_at: DateTime<Utc>,
    /// `running` (ours to execute), or `missed`/`skipped` (recorded, nothing to run).
    pub status: RunStatus,
    /// A `running` row that must wait: the run, created by the same claim,
    /// that it starts after (see [`INSERT`]).
    pub after: Option<Uuid>,
    /// A `running` row that must wait for a run outside this claim (on any
    /// replica): the newest unfinished run of its schedule when it was
    /// claimed, also recorded in its `overlapped_run_id`.
    pub waits_for: Option<Uuid>,
    /// The `scheduler_inflight` row that lists it while it runs (only
    /// `running` rows are listed; see `store::inflight`).
    pub claim_id: Uuid,
}

/// What became of a batch.
#[derive(Debug, Clone, Default)]
pub struct ClaimOutcome {
    /// The database clock when the INSERT ran (or, if nothing was left to
    /// insert, when the transaction began).
    pub db_now: Option<DateTime<Utc>>,
    /// A clock-offset sample: the local clock just before BEGIN was sent,
    /// when it returned, and the database's `now()` (the transaction's
    /// start), which lies in between.
    pub clock_sample: Option<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)>,
    /// Rows we created.
    pub claimed: Vec<Claimed>,
    /// Requests whose row already existed: someone else has it. Done.
    pub taken: usize,
    /// Requests to ask again: stripe locked by another claim, not yet due, or
    /// a tick's row written by someone else while the claim wrote its own
    /// (the whole claim is then handed back).
    pub retry: Vec<ClaimRequest>,
}

/// Statement 1: which ticks already have their row (committed), the
/// try-locks of the stripes (`$3`, the lock key of each tick's schedule) with
/// a tick still to claim, and the database clock. It also shortens this
/// transaction's `idle_in_transaction_session_timeout` to `$4`: a replica
/// frozen (SIGSTOP, a stalled VM) in the middle of a claim loses its
/// transaction and its stripe locks after that, not after the pooled
/// session's 5 s, so it holds nobody's tick for long. Ticks already claimed take
/// no lock, so a replica double-checking another's share never contends
/// with that replica.
pub const LOCK: &str = "\
WITH u AS (
    -- OFFSET 0 keeps the check a probe of the tick key per tick. Without it
    -- PostgreSQL may instead hash every first attempt in the tick's
    -- partition (it chooses on the partition's statistics, which lag
    -- behind a day's partition as it fills): 38,000 rows read for 624 ticks
    -- after a minute at 5,000 fires/s, and more through the day
    -- (`spine-bench floor`, BENCHMARKS.md).
    SELECT u.name, u.t, u.k, u.ord,
           EXISTS (SELECT 1 FROM scheduler_runs r
                    WHERE r.schedule_name = u.name AND r.scheduled_at = u.t
                      AND r.attempt = 1 AND r.trigger <> 'manual' OFFSET 0) AS present
    FROM unnest($1::text[], $2::timestamptz[], $3::int8[]) WITH ORDINALITY AS u(name, t, k, ord)
), todo AS (
    SELECT DISTINCT k FROM u WHERE NOT present
), locked AS (
    SELECT k FROM todo WHERE pg_try_advisory_xact_lock(k)
)
SELECT now() AS db_now,
       set_config('idle_in_transaction_session_timeout', $4, true) AS idle_timeout,
       coalesce((SELECT array_agg(k) FROM locked), '{}') AS locked,
       coalesce((SELECT array_agg(ord::int4) FROM u WHERE present), '{}') AS present";

/// Statement 2: the ledger rows, with the misfire, coalesce and overlap
/// policies. `statement_timestamp()` is the database clock when the INSERT
/// arrives (the transaction began earlier, during the claim lead). `$15`
/// holds each tick's due instant (`due_at`; `scheduled_at` is the tick,
/// kept in the row). With `$10` (early) the ticks need not be due yet and only schedules whose
/// ticks will all simply run are written; the rest wait for the INSERT after
/// the clock check. Always returns one row: the clock, and the created rows
/// as parallel arrays.
///
/// Overlap (`max_instances`) counts the schedule's unfinished (`running`)
/// rows in the cluster, less this replica's runs that finished unwritten
/// (`$11`) and the runs of replicas that are gone (`$12`, see
/// `store::membership`). When the count has reached `max_instances`, the
/// schedule's overlap policy (`$14`, `schedule::OverlapPolicy`) decides:
///
/// - `skip`: the tick is `skipped` — but only if that many runs had
///   *started by the time it fell due*; runs started after it (a late
///   handed-over tick, a backlog) did not overlap it, and it waits for them
///   instead, as under `buffer_all`. The row names the oldest run
///   (`overlapped_run_id`).
/// - `buffer_one`, `buffer_all`: the tick is written `running` but *queued*
///   (`started_at` NULL until it starts); `buffer_one` lets one tick wait
///   and skips the others.
/// - `allow_all`: it runs.
/// - `cancel_other`, `terminate_other`: it is queued, and the oldest
///   unfinished runs (enough to free one instance) get a cancel request
///   (`cancel_requested_at`, `cancel_mode`, `cancel_requested_by`),
///   announced on `spine_runs` at commit (`engine::cancel`).
///
/// A queued row names the run it waits for in `overlapped_run_id`: the
/// newest unfinished run outside the claim ([`Claimed::waits_for`]: the
/// executor polls the ledger until it ends), or, for several ticks of one
/// schedule in one claim, the row of the claim `free` places before it
/// ([`Claimed::after`], worked out from the rows returned). Either wait is
/// bounded by the misfire grace (`engine::executor`).
/// `claimed_at` is when the claim takes effect: the due instant for a row
/// written ahead (it commits only after it), else the INSERT.
/// `started_at` likewise. A tick whose row exists already is not written
/// (another replica, the missed-tick sweep or a backfill wrote it).
pub const INSERT: &str = concat!(
    "\
WITH c AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
                $5::int[], $6::int[], $7::bool[], $9::bool[], $13::timestamptz[], $14::text[],
                $15::timestamptz[])
         AS c(run_id, schedule_name, pipeline, scheduled_at,
              max_instances, grace_secs, coalesce, backlog, next_at, policy, due_at)
    WHERE $10 OR c.due_at <= statement_timestamp()
), unfinished AS (
    -- The (few) unfinished runs of these schedules, oldest first: started
    -- ones by start, then the waiting ones (`store::inflight`).
    SELECT u.run_id, u.schedule_name, u.started_at, u.scheduled_at,
           row_number() OVER (PARTITION BY u.schedule_name
                              ORDER BY u.started_at NULLS LAST, u.run_id) AS age
    FROM ",
    crate::unfinished_runs!(),
    " u
    WHERE u.schedule_name = ANY($2::text[])
      AND NOT EXISTS (SELECT 1 FROM unnest($11::uuid[]) AS f(run_id) WHERE f.run_id = u.run_id)
      AND NOT EXISTS (SELECT 1 FROM unnest($12::uuid[]) AS g(node_id) WHERE g.node_id = u.node_id)
), running AS (
    SELECT schedule_name, count(*) AS n,
           count(*) FILTER (WHERE started_at IS NULL) AS waiting,
           (array_agg(run_id ORDER BY age))[1] AS oldest,
           (array_agg(run_id ORDER BY age DESC))[1] AS newest
    FROM unfinished
    GROUP BY schedule_name
), before_tick AS (
    -- Per tick, the runs that had started by the time it fell due: only
    -- they make it a skip. A run started later (a late handed-over tick, a
    -- backlog) did not overlap it; the tick waits for it instead.
    SELECT c.run_id, count(*) AS n
    FROM c JOIN unfinished u USING (schedule_name)
    WHERE u.started_at <= c.due_at
    GROUP BY c.run_id
), judged AS (
    SELECT c.*, coalesce(running.n, 0) AS running, coalesce(running.waiting, 0) AS waiting,
           running.oldest, running.newest, coalesce(before_tick.n, 0) AS running_at_tick,
           CASE
             WHEN statement_timestamp() - c.due_at > make_interval(secs => c.grace_secs) THEN 'late'
             WHEN c.coalesce AND c.backlog AND c.next_at <= statement_timestamp() THEN 'coalesced'
           END AS dropped
    FROM c LEFT JOIN running USING (schedule_name) LEFT JOIN before_tick USING (run_id)
), decided AS (
    SELECT judged.*,
           CASE
             WHEN dropped IS NOT NULL THEN 'missed'
             WHEN running_at_tick >= max_instances AND policy = 'skip' THEN 'skipped'
             ELSE 'running'
           END AS status,
           greatest(max_instances - running, 0) AS free
    FROM judged
), ranked AS (
    SELECT decided.*,
           row_number() OVER (PARTITION BY schedule_name, status = 'running'
                              ORDER BY scheduled_at) AS rn
    FROM decided
), settled AS (
    -- Past the free instances a tick waits (is queued), except under
    -- allow_all; under buffer_one only one may wait, the rest are skipped.
    -- A schedule is written ahead only when every one of its ticks will
    -- simply run; the others are judged together once due.
    SELECT run_id, schedule_name, pipeline, scheduled_at, due_at, max_instances, grace_secs, policy,
           next_at, dropped, running, oldest, newest, queued, status,
           bool_and(status = 'running' AND NOT queued) OVER (PARTITION BY schedule_name) AS clean
    FROM (
        SELECT ranked.*,
               CASE
                 WHEN status = 'running' AND policy = 'buffer_one'
                      AND rn > free + greatest(1 - waiting, 0) THEN 'skipped'
                 ELSE status
               END AS status2,
               status = 'running' AND policy <> 'allow_all' AND rn > free AS queued0
        FROM ranked
    ) t(run_id, schedule_name, pipeline, scheduled_at, max_instances, grace_secs, coalesce,
        backlog, next_at, policy, due_at, running, waiting, oldest, newest, running_at_tick, dropped,
        status0, free, rn, status, queued)
), inserted AS (
    INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, attempt,
                                node_id, status, claimed_at, started_at, completed_at, error,
                                overlapped_run_id)
    SELECT run_id, schedule_name, pipeline, 'schedule', scheduled_at, 1, $8, status,
           greatest(statement_timestamp(), due_at),
           CASE WHEN status = 'running' AND NOT queued
                THEN greatest(statement_timestamp(), due_at) END,
           CASE WHEN status <> 'running' THEN statement_timestamp() END,
           CASE
             WHEN status = 'running' THEN NULL
             WHEN dropped = 'late' THEN
               format('not started within the misfire grace of %s s (claimed %s s after it fell due)',
                      grace_secs,
                      round(extract(epoch FROM statement_timestamp() - due_at)::numeric, 3))
             WHEN dropped = 'coalesced' THEN
               format('coalesced: the next tick (due %s) was already due; a backlog runs once, for its newest tick',
                      next_at)
             WHEN policy = 'buffer_one' THEN
               format('overlap_policy buffer_one: max_instances (%s) runs were unfinished and a tick already waited for them, the oldest %s',
                      max_instances, oldest)
             ELSE format('max_instances (%s) runs of this schedule were already running, the oldest %s',
                         max_instances, oldest)
           END,
           CASE WHEN status = 'skipped' THEN oldest WHEN queued THEN newest END
    FROM settled s
    WHERE (NOT $10 OR clean)
      -- A plain INSERT, not ON CONFLICT DO NOTHING: a speculative insertion
      -- costs a WAL record per row (49 bytes a fire). Rows committed before
      -- this statement are passed over here; a conflicting one being
      -- committed meanwhile (the stripe lock keeps other claims out, not
      -- the leader's missed-tick sweep or a backfill) fails the statement,
      -- and the claim hands its ticks back to retry (`claim`).
      -- OFFSET 0: a probe per tick, never an anti-join over the tick's
      -- partition (see `LOCK`).
      AND NOT EXISTS (
          SELECT 1 FROM scheduler_runs r
          WHERE r.schedule_name = s.schedule_name AND r.scheduled_at = s.scheduled_at
            AND r.attempt = 1 AND NOT (r.trigger = 'manual') OFFSET 0)
    RETURNING run_id, schedule_name, scheduled_at, status,
              status = 'running' AND started_at IS NULL AS queued, overlapped_run_id
), tracked AS (
    -- The runs this claim makes `running`, listed until they end.
    INSERT INTO scheduler_inflight (claim_id, node_id, run_ids, schedule_names, ticks)
    SELECT $16, $8, array_agg(run_id), array_agg(schedule_name), array_agg(scheduled_at)
    FROM inserted WHERE status = 'running'
    HAVING count(*) > 0
), cancelled AS (
    -- cancel_other / terminate_other: the oldest unfinished runs, enough to
    -- leave one instance free, are asked to stop; the first queued tick of
    -- the claim names itself as the asker.
    UPDATE scheduler_runs r
    SET cancel_requested_at = coalesce(r.cancel_requested_at, statement_timestamp()),
        cancel_requested_by = coalesce(r.cancel_requested_by, v.asker),
        cancel_mode = CASE WHEN v.policy = 'terminate_other' THEN 'immediate'
                           ELSE coalesce(r.cancel_mode, 'graceful') END
    FROM (
        SELECT DISTINCT ON (u.run_id) u.run_id, u.scheduled_at, s.run_id AS asker, s.policy
        FROM settled s
        JOIN unfinished u ON u.schedule_name = s.schedule_name
                         AND u.age <= s.running - s.max_instances + 1
        WHERE s.queued AND s.policy IN ('cancel_other', 'terminate_other')
          AND (NOT $10 OR s.clean)
        ORDER BY u.run_id, s.scheduled_at
    ) v
    WHERE r.run_id = v.run_id AND r.scheduled_at = v.scheduled_at AND r.status = 'running'
    RETURNING r.run_id, r.cancel_mode, r.cancel_requested_by
)
SELECT statement_timestamp() AS db_now,
       coalesce(array_agg(run_id), '{}') AS run_ids,
       coalesce(array_agg(schedule_name), '{}') AS schedule_names,
       coalesce(array_agg(scheduled_at), '{}') AS ticks,
       coalesce(array_agg(status), '{}') AS statuses,
       coalesce(array_agg(queued), '{}') AS queued,
       coalesce(array_agg(overlapped_run_id), '{}') AS waits_for,
       (SELECT count(pg_notify('spine_runs',
                               'cancel:' || run_id || ':' || cancel_mode || ':'
                               || coalesce(cancel_requested_by::text, '')))
        FROM cancelled) AS cancels
FROM inserted"
);

/// Statement 3: whether the database clock has reached the newest due
/// instant the transaction wrote, and the clock itself.
pub const DUE: &str = "SELECT statement_timestamp() >= $1 AS due, statement_timestamp() AS db_now";

/// The longest a claim sleeps between two clock checks: the gap between
/// statements must stay well under the transaction's idle timeout.
const DUE_RECHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// The idle-in-transaction timeout [`claim`] gives its transaction (the
/// pooled sessions' own); the engine passes a much shorter one
/// (`EngineConfig::claim_idle_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long past the local estimate of the due instant a claim may wait for
/// the database clock to reach its ticks. When the database says they are
/// further off than this, the estimate is badly wrong (a fast clock not yet
/// calibrated): the claim rolls back and hands them back to retry.
const MAX_DUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Claims a batch in one transaction (prepared statements, once per pooled
/// connection). The client must not be inside a transaction.
///
/// `finished` lists the runs of the given schedules that have finished on
/// this replica but whose results are not written yet (they wait for
/// claims, see `engine::priority`): the overlap policy does not count them
/// as running. It is asked right before each INSERT, since a run may finish
/// while the claim waits for its tick.
///
/// `gone` lists the replicas whose liveness is gone (`store::membership`):
/// their `running` rows do not count either.
///
/// `until_due` is awaited between writing the rows and committing them: the
/// engine sends a batch shortly before its ticks fall due and resolves it at
/// the due instant, so only the clock check and the COMMIT are left on the
/// tick path.
pub async fn claim(
    client: &mut deadpool_postgres::Client,
    node_id: Uuid,
    batch: Vec<ClaimRequest>,
    finished: impl Fn(&[&str]) -> Vec<Uuid>,
    gone: &[Uuid],
    until_due: impl std::future::Future<Output = ()>,
) -> Result<ClaimOutcome, StoreError> {
    claim_with_idle_timeout(
        client,
        node_id,
        batch,
        finished,
        gone,
        DEFAULT_IDLE_TIMEOUT,
        until_due,
    )
    .await
}

/// [`claim`], with the transaction's idle-in-transaction timeout: longer
/// than any wait between its statements (the wait for the tick, at most the
/// claim lead; a clock re-check, at most 200 ms).
pub async fn claim_with_idle_timeout(
    client: &mut deadpool_postgres::Client,
    node_id: Uuid,
    batch: Vec<ClaimRequest>,
    finished: impl Fn(&[&str]) -> Vec<Uuid>,
    gone: &[Uuid],
    idle_timeout: std::time::Duration,
    until_due: impl std::future::Future<Output = ()>,
) -> Result<ClaimOutcome, StoreError> {
    let mut outcome = ClaimOutcome::default();
    if batch.is_empty() {
        return Ok(outcome);
    }
    let names: Vec<&str> = batch.iter().map(|r| r.schedule_name.as_str()).collect();
    let ticks: Vec<DateTime<Utc>> = batch.iter().map(|r| r.scheduled_at).collect();
    let keys: Vec<i64> = names
        .iter()
        .map(|n| locks::claim_key(locks::stripe(n)))
        .collect();

    let sent = Utc::now();
    let tx = client.transaction().await?;
    let received = Utc::now();
    let lock = tx.prepare_cached(LOCK).await?;
    let insert = tx.prepare_cached(INSERT).await?;
    let due = tx.prepare_cached(DUE).await?;
    let idle = format!("{}ms", idle_timeout.as_millis().max(1));
    let row = tx.query_one(&lock, &[&names, &ticks, &keys, &idle]).await?;
    let began: DateTime<Utc> = row.try_get("db_now")?;
    outcome.db_now = Some(began);
    outcome.clock_sample = Some((sent, received, began));
    let locked: Vec<i64> = row.try_get("locked")?;
    let locked: HashSet<i64> = locked.into_iter().collect();
    let present: Vec<i32> = row.try_get("present")?;
    let present: HashSet<usize> = present
        .into_iter()
        .filter_map(|i| usize::try_from(i).ok())
        .collect();

    let mut mine = Vec::new();
    for (i, (req, key)) in batch.into_iter().zip(keys).enumerate() {
        // WITH ORDINALITY counts from 1.
        if present.contains(&(i + 1)) {
            outcome.taken += 1;
        } else if locked.contains(&key) {
            mine.push(req);
        } else {
            outcome.retry.push(req);
        }
    }
    if mine.is_empty() {
        tx.commit().await?;
        return Ok(outcome);
    }

    // Ahead of the tick: the rows that will simply run, uncommitted.
    let mut created = match insert_rows(&tx, &insert, node_id, &mine, &finished, gone, true).await {
        Ok((_, rows)) => rows,
        Err(e) if e.is_unique_violation() => return hand_back(tx, outcome, mine).await,
        Err(e) => return Err(e),
    };
    until_due.await;
    // The commit must come after the newest due instant written, on the
    // database clock.
    let due_of: HashMap<(&str, DateTime<Utc>), DateTime<Utc>> = mine
        .iter()
        .map(|r| ((r.schedule_name.as_str(), r.scheduled_at), r.due_at))
        .collect();
    let newest = created
        .iter()
        .map(|c| {
            due_of
                .get(&(c.schedule_name.as_str(), c.scheduled_at))
                .copied()
                .unwrap_or(c.scheduled_at)
        })
        .max();
    let mut db_now = began;
    if let Some(newest) = newest {
        let waited = std::time::Instant::now();
        loop {
            let row = tx.query_one(&due, &[&newest]).await?;
            db_now = row.try_get("db_now")?;
            if row.try_get::<_, bool>("due")? {
                break;
            }
            let wait = (newest - db_now).to_std().unwrap_or_default();
            if waited.elapsed() + wait > MAX_DUE_WAIT {
                // Our clock estimate is far off: give everything back.
                tx.rollback().await?;
                outcome.db_now = Some(db_now);
                outcome.retry.extend(mine);
                return Ok(outcome);
            }
            tokio::time::sleep((wait + std::time::Duration::from_millis(1)).min(DUE_RECHECK)).await;
        }
    }
    // The rest — judged now that they are due: late, coalesced, overlapping.
    let (written_early, rest): (Vec<ClaimRequest>, Vec<ClaimRequest>) = {
        let early: HashSet<(&str, DateTime<Utc>)> = created
            .iter()
            .map(|c| (c.schedule_name.as_str(), c.scheduled_at))
            .collect();
        mine.into_iter()
            .partition(|r| early.contains(&(r.schedule_name.as_str(), r.scheduled_at)))
    };
    if !rest.is_empty() {
        let (at, late) =
            match insert_rows(&tx, &insert, node_id, &rest, &finished, gone, false).await {
                Ok(written) => written,
                Err(e) if e.is_unique_violation() => {
                    let mut all = written_early;
                    all.extend(rest);
                    return hand_back(tx, outcome, all).await;
                }
                Err(e) => return Err(e),
            };
        db_now = at;
        let written: HashSet<(&str, DateTime<Utc>)> = late
            .iter()
            .map(|c| (c.schedule_name.as_str(), c.scheduled_at))
            .collect();
        for req in rest {
            if written.contains(&(req.schedule_name.as_str(), req.scheduled_at)) {
                continue;
            }
            if req.due_at > db_now {
                // Not yet due on the database clock (our estimate of it ran fast).
                outcome.retry.push(req);
            } else {
                // The unique key said no: another replica's row won.
                outcome.taken += 1;
            }
        }
        created.extend(late);
    }
    tx.commit().await?;
    outcome.claimed = created;
    outcome.db_now = Some(db_now);
    Ok(outcome)
}

/// A tick's row was being written by someone else (the missed-tick sweep,
/// a backfill) while the INSERT ran, which failed on the tick key: the
/// transaction is rolled back and every request handed back to retry; the
/// next claim finds that row and passes over its tick.
async fn hand_back(
    tx: deadpool_postgres::Transaction<'_>,
    mut outcome: ClaimOutcome,
    requests: Vec<ClaimRequest>,
) -> Result<ClaimOutcome, StoreError> {
    tx.rollback().await?;
    tracing::debug!(
        ticks = requests.len(),
        "a tick's row was written concurrently; the claim is retried"
    );
    outcome.retry.extend(requests);
    Ok(outcome)
}

/// Sets [`Claimed::after`] of the queued rows: per schedule, in tick order,
/// the `free` rows that start at once are followed by the queued ones, and
/// each queued row waits for the row `free` places before it — so at most
/// `free` of them run at a time.
fn chain_queued(created: &mut [Claimed], queued: &[bool]) {
    let is_queued = |i: usize| queued.get(i).copied().unwrap_or(false);
    let mut by_schedule: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in created.iter().enumerate() {
        if c.status == RunStatus::Running {
            by_schedule
                .entry(c.schedule_name.as_str())
                .or_default()
                .push(i);
        }
    }
    let mut after = Vec::new();
    for rows in by_schedule.values_mut() {
        rows.sort_by_key(|&i| created[i].scheduled_at);
        let free = rows.iter().filter(|&&i| !is_queued(i)).count().max(1);
        for (k, &i) in rows.iter().enumerate() {
            if k >= free && is_queued(i) {
                after.push((i, created[rows[k - free]].run_id));
            }
        }
    }
    for (i, run_id) in after {
        // It waits for the row of this claim, not for a run outside it.
        created[i].after = Some(run_id);
        created[i].waits_for = None;
    }
}

/// The ledger names the run a queued row waits for: for rows chained within
/// the claim, the INSERT could only name the newest run outside it.
const NAME_WAITS: &str = "UPDATE scheduler_runs r SET overlapped_run_id = w.after \
    FROM unnest($1::uuid[], $2::uuid[]) AS w(run_id, after) WHERE r.run_id = w.run_id";

/// Runs [`INSERT`] for `requests` (`early`: ahead of the tick, rows that
/// will run only); returns the database clock and the rows created.
async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    insert: &tokio_postgres::Statement,
    node_id: Uuid,
    requests: &[ClaimRequest],
    finished: &impl Fn(&[&str]) -> Vec<Uuid>,
    gone: &[Uuid],
    early: bool,
) -> Result<(DateTime<Utc>, Vec<Claimed>), StoreError> {
    let run_ids: Vec<Uuid> = requests
        .iter()
        .map(|r| super::run_ids::for_tick(r.scheduled_at))
        .collect();
    let schedule_names: Vec<&str> = requests.iter().map(|r| r.schedule_name.as_str()).collect();
    let finished = finished(&schedule_names);
    let pipelines: Vec<&str> = requests.iter().map(|r| r.pipeline.as_str()).collect();
    let ticks: Vec<DateTime<Utc>> = requests.iter().map(|r| r.scheduled_at).collect();
    let max_instances: Vec<i32> = requests
        .iter()
        .map(|r| i32::try_from(r.max_instances).unwrap_or(i32::MAX))
        .collect();
    let graces: Vec<i32> = requests
        .iter()
        .map(|r| i32::try_from(r.misfire_grace_secs).unwrap_or(i32::MAX))
        .collect();
    let coalesce: Vec<bool> = requests.iter().map(|r| r.coalesce).collect();
    let backlog: Vec<bool> = requests.iter().map(|r| r.backlog).collect();
    let next_at: Vec<Option<DateTime<Utc>>> = requests.iter().map(|r| r.next_at).collect();
    let policies: Vec<&str> = requests.iter().map(|r| r.overlap_policy.as_str()).collect();
    let due_at: Vec<DateTime<Utc>> = requests.iter().map(|r| r.due_at).collect();
    let claim_id = Uuid::now_v7();
    let row = tx
        .query_one(
            insert,
            &[
                &run_ids,
                &schedule_names,
                &pipelines,
                &ticks,
                &max_instances,
                &graces,
                &coalesce,
                &node_id,
                &backlog,
                &early,
                &finished,
                &gone,
                &next_at,
                &policies,
                &due_at,
                &claim_id,
            ],
        )
        .await?;
    let db_now: DateTime<Utc> = row.try_get("db_now")?;
    let ids: Vec<Uuid> = row.try_get("run_ids")?;
    let names: Vec<String> = row.try_get("schedule_names")?;
    let ticks: Vec<DateTime<Utc>> = row.try_get("ticks")?;
    let statuses: Vec<String> = row.try_get("statuses")?;
    let queued: Vec<bool> = row.try_get("queued")?;
    let waits_for: Vec<Option<Uuid>> = row.try_get("waits_for")?;
    let mut created = Vec::with_capacity(ids.len());
    for ((((run_id, schedule_name), scheduled_at), status), waits_for) in ids
        .into_iter()
        .zip(names)
        .zip(ticks)
        .zip(statuses)
        .zip(waits_for)
    {
        created.push(Claimed {
            run_id,
            schedule_name,
            scheduled_at,
            status: status.parse().map_err(|e: String| StoreError::Schema(e))?,
            after: None,
            waits_for,
            claim_id,
        });
    }
    chain_queued(&mut created, &queued);
    let (chained, after): (Vec<Uuid>, Vec<Uuid>) = created
        .iter()
        .filter_map(|c| c.after.map(|a| (c.run_id, a)))
        .unzip();
    if !chained.is_empty() {
        tx.execute(NAME_WAITS, &[&chained, &after]).await?;
    }
    Ok((db_now, created))
}
