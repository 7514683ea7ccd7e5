//! The kustomize base in deploy/kubernetes and its opt-in component
//! components/hmac-signing.
//!
//! Besides rendering and schema validation, the Deployment is checked
//! against what the binary reads and serves, and a replica is started the
//! way the kubelet would start the container (its environment and mounted
//! files resolved from a Secret holding only the required keys).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spine_scheduler::api::auth;

use super::{
    accepted_env, assert_ok, assert_validates, bin, duration, hmac_env, port_of, read, repo, run,
    text, yaml, ROOT, SERIES_LABEL,
};
use crate::api_replica::Http;
use crate::harness::{eventually, external_tool, TestDb};
use crate::replica::temp_dir;

/// The Secret the Deployment reads its settings from.
const SECRET: &str = "spine-scheduler";
/// The keys of that Secret without which `serve` cannot start: the database
/// connection (a URL and the password file) and the admin token (serve
/// refuses to start without one). Every other key is `optional: true`.
const REQUIRED_KEYS: [&str; 3] = ["database-url", "database-password", "api-token"];
/// The Secret with the database server's CA, which the TLS example reads.
const CA_SECRET: &str = "spine-db-ca";
/// The variable and key of the opt-in signing component.
const HMAC_ENV: &str = "SPINE_HMAC_SECRET";
const HMAC_KEY: &str = "hmac-secret";

fn kubectl() -> Option<PathBuf> {
    external_tool("SPINE_KUBECTL", "kubectl")
}

fn kustomize(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = run(kubectl, &["kustomize", &dir.display().to_string()], &[]);
    assert_ok(&format!("kubectl kustomize {}", dir.display()), &out);
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).expect("rendered YAML")
}

/// `kubectl kustomize` of the base, or — without kubectl outside CI — the
/// same documents assembled here (resources, plus the generated ConfigMap
/// without its hash suffix).
fn render_kustomize_base(dir: &Path) -> Vec<Value> {
    if let Some(kubectl) = kubectl() {
        return kustomize(&kubectl, dir);
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

/// An overlay of the base as a user writes one, in a scratch directory:
/// `kustomization` with `{root}` standing for the repository, reached by a
/// relative path (kustomize refuses absolute ones).
fn render_overlay(kubectl: &Path, kustomization: &str) -> Vec<Value> {
    let dir = temp_dir("deploy-overlay");
    let here = std::fs::canonicalize(&dir).expect("canonical scratch dir");
    let root = std::fs::canonicalize(ROOT).expect("canonical repository root");
    let up = "../".repeat(here.components().count() - 1);
    let root_rel = format!(
        "{up}{}",
        root.strip_prefix("/").expect("absolute root").display()
    );
    std::fs::write(
        dir.join("kustomization.yaml"),
        kustomization.replace("{root}", &root_rel),
    )
    .expect("write overlay");
    let docs = kustomize(kubectl, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    docs
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn matches_labels(selector: &Value, labels: &Value) -> bool {
    let want = selector.as_object().expect("matchLabels");
    !want.is_empty() && want.iter().all(|(k, v)| labels[k] == *v)
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn env_of(c: &Value) -> BTreeMap<String, &Value> {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), e))
        .collect()
}

fn literal(env: &BTreeMap<String, &Value>, k: &str) -> String {
    env.get(k)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("env {k}"))
        .to_string()
}

fn named<'a>(list: &'a Value, name: &str, what: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("{what}"))
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{what} {name}"))
}

/// A Secret key the pod refers to: where, and whether it may be missing.
#[derive(Debug)]
struct KeyRef {
    secret: String,
    key: String,
    optional: bool,
    from: String,
}

