//! The audit trail of schedule changes: `scheduler_schedule_changes`.
//!
//! One row per change (create, update, delete, pause, resume, take-over),
//! written by the caller in the transaction that makes the change, so the
//! trail has a row for every change that committed and none for one that
//! did not. Read newest first, by schedule name (a deleted schedule's
//! history stays readable).

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};

use super::StoreError;
use crate::schedule::ownership::Manager;
use crate::schedule::spec::Definition;
use crate::schedule::Schedule;
use crate::types::{Actor, ActorKind, ChangeAction};

/// Largest page of [`history`].
pub const MAX_PAGE: i64 = 1000;

const INSERT: &str = "INSERT INTO scheduler_schedule_changes \
    (schedule_name, action, actor_kind, actor_name, version_before, version_after, fields, \
     before, after, note, paused_by, former_manager) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Newest first; `$2` is the cursor (only rows with a smaller id), `$3` the page size.
const HISTORY: &str = "SELECT id, schedule_name, at, action, actor_kind, actor_name, \
    version_before, version_after, fields, before, after, note, paused_by, former_manager \
    FROM scheduler_schedule_changes \
    WHERE schedule_name = $1 AND ($2::bigint IS NULL OR id < $2) \
    ORDER BY id DESC LIMIT $3";

/// One change to record.
#[derive(Debug, Clone)]
pub struct NewChange<'a> {
    /// The schedule.
    pub name: &'a str,
    /// What happened.
    pub action: ChangeAction,
    /// Who did it.
    pub actor: &'a Actor,
    /// The version before (`None`: it did not exist).
    pub version_before: Option<i64>,
    /// The version after (`None`: deleted).
    pub version_after: Option<i64>,
    /// The definition keys that changed.
    pub fields: Vec<String>,
    /// The definition before.
    pub before: Option<&'a Schedule>,
    /// The definition after.
    pub after: Option<&'a Schedule>,
    /// A pause's note.
    pub note: Option<&'a str>,
    /// Who a pause says paused it (the caller's word; the actor is the token).
    pub paused_by: Option<&'a str>,
    /// A take-over's former manager.
    pub former_manager: Option<&'a Manager>,
}

impl<'a> NewChange<'a> {
    /// A change with only its name, action and actor; the rest empty.
    pub fn new(name: &'a str, action: ChangeAction, actor: &'a Actor) -> Self {
        NewChange {
            name,
            action,
            actor,
            version_before: None,
            version_after: None,
            fields: Vec::new(),
            before: None,
            after: None,
            note: None,
            paused_by: None,
            former_manager: None,
        }
    }
}

fn definition_json(s: Option<&Schedule>) -> Result<Option<Value>, StoreError> {
    s.map(|s| serde_json::to_value(Definition::of(s)))
        .transpose()
        .map_err(|e| StoreError::Schema(format!("a definition did not serialise: {e}")))
}

/// Records `change`. Call it on the transaction that makes the change.
pub async fn record(client: &impl GenericClient, change: &NewChange<'_>) -> Result<(), StoreError> {
    let before = definition_json(change.before)?;
    let after = definition_json(change.after)?;
    let former = change.former_manager.map(|m| m.to_string());
    client
        .execute(
            INSERT,
            &[
                &change.name,
                &change.action.as_str(),
                &change.actor.kind.as_str(),
                &change.actor.name,
                &change.version_before,
                &change.version_after,
                &change.fields,
                &before,
                &after,
                &change.note,
                &change.paused_by,
                &former,
            ],
        )
        .await?;
    Ok(())
}

/// One recorded change, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// Increasing with time; the history's cursor.
    pub id: i64,
    /// The schedule.
    pub schedule_name: String,
    /// When (the database's clock, at the change's transaction).
    pub at: DateTime<Utc>,
    /// What happened.
    pub action: ChangeAction,
    /// Who did it.
    pub actor: Actor,
    /// The version before (`None`: it did not exist).
    pub version_before: Option<i64>,
    /// The version after (`None`: deleted).
    pub version_after: Option<i64>,
    /// The definition keys that changed.
    pub fields: Vec<String>,
    /// The canonical definition before, as `GET /v1/schedules/{name}` shows it.
    pub before: Option<Value>,
    /// The canonical definition after.
    pub after: Option<Value>,
    /// A pause's note.
    pub note: Option<String>,
    /// Who a pause says paused it.
    pub paused_by: Option<String>,
    /// A take-over's former manager, in words ("the schedules file \"fleet\"").
    pub former_manager: Option<String>,
}

fn from_row(row: &Row) -> Result<ChangeRow, StoreError> {
    let text = |col: &str| -> Result<String, StoreError> { Ok(row.try_get(col)?) };
    let action = text("action")?;
    let kind = text("actor_kind")?;
    let invalid = |what: String| StoreError::Schema(format!("scheduler_schedule_changes: {what}"));
    Ok(ChangeRow {
        id: row.try_get("id")?,
        schedule_name: row.try_get("schedule_name")?,
        at: row.try_get("at")?,
        action: action.parse().map_err(invalid)?,
        actor: Actor {
            kind: kind.parse::<ActorKind>().map_err(invalid)?,
            name: row.try_get("actor_name")?,
        },
        version_before: row.try_get("version_before")?,
        version_after: row.try_get("version_after")?,
        fields: row.try_get("fields")?,
        before: row.try_get("before")?,
        after: row.try_get("after")?,
        note: row.try_get("note")?,
        paused_by: row.try_get("paused_by")?,
        former_manager: row.try_get("former_manager")?,
    })
}

/// A page of `name`'s history, newest first: at most `limit` (1 to
/// [`MAX_PAGE`]) changes older than the change `before` (a [`ChangeRow::id`]),
/// or the newest ones without it.
pub async fn history(
    client: &impl GenericClient,
    name: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<ChangeRow>, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    client
        .query(HISTORY, &[&name, &before, &limit])
        .await?
        .iter()
        .map(from_row)
        .collect()
}
