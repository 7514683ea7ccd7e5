//! Declarative sync of a schedules file into the database (`apply -f`,
//! `serve --schedules`).
//!
//! A file is a *source* (its `source:` key, `--source`, or its file name)
//! and manages the schedules it created or adopted
//! ([`crate::schedule::ownership`]): missing ones are created, different ones
//! updated, and with `prune` the ones it manages but no longer names are
//! deleted. Schedules the API manages (created there, or taken over) are
//! never touched by a file, whatever `prune` says, and the plan says so;
//! a schedule another file manages is a conflict that refuses the apply
//! unless it is forced (kubectl's `--force-conflicts`). Unclaimed schedules
//! (stored before managers were recorded) are adopted by the first file
//! that names them and never pruned. A schedule paused through the API
//! stays paused unless the file states `enabled`.
//!
//! A one-time schedule is refused when the file would create it, or move its
//! `run_at`, to more than its misfire grace in the past ([`check_at`]); one
//! already stored with that `run_at` is kept, so a file re-applied at every
//! restart keeps working after its one-time schedules have run.
//!
//! The whole sync is one transaction under an advisory lock, with a row of
//! the audit trail per change (the actor is the file's source), so replicas
//! that apply the same ConfigMap at start-up queue up and the later ones
//! find nothing to do; a failure leaves the database as it was.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use crate::schedule::ownership::{file_claim, FileClaim, Manager};
use crate::schedule::spec::{Definition, ParsedSchedule};
use crate::schedule::{Schedule, ValidationError};
use crate::store::schedule_changes::{record, NewChange};
use crate::store::schedules::{self, ScheduleFilter, StoredSchedule};
use crate::store::{locks, StoreError};
use crate::types::{Actor, ChangeAction};

/// How an apply stands to a schedule it updates, besides its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The file's source already manages it.
    Manages,
    /// Unclaimed until now: the source adopts it.
    Adopts,
    /// Another file managed it; the apply was forced, so this one takes it.
    TakesFrom(String),
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A schedule the database does not have.
    Create(Schedule),
    /// A schedule that differs, or that the source adopts or takes.
    Update {
        /// The new definition.
        schedule: Schedule,
        /// The stored definition, for the drift shown and the audit trail.
        before: Box<Schedule>,
        /// The version read, for the compare-and-set.
        version: i64,
        /// Which fields differ (`managed_by` when only the manager changes).
        fields: Vec<&'static str>,
        /// Whether the source already manages it.
        claim: Claim,
    },
    /// A schedule the source manages that the file no longer names (only
    /// with `prune`).
    Delete {
        /// The stored definition.
        before: Box<Schedule>,
        /// The version read, for the compare-and-set.
        version: i64,
    },
}

/// What an apply does (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The file's source name: the manager it applies as.
    pub source: String,
    /// The changes, creates and updates in file order, then deletes by name.
    pub changes: Vec<Change>,
    /// Schedules already as the file says.
    pub unchanged: Vec<String>,
    /// Schedules the source manages that the file does not name, kept
    /// because `prune` was off.
    pub kept: Vec<String>,
    /// Schedules the file names that the API manages (taken over, or
    /// created there): the file's definition is not applied to them.
    pub not_managed: Vec<String>,
    /// Schedules the file names that another file manages (name, its
    /// source). An apply refuses these unless forced.
    pub conflicts: Vec<(String, String)>,
}

