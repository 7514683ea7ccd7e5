//! Pipelines against real processes and a real HTTP server.
//!
//! The HTTP tests start an axum server on 127.0.0.1:0 that records every
//! request; the command tests run real programs (through `sh` where a test
//! needs shell syntax — the pipeline itself never adds a shell).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use spine_scheduler::pipeline::command::{CommandConfig, CommandPipeline};
use spine_scheduler::pipeline::http::{build_client, HttpConfig, HttpPipeline};
use spine_scheduler::pipeline::{config, Pipeline, PipelineError, RunContext};
use spine_scheduler::types::RunTrigger;
use uuid::Uuid;

const SECRET: &[u8] = b"correct horse battery staple";

fn ctx(pipeline: &str) -> RunContext {
    let mut params = Map::new();
    params.insert("tier".into(), json!("T1"));
    params.insert("days_to_keep".into(), json!(90));
    RunContext {
        run_id: Uuid::now_v7(),
        schedule: "price_updates".into(),
        pipeline: pipeline.into(),
        scheduled_at: Utc
            .with_ymd_and_hms(2027, 1, 4, 14, 15, 0)
            .single()
            .expect("valid instant"),
        attempt: 2,
        trigger: RunTrigger::Retry,
        params,
        cancel: spine_scheduler::pipeline::CancelSignal::never(),
    }
}

// ---------------------------------------------------------------- http

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

type Requests = Arc<Mutex<Vec<Recorded>>>;

