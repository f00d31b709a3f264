//! `BENCHMARKS.md` from a [`Report`]: the machine, the commands run, one section per part
//! and the targets, each judged from the measured data. Reads no files and runs nothing.

mod bpf;
mod faults;
mod streaming;
mod target;

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    data::{ProgCost, Report, Run, Variant, median},
    plan::{BPF_PAGES, BPFTRACE_PROGRAM, FAULT_PAGES, decode_secs, vm_script},
};
use target::{Target, verdict};

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let cmd = if self.quick {
            "cargo xtask bench --quick"
        } else {
            "cargo xtask bench"
        };
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `{cmd}` (as root; {} round(s), interleaved, after a warm-up; tables give medians \
             over the rounds). Regenerate with the same command; `--quick` does 3 rounds.\n",
            self.rounds
        );
        let _ = writeln!(s, "| machine | |\n|---|---|");
        let _ = writeln!(s, "| CPU | {} |", m.cpu);
        let _ = writeln!(s, "| cores | {} |", m.cores);
        let _ = writeln!(s, "| memory | {:.1} GiB |", m.mem_gib);
        let _ = writeln!(s, "| kernel (host) | {} |", m.kernel);
        let _ = writeln!(s, "| bpftrace | {} |", m.bpftrace);
        let _ = writeln!(s, "| date | {} |", m.date);
        let _ = writeln!(
            s,
            "| load average (1, 5, 15 min) | before: {}; after: {} |",
            self.load_before.text, self.load_after.text
        );
        let _ = writeln!(s, "| total time | {:.0} s |\n", self.elapsed_secs);
        if self.load_before.one_min > 0.5 {
            let _ = writeln!(
                s,
                "> **Note:** the load average was {:.2} when the run started (other work on the \
                 machine), so absolute figures are noisy; interleaving keeps the ratios fair.\n",
                self.load_before.one_min
            );
        }
        let decode_secs = decode_secs(self.quick);
        let _ = writeln!(
            s,
            "Commands run (as root, from the repository root; `tamalloc` and \
             `tamalloc-bench` are in `target/release/`, FILE a scratch file):\n\n```sh\n\
             tamalloc-bench bpf --pages {BPF_PAGES} --rounds {r} --bpftrace $(command -v bpftrace)\n\
             tamalloc-bench faults --pages {FAULT_PAGES} --threads T --prime --report FILE\n\
             tamalloc trace -- tamalloc-bench faults --pages {FAULT_PAGES} --threads T --prime --report FILE >/dev/null\n\
             tamalloc trace --events -- tamalloc-bench faults --pages {FAULT_PAGES} --threads T --prime --report FILE >/dev/null\n\
             bpftrace -e '{BPFTRACE_PROGRAM}'   # then the workload alone\n\
             tamalloc trace --events -- tamalloc-bench faults --pages {FAULT_PAGES} --threads 2 --prime --report FILE >FILE2\n\
             cargo bench -p tamalloc-user --bench decode -- --noplot --warm-up-time 1 --measurement-time {decode_secs}\n\
             cargo xtask vm --mem 2048 --timeout 900 -- sh -c \"$SCRIPT\"\n\
             ```\n\nwith T = 1 and 2, and SCRIPT = `{}`.\n\n\
             `--prime` makes the workload touch and free as many pages, untimed, just before the \
             timed pass: this host is a VM whose balloon reports free pages to its hypervisor, so \
             a fresh guest page can cost a host fault too, depending on what ran before; primed, \
             every run touches pages the guest has just freed.\n",
            vm_script(self.quick).trim(),
            r = self.rounds,
        );
        let mut targets: Vec<Target> = Vec::new();
        self.render_bpf(&mut s, &mut targets);
        self.render_slowdown(&mut s, &mut targets);
        self.render_streaming(&mut s, &mut targets);
        self.render_vm(&mut s, &mut targets);
        self.render_footprint(&mut s, &mut targets);
        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(
            s,
            "| target | measured | verdict | what limits it |\n|---|---|---|---|"
        );
        for t in &targets {
            let limit = if t.met { "" } else { t.limit.as_str() };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {limit} |",
                t.name,
                t.measured,
                verdict(t.met)
            );
        }
        s
    }

    fn cost(&self, variant: &str, regions: u64, program: &str) -> Option<&ProgCost> {
        self.bpf
            .iter()
            .find(|c| c.variant == variant && c.regions == regions && c.program == program)
    }

    fn runs_of(&self, v: Variant, threads: u32) -> Vec<&Run> {
        self.runs
            .iter()
            .filter(|r| r.variant == v && r.threads == threads)
            .collect()
    }

    /// Median over rounds of elapsed(v) / elapsed(untraced) of the same round.
    fn ratio(&self, v: Variant, threads: u32) -> f64 {
        let base: BTreeMap<u32, f64> = self
            .runs_of(Variant::Untraced, threads)
            .iter()
            .map(|r| (r.round, r.elapsed_ns))
            .collect();
        let ratios: Vec<f64> = self
            .runs_of(v, threads)
            .iter()
            .filter_map(|r| Some(r.elapsed_ns / base.get(&r.round)?))
            .collect();
        median(&ratios)
    }

    /// Fastest elapsed of `v` over the fastest untraced elapsed.
    fn best_ratio(&self, v: Variant, threads: u32) -> f64 {
        let fastest = |v| {
            self.runs_of(v, threads)
                .iter()
                .map(|r| r.elapsed_ns)
                .fold(f64::INFINITY, f64::min)
        };
        fastest(v) / fastest(Variant::Untraced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::data::VmPart;

    /// A run's data (made up, with every part and branch present) and the Markdown it must
    /// render to: this pins `BENCHMARKS.md`'s sections and wording.
    fn fixture() -> Report {
        serde_json::from_str(include_str!("testdata/report.json")).unwrap()
    }

    #[test]
    fn report_renders_as_pinned() {
        let text = fixture().render();
        let expected = include_str!("testdata/report.md");
        for (i, (got, want)) in text.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        assert_eq!(text, expected);
    }

    #[test]
    fn report_says_why_part_4_is_missing() {
        let mut r = fixture();
        r.vm = VmPart::NotRun;
        assert!(
            r.render()
                .contains("QEMU)\n\nNot run (`--no-vm`).\n\n## 5.")
        );
        r.vm = VmPart::Failed("the VM failed\nsecond line".into());
        assert!(
            r.render()
                .contains("Not measured: the VM run failed: `the VM failed`\n\n## 5.")
        );
    }

    #[test]
    fn quick_runs_say_so() {
        let mut r = fixture();
        r.quick = true;
        let text = r.render();
        assert!(text.contains("Written by `cargo xtask bench --quick`"));
        assert!(text.contains("--measurement-time 2\n"));
        assert!(
            text.contains("SCRIPT = `tamalloc-bench stats --procs 100,400,1000 --iterations 11`")
        );
    }
}
