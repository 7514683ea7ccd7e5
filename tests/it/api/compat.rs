//! The original service's `/scheduler/…` API through a real replica: every
//! endpoint with the original's request bodies, each answer checked field
//! by field (and type by type) against the original's response models
//! (`ScheduleResponse`, `JobRun`, the small acknowledgements), its error
//! texts in FastAPI's `{"detail": …}` shape, the tokens, and the same
//! schedules seen through `/v1` and back.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use super::snapshot;
use crate::api_replica::{start_api_replica, Body, Http, Reply, ADMIN, PIPELINE, READER};
use crate::harness::{wait_for, TestDb};
use crate::replica::temp_dir;

/// The keys of the original's `ScheduleResponse`.
const SCHEDULE_KEYS: [&str; 8] = [
    "name",
    "pipeline",
    "schedule_type",
    "cron_expression",
    "interval_minutes",
    "timezone",
    "enabled",
    "next_run",
];

/// The keys of the original's `JobRun` (with its `duration_seconds`).
const RUN_KEYS: [&str; 10] = [
    "run_id",
    "schedule_name",
    "pipeline",
    "status",
    "scheduled_at",
    "started_at",
    "completed_at",
    "error",
    "result",
    "duration_seconds",
];

/// Checks `v` is a `ScheduleResponse`: exactly its keys, each of its type.
fn assert_schedule_shape(v: &Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = SCHEDULE_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "ScheduleResponse keys: {v}");
    for key in ["name", "pipeline", "timezone"] {
        assert!(v[key].is_string(), "{key} is a string: {v}");
    }
    assert!(
        ["cron", "interval", "date"].contains(&v["schedule_type"].as_str().unwrap_or_default()),
        "schedule_type: {v}"
    );
    assert!(
        v["cron_expression"].is_string() || v["cron_expression"].is_null(),
        "{v}"
    );
    assert!(
        v["interval_minutes"].is_u64() || v["interval_minutes"].is_null(),
        "interval_minutes is an integer or null: {v}"
    );
    assert!(v["enabled"].is_boolean(), "{v}");
    assert!(
        v["next_run"].is_null() || offset_time(&v["next_run"]).is_some(),
        "next_run is ISO 8601 or null: {v}"
    );
}

/// Checks `v` is a `JobRun`: exactly its keys, each of its type.
fn assert_run_shape(v: &Value) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = RUN_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "JobRun keys: {v}");
    for key in ["run_id", "schedule_name", "pipeline", "status"] {
        assert!(v[key].is_string(), "{key} is a string: {v}");
    }
    assert!(offset_time(&v["scheduled_at"]).is_some(), "{v}");
    for key in ["started_at", "completed_at"] {
        assert!(
            v[key].is_null() || offset_time(&v[key]).is_some(),
            "{key}: {v}"
        );
    }
    assert!(v["error"].is_null() || v["error"].is_string(), "{v}");
    assert!(v["result"].is_null() || v["result"].is_object(), "{v}");
    assert!(
        v["duration_seconds"].is_null() || v["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0),
        "{v}"
    );
}

fn offset_time(v: &Value) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(v.as_str()?).ok()
}

/// Checks FastAPI's error shape, `{"detail": "…"}` and nothing else, with
/// `status`; returns the text.
fn detail(what: &str, r: &Reply, status: u16) -> String {
    assert_eq!(r.status, status, "{what}: status; body {}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        r.header("content-type")
    );
    let body = r.json();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "{what}: only `detail`: {body}"
    );
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: detail is a string: {body}"))
        .to_string()
}

