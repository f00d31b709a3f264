//! `tamalloc-bench`: the rigs that measure and check tamalloc, kept beside the product (like
//! `perf bench`), so that `tamalloc --help` and the shipped eBPF object hold only the
//! product. `cargo xtask bench` and the tests run them; `main` only runs [`run`] and prints
//! the error chain.

mod ab;
mod bpf;
mod burst;
mod check_ranges;
mod check_trace;
mod faults;
mod output;
mod scenario;
mod stats;
mod workload;

use clap::Parser;

/// tamalloc-bench: benchmark and workload rigs for tamalloc and its tracer.
#[derive(Parser)]
#[command(name = "tamalloc-bench", version, propagate_version = true)]
enum Command {
    /// First-touch faults, timed: the benchmark workload of `cargo xtask bench`.
    Faults(faults::Args),
    /// The tracer's overhead, attached and detached in alternation in one process (root).
    Ab(ab::Args),
    /// Per-run cost of the BPF programs, the tracer's, a reference and bpftrace's (root).
    Bpf(bpf::Args),
    /// Many processes making many regions at once: the ring's burst (issue 14).
    Burst(burst::Args),
    /// Syscalls 555/554 against /proc and mmap (inside the patched kernel).
    Stats(stats::Args),
    /// A workload that knows the faults it causes, and reports them (for testing the tracer).
    Workload(workload::Args),
    /// Workloads for the paths where a tracer's counts can drift from the kernel's, each
    /// knowing its exact truth (issue 13).
    Scenario(scenario::Args),
    /// Compare a workload's expectations with a trace's summaries, exactly.
    CheckTrace(check_trace::Args),
    /// Compare a workload's touched ranges with a streamed trace's faults, exactly.
    CheckRanges(check_ranges::Args),
}

fn run() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Faults(args) => faults::run(args),
        Command::Ab(args) => ab::run(args),
        Command::Bpf(args) => bpf::run(args),
        Command::Burst(args) => burst::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Workload(args) => workload::run(args),
        Command::Scenario(args) => scenario::run(args),
        Command::CheckTrace(args) => check_trace::run(args),
        Command::CheckRanges(args) => check_ranges::run(args),
    }
}

fn main() {
    if let Err(err) = run() {
        eprintln!("tamalloc-bench: {err:#}");
        std::process::exit(1);
    }
}
