//! `spine-scheduler dev`, run as a newcomer would: it fires within seconds,
//! serves the API on every replica, and after SIGINT (Ctrl-C) leaves no
//! process behind — replicas and PostgreSQL checked by PID, never by name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{binary, db_now, TestDb};
use crate::replica::temp_dir;
use crate::test_cluster::node_states;

/// A process identified by PID *and* start time, so a recycled PID is never
/// mistaken for the process we saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proc {
    pid: i32,
    start: u64,
    cmd: String,
}

/// (state, parent pid, start time) from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    // Field 22 of the whole line is the start time; `rest` begins at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn proc_of(pid: i32) -> Option<Proc> {
    let (_, _, start) = stat(pid)?;
    Some(Proc {
        pid,
        start,
        cmd: cmdline(pid),
    })
}

/// `root` and every process below it.
fn tree(root: i32) -> Vec<Proc> {
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?.1)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.into_iter().filter_map(proc_of).collect()
}

/// Still there: same PID, same start time, and not a zombie waiting for a
/// parent that does not reap (PID 1 in some containers).
fn alive(p: &Proc) -> bool {
    matches!(stat(p.pid), Some((state, _, start)) if start == p.start && state != 'Z' && state != 'X')
}

/// A base port with it and the next `n - 1` ports free on 127.0.0.1, below
/// the kernel's ephemeral range (32768 and up), so that no other test's
/// `bind(0)` or outgoing connection takes one between this check and `dev`.
pub(crate) fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        // A v7 id ends in random bits.
        let random = uuid::Uuid::now_v7().as_u128();
        let base = 20_000 + u16::try_from(random % 12_000).expect("below 12000");
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}

