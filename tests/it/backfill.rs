//! Backfills end to end: real `serve` replicas stepping them, the API
//! asking for them and showing their progress, the ledger audited after.
//! What each test shows: every tick of the range gets exactly one row of
//! the backfill, in tick order, one at a time unless `allow_all`; asking
//! again adds nothing; a replica killed mid-way loses and doubles nothing;
//! bad requests are refused with the field at fault and store nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::api_replica::{
    assert_error, start_api_replica, start_api_replica_with, ApiReplica, Body, Http, Reply, ADMIN,
    PIPELINE, READER,
};
use crate::harness::{wait_for, TestDb};
use crate::replica::temp_dir;
use crate::test_cluster::FAST;

/// A pipeline that takes long enough for overlapping runs to show.
const SLOW: &str = "test.slow";

/// The database clock, truncated to the minute.
async fn db_minute(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT date_trunc('minute', now())", &[])
        .await
        .expect("now")
        .get(0)
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// `POST /v1/schedules/{name}/backfill` as the admin.
async fn request(
    http: &Http,
    node: &ApiReplica,
    schedule: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Reply {
    http.call(
        Method::POST,
        &format!("{}/v1/schedules/{schedule}/backfill", node.base),
        Some(ADMIN),
        headers,
        Body::Json(body),
    )
    .await
}

fn range(start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    json!({"start": start.to_rfc3339(), "end": end.to_rfc3339()})
}

fn id_of(r: &Reply) -> String {
    r.json()["backfill_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backfill_id: {}", r.text))
        .to_string()
}

/// Waits (reading with the read-only token) until the backfill is `done`;
/// its view.
async fn done(http: &Http, node: &ApiReplica, id: &str, limit: Duration) -> Value {
    let path = format!("/v1/backfills/{id}");
    wait_for(
        limit,
        Duration::from_millis(100),
        "the backfill done",
        || {
            let path = path.clone();
            async move {
                let r = http.get(&node.base, &path, Some(READER)).await;
                assert_eq!(r.status, 200, "{}", r.text);
                let v = r.json();
                assert!(
                    v["state"] != "failed" && v["state"] != "cancelled",
                    "backfill stopped: {v}"
                );
                (v["state"] == "done").then_some(v)
            }
        },
    )
    .await
}

/// One ledger row, as the audits read it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    run_id: Uuid,
    at: DateTime<Utc>,
    trigger: String,
    attempt: i32,
    status: String,
    claimed_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    backfill_id: Option<Uuid>,
}

/// Every row of `schedule`, by tick then attempt.
async fn ledger(c: &Client, schedule: &str) -> Vec<Row> {
    c.query(
        "SELECT run_id, scheduled_at, trigger, attempt, status, claimed_at, started_at, \
                completed_at, backfill_id \
         FROM scheduler_runs WHERE schedule_name = $1 ORDER BY scheduled_at, attempt",
        &[&schedule],
    )
    .await
    .expect("ledger")
    .iter()
    .map(|r| Row {
        run_id: r.get(0),
        at: r.get(1),
        trigger: r.get(2),
        attempt: r.get(3),
        status: r.get(4),
        claimed_at: r.get(5),
        started_at: r.get(6),
        completed_at: r.get(7),
        backfill_id: r.get(8),
    })
    .collect()
}

/// The backfill's own rows (trigger `backfill`), by tick.
fn own_rows(rows: &[Row], id: &str) -> Vec<Row> {
    let id = Uuid::parse_str(id).expect("backfill id");
    rows.iter()
        .filter(|r| r.trigger == "backfill" && r.backfill_id == Some(id))
        .cloned()
        .collect()
}

/// How far a replica's estimate of the database clock (a run's
/// `completed_at`) may be off the database's own (`claimed_at`).
const CLOCK_SLACK: chrono::Duration = chrono::Duration::milliseconds(20);

