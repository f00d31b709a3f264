//! Part 1 of the report: what each BPF program costs per run.

use std::fmt::Write as _;

use super::target::Target;
use crate::bench::{
    data::{ProgCost, Report},
    plan::BPF_PAGES,
};

impl Report {
    pub(super) fn render_bpf(&self, s: &mut String, targets: &mut Vec<Target>) {
        let _ = writeln!(s, "## 1. Per-event BPF cost\n");
        let _ = writeln!(
            s,
            "`tamalloc-bench bpf --pages {BPF_PAGES} --rounds {}`: with `kernel.bpf_stats_enabled=1` \
             (set for the run, restored after, also on error), each variant is loaded and attached \
             alone, then the workload writes one byte to each of {BPF_PAGES} fresh pages of a \
             tamalloc region (one thread, THP off) and `run_time_ns / run_cnt` of every program of \
             the variant is read before and after (`aya::programs::loaded_programs()`; bpftrace's \
             program is the new tracepoint program that appears when it starts). The tracer \
             follows the workload process in counting mode; its extra regions are one page each, \
             2 MiB apart, so that 10,000 regions are 10,000 entries of its chunk hash map. \
             `run_cnt` counts every fault of the machine in the window (other processes' faults \
             take the fault program's short path: one array read). Our fault programs and the \
             reference are raw tracepoints on `exceptions:page_fault_user`; bpftrace attaches \
             its program as a classic tracepoint. The statistics themselves add the same clock \
             reads to every program.\n",
            self.rounds
        );
        let _ = writeln!(
            s,
            "| variant | regions | program | runs per measurement | ns per run | × reference | × bpftrace |\n|---|---|---|---|---|---|---|"
        );
        let reference = self
            .cost("reference", 1, "page_fault_refe")
            .map(|c| c.ns_per_run);
        let bpftrace = self
            .bpf
            .iter()
            .find(|c| c.variant == "bpftrace")
            .map(|c| c.ns_per_run);
        let ratio = |v: f64, base: Option<f64>| {
            base.map_or_else(|| "–".to_owned(), |b| format!("{:.2}", v / b))
        };
        let mut rows: Vec<&ProgCost> = self.bpf.iter().collect();
        rows.sort_by_key(|c| {
            (
                match c.variant.as_str() {
                    "tamalloc" => 0,
                    "tamalloc-events" => 1,
                    "tamalloc-unfollowed" => 2,
                    "tamalloc-stacks" => 3,
                    "reference" => 4,
                    _ => 5,
                },
                !c.program.starts_with("page_fault"),
                c.program.clone(),
                c.regions,
            )
        });
        for c in rows {
            // Programs that ran a handful of times (fork/exec/exit) say little per run.
            if c.runs < 100.0 {
                continue;
            }
            let fault = c.program.starts_with("page_fault");
            let _ = writeln!(
                s,
                "| {} | {} | `{}` | {:.0} | {:.1} | {} | {} |",
                c.variant,
                if c.variant.starts_with("tamalloc") {
                    c.regions.to_string()
                } else {
                    "–".to_owned()
                },
                c.program,
                c.runs,
                c.ns_per_run,
                if fault {
                    ratio(c.ns_per_run, reference)
                } else {
                    "–".to_owned()
                },
                if fault {
                    ratio(c.ns_per_run, bpftrace)
                } else {
                    "–".to_owned()
                },
            );
        }
        let _ = writeln!(s);
        let ours: Vec<(u64, f64)> = self
            .bpf
            .iter()
            .filter(|c| c.variant == "tamalloc" && c.program == "page_fault")
            .map(|c| (c.regions, c.ns_per_run))
            .collect();
        if let (Some(&(_, lo)), Some(&(_, hi))) = (ours.first(), ours.last()) {
            let _ = writeln!(
                s,
                "The fault program costs {lo:.1} ns with {} region(s) and {hi:.1} ns with {} \
                 ({:+.0} %){}. A fault of a process without regions costs one array read (its \
                 bit in a pid bitmap); a fault of a process with regions adds one hash lookup \
                 (its chunk: an 8-byte key of pid and 2 MiB chunk), and in a region page one \
                 atomic bit operation on the page's state (a first touch marks the page \
                 present) and a per-CPU array increment (the process's counter slot, which the \
                 chunk names). The tracer checked \
                 that it saw every fault: write_zero counted per measurement = {:.0}.\n",
                ours.first().map_or(0, |o| o.0),
                ours.last().map_or(0, |o| o.0),
                (hi / lo - 1.0) * 100.0,
                if (hi / lo - 1.0).abs() <= 0.15 {
                    ": the cost does not grow with the number of regions (the difference is \
                     within run-to-run noise)"
                } else if hi > lo {
                    ": more than run-to-run noise, see the table for the per-region-count figures"
                } else {
                    ""
                },
                self.cost("tamalloc", ours.last().map_or(0, |o| o.0), "page_fault")
                    .map_or(0.0, |c| c.counted),
            );
        }
        let stacks = self.cost("tamalloc-stacks", 1, "page_fault");
        let ustack = self
            .bpf
            .iter()
            .find(|c| c.variant == "bpftrace-ustack")
            .map(|c| c.ns_per_run);
        let counting = self.cost("tamalloc", 1, "page_fault").map(|c| c.ns_per_run);
        if let (Some(st), Some(bt), Some(count)) = (stacks, ustack, counting) {
            let _ = writeln!(
                s,
                "`--stacks` (`tamalloc-stacks`, one region): {:.0} ns per fault in BPF, {:.2}× \
                 counting alone ({count:.0} ns); bpftrace's `@[ustack] = count()` on the same \
                 workload (`bpftrace-ustack`): {bt:.0} ns, so `--stacks` costs {:.2}× it. Both \
                 walk the user stack by frame pointers in `bpf_get_stackid` and add to a hash \
                 keyed by the stack; ours also classifies the fault, names its region and takes \
                 the stack a second time with build IDs once per new (process, region, kind, \
                 stack). The workload is Rust without frame pointers, so both walks stop after \
                 a few frames: deeper stacks cost both tools alike, per frame.\n",
                st.ns_per_run,
                st.ns_per_run / count,
                st.ns_per_run / bt,
            );
        }
        let short = self.cost("tamalloc-unfollowed", 1, "page_fault");
        if let Some(out) = short {
            let _ = writeln!(
                s,
                "Variants: `tamalloc` counts (the default mode); `tamalloc-events` streams every \
                 fault into the ring, drained by a thread as `--events` does; \
                 `tamalloc-unfollowed` follows no process, so every fault takes the \
                 not-a-region path (`bpf_get_current_pid_tgid` and the pid bitmap's array \
                 read): {:.1} ns per fault, against {:.1} ns for the reference's bare per-CPU \
                 increment. Taking the window's other faults out of an average at that price \
                 leaves the cost of a fault in a region page:\n",
                out.ns_per_run,
                reference.unwrap_or(f64::NAN)
            );
            let _ = writeln!(
                s,
                "| variant | regions | ns per region-page fault (derived) |\n|---|---|---|"
            );
            for c in self.bpf.iter().filter(|c| {
                (c.variant == "tamalloc" || c.variant == "tamalloc-events")
                    && c.program.starts_with("page_fault")
            }) {
                let pages = BPF_PAGES as f64;
                let counted =
                    (c.ns_per_run * c.runs - (c.runs - pages).max(0.0) * out.ns_per_run) / pages;
                let _ = writeln!(s, "| {} | {} | {counted:.0} |", c.variant, c.regions);
            }
            let _ = writeln!(s);
        }
        if let Some(c) = self.cost("tamalloc", 1, "page_fault") {
            let _ = writeln!(
                s,
                "`Probe::load` (checks, object load, verification of every program, attach) \
                 took {:.0} ms (median), the bulk of the tracer's start-up (part 5).\n",
                c.load_ms
            );
        }
        let ten_k = self
            .cost("tamalloc", 10_000, "page_fault")
            .map(|c| c.ns_per_run);
        let short_ns = short.map_or(f64::NAN, |c| c.ns_per_run);
        if let (Some(v), Some(r)) = (ten_k, reference) {
            targets.push(Target {
                name: "fault program with 10,000 regions ≤ 1.5× the reference".into(),
                measured: format!("{v:.1} ns vs {r:.1} ns = {:.2}×", v / r),
                met: v <= 1.5 * r,
                limit: format!(
                    "one hash lookup and one atomic operation per region-page fault: the \
                     not-a-region path (`bpf_get_current_pid_tgid` and one array read) costs \
                     {short_ns:.1} ns = {:.2}× the reference, so the rest is the chunk lookup \
                     (an 8-byte key hashed with jhash, then compared) and the locked `or` that \
                     marks the page, which two threads faulting in one 64-page span make \
                     necessary (its old value also tells which of two racing faults on one page \
                     was the first touch). Not the region count. The reference's own work is \
                     one array lookup and an increment, so most of its {r:.0} ns is what every \
                     program pays in this measurement (the call and the statistics' clock \
                     reads, on a VM)",
                    short_ns / r
                ),
            });
        }
        if let (Some(v), Some(b)) = (ten_k, bpftrace) {
            let floor = reference.unwrap_or(0.0);
            targets.push(Target {
                name: "fault program with 10,000 regions ≤ 0.5× bpftrace's per-PID count".into(),
                measured: format!("{v:.1} ns vs {b:.1} ns = {:.2}×", v / b),
                met: v <= 0.5 * b,
                limit: format!(
                    "bpftrace's per-PID count is one per-CPU hash lookup and update per fault, \
                     the same order of work as our chunk lookup; above the reference's floor \
                     ({floor:.0} ns) ours costs {:.0} ns and bpftrace's {:.0} ns. Half of \
                     bpftrace here would be {:.0} ns, {} the reference's bare per-CPU \
                     increment: no fault tracer that looks a page up can get there on this \
                     machine (the target assumes bpftrace at 3.3× the reference, as measured \
                     where it was set; here it is {:.2}×)",
                    v - floor,
                    b - floor,
                    b / 2.0,
                    if b / 2.0 <= floor {
                        "at or below"
                    } else {
                        "barely above"
                    },
                    b / floor.max(f64::MIN_POSITIVE),
                ),
            });
        }
    }
}
