//! Reading a loosely typed mapping (a YAML item, a JSON body) one key at a
//! time, recording a problem per key instead of stopping at the first. The
//! one reader of the schedules file, the API's bodies and the pipelines file.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{ValidationError, ValidationErrors};

/// Typed getters over one mapping; each problem is recorded under its key.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: Vec<ValidationError>,
    refuse_blank: bool,
}

impl<'a> Fields<'a> {
    /// A reader of `map` with no problems recorded yet.
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            errors: Vec::new(),
            refuse_blank: false,
        }
    }

    /// The same reader, refusing strings that are empty or only spaces
    /// ("must not be empty"), as the pipelines file does.
    pub(crate) fn refusing_blank_strings(self) -> Self {
        Fields {
            refuse_blank: true,
            ..self
        }
    }

    /// The problems recorded so far.
    pub(crate) fn errors(&self) -> &[ValidationError] {
        &self.errors
    }

    /// Every problem recorded, in the order found.
    pub(crate) fn into_errors(self) -> Vec<ValidationError> {
        self.errors
    }

    /// Records a problem with `field`.
    pub(crate) fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ValidationError::new(field, message));
    }

    /// Records the error, if any; true when there was none.
    pub(crate) fn check(&mut self, result: Result<(), ValidationError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                self.errors.push(e);
                false
            }
        }
    }

    /// Takes over a constructor's problems, except those `keep` rejects.
    pub(crate) fn absorb(&mut self, errors: ValidationErrors, keep: impl Fn(&str) -> bool) {
        self.errors
            .extend(errors.0.into_iter().filter(|e| keep(&e.field)));
    }

    /// The value of `key`, treating `null` (YAML `~`) like an absent key.
    pub(crate) fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn required_str(&mut self, key: &str) -> Option<&'a str> {
        if self.present(key).is_none() {
            self.fail(key, "is required");
            return None;
        }
        self.opt_str(key)
    }

    pub(crate) fn opt_str(&mut self, key: &str) -> Option<&'a str> {
        match self.present(key)? {
            Value::String(s) if self.refuse_blank && s.trim().is_empty() => {
                self.fail(key, "must not be empty");
                None
            }
            Value::String(s) => Some(s.as_str()),
            other => {
                self.fail(key, format!("must be a string, got {}", kind_of(other)));
                None
            }
        }
    }

    pub(crate) fn opt_bool(&mut self, key: &str) -> Option<bool> {
        match self.present(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.fail(
                    key,
                    format!("must be true or false, got {}", kind_of(other)),
                );
                None
            }
        }
    }

    pub(crate) fn opt_u32(&mut self, key: &str) -> Option<u32> {
        let v = self.present(key)?;
        match whole(v).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.fail(key, format!("must be a whole number ≥ 0, got {v}"));
                None
            }
        }
    }

    /// Seconds as a number, or a duration string (`30s`, `5m`, `1h 30m`).
    pub(crate) fn opt_duration_secs(&mut self, key: &str) -> Option<Duration> {
        let v = self.present(key)?;
        self.duration(key, v, 1)
    }

    /// `v` as a duration in `unit_secs` units (see [`duration_value`]).
    pub(crate) fn duration(&mut self, key: &str, v: &Value, unit_secs: u64) -> Option<Duration> {
        match duration_value(v, unit_secs) {
            Ok(d) => Some(d),
            Err(message) => {
                self.fail(key, message);
                None
            }
        }
    }

    pub(crate) fn opt_instant(&mut self, key: &str) -> Option<DateTime<Utc>> {
        let s = self.opt_str(key)?;
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.fail(
                    key,
                    format!("{s:?} is not an RFC 3339 instant ({e}), e.g. 2027-01-01T06:00:00Z"),
                );
                None
            }
        }
    }
}

/// A duration written as a whole number of `unit_secs` units, or as a
/// duration string (`90s`, `15m`, `1h 30m`). Shared by every file format
/// that takes durations (schedules, pipelines). `Err` is the message.
pub fn duration_value(v: &Value, unit_secs: u64) -> Result<Duration, String> {
    let unit = match unit_secs {
        1 => "seconds",
        60 => "minutes",
        3600 => "hours",
        _ => "units",
    };
    match v {
        Value::Number(_) => whole(v)
            .and_then(|n| n.checked_mul(unit_secs))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("must be a whole number of {unit} ≥ 0, got {v}")),
        Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 90s, 15m or 1h 30m")),
        other => Err(format!(
            "must be a number of {unit} or a duration string, got {}",
            kind_of(other)
        )),
    }
}

/// A whole number ≥ 0, as JSON Schema counts integers: `3` and `3.0`
/// alike (a client's JSON library may write either); `None` for anything
/// else (negative, fractional, too large, not a number).
pub fn whole(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // 2^64 is the first float above u64::MAX; every float below it is exact.
    (f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0).then_some(f as u64)
}

/// What a JSON/YAML value is, as error messages name it ("a list").
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn whole_numbers_are_what_json_schema_calls_integers() {
        assert_eq!(super::whole(&json!(3)), Some(3));
        assert_eq!(super::whole(&json!(3.0)), Some(3));
        assert_eq!(super::whole(&json!(3.5)), None);
        assert_eq!(super::whole(&json!(-1)), None);
        assert_eq!(super::whole(&json!(-1.0)), None);
        assert_eq!(super::whole(&json!(1e20)), None);
        assert_eq!(super::whole(&json!("3")), None);
    }
}
