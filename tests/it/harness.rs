//! Test harness: a fresh database per test on a real PostgreSQL server.
//!
//! The server is the one in `DATABASE_URL` (default: the local server on
//! 127.0.0.1:5432). When `DATABASE_URL` is unset and nothing answers there,
//! the harness starts a private cluster with `initdb`/`pg_ctl` (shared by the
//! tests of this process, stopped when the last one finishes). Each test gets
//! its own database, dropped when the `TestDb` drops — also on panic.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use spine_scheduler::pg_cluster::{ClusterOptions, PgCluster};
use tokio_postgres::{Client, NoTls};

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
