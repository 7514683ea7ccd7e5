//! The pipelines file: the operator's definitions of `http`, `command` and
//! `log` pipelines.
//!
//! ```yaml
//! pipelines:
//!   - name: prices.ingest_current
//!     kind: http
//!     url: http://prices.internal:8080/ingest
//!     method: POST                          # optional, default POST
//!     headers: {X-Team: prices}             # optional
//!     timeout: 30s                          # optional: a duration or seconds
//!     hmac_secret_env: SPINE_HMAC_SECRET    # optional: sign with this variable's value
//!   - name: maintenance.cleanup_old_data
//!     kind: command
//!     argv: ["/usr/local/bin/cleanup", "--days", "90"]
//!     working_dir: /srv                     # optional, absolute
//!     env: {LOG_LEVEL: info}                # optional
//!     timeout: 10m                          # optional, default 1h
//!   - name: demo.hello
//!     kind: log
//!     sleep: 0s                             # optional
//! ```
//!
//! Secrets are never written in the file: `hmac_secret_env` names an
//! environment variable that is read once, at load time. Every item is
//! checked and every problem reported, each with the pipeline's name (or
//! `#N`), its line and the field; the file loads only when there are none.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::command::{CommandConfig, CommandPipeline};
use super::http::{build_client, HttpConfig, HttpPipeline};
use super::{LogPipeline, Registry, RegistryError};
use crate::schedule::fields::{kind_of, Fields};
use crate::schedule::ValidationError;

/// The kinds of pipeline a file can define.
const KINDS: &[&str] = &["http", "command", "log"];

const HTTP_KEYS: &[&str] = &[
    "name",
    "kind",
    "url",
    "method",
    "headers",
    "timeout",
    "hmac_secret_env",
];
const COMMAND_KEYS: &[&str] = &["name", "kind", "argv", "working_dir", "env", "timeout"];
const LOG_KEYS: &[&str] = &["name", "kind", "sleep"];

/// Why a pipelines file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
        /// The path given (`pipelines file` when parsing text).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file is well-formed but some pipelines are not valid.
    #[error("{path}: {}", list(problems))]
    Invalid {
        /// The path given (`pipelines file` when parsing text).
        path: String,
        /// Every problem found, in file order (never empty).
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// The problems of an [`Invalid`](ConfigError::Invalid) file; empty otherwise.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }

    fn with_path(self, new: String) -> Self {
        match self {
            ConfigError::Read { source, .. } => ConfigError::Read { path: new, source },
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: new, message },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: new,
                problems,
            },
        }
    }
}

fn list(problems: &[ConfigProblem]) -> String {
    let mut out = format!(
        "{} problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// One problem in a pipelines file, located by pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The pipeline's name, or `#N` (1-based) when it has none.
    pub pipeline: String,
    /// The line where the pipeline's item starts.
    pub line: usize,
    /// The field and what is wrong with it.
    pub error: ValidationError,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pipeline {} (line {}): {}",
            self.pipeline, self.line, self.error
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    pipelines: Vec<serde_saphyr::Spanned<Value>>,
}

const TEXT_PATH: &str = "pipelines file";

/// Reads a pipelines file and builds its pipelines.
pub fn load(path: &Path) -> Result<Registry, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|e| e.with_path(shown))
}

/// Builds the pipelines of a pipelines file's text; HMAC secrets are read
/// from the process environment.
pub fn parse(text: &str) -> Result<Registry, ConfigError> {
    parse_with_env(text, &|name| std::env::var_os(name))
}

