//! `floor`: every schedule fires every second into a pipeline that writes one
//! row per run, as a real job records its work, against a floor measured in
//! the same run by a client that writes the same rows at each whole second
//! with no scheduler at all.
//!
//! Both phases go through the same code from the request on: the real `http`
//! pipeline (`HttpPipeline`, one `reqwest` client per sender as each replica
//! has) POSTs the run's JSON body to a receiver this program runs on
//! 127.0.0.1 (axum), which INSERTs one row per request into `bench_work`
//! through one deadpool pool ([`insert_work`]) and answers 204. In the
//! scheduler phase the senders are the replicas (separate processes of the
//! real binary, claiming through the ledger); in the floor phase they are
//! `--replicas` tasks of this program that build the same run context at
//! each whole second and call the same pipeline. So the only difference is
//! the scheduler: its claims, ledger writes, executor and processes.
//!
//! The lag of a work row is `written_at − tick` (the receiver's
//! `clock_timestamp()` against the whole second the row stands for, taken
//! from the request body's `scheduled_at`); it splits into delivery
//! (`received_at − tick`, the receiver's clock when the request was
//! parsed), pool wait (`pooled_at − received_at`, until the pool hands out
//! a connection) and insert (`written_at − pooled_at`: the round trip to
//! the server up to the row's `clock_timestamp()`; a connection is handed
//! out again only after its previous INSERT's commit).
//! Everything runs on one host, so the database, the receiver and the
//! replicas read the same clock.
//!
//! Order: ledger baseline and `CHECKPOINT` (as `steady`: the windows run on
//! recycled WAL segments), floor, scheduler, floor again; the ratio is the
//! scheduler's work-lag p99 over the mean of the two floors' p99s, since on
//! this shared machine a floor moves by tens of percent within minutes.
//!
//! `SPINE_BENCH_RECEIVER_POOL` sets the receiver's pool size (default 16).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Deserialize;
use spine_scheduler::pipeline::http::{build_client, HttpConfig, HttpPipeline};
use spine_scheduler::pipeline::{CancelSignal, Pipeline, RunContext};
use spine_scheduler::store;
use spine_scheduler::types::RunTrigger;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::common::{
    bulk_schedules, ledger_baseline, loadavg, pct, proc_usage, replica_command, statement_calls,
    stop_replicas, tick_audit,
};
use crate::steady::{statements_available, wait_for_replicas};
use crate::Args;

/// The work table: one row per run, as a real job would record its work.
/// No index: the job's own write is one heap insert and its commit.
const WORK_TABLE: &str = "CREATE TABLE bench_work (
    schedule_name text NOT NULL,
    tick timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    pooled_at timestamptz NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// The pipeline name `bulk_schedules` gives every schedule.
const PIPELINE: &str = "bench.record";

/// Seconds fired before a window counts: connections are opened, pools
/// filled and statements prepared in the first seconds.
const WARM_UP: u64 = 5;

/// The receiver's accept queue (see [`Receiver::start`]).
const ACCEPT_BACKLOG: u32 = 8192;

/// Default size of the receiver's database pool.
const DEFAULT_RECEIVER_POOL: usize = 16;

/// Writes the work row of one run: one INSERT, committed on its own.
/// Both phases call exactly this, from the receiver's handler.
pub async fn insert_work(
    pool: &Pool,
    schedule: &str,
    tick: DateTime<Utc>,
    received_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let conn = pool.get().await?;
    // When the pool handed out a connection: splits the pool's queue from
    // the statement itself in the report.
    let pooled_at = Utc::now();
    let stmt = conn
        .prepare_cached(
            "INSERT INTO bench_work (schedule_name, tick, received_at, pooled_at)
             VALUES ($1, $2, $3, $4)",
        )
        .await?;
    conn.execute(&stmt, &[&schedule, &tick, &received_at, &pooled_at])
        .await?;
    Ok(())
}

/// The part of the `http` pipeline's body the receiver needs.
#[derive(Deserialize)]
struct WorkRequest {
    schedule: String,
    scheduled_at: DateTime<Utc>,
}

/// What the receiver's handler shares.
#[derive(Clone)]
struct ReceiverState {
    pool: Pool,
    errors: Arc<AtomicU64>,
}

