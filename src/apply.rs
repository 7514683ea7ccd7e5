//! Declarative sync of a schedules file into the database (`apply -f`).
//!
//! The file is the source of truth for every schedule it names: missing ones
//! are created, different ones updated, and with `prune` schedules absent from
//! the file are deleted. One exception keeps operators' pauses: a schedule
//! paused through the API stays paused unless the file states `enabled`.
//!
//! A one-time schedule is refused when the file would create it, or move its
//! `run_at`, to more than its misfire grace in the past ([`check_at`]); one
//! already stored with that `run_at` is kept, so a file re-applied at every
//! restart keeps working after its one-time schedules have run.
//!
//! The whole sync is one transaction under an advisory lock, so replicas that
//! apply the same ConfigMap at start-up queue up and the later ones find
//! nothing to do; a failure leaves the database as it was.

use std::fmt;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::schedule::spec::ParsedSchedule;
use crate::schedule::{Schedule, ValidationError};
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
    /// The file would create or change schedules that can no longer run
    /// (see [`check_at`]); each is named with its field.
    #[error("{}", refusals(.0))]
    Refused(Vec<(String, ValidationError)>),
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
    // The database's clock: the one ticks are claimed by.
    let now = crate::store::api_queries::db_now(&tx).await?;
    let refused = check_at(&plan, &page.schedules, now);
    if !refused.is_empty() {
        return Err(ApplyError::Refused(refused));
    }
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
            pause: None,
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
            let p = plan(&[parsed(desired.clone(), false)], &current, false);
            assert!(check_at(&p, &current, now).is_empty(), "{p}");
        }
        // Created, or moved, past the grace: refused by name; within it: fine.
        let p = plan(
            &[
                parsed(moved, false),
                parsed(new, false),
                parsed(soon, false),
            ],
            &current,
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
