//! The "exactly one trigger" rule of schedule bodies, stated in the
//! document: a `oneOf` with one branch per trigger key of the key table
//! ([`KEYS`]), each requiring its key (not `null`) and a `schedule_type`
//! that agrees. A PATCH may name no trigger at all, so its `oneOf` has one
//! more branch: every trigger key absent or `null`.
//!
//! utoipa's `Object` has no `oneOf` beside `properties`, and wrapping the
//! object in an `allOf` would move the keys away from where clients (and
//! our tests) read them; the keyword is put into the object's flattened
//! extension map instead, which serialises it as is.

use serde_json::{json, Map, Value};
use utoipa::openapi::{OpenApi, RefOr, Schema};

use crate::schedule::spec::KEYS;

/// The input schemas the rule applies to, and whether a body may leave the
/// trigger out (a PATCH).
const INPUTS: [(&str, bool); 3] = [
    ("ScheduleInput", false),
    ("ScheduleReplaceInput", false),
    ("SchedulePatchInput", true),
];

/// The `oneOf` of a schedule body; `optional`: no trigger is allowed too.
pub(in crate::api) fn one_of(optional: bool) -> Value {
    let triggers: Vec<(&str, &str)> = KEYS
        .iter()
        .filter_map(|k| k.makes().map(|kind| (k.name, kind.as_str())))
        .collect();
    let mut branches = Vec::new();
    if optional {
        let none: Map<String, Value> = triggers
            .iter()
            .map(|(name, _)| (name.to_string(), json!({"type": "null"})))
            .collect();
        branches.push(json!({
            "title": "no trigger key: the trigger stays as it is",
            "properties": none,
        }));
    }
    for (name, kind) in &triggers {
        branches.push(json!({
            "title": format!("{kind} by `{name}`"),
            "required": [name],
            "properties": {
                *name: {"not": {"type": "null"}},
                "schedule_type": {"enum": [kind, null]},
            },
        }));
    }
    Value::Array(branches)
}

/// Adds the rule to the schedule input schemas of `doc`.
pub(in crate::api) fn state(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (name, optional) in INPUTS {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
            object
                .extensions
                .get_or_insert_with(Default::default)
                .insert("oneOf".to_string(), one_of(optional));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::spec::parse_schedule;

    /// Which branches of `one_of` a body matches, by hand (no JSON Schema
    /// engine here): the server's rule and the document's must agree.
    fn matching(one_of: &Value, body: &Value) -> usize {
        let branches = one_of.as_array().cloned().unwrap_or_default();
        branches
            .iter()
            .filter(|b| {
                let required_ok = b["required"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .all(|k| k.as_str().is_some_and(|k| body.get(k).is_some()))
                    })
                    .unwrap_or(true);
                let props = b["properties"].as_object().cloned().unwrap_or_default();
                let props_ok = props.iter().all(|(k, rule)| match body.get(k) {
                    None => true,
                    Some(v) => {
                        if rule["type"] == "null" {
                            v.is_null()
                        } else if rule.get("not").is_some() {
                            !v.is_null()
                        } else {
                            rule["enum"].as_array().is_some_and(|e| e.contains(v))
                        }
                    }
                });
                required_ok && props_ok
            })
            .count()
    }

    #[test]
    fn the_document_s_trigger_rule_is_the_server_s() {
        let rule = one_of(false);
        let base = json!({"name": "a", "pipeline": "p"});
        let with = |extra: Value| {
            let mut b = base.clone();
            if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            b
        };
        for (body, valid) in [
            (with(json!({"cron": "@daily"})), true),
            (
                with(json!({"cron": "@daily", "cron_expression": null})),
                true,
            ),
            (
                with(json!({"cron": "@daily", "schedule_type": "cron"})),
                true,
            ),
            (with(json!({"interval_seconds": 60})), true),
            (with(json!({"run_at": "2099-01-01T00:00:00Z"})), true),
            (with(json!({})), false),
            (with(json!({"cron": null})), false),
            (with(json!({"cron": "@daily", "interval": 5})), false),
            (
                with(json!({"cron": "@daily", "schedule_type": "interval"})),
                false,
            ),
        ] {
            let server = parse_schedule(&body).is_ok();
            assert_eq!(server, valid, "server on {body}");
            assert_eq!(matching(&rule, &body) == 1, valid, "document on {body}");
        }
        // A PATCH may leave the trigger alone.
        let patch = one_of(true);
        assert_eq!(matching(&patch, &json!({"description": "x"})), 1);
        assert_eq!(matching(&patch, &json!({"cron": null})), 1);
        assert_eq!(matching(&patch, &json!({"cron": "@daily"})), 1);
        assert_eq!(
            matching(&patch, &json!({"cron": "@daily", "run_at": "x"})),
            2
        );
    }

    #[test]
    fn every_schedule_input_carries_the_rule() {
        let doc = serde_json::to_value(crate::api::openapi()).unwrap_or_default();
        for (name, optional) in INPUTS {
            let schema = &doc["components"]["schemas"][name];
            assert_eq!(schema["oneOf"], one_of(optional), "{name}");
            assert!(schema["properties"].is_object(), "{name}");
        }
    }
}
