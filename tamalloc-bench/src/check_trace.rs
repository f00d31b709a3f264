//! `tamalloc-bench check-trace`: compares a workload's expectation lines with a trace's
//! `summary` records, exactly, per pid.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

#[derive(clap::Args)]
pub struct Args {
    /// The workload's `--report` file.
    #[arg(long)]
    expect: PathBuf,
    /// The trace (`tamalloc trace --output FILE`, JSON lines).
    #[arg(long)]
    trace: PathBuf,
}

fn records(path: &PathBuf, ty: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        if v["type"] == ty {
            out.push(v);
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let expect = records(&args.expect, "expect")?;
    let summaries: HashMap<u64, serde_json::Value> = records(&args.trace, "summary")?
        .into_iter()
        .filter_map(|s| Some((s["pid"].as_u64()?, s)))
        .collect();
    if expect.is_empty() {
        bail!("{} holds no expectation", args.expect.display());
    }
    let mut wrong = Vec::new();
    for e in &expect {
        let pid = e["pid"].as_u64().unwrap_or_default();
        let Some(s) = summaries.get(&pid) else {
            wrong.push(format!("pid {pid}: no summary in the trace"));
            continue;
        };
        let fields = FaultKind::ALL.map(FaultKind::name);
        for f in fields.into_iter().chain(["regions"]) {
            if s[f] != e[f] {
                wrong.push(format!(
                    "pid {pid}: {f} traced {} but the workload did {}",
                    s[f], e[f]
                ));
            }
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the trace does not match the workload: {}",
            wrong.join("; ")
        );
    }
    println!("check-trace: {} processes match exactly", expect.len());
    Ok(())
}