/// `POST /work`: one work row per request, 204 once it is committed.
/// `received_at` is read once the body is parsed, before the pool is asked.
async fn ingest(State(state): State<ReceiverState>, Json(work): Json<WorkRequest>) -> StatusCode {
    let received_at = Utc::now();
    match insert_work(&state.pool, &work.schedule, work.scheduled_at, received_at).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(e) => {
            // Only the first one is printed: a failing database would
            // otherwise print thousands of lines a second.
            if state.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("spine-bench: receiver insert failed: {e:#}");
            }
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The HTTP receiver on 127.0.0.1: `POST /work` writes one work row.
struct Receiver {
    /// `http://127.0.0.1:<port>/work`.
    url: String,
    /// Requests answered 500 (the INSERT failed), since the start.
    errors: Arc<AtomicU64>,
    /// Ends the server's graceful shutdown wait.
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1 and serves from a spawned task.
    async fn start(pool: Pool) -> anyhow::Result<Receiver> {
        let errors = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/work", post(ingest))
            .with_state(ReceiverState {
                pool,
                errors: Arc::clone(&errors),
            });
        // A deep accept queue: at the first tick every sender opens one
        // connection per run at once (5,000), and connections the queue
        // drops are retried by the kernel after 1, 3, 7 … s, which would
        // stall the warm-up for half a minute (the kernel caps it at
        // net.core.somaxconn; tokio's `bind` asks for 1,024).
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(ACCEPT_BACKLOG)?;
        let url = format!("http://{}/work", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("spine-bench: receiver stopped: {e}");
            }
        });
        Ok(Receiver {
            url,
            errors,
            stop: Some(stop),
            task,
        })
    }

    /// Stops serving (at most 2 s for open connections to close).
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Idle keep-alive connections would hold a graceful shutdown open.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Machine-wide CPU jiffies from `/proc/stat`: (busy, steal, total).
fn machine_cpu() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = (0..8).map(get).sum();
    let idle = get(3) + get(4);
    (total.saturating_sub(idle), get(7), total)
}

/// CPU seconds of each process of the private cluster (the postmaster,
/// named by `postmaster.pid`, and its children), by pid. Empty without one.
fn server_cpu(data_dir: Option<&Path>) -> HashMap<u32, f64> {
    let Some(postmaster) = data_dir
        .and_then(|d| std::fs::read_to_string(d.join("postmaster.pid")).ok())
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return HashMap::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            pid == postmaster || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // The parent pid is the second field after the command name.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok())
                    == Some(postmaster)
            }
        })
        .map(|pid| (pid, proc_usage(pid).0))
        .collect()
}

/// CPU use over a window: the machine's busy and steal shares, this
/// process's CPU seconds (receiver, and the floor's senders), the replicas',
/// and the private cluster's (backends that ended inside the window are
/// not counted; the pools keep theirs open).
#[derive(Default)]
struct Cpu {
    busy_pct: f64,
    steal_pct: f64,
    bench_s: f64,
    replicas_s: f64,
    server_s: f64,
}

/// A CPU reading to take a [`Cpu`] difference from.
struct CpuMark<'a> {
    machine: (u64, u64, u64),
    bench: f64,
    data_dir: Option<&'a Path>,
    server: HashMap<u32, f64>,
}

