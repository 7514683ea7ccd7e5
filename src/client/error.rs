//! What can go wrong in a client command, and the exit code of each.

use std::path::PathBuf;

/// The outcome classes a script can tell apart by exit code (see
/// [`EXIT_CODES_HELP`](super::EXIT_CODES_HELP)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 1: anything else (bad input, an unreadable file).
    Other = 1,
    /// 3: the API answered 404.
    NotFound = 3,
    /// 4: the API answered 409 or 412.
    Conflict = 4,
    /// 5: the API answered 401 or 403.
    Unauthorised = 5,
    /// 6: no answer, or a 5xx.
    Unavailable = 6,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API refused the request; its own words.
    #[error("{status} {reason}: {message}{}", details_text(details))]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The status's reason phrase (`Not Found`).
        reason: String,
        /// The API's error `code` (`not_found`), when the body had one.
        code: Option<String>,
        /// The API's `message`, or the body's first line when it was not
        /// the API's error shape (a proxy's page).
        message: String,
        /// Every problem the API listed in `details` (`field: message`).
        details: Vec<String>,
    },
    /// No answer: refused, unresolvable, timed out.
    #[error("cannot reach the API at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the network said.
        reason: String,
    },
    /// The answer was not what the API sends (another service on that port?).
    #[error("unexpected answer from {url} ({status}): {reason}")]
    UnexpectedReply {
        /// The URL asked.
        url: String,
        /// Its status code.
        status: u16,
        /// What did not fit.
        reason: String,
    },
    /// `--api-url` is not a usable URL.
    #[error("--api-url {url:?}: {reason}")]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token is configured wrongly.
    #[error("{0}")]
    Token(String),
    /// A file named on the command line could not be read.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A flag's value or a file's content is not what it must be.
    #[error("{what}: {reason}")]
    Input {
        /// The flag or file.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up (TLS).
    #[error("{0}")]
    Setup(String),
    /// Writing to stdout failed (other than a closed pipe, which is fine).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The API's `details` beyond the one its message already says, one per line.
fn details_text(details: &[String]) -> String {
    if details.len() < 2 {
        return String::new();
    }
    details.iter().map(|d| format!("\n  - {d}")).collect()
}

impl ClientError {
    /// Which outcome class this is.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            ClientError::Api { status, .. } => match status {
                404 => ExitStatus::NotFound,
                409 | 412 => ExitStatus::Conflict,
                401 | 403 => ExitStatus::Unauthorised,
                500.. => ExitStatus::Unavailable,
                _ => ExitStatus::Other,
            },
            ClientError::Unreachable { .. } => ExitStatus::Unavailable,
            _ => ExitStatus::Other,
        }
    }

    /// The process exit code (see [`ExitStatus`]).
    pub fn exit_code(&self) -> u8 {
        self.exit_status().code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            status,
            reason: String::new(),
            code: None,
            message: String::new(),
            details: vec![],
        }
    }

    #[test]
    fn statuses_map_to_their_exit_codes() {
        let codes: Vec<u8> = [400, 401, 403, 404, 409, 412, 413, 422, 500, 503]
            .into_iter()
            .map(|s| api(s).exit_code())
            .collect();
        assert_eq!(codes, [1, 5, 5, 3, 4, 4, 1, 1, 6, 6]);
        let unreachable = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 6);
    }

    #[test]
    fn several_details_are_listed_under_the_message() {
        let e = ClientError::Api {
            status: 400,
            reason: "Bad Request".into(),
            code: Some("invalid_input".into()),
            message: "cron: bad".into(),
            details: vec!["cron: bad".into(), "timezone: unknown".into()],
        };
        assert_eq!(
            e.to_string(),
            "400 Bad Request: cron: bad\n  - cron: bad\n  - timezone: unknown"
        );
    }
}
