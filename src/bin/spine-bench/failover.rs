//! `failover`: replicas fire every-second schedules, one of them is killed
//! with SIGKILL at a random instant, and the ledger shows what the survivors
//! made of the seconds after it: fire lag against a steady window of the same
//! run, late ticks, skipped/missed/doubled/abandoned ticks, how long until
//! the killed replica's share was fired on time again, and how long until a
//! new leader was recorded (when the leader was the one killed).
//!
//! Everything is on the database clock: the kill instant is the midpoint of
//! `SELECT now()` right before the kill and right after the process is gone.
//!
//! Timeline (defaults): replicas registered and a leader elected, 10 s
//! warm-up, the steady window (`--seconds`, 20 s), a random delay of 1–4 s
//! (random sub-second part included), the kill, the window after it
//! (`--seconds`), 3 s more so its last ticks can finish, then the audit.

use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chrono::{DateTime, TimeDelta, Utc};
use clap::ValueEnum;
use spine_scheduler::store;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::common::{bulk_schedules, ledger_baseline, pct, spawn_replicas, stop_replicas};
use crate::Args;

/// Which replica `failover` kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KillTarget {
    /// The replica recorded as leader (`scheduler_nodes.leader_since` set).
    Leader,
    /// One of the other replicas, at random.
    Follower,
    /// Any replica, at random.
    Random,
}

/// Warm-up after every replica registered and a leader was recorded: the
/// start-up transient (shares moving as members join) is over by then.
const WARM_UP: Duration = Duration::from_secs(10);
/// How long the replicas keep running after the window, so that the runs of
/// its last ticks (and the survivors' safety net, 1 s late) can finish.
const TAIL: Duration = Duration::from_secs(3);
/// A tick started later than this after its instant is "late".
const LATE_MS: i64 = 200;
/// How often the new-leader poller reads `scheduler_nodes`.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Runs the scenario on the (fresh) database at `url` and returns the report.
pub async fn run(args: &Args, url: &str) -> anyhow::Result<String> {
    let (n_replicas, schedules, seconds) =
        (args.replicas(3), args.schedules(1000), args.seconds(20));
    if n_replicas < 2 {
        bail!("failover needs at least 2 replicas (--replicas {n_replicas})");
    }
    if seconds < 2 {
        bail!("failover needs windows of at least 2 s (--seconds {seconds})");
    }
    let mut client = store::connect(url)
        .await
        .context("connecting to the benchmark database")?;
    store::migrate::migrate(&mut client)
        .await
        .context("migrating the benchmark database")?;
    // The baseline is not part of the figures' ratio, but it (and the
    // CHECKPOINT after it) leaves recycled WAL segments, so neither window
    // pays for creating new ones; and it tells how fast the machine was.
    let baseline = ledger_baseline(&client, args.baseline_rows)
        .await
        .context("measuring the ledger baseline")?;
    client
        .batch_execute("TRUNCATE scheduler_runs")
        .await
        .context("emptying the ledger after the baseline")?;
    bulk_schedules(&client, schedules, |_| "* * * * * *".to_string())
        .await
        .context("creating the schedules")?;

    let (mut children, dir) = spawn_replicas(url, n_replicas, &[])?;
    // Whatever happens in between, the survivors are stopped (the killed
    // one has already been reaped and removed from `children`).
    let measured = measure(&client, url, &mut children, n_replicas, seconds, args.kill).await;
    stop_replicas(&mut children, &dir);
    let m = measured?;

    let report = audit(&client, &m, schedules, seconds).await?;
    Ok(format_report(
        &m, &report, n_replicas, schedules, seconds, baseline,
    ))
}

/// The replica that was killed.
struct Victim {
    /// Its `bench-<i>` name (`scheduler_nodes.hostname`).
    hostname: String,
    node_id: Uuid,
    was_leader: bool,
}

/// One reading of the new-leader poller.
struct Sample {
    /// The database's `now()` of the reading.
    at: DateTime<Utc>,
    /// Another replica than the killed one is active and recorded as leader.
    other_leader: bool,
    /// The killed replica's `scheduler_nodes.state`.
    victim_state: Option<String>,
}

