//! Where a command's answer goes: the API's JSON as it came (`-o json`), or
//! a view for people, coloured only for a terminal.

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};

use super::api::Reply;
use super::error::ClientError;
use super::relative_time;

/// `-o`/`--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables and sentences, times relative to now.
    Table,
    /// The API's JSON body, unchanged.
    Json,
}

/// How this invocation prints.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// Table or JSON.
    pub format: OutputFormat,
    /// Whether to colour (stdout is a terminal and `NO_COLOR` is unset).
    pub colour: bool,
    /// The instant relative times are counted from (this machine's clock).
    pub now: DateTime<Utc>,
}

impl Printer {
    /// A printer for `format`, colouring only a terminal and never with
    /// `NO_COLOR` set (<https://no-color.org>: any non-empty value).
    pub fn new(format: OutputFormat) -> Printer {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Printer {
            format,
            colour: !no_color && std::io::stdout().is_terminal(),
            now: Utc::now(),
        }
    }

    /// True for `-o json`.
    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints the answer: its JSON body with `-o json`, else what `human`
    /// makes of it.
    ///
    /// # Errors
    /// [`ClientError::Output`] when stdout cannot be written.
    pub fn answer(
        &self,
        reply: &Reply,
        human: impl FnOnce() -> Result<String, ClientError>,
    ) -> Result<(), ClientError> {
        if self.json() {
            let text = reply.text.trim_end();
            if text.is_empty() {
                return Ok(());
            }
            return emit(&format!("{text}\n"));
        }
        emit(&human()?)
    }

    /// `text` in `style` when colouring.
    pub fn paint(&self, text: &str, style: Style) -> String {
        if self.colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    /// `t` relative to now: `in 4 s`, `3 min ago`.
    pub fn ago(&self, t: DateTime<Utc>) -> String {
        relative_time::relative(t, self.now)
    }

    /// `t` in full, with the relative form: `2027-03-15T10:00:00Z (in 4 s)`.
    pub fn instant(&self, t: DateTime<Utc>) -> String {
        format!(
            "{} ({})",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.ago(t)
        )
    }
}

/// The colour of a run status: green done, red failed, yellow not run,
/// cyan under way.
pub fn status_style(status: &str) -> Style {
    let colour = match status {
        "completed" => AnsiColor::Green,
        "failed" | "abandoned" => AnsiColor::Red,
        "skipped" | "missed" | "cancelled" => AnsiColor::Yellow,
        "running" | "pending" => AnsiColor::Cyan,
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(colour.into()))
}

/// Writes `text` to stdout. A closed pipe (`… | head`) is not an error: the
/// reader has what it wanted.
///
/// # Errors
/// [`ClientError::Output`] for any other write error.
pub fn emit(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
