//! PUT and PATCH bodies: the read-only keys a GET adds, the version they
//! are based on, the name they may not change, and RFC 7396 merge patches
//! onto the canonical [`Definition`].

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::api::error::ApiError;
use crate::api::extract::if_match;
use crate::schedule::spec::{key, Definition, Key, KEYS};
use crate::schedule::{Schedule, ScheduleType};

/// Keys a GET returns that are not part of the definition. PUT and PATCH
/// ignore them, so a GET's output can be edited and sent back.
const READ_ONLY_KEYS: &[&str] = &[
    "created_at",
    "updated_at",
    "next_run",
    "ended",
    "pause",
    "last_run",
];

/// Takes `version` out of a PUT/PATCH body and reconciles it with
/// `If-Match`: the versions the change may be based on (`None`: any).
pub(super) fn take_version(
    body: &mut Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Option<Vec<i64>>, ApiError> {
    let header = if_match(headers)?;
    let in_body = match body.remove("version") {
        None | Some(Value::Null) => None,
        // `4.0` is an integer to JSON Schema (and to some JSON libraries).
        Some(v) => Some(v.as_i64().or_else(|| integral(&v)).ok_or_else(|| {
            ApiError::invalid("version", format!("must be a whole number, got {v}"))
        })?),
    };
    match (header, in_body) {
        // Both preconditions hold or the change fails: no stored version
        // can be `b` and one of the others, as a stale one could not.
        (Some(h), Some(b)) if !h.contains(&b) => Err(ApiError::conflict(
            "version_conflict",
            format!(
                "version {b} in the body is not among the versions If-Match names; \
                 no stored version can match both (send one of them)"
            ),
        )
        .with_field("version")),
        (_, Some(b)) => Ok(Some(vec![b])),
        (h, None) => Ok(h),
    }
}

/// A float with no fraction, within `i64`, as that integer.
fn integral(v: &Value) -> Option<i64> {
    let f = v.as_f64()?;
    // ±2^63 are the first floats outside i64; every float inside is exact.
    (f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f))
        .then_some(f as i64)
}

/// The body of a PUT/PATCH as a mapping, without the read-only keys.
pub(super) fn body_map(body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::invalid(
            "schedule",
            "the body must be a JSON object of schedule keys",
        ));
    };
    for key in READ_ONLY_KEYS {
        map.remove(*key);
    }
    Ok(map)
}

/// Refuses a body that names another schedule than the path (renaming is
/// not an update), and fills the name in when the body leaves it out.
pub(super) fn pin_name(map: &mut Map<String, Value>, name: &str) -> Result<(), ApiError> {
    match map.get("name") {
        None | Some(Value::Null) => {
            map.insert("name".into(), Value::String(name.to_string()));
            Ok(())
        }
        Some(Value::String(n)) if n == name => Ok(()),
        Some(other) => Err(ApiError::invalid(
            "name",
            format!(
                "is {other} but the path names {name:?}; schedules cannot be renamed \
                 (create the new one, then delete this one)"
            ),
        )
        .unprocessable()),
    }
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes,
/// anything else replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in patch {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The current definition with a patch applied. A patch naming a trigger
/// key replaces the trigger (so `{"interval": "5m"}` turns a cron schedule
/// into an interval one), dropping the old anchor unless the new trigger is
/// an interval too.
pub(super) fn patched(current: &Schedule, patch: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut base = serde_json::to_value(Definition::of(current))
        .map_err(|e| ApiError::internal(format!("serialising the stored schedule: {e}")))?;
    if let Value::Object(b) = &mut base {
        let named = |want: fn(&Key) -> bool| patch.keys().any(|k| key(k).is_some_and(want));
        if named(Key::sets_trigger) {
            for k in KEYS.iter().filter(|k| k.sets_trigger()) {
                b.remove(k.name);
            }
            if !named(|k| k.makes() == Some(ScheduleType::Interval)) {
                b.remove("start_at");
            }
        }
    }
    merge_patch(&mut base, &Value::Object(patch.clone()));
    // A key no schedule has is refused even as `null` (which the merge
    // would drop unseen): it is kept for the validation to name.
    if let Value::Object(b) = &mut base {
        for (k, v) in patch.iter().filter(|(k, _)| key(k).is_none()) {
            b.insert(k.clone(), v.clone());
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::spec::parse_schedule;
    use crate::schedule::Trigger;
    use crate::schedule::ValidationErrors;
    use serde_json::json;

    #[test]
    fn an_unknown_key_is_kept_for_validation_even_as_null() {
        let current = parse_schedule(&json!({"name": "a", "pipeline": "p", "cron": "@daily"}))
            .map(|p| p.schedule)
            .ok();
        let Some(current) = current else {
            panic!("the base schedule parses");
        };
        let patch = json!({"": null, "colour": null})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let merged = patched(&current, &patch).ok().unwrap_or_default();
        let fields: Vec<String> = match parse_schedule(&merged) {
            Err(ValidationErrors(e)) => e.into_iter().map(|e| e.field).collect(),
            Ok(_) => Vec::new(),
        };
        assert!(fields.contains(&"colour".to_string()), "{fields:?}");
        assert!(fields.contains(&String::new()), "{fields:?}");
    }

    #[test]
    fn a_version_may_be_written_as_a_whole_float() {
        let mut body = json!({"version": 4.0})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let v = take_version(&mut body, &HeaderMap::new()).ok().flatten();
        assert_eq!(v, Some(vec![4]));
        assert_eq!(integral(&json!(-3.0)), Some(-3));
        assert_eq!(integral(&json!(4.5)), None);
        assert_eq!(integral(&json!(1e19)), None);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": 9}, "e": [2], "f": "x"}),
        );
        assert_eq!(doc, json!({"b": {"c": 9, "d": 3}, "e": [2], "f": "x"}));
    }

    #[test]
    fn patching_a_trigger_replaces_it() -> Result<(), ApiError> {
        let cron = Schedule::cron("s", "p", "0 6 * * *").map_err(ValidationErrors::from)?;
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        let to_interval = patched(&cron, &map(json!({"interval": "15m"})))?;
        let parsed = parse_schedule(&to_interval).map_err(ApiError::from)?;
        assert!(matches!(
            parsed.schedule.trigger(),
            Trigger::Interval { .. }
        ));
        let back = patched(&parsed.schedule, &map(json!({"cron": "*/5 * * * *"})))?;
        let parsed = parse_schedule(&back).map_err(ApiError::from)?;
        assert_eq!(
            Definition::of(&parsed.schedule).cron.as_deref(),
            Some("*/5 * * * *")
        );
        let tz_only = patched(&parsed.schedule, &map(json!({"timezone": "Europe/Berlin"})))?;
        let parsed = parse_schedule(&tz_only).map_err(ApiError::from)?;
        assert_eq!(parsed.schedule.timezone().name(), "Europe/Berlin");
        assert_eq!(parsed.schedule.schedule_type().as_str(), "cron");
        Ok(())
    }

    #[test]
    fn canonical_definition_round_trips() -> Result<(), ApiError> {
        let body = json!({
            "name": "finra_otc_t1", "pipeline": "finra.ingest", "cron": "0 6 * * 1-5",
            "timezone": "America/New_York", "params": {"tier": "T1"}, "timeout": "1h",
            "retry": {"max_attempts": 3, "backoff": "30s"}, "description": "d"
        });
        let first = parse_schedule(&body).map_err(ApiError::from)?.schedule;
        let canonical = serde_json::to_value(Definition::of(&first))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let again = parse_schedule(&canonical).map_err(ApiError::from)?.schedule;
        assert_eq!(first, again);
        Ok(())
    }
}
