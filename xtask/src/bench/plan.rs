//! What the parts run: workload sizes and command lines, shared by the measurements and
//! by the report that says what was run.

use std::path::{Path, PathBuf};

/// The workload binary's name in `target/release/` (the guest has it in `/usr/bin`).
pub const BENCH_BIN: &str = "tamalloc-bench";
/// First-touch faults of the slowdown workload (4 GiB of pages), in all threads together.
pub const FAULT_PAGES: u64 = 1 << 20;
/// First-touch faults per BPF cost measurement.
pub const BPF_PAGES: u64 = 1 << 18;
/// bpftrace's per-PID fault count, the peer.
pub const BPFTRACE_PROGRAM: &str = "tracepoint:exceptions:page_fault_user { @[pid] = count(); }";
/// Pages per side and batches of `tamalloc-bench ab`: 64 pairs of 32768 faults, a few
/// hundred milliseconds each.
pub const AB_PAGES: u64 = 1 << 21;
pub const AB_BATCHES: u32 = 64;

/// `tamalloc-bench faults ...` minus the binary: the fault workload of parts 2 and 3.
/// The burst of issue 14: processes × one-page regions, made at once, recorded.
pub const BURST_PROCS: u32 = 300;
pub const BURST_REGIONS: u32 = 100;
/// Recordings of the burst (the target: no drop in any of them).
pub const BURST_RUNS: u32 = 10;

pub fn faults_args(threads: u32, report: &Path) -> Vec<String> {
    vec![
        "faults".into(),
        "--pages".into(),
        FAULT_PAGES.to_string(),
        "--threads".into(),
        threads.to_string(),
        "--prime".into(),
        "--report".into(),
        report.display().to_string(),
    ]
}

/// Criterion's measurement time for the decoder bench, seconds.
pub fn decode_secs(quick: bool) -> u32 {
    if quick { 2 } else { 5 }
}

/// The guest's command: `tamalloc-bench stats` forks sleeping children up to 100, then
/// 1,000 processes, and measures at each step.
pub fn vm_script(quick: bool) -> String {
    let iterations = if quick { 11 } else { 21 };
    // 400 too: where the cost per process of 555 stops growing (see the report's note).
    format!("{BENCH_BIN} stats --procs 100,400,1000 --iterations {iterations}\n")
}

/// The two release binaries the host parts run.
pub struct Bins {
    /// `tamalloc`, the tracer.
    pub tamalloc: PathBuf,
    /// `tamalloc-bench`, the workloads.
    pub bench: PathBuf,
}
