//! `tamalloc compare`: malloc, malloc+memset, calloc, mmap and tamalloc side by side, each
//! measured in a fresh process (`tamalloc compare-child`, hidden) so that one method's heap
//! or freed mappings cannot flatter the next.

use std::{
    io::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tamalloc::{
    alloc,
    size::{Percent, arg, format_bytes, format_kib_delta},
    stats::self_vm_kib,
};

const PAGE: usize = 4096;

/// The long help of the command (the subcommand's one-line doc in cli/mod.rs is its summary).
const HELP: &str = "Allocate the same size with malloc, malloc+memset, calloc, mmap and tamalloc, each in a fresh child process, and measure VmSize/VmRSS (from /proc/self/status) and time right after the allocation and after touching a share of the pages, then check the memory reads as zero.\n\
\n\
ZERO-INITIALISED says whether the method promises zeroed memory (✔/❌) and what was read. VMSIZE and VMRSS \"at once\" are ✔ when the allocation itself grew them by at least 90% of the size. glibc serves large malloc/calloc requests (above M_MMAP_THRESHOLD, 128 KiB to 32 MiB) with a fresh mmap, whose pages are zero-filled lazily by the kernel: such a calloc is lazy too.";

/// Arguments of `tamalloc compare`; [`HELP`] explains the output.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Size of each allocation: 4096, 512k, 256MiB, 1G.
    #[arg(long, default_value = "256MiB", value_parser = arg::size)]
    size: usize,
    /// Share of the pages to touch (one byte written per page) after allocating, 0% to 100%.
    #[arg(long, default_value = "10%", value_parser = arg::percent)]
    touch: Percent,
    /// One JSON object per method and line instead of the table.
    #[arg(long)]
    json: bool,
}

/// `tamalloc compare-child`: one measurement, printed as one JSON line.
#[derive(clap::Args)]
pub struct ChildArgs {
    #[arg(long, value_enum)]
    method: Method,
    #[arg(long, value_parser = arg::size)]
    size: usize,
    #[arg(long, value_parser = arg::percent)]
    touch: Percent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Method {
    Malloc,
    MallocMemset,
    Calloc,
    Mmap,
    Tamalloc,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Malloc,
        Method::MallocMemset,
        Method::Calloc,
        Method::Mmap,
        Method::Tamalloc,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Malloc => "malloc",
            Method::MallocMemset => "malloc+memset",
            Method::Calloc => "calloc",
            Method::Mmap => "mmap",
            Method::Tamalloc => "tamalloc",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Method::Malloc => "malloc",
            Method::MallocMemset => "malloc-memset",
            Method::Calloc => "calloc",
            Method::Mmap => "mmap",
            Method::Tamalloc => "tamalloc",
        }
    }

    /// Whether the API promises zero-filled memory.
    fn zero_guaranteed(self) -> bool {
        !matches!(self, Method::Malloc)
    }
}

/// One method's measurement (the child's JSON line; `compare --json` prints these).
#[derive(Debug, Serialize, Deserialize)]
struct Measurement {
    #[serde(rename = "type")]
    kind: String,
    method: Method,
    size: u64,
    /// "syscall" or "fallback" for tamalloc.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path: Option<String>,
    zero_guaranteed: bool,
    /// Every byte read as zero (checked after the measurements, untouched bytes included).
    read_zero: bool,
    alloc_ns: u64,
    vm_size_alloc_kib: i64,
    vm_rss_alloc_kib: i64,
    touched_pages: u64,
    touch_ns: u64,
    vm_size_touch_kib: i64,
    vm_rss_touch_kib: i64,
}

/// Frees what `allocate` made.
enum Allocation {
    Heap(*mut u8),
    Mapping(*mut u8, usize),
    Region(tamalloc::Region),
}

