//! Schedule definitions in `scheduler_schedules`.
//!
//! Rows are read as typed columns into a schedule's canonical
//! [`Definition`] and turned back into [`Schedule`]s through the same
//! validation as files and API bodies, so a row edited by hand into nonsense is reported as
//! [`StoreError::InvalidRow`] rather than trusted.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::StoreError;
use crate::schedule::controls::PauseNote;
use crate::schedule::ownership::Manager;
use crate::schedule::spec::{Definition, RetryDefinition};
use crate::schedule::{OverlapPolicy, Schedule, ScheduleType, ValidationError, ValidationErrors};

/// A schedule as stored, with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchedule {
    /// The definition.
    pub schedule: Schedule,
    /// Bumped by every update; used for optimistic concurrency.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// While it is paused: since when, by whom and why (`None` while it is
    /// enabled).
    pub pause: Option<Pause>,
    /// Who manages its definition (`None`: unclaimed, stored before
    /// managers were recorded; see [`crate::schedule::ownership`]).
    pub manager: Option<Manager>,
}

/// What is known of a schedule's pause. Every part may be unknown: a pause
/// need not say who or why, and schedules paused before the pause was
/// recorded (migration 9) have no `at` either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pause {
    /// When it was paused (the first pause; a later note does not move it).
    pub at: Option<DateTime<Utc>>,
    /// Who paused it, as the pause said.
    pub by: Option<String>,
    /// Why, as the pause said.
    pub note: Option<String>,
}

/// A stored row that failed validation.
#[derive(Debug)]
pub struct InvalidRow {
    /// The schedule's name.
    pub name: String,
    /// Why it is invalid.
    pub error: StoreError,
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ScheduleFilter {
    /// Only enabled (`Some(true)`) or only paused (`Some(false)`) schedules.
    pub enabled: Option<bool>,
    /// Only schedules of this pipeline.
    pub pipeline: Option<String>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Cursor: only names sorting after this one.
    pub after: Option<String>,
    /// Page size (at most 1000; `None` for everything).
    pub limit: Option<i64>,
}

/// A page of schedules, with the rows that could not be read.
#[derive(Debug, Default)]
pub struct SchedulePage {
    /// Valid schedules, by name.
    pub schedules: Vec<StoredSchedule>,
    /// Rows that failed validation (still counted for paging).
    pub invalid: Vec<InvalidRow>,
    /// The cursor for the next page, when the page was full.
    pub next_after: Option<String>,
}

const COLUMNS: &str = "name, pipeline, schedule_type, cron_expression, interval_seconds, \
    start_at, run_at, timezone, params, enabled, max_instances, misfire_grace_time, coalesce, \
    timeout_seconds, retry_max_attempts, retry_backoff_seconds, retry_backoff_max_seconds, \
    description, created_at, updated_at, version, end_at, paused_at, paused_by, paused_note, \
    overlap_policy, jitter_seconds, managed_by, managed_source";

/// A schedule created paused (`enabled: false`) is paused from its creation.
const INSERT: &str = "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, \
    cron_expression, interval_seconds, start_at, run_at, timezone, params, enabled, \
    max_instances, misfire_grace_time, coalesce, timeout_seconds, retry_max_attempts, \
    retry_backoff_seconds, retry_backoff_max_seconds, description, end_at, overlap_policy, \
    jitter_seconds, paused_at, managed_by, managed_source) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
            $21, CASE WHEN $10 THEN NULL ELSE now() END, $22, $23) \
    ON CONFLICT (name) DO NOTHING";

/// `$22` is the expected version, or NULL for "whatever is there"; `$23`
/// and `$24` the new manager, or NULL and NULL to keep the stored one. The
/// pause record follows `enabled` (`$10`; the SET expressions read the old
/// row): enabling clears it, disabling an enabled schedule starts it, and a
/// schedule that stays paused — an `apply` or PUT that keeps `enabled` —
/// keeps its note.
const UPDATE: &str = "UPDATE scheduler_schedules SET pipeline = $2, schedule_type = $3, \
    cron_expression = $4, interval_seconds = $5, start_at = $6, run_at = $7, timezone = $8, \
    params = $9, enabled = $10, max_instances = $11, misfire_grace_time = $12, coalesce = $13, \
    timeout_seconds = $14, retry_max_attempts = $15, retry_backoff_seconds = $16, \
    retry_backoff_max_seconds = $17, description = $18, end_at = $19, overlap_policy = $20, \
    jitter_seconds = $21, paused_at = CASE WHEN $10 THEN NULL WHEN enabled THEN now() ELSE paused_at END, \
    paused_by = CASE WHEN $10 THEN NULL ELSE paused_by END, \
    paused_note = CASE WHEN $10 THEN NULL ELSE paused_note END, \
    managed_by = CASE WHEN $23::text IS NULL THEN managed_by ELSE $23 END, \
    managed_source = CASE WHEN $23::text IS NULL THEN managed_source ELSE $24 END, \
    updated_at = now(), version = version + 1 \
    WHERE name = $1 AND ($22::bigint IS NULL OR version = $22)";

