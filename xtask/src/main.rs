//! Project tasks: `cargo xtask <task>`. See `cargo xtask --help`.

mod bench;
mod checkpatch;
mod demo;
mod kernel;
mod manpages;
mod rehearse;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "tamalloc project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent; quiet when all is there).
    Setup(setup::Args),
    /// The main job: build, then trace the demo workload live (needs root).
    Demo(demo::Args),
    /// Every test: fmt, clippy, unit, root BPF tests on the host, kernel tests under QEMU.
    Test(test::Args),
    /// Build the patched kernel (cached by the hash of patches and config).
    Kernel(kernel::Args),
    /// Every patch of both kernel series through its kernel's checkpatch.pl --strict.
    Checkpatch(checkpatch::Args),
    /// Boot the patched kernel under QEMU and run a command, or give a shell.
    Vm(vm::Args),
    /// The README's two commands in a fresh Debian 12 root (debootstrap; root; ~30 min).
    Rehearse(rehearse::Args),
    /// Benchmarks: tracer overhead, event throughput, stats cost; writes BENCHMARKS.md (root).
    Bench(bench::Args),
}

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup(args) => setup::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Kernel(args) => kernel::run(&args).map(|_| ()),
        Task::Checkpatch(args) => checkpatch::run(&args),
        Task::Vm(args) => vm::run(&args),
        Task::Rehearse(args) => rehearse::run(&args),
        Task::Bench(args) => bench::run(&args),
    }
}
