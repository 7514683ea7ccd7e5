//! The Dockerfile and docker-compose.yml.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    accepted_env, assert_validates, duration, help, hmac_env, port_of, read, repo, yaml, ROOT,
    SERIES_LABEL,
};
use crate::harness::binary;

/// The `--flags` a help text lists.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .to_string()
        })
        .collect()
}

/// The files the builds of this crate read, as cargo records them in the
/// dep-info files beside its artifacts (`target/<profile>/deps/
/// spine_scheduler-<hash>.d`: the library's and the binary's sources and
/// every file they embed). Only the per-artifact files are certain to exist:
/// cargo writes the `target/<profile>/spine-scheduler.d` copy only for a
/// `cargo build`, not for the binary `cargo test` builds. Files listed by an
/// older build that are gone since are left out.
fn build_inputs() -> Vec<PathBuf> {
    let deps = Path::new(binary())
        .parent()
        .map(|profile| profile.join("deps"))
        .unwrap_or_else(|| panic!("{}: no parent directory", binary()));
    let entries =
        std::fs::read_dir(&deps).unwrap_or_else(|e| panic!("read {}: {e}", deps.display()));
    let mut inputs = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("spine_scheduler-") && name.ends_with(".d")) {
            continue;
        }
        let dep_info = entry.path();
        let text = read(&dep_info);
        let (_, listed) = text
            .lines()
            .next()
            .and_then(|l| l.split_once(": "))
            .unwrap_or_else(|| panic!("{}: no `target: inputs` line", dep_info.display()));
        // A space inside a path is written `\ `; relative paths are the
        // package's.
        for p in listed.replace("\\ ", "\0").split_whitespace() {
            let path = Path::new(ROOT).join(p.replace('\0', " "));
            if path.exists() {
                inputs.insert(path);
            }
        }
    }
    for must in ["src/main.rs", "src/lib.rs"] {
        assert!(
            inputs.iter().any(|p| p.ends_with(must)),
            "the dep-info files in {} do not list {must}: {inputs:?}",
            deps.display()
        );
    }
    inputs.into_iter().collect()
}

/// `${VAR:-default}` as compose resolves it with VAR unset.
fn compose_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match s
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .and_then(|r| r.split_once(":-"))
    {
        Some((_, default)) => default.to_string(),
        None => s,
    }
}

