//! Bearer-token authentication.
//!
//! Every token has a name and a role: `admin` may do everything,
//! `read-only` may only `GET` (and `HEAD`). The name is who the audit trail
//! of schedule changes says made a change. Tokens come from
//! [`TOKENS_ENV`] / `--api-tokens-file` (`NAME:ROLE:TOKEN` entries), and the
//! single admin and read-only tokens of earlier releases (named `admin` and
//! `read-only`) from their variables or files (a Kubernetes Secret mounted
//! as a file). `/healthz`, `/readyz`, `/metrics` and `/openapi.json` are
//! open, since probes and scrapers carry no credentials; with no token
//! configured the server refuses to start unless insecure mode is asked
//! for explicitly.
//!
//! Comparison is constant-time over SHA-256 digests, so neither the
//! content nor the length of a token leaks through response timing.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Environment variable holding the admin token.
pub const TOKEN_ENV: &str = "SPINE_API_TOKEN";
/// Environment variable holding the read-only token.
pub const READONLY_TOKEN_ENV: &str = "SPINE_API_READONLY_TOKEN";
/// Environment variable holding named tokens: `NAME:ROLE:TOKEN` entries
/// separated by whitespace (tokens have no spaces), ROLE `admin` or
/// `read-only`.
pub const TOKENS_ENV: &str = "SPINE_API_TOKENS";
/// Name of the token from [`TOKEN_ENV`] or `--api-token-file`.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// Name of the token from [`READONLY_TOKEN_ENV`] or `--api-readonly-token-file`.
pub const READONLY_TOKEN_NAME: &str = "read-only";
/// Shortest token accepted: guessing must not be an option.
pub const MIN_TOKEN_LEN: usize = 16;
/// Routes that need no token: the probes, the metrics and the OpenAPI
/// document (it describes the API, and holds no data).
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Where the tokens come from (see [`Auth::load`]).
#[derive(Clone, Default)]
pub struct AuthSources {
    /// The admin token itself (from [`TOKEN_ENV`]).
    pub admin_token: Option<String>,
    /// A file holding the admin token.
    pub admin_token_file: Option<PathBuf>,
    /// The read-only token itself (from [`READONLY_TOKEN_ENV`]).
    pub readonly_token: Option<String>,
    /// A file holding the read-only token.
    pub readonly_token_file: Option<PathBuf>,
    /// Named tokens (from [`TOKENS_ENV`]): `NAME:ROLE:TOKEN` entries
    /// separated by whitespace.
    pub named_tokens: Option<String>,
    /// A file of named tokens: one `NAME:ROLE:TOKEN` a line; blank lines
    /// and lines starting with `#` are skipped.
    pub named_tokens_file: Option<PathBuf>,
    /// Start without any token (local use only).
    pub insecure_no_auth: bool,
}

impl std::fmt::Debug for AuthSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |t: &Option<String>| t.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthSources")
            .field("admin_token", &redact(&self.admin_token))
            .field("admin_token_file", &self.admin_token_file)
            .field("readonly_token", &redact(&self.readonly_token))
            .field("readonly_token_file", &self.readonly_token_file)
            .field("named_tokens", &redact(&self.named_tokens))
            .field("named_tokens_file", &self.named_tokens_file)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

impl AuthSources {
    /// The token files and the insecure flag as given, and the tokens from
    /// [`TOKEN_ENV`], [`READONLY_TOKEN_ENV`] and [`TOKENS_ENV`] (unset or
    /// empty: none).
    pub fn from_env(
        admin_token_file: Option<PathBuf>,
        readonly_token_file: Option<PathBuf>,
        named_tokens_file: Option<PathBuf>,
        insecure_no_auth: bool,
    ) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        AuthSources {
            admin_token: var(TOKEN_ENV),
            admin_token_file,
            readonly_token: var(READONLY_TOKEN_ENV),
            readonly_token_file,
            named_tokens: var(TOKENS_ENV),
            named_tokens_file,
            insecure_no_auth,
        }
    }
}

/// Why the token configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("API authentication: {0}")]
pub struct AuthConfigError(String);

/// What a request's credentials allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything.
    Admin,
    /// `GET` and `HEAD` only.
    ReadOnly,
}

impl Access {
    /// How the role is written in token entries and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Admin => "admin",
            Access::ReadOnly => "read-only",
        }
    }
}

/// Who a request comes from: the token's name and what it allows. The
/// middleware puts it in the request's extensions for the handlers (the
/// audit trail names the actor from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `None` without authentication (`--insecure-no-auth`).
    pub name: Option<String>,
    /// What the token allows.
    pub access: Access,
}