/// [`parse`] with the environment given as a lookup, so callers (and tests)
/// need not change the process environment.
pub fn parse_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Registry, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Registry::new());
    }
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
        path: TEXT_PATH.to_string(),
        message: e.to_string(),
    })?;
    let mut registry = Registry::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut client: Option<reqwest::Client> = None;
    for (i, item) in raw.pipelines.iter().enumerate() {
        let line = item.referenced.line() as usize;
        let name = item.value.get("name").and_then(Value::as_str);
        let label = name.map_or_else(|| format!("#{}", i + 1), str::to_string);
        let mut report = |errors: Vec<ValidationError>| {
            problems.extend(errors.into_iter().map(|error| ConfigProblem {
                pipeline: label.clone(),
                line,
                error,
            }))
        };
        if let Some(name) = name {
            if let Some(first) = seen.get(name) {
                report(vec![ValidationError::new(
                    "name",
                    format!("duplicate name; already defined at line {first}"),
                )]);
                continue;
            }
            seen.insert(name.to_string(), line);
        }
        let Some(map) = item.value.as_object() else {
            report(vec![ValidationError::new(
                "pipeline",
                "must be a mapping with at least name and kind",
            )]);
            continue;
        };
        match build(map, env, &mut client) {
            Ok((name, built)) => {
                let registered = match built {
                    Built::Http(p) => registry.register(&name, p).map(drop),
                    Built::Command(p) => registry.register(&name, p).map(drop),
                    Built::Log(p) => registry.register(&name, p).map(drop),
                };
                if let Err(e) = registered {
                    report(vec![registry_problem(e, &seen)]);
                }
            }
            Err(errors) => report(errors),
        }
    }
    if problems.is_empty() {
        Ok(registry)
    } else {
        Err(ConfigError::Invalid {
            path: TEXT_PATH.to_string(),
            problems,
        })
    }
}

fn registry_problem(e: RegistryError, seen: &HashMap<String, usize>) -> ValidationError {
    match e {
        RegistryError::Duplicate(name) => ValidationError::new(
            "name",
            match seen.get(&name) {
                Some(line) => format!("duplicate name; already defined at line {line}"),
                None => "duplicate name".to_string(),
            },
        ),
        RegistryError::InvalidName { reason, .. } => ValidationError::new("name", reason),
    }
}

enum Built {
    Http(HttpPipeline),
    Command(CommandPipeline),
    Log(LogPipeline),
}

/// Checks one item and builds its pipeline, or returns every problem.
fn build(
    map: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<OsString>,
    client: &mut Option<reqwest::Client>,
) -> Result<(String, Built), Vec<ValidationError>> {
    let mut item = Fields::new(map).refusing_blank_strings();
    let name = item.required_str("name").map(str::to_string);
    if let Some(name) = &name {
        if let Err(e) = crate::schedule::validate_pipeline(name) {
            item.fail("name", e.message);
        }
    }
    let kind = item.required_str("kind");
    let keys = match kind {
        Some("http") => Some(HTTP_KEYS),
        Some("command") => Some(COMMAND_KEYS),
        Some("log") => Some(LOG_KEYS),
        Some(other) => {
            item.fail(
                "kind",
                format!(
                    "unknown kind {other:?}; expected one of: {}",
                    KINDS.join(", ")
                ),
            );
            None
        }
        None => None,
    };
    if let (Some(kind), Some(keys)) = (kind, keys) {
        for key in map.keys().filter(|k| !keys.contains(&k.as_str())) {
            item.fail(
                key,
                format!(
                    "unknown key for a {kind} pipeline; allowed: {}",
                    keys.join(", ")
                ),
            );
        }
    }
    let built = match kind {
        Some("http") => http(&mut item, env, client).map(Built::Http),
        Some("command") => command(&mut item).map(Built::Command),
        Some("log") => log(&mut item).map(Built::Log),
        _ => None,
    };
    match (name, built) {
        (Some(name), Some(built)) if item.errors().is_empty() => Ok((name, built)),
        _ => Err(item.into_errors()),
    }
}

fn http(
    item: &mut Fields<'_>,
    env: &dyn Fn(&str) -> Option<OsString>,
    client: &mut Option<reqwest::Client>,
) -> Option<HttpPipeline> {
    let url = item.required_str("url");
    let method = item.opt_str("method");
    let headers = item.opt_string_map("headers");
    let timeout = item.opt_duration_secs("timeout");
    let secret = item
        .opt_str("hmac_secret_env")
        .and_then(|var| match env(var) {
            None => {
                item.fail(
                    "hmac_secret_env",
                    format!("environment variable {var} is not set"),
                );
                None
            }
            Some(value) if value.is_empty() => {
                item.fail(
                    "hmac_secret_env",
                    format!("environment variable {var} is empty"),
                );
                None
            }
            Some(value) => Some(value.into_vec()),
        });
    let url_given = url.is_some();
    let mut config = HttpConfig::new(url.unwrap_or_default());
    if let Some(method) = method {
        config.method = method.to_string();
    }
    config.headers = headers.unwrap_or_default();
    if let Some(timeout) = timeout {
        config.timeout = timeout;
    }
    config.hmac_secret = secret;
    let client = match client {
        Some(c) => c.clone(),
        None => match build_client() {
            Ok(c) => client.insert(c).clone(),
            Err(e) => {
                item.fail("kind", e.to_string());
                return None;
            }
        },
    };
    // Checked even without a usable URL, so the other fields' problems are
    // reported too; the URL's own problem is then already recorded.
    match HttpPipeline::new(config, client) {
        Ok(p) => url_given.then_some(p),
        Err(e) => {
            item.absorb(e, |field| url_given || field != "url");
            None
        }
    }
}

