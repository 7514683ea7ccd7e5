//! Declarative sync of a schedules file into the database (`apply -f`).
//!
//! The file is the source of truth for every schedule it names: missing ones
//! are created, different ones updated, and with `prune` schedules absent from
//! the file are deleted. One exception keeps operators' pauses: a schedule
//! paused through the API stays paused unless the file states `enabled`.
//!
//! The whole sync is one transaction under an advisory lock, so replicas that
//! apply the same ConfigMap at start-up queue up and the later ones find
//! nothing to do; a failure leaves the database as it was.

use std::fmt;

use tokio_postgres::Client;

use crate::schedule::spec::ParsedSchedule;
use crate::schedule::Schedule;
use crate::store::schedules::{self, ScheduleFilter, StoredSchedule};
use crate::store::{locks, StoreError};

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A schedule the database does not have.
    Create(Schedule),
    /// A schedule that differs; `fields` names what changes.
    Update {
        /// The new definition.
        schedule: Schedule,
        /// The version read, for the compare-and-set.
        version: i64,
        /// Which fields differ.
        fields: Vec<&'static str>,
    },
    /// A schedule absent from the file (only with `prune`).
    Delete {
        /// Its name.
        name: String,
        /// The version read, for the compare-and-set.
        version: i64,
    },
}

/// What an apply does (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The changes, creates and updates in file order, then deletes by name.
    pub changes: Vec<Change>,
    /// Schedules already as the file says.
    pub unchanged: Vec<String>,
    /// Schedules in the database but not in the file, kept because `prune` was off.
    pub kept: Vec<String>,
}

impl Plan {
    /// Whether applying changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            match change {
                Change::Create(s) => writeln!(f, "create    {}", s.name())?,
                Change::Update {
                    schedule, fields, ..
                } => writeln!(f, "update    {} ({})", schedule.name(), fields.join(", "))?,
                Change::Delete { name, .. } => writeln!(f, "delete    {name}")?,
            }
        }
        for name in &self.unchanged {
            writeln!(f, "unchanged {name}")?;
        }
        for name in &self.kept {
            writeln!(f, "kept      {name} (not in the file; --prune deletes it)")?;
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
            "{c} to create, {u} to update, {d} to delete, {} unchanged",
            self.unchanged.len()
        )
    }
}

/// Computes the changes that make `current` match `desired`. Pure.
pub fn plan(desired: &[ParsedSchedule], current: &[StoredSchedule], prune: bool) -> Plan {
    let mut out = Plan::default();
    for wanted in desired {
        let name = wanted.schedule.name();
        match current.iter().find(|c| c.schedule.name() == name) {
            None => out.changes.push(Change::Create(wanted.schedule.clone())),
            Some(have) => {
                let target = if wanted.enabled_given {
                    wanted.schedule.clone()
                } else {
                    wanted
                        .schedule
                        .clone()
                        .with_enabled(have.schedule.enabled())
                };
                let fields = have.schedule.differences(&target);
                if fields.is_empty() {
                    out.unchanged.push(name.to_string());
                } else {
                    out.changes.push(Change::Update {
                        schedule: target,
                        version: have.version,
                        fields,
                    });
                }
            }
        }
    }
    let mut absent: Vec<&StoredSchedule> = current
        .iter()
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
                name: gone.schedule.name().to_string(),
                version: gone.version,
            });
        } else {
            out.kept.push(gone.schedule.name().to_string());
        }
    }
    out
}

/// Options for [`apply`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Delete schedules the file does not name.
    pub prune: bool,
    /// Compute and return the plan, change nothing.
    pub dry_run: bool,
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
    /// The database failed, or a schedule changed under us.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Syncs `desired` into the database in one transaction and returns the plan
/// it carried out (or, with `dry_run`, would carry out).
pub async fn apply(
    client: &mut Client,
    desired: &[ParsedSchedule],
    options: ApplyOptions,
) -> Result<Plan, ApplyError> {
    let tx = client.transaction().await.map_err(StoreError::from)?;
    locks::lock_for_transaction(&tx, locks::APPLY).await?;
    let page = schedules::list(&tx, &ScheduleFilter::default()).await?;
    if let Some(bad) = page.invalid.into_iter().next() {
        return Err(ApplyError::InvalidStoredRow {
            name: bad.name,
            error: bad.error,
        });
    }
    let plan = plan(desired, &page.schedules, options.prune);
    if options.dry_run {
        return Ok(plan);
    }
    for change in &plan.changes {
        match change {
            Change::Create(s) => {
                schedules::insert(&tx, s).await?;
            }
            Change::Update {
                schedule, version, ..
            } => {
                schedules::update(&tx, schedule, Some(*version)).await?;
            }
            Change::Delete { name, version } => {
                schedules::delete(&tx, name, Some(*version)).await?;
            }
        }
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(plan)
}

/// Connects to `url`, brings the schema up to date and applies `desired`:
/// what `apply -f`, `serve --schedules` and `dev` each need.
pub async fn connect_and_apply(
    url: &str,
    desired: &[ParsedSchedule],
    options: ApplyOptions,
) -> Result<Plan, ApplyError> {
    let mut client = crate::store::connect(url).await?;
    crate::store::migrate::migrate(&mut client).await?;
    apply(&mut client, desired, options).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn parsed(s: Schedule, enabled_given: bool) -> ParsedSchedule {
        ParsedSchedule {
            schedule: s,
            enabled_given,
        }
    }

    fn stored(s: Schedule) -> StoredSchedule {
        StoredSchedule {
            schedule: s,
            version: 3,
            created_at: Utc::now(),
            updated_at: Utc::now(),
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
        let current = [stored(b), stored(c), stored(d)];
        let p = plan(&desired, &current, true);
        assert_eq!(
            p.changes,
            [
                Change::Create(a),
                Change::Update {
                    schedule: b2,
                    version: 3,
                    fields: vec!["trigger", "timezone"]
                },
                Change::Delete {
                    name: "c".into(),
                    version: 3
                }
            ]
        );
        assert_eq!(p.unchanged, ["d"]);
        let kept = plan(&desired, &current, false);
        assert_eq!(kept.kept, ["c"]);
        Ok(())
    }

    #[test]
    fn a_pause_survives_unless_the_file_says_enabled(
    ) -> Result<(), crate::schedule::ValidationError> {
        let paused = Schedule::cron("a", "p", "0 6 * * *")?.with_enabled(false);
        let file = Schedule::cron("a", "p", "0 6 * * *")?;
        assert!(plan(
            &[parsed(file.clone(), false)],
            &[stored(paused.clone())],
            false
        )
        .is_empty());
        let p = plan(&[parsed(file, true)], &[stored(paused)], false);
        assert!(
            matches!(&p.changes[..], [Change::Update { fields, .. }] if fields == &["enabled"])
        );
        Ok(())
    }
}
