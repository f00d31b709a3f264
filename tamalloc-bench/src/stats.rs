//! `tamalloc-bench stats`: the cost of the statistics and allocation syscalls of the
//! patched kernel against what tools do without them. Run inside the patched kernel (`cargo
//! xtask bench` boots it under QEMU).
//!
//! - Syscall 555 with pid 0 (every process, into a buffer allocated once) against scraping
//!   `/proc` as procps does: list `/proc`, then read `/proc/PID/status` and
//!   `/proc/PID/oom_score` of every process and parse the status.
//! - Syscall 554 + `munmap` against `mmap` + `munmap` of one page, in batches.
//!
//! Both sides alternate within every iteration (ABAB...), and medians are reported in one JSON
//! line per `--procs` count: `{"type":"bench_stats","iterations","procs_syscall",
//! "procs_procfs","syscall_ns","procfs_ns","alloc_batch","tamalloc_ns","mmap_ns","vmas"}` (per
//! call or per pair; `vmas`: VMAs of one sleeping child, what 555 walks per process). The sleeping children are killed and reaped on the way out, errors included.

use std::{fs, io::Read as _, time::Instant};

use anyhow::{Context as _, bail};
use tamalloc_common::abi::{self, SYS_GET_MEMORY_USAGE_STATS, SYS_TAMALLOC};

#[derive(clap::Args)]
pub struct Args {
    /// Measurements of each side (medians are reported).
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    iterations: u32,
    /// Process counts to measure at: before each, children that only sleep are forked until
    /// the pid namespace holds that many processes (forked, not exec'd: cheap under TCG).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    procs: Vec<usize>,
    /// Allocation pairs per timed batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    alloc_batch: u32,
}

const PAGE: usize = 4096;

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Syscall 555 with pid 0 into `buf`; the number of processes.
fn stats_all(buf: &mut [abi::ProcStats]) -> anyhow::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` records of the size we pass into `buf`,
    // which is plain data valid for any bytes.
    let r = unsafe {
        libc::syscall(
            SYS_GET_MEMORY_USAGE_STATS as libc::c_long,
            0 as libc::c_long,
            buf.as_mut_ptr(),
            buf.len() as libc::c_long,
            size_of::<abi::ProcStats>(),
            0 as libc::c_long,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            bail!("syscall 555 is missing: run this inside the patched kernel");
        }
        return Err(e).context("syscall 555 with pid 0");
    }
    let n = r as usize;
    if n > buf.len() {
        bail!(
            "{n} processes: more than the {} the buffer holds",
            buf.len()
        );
    }
    Ok(n)
}

/// What procps does for each process: status and oom_score, parsed. Returns the number of
/// processes with memory (kernel threads have no VmSize).
fn scrape_proc(buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut sum = 0u64;
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        buf.clear();
        let Ok(mut f) = fs::File::open(format!("/proc/{pid}/status")) else {
            continue;
        };
        if f.read_to_end(buf).is_err() {
            continue;
        }
        let st = tamalloc::stats::parse_status(buf);
        buf.clear();
        let Ok(mut f) = fs::File::open(format!("/proc/{pid}/oom_score")) else {
            continue;
        };
        if f.read_to_end(buf).is_err() {
            continue;
        }
        let oom: u64 = std::str::from_utf8(buf)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if let Some(size) = st.vm_size_kib {
            n += 1;
            sum = sum.wrapping_add(size + st.vm_rss_kib + oom);
        }
    }
    std::hint::black_box(sum);
    Ok(n)
}

fn tamalloc_pair() -> anyhow::Result<()> {
    // SAFETY: syscall 554 takes one size and touches no user memory.
    let p = unsafe { libc::syscall(SYS_TAMALLOC as libc::c_long, PAGE) };
    if p < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            bail!("syscall 554 is missing: run this inside the patched kernel");
        }
        return Err(e).context("syscall 554");
    }
    // SAFETY: the page just mapped by 554, ours alone.
    unsafe { libc::munmap(p as usize as *mut libc::c_void, PAGE) };
    Ok(())
}

fn mmap_pair() -> anyhow::Result<()> {
    // SAFETY: an anonymous mapping at an address of the kernel's choosing, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap");
        }
        libc::munmap(p, PAGE);
    }
    Ok(())
}

/// Forked children that only sleep; killed and reaped on drop.
struct Sleepers(Vec<libc::pid_t>);

impl Sleepers {
    fn add(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            // SAFETY: this process is single-threaded; the child only calls pause and _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(std::io::Error::last_os_error()).context("fork");
            }
            if pid == 0 {
                loop {
                    // SAFETY: async-signal-safe calls only in the forked child.
                    unsafe { libc::pause() };
                }
            }
            self.0.push(pid);
        }
        Ok(())
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.0 {
            // SAFETY: reaping our own child; a null status pointer is allowed.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut buf = vec![abi::ProcStats::default(); 8192];
    let mut text = Vec::with_capacity(4096);
    let mut sleepers = Sleepers(Vec::new());
    let mut targets = args.procs.clone();
    targets.sort_unstable();
    for target in targets {
        if target > buf.len() {
            bail!("at most {} processes", buf.len());
        }
        let now = stats_all(&mut buf)?;
        sleepers.add(target.saturating_sub(now))?;
        // What 555 walks in each process: its VMAs (a sleeper is a copy of this process).
        let vmas = sleepers.0.first().map_or(0, |pid| {
            fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |m| m.lines().count())
        });
        measure(&args, &mut buf, &mut text, vmas)?;
    }
    drop(sleepers);
    Ok(())
}

fn measure(
    args: &Args,
    buf: &mut [abi::ProcStats],
    text: &mut Vec<u8>,
    vmas: usize,
) -> anyhow::Result<()> {
    // Warm-up: dentries, slab caches.
    let procs_syscall = stats_all(buf)?;
    let procs_procfs = scrape_proc(text)?;
    tamalloc_pair()?;
    mmap_pair()?;
    let (mut sys, mut procfs, mut ta, mut mm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.iterations {
        let t = Instant::now();
        std::hint::black_box(stats_all(buf)?);
        sys.push(elapsed_ns(t));
        let t = Instant::now();
        std::hint::black_box(scrape_proc(text)?);
        procfs.push(elapsed_ns(t));
        let t = Instant::now();
        for _ in 0..args.alloc_batch {
            tamalloc_pair()?;
        }
        ta.push(elapsed_ns(t) / u64::from(args.alloc_batch));
        let t = Instant::now();
        for _ in 0..args.alloc_batch {
            mmap_pair()?;
        }
        mm.push(elapsed_ns(t) / u64::from(args.alloc_batch));
    }
    println!(
        "{{\"type\":\"bench_stats\",\"iterations\":{},\"procs_syscall\":{procs_syscall},\"procs_procfs\":{procs_procfs},\"syscall_ns\":{},\"procfs_ns\":{},\"alloc_batch\":{},\"tamalloc_ns\":{},\"mmap_ns\":{},\"vmas\":{vmas}}}",
        args.iterations,
        median(&mut sys),
        median(&mut procfs),
        args.alloc_batch,
        median(&mut ta),
        median(&mut mm),
    );
    Ok(())
}
