//! `tamalloc demo`: allocate with tamalloc, touch the region at a given rate and watch VmRSS
//! follow the touched pages while VmSize jumped at once.
//!
//! This is also the workload the tracer is checked against, so it touches every selected page
//! exactly once per step with volatile accesses and never touches the region otherwise; the
//! last line of its output counts the faults that the kernel must have seen.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use tamalloc::{
    alloc,
    size::{Percent, arg, format_bytes, format_kib},
    stats,
};

const PAGE: usize = 4096;

/// The long help of the command (the subcommand's one-line doc in cli/mod.rs is its summary).
const HELP: &str = "Allocate a region with tamalloc and touch its pages at a given rate, printing elapsed time, touched pages, VmSize and VmRSS as it goes.\n\
\n\
THP is disabled for the process first, so every touched page is one fault. Each selected page gets one volatile byte write (with --read-first: one volatile read, then the write). The last line is one JSON object: {\"type\":\"demo\",\"pid\",\"path\",\"addr\",\"len\",\"pages\", \"read_zero\",\"write_zero\",\"cow_zero\",\"cow\",\"other\"}: the faults the touching caused (each plain write is one write_zero; with --read-first each page is one read_zero and one cow_zero).";

/// Arguments of `tamalloc demo`; [`HELP`] explains the output.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Size of the region, rounded up to whole pages: 4096, 512k, 10MiB, 4G.
    #[arg(long, default_value = "10MiB", value_parser = arg::size)]
    size: usize,
    /// Share of the region's pages to touch, 0% to 100%.
    #[arg(long, default_value = "100%", value_parser = arg::percent)]
    touch: Percent,
    /// Touching speed in bytes per second (4MiB/s, 512k/s); 0 = as fast as possible.
    #[arg(long, default_value = "4MiB/s", value_parser = arg::rate)]
    rate: u64,
    /// Order of the touched pages: from the start, or a seeded random choice and order.
    #[arg(long, value_enum, default_value_t = Pattern::Seq)]
    pattern: Pattern,
    /// Read each page before writing it (a read_zero fault, then a cow_zero fault).
    #[arg(long)]
    read_first: bool,
    /// Keep the region this long after touching (5s, 500ms, 2m).
    #[arg(long, default_value = "0s", value_parser = arg::duration)]
    hold: Duration,
    /// Seed of the random pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Pattern {
    /// Pages in address order from the start of the region.
    Seq,
    /// A seeded random subset, in random order.
    Random,
}

/// The last line of the demo.
#[derive(Serialize)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    path: &'static str,
    addr: u64,
    len: u64,
    pages: u64,
    read_zero: u64,
    write_zero: u64,
    cow_zero: u64,
    cow: u64,
    other: u64,
}

/// xorshift64*: enough for a reproducible shuffle.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Any non-zero state works; mix the seed so that 0 and small seeds are fine.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0), by rejection of the biased tail.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// The page indices to touch, in order.
fn touch_order(pages: usize, touched: usize, pattern: Pattern, seed: u64) -> Vec<usize> {
    match pattern {
        Pattern::Seq => (0..touched).collect(),
        Pattern::Random => {
            let mut v: Vec<usize> = (0..pages).collect();
            let mut rng = XorShift::new(seed);
            // Partial Fisher-Yates: the first `touched` slots are a uniform random sample.
            for i in 0..touched {
                let j = i + rng.below((pages - i) as u64) as usize;
                v.swap(i, j);
            }
            v.truncate(touched);
            v
        }
    }
}