/// A server that records every request and answers by path.
struct TestServer {
    base: String,
    requests: Requests,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Requests::default();
        let app = Router::new()
            .fallback(respond)
            .with_state(Arc::clone(&requests));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            base: format!("http://{addr}"),
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn respond(
    State(requests): State<Requests>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    requests.lock().expect("lock").push(Recorded {
        method,
        path: uri.path().to_string(),
        headers,
        body: body.to_vec(),
    });
    let json = [(header::CONTENT_TYPE, "application/json")];
    match uri.path() {
        "/ok" => (StatusCode::OK, json, r#"{"accepted": true}"#).into_response(),
        "/text" => (StatusCode::OK, "fine, thanks").into_response(),
        "/big" => {
            let big = json!({ "data": "x".repeat(70 * 1024) }).to_string();
            (StatusCode::OK, json, big).into_response()
        }
        "/fail" => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("backend down: {}", "z".repeat(1000)),
        )
            .into_response(),
        "/moved" => (StatusCode::FOUND, [(header::LOCATION, "/ok")]).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn http(config: HttpConfig) -> HttpPipeline {
    HttpPipeline::new(config, build_client().expect("client")).expect("valid config")
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[tokio::test]
async fn http_posts_signed_json_with_the_run_identity() {
    let server = TestServer::start().await;
    let mut config = HttpConfig::new(server.url("/ok"));
    config.headers.insert("X-Team".into(), "prices".into());
    config.hmac_secret = Some(SECRET.to_vec());
    let run = ctx("prices.ingest_current");

    let outcome = http(config).run(run.clone()).await;

    assert_eq!(
        outcome,
        Ok(Some(json!({"status": 200, "body": {"accepted": true}})))
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/ok");
    assert_eq!(header(r, "content-type"), Some("application/json"));
    assert_eq!(
        header(r, "idempotency-key"),
        Some(run.run_id.to_string().as_str())
    );
    assert_eq!(
        header(r, "user-agent"),
        Some(concat!("spine-scheduler/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(header(r, "x-team"), Some("prices"));

    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(
        body,
        json!({
            "run_id": run.run_id.to_string(),
            "schedule": "price_updates",
            "pipeline": "prices.ingest_current",
            "scheduled_at": "2027-01-04T14:15:00Z",
            "attempt": 2,
            "trigger": "retry",
            "params": {"tier": "T1", "days_to_keep": 90},
        })
    );

    // Verify the signature the way a receiver would: HMAC of the raw bytes.
    let signature = header(r, "x-spine-signature").expect("signature header");
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
    mac.update(&r.body);
    mac.verify_slice(&unhex(hex))
        .expect("the signature is HMAC-SHA256 of the body under the secret");
    let mut wrong = Hmac::<Sha256>::new_from_slice(b"another secret").expect("key");
    wrong.update(&r.body);
    assert!(wrong.verify_slice(&unhex(hex)).is_err());
}

#[tokio::test]
async fn http_sends_the_configured_method_and_no_signature_without_a_secret() {
    let server = TestServer::start().await;
    let mut config = HttpConfig::new(server.url("/text"));
    config.method = "put".into();
    let outcome = http(config).run(ctx("p")).await;
    // A body that is not JSON is left out of the result.
    assert_eq!(outcome, Ok(Some(json!({"status": 200}))));
    let requests = server.requests();
    assert_eq!(requests[0].method, Method::PUT);
    assert_eq!(header(&requests[0], "x-spine-signature"), None);
}

#[tokio::test]
async fn http_leaves_out_response_bodies_over_64_kib() {
    let server = TestServer::start().await;
    let outcome = http(HttpConfig::new(server.url("/big")))
        .run(ctx("p"))
        .await;
    assert_eq!(outcome, Ok(Some(json!({"status": 200}))));
}

#[tokio::test]
async fn http_non_2xx_fails_with_status_and_excerpt() {
    let server = TestServer::start().await;
    let url = server.url("/fail");
    let err = http(HttpConfig::new(&url))
        .run(ctx("p"))
        .await
        .expect_err("503 is a failure");
    let excerpt: String = format!("backend down: {}", "z".repeat(1000))
        .chars()
        .take(500)
        .collect();
    assert_eq!(
        err.message,
        format!("POST {url} returned 503 Service Unavailable: {excerpt}")
    );
    assert_eq!(err.result, Some(json!({"status": 503, "body": excerpt})));
}

#[tokio::test]
async fn http_redirects_are_failures_not_followed() {
    let server = TestServer::start().await;
    let url = server.url("/moved");
    let err = http(HttpConfig::new(&url))
        .run(ctx("p"))
        .await
        .expect_err("302 is a failure");
    assert_eq!(err.message, format!("POST {url} returned 302 Found"));
    assert_eq!(server.requests().len(), 1, "the redirect was not followed");
}

#[tokio::test]
async fn http_slow_endpoint_times_out() {
    let server = TestServer::start().await;
    let url = server.url("/slow");
    let mut config = HttpConfig::new(&url);
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = http(config).run(ctx("p")).await.expect_err("times out");
    assert_eq!(
        err,
        PipelineError::new(format!("POST {url} timed out after 300ms"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_connection_refused_is_a_clear_error() {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let err = http(HttpConfig::new(&url))
        .run(ctx("p"))
        .await
        .expect_err("refused");
    assert!(
        err.message.starts_with(&format!("POST {url} failed: ")),
        "{}",
        err.message
    );
    assert!(
        err.message.to_lowercase().contains("connection refused"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn http_pipelines_share_one_client_across_runs() {
    let server = TestServer::start().await;
    let client = build_client().expect("client");
    let a = HttpPipeline::new(HttpConfig::new(server.url("/ok")), client.clone()).expect("a");
    let b = HttpPipeline::new(HttpConfig::new(server.url("/text")), client).expect("b");
    for _ in 0..3 {
        assert!(a.run(ctx("a")).await.is_ok());
        assert!(b.run(ctx("b")).await.is_ok());
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    let keys: std::collections::BTreeSet<_> = requests
        .iter()
        .filter_map(|r| header(r, "idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys.len(), 6, "every run has its own idempotency key");
}

// ------------------------------------------------------------- command

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("spine-pipelines-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(argv: &[&str]) -> CommandConfig {
    CommandConfig::new(argv.iter().copied())
}

fn pipeline(config: CommandConfig) -> CommandPipeline {
    CommandPipeline::new(config).expect("valid config")
}

/// Runs `sh -c script` with `arg` as `$1`.
fn sh(script: &str, arg: &Path) -> CommandConfig {
    CommandConfig::new([
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        "sh".to_string(),
        arg.display().to_string(),
    ])
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
    }
}

async fn wait_until_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

fn pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

#[tokio::test]
async fn command_exit_0_succeeds_with_output_tails() {
    let p = pipeline(command(&["sh", "-c", "echo hello; echo careful >&2"]));
    assert_eq!(
        p.run(ctx("p")).await,
        Ok(Some(json!({
            "exit_code": 0,
            "stdout_tail": "hello\n",
            "stderr_tail": "careful\n",
        })))
    );
}

#[tokio::test]
async fn command_output_keeps_only_the_last_4_kib() {
    let p = pipeline(command(&["sh", "-c", "seq 1 200000; echo done >&2"]));
    let result = p.run(ctx("p")).await.expect("success").expect("result");
    let tail = result["stdout_tail"].as_str().expect("stdout tail");
    assert_eq!(tail.len(), 4096);
    assert!(tail.ends_with("199999\n200000\n"), "{tail}");
    assert_eq!(result["stderr_tail"], "done\n");
}

#[tokio::test]
async fn command_non_zero_exit_fails_with_the_status() {
    let p = pipeline(command(&[
        "sh",
        "-c",
        "echo partial; echo broken >&2; exit 3",
    ]));
    let err = p.run(ctx("p")).await.expect_err("exit 3");
    assert_eq!(err.message, "command exited with status 3");
    assert_eq!(
        err.result,
        Some(json!({"exit_code": 3, "stdout_tail": "partial\n", "stderr_tail": "broken\n"}))
    );
}

#[tokio::test]
async fn command_killed_by_a_signal_says_so() {
    let p = pipeline(command(&["sh", "-c", "kill -KILL $$"]));
    let err = p.run(ctx("p")).await.expect_err("killed");
    assert_eq!(err.message, "command was killed by signal 9 (SIGKILL)");
    let result = err.result.expect("result");
    assert_eq!(result["exit_code"], Value::Null);
    assert_eq!(result["signal"], 9);
}

#[tokio::test]
async fn command_params_arrive_as_json_on_stdin() {
    let p = pipeline(command(&["cat"]));
    let run = ctx("p");
    let result = p.run(run.clone()).await.expect("success").expect("result");
    let echoed: Value =
        serde_json::from_str(result["stdout_tail"].as_str().expect("stdout")).expect("JSON");
    assert_eq!(echoed, Value::Object(run.params));
}

#[tokio::test]
async fn command_that_ignores_large_params_still_succeeds() {
    let p = pipeline(command(&["true"]));
    let mut run = ctx("p");
    run.params.insert("blob".into(), json!("b".repeat(1 << 20)));
    let result = p.run(run).await.expect("success").expect("result");
    assert_eq!(result["exit_code"], 0);
}

#[tokio::test]
async fn command_sees_the_run_env_and_not_the_schedulers() {
    let mut config = command(&["env"]);
    config.env.insert("LOG_LEVEL".into(), "debug".into());
    let run = ctx("maintenance.cleanup_old_data");
    let result = pipeline(config)
        .run(run.clone())
        .await
        .expect("success")
        .expect("result");
    let env: BTreeMap<&str, &str> = result["stdout_tail"]
        .as_str()
        .expect("stdout")
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let run_id = run.run_id.to_string();
    let expected = [
        ("SPINE_RUN_ID", run_id.as_str()),
        ("SPINE_SCHEDULE", "price_updates"),
        ("SPINE_PIPELINE", "maintenance.cleanup_old_data"),
        ("SPINE_SCHEDULED_AT", "2027-01-04T14:15:00Z"),
        ("SPINE_ATTEMPT", "2"),
        ("SPINE_TRIGGER", "retry"),
        ("LOG_LEVEL", "debug"),
    ];
    for (key, value) in expected {
        assert_eq!(env.get(key), Some(&value), "{key} in {env:?}");
    }
    if std::env::var_os("PATH").is_some() {
        assert!(env.contains_key("PATH"), "PATH is passed through");
    }
    // cargo sets this for the test process; a command must not inherit it.
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        assert!(!env.contains_key("CARGO_MANIFEST_DIR"), "{env:?}");
    }
}

#[tokio::test]
async fn command_runs_in_its_working_dir() {
    let dir = TempDir::new();
    let mut config = command(&["pwd"]);
    config.working_dir = Some(dir.0.clone());
    let result = pipeline(config)
        .run(ctx("p"))
        .await
        .expect("success")
        .expect("result");
    let printed = result["stdout_tail"].as_str().expect("stdout").trim_end();
    assert_eq!(
        Path::new(printed).canonicalize().expect("printed dir"),
        dir.0.canonicalize().expect("temp dir")
    );

    let mut config = command(&["pwd"]);
    config.working_dir = Some(dir.path("missing"));
    let err = pipeline(config)
        .run(ctx("p"))
        .await
        .expect_err("no such dir");
    assert!(
        err.message.starts_with(&format!(
            "working directory {}",
            dir.path("missing").display()
        )),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn command_missing_executable_is_named() {
    let err = pipeline(command(&["spine-no-such-program", "--flag"]))
        .run(ctx("p"))
        .await
        .expect_err("missing");
    assert_eq!(
        err.message,
        "cannot run \"spine-no-such-program\": not found in PATH"
    );
    let err = pipeline(command(&["/nonexistent/spine-no-such-program"]))
        .run(ctx("p"))
        .await
        .expect_err("missing");
    assert_eq!(
        err.message,
        "cannot run \"/nonexistent/spine-no-such-program\": no such file"
    );
}

#[tokio::test]
async fn command_timeout_kills_the_whole_process_group() {
    let dir = TempDir::new();
    let pidfile = dir.path("pids");
    // `$$` is the shell, `$!` its background grandchild of the pipeline.
    let mut config = sh(
        "sleep 30 & echo $$ $! > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"; wait",
        &pidfile,
    );
    config.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = pipeline(config).run(ctx("p")).await.expect_err("times out");
    assert_eq!(
        err.message,
        "command timed out after 1s; its process group was killed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.result.as_ref().map(|r| &r["exit_code"]),
        Some(&Value::Null)
    );
    let pids = pids(&wait_for_file(&pidfile).await);
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            wait_until_dead(pid).await,
            "process {pid} survived the timeout"
        );
    }
}

#[tokio::test]
async fn command_dropping_the_future_kills_the_whole_process_group() {
    let dir = TempDir::new();
    let pidfile = dir.path("pids");
    let config = sh(
        "sleep 30 & echo $$ $! > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"; wait",
        &pidfile,
    );
    let run = tokio::spawn(pipeline(config).run(ctx("p")));
    let pids = pids(&wait_for_file(&pidfile).await);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&pid| alive(pid)), "started");
    run.abort();
    assert!(run.await.is_err_and(|e| e.is_cancelled()));
    for pid in pids {
        assert!(
            wait_until_dead(pid).await,
            "process {pid} survived the drop"
        );
    }
}

#[tokio::test]
async fn command_leftover_background_processes_are_killed_when_it_exits() {
    let dir = TempDir::new();
    let pidfile = dir.path("pid");
    // The background sleep inherits stdout, so the run must not wait for it.
    let config = sh("sleep 30 & echo $! > \"$1\"; echo started", &pidfile);
    let started = Instant::now();
    let result = pipeline(config)
        .run(ctx("p"))
        .await
        .expect("success")
        .expect("result");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(result["stdout_tail"], "started\n");
    let pid = pids(&wait_for_file(&pidfile).await)[0];
    assert!(
        wait_until_dead(pid).await,
        "background process {pid} was left running"
    );
}

// -------------------------------------------------------- pipelines file

#[tokio::test]
async fn pipelines_file_builds_runnable_pipelines() {
    let server = TestServer::start().await;
    let text = format!(
        r#"
pipelines:
  - name: prices.ingest_current
    kind: http
    url: {url}
    headers: {{X-Team: prices}}
    timeout: 5s
    hmac_secret_env: TEST_SPINE_HMAC_SECRET
  - name: maintenance.cleanup_old_data
    kind: command
    argv: ["echo", "cleanup"]
    timeout: 10s
  - name: demo.hello
    kind: log
"#,
        url = server.url("/ok")
    );
    let env = |name: &str| {
        (name == "TEST_SPINE_HMAC_SECRET").then(|| OsString::from("from-the-environment"))
    };
    let registry = config::parse_with_env(&text, &env).expect("valid file");

    let http = registry
        .get("prices.ingest_current")
        .expect("http pipeline");
    assert!(http.run(ctx("prices.ingest_current")).await.is_ok());
    let r = &server.requests()[0];
    assert_eq!(header(r, "x-team"), Some("prices"));
    let hex = header(r, "x-spine-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .expect("signed");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"from-the-environment").expect("key");
    mac.update(&r.body);
    mac.verify_slice(&unhex(hex))
        .expect("signed with the env secret");

    let cmd = registry
        .get("maintenance.cleanup_old_data")
        .expect("command pipeline");
    let result = cmd.run(ctx("p")).await.expect("success").expect("result");
    assert_eq!(result["stdout_tail"], "cleanup\n");

    let log = registry.get("demo.hello").expect("log pipeline");
    assert_eq!(log.run(ctx("p")).await, Ok(Some(json!({"logged": true}))));
}
