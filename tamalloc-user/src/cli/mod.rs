//! Command-line interface: one module per subcommand.

mod compare;
mod demo;
mod global;
mod record;
mod report;
mod stats;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tamalloc::tracer::command::CommandError;

/// tamalloc: a lazy-zeroing allocator, its memory statistics, and a tracer of first-touch
/// page faults in its regions.
#[derive(Parser)]
#[command(name = "tamalloc", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace first-touch faults in tamalloc regions, per process, live (needs root).
    Trace(trace::Args),
    /// Record every fault into a compact binary file, to convert or draw later (needs root).
    Record(record::Args),
    /// Per-process memory statistics (syscall 555, or /proc without the kernel patch).
    Stats(stats::Args),
    /// System-wide totals (syscall 556, or /proc without the kernel patch).
    Global(global::Args),
    /// Allocate with tamalloc and touch the region slowly: watch VmRSS climb.
    Demo(demo::Args),
    /// Draw a trace as an SVG (reserved vs resident bytes vs pages first touched), or convert
    /// it to another format.
    Report(report::Args),
    /// Measure malloc, malloc+memset, calloc, mmap and tamalloc side by side.
    Compare(compare::Args),
    /// One measurement of `compare`, in a fresh process (internal).
    #[command(hide = true)]
    CompareChild(compare::ChildArgs),
    /// Internal: wait for the tracer's gate on FD, then exec CMD (see `trace -- CMD`).
    #[command(hide = true)]
    ExecGated {
        fd: i32,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Help and version print as usual; a usage error is one line on stderr and exit status 2.
fn parse_or_exit() -> Cli {
    Cli::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit()
        }
        let text = e.render().to_string();
        let first: Vec<&str> = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .collect();
        let msg = first.join(" ");
        eprintln!(
            "tamalloc: {} (see --help)",
            msg.trim_start_matches("error: ")
        );
        std::process::exit(2)
    })
}

/// Runs the subcommand, and returns the status to exit with.
pub fn run() -> anyhow::Result<ExitCode> {
    match parse_or_exit().command {
        // CMD's status (`trace -- CMD`); every other subcommand succeeds or fails.
        Command::Trace(args) => return trace::run(args),
        Command::Record(args) => return record::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Global(args) => global::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Report(args) => report::run(args),
        Command::Compare(args) => compare::run(args),
        Command::CompareChild(args) => compare::run_child(args),
        Command::ExecGated { fd, command } => {
            let err = tamalloc::tracer::command::exec_gated(fd, &command);
            Err(anyhow::Error::new(err))
        }
    }
    .map(|()| ExitCode::SUCCESS)
}

/// The status to exit with after `err`: 127 or 126 when a command could not be run (as
/// shells), else 1.
pub fn failure_status(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(|e| e.downcast_ref::<CommandError>())
        .map_or(ExitCode::FAILURE, |e| ExitCode::from(e.exit_code()))
}
