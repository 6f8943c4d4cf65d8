//! Printing for people (aligned tables, key/value blocks) or scripts (`--json`).
//!
//! Everything a command prints goes to stdout through here. Text from outside
//! (a receiver's response, an endpoint's description, an error) can hold
//! escape sequences that clear the screen, retitle the window or fill the
//! clipboard, so control characters are shown as Rust writes them (`\u{1b}`,
//! `\n`); `--json` shows them as JSON escapes and stays exact. A closed
//! stdout (`postbox … | head -1`) ends the command with [`StdoutClosed`],
//! which main turns into a quiet exit.

use std::{
    fmt::Display,
    io::{self, Write},
};

use serde::Serialize;

/// The reader of stdout has gone: nothing more can be shown.
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
pub struct StdoutClosed;

/// Prints `text` and a newline, escaped as [`escape_lines`] does.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    write_line(&escape_lines(&text.to_string()))
}

/// Prints `value` as pretty JSON. serde_json escapes the C0 controls in
/// strings; DEL and C1, which JSON allows raw, are escaped here (`\u009b`).
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\x7f'..='\u{9f}' => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    write_line(&escaped)
}

/// Prints a question without a newline, escaped, for the answer to follow.
pub fn prompt(text: impl Display) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    write!(stdout, "{}", escape_line(&text.to_string())).and_then(|()| stdout.flush()).map_err(
        |err| match err.kind() {
            io::ErrorKind::BrokenPipe => StdoutClosed.into(),
            _ => anyhow::Error::new(err).context("cannot write to stdout"),
        },
    )
}

fn write_line(text: &str) -> anyhow::Result<()> {
    writeln!(io::stdout().lock(), "{text}").map_err(|err| match err.kind() {
        io::ErrorKind::BrokenPipe => StdoutClosed.into(),
        _ => anyhow::Error::new(err).context("cannot write to stdout"),
    })
}

/// Prints rows under a header, each column as wide as its widest cell; cells
/// are escaped as [`escape_line`] does.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|c| escape_line(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let padded = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    line(padded(header.to_vec()))?;
    for row in &rows {
        line(padded(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Prints `label: value` lines with the values aligned and escaped as
/// [`escape_line`] does.
pub fn fields(pairs: &[(&str, String)]) -> anyhow::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        line(format_args!("{key:<width$}  {}", escape_line(value)))?;
    }
    Ok(())
}

/// `text` on one line: every control character (C0 with newline and tab,
/// DEL, C1) escaped.
pub fn escape_line(text: &str) -> String {
    escape(text, false)
}

/// `text` with its lines and tabs kept (a CR only before a newline), and
/// every other control character escaped.
pub fn escape_lines(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, keep_layout: bool) -> String {
    let mut escaped = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let layout = matches!(c, '\n' | '\t') || (c == '\r' && chars.peek() == Some(&'\n'));
        if c.is_control() && !(keep_layout && layout) {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// `-` for nothing.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_layout_is_kept_only_in_lines() {
        let text = "a\tb\r\nc\rd\x1b[2J\u{9b}\x7f\0 é";
        assert_eq!(escape_lines(text), "a\tb\r\nc\\rd\\u{1b}[2J\\u{9b}\\u{7f}\\0 é");
        assert_eq!(escape_line(text), "a\\tb\\r\\nc\\rd\\u{1b}[2J\\u{9b}\\u{7f}\\0 é");
    }
}
