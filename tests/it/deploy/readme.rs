//! The README's quick start and its list of variables.

use super::{help, help_env, read, repo};

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
