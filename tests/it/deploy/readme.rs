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
