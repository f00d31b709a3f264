//! `tamalloc-bench scenario NAME`: workloads that each walk one path of the kernel where a
//! tracer that replays syscalls and guesses from a fault's error code goes wrong (issue 13),
//! and that each know their exact truth: from their own bookkeeping, and from the kernel
//! itself after the fact (mincore(2), /proc/self/smaps, a page's content).
//!
//! Each prints one `expect` line per process, the same line `tamalloc-bench workload` prints
//! (the five kinds and `regions`, compared by `check-trace`), plus `scenario` and `truth`
//! (where the counts come from), `huge_faults` where THP first touches happen, `tracepoint`
//! (the fields whose value differs in tracepoint mode by that mode's documented design:
//! it sees only the process's own faults and counts a THP fault as one, and its README
//! "Known limits" with `limit` quoting the sentence), `kernel` (the same for kernel mode),
//! `map_full` (in those objects, where a limit fills a map) and `info` (what
//! the kernel reported, for diagnosis; not compared). The counts are kernel mode's: what the
//! kernel did, in pages (docs: /work/notes/tracer-interface.md, README "What is counted"). A scenario the running kernel cannot walk (no THP, no mseal, no ia32
//! emulation...) prints a `skip` line with the reason instead, and still exits 0: the
//! caller decides what a skip means, and says so.

mod anon;
mod fork;
mod huge;
mod ia32;
mod limits;
mod mapping;
mod memory;
mod populate;
mod signals;

use std::{path::PathBuf, ptr};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tamalloc_common::trace::{FAULT_KINDS, FaultKind};

use crate::output::emit;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
    /// Append the expectation lines to this file instead of stdout.
    #[arg(long, global = true)]
    report: Option<PathBuf>,
}

/// The scenarios, one per path of issue 13.
#[derive(clap::Subcommand)]
enum Scenario {
    /// Reads of PROT_NONE region pages, each ending in a caught SIGSEGV: 8 `other`.
    ProtNone,
    /// A non-leader thread calls execve; the new image writes 64 region pages.
    ExecThread,
    /// (internal) The image `exec-thread` execs into.
    #[command(hide = true)]
    ExecImage {
        /// The pid the process had before the exec (it must keep it).
        #[arg(long)]
        old_pid: u32,
    },
    /// A MADV_WIPEONFORK region: the child's writes are first touches.
    Wipeonfork,
    /// MADV_DONTNEED over a span with a hole fails with ENOMEM but drops the pages.
    DontneedHole,
    /// A pre-fork server: a parent with many regions forks many children.
    Prefork(fork::PreforkArgs),
    /// MADV_FREE keeps pages until reclaim: re-touching them is not a first touch.
    MadvFree,
    /// THP first touches (MADV_HUGEPAGE): one fault, 512 pages.
    Thp,
    /// MADV_COLLAPSE fills a huge page the process never touched in full.
    Collapse,
    /// Pages populated without a fault of the process (MADV_POPULATE_WRITE,
    /// process_vm_writev) and by read(2), then touched.
    Gup,
    /// userfaultfd UFFDIO_COPY installs pages, then they are touched.
    UffdCopy,
    /// A sibling thread faults region pages while another thread forks.
    ForkRace,
    /// munmap calls that fail (EINVAL, and EPERM on a sealed range) keep the region.
    MunmapFail,
    /// mremap(MREMAP_FIXED) of a plain mapping onto region pages replaces them.
    MremapOnto,
    /// A CLONE_VM child without CLONE_THREAD adds, shrinks and touches regions.
    CloneVm,
    /// ia32 syscalls (int 0x80) whose numbers mean something else on x86-64.
    Ia32,
    /// `--regions anon`: the heap (sbrk), a large calloc and a plain mmap of a program that
    /// never calls tamalloc, each touched in a known pattern (`range` lines).
    Anon,
    /// `--regions name:arena`: ranges named `arena` and otherwise with prctl, touched.
    Named,
    /// A region longer than the tracer's CHUNKS room (520 GiB, MAP_NORESERVE).
    ChunksCut,
    /// More followed processes alive at once than TRACED holds.
    TracedFull {
        /// Children alive at once.
        #[arg(long, default_value_t = 16_500, value_parser = clap::value_parser!(u64).range(1..=30_000))]
        children: u64,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = args.report.as_deref();
    let out = match args.scenario {
        Scenario::ProtNone => signals::prot_none(report),
        Scenario::ExecThread => fork::exec_thread(report),
        Scenario::ExecImage { old_pid } => fork::exec_image(report, old_pid),
        Scenario::Wipeonfork => fork::wipeonfork(report),
        Scenario::DontneedHole => memory::dontneed_hole(report),
        Scenario::Prefork(a) => fork::prefork(report, &a),
        Scenario::MadvFree => memory::madv_free(report),
        Scenario::Thp => huge::thp(report),
        Scenario::Collapse => huge::collapse(report),
        Scenario::Gup => populate::gup(report),
        Scenario::UffdCopy => populate::uffd_copy(report),
        Scenario::ForkRace => fork::fork_race(report),
        Scenario::MunmapFail => mapping::munmap_fail(report),
        Scenario::MremapOnto => mapping::mremap_onto(report),
        Scenario::CloneVm => mapping::clone_vm(report),
        Scenario::Ia32 => ia32::ia32(report),
        Scenario::Anon => anon::anon(report),
        Scenario::Named => anon::named(report),
        Scenario::ChunksCut => limits::chunks_cut(report),
        Scenario::TracedFull { children } => limits::traced_full(report, children),
    }?;
    if let Outcome::Skipped(line) = out {
        eprintln!("tamalloc-bench scenario: skipped: {}", line["reason"]);
        emit(report, &format!("{line}\n"))?;
    }
    Ok(())
}

/// How a scenario ended: it ran (and printed its lines), or the kernel cannot walk it.
pub enum Outcome {
    Ran,
    Skipped(Value),
}

pub fn skip(scenario: &str, reason: impl Into<String>) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skipped(
        json!({"type": "skip", "scenario": scenario, "reason": reason.into()}),
    ))
}

