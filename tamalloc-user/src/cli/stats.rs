//! `tamalloc stats`: a `ps`-like table of memory statistics, or JSON lines.

use std::io::Write as _;

use anyhow::Context as _;
use tamalloc::{
    size::format_kib,
    stats::{self, ProcStats, Source},
};

/// The long help of the command (the subcommand's one-line doc in cli/mod.rs is its summary).
const HELP: &str = "Per-process memory statistics: syscall 555, or /proc on a kernel without it.\n\
\n\
Columns: PID, COMM, VSZ (VmSize), RSS (VmRSS), ANON/FILE/SHMEM (RssAnon/RssFile/RssShmem), OOM (oom_score), ADJ (oom_score_adj), RES% (RSS / VSZ), TA-REGIONS, TA-RESERVED and TA-RESIDENT (the tamalloc VMAs: count, size, resident part).\n\
\n\
With --json, one object per line with the uapi names of struct tamalloc_proc_stats (pid, comm, oom_score, oom_score_adj, resident_permille, vm_size_kib, vm_rss_kib, rss_anon_kib, rss_file_kib, rss_shmem_kib, tamalloc_regions, tamalloc_reserved_kib, tamalloc_resident_kib) plus \"source\": \"syscall\" or \"procfs\".";

/// Arguments of `tamalloc stats`; [`HELP`] explains the output.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Processes to show (default: every process of this pid namespace).
    #[arg(value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pids: Vec<u32>,
    /// Sort by this column, largest first (pid: ascending).
    #[arg(long, value_enum, default_value_t = SortKey::Pid)]
    sort: SortKey,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SortKey {
    /// VmRSS, largest first.
    Rss,
    /// VmSize, largest first.
    Size,
    /// oom_score, largest first.
    Oom,
    /// Process id, ascending.
    Pid,
}

/// The table's columns, in order.
pub const COLUMNS: [&str; 13] = [
    "PID",
    "COMM",
    "VSZ",
    "RSS",
    "ANON",
    "FILE",
    "SHMEM",
    "OOM",
    "ADJ",
    "RES%",
    "TA-REGIONS",
    "TA-RESERVED",
    "TA-RESIDENT",
];

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut records = if args.pids.is_empty() {
        stats::all_proc_stats().context("reading the statistics of every process")?
    } else {
        let mut v = Vec::with_capacity(args.pids.len());
        for &pid in &args.pids {
            // No context: "process N not found (ESRCH)" is the whole message.
            v.push(stats::proc_stats(pid)?);
        }
        v
    };
    sort(&mut records, args.sort);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        records.iter().try_for_each(|r| {
            let line = serde_json::to_string(r)?;
            writeln!(out, "{line}")
        })
    } else {
        let source = records.first().map_or_else(probe_source, |r| r.source);
        writeln!(out, "{}", source_line(source)).and_then(|()| write_table(&mut out, &records))
    };
    ok_unless_broken_pipe(written)
}

/// A closed stdout (`tamalloc stats | head`) ends the output quietly.
pub fn ok_unless_broken_pipe(r: std::io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

fn probe_source() -> Source {
    stats::global_stats().map_or(Source::Procfs, |g| g.source)
}

/// The first line of the table: where the numbers come from.
pub fn source_line(source: Source) -> &'static str {
    match source {
        Source::Syscall => "# source: syscall 555 (get_memory_usage_stats)",
        Source::Procfs => "# source: /proc (this kernel has no syscall 555)",
    }
}

fn sort(records: &mut [ProcStats], key: SortKey) {
    match key {
        SortKey::Pid => records.sort_by_key(|r| r.raw.pid),
        SortKey::Rss => records.sort_by_key(|r| (std::cmp::Reverse(r.raw.vm_rss_kib), r.raw.pid)),
        SortKey::Size => {
            records.sort_by_key(|r| (std::cmp::Reverse(r.raw.vm_size_kib), r.raw.pid));
        }
        SortKey::Oom => records.sort_by_key(|r| (std::cmp::Reverse(r.raw.oom_score), r.raw.pid)),
    }
}

fn row(r: &ProcStats) -> [String; 13] {
    let s = &r.raw;
    [
        s.pid.to_string(),
        r.comm(),
        format_kib(s.vm_size_kib),
        format_kib(s.vm_rss_kib),
        format_kib(s.rss_anon_kib),
        format_kib(s.rss_file_kib),
        format_kib(s.rss_shmem_kib),
        s.oom_score.to_string(),
        s.oom_score_adj.to_string(),
        format!("{}.{}", s.resident_permille / 10, s.resident_permille % 10),
        s.tamalloc_regions.to_string(),
        format_kib(s.tamalloc_reserved_kib),
        format_kib(s.tamalloc_resident_kib),
    ]
}

/// Writes the header and one line per record, columns padded to their widest cell; COMM is
/// left-aligned, numbers right-aligned.
fn write_table(out: &mut impl std::io::Write, records: &[ProcStats]) -> std::io::Result<()> {
    let rows: Vec<[String; 13]> = records.iter().map(row).collect();
    let mut widths = COLUMNS.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 13]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            if i == 1 {
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            } else {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(cell);
            }
        }
        s
    };
    writeln!(out, "{}", line(&COLUMNS.map(str::to_owned)))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}