/// One at a time, in tick order: each row was written after the run before
/// it had finished.
fn assert_one_at_a_time(rows: &[Row]) {
    for pair in rows.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert!(prev.at < next.at, "rows in tick order: {pair:?}");
        let finished = prev.completed_at.expect("finished");
        assert!(
            next.claimed_at >= finished - CLOCK_SLACK,
            "tick {} was created at {} before tick {} had finished at {finished}",
            next.at,
            next.claimed_at,
            prev.at
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_idempotence_and_order() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("backfill-order");
    let pipelines = [(SLOW, "150ms")];
    let a = start_api_replica_with(&db.url, &dir, "bf-a", &pipelines, &[]).await;
    let b = start_api_replica_with(&db.url, &dir, "bf-b", &pipelines, &[]).await;
    let http = Http::new();
    // Paused: the ledger holds only what the test and the backfills write.
    let created = http
        .create_schedule(
            &a.base,
            json!({"name": "bf", "pipeline": SLOW, "cron": "* * * * *", "enabled": false}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let start = db_minute(&c).await - minutes(15);
    let end = start + minutes(12);
    let ticks: Vec<DateTime<Utc>> = (0..12).map(|i| start + minutes(i)).collect();
    // Two ticks have rows already: one ran, one was missed.
    c.execute(
        "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                     attempt, status, completed_at) \
         VALUES (gen_random_uuid(), 'bf', $3, 'schedule', $1, 1, 'completed', now()), \
                (gen_random_uuid(), 'bf', $3, 'schedule', $2, 1, 'missed', now())",
        &[&ticks[2], &ticks[5], &SLOW],
    )
    .await
    .expect("seed rows");

    // Mode missing: a row for each of the other ten ticks.
    let first = request(&http, &a, "bf", range(start, end), &[]).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let id = id_of(&first);
    assert_eq!(
        first.header("location"),
        Some(format!("/v1/backfills/{id}").as_str())
    );
    assert_eq!(first.json()["ticks_planned"], 12);
    assert_eq!(first.json()["mode"], "missing");
    // The same request again, on another replica, while it runs: that one.
    let again = request(&http, &b, "bf", range(start, end), &[]).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(id_of(&again), id);
    // Other work while it runs: refused.
    let other = request(&http, &b, "bf", range(start, end - minutes(1)), &[]).await;
    assert_error("a second backfill", &other, 409, "backfill_active");
    let view = done(&http, &b, &id, Duration::from_secs(60)).await;
    for (key, want) in [
        ("ticks_planned", 12),
        ("ticks_created", 10),
        ("ticks_existing", 2),
        ("ticks_succeeded", 10),
        ("ticks_failed", 0),
        ("ticks_in_flight", 0),
    ] {
        assert_eq!(view[key], want, "{key}: {view}");
    }
    assert_eq!(view["cursor"].as_str().map(parse), Some(ticks[11]));

    let rows = ledger(&c, "bf").await;
    let per_tick: Vec<usize> = ticks
        .iter()
        .map(|t| rows.iter().filter(|r| r.at == *t).count())
        .collect();
    assert_eq!(per_tick, [1; 12], "one row per tick: {rows:#?}");
    assert_eq!(rows.len(), 12, "no row outside the range: {rows:#?}");
    let own = own_rows(&rows, &id);
    let want: Vec<DateTime<Utc>> = ticks
        .iter()
        .copied()
        .filter(|t| *t != ticks[2] && *t != ticks[5])
        .collect();
    assert_eq!(own.iter().map(|r| r.at).collect::<Vec<_>>(), want);
    assert!(
        own.iter()
            .all(|r| r.attempt == 1 && r.status == "completed" && r.started_at.is_some()),
        "{own:#?}"
    );
    assert_one_at_a_time(&own);

    // Asked again once done: a new backfill that finds every tick has its
    // row, and adds nothing.
    let second = request(&http, &b, "bf", range(start, end), &[]).await;
    assert_eq!(second.status, 202, "{}", second.text);
    let second_id = id_of(&second);
    assert_ne!(second_id, id);
    let view = done(&http, &a, &second_id, Duration::from_secs(30)).await;
    assert_eq!(view["ticks_created"], 0, "{view}");
    assert_eq!(view["ticks_existing"], 12, "{view}");
    assert_eq!(
        ledger(&c, "bf").await,
        rows,
        "the second backfill changed the ledger"
    );

    // Mode all, with an Idempotency-Key: every tick once more, as its next attempt.
    let all = json!({"start": start.to_rfc3339(), "end": end.to_rfc3339(), "mode": "all"});
    let key = [("idempotency-key", "bf-all-1")];
    let third = request(&http, &a, "bf", all.clone(), &key).await;
    assert_eq!(third.status, 202, "{}", third.text);
    let third_id = id_of(&third);
    let view = done(&http, &a, &third_id, Duration::from_secs(60)).await;
    assert_eq!(view["ticks_created"], 12, "{view}");
    assert_eq!(view["ticks_succeeded"], 12, "{view}");
    let after_all = ledger(&c, "bf").await;
    let own = own_rows(&after_all, &third_id);
    assert_eq!(own.iter().map(|r| r.at).collect::<Vec<_>>(), ticks);
    assert!(own.iter().all(|r| r.attempt == 2), "{own:#?}");
    assert_one_at_a_time(&own);
    assert_eq!(after_all.len(), 24, "{after_all:#?}");
    // The same key again, done or not: that backfill, nothing added.
    let repeat = request(&http, &b, "bf", all.clone(), &key).await;
    assert_eq!(repeat.status, 200, "{}", repeat.text);
    assert_eq!(id_of(&repeat), third_id);
    let reused = request(&http, &b, "bf", range(start, end), &key).await;
    let e = assert_error(
        "a key reused for other work",
        &reused,
        409,
        "idempotency_key_reused",
    );
    assert_eq!(e["field"], "Idempotency-Key");
    assert_eq!(ledger(&c, "bf").await, after_all);

    // Progress is listed, newest first, for the read-only token too.
    let list = http
        .get(&a.base, "/v1/schedules/bf/backfills", Some(READER))
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let listed: Vec<String> = list.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["backfill_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(listed, [third_id.clone(), second_id, id.clone()]);
    let paged = http
        .get(&a.base, "/v1/schedules/bf/backfills?limit=2", Some(READER))
        .await;
    let cursor = paged.json()["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let rest = http
        .get(
            &a.base,
            &format!("/v1/schedules/bf/backfills?limit=2&cursor={cursor}"),
            Some(READER),
        )
        .await;
    assert_eq!(rest.json()["items"][0]["backfill_id"], id.as_str());
    // The runs name their backfill and trigger.
    let runs = http
        .get(
            &a.base,
            "/v1/runs?schedule=bf&trigger=backfill",
            Some(READER),
        )
        .await;
    assert_eq!(runs.status, 200, "{}", runs.text);
    let items = runs.json()["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 22);
    assert!(items
        .iter()
        .all(|r| r["trigger"] == "backfill" && r["backfill_id"].is_string()));

    // allow_all: up to max_instances (3) at once, still created in tick order.
    let wide = http
        .create_schedule(
            &a.base,
            json!({"name": "wide", "pipeline": SLOW, "cron": "* * * * *", "enabled": false,
                   "max_instances": 3}),
        )
        .await;
    assert_eq!(wide.status, 201, "{}", wide.text);
    let body = json!({"start": start.to_rfc3339(), "end": (start + minutes(9)).to_rfc3339(),
                      "overlap_policy": "allow_all"});
    let r = request(&http, &b, "wide", body, &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let wide_id = id_of(&r);
    assert_eq!(r.json()["overlap_policy"], "allow_all");
    let view = done(&http, &b, &wide_id, Duration::from_secs(60)).await;
    assert_eq!(view["ticks_succeeded"], 9, "{view}");
    let own = own_rows(&ledger(&c, "wide").await, &wide_id);
    assert_eq!(own.len(), 9);
    let most = own
        .iter()
        .map(|r| {
            own.iter()
                .filter(|o| {
                    o.claimed_at <= r.claimed_at
                        && o.completed_at
                            .is_some_and(|f| f > r.claimed_at + CLOCK_SLACK)
                })
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        (2..=3).contains(&most),
        "at most max_instances at once, and more than one: {most}; {own:#?}"
    );
    for pair in own.windows(2) {
        assert!(
            pair[0].claimed_at <= pair[1].claimed_at,
            "created in tick order: {pair:?}"
        );
    }

    for node in [a, b] {
        assert!(node.replica.terminate(Duration::from_secs(30)));
    }
}

fn parse(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_backfill_loses_and_doubles_no_tick() {
    let _serial = crate::test_cluster::SERIAL.lock().await;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("backfill-kill");
    let pipelines = [(SLOW, "700ms")];
    let mut nodes = Vec::new();
    for name in ["bk-1", "bk-2", "bk-3"] {
        nodes.push(start_api_replica_with(&db.url, &dir, name, &pipelines, &FAST).await);
    }
    let http = Http::new();
    let created = http
        .create_schedule(
            &nodes[0].base,
            json!({"name": "bk", "pipeline": SLOW, "cron": "* * * * *", "enabled": false,
                   "retry": {"max_attempts": 3, "backoff": "1s"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let start = db_minute(&c).await - minutes(20);
    let ticks: Vec<DateTime<Utc>> = (0..8).map(|i| start + minutes(i)).collect();
    let r = request(
        &http,
        &nodes[0],
        "bk",
        range(start, start + minutes(8)),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = id_of(&r);
    let backfill_id = Uuid::parse_str(&id).expect("uuid");

    // Once a few ticks are done, kill the replica running the current one.
    let victim: String = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(50),
        "a backfill run on its third tick or later, running",
        || async {
            c.query_opt(
                "SELECT n.hostname FROM scheduler_runs r JOIN scheduler_nodes n USING (node_id) \
                 WHERE r.backfill_id = $1 AND r.status = 'running' AND r.scheduled_at >= $2",
                &[&backfill_id, &ticks[2]],
            )
            .await
            .expect("running backfill run")
            .map(|row| row.get(0))
        },
    )
    .await;
    let at = nodes
        .iter()
        .position(|n| n.replica.name == victim)
        .expect("the victim is ours");
    nodes.remove(at).replica.kill9();

    let view = done(&http, &nodes[0], &id, Duration::from_secs(90)).await;
    assert_eq!(view["ticks_created"], 8, "{view}");
    assert_eq!(view["ticks_succeeded"], 8, "{view}");
    assert_eq!(view["ticks_failed"], 0, "{view}");

    let rows = ledger(&c, "bk").await;
    let own = own_rows(&rows, &id);
    assert_eq!(
        own.iter().map(|r| r.at).collect::<Vec<_>>(),
        ticks,
        "exactly one backfill row per tick: {rows:#?}"
    );
    // The run that died with its replica was recorded and retried, once.
    let abandoned: Vec<&Row> = rows.iter().filter(|r| r.status == "abandoned").collect();
    assert_eq!(abandoned.len(), 1, "{rows:#?}");
    let retries: Vec<&Row> = rows.iter().filter(|r| r.trigger == "retry").collect();
    assert_eq!(retries.len(), 1, "{rows:#?}");
    assert_eq!(retries[0].at, abandoned[0].at);
    assert_eq!(retries[0].attempt, 2);
    assert_eq!(retries[0].status, "completed");
    assert_eq!(retries[0].backfill_id, Some(backfill_id));
    assert!(rows
        .iter()
        .all(|r| r.status == "completed" || r.run_id == abandoned[0].run_id));
    assert_eq!(rows.len(), 9, "{rows:#?}");
    // In order: each tick's first row was written once the tick before had
    // settled (after its retry, for the one that died).
    for pair in ticks.windows(2) {
        let settled = rows
            .iter()
            .filter(|r| r.at == pair[0])
            .filter_map(|r| r.completed_at)
            .max()
            .expect("settled");
        let next = own.iter().find(|r| r.at == pair[1]).expect("next tick");
        assert!(
            next.claimed_at >= settled - CLOCK_SLACK,
            "tick {} created at {} before tick {} settled at {settled}",
            pair[1],
            next.claimed_at,
            pair[0]
        );
    }
    for node in nodes {
        assert!(node.replica.terminate(Duration::from_secs(30)));
    }
}

/// An error case: what, path, body, headers, and the status, code and
/// field it must give.
type Case = (
    &'static str,
    String,
    Body,
    Vec<(&'static str, &'static str)>,
    u16,
    &'static str,
    Option<&'static str>,
);

/// Everything stored about backfills, as text.
async fn stored(c: &Client) -> (i64, Vec<String>) {
    let backfills: i64 = c
        .query_one("SELECT count(*) FROM scheduler_backfills", &[])
        .await
        .expect("count")
        .get(0);
    let runs = c
        .query(
            "SELECT run_id::text FROM scheduler_runs ORDER BY run_id",
            &[],
        )
        .await
        .expect("runs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (backfills, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backfill_requests_get_their_4xx_and_store_nothing() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("backfill-errors");
    let node = start_api_replica(&db.url, &dir, "backfill-errors").await;
    let http = Http::new();
    for (name, cron) in [("keep", "0 6 * * *"), ("often", "* * * * * *")] {
        let r = http
            .create_schedule(
                &node.base,
                json!({"name": name, "pipeline": PIPELINE, "cron": cron, "enabled": false}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let before = stored(&c).await;
    let now = Utc::now();
    let at = |d: chrono::Duration| (now + d).to_rfc3339();
    let day = chrono::Duration::days(1);
    let (yesterday, today) = (at(-day), at(-minutes(1)));
    let ok = || json!({"start": yesterday, "end": today});
    let with = |k: &str, v: Value| {
        let mut b = ok();
        b[k] = v;
        b
    };
    let post = |path: &str| format!("/v1/schedules/{path}/backfill");
    let cases: Vec<Case> = vec![
        (
            "not an object",
            post("keep"),
            Body::Json(json!(["x"])),
            vec![],
            400,
            "invalid_input",
            Some("backfill"),
        ),
        (
            "no start",
            post("keep"),
            Body::Json(json!({"end": today})),
            vec![],
            422,
            "invalid_input",
            Some("start"),
        ),
        (
            "no end",
            post("keep"),
            Body::Json(json!({"start": yesterday})),
            vec![],
            422,
            "invalid_input",
            Some("end"),
        ),
        (
            "unknown key",
            post("keep"),
            Body::Json(with("colour", json!("red"))),
            vec![],
            422,
            "invalid_input",
            Some("colour"),
        ),
        (
            "start not an instant",
            post("keep"),
            Body::Json(with("start", json!("yesterday"))),
            vec![],
            422,
            "invalid_input",
            Some("start"),
        ),
        (
            "end a number",
            post("keep"),
            Body::Json(with("end", json!(5))),
            vec![],
            422,
            "invalid_input",
            Some("end"),
        ),
        (
            "end before start",
            post("keep"),
            Body::Json(json!({"start": today, "end": yesterday})),
            vec![],
            422,
            "invalid_input",
            Some("end"),
        ),
        (
            "end at start",
            post("keep"),
            Body::Json(json!({"start": today, "end": today})),
            vec![],
            422,
            "invalid_input",
            Some("end"),
        ),
        (
            "start in the future",
            post("keep"),
            Body::Json(json!({"start": at(minutes(10)), "end": at(minutes(20))})),
            vec![],
            422,
            "invalid_input",
            Some("start"),
        ),
        (
            "end far in the future",
            post("keep"),
            Body::Json(with("end", json!(at(day)))),
            vec![],
            422,
            "invalid_input",
            Some("end"),
        ),
        (
            "unknown mode",
            post("keep"),
            Body::Json(with("mode", json!("everything"))),
            vec![],
            422,
            "invalid_input",
            Some("mode"),
        ),
        (
            "unknown overlap policy",
            post("keep"),
            Body::Json(with("overlap_policy", json!("queue"))),
            vec![],
            422,
            "invalid_input",
            Some("overlap_policy"),
        ),
        (
            "allow_large not a boolean",
            post("keep"),
            Body::Json(with("allow_large", json!("yes"))),
            vec![],
            422,
            "invalid_input",
            Some("allow_large"),
        ),
        // 86,400 ticks a day: over 10,000 without the flag ...
        (
            "too many ticks",
            post("often"),
            Body::Json(ok()),
            vec![],
            422,
            "invalid_input",
            Some("allow_large"),
        ),
        // ... and two days over 100,000 with it.
        (
            "too many even when large",
            post("often"),
            Body::Json(json!({"start": at(-day * 2), "end": today, "allow_large": true})),
            vec![],
            422,
            "invalid_input",
            Some("end"),
        ),
        (
            "bad Idempotency-Key",
            post("keep"),
            Body::Json(ok()),
            vec![("idempotency-key", "has space")],
            400,
            "invalid_input",
            Some("Idempotency-Key"),
        ),
        (
            "missing schedule",
            post("ghost"),
            Body::Json(ok()),
            vec![],
            404,
            "not_found",
            None,
        ),
        (
            "bad schedule name",
            post("bad%20name"),
            Body::Json(ok()),
            vec![],
            400,
            "invalid_input",
            Some("name"),
        ),
        (
            "malformed JSON",
            post("keep"),
            Body::Raw("application/json", b"{\"start\": ".to_vec()),
            vec![],
            400,
            "invalid_json",
            None,
        ),
        (
            "not JSON",
            post("keep"),
            Body::Raw("text/plain", b"start=now".to_vec()),
            vec![],
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "backfill id not a UUID",
            "/v1/backfills/nope".into(),
            Body::None,
            vec![],
            400,
            "invalid_input",
            Some("backfill_id"),
        ),
        (
            "cancel a missing backfill",
            format!("/v1/backfills/{}/cancel", Uuid::now_v7()),
            Body::None,
            vec![],
            404,
            "not_found",
            None,
        ),
        (
            "bad listing cursor",
            "/v1/schedules/keep/backfills?cursor=zzz".into(),
            Body::None,
            vec![],
            422,
            "invalid_input",
            Some("cursor"),
        ),
        (
            "listing limit 0",
            "/v1/schedules/keep/backfills?limit=0".into(),
            Body::None,
            vec![],
            400,
            "invalid_input",
            Some("limit"),
        ),
        (
            "unknown listing filter",
            "/v1/schedules/keep/backfills?state=done".into(),
            Body::None,
            vec![],
            400,
            "invalid_query",
            None,
        ),
    ];
    for (what, path, body, headers, status, code, field) in cases {
        let method = if matches!(body, Body::None) && !path.ends_with("/cancel") {
            Method::GET
        } else {
            Method::POST
        };
        let r = http
            .call(
                method,
                &format!("{}{path}", node.base),
                Some(ADMIN),
                &headers,
                body,
            )
            .await;
        let e = assert_error(what, &r, status, code);
        if let Some(f) = field {
            assert_eq!(e["field"], f, "{what}: {e}");
        }
    }
    let missing = http
        .get(
            &node.base,
            &format!("/v1/backfills/{}", Uuid::now_v7()),
            Some(READER),
        )
        .await;
    assert_error("a missing backfill", &missing, 404, "not_found");
    // The read-only token reads but may not ask; no token, nothing.
    let url = format!("{}{}", node.base, post("keep"));
    let r = http
        .call(Method::POST, &url, Some(READER), &[], Body::Json(ok()))
        .await;
    assert_error("read-only token", &r, 403, "forbidden");
    let r = http
        .call(Method::POST, &url, None, &[], Body::Json(ok()))
        .await;
    assert_error("no token", &r, 401, "unauthorized");
    assert_eq!(
        stored(&c).await,
        before,
        "a refused request stored something"
    );

    // Cancelling: an active backfill stops; again is fine; a done one is a 409.
    let r = request(
        &http,
        &node,
        "keep",
        json!({"start": at(-day * 300), "end": today}),
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = id_of(&r);
    let cancel = format!("/v1/backfills/{id}/cancel");
    let r = http.post(&node.base, &cancel, Some(ADMIN)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "cancelled");
    let r = http.post(&node.base, &cancel, Some(ADMIN)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = http.post(&node.base, &cancel, Some(READER)).await;
    assert_error("cancel with the read-only token", &r, 403, "forbidden");
    // A cancelled backfill is not active: another may start. An empty
    // range is done at once; cancelling it then is too late.
    let empty = json!({"start": at(-minutes(30)), "end": at(-minutes(29))});
    let r = request(&http, &node, "keep", empty, &[]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let empty_id = id_of(&r);
    let view = done(&http, &node, &empty_id, Duration::from_secs(30)).await;
    assert_eq!(view["ticks_planned"], 0, "{view}");
    let r = http
        .post(
            &node.base,
            &format!("/v1/backfills/{empty_id}/cancel"),
            Some(ADMIN),
        )
        .await;
    assert_error("cancel a done backfill", &r, 409, "backfill_finished");
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