/// What the run itself (before the audit) recorded.
struct Measured {
    victim: Victim,
    /// Who led right before the kill.
    leader_before: Option<String>,
    /// The kill on the database clock (midpoint of the two readings).
    kill_at: DateTime<Utc>,
    /// Between the two readings around the kill: the kill instant's uncertainty.
    kill_span: TimeDelta,
    /// The poller's readings from right before the kill to the window's end.
    samples: Vec<Sample>,
    /// Who was recorded as leader at the end of the window, and since when.
    leader_after: Option<(String, DateTime<Utc>)>,
}

/// Waits for the cluster to settle, measures the steady window, kills one
/// replica and watches the window after it. Removes the killed replica from
/// `children` once it has been reaped (its PID may be reused after that).
async fn measure(
    client: &Client,
    url: &str,
    children: &mut Vec<Child>,
    n_replicas: usize,
    seconds: u64,
    target: KillTarget,
) -> anyhow::Result<Measured> {
    wait_for_cluster(client, n_replicas).await?;
    // The steady window needs `seconds` whole ticks after the warm-up and
    // before the second of the kill: hence the extra second. The random
    // delay (microseconds, up to 3 s) puts the kill anywhere in the tick
    // cycle: just before a tick, while it is being claimed, or in between.
    let random = random_u64();
    let delay = Duration::from_micros(random % 3_000_000);
    tokio::time::sleep(WARM_UP + Duration::from_secs(seconds + 1) + delay).await;

    let nodes = client
        .query(
            "SELECT hostname, node_id, leader_since IS NOT NULL FROM scheduler_nodes
             WHERE state = 'active' ORDER BY hostname",
            &[],
        )
        .await
        .context("reading the replicas before the kill")?;
    let nodes: Vec<(String, Uuid, bool)> = nodes
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let leader_before = nodes.iter().find(|n| n.2).map(|n| n.0.clone());
    // Another draw than the delay's, so the choice does not follow it.
    let pick = random_u64() as usize;
    let candidates: Vec<&(String, Uuid, bool)> = match target {
        KillTarget::Leader => nodes.iter().filter(|n| n.2).collect(),
        KillTarget::Follower => nodes.iter().filter(|n| !n.2).collect(),
        KillTarget::Random => nodes.iter().collect(),
    };
    if candidates.is_empty() {
        bail!("no {target:?} replica to kill among the active ones: {nodes:?}");
    }
    let (hostname, node_id, was_leader) = candidates[pick % candidates.len()].clone();
    // spawn_replicas names replica i `bench-<i>`.
    let index: usize = hostname
        .strip_prefix("bench-")
        .and_then(|i| i.parse().ok())
        .filter(|&i| i < children.len())
        .with_context(|| format!("replica {hostname:?} is not one this run started"))?;

    // The poller has its own connection, opened now so the kill is not
    // followed by a connection set-up, and polls from before the kill.
    let poller_client = store::connect(url)
        .await
        .context("connecting the new-leader poller")?;
    let poll_until = Instant::now() + Duration::from_secs(seconds) + Duration::from_millis(500);
    let poller = tokio::spawn(poll_nodes(poller_client, node_id, poll_until));

    let before = db_now(client)
        .await
        .context("reading now() before the kill")?;
    let child = &mut children[index];
    // Child::kill is SIGKILL on Unix, sent to this PID only.
    child
        .kill()
        .with_context(|| format!("kill -9 of {hostname} (pid {})", child.id()))?;
    let killed_wall = Instant::now();
    child
        .wait()
        .with_context(|| format!("waiting for {hostname} to exit"))?;
    // Reaped: its PID is free for reuse, so stop_replicas must not signal it.
    drop(children.remove(index));
    let after = db_now(client)
        .await
        .context("reading now() after the kill")?;
    let kill_span = after - before;
    let kill_at = before + kill_span / 2;

    tokio::time::sleep_until(killed_wall + Duration::from_secs(seconds) + TAIL).await;
    let samples = poller
        .await
        .context("the new-leader poller panicked")?
        .context("the new-leader poller failed")?;
    // Read before the replicas stop: a stopping leader clears its record.
    let leader_after = client
        .query_opt(
            "SELECT hostname, leader_since FROM scheduler_nodes
             WHERE leader_since IS NOT NULL AND state = 'active'",
            &[],
        )
        .await
        .context("reading the leader after the window")?
        .map(|r| (r.get(0), r.get(1)));
    Ok(Measured {
        victim: Victim {
            hostname,
            node_id,
            was_leader,
        },
        leader_before,
        kill_at,
        kill_span,
        samples,
        leader_after,
    })
}

