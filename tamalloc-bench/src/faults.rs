//! `tamalloc-bench faults`: the benchmark workload of `cargo xtask bench`.
//!
//! THP is switched off for the process, then each of `--threads` threads allocates one region
//! with `tamalloc::alloc` and writes one byte to each of its pages (one first-touch
//! `write_zero` fault per page), then frees it. Only the touching is timed, from a barrier
//! that all threads pass together to the last thread's end, so tracer start-up and the
//! allocations are not in the figure. `--regions` adds untouched one-page regions, 2 MiB apart
//! (each in a chunk of its own in the tracer's map), to show the fault path does not depend
//! on how many regions a process has. One JSON line reports it:
//! `{"type":"bench_faults","pid","threads","pages","regions","path","start_unix_ns",
//! "elapsed_ns","faults_per_sec"}`.

use std::{
    path::PathBuf,
    ptr,
    sync::{Arc, Barrier},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use crate::output::emit;

#[derive(clap::Args)]
pub struct Args {
    /// First-touch faults to make in all, split evenly among the threads.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    pages: u64,
    /// Threads touching at once, each its own region.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Regions in the process in all (one per thread at least; the others are one page each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16_000))]
    regions: u64,
    /// First touch and free as many pages, untimed, right before the timed pass: on a VM whose
    /// balloon reports free pages to the host, fresh guest pages otherwise cost a host fault
    /// each, which depends on what ran before more than on the guest kernel.
    #[arg(long)]
    prime: bool,
    /// Append the JSON line to FILE instead of writing it to stdout.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

const PAGE: usize = 4096;
/// Room left after each extra region so that it has a 2 MiB chunk to itself.
const GAP: usize = 2 << 20;

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub pages: u64,
    pub threads: u32,
    pub regions: u64,
    pub path: tamalloc::Path,
    pub elapsed_ns: u64,
}

impl Outcome {
    pub fn faults_per_sec(&self) -> f64 {
        self.pages as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }
}

/// Wall-clock nanoseconds, to compare with a launcher's clock.
fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An untouched `PROT_NONE` mapping that keeps the next region 2 MiB away; unmapped on drop.
struct Gap(*mut libc::c_void);

impl Gap {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: an anonymous mapping at an address of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                GAP,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mmap of a gap: {}", std::io::Error::last_os_error());
        }
        Ok(Self(p))
    }
}

impl Drop for Gap {
    fn drop(&mut self) {
        // SAFETY: our own mapping of GAP bytes, not used after this.
        unsafe { libc::munmap(self.0, GAP) };
    }
}

/// Touches and frees `pages` pages with `threads` threads (untimed).
fn prime(pages: u64, threads: u32) -> anyhow::Result<()> {
    let per_thread = (pages / u64::from(threads)).max(1) as usize;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut r = tamalloc::alloc(per_thread * PAGE).context("allocating a region")?;
                let base = r.as_mut_ptr();
                for page in 0..per_thread {
                    // SAFETY: the page is inside the live writable region `r`.
                    unsafe { ptr::write_volatile(base.add(page * PAGE), 1) };
                }
                r.free().context("freeing a region")?;
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a priming thread panicked"))??;
    }
    Ok(())
}

/// Runs the workload in this process (also used in-process by `ab` and `bpf`).
pub fn run_workload(
    pages: u64,
    threads: u32,
    regions: u64,
    primed: bool,
) -> anyhow::Result<Outcome> {
    // One fault per page: no transparent huge pages for this process.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_THP_DISABLE): {}",
            std::io::Error::last_os_error()
        );
    }
    let regions = regions.max(u64::from(threads));
    if primed {
        prime(pages, threads)?;
    }
    let mut extra = Vec::new();
    for _ in u64::from(threads)..regions {
        let r = tamalloc::alloc(PAGE).context("allocating an extra region")?;
        extra.push((r, Gap::new()?));
    }
    let per_thread = (pages / u64::from(threads)).max(1);
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let done = Arc::new(Barrier::new(threads as usize + 1));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (start, done) = (Arc::clone(&start), Arc::clone(&done));
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<tamalloc::Path> {
                let region = tamalloc::alloc(per_thread as usize * PAGE);
                // Pass the barriers whatever happened, so no thread waits forever.
                start.wait();
                let touched = region.map(|mut r| {
                    let base = r.as_mut_ptr();
                    for page in 0..per_thread as usize {
                        // SAFETY: the page is inside the live writable region `r`.
                        unsafe { ptr::write_volatile(base.add(page * PAGE), 1) };
                    }
                    r
                });
                done.wait();
                let r = touched.context("allocating the touched region")?;
                let path = r.path();
                r.free().context("freeing the touched region")?;
                Ok(path)
            },
        ));
    }
    start.wait();
    let t0 = Instant::now();
    done.wait();
    let elapsed = t0.elapsed();
    let mut path = tamalloc::Path::Fallback;
    for h in handles {
        path = h
            .join()
            .map_err(|_| anyhow::anyhow!("a touching thread panicked"))??;
    }
    drop(extra);
    Ok(Outcome {
        pages: per_thread * u64::from(threads),
        threads,
        regions,
        path,
        elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start_unix_ns = unix_ns();
    let o = run_workload(args.pages, args.threads, args.regions, args.prime)?;
    let line = format!(
        "{{\"type\":\"bench_faults\",\"pid\":{},\"threads\":{},\"pages\":{},\"regions\":{},\"path\":\"{}\",\"start_unix_ns\":{},\"elapsed_ns\":{},\"faults_per_sec\":{:.0}}}\n",
        std::process::id(),
        o.threads,
        o.pages,
        o.regions,
        o.path.name(),
        start_unix_ns,
        o.elapsed_ns,
        o.faults_per_sec()
    );
    emit(args.report.as_deref(), &line)
}