fn command(item: &mut Fields<'_>) -> Option<CommandPipeline> {
    let argv = item.required_string_list("argv");
    let working_dir = item.opt_str("working_dir").map(PathBuf::from);
    let env = item.opt_string_map("env");
    let timeout = item.opt_duration_secs("timeout");
    let argv_given = argv.is_some();
    let mut config = CommandConfig::new(argv.unwrap_or_default());
    config.working_dir = working_dir;
    config.env = env.unwrap_or_default();
    if let Some(timeout) = timeout {
        config.timeout = timeout;
    }
    match CommandPipeline::new(config) {
        Ok(p) => argv_given.then_some(p),
        Err(e) => {
            item.absorb(e, |field| argv_given || field != "argv");
            None
        }
    }
}

fn log(item: &mut Fields<'_>) -> Option<LogPipeline> {
    let sleep = item.opt_duration_secs("sleep").unwrap_or_default();
    Some(LogPipeline { sleep })
}

/// The getters only pipelines need, beside the schedules' (one item is read
/// by [`Fields`], blank strings refused).
trait PipelineFields {
    fn required_string_list(&mut self, key: &str) -> Option<Vec<String>>;
    fn opt_string_map(&mut self, key: &str) -> Option<BTreeMap<String, String>>;
}

impl PipelineFields for Fields<'_> {
    fn required_string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let Some(value) = self.present(key) else {
            self.fail(key, "is required");
            return None;
        };
        let Value::Array(items) = value else {
            self.fail(
                key,
                format!(
                    "must be a list of strings, e.g. [\"/usr/bin/env\", \"true\"], got {}",
                    kind_of(value)
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            match scalar_text(v) {
                Some(s) => out.push(s),
                None => self.fail(
                    &format!("{key}[{i}]"),
                    format!("must be a string, got {}", kind_of(v)),
                ),
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    fn opt_string_map(&mut self, key: &str) -> Option<BTreeMap<String, String>> {
        let value = self.present(key)?;
        let Value::Object(entries) = value else {
            self.fail(
                key,
                format!(
                    "must be a mapping of names to values, got {}",
                    kind_of(value)
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            match scalar_text(v) {
                Some(s) => {
                    out.insert(k.clone(), s);
                }
                None => self.fail(
                    &format!("{key}.{k}"),
                    format!("must be a string, number or boolean, got {}", kind_of(v)),
                ),
            }
        }
        (out.len() == entries.len()).then_some(out)
    }
}

/// Strings as they are; numbers and booleans as written, because YAML turns
/// `PORT: 8080` or `DEBUG: true` into non-strings the user meant as text.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/pipelines.yaml");
    const SCHEDULES: &str = include_str!("../../examples/schedules.yaml");

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn problems(text: &str) -> Vec<String> {
        match parse_with_env(text, &no_env) {
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
            Ok(r) => panic!("expected problems, got {r:?}"),
        }
    }

    #[test]
    fn the_example_covers_every_example_schedule() {
        let registry = parse_with_env(EXAMPLE, &no_env).expect("example loads");
        let schedules = crate::schedule_file::parse(SCHEDULES).expect("schedules parse");
        assert!(schedules.problems.is_empty(), "{:?}", schedules.problems);
        assert_eq!(schedules.schedules.len(), 5);
        for s in &schedules.schedules {
            assert!(
                registry.contains(s.schedule.pipeline()),
                "{} names {}, which the example does not define",
                s.schedule.name(),
                s.schedule.pipeline()
            );
        }
    }

    #[test]
    fn the_documented_example_loads() {
        let text = r#"
pipelines:
  - name: prices.ingest_current
    kind: http
    url: http://prices.internal:8080/ingest
    method: POST
    headers: {X-Team: prices, X-Priority: 5}
    timeout: 30s
    hmac_secret_env: SPINE_HMAC_SECRET
  - name: maintenance.cleanup_old_data
    kind: command
    argv: ["/usr/local/bin/cleanup", "--days", 90]
    working_dir: /srv
    env: {LOG_LEVEL: info}
    timeout: 600
  - name: demo.hello
    kind: log
    sleep: 0s
"#;
        let env = |name: &str| (name == "SPINE_HMAC_SECRET").then(|| OsString::from("s3cret"));
        let r = parse_with_env(text, &env).expect("valid");
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            [
                "demo.hello",
                "maintenance.cleanup_old_data",
                "prices.ingest_current"
            ]
        );
    }

    #[test]
    fn empty_files_are_empty_registries() {
        for text in ["", "  \n", "pipelines: []\n"] {
            let r = parse_with_env(text, &no_env).expect("empty");
            assert_eq!(r.names().count(), 0, "{text:?}");
        }
    }

    #[test]
    fn shape_errors_are_syntax_errors() {
        for text in ["jobs: []\n", "pipelines: [\n", "pipelines: 3\n"] {
            assert!(
                matches!(
                    parse_with_env(text, &no_env),
                    Err(ConfigError::Syntax { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_named() {
        let got = problems(
            r#"pipelines:
  - name: a.http
    kind: http
    url: ftp://example.com/x
    timeout: soon
    hmac_secret_env: NOT_SET_ANYWHERE
    retries: 3
  - kind: smtp
    name: b
  - name: c.cmd
    kind: command
    argv: []
    working_dir: relative
  - name: a.http
    kind: log
  - kind: log
  - name: "bad name"
    kind: log
    sleep: [1]
  - just a string
  - name: d
    kind: command
    argv: "/bin/true"
    env: {A: [1]}
  - name: e
    kind: http
    url: "not a url"
    headers: {Content-Type: text/plain}
"#,
        );
        let expected = [
            "pipeline a.http (line 2): retries: unknown key for a http pipeline; allowed: name, kind, url, method, headers, timeout, hmac_secret_env",
            "pipeline a.http (line 2): timeout: \"soon\" is not a duration",
            "pipeline a.http (line 2): hmac_secret_env: environment variable NOT_SET_ANYWHERE is not set",
            "pipeline a.http (line 2): url: scheme \"ftp\" is not supported",
            "pipeline b (line 8): kind: unknown kind \"smtp\"; expected one of: http, command, log",
            "pipeline c.cmd (line 10): argv: must not be empty",
            "pipeline c.cmd (line 10): working_dir: relative must be an absolute path",
            "pipeline a.http (line 14): name: duplicate name; already defined at line 2",
            "pipeline #5 (line 16): name: is required",
            "pipeline bad name (line 17): name: character ' ' at position 4 is not allowed",
            "pipeline bad name (line 17): sleep: must be a number of seconds or a duration string, got a list",
            "pipeline #7 (line 20): pipeline: must be a mapping",
            "pipeline d (line 21): argv: must be a list of strings",
            "pipeline d (line 21): env.A: must be a string, number or boolean, got a list",
            "pipeline e (line 25): url: \"not a url\" is not a valid URL",
            "pipeline e (line 25): headers.Content-Type: is set by the scheduler",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "got {g:?}\nwant {e:?}");
        }
    }

    #[test]
    fn empty_secret_variables_are_refused() {
        let text = "pipelines:\n  - name: h\n    kind: http\n    url: https://example.com/\n    hmac_secret_env: EMPTY\n";
        let env = |_: &str| Some(OsString::new());
        let e = parse_with_env(text, &env).expect_err("empty secret");
        assert_eq!(
            e.problems()[0].to_string(),
            "pipeline h (line 2): hmac_secret_env: environment variable EMPTY is empty"
        );
    }

    #[test]
    fn the_whole_error_lists_every_problem_with_the_path() {
        let e = parse_with_env(
            "pipelines:\n  - name: x\n    kind: log\n    sleep: forever\n",
            &no_env,
        )
        .expect_err("bad sleep")
        .with_path("/etc/spine/pipelines.yaml".into());
        let text = e.to_string();
        assert!(
            text.starts_with(
                "/etc/spine/pipelines.yaml: 1 problem:\n  pipeline x (line 2): sleep:"
            ),
            "{text}"
        );
    }

    #[test]
    fn load_reads_files_and_names_unreadable_ones() {
        let missing = Path::new("/nonexistent/spine/pipelines.yaml");
        let e = load(missing).expect_err("missing file");
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e
            .to_string()
            .starts_with("cannot read /nonexistent/spine/pipelines.yaml"));
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines.yaml");
        assert!(load(&example).is_ok());
    }
}