impl Caller {
    /// Who the audit trail says made a change.
    pub fn actor(&self) -> crate::types::Actor {
        match &self.name {
            Some(name) => crate::types::Actor::token(name.clone()),
            None => crate::types::Actor::anonymous(),
        }
    }
}

/// One configured token (as a digest; the token itself is not kept).
#[derive(Clone)]
struct NamedToken {
    name: String,
    access: Access,
    digest: [u8; 32],
}

/// The configured tokens.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<NamedToken>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .tokens
            .iter()
            .map(|t| format!("{}:{}", t.name, t.access.as_str()))
            .collect();
        f.debug_struct("Auth")
            .field("enforced", &self.is_enforced())
            .field("tokens", &names)
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Checks a token's text (`source` names where it came from).
fn check_token(what: &str, source: &str, token: &str) -> Result<(), AuthConfigError> {
    if token.is_empty() {
        return Err(AuthConfigError(format!(
            "the {what} token in {source} is empty"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthConfigError(format!(
            "the {what} token in {source} has characters other than printable ASCII \
             (no spaces); generate one with e.g. `openssl rand -hex 32`"
        )));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(AuthConfigError(format!(
            "the {what} token in {source} is {} characters; use at least {MIN_TOKEN_LEN} \
             (e.g. `openssl rand -hex 32`)",
            token.len()
        )));
    }
    Ok(())
}

/// Parses named-token entries (`NAME:ROLE:TOKEN`, whitespace separated;
/// with `lines`, one a line with `#` comments) from `source`.
fn named_tokens(
    text: &str,
    source: &str,
    lines: bool,
) -> Result<Vec<(String, Access, String)>, AuthConfigError> {
    let entries: Vec<(usize, &str)> = if lines {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect()
    } else {
        text.split_whitespace()
            .enumerate()
            .map(|(i, e)| (i + 1, e))
            .collect()
    };
    let place = |n: usize| {
        if lines {
            format!("{source} line {n}")
        } else {
            format!("{source} entry {n}")
        }
    };
    entries
        .into_iter()
        .map(|(n, entry)| {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(token)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(AuthConfigError(format!(
                    "{}: expected NAME:ROLE:TOKEN (ROLE admin or read-only)",
                    place(n)
                )));
            };
            crate::schedule::check_identifier("name", name, 64).map_err(|e| {
                AuthConfigError(format!("{}: token name {name:?} {}", place(n), e.message))
            })?;
            let access = match role {
                "admin" => Access::Admin,
                "read-only" => Access::ReadOnly,
                other => {
                    return Err(AuthConfigError(format!(
                        "{}: role {other:?} of token {name:?} is neither admin nor read-only",
                        place(n)
                    )))
                }
            };
            check_token(&format!("{name:?}"), &place(n), token)?;
            Ok((name.to_string(), access, token.to_string()))
        })
        .collect()
}

/// One token from its value or its file (not both), checked.
fn one_token(
    what: &str,
    env: &str,
    value: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, AuthConfigError> {
    let (token, source) = match (value, file) {
        (Some(_), Some(f)) => {
            return Err(AuthConfigError(format!(
                "the {what} token is set both in {env} and in {}; set it once",
                f.display()
            )))
        }
        (Some(v), None) => (v.trim().to_string(), env.to_string()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| AuthConfigError(format!("reading {}: {e}", f.display())))?;
            (text.trim().to_string(), f.display().to_string())
        }
        (None, None) => return Ok(None),
    };
    check_token(what, &source, &token)?;
    Ok(Some(token))
}

impl Auth {
    /// Reads and checks the tokens. Refuses: a token given twice, empty,
    /// shorter than [`MIN_TOKEN_LEN`] or with spaces; a malformed entry
    /// (named by its line or position); two tokens with one name or one
    /// value; read-only tokens without an admin token; and no token at all
    /// unless `insecure_no_auth` (tokens, when given, are enforced
    /// regardless).
    pub fn load(sources: &AuthSources) -> Result<Auth, AuthConfigError> {
        let admin = one_token(
            "admin",
            TOKEN_ENV,
            sources.admin_token.as_deref(),
            sources.admin_token_file.as_deref(),
        )?;
        let readonly = one_token(
            "read-only",
            READONLY_TOKEN_ENV,
            sources.readonly_token.as_deref(),
            sources.readonly_token_file.as_deref(),
        )?;
        let mut all: Vec<(String, Access, String)> = Vec::new();
        all.extend(admin.map(|t| (ADMIN_TOKEN_NAME.to_string(), Access::Admin, t)));
        all.extend(readonly.map(|t| (READONLY_TOKEN_NAME.to_string(), Access::ReadOnly, t)));
        if let Some(text) = &sources.named_tokens {
            all.extend(named_tokens(text, TOKENS_ENV, false)?);
        }
        if let Some(file) = &sources.named_tokens_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| AuthConfigError(format!("reading {}: {e}", file.display())))?;
            all.extend(named_tokens(&text, &file.display().to_string(), true)?);
        }
        for (i, (name, _, token)) in all.iter().enumerate() {
            for (other, _, other_token) in &all[..i] {
                if other == name {
                    return Err(AuthConfigError(format!(
                        "two tokens are named {name:?}; give each its own name \
                         (the audit trail tells them apart by it)"
                    )));
                }
                if other_token == token {
                    return Err(AuthConfigError(format!(
                        "tokens {other:?} and {name:?} are the same token; use different tokens"
                    )));
                }
            }
        }
        let has_admin = all.iter().any(|(_, a, _)| *a == Access::Admin);
        if !has_admin && !all.is_empty() {
            return Err(AuthConfigError(format!(
                "read-only tokens are configured but no admin token; set {TOKEN_ENV}, \
                 --api-token-file or an admin entry in {TOKENS_ENV}"
            )));
        }
        if all.is_empty() && !sources.insecure_no_auth {
            return Err(AuthConfigError(format!(
                "no API token configured: set {TOKEN_ENV} (or --api-token-file, or named \
                 tokens in {TOKENS_ENV} / --api-tokens-file), or pass --insecure-no-auth to \
                 run without authentication (local use only)"
            )));
        }
        Ok(Auth {
            tokens: all
                .into_iter()
                .map(|(name, access, token)| NamedToken {
                    name,
                    access,
                    digest: digest(token.as_bytes()),
                })
                .collect(),
        })
    }

    /// No authentication at all (what `--insecure-no-auth` gives).
    pub fn insecure() -> Auth {
        Auth { tokens: Vec::new() }
    }

    /// Whether requests must carry a token.
    pub fn is_enforced(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The configured tokens' names and roles, in configuration order.
    pub fn token_names(&self) -> Vec<(String, Access)> {
        self.tokens
            .iter()
            .map(|t| (t.name.clone(), t.access))
            .collect()
    }

    /// Who the request's `Authorization` header says it comes from.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.is_enforced() {
            return Ok(Caller {
                name: None,
                access: Access::Admin,
            });
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "authentication required: send Authorization: Bearer <token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ));
        };
        let presented = digest(token.as_bytes());
        // Every comparison runs, so timing does not tell which token (if
        // any) matched.
        let mut matched = None;
        for t in &self.tokens {
            if bool::from(presented.ct_eq(&t.digest)) {
                matched = Some(t);
            }
        }
        match matched {
            Some(t) => Ok(Caller {
                name: Some(t.name.clone()),
                access: t.access,
            }),
            None => Err(ApiError::unauthorized("invalid token")),
        }
    }

    /// What the request's `Authorization` header allows.
    pub fn access(&self, headers: &HeaderMap) -> Result<Access, ApiError> {
        self.caller(headers).map(|c| c.access)
    }
}

