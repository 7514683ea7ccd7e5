//! Everything checked before anything starts (options, ports, data folder,
//! files), and the schedules loaded once the database is up.
//!
//! The order matters to a newcomer: a taken port or a typo in a schedules
//! file costs nothing when it is found before PostgreSQL starts.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{postgres, say_err, DevError, DevOptions};
use super::{DEMO_PIPELINE, DEMO_SCHEDULES, EXAMPLE_PIPELINES, EXAMPLE_SCHEDULES};
use crate::apply::{self, ApplyOptions, Change};
use crate::pipeline::{self, Registry};
use crate::schedule::spec::ParsedSchedule;
use crate::schedule_file::{self, CheckError, FileError};

/// Everything checked before anything is started.
pub(super) struct Setup {
    /// The data folder, absolute (the replicas run elsewhere).
    pub(super) data_dir: PathBuf,
    /// The pipelines file the replicas read (`serve --pipelines`).
    pub(super) pipelines_path: PathBuf,
    /// How the pipelines are named to the user.
    pub(super) pipelines_shown: String,
    /// The schedules to apply: the file's (or the seed's), then the demo.
    pub(super) schedules: Vec<ParsedSchedule>,
    /// How the schedules file is named to the user.
    pub(super) schedules_shown: String,
    /// The demo schedule's name, when it was added.
    pub(super) demo: Option<String>,
    /// One API port per replica.
    pub(super) ports: Vec<u16>,
    /// The executable run as each replica.
    pub(super) binary: PathBuf,
}

/// Checks the options, files, ports and data folder; writes the built-in
/// pipelines file the replicas will read. Starts nothing.
pub(super) fn prepare(options: &DevOptions) -> Result<Setup, DevError> {
    let ports = free_ports(options)?;
    let binary = match &options.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| {
            DevError::Setup(format!("cannot find this program's own executable: {e}"))
        })?,
    };

    let data_dir = std::path::absolute(&options.data_dir)
        .map_err(|e| DevError::Setup(format!("data folder {}: {e}", options.data_dir.display())))?;
    make_data_dir(&data_dir)?;
    if options.database_url.is_none() {
        postgres::check_reachable(&data_dir)?;
    }

    let (registry, pipelines_path, pipelines_shown) = pipelines(options, &data_dir)?;
    // Problems name the pipelines file as the user knows it.
    let pipelines = Some((&registry, Path::new(&pipelines_shown)));
    let (loaded, schedules_shown) = match &options.schedules {
        Some(path) => (
            schedule_file::load_checked(path, pipelines),
            path.display().to_string(),
        ),
        None => {
            let shown = "examples/schedules.yaml (built in)";
            let checked = schedule_file::parse_checked(EXAMPLE_SCHEDULES, shown, pipelines);
            (checked, shown.to_string())
        }
    };
    let mut schedules = loaded.map_err(refused)?.schedules;
    let mut demo = None;
    if registry.contains(DEMO_PIPELINE) {
        let shown = "examples/demo-schedules.yaml";
        let checked = schedule_file::parse_checked(DEMO_SCHEDULES, shown, pipelines);
        for parsed in checked.map_err(refused)?.schedules {
            let name = parsed.schedule.name().to_string();
            // A schedules file of one's own that defines it wins.
            if !schedules.iter().any(|s| s.schedule.name() == name) {
                schedules.push(parsed);
                demo = Some(name);
            }
        }
    } else {
        say_err(&format!(
            "note: the pipelines define no {DEMO_PIPELINE:?}, so the demo schedule that fires \
             every 5 seconds is not loaded"
        ));
    }
    Ok(Setup {
        data_dir,
        pipelines_path,
        pipelines_shown,
        schedules,
        schedules_shown,
        demo,
        ports,
        binary,
    })
}

/// Checks the replica count, the port range and the stop timeout, and that
/// every port is free now: before PostgreSQL starts, a taken port costs
/// nothing.
fn free_ports(options: &DevOptions) -> Result<Vec<u16>, DevError> {
    if !(1..=16).contains(&options.replicas) {
        return Err(DevError::Setup(format!(
            "--replicas {}: between 1 and 16, please",
            options.replicas
        )));
    }
    let last = u32::from(options.base_port) + u32::from(options.replicas) - 1;
    if options.base_port == 0 || last > u32::from(u16::MAX) {
        return Err(DevError::Setup(format!(
            "--base-port {}: the replicas need ports {}..={last}; pick a port from 1 to {}",
            options.base_port,
            options.base_port,
            u16::MAX - (options.replicas - 1)
        )));
    }
    if options.stop_timeout.is_zero() {
        return Err(DevError::Setup("--stop-timeout must be above zero".into()));
    }
    let ports: Vec<u16> = (0..options.replicas)
        .map(|i| options.base_port + i)
        .collect();
    for port in &ports {
        if let Err(e) = TcpListener::bind(("127.0.0.1", *port)) {
            return Err(DevError::Setup(format!(
                "127.0.0.1:{port} is not free ({e}); is another `spine-scheduler dev` or server \
                 running? Pick other ports with --base-port"
            )));
        }
    }
    Ok(ports)
}

