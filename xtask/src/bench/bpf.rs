//! Part 1: the per-run cost of each BPF program (`tamalloc-bench bpf`, with
//! `kernel.bpf_stats_enabled`), and what the tracer's programs cost the verifier.

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::bail;

use super::{
    data::{ProgCost, Program, Programs, median},
    plan::BPF_PAGES,
    records::{self, Record},
};
use crate::util;

/// (variant, regions, program).
type CostKey = (String, u64, String);

/// One round's figures of one program: ns per run, runs, counted, load time.
type RoundCost = [f64; 4];

pub fn measure(bench: &Path, rounds: u32) -> anyhow::Result<(Vec<ProgCost>, Programs)> {
    let bpftrace = which::which("bpftrace")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "none".to_owned());
    let out = util::output(Command::new(bench).args([
        "bpf",
        "--pages",
        &BPF_PAGES.to_string(),
        "--rounds",
        &rounds.to_string(),
        "--bpftrace",
        &bpftrace,
    ]))?;
    let mut by: BTreeMap<CostKey, Vec<RoundCost>> = BTreeMap::new();
    let mut programs = Programs::default();
    for record in records::parse(&out)? {
        match record {
            Record::BpfProg(p) => {
                programs.progs.push(Program {
                    name: p.name,
                    verified_insns: p.verified_insns,
                    jited_bytes: p.jited_bytes,
                });
                programs.load_ms = p.load_ms;
            }
            Record::BpfCost(c) => {
                let runs = c.run_cnt as f64;
                by.entry((c.variant, c.regions, c.program))
                    .or_default()
                    .push([
                        c.run_time_ns as f64 / runs.max(1.0),
                        runs,
                        c.counted as f64,
                        c.load_ms,
                    ]);
            }
            _ => {}
        }
    }
    if by.is_empty() {
        bail!("tamalloc-bench bpf printed no measurement:\n{out}");
    }
    let costs = by
        .into_iter()
        .map(|((variant, regions, program), v)| {
            let med = |i: usize| median(&v.iter().map(|x| x[i]).collect::<Vec<_>>());
            ProgCost {
                variant,
                regions,
                program,
                ns_per_run: med(0),
                runs: med(1),
                counted: med(2),
                load_ms: med(3),
            }
        })
        .collect();
    programs.progs.sort_by(|a, b| {
        b.verified_insns
            .cmp(&a.verified_insns)
            .then(a.name.cmp(&b.name))
    });
    Ok((costs, programs))
}
