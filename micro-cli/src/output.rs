//! Printing: aligned tables for a person, JSON for scripts. Text is styled with `anstyle` and
//! written through `anstream`'s `AutoStream`, which keeps the colours on a terminal and drops
//! them on a pipe or when `NO_COLOR` is set.

use std::io::Write;

use anstyle::{AnsiColor, Style};

/// What a cell or word means, for its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tone {
    /// Plain text.
    Plain,
    /// Column headers and labels.
    Header,
    /// Good news: SERVING, create.
    Good,
    /// Bad news: NOT_SERVING, delete, unreachable.
    Bad,
    /// Neither: update, no health service.
    Note,
}

impl Tone {
    /// `text` in this tone (ANSI codes, dropped by [`print()`] where colours do not belong).
    pub(crate) fn paint(self, text: &str) -> String {
        let style = match self {
            Tone::Plain => return text.to_owned(),
            Tone::Header => Style::new().bold(),
            Tone::Good => AnsiColor::Green.on_default(),
            Tone::Bad => AnsiColor::Red.on_default().bold(),
            Tone::Note => AnsiColor::Yellow.on_default(),
        };
        format!("{}{text}{}", style.render(), style.render_reset())
    }
}

/// A table: a header row and rows of cells, each with a tone.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    /// A table with these column names.
    pub(crate) fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of plain cells.
    pub(crate) fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows
            .push(cells.into_iter().map(|c| (c.into(), Tone::Plain)).collect());
    }

    /// Adds a row whose cells have tones.
    pub(crate) fn toned_row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows.push(cells);
    }

    /// The table as text: columns two spaces apart, padded by the width of the plain text
    /// (colour codes do not count), no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        let header: Vec<(String, Tone)> = self
            .header
            .iter()
            .map(|h| (h.clone(), Tone::Header))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            for (i, (text, _)) in row.iter().enumerate() {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (text, tone)) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&tone.paint(text));
                if i + 1 < row.len() {
                    let pad = widths[i] - text.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `text` to stdout and flushes it; colour codes only on a terminal without
/// `NO_COLOR` (`anstream::AutoStream`).
pub(crate) fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = anstream::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `value` as JSON on one line to stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    text.push('\n');
    print(&text)
}

/// `key=value` pairs, comma-separated.
pub(crate) fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    map.into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_plain_width() {
        let mut table = Table::new(&["NAME", "NODES"]);
        table.row(["greeter1", "2"]);
        table.toned_row(vec![("g2".into(), Tone::Good), ("10".into(), Tone::Plain)]);
        let colored = table.render();
        let plain = anstream::adapter::strip_str(&colored).to_string();
        assert_ne!(colored, plain);
        assert_eq!(plain, "NAME      NODES\ngreeter1  2\ng2        10\n");
    }
}