/// One process's exact counts, and where they come from.
pub struct Truth {
    pub scenario: &'static str,
    pub truth: &'static str,
    pub pid: u32,
    pub kinds: [u64; FAULT_KINDS],
    pub regions: u64,
    /// THP first touches (kernel mode's `huge_faults`), when the scenario makes any.
    pub huge_faults: Option<u64>,
    /// Where tracepoint mode counts otherwise by its documented design (README: it sees
    /// only faults of the process, counts faults, not pages, and its listed limits): those
    /// fields' values, and `limit`, the README sentence.
    pub tracepoint: serde_json::Map<String, Value>,
    /// Where kernel mode counts otherwise by a README "Known limits" sentence (`limit`).
    pub kernel: serde_json::Map<String, Value>,
    pub info: serde_json::Map<String, Value>,
}

impl Truth {
    /// This process's truth, all counts zero.
    pub fn new(scenario: &'static str, truth: &'static str) -> Self {
        Self {
            scenario,
            truth,
            pid: std::process::id(),
            kinds: [0; FAULT_KINDS],
            regions: 0,
            huge_faults: None,
            tracepoint: serde_json::Map::new(),
            kernel: serde_json::Map::new(),
            info: serde_json::Map::new(),
        }
    }

    pub fn add(&mut self, kind: FaultKind, n: u64) {
        self.kinds[kind as usize] += n;
    }

    /// In tracepoint mode, `field` is `v` (see [`Truth::tracepoint`]).
    pub fn tracepoint(&mut self, field: &str, v: impl Into<Value>) {
        self.tracepoint.insert(field.to_owned(), v.into());
    }

    /// Tracepoint mode counts `kinds` instead, as README's "Known limits, tracepoint mode"
    /// documents (`limit` quotes it).
    pub fn tracepoint_limit(&mut self, limit: &str, kinds: &[(FaultKind, u64)]) {
        limit_in(&mut self.tracepoint, limit, kinds);
    }

    /// Both modes count `kinds` instead, as README's "Known limits, both modes" documents
    /// (`limit` quotes it).
    pub fn limit_in_both_modes(&mut self, limit: &str, kinds: &[(FaultKind, u64)]) {
        limit_in(&mut self.tracepoint, limit, kinds);
        limit_in(&mut self.kernel, limit, kinds);
    }

    /// `field` is `v` in both modes (with a limit set by the calls above).
    pub fn in_both_modes(&mut self, field: &str, v: impl Into<Value> + Clone) {
        self.tracepoint.insert(field.to_owned(), v.clone().into());
        self.kernel.insert(field.to_owned(), v.into());
    }

    pub fn info(&mut self, key: &str, v: impl Into<Value>) {
        self.info.insert(key.to_owned(), v.into());
    }

    pub fn line(&self) -> String {
        let mut v = json!({"type": "expect", "pid": self.pid});
        for k in FaultKind::ALL {
            v[k.name()] = self.kinds[k as usize].into();
        }
        v["regions"] = self.regions.into();
        if let Some(h) = self.huge_faults {
            v["huge_faults"] = h.into();
        }
        if !self.tracepoint.is_empty() {
            v["tracepoint"] = Value::Object(self.tracepoint.clone());
        }
        if !self.kernel.is_empty() {
            v["kernel"] = Value::Object(self.kernel.clone());
        }
        v["scenario"] = self.scenario.into();
        v["truth"] = self.truth.into();
        v["info"] = Value::Object(self.info.clone());
        format!("{v}\n")
    }

    pub fn emit(&self, report: Option<&std::path::Path>) -> anyhow::Result<()> {
        emit(report, &self.line())
    }
}

