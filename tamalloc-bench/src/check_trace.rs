//! `tamalloc-bench check-trace`: compares a workload's expectation lines with a trace's
//! `summary` records, exactly, per pid. A process expected to count nothing may have no
//! summary; a report holding only a `skip` line (a scenario the kernel cannot walk) passes,
//! saying so. The counts compared are those of the trace's mode (its `meta` record's
//! `mode`; none is today's tracepoint design): an expectation's `tracepoint` object holds
//! the fields that differ in tracepoint mode (`kernel`: in kernel mode), with `limit`, the
//! README sentence that documents it (printed as `KNOWN LIMIT: ...` on stderr), and
//! `huge_faults` is compared in kernel mode. `drops.map_full` must be the sum of the
//! expectations' `map_full` (absent: 0).

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

/// What both checkers compare (`check-trace`, `check-ranges`).
#[derive(clap::Args)]
pub struct Args {
    /// The workload's `--report` file.
    #[arg(long)]
    pub expect: PathBuf,
    /// The trace (`tamalloc trace --output FILE`, JSON lines; faults streamed for
    /// `check-ranges`).
    #[arg(long)]
    pub trace: PathBuf,
}

/// The records of type `ty` in the JSON lines file `path`.
pub(crate) fn records(path: &PathBuf, ty: &str) -> anyhow::Result<Vec<serde_json::Value>> {
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

/// `may_be_other`: up to that many of the expected `write_zero` may be counted `other`
/// instead, by the race README documents in `race` (a fork racing a sibling thread's
/// fault). When the trace shows `k` such pages, the expectation moves them, and says so.
fn raced_to_other(e: &mut serde_json::Value, s: &serde_json::Value, pid: u64) {
    let Some(n) = e["may_be_other"].as_u64() else {
        return;
    };
    let (want_wz, want_other) = (
        e["write_zero"].as_u64().unwrap_or(0),
        e["other"].as_u64().unwrap_or(0),
    );
    let (wz, other) = (
        s["write_zero"].as_u64().unwrap_or(0),
        s["other"].as_u64().unwrap_or(0),
    );
    let k = other.saturating_sub(want_other);
    if k > 0 && k <= n && k <= want_wz && wz == want_wz - k {
        let why = e["race"].as_str().unwrap_or("a documented race");
        eprintln!("KNOWN LIMIT: pid {pid}: {k} first writes counted `other`: {why}");
        e["write_zero"] = (want_wz - k).into();
        e["other"] = (want_other + k).into();
    }
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
    let mut map_full = 0;
    for e in &expect {
        let mut e = e.clone();
        let pid = e["pid"].as_u64().unwrap_or_default();
        // Where this mode counts otherwise (its design, or a README "Known limits" line).
        if let Some(over) = e[mode.as_str()].as_object().cloned() {
            if let Some(limit) = over.get("limit").and_then(|l| l.as_str()) {
                eprintln!("KNOWN LIMIT: pid {pid} ({mode} mode): {limit}");
            }
            for (k, v) in over {
                e[k] = v;
            }
        }
        map_full += e["map_full"].as_u64().unwrap_or(0);
        // THP faults: a kernel-mode counter.
        let huge = kernel_mode && e.get("huge_faults").is_some_and(|h| !h.is_null());
        let fields = FaultKind::ALL.map(FaultKind::name);
        let Some(s) = summaries.get(&pid) else {
            // A process with nothing to count need not have a summary.
            if fields.into_iter().chain(["regions"]).any(|f| e[f] != 0) {
                wrong.push(format!("pid {pid}: no summary in the trace"));
            }
            continue;
        };
        raced_to_other(&mut e, s, pid);
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
    let drops = records(&args.trace, "drops")?;
    let traced_full = drops.first().and_then(|d| d["map_full"].as_u64());
    if traced_full != Some(map_full) {
        wrong.push(format!(
            "drops.map_full is {traced_full:?}, expected {map_full}"
        ));
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
