//! The admin API end to end: real `serve` processes, real HTTP on loopback,
//! real Postgres. Every error case also checks that the tables are untouched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::harness::{binary, TestDb};
use crate::replica::{eventually, log_pipelines, temp_dir, Replica};

/// The admin token the test replicas accept.
pub const ADMIN: &str = "spine-test-admin-token-0123456789";
/// The read-only token the test replicas accept.
pub const READER: &str = "spine-test-reader-token-0123456789";
/// The pipeline the test schedules run.
pub const PIPELINE: &str = "test.record";

/// A replica with its API address.
pub struct ApiReplica {
    /// The process.
    pub replica: Replica,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// Writes the token files and a pipelines file into `dir`.
pub fn setup_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let admin = dir.join("admin.token");
    let reader = dir.join("reader.token");
    std::fs::write(&admin, format!("{ADMIN}\n")).expect("write admin token");
    std::fs::write(&reader, READER).expect("write reader token");
    let pipelines = log_pipelines(dir, &[(PIPELINE, "0s")]);
    (pipelines, admin, reader)
}

/// Starts a replica serving the API on a free loopback port (port 0: the
/// kernel picks, so parallel tests never collide), and waits until it is ready.
pub async fn start_api_replica(db_url: &str, dir: &Path, name: &str) -> ApiReplica {
    let (pipelines, admin, reader) = setup_files(dir);
    let replica = Replica::start(
        db_url,
        &pipelines,
        name,
        &[
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--api-token-file",
            &admin.display().to_string(),
            "--api-readonly-token-file",
            &reader.display().to_string(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(a) = listening_addr(&replica.log) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not report its API address; log:\n{}",
            replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = ApiReplica {
        replica,
        base: format!("http://{addr}"),
    };
    let api = Http::new();
    let base = node.base.clone();
    eventually(Duration::from_secs(30), &format!("{name} ready"), || {
        let api = api.clone();
        let base = base.clone();
        async move { api.get(&base, "/readyz", None).await.status == 200 }
    })
    .await;
    node
}

/// The address in the replica's "admin API listening" log line (JSON logs).
fn listening_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = v.get("fields")?;
        (fields.get("message")?.as_str()? == "admin API listening")
            .then(|| fields.get("addr")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// An HTTP answer.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub text: String,
}

impl Reply {
    /// The body as JSON (the test fails if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request body.
pub enum Body {
    /// No body.
    None,
    /// JSON with `Content-Type: application/json`.
    Json(Value),
    /// Bytes with a content type of our choosing.
    Raw(&'static str, Vec<u8>),
}

/// A small HTTP client for the tests.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client (the crate's own, with TLS set up and redirects off).
    pub fn new() -> Http {
        Http {
            client: spine_scheduler::pipeline::http::build_client().expect("HTTP client"),
        }
    }

    /// Sends one request.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut req = self
            .client
            .request(method.clone(), url)
            .timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&v).expect("encode body")),
            Body::Raw(ct, bytes) => req.header("content-type", ct).body(bytes),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            text,
        }
    }

    /// GET `base + path`.
    pub async fn get(&self, base: &str, path: &str, token: Option<&str>) -> Reply {
        self.call(
            Method::GET,
            &format!("{base}{path}"),
            token,
            &[],
            Body::None,
        )
        .await
    }
}

/// Asserts the error shape and the status/code; returns the `error` object.
pub fn assert_error(what: &str, r: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{what}: status; body {}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        r.header("content-type")
    );
    let body = r.json();
    let obj = body.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "{what}: only `error` at the top: {body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{what}: code; body {body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message: {body}"
    );
    assert!(
        e["field"].is_null() || e["field"].is_string(),
        "{what}: field: {body}"
    );
    assert!(e["details"].is_array(), "{what}: details: {body}");
    assert_eq!(
        e.as_object().map(|o| o.len()),
        Some(4),
        "{what}: exactly code, message, field, details: {body}"
    );
    e.clone()
}

