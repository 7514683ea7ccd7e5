//! The original's `ScheduleCreate` body: read, checked, and translated into
//! a `/v1` definition, which then goes through `/v1`'s own validation.

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::schedule::fields::kind_of;
use crate::schedule::{ValidationError, ValidationErrors};

/// The keys of the body, as the original's `ScheduleCreate` model has them.
const KEYS: &[&str] = &[
    "name",
    "pipeline",
    "cron",
    "interval_minutes",
    "timezone",
    "params",
];

/// The original's words when neither trigger is given.
pub const NO_TRIGGER: &str = "Either cron or interval_minutes required";

/// A schedule to create, or to replace when the name exists (the
/// original's `ScheduleCreate`). `cron` (a crontab expression, read in
/// `timezone`) or `interval_minutes` (every N minutes), not both. Unknown
/// keys are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: bodies are read by `translate`
pub struct ScheduleCreate {
    /// Unique name: 1–128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(schema_with = crate::api::params::schedule_name)]
    pub name: String,
    /// A pipeline defined in the replicas' pipelines file.
    #[schema(example = "finra.otc_transparency.ingest_week")]
    pub pipeline: String,
    /// Crontab expression (`null` or empty: not given).
    #[schema(example = "0 6 * * 1-5")]
    pub cron: Option<String>,
    /// Minutes between runs (`null` or 0: not given).
    #[schema(minimum = 0)]
    pub interval_minutes: Option<i64>,
    /// IANA time zone the cron fields are read in.
    #[serde(default)]
    #[schema(default = "UTC", example = "America/New_York")]
    pub timezone: String,
    /// Handed to the pipeline.
    #[serde(default)]
    #[schema(value_type = Object, default = json!({}))]
    pub params: Map<String, Value>,
}

/// States the original's "either cron or interval_minutes" rule in the
/// document: an `anyOf` on `ScheduleCreate` requiring a non-empty `cron`
/// or a positive `interval_minutes` (`null`, `""` and 0 count as not given,
/// as in the original), so a body without either breaks a documented rule
/// and its 400 [`NO_TRIGGER`] is not a schema-valid request refused.
/// (Both at once is refused by the handler with 422: it is stated in
/// words.) Put into the object's extension map, as
/// `schedules::trigger_rule` does, so the properties stay where they are.
pub(in crate::api) fn state_trigger_rule(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut("ScheduleCreate") {
        object
            .extensions
            .get_or_insert_with(Default::default)
            .insert(
                "anyOf".to_string(),
                serde_json::json!([
                    {"title": "a cron expression", "required": ["cron"],
                     "properties": {"cron": {"type": "string", "minLength": 1}}},
                    {"title": "minutes between runs", "required": ["interval_minutes"],
                     "properties": {"interval_minutes": {"type": "integer", "minimum": 1}}},
                ]),
            );
    }
}

/// Reads a `ScheduleCreate` body into the `/v1` definition it asks for
/// (`name`, `pipeline`, `cron` or `interval_minutes`, `timezone`,
/// `params`), for `spec::parse_schedule` to validate.
///
/// The original's rules: `cron` wins when it is a non-empty string;
/// otherwise a non-zero `interval_minutes`; neither is a 400 with its
/// words, [`NO_TRIGGER`]. Refused with a 400 naming each problem: a body
/// that is not an object, an unknown key, a missing or mistyped value, and
/// both triggers at once (the original silently ignored the interval).
pub fn translate(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(map) = body else {
        return Err(invalid(vec![ValidationError::new(
            "body",
            format!("must be a JSON object, got {}", kind_of(body)),
        )]));
    };
    let mut errors: Vec<ValidationError> = map
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| {
            ValidationError::new(
                k,
                format!("unknown key; expected one of {}", KEYS.join(", ")),
            )
        })
        .collect();
    let mut string = |key: &str, required: bool| match map.get(key) {
        None if required => {
            errors.push(ValidationError::new(key, "is required"));
            None
        }
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(ValidationError::new(
                key,
                format!("must be a string, got {}", kind_of(other)),
            ));
            None
        }
    };
    let name = string("name", true);
    let pipeline = string("pipeline", true);
    let timezone = string("timezone", false).unwrap_or_else(|| "UTC".to_string());
    let cron = match map.get("cron") {
        Some(Value::Null) | None => None,
        Some(_) => string("cron", false).filter(|c| !c.is_empty()),
    };
    let interval = match map.get("interval_minutes") {
        None | Some(Value::Null) => None,
        // A whole number, as JSON Schema's `integer` (so `5.0` too).
        Some(v) => match v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                errors.push(ValidationError::new(
                    "interval_minutes",
                    format!("must be an integer, got {}", kind_of(v)),
                ));
                None
            }
        },
    };
    let params = match map.get("params") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            errors.push(ValidationError::new(
                "params",
                format!("must be a JSON object, got {}", kind_of(other)),
            ));
            Map::new()
        }
    };
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let mut definition = Map::from_iter([
        ("name".to_string(), Value::from(name)),
        ("pipeline".to_string(), Value::from(pipeline)),
        ("timezone".to_string(), Value::from(timezone)),
        ("params".to_string(), Value::Object(params)),
    ]);
    let trigger = match (cron, interval) {
        // A rule across two keys that the document states in words only
        // (both keys are optional in its schema): refused once read, 422.
        (Some(_), Some(_)) => {
            return Err(ApiError::refused(ValidationErrors(vec![
                ValidationError::new(
                    "interval_minutes",
                    "give either cron or interval_minutes, not both",
                ),
            ])))
        }
        (Some(c), None) => ("cron", Value::String(c)),
        (None, Some(n)) => ("interval_minutes", Value::from(n)),
        (None, None) => return Err(ApiError::bad_request("invalid_input", NO_TRIGGER)),
    };
    definition.insert(trigger.0.to_string(), trigger.1);
    Ok(definition)
}