/// Middleware: the open paths (and the web console's assets, which hold no
/// data) pass; everything else needs a token, and a read-only token only
/// reads. The handler finds the [`Caller`] in the request's extensions (the
/// audit trail names it; `GET /v1/whoami` answers with it).
pub async fn require_token(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) || super::console::is_console_path(path) {
        return next.run(request).await;
    }
    match app.auth().caller(request.headers()) {
        Ok(caller)
            if caller.access == Access::Admin
                || matches!(*request.method(), Method::GET | Method::HEAD) =>
        {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(caller) => ApiError::forbidden(format!(
            "the token {:?} is read-only: it may only read (GET); use an admin token to \
             change anything",
            caller.name.unwrap_or_default()
        ))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ADMIN: &str = "admin-token-0123456789";
    const READER: &str = "reader-token-0123456789";

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    fn sources(admin: Option<&str>, readonly: Option<&str>) -> AuthSources {
        AuthSources {
            admin_token: admin.map(str::to_string),
            readonly_token: readonly.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_grant_access() -> Result<(), AuthConfigError> {
        let auth = Auth::load(&sources(Some(ADMIN), Some(READER)))?;
        assert_eq!(auth.access(&bearer(ADMIN)).ok(), Some(Access::Admin));
        assert_eq!(auth.access(&bearer(READER)).ok(), Some(Access::ReadOnly));
        for bad in [bearer("nope"), bearer(""), HeaderMap::new()] {
            let e = auth.access(&bad).err().map(|e| e.code());
            assert_eq!(e, Some("unauthorized"));
        }
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(auth.access(&basic).is_err());
        Ok(())
    }

    #[test]
    fn configuration_is_checked() {
        assert!(Auth::load(&sources(None, None)).is_err());
        assert!(Auth::load(&AuthSources {
            insecure_no_auth: true,
            ..Default::default()
        })
        .is_ok_and(|a| !a.is_enforced()));
        assert!(Auth::load(&sources(Some("short"), None)).is_err());
        assert!(Auth::load(&sources(Some("has space 0123456789"), None)).is_err());
        assert!(Auth::load(&sources(None, Some(READER))).is_err());
        assert!(Auth::load(&sources(Some(ADMIN), Some(ADMIN))).is_err());
        assert!(Auth::load(&AuthSources {
            admin_token: Some(ADMIN.into()),
            admin_token_file: Some("/dev/null".into()),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn token_from_file_is_trimmed() -> Result<(), Box<dyn std::error::Error>> {
        let path = std::env::temp_dir().join(format!("spine-token-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, format!("{ADMIN}\n"))?;
        let auth = Auth::load(&AuthSources {
            admin_token_file: Some(path.clone()),
            ..Default::default()
        });
        let _ = std::fs::remove_file(&path);
        assert_eq!(auth?.access(&bearer(ADMIN)).ok(), Some(Access::Admin));
        Ok(())
    }

    #[test]
    fn named_tokens_say_who_and_what() -> Result<(), AuthConfigError> {
        let auth = Auth::load(&AuthSources {
            named_tokens: Some(format!(
                "alice:admin:{ADMIN}\n  ci:read-only:{READER} bob:admin:bob:has:colons-0123"
            )),
            ..Default::default()
        })?;
        let caller = |t: &str| auth.caller(&bearer(t)).ok();
        assert_eq!(
            caller(ADMIN),
            Some(Caller {
                name: Some("alice".into()),
                access: Access::Admin
            })
        );
        assert_eq!(caller(READER).map(|c| c.access), Some(Access::ReadOnly));
        assert_eq!(
            caller("bob:has:colons-0123").and_then(|c| c.name),
            Some("bob".into())
        );
        assert!(caller("nope-0123456789abcdef").is_none());
        // The single tokens of earlier releases keep working, by fixed names.
        let legacy = Auth::load(&sources(Some(ADMIN), Some(READER)))?;
        assert_eq!(
            legacy.token_names(),
            [
                ("admin".to_string(), Access::Admin),
                ("read-only".to_string(), Access::ReadOnly)
            ]
        );
        Ok(())
    }

    #[test]
    fn named_token_mistakes_are_named() {
        let load = |text: &str| {
            Auth::load(&AuthSources {
                named_tokens: Some(text.to_string()),
                ..Default::default()
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(load("alice-admin-token").contains("entry 1: expected NAME:ROLE:TOKEN"));
        assert!(
            load(&format!("a:admin:{ADMIN} b:root:{READER}")).contains("entry 2: role \"root\"")
        );
        assert!(load(&format!("a:admin:{ADMIN} a:admin:{READER}"))
            .contains("two tokens are named \"a\""));
        assert!(load(&format!("a:admin:{ADMIN} b:read-only:{ADMIN}")).contains("the same token"));
        assert!(load("a:admin:short").contains("at least 16"));
        assert!(load(&format!("ci:read-only:{READER}")).contains("no admin token"));
        assert!(load(&format!("has space:admin:{ADMIN}")).contains("expected NAME:ROLE:TOKEN"));
        assert!(load(&format!("bad/name:admin:{ADMIN}")).contains("token name"));
        // In a file, problems are named by line.
        let path = std::env::temp_dir().join(format!("spine-tokens-{}", uuid::Uuid::now_v7()));
        let written = std::fs::write(&path, format!("# ours\n\nalice:admin:{ADMIN}\nbroken\n"));
        let e = Auth::load(&AuthSources {
            named_tokens_file: Some(path.clone()),
            ..Default::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(written.is_ok() && e.contains("line 4"), "{e}");
    }
}
