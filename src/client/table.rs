//! Aligned columns for people: a table with a header row, and the
//! `Key: value` block of one object.
//!
//! Widths are counted in terminal columns (`unicode-width`), on the plain
//! text: colour codes are added after padding, so they never shift a column.

use anstyle::Style;
use unicode_width::UnicodeWidthStr;

use super::output::Printer;

/// One cell: its text and an optional style.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    /// A cell in `style` (shown only when the printer colours).
    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell {
            text: text.into(),
            style,
        }
    }

    /// Its text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its style.
    pub fn style(&self) -> Style {
        self.style
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Cell {
        Cell::styled(text, Style::new())
    }
}

/// Rows under a header, each column as wide as its widest cell, two spaces
/// apart; no trailing spaces.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers; missing cells print empty).
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header.
    pub fn render(&self, printer: &Printer) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(cell.text.width());
            }
        }
        let bold = Style::new().bold();
        let header: Vec<Cell> = self.header.iter().map(|h| Cell::styled(*h, bold)).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let (text, style) = row
                    .get(i)
                    .map_or(("", Style::new()), |c| (c.text.as_str(), c.style));
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&printer.paint(text, style));
                if i + 1 < widths.len() {
                    line.push_str(&" ".repeat(width - text.width()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Key:  value` lines with the values aligned; a value spanning lines
/// (params as JSON) is indented under the first.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.width() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{label:<width$}  {first}").trim_end());
        out.push('\n');
        for more in lines {
            out.push_str(&format!("{:width$}  {more}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::output::OutputFormat;

    fn plain() -> Printer {
        Printer {
            format: OutputFormat::Table,
            colour: false,
            now: chrono::Utc::now(),
        }
    }

    #[test]
    fn columns_align_on_the_widest_cell_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "STATUS", "NOTE"]);
        t.row(vec!["a".into(), "completed".into(), "".into()]);
        t.row(vec!["längere".into(), "failed".into(), "x".into()]);
        assert_eq!(
            t.render(&plain()),
            "NAME     STATUS     NOTE\na        completed\nlängere  failed     x\n"
        );
    }

    #[test]
    fn colour_does_not_move_columns() {
        let printer = Printer {
            colour: true,
            ..plain()
        };
        let mut t = Table::new(&["A", "B"]);
        t.row(vec![Cell::styled("x", Style::new().bold()), "y".into()]);
        let text = t.render(&printer);
        let stripped: String = {
            let mut s = String::new();
            let mut in_escape = false;
            for c in text.chars() {
                match (in_escape, c) {
                    (false, '\x1b') => in_escape = true,
                    (true, 'm') => in_escape = false,
                    (false, c) => s.push(c),
                    _ => {}
                }
            }
            s
        };
        assert_eq!(stripped, "A  B\nx  y\n");
        assert!(text.contains('\x1b'), "coloured: {text:?}");
    }

    #[test]
    fn fields_align_values_and_indent_continuations() {
        assert_eq!(
            fields(&[("Name", "a".into()), ("Params", "{\n  \"k\": 1\n}".into())]),
            "Name:    a\nParams:  {\n           \"k\": 1\n         }\n"
        );
    }
}
