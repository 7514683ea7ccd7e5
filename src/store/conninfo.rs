//! Connection strings as libpq reads them, and where their parts come from.
//!
//! A connection string is a URL (`postgres://user@host:5432/db?key=value`)
//! or libpq's `key=value` form (`host=db user=spine sslmode=require`); both
//! take the same keywords (libpq, "Connection Strings" and "Parameter Key
//! Words"). [`Conninfo`] reads either form, takes out or adds keywords and
//! writes the string back in its own form, so that the TLS keywords
//! tokio-postgres does not know (`sslrootcert`, `sslcert`, `sslkey`,
//! `verify-ca`/`verify-full`) can be handled here (`store::tls`) and the rest
//! passed on.
//!
//! [`resolve`] applies the operator's sources in a documented order:
//!
//! 1. `--database-url` / `DATABASE_URL` when given; otherwise libpq's
//!    variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`,
//!    `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`) when any is set;
//!    otherwise the built-in default URL. Variables do not fill in a URL's
//!    missing parts: a URL says everything it means.
//! 2. `--database-password-file`, when given, is the password: it replaces a
//!    password in the URL or `PGPASSWORD` (a Kubernetes Secret mounted as a
//!    file keeps it out of the environment and the process list).

use std::fmt::Write as _;
use std::path::Path;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::StoreError;

/// What a URL query value may hold unescaped: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A parsed connection string, in the form it was written.
#[derive(Clone, PartialEq)]
pub struct Conninfo {
    form: Form,
}

#[derive(Clone, PartialEq)]
enum Form {
    /// Everything before `?`, and the query's keywords (values decoded).
    Url {
        base: String,
        params: Vec<(String, String)>,
    },
    /// `key=value` pairs (values unquoted).
    KeyValue(Vec<(String, String)>),
}

/// Never prints values: a connection string carries the password.
impl std::fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = match &self.form {
            Form::Url { params, .. } | Form::KeyValue(params) => {
                params.iter().map(|(k, _)| k.as_str()).collect()
            }
        };
        f.debug_struct("Conninfo").field("keys", &keys).finish()
    }
}

impl Conninfo {
    /// Reads a URL (`postgres://` or `postgresql://`) or a `key=value` string.
    ///
    /// Errors: [`StoreError::Config`] naming what is malformed (never the
    /// value, which may be a password).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let (base, query) = match s.split_once('?') {
                Some((b, q)) => (b, q),
                None => (s, ""),
            };
            let mut params = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    StoreError::Config(format!("URL parameter {pair:?} has no `=value`"))
                })?;
                let v = percent_decode_str(v).decode_utf8().map_err(|_| {
                    StoreError::Config(format!("URL parameter {k}: not UTF-8 once decoded"))
                })?;
                params.push((k.to_string(), v.into_owned()));
            }
            Ok(Conninfo {
                form: Form::Url {
                    base: base.to_string(),
                    params,
                },
            })
        } else {
            Ok(Conninfo {
                form: Form::KeyValue(parse_key_values(s)?),
            })
        }
    }

    /// A `key=value` string from pairs (the form libpq's variables give).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Conninfo {
            form: Form::KeyValue(pairs),
        }
    }

    fn params(&self) -> &[(String, String)] {
        match &self.form {
            Form::Url { params, .. } | Form::KeyValue(params) => params,
        }
    }

    fn params_mut(&mut self) -> &mut Vec<(String, String)> {
        match &mut self.form {
            Form::Url { params, .. } | Form::KeyValue(params) => params,
        }
    }

    /// The value of `key` (the last one, as libpq reads repeated keys).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params()
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Removes every `key` and returns the value that counted (the last).
    pub fn take(&mut self, key: &str) -> Option<String> {
        let value = self.get(key).map(str::to_string);
        self.params_mut().retain(|(k, _)| k != key);
        value
    }

    /// Sets `key` to `value`, replacing any value it had.
    pub fn set(&mut self, key: &str, value: &str) {
        self.take(key);
        if key == "password" {
            // The password in the URL's user part would otherwise still win
            // over the parameter (tokio-postgres reads both, the later last).
            if let Form::Url { base, .. } = &mut self.form {
                *base = without_url_password(base);
            }
        }
        self.params_mut().push((key.to_string(), value.to_string()));
    }
}