fn invalid(errors: Vec<ValidationError>) -> ApiError {
    ValidationErrors(errors).into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(body: Value) -> String {
        match translate(&body) {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_original_bodies_translate() -> Result<(), ApiError> {
        assert_eq!(
            Value::Object(translate(
                &json!({"name": "daily_finra", "pipeline": "p", "cron": "0 6 * * 1-5",
                        "timezone": "America/New_York", "params": {"tier": "T1"}})
            )?),
            json!({"name": "daily_finra", "pipeline": "p", "cron": "0 6 * * 1-5",
                   "timezone": "America/New_York", "params": {"tier": "T1"}})
        );
        assert_eq!(
            Value::Object(translate(
                &json!({"name": "hourly", "pipeline": "p", "interval_minutes": 60, "cron": null})
            )?),
            json!({"name": "hourly", "pipeline": "p", "interval_minutes": 60,
                   "timezone": "UTC", "params": {}})
        );
        // The original tests truthiness: an empty cron and a zero interval are absent.
        assert_eq!(
            translate(&json!({"name": "n", "pipeline": "p", "cron": "", "interval_minutes": 5}))?
                ["interval_minutes"],
            5
        );
        Ok(())
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        assert!(message(json!({"name": "n", "pipeline": "p"})).contains(NO_TRIGGER));
        assert!(
            message(json!({"name": "n", "pipeline": "p", "cron": "", "interval_minutes": 0}))
                .contains(NO_TRIGGER)
        );
        let m = message(json!({"pipeline": 3, "cron": "@daily", "timezone": null, "tz": "UTC"}));
        for part in [
            "tz: unknown key",
            "name: is required",
            "pipeline: must be a string, got a number",
            "timezone: must be a string, got null",
        ] {
            assert!(m.contains(part), "{part:?} in {m}");
        }
        assert!(
            translate(&json!({"name": "n", "pipeline": "p", "interval_minutes": 5.0}))
                .is_ok_and(|m| m["interval_minutes"] == json!(5))
        );
        // Read exactly (serde_json's float_roundtrip), a large whole float
        // is still a whole number.
        let big: Value = serde_json::from_str(
            r#"{"name": "n", "pipeline": "p", "interval_minutes": 3959170311786314.0}"#,
        )
        .unwrap_or_default();
        assert!(translate(&big)
            .is_ok_and(|m| m["interval_minutes"] == json!(3_959_170_311_786_314_i64)));
        assert!(
            message(json!({"name": "n", "pipeline": "p", "interval_minutes": 1.5}))
                .contains("interval_minutes: must be an integer")
        );
        assert!(
            message(json!({"name": "n", "pipeline": "p", "cron": "@daily",
                               "interval_minutes": 5}))
            .contains("not both")
        );
        assert!(
            message(json!({"name": "n", "pipeline": "p", "cron": "@daily", "params": []}))
                .contains("params: must be a JSON object")
        );
        assert!(message(json!(["n"])).contains("body: must be a JSON object"));
    }
}