impl Allocation {
    fn ptr(&mut self) -> *mut u8 {
        match self {
            Allocation::Heap(p) | Allocation::Mapping(p, _) => *p,
            Allocation::Region(r) => r.as_mut_ptr(),
        }
    }

    fn release(self) {
        match self {
            // SAFETY: p came from malloc/calloc and is freed once.
            Allocation::Heap(p) => unsafe { libc::free(p.cast()) },
            // SAFETY: p/len is the mapping made in allocate, unmapped once.
            Allocation::Mapping(p, len) => unsafe {
                libc::munmap(p.cast(), len);
            },
            Allocation::Region(r) => drop(r),
        }
    }
}

fn allocate(method: Method, size: usize) -> anyhow::Result<Allocation> {
    let heap = |p: *mut libc::c_void, what: &str| {
        if p.is_null() {
            bail!("{what}({size}) failed: {}", std::io::Error::last_os_error())
        }
        Ok(Allocation::Heap(p.cast()))
    };
    match method {
        // SAFETY: plain libc allocation; the result is checked for NULL.
        Method::Malloc => heap(unsafe { libc::malloc(size) }, "malloc"),
        Method::MallocMemset => {
            // SAFETY: as above.
            let a = heap(unsafe { libc::malloc(size) }, "malloc")?;
            if let Allocation::Heap(p) = a {
                // black_box: otherwise LLVM folds malloc + memset(0) into calloc, and the
                // release build measures calloc twice.
                let p = std::hint::black_box(p);
                // SAFETY: p points to size writable bytes.
                unsafe { libc::memset(p.cast(), 0, size) };
            }
            Ok(a)
        }
        // SAFETY: as above.
        Method::Calloc => heap(unsafe { libc::calloc(1, size) }, "calloc"),
        Method::Mmap => {
            // SAFETY: a fresh private anonymous mapping that aliases nothing.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                bail!("mmap({size}) failed: {}", std::io::Error::last_os_error());
            }
            Ok(Allocation::Mapping(p.cast(), size))
        }
        Method::Tamalloc => Ok(Allocation::Region(
            alloc(size).with_context(|| format!("tamalloc({size})"))?,
        )),
    }
}

/// Whether `len` bytes at `p` are all zero. The comparison runs in C (`memcmp`), so the
/// bytes malloc left uninitialised are never read as Rust values.
fn all_zero(p: *const u8, len: usize) -> bool {
    static ZEROS: [u8; 65536] = [0; 65536];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(ZEROS.len());
        // SAFETY: p..p+len is readable (the caller's live allocation), ZEROS has n bytes.
        let r = unsafe { libc::memcmp(p.add(off).cast(), ZEROS.as_ptr().cast(), n) };
        if r != 0 {
            return false;
        }
        off += n;
    }
    true
}

fn delta(after: u64, before: u64) -> i64 {
    after as i64 - before as i64
}

