//! The schedules file: the seed's `config/schedules.yaml` format.
//!
//! ```yaml
//! schedules:
//!   - name: finra_otc_t1
//!     pipeline: finra.otc_transparency.ingest_week
//!     cron: "0 6 * * 1-5"
//!     timezone: America/New_York
//!     params:
//!       tier: T1
//! ```
//!
//! Every item is checked on its own (see [`crate::schedule::spec`] for the
//! keys), and duplicate names are reported; a file is valid only when every
//! item is. [`load_checked`] is the one way in for `validate`, `apply`,
//! `serve --schedules` and `dev`: it also checks the pipelines and refuses
//! the file with every problem named, so all four say the same thing.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::pipeline::Registry;
use crate::schedule::spec::{parse_schedule, ParsedSchedule};
use crate::schedule::ValidationError;

/// Why a schedules file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not YAML of the expected shape.
    #[error("{path}: {message}")]
    Syntax {
        /// The path given.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// One problem in a schedules file, located by schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The schedule's name, or `#N` (1-based) when it has none.
    pub schedule: String,
    /// The line where the schedule's item starts.
    pub line: usize,
    /// The field and what is wrong with it.
    pub error: ValidationError,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schedule {} (line {}): {}",
            self.schedule, self.line, self.error
        )
    }
}

/// A checked schedules file.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFile {
    /// The source name the file gives itself (its top-level `source:`
    /// key): the manager of the schedules it applies
    /// ([`crate::schedule::ownership`]).
    pub source: Option<String>,
    /// The valid schedules, in file order.
    pub schedules: Vec<ParsedSchedule>,
    /// The line each of `schedules` starts on (same order).
    pub lines: Vec<usize>,
    /// Every problem found; the file may only be applied when this is empty.
    pub problems: Vec<FileProblem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    source: Option<serde_saphyr::Spanned<String>>,
    #[serde(default)]
    schedules: Vec<serde_saphyr::Spanned<Value>>,
}

/// A schedules file refused by [`load_checked`] or [`parse_checked`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Not read at all: the file is unreadable, or not YAML of the expected shape.
    #[error(transparent)]
    File(#[from] FileError),
    /// Read, but with problems; every one is named.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Every problem of a refused schedules file. Displays as
/// `N problem(s) in FILE`; [`Refused::lines`] names each one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in {file}", problems.len())]
pub struct Refused {
    /// How the file is named in messages: its path, or what a built-in text is.
    pub file: String,
    /// The items' problems in file order (with `run_at`s found past their
    /// grace, for [`load_checked_at`]), then the unknown pipelines.
    pub problems: Vec<FileProblem>,
}

impl Refused {
    /// One line a problem, `FILE: schedule NAME (line N): field: message`,
    /// so each can be found in the file without the others around it.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|p| format!("{}: {p}", self.file))
    }
}

/// A schedules file without a problem: every item valid, and every
/// pipeline defined when a registry was given. Only [`load_checked`] and
/// [`parse_checked`] make one, so holding it means the check was done.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// The source name the file gives itself (`source:`), if any.
    pub source: Option<String>,
    /// The schedules, in file order.
    pub schedules: Vec<ParsedSchedule>,
}

/// Reads a schedules file, checks every item and, with `pipelines` (a
/// registry and the file it came from, named in each problem), that every
/// schedule's pipeline is defined. Refused with every problem at once, so
/// one round of fixes is enough.
pub fn load_checked(
    path: &Path,
    pipelines: Option<(&Registry, &Path)>,
) -> Result<Checked, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_checked(&text, &path.display().to_string(), pipelines)
}

/// [`load_checked`], also refusing what only the present can tell
/// ([`Schedule::validate_at`](crate::schedule::Schedule::validate_at)): a
/// one-time schedule whose `run_at` is more than its misfire grace before
/// `now`. For `validate`, which knows nothing of what is stored, so every
/// `run_at` counts as new; `apply` and `serve --schedules` check the same
/// against the database instead, where a `run_at` already stored is kept
/// (see [`crate::apply::check_at`]).
pub fn load_checked_at(
    path: &Path,
    pipelines: Option<(&Registry, &Path)>,
    now: DateTime<Utc>,
) -> Result<Checked, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    check(&text, &path.display().to_string(), pipelines, Some(now))
}

/// [`load_checked`] for a text already in hand (`dev`'s built-in examples);
/// `shown` names it in messages where a path would be.
pub fn parse_checked(
    text: &str,
    shown: &str,
    pipelines: Option<(&Registry, &Path)>,
) -> Result<Checked, CheckError> {
    check(text, shown, pipelines, None)
}

