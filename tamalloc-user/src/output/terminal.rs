//! How a session shows itself in text: plain timestamped blocks when stdout is not a
//! terminal (and with `--events`, one line per fault, bpftrace style), and the closing
//! summary; the live view on a terminal is [`super::tui`], which shares these lines. Output
//! is buffered and flushed once per batch of events and once per refresh, never per line.

use std::io::{self, Write};

use tamalloc_common::trace::{FAULT_KINDS, FaultKind};

use crate::tracer::{Row, Snapshot, View, decode::TraceEvent, record::Record};

/// KiB as a short human size (1023K, 1.5M, 12G).
pub fn kib(v: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    let mut x = v as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 || x >= 100.0 {
        format!("{x:.0}{}", UNITS[u])
    } else {
        format!("{x:.1}{}", UNITS[u])
    }
}

pub(crate) fn header(snap: &Snapshot) -> String {
    let source = match snap.stats_source {
        "syscall" => "stats: syscall 555/556",
        _ => "stats: /proc (kernel without the tamalloc patch)",
    };
    format!(
        "tamalloc trace  {:>6.1}s  {source}",
        snap.elapsed.as_secs_f64()
    )
}

/// Widths of the fault kinds' columns, in [`FaultKind::ALL`] order.
pub(crate) const KIND_WIDTHS: [usize; FAULT_KINDS] = [9, 10, 8, 8, 6];

/// The header row: one column per fault kind, named after it.
fn columns() -> String {
    let mut s = format!(
        "{:>7} {:<16} {:>7} {:>8}",
        "PID", "COMM", "REGIONS", "RESERVED"
    );
    for (k, w) in FaultKind::ALL.iter().zip(KIND_WIDTHS) {
        s.push_str(&format!(" {:>w$}", k.name().to_uppercase()));
    }
    s.push_str(&format!(
        " {:>8} {:>8} {:>4} {:>5}",
        "VmRSS", "dRSS", "OOM", "RES‰"
    ));
    s
}

