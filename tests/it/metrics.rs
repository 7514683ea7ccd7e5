//! `/metrics`: valid Prometheus text exposition (checked by a strict parser
//! here and by `promtool check metrics` when installed), and counters that
//! move.

use std::time::Duration;

use serde_json::json;

use crate::api_replica::{start_api_replica, Http, ADMIN, PIPELINE};
use crate::exposition::Exposition;
use crate::harness::{eventually, external_tool, TestDb};
use crate::replica::temp_dir;

// `outage` imports the parser from here.
pub use crate::exposition::parse_exposition;

#[test]
fn the_parser_refuses_malformed_expositions() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"q\"} 3\n";
    assert!(parse_exposition(ok).is_ok());
    let braces = "# TYPE a_total counter\na_total{route=\"/v1/s/{name}/run\"} 3\n";
    let parsed = parse_exposition(braces).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parsed.value("a_total", &[("route", "/v1/s/{name}/run")]),
        Some(3.0)
    );
    for bad in [
        "a_total 3\n",                           // no TYPE
        "# TYPE a counter\na{x=\"1} 3\n",        // unterminated
        "# TYPE a counter\na -1\n",              // negative counter
        "# TYPE a gauge\na 1\na 2\n",            // duplicate
        "# TYPE a gauge\na 1\n# TYPE a gauge\n", // repeated TYPE
        "# TYPE 1a gauge\n1a 1\n",               // bad name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

async fn scrape(http: &Http, base: &str) -> (String, Exposition) {
    let r = http.get(base, "/metrics", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "content type {:?}",
        r.header("content-type")
    );
    let parsed =
        parse_exposition(&r.text).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{}", r.text));
    (r.text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_exposition_and_counters_move() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("api-metrics");
    let node = start_api_replica(&db.url, &dir, "api-metrics").await;
    let http = Http::new();
    let (text, m) = scrape(&http, &node.base).await;

    if let Some(promtool) = external_tool("SPINE_PROMTOOL", "promtool") {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        child
            .stdin
            .take()
            .expect("promtool stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
        let out = child.wait_with_output().expect("promtool output");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Families with a series from the start (the per-schedule ones,
    // spine_runs_total and spine_run_duration_seconds, appear with their
    // first run).
    for (family, kind) in [
        ("spine_fire_lag_seconds", "histogram"),
        ("spine_claims_total", "counter"),
        ("spine_claim_round_trip_seconds", "histogram"),
        ("spine_runs_in_flight", "gauge"),
        ("spine_replicas_alive", "gauge"),
        ("spine_pending_runs", "gauge"),
        ("spine_is_leader", "gauge"),
        ("spine_leader_changes_total", "counter"),
        ("spine_schedules", "gauge"),
        ("spine_db_pool_connections", "gauge"),
        ("spine_db_pool_max_connections", "gauge"),
        ("spine_clock_offset_seconds", "gauge"),
        ("spine_database_unreachable_since_seconds", "gauge"),
        ("spine_http_requests_total", "counter"),
        ("spine_build_info", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "{family} missing or of the wrong type"
        );
    }
    assert_eq!(
        m.value("spine_db_pool_max_connections", &[("pool", "engine")]),
        Some(8.0)
    );
    assert_eq!(
        m.value("spine_database_unreachable_since_seconds", &[]),
        Some(0.0),
        "the database answers"
    );
    assert_eq!(m.value("spine_pending_runs", &[]), Some(0.0));

    // Counters move: requests, and the schedule gauge refreshed per scrape.
    let route = [
        ("method", "POST"),
        ("route", "/v1/schedules"),
        ("status", "201"),
    ];
    assert_eq!(m.value("spine_http_requests_total", &route), None);
    for name in ["m1", "m2"] {
        let r = http
            .create_schedule(
                &node.base,
                json!({"name": name, "pipeline": PIPELINE, "cron": "@daily"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let unauthorized = http.get(&node.base, "/v1/schedules", None).await;
    assert_eq!(unauthorized.status, 401);
    let (_, m) = scrape(&http, &node.base).await;
    assert_eq!(m.value("spine_http_requests_total", &route), Some(2.0));
    assert_eq!(
        m.value(
            "spine_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/v1/schedules"),
                ("status", "401")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("spine_schedules", &[("state", "enabled")]),
        Some(2.0)
    );
    assert_eq!(
        m.value("spine_schedules", &[("state", "paused")]),
        Some(0.0)
    );
    // Daily schedules: expected every 86,400 s; never run, so no success.
    assert_eq!(
        m.value(
            "spine_schedule_expected_interval_seconds",
            &[("schedule", "m1")]
        ),
        Some(86_400.0)
    );
    assert_eq!(
        m.value(
            "spine_schedule_last_success_timestamp_seconds",
            &[("schedule", "m1")]
        ),
        None
    );
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

/// The engine's own counters, once the engine records into the process's
/// `Metrics` (see `spine_scheduler::metrics` for where each call goes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_counters_move_when_runs_happen() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("api-engine-metrics");
    let node = start_api_replica(&db.url, &dir, "api-engine-metrics").await;
    let http = Http::new();
    let r = http
        .create_schedule(
            &node.base,
            json!({"name": "tick", "pipeline": PIPELINE, "cron": "* * * * * *"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A daily schedule run by hand: its run is counted with trigger manual.
    let r = http
        .create_schedule(
            &node.base,
            json!({"name": "by-hand", "pipeline": PIPELINE, "cron": "@daily"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = unix_now();
    let r = http
        .post(&node.base, "/v1/schedules/by-hand/run", Some(ADMIN))
        .await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    let base = node.base.clone();
    eventually(Duration::from_secs(20), "engine counters move", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let (_, m) = scrape(&http, &base).await;
            let completed = m
                .value(
                    "spine_runs_total",
                    &[
                        ("schedule", "tick"),
                        ("status", "completed"),
                        ("trigger", "schedule"),
                    ],
                )
                .unwrap_or(0.0);
            let won = m
                .value("spine_claims_total", &[("outcome", "won")])
                .unwrap_or(0.0);
            let lag = m.value("spine_fire_lag_seconds_count", &[]).unwrap_or(0.0);
            let claims = m
                .value("spine_claim_round_trip_seconds_count", &[])
                .unwrap_or(0.0);
            let durations = m
                .value("spine_run_duration_seconds_count", &[("schedule", "tick")])
                .unwrap_or(0.0);
            let next = m
                .value(
                    "spine_schedule_next_fire_timestamp_seconds",
                    &[("schedule", "tick")],
                )
                .unwrap_or(0.0);
            let leader = m.value("spine_is_leader", &[]).unwrap_or(0.0);
            // Read from the ledger at the scrape: a completion of this
            // test's schedule, so after it was created and not in the future.
            let last_success = m
                .value(
                    "spine_schedule_last_success_timestamp_seconds",
                    &[("schedule", "tick")],
                )
                .unwrap_or(0.0);
            let interval = m.value(
                "spine_schedule_expected_interval_seconds",
                &[("schedule", "tick")],
            );
            let alive = m.value("spine_replicas_alive", &[]);
            let pending = m.value("spine_pending_runs", &[]);
            let manual = m.value(
                "spine_runs_total",
                &[
                    ("schedule", "by-hand"),
                    ("status", "completed"),
                    ("trigger", "manual"),
                ],
            );
            let manual_as_scheduled = m.value(
                "spine_runs_total",
                &[
                    ("schedule", "by-hand"),
                    ("status", "completed"),
                    ("trigger", "schedule"),
                ],
            );
            let by_hand_success = m
                .value(
                    "spine_schedule_last_success_timestamp_seconds",
                    &[("schedule", "by-hand")],
                )
                .unwrap_or(0.0);
            completed >= 2.0
                && won >= 2.0
                && lag >= 2.0
                && claims >= 1.0
                && durations >= 2.0
                && next > 0.0
                && leader == 1.0
                && last_success >= created - 1.0
                && last_success <= unix_now() + 1.0
                && interval == Some(1.0)
                && alive == Some(1.0)
                && pending == Some(0.0)
                && manual == Some(1.0)
                && manual_as_scheduled.is_none()
                && by_hand_success >= created - 1.0
        }
    })
    .await;
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

/// Seconds since the Unix epoch, by this process's clock.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