fn postmaster_pid(pgdata: &Path) -> Option<i32> {
    std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A running `spine-scheduler dev`. On drop (a failed test) it is stopped
/// with SIGINT and then SIGKILL, and a PostgreSQL left in *its* data folder
/// is stopped by the PID in that folder's postmaster.pid.
pub(crate) struct Dev {
    child: Child,
    data: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Dev {
    pub(crate) fn start(dir: &Path, base_port: u16, database_url: Option<&str>) -> Dev {
        let data = dir.join("data");
        let out = dir.join("dev.out");
        let err = dir.join("dev.err");
        let mut cmd = Command::new(binary());
        cmd.args(["dev", "--data-dir"])
            .arg(&data)
            .args(["--base-port", &base_port.to_string()])
            .args(["--stop-timeout", "20s"])
            .env("RUST_LOG", "info,tokio_postgres=warn")
            // Whatever this shell has set must not leak into the run.
            .env_remove("SPINE_PIPELINES_FILE")
            .env_remove("SPINE_SCHEDULES_FILE")
            .env_remove("SPINE_API_TOKEN")
            .env_remove("SPINE_API_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create dev.out"))
            .stderr(std::fs::File::create(&err).expect("create dev.err"));
        match database_url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        let child = cmd.spawn().expect("spawn spine-scheduler dev");
        Dev {
            child,
            data,
            out,
            err,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub(crate) fn tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails the test if dev has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "spine-scheduler dev exited early ({status}):\n{}\n{}",
                self.stdout(),
                self.tail()
            );
        }
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits for the exit; panics after `limit`.
    pub(crate) fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "spine-scheduler dev did not exit within {limit:?} of SIGINT:\n{}",
            self.tail()
        );
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(self.pid(), libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = postmaster_pid(&self.data.join("pgdata")) {
            // SAFETY: fast shutdown of the server of this test's own data folder.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
    }
}

/// GET a JSON document; `None` while the server does not answer 200.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

fn http() -> reqwest::Client {
    spine_scheduler::pipeline::http::build_client().expect("HTTP client")
}

/// Polls the API of the second replica (any replica answers anything) until
/// the demo schedule has a completed scheduled run; returns its runs.
pub(crate) async fn wait_for_demo_fire(dev: &mut Dev, base: u16, limit: Duration) -> Vec<Value> {
    let client = http();
    let url = format!(
        "http://127.0.0.1:{}/v1/schedules/demo_every_5s/runs?limit=50",
        base + 1
    );
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        dev.assert_running();
        if let Some(page) = get_json(&client, &url).await {
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items
                .iter()
                .any(|r| r["status"] == "completed" && r["trigger"] == "schedule")
            {
                return items;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "no completed run of demo_every_5s within {limit:?}:\n{}\n{}",
        dev.stdout(),
        dev.tail()
    );
}

/// Each demo tick has one row (the exactly-once claim, seen through the API).
fn assert_one_row_per_tick(runs: &[Value]) {
    let scheduled: Vec<&Value> = runs
        .iter()
        .filter(|r| r["trigger"] == "schedule" && r["attempt"] == 1)
        .collect();
    let ticks: BTreeSet<String> = scheduled
        .iter()
        .map(|r| r["scheduled_at"].to_string())
        .collect();
    assert_eq!(ticks.len(), scheduled.len(), "a tick ran twice: {runs:?}");
}

/// The replicas and the PostgreSQL server `dev` started, as processes.
fn started_processes(dev: &Dev) -> Vec<Proc> {
    let mut procs = tree(dev.pid());
    if let Some(pid) = postmaster_pid(&dev.data.join("pgdata")) {
        procs.extend(tree(pid));
    }
    procs
}

/// SIGINT as Ctrl-C sends it, then: exit 0, every process gone, ports closed.
fn interrupt_and_check_cleanup(mut dev: Dev, procs: &[Proc], base: u16, stopped: &str) {
    dev.signal(libc::SIGINT);
    let status = dev.wait(Duration::from_secs(60));
    assert!(status.success(), "dev exit {status}:\n{}", dev.tail());
    let left: Vec<&Proc> = procs.iter().filter(|p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "processes left behind after SIGINT: {left:?}\n{}",
        dev.tail()
    );
    for port in base..base + 3 {
        assert!(
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1)
            )
            .is_err(),
            "127.0.0.1:{port} still accepts connections"
        );
    }
    let err = dev.stderr();
    assert!(
        err.contains(&format!("replicas stopped: {stopped}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_fires_within_seconds_and_ctrl_c_leaves_no_process_behind() {
    let dir = temp_dir("dev-private");
    let base = free_ports(3);
    let mut dev = Dev::start(&dir, base, None);
    // First run: initdb, then the replicas; the demo fires every 5 s.
    let runs = wait_for_demo_fire(&mut dev, base, Duration::from_secs(120)).await;
    assert_one_row_per_tick(&runs);

    // Every replica serves the API, probes and metrics on its own port.
    let client = http();
    for port in base..base + 3 {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status().as_u16(), 200, "readyz on {port}");
        let metrics = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(metrics.contains("spine_build_info"), "metrics on {port}");
    }
    let cluster = get_json(&client, &format!("http://127.0.0.1:{base}/v1/cluster"))
        .await
        .expect("GET /v1/cluster");
    let names: BTreeSet<&str> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["alive"] == true)
        .filter_map(|n| n["hostname"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["dev-1", "dev-2", "dev-3"]),
        "{cluster}"
    );

    // The banner tells a newcomer where to look.
    let banner = dev.stdout();
    for needle in [
        &format!("http://127.0.0.1:{base}"),
        &format!("http://127.0.0.1:{base}/ui/"),
        "demo_every_5s",
        "every 5 seconds",
        "finra_otc_t1",
        "/v1/schedules/demo_every_5s/runs",
        "-X POST",
        "/metrics",
        "Ctrl-C",
        &dev.data.join("pgdata").display().to_string(),
    ] {
        assert!(
            banner.contains(needle),
            "banner lacks {needle:?}:\n{banner}"
        );
    }

    let procs = started_processes(&dev);
    let serves = procs.iter().filter(|p| p.cmd.contains(" serve ")).count();
    assert_eq!(serves, 3, "three replica processes: {procs:?}");
    assert!(
        procs.iter().any(|p| p.cmd.contains("postgres")),
        "the private PostgreSQL: {procs:?}"
    );
    let pgdata = dev.data.join("pgdata");
    interrupt_and_check_cleanup(
        dev,
        &procs,
        base,
        "dev-1 (exit status: 0), dev-2 (exit status: 0), dev-3 (exit status: 0)",
    );
    assert!(
        !pgdata.join("postmaster.pid").exists(),
        "PostgreSQL was not shut down cleanly"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_uses_database_url_and_survives_a_killed_replica() {
    let db = TestDb::new().await;
    let dir = temp_dir("dev-url");
    let base = free_ports(3);
    let mut dev = Dev::start(&dir, base, Some(&db.url));
    let runs = wait_for_demo_fire(&mut dev, base, Duration::from_secs(90)).await;
    assert_one_row_per_tick(&runs);
    // The ledger is in the database we gave it; no private server was made.
    let client = db.client().await;
    let completed: i64 = client
        .query_one(
            "SELECT count(*) FROM scheduler_runs WHERE schedule_name = 'demo_every_5s' AND status = 'completed'",
            &[],
        )
        .await
        .expect("count runs")
        .get(0);
    assert!(completed >= 1);
    assert!(!dev.data.join("pgdata").exists(), "no private PostgreSQL");
    assert!(dev.stdout().contains("(from DATABASE_URL)"));

    let procs = started_processes(&dev);

    // A replica killed outright: dev reports it and the others take over
    // its ticks (how a newcomer sees a failover).
    let victim = procs
        .iter()
        .find(|p| p.cmd.contains("--node-name dev-2 "))
        .unwrap_or_else(|| panic!("dev-2 among {procs:?}"));
    // SAFETY: kill has no memory-safety preconditions; the pid is dev-2's
    // (checked by its command line just above).
    assert_eq!(unsafe { libc::kill(victim.pid, libc::SIGKILL) }, 0);
    let killed_at = db_now(&client).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        dev.assert_running();
        let after: i64 = client
            .query_one(
                "SELECT count(*) FROM scheduler_runs WHERE schedule_name = 'demo_every_5s' \
                 AND status = 'completed' AND scheduled_at > $1",
                &[&killed_at],
            )
            .await
            .expect("count runs after the kill")
            .get(0);
        if after >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fires after dev-2 was killed:\n{}",
            dev.tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let err = dev.stderr();
    assert!(
        err.contains("replica dev-2 exited (signal: 9 (SIGKILL))")
            && err.contains("the other replicas take over its ticks"),
        "{err}"
    );

    interrupt_and_check_cleanup(
        dev,
        &procs,
        base,
        "dev-1 (exit status: 0), dev-2 (signal: 9 (SIGKILL)), dev-3 (exit status: 0)",
    );
    // The others drained and said goodbye (SIGTERM, not SIGKILL).
    let states = node_states(&client).await;
    let state = |n: &str| {
        states
            .iter()
            .find(|(h, _)| h == n)
            .map(|(_, s)| s.as_str())
            .unwrap_or("absent")
    };
    assert_eq!(state("dev-1"), "left", "{states:?}");
    assert_eq!(state("dev-3"), "left", "{states:?}");
    assert_ne!(state("dev-2"), "left", "{states:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dev_mode_refuses_a_taken_port_before_starting_anything() {
    let dir = temp_dir("dev-port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = Command::new(binary())
        .args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--base-port", &port.to_string()])
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run dev");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port} is not free")) && err.contains("--base-port"),
        "{err}"
    );
    assert!(!dir.join("data/pgdata").exists(), "nothing was started");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}
