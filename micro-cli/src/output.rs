//! Printing: aligned tables for a person (colours only when stdout is a terminal), JSON for
//! scripts.

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};

/// Styles of the human output; all plain when stdout is not a terminal (or `NO_COLOR` is set).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Styles {
    color: bool,
}

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

impl Styles {
    /// Colours when stdout is a terminal and `NO_COLOR` is unset.
    pub(crate) fn detect() -> Styles {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Styles { color }
    }

    /// `text` in `tone`.
    pub(crate) fn paint(&self, tone: Tone, text: &str) -> String {
        let style = match tone {
            Tone::Plain => return text.to_owned(),
            Tone::Header => Style::new().bold(),
            Tone::Good => AnsiColor::Green.on_default(),
            Tone::Bad => AnsiColor::Red.on_default().bold(),
            Tone::Note => AnsiColor::Yellow.on_default(),
        };
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
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
    pub(crate) fn render(&self, styles: Styles) -> String {
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
                line.push_str(&styles.paint(*tone, text));
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

/// Writes `text` to stdout and flushes it.
pub(crate) fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
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
        let plain = table.render(Styles { color: false });
        assert_eq!(plain, "NAME      NODES\ngreeter1  2\ng2        10\n");
        let colored = table.render(Styles { color: true });
        let stripped: String = {
            // Remove ESC [ ... m sequences.
            let mut out = String::new();
            let mut chars = colored.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        };
        assert_ne!(colored, plain);
        assert_eq!(stripped, plain);
    }
}
