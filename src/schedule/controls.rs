//! What the run controls ask for: the bodies of run-now (a params override)
//! and pause (a note), and the rule that merges an override over a
//! schedule's params. Pure: read from JSON, checked, every problem named.
//!
//! Bodies are optional. No body (an empty one, or JSON `null`) asks for
//! the plain control; a body must be a JSON object whose keys are the control's own —
//! an unknown key is refused, never ignored, so a typo (`"parms"`) cannot
//! silently run a job with the wrong parameters.

use serde_json::{Map, Value};

use super::fields::{kind_of, Fields};
use super::{ValidationError, ValidationErrors, MAX_PARAMS_BYTES};

/// Longest pause note, in characters.
pub const MAX_PAUSE_NOTE_LEN: usize = 1000;
/// Longest `by` of a pause, in characters.
pub const MAX_PAUSED_BY_LEN: usize = 200;

/// The keys of a run-now body.
pub const RUN_KEYS: &[&str] = &["params"];
/// The keys of a pause body.
pub const PAUSE_KEYS: &[&str] = &["note", "by"];

/// Why a schedule is paused, and who paused it (each optional). Shown with
/// the schedule while it is paused, and forgotten when it is resumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseNote {
    /// Why (free text, up to [`MAX_PAUSE_NOTE_LEN`] characters).
    pub note: Option<String>,
    /// Who (free text, up to [`MAX_PAUSED_BY_LEN`] characters): the API's
    /// tokens carry no names, so the caller says it.
    pub by: Option<String>,
}

impl PauseNote {
    /// Whether it says nothing (a plain pause).
    pub fn is_empty(&self) -> bool {
        self.note.is_none() && self.by.is_none()
    }

    /// Reads a pause body: absent, or `{"note": "…", "by": "…"}` (both
    /// optional; `null` is absent, an empty string is refused).
    pub fn from_body(body: Option<&Value>) -> Result<PauseNote, ValidationErrors> {
        let Some(map) = object(body, PAUSE_KEYS, "pause")? else {
            return Ok(PauseNote::default());
        };
        let mut r = Fields::new(map).refusing_blank_strings();
        let text = |r: &mut Fields<'_>, key: &str, max: usize| {
            let s = r.opt_str(key)?;
            let n = s.chars().count();
            if n > max {
                r.fail(key, format!("is {n} characters; the limit is {max}"));
                return None;
            }
            Some(s.to_string())
        };
        let note = text(&mut r, "note", MAX_PAUSE_NOTE_LEN);
        let by = text(&mut r, "by", MAX_PAUSED_BY_LEN);
        done(r.into_errors(), PauseNote { note, by })
    }
}

/// A run-now request: optionally, params to merge over the schedule's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRequest {
    /// The override (`None`: the schedule's params as they are).
    pub params: Option<Map<String, Value>>,
}

impl RunRequest {
    /// Reads a run-now body: absent, or `{"params": {…}}` (`params` a JSON
    /// object; `null` is absent).
    pub fn from_body(body: Option<&Value>) -> Result<RunRequest, ValidationErrors> {
        let Some(map) = object(body, RUN_KEYS, "run-now")? else {
            return Ok(RunRequest::default());
        };
        let mut r = Fields::new(map);
        let params = match r.present("params") {
            None => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                r.fail(
                    "params",
                    format!("must be a JSON object, got {}", kind_of(other)),
                );
                None
            }
        };
        done(r.into_errors(), RunRequest { params })
    }

    /// The params the run gets: the override merged over `base` (the
    /// schedule's), by [`merge_params`].
    pub fn params_over(
        &self,
        base: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ValidationError> {
        match &self.params {
            Some(over) => merge_params(base, over),
            None => Ok(base.clone()),
        }
    }
}

/// A shallow merge: every top-level key of `over` replaces (or adds) the
/// same key of `base`, with its value as given — `null` included, and a
/// nested object replaces the whole value rather than merging into it (it
/// is not a JSON merge patch). Keys `over` leaves out keep `base`'s value.
/// The result is held to the limit of a schedule's params
/// ([`MAX_PARAMS_BYTES`] as JSON).
pub fn merge_params(
    base: &Map<String, Value>,
    over: &Map<String, Value>,
) -> Result<Map<String, Value>, ValidationError> {
    let mut merged = base.clone();
    for (key, value) in over {
        merged.insert(key.clone(), value.clone());
    }
    let size = Value::Object(merged.clone()).to_string().len();
    if size > MAX_PARAMS_BYTES {
        return Err(ValidationError::new(
            "params",
            format!(
                "merged over the schedule's params they are {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}"
            ),
        ));
    }
    Ok(merged)
}

/// Checks a body that may carry no keys (resume, rerun): absent, or `{}`.
pub fn no_keys(body: Option<&Value>, control: &str) -> Result<(), ValidationErrors> {
    object(body, &[], control).map(|_| ())
}

