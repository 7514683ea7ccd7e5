//! axum's extractors with our error shape as their rejection, and the
//! `If-Match` precondition.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON body (`Content-Type: application/json` or any `+json` type, within
/// the body limit); rejects with 400/413/415 in the API's shape. An object
/// with a key twice (at any depth) is refused (400 `invalid_json` naming the
/// key): serde_json alone would silently keep the last one.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        if !json_type {
            return Err(ApiError::from_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from_status(r.status(), &r.body_text()))?;
        let value = parse_strict(&bytes)?;
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body: {e}")))
    }
}

/// Parses a JSON body, refusing an object that has a key twice (at any
/// depth): 400 `invalid_json` naming the key and where it is.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueKeys {
        path: String::new(),
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    Ok(value)
}

/// Builds a [`Value`] like serde_json does, but refuses duplicate keys,
/// and U+0000 in any string or key: PostgreSQL's text and jsonb cannot
/// hold it, so such a body could never be stored (the document's
/// description states this rule once for every string). `path` is where
/// the value is (`params.x`; empty at the top), for the message.
struct UniqueKeys {
    path: String,
}

impl UniqueKeys {
    /// Refuses a string (or key) with U+0000 in it.
    fn text<E: serde::de::Error>(&self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            let at = if self.path.is_empty() {
                "the body".to_string()
            } else {
                format!("{:?}", self.path)
            };
            return Err(E::custom(format!(
                "{at} has a string with U+0000 (\\u0000), which cannot be stored"
            )));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.text(v)?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.text(&v)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = format!("{}[{}]", self.path, items.len());
            match seq.next_element_seed(UniqueKeys { path })? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            UniqueKeys { path: path.clone() }.text(&key)?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {path:?} (each key may appear once)"
                )));
            }
            let value = map.next_value_seed(UniqueKeys { path })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// An optional JSON body, for the controls whose body may be left out
/// (pause, resume, run now, rerun). An empty body (or one of only
/// whitespace) is `None`, whatever its `Content-Type` (JSON `null` is
/// `Some(Null)`: the handlers read it as no body); any other body must
/// be JSON (`application/json` or `+json`: else 415) and parse (else 400
/// `invalid_json`), within the body limit (else 413). What it may contain
/// is the handler's to check: nothing in it is ever ignored.
pub struct OptionalJson(pub Option<Value>);

impl<S> FromRequest<S> for OptionalJson
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from_status(r.status(), &r.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json_type {
            return Err(ApiError::from_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json (or no body at all)",
            ));
        }
        parse_strict(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// `application/json`, or any `application/…+json`, with any parameters.
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// A query string; rejects with 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// Path parameters; rejects with 400 `invalid_path`.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

/// The versions an `If-Match` header accepts (RFC 9110 §13.1.1): `None`
/// when there is no header or it is `*` (any current version will do);
/// otherwise the versions named by its entity tags, any of which matches —
/// a list (`"3", "4"`, also spread over several `If-Match` lines). The
/// comparison is the strong one RFC 9110 prescribes for `If-Match`: a weak
/// tag (`W/"3"`) never matches, nor does a well-formed tag that is not one
/// of our ETags (`"abc"`, `"03"`); then the list may be empty, and the
/// request fails its precondition (409). Malformed syntax (a bare `3`, an
/// unclosed quote, `*` in a list, no tag at all) is a 400 naming `If-Match`.
pub fn if_match(headers: &HeaderMap) -> Result<Option<Vec<i64>>, ApiError> {
    let mut lines = headers.get_all(header::IF_MATCH).iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let mut any = false;
    let mut tags = 0usize;
    let mut versions = Vec::new();
    for line in lines {
        let text = line
            .to_str()
            .map_err(|_| bad_if_match("has characters other than visible ASCII"))?;
        for tag in entity_tags(text)? {
            match tag {
                EntityTag::Any => any = true,
                EntityTag::Weak => tags += 1,
                EntityTag::Strong(opaque) => {
                    tags += 1;
                    if let Ok(v) = opaque.parse::<i64>() {
                        if etag(v) == format!("\"{opaque}\"") {
                            versions.push(v);
                        }
                    }
                }
            }
        }
    }
    match (any, tags) {
        (true, 0) => Ok(None),
        (true, _) => Err(bad_if_match("`*` cannot be part of a list")),
        (false, 0) => Err(bad_if_match("names no entity tag")),
        (false, _) => Ok(Some(versions)),
    }
}

fn bad_if_match(why: &str) -> ApiError {
    ApiError::invalid(
        "If-Match",
        format!(
            "{why}: send `*`, or one or more entity tags as the ETag gives them, \
             e.g. \"3\" or \"3\", \"4\""
        ),
    )
}

/// One element of an `If-Match` list.
#[derive(Debug, PartialEq, Eq)]
enum EntityTag<'a> {
    /// `*`.
    Any,
    /// `W/"…"`: never matches under the strong comparison.
    Weak,
    /// `"…"`: the opaque text between the quotes.
    Strong(&'a str),
}

/// The elements of one `If-Match` field line: `*` or `#entity-tag` (RFC
/// 9110 §8.8.3: `[W/] DQUOTE *etagc DQUOTE`, where etagc is any visible
/// character but `"`, commas included), empty list elements ignored.
fn entity_tags(text: &str) -> Result<Vec<EntityTag<'_>>, ApiError> {
    let is_ows = |c: char| c == ' ' || c == '\t';
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c| is_ows(c) || c == ',');
        if rest.is_empty() {
            return Ok(out);
        }
        let (tag, after) = if let Some(after) = rest.strip_prefix('*') {
            (EntityTag::Any, after)
        } else {
            let (weak, quoted) = match rest.strip_prefix("W/") {
                Some(q) => (true, q),
                None => (false, rest),
            };
            let body = quoted
                .strip_prefix('"')
                .ok_or_else(|| bad_if_match("has an entity tag without its double quotes"))?;
            let close = body
                .find('"')
                .ok_or_else(|| bad_if_match("has an unclosed double quote"))?;
            let opaque = &body[..close];
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
            {
                return Err(bad_if_match(
                    "has an entity tag with a space or a control character",
                ));
            }
            let tag = if weak {
                EntityTag::Weak
            } else {
                EntityTag::Strong(opaque)
            };
            (tag, &body[close + 1..])
        };
        out.push(tag);
        rest = after.trim_start_matches(is_ows);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return Err(bad_if_match(
                "has something other than a comma between entity tags",
            ));
        }
    }
}