/// Polls `scheduler_nodes` every [`POLL_EVERY`] until `until`: is another
/// replica than `victim` active and recorded as leader, and what state does
/// the victim's row show.
async fn poll_nodes(client: Client, victim: Uuid, until: Instant) -> anyhow::Result<Vec<Sample>> {
    let statement = client
        .prepare(
            "SELECT now(),
                    EXISTS (SELECT 1 FROM scheduler_nodes
                            WHERE node_id <> $1 AND leader_since IS NOT NULL AND state = 'active'),
                    (SELECT state FROM scheduler_nodes WHERE node_id = $1)",
        )
        .await
        .context("preparing the poll")?;
    let mut every = tokio::time::interval(POLL_EVERY);
    // After a slow reading, keep 10 ms between readings rather than bursting.
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    while Instant::now() < until {
        every.tick().await;
        let row = client
            .query_one(&statement, &[&victim])
            .await
            .context("polling scheduler_nodes")?;
        samples.push(Sample {
            at: row.get(0),
            other_leader: row.get(1),
            victim_state: row.get(2),
        });
    }
    Ok(samples)
}

/// Waits (up to 60 s) until `n` replicas are registered as active and one
/// of them is recorded as leader, so `--kill leader|follower` can choose.
async fn wait_for_cluster(client: &Client, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE leader_since IS NOT NULL)
                 FROM scheduler_nodes WHERE state = 'active'",
                &[],
            )
            .await
            .context("waiting for the replicas to register")?;
        let (active, leaders): (i64, i64) = (row.get(0), row.get(1));
        if active >= n as i64 && leaders == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("within 60 s only {active} of {n} replicas registered, {leaders} recorded as leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn db_now(client: &Client) -> anyhow::Result<DateTime<Utc>> {
    Ok(client.query_one("SELECT now()", &[]).await?.get(0))
}

