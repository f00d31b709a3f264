//! `cargo xtask checkpatch`: every patch of every series through its own kernel's
//! `scripts/checkpatch.pl --strict`, which must report 0 errors, 0 warnings and 0 checks.
//!
//! The patches are checked in the pristine tree of their kernel (extracted into the kernel
//! cache once), so each series meets the rules of the kernel it is for. That tree is not a
//! git checkout, so checkpatch leaves out its two git-based checks (SPDX identifiers through
//! `scripts/spdxcheck.py`, and commit references in messages).

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    kernel::{self, Version},
    util::say,
};

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Check only this kernel's series (default: 6.1 and 6.12).
    #[arg(long, value_enum, value_name = "VERSION")]
    pub kernel: Option<Version>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let versions = match args.kernel {
        Some(v) => vec![v],
        None => Version::ALL.to_vec(),
    };
    let mut failed = Vec::new();
    for version in versions {
        let (tree, patches) = kernel::pristine_and_series(version)?;
        for patch in patches {
            let name = format!(
                "{version}/{}",
                patch.file_name().unwrap_or_default().to_string_lossy()
            );
            let out = Command::new("perl")
                .current_dir(&tree)
                .args(["scripts/checkpatch.pl", "--strict", "--no-color"])
                .arg(&patch)
                .output()
                .with_context(|| format!("running checkpatch.pl on {name}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            match verdict(&text) {
                Some(total) if total == CLEAN => say("Checked", &format!("{name}: {total}")),
                found => {
                    print!("{text}");
                    failed.push(format!(
                        "{name} ({})",
                        found.unwrap_or_else(|| "no verdict from checkpatch.pl".into())
                    ));
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!("checkpatch --strict is not clean: {}", failed.join(", "));
    }
    Ok(())
}

const CLEAN: &str = "0 errors, 0 warnings, 0 checks";

/// The "N errors, N warnings, N checks" of checkpatch's `total:` line.
fn verdict(output: &str) -> Option<String> {
    let line = output.lines().find_map(|l| l.strip_prefix("total: "))?;
    let counts = line.split(',').take(3).collect::<Vec<_>>().join(",");
    Some(counts.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_line_is_the_verdict() {
        let out = "WARNING: x\n\ntotal: 0 errors, 1 warnings, 0 checks, 120 lines checked\n";
        assert_eq!(
            verdict(out).as_deref(),
            Some("0 errors, 1 warnings, 0 checks")
        );
        let clean = "total: 0 errors, 0 warnings, 0 checks, 9 lines checked\n\nx.patch has no obvious style problems";
        assert_eq!(verdict(clean).as_deref(), Some(CLEAN));
        assert_eq!(verdict("perl: cannot open"), None);
    }
}
