//! The document's links between operations (OpenAPI 3.1 `links` on
//! responses): which later operation a response's identifier feeds, so a
//! client (and schemathesis's stateful phase) can chain create -> read ->
//! change -> delete without guessing names or ids.
//!
//! utoipa's path attributes cannot state links, so they are added to the
//! generated document here, from one table (`links()`); [`check`] refuses a
//! link to an operation or a parameter the document does not have, and a
//! unit test runs it on every build, so the table cannot rot when an
//! operation is renamed.

use serde_json::Value;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{OpenApi, RefOr};

/// One link: from `status` of operation `from`, to operation `to`, filling
/// the path parameter `parameter` with the response body's `field`.
struct LinkSpec {
    from: &'static str,
    status: &'static str,
    to: &'static str,
    parameter: &'static str,
    field: &'static str,
}

const fn link(
    from: &'static str,
    status: &'static str,
    to: &'static str,
    parameter: &'static str,
    field: &'static str,
) -> LinkSpec {
    LinkSpec {
        from,
        status,
        to,
        parameter,
        field,
    }
}

/// Operations addressed by a schedule's name.
const BY_NAME: [&str; 11] = [
    "get_schedule",
    "replace_schedule",
    "patch_schedule",
    "delete_schedule",
    "pause_schedule",
    "resume_schedule",
    "run_schedule_now",
    "next_fire_times",
    "list_schedule_runs",
    "backfill_schedule",
    "list_schedule_backfills",
];

/// Operations addressed by a run's id.
const BY_RUN: [&str; 3] = ["get_run", "cancel_run", "rerun"];

/// Operations addressed by a backfill's id.
const BY_BACKFILL: [&str; 2] = ["get_backfill", "cancel_backfill"];

/// Every link, by the response that carries it.
fn links() -> Vec<LinkSpec> {
    let mut all = Vec::new();
    // A schedule as returned by create, get, the updates and the controls.
    for (from, status) in [
        ("create_schedule", "201"),
        ("get_schedule", "200"),
        ("replace_schedule", "200"),
        ("patch_schedule", "200"),
        ("pause_schedule", "200"),
        ("resume_schedule", "200"),
    ] {
        for to in BY_NAME {
            all.push(link(from, status, to, "name", "name"));
        }
    }
    for (from, status) in [
        ("run_schedule_now", "202"),
        ("rerun", "202"),
        ("get_run", "200"),
    ] {
        for to in BY_RUN {
            all.push(link(from, status, to, "run_id", "run_id"));
        }
    }
    for (from, status) in [
        ("backfill_schedule", "202"),
        ("backfill_schedule", "200"),
        ("get_backfill", "200"),
    ] {
        for to in BY_BACKFILL {
            all.push(link(from, status, to, "backfill_id", "backfill_id"));
        }
    }
    // Runs and backfills lead back to their schedule.
    for (from, status) in [
        ("get_run", "200"),
        ("run_schedule_now", "202"),
        ("get_backfill", "200"),
    ] {
        all.push(link(from, status, "get_schedule", "name", "schedule"));
    }
    all
}

/// Every operation of `doc`.
fn operations(doc: &OpenApi) -> impl Iterator<Item = &Operation> {
    doc.paths.paths.values().flat_map(|item| {
        [&item.get, &item.put, &item.post, &item.delete, &item.patch]
            .into_iter()
            .flatten()
    })
}

/// Every operation of `doc`, to change.
fn operations_mut(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Why a link of the table does not fit the document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// No operation has this id.
    #[error("link {from} -> {to}: no operation {missing:?}")]
    NoOperation {
        /// The link's source operation.
        from: String,
        /// The link's target operation.
        to: String,
        /// The id not found.
        missing: String,
    },
    /// The source operation does not declare the response status.
    #[error("link {from} -> {to}: {from} has no {status} response")]
    NoResponse {
        /// The link's source operation.
        from: String,
        /// The link's target operation.
        to: String,
        /// The status.
        status: String,
    },
    /// The source response's JSON body has no such top-level field.
    #[error("link {from} -> {to}: {from}'s response has no field {field:?}")]
    NoField {
        /// The link's source operation.
        from: String,
        /// The link's target operation.
        to: String,
        /// The field.
        field: String,
    },
    /// The target operation has no such path parameter.
    #[error("link {from} -> {to}: {to} has no path parameter {parameter:?}")]
    NoParameter {
        /// The link's source operation.
        from: String,
        /// The link's target operation.
        to: String,
        /// The parameter.
        parameter: String,
    },
}