/// 64 random-enough bits without a new crate: the random part of a UUIDv7
/// mixed with the clock's nanoseconds (splitmix64's finaliser).
fn random_u64() -> u64 {
    let id = Uuid::now_v7();
    let bytes = id.as_bytes();
    let mut x = u64::from_le_bytes(std::array::from_fn(|i| bytes[8 + i]));
    x ^= SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The ledger's figures for the ticks of one window.
struct WindowFigures {
    /// First and last tick instant.
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    due: i64,
    rows: i64,
    /// Ticks with at least one row.
    ticks_with_row: i64,
    completed: i64,
    skipped: i64,
    missed_rows: i64,
    abandoned: i64,
    /// Rows in any other state (still running, failed, ...), by status.
    other: Vec<(String, i64)>,
    /// Ticks with more than one first-attempt scheduled row.
    doubled: i64,
    /// Fire lag of every started run, sorted (ms).
    lags: Vec<f64>,
    /// Runs started more than [`LATE_MS`] after their tick.
    late: i64,
    /// Schedules with at least one late run, and the most late runs of one.
    late_schedules: i64,
    late_max_per_schedule: i64,
}

impl WindowFigures {
    /// Due ticks that were not fired: no row at all, or recorded `missed`.
    fn missed(&self) -> i64 {
        (self.due - self.ticks_with_row) + self.missed_rows
    }
}

/// What the audit found, beyond the two windows.
struct Audit {
    steady: WindowFigures,
    after: WindowFigures,
    /// `abandoned` rows anywhere in the ledger (only a kill abandons runs).
    abandoned_total: i64,
    /// Schedules the killed replica had fired right before the kill.
    victim_share: i64,
    /// Per tick instant after the kill: of those, how many a survivor
    /// fired within [`LATE_MS`].
    on_time: Vec<(DateTime<Utc>, i64)>,
    /// Rows of the window after the kill, by replica.
    by_node: String,
}

async fn audit(
    client: &Client,
    m: &Measured,
    schedules: usize,
    seconds: u64,
) -> anyhow::Result<Audit> {
    let n = seconds as i64;
    // The window after the kill starts at the tick of the second in which
    // the kill fell: a tick due just before the kill that the killed
    // replica had not committed yet is fired late by a survivor, and
    // belongs to the kill's effects. The steady window is the `seconds`
    // ticks before that, all of them over before the kill.
    let k = m.kill_at.timestamp();
    let at = |s: i64| DateTime::from_timestamp(s, 0).context("tick instant out of range");
    let steady = window(client, at(k - n)?, at(k - 1)?, n * schedules as i64).await?;
    let after = window(client, at(k)?, at(k + n - 1)?, n * schedules as i64).await?;

    let abandoned_total: i64 = client
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE status = 'abandoned'",
            &[],
        )
        .await
        .context("counting abandoned runs")?
        .get(0);

    // The killed replica's share: the schedules of the rows it wrote for
    // the two ticks before the kill's second (two, so one tick it happened
    // to lose a race for does not drop a schedule).
    let share_from = at(k - 2)?;
    let share_to = at(k - 1)?;
    let victim_share: i64 = client
        .query_one(
            "SELECT count(DISTINCT schedule_name) FROM scheduler_runs
             WHERE node_id = $1 AND trigger = 'schedule' AND scheduled_at BETWEEN $2 AND $3",
            &[&m.victim.node_id, &share_from, &share_to],
        )
        .await
        .context("reading the killed replica's share")?
        .get(0);
    // Tick instants strictly after the kill, through the window's end.
    let first_after = at(k + 1)?;
    let on_time = client
        .query(
            "WITH share AS (
                 SELECT DISTINCT schedule_name FROM scheduler_runs
                 WHERE node_id = $1 AND trigger = 'schedule' AND scheduled_at BETWEEN $2 AND $3)
             SELECT i.t, count(DISTINCT r.schedule_name)
             FROM generate_series($4::timestamptz, $5::timestamptz, interval '1 second') AS i(t)
             LEFT JOIN scheduler_runs r
               ON r.scheduled_at = i.t AND r.trigger = 'schedule' AND r.attempt = 1
              AND r.node_id <> $1 AND r.started_at <= r.scheduled_at + make_interval(secs => $6)
              AND r.schedule_name IN (SELECT schedule_name FROM share)
             GROUP BY i.t ORDER BY i.t",
            &[
                &m.victim.node_id,
                &share_from,
                &share_to,
                &first_after,
                &after.to,
                &late_secs(),
            ],
        )
        .await
        .context("checking the killed replica's share tick by tick")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let by_node = client
        .query(
            "SELECT coalesce(n.hostname, '?'), count(*)
             FROM scheduler_runs r LEFT JOIN scheduler_nodes n USING (node_id)
             WHERE r.scheduled_at BETWEEN $1 AND $2 AND r.trigger = 'schedule'
             GROUP BY 1 ORDER BY 1",
            &[&after.from, &after.to],
        )
        .await
        .context("counting rows by replica")?
        .iter()
        .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Audit {
        steady,
        after,
        abandoned_total,
        victim_share,
        on_time,
        by_node,
    })
}

/// [`LATE_MS`] in seconds, for `make_interval(secs => ...)`.
fn late_secs() -> f64 {
    LATE_MS as f64 / 1000.0
}