impl Plan {
    /// Whether applying changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// One line per differing definition key: `  key: before -> after`, the
/// values as JSON (what GET shows), so `apply --dry-run` shows the drift
/// between the file and the database, not only its field names.
fn drift(before: &Schedule, after: &Schedule) -> Vec<String> {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (
        serde_json::to_value(Definition::of(before)),
        serde_json::to_value(Definition::of(after)),
    ) else {
        return Vec::new();
    };
    new.iter()
        .filter_map(|(key, value)| {
            let was = old.get(key).unwrap_or(&Value::Null);
            (was != value).then(|| format!("    {key}: {was} -> {value}"))
        })
        .collect()
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = &self.source;
        for change in &self.changes {
            match change {
                Change::Create(s) => writeln!(f, "create    {}", s.name())?,
                Change::Update {
                    schedule,
                    before,
                    fields,
                    claim,
                    ..
                } => {
                    let how = match claim {
                        Claim::Manages => String::new(),
                        Claim::Adopts => format!("; adopted by source {source:?}"),
                        Claim::TakesFrom(other) => {
                            format!("; taken from source {other:?} (forced)")
                        }
                    };
                    writeln!(
                        f,
                        "update    {} ({}{how})",
                        schedule.name(),
                        fields.join(", ")
                    )?;
                    for line in drift(before, schedule) {
                        writeln!(f, "{line}")?;
                    }
                }
                Change::Delete { before, .. } => writeln!(f, "delete    {}", before.name())?,
            }
        }
        for name in &self.unchanged {
            writeln!(f, "unchanged {name}")?;
        }
        for name in &self.kept {
            writeln!(f, "kept      {name} (not in the file; --prune deletes it)")?;
        }
        for name in &self.not_managed {
            writeln!(
                f,
                "not managed {name}: the API manages it (created there or taken over); \
                 source {source:?} no longer applies it"
            )?;
        }
        for (name, other) in &self.conflicts {
            writeln!(
                f,
                "conflict  {name}: managed by source {other:?}; --force-conflicts takes it over"
            )?;
        }
        let (mut c, mut u, mut d) = (0, 0, 0);
        for change in &self.changes {
            match change {
                Change::Create(_) => c += 1,
                Change::Update { .. } => u += 1,
                Change::Delete { .. } => d += 1,
            }
        }
        write!(
            f,
            "source {source:?}: {c} to create, {u} to update, {d} to delete, {} unchanged",
            self.unchanged.len()
        )?;
        if !self.not_managed.is_empty() {
            write!(f, ", {} managed by the API", self.not_managed.len())?;
        }
        Ok(())
    }
}

/// Computes the changes that make the schedules `source` manages match
/// `desired`; with `force`, schedules another file manages are taken over
/// instead of reported as conflicts. Pure.
pub fn plan(
    source: &str,
    desired: &[ParsedSchedule],
    current: &[StoredSchedule],
    prune: bool,
    force: bool,
) -> Plan {
    let mut out = Plan {
        source: source.to_string(),
        ..Plan::default()
    };
    for wanted in desired {
        let name = wanted.schedule.name();
        let Some(have) = current.iter().find(|c| c.schedule.name() == name) else {
            out.changes.push(Change::Create(wanted.schedule.clone()));
            continue;
        };
        let claim = match file_claim(have.manager.as_ref(), source) {
            FileClaim::Manages => Claim::Manages,
            FileClaim::Adopts => Claim::Adopts,
            FileClaim::ManagedByApi => {
                out.not_managed.push(name.to_string());
                continue;
            }
            FileClaim::OtherFile(other) if force => Claim::TakesFrom(other),
            FileClaim::OtherFile(other) => {
                out.conflicts.push((name.to_string(), other));
                continue;
            }
        };
        let target = if wanted.enabled_given {
            wanted.schedule.clone()
        } else {
            wanted
                .schedule
                .clone()
                .with_enabled(have.schedule.enabled())
        };
        let mut fields = have.schedule.differences(&target);
        if claim != Claim::Manages {
            fields.push("managed_by");
        }
        if fields.is_empty() {
            out.unchanged.push(name.to_string());
        } else {
            out.changes.push(Change::Update {
                schedule: target,
                before: Box::new(have.schedule.clone()),
                version: have.version,
                fields,
                claim,
            });
        }
    }
    let mine = Some(Manager::file(source));
    let mut absent: Vec<&StoredSchedule> = current
        .iter()
        .filter(|c| c.manager == mine)
        .filter(|c| {
            !desired
                .iter()
                .any(|d| d.schedule.name() == c.schedule.name())
        })
        .collect();
    absent.sort_by(|a, b| a.schedule.name().cmp(b.schedule.name()));
    for gone in absent {
        if prune {
            out.changes.push(Change::Delete {
                before: Box::new(gone.schedule.clone()),
                version: gone.version,
            });
        } else {
            out.kept.push(gone.schedule.name().to_string());
        }
    }
    out
}

/// What only the present can refuse in a plan, at `now`: a schedule it
/// creates, or changes, with a `run_at` more than its misfire grace in the
/// past ([`Schedule::validate_change_at`]). A one-time schedule whose stored
/// `run_at` the file keeps is never refused, changed or not otherwise: it was
/// checked when it was set, may have run since, and `serve --schedules`
/// re-applies the same file at every start. Pure; every problem, by name.
pub fn check_at(
    plan: &Plan,
    current: &[StoredSchedule],
    now: DateTime<Utc>,
) -> Vec<(String, ValidationError)> {
    plan.changes
        .iter()
        .filter_map(|change| {
            let (schedule, stored) = match change {
                Change::Create(s) => (s, None),
                Change::Update { schedule, .. } => (
                    schedule,
                    current
                        .iter()
                        .find(|c| c.schedule.name() == schedule.name())
                        .map(|c| &c.schedule),
                ),
                Change::Delete { .. } => return None,
            };
            let error = schedule.validate_change_at(stored, now).err()?;
            Some((schedule.name().to_string(), error))
        })
        .collect()
}