/// Everything stored, as text: the schedules (every column) and the ledger.
async fn snapshot(c: &Client) -> (Vec<String>, Vec<String>) {
    let schedules = c
        .query(
            "SELECT to_jsonb(s)::text FROM scheduler_schedules s ORDER BY name",
            &[],
        )
        .await
        .expect("schedules snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let runs = c
        .query(
            "SELECT run_id::text || ' ' || schedule_name || ' ' || trigger \
             FROM scheduler_runs ORDER BY run_id",
            &[],
        )
        .await
        .expect("runs snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (schedules, runs)
}

async fn db_now(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT now()", &[]).await.expect("now").get(0)
}

/// Scheduled (not manual) ledger rows of `schedule` with a tick after `after`.
async fn ticks_after(c: &Client, schedule: &str, after: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    c.query(
        "SELECT scheduled_at FROM scheduler_runs \
         WHERE schedule_name = $1 AND trigger = 'schedule' AND scheduled_at > $2 \
         ORDER BY scheduled_at",
        &[&schedule, &after],
    )
    .await
    .expect("ticks query")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn instant(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not an instant: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_lifecycle_through_two_replicas() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-lifecycle");
    let a = start_api_replica(&db.url, &dir, "api-a").await;
    let b = start_api_replica(&db.url, &dir, "api-b").await;
    let http = Http::new();
    let (ua, ub) = (a.base.clone(), b.base.clone());
    let url = |base: &str, p: &str| format!("{base}{p}");

    // Create through A: it appears, with a next fire time, through B.
    let created = http
        .call(
            Method::POST,
            &url(&ua, "/v1/schedules"),
            Some(ADMIN),
            &[],
            Body::Json(json!({
                "name": "tick", "pipeline": PIPELINE, "cron": "* * * * * *",
                "params": {"from": "api"}, "description": "every second"
            })),
        )
        .await;
    assert_eq!(created.status, 201, "create: {}", created.text);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.header("location"), Some("/v1/schedules/tick"));
    let body = created.json();
    assert_eq!(body["cron"], "* * * * * *");
    assert_eq!(body["params"]["from"], "api");
    let next = instant(&body["next_run"]);
    let now = db_now(&c).await;
    assert!(
        next > now - chrono::Duration::seconds(2) && next <= now + chrono::Duration::seconds(2),
        "next_run {next} vs db now {now}"
    );
    let listed = http
        .get(&ub, "/v1/schedules?name_prefix=ti", Some(READER))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let items = listed.json()["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert!(items[0]["next_run"].is_string());

    // It fires, and the history shows it (through either replica).
    eventually(
        Duration::from_secs(20),
        "two completed scheduled runs",
        || {
            let http = http.clone();
            let ub = ub.clone();
            async move {
                let r = http
                    .get(
                        &ub,
                        "/v1/schedules/tick/runs?status=completed&trigger=schedule",
                        Some(READER),
                    )
                    .await;
                r.status == 200 && r.json()["items"].as_array().is_some_and(|i| i.len() >= 2)
            }
        },
    )
    .await;
    let got = http.get(&ua, "/v1/schedules/tick", Some(ADMIN)).await;
    assert_eq!(got.status, 200);
    assert!(
        got.json()["last_run"]["run_id"].is_string(),
        "last_run: {}",
        got.text
    );
    // Across schedules, newest first, paged with a cursor.
    let page1 = http.get(&ua, "/v1/runs?limit=1", Some(ADMIN)).await.json();
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_string();
    let page2 = http
        .get(
            &ua,
            &format!("/v1/runs?limit=1&cursor={cursor}"),
            Some(ADMIN),
        )
        .await
        .json();
    assert!(
        instant(&page2["items"][0]["scheduled_at"]) <= instant(&page1["items"][0]["scheduled_at"]),
        "newest first: {page1} then {page2}"
    );
    assert_ne!(page1["items"][0]["run_id"], page2["items"][0]["run_id"]);

    // Run now: 202 with the run id; it runs, with trigger manual.
    let run = http
        .call(
            Method::POST,
            &url(&ub, "/v1/schedules/tick/run"),
            Some(ADMIN),
            &[],
            Body::None,
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.text);
    let run_id = run.json()["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        run.header("location").map(str::to_string),
        Some(format!("/v1/runs/{run_id}"))
    );
    eventually(Duration::from_secs(15), "the manual run completes", || {
        let http = http.clone();
        let ua = ua.clone();
        let path = format!("/v1/runs/{run_id}");
        async move {
            let r = http.get(&ua, &path, Some(READER)).await;
            r.status == 200 && r.json()["status"] == "completed" && r.json()["trigger"] == "manual"
        }
    })
    .await;

    // Pause through B: no tick fires on any replica.
    let paused = http
        .call(
            Method::POST,
            &url(&ub, "/v1/schedules/tick/pause"),
            Some(ADMIN),
            &[],
            Body::None,
        )
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json()["enabled"], false);
    assert!(paused.json()["next_run"].is_null());
    // Ticks just after the pause may already be claimed: the change takes
    // ~100 ms to reach the engines; 2 s leaves room for a loaded machine.
    let settle = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = ticks_after(&c, "tick", settle).await;
    assert!(late.is_empty(), "ticks fired while paused: {late:?}");

    // Resume through A: firing restarts.
    let resumed_at = db_now(&c).await;
    let resumed = http
        .call(
            Method::POST,
            &url(&ua, "/v1/schedules/tick/resume"),
            Some(ADMIN),
            &[],
            Body::None,
        )
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.json()["enabled"], true);
    eventually(Duration::from_secs(10), "a tick after resume", || {
        let c = &c;
        async move { !ticks_after(c, "tick", resumed_at).await.is_empty() }
    })
    .await;

    // Update through A (every other second); B serves the new definition
    // and next fire time, and both engines fire on even seconds only.
    let version = http
        .get(&ub, "/v1/schedules/tick", Some(ADMIN))
        .await
        .json()["version"]
        .as_i64()
        .expect("version");
    let patched = http
        .call(
            Method::PATCH,
            &url(&ua, "/v1/schedules/tick"),
            Some(ADMIN),
            &[("if-match", &format!("\"{version}\""))],
            Body::Raw(
                "application/merge-patch+json",
                br#"{"cron": "*/2 * * * * *"}"#.to_vec(),
            ),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json()["version"], version + 1);
    assert_eq!(
        patched.json()["params"]["from"],
        "api",
        "untouched keys stay"
    );
    let via_b = http
        .get(&ub, "/v1/schedules/tick", Some(READER))
        .await
        .json();
    assert_eq!(via_b["cron"], "*/2 * * * * *");
    assert_eq!(via_b["version"], version + 1);
    assert_eq!(instant(&via_b["next_run"]).second() % 2, 0, "{via_b}");
    let changed = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Two even ticks fall in those 4 s; under a loaded CI host the second
    // may be claimed by the safety net, a handoff delay or two late.
    eventually(
        Duration::from_secs(5),
        "two ticks after the update",
        || async { ticks_after(&c, "tick", changed).await.len() >= 2 },
    )
    .await;
    let after_update = ticks_after(&c, "tick", changed).await;
    assert!(after_update.len() >= 2, "still firing: {after_update:?}");
    assert!(
        after_update.iter().all(|t| t.second() % 2 == 0),
        "odd-second ticks after the update: {after_update:?}"
    );

    // Delete through B (a stale version first: 409, nothing deleted).
    let stale = http
        .call(
            Method::DELETE,
            &url(&ub, "/v1/schedules/tick"),
            Some(ADMIN),
            &[("if-match", "\"1\"")],
            Body::None,
        )
        .await;
    assert_error("stale delete", &stale, 409, "version_conflict");
    let deleted = http
        .call(
            Method::DELETE,
            &url(&ub, "/v1/schedules/tick"),
            Some(ADMIN),
            &[],
            Body::None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = http.get(&ua, "/v1/schedules/tick", Some(ADMIN)).await;
    assert_error("get deleted", &gone, 404, "not_found");
    let stop = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = ticks_after(&c, "tick", stop).await;
    assert!(late.is_empty(), "ticks fired after delete: {late:?}");
    // History outlives the schedule.
    let history = http.get(&ua, "/v1/schedules/tick/runs", Some(ADMIN)).await;
    assert!(
        history.json()["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "{}",
        history.text
    );

    for r in [a.replica, b.replica] {
        assert!(
            r.terminate(Duration::from_secs(30)),
            "replica exited uncleanly"
        );
    }
}

/// One error case: a request, and the status, code and field it must give.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    message_has: Option<&'static str>,
}

fn case(what: &'static str, method: Method, path: &str, body: Body) -> Case {
    Case {
        what,
        method,
        path: path.to_string(),
        headers: Vec::new(),
        body,
        status: 400,
        code: "invalid_input",
        field: None,
        message_has: None,
    }
}

impl Case {
    fn gives(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }
    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
    fn says(mut self, part: &'static str) -> Self {
        self.message_has = Some(part);
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

fn schedule(extra: Value) -> Body {
    let mut base = json!({"name": "fresh", "pipeline": PIPELINE, "cron": "0 6 * * 1-5"});
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    Body::Json(base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_shape_and_stores_nothing() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-errors");
    let node = start_api_replica(&db.url, &dir, "api-errors").await;
    let http = Http::new();
    // One schedule to conflict with; paused, so the ledger stays still.
    let keep = http
        .call(
            Method::POST,
            &format!("{}/v1/schedules", node.base),
            Some(ADMIN),
            &[],
            Body::Json(json!({
                "name": "keep", "pipeline": PIPELINE, "cron": "0 6 * * *", "enabled": false
            })),
        )
        .await;
    assert_eq!(keep.status, 201, "{}", keep.text);
    let before = snapshot(&c).await;

    let post = |what, body| case(what, Method::POST, "/v1/schedules", body);
    let big_params: String = "x".repeat(70 * 1024);
    let too_big = vec![b' '; spine_scheduler::api::BODY_LIMIT + 1];
    let cases = vec![
        post("bad cron", schedule(json!({"cron": "0 25 * * *"})))
            .field("cron")
            .says("column 3"),
        post(
            "7-field cron",
            schedule(json!({"cron": "0 0 6 * * 1-5 2030"})),
        )
        .field("cron"),
        post(
            "unknown timezone",
            schedule(json!({"timezone": "Mars/Olympus"})),
        )
        .field("timezone"),
        post(
            "unknown pipeline",
            schedule(json!({"pipeline": "no.such.pipeline"})),
        )
        .field("pipeline")
        .says(PIPELINE),
        post("bad name", schedule(json!({"name": "has space"}))).field("name"),
        post("unknown key", schedule(json!({"colesce": true}))).field("colesce"),
        post("two triggers", schedule(json!({"interval": 5}))).field("schedule"),
        post(
            "params too large",
            schedule(json!({"params": {"x": big_params}})),
        )
        .field("params"),
        post("not an object", Body::Json(json!(["keep"]))),
        post("name taken", schedule(json!({"name": "keep"}))).gives(409, "already_exists"),
        post(
            "malformed JSON",
            Body::Raw("application/json", b"{\"name\": ".to_vec()),
        )
        .gives(400, "invalid_json"),
        post("not JSON", Body::Raw("text/plain", b"name=keep".to_vec()))
            .gives(415, "unsupported_media_type"),
        post("no content type", Body::Raw("", b"{}".to_vec())).gives(415, "unsupported_media_type"),
        post(
            "over the body limit",
            Body::Raw("application/json", too_big),
        )
        .gives(413, "payload_too_large"),
        case(
            "stale If-Match on PUT",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "keep"})),
        )
        .header("if-match", "\"41\"")
        .gives(409, "version_conflict")
        .field("version"),
        case(
            "stale version in a PATCH body",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"version": 41, "description": "x"})),
        )
        .gives(409, "version_conflict"),
        case(
            "If-Match and version disagree",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"version": 1, "description": "x"})),
        )
        .header("if-match", "\"2\"")
        .field("version"),
        case(
            "bad cron in PUT",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "keep", "cron": "61 * * * *"})),
        )
        .field("cron"),
        case(
            "rename in PUT",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "other"})),
        )
        .field("name"),
        case(
            "bad timezone in PATCH",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"timezone": "Nowhere/Land"})),
        )
        .field("timezone"),
        case(
            "unknown pipeline in PATCH",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"pipeline": "no.such.pipeline"})),
        )
        .field("pipeline"),
        case(
            "PATCH of a missing schedule",
            Method::PATCH,
            "/v1/schedules/ghost",
            Body::Json(json!({"description": "x"})),
        )
        .gives(404, "not_found"),
        case(
            "PUT of a missing schedule",
            Method::PUT,
            "/v1/schedules/ghost",
            schedule(json!({"name": "ghost"})),
        )
        .gives(404, "not_found"),
        case(
            "DELETE of a missing schedule",
            Method::DELETE,
            "/v1/schedules/ghost",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "stale DELETE",
            Method::DELETE,
            "/v1/schedules/keep",
            Body::None,
        )
        .header("if-match", "\"41\"")
        .gives(409, "version_conflict"),
        case(
            "bad If-Match",
            Method::DELETE,
            "/v1/schedules/keep",
            Body::None,
        )
        .header("if-match", "yesterday")
        .field("If-Match"),
        case(
            "run a missing schedule",
            Method::POST,
            "/v1/schedules/ghost/run",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "pause a missing schedule",
            Method::POST,
            "/v1/schedules/ghost/pause",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "resume a missing schedule",
            Method::POST,
            "/v1/schedules/ghost/resume",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "get a missing schedule",
            Method::GET,
            "/v1/schedules/ghost",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "invalid name in the path",
            Method::GET,
            "/v1/schedules/bad%20name",
            Body::None,
        )
        .field("name"),
        case(
            "run id not a UUID",
            Method::GET,
            "/v1/runs/not-a-uuid",
            Body::None,
        )
        .field("run_id"),
        case(
            "missing run",
            Method::GET,
            "/v1/runs/01900000-0000-7000-8000-000000000000",
            Body::None,
        )
        .gives(404, "not_found"),
        case("limit 0", Method::GET, "/v1/schedules?limit=0", Body::None).field("limit"),
        case(
            "enabled=maybe",
            Method::GET,
            "/v1/schedules?enabled=maybe",
            Body::None,
        )
        .gives(400, "invalid_query"),
        case(
            "unknown filter",
            Method::GET,
            "/v1/schedules?state=on",
            Body::None,
        )
        .gives(400, "invalid_query"),
        case(
            "foreign cursor",
            Method::GET,
            "/v1/schedules?cursor=zzz",
            Body::None,
        )
        .field("cursor"),
        case(
            "enabled and paused contradict",
            Method::GET,
            "/v1/schedules?enabled=true&paused=true",
            Body::None,
        )
        .field("paused"),
        case(
            "unknown status",
            Method::GET,
            "/v1/runs?status=bogus",
            Body::None,
        )
        .field("status"),
        case(
            "unknown trigger",
            Method::GET,
            "/v1/runs?trigger=cron",
            Body::None,
        )
        .field("trigger"),
        case(
            "bad since",
            Method::GET,
            "/v1/runs?since=yesterday",
            Body::None,
        )
        .field("since"),
        case(
            "runs cursor from another listing",
            Method::GET,
            "/v1/schedules/keep/runs?cursor=s1.6b656570",
            Body::None,
        )
        .field("cursor"),
        case(
            "preview of a bad cron",
            Method::GET,
            "/v1/preview?cron=0%2025%20*%20*%20*",
            Body::None,
        )
        .field("cron")
        .says("column 3"),
        case(
            "preview in an unknown zone",
            Method::GET,
            "/v1/preview?cron=0%206%20*%20*%20*&timezone=Mars/Olympus",
            Body::None,
        )
        .field("timezone"),
        case(
            "preview without a trigger",
            Method::GET,
            "/v1/preview",
            Body::None,
        )
        .field("schedule"),
        case(
            "preview count 0",
            Method::GET,
            "/v1/preview?cron=@daily&count=0",
            Body::None,
        )
        .field("count"),
        case("no such route", Method::GET, "/v1/nothing", Body::None).gives(404, "not_found"),
        case("wrong method", Method::DELETE, "/v1/schedules", Body::None)
            .gives(405, "method_not_allowed"),
    ];
    for c in cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http
            .call(
                c.method.clone(),
                &format!("{}{}", node.base, c.path),
                Some(ADMIN),
                &headers,
                c.body,
            )
            .await;
        let e = assert_error(c.what, &r, c.status, c.code);
        if let Some(f) = c.field {
            assert_eq!(e["field"], f, "{}: field; {e}", c.what);
            assert!(
                e["details"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|p| p["field"] == f)),
                "{}: details name {f}: {e}",
                c.what
            );
        }
        if let Some(part) = c.message_has {
            assert!(
                e["message"].as_str().is_some_and(|m| m.contains(part)),
                "{}: message should mention {part:?}: {e}",
                c.what
            );
        }
        if c.status == 405 {
            assert!(r.header("allow").is_some(), "{}: Allow header", c.what);
        }
    }
    assert_eq!(snapshot(&c).await, before, "an error changed the database");
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_read_only_only_reads() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-auth");
    let node = start_api_replica(&db.url, &dir, "api-auth").await;
    let http = Http::new();
    let base = node.base.clone();
    let send = |method: Method, path: &'static str, token: Option<&'static str>, body: Body| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.call(method, &url, token, &[], body).await }
    };
    let new = || Body::Json(json!({"name": "viaauth", "pipeline": PIPELINE, "cron": "@daily"}));

    // No token, a wrong token, another scheme: 401 with a challenge.
    for (what, r) in [
        (
            "no token",
            send(Method::GET, "/v1/schedules", None, Body::None).await,
        ),
        (
            "wrong token",
            send(
                Method::GET,
                "/v1/schedules",
                Some("not-the-token-0123456789"),
                Body::None,
            )
            .await,
        ),
        (
            "no token, write",
            send(Method::POST, "/v1/schedules", None, new()).await,
        ),
        (
            "no token, document",
            send(Method::GET, "/openapi.json", None, Body::None).await,
        ),
        (
            "no token, unknown route",
            send(Method::GET, "/v1/nothing", None, Body::None).await,
        ),
    ] {
        assert_error(what, &r, 401, "unauthorized");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{what}: WWW-Authenticate"
        );
    }
    let basic = http
        .call(
            Method::GET,
            &format!("{}/v1/schedules", node.base),
            None,
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
            Body::None,
        )
        .await;
    assert_error("basic auth", &basic, 401, "unauthorized");

    // The read-only token reads, and is refused every write.
    for path in ["/v1/schedules", "/v1/runs", "/v1/cluster", "/openapi.json"] {
        let r = http.get(&node.base, path, Some(READER)).await;
        assert_eq!(r.status, 200, "read-only GET {path}: {}", r.text);
    }
    let before = snapshot(&c).await;
    for (what, r) in [
        (
            "create",
            send(Method::POST, "/v1/schedules", Some(READER), new()).await,
        ),
        (
            "delete",
            send(
                Method::DELETE,
                "/v1/schedules/viaauth",
                Some(READER),
                Body::None,
            )
            .await,
        ),
        (
            "patch",
            send(
                Method::PATCH,
                "/v1/schedules/viaauth",
                Some(READER),
                Body::Json(json!({"description": "x"})),
            )
            .await,
        ),
        (
            "run now",
            send(
                Method::POST,
                "/v1/schedules/viaauth/run",
                Some(READER),
                Body::None,
            )
            .await,
        ),
        (
            "pause",
            send(
                Method::POST,
                "/v1/schedules/viaauth/pause",
                Some(READER),
                Body::None,
            )
            .await,
        ),
    ] {
        assert_error(what, &r, 403, "forbidden");
    }
    assert_eq!(
        snapshot(&c).await,
        before,
        "a refused write changed the database"
    );

    // The admin token writes.
    let created = send(Method::POST, "/v1/schedules", Some(ADMIN), new()).await;
    assert_eq!(created.status, 201, "{}", created.text);

    // Probes and metrics are open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(&node.base, path, None).await;
        assert_eq!(r.status, 200, "open {path}: {}", r.text);
    }
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_token() {
    let db = TestDb::migrated().await;
    let out = tokio::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env_remove("SPINE_API_TOKEN")
        .env_remove("SPINE_API_TOKEN_FILE")
        .env_remove("SPINE_API_READONLY_TOKEN")
        .env_remove("SPINE_API_READONLY_TOKEN_FILE")
        .env_remove("SPINE_INSECURE_NO_AUTH")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("serve exits by itself")
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no API token configured") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    let nodes: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM scheduler_nodes", &[])
        .await
        .expect("count nodes")
        .get(0);
    assert_eq!(nodes, 0, "the engine did not start");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_lists_exactly_the_served_routes() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("api-openapi");
    let node = start_api_replica(&db.url, &dir, "api-openapi").await;
    let http = Http::new();
    let r = http.get(&node.base, "/openapi.json", Some(READER)).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "OpenAPI 3: {}",
        doc["openapi"]
    );
    // Every $ref points at something.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    // The official schema, when the validator is installed.
    if let Some(validator) = external_tool("SPINE_OPENAPI_VALIDATOR", "openapi-spec-validator") {
        let file = dir.join("openapi.json");
        std::fs::write(&file, &r.text).expect("write document");
        let out = std::process::Command::new(validator)
            .arg(&file)
            .output()
            .expect("run openapi-spec-validator");
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/readyz"),
        ("GET", "/v1/cluster"),
        ("GET", "/v1/preview"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}"),
        ("GET", "/v1/schedules"),
        ("POST", "/v1/schedules"),
        ("GET", "/v1/schedules/{name}"),
        ("PUT", "/v1/schedules/{name}"),
        ("PATCH", "/v1/schedules/{name}"),
        ("DELETE", "/v1/schedules/{name}"),
        ("POST", "/v1/schedules/{name}/pause"),
        ("POST", "/v1/schedules/{name}/resume"),
        ("POST", "/v1/schedules/{name}/run"),
        ("GET", "/v1/schedules/{name}/runs"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected, "the documented routes");

    // Every documented operation is served (no route 404, no 405) ...
    let created = http
        .call(
            Method::POST,
            &format!("{}/v1/schedules", node.base),
            Some(ADMIN),
            &[],
            Body::Json(json!({"name": "doc", "pipeline": PIPELINE, "cron": "@daily"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let run = http
        .call(
            Method::POST,
            &format!("{}/v1/schedules/doc/run", node.base),
            Some(ADMIN),
            &[],
            Body::None,
        )
        .await;
    let run_id = run.json()["run_id"].as_str().expect("run id").to_string();
    // DELETE last, so the schedule exists for the others.
    let mut order = documented.clone();
    order.sort_by_key(|(m, _)| m == "DELETE");
    for (method, path) in &order {
        let concrete = path.replace("{name}", "doc").replace("{run_id}", &run_id);
        let body = match method.as_str() {
            "POST" if concrete == "/v1/schedules" => Body::Json(json!({})),
            "PUT" => Body::Json(json!({"pipeline": PIPELINE, "cron": "@daily"})),
            "PATCH" => Body::Json(json!({"description": "documented"})),
            _ => Body::None,
        };
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let r = http
            .call(
                m,
                &format!("{}{concrete}", node.base),
                Some(ADMIN),
                &[],
                body,
            )
            .await;
        assert!(
            r.status != 405 && !(r.status == 404 && r.text.contains("no such route")),
            "{method} {path} is documented but not served: {} {}",
            r.status,
            r.text
        );
    }
    // ... and nothing else is served on those paths.
    let mut paths: Vec<&String> = documented.iter().map(|(_, p)| p).collect();
    paths.dedup();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.iter().any(|(m, p)| m == method && p == path) {
                continue;
            }
            let concrete = path.replace("{name}", "doc").replace("{run_id}", &run_id);
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            let r = http
                .call(
                    m,
                    &format!("{}{concrete}", node.base),
                    Some(ADMIN),
                    &[],
                    Body::None,
                )
                .await;
            assert_error(&format!("{method} {path}"), &r, 405, "method_not_allowed");
        }
    }
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