/// [`parse_checked`], and with `now` [`load_checked_at`]'s check too.
fn check(
    text: &str,
    shown: &str,
    pipelines: Option<(&Registry, &Path)>,
    now: Option<DateTime<Utc>>,
) -> Result<Checked, CheckError> {
    let mut file = parse(text).map_err(|message| FileError::Syntax {
        path: shown.to_string(),
        message,
    })?;
    if let Some(now) = now {
        let past = file
            .schedules
            .iter()
            .zip(&file.lines)
            .filter_map(|(p, line)| {
                let error = p.schedule.validate_at(now).err()?;
                Some(FileProblem {
                    schedule: p.schedule.name().to_string(),
                    line: *line,
                    error,
                })
            })
            .collect::<Vec<_>>();
        file.problems.extend(past);
        file.problems.sort_by_key(|p| p.line);
    }
    if let Some((registry, source)) = pipelines {
        let missing = unknown_pipelines(&file, registry, source);
        file.problems.extend(missing);
    }
    if file.problems.is_empty() {
        return Ok(Checked {
            source: file.source,
            schedules: file.schedules,
        });
    }
    Err(Refused {
        file: shown.to_string(),
        problems: file.problems,
    }
    .into())
}

/// Checks the text of a schedules file. `Err` carries a YAML or shape error.
pub fn parse(text: &str) -> Result<ScheduleFile, String> {
    if text.trim().is_empty() {
        return Ok(ScheduleFile::default());
    }
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let mut file = ScheduleFile::default();
    if let Some(source) = raw.source {
        match crate::schedule::ownership::validate_source(&source.value) {
            Ok(()) => file.source = Some(source.value),
            Err(error) => file.problems.push(FileProblem {
                schedule: "(the file)".into(),
                line: source.referenced.line() as usize,
                error,
            }),
        }
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, item) in raw.schedules.iter().enumerate() {
        let line = item.referenced.line() as usize;
        let label = item
            .value
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{}", i + 1));
        let mut problem = |error: ValidationError| {
            file.problems.push(FileProblem {
                schedule: label.clone(),
                line,
                error,
            })
        };
        if let Some((_, first_line)) = seen.iter().find(|(n, _)| *n == label) {
            problem(ValidationError::new(
                "name",
                format!("duplicate name; already defined at line {first_line}"),
            ));
            continue;
        }
        seen.push((label.clone(), line));
        match parse_schedule(&item.value) {
            Ok(parsed) => {
                file.schedules.push(parsed);
                file.lines.push(line);
            }
            Err(errors) => errors.0.into_iter().for_each(&mut problem),
        }
    }
    Ok(file)
}

