//! `cargo xtask bench`: tracer overhead, event throughput and stats cost, side by side with
//! peers, written to `BENCHMARKS.md`.
//!
//! Every comparison is interleaved (each round runs every variant once, in an order rotated
//! per round) so that drift cancels, after one warm-up; tables give medians over the rounds.
//! Parts, each measured by its own module into the typed [`data::Report`]:
//! 1. per-run cost of each BPF program (`tamalloc-bench bpf`: `kernel.bpf_stats_enabled`);
//! 2. slowdown of a 1M-fault workload (`tamalloc-bench faults`) under `tamalloc trace`,
//!    `tamalloc trace --events`, `tamalloc record`, `trace --output` and bpftrace, and the
//!    tracer's footprint in those runs;
//! 3. drops when streaming at full speed, recording and JSON lines against counting, the
//!    burst of processes and regions, and the userspace decoder (criterion);
//! 4. syscalls 555/554 against /proc and mmap inside the patched kernel under QEMU.
//!
//! `plan` holds what the parts run, `process` the children and what /proc says of them,
//! `records` the workloads' JSON lines, and `report` renders the Markdown from the data.

mod bpf;
mod data;
mod faults;
mod host;
mod plan;
mod process;
mod records;
mod report;
mod streaming;
mod vm;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use data::{Report, VmPart};
use plan::{BENCH_BIN, Bins};

use crate::util::{self, WorkDir};

#[derive(clap::Args)]
pub struct Args {
    /// Fewer rounds (3 instead of 9) and a shorter decoder bench: about a third of the time.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of every interleaved comparison (overrides the default of 9, or 3 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: Option<u32>,
    /// Leave out the patched-kernel part (syscalls 555/554 under QEMU).
    #[arg(long)]
    pub no_vm: bool,
    /// The patched kernel the VM part boots: 6.1 or 6.12.
    #[arg(long, value_enum, value_name = "VERSION", default_value_t)]
    pub kernel: crate::kernel::Version,
    /// Give up on the VM part after this many seconds (it waits for the kernel cache lock
    /// while another task builds a kernel).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub vm_limit: u64,
    /// Run only this part (to iterate on it; the report then holds only that part).
    #[arg(long, value_enum)]
    pub only: Option<Part>,
    /// Where to write the report (relative to the repository root).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Bpf,
    Slowdown,
    Streaming,
    Decode,
    Vm,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!(
            "the benchmarks load eBPF programs and set kernel.bpf_stats_enabled: run \
             `sudo -E cargo xtask bench` (or as root)"
        );
    }
    let started = Instant::now();
    crate::setup::run(&crate::setup::Args::default()).context("set-up")?;
    // Nine: this host's fault rate drifts by 2x over seconds (other tenants), and a median
    // of nine interleaved rounds holds still where five did not.
    let rounds = args.rounds.unwrap_or(if args.quick { 3 } else { 9 });
    util::step("Building");
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "tamalloc-user",
        "-p",
        "tamalloc-bench",
    ]))?;
    let release = util::target_dir().join("release");
    let bins = Bins {
        tamalloc: release.join("tamalloc"),
        bench: release.join(BENCH_BIN),
    };
    let scratch = WorkDir::create(&util::target_dir().join("bench"))?;
    let work = scratch.path();
    let mut r = Report {
        quick: args.quick,
        rounds,
        machine: host::machine(),
        load_before: host::loadavg(),
        ..Report::default()
    };
    if r.load_before.one_min > 0.5 {
        eprintln!(
            "warning: load average {:.2}: the machine is busy, numbers will be noisy",
            r.load_before.one_min
        );
    }

    let part = |p: Part| args.only.is_none_or(|o| o == p);
    if part(Part::Bpf) {
        util::step("BPF cost");
        (r.bpf, r.programs) =
            bpf::measure(&bins.bench, rounds).context("measuring the BPF programs' cost")?;
    }
    if part(Part::Slowdown) {
        util::step("Slowdown");
        r.runs = faults::slowdown(&bins, work, rounds).context("measuring the slowdown")?;
        r.ab = faults::ab_runs(&bins.bench, args.quick)
            .context("measuring the tracer attached and detached")?;
    }
    if part(Part::Streaming) {
        util::step("Streaming");
        r.drops = streaming::drops(&bins, work, rounds).context("measuring streaming drops")?;
        r.bursts =
            streaming::bursts(&bins, work, plan::BURST_RUNS).context("recording the burst")?;
    }
    if part(Part::Decode) {
        util::step("Decoder");
        r.decode = Some(streaming::decode(args.quick).context("running the decoder bench")?);
    }
    if part(Part::Vm) && !args.no_vm {
        util::step("Stats (VM)");
        let limit = Duration::from_secs(args.vm_limit);
        r.vm_kernel = args.kernel.to_string();
        r.vm = match vm::measure(work, args.kernel, args.quick, limit) {
            Ok(stats) => VmPart::Measured(stats),
            Err(e) => VmPart::Failed(format!("{e:#}")),
        };
    }
    r.load_after = host::loadavg();
    r.elapsed_secs = started.elapsed().as_secs_f64();
    let text = r.render();
    let out = util::workspace_root().join(&args.output);
    fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    eprintln!("bench: wrote {} in {:.0} s", out.display(), r.elapsed_secs);
    Ok(())
}
