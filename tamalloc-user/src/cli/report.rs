//! `tamalloc report`: draw a trace (JSON lines or a recording) as an SVG (the picture of
//! lazy zeroing), or convert it to another format.

use std::path::PathBuf;

use anyhow::Context as _;
use tamalloc::{
    output::{self, Format},
    report::{self, Trace},
};

/// Arguments of `tamalloc report`.
#[derive(clap::Args)]
#[command(
    after_help = "Per process, over time: bytes reserved in tamalloc regions, resident \
bytes and VmRSS (MiB), above the pages first touched, cumulative, by kind. Prints a one-line \
summary per process either way.\n\nExamples:\n  \
sudo tamalloc trace --output run.jsonl -- tamalloc demo --size 32MiB --rate 8MiB/s --read-first\n  \
tamalloc report run.jsonl --svg run.svg\n  \
sudo tamalloc record -o run.tamrec -- tamalloc demo --size 32MiB\n  \
tamalloc report run.tamrec --format jsonl -o run.jsonl"
)]
pub struct Args {
    /// A trace: JSON lines (`tamalloc trace --output FILE`) or a recording
    /// (`tamalloc record -o FILE`).
    #[arg(value_name = "TRACE")]
    trace: PathBuf,
    /// Draw the report into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Only this process.
    #[arg(short, long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..),
          conflicts_with = "format")]
    pid: Option<u32>,
    /// Convert the trace, record for record, to this format (jsonl, csv, perfetto,
    /// chrome-json, record) in the --output file, instead of printing the summary.
    #[arg(short, long, value_enum, requires = "output")]
    format: Option<Format>,
    /// Where --format writes.
    #[arg(short, long, value_name = "FILE", requires = "format")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cut_short = || {
        eprintln!(
            "tamalloc: {} is cut short (the tracer did not finish it): read up to its last complete record",
            args.trace.display()
        )
    };
    if let (Some(format), Some(out)) = (args.format, &args.output) {
        let mut sink =
            output::open(out, format).with_context(|| format!("cannot write {}", out.display()))?;
        let info = report::read::convert(&args.trace, sink.as_mut(), out)?;
        if info.truncated {
            cut_short();
        }
        println!("wrote {}", out.display());
        if args.svg.is_none() {
            return Ok(());
        }
    }
    let trace = Trace::load(&args.trace)?;
    if trace.truncated && args.format.is_none() {
        cut_short();
    }
    let pids = trace.select(args.pid)?;
    if args.format.is_none() {
        print!("{}", report::text_summary(&trace, &pids));
    }
    if let Some(path) = &args.svg {
        let svg = report::render_svg(&trace, &pids).context("cannot draw the report")?;
        report::write(path, &svg)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
