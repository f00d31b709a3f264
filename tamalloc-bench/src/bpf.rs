//! `tamalloc-bench bpf`: what each BPF program costs per run, from the kernel's own
//! statistics (`kernel.bpf_stats_enabled=1`: `run_time_ns` and `run_cnt` of every program).
//!
//! Each round measures, in a rotating order, the tracer's programs (counting mode, following
//! this process) with each `--regions` count, the minimal reference program
//! (`page_fault_reference`: a per-CPU counter on `exceptions:page_fault_user`, a raw
//! tracepoint like ours) and bpftrace's
//! per-PID fault count. Each measurement loads and attaches one of them, reads every program's
//! statistics, runs the `faults` workload in this process (one thread, `--pages`
//! first-touch faults), reads them again, and prints one JSON line per program that ran:
//! `{"type":"bpf_cost","round","variant","regions","program","id","run_cnt","run_time_ns",
//! "pages","elapsed_ns","counted","load_ms"}` (deltas over the workload; `counted` is the
//! tracer's write_zero count for this process, a check that the faults were seen; `load_ms`
//! the time `Probe::load` took: checks, load, verification, attach). The tracer is also
//! measured streaming every fault (`tamalloc-events`, its ring drained by a thread) and
//! following no process (`tamalloc-unfollowed`: every fault takes the not-a-region path),
//! and with `--stacks` (`tamalloc-stacks`) beside bpftrace's count by user stack
//! (`bpftrace-ustack`: `@[ustack] = count()`).

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::programs::{RawTracePoint, loaded_programs};
use tamalloc::tracer::{Probe, ProbeOptions};
use tamalloc_common::trace::FaultKind;

use crate::faults::run_workload;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// `BPF_PROG_TYPE_TRACEPOINT`.
const PROG_TYPE_TRACEPOINT: u32 = 5;
const BPFTRACE_PROGRAM: &str = "tracepoint:exceptions:page_fault_user { @[pid] = count(); }";
/// bpftrace's count by user stack: the peer of `tamalloc trace --stacks`.
const BPFTRACE_STACKS_PROGRAM: &str =
    "tracepoint:exceptions:page_fault_user { @[ustack] = count(); }";

/// The reference program's object, built from ebpf/ by build.rs (never shipped).
static REFERENCE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reference"));
/// Its one program, `fn page_fault_reference` in ebpf/src/main.rs, and where it attaches.
const REFERENCE_PROGRAM: &str = "page_fault_reference";
const REFERENCE_TRACEPOINT: &str = "page_fault_user";

#[derive(clap::Args)]
pub struct Args {
    /// First-touch faults per measurement.
    #[arg(long, default_value_t = 1 << 18, value_parser = clap::value_parser!(u64).range(1..=1 << 22))]
    pages: u64,
    /// Rounds; each measures every variant once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Region counts to measure the tracer with.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    regions: Vec<u64>,
    /// The bpftrace binary; `none` leaves bpftrace out.
    #[arg(long, default_value = "bpftrace")]
    bpftrace: String,
}

/// `kernel.bpf_stats_enabled=1` for as long as it lives; the previous value is put back on
/// drop (also on an error return or a panic).
struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    fn enable() -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?;
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(Self {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "tamalloc-bench: could not restore {STATS_SYSCTL} to {}: {e}",
                self.previous
            );
        }
    }
}

/// One program's statistics.
#[derive(Clone, Debug)]
struct ProgStats {
    name: String,
    prog_type: u32,
    run_time_ns: u64,
    run_cnt: u64,
}

/// Every loaded program's statistics, by id. Programs unloaded while we look are skipped.
fn snapshot() -> anyhow::Result<HashMap<u32, ProgStats>> {
    let mut out = HashMap::new();
    let mut first_err = None;
    for info in loaded_programs() {
        match info {
            Ok(info) => {
                out.insert(
                    info.id(),
                    ProgStats {
                        name: info.name_as_str().unwrap_or("").to_owned(),
                        prog_type: info.program_type() as u32,
                        run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                        run_cnt: info.run_count(),
                    },
                );
            }
            // Unloaded between listing its id and opening it: not there any more.
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e).context("listing the loaded BPF programs"),
        None => Ok(out),
    }
}

