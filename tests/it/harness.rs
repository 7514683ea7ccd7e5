//! Test harness: a fresh database per test on a real PostgreSQL server.
//!
//! The server is the one in `DATABASE_URL` (default: the local server on
//! 127.0.0.1:5432). When `DATABASE_URL` is unset and nothing answers there,
//! the harness starts a private cluster with `initdb`/`pg_ctl` (shared by the
//! tests of this process, stopped when the last one finishes). Each test gets
//! its own database, dropped when the `TestDb` drops — also on panic.
//!
//! Beside it, what every kind of test needs: the binary under test, the
//! database clock, waiting for a condition, the claim statement's inputs,
//! and finding external checkers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};
use spine_scheduler::store::claims::{ClaimOutcome, ClaimRequest};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The private cluster, when the harness had to start one.
static PRIVATE: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// A fresh, empty database that is dropped with this value.
pub struct TestDb {
    /// URL of the test database.
    pub url: String,
    name: String,
    admin_url: String,
    _cluster: Option<Arc<PgCluster>>,
}

async fn try_connect(url: &str) -> Result<Client, String> {
    let fut = tokio_postgres::connect(url, NoTls);
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The admin URL of a server that answers, starting a private one if needed.
async fn server() -> (String, Option<Arc<PgCluster>>) {
    let explicit = std::env::var("DATABASE_URL").ok();
    let url = explicit.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
    match try_connect(&url).await {
        Ok(_) => return (url, None),
        Err(e) if explicit.is_some() => {
            panic!("DATABASE_URL is set but the server does not answer ({e}); start it or unset DATABASE_URL to let the tests start a private cluster")
        }
        Err(_) => {}
    }
    let cluster = shared_private_cluster();
    (cluster.url("postgres"), Some(cluster))
}

fn shared_private_cluster() -> Arc<PgCluster> {
    let mut slot = PRIVATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = slot.upgrade() {
        return c;
    }
    let cluster = match PgCluster::start(ClusterOptions {
        fast_unsafe: true,
        ..Default::default()
    }) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("no PostgreSQL server answers on {DEFAULT_URL} and a private one could not be started: {e}"),
    };
    *slot = Arc::downgrade(&cluster);
    cluster
}

impl TestDb {
    /// A fresh empty database.
    pub async fn new() -> TestDb {
        let (admin_url, cluster) = server().await;
        let name = format!("spine_test_{}", uuid::Uuid::now_v7().simple());
        let admin = try_connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect {admin_url}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        TestDb {
            url: spine_scheduler::store::with_database(&admin_url, &name),
            name,
            admin_url,
            _cluster: cluster,
        }
    }

    /// A fresh database with the schema applied.
    pub async fn migrated() -> TestDb {
        let db = TestDb::new().await;
        let mut client = db.client().await;
        spine_scheduler::store::migrate::migrate(&mut client)
            .await
            .unwrap_or_else(|e| panic!("migrate: {e}"));
        db
    }

    /// A new connection to the test database.
    pub async fn client(&self) -> Client {
        try_connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(c) = try_connect(&admin_url).await {
                        let _ = c.batch_execute(&sql).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_spine-scheduler")
}

/// A connection to `url`, or the test fails.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// The host and port a URL points at.
pub fn host_port(url: &str) -> (String, u16) {
    let config: tokio_postgres::Config = url.parse().expect("database URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

/// The database clock.
pub async fn db_now(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT now()", &[]).await.expect("now").get(0)
}

/// The database clock, truncated to the second (a whole tick).
pub async fn db_second(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT date_trunc('second', now())", &[])
        .await
        .expect("now")
        .get(0)
}

/// Sleeps until the database clock reads `at` (same host: the local
/// monotonic clock measures the wait).
pub async fn sleep_until_db(c: &Client, at: DateTime<Utc>) {
    let now = db_now(c).await;
    if let Ok(wait) = (at - now).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// Polls `probe` every `every` until it gives a value, which it returns;
/// the test fails after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, every: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(every).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(limit, Duration::from_millis(100), what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// For the claim statement: no run of ours has finished unwritten.
/// Claims `batch` as replica `node` through a pool of its own (no runs
/// finished unwritten, `gone` replicas' runs not counted), its ticks
/// already due.
pub async fn claim_batch(
    db: &TestDb,
    node: Uuid,
    batch: Vec<ClaimRequest>,
    gone: &[Uuid],
) -> ClaimOutcome {
    let pool = spine_scheduler::store::pool(&db.url, 2).expect("pool");
    let mut client = pool.get().await.expect("connection");
    spine_scheduler::store::claims::claim(
        &mut client,
        node,
        batch,
        no_finished,
        gone,
        std::future::ready(()),
    )
    .await
    .expect("claim")
}

pub fn no_finished(_: &[&str]) -> Vec<Uuid> {
    Vec::new()
}

/// A claim of `name`'s tick at `at` (due at `at`: no jitter): pipeline `p`, max_instances 1 with
/// overlap policy `skip`, 60 s of misfire grace, coalesce and backlog on,
/// and the schedule's next tick
/// not due (nothing to coalesce into).
pub fn claim_request(name: &str, at: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        schedule_name: name.to_string(),
        pipeline: "p".to_string(),
        scheduled_at: at,
        due_at: at,
        max_instances: 1,
        misfire_grace_secs: 60,
        coalesce: true,
        backlog: true,
        overlap_policy: spine_scheduler::schedule::OverlapPolicy::Skip,
        next_at: None,
    }
}

/// Finds an external checker: `env` names it (and then it must exist), or it
/// is on `PATH`; under CI (`CI` set) it is required, elsewhere the check is
/// skipped with a note.
pub fn external_tool(env: &str, name: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        let path = PathBuf::from(path);
        assert!(path.exists(), "{env}={} does not exist", path.display());
        return Some(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required in CI (set {env} or put it on PATH; see .ci/run)"
        );
        eprintln!("note: {name} not found (set {env}); skipping that check");
    }
    found
}