impl<'a> CpuMark<'a> {
    fn now(data_dir: Option<&'a Path>) -> CpuMark<'a> {
        CpuMark {
            machine: machine_cpu(),
            bench: proc_usage(std::process::id()).0,
            data_dir,
            server: server_cpu(data_dir),
        }
    }

    fn since(&self, replicas_s: f64) -> Cpu {
        let (busy, steal, total) = machine_cpu();
        let dt = total.saturating_sub(self.machine.2).max(1) as f64;
        Cpu {
            busy_pct: 100.0 * busy.saturating_sub(self.machine.0) as f64 / dt,
            steal_pct: 100.0 * steal.saturating_sub(self.machine.1) as f64 / dt,
            bench_s: proc_usage(std::process::id()).0 - self.bench,
            replicas_s,
            server_s: server_cpu(self.data_dir)
                .iter()
                .map(|(pid, s)| s - self.server.get(pid).copied().unwrap_or(0.0))
                .sum(),
        }
    }
}

/// The work rows of one phase's audited ticks.
struct Work {
    /// Ticks audited (whole seconds) and schedule-ticks due in them.
    seconds: i64,
    /// Length of the window the statements and CPU were read over (s).
    window_s: f64,
    due: i64,
    /// Work rows whose tick is audited.
    rows: i64,
    /// Schedule-ticks with exactly one row, with more than one, with none.
    once: i64,
    doubled: i64,
    missing: i64,
    /// written_at − tick, received_at − tick, pooled_at − received_at,
    /// written_at − pooled_at (ms), sorted.
    lag: Vec<f64>,
    delivery: Vec<f64>,
    pool_wait: Vec<f64>,
    insert: Vec<f64>,
    /// The slowest ticks: tick, rows, p50 and max lag (ms).
    slowest: Vec<(String, i64, f64, f64)>,
    /// Each audited tick's p99 lag (ms), in tick order: a steady state
    /// looks flat, a collapse climbs.
    per_second_p99: Vec<f64>,
    /// Statements of the window (calls, mean ms), with pg_stat_statements.
    statements: Vec<(String, i64, f64)>,
    cpu: Cpu,
    /// Requests that failed: receiver errors, and (floor) pipeline failures.
    receiver_errors: u64,
    sender_errors: u64,
    /// (floor) Ticks not sent: the schedule's previous request in flight.
    skipped: u64,
}

/// Reads the work rows whose tick lies in `[lo, hi]`.
async fn audit_work(
    client: &Client,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
    schedules: usize,
) -> anyhow::Result<Work> {
    let seconds = (hi - lo).num_seconds() + 1;
    let due = seconds * schedules as i64;
    let counts = client
        .query_one(
            "WITH t AS (SELECT schedule_name, tick, count(*) AS n FROM bench_work
                        WHERE tick BETWEEN $1 AND $2 GROUP BY 1, 2)
             SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1),
                    count(*), coalesce(sum(n), 0)::bigint
             FROM t",
            &[&lo, &hi],
        )
        .await?;
    let present: i64 = counts.get(2);
    let rows = client
        .query(
            "SELECT extract(epoch FROM written_at - tick)::float8 * 1000,
                    extract(epoch FROM received_at - tick)::float8 * 1000,
                    extract(epoch FROM pooled_at - received_at)::float8 * 1000,
                    extract(epoch FROM written_at - pooled_at)::float8 * 1000
             FROM bench_work WHERE tick BETWEEN $1 AND $2",
            &[&lo, &hi],
        )
        .await?;
    let column = |i: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r.get(i)).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let slowest = client
        .query(
            "SELECT to_char(tick, 'HH24:MI:SS'), count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - tick))::float8 * 1000,
                    max(extract(epoch FROM written_at - tick))::float8 * 1000 AS worst
             FROM bench_work WHERE tick BETWEEN $1 AND $2
             GROUP BY tick ORDER BY worst DESC LIMIT 3",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let per_second_p99 = client
        .query(
            "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - tick))::float8 * 1000
             FROM bench_work WHERE tick BETWEEN $1 AND $2 GROUP BY tick ORDER BY tick",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Work {
        per_second_p99,
        seconds,
        window_s: seconds as f64,
        due,
        rows: counts.get(3),
        once: counts.get(0),
        doubled: counts.get(1),
        missing: due - present,
        lag: column(0),
        delivery: column(1),
        pool_wait: column(2),
        insert: column(3),
        slowest,
        statements: Vec::new(),
        cpu: Cpu::default(),
        receiver_errors: 0,
        sender_errors: 0,
        skipped: 0,
    })
}

/// The next whole second after `t`.
fn next_whole_second(t: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp(t.timestamp() + 1, 0).context("next second")
}