/// The `ETag` value for a schedule version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(header::IF_MATCH, v);
        }
        h
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let ok = parse_strict(br#"{"a": 1, "b": {"a": [{"a": 1}, {"a": 2}]}, "c": 1.5}"#);
        assert_eq!(
            ok.ok(),
            Some(serde_json::json!({"a": 1, "b": {"a": [{"a": 1}, {"a": 2}]}, "c": 1.5}))
        );
        for (body, key) in [
            (r#"{"name": "a", "name": "b"}"#, "\"name\""),
            (r#"{"params": {"x": 1, "y": 2, "x": 3}}"#, "\"params.x\""),
            (r#"[{"k": 1}, {"k": 1, "k": 2}]"#, "\"[1].k\""),
        ] {
            let e = parse_strict(body.as_bytes()).err();
            assert_eq!(
                e.as_ref().map(ApiError::code),
                Some("invalid_json"),
                "{body}"
            );
            let message = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(key), "{body}: {message}");
        }
        assert!(parse_strict(b"{} {}").is_err());
        assert!(parse_strict(b"{\"a\": ").is_err());
        assert_eq!(parse_strict(b" null ").ok(), Some(Value::Null));
    }

    #[test]
    fn json_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json_type(yes), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "text/json", ""] {
            assert!(!is_json_type(no), "{no}");
        }
    }

    #[test]
    fn if_match_forms() {
        let versions = |v: &str| if_match(&with(v)).ok();
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(versions("\"3\""), Some(Some(vec![3])));
        assert_eq!(versions("*"), Some(None));
        assert_eq!(versions(" * "), Some(None));
        // A list: any of them matches; empty elements are ignored.
        assert_eq!(versions("\"1\", \"2\""), Some(Some(vec![1, 2])));
        assert_eq!(versions("\"1\",,\t\"2\","), Some(Some(vec![1, 2])));
        // Strong comparison: weak tags and tags that are not ours never match.
        assert_eq!(versions("W/\"4\""), Some(Some(vec![])));
        assert_eq!(versions("W/\"4\", \"5\""), Some(Some(vec![5])));
        assert_eq!(versions("\"abc\", \"03\", \"a,b\""), Some(Some(vec![])));
        assert_eq!(versions("\"\""), Some(Some(vec![])));
        // Malformed.
        for bad in [
            "5",
            "\"5",
            "5\"",
            "\"5\" \"6\"",
            "*, \"5\"",
            "\"5\", *",
            "",
            " , ",
            "w/\"5\"",
            "\"a b\"",
            "W/5",
        ] {
            let e = if_match(&with(bad)).err();
            assert_eq!(
                e.map(|e| e.to_string().contains("If-Match")),
                Some(true),
                "{bad:?}"
            );
        }
        // Several field lines make one list.
        let mut h = HeaderMap::new();
        h.append(header::IF_MATCH, HeaderValue::from_static("\"7\""));
        h.append(header::IF_MATCH, HeaderValue::from_static("\"8\""));
        assert_eq!(if_match(&h).ok(), Some(Some(vec![7, 8])));
    }
}