fn progress(start: Instant, done: usize, total: usize) -> String {
    let vm = stats::proc_stats(std::process::id())
        .map(|s| {
            format!(
                "VmSize {:>9}  VmRSS {:>9}",
                format_kib(s.raw.vm_size_kib),
                format_kib(s.raw.vm_rss_kib)
            )
        })
        .unwrap_or_else(|e| format!("(stats: {e})"));
    format!(
        "{:>8.2}s  touched {done:>8}/{total} pages ({:>9})  {vm}",
        start.elapsed().as_secs_f64(),
        format_bytes((done * PAGE) as u64),
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("tamalloc: warning: prctl(PR_SET_THP_DISABLE): {e}; huge pages may merge faults");
    }
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    let mut region = alloc(args.size).with_context(|| format!("allocating {}", args.size))?;
    let base = region.as_mut_ptr();
    let len = region.len();
    let pages = len / PAGE;
    let touched = usize::try_from(args.touch.of(pages as u64))
        .unwrap_or(pages)
        .min(pages);
    let order = touch_order(pages, touched, args.pattern, args.seed);
    let rate = if args.rate == 0 {
        "as fast as possible".to_owned()
    } else {
        format!("at {}/s", format_bytes(args.rate))
    };
    writeln!(
        out,
        "demo: pid {}, {} at {base:p} via {}, touching {} = {touched} of {pages} pages ({}{}) {rate}",
        std::process::id(),
        format_bytes(len as u64),
        match region.path() {
            tamalloc::Path::Syscall => "syscall 554",
            tamalloc::Path::Fallback => "the mmap fallback (no syscall 554)",
        },
        args.touch,
        match args.pattern {
            Pattern::Seq => "in order",
            Pattern::Random => "random order",
        },
        if args.read_first { ", read first" } else { "" },
    )?;
    writeln!(out, "{}", progress(start, 0, touched))?;

    let touch_start = Instant::now();
    let mut last_report = Instant::now();
    for (i, &page) in order.iter().enumerate() {
        if args.rate > 0 {
            // Page i is due at i * PAGE / rate seconds after touch_start.
            let due = Duration::from_secs_f64(i as f64 * PAGE as f64 / args.rate as f64);
            let now = touch_start.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        // SAFETY: page < pages, so base + page * PAGE lies inside the live region, which we own
        // mutably; volatile so that each access is exactly one load/store the kernel sees.
        unsafe {
            let p = base.add(page * PAGE);
            if args.read_first {
                std::ptr::read_volatile(p);
            }
            std::ptr::write_volatile(p, 1);
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            writeln!(out, "{}", progress(start, i + 1, touched))?;
            last_report = Instant::now();
        }
    }
    writeln!(out, "{}", progress(start, touched, touched))?;

    if !args.hold.is_zero() {
        let until = Instant::now() + args.hold;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_secs(1)));
            writeln!(out, "{}  (holding)", progress(start, touched, touched))?;
        }
    }

    let n = touched as u64;
    let summary = Summary {
        kind: "demo",
        pid: std::process::id(),
        path: region.path().name(),
        addr: base as u64,
        len: len as u64,
        pages: pages as u64,
        read_zero: if args.read_first { n } else { 0 },
        write_zero: if args.read_first { 0 } else { n },
        cow_zero: if args.read_first { n } else { 0 },
        cow: 0,
        other: 0,
    };
    writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    out.flush()?;
    region.free().context("unmapping the region")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_order_is_a_seeded_sample_without_repeats() {
        let a = touch_order(1000, 300, Pattern::Random, 7);
        let b = touch_order(1000, 300, Pattern::Random, 7);
        let c = touch_order(1000, 300, Pattern::Random, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 300);
        assert!(s.iter().all(|&p| p < 1000));
        let all = touch_order(64, 64, Pattern::Random, 0);
        let mut all_sorted = all.clone();
        all_sorted.sort_unstable();
        assert_eq!(all_sorted, (0..64).collect::<Vec<_>>());
    }

    #[test]
    fn seq_order_is_the_first_pages() {
        assert_eq!(touch_order(10, 3, Pattern::Seq, 1), vec![0, 1, 2]);
        assert!(touch_order(10, 0, Pattern::Seq, 1).is_empty());
    }
}