/// The body as a mapping with only `keys` (`None` when there is no body);
/// otherwise every problem: not an object, or each unknown key by name.
fn object<'a>(
    body: Option<&'a Value>,
    keys: &[&str],
    control: &str,
) -> Result<Option<&'a Map<String, Value>>, ValidationErrors> {
    let map = match body {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(ValidationError::new(
                "body",
                format!(
                    "the {control} body must be a JSON object, got {}",
                    kind_of(other)
                ),
            )
            .into())
        }
    };
    let expected = if keys.is_empty() {
        format!("the {control} body takes no keys; send none or {{}}")
    } else {
        format!("unknown key; expected {}", keys.join(" or "))
    };
    let unknown: Vec<ValidationError> = map
        .keys()
        .filter(|k| !keys.contains(&k.as_str()))
        .map(|k| ValidationError::new(k.as_str(), expected.clone()))
        .collect();
    if unknown.is_empty() {
        Ok(Some(map))
    } else {
        Err(ValidationErrors(unknown))
    }
}

fn done<T>(errors: Vec<ValidationError>, value: T) -> Result<T, ValidationErrors> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ValidationErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields<T>(r: Result<T, ValidationErrors>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(ValidationErrors(v)) => v.into_iter().map(|e| e.field).collect(),
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_merge_is_shallow() -> Result<(), ValidationError> {
        let base = map(json!({"tier": "T1", "days": 7, "opts": {"a": 1, "b": 2}}));
        let over = map(json!({"days": 30, "opts": {"a": 9}, "extra": null}));
        assert_eq!(
            Value::Object(merge_params(&base, &over)?),
            json!({"tier": "T1", "days": 30, "opts": {"a": 9}, "extra": null})
        );
        // No override: the schedule's params as they are.
        assert_eq!(RunRequest::default().params_over(&base)?, base);
        Ok(())
    }

    #[test]
    fn a_merge_over_the_limit_is_refused() {
        let base = map(json!({"big": "x".repeat(MAX_PARAMS_BYTES - 100)}));
        let over = map(json!({"more": "y".repeat(200)}));
        let e = merge_params(&base, &over).map(|_| ()).map_err(|e| e.field);
        assert_eq!(e, Err("params".to_string()));
        // Replacing the big key keeps it small.
        assert!(merge_params(&base, &map(json!({"big": "z"}))).is_ok());
    }

    #[test]
    fn run_bodies_are_checked() -> Result<(), ValidationErrors> {
        assert_eq!(RunRequest::from_body(None)?, RunRequest::default());
        assert_eq!(
            RunRequest::from_body(Some(&json!({})))?,
            RunRequest::default()
        );
        assert_eq!(
            RunRequest::from_body(Some(&json!({"params": null})))?,
            RunRequest::default()
        );
        let r = RunRequest::from_body(Some(&json!({"params": {"days": 30}})))?;
        assert_eq!(r.params, Some(map(json!({"days": 30}))));
        assert_eq!(fields(RunRequest::from_body(Some(&json!([1])))), ["body"]);
        assert_eq!(
            fields(RunRequest::from_body(Some(&json!({"params": [1]})))),
            ["params"]
        );
        assert_eq!(
            fields(RunRequest::from_body(Some(
                &json!({"parms": {}, "note": "x"})
            ))),
            ["note", "parms"]
        );
        Ok(())
    }

    #[test]
    fn pause_bodies_are_checked() -> Result<(), ValidationErrors> {
        assert!(PauseNote::from_body(None)?.is_empty());
        assert!(PauseNote::from_body(Some(&json!({"note": null})))?.is_empty());
        let p = PauseNote::from_body(Some(&json!({"note": "db upgrade", "by": "alice"})))?;
        assert_eq!(p.note.as_deref(), Some("db upgrade"));
        assert_eq!(p.by.as_deref(), Some("alice"));
        assert_eq!(
            fields(PauseNote::from_body(Some(&json!({"note": 5, "by": ""})))),
            ["note", "by"]
        );
        let long = "n".repeat(MAX_PAUSE_NOTE_LEN + 1);
        assert_eq!(
            fields(PauseNote::from_body(Some(&json!({"note": long})))),
            ["note"]
        );
        assert_eq!(
            fields(PauseNote::from_body(Some(&json!({"reason": "x"})))),
            ["reason"]
        );
        assert_eq!(fields(PauseNote::from_body(Some(&json!("x")))), ["body"]);
        Ok(())
    }

    #[test]
    fn keyless_bodies_take_nothing() {
        assert!(no_keys(None, "resume").is_ok());
        assert!(no_keys(Some(&json!({})), "resume").is_ok());
        assert_eq!(
            fields(no_keys(Some(&json!({"note": "x"})), "resume")),
            ["note"]
        );
        assert!(no_keys(Some(&json!(null)), "rerun").is_ok());
        assert_eq!(fields(no_keys(Some(&json!([])), "rerun")), ["body"]);
    }
}