/// A running bpftrace, killed and reaped on drop.
struct Bpftrace(Child);

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Makes a few page faults of our own (a fresh mapping, touched).
fn poke_faults() {
    // SAFETY: an anonymous mapping of our own, written then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            16 * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            for i in 0..16 {
                std::ptr::write_volatile(p.cast::<u8>().add(i * 4096), 1);
            }
            libc::munmap(p, 16 * 4096);
        }
    }
}

/// Starts bpftrace running `program` and returns it with the ids of its programs, once
/// they run.
fn start_bpftrace(bin: &str, program: &str) -> anyhow::Result<(Bpftrace, Vec<u32>)> {
    let before = snapshot()?;
    let mut child = Command::new(bin)
        .args(["-e", program])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin} (cargo xtask setup installs it)"))?;
    let stdout = child.stdout.take();
    let guard = Bpftrace(child);
    let stdout = stdout.context("bpftrace's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("Attaching") => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading bpftrace's output"),
            None => bail!("bpftrace ended before attaching"),
        }
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let now = snapshot()?;
        let ids: Vec<u32> = now
            .iter()
            .filter(|(id, p)| {
                // bpftrace names the program after the probe (0.17: `page_fault_user`; later:
                // `tracepoint_exceptions_...`); anything else new is someone else's.
                !before.contains_key(id)
                    && p.prog_type == PROG_TYPE_TRACEPOINT
                    && (p.name.contains("page_fault_user") || p.name.starts_with("tracepoint"))
            })
            .map(|(id, _)| *id)
            .collect();
        if !ids.is_empty() && ids.iter().any(|id| now[id].run_cnt > 0) {
            return Ok((guard, ids));
        }
        if Instant::now() > until {
            bail!("bpftrace's tracepoint program did not show up running within 10 s");
        }
        poke_faults();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    /// The tracer counting, following this process, which has this many regions.
    Tamalloc(u64),
    /// The tracer streaming every fault (the ring drained by a thread), one region.
    Streaming,
    /// The tracer following no process: every fault takes the short path (not a region).
    Unfollowed,
    Reference,
    Bpftrace,
    /// The tracer counting with `--stacks`, following this process, one region.
    Stacks,
    /// bpftrace counting by user stack.
    BpftraceStacks,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Tamalloc(_) => "tamalloc",
            Self::Streaming => "tamalloc-events",
            Self::Unfollowed => "tamalloc-unfollowed",
            Self::Reference => "reference",
            Self::Bpftrace => "bpftrace",
            Self::Stacks => "tamalloc-stacks",
            Self::BpftraceStacks => "bpftrace-ustack",
        }
    }
}

