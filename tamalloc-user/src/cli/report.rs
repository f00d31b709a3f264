//! `tamalloc report`: draw a trace (JSON lines or a recording) as an SVG (the picture of
//! lazy zeroing), convert it to another format, or write its first-touch stacks (`trace
//! --stacks`) as folded stacks, a flame graph or a pprof profile.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tamalloc::{
    output::{
        self, Format,
        stacks::{StackFiles, StackSet, StackTargets},
    },
    report::{self, Trace},
    tracer::{Sink as _, record::Record, recording::Item},
};

/// Arguments of `tamalloc report`.
#[derive(clap::Args)]
#[command(
    after_help = "Per process, over time: bytes reserved in tamalloc regions, resident \
bytes and VmRSS (MiB), above the pages first touched, cumulative, by kind. Prints a one-line \
summary per process, unless it converts (--format) or writes only stacks (--folded, \
--flamegraph, --pprof).\n\nExamples:\n  \
sudo tamalloc trace --output run.jsonl -- tamalloc demo --size 32MiB --rate 8MiB/s --read-first\n  \
tamalloc report run.jsonl --svg run.svg\n  \
sudo tamalloc record -o run.tamrec -- tamalloc demo --size 32MiB\n  \
tamalloc report run.tamrec --format jsonl -o run.jsonl\n  \
sudo tamalloc trace --stacks --record run.tamrec -- ./my-program\n  \
tamalloc report run.tamrec --flamegraph pages.svg --pprof pages.pb.gz"
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
    /// Write the trace's first-touch stacks (`trace --stacks`) as folded stacks to FILE.
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,
    /// Draw the trace's first-touch stacks (`trace --stacks`) as a flame graph SVG in FILE.
    #[arg(long, value_name = "FILE")]
    flamegraph: Option<PathBuf>,
    /// Write the trace's first-touch stacks (`trace --stacks`) as a gzipped pprof profile to
    /// FILE (`go tool pprof`, Pyroscope, Parca).
    #[arg(long, value_name = "FILE")]
    pprof: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cut_short = || {
        eprintln!(
            "tamalloc: {} is cut short (the tracer did not finish it): read up to its last complete record",
            args.trace.display()
        )
    };
    let stack_files = StackTargets {
        folded: args.folded.clone(),
        flamegraph: args.flamegraph.clone(),
        pprof: args.pprof.clone(),
    };
    if !stack_files.is_empty() {
        let (stacks, truncated) = read_stacks(&args.trace, args.pid)?;
        if truncated {
            cut_short();
        }
        let mut files = StackFiles::create(&stack_files, stacks)?;
        files.finish()?;
        for path in [&args.folded, &args.flamegraph, &args.pprof]
            .into_iter()
            .flatten()
        {
            println!("wrote {}", path.display());
        }
        if args.svg.is_none() && args.format.is_none() {
            return Ok(());
        }
    }
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

/// The `stack` records of the trace at `path` (of process `pid` only, with one), and whether
/// the file was cut short; none is an error that says how to get them.
fn read_stacks(path: &Path, pid: Option<u32>) -> anyhow::Result<(StackSet, bool)> {
    let mut set = StackSet::default();
    let info = report::read::read(path, |item| {
        if let Item::Record(r @ Record::Stack { pid: p, .. }) = item
            && pid.is_none_or(|pid| pid == p)
        {
            set.add(&r);
        }
        Ok(())
    })?;
    if set.is_empty() {
        let whose = pid.map_or(String::new(), |p| format!(" of pid {p}"));
        bail!(
            "{} has no first-touch stacks{whose}: trace with --stacks (e.g. sudo tamalloc trace \
             --stacks --record run.tamrec -- CMD)",
            path.display()
        );
    }
    Ok((set, info.truncated))
}