#[test]
fn compose_file_matches_what_the_binary_accepts() {
    let compose = yaml(&repo("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "postgres",
            "spine-1",
            "spine-2",
            "spine-3",
            "demo-schedule",
            "prometheus"
        ])
    );
    let accepted = accepted_env();

    let pg = &services["postgres"];
    assert!(pg["healthcheck"]["test"].is_array(), "postgres healthcheck");
    let pg_env = |k: &str| compose_value(&pg["environment"][k]);

    let mut host_ports = BTreeSet::new();
    let mut targets = BTreeSet::new();
    for name in ["spine-1", "spine-2", "spine-3", "demo-schedule"] {
        let s = &services[name];
        let at = |what: &str| format!("service {name}: {what}");
        assert_eq!(s["build"], ".", "{}", at("build"));
        assert!(repo("Dockerfile").is_file());
        assert_eq!(
            s["depends_on"]["postgres"]["condition"],
            "service_healthy",
            "{}",
            at("waits for postgres")
        );

        // Mounts: "host:container[:ro]", host paths in this repo.
        let mut mounts = BTreeMap::new();
        for v in s["volumes"].as_array().expect("volumes") {
            let v = v.as_str().expect("short volume syntax");
            let mut parts = v.split(':');
            let (host, container) = (parts.next().expect("host"), parts.next().expect("target"));
            assert_eq!(parts.next(), Some("ro"), "{}", at("read-only mounts"));
            let host = repo(host.trim_start_matches("./"));
            assert!(
                host.is_file(),
                "{}: {} missing",
                at("mount"),
                host.display()
            );
            assert!(mounts.insert(container.to_string(), host).is_none());
        }

        // Every variable is one the binary reads (or a pipeline's secret).
        let env = s["environment"].as_object().expect("environment map");
        let get = |k: &str| env.get(k).map(compose_value);
        let pipelines_file = get("SPINE_PIPELINES_FILE").expect("SPINE_PIPELINES_FILE");
        let pipelines = mounts
            .get(&pipelines_file)
            .unwrap_or_else(|| panic!("{}", at("pipelines file not mounted")))
            .clone();
        let secrets = hmac_env(&pipelines);
        for key in env.keys() {
            if key.starts_with("SPINE_") || key == "DATABASE_URL" {
                assert!(
                    accepted.contains(key) || secrets.contains(key),
                    "{}",
                    at(&format!("{key} is not read by spine-scheduler"))
                );
            }
        }
        let url: tokio_postgres::Config = get("DATABASE_URL")
            .expect("DATABASE_URL")
            .parse()
            .expect("DATABASE_URL parses");
        assert!(matches!(
            url.get_hosts().first(),
            Some(tokio_postgres::config::Host::Tcp(h)) if h == "postgres"
        ));
        assert_eq!(url.get_dbname(), Some(pg_env("POSTGRES_DB").as_str()));
        assert_eq!(url.get_user(), Some(pg_env("POSTGRES_USER").as_str()));
        assert_eq!(
            url.get_password(),
            Some(pg_env("POSTGRES_PASSWORD").as_bytes())
        );
        // serve refuses tokens shorter than 16 characters, or equal ones.
        let admin = get("SPINE_API_TOKEN").expect("SPINE_API_TOKEN");
        let reader = get("SPINE_API_READONLY_TOKEN").expect("SPINE_API_READONLY_TOKEN");
        assert!(admin.len() >= 16 && reader.len() >= 16 && admin != reader);
        let grace = duration(&get("SPINE_SHUTDOWN_GRACE").expect("SPINE_SHUTDOWN_GRACE"));
        let stop = duration(s["stop_grace_period"].as_str().expect("stop_grace_period"));
        assert!(stop > grace, "{}", at("stop_grace_period above the drain"));

        let schedules_file = get("SPINE_SCHEDULES_FILE").expect("SPINE_SCHEDULES_FILE");
        match s["command"].as_array() {
            // A replica: the image's default `serve`, with the files mounted.
            None => {
                let schedules = mounts
                    .get(&schedules_file)
                    .unwrap_or_else(|| panic!("{}", at("schedules file not mounted")));
                assert_validates(schedules, &pipelines, &[]);
                let listen = get("SPINE_LISTEN").expect("SPINE_LISTEN");
                let ports = s["ports"].as_array().expect("ports");
                assert_eq!(ports.len(), 1);
                let published = ports[0].as_str().expect("port string");
                let parts: Vec<&str> = published.split(':').collect();
                assert_eq!(parts.len(), 3, "{published}");
                assert_eq!(
                    parts[0],
                    "127.0.0.1",
                    "{}",
                    at("published on loopback only")
                );
                assert!(
                    host_ports.insert(parts[1].to_string()),
                    "{}",
                    at("host port taken")
                );
                assert_eq!(parts[2].parse::<u16>().ok(), Some(port_of(&listen)));
                targets.insert(format!(
                    "{}:{}",
                    s["hostname"].as_str().expect("hostname"),
                    port_of(&listen)
                ));
                assert_eq!(s["hostname"], name);
            }
            // The one-shot demo: `apply --file F --pipelines P`.
            Some(command) => {
                let args: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
                assert_eq!(args.first(), Some(&"apply"), "{}", at("command"));
                let flags = help_flags(&help("apply"));
                for a in args.iter().filter(|a| a.starts_with("--")) {
                    assert!(flags.contains(*a), "{}", at(&format!("apply has no {a}")));
                }
                let arg = |flag: &str| {
                    let i = args.iter().position(|a| *a == flag).expect(flag);
                    mounts[args[i + 1]].clone()
                };
                assert_validates(&arg("--file"), &arg("--pipelines"), &[]);
                assert_eq!(s["restart"], "no");
            }
        }
    }

    // Prometheus scrapes exactly the three replicas, with the alerts loaded.
    let prom = &services["prometheus"];
    let mut prom_mounts = BTreeMap::new();
    for v in prom["volumes"].as_array().expect("volumes") {
        let v = v.as_str().expect("short syntax");
        let parts: Vec<&str> = v.split(':').collect();
        let host = repo(parts[0].trim_start_matches("./"));
        assert!(host.is_file(), "{}", host.display());
        prom_mounts.insert(parts[1].to_string(), host);
    }
    let config_arg = prom["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file");
    let config_path = &prom_mounts[config_arg];
    let config = yaml(config_path);
    let container_dir = Path::new(config_arg).parent().expect("config dir");
    for rule_file in config["rule_files"].as_array().expect("rule_files") {
        let inside = container_dir.join(rule_file.as_str().expect("rule file"));
        assert!(
            prom_mounts.contains_key(inside.to_str().expect("utf-8")),
            "rule file {} not mounted",
            inside.display()
        );
    }
    // The replicas' job carries the label the alerts select by (its name is
    // free).
    let (label, value) = SERIES_LABEL;
    let job = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["static_configs"][0]["labels"][label] == value)
        .unwrap_or_else(|| panic!("no scrape job labels its targets {label}={value:?}"));
    let scraped: BTreeSet<String> = job["static_configs"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert_eq!(scraped, targets);
    assert_eq!(job["metrics_path"], "/metrics");
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_the_binary_as_entrypoint() {
    let dockerfile = read(&repo("Dockerfile"));
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert!(
        froms[1].starts_with("FROM debian:") && froms[1].ends_with("-slim"),
        "slim Debian runtime: {}",
        froms[1]
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("HEALTHCHECK")),
        "no HEALTHCHECK: Kubernetes probes"
    );

    // The toolchain can build this crate.
    let arg = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}"))
            .to_string()
    };
    let version = |s: &str| -> Vec<u32> { s.split('.').filter_map(|p| p.parse().ok()).collect() };
    let manifest: String = read(&repo("Cargo.toml"));
    let required = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    assert!(
        version(&arg("RUST_VERSION")) >= version(required),
        "RUST_VERSION below rust-version {required}"
    );

    // The runtime stage: a fixed non-root uid, the binary as entrypoint.
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, r)| r)
        .expect("runtime stage");
    let user = runtime
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("numeric uid (runAsNonRoot checks it)");
    assert_ne!(uid, 0);
    let entrypoint: Vec<String> = serde_json::from_str(
        runtime
            .lines()
            .find_map(|l| l.trim().strip_prefix("ENTRYPOINT "))
            .expect("ENTRYPOINT"),
    )
    .expect("ENTRYPOINT in exec form");
    assert_eq!(
        entrypoint.last().map(String::as_str),
        Some("/usr/local/bin/spine-scheduler")
    );
    assert!(runtime.contains(
        "COPY --from=build /usr/local/bin/spine-scheduler /usr/local/bin/spine-scheduler"
    ));
    let listen = runtime
        .lines()
        .find_map(|l| l.trim().strip_prefix("ENV SPINE_LISTEN="))
        .expect("ENV SPINE_LISTEN");
    assert!(runtime.contains(&format!("EXPOSE {}", port_of(listen))));

    // What the build copies exists, is not ignored, and holds every file
    // the build reads (the sources and what they embed: include_str!), or
    // the image would not build.
    let ignored: Vec<String> = read(&repo(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').to_string())
        .collect();
    for must in ["target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == must),
            ".dockerignore lacks {must}"
        );
    }
    let copied: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for c in &copied {
        assert!(repo(c).exists(), "COPY {c}: missing");
        assert!(!ignored.contains(c), "COPY {c}: ignored by .dockerignore");
    }
    for input in build_inputs() {
        let inside = input
            .strip_prefix(ROOT)
            .unwrap_or_else(|_| panic!("the build reads {} outside the crate", input.display()));
        assert!(
            copied.iter().any(|c| inside.starts_with(c)),
            "the build reads {}, which the Dockerfile does not copy",
            inside.display()
        );
    }
}