/// Sleeps until `at` on the system clock (the database's, on this host).
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(d) = (at - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

/// What one floor sender did.
struct Sent {
    failed: u64,
    /// Ticks not sent because the schedule's previous request was still in
    /// flight (what `max_instances = 1` records `skipped`).
    skipped: u64,
    first_error: Option<String>,
}

/// One floor sender: at each of `ticks` whole seconds from `first`, starts
/// the run of each of its schedules through `pipeline`, as a replica's
/// executor does once a claim is won — unless that schedule's previous run
/// is still in flight, which the scheduler's default overlap rule
/// (`max_instances = 1`, skip) would not start either. That also bounds
/// the connections this process opens: one per schedule.
async fn floor_sender(
    pipeline: HttpPipeline,
    names: Vec<String>,
    first: DateTime<Utc>,
    ticks: i64,
) -> Sent {
    let names: Vec<(String, Arc<AtomicBool>)> = names
        .into_iter()
        .map(|n| (n, Arc::new(AtomicBool::new(false))))
        .collect();
    let mut runs = JoinSet::new();
    let (mut failed, mut skipped, mut first_error) = (0u64, 0u64, None);
    let mut tally =
        |r: Result<spine_scheduler::pipeline::PipelineOutcome, tokio::task::JoinError>| match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.message);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        };
    for k in 0..ticks {
        let tick = first + chrono::Duration::seconds(k);
        sleep_until(tick).await;
        for (name, in_flight) in &names {
            if in_flight.swap(true, Ordering::AcqRel) {
                skipped += 1;
                continue;
            }
            let run = pipeline.run(RunContext {
                run_id: uuid::Uuid::now_v7(),
                schedule: name.clone(),
                pipeline: PIPELINE.to_string(),
                scheduled_at: tick,
                attempt: 1,
                trigger: RunTrigger::Schedule,
                params: serde_json::Map::new(),
                cancel: CancelSignal::never(),
            });
            let in_flight = Arc::clone(in_flight);
            runs.spawn(async move {
                let outcome = run.await;
                in_flight.store(false, Ordering::Release);
                outcome
            });
        }
        while let Some(r) = runs.try_join_next() {
            tally(r);
        }
    }
    while let Some(r) = runs.join_next().await {
        tally(r);
    }
    Sent {
        failed,
        skipped,
        first_error,
    }
}

/// What both phases run against.
struct Setup<'a> {
    /// The benchmark's own session (audits, statement statistics).
    client: &'a Client,
    /// The benchmark database.
    url: &'a str,
    receiver: &'a Receiver,
    /// Replicas in the scheduler phase, senders in the floor.
    replicas: usize,
    schedules: usize,
    /// Measured seconds per phase.
    seconds: u64,
    /// Whether pg_stat_statements is there.
    statements: bool,
    /// The private cluster's data directory, if any.
    data_dir: Option<&'a Path>,
}

/// The floor: `replicas` sender tasks share the schedules (one `reqwest`
/// client each, as each replica has one) and write `schedules` rows at
/// every whole second through the receiver; the `seconds` after a warm-up
/// are audited.
async fn floor_phase(setup: &Setup<'_>) -> anyhow::Result<Work> {
    let &Setup {
        client,
        receiver,
        replicas: senders,
        schedules,
        seconds,
        statements,
        data_dir,
        ..
    } = setup;
    let first = next_whole_second(Utc::now() + chrono::Duration::milliseconds(200))?;
    let ticks = (WARM_UP + seconds) as i64;
    let mut tasks = JoinSet::new();
    for s in 0..senders {
        let pipeline = HttpPipeline::new(HttpConfig::new(receiver.url.clone()), build_client()?)
            .map_err(|e| anyhow!("the floor's http pipeline: {e}"))?;
        let names: Vec<String> = (s..schedules)
            .step_by(senders)
            .map(|i| format!("bench{i:06}"))
            .collect();
        tasks.spawn(floor_sender(pipeline, names, first, ticks));
    }
    let lo = first + chrono::Duration::seconds(WARM_UP as i64);
    let hi = first + chrono::Duration::seconds(ticks - 1);
    // The window's statements and CPU: from just before its first tick to
    // just after its last one.
    sleep_until(lo - chrono::Duration::milliseconds(300)).await;
    if statements {
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
    }
    let errors_before = receiver.errors.load(Ordering::Relaxed);
    let mark = CpuMark::now(data_dir);
    let wall = Instant::now();
    sleep_until(hi + chrono::Duration::milliseconds(900)).await;
    let cpu = mark.since(0.0);
    let window_s = wall.elapsed().as_secs_f64();
    let (mut sender_errors, mut skipped) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let sent = done?;
        sender_errors += sent.failed;
        skipped += sent.skipped;
        if let Some(e) = sent.first_error {
            eprintln!("spine-bench: a floor run failed: {e}");
        }
    }
    let per_statement = if statements {
        statement_calls(client).await?
    } else {
        Vec::new()
    };
    let mut w = audit_work(client, lo, hi, schedules).await?;
    w.cpu = cpu;
    w.window_s = window_s;
    w.statements = per_statement;
    w.receiver_errors = receiver.errors.load(Ordering::Relaxed) - errors_before;
    w.sender_errors = sender_errors;
    w.skipped = skipped;
    Ok(w)
}

