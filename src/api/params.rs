//! Parameters as the OpenAPI document states them: with the rules the
//! handlers enforce, built from the code's own constants, so the document
//! and the checks cannot disagree. Documentation only: the handlers read
//! these values with [`super::extract`] and check them themselves.

use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::schedule::MAX_NAME_LEN;
use crate::types::{RunStatus, RunTrigger};

/// The pattern of a schedule name (`schedule::validate_name`): a letter or
/// digit, then letters, digits, `.`, `_` or `-`, [`MAX_NAME_LEN`] in all.
pub fn name_pattern() -> String {
    format!("^[A-Za-z0-9][A-Za-z0-9._-]{{0,{}}}$", MAX_NAME_LEN - 1)
}

/// The schema of a schedule name.
pub fn schedule_name() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "1–128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME_LEN))
        .pattern(Some(name_pattern()))
        .build()
}

/// An entity tag's pattern (RFC 9110 §8.8.3): `[W/] DQUOTE *etagc DQUOTE`.
const ENTITY_TAG: &str = r#"(W/)?"[!#-~]*""#;

/// The syntax `extract::if_match` accepts: `*`, or a comma-separated list
/// of entity tags (empty list elements allowed, as RFC 9110 §5.6.1 says).
pub fn if_match_pattern() -> String {
    format!(r"^[ \t,]*(\*|{ENTITY_TAG}([ \t]*,[ \t,]*{ENTITY_TAG})*)[ \t,]*$")
}

/// The schema of `If-Match`.
pub fn if_match() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`*`, or entity tags as the ETag gives them, comma-separated (RFC 9110)",
        ))
        .pattern(Some(if_match_pattern()))
        .examples(["\"3\"", "\"3\", \"4\"", "*"])
        .build()
}

/// A comma-separated list of `words` (each may have spaces around it), or
/// nothing.
fn word_list(words: &[&str]) -> String {
    let one = format!(r"\s*({})\s*", words.join("|"));
    format!("^({one}(,{one})*)?$")
}

/// The schema of the `status` filter: run statuses, comma-separated.
pub fn run_statuses() -> Object {
    let names: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "Run statuses, comma-separated: {}",
            names.join(", ")
        )))
        .pattern(Some(word_list(&names)))
        .examples(["failed,abandoned"])
        .build()
}

/// The schema of the `trigger` filter: one trigger.
pub fn run_trigger() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(RunTrigger::ALL.iter().map(|t| t.as_str())))
        .build()
}

/// A schedule name, as the document states it ([`schedule_name`]).
#[allow(dead_code)] // documentation only
pub struct ScheduleName;

impl utoipa::PartialSchema for ScheduleName {
    fn schema() -> RefOr<Schema> {
        schedule_name().into()
    }
}

impl utoipa::ToSchema for ScheduleName {}

/// The value of `If-Match`, as the document states it ([`if_match`]).
#[allow(dead_code)] // documentation only
pub struct EntityTags;

impl utoipa::PartialSchema for EntityTags {
    fn schema() -> RefOr<Schema> {
        if_match().into()
    }
}

impl utoipa::ToSchema for EntityTags {}

/// The `If-Match` header of a change.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: read by `extract::if_match`
pub struct IfMatchHeader {
    /// The versions the change may be based on, as their ETags: `"3"`, or a
    /// list (`"3", "4"`: any may match); `*`: any. The strong comparison
    /// of RFC 9110: a weak tag (`W/"3"`) never matches. No match: 409;
    /// malformed: 400.
    #[param(rename = "If-Match", value_type = EntityTags, required = false)]
    pub if_match: Option<String>,
}

/// The `Idempotency-Key` header of a backfill request.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: read by `backfills::idempotency_key`
pub struct IdempotencyKeyHeader {
    /// Makes the request idempotent: a later request with the same key (for
    /// this schedule) answers with this backfill. 1–200 visible ASCII
    /// characters (`MAX_IDEMPOTENCY_KEY`).
    #[param(
        rename = "Idempotency-Key",
        required = false,
        pattern = "^[!-~]{1,200}$"
    )]
    pub idempotency_key: Option<String>,
}