/// One problem for every schedule whose pipeline `registry` lacks; the
/// message names `source`, the pipelines file, since that is where the
/// fix may be.
fn unknown_pipelines(file: &ScheduleFile, registry: &Registry, source: &Path) -> Vec<FileProblem> {
    file.schedules
        .iter()
        .zip(&file.lines)
        .filter(|(p, _)| !registry.contains(p.schedule.pipeline()))
        .map(|(p, line)| FileProblem {
            schedule: p.schedule.name().to_string(),
            line: *line,
            error: ValidationError::new(
                "pipeline",
                format!(
                    "unknown pipeline {:?}: not defined in the pipelines file ({})",
                    p.schedule.pipeline(),
                    source.display()
                ),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../examples/schedules.yaml");

    #[test]
    fn the_seed_example_is_valid() -> Result<(), String> {
        let f = parse(SEED)?;
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        let names: Vec<&str> = f.schedules.iter().map(|p| p.schedule.name()).collect();
        assert_eq!(
            names,
            [
                "finra_otc_t1",
                "finra_otc_t2",
                "price_updates",
                "daily_cleanup",
                "weekly_report"
            ]
        );
        Ok(())
    }

    /// The format the seed's `load_schedules_from_yaml` documents, verbatim
    /// (its `interval` in minutes, as a number).
    #[test]
    fn the_seed_loader_format_is_valid() -> Result<(), String> {
        let f = parse(
            "schedules:\n  - name: daily_finra\n    pipeline: finra.otc_transparency.ingest_week\n    cron: \"0 6 * * 1-5\"\n    timezone: America/New_York\n    params:\n      tier: T1\n  \n  - name: hourly_prices\n    pipeline: prices.ingest\n    interval: 60  # minutes\n",
        )?;
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        let [finra, hourly] = &f.schedules[..] else {
            panic!("two schedules: {:?}", f.schedules.len());
        };
        assert_eq!(finra.schedule.params().get("tier"), Some(&"T1".into()));
        assert_eq!(
            hourly.schedule.trigger(),
            &crate::schedule::Trigger::Interval {
                every: std::time::Duration::from_secs(3600),
                start_at: chrono::DateTime::UNIX_EPOCH,
            }
        );
        Ok(())
    }

    #[test]
    fn every_problem_is_named() -> Result<(), String> {
        let f = parse(
            "schedules:\n  - name: a\n    pipeline: p\n    cron: \"0 6 * * 9\"\n  - name: b\n    pipeline: p\n    cron: \"@daily\"\n    timezone: Mars/Base\n  - name: a\n    pipeline: p\n    cron: \"@hourly\"\n",
        )?;
        let got: Vec<String> = f.problems.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with("schedule a (line 2): cron: invalid day-of-week field"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("schedule b (line 5): timezone:"),
            "{got:?}"
        );
        assert!(
            got[2].starts_with("schedule a (line 9): name: duplicate"),
            "{got:?}"
        );
        Ok(())
    }

    #[test]
    fn a_refusal_names_every_problem_and_the_pipelines_file() {
        let registry =
            crate::pipeline::config::parse("pipelines:\n  - name: known.one\n    kind: log\n")
                .expect("pipelines");
        let text = "schedules:\n  - name: fine\n    pipeline: known.one\n    cron: \"@daily\"\n  - name: typo\n    pipeline: knwon.one\n    cron: \"@daily\"\n  - name: bad\n    pipeline: known.one\n    cron: \"61 * * * *\"\n";
        let source = Some((&registry, Path::new("p.yaml")));
        let Err(CheckError::Refused(refused)) = parse_checked(text, "s.yaml", source) else {
            panic!("accepted");
        };
        assert_eq!(refused.to_string(), "2 problem(s) in s.yaml");
        let lines: Vec<String> = refused.lines().collect();
        assert!(
            lines[0].starts_with("s.yaml: schedule bad (line 8): cron:"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "s.yaml: schedule typo (line 5): pipeline: unknown pipeline \"knwon.one\": \
             not defined in the pipelines file (p.yaml)"
        );
        // Without a registry only the items are checked.
        let Err(CheckError::Refused(refused)) = parse_checked(text, "s.yaml", None) else {
            panic!("accepted");
        };
        assert_eq!(refused.problems.len(), 1);
        assert!(matches!(
            parse_checked("schedules: [\n", "s.yaml", None),
            Err(CheckError::File(FileError::Syntax { .. }))
        ));
    }

    #[test]
    fn validate_refuses_a_run_at_past_its_grace_naming_schedule_and_line() {
        let text = "schedules:\n  - name: soon\n    pipeline: p\n    run_at: \"2027-06-01T12:00:00Z\"\n  - name: nightly\n    pipeline: p\n    run_at: \"2027-05-31T23:00:00Z\"\n    misfire_grace_time: 5m\n";
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let path = std::env::temp_dir().join(format!("spine-run-at-{}.yaml", std::process::id()));
        std::fs::write(&path, text).expect("write");
        // Within the grace of the first, long after the second.
        let got = load_checked_at(&path, None, at("2027-06-01T12:00:30Z"));
        let Err(CheckError::Refused(refused)) = got else {
            panic!("accepted: {got:?}");
        };
        let shown = path.display().to_string();
        let lines: Vec<String> = refused.lines().collect();
        assert_eq!(
            lines,
            [format!(
                "{shown}: schedule nightly (line 5): run_at: 2027-05-31T23:00:00Z is 13h 30s in \
                 the past, more than its misfire grace (5m): it would never run; give a later \
                 time (or a longer misfire_grace_time)"
            )]
        );
        // Before both: valid. Without a clock (apply, serve): not checked here.
        assert!(load_checked_at(&path, None, at("2027-05-01T00:00:00Z")).is_ok());
        assert!(load_checked(&path, None).is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn shape_errors_are_reported() {
        assert!(parse("jobs: []\n").is_err());
        assert!(parse("schedules: [\n").is_err());
        assert!(parse("schedules: 3\n").is_err());
        assert!(matches!(parse(""), Ok(f) if f.schedules.is_empty()));
    }
}