/// Figures for the scheduled ticks due from `from` through `to`.
async fn window(
    client: &Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    due: i64,
) -> anyhow::Result<WindowFigures> {
    let ticks = client
        .query_one(
            "WITH t AS (
                 SELECT schedule_name, scheduled_at, count(*) AS rows,
                        count(*) FILTER (WHERE attempt = 1) AS first_attempts
                 FROM scheduler_runs
                 WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule'
                 GROUP BY 1, 2)
             SELECT count(*), coalesce(sum(rows), 0)::int8,
                    count(*) FILTER (WHERE first_attempts > 1)
             FROM t",
            &[&from, &to],
        )
        .await
        .context("auditing ticks")?;
    let by_status: Vec<(String, i64)> = client
        .query(
            "SELECT status, count(*) FROM scheduler_runs
             WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule'
             GROUP BY 1 ORDER BY 1",
            &[&from, &to],
        )
        .await
        .context("counting rows by status")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let status = |s: &str| {
        by_status
            .iter()
            .find(|(name, _)| name == s)
            .map_or(0, |(_, n)| *n)
    };
    let lags: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM started_at - scheduled_at)::float8 * 1000
             FROM scheduler_runs
             WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule' AND started_at IS NOT NULL
             ORDER BY 1",
            &[&from, &to],
        )
        .await
        .context("reading fire lags")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let late = client
        .query_one(
            "SELECT coalesce(sum(n), 0)::int8, count(*), coalesce(max(n), 0)
             FROM (SELECT schedule_name, count(*) AS n FROM scheduler_runs
                   WHERE scheduled_at BETWEEN $1 AND $2 AND trigger = 'schedule'
                     AND started_at > scheduled_at + make_interval(secs => $3)
                   GROUP BY 1) s",
            &[&from, &to, &late_secs()],
        )
        .await
        .context("counting late ticks")?;
    Ok(WindowFigures {
        from,
        to,
        due,
        ticks_with_row: ticks.get(0),
        rows: ticks.get(1),
        doubled: ticks.get(2),
        completed: status("completed"),
        skipped: status("skipped"),
        missed_rows: status("missed"),
        abandoned: status("abandoned"),
        other: by_status
            .iter()
            .filter(|(s, _)| !["completed", "skipped", "missed", "abandoned"].contains(&s.as_str()))
            .cloned()
            .collect(),
        lags,
        late: late.get(0),
        late_schedules: late.get(1),
        late_max_per_schedule: late.get(2),
    })
}