/// The `status` filter, as the document states it ([`run_statuses`]).
#[allow(dead_code)] // documentation only
pub struct RunStatusList;

impl utoipa::PartialSchema for RunStatusList {
    fn schema() -> RefOr<Schema> {
        run_statuses().into()
    }
}

impl utoipa::ToSchema for RunStatusList {}

/// The `trigger` filter, as the document states it ([`run_trigger`]).
#[allow(dead_code)] // documentation only
pub struct RunTriggerName;

impl utoipa::PartialSchema for RunTriggerName {
    fn schema() -> RefOr<Schema> {
        run_trigger().into()
    }
}

impl utoipa::ToSchema for RunTriggerName {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::validate_name;

    /// What `name_pattern` says, by hand (there is no regex engine here).
    fn matches_name_pattern(name: &str) -> bool {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(ok)
            && name.len() <= MAX_NAME_LEN
    }

    #[test]
    fn the_name_pattern_is_what_validate_name_accepts() {
        assert_eq!(name_pattern(), "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        let long = "a".repeat(MAX_NAME_LEN);
        let longer = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "a", "A.b_c-d", "0x", &long, &longer, "", "-a", ".a", "_a", "a b", "ä", "a/b",
        ] {
            assert_eq!(
                validate_name(name).is_ok(),
                matches_name_pattern(name),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_filters_list_every_value() {
        let statuses = word_list(&["a", "b"]);
        assert_eq!(statuses, r"^(\s*(a|b)\s*(,\s*(a|b)\s*)*)?$");
        let trigger = serde_json::to_value(run_trigger()).unwrap_or_default();
        assert_eq!(
            trigger["enum"].as_array().map(Vec::len),
            Some(RunTrigger::ALL.len())
        );
    }

    #[test]
    fn the_document_states_the_rules() {
        let doc = serde_json::to_value(crate::api::openapi()).unwrap_or_default();
        if let Ok(path) = std::env::var("SPINE_DUMP_OPENAPI") {
            let _ = std::fs::write(path, doc.to_string());
        }
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in &paths {
            for (method, op) in item.as_object().cloned().unwrap_or_default() {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                for p in &params {
                    let name = p["name"].as_str().unwrap_or_default();
                    let schema = match p["schema"]["$ref"].as_str() {
                        Some(r) => doc
                            .pointer(r.trim_start_matches('#'))
                            .cloned()
                            .unwrap_or_default(),
                        None => p["schema"].clone(),
                    };
                    *seen.entry(name.to_string()).or_default() += 1;
                    let what = format!("{method} {path} {name}");
                    match name {
                        "name" | "schedule" | "schedule_name" => {
                            assert_eq!(schema["pattern"], name_pattern(), "{what}");
                            assert_eq!(schema["maxLength"], MAX_NAME_LEN, "{what}");
                        }
                        "run_id" | "backfill_id" => assert_eq!(schema["format"], "uuid", "{what}"),
                        "limit" => {
                            assert_eq!(schema["minimum"], 1, "{what}");
                            assert_eq!(schema["maximum"], 1000, "{what}");
                        }
                        "count" => assert_eq!(schema["minimum"], 1, "{what}"),
                        "If-Match" => {
                            assert_eq!(p["in"], "header", "{what}");
                            assert_eq!(schema["pattern"], if_match_pattern(), "{what}");
                        }
                        "trigger" => assert!(schema["enum"].is_array(), "{what}"),
                        "status" => assert!(schema["pattern"].is_string(), "{what}"),
                        _ => {}
                    }
                }
                // The original's delete (`/scheduler/…`) had no precondition.
                if ["put", "patch", "delete"].contains(&method.as_str())
                    && path.contains("{name}")
                    && !path.starts_with("/scheduler/")
                {
                    assert!(
                        params.iter().any(|p| p["name"] == "If-Match"),
                        "{method} {path}: If-Match"
                    );
                }
            }
        }
        for name in [
            "name",
            "schedule",
            "run_id",
            "backfill_id",
            "limit",
            "count",
            "If-Match",
            "trigger",
            "status",
        ] {
            assert!(seen.contains_key(name), "no parameter {name}: {seen:?}");
        }
    }
}
