//! Parts 3 and 4 of the report: streaming drops and the decoder, and the stats syscalls in
//! the patched kernel.

use std::fmt::Write as _;

use super::target::Target;
use crate::bench::{
    data::{Report, Variant, VmPart, median},
    plan::FAULT_PAGES,
};

impl Report {
    pub(super) fn render_streaming(&self, s: &mut String, targets: &mut Vec<Target>) {
        let _ = writeln!(s, "## 3. Streaming\n");
        let top = median(
            &self
                .runs_of(Variant::Untraced, 2)
                .iter()
                .map(|r| r.faults_per_sec)
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            s,
            "The highest fault rate this machine makes with 2 threads (untraced, part 2): \
             **{top:.0} faults/s**. `tamalloc trace --events -- tamalloc-bench faults --pages \
             {FAULT_PAGES} --threads 2` with the default 4 MiB ring, stdout to a file (read \
             back for the closing `drops:` line), {} rounds:\n",
            self.drops.len()
        );
        let _ = writeln!(
            s,
            "| round | faults/s while streaming | events dropped | of which fault events |\n|---|---|---|---|"
        );
        for (i, d) in self.drops.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {i} | {:.0} | {} | {} |",
                d.faults_per_sec, d.drops, d.fault_events
            );
        }
        let total: u64 = self.drops.iter().map(|d| d.drops).sum();
        let _ = writeln!(s);
        if !self.drops.is_empty() {
            let rate = median(
                &self
                    .drops
                    .iter()
                    .map(|d| d.faults_per_sec)
                    .collect::<Vec<_>>(),
            );
            targets.push(Target {
                name: "no drops at the default ring size (4 MiB) at full speed, 2 threads".into(),
                measured: format!(
                    "{total} dropped in {} runs of {FAULT_PAGES} faults at {rate:.0} faults/s",
                    self.drops.len()
                ),
                met: total == 0,
                limit:
                    "the tracer drains the ring on one thread and formats every event; when the \
                 2 workload threads keep both cores busy the consumer falls behind and 4 MiB \
                 (~75,000 events) fill up: counts stay exact (per-CPU counters), only the \
                 event stream loses records"
                        .into(),
            });
        }
        self.render_recording(s, targets);
        if let Some(d) = &self.decode {
            let events = d.events as f64;
            let eps = events / (d.median_ns * 1e-9);
            let _ = writeln!(
                s,
                "Userspace decoding: `cargo bench -p tamalloc-user --bench decode -- --noplot` \
                 (criterion) runs `tracer::decode::decode` + `tracer::aggregate::Aggregator::apply` \
                 over a synthetic buffer of {} ring records (fault records with a region, unmap, \
                 fork and exit record now and then):\n",
                d.events
            );
            let _ = writeln!(
                s,
                "| bench | median per buffer | events/s |\n|---|---|---|\n| decode + apply | {:.1} µs | {:.1} M |\n",
                d.median_ns / 1e3,
                eps / 1e6
            );
            let cpu_per_event = median(
                &self
                    .runs_of(Variant::Events, 2)
                    .iter()
                    .filter_map(|r| r.footprint.map(|f| f.cpu_s * 1e9 / FAULT_PAGES as f64))
                    .collect::<Vec<_>>(),
            );
            let _ = writeln!(
                s,
                "Decoding and aggregating take {:.0} ns per event, {:.0}× faster than the \
                 fastest the machine can fault ({top:.0} faults/s with 2 threads). The streaming \
                 tracer spends {:.0} ns of CPU per fault in all (part 5: `--events` with 2 \
                 threads; the primed pass streams too, so this is per event): formatting and \
                 writing each line, reading the ring and its wake-ups make up the rest.\n",
                d.median_ns / events,
                eps / top,
                cpu_per_event / 2.0
            );
        }
    }

    /// Issue 14: recording and JSON lines against counting (from part 2's rounds), the
    /// BPF cost of a streamed event (part 1), and the burst.
    fn render_recording(&self, s: &mut String, targets: &mut Vec<Target>) {
        let cpu = |v: Variant| {
            median(
                &self
                    .runs_of(v, 2)
                    .iter()
                    .filter_map(|r| r.footprint.map(|f| f.cpu_s))
                    .collect::<Vec<_>>(),
            )
        };
        // The primed pass streams too: two passes of FAULT_PAGES events per run.
        let events = (2 * FAULT_PAGES) as f64;
        let per_event = |v: Variant| (cpu(v) - cpu(Variant::Count)) * 1e9 / events;
        let rows: Vec<Variant> = [Variant::Record, Variant::Jsonl, Variant::Events]
            .into_iter()
            .filter(|v| !self.runs_of(*v, 2).is_empty())
            .collect();
        // Reports from before recordings have no such runs, and no such section.
        if self.runs_of(Variant::Record, 2).is_empty() {
            return;
        }
        {
            let _ = writeln!(
                s,
                "Recording (issue 14), from part 2's rounds with 2 threads: `tamalloc record -o \
                 FILE` writes the ring's items as they come (a copy each, 1 MiB writes); `trace \
                 --output FILE` (JSON lines) frames them the same way and formats them on a \
                 writer thread. Fault events wake the tracer once an eighth of the ring waits. \
                 CPU per event = (the tracer's CPU time, user + system, median) − counting's, \
                 over the {events:.0} events of a run (the primed pass streams too):\n"
            );
            let _ = writeln!(
                s,
                "| variant | slowdown (2 threads) | best of rounds | CPU per event beyond counting | events dropped (all runs) |\n|---|---|---|---|---|"
            );
            for &v in &rows {
                let drops: Option<u64> = self.runs_of(v, 2).iter().map(|r| r.drops).sum();
                let _ = writeln!(
                    s,
                    "| {} | {:+.1} % | {:+.1} % | {:.0} ns | {} |",
                    v.label(),
                    (self.ratio(v, 2) - 1.0) * 100.0,
                    (self.best_ratio(v, 2) - 1.0) * 100.0,
                    per_event(v),
                    drops.map_or("–".into(), |d| d.to_string()),
                );
            }
            let _ = writeln!(s);
        }
        {
            let slow = self.ratio(Variant::Record, 2) - 1.0;
            targets.push(Target {
                name: "recording at the top 2-thread fault rate ≤ 15 % slowdown".into(),
                measured: format!("{:+.1} % (median of rounds)", slow * 100.0),
                met: slow <= 0.15,
                limit: "the fault program's streaming cost (part 1) is paid in the faulting \
                 thread, and the tracer's thread competes with the 2 workload threads \
                 for the 2 cores"
                    .into(),
            });
            let drops: u64 = self
                .runs_of(Variant::Record, 2)
                .iter()
                .filter_map(|r| r.drops)
                .sum();
            targets.push(Target {
                name: "recording at the top 2-thread fault rate: 0 drops".into(),
                measured: format!("{drops} dropped"),
                met: drops == 0,
                limit: "the tracer's thread gets too little CPU beside the workload".into(),
            });
            let ns = per_event(Variant::Record);
            targets.push(Target {
                name: "userspace CPU per recorded event ≤ 150 ns".into(),
                measured: format!("{ns:.0} ns"),
                met: ns <= 150.0,
                limit: "reading the ring, the copy and the write(2) of each 1 MiB".into(),
            });
        }
        // The fault program of a variant, one region (the kernel cuts names to 15 bytes:
        // `page_fault_even`).
        let fault = |v: &str| {
            self.bpf
                .iter()
                .filter(|c| c.variant == v && c.regions == 1 && c.program.starts_with("page_fault"))
                .max_by(|a, b| a.runs.total_cmp(&b.runs))
                .map(|c| c.ns_per_run)
        };
        if let (Some(count), Some(stream)) = (fault("tamalloc"), fault("tamalloc-events")) {
            targets.push(Target {
                name: "BPF cost per streamed event ≤ 2× counting mode".into(),
                measured: format!("{stream:.1} ns vs {count:.1} ns = {:.2}×", stream / count),
                met: stream <= 2.0 * count,
                limit: "a streamed fault also reads the clock, resolves its region and page \
                 (the chunk's start markers, a `MARKERS` lookup), and reserves, fills \
                 and submits a 56-byte ring item"
                    .into(),
            });
        }
        if let Some(b) = self.bursts.first() {
            let clean = self.bursts.iter().filter(|r| r.drops == 0).count();
            let secs = median(&self.bursts.iter().map(|r| r.elapsed_s).collect::<Vec<_>>());
            let _ = writeln!(
                s,
                "The burst: `tamalloc record -o FILE -- tamalloc-bench burst --procs {} --regions \
                 {}` ({} processes forked, released at once, each making {} one-page regions and \
                 writing each: {} region and {} fault events), default ring, {} runs: {clean} \
                 without a drop, {secs:.1} s each (median).\n",
                b.procs,
                b.regions,
                b.procs,
                b.regions,
                u64::from(b.procs) * u64::from(b.regions),
                u64::from(b.procs) * u64::from(b.regions),
                self.bursts.len(),
            );
            targets.push(Target {
                name: format!(
                    "burst ({} processes × {} regions, default ring): 0 drops in every run",
                    b.procs, b.regions
                ),
                measured: format!("{clean} of {} runs without a drop", self.bursts.len()),
                met: clean == self.bursts.len(),
                limit: "the ring holds about 75,000 events; the burst's control events wake \
                        the tracer as it goes"
                    .into(),
            });
        }
    }

    pub(super) fn render_vm(&self, s: &mut String, targets: &mut Vec<Target>) {
        let _ = writeln!(
            s,
            "## 4. Stats syscalls (patched {} kernel under QEMU)\n",
            self.vm_kernel
        );
        let vm = match &self.vm {
            VmPart::NotRun => {
                let _ = writeln!(s, "Not run (`--no-vm`).\n");
                return;
            }
            VmPart::Failed(e) => {
                let _ = writeln!(
                    s,
                    "Not measured: the VM run failed: `{}`\n",
                    e.lines().next().unwrap_or("")
                );
                return;
            }
            VmPart::Measured(v) => v,
        };
        let _ = writeln!(
            s,
            "`cargo xtask vm --mem 2048 -- sh -c \"$SCRIPT\"` runs `tamalloc-bench stats` in the \
             guest, which forks children that only sleep (`pause()`; forked, not exec'd, which \
             is quick under TCG) until the guest has 100, then 400, then 1,000 processes, and \
             measures at \
             each step: syscall 555 \
             with pid 0 (every process into one buffer) against what procps does (list /proc, \
             read and parse `/proc/PID/status` and `/proc/PID/oom_score` of every process), and \
             syscall 554 + munmap against mmap + munmap of one page; the two sides alternate in \
             every iteration, medians shown. QEMU runs with TCG (no KVM): absolute times are \
             inflated many times over, so read the ratios. The VM part took {:.0} s.\n",
            vm.seconds
        );
        let _ = writeln!(
            s,
            "| processes (555 / /proc) | VMAs per sleeper | 555 pid 0 | per process | /proc scraping | per process | /proc ÷ 555 | 554 + munmap | mmap + munmap | 554 ÷ mmap |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        let mut worst: Option<(f64, String)> = None;
        for row in &vm.rows {
            // As floats: the ratios and per-process figures are fractions.
            let [
                procs_syscall,
                procs_procfs,
                vmas,
                syscall_ns,
                procfs_ns,
                tamalloc_ns,
                mmap_ns,
            ] = [
                row.procs_syscall,
                row.procs_procfs,
                row.vmas,
                row.syscall_ns,
                row.procfs_ns,
                row.tamalloc_ns,
                row.mmap_ns,
            ]
            .map(|v| v as f64);
            let ratio = procfs_ns / syscall_ns;
            let _ = writeln!(
                s,
                "| {procs_syscall:.0} / {procs_procfs:.0} | {vmas:.0} | {:.1} µs | {:.2} µs | {:.1} µs | {:.1} µs | {ratio:.1}× | {:.2} µs | {:.2} µs | {:.2} |",
                syscall_ns / 1e3,
                syscall_ns / 1e3 / procs_syscall,
                procfs_ns / 1e3,
                procfs_ns / 1e3 / procs_procfs,
                tamalloc_ns / 1e3,
                mmap_ns / 1e3,
                tamalloc_ns / mmap_ns,
            );
            if worst.as_ref().is_none_or(|w| ratio < w.0) {
                worst = Some((ratio, format!("{procs_syscall:.0} processes")));
            }
        }
        let _ = writeln!(s);
        if let Some((ratio, at)) = worst {
            targets.push(Target {
                name: "555 with pid 0 ≥ 20× faster than /proc scraping".into(),
                measured: format!("{ratio:.1}× at worst ({at}, TCG)"),
                met: ratio >= 20.0,
                limit:
                    "a process that never called 554 (MMF_TAMALLOC unset) costs 555 no mmap_lock \
                 and no VMA walk: the pid lookup, task and mm references, oom_badness and one \
                 record copied out. That cost per process is flat for /proc but not for 555, \
                 which is several times cheaper per process at 100 processes than from about \
                 400 on (the table). The work per process is the same, so what grows is the \
                 price of reaching each process's task, signal and mm structures, scattered \
                 through memory, cold after the /proc side's turn (consistent with QEMU TCG's \
                 software TLB and the host's caches holding about 100 processes' worth, not \
                 measured further); /proc's per-file syscall work hides the same misses"
                        .into(),
            });
        }
    }
}
