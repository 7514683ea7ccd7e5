//! The Prometheus alert rules, their unit tests and the compose config.

use std::collections::{BTreeMap, BTreeSet};

use super::{assert_ok, exported_metrics, is_exported, metric_names, promtool, repo, run, yaml};

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
