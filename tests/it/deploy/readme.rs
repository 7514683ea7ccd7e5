//! The README's quick start and its list of variables.

use super::kubernetes::documented_secret;
use super::{help, help_env, read, repo, SERIES_LABEL};

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

/// The README's configuration table says the same defaults as `--help`,
/// which takes them from the library (`EngineConfig::default()`): the
/// defaults are written once, and the table is checked against them.
#[test]
fn readme_defaults_are_the_binarys() {
    let readme = read(&repo("README.md"));
    let documented: std::collections::BTreeMap<String, String> = readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `--flag` | `ENV` | default | meaning |
            let flag = cells.get(1)?.strip_prefix("`--")?.strip_suffix('`')?;
            Some((
                flag.to_string(),
                cells.get(3)?.trim_matches('`').to_string(),
            ))
        })
        .collect();
    let mut checked = 0;
    for sub in ["serve", "dev"] {
        for (flag, default) in help_defaults(&help(sub)) {
            let Some(readme_default) = documented.get(&flag) else {
                continue;
            };
            assert_eq!(
                readme_default, &default,
                "README's default of --{flag} is not the one `{sub} --help` prints"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} defaults compared");
}

/// `--flag` -> its `[default: …]`, from clap's long help.
fn help_defaults(help: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut flag: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            flag = rest.split([' ', '<', '=']).next().map(str::to_string);
        }
        if let (Some(f), Some(start)) = (&flag, line.find("[default: ")) {
            let value = &line[start + "[default: ".len()..];
            if let Some(end) = value.find(']') {
                out.push((f.clone(), value[..end].to_string()));
                flag = None;
            }
        }
    }
    out
}

/// The README's Kubernetes steps say what the manifests do: the same
/// Secrets as the base's own instructions (the TLS example, no signing key),
/// the opt-in signing component, and the label the alerts select.
#[test]
fn readme_deployment_sections_match_the_manifests() {
    let readme = read(&repo("README.md"));
    let section = |title: &str| -> String {
        let start = readme
            .find(title)
            .unwrap_or_else(|| panic!("README lacks {title}"));
        let rest = &readme[start + title.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    let kubernetes = section("## Deploying to Kubernetes");
    let manifests = read(&repo("deploy/kubernetes/kustomization.yaml"));
    for secret in ["spine-scheduler", "spine-db-ca"] {
        assert_eq!(
            documented_secret(&kubernetes, secret),
            documented_secret(&manifests, secret),
            "README and kustomization.yaml create {secret} differently"
        );
    }
    for needed in [
        "components/hmac-signing",
        "startupProbe",
        "topology.kubernetes.io/zone",
        "SPINE_DATABASE_PASSWORD_FILE",
    ] {
        assert!(
            kubernetes.contains(needed),
            "Kubernetes section lacks {needed}"
        );
    }
    assert!(repo("deploy/kubernetes/components/hmac-signing/kustomization.yaml").is_file());
    let (label, value) = SERIES_LABEL;
    let alerts = section("## Alerts and dashboard");
    assert!(
        alerts.contains(&format!("`{label}=\"{value}\"`")),
        "the alerts section names the label the rules select"
    );
    assert!(!alerts.contains("job=\"spine-scheduler\""));
}
