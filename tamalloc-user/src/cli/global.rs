//! `tamalloc global`: system-wide memory totals.

use std::io::Write as _;

use anyhow::Context as _;
use tamalloc::{
    size::format_kib,
    stats::{self, Source},
};

/// The long help of the command (the subcommand's one-line doc in cli/mod.rs is its summary).
const HELP: &str = "System-wide totals: syscall 556, or /proc on a kernel without it.\n\
\n\
With --json, one object with the uapi names of struct tamalloc_global_stats (nr_processes, vm_size_kib, vm_rss_kib, tamalloc_regions, tamalloc_reserved_kib, tamalloc_resident_kib, mem_total_kib, mem_available_kib, committed_as_kib, commit_limit_kib) plus \"source\": \"syscall\" or \"procfs\".";

/// Arguments of `tamalloc global`; [`HELP`] explains the output.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let g = stats::global_stats().context("reading the global statistics")?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_string(&g)
            .map_err(std::io::Error::from)
            .and_then(|line| writeln!(out, "{line}"))
    } else {
        write_table(&mut out, &g)
    };
    super::stats::ok_unless_broken_pipe(written)
}

fn write_table(out: &mut impl std::io::Write, g: &stats::GlobalStats) -> std::io::Result<()> {
    let r = &g.raw;
    let source = match g.source {
        Source::Syscall => "syscall 556 (get_global_memory_usage_stats)",
        Source::Procfs => "/proc (this kernel has no syscall 556)",
    };
    let rows = [
        ("source", source.to_owned()),
        ("processes", r.nr_processes.to_string()),
        ("VmSize (sum)", format_kib(r.vm_size_kib)),
        ("VmRSS (sum)", format_kib(r.vm_rss_kib)),
        ("tamalloc regions", r.tamalloc_regions.to_string()),
        ("tamalloc reserved", format_kib(r.tamalloc_reserved_kib)),
        ("tamalloc resident", format_kib(r.tamalloc_resident_kib)),
        ("MemTotal", format_kib(r.mem_total_kib)),
        ("MemAvailable", format_kib(r.mem_available_kib)),
        ("Committed_AS", format_kib(r.committed_as_kib)),
        ("CommitLimit", format_kib(r.commit_limit_kib)),
    ];
    for (name, value) in rows {
        writeln!(out, "{:<18} {value}", format!("{name}:"))?;
    }
    Ok(())
}