pub fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    // Warm up: the first reading faults in its own code and buffers, which would show up in
    // the first difference.
    self_vm_kib()?;
    let (size0, rss0) = self_vm_kib()?;
    let t0 = Instant::now();
    let mut a = allocate(args.method, args.size)?;
    let alloc_ns = t0.elapsed().as_nanos() as u64;
    let (size1, rss1) = self_vm_kib()?;

    let base = a.ptr();
    let pages = args.size.div_ceil(PAGE);
    let touched = usize::try_from(args.touch.of(pages as u64))
        .unwrap_or(pages)
        .min(pages);
    let t1 = Instant::now();
    for i in 0..touched {
        // SAFETY: i * PAGE < size: inside the allocation. Writing 0 keeps it zero-filled for
        // the check below while still being a write fault.
        unsafe { std::ptr::write_volatile(base.add(i * PAGE), 0) };
    }
    let touch_ns = t1.elapsed().as_nanos() as u64;
    let (size2, rss2) = self_vm_kib()?;

    let read_zero = all_zero(base, args.size);
    let path = match &a {
        Allocation::Region(r) => Some(r.path().name().to_owned()),
        _ => None,
    };
    a.release();
    let m = Measurement {
        kind: "compare".to_owned(),
        method: args.method,
        size: args.size as u64,
        path,
        zero_guaranteed: args.method.zero_guaranteed(),
        read_zero,
        alloc_ns,
        vm_size_alloc_kib: delta(size1, size0),
        vm_rss_alloc_kib: delta(rss1, rss0),
        touched_pages: touched as u64,
        touch_ns,
        vm_size_touch_kib: delta(size2, size1),
        vm_rss_touch_kib: delta(rss2, rss1),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

fn measure(method: Method, size: usize, touch: Percent) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("finding the tamalloc executable")?;
    let out = Command::new(&exe)
        .args(["compare-child", "--method", method.arg(), "--size"])
        .arg(size.to_string())
        .arg("--touch")
        .arg(touch.to_string())
        .output()
        .with_context(|| format!("running {} compare-child", exe.display()))?;
    if !out.status.success() {
        bail!(
            "measuring {}: the child failed ({}): {}",
            method.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("reading the measurement of {}: {line:?}", method.name()))
}

fn format_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", Duration::from_nanos(ns).as_secs_f64())
    }
}

/// Terminal columns of `s`: ❌ is a wide character, the rest here are narrow.
fn display_width(s: &str) -> usize {
    s.chars().map(|c| if c == '❌' { 2 } else { 1 }).sum()
}

fn mark(yes: bool) -> &'static str {
    if yes { "✔" } else { "❌" }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut results = Vec::with_capacity(Method::ALL.len());
    for m in Method::ALL {
        results.push(measure(m, args.size, args.touch)?);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for r in &results {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    let size_kib = (args.size as u64).div_ceil(1024) as i64;
    let most = |d: i64| d * 10 >= size_kib * 9;
    let touched = results.first().map_or(0, |r| r.touched_pages);
    writeln!(
        out,
        "compare: {} per method, then touching {} of the pages ({touched}), each in a fresh process; \
         VmSize/VmRSS from /proc/self/status",
        format_bytes(args.size as u64),
        args.touch
    )?;
    let header = [
        "METHOD".to_owned(),
        "ZERO-INITIALISED".to_owned(),
        "VMSIZE AT ONCE".to_owned(),
        "VMRSS AT ONCE".to_owned(),
        "ALLOC TIME".to_owned(),
        format!("TOUCH {}: ΔVMSIZE", args.touch),
        "ΔVMRSS".to_owned(),
        "TIME".to_owned(),
    ];
    let rows: Vec<[String; 8]> = results
        .iter()
        .map(|r| {
            let name = match &r.path {
                Some(p) => format!("{} ({p})", r.method.name()),
                None => r.method.name().to_owned(),
            };
            [
                name,
                format!(
                    "{} ({})",
                    mark(r.zero_guaranteed),
                    if r.read_zero { "read 0s" } else { "dirty" }
                ),
                format!(
                    "{} {}",
                    mark(most(r.vm_size_alloc_kib)),
                    format_kib_delta(r.vm_size_alloc_kib)
                ),
                format!(
                    "{} {}",
                    mark(most(r.vm_rss_alloc_kib)),
                    format_kib_delta(r.vm_rss_alloc_kib)
                ),
                format_ns(r.alloc_ns),
                format_kib_delta(r.vm_size_touch_kib),
                format_kib_delta(r.vm_rss_touch_kib),
                format_ns(r.touch_ns),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| display_width(&h));
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(display_width(c));
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < r.len() {
                line.extend(std::iter::repeat_n(' ', w - display_width(c)));
            }
        }
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "ZERO-INITIALISED ✔: the API promises zeros (in brackets: what was read); VMSIZE/VMRSS \
         AT ONCE ✔: the allocation alone grew it by ≥90% of the size."
    )?;
    Ok(())
}