/// Writes the string back in its own form (values escaped as the form needs).
impl std::fmt::Display for Conninfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.form {
            Form::Url { base, params } => {
                f.write_str(base)?;
                for (i, (k, v)) in params.iter().enumerate() {
                    let sep = if i == 0 { '?' } else { '&' };
                    write!(f, "{sep}{k}={}", utf8_percent_encode(v, QUERY_VALUE))?;
                }
                Ok(())
            }
            Form::KeyValue(params) => {
                let mut out = String::new();
                for (k, v) in params {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    let escaped = v.replace('\\', "\\\\").replace('\'', "\\'");
                    let _ = write!(out, "{k}='{escaped}'");
                }
                f.write_str(&out)
            }
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`.
fn without_url_password(base: &str) -> String {
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        return base.to_string();
    };
    let rest = &base[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return base.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{}{user}{}", &base[..scheme_end], &rest[at..]),
        None => base.to_string(),
    }
}

/// libpq's `key = value` list: values bare (backslash escapes) or in single
/// quotes (`\'` and `\\` inside).
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, StoreError> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(StoreError::Config(format!(
                "connection string keyword {key:?} has no `=value`"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(StoreError::Config(format!(
                            "connection string keyword {key:?}: unterminated quoted value"
                        )))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// libpq's variables and the keywords they stand for, in the order written.
const ENVIRONMENT: [(&str, &str); 9] = [
    ("PGHOST", "host"),
    ("PGPORT", "port"),
    ("PGUSER", "user"),
    ("PGDATABASE", "dbname"),
    ("PGPASSWORD", "password"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
];

/// The connection string a command uses, from its flags and the environment
/// in the order the module docs give. `env` reads a variable (the process
/// environment in the binary; a map in tests).
///
/// Errors: an unreadable or empty password file ([`StoreError::Settings`],
/// naming the file), a malformed URL ([`StoreError::Config`]).
pub fn resolve(
    url: Option<&str>,
    password_file: Option<&Path>,
    default_url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, StoreError> {
    let mut info = match url {
        Some(url) => Conninfo::parse(url)?,
        None => {
            let pairs: Vec<(String, String)> = ENVIRONMENT
                .iter()
                .filter_map(|(var, key)| {
                    env(var)
                        .filter(|v| !v.is_empty())
                        .map(|v| (key.to_string(), v))
                })
                .collect();
            if pairs.is_empty() {
                Conninfo::parse(default_url)?
            } else {
                Conninfo::from_pairs(pairs)
            }
        }
    };
    if let Some(path) = password_file {
        info.set("password", &read_password(path)?);
    }
    Ok(info.to_string())
}

/// The password in `path`: its content without one trailing line break.
fn read_password(path: &Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StoreError::Settings(format!("password file {}: {e}", path.display())))?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(StoreError::Settings(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn urls_keep_their_form_and_escape_values() {
        let mut info =
            Conninfo::parse("postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Fca.pem")
                .expect("parse");
        assert_eq!(info.take("sslrootcert").as_deref(), Some("/ca.pem"));
        assert_eq!(info.get("sslmode"), Some("verify-full"));
        info.set("application_name", "a b&c");
        assert_eq!(
            info.to_string(),
            "postgres://u@h:5432/db?sslmode=verify-full&application_name=a%20b%26c"
        );
    }

    #[test]
    fn key_values_are_quoted_and_unquoted_as_libpq_does() {
        let mut info = Conninfo::parse(r"host=h  user = 'o\'brien' password=a\ b sslmode=require")
            .expect("parse");
        assert_eq!(info.get("user"), Some("o'brien"));
        assert_eq!(info.get("password"), Some("a b"));
        assert_eq!(info.take("sslmode").as_deref(), Some("require"));
        assert_eq!(info.to_string(), r"host='h' user='o\'brien' password='a b'");
        let bad = Conninfo::parse("host=h user='x").expect_err("unterminated");
        assert!(bad.to_string().contains("unterminated"), "{bad}");
        let bad = Conninfo::parse("host").expect_err("no value");
        assert!(bad.to_string().contains("\"host\""), "{bad}");
    }

    #[test]
    fn a_password_set_replaces_the_one_in_the_url() {
        let mut info = Conninfo::parse("postgres://u:old@h/db").expect("parse");
        info.set("password", "n:e/w@");
        assert_eq!(info.to_string(), "postgres://u@h/db?password=n%3Ae%2Fw%40");
        let parsed: tokio_postgres::Config = info.to_string().parse().expect("tokio-postgres");
        assert_eq!(parsed.get_password(), Some(&b"n:e/w@"[..]));
    }

    #[test]
    fn debug_output_names_keys_only() {
        let info = Conninfo::parse("host=h password=secret").expect("parse");
        let shown = format!("{info:?}");
        assert!(
            !shown.contains("secret") && shown.contains("password"),
            "{shown}"
        );
    }

    #[test]
    fn the_url_wins_over_the_variables_and_the_file_over_both() {
        let env = |k: &str| match k {
            "PGHOST" => Some("envhost".to_string()),
            "PGPASSWORD" => Some("envpw".to_string()),
            "PGSSLMODE" => Some("require".to_string()),
            _ => None,
        };
        let from_url =
            resolve(Some("postgres://u@urlhost/db"), None, "postgres://d", env).expect("resolve");
        assert_eq!(from_url, "postgres://u@urlhost/db");
        let from_env = resolve(None, None, "postgres://d", env).expect("resolve");
        assert_eq!(
            from_env,
            "host='envhost' password='envpw' sslmode='require'"
        );
        assert_eq!(
            resolve(None, None, "postgres://d/x", no_env).expect("default"),
            "postgres://d/x"
        );
        let dir = std::env::temp_dir().join(format!("spine-pw-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("password");
        std::fs::write(&file, "from'file\n").expect("write");
        let with_file = resolve(None, Some(&file), "postgres://d", env).expect("resolve");
        assert_eq!(
            with_file,
            r"host='envhost' sslmode='require' password='from\'file'"
        );
        std::fs::write(&file, "\n").expect("write");
        let empty = resolve(None, Some(&file), "postgres://d", env).expect_err("empty");
        assert!(empty.to_string().contains("is empty"), "{empty}");
        let missing =
            resolve(None, Some(&dir.join("nope")), "postgres://d", env).expect_err("missing");
        assert!(missing.to_string().contains("nope"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