/// The pipelines: the registry, the file the replicas read and how it is
/// named. The built-in examples are written into the data folder, since a
/// replica only reads pipelines from a file.
fn pipelines(
    options: &DevOptions,
    data_dir: &Path,
) -> Result<(Registry, PathBuf, String), DevError> {
    let (text, path, shown) = match &options.pipelines {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                DevError::Setup(format!(
                    "cannot read pipelines file {}: {e}",
                    path.display()
                ))
            })?;
            let abs = std::path::absolute(path)
                .map_err(|e| DevError::Setup(format!("{}: {e}", path.display())))?;
            (text, abs, path.display().to_string())
        }
        None => {
            let path = data_dir.join("pipelines.yaml");
            let text = format!(
                "# Written by `spine-scheduler dev` from examples/pipelines.yaml at each start;\n\
                 # edits here are overwritten (use `dev --pipelines FILE` for your own).\n{EXAMPLE_PIPELINES}"
            );
            std::fs::write(&path, text)
                .map_err(|e| DevError::Setup(format!("write {}: {e}", path.display())))?;
            (
                EXAMPLE_PIPELINES.to_string(),
                path,
                "examples/pipelines.yaml (built in)".to_string(),
            )
        }
    };
    let registry = pipeline::config::parse(&text)
        .map_err(|e| DevError::Setup(format!("pipelines file {shown}: {e}")))?;
    Ok((registry, path, shown))
}

/// A refused schedules file in `dev`'s words: every problem on its own
/// indented line under one heading, since they share the terminal with the
/// progress lines.
fn refused(e: CheckError) -> DevError {
    DevError::Setup(match e {
        CheckError::File(FileError::Read { path, source }) => {
            format!("cannot read schedules file {path}: {source}")
        }
        CheckError::File(e) => e.to_string(),
        CheckError::Refused(refused) => {
            let lines: Vec<String> = refused.lines().map(|l| format!("  {l}")).collect();
            format!(
                "{} problem(s) in the schedules:\n{}",
                refused.problems.len(),
                lines.join("\n")
            )
        }
    })
}

/// Creates the data folder (searchable by others, since the PostgreSQL
/// server may run as another user) with a `.gitignore` so that a folder made
/// inside a git checkout does not show up as untracked.
fn make_data_dir(dir: &Path) -> Result<(), DevError> {
    let io = |what: &str, e: std::io::Error| {
        DevError::Setup(format!("data folder {}: {what}: {e}", dir.display()))
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", e))?;
    }
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(
            &ignore,
            "# Made by `spine-scheduler dev`: nothing here belongs in git.\n*\n",
        )
        .map_err(|e| io("write .gitignore", e))?;
    }
    Ok(())
}

/// Source name of the example schedules `dev` applies.
pub(super) const DEV_SOURCE: &str = "dev-example";

/// Migrates and applies the schedules as source [`DEV_SOURCE`] (no pruning;
/// schedules made through the API in an earlier run are the API's and
/// stay). Returns the plan's one-line summary.
pub(super) async fn load_schedules(
    url: &str,
    schedules: &[ParsedSchedule],
) -> Result<String, DevError> {
    let plan = apply::connect_and_apply(url, schedules, &ApplyOptions::new(DEV_SOURCE))
        .await
        .map_err(|e| DevError::Database(e.to_string()))?;
    let created = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Create(_)))
        .count();
    Ok(format!(
        "{created} created, {} updated, {} unchanged, {} kept, {} managed by the API",
        plan.changes.len() - created,
        plan.unchanged.len(),
        plan.kept.len(),
        plan.not_managed.len()
    ))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    /// The built-in examples through the same check `dev` uses.
    fn checked(text: &str, registry: &Registry) -> Result<Vec<ParsedSchedule>, DevError> {
        let pipelines = Some((registry, Path::new("pipelines")));
        let checked = schedule_file::parse_checked(text, "seed", pipelines);
        Ok(checked.map_err(refused)?.schedules)
    }

    #[test]
    fn built_in_examples_are_valid_and_agree() {
        let registry = pipeline::config::parse(EXAMPLE_PIPELINES).expect("example pipelines");
        let seed = checked(EXAMPLE_SCHEDULES, &registry).expect("seed");
        assert_eq!(seed.len(), 5, "the seed's five schedules");
        let demo = checked(DEMO_SCHEDULES, &registry).expect("demo");
        assert_eq!(demo.len(), 1);
        assert_eq!(demo[0].schedule.pipeline(), DEMO_PIPELINE);
        // "Every few seconds": a newcomer sees a fire well within a minute.
        let now = Utc::now();
        let ticks = demo[0].schedule.upcoming(now, 2);
        assert_eq!(ticks.len(), 2);
        assert!((ticks[1] - ticks[0]).num_seconds() <= 10);
    }

    #[test]
    fn bad_options_are_refused_before_anything_starts() {
        let dir = std::env::temp_dir().join(format!("spine-dev-unit-{}", std::process::id()));
        let refused = |o: DevOptions| match prepare(&o) {
            Err(DevError::Setup(m)) => m,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted"),
        };
        let base = DevOptions {
            data_dir: dir.clone(),
            ..DevOptions::default()
        };
        assert!(refused(DevOptions {
            replicas: 0,
            ..base.clone()
        })
        .contains("--replicas"));
        assert!(refused(DevOptions {
            base_port: 65535,
            ..base.clone()
        })
        .contains("--base-port"));
        assert!(refused(DevOptions {
            schedules: Some(dir.join("missing.yaml")),
            base_port: 0,
            ..base.clone()
        })
        .contains("--base-port"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_pipelines_are_all_reported() {
        let registry = pipeline::config::parse("pipelines: []").expect("empty pipelines");
        let e = checked(EXAMPLE_SCHEDULES, &registry).expect_err("refused");
        let message = e.to_string();
        assert!(message.starts_with("5 problem(s)"), "{message}");
        assert!(message.contains("finra_otc_t1"), "{message}");
    }
}
