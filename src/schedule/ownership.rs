//! Who manages a schedule: a schedules file, by its source name, or the API.
//!
//! Operators keep the fleet's schedules in files (GitOps: `apply -f`, or
//! every replica's `serve --schedules` at start) and make one-off jobs and
//! pauses through the API. Each schedule has one manager, so neither undoes
//! the other: an apply creates, updates and prunes only the schedules its
//! source manages, and an API write to a file-managed schedule is refused
//! unless it explicitly takes the schedule over. The model is kubectl
//! server-side apply's field managers, at the grain of a whole schedule, with
//! its `--force-conflicts` as the explicit take-over; pausing and resuming
//! are operational controls, not definitions, and stay open to the API
//! whoever manages the definition (an apply keeps a pause, as before).
//!
//! Schedules stored before managers were recorded have none ("unclaimed"):
//! the first apply that names one adopts it, the first API write makes it
//! the API's, and nothing prunes it.

use std::fmt;
use std::path::Path;

use super::{check_identifier, ValidationError};

/// Longest source name accepted.
pub const MAX_SOURCE_LEN: usize = 128;

/// Who manages a schedule's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// Created, or taken over, through the API.
    Api,
    /// Created or adopted by the schedules file with this source name.
    File {
        /// The source name (`apply --source`, the file's `source:` key, or
        /// the file's name).
        source: String,
    },
}

impl Manager {
    /// The manager of a schedules file.
    pub fn file(source: impl Into<String>) -> Manager {
        Manager::File {
            source: source.into(),
        }
    }

    /// The stored form: `managed_by` (`api` | `file`) and `managed_source`.
    pub fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            Manager::Api => ("api", None),
            Manager::File { source } => ("file", Some(source)),
        }
    }

    /// Reads the stored form; `None` for an unclaimed schedule. Errors name
    /// the column at fault (a row edited by hand into nonsense).
    pub fn from_columns(
        managed_by: Option<&str>,
        source: Option<&str>,
    ) -> Result<Option<Manager>, ValidationError> {
        match (managed_by, source) {
            (None, None) => Ok(None),
            (Some("api"), None) => Ok(Some(Manager::Api)),
            (Some("file"), Some(s)) => {
                validate_source(s)?;
                Ok(Some(Manager::file(s)))
            }
            (by, source) => Err(ValidationError::new(
                "managed_by",
                format!("{by:?} with source {source:?} is not a manager"),
            )),
        }
    }
}

impl fmt::Display for Manager {
    /// "the API", or "the schedules file \"fleet\"".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Manager::Api => f.write_str("the API"),
            Manager::File { source } => write!(f, "the schedules file {source:?}"),
        }
    }
}

/// Checks a source name: 1–128 of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit (the schedule names' rule).
pub fn validate_source(source: &str) -> Result<(), ValidationError> {
    check_identifier("source", source, MAX_SOURCE_LEN)
}

/// The source name of a schedules file that names none: the file's name
/// (`schedules.yaml` for `/etc/spine/schedules.yaml`), so the same file
/// mounted at another path is the same source. Errors when the name does
/// not make a valid source (then `--source` must be given).
pub fn default_source(path: &Path) -> Result<String, ValidationError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    validate_source(&name).map_err(|e| {
        ValidationError::new(
            "source",
            format!(
                "the file name {name:?} is not a usable source name ({}); \
                 give one with --source NAME or a top-level `source:` key",
                e.message
            ),
        )
    })?;
    Ok(name)
}

/// The source name an apply of the file at `path` uses: `flag` (`apply
/// --source`, `serve --schedules-source`) if given, else the file's own
/// `source:` key, else its file name ([`default_source`]).
pub fn resolve_source(
    flag: Option<&str>,
    key: Option<&str>,
    path: &Path,
) -> Result<String, ValidationError> {
    match flag.or(key) {
        Some(given) => {
            validate_source(given)?;
            Ok(given.to_string())
        }
        None => default_source(path),
    }
}

/// What an API write to a schedule does to its manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiWrite {
    /// The API already manages it.
    Manages,
    /// Unclaimed: the API becomes its manager.
    Claims,
    /// Managed by a file, and the request takes it over: the API manages it
    /// from now on, and the file's next apply leaves it alone.
    TakesOver {
        /// The file source that managed it.
        from: String,
    },
}

/// Refusal of an API write to a schedule a file manages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "schedule {name:?} is managed by the schedules file {file:?}; change it there \
     (and apply it), or send take_over=true to manage it through the API from now on"
)]
pub struct ManagedByFile {
    /// The schedule.
    pub name: String,
    /// The file's source name.
    pub file: String,
}