/// Pauses with a note (`$2` by, `$3` note; `$4`: whether the pause said
/// either). An enabled schedule is paused, since now, with what was said.
/// A paused one changes only when the pause says something that differs
/// (then its by and note are replaced; its `paused_at` stays): a bare
/// pause of a paused schedule changes nothing, not even the version.
const PAUSE: &str = "UPDATE scheduler_schedules \
    SET enabled = false, \
        paused_at = CASE WHEN enabled THEN now() ELSE paused_at END, \
        paused_by = CASE WHEN enabled OR $4 THEN $2 ELSE paused_by END, \
        paused_note = CASE WHEN enabled OR $4 THEN $3 ELSE paused_note END, \
        updated_at = now(), version = version + 1 \
    WHERE name = $1 AND (enabled OR ($4 AND (paused_by IS DISTINCT FROM $2 \
                                             OR paused_note IS DISTINCT FROM $3)))";

/// Resumes, forgetting the pause; a running schedule changes nothing.
const RESUME: &str = "UPDATE scheduler_schedules \
    SET enabled = true, paused_at = NULL, paused_by = NULL, paused_note = NULL, \
        updated_at = now(), version = version + 1 \
    WHERE name = $1 AND NOT enabled";

const DELETE: &str =
    "DELETE FROM scheduler_schedules WHERE name = $1 AND ($2::bigint IS NULL OR version = $2)";

const VERSION_OF: &str = "SELECT version FROM scheduler_schedules WHERE name = $1";

/// Stores a new schedule, managed by the API (as `POST /v1/schedules`
/// does). Fails with `AlreadyExists` if the name is taken.
pub async fn insert(
    client: &impl GenericClient,
    schedule: &Schedule,
) -> Result<StoredSchedule, StoreError> {
    insert_managed(client, schedule, &Manager::Api).await
}

/// Stores a new schedule managed by `manager`. Fails with `AlreadyExists`
/// if the name is taken.
pub async fn insert_managed(
    client: &impl GenericClient,
    schedule: &Schedule,
    manager: &Manager,
) -> Result<StoredSchedule, StoreError> {
    let cols = Columns::of(schedule);
    let (by, source) = manager.columns();
    let n = client
        .execute(INSERT, &[&cols.params()[..], &[&by, &source]].concat())
        .await?;
    if n == 0 {
        return Err(StoreError::AlreadyExists(cols.name));
    }
    get_required(client, schedule.name()).await
}

/// Replaces a schedule's definition; its manager stays. With
/// `expected_version`, fails with `VersionConflict` unless the stored
/// version is that one.
pub async fn update(
    client: &impl GenericClient,
    schedule: &Schedule,
    expected_version: Option<i64>,
) -> Result<StoredSchedule, StoreError> {
    update_managed(client, schedule, expected_version, None).await
}

/// [`update`], and with `manager` the schedule is managed by that one from
/// now on (an apply adopting it, an API write claiming or taking it over).
pub async fn update_managed(
    client: &impl GenericClient,
    schedule: &Schedule,
    expected_version: Option<i64>,
    manager: Option<&Manager>,
) -> Result<StoredSchedule, StoreError> {
    let cols = Columns::of(schedule);
    let (by, source) = match manager.map(Manager::columns) {
        Some((by, source)) => (Some(by), source),
        None => (None, None),
    };
    let n = client
        .execute(
            UPDATE,
            &[&cols.params()[..], &[&expected_version, &by, &source]].concat(),
        )
        .await?;
    if n == 0 {
        return Err(miss(client, schedule.name(), expected_version).await);
    }
    get_required(client, schedule.name()).await
}

/// Pauses (`false`, without a note: [`pause`]) or resumes (`true`:
/// [`resume`]) a schedule. Idempotent: setting the state it already has
/// changes nothing (not even the version).
pub async fn set_enabled(
    client: &impl GenericClient,
    name: &str,
    enabled: bool,
) -> Result<StoredSchedule, StoreError> {
    if enabled {
        resume(client, name).await
    } else {
        pause(client, name, &PauseNote::default()).await
    }
}

