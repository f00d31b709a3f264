//! `tamalloc-bench check-ranges`: compares a workload's `range` lines (address ranges it
//! touched in a known pattern, see `scenario anon`) with a streamed trace's `fault` records,
//! exactly: per range, the faults at its addresses by kind, and that each of them names a
//! region the trace says was made the way the range's mapping was (`made_by`). Also
//! `drops.count` must be 0: a dropped fault event would make the comparison meaningless.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use tamalloc_common::trace::{FAULT_KINDS, FaultKind};

pub use crate::check_trace::Args;
use crate::check_trace::records;

fn kind_index(name: &str) -> Option<usize> {
    FaultKind::ALL.iter().position(|k| k.name() == name)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ranges = records(&args.expect, "range")?;
    if ranges.is_empty()
        && let Some(s) = records(&args.expect, "skip")?.first()
    {
        println!("check-ranges: skipped: {} ({})", s["scenario"], s["reason"]);
        return Ok(());
    }
    if ranges.is_empty() {
        bail!("{} holds no range line", args.expect.display());
    }
    // Region id (its first address) -> how it was made, per pid.
    let (regions, faults) = (
        records(&args.trace, "region")?,
        records(&args.trace, "fault")?,
    );
    let made_by: HashMap<(u64, u64), &str> = regions
        .iter()
        .filter_map(|r| {
            Some((
                (r["pid"].as_u64()?, r["addr"].as_u64()?),
                r["made_by"].as_str()?,
            ))
        })
        .collect();
    let mut wrong = Vec::new();
    for e in &ranges {
        let (pid, start, end) = (
            e["pid"].as_u64().context("range without pid")?,
            e["start"].as_u64().context("range without start")?,
            e["end"].as_u64().context("range without end")?,
        );
        let what = e["what"].as_str().unwrap_or("?");
        let mut seen = [0u64; FAULT_KINDS];
        for f in &faults {
            let Some(addr) = f["addr"].as_u64() else {
                continue;
            };
            if f["pid"].as_u64() != Some(pid) || addr < start || addr >= end {
                continue;
            }
            if let Some(k) = f["kind"].as_str().and_then(kind_index) {
                seen[k] += 1;
            }
            let region = f["region"].as_u64().unwrap_or(0);
            let how = made_by
                .get(&(pid, region))
                .copied()
                .unwrap_or("no region record");
            if Some(how) != e["made_by"].as_str() {
                wrong.push(format!(
                    "{what}: a fault at {addr:#x} is in region {region:#x} made by {how}, \
                     not {}",
                    e["made_by"]
                ));
                break;
            }
        }
        for k in FaultKind::ALL {
            let want = e[k.name()].as_u64().unwrap_or(0);
            if seen[k as usize] != want {
                wrong.push(format!(
                    "{what}: {} traced {} but the workload did {want}",
                    k.name(),
                    seen[k as usize]
                ));
            }
        }
    }
    let dropped = records(&args.trace, "drops")?
        .first()
        .and_then(|d| d["count"].as_u64());
    if dropped != Some(0) {
        wrong.push(format!("drops.count is {dropped:?}, expected 0"));
    }
    if !wrong.is_empty() {
        bail!(
            "the trace does not match the workload: {}",
            wrong.join("; ")
        );
    }
    println!("check-ranges: {} ranges match exactly", ranges.len());
    Ok(())
}
