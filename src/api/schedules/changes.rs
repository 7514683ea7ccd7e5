//! Every change the API makes to a schedule, each in one transaction with
//! its row of the audit trail ([`crate::store::schedule_changes`]) and the
//! ownership rule ([`crate::schedule::ownership`]): definitions of
//! file-managed schedules change only when the request takes them over;
//! pauses and resumes are open whoever manages the definition.
//!
//! The stored row is read `FOR UPDATE`, so the version checked, the
//! manager checked and the "before" recorded are the state the change
//! replaced.

use deadpool_postgres::Object;
use tokio_postgres::Transaction;

use crate::api::error::ApiError;
use crate::schedule::controls::PauseNote;
use crate::schedule::ownership::{api_write, ApiWrite, ManagedByFile, Manager};
use crate::schedule::{Schedule, ScheduleType, ValidationErrors};
use crate::store::schedule_changes::{record, NewChange};
use crate::store::schedules::{self, StoredSchedule};
use crate::store::{api_queries, StoreError};
use crate::types::{Actor, ChangeAction};

impl From<ManagedByFile> for ApiError {
    fn from(e: ManagedByFile) -> Self {
        ApiError::conflict("managed_by_file", e.to_string()).with_field("managed_by")
    }
}

/// What a definition change (PUT, PATCH, DELETE) brings besides its body.
#[derive(Debug, Clone)]
pub(crate) struct Write<'a> {
    /// Who asks (the audit trail's actor).
    pub actor: &'a Actor,
    /// The versions `If-Match` accepts (`None`: any).
    pub accepted: Option<&'a [i64]>,
    /// The request's explicit `take_over=true`.
    pub take_over: bool,
}

async fn begin(db: &mut Object) -> Result<Transaction<'_>, ApiError> {
    let client: &mut tokio_postgres::Client = db;
    Ok(client.transaction().await.map_err(StoreError::from)?)
}

async fn commit(tx: Transaction<'_>) -> Result<(), ApiError> {
    Ok(tx.commit().await.map_err(StoreError::from)?)
}

/// The schedule's row, locked until the transaction ends; 404 without one.
async fn locked(tx: &Transaction<'_>, name: &str) -> Result<StoredSchedule, ApiError> {
    schedules::get_for_update(tx, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("schedule {name:?} not found")))
}

/// 409 unless the stored version is one the caller accepts (if any).
pub(crate) fn check_version(
    stored: &StoredSchedule,
    expected: Option<&[i64]>,
) -> Result<(), ApiError> {
    match expected {
        Some(accepted) if !accepted.contains(&stored.version) => match accepted {
            [v] => Err(ApiError::from(StoreError::VersionConflict {
                name: stored.schedule.name().to_string(),
                expected: *v,
                current: stored.version,
            })),
            _ => Err(ApiError::conflict(
                "version_conflict",
                format!(
                    "schedule {:?} is at version {}, which If-Match does not name \
                     (it names {}); read it again and retry",
                    stored.schedule.name(),
                    stored.version,
                    if accepted.is_empty() {
                        "none of its ETags".to_string()
                    } else {
                        accepted
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            )
            .with_field("version")),
        },
        _ => Ok(()),
    }
}

/// What only the present can refuse, on the database's clock (the one ticks
/// are claimed by): a `run_at` set (created, or changed from `stored`) more
/// than its misfire grace in the past, which would never run
/// ([`Schedule::validate_change_at`]). Within the grace it runs at once.
async fn check_at(
    tx: &Transaction<'_>,
    schedule: &Schedule,
    stored: Option<&Schedule>,
) -> Result<(), ApiError> {
    if schedule.schedule_type() != ScheduleType::Date {
        return Ok(());
    }
    let now = api_queries::db_now(tx).await?;
    schedule
        .validate_change_at(stored, now)
        .map_err(|e| ApiError::refused(ValidationErrors::from(e)))
}

/// Creates `schedule`, managed by the API; 409 if the name is taken (saying
/// who manages the one there).
pub(crate) async fn create(
    db: &mut Object,
    schedule: &Schedule,
    actor: &Actor,
) -> Result<StoredSchedule, ApiError> {
    let tx = begin(db).await?;
    check_at(&tx, schedule, None).await?;
    let stored = match schedules::insert_managed(&tx, schedule, &Manager::Api).await {
        Err(StoreError::AlreadyExists(name)) => {
            let manager = schedules::get(&tx, &name).await.ok().flatten();
            let by = manager
                .and_then(|s| s.manager)
                .map(|m| format!(" (managed by {m})"))
                .unwrap_or_default();
            return Err(ApiError::conflict(
                "already_exists",
                format!("schedule {name:?} already exists{by}; update it with PUT or PATCH"),
            ));
        }
        other => other?,
    };
    let mut row = NewChange::new(schedule.name(), ChangeAction::Create, actor);
    row.version_after = Some(stored.version);
    row.after = Some(&stored.schedule);
    record(&tx, &row).await?;
    commit(tx).await?;
    Ok(stored)
}

/// The history row of a change from `before` to `after` (both stored
/// versions of one schedule): its versions and definitions; fields, note
/// and former manager for the caller to add.
fn change_between<'a>(
    action: ChangeAction,
    actor: &'a Actor,
    before: &'a StoredSchedule,
    after: &'a StoredSchedule,
) -> NewChange<'a> {
    let mut row = NewChange::new(before.schedule.name(), action, actor);
    row.version_before = Some(before.version);
    row.version_after = Some(after.version);
    row.before = Some(&before.schedule);
    row.after = Some(&after.schedule);
    row
}

