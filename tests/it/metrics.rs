//! `/metrics`: valid Prometheus text exposition (checked by a strict parser
//! here and by `promtool check metrics` when installed), and counters that
//! move.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::api::{external_tool, start_api_replica, Body, Http, ADMIN, PIPELINE};
use crate::harness::TestDb;
use crate::replica::{eventually, temp_dir};

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition: the samples and each family's declared type.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Family name → `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample with this name and exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (the braces removed) → labels; escapes `\\`, `\"`, `\n`.
fn parse_labels(mut s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (name, rest) = s.split_once("=\"").ok_or(format!("bad label in {s:?}"))?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    Ok(out)
}

/// The family a sample belongs to, given the declared types.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

/// Parses the text format strictly: valid names and labels, one HELP and
/// TYPE per family before its samples, no duplicate series, counters ≥ 0,
/// histograms with cumulative buckets ending in `+Inf` equal to `_count`.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helped = HashSet::new();
    let mut seen_samples: HashSet<String> = HashSet::new();
    let mut series = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _)
                    if !is_metric_name(name) || !helped.insert(name.to_string()) =>
                {
                    return Err(at("bad or repeated HELP".into()));
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if seen_samples.contains(name) {
                        return Err(at("TYPE after samples".into()));
                    }
                    if out
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(at("repeated TYPE".into()));
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let (series_part, value_part) = match line.find('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => line.split_once(' ').ok_or(at("no value".into()))?,
        };
        let (name, labels) = match series_part.split_once('{') {
            Some((name, rest)) => (
                name,
                parse_labels(
                    rest.strip_suffix('}')
                        .ok_or(at("no closing brace".into()))?,
                )
                .map_err(at)?,
            ),
            None => (series_part, BTreeMap::new()),
        };
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let value = parse_value(value_part.split(' ').next().unwrap_or("")).map_err(at)?;
        let fam = family(name, &out.types).to_string();
        if !out.types.contains_key(&fam) {
            return Err(at(format!("no TYPE for {fam}")));
        }
        if out.types[&fam] == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(at("negative counter".into()));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        seen_samples.insert(fam);
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&out)?;
    Ok(out)
}

fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (fam, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        // Group buckets by their labels other than `le`.
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or(format!("{fam}_bucket without le"))?;
            let mut rest = s.labels.clone();
            rest.remove("le");
            groups
                .entry(format!("{rest:?}"))
                .or_default()
                .push((parse_value(le)?, s.value));
        }
        for (labels, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{fam}{labels}: buckets not cumulative"));
            }
            let Some(&(le, inf)) = buckets.last() else {
                continue;
            };
            if le != f64::INFINITY {
                return Err(format!("{fam}{labels}: no +Inf bucket"));
            }
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{fam}_count") && format!("{:?}", s.labels) == labels)
                .map(|s| s.value);
            if count != Some(inf) {
                return Err(format!(
                    "{fam}{labels}: +Inf bucket {inf} != _count {count:?}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_malformed_expositions() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"q\"} 3\n";
    assert!(parse_exposition(ok).is_ok());
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

    // Counters move: requests, and the schedule gauge refreshed per scrape.
    let route = [
        ("method", "POST"),
        ("route", "/v1/schedules"),
        ("status", "201"),
    ];
    assert_eq!(m.value("spine_http_requests_total", &route), None);
    for name in ["m1", "m2"] {
        let r = http
            .call(
                Method::POST,
                &format!("{}/v1/schedules", node.base),
                Some(ADMIN),
                &[],
                Body::Json(json!({"name": name, "pipeline": PIPELINE, "cron": "@daily"})),
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
        .call(
            Method::POST,
            &format!("{}/v1/schedules", node.base),
            Some(ADMIN),
            &[],
            Body::Json(json!({"name": "tick", "pipeline": PIPELINE, "cron": "* * * * * *"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let base = node.base.clone();
    eventually(Duration::from_secs(20), "engine counters move", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let (_, m) = scrape(&http, &base).await;
            let completed = m
                .value(
                    "spine_runs_total",
                    &[("schedule", "tick"), ("status", "completed")],
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
            completed >= 2.0
                && won >= 2.0
                && lag >= 2.0
                && claims >= 1.0
                && durations >= 2.0
                && next > 0.0
                && leader == 1.0
        }
    })
    .await;
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
