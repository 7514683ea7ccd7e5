//! The deployment files checked against the binary they deploy: the
//! Dockerfile, docker-compose.yml, the kustomize base in deploy/kubernetes,
//! the Prometheus rules and config, the Grafana dashboard and the README's
//! quick start.
//!
//! No Docker engine or Kubernetes cluster runs here, so the files are parsed
//! and every setting is checked against what `spine-scheduler` accepts (its
//! `--help`, its metrics, `validate` on the mounted files). The external
//! checkers — `promtool` (rules, rule tests, config), `kubectl kustomize`
//! and `kubernetes-validate` (offline Kubernetes schemas) — are required
//! under CI (.ci/run installs them) and skipped with a note elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::api::external_tool;
use crate::harness::binary;
use crate::replica::temp_dir;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        text(out)
    );
}

fn bin() -> PathBuf {
    PathBuf::from(binary())
}

/// `spine-scheduler <sub> --help`.
fn help(sub: &str) -> String {
    let out = run(&bin(), &[sub, "--help"], &[]);
    assert_ok(&format!("{sub} --help"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names in `[env: NAME=…]` of a help text.
fn help_env(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

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

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Environment variables the binary reads: those of its flags (from
/// `--help`) and those read directly, such as `SPINE_API_TOKEN`, which the
/// source names as string literals.
fn accepted_env() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for sub in ["serve", "apply", "migrate", "validate", "dev"] {
        names.extend(help_env(&help(sub)));
    }
    let mut files = Vec::new();
    rust_files(&repo("src"), &mut files);
    for file in files {
        for piece in read(&file).split("\"SPINE_").skip(1) {
            if let Some((name, _)) = piece.split_once('"') {
                if name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    names.insert(format!("SPINE_{name}"));
                }
            }
        }
    }
    names
}

/// The `hmac_secret_env` variables a pipelines file names: the replicas read
/// those, so a deployment must provide them.
fn hmac_env(pipelines: &Path) -> BTreeSet<String> {
    yaml(pipelines)["pipelines"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["hmac_secret_env"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
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

fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("duration {s:?}: {e}"))
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("SPINE_LISTEN {listen:?} has no port"))
}

/// `spine-scheduler validate -f SCHEDULES --pipelines PIPELINES` succeeds.
fn assert_validates(schedules: &Path, pipelines: &Path, env: &[(&str, &str)]) {
    let out = run(
        &bin(),
        &[
            "validate",
            "-f",
            &schedules.display().to_string(),
            "--pipelines",
            &pipelines.display().to_string(),
        ],
        env,
    );
    assert_ok(
        &format!(
            "validate {} with {}",
            schedules.display(),
            pipelines.display()
        ),
        &out,
    );
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
    let job = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "spine-scheduler")
        .expect("job spine-scheduler");
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
    // the source embeds (include_str!), or the image would not build.
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
    let mut files = Vec::new();
    rust_files(&repo("src"), &mut files);
    for file in files {
        for piece in read(&file).split("include_str!(\"").skip(1) {
            let rel = piece.split('"').next().expect("path");
            let target = file.parent().expect("dir").join(rel);
            let target = std::path::absolute(&target).expect("absolute");
            let normal: PathBuf = target.components().fold(PathBuf::new(), |mut p, c| {
                match c {
                    std::path::Component::ParentDir => {
                        p.pop();
                    }
                    other => p.push(other),
                }
                p
            });
            let inside = normal
                .strip_prefix(ROOT)
                .unwrap_or_else(|_| panic!("{} embeds {rel} outside the crate", file.display()));
            assert!(
                copied.iter().any(|c| inside.starts_with(c)),
                "{} embeds {}, which the Dockerfile does not copy",
                file.display(),
                inside.display()
            );
        }
    }
}

/// `kubectl kustomize` of the base, or — without kubectl outside CI — the
/// same documents assembled here (resources, plus the generated ConfigMap
/// without its hash suffix).
fn render_kustomize_base(dir: &Path) -> Vec<Value> {
    if let Some(kubectl) = external_tool("SPINE_KUBECTL", "kubectl") {
        let out = run(&kubectl, &["kustomize", &dir.display().to_string()], &[]);
        assert_ok("kubectl kustomize", &out);
        return serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
            .expect("rendered YAML");
    }
    let k = yaml(&dir.join("kustomization.yaml"));
    let mut docs: Vec<Value> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| yaml(&dir.join(r.as_str().expect("resource path"))))
        .collect();
    for generator in k["configMapGenerator"].as_array().expect("generators") {
        let mut data = serde_json::Map::new();
        for f in generator["files"].as_array().expect("files") {
            let f = f.as_str().expect("file");
            data.insert(f.to_string(), Value::String(read(&dir.join(f))));
        }
        docs.push(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": generator["name"], "labels": k["generatorOptions"]["labels"]},
            "data": data,
        }));
    }
    docs
}