/// The former manager a row names when `write` takes the schedule over.
fn taken_from(write: &ApiWrite) -> Option<Manager> {
    match write {
        ApiWrite::TakesOver { from } => Some(Manager::file(from.clone())),
        _ => None,
    }
}

/// Replaces the definition of schedule `name` by what `build` makes of
/// the stored one (PUT, PATCH), under the version and ownership checks.
pub(crate) async fn update(
    db: &mut Object,
    name: &str,
    request: &Write<'_>,
    build: impl FnOnce(&StoredSchedule) -> Result<Schedule, ApiError>,
) -> Result<StoredSchedule, ApiError> {
    let tx = begin(db).await?;
    let stored = locked(&tx, name).await?;
    check_version(&stored, request.accepted)?;
    let write = api_write(name, stored.manager.as_ref(), request.take_over)?;
    let schedule = build(&stored)?;
    check_at(&tx, &schedule, Some(&stored.schedule)).await?;
    let claim = (write != ApiWrite::Manages).then_some(&Manager::Api);
    let updated = schedules::update_managed(&tx, &schedule, Some(stored.version), claim).await?;
    // One change, one row: a take-over with a new definition is a
    // `take_over` row naming the fields that changed with it.
    let former = taken_from(&write);
    let mut fields: Vec<String> = stored
        .schedule
        .differences(&schedule)
        .into_iter()
        .map(str::to_string)
        .collect();
    if claim.is_some() {
        fields.push("managed_by".into());
    }
    let action = match former {
        Some(_) => ChangeAction::TakeOver,
        None => ChangeAction::Update,
    };
    let mut row = change_between(action, request.actor, &stored, &updated);
    row.fields = fields;
    row.former_manager = former.as_ref();
    record(&tx, &row).await?;
    if let Some(from) = &former {
        tracing::info!(schedule = %name, %from, "schedule taken over through the API");
    }
    commit(tx).await?;
    Ok(updated)
}

/// Deletes schedule `name` under the version and ownership checks.
pub(crate) async fn delete(
    db: &mut Object,
    name: &str,
    request: &Write<'_>,
) -> Result<(), ApiError> {
    let tx = begin(db).await?;
    let stored = locked(&tx, name).await?;
    check_version(&stored, request.accepted)?;
    let write = api_write(name, stored.manager.as_ref(), request.take_over)?;
    schedules::delete(&tx, name, Some(stored.version)).await?;
    let former = taken_from(&write);
    let mut row = NewChange::new(name, ChangeAction::Delete, request.actor);
    row.version_before = Some(stored.version);
    row.before = Some(&stored.schedule);
    row.former_manager = former.as_ref();
    record(&tx, &row).await?;
    commit(tx).await?;
    Ok(())
}

/// Pauses schedule `name` (whoever manages it), with the pause's note; a
/// pause that changes nothing records nothing.
pub(crate) async fn pause(
    db: &mut Object,
    name: &str,
    note: &PauseNote,
    actor: &Actor,
) -> Result<StoredSchedule, ApiError> {
    let tx = begin(db).await?;
    let stored = locked(&tx, name).await?;
    let paused = schedules::pause(&tx, name, note).await?;
    if paused.version != stored.version {
        let mut row = change_between(ChangeAction::Pause, actor, &stored, &paused);
        row.fields = vec!["enabled".into()];
        row.note = note.note.as_deref();
        row.paused_by = note.by.as_deref();
        record(&tx, &row).await?;
    }
    commit(tx).await?;
    Ok(paused)
}

/// Resumes schedule `name` (whoever manages it); resuming a running
/// schedule records nothing.
pub(crate) async fn resume(
    db: &mut Object,
    name: &str,
    actor: &Actor,
) -> Result<StoredSchedule, ApiError> {
    let tx = begin(db).await?;
    let stored = locked(&tx, name).await?;
    let resumed = schedules::resume(&tx, name).await?;
    if resumed.version != stored.version {
        let mut row = change_between(ChangeAction::Resume, actor, &stored, &resumed);
        row.fields = vec!["enabled".into()];
        record(&tx, &row).await?;
    }
    commit(tx).await?;
    Ok(resumed)
}