/// Pauses a schedule, recording who and why when `note` says. Pausing a
/// paused schedule with a note that says something replaces who and why
/// (since when stays); without, it changes nothing (not even the version).
pub async fn pause(
    client: &impl GenericClient,
    name: &str,
    note: &PauseNote,
) -> Result<StoredSchedule, StoreError> {
    let said = !note.is_empty();
    client
        .execute(PAUSE, &[&name, &note.by, &note.note, &said])
        .await?;
    get_required(client, name).await
}

/// Resumes a schedule and forgets its pause. Idempotent.
pub async fn resume(client: &impl GenericClient, name: &str) -> Result<StoredSchedule, StoreError> {
    client.execute(RESUME, &[&name]).await?;
    get_required(client, name).await
}

/// Deletes a schedule (its run history stays). With `expected_version`,
/// fails with `VersionConflict` unless the stored version is that one.
pub async fn delete(
    client: &impl GenericClient,
    name: &str,
    expected_version: Option<i64>,
) -> Result<(), StoreError> {
    let n = client.execute(DELETE, &[&name, &expected_version]).await?;
    if n == 0 {
        return Err(miss(client, name, expected_version).await);
    }
    Ok(())
}

/// Reads one schedule and locks its row until the transaction `client` is
/// in ends, so a change and its history row describe the same state.
pub async fn get_for_update(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<StoredSchedule>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM scheduler_schedules WHERE name = $1 FOR UPDATE");
    match client.query_opt(&sql, &[&name]).await? {
        Some(row) => from_row(&row).map(Some),
        None => Ok(None),
    }
}

/// Reads one schedule.
pub async fn get(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<StoredSchedule>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM scheduler_schedules WHERE name = $1");
    match client.query_opt(&sql, &[&name]).await? {
        Some(row) => from_row(&row).map(Some),
        None => Ok(None),
    }
}

async fn get_required(
    client: &impl GenericClient,
    name: &str,
) -> Result<StoredSchedule, StoreError> {
    get(client, name)
        .await?
        .ok_or_else(|| StoreError::NotFound(name.to_string()))
}

/// Why an UPDATE/DELETE touched no row: gone, or at another version.
async fn miss(client: &impl GenericClient, name: &str, expected: Option<i64>) -> StoreError {
    match client.query_opt(VERSION_OF, &[&name]).await {
        Err(e) => StoreError::Db(e),
        Ok(None) => StoreError::NotFound(name.to_string()),
        Ok(Some(row)) => StoreError::VersionConflict {
            name: name.to_string(),
            expected: expected.unwrap_or_default(),
            current: row.get(0),
        },
    }
}

/// Lists schedules by name, filtered and paginated.
pub async fn list(
    client: &impl GenericClient,
    filter: &ScheduleFilter,
) -> Result<SchedulePage, StoreError> {
    let limit = filter.limit.map(|l| l.clamp(1, 1000));
    let prefix_pattern = filter.name_prefix.as_ref().map(|p| like_prefix(p));
    let sql = format!(
        "SELECT {COLUMNS} FROM scheduler_schedules \
         WHERE ($1::boolean IS NULL OR enabled = $1) \
           AND ($2::text IS NULL OR pipeline = $2) \
           AND ($3::text IS NULL OR name LIKE $3) \
           AND ($4::text IS NULL OR name COLLATE \"C\" > $4) \
         ORDER BY name COLLATE \"C\" LIMIT $5"
    );
    let rows = client
        .query(
            &sql,
            &[
                &filter.enabled,
                &filter.pipeline,
                &prefix_pattern,
                &filter.after,
                &limit,
            ],
        )
        .await?;
    let mut page = page_of(&rows)?;
    if limit.is_some_and(|l| rows.len() as i64 == l) {
        page.next_after = rows.last().map(|r| r.try_get("name")).transpose()?;
    }
    Ok(page)
}

