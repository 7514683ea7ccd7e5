//! The Grafana dashboard.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{assert_ok, exported_metrics, is_exported, metric_names, promtool, read, repo, run};
use crate::replica::temp_dir;

#[test]
fn grafana_dashboard_parses_and_queries_only_real_metrics() {
    let path = repo("deploy/grafana/spine-scheduler.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "spine-scheduler");
    assert!(dashboard["title"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains("datasource") && variables.contains("job"));

    let exported = exported_metrics();
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().expect("title");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            for metric in metric_names(expr) {
                assert!(
                    is_exported(&metric, &exported) || metric == "up",
                    "{title}: {metric} is not a metric spine-scheduler exports"
                );
            }
            exprs.push((title.to_string(), expr.to_string()));
        }
    }
    // What the dashboard is for.
    let all: String = exprs
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "spine_runs_total",
        "status=\"completed\"",
        "failed|abandoned",
        "spine_fire_lag_seconds_bucket",
        "spine_run_duration_seconds_bucket",
        "spine_is_leader",
        "spine_build_info",
        "spine_db_pool_connections",
        "spine_db_pool_waiting",
    ] {
        assert!(all.contains(needed), "no panel queries {needed}");
    }

    // Every query is valid PromQL: promtool checks them as recording rules,
    // with Grafana's variables filled in.
    if let Some(promtool) = promtool() {
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, expr)) in exprs.iter().enumerate() {
            let concrete = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", "spine-scheduler")
                .replace("$namespace", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(&concrete).expect("quote")
            ));
        }
        let dir = temp_dir("deploy-grafana");
        let file = dir.join("dashboard_rules.yaml");
        std::fs::write(&file, rules).expect("write rules");
        let out = run(
            &promtool,
            &["check", "rules", &file.display().to_string()],
            &[],
        );
        assert_ok("promtool check rules (dashboard queries)", &out);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
