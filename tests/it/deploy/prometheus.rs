//! The Prometheus alert rules, their unit tests and the compose config.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    assert_ok, exported_metrics, is_exported, metric_names, promtool, repo, run, yaml, SERIES_LABEL,
};

/// Each metric an expression reads (`spine_…`, `process_…`, `up`,
/// `kube_…`) with the body of its `{…}` selector, if any. Quoted strings are
/// skipped, and so are selector bodies (label names are not metrics).
fn selectors(expr: &str) -> Vec<(String, Option<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let metric = (word.starts_with("spine_") && word != SERIES_LABEL.0)
                || word.starts_with("process_")
                || word.starts_with("kube_")
                || word == "up";
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let body = (j < chars.len() && chars[j] == '{').then(|| {
                let mut k = j + 1;
                let mut quoted = false;
                while k < chars.len() && (quoted || chars[k] != '}') {
                    if chars[k] == '"' {
                        quoted = !quoted;
                    }
                    k += 1;
                }
                let body: String = chars[j + 1..k].iter().collect();
                i = k + 1;
                body
            });
            if metric {
                out.push((word, body));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The input series of a rule test.
fn input_series(test: &Value) -> Vec<&str> {
    test["input_series"]
        .as_array()
        .expect("input_series")
        .iter()
        .map(|s| s["series"].as_str().expect("series"))
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_query_real_metrics() {
    let dir = repo("deploy/prometheus");
    let rules_file = yaml(&dir.join("alerts.yaml"));
    let exported = exported_metrics();
    // kube-state-metrics, for replicas that are not ready.
    let external = [
        "up",
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
    ];
    let mut alerts = BTreeMap::new();
    for group in rules_file["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alerting rules only")
                .to_string();
            let expr = rule["expr"].as_str().expect("expr").to_string();
            for metric in metric_names(&expr) {
                assert!(
                    is_exported(&metric, &exported) || external.contains(&metric.as_str()),
                    "{name}: {metric} is not a metric spine-scheduler exports"
                );
            }
            assert!(
                ["critical", "warning"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            for a in ["summary", "description"] {
                assert!(rule["annotations"][a].is_string(), "{name}: {a}");
            }
            assert!(alerts.insert(name, expr).is_none(), "duplicate alert");
        }
    }
    // The alerts the issue asks for.
    let has = |name: &str, needles: &[&str]| {
        let expr = alerts.get(name).unwrap_or_else(|| panic!("alert {name}"));
        for n in needles {
            assert!(expr.contains(n), "{name}: {expr} lacks {n}");
        }
    };
    has(
        "SpineSchedulerNoLeader",
        &["max by", "spine_is_leader", "== 0", "absent("],
    );
    has(
        "SpineSchedulerMultipleLeaders",
        &["sum by", "spine_is_leader", "> 1"],
    );
    has("SpineSchedulerTicksMissed", &["status=\"missed\""]);
    has("SpineSchedulerFailureRatioHigh", &["failed|abandoned"]);
    has(
        "SpineSchedulerFireLagHigh",
        &["histogram_quantile(0.99", "spine_fire_lag_seconds_bucket"],
    );
    has(
        "SpineSchedulerReplicasNotReady",
        &["kube_deployment_status_replicas_available"],
    );
    has("SpineSchedulerReplicaDown", &["up{"]);
    has(
        "SpineSchedulerNoRecentSuccess",
        &[
            "spine_schedule_last_success_timestamp_seconds",
            "spine_schedule_expected_interval_seconds",
            "time()",
        ],
    );

    // Every alert has a unit test in which it fires.
    let tests = yaml(&dir.join("alerts_test.yaml"));
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired.insert(case["alertname"].as_str().expect("alertname").to_string());
            }
        }
    }
    let names: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(fired, names, "alerts without a firing test case");

    // Selected by the label the deployments set, never by a job or a
    // Deployment name: an overlay may rename both (namePrefix).
    let (label, value) = SERIES_LABEL;
    let matcher = format!("{label}=\"{value}\"");
    for (name, expr) in &alerts {
        let compact: String = expr.split_whitespace().collect();
        for banned in [
            "job=",
            "job!=",
            "deployment=",
            "deployment!=",
            "spine-scheduler",
        ] {
            assert!(
                !compact.contains(banned),
                "{name} selects by a name ({banned}): {expr}"
            );
        }
        let mut labelled = false;
        for (metric, body) in selectors(expr) {
            if metric.starts_with("kube_") {
                // kube-state-metrics' series; joined to labelled ones below.
                continue;
            }
            let body = body.unwrap_or_default();
            assert!(
                body.split(',').any(|m| m.trim() == matcher),
                "{name}: {metric}{{{body}}} does not select {matcher}"
            );
            labelled = true;
        }
        assert!(labelled, "{name} reads no series labelled {matcher}");
    }
    // And the unit tests prove it: every alert fires for an installation
    // renamed by an overlay (no series names spine-scheduler) ...
    let renamed = |t: &Value| {
        let series = input_series(t);
        series.iter().all(|s| !s.contains("\"spine-scheduler\""))
            && series
                .iter()
                .any(|s| s.contains(" job=\"") || s.contains("{job=\""))
    };
    let mut fired_renamed = BTreeSet::new();
    for t in tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .filter(|t| renamed(t))
    {
        for case in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired_renamed.insert(case["alertname"].as_str().expect("alertname").to_string());
            }
        }
    }
    assert_eq!(
        fired_renamed, names,
        "alerts without a firing test case under a renamed job and Deployment"
    );
    // ... and series without the label do not make them fire, even under
    // the default job name.
    let unlabelled_quiet = tests["tests"].as_array().expect("tests").iter().any(|t| {
        input_series(t).iter().any(|s| {
            s.starts_with("up{") && s.contains("job=\"spine-scheduler\"") && !s.contains(label)
        }) && t["alert_rule_test"]
            .as_array()
            .expect("cases")
            .iter()
            .any(|c| {
                c["alertname"] == "SpineSchedulerReplicaDown"
                    && c["exp_alerts"].as_array().is_some_and(|a| a.is_empty())
            })
    });
    assert!(
        unlabelled_quiet,
        "no test shows an unlabelled target named spine-scheduler staying quiet"
    );

    if let Some(promtool) = promtool() {
        let rules = dir.join("alerts.yaml").display().to_string();
        assert_ok(
            "promtool check rules",
            &run(&promtool, &["check", "rules", &rules], &[]),
        );
        let tests = dir.join("alerts_test.yaml").display().to_string();
        assert_ok(
            "promtool test rules",
            &run(&promtool, &["test", "rules", &tests], &[]),
        );
        // The compose Prometheus config, with the rule file it loads.
        let config = dir.join("prometheus.yml").display().to_string();
        assert_ok(
            "promtool check config",
            &run(&promtool, &["check", "config", &config], &[]),
        );
    }
}