/// Sets the five kinds to `kinds` (absent: 0) and quotes `limit`, in one mode's overrides.
fn limit_in(mode: &mut serde_json::Map<String, Value>, limit: &str, kinds: &[(FaultKind, u64)]) {
    for k in FaultKind::ALL {
        let v = kinds.iter().find(|(x, _)| *x == k).map_or(0, |(_, n)| *n);
        mode.insert(k.name().to_owned(), v.into());
    }
    mode.insert("limit".to_owned(), limit.into());
}

pub const PAGE: usize = 4096;

/// README "Known limits, tracepoint mode": pages present that it believes empty.
pub const UNSEEN_PRESENT_LIMIT: &str = "THP, `MADV_COLLAPSE`/khugepaged and `UFFDIO_COPY` can \
     leave pages present that the tracer believes empty, so a later swap-in or NUMA-hinting \
     fault on them counts as a first touch, and a forked child's write to them counts \
     `cow_zero`, not `cow`.";
/// README "Known limits, tracepoint mode": first touches without a fault.
pub const NO_FAULT_LIMIT: &str = "First touches made without a fault are not seen \
     (`MADV_POPULATE_WRITE`, `mlock`, `MAP_POPULATE`, O_DIRECT reads into a region, \
     `process_vm_writev` into it); VmRSS still shows them, and a forked child's write to such \
     a page counts `cow_zero`, not `cow`.";

/// Switches transparent huge pages off for this process (and its children), so that each
/// page is one fault; the THP scenarios leave it on.
pub fn no_thp() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// A tamalloc region of `pages` pages (syscall 554, or the documented fallback), kept for
/// the life of the process.
pub fn region(pages: usize) -> anyhow::Result<*mut u8> {
    let r = tamalloc::alloc(pages * PAGE).context("allocating a region")?;
    let (p, _, _) = r.into_raw();
    Ok(p.as_ptr())
}

/// A plain anonymous mapping (not a region), at `addr` with `flags` (MAP_FIXED...) if given;
/// callers pass MAP_FIXED only over ranges they own.
pub fn plain(pages: usize, addr: *mut u8, flags: libc::c_int) -> anyhow::Result<*mut u8> {
    crate::workload::mmap_plain(pages * PAGE, addr.cast(), flags)
}

pub fn page(base: *mut u8, i: usize) -> *mut u8 {
    base.wrapping_add(i * PAGE)
}

/// Reads the first byte of page `i`.
pub fn read(base: *mut u8, i: usize) -> u8 {
    // SAFETY: callers pass a page of a live readable mapping of their own.
    unsafe { ptr::read_volatile(page(base, i)) }
}

/// Writes the first byte of page `i`.
pub fn write(base: *mut u8, i: usize) {
    // SAFETY: callers pass a page of a live writable mapping of their own.
    unsafe { ptr::write_volatile(page(base, i), 0x5a) };
}

/// Writes pages `range` of `base`.
pub fn write_pages(base: *mut u8, range: std::ops::Range<usize>) {
    for i in range {
        write(base, i);
    }
}

/// Which of `pages` pages at `base` are resident, as mincore(2) reports them.
pub fn resident(base: *mut u8, pages: usize) -> anyhow::Result<Vec<bool>> {
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` holds one byte per page of the range; the kernel checks the range.
    if unsafe { libc::mincore(base.cast(), pages * PAGE, vec.as_mut_ptr()) } != 0 {
        bail!("mincore: {}", std::io::Error::last_os_error());
    }
    Ok(vec.into_iter().map(|b| b & 1 != 0).collect())
}

/// How many of `pages` pages at `base` are resident.
pub fn resident_count(base: *mut u8, pages: usize) -> anyhow::Result<u64> {
    Ok(resident(base, pages)?.into_iter().filter(|&r| r).count() as u64)
}

/// madvise(2), failing with the errno.
pub fn madvise(addr: *mut u8, pages: usize, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: callers advise only ranges they own; the kernel validates the rest.
    if unsafe { libc::madvise(addr.cast(), pages * PAGE, advice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// fork(2) from a process with one thread (or whose other threads hold no locks the child
/// needs): runs `child` in the child, which exits with its result; returns the child's pid.
pub fn fork_child(child: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<libc::pid_t> {
    // SAFETY: see above; the child leaves with _exit, never returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = match child() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tamalloc-bench scenario (child): {e:#}");
                1
            }
        };
        // SAFETY: leave without running the parent's exit handlers twice.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for child `pid`, which must have exited with status 0.
pub fn wait_ok(pid: libc::pid_t) -> anyhow::Result<()> {
    let mut status = 0;
    // SAFETY: waiting for our own child; __WALL also waits for clone children.
    if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
        bail!("waitpid {pid}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("child {pid} failed (wait status {status:#x})");
    }
    Ok(())
}
