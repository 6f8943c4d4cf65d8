//! Printing for people (aligned tables, key/value blocks) or scripts (`--json`).
//!
//! Everything a command prints goes to stdout through here. A closed stdout
//! (`postbox … | head -1`) ends the command with [`StdoutClosed`], which main
//! turns into a quiet exit.

use std::{
    fmt::Display,
    io::{self, Write},
};

use serde::Serialize;

/// The reader of stdout has gone: nothing more can be shown.
#[derive(Debug, thiserror::Error)]
#[error("stdout is closed")]
pub struct StdoutClosed;

/// Prints `text` and a newline.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    writeln!(io::stdout().lock(), "{text}").map_err(|err| match err.kind() {
        io::ErrorKind::BrokenPipe => StdoutClosed.into(),
        _ => anyhow::Error::new(err).context("cannot write to stdout"),
    })
}

/// Prints `value` as pretty JSON.
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    line(serde_json::to_string_pretty(value)?)
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let padded = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    line(padded(header.to_vec()))?;
    for row in rows {
        line(padded(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Prints `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> anyhow::Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        line(format_args!("{key:<width$}  {value}"))?;
    }
    Ok(())
}

/// `-` for nothing.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}
