//! Where a rig's JSON lines go: appended to `--report FILE`, or written to stdout.

use std::{fs::OpenOptions, io::Write as _, path::Path};

use anyhow::Context as _;

/// Appends `line` (newline included) to `report`, or writes it to stdout.
pub fn emit(report: Option<&Path>, line: &str) -> anyhow::Result<()> {
    match report {
        Some(p) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .with_context(|| format!("writing {}", p.display())),
        None => std::io::stdout()
            .write_all(line.as_bytes())
            .context("writing to stdout"),
    }
}