fn ms(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn format_report(
    m: &Measured,
    a: &Audit,
    n_replicas: usize,
    schedules: usize,
    seconds: u64,
    baseline: f64,
) -> String {
    let (s, f) = (&a.steady, &a.after);
    let role = if m.victim.was_leader {
        "leader"
    } else {
        "follower"
    };
    let mut out = format!(
        "scenario failover: {n_replicas} replicas x {schedules} schedules every second; \
         kill -9 of {} ({role}) at {} (db clock, +/- {:.1} ms)\n",
        m.victim.hostname,
        m.kill_at.format("%H:%M:%S%.3f"),
        ms(m.kill_span) / 2.0
    );
    out.push_str(&format!(
        "command: {}\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    ));
    let hms = |t: DateTime<Utc>| t.format("%H:%M:%S").to_string();
    let row = |label: &str, steady: String, after: String| {
        format!("{label:<44}{steady:>22}{after:>24}\n")
    };
    out.push_str(&row(
        "",
        format!("steady ({seconds} s before)"),
        format!("after the kill ({seconds} s)"),
    ));
    out.push_str(&row(
        "ticks (first - last instant)",
        format!("{}-{}", hms(s.from), hms(s.to)),
        format!("{}-{}", hms(f.from), hms(f.to)),
    ));
    let both = |label: &str, get: &dyn Fn(&WindowFigures) -> String| row(label, get(s), get(f));
    out.push_str(&both("ticks due", &|w| w.due.to_string()));
    out.push_str(&both("rows", &|w| w.rows.to_string()));
    out.push_str(&both("completed", &|w| w.completed.to_string()));
    out.push_str(&both("skipped", &|w| w.skipped.to_string()));
    out.push_str(&both("missed (no row + recorded missed)", &|w| {
        format!(
            "{} ({} + {})",
            w.missed(),
            w.due - w.ticks_with_row,
            w.missed_rows
        )
    }));
    out.push_str(&both("doubled (ticks with >1 first-attempt row)", &|w| {
        w.doubled.to_string()
    }));
    out.push_str(&both("abandoned", &|w| w.abandoned.to_string()));
    if !s.other.is_empty() || !f.other.is_empty() {
        let other = |w: &WindowFigures| {
            w.other
                .iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&both("other rows, by status", &other));
    }
    out.push_str(&both("fire lag p50 ms (started - tick)", &|w| {
        format!("{:.1}", pct(&w.lags, 0.50))
    }));
    out.push_str(&both("fire lag p99 ms", &|w| {
        format!("{:.1}", pct(&w.lags, 0.99))
    }));
    out.push_str(&both("fire lag max ms", &|w| {
        format!("{:.1}", w.lags.last().copied().unwrap_or(f64::NAN))
    }));
    out.push_str(&both(&format!("ticks started > {LATE_MS} ms late"), &|w| {
        w.late.to_string()
    }));
    out.push_str(&both("  schedules with one / most per schedule", &|w| {
        format!("{} / {}", w.late_schedules, w.late_max_per_schedule)
    }));
    let line = |label: &str, value: String| format!("{label:<44}{value}\n");
    out.push_str(&line(
        "p99 after / steady p99 (same run)",
        format!("{:.1}x", pct(&f.lags, 0.99) / pct(&s.lags, 0.99)),
    ));

    // Shares in place: the first tick instant after the kill at which the
    // survivors fired every schedule of the killed replica's share on time.
    let first_complete = a
        .on_time
        .iter()
        .position(|(_, n)| *n >= a.victim_share && a.victim_share > 0);
    out.push_str(&line(
        "shares in place (kill -> all on time again)",
        match first_complete {
            Some(i) => {
                let (t, _) = a.on_time[i];
                // Instants after it at which the share was not all on time:
                // a stall later in the window, not the takeover.
                let relapses = a.on_time[i..]
                    .iter()
                    .filter(|(_, n)| *n < a.victim_share)
                    .count();
                format!(
                    "{:.0} ms (tick {}, {} schedules of {}){}",
                    ms(t - m.kill_at),
                    hms(t),
                    a.victim_share,
                    m.victim.hostname,
                    if relapses > 0 {
                        format!("; {relapses} later tick(s) not all on time")
                    } else {
                        String::new()
                    }
                )
            }
            None => format!(
                "not within the window ({} of {} on time at its last tick)",
                a.on_time.last().map_or(0, |(_, n)| *n),
                a.victim_share
            ),
        },
    ));
    out.push_str(&line(
        "  share on time, per tick after the kill",
        a.on_time
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    ));

    let after_kill = m.samples.iter().filter(|p| p.at >= m.kill_at);
    let new_leader = if m.victim.was_leader {
        let polled = after_kill
            .clone()
            .find(|p| p.other_leader)
            .map(|p| ms(p.at - m.kill_at));
        match (polled, &m.leader_after) {
            (Some(ms_polled), Some((host, since))) => format!(
                "{host} after {ms_polled:.0} ms (polled every {} ms; its leader_since is kill + {:.0} ms)",
                POLL_EVERY.as_millis(),
                ms(*since - m.kill_at)
            ),
            (Some(ms_polled), None) => format!(
                "after {ms_polled:.0} ms (polled), but no leader recorded at the window's end"
            ),
            (None, _) => format!("none within {seconds} s"),
        }
    } else {
        format!(
            "the leader was not killed ({} led before, {} after)",
            m.leader_before.as_deref().unwrap_or("none"),
            m.leader_after
                .as_ref()
                .map_or("none", |(host, _)| host.as_str())
        )
    };
    out.push_str(&line("new leader", new_leader));
    out.push_str(&line(
        "killed replica's row no longer 'active'",
        match after_kill
            .clone()
            .find(|p| p.victim_state.as_deref() != Some("active"))
        {
            Some(p) => format!(
                "after {:.0} ms ({})",
                ms(p.at - m.kill_at),
                p.victim_state.as_deref().unwrap_or("row gone")
            ),
            None => format!("still 'active' {seconds} s after the kill"),
        },
    ));
    out.push_str(&line(
        "abandoned runs, whole ledger",
        a.abandoned_total.to_string(),
    ));
    out.push_str(&line("rows after the kill, by replica", a.by_node.clone()));
    out.push_str(&line(
        "ledger baseline",
        format!("{baseline:.0} rows/s (insert+complete, batches of 1000, one client)"),
    ));
    // main prints the load average after the report; no trailing newline.
    out.pop();
    out
}
