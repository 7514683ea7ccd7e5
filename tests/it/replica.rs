//! Runs the real binary as separate replica processes, and audits the ledger.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::harness::{binary, db_now};

// `outage` imports `eventually` from here.
pub use crate::harness::eventually;

/// A `spine-scheduler serve` process; killed (SIGKILL) on drop if still running.
pub struct Replica {
    child: Child,
    /// The name given with --node-name.
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// A temp directory for a test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spine-{tag}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Writes a pipelines file with `log` pipelines (each sleeping as given).
pub fn log_pipelines(dir: &Path, pipelines: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("pipelines:\n");
    for (name, sleep) in pipelines {
        text.push_str(&format!(
            "  - name: {name}\n    kind: log\n    sleep: {sleep}\n"
        ));
    }
    let path = dir.join("pipelines.yaml");
    std::fs::write(&path, text).expect("write pipelines file");
    path
}

impl Replica {
    /// Starts a replica on `database_url` with the given pipelines file.
    pub fn start(database_url: &str, pipelines: &Path, name: &str, extra: &[&str]) -> Replica {
        let log = pipelines
            .parent()
            .map(|d| d.join(format!("{name}.log")))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/{name}.log")));
        let file = std::fs::File::create(&log).expect("create replica log");
        let child = Command::new(binary())
            .arg("serve")
            .args(["--pipelines", &pipelines.display().to_string()])
            .args(["--node-name", name])
            .args(["--heartbeat-interval", "500ms"])
            .args(extra)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "info,spine_scheduler=debug")
            // The admin API on any free loopback port, without a token, unless
            // `extra` says otherwise (flags override these variables).
            .env("SPINE_LISTEN", "127.0.0.1:0")
            .env("SPINE_INSECURE_NO_AUTH", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn spine-scheduler serve");
        Replica {
            child,
            name: name.to_string(),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by PID (never by name).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for a clean exit; returns its exit success.
    pub fn terminate(mut self, limit: Duration) -> bool {
        self.signal("TERM");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "replica {} did not exit within {limit:?} of SIGTERM; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Replica {
    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One tick's rows in the ledger.
#[derive(Debug)]
pub struct TickRows {
    /// The tick.
    pub at: DateTime<Utc>,
    /// The statuses of its rows (attempt 1, trigger schedule).
    pub statuses: Vec<String>,
    /// The node names that wrote them.
    pub nodes: Vec<String>,
}

/// The ledger rows of `schedule` for ticks in `[from, to]`, one entry per tick found.
pub async fn ticks(
    c: &Client,
    schedule: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<TickRows> {
    c.query(
        "SELECT r.scheduled_at, array_agg(r.status ORDER BY r.run_id), \
                array_agg(coalesce(n.hostname, r.node_id::text, '-') ORDER BY r.run_id) \
         FROM scheduler_runs r LEFT JOIN scheduler_nodes n ON n.node_id = r.node_id \
         WHERE r.schedule_name = $1 AND r.trigger = 'schedule' AND r.attempt = 1 \
           AND r.scheduled_at BETWEEN $2 AND $3 \
         GROUP BY r.scheduled_at ORDER BY r.scheduled_at",
        &[&schedule, &from, &to],
    )
    .await
    .expect("audit query")
    .iter()
    .map(|r| TickRows {
        at: r.get(0),
        statuses: r.get(1),
        nodes: r.get(2),
    })
    .collect()
}

/// Polls every 100 ms until `schedule` has a ledger row (as [`ticks`]
/// finds them) for a tick in `[from, to]`, `to` `None` meaning the database
/// clock at each poll; the test fails after `limit`.
pub async fn wait_for_tick(
    c: &Client,
    schedule: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    limit: Duration,
    what: &str,
) {
    eventually(limit, what, || async {
        let to = match to {
            Some(to) => to,
            None => db_now(c).await,
        };
        !ticks(c, schedule, from, to).await.is_empty()
    })
    .await;
}

/// Every whole second in `[from, to]`.
pub fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let start = from.timestamp() + 1;
    (start..=to.timestamp())
        .filter_map(|s| DateTime::from_timestamp(s, 0))
        .collect()
}

/// Asserts one row per expected tick, none doubled, each with an allowed
/// status; returns how many rows each node wrote.
pub fn audit(
    schedule: &str,
    expected: &[DateTime<Utc>],
    found: &[TickRows],
    allowed: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let mut by_node = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for t in found {
        if t.statuses.len() != 1 {
            problems.push(format!(
                "{}: {} rows {:?}",
                t.at,
                t.statuses.len(),
                t.statuses
            ));
        }
        for (s, n) in t.statuses.iter().zip(&t.nodes) {
            if !allowed.contains(&s.as_str()) {
                problems.push(format!("{}: status {s} (node {n})", t.at));
            }
            *by_node.entry(n.clone()).or_insert(0) += 1;
        }
    }
    for want in expected {
        if !found.iter().any(|t| t.at == *want) {
            problems.push(format!("{want}: no row"));
        }
    }
    assert!(
        problems.is_empty(),
        "ledger audit of {schedule} failed ({} problems, {} ticks expected):\n{}",
        problems.len(),
        expected.len(),
        problems.join("\n")
    );
    by_node
}

/// Audits every schedule in `names` over the ticks in `[from, to]` (see
/// [`audit`]); how many rows each node wrote, over all of them.
pub async fn audit_all(
    c: &Client,
    names: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    allowed: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let mut wins = std::collections::BTreeMap::new();
    for name in names {
        let found = ticks(c, name, from, to).await;
        for (n, k) in audit(name, &seconds(from, to), &found, allowed) {
            *wins.entry(n).or_insert(0) += k;
        }
    }
    wins
}

/// The `skipped` rows of ticks in `[from, to]` that break the audit's rule
/// "none skipped unless a run really overlapped", as README states it: the
/// run a skip names (`overlapped_run_id`) had started by the time the tick
/// fell due and had not finished by then (`completed_at` is when the run
/// ended, which its replica may write a little later). The ticks audited
/// have no jitter: they fall due at `scheduled_at`. A run that ended after
/// the tick fell due but before a late claim judged it did overlap it. A
/// tick's run that its claim set off at once (trigger `schedule`, not
/// queued: no `overlapped_run_id`) counts as started from its claim, as
/// README's limit says: the ledger held that start until the run ended and
/// its real start was written (a replica frozen in between starts it
/// late). One line per offending row.
pub async fn false_skips(c: &Client, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    c.query(
        "SELECT s.schedule_name, s.scheduled_at, s.claimed_at, o.run_id, o.started_at, o.completed_at \
         FROM scheduler_runs s LEFT JOIN scheduler_runs o ON o.run_id = s.overlapped_run_id \
         CROSS JOIN LATERAL (SELECT CASE WHEN o.trigger = 'schedule' AND o.overlapped_run_id IS NULL \
                                         THEN least(o.claimed_at, o.started_at) \
                                         ELSE o.started_at END AS began) b \
         WHERE s.status = 'skipped' AND s.scheduled_at > $1 AND s.scheduled_at <= $2 \
           AND NOT (b.began IS NOT NULL AND b.began <= s.scheduled_at \
                    AND (o.completed_at IS NULL OR o.completed_at >= s.scheduled_at))",
        &[&from, &to],
    )
    .await
    .expect("skipped rows")
    .iter()
    .map(|r| {
        format!(
            "{} {} skipped at {} over run {:?} (started {:?}, ended {:?})",
            r.get::<_, String>(0),
            r.get::<_, DateTime<Utc>>(1),
            r.get::<_, DateTime<Utc>>(2),
            r.get::<_, Option<uuid::Uuid>>(3),
            r.get::<_, Option<DateTime<Utc>>>(4),
            r.get::<_, Option<DateTime<Utc>>>(5),
        )
    })
    .collect()
}

/// How many ledger rows have `status`.
pub async fn rows_with_status(c: &Client, status: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM scheduler_runs WHERE status = $1",
        &[&status],
    )
    .await
    .expect("rows by status")
    .get(0)
}

/// How many ticks have more than one retry (attempt 2): none should.
pub async fn doubled_retries(c: &Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM (SELECT 1 FROM scheduler_runs WHERE attempt = 2 \
         GROUP BY schedule_name, scheduled_at HAVING count(*) > 1) d",
        &[],
    )
    .await
    .expect("retries")
    .get(0)
}

/// A row seen too early: schedule, tick, and the database clock at the time.
pub type EarlyRow = (String, DateTime<Utc>, DateTime<Utc>);

/// Watches the ledger from outside for as long as it is alive: every 10 ms,
/// any ledger row (trigger `schedule`) already visible although its tick is
/// still in the future on the database clock is a claim committed early
/// (G4). `stop` returns the early rows seen, as (schedule, tick, now).
pub struct EarlyCommitWatcher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<EarlyRow>>,
}

impl EarlyCommitWatcher {
    /// Starts watching the database at `url`.
    pub async fn start(url: &str) -> EarlyCommitWatcher {
        let c = crate::harness::connect(url).await;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut early = Vec::new();
            loop {
                // A statement's snapshot is taken just after its now(): allow
                // 2 ms for a commit landing between the two.
                if let Ok(rows) = c
                    .query(
                        "SELECT schedule_name, scheduled_at, now() FROM scheduler_runs \
                         WHERE trigger = 'schedule' AND scheduled_at > now() + interval '2 ms'",
                        &[],
                    )
                    .await
                {
                    early.extend(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
                }
                tokio::select! {
                    _ = &mut stopped => return early,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        });
        EarlyCommitWatcher { stop, task }
    }

    /// Stops watching; the early rows seen.
    pub async fn stop(self) -> Vec<EarlyRow> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