/// Every reference to a Secret's key in the pod: `secretKeyRef`s, and the
/// items of `secret` volumes (a volume of a whole Secret counts as a
/// reference to its key `*`).
fn secret_refs(pod: &Value) -> Vec<KeyRef> {
    let mut refs = Vec::new();
    for c in pod["containers"].as_array().expect("containers") {
        for e in c["env"].as_array().into_iter().flatten() {
            let r = &e["valueFrom"]["secretKeyRef"];
            if r.is_object() {
                refs.push(KeyRef {
                    secret: r["name"].as_str().expect("name").into(),
                    key: r["key"].as_str().expect("key").into(),
                    optional: r["optional"] == true,
                    from: format!("env {}", e["name"]),
                });
            }
        }
        assert!(c["envFrom"].is_null(), "envFrom hides which keys are read");
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let s = &v["secret"];
        if !s.is_object() {
            continue;
        }
        let secret: String = s["secretName"].as_str().expect("secretName").into();
        let optional = s["optional"] == true;
        let from = format!("volume {}", v["name"]);
        match s["items"].as_array() {
            Some(items) => refs.extend(items.iter().map(|i| KeyRef {
                secret: secret.clone(),
                key: i["key"].as_str().expect("key").into(),
                optional,
                from: from.clone(),
            })),
            None => refs.push(KeyRef {
                secret,
                key: "*".into(),
                optional,
                from,
            }),
        }
    }
    refs
}

/// `--from-literal=KEY=VALUE` and `--from-file=KEY=PATH` of the
/// `kubectl create secret generic NAME` command in a comment, as KEY ->
/// VALUE (or PATH).
pub(super) fn documented_secret(comments: &str, name: &str) -> BTreeMap<String, String> {
    let command: String = comments
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .skip_while(|l| !l.contains(&format!("create secret generic {name} ")))
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        !command.is_empty(),
        "no `create secret generic {name}` command"
    );
    let command = command
        .split(" kubectl ")
        .next()
        .expect("first command")
        .to_string();
    command
        .split_whitespace()
        .filter_map(|w| {
            w.strip_prefix("--from-literal=")
                .or_else(|| w.strip_prefix("--from-file="))
        })
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, kv));
            (k.to_string(), v.trim_matches(['\'', '"']).to_string())
        })
        .collect()
}

/// The query parameters of a connection URL.
fn url_params(url: &str) -> BTreeMap<String, String> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The volume mounted at the longest mount path holding `path`, and the
/// path inside it.
fn mount_holding<'a>(c: &'a Value, path: &str) -> Option<(&'a Value, String)> {
    c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .filter_map(|m| {
            let at = m["mountPath"].as_str()?;
            let rest = path.strip_prefix(at)?.strip_prefix('/')?;
            Some((m, rest.to_string()))
        })
        .max_by_key(|(m, _)| m["mountPath"].as_str().map(str::len))
}