/// The ledger of the scheduler phase's audited ticks.
struct Ledger {
    /// Schedule-ticks with a completed row, more than one row, none, a `missed` row.
    completed: i64,
    doubled: i64,
    no_row: i64,
    missed_rows: i64,
    /// Rows neither completed nor missed, by status (skipped, failed …).
    other: Vec<(String, i64)>,
    /// started_at − scheduled_at of every started run (ms), sorted.
    fire_lag: Vec<f64>,
    /// Of the runs with a work row: received_at − started_at (ms), sorted.
    send: Vec<f64>,
}

async fn audit_ledger(
    client: &Client,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
    due: i64,
) -> anyhow::Result<Ledger> {
    let audit = tick_audit(client, lo, hi).await?;
    let present: i64 = audit.get(3);
    let other = crate::common::other_statuses(client, lo, hi).await?;
    let fire_lag = crate::common::fire_lags(client, lo, hi).await?;
    // The replica's side of a run: from its start to the receiver parsing
    // the request (the HTTP client, its pool and the loopback).
    let send = client
        .query(
            "SELECT extract(epoch FROM w.received_at - r.started_at)::float8 * 1000
             FROM scheduler_runs r
             JOIN bench_work w ON w.schedule_name = r.schedule_name AND w.tick = r.scheduled_at
             WHERE r.scheduled_at BETWEEN $1 AND $2 AND w.tick BETWEEN $1 AND $2
               AND r.started_at IS NOT NULL
             ORDER BY 1",
            &[&lo, &hi],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Ledger {
        completed: audit.get(0),
        doubled: audit.get(1),
        no_row: due - present,
        missed_rows: audit.get(2),
        other,
        fire_lag,
        send,
    })
}

/// The scheduler phase: `replicas` replicas of the real binary fire
/// `schedules` every-second schedules into the receiver through an `http`
/// pipeline; `seconds` are measured after a warm-up, as `steady` does.
async fn scheduler_phase(setup: &Setup<'_>) -> anyhow::Result<(Work, Ledger)> {
    let &Setup {
        client,
        url,
        receiver,
        replicas,
        schedules,
        seconds,
        statements,
        data_dir,
    } = setup;
    // Created only now: schedules that existed during the first floor
    // would have their ticks of that time swept or caught up at start.
    bulk_schedules(client, schedules, |_| "* * * * * *".to_string()).await?;
    let dir = std::env::temp_dir().join(format!("spine-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let pipelines = dir.join("pipelines.yaml");
    std::fs::write(
        &pipelines,
        format!(
            "pipelines:\n  - name: {PIPELINE}\n    kind: http\n    url: {}\n    timeout: 30s\n",
            receiver.url
        ),
    )?;
    let mut children = Vec::new();
    for i in 0..replicas {
        let spawned = replica_command(url, &pipelines, &format!("bench-{i}"), &[])
            .and_then(|mut cmd| cmd.spawn().context("starting spine-scheduler"));
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                stop_replicas(&mut children, &dir);
                return Err(e);
            }
        }
    }
    let measured = async {
        wait_for_replicas(client, replicas).await?;
        tokio::time::sleep(Duration::from_secs(WARM_UP)).await;
        if statements {
            client
                .batch_execute("SELECT pg_stat_statements_reset()")
                .await?;
        }
        let errors_before = receiver.errors.load(Ordering::Relaxed);
        let cpu_before: f64 = children.iter().map(|c| proc_usage(c.id()).0).sum();
        let mark = CpuMark::now(data_dir);
        let from: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
        let wall = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let to: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
        let window_s = wall.elapsed().as_secs_f64();
        let cpu_after: f64 = children.iter().map(|c| proc_usage(c.id()).0).sum();
        let cpu = mark.since(cpu_after - cpu_before);
        let per_statement = if statements {
            statement_calls(client).await?
        } else {
            Vec::new()
        };
        anyhow::Ok((from, to, window_s, cpu, per_statement, errors_before))
    }
    .await;
    stop_replicas(&mut children, &dir);
    let (from, to, window_s, cpu, per_statement, errors_before) = measured?;
    // Whole seconds inside the window, less the last two (runs may still be
    // finishing when the window closes), as `steady` audits.
    let lo = DateTime::from_timestamp(from.timestamp() + 1, 0).context("window start")?;
    let hi = DateTime::from_timestamp(to.timestamp() - 2, 0).context("window end")?;
    let mut work = audit_work(client, lo, hi, schedules).await?;
    work.cpu = cpu;
    work.window_s = window_s;
    work.statements = per_statement;
    work.receiver_errors = receiver.errors.load(Ordering::Relaxed) - errors_before;
    let ledger = audit_ledger(client, lo, hi, work.due).await?;
    Ok((work, ledger))
}

