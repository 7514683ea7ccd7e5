//! `GET /v1/schedules/{name}/history`: the audit trail of one schedule.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::path_name;
use super::types::NoSuchSchedule;
use crate::api::error::{ApiError, ErrorBody, Unauthorized};
use crate::api::extract::{Path, Query};
use crate::api::params::ScheduleName;
use crate::api::AppState;
use crate::store::schedule_changes::{self, ChangeRow};
use crate::store::schedules;

/// Paging of a schedule's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Changes per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the page before: only older changes.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// Who made a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorView {
    /// `token` (an API token, by its name), `file` (a schedules file's
    /// apply, by its source name) or `anonymous` (the API without
    /// authentication).
    #[schema(example = "token")]
    pub kind: String,
    /// The token's name or the file's source; `null` for anonymous.
    #[schema(example = "alice")]
    pub name: Option<String>,
}

/// One change to a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    /// Increasing with time.
    pub id: i64,
    /// When (the database's clock).
    pub at: DateTime<Utc>,
    /// `create`, `update`, `delete`, `pause`, `resume` or `take_over`.
    #[schema(example = "update")]
    pub action: String,
    /// Who made it.
    pub actor: ActorView,
    /// The version before (`null`: it did not exist).
    pub version_before: Option<i64>,
    /// The version after (`null`: deleted).
    pub version_after: Option<i64>,
    /// The definition keys that changed (`managed_by` when its manager did).
    pub fields: Vec<String>,
    /// The definition before, as GET shows it (`null` for a create).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The definition after (`null` for a delete and a take-over).
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// A pause's note.
    pub note: Option<String>,
    /// Who a pause says paused it (the caller's word; `actor` is the token).
    pub paused_by: Option<String>,
    /// A take-over's former manager, in words.
    pub former_manager: Option<String>,
}

impl From<ChangeRow> for ChangeView {
    fn from(c: ChangeRow) -> Self {
        ChangeView {
            id: c.id,
            at: c.at,
            action: c.action.as_str().to_string(),
            actor: ActorView {
                kind: c.actor.kind.as_str().to_string(),
                name: c.actor.name,
            },
            version_before: c.version_before,
            version_after: c.version_after,
            fields: c.fields,
            before: c.before,
            after: c.after,
            note: c.note,
            paused_by: c.paused_by,
            former_manager: c.former_manager,
        }
    }
}

/// A page of a schedule's history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// The changes, newest first.
    pub items: Vec<ChangeView>,
    /// Pass as `cursor` for older changes; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A schedule's history.
///
/// Every change to the schedule — created, updated, deleted, paused (with
/// its note), resumed, taken over, applied from a file — newest first, with
/// who made it (the API token's name, or the schedules file's source) and
/// the definition before and after. A deleted schedule's history stays
/// readable by its name.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}/history",
    operation_id = "schedule_history",
    tag = "schedules",
    params(
        ("name" = ScheduleName, Path, description = "The schedule's name"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "Its changes, newest first", body = HistoryPage),
        (status = 400, description = "Invalid name, limit or cursor", body = ErrorBody),
        Unauthorized,
        NoSuchSchedule,
    )
)]
pub async fn history(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    path_name(&name)?;
    let limit = crate::api::page_limit(query.limit)?;
    let before = match &query.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::invalid("cursor", "is not a cursor returned by this listing")
        })?),
    };
    let db = app.db().await?;
    let rows = schedule_changes::history(&**db, &name, before, limit).await?;
    if rows.is_empty() && before.is_none() && schedules::get(&**db, &name).await?.is_none() {
        return Err(ApiError::not_found(format!("schedule {name:?} not found")));
    }
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) == limit;
    let next_cursor = rows.last().filter(|_| full).map(|c| c.id.to_string());
    let page = HistoryPage {
        items: rows.into_iter().map(ChangeView::from).collect(),
        next_cursor,
    };
    Ok(axum::Json(page).into_response())
}