#[test]
fn kubernetes_base_renders_validates_and_agrees_with_the_binary() {
    let dir = repo("deploy/kubernetes");
    let k = yaml(&dir.join("kustomization.yaml"));
    for r in k["resources"].as_array().expect("resources") {
        assert!(dir.join(r.as_str().expect("path")).is_file(), "{r}");
    }
    let docs = render_kustomize_base(&dir);
    let deployment = one(&docs, "Deployment");
    let service = one(&docs, "Service");
    let pdb = one(&docs, "PodDisruptionBudget");
    let monitor = one(&docs, "ServiceMonitor");
    let config = one(&docs, "ConfigMap");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "no secret values in the base"
    );

    let spec = &deployment["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["replicas"], 3);
    assert!(matches_labels(&spec["selector"]["matchLabels"], pod_labels));
    let pod = &spec["template"]["spec"];
    let c = container(deployment);
    assert_eq!(c["args"], serde_json::json!(["serve"]));

    // Environment: only variables the binary reads (or a pipeline's secret);
    // secrets by reference, never by value.
    let env = env_of(c);
    let value = |k: &str| literal(&env, k);
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
        assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], SECRET);
    }
    assert_eq!(
        env["SPINE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    // Signing is opt-in: the base's pipelines sign nothing and nothing
    // refers to the key hmac-secret (a Secret without it gives running pods).
    assert!(
        secrets.is_empty(),
        "the base's pipelines name {secrets:?} in hmac_secret_env: signing is the component's"
    );
    assert!(!env.contains_key(HMAC_ENV), "{HMAC_ENV} is the component's");
    let refs = secret_refs(pod);
    assert!(
        !refs.iter().any(|r| r.key == HMAC_KEY),
        "the base refers to {HMAC_KEY}: {refs:?}"
    );
    // Only the keys serve cannot start without are required; every other
    // reference is optional, so a Secret without it gives running pods.
    let required: BTreeSet<String> = refs
        .iter()
        .filter(|r| !r.optional)
        .map(|r| format!("{}/{}", r.secret, r.key))
        .collect();
    let want: BTreeSet<String> = REQUIRED_KEYS
        .iter()
        .map(|k| format!("{SECRET}/{k}"))
        .collect();
    let optional: Vec<String> = refs
        .iter()
        .filter(|r| r.optional)
        .map(|r| format!("{} ({}/{})", r.from, r.secret, r.key))
        .collect();
    assert_eq!(
        required, want,
        "required Secret keys (all others must be optional: true; optional now: {optional:?})"
    );

    // Probes on the port the API listens on, at paths the binary serves
    // without a token.
    let port = port_of(&value("SPINE_LISTEN"));
    let ports = c["ports"].as_array().expect("ports");
    let http = ports
        .iter()
        .find(|p| p["containerPort"] == port)
        .expect("containerPort = SPINE_LISTEN's port");
    let port_name = http["name"].as_str().expect("named port");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let served = spine_scheduler::api::openapi().paths.paths;
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], port_name, "{probe} port");
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}: httpGet.path"));
        assert!(served.contains_key(path), "{probe}: {path} is not served");
        assert!(
            auth::OPEN_PATHS.contains(&path),
            "{probe}: {path} needs a token"
        );
    }
    // The startup probe: the process's own liveness (not the database's),
    // with room for a start that migrates and queues to apply the schedules
    // file; the liveness probe, which only begins after it, needs no delay.
    let startup = &c["startupProbe"];
    assert_eq!(
        startup["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"],
        "startupProbe checks what livenessProbe checks"
    );
    let budget = startup["periodSeconds"].as_u64().unwrap_or(10)
        * startup["failureThreshold"].as_u64().unwrap_or(3);
    assert!(budget >= 120, "startupProbe allows only {budget}s to start");
    assert!(
        c["livenessProbe"]["initialDelaySeconds"]
            .as_u64()
            .unwrap_or(0)
            == 0,
        "the startupProbe delays the livenessProbe"
    );

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

    // Spread: over nodes (anti-affinity) and over zones.
    let anti = &pod["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert!(matches_labels(
        &anti["labelSelector"]["matchLabels"],
        pod_labels
    ));
    let zone = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints")
        .iter()
        .find(|t| t["topologyKey"] == "topology.kubernetes.io/zone")
        .expect("a topologySpreadConstraint over topology.kubernetes.io/zone");
    assert!(
        matches_labels(&zone["labelSelector"]["matchLabels"], pod_labels),
        "the zone spread counts these pods: {zone}"
    );
    assert_eq!(zone["maxSkew"], 1);
    assert!(
        zone["whenUnsatisfiable"] == "ScheduleAnyway"
            || zone["whenUnsatisfiable"] == "DoNotSchedule"
    );

    // The files: mounted where the env points, and valid together.
    let volume_of = |mount: &Value| -> Value {
        named(
            &pod["volumes"],
            mount["name"].as_str().expect("name"),
            "volume",
        )
        .clone()
    };
    let data = config["data"].as_object().expect("ConfigMap data");
    let scratch = temp_dir("deploy-k8s");
    let mut files = BTreeMap::new();
    for var in ["SPINE_PIPELINES_FILE", "SPINE_SCHEDULES_FILE"] {
        let path = value(var);
        let (mount, key) =
            mount_holding(c, &path).unwrap_or_else(|| panic!("{var}={path} is not mounted"));
        assert_eq!(
            volume_of(mount)["configMap"]["name"],
            config["metadata"]["name"],
            "{var}={path}: not the generated ConfigMap"
        );
        let content = data[&key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap key {key}"));
        let local = scratch.join(&key);
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

    // The database password: a file from the Secret's key database-password.
    let password_file = value("SPINE_DATABASE_PASSWORD_FILE");
    let (mount, inside) = mount_holding(c, &password_file)
        .unwrap_or_else(|| panic!("SPINE_DATABASE_PASSWORD_FILE={password_file} is not mounted"));
    let volume = volume_of(mount);
    assert_eq!(volume["secret"]["secretName"], SECRET);
    let item = volume["secret"]["items"]
        .as_array()
        .expect("the password volume projects one key")
        .iter()
        .find(|i| i["path"] == inside.as_str())
        .unwrap_or_else(|| panic!("no item at {inside}"));
    assert_eq!(item["key"], "database-password");
    if let Some(mode) = volume["secret"]["defaultMode"].as_u64() {
        // Not world-readable, but readable by the replica's user or group.
        assert_eq!(mode & 0o007, 0, "password file mode {mode:o}");
        assert!(
            mode & 0o040 != 0 && pod["securityContext"]["fsGroup"] == uid,
            "mode {mode:o}: group-readable, and the group is fsGroup = runAsUser's"
        );
    }

    // The TLS example: the documented Secret holds a URL checking the
    // server's certificate against a CA file inside a mounted volume of the
    // documented CA Secret, and the password separately.
    let comments = read(&dir.join("kustomization.yaml"));
    let documented = documented_secret(&comments, SECRET);
    let keys: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    for key in REQUIRED_KEYS {
        assert!(
            keys.contains(key),
            "the documented Secret lacks {key}: {keys:?}"
        );
    }
    assert!(
        !keys.contains(HMAC_KEY),
        "the base's Secret needs no {HMAC_KEY}"
    );
    for key in &keys {
        assert!(
            refs.iter().any(|r| r.secret == SECRET && r.key == *key),
            "the documented key {key} is read by nothing"
        );
    }
    let url = &documented["database-url"];
    let userinfo = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("database-url is a URL: {url}"))
        .split_once('@')
        .map_or("", |(user, _)| user);
    assert!(
        !userinfo.contains(':'),
        "the password is not in the URL but in database-password: {url}"
    );
    let params = url_params(url);
    assert_eq!(
        params.get("sslmode").map(String::as_str),
        Some("verify-full"),
        "{url}"
    );
    let root_cert = params
        .get("sslrootcert")
        .unwrap_or_else(|| panic!("{url}: no sslrootcert"));
    let (mount, inside) = mount_holding(c, root_cert)
        .unwrap_or_else(|| panic!("sslrootcert={root_cert} is not inside a mounted volume"));
    let volume = volume_of(mount);
    let source = if volume["secret"].is_object() {
        volume["secret"]["secretName"].clone()
    } else {
        volume["configMap"]["name"].clone()
    };
    assert_eq!(source, CA_SECRET, "sslrootcert's volume is {volume}");
    let ca = documented_secret(&comments, CA_SECRET);
    assert!(
        ca.contains_key(&inside),
        "sslrootcert reads {inside}, the documented {CA_SECRET} has {:?}",
        ca.keys()
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
    // The alerts select the label the ServiceMonitor puts on every series
    // of its targets (a target relabeling, so `up` has it too), not the job.
    let (label, label_value) = SERIES_LABEL;
    let relabelings = endpoint["relabelings"].as_array().expect("relabelings");
    assert!(
        relabelings.iter().any(|r| r["targetLabel"] == label
            && r["replacement"] == label_value
            && r["sourceLabels"].is_null()
            && (r["action"].is_null() || r["action"] == "replace")),
        "the ServiceMonitor sets {label}={label_value:?}: {relabelings:?}"
    );

    // Schemas, offline. ServiceMonitor is a CRD with no schema among the
    // core ones, so it is left out on purpose.
    validate_schemas(&docs, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `kubernetes-validate --strict` of the core documents, against the
/// oldest Kubernetes we claim and the newest the validator knows.
fn validate_schemas(docs: &[Value], scratch: &Path) {
    let Some(validator) = external_tool("SPINE_KUBERNETES_VALIDATE", "kubernetes-validate") else {
        return;
    };
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

#[test]
fn hmac_signing_is_an_opt_in_component() {
    let component = repo("deploy/kubernetes/components/hmac-signing");
    let k = yaml(&component.join("kustomization.yaml"));
    assert_eq!(k["kind"], "Component");

    // Its pipelines are the base's, each signing with SPINE_HMAC_SECRET.
    let base_pipelines = yaml(&repo("deploy/kubernetes/pipelines.yaml"));
    let signing = yaml(&component.join("pipelines.yaml"));
    let mut stripped = signing.clone();
    for p in stripped["pipelines"]
        .as_array_mut()
        .expect("pipelines")
        .iter_mut()
    {
        let removed = p
            .as_object_mut()
            .expect("pipeline")
            .remove("hmac_secret_env");
        assert_eq!(removed, Some(Value::from(HMAC_ENV)), "{p}");
    }
    assert_eq!(
        stripped, base_pipelines,
        "the component's pipelines are the base's with hmac_secret_env"
    );

    let Some(kubectl) = kubectl() else {
        return;
    };
    // An overlay that renames everything, as the README suggests.
    let docs = render_overlay(
        &kubectl,
        "resources:\n  - {root}/deploy/kubernetes\n\
         components:\n  - {root}/deploy/kubernetes/components/hmac-signing\n\
         namePrefix: billing-\n",
    );
    let deployment = one(&docs, "Deployment");
    let config = one(&docs, "ConfigMap");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = container(deployment);
    let env = env_of(c);
    let hmac = &env
        .get(HMAC_ENV)
        .unwrap_or_else(|| panic!("the component sets {HMAC_ENV}"))["valueFrom"]["secretKeyRef"];
    assert_eq!(hmac["name"], SECRET);
    assert_eq!(hmac["key"], HMAC_KEY);
    assert_eq!(hmac["optional"], true, "{HMAC_KEY} stays optional");
    // Still only the required keys are required.
    let required: BTreeSet<String> = secret_refs(pod)
        .iter()
        .filter(|r| !r.optional)
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(
        required,
        REQUIRED_KEYS.iter().map(|k| k.to_string()).collect()
    );
    assert!(c["startupProbe"].is_object());

    // The merged ConfigMap: the component's pipelines, the base's schedules.
    let data = config["data"].as_object().expect("data");
    assert_eq!(
        data["schedules.yaml"].as_str(),
        Some(read(&repo("deploy/kubernetes/schedules.yaml")).as_str())
    );
    assert_eq!(
        data["pipelines.yaml"].as_str(),
        Some(read(&component.join("pipelines.yaml")).as_str())
    );
    let scratch = temp_dir("deploy-hmac");
    let pipelines = scratch.join("pipelines.yaml");
    let schedules = scratch.join("schedules.yaml");
    for (file, key) in [
        (&pipelines, "pipelines.yaml"),
        (&schedules, "schedules.yaml"),
    ] {
        std::fs::write(file, data[key].as_str().expect("text")).expect("write");
    }
    assert_eq!(hmac_env(&pipelines), BTreeSet::from([HMAC_ENV.to_string()]));
    // With the key the files are accepted; without it, refused by name.
    assert_validates(
        &schedules,
        &pipelines,
        &[(HMAC_ENV, "a-test-secret-of-some-length")],
    );
    let out = run(
        &bin(),
        &[
            "validate",
            "-f",
            &schedules.display().to_string(),
            "--pipelines",
            &pipelines.display().to_string(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("environment variable {HMAC_ENV} is not set")),
        "{}",
        text(&out)
    );
    validate_schemas(&docs, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Key -> value of each Secret or ConfigMap in a pretend namespace.
type Objects = BTreeMap<String, BTreeMap<String, String>>;

/// A container as the kubelet would start it: its environment and where
/// each mount's files are (here, directories of a scratch folder).
struct Started {
    env: BTreeMap<String, String>,
    mounts: Vec<(String, PathBuf)>,
}

impl Started {
    /// `value` with each path into a mount (at its start, or after `=` as
    /// in a URL's `sslrootcert=/…`) moved to the mount's folder here.
    fn host_path(&self, value: &str) -> String {
        let mut mounts = self.mounts.clone();
        mounts.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
        let mut out = String::new();
        let mut rest = value;
        while !rest.is_empty() {
            let at_boundary = out.is_empty() || out.ends_with('=');
            let hit = mounts
                .iter()
                .find(|(at, _)| at_boundary && rest.starts_with(&format!("{at}/")));
            match hit {
                Some((at, host)) => {
                    out.push_str(&host.display().to_string());
                    rest = &rest[at.len()..];
                }
                None => {
                    let ch = rest.chars().next().expect("non-empty");
                    out.push(ch);
                    rest = &rest[ch.len_utf8()..];
                }
            }
        }
        out
    }
}

/// What the kubelet does with the pod's references before the container
/// runs: a missing Secret, ConfigMap or key is an error (the pod stays in
/// ContainerCreating or CreateContainerConfigError) unless the reference is
/// `optional: true`, and then the variable is unset, the file absent.
fn start_container(
    pod: &Value,
    secrets: &Objects,
    config_maps: &Objects,
    pod_name: &str,
    scratch: &Path,
) -> Result<Started, String> {
    let mut volumes = BTreeMap::new();
    for v in pod["volumes"].as_array().expect("volumes") {
        let name = v["name"].as_str().expect("volume name");
        let host = scratch.join("volumes").join(name);
        std::fs::create_dir_all(&host).expect("volume dir");
        let (source, objects, object) = if v["secret"].is_object() {
            (&v["secret"], secrets, v["secret"]["secretName"].as_str())
        } else if v["configMap"].is_object() {
            (
                &v["configMap"],
                config_maps,
                v["configMap"]["name"].as_str(),
            )
        } else if v["emptyDir"].is_object() {
            volumes.insert(name.to_string(), host);
            continue;
        } else {
            return Err(format!("volume {name}: a kind this check does not know"));
        };
        let object = object.expect("object name");
        let optional = source["optional"] == true;
        match objects.get(object) {
            None if optional => {}
            None => return Err(format!("volume {name}: {object} not found")),
            Some(data) => {
                let items: Vec<(String, String)> = match source["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|i| {
                            (
                                i["key"].as_str().expect("key").to_string(),
                                i["path"].as_str().expect("path").to_string(),
                            )
                        })
                        .collect(),
                    None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                };
                for (key, path) in items {
                    match data.get(&key) {
                        Some(content) => {
                            std::fs::write(host.join(&path), content).expect("write item")
                        }
                        None if optional => {}
                        None => return Err(format!("volume {name}: {object} has no key {key}")),
                    }
                }
            }
        }
        volumes.insert(name.to_string(), host);
    }
    let c = &pod["containers"][0];
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        assert!(m["subPath"].is_null(), "subPath mounts do not see updates");
        let name = m["name"].as_str().expect("mount name");
        let host = volumes
            .get(name)
            .unwrap_or_else(|| panic!("mount of unknown volume {name}"));
        mounts.push((
            m["mountPath"].as_str().expect("mountPath").to_string(),
            host.clone(),
        ));
    }
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name").to_string();
        if let Some(v) = e["value"].as_str() {
            assert!(
                !v.contains("$("),
                "{name}: $(VAR) expansion is not modelled"
            );
            env.insert(name, v.to_string());
            continue;
        }
        let from = &e["valueFrom"];
        let (r, objects) = if from["secretKeyRef"].is_object() {
            (&from["secretKeyRef"], secrets)
        } else if from["configMapKeyRef"].is_object() {
            (&from["configMapKeyRef"], config_maps)
        } else if from["fieldRef"]["fieldPath"] == "metadata.name" {
            env.insert(name, pod_name.to_string());
            continue;
        } else {
            return Err(format!("env {name}: a source this check does not know"));
        };
        let (object, key) = (
            r["name"].as_str().expect("name"),
            r["key"].as_str().expect("key"),
        );
        match objects.get(object).and_then(|d| d.get(key)) {
            Some(v) => {
                env.insert(name, v.clone());
            }
            None if r["optional"] == true => {}
            None => return Err(format!("env {name}: {object} has no key {key}")),
        }
    }
    Ok(Started { env, mounts })
}

/// A process killed on drop (by its id) if still running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The address in a JSON log's "admin API listening" line.
fn listening_addr(log: &Path) -> Option<String> {
    std::fs::read_to_string(log).ok()?.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = v.get("fields")?;
        (fields.get("message")?.as_str()? == "admin API listening")
            .then(|| fields.get("addr")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// A Secret with the required keys and nothing else (no read-only token, no
/// hmac-secret, and no spine-db-ca at all) starts a replica: the kubelet
/// finds every key it must, and `serve` — with the container's args and
/// exactly the container's environment and files — passes its startup and
/// readiness probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_with_only_the_required_keys_starts_a_replica() {
    let docs = render_kustomize_base(&repo("deploy/kubernetes"));
    let deployment = one(&docs, "Deployment");
    let config = one(&docs, "ConfigMap");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = container(deployment);

    let db = TestDb::new().await;
    let parsed: tokio_postgres::Config = db.url.parse().expect("test database URL");
    let password = parsed
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "unused-by-the-test-server".into());
    let secret: BTreeMap<String, String> = [
        ("database-url", db.url.clone()),
        ("database-password", format!("{password}\n")),
        ("api-token", "a-test-admin-token-of-32-characters".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        secret.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(REQUIRED_KEYS)
    );
    // The ConfigMap as rendered, but the pipelines' URLs on loopback: a tick
    // falling due during the test must not send a request off this machine.
    let mut data: BTreeMap<String, String> = config["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
        .collect();
    let pipelines = data.get_mut("pipelines.yaml").expect("pipelines.yaml");
    *pipelines = pipelines
        .lines()
        .map(|l| match l.split_once("url: ") {
            Some((indent, _)) => format!("{indent}url: http://127.0.0.1:9/"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config_maps = Objects::from([(
        config["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string(),
        data,
    )]);
    let scratch = temp_dir("deploy-pod");

    // Each required key is required: without it the container never starts.
    for key in REQUIRED_KEYS {
        let mut partial = secret.clone();
        partial.remove(key);
        let secrets = Objects::from([(SECRET.to_string(), partial)]);
        assert!(
            start_container(pod, &secrets, &config_maps, "p", &scratch.join(key)).is_err(),
            "a Secret without {key} would start the container"
        );
    }
    let secrets = Objects::from([(SECRET.to_string(), secret)]);
    let started = start_container(
        pod,
        &secrets,
        &config_maps,
        "spine-scheduler-7c9d4f5b8d-x2kqz",
        &scratch,
    )
    .unwrap_or_else(|e| panic!("the container does not start: {e}"));
    assert!(!started.env.contains_key(HMAC_ENV));

    // Run it: the container's args, exactly its environment (paths into
    // the mounts moved to their folders here), the API on loopback.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    let log = scratch.join("replica.log");
    let mut cmd = Command::new(bin());
    cmd.args(&args).env_clear();
    for (k, v) in &started.env {
        cmd.env(k, started.host_path(v));
    }
    cmd.env("SPINE_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = Process(cmd.spawn().expect("spawn serve"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Some(a) = listening_addr(&log) {
            break a;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("serve exited ({status}) before listening:\n{}", log_text());
        }
        assert!(
            Instant::now() < deadline,
            "serve did not listen within 60s:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let base = format!("http://{addr}");
    let http = Http::new();
    let startup = c["startupProbe"]["httpGet"]["path"]
        .as_str()
        .expect("startupProbe path");
    let reply = http.get(&base, startup, None).await;
    assert_eq!(reply.status, 200, "startupProbe {startup}: {}", reply.text);
    let ready = c["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("readinessProbe path")
        .to_string();
    eventually(Duration::from_secs(30), "readinessProbe passes", || {
        let (http, base, ready) = (http.clone(), base.clone(), ready.clone());
        async move { http.get(&base, &ready, None).await.status == 200 }
    })
    .await;

    // SIGTERM (by process id), as the kubelet stops it. The drain itself is
    // other tests' subject: here the replica only has to go (a SIGTERM right
    // after readiness can come before serve installs its signal handler,
    // and then ends the process at once).
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            assert!(
                status.success() || status.signal() == Some(15),
                "serve exited {status}:\n{}",
                log_text()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(child);
    let _ = std::fs::remove_dir_all(&scratch);
}