/// Whether the API may change (or delete) the definition of schedule
/// `name`, managed by `current`; `take_over` is the request's explicit
/// `take_over=true`.
pub fn api_write(
    name: &str,
    current: Option<&Manager>,
    take_over: bool,
) -> Result<ApiWrite, ManagedByFile> {
    match current {
        Some(Manager::Api) => Ok(ApiWrite::Manages),
        None => Ok(ApiWrite::Claims),
        Some(Manager::File { source }) if take_over => Ok(ApiWrite::TakesOver {
            from: source.clone(),
        }),
        Some(Manager::File { source }) => Err(ManagedByFile {
            name: name.to_string(),
            file: source.clone(),
        }),
    }
}

/// What an apply of `source` does with a stored schedule its file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileClaim {
    /// This source manages it: the file's definition is applied.
    Manages,
    /// Unclaimed: this source adopts it and applies its definition.
    Adopts,
    /// The API manages it (created there, or taken over): the file's
    /// definition is not applied.
    ManagedByApi,
    /// Another file manages it: a conflict, unless the apply forces it.
    OtherFile(String),
}

/// How an apply of `source` stands to a stored schedule managed by `current`.
pub fn file_claim(current: Option<&Manager>, source: &str) -> FileClaim {
    match current {
        None => FileClaim::Adopts,
        Some(Manager::Api) => FileClaim::ManagedByApi,
        Some(Manager::File { source: s }) if s == source => FileClaim::Manages,
        Some(Manager::File { source: s }) => FileClaim::OtherFile(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_and_nonsense_is_named() {
        for m in [Manager::Api, Manager::file("fleet")] {
            let (by, source) = m.columns();
            assert_eq!(Manager::from_columns(Some(by), source), Ok(Some(m.clone())));
        }
        assert_eq!(Manager::from_columns(None, None), Ok(None));
        for (by, source) in [
            (Some("api"), Some("x")),
            (Some("file"), None),
            (Some("git"), None),
            (None, Some("x")),
            (Some("file"), Some("bad name")),
        ] {
            let e = Manager::from_columns(by, source).err();
            assert!(e.is_some(), "{by:?} {source:?}");
        }
    }

    #[test]
    fn the_api_writes_its_own_and_unclaimed_schedules_and_takes_over_only_when_asked() {
        let file = Manager::file("fleet");
        assert_eq!(
            api_write("a", Some(&Manager::Api), false),
            Ok(ApiWrite::Manages)
        );
        assert_eq!(api_write("a", None, false), Ok(ApiWrite::Claims));
        let refused = api_write("a", Some(&file), false);
        assert_eq!(refused.as_ref().map_err(|e| e.file.as_str()), Err("fleet"));
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("\"fleet\"") && message.contains("take_over=true"),
            "{message}"
        );
        assert_eq!(
            api_write("a", Some(&file), true),
            Ok(ApiWrite::TakesOver {
                from: "fleet".into()
            })
        );
    }

    #[test]
    fn a_file_applies_what_it_manages_or_adopts_and_nothing_else() {
        assert_eq!(file_claim(None, "fleet"), FileClaim::Adopts);
        assert_eq!(
            file_claim(Some(&Manager::file("fleet")), "fleet"),
            FileClaim::Manages
        );
        assert_eq!(
            file_claim(Some(&Manager::Api), "fleet"),
            FileClaim::ManagedByApi
        );
        assert_eq!(
            file_claim(Some(&Manager::file("other")), "fleet"),
            FileClaim::OtherFile("other".into())
        );
    }

    #[test]
    fn the_flag_beats_the_key_beats_the_file_name() {
        let path = Path::new("/etc/spine/schedules.yaml");
        assert_eq!(
            resolve_source(Some("cli"), Some("key"), path)
                .ok()
                .as_deref(),
            Some("cli")
        );
        assert_eq!(
            resolve_source(None, Some("key"), path).ok().as_deref(),
            Some("key")
        );
        assert_eq!(
            resolve_source(None, None, path).ok().as_deref(),
            Some("schedules.yaml")
        );
        assert!(resolve_source(Some("no spaces"), None, path).is_err());
    }

    #[test]
    fn a_files_default_source_is_its_name() {
        assert_eq!(
            default_source(Path::new("/etc/spine/schedules.yaml")).ok(),
            Some("schedules.yaml".to_string())
        );
        let e = default_source(Path::new("/tmp/my schedules.yaml")).err();
        assert!(e.is_some_and(|e| e.message.contains("--source")));
    }
}
