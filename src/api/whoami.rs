//! `GET /v1/whoami`: what the presented token may do, so a client (the web
//! console) can hide the actions its token would be refused.

use axum::Extension;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Access, Caller};
use super::error::Unauthorized;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything (the admin token; also every request when the API runs
    /// with `--insecure-no-auth`).
    Admin,
    /// `GET` and `HEAD` only (the read-only token).
    ReadOnly,
}

impl From<Access> for Role {
    fn from(a: Access) -> Self {
        match a {
            Access::Admin => Role::Admin,
            Access::ReadOnly => Role::ReadOnly,
        }
    }
}

/// The caller as the API sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// What the token may do.
    pub role: Role,
    /// The token's name (`SPINE_API_TOKENS`; `admin` and `read-only` for
    /// the single tokens), which the schedules' history names; `null`
    /// without authentication.
    #[schema(example = "alice")]
    pub name: Option<String>,
}

/// What the presented token may do, and its name.
///
/// Answers for any valid token; with a wrong or missing one, 401 like
/// every other operation.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    operation_id = "whoami",
    tag = "access",
    responses(
        (status = 200, description = "The token's role", body = WhoAmI),
        Unauthorized,
    )
)]
pub async fn get(Extension(caller): Extension<Caller>) -> axum::Json<WhoAmI> {
    axum::Json(WhoAmI {
        role: caller.access.into(),
        name: caller.name,
    })
}