/// `method path` with a JSON body (or none) as `token`.
async fn send(
    http: &Http,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let body = body.map_or(Body::None, Body::Json);
    http.call(method, &format!("{base}{path}"), token, &[], body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compat_endpoint_answers_in_the_original_shapes() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-compat");
    let node = start_api_replica(&db.url, &dir, "api-compat").await;
    let http = Http::new();
    let base = node.base.as_str();

    // The original's bodies (ScheduleCreate): a cron in a zone, with params.
    let finra = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules",
        Some(ADMIN),
        Some(
            json!({"name": "daily_finra", "pipeline": PIPELINE, "cron": "0 6 * * 1-5",
                    "timezone": "America/New_York", "params": {"tier": "T1"}}),
        ),
    )
    .await;
    assert_eq!(finra.status, 200, "{}", finra.text);
    let finra = finra.json();
    assert_schedule_shape(&finra);
    assert_eq!(finra["name"], "daily_finra");
    assert_eq!(finra["pipeline"], PIPELINE);
    assert_eq!(finra["schedule_type"], "cron");
    assert_eq!(finra["cron_expression"], "0 6 * * 1-5");
    assert_eq!(finra["interval_minutes"], Value::Null);
    assert_eq!(finra["timezone"], "America/New_York");
    assert_eq!(finra["enabled"], true);
    // 06:00 in New York, written with New York's offset, as APScheduler's
    // isoformat() wrote it; the same instant /v1 reports.
    let next = offset_time(&finra["next_run"]).expect("next_run");
    assert_eq!((next.hour(), next.minute(), next.second()), (6, 0, 0));
    assert!(
        [-4 * 3600, -5 * 3600].contains(&next.offset().local_minus_utc()),
        "{next}"
    );
    let v1 = http
        .get(base, "/v1/schedules/daily_finra", Some(READER))
        .await
        .json();
    assert_eq!(
        offset_time(&v1["next_run"]).map(|t| t.with_timezone(&Utc)),
        Some(next.with_timezone(&Utc))
    );
    assert_eq!(v1["params"], json!({"tier": "T1"}));

    // An interval in minutes, without the optional keys.
    let hourly = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules",
        Some(ADMIN),
        Some(json!({"name": "hourly_prices", "pipeline": PIPELINE, "interval_minutes": 60})),
    )
    .await;
    assert_eq!(hourly.status, 200, "{}", hourly.text);
    let hourly = hourly.json();
    assert_schedule_shape(&hourly);
    assert_eq!(hourly["schedule_type"], "interval");
    assert_eq!(hourly["cron_expression"], Value::Null);
    assert_eq!(hourly["interval_minutes"], 60);
    assert_eq!(hourly["timezone"], "UTC");
    let next = offset_time(&hourly["next_run"]).expect("next_run");
    assert_eq!((next.minute(), next.second()), (0, 0), "{next}");
    assert!(
        hourly["next_run"]
            .as_str()
            .is_some_and(|s| s.ends_with("+00:00")),
        "{hourly}"
    );

    // The list: both, by name, in the same shape (read-only token).
    let listed = http.get(base, "/scheduler/schedules", Some(READER)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed = listed.json();
    let items = listed.as_array().expect("a JSON list");
    assert_eq!(items.len(), 2, "{listed}");
    items.iter().for_each(assert_schedule_shape);
    assert_eq!(items[0]["name"], "daily_finra");
    assert_eq!(items[1]["name"], "hourly_prices");
    for (got, want) in items.iter().zip([&finra, &hourly]) {
        for key in SCHEDULE_KEYS.iter().filter(|k| **k != "next_run") {
            assert_eq!(got[*key], want[*key], "{key} listed as created");
        }
    }

    // Creating an existing name replaces it (replace_existing=True), as a
    // PUT: a new version, the params the new body gives.
    let replaced = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules",
        Some(ADMIN),
        Some(json!({"name": "daily_finra", "pipeline": PIPELINE, "interval_minutes": 30})),
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    let replaced = replaced.json();
    assert_schedule_shape(&replaced);
    assert_eq!(replaced["schedule_type"], "interval");
    assert_eq!(replaced["interval_minutes"], 30);
    assert_eq!(replaced["cron_expression"], Value::Null);
    let v1 = http
        .get(base, "/v1/schedules/daily_finra", Some(READER))
        .await
        .json();
    assert_eq!(v1["version"], 2);
    assert_eq!(v1["interval_seconds"], 1800);
    assert_eq!(v1["params"], json!({}));

    // Pause: the acknowledgement, and the schedule shows paused with no next run.
    let paused = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules/hourly_prices/pause",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json(), json!({"paused": "hourly_prices"}));
    let listed = http
        .get(base, "/scheduler/schedules", Some(READER))
        .await
        .json();
    assert_eq!(listed[1]["enabled"], false);
    assert_eq!(listed[1]["next_run"], Value::Null);
    let v1 = http
        .get(base, "/v1/schedules/hourly_prices", Some(READER))
        .await
        .json();
    assert_eq!(v1["enabled"], false);
    // A replace keeps the pause (as PUT does).
    let again = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules",
        Some(ADMIN),
        Some(json!({"name": "hourly_prices", "pipeline": PIPELINE, "interval_minutes": 60})),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["enabled"], false);
    assert_eq!(again.json()["next_run"], Value::Null);
    // Resume.
    let resumed = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules/hourly_prices/resume",
        Some(ADMIN),
        Some(json!({})),
    )
    .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.json(), json!({"resumed": "hourly_prices"}));
    let listed = http
        .get(base, "/scheduler/schedules", Some(READER))
        .await
        .json();
    assert_eq!(listed[1]["enabled"], true);
    assert!(listed[1]["next_run"].is_string(), "{listed}");

    // Run now: a run id, and its JobRun record once the replica ran it.
    let run = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules/hourly_prices/run",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(run.status, 200, "{}", run.text);
    let run = run.json();
    assert_eq!(run.as_object().map(|o| o.len()), Some(1), "{run}");
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    uuid::Uuid::parse_str(&run_id).expect("a UUID");
    let record = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the run completed",
        || {
            let http = http.clone();
            let path = format!("/scheduler/runs/{run_id}");
            async move {
                let r = http.get(base, &path, Some(READER)).await;
                (r.status == 200 && r.json()["status"] == "completed").then(|| r.json())
            }
        },
    )
    .await;
    assert_run_shape(&record);
    assert_eq!(record["run_id"], run_id.as_str());
    assert_eq!(record["schedule_name"], "hourly_prices");
    assert_eq!(record["pipeline"], PIPELINE);
    assert_eq!(record["error"], Value::Null);
    let (started, completed) = (
        offset_time(&record["started_at"]).expect("started_at"),
        offset_time(&record["completed_at"]).expect("completed_at"),
    );
    let duration = record["duration_seconds"].as_f64().expect("duration");
    let expected = (completed - started).num_microseconds().expect("µs") as f64 / 1e6;
    assert!(
        (duration - expected).abs() < 1e-6,
        "{duration} vs {expected}"
    );
    // The list, filtered by schedule, shows the same record (and, should
    // an hour have begun meanwhile, a tick of the same schedule).
    let runs = http
        .get(
            base,
            "/scheduler/runs?schedule_name=hourly_prices&limit=10",
            Some(READER),
        )
        .await;
    assert_eq!(runs.status, 200, "{}", runs.text);
    let runs = runs.json();
    let runs = runs.as_array().expect("a JSON list");
    runs.iter().for_each(assert_run_shape);
    assert!(
        runs.iter().all(|r| r["schedule_name"] == "hourly_prices"),
        "{runs:?}"
    );
    assert!(runs.contains(&record), "{runs:?}");
    let other = http
        .get(
            base,
            "/scheduler/runs?schedule_name=daily_finra",
            Some(READER),
        )
        .await
        .json();
    assert!(
        other.as_array().is_some_and(|l| l
            .iter()
            .all(|r| r["schedule_name"] == "daily_finra" && r["run_id"] != run_id.as_str())),
        "{other}"
    );

    // The original's errors, in its words and FastAPI's shape; nothing
    // stored. Both schedules paused first, so no tick changes the ledger.
    for name in ["daily_finra", "hourly_prices"] {
        let path = format!("/scheduler/schedules/{name}/pause");
        let r = send(&http, base, Method::POST, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let before = snapshot(&c).await;
    let post = |body: Value| {
        send(
            &http,
            base,
            Method::POST,
            "/scheduler/schedules",
            Some(ADMIN),
            Some(body),
        )
    };
    for body in [
        json!({"name": "x", "pipeline": PIPELINE}),
        json!({"name": "x", "pipeline": PIPELINE, "cron": null, "interval_minutes": 0}),
        json!({"name": "x", "pipeline": PIPELINE, "cron": "", "timezone": "UTC", "params": {}}),
    ] {
        let r = post(body.clone()).await;
        assert_eq!(
            detail(&format!("{body}"), &r, 400),
            "Either cron or interval_minutes required"
        );
    }
    // Values no schema can judge (a cron's fields, a zone, the replicas'
    // pipelines) are read, then refused: 422, as FastAPI says for a model
    // that does not validate.
    for (body, says) in [
        (
            json!({"name": "x", "pipeline": PIPELINE, "cron": "0 25 * * *"}),
            "hour field",
        ),
        (
            json!({"name": "x", "pipeline": "no.such", "cron": "@daily"}),
            "unknown pipeline",
        ),
        (
            json!({"name": "x", "pipeline": PIPELINE, "cron": "@daily", "timezone": "Mars/Base"}),
            "timezone",
        ),
        (
            json!({"name": "x", "pipeline": PIPELINE, "interval_minutes": -5}),
            "interval_minutes",
        ),
        (
            json!({"name": "x", "pipeline": PIPELINE, "cron": "@daily", "interval_minutes": 5}),
            "not both",
        ),
        (
            json!({"name": "bad name", "pipeline": PIPELINE, "cron": "@daily"}),
            "name",
        ),
    ] {
        let text = detail(&format!("{body}"), &post(body.clone()).await, 422);
        assert!(text.contains(says), "{body}: {text:?} should say {says:?}");
    }
    // A body outside the documented shape: 400.
    for (body, says) in [
        (
            json!({"name": "x", "pipeline": PIPELINE, "interval_minutes": "5"}),
            "interval_minutes: must be an integer",
        ),
        (
            json!({"name": "x", "pipeline": PIPELINE, "cron": "@daily", "enabled": false}),
            "enabled: unknown key",
        ),
        (
            json!({"pipeline": PIPELINE, "cron": "@daily"}),
            "name: is required",
        ),
        (
            json!({"name": "x", "pipeline": PIPELINE, "cron": "@daily", "params": [1]}),
            "params: must be a JSON object",
        ),
    ] {
        let text = detail(&format!("{body}"), &post(body.clone()).await, 400);
        assert!(text.contains(says), "{body}: {text:?} should say {says:?}");
    }
    let not_json = http
        .call(
            Method::POST,
            &format!("{base}/scheduler/schedules"),
            Some(ADMIN),
            &[],
            Body::Raw("text/plain", b"name=x".to_vec()),
        )
        .await;
    detail("text/plain body", &not_json, 415);
    for (method, path) in [
        (Method::DELETE, "/scheduler/schedules/nope"),
        (Method::POST, "/scheduler/schedules/nope/run"),
        (Method::POST, "/scheduler/schedules/nope/pause"),
        (Method::POST, "/scheduler/schedules/nope/resume"),
    ] {
        let r = send(&http, base, method.clone(), path, Some(ADMIN), None).await;
        assert_eq!(
            detail(&format!("{method} {path}"), &r, 404),
            "Schedule not found: nope"
        );
    }
    let bad_key = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules/hourly_prices/pause",
        Some(ADMIN),
        Some(json!({"note": "why"})),
    )
    .await;
    assert!(detail("pause with a key", &bad_key, 400).contains("note"));
    // The read-only token may only read; no token is a 401.
    for (method, path, body) in [
        (
            Method::POST,
            "/scheduler/schedules",
            Some(json!({"name": "x", "pipeline": PIPELINE, "cron": "@daily"})),
        ),
        (Method::DELETE, "/scheduler/schedules/hourly_prices", None),
        (Method::POST, "/scheduler/schedules/hourly_prices/run", None),
        (
            Method::POST,
            "/scheduler/schedules/hourly_prices/pause",
            None,
        ),
        (
            Method::POST,
            "/scheduler/schedules/hourly_prices/resume",
            None,
        ),
    ] {
        let r = send(&http, base, method.clone(), path, Some(READER), body).await;
        detail(&format!("read-only {method} {path}"), &r, 403);
    }
    let anonymous = http.get(base, "/scheduler/schedules", None).await;
    detail("no token", &anonymous, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    // Bad parameters of the run list; unknown runs; methods not served.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "schedule_name=bad%20name",
        "status=failed",
    ] {
        let r = http
            .get(base, &format!("/scheduler/runs?{query}"), Some(READER))
            .await;
        detail(query, &r, 400);
    }
    let unknown = http
        .get(base, "/scheduler/runs/not-a-run", Some(READER))
        .await;
    assert_eq!(
        detail("unknown run", &unknown, 404),
        "Run not found: not-a-run"
    );
    let unknown = format!("/scheduler/runs/{}", uuid::Uuid::now_v7());
    detail(
        "unknown run id",
        &http.get(base, &unknown, Some(READER)).await,
        404,
    );
    let r = http
        .get(base, "/scheduler/schedules/hourly_prices", Some(READER))
        .await;
    detail("GET of a schedule (the original had none)", &r, 405);
    assert_eq!(
        snapshot(&c).await,
        before,
        "a refused request stored nothing"
    );

    // Delete: the acknowledgement, then the original's 404.
    let deleted = send(
        &http,
        base,
        Method::DELETE,
        "/scheduler/schedules/hourly_prices",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json(), json!({"deleted": "hourly_prices"}));
    let again = send(
        &http,
        base,
        Method::DELETE,
        "/scheduler/schedules/hourly_prices",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        detail("second delete", &again, 404),
        "Schedule not found: hourly_prices"
    );
    // Its history stays readable.
    let runs = http
        .get(
            base,
            "/scheduler/runs?schedule_name=hourly_prices",
            Some(READER),
        )
        .await
        .json();
    assert!(
        runs.as_array().is_some_and(|l| l.contains(&record)),
        "{runs}"
    );
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_and_v1_see_the_same_schedules_and_compat_ones_fire() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("api-compat-fire");
    let node = start_api_replica(&db.url, &dir, "api-compat-fire").await;
    let http = Http::new();
    let base = node.base.as_str();

    // Created through /scheduler (a cron with seconds, as this scheduler
    // reads them): it fires on the replica, and /v1 shows it and its runs.
    let created = send(
        &http,
        base,
        Method::POST,
        "/scheduler/schedules",
        Some(ADMIN),
        Some(
            json!({"name": "every_second", "pipeline": PIPELINE, "cron": "* * * * * *",
                    "params": {"from": "compat"}}),
        ),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let tick = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "a tick of every_second completed",
        || {
            let http = http.clone();
            async move {
                let r = http
                    .get(
                        base,
                        "/v1/runs?schedule=every_second&trigger=schedule&status=completed",
                        Some(READER),
                    )
                    .await;
                r.json()["items"].get(0).cloned()
            }
        },
    )
    .await;
    let v1 = http
        .get(base, "/v1/schedules/every_second", Some(READER))
        .await;
    assert_eq!(v1.status, 200, "{}", v1.text);
    assert_eq!(v1.json()["cron"], "* * * * * *");
    assert_eq!(v1.json()["params"], json!({"from": "compat"}));
    // The tick is a JobRun too.
    let id = tick["run_id"].as_str().expect("run id");
    let record = http
        .get(base, &format!("/scheduler/runs/{id}"), Some(READER))
        .await;
    assert_eq!(record.status, 200, "{}", record.text);
    let record = record.json();
    assert_run_shape(&record);
    assert_eq!(record["status"], "completed");
    assert_eq!(record["schedule_name"], "every_second");
    assert_eq!(record["scheduled_at"], tick["scheduled_at"]);

    // Created through /v1: shown by /scheduler, each kind mapped honestly.
    let soon = (Utc::now() + chrono::Duration::days(30))
        .with_nanosecond(0)
        .expect("whole seconds")
        .to_rfc3339();
    for body in [
        json!({"name": "v1_interval", "pipeline": PIPELINE, "interval": "15m"}),
        json!({"name": "v1_odd_interval", "pipeline": PIPELINE, "interval": "90s"}),
        json!({"name": "v1_once", "pipeline": PIPELINE, "run_at": soon, "timezone": "Europe/London"}),
    ] {
        let r = http.create_schedule(base, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let listed = http.get(base, "/scheduler/schedules", Some(READER)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed = listed.json();
    let by_name = |name: &str| {
        listed
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed: {listed}"))
    };
    let interval = by_name("v1_interval");
    assert_schedule_shape(&interval);
    assert_eq!(
        (&interval["schedule_type"], &interval["interval_minutes"]),
        (&json!("interval"), &json!(15))
    );
    let odd = by_name("v1_odd_interval");
    assert_schedule_shape(&odd);
    assert_eq!(
        (&odd["schedule_type"], &odd["interval_minutes"]),
        (&json!("interval"), &Value::Null)
    );
    let once = by_name("v1_once");
    assert_schedule_shape(&once);
    assert_eq!(once["schedule_type"], "date");
    assert_eq!(once["cron_expression"], Value::Null);
    assert_eq!(once["interval_minutes"], Value::Null);
    assert_eq!(once["timezone"], "Europe/London");
    assert_eq!(
        offset_time(&once["next_run"]).map(|t| t.with_timezone(&Utc)),
        DateTime::parse_from_rfc3339(&soon)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    );
    assert_schedule_shape(&by_name("every_second"));
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