fn matches_labels(selector: &Value, labels: &Value) -> bool {
    let want = selector.as_object().expect("matchLabels");
    !want.is_empty() && want.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn kubernetes_base_renders_validates_and_agrees_with_the_binary() {
    let dir = repo("deploy/kubernetes");
    let k = yaml(&dir.join("kustomization.yaml"));
    for r in k["resources"].as_array().expect("resources") {
        assert!(dir.join(r.as_str().expect("path")).is_file(), "{r}");
    }
    let docs = render_kustomize_base(&dir);
    let of_kind = |kind: &str| -> &Value {
        let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]
    };
    let deployment = of_kind("Deployment");
    let service = of_kind("Service");
    let pdb = of_kind("PodDisruptionBudget");
    let monitor = of_kind("ServiceMonitor");
    let config = of_kind("ConfigMap");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "no secret values in the base"
    );

    let spec = &deployment["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["replicas"], 3);
    assert!(matches_labels(&spec["selector"]["matchLabels"], pod_labels));
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["args"], serde_json::json!(["serve"]));

    // Environment: only variables the binary reads (or a pipeline's secret);
    // secrets by reference, never by value.
    let env: BTreeMap<String, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), e))
        .collect();
    let value = |k: &str| -> String {
        env.get(k)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {k}"))
            .to_string()
    };
    let accepted = accepted_env();
    let secrets = hmac_env(&dir.join("pipelines.yaml"));
    for name in env.keys() {
        assert!(
            accepted.contains(name) || secrets.contains(name) || name == "RUST_LOG",
            "env {name} is not read by spine-scheduler"
        );
    }
    for secret in [
        "DATABASE_URL",
        "SPINE_API_TOKEN",
        "SPINE_API_READONLY_TOKEN",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(secrets.iter().cloned())
    {
        let e = env.get(&secret).unwrap_or_else(|| panic!("env {secret}"));
        assert!(e.get("value").is_none(), "{secret} must not be a literal");
        assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "spine-scheduler");
    }
    assert_eq!(
        env["SPINE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    // Probes on the port the API listens on.
    let port = port_of(&value("SPINE_LISTEN"));
    let ports = c["ports"].as_array().expect("ports");
    let http = ports
        .iter()
        .find(|p| p["containerPort"] == port)
        .expect("containerPort = SPINE_LISTEN's port");
    let port_name = http["name"].as_str().expect("named port");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], port_name, "{probe} port");
    }

    // SIGKILL comes after the drain.
    let grace = duration(&value("SPINE_SHUTDOWN_GRACE"));
    let termination = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination >= grace.as_secs() + 10,
        "terminationGracePeriodSeconds {termination} must exceed SPINE_SHUTDOWN_GRACE {grace:?} with room to leave"
    );

    // Resources and a restrictive security context.
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][kind][r].is_string(), "resources.{kind}.{r}");
        }
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let uid = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(
        read(&repo("Dockerfile")).contains(&format!("USER {uid}:")),
        "runAsUser {uid} is the image's user"
    );
    let anti = &pod["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert!(matches_labels(
        &anti["labelSelector"]["matchLabels"],
        pod_labels
    ));

    // The files: mounted where the env points, and valid together.
    let mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == "config")
        .expect("config mount");
    let mount_path = mount["mountPath"].as_str().expect("mountPath");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "config")
        .expect("config volume");
    assert_eq!(volume["configMap"]["name"], config["metadata"]["name"]);
    let data = config["data"].as_object().expect("ConfigMap data");
    let scratch = temp_dir("deploy-k8s");
    let mut files = BTreeMap::new();
    for var in ["SPINE_PIPELINES_FILE", "SPINE_SCHEDULES_FILE"] {
        let path = value(var);
        let key = path
            .strip_prefix(&format!("{mount_path}/"))
            .unwrap_or_else(|| panic!("{var}={path} is not under {mount_path}"));
        let content = data[key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap key {key}"));
        let local = scratch.join(key);
        std::fs::write(&local, content).expect("write config file");
        files.insert(var, local);
    }
    let fake_secrets: Vec<(&str, &str)> = secrets
        .iter()
        .map(|s| (s.as_str(), "a-test-secret-of-some-length"))
        .collect();
    assert_validates(
        &files["SPINE_SCHEDULES_FILE"],
        &files["SPINE_PIPELINES_FILE"],
        &fake_secrets,
    );

    // Service, PDB and ServiceMonitor select these pods and this port.
    assert!(matches_labels(&service["spec"]["selector"], pod_labels));
    let svc_port = &service["spec"]["ports"][0];
    assert_eq!(svc_port["targetPort"], port_name);
    assert!(matches_labels(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(pdb["spec"]["maxUnavailable"] == 1 || pdb["spec"]["minAvailable"] == 2);
    assert!(matches_labels(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], svc_port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    // The alerts select job="spine-scheduler": the Service's name.
    assert_eq!(service["metadata"]["name"], "spine-scheduler");

    // Schemas, offline. ServiceMonitor is a CRD with no schema among the
    // core ones, so it is left out on purpose.
    if let Some(validator) = external_tool("SPINE_KUBERNETES_VALIDATE", "kubernetes-validate") {
        let core: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] != "ServiceMonitor")
            .collect();
        let mut stream = String::new();
        for d in &core {
            stream.push_str("---\n");
            stream.push_str(&serde_json::to_string(d).expect("encode"));
            stream.push('\n');
        }
        let file = scratch.join("rendered.yaml");
        std::fs::write(&file, stream).expect("write rendered");
        // The oldest Kubernetes we claim, and the newest the validator knows.
        for version in [Some("1.27.0"), None] {
            let mut args = vec!["--strict"];
            if let Some(v) = version {
                args.extend(["-k", v]);
            }
            let path = file.display().to_string();
            args.push(&path);
            let out = run(&validator, &args, &[]);
            let said = text(&out);
            assert_ok(&format!("kubernetes-validate {args:?}"), &out);
            assert!(!said.contains("ERROR") && !said.contains("WARN"), "{said}");
            assert_eq!(said.matches(" passed ").count(), core.len(), "{said}");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Metric names (`spine_…`, `process_…`, `up`, `kube_…`) in a PromQL
/// expression, quoted strings left out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for ch in expr.chars() {
        if ch == '"' {
            quoted = !quoted;
            unquoted.push(' ');
        } else if !quoted {
            unquoted.push(ch);
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            w.starts_with("spine_")
                || w.starts_with("process_")
                || w.starts_with("kube_")
                || *w == "up"
        })
        .map(str::to_string)
        .collect()
}

/// What the replicas export: every `spine_…` name registered in
/// src/metrics.rs, and every family a fresh registry encodes (process_*).
fn exported_metrics() -> BTreeSet<String> {
    let source = read(&repo("src/metrics.rs"));
    let mut names: BTreeSet<String> = source
        .split('"')
        .filter(|s| {
            s.starts_with("spine_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect();
    let metrics = spine_scheduler::metrics::Metrics::new(Default::default()).expect("metrics");
    for line in metrics.encode().expect("encode").lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Whether `name` is exported, counting a histogram's `_bucket`, `_sum`
/// and `_count` series.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| exported.contains(base))
        })
}

fn promtool() -> Option<PathBuf> {
    external_tool("SPINE_PROMTOOL", "promtool")
}

#[test]
fn alert_rules_pass_promtool_and_query_real_metrics() {
    let dir = repo("deploy/prometheus");
    let rules_file = yaml(&dir.join("alerts.yaml"));
    let exported = exported_metrics();
    // kube-state-metrics, for replicas that are not ready.
    let external = [
        "up",
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
    ];
    let mut alerts = BTreeMap::new();
    for group in rules_file["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("alerting rules only")
                .to_string();
            let expr = rule["expr"].as_str().expect("expr").to_string();
            for metric in metric_names(&expr) {
                assert!(
                    is_exported(&metric, &exported) || external.contains(&metric.as_str()),
                    "{name}: {metric} is not a metric spine-scheduler exports"
                );
            }
            assert!(
                ["critical", "warning"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity"
            );
            for a in ["summary", "description"] {
                assert!(rule["annotations"][a].is_string(), "{name}: {a}");
            }
            assert!(alerts.insert(name, expr).is_none(), "duplicate alert");
        }
    }
    // The alerts the issue asks for.
    let has = |name: &str, needles: &[&str]| {
        let expr = alerts.get(name).unwrap_or_else(|| panic!("alert {name}"));
        for n in needles {
            assert!(expr.contains(n), "{name}: {expr} lacks {n}");
        }
    };
    has(
        "SpineSchedulerNoLeader",
        &["max by", "spine_is_leader", "== 0", "absent("],
    );
    has(
        "SpineSchedulerMultipleLeaders",
        &["sum by", "spine_is_leader", "> 1"],
    );
    has("SpineSchedulerTicksMissed", &["status=\"missed\""]);
    has("SpineSchedulerFailureRatioHigh", &["failed|abandoned"]);
    has(
        "SpineSchedulerFireLagHigh",
        &["histogram_quantile(0.99", "spine_fire_lag_seconds_bucket"],
    );
    has(
        "SpineSchedulerReplicasNotReady",
        &["kube_deployment_status_replicas_available"],
    );
    has("SpineSchedulerReplicaDown", &["up{"]);

    // Every alert has a unit test in which it fires.
    let tests = yaml(&dir.join("alerts_test.yaml"));
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fired.insert(case["alertname"].as_str().expect("alertname").to_string());
            }
        }
    }
    let names: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(fired, names, "alerts without a firing test case");

    if let Some(promtool) = promtool() {
        let rules = dir.join("alerts.yaml").display().to_string();
        assert_ok(
            "promtool check rules",
            &run(&promtool, &["check", "rules", &rules], &[]),
        );
        let tests = dir.join("alerts_test.yaml").display().to_string();
        assert_ok(
            "promtool test rules",
            &run(&promtool, &["test", "rules", &tests], &[]),
        );
        // The compose Prometheus config, with the rule file it loads.
        let config = dir.join("prometheus.yml").display().to_string();
        assert_ok(
            "promtool check config",
            &run(&promtool, &["check", "config", &config], &[]),
        );
    }
}