/// Whether a response body of `schema` (JSON, `$ref`s into `components`)
/// has the top-level property `field`, through `allOf` (a flattened
/// struct) too; `depth` stops a cycle.
fn has_property(components: &Value, schema: &Value, field: &str, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return has_property(components, &components["schemas"][name], field, depth + 1);
    }
    schema["properties"].get(field).is_some()
        || schema["allOf"].as_array().is_some_and(|all| {
            all.iter()
                .any(|s| has_property(components, s, field, depth + 1))
        })
}

/// Checks every link of the table against `doc`: both operations exist,
/// the source declares the status with a JSON body that has the field,
/// the target has the path parameter.
pub fn check(doc: &OpenApi) -> Result<(), Vec<LinkError>> {
    let components = serde_json::to_value(&doc.components).unwrap_or_default();
    let find = |id: &str| operations(doc).find(|o| o.operation_id.as_deref() == Some(id));
    let mut errors = Vec::new();
    for l in links() {
        let (from, to) = (l.from.to_string(), l.to.to_string());
        let Some(source) = find(l.from) else {
            errors.push(LinkError::NoOperation {
                from,
                to,
                missing: l.from.into(),
            });
            continue;
        };
        let Some(target) = find(l.to) else {
            errors.push(LinkError::NoOperation {
                from,
                to,
                missing: l.to.into(),
            });
            continue;
        };
        let Some(response) = source.responses.responses.get(l.status) else {
            errors.push(LinkError::NoResponse {
                from,
                to,
                status: l.status.into(),
            });
            continue;
        };
        let body = match response {
            RefOr::T(r) => r
                .content
                .get("application/json")
                .and_then(|c| serde_json::to_value(c).ok())
                .map(|c| c["schema"].clone()),
            RefOr::Ref(_) => None,
        };
        if !body.is_some_and(|b| has_property(&components, &b, l.field, 0)) {
            errors.push(LinkError::NoField {
                from,
                to,
                field: l.field.into(),
            });
            continue;
        }
        let has_parameter = target.parameters.iter().flatten().any(|p| {
            matches!(p, RefOr::T(p) if p.name == l.parameter && matches!(p.parameter_in, ParameterIn::Path))
        });
        if !has_parameter {
            errors.push(LinkError::NoParameter {
                from,
                to,
                parameter: l.parameter.into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Adds the table's links to the responses of `doc` (a link whose source
/// response is missing is skipped; [`check`] reports it).
pub fn add(doc: &mut OpenApi) {
    let table = links();
    for op in operations_mut(doc) {
        let Some(id) = op.operation_id.clone() else {
            continue;
        };
        for l in table.iter().filter(|l| l.from == id) {
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(l.status) else {
                continue;
            };
            let name = format!("{}_{}", l.to, l.parameter);
            let built = LinkBuilder::new()
                .operation_id(l.to)
                .parameter(l.parameter, format!("$response.body#/{}", l.field))
                .description(format!(
                    "`{}` of this response as `{}` of {}",
                    l.field, l.parameter, l.to
                ))
                .build();
            response.links.insert(name, RefOr::T(built));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_names_an_operation_a_response_and_a_parameter_that_exist() {
        let doc = crate::api::openapi();
        assert_eq!(check(&doc), Ok(()));
        // ... and they are in the document served.
        let json = serde_json::to_value(&doc).unwrap_or_default();
        let links = &json["paths"]["/v1/schedules"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            links["get_schedule_name"]["parameters"]["name"],
            "$response.body#/name"
        );
        assert_eq!(links.as_object().map(|m| m.len()), Some(BY_NAME.len()));
    }

    #[test]
    fn a_link_from_a_field_the_response_lacks_is_reported() {
        let mut doc = crate::api::openapi();
        if let Some(c) = doc.components.as_mut() {
            c.schemas.remove("RunNowAccepted");
            c.schemas.insert(
                "RunNowAccepted".into(),
                utoipa::openapi::ObjectBuilder::new().into(),
            );
        }
        let errors = check(&doc).err().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, LinkError::NoField { from, field, .. }
                if from == "run_schedule_now" && field == "run_id")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_link_to_nothing_is_reported() {
        let mut doc = crate::api::openapi();
        for op in operations_mut(&mut doc) {
            if op.operation_id.as_deref() == Some("get_run") {
                op.operation_id = Some("renamed".into());
            }
        }
        let errors = check(&doc).err().unwrap_or_default();
        assert!(
            errors.iter().any(
                |e| matches!(e, LinkError::NoOperation { missing, .. } if missing == "get_run")
            ),
            "{errors:?}"
        );
    }
}
