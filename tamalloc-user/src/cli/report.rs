//! `tamalloc report`: draw a JSON lines trace as an SVG (the picture of lazy zeroing).

use std::path::PathBuf;

use anyhow::Context as _;
use tamalloc::report::{self, Trace};

/// Arguments of `tamalloc report`.
#[derive(clap::Args)]
#[command(
    after_help = "Per process, over time: bytes reserved in tamalloc regions, resident \
bytes and VmRSS (MiB), above the pages first touched, cumulative, by kind. Prints a one-line \
summary per process either way.\n\nExample:\n  \
sudo tamalloc trace --output run.jsonl -- tamalloc demo --size 32MiB --rate 8MiB/s --read-first\n  \
tamalloc report run.jsonl --svg run.svg"
)]
pub struct Args {
    /// A trace written by `tamalloc trace --output FILE` (JSON lines).
    #[arg(value_name = "TRACE.jsonl")]
    trace: PathBuf,
    /// Draw the report into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Only this process.
    #[arg(short, long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pid: Option<u32>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let trace = Trace::load(&args.trace)?;
    let pids = trace.select(args.pid)?;
    print!("{}", report::text_summary(&trace, &pids));
    if let Some(path) = &args.svg {
        let svg = report::render_svg(&trace, &pids).context("cannot draw the report")?;
        report::write(path, &svg)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