/// Every enabled schedule, read through a server-side cursor `page` rows at
/// a time and handed to `on_page` as each page arrives: no sort, and a large
/// catalog's rows are never all held at once next to their parsed form.
pub async fn each_enabled_page(
    client: &mut deadpool_postgres::Client,
    page: i32,
    mut on_page: impl FnMut(SchedulePage),
) -> Result<(), StoreError> {
    let tx = client.build_transaction().read_only(true).start().await?;
    let sql = format!("SELECT {COLUMNS} FROM scheduler_schedules WHERE enabled");
    let portal = tx.bind(sql.as_str(), &[]).await?;
    let page = page.max(1);
    loop {
        let rows = tx.query_portal(&portal, page).await?;
        let out = page_of(&rows)?;
        let last = rows.len() < page as usize;
        drop(rows);
        on_page(out);
        if last {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Who every enabled schedule is — name, creation time and version — which
/// is all a resync needs to find what changed without reading (and
/// parsing) every definition again.
pub async fn enabled_identities(
    client: &impl GenericClient,
) -> Result<Vec<(String, DateTime<Utc>, i64)>, StoreError> {
    let rows = client
        .query(
            "SELECT name, created_at, version FROM scheduler_schedules WHERE enabled",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// The named schedules that are enabled (in any order); names that are gone
/// or paused are simply absent.
pub async fn list_enabled_named(
    client: &impl GenericClient,
    names: &[String],
) -> Result<SchedulePage, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM scheduler_schedules WHERE name = ANY($1) AND enabled");
    let rows = client.query(&sql, &[&names]).await?;
    page_of(&rows)
}

/// Rows as a page: the valid schedules, and the rows that failed validation.
fn page_of(rows: &[Row]) -> Result<SchedulePage, StoreError> {
    let mut page = SchedulePage::default();
    for row in rows {
        let name: String = row.try_get("name")?;
        match from_row(row) {
            Ok(s) => page.schedules.push(s),
            Err(error) => page.invalid.push(InvalidRow { name, error }),
        }
    }
    Ok(page)
}

/// Escapes LIKE metacharacters so a prefix matches literally.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The column values of a schedule, in SQL types.
struct Columns {
    name: String,
    pipeline: String,
    schedule_type: &'static str,
    cron_expression: Option<String>,
    interval_seconds: Option<i64>,
    start_at: Option<DateTime<Utc>>,
    run_at: Option<DateTime<Utc>>,
    timezone: String,
    params: Value,
    enabled: bool,
    max_instances: i32,
    misfire_grace_time: i32,
    coalesce: bool,
    timeout_seconds: Option<i32>,
    retry_max_attempts: i32,
    retry_backoff_seconds: i32,
    retry_backoff_max_seconds: i32,
    description: Option<String>,
    end_at: Option<DateTime<Utc>>,
    overlap_policy: &'static str,
    jitter_seconds: i32,
}

/// Every bound on the model keeps these conversions in range (a week of
/// seconds fits an i32 many times over), so saturating is never observed.
fn int4(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Columns {
    /// `$1`..`$21` of INSERT and UPDATE, in column order.
    fn params(&self) -> [&(dyn ToSql + Sync); 21] {
        [
            &self.name,
            &self.pipeline,
            &self.schedule_type,
            &self.cron_expression,
            &self.interval_seconds,
            &self.start_at,
            &self.run_at,
            &self.timezone,
            &self.params,
            &self.enabled,
            &self.max_instances,
            &self.misfire_grace_time,
            &self.coalesce,
            &self.timeout_seconds,
            &self.retry_max_attempts,
            &self.retry_backoff_seconds,
            &self.retry_backoff_max_seconds,
            &self.description,
            &self.end_at,
            &self.overlap_policy,
            &self.jitter_seconds,
        ]
    }

    fn of(s: &Schedule) -> Self {
        let d = Definition::of(s);
        Columns {
            name: d.name,
            pipeline: d.pipeline,
            schedule_type: d.schedule_type.as_str(),
            cron_expression: d.cron,
            interval_seconds: d
                .interval_seconds
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            start_at: d.start_at,
            run_at: d.run_at,
            timezone: d.timezone,
            params: Value::Object(d.params),
            enabled: d.enabled,
            max_instances: int4(d.max_instances.into()),
            misfire_grace_time: int4(d.misfire_grace_time),
            coalesce: d.coalesce,
            timeout_seconds: d.timeout.map(int4),
            retry_max_attempts: int4(d.retry.max_attempts.into()),
            retry_backoff_seconds: int4(d.retry.backoff),
            retry_backoff_max_seconds: int4(d.retry.backoff_max),
            description: d.description,
            end_at: d.end_at,
            overlap_policy: d.overlap_policy.as_str(),
            jitter_seconds: int4(d.jitter),
        }
    }
}

/// Rebuilds a schedule from a row: the typed columns as its canonical
/// [`Definition`], then the same checks as files and API bodies. A column
/// out of the model's range names itself; nothing here panics.
fn from_row(row: &Row) -> Result<StoredSchedule, StoreError> {
    let name: String = row.try_get("name")?;
    let mut checked = Unsigned(Vec::new());
    let schedule_type: String = row.try_get("schedule_type")?;
    let definition = Definition {
        name: name.clone(),
        pipeline: row.try_get("pipeline")?,
        schedule_type: ScheduleType::parse(&schedule_type).unwrap_or_else(|| {
            checked.0.push(ValidationError::new(
                "schedule_type",
                format!("is {schedule_type:?}; expected cron, interval or date"),
            ));
            ScheduleType::Cron
        }),
        cron: row.try_get("cron_expression")?,
        interval_seconds: row
            .try_get::<_, Option<i64>>("interval_seconds")?
            .map(|n| checked.of("interval_seconds", n)),
        start_at: row.try_get("start_at")?,
        run_at: row.try_get("run_at")?,
        end_at: row.try_get("end_at")?,
        timezone: row.try_get("timezone")?,
        params: match row.try_get::<_, Value>("params")? {
            Value::Object(m) => m,
            _ => {
                checked
                    .0
                    .push(ValidationError::new("params", "must be a mapping"));
                Map::new()
            }
        },
        enabled: row.try_get("enabled")?,
        max_instances: checked.of("max_instances", row.try_get::<_, i32>("max_instances")?),
        overlap_policy: {
            let policy: String = row.try_get("overlap_policy")?;
            OverlapPolicy::parse(&policy).unwrap_or_else(|e| {
                checked.0.push(e);
                OverlapPolicy::Skip
            })
        },
        misfire_grace_time: checked.of(
            "misfire_grace_time",
            row.try_get::<_, i32>("misfire_grace_time")?,
        ),
        coalesce: row.try_get("coalesce")?,
        jitter: checked.of("jitter", row.try_get::<_, i32>("jitter_seconds")?),
        timeout: row
            .try_get::<_, Option<i32>>("timeout_seconds")?
            .map(|n| checked.of("timeout", n)),
        retry: RetryDefinition {
            max_attempts: checked.of(
                "retry.max_attempts",
                row.try_get::<_, i32>("retry_max_attempts")?,
            ),
            backoff: checked.of(
                "retry.backoff",
                row.try_get::<_, i32>("retry_backoff_seconds")?,
            ),
            backoff_max: checked.of(
                "retry.backoff_max",
                row.try_get::<_, i32>("retry_backoff_max_seconds")?,
            ),
        },
        description: row.try_get("description")?,
    };
    let pause = (!definition.enabled)
        .then(|| -> Result<Pause, StoreError> {
            Ok(Pause {
                at: row.try_get("paused_at")?,
                by: row.try_get("paused_by")?,
                note: row.try_get("paused_note")?,
            })
        })
        .transpose()?;
    let schedule = match checked.0 {
        errors if !errors.is_empty() => Err(ValidationErrors(errors)),
        _ => definition.to_schedule(),
    };
    let manager = Manager::from_columns(
        row.try_get::<_, Option<&str>>("managed_by")?,
        row.try_get::<_, Option<&str>>("managed_source")?,
    );
    let (schedule, manager) = match (schedule, manager) {
        (Ok(s), Ok(m)) => (s, m),
        (Err(ValidationErrors(mut errors)), Err(e)) => {
            errors.push(e);
            return Err(StoreError::InvalidRow {
                name,
                errors: ValidationErrors(errors),
            });
        }
        (Err(errors), _) => return Err(StoreError::InvalidRow { name, errors }),
        (_, Err(e)) => {
            return Err(StoreError::InvalidRow {
                name,
                errors: ValidationErrors(vec![e]),
            })
        }
    };
    Ok(StoredSchedule {
        schedule,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        pause,
        manager,
    })
}

/// The problems of columns outside the model's types (negative counts or
/// seconds), which the schema's checks keep out unless edited away.
struct Unsigned(Vec<ValidationError>);

impl Unsigned {
    /// `n` as the model's unsigned type, or 0 with the problem recorded.
    fn of<T: TryFrom<i64> + Default>(&mut self, field: &str, n: impl Into<i64>) -> T {
        let n = n.into();
        T::try_from(n).unwrap_or_else(|_| {
            self.0.push(ValidationError::new(
                field,
                format!("must be a whole number ≥ 0 in range, got {n}"),
            ));
            T::default()
        })
    }
}
