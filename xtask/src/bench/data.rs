//! What a benchmark run measured, as typed data: the measurements fill a [`Report`], and
//! `report` renders it. Serializable, so a run's data can be kept and rendered again (the
//! rendering test does that with a fixture).

use serde::{Deserialize, Serialize};

/// Everything `BENCHMARKS.md` is written from.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// `--quick` (fewer rounds, shorter decoder bench, fewer guest iterations).
    pub quick: bool,
    pub rounds: u32,
    pub machine: Machine,
    pub load_before: Load,
    pub load_after: Load,
    /// Wall time of the whole run, seconds.
    pub elapsed_secs: f64,
    /// Part 1.
    pub bpf: Vec<ProgCost>,
    pub programs: Programs,
    /// Part 2: whole runs, and the in-process A/B.
    pub runs: Vec<Run>,
    pub ab: Vec<AbRun>,
    /// Part 3.
    pub drops: Vec<DropRun>,
    /// `tamalloc record` of the burst (processes × regions at once), one entry per run.
    #[serde(default)]
    pub bursts: Vec<BurstRun>,
    pub decode: Option<Decode>,
    /// Part 4, and the kernel it boots ("6.1" in reports from before there was a choice).
    pub vm: VmPart,
    #[serde(default = "kernel_6_1")]
    pub vm_kernel: String,
}

fn regions_tamalloc() -> String {
    "tamalloc".to_owned()
}

fn kernel_6_1() -> String {
    "6.1".to_owned()
}

/// The host the numbers come from.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub date: String,
    pub mem_gib: f64,
    pub bpftrace: String,
}

/// The load average: the 1-minute figure, and the three as `/proc/loadavg` writes them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Load {
    pub one_min: f64,
    pub text: String,
}

/// Median cost per run of one program in one variant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgCost {
    pub variant: String,
    pub regions: u64,
    pub program: String,
    pub ns_per_run: f64,
    pub runs: f64,
    pub counted: f64,
    /// `Probe::load` (tracer variants).
    pub load_ms: f64,
}

/// The tracer's programs as loaded, and the time of that one load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Programs {
    /// Most verified instructions first.
    pub progs: Vec<Program>,
    pub load_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub verified_insns: u64,
    pub jited_bytes: u64,
}

/// How the fault workload runs in part 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Variant {
    Untraced,
    Count,
    Events,
    Bpftrace,
    /// `tamalloc record -o FILE` (issue 14).
    Record,
    /// `tamalloc trace --output FILE` (JSON lines, fed from the recording path).
    Jsonl,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Self::Untraced,
        Self::Count,
        Self::Events,
        Self::Bpftrace,
        Self::Record,
        Self::Jsonl,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Count => "`tamalloc trace` (counting)",
            Self::Events => "`tamalloc trace --events` (streaming, stdout to /dev/null)",
            Self::Bpftrace => "bpftrace per-PID count",
            Self::Record => "`tamalloc record -o FILE` (streaming, binary)",
            Self::Jsonl => "`tamalloc trace --output FILE` (streaming, JSON lines)",
        }
    }
}

/// One run of the fault workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub variant: Variant,
    pub threads: u32,
    pub round: u32,
    pub elapsed_ns: f64,
    pub faults_per_sec: f64,
    /// From launching the tracer to the workload's first instruction (ms).
    pub startup_ms: Option<f64>,
    pub footprint: Option<Footprint>,
    /// Events the trace dropped, from its closing `drops:` line (streaming to a file).
    #[serde(default)]
    pub drops: Option<u64>,
}

/// A tracer's own footprint, sampled from /proc while it runs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Footprint {
    /// VmHWM, KiB.
    pub hwm_kib: f64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

/// One `tamalloc-bench ab` run: the tracer attached and detached in alternation, in-process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbRun {
    pub followed: bool,
    pub threads: u32,
    /// What the tracer followed (`tamalloc trace --regions`); reports from before it
    /// existed followed tamalloc regions.
    #[serde(default = "regions_tamalloc")]
    pub regions: String,
    /// First-touch faults per side.
    pub pages: u64,
    /// Attached time over detached time, summed over the batches.
    pub sum_ratio: f64,
    /// Median over the batches of the pairs' ratios.
    pub median_ratio: f64,
}

/// One streaming run at full speed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropRun {
    pub faults_per_sec: f64,
    pub drops: u64,
    pub fault_events: u64,
}

/// One recording of `tamalloc-bench burst`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BurstRun {
    pub procs: u32,
    pub regions: u32,
    pub drops: u64,
    pub elapsed_s: f64,
}

/// Criterion's figures for the decoder bench.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decode {
    /// Ring records per buffer.
    pub events: u64,
    pub median_ns: f64,
}

/// Part 4, which runs in the patched kernel and may be left out or fail on its own.
#[derive(Debug, Default, Serialize, Deserialize)]
pub enum VmPart {
    /// `--no-vm`, or `--only` another part.
    #[default]
    NotRun,
    /// The first line of the error says why.
    Failed(String),
    Measured(VmStats),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmStats {
    pub rows: Vec<StatsRow>,
    pub seconds: f64,
}

/// One `bench_stats` record of `tamalloc-bench stats`: medians at one process count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatsRow {
    pub procs_syscall: u64,
    pub procs_procfs: u64,
    pub vmas: u64,
    pub syscall_ns: u64,
    pub procfs_ns: u64,
    pub tamalloc_ns: u64,
    pub mmap_ns: u64,
}

/// The median of the finite values; NaN when there are none.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
