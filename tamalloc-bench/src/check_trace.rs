//! `tamalloc-bench check-trace`: compares a workload's expectation lines with a trace's
//! `summary` records, exactly, per pid. A process expected to count nothing may have no
//! summary; a report holding only a `skip` line (a scenario the kernel cannot walk) passes,
//! saying so. The counts compared are those of the trace's mode (its `meta` record's
//! `mode`; none is today's tracepoint design): an expectation's `tracepoint` object holds
//! the fields that differ in tracepoint mode, and `huge_faults` is compared in kernel mode.

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
        let skips = records(&args.expect, "skip")?;
        if let Some(s) = skips.first() {
            println!("check-trace: skipped: {} ({})", s["scenario"], s["reason"]);
            return Ok(());
        }
        bail!("{} holds no expectation", args.expect.display());
    }
    // Today's tracer writes no `mode`: it is the tracepoint design.
    let mode = records(&args.trace, "meta")?
        .first()
        .and_then(|m| m["mode"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "tracepoint".to_owned());
    let kernel_mode = mode == "kernel";
    let mut wrong = Vec::new();
    for e in &expect {
        let mut e = e.clone();
        if !kernel_mode && let Some(over) = e["tracepoint"].as_object().cloned() {
            for (k, v) in over {
                e[k] = v;
            }
        }
        // THP faults: a kernel-mode counter.
        let huge = kernel_mode && e.get("huge_faults").is_some_and(|h| !h.is_null());
        let pid = e["pid"].as_u64().unwrap_or_default();
        let fields = FaultKind::ALL.map(FaultKind::name);
        let Some(s) = summaries.get(&pid) else {
            // A process with nothing to count need not have a summary.
            if fields.into_iter().chain(["regions"]).any(|f| e[f] != 0) {
                wrong.push(format!("pid {pid}: no summary in the trace"));
            }
            continue;
        };
        let compared = fields
            .into_iter()
            .chain(["regions"])
            .chain(huge.then_some("huge_faults"));
        for f in compared {
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
    println!(
        "check-trace: {} processes match exactly ({mode} mode)",
        expect.len()
    );
    Ok(())
}
