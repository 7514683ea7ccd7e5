//! Schedule semantics users expect, end to end: a one-time schedule whose
//! `run_at` is already past (refused beyond its misfire grace, run at once
//! within it, kept when stored), and crontab read as cronie reads it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use spine_scheduler::apply::{apply, ApplyError, ApplyOptions};
use spine_scheduler::schedule::ownership::Manager;
use spine_scheduler::schedule::spec::ParsedSchedule;
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::schedules;
use tokio_postgres::Client;

use crate::api_replica::{assert_error, start_api_replica, Body, Http, ADMIN, PIPELINE};
use crate::harness::{db_now, wait_for, TestDb};
use crate::replica::temp_dir;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The scheduled (not manual) ledger rows of `schedule`: tick and status.
async fn ledger(c: &Client, schedule: &str) -> Vec<(DateTime<Utc>, String)> {
    c.query(
        "SELECT scheduled_at, status::text FROM scheduler_runs \
         WHERE schedule_name = $1 AND trigger = 'schedule' ORDER BY scheduled_at",
        &[&schedule],
    )
    .await
    .expect("ledger query")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

async fn patch(http: &Http, base: &str, name: &str, body: Value) -> crate::api_replica::Reply {
    http.call(
        Method::PATCH,
        &format!("{base}/v1/schedules/{name}"),
        Some(ADMIN),
        &[],
        Body::Json(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_run_at_is_refused_beyond_its_grace_and_runs_at_once_within_it() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("run-at");
    let node = start_api_replica(&db.url, &dir, "run-at").await;
    let http = Http::new();
    let base = node.base.clone();

    // Ten minutes ago, with the default grace (60 s): refused, naming run_at,
    // and nothing is stored.
    let long_ago = db_now(&c).await - chrono::Duration::minutes(10);
    let refused = http
        .create_schedule(
            &base,
            json!({"name": "too_late", "pipeline": PIPELINE, "run_at": rfc3339(long_ago)}),
        )
        .await;
    let e = assert_error("past run_at", &refused, 422, "invalid_input");
    assert_eq!(e["field"], "run_at", "{e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("run_at: ")
            && message
                .contains("in the past, more than its misfire grace (1m): it would never run"),
        "{message}"
    );
    let stored: i64 = c
        .query_one("SELECT count(*) FROM scheduler_schedules", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0, "a refused create writes nothing");

    // Twenty seconds ago, within a grace of two minutes: created, and it
    // runs at once, at its own tick.
    let run_at = db_now(&c).await - chrono::Duration::seconds(20);
    let created = http
        .create_schedule(
            &base,
            json!({
                "name": "just_late", "pipeline": PIPELINE, "run_at": rfc3339(run_at),
                "misfire_grace_time": "2m"
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let rows = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the late one-time schedule's run to complete",
        || {
            let c = &c;
            async move {
                let rows = ledger(c, "just_late").await;
                rows.iter().any(|(_, s)| s == "completed").then_some(rows)
            }
        },
    )
    .await;
    assert_eq!(rows, [(run_at, "completed".to_string())]);

    // Changing another key keeps the stored run_at, which is not checked
    // again; moving it into the past beyond the grace is refused.
    let described = patch(&http, &base, "just_late", json!({"description": "ran"})).await;
    assert_eq!(described.status, 200, "{}", described.text);
    let moved = patch(
        &http,
        &base,
        "just_late",
        json!({"run_at": rfc3339(long_ago)}),
    )
    .await;
    let e = assert_error("moved run_at", &moved, 422, "invalid_input");
    assert_eq!(e["field"], "run_at", "{e}");
    let replaced = http
        .call(
            Method::PUT,
            &format!("{base}/v1/schedules/just_late"),
            Some(ADMIN),
            &[],
            Body::Json(json!({
                "pipeline": PIPELINE, "run_at": rfc3339(long_ago), "misfire_grace_time": "2m"
            })),
        )
        .await;
    assert_error(
        "replaced with a past run_at",
        &replaced,
        422,
        "invalid_input",
    );

    // The change re-offered nothing: still exactly one row.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ledger(&c, "just_late").await.len(), 1);
}

fn once(name: &str, run_at: DateTime<Utc>) -> ParsedSchedule {
    ParsedSchedule {
        schedule: Schedule::once(name, PIPELINE, run_at).expect("valid schedule"),
        enabled_given: false,
    }
}

#[tokio::test]
async fn apply_keeps_a_stored_run_at_and_refuses_a_new_past_one() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    // A one-time schedule that ran last week, stored when it was still ahead.
    let last_week = db_now(&c).await - chrono::Duration::days(7);
    schedules::insert_managed(&c, &once("ran", last_week).schedule, &Manager::file("test"))
        .await
        .expect("insert");
    // Re-applying the file that has it (as `serve --schedules` does at
    // every start) still works: nothing to do.
    let again = apply(
        &mut c,
        &[once("ran", last_week)],
        &ApplyOptions::new("test"),
    )
    .await
    .expect("re-apply");
    assert_eq!(again.unchanged, ["ran"]);
    // A new one in the past, or the old one moved, is refused with its name,
    // also in a dry run; nothing is written.
    let an_hour_ago = db_now(&c).await - chrono::Duration::hours(1);
    for (desired, dry_run) in [
        (
            vec![once("ran", last_week), once("new", an_hour_ago)],
            false,
        ),
        (vec![once("ran", an_hour_ago)], true),
    ] {
        match apply(
            &mut c,
            &desired,
            &ApplyOptions {
                dry_run,
                ..ApplyOptions::new("test")
            },
        )
        .await
        {
            Err(ApplyError::Refused(problems)) => {
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert_eq!(problems[0].1.field, "run_at");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let stored = schedules::get(&c, "ran").await.expect("get");
    assert_eq!(
        stored.map(|s| s.schedule),
        Some(once("ran", last_week).schedule)
    );
    assert!(schedules::get(&c, "new").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_crontab_as_cronie_does() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("crontab-api");
    let node = start_api_replica(&db.url, &dir, "crontab-api").await;
    let http = Http::new();
    let base = node.base.clone();
    // 6-0 is Saturday and Sunday; SUN-SUN Sunday only.
    for (cron, want) in [
        ("0 6 * * 6-0", &["Sat", "Sun", "Sat", "Sun"][..]),
        ("0 6 * * SUN-SUN", &["Sun", "Sun", "Sun", "Sun"][..]),
        ("0 6 * * *,5", &["Fri", "Sat", "Sun", "Mon"][..]),
    ] {
        let path = format!(
            "/v1/preview?cron={}&count=4&after=2027-01-01T00:00:00Z",
            cron.replace(' ', "%20").replace(',', "%2C")
        );
        let r = http.get(&base, &path, Some(ADMIN)).await;
        assert_eq!(r.status, 200, "{cron}: {}", r.text);
        let days: Vec<String> = r.json()["fires"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|t| t["at"].as_str())
                    .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.format("%a").to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(days, want, "{cron}");
    }
    // A reversed range is refused, saying it never matches.
    let r = http
        .create_schedule(
            &base,
            json!({"name": "backwards", "pipeline": PIPELINE, "cron": "0 6 * * 5-3"}),
        )
        .await;
    let e = assert_error("reversed range", &r, 422, "invalid_input");
    assert_eq!(e["field"], "cron", "{e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("is reversed (5 is after 3) and never matches"),
        "{message}"
    );
    let ok = http
        .create_schedule(
            &base,
            json!({"name": "weekend", "pipeline": PIPELINE, "cron": "0 6 * * sat-sun"}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}
