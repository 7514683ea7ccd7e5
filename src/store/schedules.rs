//! Schedule definitions in `scheduler_schedules`.
//!
//! Rows are turned back into [`Schedule`]s through the same validation as
//! files and API bodies, so a row edited by hand into nonsense is reported as
//! [`StoreError::InvalidRow`] rather than trusted.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::StoreError;
use crate::schedule::spec::parse_schedule;
use crate::schedule::{Schedule, Trigger};

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
    description, created_at, updated_at, version";

const INSERT: &str = "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, \
    cron_expression, interval_seconds, start_at, run_at, timezone, params, enabled, \
    max_instances, misfire_grace_time, coalesce, timeout_seconds, retry_max_attempts, \
    retry_backoff_seconds, retry_backoff_max_seconds, description) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
    ON CONFLICT (name) DO NOTHING";

/// `$19` is the expected version, or NULL for "whatever is there".
const UPDATE: &str = "UPDATE scheduler_schedules SET pipeline = $2, schedule_type = $3, \
    cron_expression = $4, interval_seconds = $5, start_at = $6, run_at = $7, timezone = $8, \
    params = $9, enabled = $10, max_instances = $11, misfire_grace_time = $12, coalesce = $13, \
    timeout_seconds = $14, retry_max_attempts = $15, retry_backoff_seconds = $16, \
    retry_backoff_max_seconds = $17, description = $18, updated_at = now(), version = version + 1 \
    WHERE name = $1 AND ($19::bigint IS NULL OR version = $19)";

const SET_ENABLED: &str = "UPDATE scheduler_schedules \
    SET enabled = $2, updated_at = now(), version = version + 1 \
    WHERE name = $1 AND enabled IS DISTINCT FROM $2";

const DELETE: &str =
    "DELETE FROM scheduler_schedules WHERE name = $1 AND ($2::bigint IS NULL OR version = $2)";

const VERSION_OF: &str = "SELECT version FROM scheduler_schedules WHERE name = $1";

/// Stores a new schedule. Fails with `AlreadyExists` if the name is taken.
pub async fn insert(
    client: &impl GenericClient,
    schedule: &Schedule,
) -> Result<StoredSchedule, StoreError> {
    let cols = Columns::of(schedule);
    let n = client.execute(INSERT, &cols.params()).await?;
    if n == 0 {
        return Err(StoreError::AlreadyExists(cols.name));
    }
    get_required(client, schedule.name()).await
}

/// Replaces a schedule's definition. With `expected_version`, fails with
/// `VersionConflict` unless the stored version is that one.
pub async fn update(
    client: &impl GenericClient,
    schedule: &Schedule,
    expected_version: Option<i64>,
) -> Result<StoredSchedule, StoreError> {
    let cols = Columns::of(schedule);
    let n = client
        .execute(UPDATE, &[&cols.params()[..], &[&expected_version]].concat())
        .await?;
    if n == 0 {
        return Err(miss(client, schedule.name(), expected_version).await);
    }
    get_required(client, schedule.name()).await
}

/// Pauses (`false`) or resumes (`true`) a schedule. Idempotent: setting the
/// state it already has changes nothing (not even the version).
pub async fn set_enabled(
    client: &impl GenericClient,
    name: &str,
    enabled: bool,
) -> Result<StoredSchedule, StoreError> {
    client.execute(SET_ENABLED, &[&name, &enabled]).await?;
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
}

/// Every bound on the model keeps these conversions in range (a week of
/// seconds fits an i32 many times over), so saturating is never observed.
fn secs_i32(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Columns {
    /// `$1`..`$18` of INSERT and UPDATE, in column order.
    fn params(&self) -> [&(dyn ToSql + Sync); 18] {
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
        ]
    }

    fn of(s: &Schedule) -> Self {
        let (cron_expression, interval_seconds, start_at, run_at) = match s.trigger() {
            Trigger::Cron(expr) => (Some(expr.as_str().to_string()), None, None, None),
            Trigger::Interval { every, start_at } => (
                None,
                Some(i64::try_from(every.as_secs()).unwrap_or(i64::MAX)),
                Some(*start_at),
                None,
            ),
            Trigger::Once { run_at } => (None, None, None, Some(*run_at)),
        };
        Columns {
            name: s.name().to_string(),
            pipeline: s.pipeline().to_string(),
            schedule_type: s.schedule_type().as_str(),
            cron_expression,
            interval_seconds,
            start_at,
            run_at,
            timezone: s.timezone().name().to_string(),
            params: Value::Object(s.params().clone()),
            enabled: s.enabled(),
            max_instances: i32::try_from(s.max_instances()).unwrap_or(i32::MAX),
            misfire_grace_time: secs_i32(s.misfire_grace()),
            coalesce: s.coalesce(),
            timeout_seconds: s.timeout().map(secs_i32),
            retry_max_attempts: i32::try_from(s.retry().max_attempts()).unwrap_or(i32::MAX),
            retry_backoff_seconds: secs_i32(s.retry().backoff()),
            retry_backoff_max_seconds: secs_i32(s.retry().backoff_max()),
            description: s.description().map(str::to_string),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Rebuilds a schedule from a row through the common validation path.
fn from_row(row: &Row) -> Result<StoredSchedule, StoreError> {
    let name: String = row.try_get("name")?;
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert(
        "pipeline".into(),
        json!(row.try_get::<_, String>("pipeline")?),
    );
    m.insert(
        "schedule_type".into(),
        json!(row.try_get::<_, String>("schedule_type")?),
    );
    if let Some(c) = row.try_get::<_, Option<String>>("cron_expression")? {
        m.insert("cron".into(), json!(c));
    }
    if let Some(i) = row.try_get::<_, Option<i64>>("interval_seconds")? {
        m.insert("interval_seconds".into(), json!(i));
    }
    if let Some(t) = row.try_get::<_, Option<DateTime<Utc>>>("start_at")? {
        m.insert("start_at".into(), json!(rfc3339(t)));
    }
    if let Some(t) = row.try_get::<_, Option<DateTime<Utc>>>("run_at")? {
        m.insert("run_at".into(), json!(rfc3339(t)));
    }
    m.insert(
        "timezone".into(),
        json!(row.try_get::<_, String>("timezone")?),
    );
    m.insert("params".into(), row.try_get::<_, Value>("params")?);
    m.insert("enabled".into(), json!(row.try_get::<_, bool>("enabled")?));
    m.insert(
        "max_instances".into(),
        json!(row.try_get::<_, i32>("max_instances")?),
    );
    m.insert(
        "misfire_grace_time".into(),
        json!(row.try_get::<_, i32>("misfire_grace_time")?),
    );
    m.insert(
        "coalesce".into(),
        json!(row.try_get::<_, bool>("coalesce")?),
    );
    if let Some(t) = row.try_get::<_, Option<i32>>("timeout_seconds")? {
        m.insert("timeout".into(), json!(t));
    }
    m.insert(
        "retry".into(),
        json!({
            "max_attempts": row.try_get::<_, i32>("retry_max_attempts")?,
            "backoff": row.try_get::<_, i32>("retry_backoff_seconds")?,
            "backoff_max": row.try_get::<_, i32>("retry_backoff_max_seconds")?,
        }),
    );
    if let Some(d) = row.try_get::<_, Option<String>>("description")? {
        m.insert("description".into(), json!(d));
    }
    let parsed = parse_schedule(&Value::Object(m))
        .map_err(|errors| StoreError::InvalidRow { name, errors })?;
    Ok(StoredSchedule {
        schedule: parsed.schedule,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
