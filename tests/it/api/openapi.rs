//! The OpenAPI document: valid, and listing exactly the routes served.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api_replica::{assert_error, start_api_replica, Body, Http, ADMIN, PIPELINE, READER};
use crate::harness::{external_tool, TestDb};
use crate::replica::temp_dir;

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
        ("GET", "/v1/backfills/{backfill_id}"),
        ("POST", "/v1/backfills/{backfill_id}/cancel"),
        ("GET", "/v1/cluster"),
        ("GET", "/v1/whoami"),
        ("GET", "/v1/preview"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/{run_id}"),
        ("POST", "/v1/runs/{run_id}/rerun"),
        ("POST", "/v1/runs/{run_id}/cancel"),
        ("GET", "/v1/schedules"),
        ("POST", "/v1/schedules"),
        ("GET", "/v1/schedules/{name}"),
        ("PUT", "/v1/schedules/{name}"),
        ("PATCH", "/v1/schedules/{name}"),
        ("DELETE", "/v1/schedules/{name}"),
        ("POST", "/v1/schedules/{name}/pause"),
        ("POST", "/v1/schedules/{name}/resume"),
        ("POST", "/v1/schedules/{name}/run"),
        ("GET", "/v1/schedules/{name}/next"),
        ("GET", "/v1/schedules/{name}/history"),
        ("GET", "/v1/schedules/{name}/runs"),
        ("POST", "/v1/schedules/{name}/backfill"),
        ("GET", "/v1/schedules/{name}/backfills"),
        ("GET", "/scheduler/schedules"),
        ("POST", "/scheduler/schedules"),
        ("DELETE", "/scheduler/schedules/{name}"),
        ("POST", "/scheduler/schedules/{name}/run"),
        ("POST", "/scheduler/schedules/{name}/pause"),
        ("POST", "/scheduler/schedules/{name}/resume"),
        ("GET", "/scheduler/runs"),
        ("GET", "/scheduler/runs/{run_id}"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected, "the documented routes");

    // Every documented operation is served (no route 404, no 405) ...
    let created = http
        .create_schedule(
            &node.base,
            json!({"name": "doc", "pipeline": PIPELINE, "cron": "@daily"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let run = http
        .post(&node.base, "/v1/schedules/doc/run", Some(ADMIN))
        .await;
    let run_id = run.json()["run_id"].as_str().expect("run id").to_string();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let backfill = http
        .call(
            Method::POST,
            &format!("{}/v1/schedules/doc/backfill", node.base),
            Some(ADMIN),
            &[],
            Body::Json(
                json!({"start": (hour_ago - chrono::Duration::hours(1)).to_rfc3339(),
                              "end": hour_ago.to_rfc3339()}),
            ),
        )
        .await;
    assert_eq!(backfill.status, 202, "{}", backfill.text);
    let backfill_id = backfill.json()["backfill_id"]
        .as_str()
        .expect("backfill id")
        .to_string();
    // A documented operation on `doc` and its run, as the admin.
    let send = |method: &str, path: &str, body: Body| {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let concrete = path
            .replace("{name}", "doc")
            .replace("{run_id}", &run_id)
            .replace("{backfill_id}", &backfill_id);
        let url = format!("{}{concrete}", node.base);
        let http = &http;
        async move { http.call(m, &url, Some(ADMIN), &[], body).await }
    };
    // DELETE last, so the schedule exists for the others.
    let mut order = documented.clone();
    order.sort_by_key(|(m, _)| m == "DELETE");
    for (method, path) in &order {
        let body = match method.as_str() {
            "POST" if path == "/v1/schedules" => Body::Json(json!({})),
            "PUT" => Body::Json(json!({"pipeline": PIPELINE, "cron": "@daily"})),
            "PATCH" => Body::Json(json!({"description": "documented"})),
            _ => Body::None,
        };
        let r = send(method, path, body).await;
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
            let r = send(method, path, Body::None).await;
            if path.starts_with("/scheduler/") {
                // The compatibility routes answer in FastAPI's shape.
                assert_eq!(r.status, 405, "{method} {path}: {}", r.text);
                assert!(
                    r.json()["detail"].is_string(),
                    "{method} {path}: {}",
                    r.text
                );
            } else {
                assert_error(&format!("{method} {path}"), &r, 405, "method_not_allowed");
            }
        }
    }
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
