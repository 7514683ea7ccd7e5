//! Bearer-token authentication.
//!
//! Two tokens: the admin token may do everything; the optional read-only
//! token may only `GET` (and `HEAD`). `/healthz`, `/readyz` and `/metrics`
//! are open, since probes and scrapers carry no credentials. Tokens come
//! from the environment or from files (a Kubernetes Secret mounted as a
//! file); with none configured the server refuses to start unless insecure
//! mode is asked for explicitly.
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
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

impl AuthSources {
    /// The token files and the insecure flag as given, and the tokens from
    /// [`TOKEN_ENV`] and [`READONLY_TOKEN_ENV`] (unset or empty: none).
    pub fn from_env(
        admin_token_file: Option<PathBuf>,
        readonly_token_file: Option<PathBuf>,
        insecure_no_auth: bool,
    ) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        AuthSources {
            admin_token: var(TOKEN_ENV),
            admin_token_file,
            readonly_token: var(READONLY_TOKEN_ENV),
            readonly_token_file,
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

/// The configured tokens (as digests; the tokens themselves are not kept).
#[derive(Clone)]
pub struct Auth {
    admin: Option<[u8; 32]>,
    readonly: Option<[u8; 32]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enforced", &self.is_enforced())
            .field("readonly_token", &self.readonly.is_some())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
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
    Ok(Some(token))
}

impl Auth {
    /// Reads and checks the tokens. Refuses: a token given twice, empty,
    /// shorter than [`MIN_TOKEN_LEN`] or with spaces; a read-only token
    /// without an admin token, or equal to it; and no token at all unless
    /// `insecure_no_auth` (tokens, when given, are enforced regardless).
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
        match (&admin, &readonly) {
            (None, Some(_)) => {
                return Err(AuthConfigError(format!(
                    "a read-only token is configured but no admin token; set {TOKEN_ENV} or --api-token-file"
                )))
            }
            (Some(a), Some(r)) if a == r => {
                return Err(AuthConfigError(
                    "the read-only token equals the admin token; use two different tokens".into(),
                ))
            }
            (None, None) if !sources.insecure_no_auth => {
                return Err(AuthConfigError(format!(
                    "no API token configured: set {TOKEN_ENV} (or --api-token-file), \
                     or pass --insecure-no-auth to run without authentication (local use only)"
                )))
            }
            _ => {}
        }
        Ok(Auth {
            admin: admin.map(|t| digest(t.as_bytes())),
            readonly: readonly.map(|t| digest(t.as_bytes())),
        })
    }

    /// No authentication at all (what `--insecure-no-auth` gives).
    pub fn insecure() -> Auth {
        Auth {
            admin: None,
            readonly: None,
        }
    }

    /// Whether requests must carry a token.
    pub fn is_enforced(&self) -> bool {
        self.admin.is_some()
    }

    /// What the request's `Authorization` header allows.
    pub fn access(&self, headers: &HeaderMap) -> Result<Access, ApiError> {
        let Some(admin) = &self.admin else {
            return Ok(Access::Admin);
        };
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
        // Both comparisons always run, so timing does not tell which token
        // (if any) matched.
        let is_admin = presented.ct_eq(admin);
        let is_readonly = match &self.readonly {
            Some(r) => presented.ct_eq(r),
            None => 0u8.ct_eq(&1u8),
        };
        if bool::from(is_admin) {
            Ok(Access::Admin)
        } else if bool::from(is_readonly) {
            Ok(Access::ReadOnly)
        } else {
            Err(ApiError::unauthorized("invalid token"))
        }
    }
}

/// Middleware: the open paths (and the web console's assets, which hold no
/// data) pass; everything else needs a token, and a read-only token only
/// reads. The handler finds the [`Access`] the token gave in the request's
/// extensions (`GET /v1/whoami` answers with it).
pub async fn require_token(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) || super::console::is_console_path(path) {
        return next.run(request).await;
    }
    match app.auth().access(request.headers()) {
        Ok(Access::Admin) => {
            request.extensions_mut().insert(Access::Admin);
            next.run(request).await
        }
        Ok(Access::ReadOnly) if matches!(*request.method(), Method::GET | Method::HEAD) => {
            request.extensions_mut().insert(Access::ReadOnly);
            next.run(request).await
        }
        Ok(Access::ReadOnly) => ApiError::forbidden(
            "the read-only token may only read (GET); use the admin token to change anything",
        )
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
}