#[test]
fn grafana_dashboard_parses_and_queries_only_real_metrics() {
    let path = repo("deploy/grafana/spine-scheduler.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "spine-scheduler");
    assert!(dashboard["title"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains("datasource") && variables.contains("job"));

    let exported = exported_metrics();
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().expect("title");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            for metric in metric_names(expr) {
                assert!(
                    is_exported(&metric, &exported) || metric == "up",
                    "{title}: {metric} is not a metric spine-scheduler exports"
                );
            }
            exprs.push((title.to_string(), expr.to_string()));
        }
    }
    // What the dashboard is for.
    let all: String = exprs
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "spine_runs_total",
        "status=\"completed\"",
        "failed|abandoned",
        "spine_fire_lag_seconds_bucket",
        "spine_run_duration_seconds_bucket",
        "spine_is_leader",
        "spine_build_info",
        "spine_db_pool_connections",
        "spine_db_pool_waiting",
    ] {
        assert!(all.contains(needed), "no panel queries {needed}");
    }

    // Every query is valid PromQL: promtool checks them as recording rules,
    // with Grafana's variables filled in.
    if let Some(promtool) = promtool() {
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, expr)) in exprs.iter().enumerate() {
            let concrete = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", "spine-scheduler")
                .replace("$namespace", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(&concrete).expect("quote")
            ));
        }
        let dir = temp_dir("deploy-grafana");
        let file = dir.join("dashboard_rules.yaml");
        std::fs::write(&file, rules).expect("write rules");
        let out = run(
            &promtool,
            &["check", "rules", &file.display().to_string()],
            &[],
        );
        assert_ok("promtool check rules (dashboard queries)", &out);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn readme_leads_with_the_local_mode_and_documents_every_variable() {
    let readme = read(&repo("README.md"));
    let first_block = readme
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    assert!(
        first_block.contains("cargo run --release -- dev"),
        "the first command is the local mode: {first_block}"
    );
    // With two binaries (spine-bench), plain `cargo run` needs a default.
    assert!(
        read(&repo("Cargo.toml")).contains("default-run = \"spine-scheduler\""),
        "`cargo run` must pick spine-scheduler"
    );
    for sub in ["serve", "dev"] {
        for name in help_env(&help(sub)) {
            assert!(
                readme.contains(&format!("`{name}`")),
                "README does not document {name} ({sub})"
            );
        }
    }
    for section in [
        "## Deploying to Kubernetes",
        "## docker compose",
        "## Alerts and dashboard",
        "## Guarantees and their limits",
        "## Upgrading",
    ] {
        assert!(readme.contains(section), "README lacks {section}");
    }
}