/// Options for [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The file's source name ([`crate::schedule::ownership`]): what it
    /// manages, and who the audit trail says made the changes.
    pub source: String,
    /// Delete schedules the source manages that the file does not name.
    pub prune: bool,
    /// Compute and return the plan, change nothing.
    pub dry_run: bool,
    /// Take over schedules another file manages instead of refusing.
    pub force_conflicts: bool,
}

impl ApplyOptions {
    /// Applying as `source`, without pruning, forcing or a dry run.
    pub fn new(source: impl Into<String>) -> Self {
        ApplyOptions {
            source: source.into(),
            prune: false,
            dry_run: false,
            force_conflicts: false,
        }
    }
}

/// Why an apply failed; the database is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A stored schedule cannot be read, so the plan cannot be trusted.
    #[error("cannot plan: stored schedule {name:?} is invalid ({error}); fix or delete it first")]
    InvalidStoredRow {
        /// The schedule.
        name: String,
        /// What is wrong with it.
        error: StoreError,
    },
    /// The file would create or change schedules that can no longer run
    /// (see [`check_at`]); each is named with its field.
    #[error("{}", refusals(.0))]
    Refused(Vec<(String, ValidationError)>),
    /// The file names schedules another file manages (name, that source).
    #[error("{}", conflicts(.0))]
    Conflicts(Vec<(String, String)>),
    /// The source name is not usable.
    #[error("source: {0}")]
    Source(ValidationError),
    /// The database failed, or a schedule changed under us.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refusals(problems: &[(String, ValidationError)]) -> String {
    let each: Vec<String> = problems
        .iter()
        .map(|(name, e)| format!("schedule {name}: {e}"))
        .collect();
    format!("{}; nothing was applied", each.join("; "))
}

fn conflicts(names: &[(String, String)]) -> String {
    let each: Vec<String> = names
        .iter()
        .map(|(name, other)| format!("schedule {name} is managed by source {other:?}"))
        .collect();
    format!(
        "{}; give each schedule one file, or pass --force-conflicts to take them over; \
         nothing was applied",
        each.join("; ")
    )
}

/// Writes one change of a plan and its audit row.
async fn carry_out(
    tx: &tokio_postgres::Transaction<'_>,
    change: &Change,
    manager: &Manager,
    actor: &Actor,
) -> Result<(), StoreError> {
    match change {
        Change::Create(s) => {
            let stored = schedules::insert_managed(tx, s, manager).await?;
            let mut row = NewChange::new(s.name(), ChangeAction::Create, actor);
            row.version_after = Some(stored.version);
            row.after = Some(&stored.schedule);
            record(tx, &row).await
        }
        Change::Update {
            schedule,
            before,
            version,
            fields,
            claim,
        } => {
            let claims = (*claim != Claim::Manages).then_some(manager);
            let stored = schedules::update_managed(tx, schedule, Some(*version), claims).await?;
            let former = match claim {
                Claim::TakesFrom(other) => Some(Manager::file(other.clone())),
                _ => None,
            };
            let mut row = NewChange::new(schedule.name(), ChangeAction::Update, actor);
            row.version_before = Some(*version);
            row.version_after = Some(stored.version);
            row.fields = fields.iter().map(|f| f.to_string()).collect();
            row.before = Some(before);
            row.after = Some(&stored.schedule);
            row.former_manager = former.as_ref();
            record(tx, &row).await
        }
        Change::Delete { before, version } => {
            schedules::delete(tx, before.name(), Some(*version)).await?;
            let mut row = NewChange::new(before.name(), ChangeAction::Delete, actor);
            row.version_before = Some(*version);
            row.before = Some(before);
            record(tx, &row).await
        }
    }
}