/// Drains the tracer's ring on a thread until dropped, as `tamalloc trace --events` would.
struct Drain {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drain {
    fn start(mut ring: aya::maps::RingBuf<aya::maps::MapData>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let mut n = 0u64;
                while let Some(item) = ring.next() {
                    n += std::hint::black_box(item.len()) as u64;
                }
                if n == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Ids of the loaded programs of the reference object.
fn ids_of(ebpf: &aya::Ebpf) -> Vec<u32> {
    ebpf.programs()
        .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
        .collect()
}

fn measure(args: &Args, round: u32, variant: Variant) -> anyhow::Result<()> {
    // Whatever is attached lives until the end of this function (RAII: links, fds, child).
    let mut probe = None;
    let mut reference = None;
    let mut bpftrace = None;
    let mut drain = None;
    let mut load_ms = 0.0;
    let regions = match variant {
        Variant::Tamalloc(r) => r,
        _ => 1,
    };
    let ids = match variant {
        Variant::Tamalloc(_) | Variant::Streaming | Variant::Unfollowed | Variant::Stacks => {
            let t = Instant::now();
            let mut p = Probe::load(&ProbeOptions {
                pids: match variant {
                    Variant::Unfollowed => Vec::new(),
                    _ => vec![std::process::id()],
                },
                filter_pids: true,
                stream_faults: matches!(variant, Variant::Streaming),
                stacks: matches!(variant, Variant::Stacks),
                ..ProbeOptions::default()
            })
            .context("loading the tracer's programs")?;
            load_ms = t.elapsed().as_secs_f64() * 1e3;
            if matches!(variant, Variant::Streaming) {
                drain = Some(Drain::start(
                    p.take_events().context("taking the event ring")?,
                ));
            }
            let ids = p.program_infos().iter().map(|(_, i)| i.id()).collect();
            probe = Some(p);
            ids
        }
        Variant::Reference => {
            let mut ebpf =
                aya::Ebpf::load(REFERENCE_OBJECT).context("loading the reference eBPF object")?;
            let prog: &mut RawTracePoint = ebpf
                .program_mut(REFERENCE_PROGRAM)
                .with_context(|| format!("program {REFERENCE_PROGRAM} missing from the object"))?
                .try_into()
                .with_context(|| format!("{REFERENCE_PROGRAM} is not a raw tracepoint program"))?;
            prog.load()
                .with_context(|| format!("loading {REFERENCE_PROGRAM}"))?;
            prog.attach(REFERENCE_TRACEPOINT)
                .with_context(|| format!("attaching {REFERENCE_PROGRAM}"))?;
            let ids = ids_of(&ebpf);
            reference = Some(ebpf);
            ids
        }
        Variant::Bpftrace | Variant::BpftraceStacks => {
            let program = match variant {
                Variant::Bpftrace => BPFTRACE_PROGRAM,
                _ => BPFTRACE_STACKS_PROGRAM,
            };
            let (child, ids) = start_bpftrace(&args.bpftrace, program)?;
            bpftrace = Some(child);
            ids
        }
    };
    let before = snapshot()?;
    let o = run_workload(args.pages, 1, regions, false)?;
    let after = snapshot()?;
    let counted = match &probe {
        Some(p) => p
            .counters()
            .context("reading the tracer's counters")?
            .get(&std::process::id())
            .map_or(0, |c| c.faults[FaultKind::WriteZero as usize]),
        None => 0,
    };
    for id in ids {
        let (Some(b), Some(a)) = (before.get(&id), after.get(&id)) else {
            continue;
        };
        let run_cnt = a.run_cnt.saturating_sub(b.run_cnt);
        if run_cnt == 0 {
            continue;
        }
        println!(
            "{{\"type\":\"bpf_cost\",\"round\":{round},\"variant\":\"{}\",\"regions\":{regions},\"program\":\"{}\",\"id\":{id},\"run_cnt\":{run_cnt},\"run_time_ns\":{},\"pages\":{},\"elapsed_ns\":{},\"counted\":{counted},\"load_ms\":{load_ms:.1}}}",
            variant.name(),
            a.name,
            a.run_time_ns.saturating_sub(b.run_time_ns),
            o.pages,
            o.elapsed_ns,
        );
    }
    drop((drain, probe, reference, bpftrace));
    Ok(())
}

/// One `{"type":"bpf_prog","name","verified_insns","jited_bytes","load_ms"}` line per program
/// of the tracer: what the verifier walked (the main cost of start-up).
fn describe_programs() -> anyhow::Result<()> {
    let t = Instant::now();
    let p = Probe::load(&ProbeOptions {
        filter_pids: true,
        ..ProbeOptions::default()
    })
    .context("loading the tracer's programs")?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    for (name, info) in p.program_infos() {
        println!(
            "{{\"type\":\"bpf_prog\",\"name\":\"{name}\",\"verified_insns\":{},\"jited_bytes\":{},\"load_ms\":{load_ms:.1}}}",
            info.verified_instruction_count().unwrap_or(0),
            info.size_jitted(),
        );
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut variants: Vec<Variant> = args.regions.iter().map(|&r| Variant::Tamalloc(r)).collect();
    variants.push(Variant::Streaming);
    variants.push(Variant::Unfollowed);
    variants.push(Variant::Reference);
    variants.push(Variant::Stacks);
    if args.bpftrace != "none" {
        variants.push(Variant::Bpftrace);
        variants.push(Variant::BpftraceStacks);
    }
    let _stats = StatsEnabled::enable()?;
    describe_programs()?;
    // A warm-up of the workload alone (page cache, allocator, CPU frequency).
    run_workload(args.pages, 1, 1, false)?;
    for round in 0..args.rounds {
        // Rotate the order each round so that drift does not favour one variant.
        let n = variants.len();
        for i in 0..n {
            let v = variants[(i + round as usize) % n];
            measure(&args, round, v).with_context(|| format!("round {round}, {}", v.name()))?;
        }
    }
    Ok(())
}