/// `p50 … p90 … p99 … max …` of sorted milliseconds.
fn quantiles(v: &[f64]) -> String {
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(v, 0.50),
        pct(v, 0.90),
        pct(v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

/// The lines every phase prints.
fn phase_lines(out: &mut String, title: &str, w: &Work) {
    out.push_str(&format!("{title}\n"));
    out.push_str(&format!(
        "  {:<40}{} s, {} due, {} rows\n",
        "ticks audited", w.seconds, w.due, w.rows
    ));
    out.push_str(&format!(
        "  {:<40}{} once, {} doubled, {} missing\n",
        "work rows per schedule-tick", w.once, w.doubled, w.missing
    ));
    out.push_str(&format!(
        "  {:<40}{}\n",
        "work lag ms (written - tick)",
        quantiles(&w.lag)
    ));
    out.push_str(&format!(
        "  {:<40}{}\n",
        "  delivery (received - tick)",
        quantiles(&w.delivery)
    ));
    out.push_str(&format!(
        "  {:<40}{}\n",
        "  pool wait (pooled - received)",
        quantiles(&w.pool_wait)
    ));
    out.push_str(&format!(
        "  {:<40}{}\n",
        "  insert (written - pooled)",
        quantiles(&w.insert)
    ));
    for (tick, rows, p50, max) in &w.slowest {
        out.push_str(&format!(
            "  {:<40}{tick}: {rows} rows, lag p50 {p50:.1} max {max:.1}\n",
            "slowest second"
        ));
    }
    let per_second: Vec<String> = w.per_second_p99.iter().map(|v| format!("{v:.0}")).collect();
    out.push_str(&format!(
        "  {:<40}{}\n",
        "p99 lag per second (ms)",
        per_second.join(" ")
    ));
    out.push_str(&format!(
        "  {:<40}machine busy {:.0}% (steal {:.0}%); CPU s: postgres {:.1}, bench process {:.1}, replicas {:.1}\n",
        "CPU over the window",
        w.cpu.busy_pct,
        w.cpu.steal_pct,
        w.cpu.server_s,
        w.cpu.bench_s,
        w.cpu.replicas_s
    ));
    if w.receiver_errors + w.sender_errors + w.skipped > 0 {
        out.push_str(&format!(
            "  {:<40}receiver {}, senders {}; not sent (previous in flight) {}\n",
            "failed requests", w.receiver_errors, w.sender_errors, w.skipped
        ));
    }
    if !w.statements.is_empty() {
        out.push_str("  statements (calls per second, mean ms, query):\n");
        for (query, calls, mean_ms) in w.statements.iter().take(6) {
            out.push_str(&format!(
                "    {:>8.1}  {:>7.3}  {}\n",
                *calls as f64 / w.window_s.max(1.0),
                mean_ms,
                query
            ));
        }
    }
}

/// Runs the scenario on the (fresh) database at `url` and returns the report.
/// `data_dir` is the private cluster's, whose processes' CPU is then read.
pub async fn run(args: &Args, url: &str, data_dir: Option<&Path>) -> anyhow::Result<String> {
    let (n_replicas, schedules, seconds) =
        (args.replicas(3), args.schedules(5000), args.seconds(30));
    let pool_size = match std::env::var("SPINE_BENCH_RECEIVER_POOL") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("SPINE_BENCH_RECEIVER_POOL={v:?}"))?,
        Err(_) => DEFAULT_RECEIVER_POOL,
    };
    let mut client = store::connect(url).await?;
    store::migrate::migrate(&mut client).await?;
    let statements = statements_available(args, &client).await;
    client.batch_execute(WORK_TABLE).await?;

    let baseline = ledger_baseline(&client, args.baseline_rows).await?;
    client.batch_execute("TRUNCATE scheduler_runs").await?;

    let receiver = Receiver::start(store::pool(url, pool_size)?).await?;
    let setup = Setup {
        client: &client,
        url,
        receiver: &receiver,
        replicas: n_replicas,
        schedules,
        seconds,
        statements,
        data_dir,
    };
    let phases = async {
        let started = Utc::now();
        let before = floor_phase(&setup).await?;
        let (work, ledger) = scheduler_phase(&setup).await?;
        let after = floor_phase(&setup).await?;
        anyhow::Ok((started, before, work, ledger, after))
    }
    .await;
    receiver.shut_down().await;
    let (started, before, work, ledger, after) = phases?;

    let mut out = String::new();
    out.push_str(&format!(
        "scenario floor: {} replicas x {} schedules every second, {} s per phase, http pipeline -> receiver (pool {}) -> one INSERT per run; started {}\n",
        n_replicas,
        schedules,
        seconds,
        pool_size,
        started.format("%H:%M:%S")
    ));
    phase_lines(
        &mut out,
        &format!("floor before ({n_replicas} senders, no scheduler)"),
        &before,
    );
    phase_lines(&mut out, "scheduler", &work);
    out.push_str(&format!(
        "  {:<40}{} completed, {} doubled, {} missed (no row {}, recorded missed {})\n",
        "ledger audit",
        ledger.completed,
        ledger.doubled,
        ledger.no_row + ledger.missed_rows,
        ledger.no_row,
        ledger.missed_rows
    ));
    if !ledger.other.is_empty() {
        let other: Vec<String> = ledger
            .other
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        out.push_str(&format!(
            "  {:<40}{}\n",
            "other ledger rows, by status",
            other.join(", ")
        ));
    }
    out.push_str(&format!(
        "  {:<40}{}\n",
        "fire lag ms (started - tick, ledger)",
        quantiles(&ledger.fire_lag)
    ));
    out.push_str(&format!(
        "  {:<40}{}\n",
        "send ms (received - started)",
        quantiles(&ledger.send)
    ));
    phase_lines(&mut out, "floor after", &after);
    let floor_p99 = (pct(&before.lag, 0.99) + pct(&after.lag, 0.99)) / 2.0;
    let sched_p99 = pct(&work.lag, 0.99);
    out.push_str(&format!(
        "{:<42}{:.2} (scheduler {:.1} ms / floor mean {:.1} ms; against before {:.2}, after {:.2}; target <= 1.5)\n",
        "work lag p99 ratio",
        sched_p99 / floor_p99,
        sched_p99,
        floor_p99,
        sched_p99 / pct(&before.lag, 0.99),
        sched_p99 / pct(&after.lag, 0.99)
    ));
    out.push_str(&format!(
        "{:<42}{:.2}\n",
        "work lag p50 ratio",
        pct(&work.lag, 0.50) / ((pct(&before.lag, 0.50) + pct(&after.lag, 0.50)) / 2.0)
    ));
    out.push_str(&format!(
        "{:<42}{:.0} rows/s (insert+complete, batches of 1000, one client; load now {})",
        "ledger baseline",
        baseline,
        loadavg()
    ));
    Ok(out)
}
