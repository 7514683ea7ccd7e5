//! The common setup of the end-to-end tests: a [`TestCluster`] of real
//! `serve` processes over one database, every-second schedules for them to
//! fire, and the questions those tests ask of the database (who leads).

use std::path::PathBuf;
use std::time::Duration;

use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::schedules;
use tokio_postgres::Client;

use crate::harness::{connect, wait_for, TestDb};
use crate::replica::{log_pipelines, temp_dir, Replica};

/// Short lease and housekeeping so lease-mode faults show within seconds;
/// the handoff delay stays at its default (1 s).
pub const FAST: [&str; 4] = ["--node-lease", "3s", "--housekeeping-interval", "500ms"];

/// Held for a whole test by the tests that assert timing bounds, so they
/// run one at a time (the CI machine has two cores).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A schedule firing `pipeline` every second.
pub fn every_second(name: &str, pipeline: &str) -> Schedule {
    Schedule::cron(name, pipeline, "* * * * * *").expect("valid schedule")
}

/// Inserts an every-second schedule of `pipeline` for each name, as
/// `configure` makes it.
pub async fn insert_every_second(
    c: &Client,
    names: &[String],
    pipeline: &str,
    configure: impl Fn(Schedule) -> Schedule,
) {
    for name in names {
        let s = configure(every_second(name, pipeline));
        schedules::insert(c, &s).await.expect("insert");
    }
}

/// Every node row's (hostname, state), by hostname.
pub async fn node_states(c: &Client) -> Vec<(String, String)> {
    c.query(
        "SELECT hostname, state FROM scheduler_nodes ORDER BY hostname",
        &[],
    )
    .await
    .expect("node states")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The recorded leader: the active node with `leader_since` set (the test
/// fails if two nodes say so).
pub async fn leader(c: &Client) -> Option<String> {
    c.query_opt(
        "SELECT hostname FROM scheduler_nodes WHERE leader_since IS NOT NULL AND state = 'active'",
        &[],
    )
    .await
    .expect("leader query")
    .map(|r| r.get(0))
}

/// The recorded leader, if it is not `old` (a dead leader's row may still
/// say it leads for a moment).
pub async fn leader_other_than(c: &Client, old: &str) -> Option<String> {
    c.query(
        "SELECT hostname FROM scheduler_nodes \
         WHERE leader_since IS NOT NULL AND state = 'active' AND hostname <> $1",
        &[&old],
    )
    .await
    .expect("leader query")
    .first()
    .map(|r| r.get(0))
}

/// Polls [`leader`] every 50 ms until there is one.
pub async fn wait_for_leader(c: &Client, limit: Duration) -> String {
    wait_for(limit, Duration::from_millis(50), "a leader", || leader(c)).await
}

/// Polls [`leader_other_than`] every 50 ms until there is one (`""`: any).
pub async fn wait_for_leader_other_than(c: &Client, old: &str, limit: Duration) -> String {
    wait_for(limit, Duration::from_millis(50), "a leader", || {
        leader_other_than(c, old)
    })
    .await
}

/// Replicas of the real binary sharing one database and one pipelines file
/// of `log` pipelines. The replicas are killed on drop, then the database
/// (when the cluster made it) is dropped.
pub struct TestCluster {
    /// The running replicas, in start order.
    pub replicas: Vec<Replica>,
    /// The database they share.
    pub url: String,
    /// The pipelines file they run.
    pub pipelines: PathBuf,
    _db: Option<TestDb>,
}

impl TestCluster {
    /// A fresh migrated database, a temp folder named after `tag` and the
    /// pipelines (name, sleep); no replica yet.
    pub async fn new(tag: &str, pipelines: &[(&str, &str)]) -> TestCluster {
        let db = TestDb::migrated().await;
        let mut cluster = TestCluster::on(&db.url, tag, pipelines);
        cluster._db = Some(db);
        cluster
    }

    /// The same on a database that is already there (migrated).
    pub fn on(url: &str, tag: &str, pipelines: &[(&str, &str)]) -> TestCluster {
        TestCluster {
            replicas: Vec::new(),
            url: url.to_string(),
            pipelines: log_pipelines(&temp_dir(tag), pipelines),
            _db: None,
        }
    }

    /// A new connection to the database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Starts `replica-1` to `replica-N`.
    pub fn start(&mut self, n: usize, extra: &[&str]) {
        for i in 1..=n {
            self.add(&format!("replica-{i}"), extra);
        }
    }

    /// Starts one more replica.
    pub fn add(&mut self, name: &str, extra: &[&str]) {
        let replica = Replica::start(&self.url, &self.pipelines, name, extra);
        self.replicas.push(replica);
    }

    /// The running replica called `name`.
    pub fn get(&self, name: &str) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not one of ours"))
    }

    /// Takes the replica called `name` out of the cluster (to kill it).
    pub fn take(&mut self, name: &str) -> Replica {
        let idx = self
            .replicas
            .iter()
            .position(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not one of ours"));
        self.replicas.remove(idx)
    }

    /// SIGTERM to each replica in turn; each must exit cleanly within 30 s.
    pub fn stop_all(&mut self) {
        self.stop_all_within(Duration::from_secs(30));
    }

    /// SIGTERM to each replica in turn; each must exit cleanly within `limit`.
    pub fn stop_all_within(&mut self, limit: Duration) {
        for r in self.replicas.drain(..) {
            let name = r.name.clone();
            assert!(r.terminate(limit), "{name} exited uncleanly");
        }
    }
}