/// Syncs `desired` into the database in one transaction and returns the plan
/// it carried out (or, with `dry_run`, would carry out).
pub async fn apply(
    client: &mut Client,
    desired: &[ParsedSchedule],
    options: &ApplyOptions,
) -> Result<Plan, ApplyError> {
    crate::schedule::ownership::validate_source(&options.source).map_err(ApplyError::Source)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    locks::lock_for_transaction(&tx, locks::APPLY).await?;
    let page = schedules::list(&tx, &ScheduleFilter::default()).await?;
    if let Some(bad) = page.invalid.into_iter().next() {
        return Err(ApplyError::InvalidStoredRow {
            name: bad.name,
            error: bad.error,
        });
    }
    let plan = plan(
        &options.source,
        desired,
        &page.schedules,
        options.prune,
        options.force_conflicts,
    );
    // The database's clock: the one ticks are claimed by.
    let now = crate::store::api_queries::db_now(&tx).await?;
    let refused = check_at(&plan, &page.schedules, now);
    if !refused.is_empty() {
        return Err(ApplyError::Refused(refused));
    }
    if options.dry_run {
        return Ok(plan);
    }
    if !plan.conflicts.is_empty() {
        return Err(ApplyError::Conflicts(plan.conflicts));
    }
    let manager = Manager::file(options.source.clone());
    let actor = Actor::file(options.source.clone());
    for change in &plan.changes {
        carry_out(&tx, change, &manager, &actor).await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(plan)
}

/// Connects to `url`, brings the schema up to date and applies `desired`:
/// what `apply -f`, `serve --schedules` and `dev` each need.
pub async fn connect_and_apply(
    url: &str,
    desired: &[ParsedSchedule],
    options: &ApplyOptions,
) -> Result<Plan, ApplyError> {
    let mut client = crate::store::connect(url).await?;
    crate::store::migrate::migrate(&mut client).await?;
    apply(&mut client, desired, options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: Schedule, enabled_given: bool) -> ParsedSchedule {
        ParsedSchedule {
            schedule: s,
            enabled_given,
        }
    }

    fn stored(s: Schedule) -> StoredSchedule {
        managed(s, Some(Manager::file("f")))
    }

    fn managed(s: Schedule, manager: Option<Manager>) -> StoredSchedule {
        StoredSchedule {
            schedule: s,
            version: 3,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            pause: None,
            manager,
        }
    }

    #[test]
    fn plans_creates_updates_deletes() -> Result<(), crate::schedule::ValidationError> {
        let a = Schedule::cron("a", "p", "0 6 * * *")?;
        let b = Schedule::cron("b", "p", "0 7 * * *")?;
        let b2 = Schedule::cron("b", "p", "0 8 * * *")?.with_timezone("Europe/Paris")?;
        let c = Schedule::cron("c", "p", "0 9 * * *")?;
        let d = Schedule::cron("d", "p", "0 9 * * *")?;
        let desired = [
            parsed(a.clone(), false),
            parsed(b2.clone(), false),
            parsed(d.clone(), false),
        ];
        let current = [stored(b.clone()), stored(c.clone()), stored(d)];
        let p = plan("f", &desired, &current, true, false);
        assert_eq!(
            p.changes,
            [
                Change::Create(a),
                Change::Update {
                    schedule: b2,
                    before: Box::new(b),
                    version: 3,
                    fields: vec!["trigger", "timezone"],
                    claim: Claim::Manages,
                },
                Change::Delete {
                    before: Box::new(c),
                    version: 3
                }
            ]
        );
        // The dry run shows the drift, key by key, as GET shows the values.
        let shown = p.to_string();
        assert!(
            shown.contains("    cron: \"0 7 * * *\" -> \"0 8 * * *\""),
            "{shown}"
        );
        assert!(
            shown.contains("    timezone: \"UTC\" -> \"Europe/Paris\""),
            "{shown}"
        );
        assert_eq!(p.unchanged, ["d"]);
        let kept = plan("f", &desired, &current, false, false);
        assert_eq!(kept.kept, ["c"]);
        Ok(())
    }

    #[test]
    fn a_past_run_at_is_refused_when_set_not_when_kept(
    ) -> Result<(), crate::schedule::ValidationError> {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let now = at("2027-07-01T00:00:00Z");
        let ran = Schedule::once("ran", "p", at("2027-06-01T12:00:00Z"))?;
        let new = Schedule::once("new", "p", at("2027-06-30T00:00:00Z"))?;
        let moved = Schedule::once("ran", "p", at("2027-06-02T12:00:00Z"))?;
        let soon = Schedule::once("soon", "p", at("2027-06-30T23:59:30Z"))?;
        // Kept as stored, even with another key changed: nothing refused.
        let described = ran.clone().with_description(Some("done".into()))?;
        let current = [stored(ran.clone())];
        for desired in [&ran, &described] {
            let p = plan(
                "f",
                &[parsed(desired.clone(), false)],
                &current,
                false,
                false,
            );
            assert!(check_at(&p, &current, now).is_empty(), "{p}");
        }
        // Created, or moved, past the grace: refused by name; within it: fine.
        let p = plan(
            "f",
            &[
                parsed(moved, false),
                parsed(new, false),
                parsed(soon, false),
            ],
            &current,
            false,
            false,
        );
        let refused: Vec<(String, String)> = check_at(&p, &current, now)
            .into_iter()
            .map(|(name, e)| (name, e.field))
            .collect();
        assert_eq!(
            refused,
            [
                ("ran".into(), "run_at".into()),
                ("new".into(), "run_at".into())
            ]
        );
        let e = ApplyError::Refused(check_at(&p, &current, now));
        assert!(
            e.to_string()
                .starts_with("schedule ran: run_at: 2027-06-02T12:00:00Z is "),
            "{e}"
        );
        assert!(e.to_string().ends_with("; nothing was applied"), "{e}");
        Ok(())
    }

    #[test]
    fn a_pause_survives_unless_the_file_says_enabled(
    ) -> Result<(), crate::schedule::ValidationError> {
        let paused = Schedule::cron("a", "p", "0 6 * * *")?.with_enabled(false);
        let file = Schedule::cron("a", "p", "0 6 * * *")?;
        assert!(plan(
            "f",
            &[parsed(file.clone(), false)],
            &[stored(paused.clone())],
            false,
            false
        )
        .is_empty());
        let p = plan("f", &[parsed(file, true)], &[stored(paused)], false, false);
        assert!(
            matches!(&p.changes[..], [Change::Update { fields, .. }] if fields == &["enabled"])
        );
        Ok(())
    }

    #[test]
    fn a_file_applies_and_prunes_only_what_its_source_manages(
    ) -> Result<(), crate::schedule::ValidationError> {
        let s = |name: &str, cron: &str| Schedule::cron(name, "p", cron);
        let current = [
            managed(s("mine", "0 6 * * *")?, Some(Manager::file("f"))),
            managed(s("api", "0 6 * * *")?, Some(Manager::Api)),
            managed(s("other", "0 6 * * *")?, Some(Manager::file("g"))),
            managed(s("old", "0 6 * * *")?, None),
            managed(s("api-only", "0 6 * * *")?, Some(Manager::Api)),
            managed(s("unclaimed-only", "0 6 * * *")?, None),
            managed(s("gone", "0 6 * * *")?, Some(Manager::file("f"))),
        ];
        let desired = [
            parsed(s("mine", "0 7 * * *")?, false),
            parsed(s("api", "0 7 * * *")?, false),
            parsed(s("other", "0 7 * * *")?, false),
            parsed(s("old", "0 6 * * *")?, false),
        ];
        let p = plan("f", &desired, &current, true, false);
        let summary: Vec<(String, Vec<&str>, Option<Claim>)> = p
            .changes
            .iter()
            .map(|c| match c {
                Change::Create(s) => (format!("create {}", s.name()), vec![], None),
                Change::Update {
                    schedule,
                    fields,
                    claim,
                    ..
                } => (
                    format!("update {}", schedule.name()),
                    fields.clone(),
                    Some(claim.clone()),
                ),
                Change::Delete { before, .. } => {
                    (format!("delete {}", before.name()), vec![], None)
                }
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("update mine".into(), vec!["trigger"], Some(Claim::Manages)),
                ("update old".into(), vec!["managed_by"], Some(Claim::Adopts)),
                ("delete gone".into(), vec![], None),
            ]
        );
        // API-managed: reported, never applied or pruned; another file's:
        // a conflict; unclaimed and not named: left alone.
        assert_eq!(p.not_managed, ["api"]);
        assert_eq!(p.conflicts, [("other".to_string(), "g".to_string())]);
        let shown = p.to_string();
        assert!(
            shown.contains("not managed api: the API manages it"),
            "{shown}"
        );
        assert!(
            shown.contains("conflict  other: managed by source \"g\""),
            "{shown}"
        );
        // Forced, the other file's schedule is taken.
        let forced = plan("f", &desired, &current, true, true);
        assert!(forced.conflicts.is_empty());
        assert!(forced.changes.iter().any(|c| matches!(c,
            Change::Update { schedule, claim: Claim::TakesFrom(g), .. }
                if schedule.name() == "other" && g == "g")));
        Ok(())
    }
}
