//! `tamalloc record`: trace into a recording, the cheapest way to keep every fault; convert
//! it later with `tamalloc report FILE --format ...`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use tamalloc::{
    output::{Format, terminal},
    tracer::session,
};

use super::trace::{Follow, exit_status, open_output, runtime};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    sudo tamalloc record -o run.tamrec -- tamalloc demo --size 64MiB --rate 16MiB/s\n  \
    tamalloc report run.tamrec --format perfetto -o run.pftrace\n  \
    tamalloc report run.tamrec --svg run.svg")]
pub struct Args {
    /// Write the recording to FILE.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    follow: Follow,
}

/// Records, and returns the status to exit with, as `trace` does.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.follow.check()?;
    let sink = open_output(&args.output, Format::Record)?;
    // The summary at the end; nothing per event (that is what the file is for).
    let view = terminal::plain(false, true);
    let outcome = runtime()?
        .block_on(session::run(args.follow.options(true), Some(sink), view))
        .context("recording failed")?;
    Ok(exit_status(&outcome))
}
