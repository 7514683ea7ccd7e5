//! The kustomize base in deploy/kubernetes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{
    accepted_env, assert_ok, assert_validates, duration, hmac_env, port_of, read, repo, run, text,
    yaml,
};
use crate::harness::external_tool;
use crate::replica::temp_dir;

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
