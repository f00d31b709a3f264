//! `tamalloc-bench ab`: the tracer's overhead on first-touch faults, measured in
//! one process, A/B in fine alternation (for `cargo xtask bench`; root).
//!
//! The tracer's programs are loaded once, following this process in counting mode. Then
//! `--batches` pairs of `faults` passes run here: in each pair, one pass with every
//! program detached and one with every program attached, in alternating order. A pass touches
//! `--pages / --batches` fresh pages with `--threads` threads, after an untimed priming pass.
//! This host's fault rate drifts by up to 2x over seconds (other tenants): the two sides of
//! a pair, a fraction of a second apart, see the same conditions, where whole runs seconds
//! apart do not. The attached passes must count exactly the pages they touched
//! (`write_zero`), or the run fails. One JSON line:
//! `{"type":"bench_ab","threads","batches","pages","detached_ns","attached_ns",
//! "median_ratio","sum_ratio","regions"}` (`pages` per side; `*_ns` summed over the batches).

use anyhow::{Context as _, bail};
use tamalloc::tracer::{Probe, ProbeOptions, Regions};
use tamalloc_common::trace::FaultKind;

use crate::faults::run_workload;

#[derive(clap::Args)]
pub struct Args {
    /// First-touch faults per side (attached, detached), split into the batches.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=1 << 24))]
    pages: u64,
    /// Pairs of passes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=1024))]
    batches: u32,
    /// Threads touching at once, each its own region.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Follow no process: the overhead the tracer puts on the processes it does not trace.
    #[arg(long)]
    unfollowed: bool,
    /// Which mappings the tracer follows (`tamalloc trace --regions`): `anon` adds its
    /// learning of every anonymous mmap and brk to the same workload.
    #[arg(long, default_value = "tamalloc")]
    regions: Regions,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let per_batch = args.pages / u64::from(args.batches);
    if per_batch < u64::from(args.threads) {
        bail!("--pages / --batches must give each thread a page at least");
    }
    let pid = std::process::id();
    let mut probe = Probe::load(&ProbeOptions {
        pids: if args.unfollowed {
            Vec::new()
        } else {
            vec![pid]
        },
        filter_pids: true,
        regions: args.regions.clone(),
        ..ProbeOptions::default()
    })
    .context("loading the tracer's programs")?;
    let mut ratios = Vec::new();
    let (mut detached_ns, mut attached_ns, mut attached_pages) = (0u64, 0u64, 0u64);
    for batch in 0..args.batches {
        let mut pair = [0u64; 2];
        // Alternate which side goes first, so that drift within a pair cancels too.
        let order = if batch % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for attached in order {
            if attached {
                probe.attach().context("attaching the tracer")?;
            } else {
                probe.detach();
            }
            let o = run_workload(per_batch, args.threads, 1, true)?;
            pair[usize::from(attached)] = o.elapsed_ns;
            if attached {
                attached_pages += o.pages;
            }
        }
        detached_ns += pair[0];
        attached_ns += pair[1];
        ratios.push(pair[1] as f64 / pair[0].max(1) as f64);
    }
    probe.detach();
    let counted = probe
        .counters()
        .context("reading the tracer's counters")?
        .get(&pid)
        .map_or(0, |c| c.faults[FaultKind::WriteZero as usize]);
    // Attached passes prime too: twice their pages are first touches.
    let expected = if args.unfollowed {
        0
    } else {
        2 * attached_pages
    };
    if counted != expected {
        bail!("the tracer counted {counted} first touches of this process, expected {expected}");
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "{{\"type\":\"bench_ab\",\"followed\":{},\"threads\":{},\"batches\":{},\"pages\":{attached_pages},\"detached_ns\":{detached_ns},\"attached_ns\":{attached_ns},\"median_ratio\":{median:.5},\"sum_ratio\":{:.5},\"regions\":\"{}\"}}",
        !args.unfollowed,
        args.threads,
        args.batches,
        attached_ns as f64 / detached_ns.max(1) as f64,
        args.regions
    );
    Ok(())
}