/// A row's VmRSS, its change, OOM score and resident share, as the table shows them.
pub(crate) fn stat_fields(r: &Row) -> [String; 4] {
    let (rss, oom, res) = match &r.stats {
        Some(s) => (
            kib(s.vm_rss_kib),
            s.oom_score.to_string(),
            s.resident_permille.to_string(),
        ),
        None if r.state.exited => ("exited".into(), "-".into(), "-".into()),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let delta = match r.rss_delta_kib {
        Some(0) | None => "".to_owned(),
        Some(d) if d > 0 => format!("+{}", kib(d as u64)),
        Some(d) => format!("-{}", kib(d.unsigned_abs())),
    };
    [rss, delta, oom, res]
}

fn row_line(r: &Row) -> String {
    let p = &r.state;
    let mut faults = String::new();
    for (k, w) in FaultKind::ALL.iter().zip(KIND_WIDTHS) {
        faults.push_str(&format!(" {:>w$}", p.faults(*k)));
    }
    let [rss, delta, oom, res] = stat_fields(r);
    format!(
        "{:>7} {:<16} {:>7} {:>8}{faults} {:>8} {:>8} {:>4} {:>5}",
        r.pid,
        truncate(&p.comm, 16),
        p.counters.regions,
        kib(p.reserved_bytes() / 1024),
        rss,
        delta,
        oom,
        res,
    )
}

/// The system-wide line, when the global stats could be read.
pub(crate) fn global_line(snap: &Snapshot) -> Option<String> {
    let g = snap.global.as_ref()?;
    Some(format!(
        "global: {} processes  VmSize {}  VmRSS {}  tamalloc {} reserved / {} resident  MemAvailable {} of {}  Committed_AS {} / CommitLimit {}",
        g.nr_processes,
        kib(g.vm_size_kib),
        kib(g.vm_rss_kib),
        kib(g.tamalloc_reserved_kib),
        kib(g.tamalloc_resident_kib),
        kib(g.mem_available_kib),
        kib(g.mem_total_kib),
        kib(g.committed_as_kib),
        kib(g.commit_limit_kib),
    ))
}

pub(crate) fn drops_line(snap: &Snapshot) -> String {
    let d = &snap.drops;
    let mut s = format!(
        "drops: {} (fault events {}, control events {}, map full {}",
        d.total(),
        d.fault_events,
        d.control_events,
        d.map_full
    );
    // The rarer kinds only when they happened.
    for (what, n) in [
        ("traced full", d.traced_full),
        ("regions cut", d.region_cut),
        ("unresolved regions", d.region_unresolved),
        ("stacks lost", d.stacks_lost),
        ("stacks full", d.stacks_full),
    ] {
        if n != 0 {
            s.push_str(&format!(", {what} {n}"));
        }
    }
    s.push(')');
    s
}

fn footer(snap: &Snapshot) -> String {
    let mut s = String::new();
    if let Some(g) = global_line(snap) {
        s.push_str(&g);
        s.push('\n');
    }
    s.push_str(&drops_line(snap));
    s
}

pub(crate) fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The table of a snapshot, as text.
pub fn table(snap: &Snapshot) -> String {
    let mut out = String::new();
    out.push_str(&header(snap));
    out.push('\n');
    out.push_str(&columns());
    out.push('\n');
    for r in &snap.rows {
        out.push_str(&row_line(r));
        out.push('\n');
    }
    out.push_str(&footer(snap));
    out.push('\n');
    out
}

fn event_line(ev: &TraceEvent) -> Option<String> {
    match ev {
        TraceEvent::Fault {
            ts_ns,
            pid,
            tid,
            kind,
            addr,
            region,
            page,
            ..
        } => Some(format!(
            "{:>14.6} {pid:>7} {tid:>7} {:<10} region {region:#x} page {page:<8} addr {addr:#x}",
            *ts_ns as f64 / 1e9,
            kind.name(),
        )),
        _ => None,
    }
}

/// Prints timestamped tables, and fault lines with `--events`.
pub struct PlainView {
    out: io::BufWriter<io::Stdout>,
    print_faults: bool,
    quiet: bool,
}

/// The plain view: a block per refresh (none with `quiet`), fault lines with
/// `print_faults`, the summary at the end.
pub fn plain(print_faults: bool, quiet: bool) -> Box<dyn View> {
    Box::new(PlainView {
        out: io::BufWriter::with_capacity(1 << 16, io::stdout()),
        print_faults,
        quiet,
    })
}

impl View for PlainView {
    fn event(&mut self, ev: &TraceEvent) {
        if self.print_faults
            && let Some(line) = event_line(ev)
        {
            let _ = writeln!(self.out, "{line}");
        }
    }

    fn refresh(&mut self, snap: &Snapshot) {
        if !self.quiet {
            let _ = writeln!(self.out, "{}", table(snap));
        }
        let _ = self.out.flush();
    }

    fn finish(&mut self, snap: &Snapshot) {
        print_summary(&mut self.out, snap);
        let _ = self.out.flush();
    }

    fn flush(&mut self) {
        if self.print_faults {
            let _ = self.out.flush();
        }
    }
}

/// The closing summary, as bpftrace prints its maps at the end.
pub(crate) fn print_summary(out: &mut impl Write, snap: &Snapshot) {
    let _ = writeln!(out, "\nSummary after {:.1}s:", snap.elapsed.as_secs_f64());
    let _ = write!(
        out,
        "{}",
        table(snap).split_once('\n').map_or("", |(_, t)| t)
    );
    let _ = write!(out, "{}", region_table(snap));
    let _ = write!(out, "{}", stack_table(snap));
    if let Some(status) = snap.command_status
        && !status.success()
    {
        let _ = writeln!(out, "command: {status}");
    }
    let _ = out.flush();
}

/// Call paths listed per process in the summary (`--stacks`), most pages first.
const STACKS_SHOWN: usize = 5;
/// Frames of a call path shown, from the leaf.
const FRAMES_SHOWN: usize = 4;

/// Per process, its call paths with the most pages first touched: pages by kind and the
/// innermost frames (`leaf < caller < ...`). Empty without `--stacks`.
fn stack_table(snap: &Snapshot) -> String {
    let mut s = String::new();
    let mut shown: std::collections::BTreeMap<u32, usize> = Default::default();
    for r in &snap.stacks {
        let Record::Stack { pid, frames, .. } = r else {
            continue;
        };
        let n = shown.entry(*pid).or_default();
        *n += 1;
        if *n > STACKS_SHOWN {
            continue;
        }
        if s.is_empty() {
            s.push_str(&format!(
                "\nCall paths (--stacks; up to {STACKS_SHOWN} per process, most pages first; full paths in --folded/--flamegraph/--pprof):\n{:>7}",
                "PID"
            ));
            for (k, w) in FaultKind::ALL.iter().zip(KIND_WIDTHS) {
                s.push_str(&format!(" {:>w$}", k.name().to_uppercase()));
            }
            s.push_str("  CALL PATH (leaf first)\n");
        }
        s.push_str(&format!("{pid:>7}"));
        let kinds = r.faults_by_kind().unwrap_or_default();
        for (n, w) in kinds.iter().zip(KIND_WIDTHS) {
            s.push_str(&format!(" {n:>w$}"));
        }
        let mut path: Vec<String> = frames
            .iter()
            .take(FRAMES_SHOWN)
            .map(|f| f.label())
            .collect();
        if frames.len() > FRAMES_SHOWN {
            path.push("...".to_owned());
        }
        s.push_str(&format!("  {}\n", path.join(" < ")));
    }
    for (pid, n) in shown {
        if n > STACKS_SHOWN {
            s.push_str(&format!(
                "{pid:>7} ... {} more call paths\n",
                n - STACKS_SHOWN
            ));
        }
    }
    s
}

/// Regions listed per process in the summary, those with the most pages touched first.
const REGIONS_SHOWN: usize = 5;

/// Per region, when faults were streamed: how it was made, its size, the share of its pages
/// first touched, and its faults by kind. Empty when faults were only counted.
fn region_table(snap: &Snapshot) -> String {
    let mut s = String::new();
    for r in &snap.rows {
        let mut regions: Vec<_> = r
            .state
            .all_regions()
            .filter(|(_, f)| f.faults.iter().any(|&n| n != 0))
            .collect();
        if regions.is_empty() {
            continue;
        }
        if s.is_empty() {
            s.push_str(&format!(
                "\nRegions (from streamed faults; up to {REGIONS_SHOWN} per process, most touched first):\n{:>7} {:<14} {:<8} {:>8} {:>8}",
                "PID", "REGION", "MADE_BY", "LEN", "TOUCHED"
            ));
            for (k, w) in FaultKind::ALL.iter().zip(KIND_WIDTHS) {
                s.push_str(&format!(" {:>w$}", k.name().to_uppercase()));
            }
            s.push('\n');
        }
        regions.sort_by_key(|(id, f)| (std::cmp::Reverse(f.pages_touched()), *id));
        for (id, f) in regions.iter().take(REGIONS_SHOWN) {
            let touched = match f.len / tamalloc_common::trace::PAGE_SIZE {
                0 => "-".to_owned(),
                pages => format!("{:.1}%", 100.0 * f.pages_touched() as f64 / pages as f64),
            };
            s.push_str(&format!(
                "{:>7} {:<14} {:<8} {:>8} {:>8}",
                r.pid,
                format!("{id:#x}"),
                f.made_by.name(),
                kib(f.len / 1024),
                touched
            ));
            for (n, w) in f.faults.iter().zip(KIND_WIDTHS) {
                s.push_str(&format!(" {n:>w$}"));
            }
            s.push('\n');
        }
        if regions.len() > REGIONS_SHOWN {
            s.push_str(&format!(
                "{:>7} ... {} more regions with first touches\n",
                "",
                regions.len() - REGIONS_SHOWN
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_its_columns() {
        assert_eq!(
            columns(),
            "    PID COMM             REGIONS RESERVED READ_ZERO WRITE_ZERO COW_ZERO      COW  OTHER    VmRSS     dRSS  OOM  RES‰"
        );
        let mut state = crate::tracer::aggregate::ProcState {
            comm: "demo".into(),
            ..Default::default()
        };
        state.counters.faults = [1, 22, 333, 4444, 55555];
        let row = Row {
            pid: 42,
            state,
            stats: None,
            rss_delta_kib: Some(-2048),
        };
        assert_eq!(
            row_line(&row),
            "     42 demo                   0       0K         1         22      333     4444  55555        -    -2.0M    -     -"
        );
    }

    #[test]
    fn human_kib() {
        assert_eq!(kib(0), "0K");
        assert_eq!(kib(1023), "1023K");
        assert_eq!(kib(1536), "1.5M");
        assert_eq!(kib(10 * 1024 * 1024), "10.0G");
        assert_eq!(kib(200 * 1024), "200M");
    }
}
