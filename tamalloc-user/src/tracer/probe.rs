//! Loading and attaching the eBPF programs, and reading their maps.
//!
//! A [`Probe`] owns the loaded object: dropping it detaches every program and frees every
//! map (aya's links are RAII), so an early return or a panic never leaves probes behind.

use std::{collections::HashMap, fs, io};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, PerCpuArray, PerCpuValues, ProgramArray, Queue, RingBuf},
    programs::{
        RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use tamalloc_common::trace::{
    CONFIG_FILTER_COMM, CONFIG_FILTER_PID, Chunk, ChunkKey, Config, DROP_CONTROL_EVENTS,
    DROP_FAULT_EVENTS, DROP_MAP_FULL, MAX_CPUS, MAX_PROCS, MarkerKey, PidCounters, RegionRef,
    TAIL_PROGRAMS,
};

use super::TraceError;

const TRACEFS: &str = "/sys/kernel/tracing";

/// Where tracefs is: `/sys/kernel/tracing`, or `$TAMALLOC_TRACEFS` (for tests and for
/// systems that mount it elsewhere).
fn tracefs() -> std::path::PathBuf {
    std::env::var_os("TAMALLOC_TRACEFS")
        .map(Into::into)
        .unwrap_or_else(|| TRACEFS.into())
}

/// How a program is attached to its tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attach {
    /// A classic tracepoint: reads fields of the tracepoint's record.
    Record,
    /// A raw tracepoint: reads the tracepoint's arguments, no record is filled (the fault
    /// path, where that saving is paid back on every fault of the machine).
    Raw,
}

/// Every tracepoint the tracer attaches to: (program, category, name, how).
const ATTACHMENTS: &[(&str, &str, &str, Attach)] = &[
    ("sys_enter", "raw_syscalls", "sys_enter", Attach::Record),
    ("sys_exit", "raw_syscalls", "sys_exit", Attach::Record),
    (
        "sched_process_fork",
        "sched",
        "sched_process_fork",
        Attach::Record,
    ),
    (
        "sched_process_exec",
        "sched",
        "sched_process_exec",
        Attach::Record,
    ),
    (
        "sched_process_exit",
        "sched",
        "sched_process_exit",
        Attach::Record,
    ),
    ("page_fault", "exceptions", "page_fault_user", Attach::Raw),
    ("page_fault", "exceptions", "page_fault_kernel", Attach::Raw),
];

/// An attached program's link, to detach it before the final drain.
enum Link {
    Record(TracePointLinkId),
    Raw(RawTracePointLinkId),
}

/// What to load and how.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Stream every fault through the ring buffer, not only count it.
    pub stream_faults: bool,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Learn regions only of these processes (and their descendants)...
    pub pids: Vec<u32>,
    /// ...or of processes with this command name.
    pub comm: Option<String>,
    /// Restrict to `pids` even when it is empty (a command is spawned later).
    pub filter_pids: bool,
    /// Processes with regions counted at once (counter slots; an exited process's slot is
    /// reused once its final counts are read).
    pub max_procs: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            stream_faults: false,
            ring_bytes: 4 << 20,
            pids: Vec::new(),
            comm: None,
            filter_pids: false,
            max_procs: MAX_PROCS,
        }
    }
}

/// Events lost on the way to userspace, or region state the maps had no room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    pub fault_events: u64,
    pub control_events: u64,
    pub map_full: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.fault_events + self.control_events + self.map_full
    }
}

/// The loaded and attached eBPF programs.
pub struct Probe {
    ebpf: Ebpf,
    nr_cpus: usize,
    /// Attached programs, to detach before the final drain.
    links: Vec<(&'static str, Link)>,
    /// The streaming fault program is attached rather than the counting one.
    stream_faults: bool,
}

/// The embedded eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tamalloc"));

impl Probe {
    /// Checks the environment, loads, configures and attaches everything.
    pub fn load(opts: &ProbeOptions) -> Result<Self, TraceError> {
        check_privileges()?;
        ensure_tracefs()?;
        for (_, category, name, _) in ATTACHMENTS {
            tracepoint_format(category, name)?;
        }
        let fork_format = tracepoint_format("sched", "sched_process_fork")?;
        let fork_child_pid_offset =
            field_offset(&fork_format, "child_pid").ok_or_else(|| TraceError::Tracepoint {
                name: "sched:sched_process_fork".into(),
                why: "its format has no child_pid field".into(),
            })?;
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| TraceError::Io {
            what: "reading the number of possible CPUs".into(),
            source: e,
        })?;
        if opts.max_procs == 0 {
            return Err(TraceError::Usage(
                "room for at least one process is needed".into(),
            ));
        }
        if !opts.ring_bytes.is_power_of_two() || opts.ring_bytes < 4096 {
            return Err(TraceError::Usage(format!(
                "ring buffer size {} is not a power of two of at least 4096 bytes",
                opts.ring_bytes
            )));
        }

        let mut ebpf = EbpfLoader::new()
            // No CO-RE relocations in our programs: skip parsing the kernel's BTF (~0.5 s).
            .btf(None)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("COUNTERS", opts.max_procs)
            .map_max_entries("SLOTS", opts.max_procs)
            .map_max_entries("RETIRED", opts.max_procs)
            .map_max_entries("FREE_SLOTS", opts.max_procs)
            .load(OBJECT)
            .map_err(|e| TraceError::Load(Box::new(e)))?;

        let mut cfg = Config {
            fork_child_pid_offset,
            nr_cpus: u32::try_from(nr_cpus).unwrap_or(MAX_CPUS).min(MAX_CPUS),
            ..Config::default()
        };
        if opts.filter_pids || !opts.pids.is_empty() {
            cfg.flags |= CONFIG_FILTER_PID;
        }
        if let Some(comm) = &opts.comm {
            cfg.flags |= CONFIG_FILTER_COMM;
            // The kernel keeps 15 bytes and a NUL.
            let n = comm.len().min(15);
            cfg.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
        }
        {
            let mut config: Array<_, Config> = Array::try_from(map_mut(&mut ebpf, "CONFIG")?)
                .map_err(|e| TraceError::Load(Box::new(e)))?;
            config
                .set(0, cfg, 0)
                .map_err(|e| TraceError::Load(Box::new(e)))?;
        }
        {
            let mut free: Queue<_, u32> = Queue::try_from(map_mut(&mut ebpf, "FREE_SLOTS")?)
                .map_err(|e| TraceError::Load(Box::new(e)))?;
            for slot in 0..opts.max_procs {
                free.push(slot, 0)
                    .map_err(|e| TraceError::Load(Box::new(e)))?;
            }
        }
        install_exit_programs(&mut ebpf)?;
        let mut probe = Self {
            ebpf,
            nr_cpus,
            links: Vec::new(),
            stream_faults: opts.stream_faults,
        };
        for &pid in &opts.pids {
            probe.follow(pid)?;
        }
        probe.attach()?;
        Ok(probe)
    }

    /// Learn the regions of `pid` and of the processes it forks from now on.
    pub fn follow(&mut self, pid: u32) -> Result<(), TraceError> {
        let mut traced: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, "TRACED")?)
                .map_err(|e| TraceError::Load(Box::new(e)))?;
        traced
            .insert(pid, 1, 0)
            .map_err(|e| TraceError::Load(Box::new(e)))
    }

    /// Attaches every program (again, after [`Probe::detach`]: benchmarks measure the same
    /// loaded programs attached and detached in turn).
    pub fn attach(&mut self) -> Result<(), TraceError> {
        if !self.links.is_empty() {
            return Ok(());
        }
        for &(prog, category, name, how) in ATTACHMENTS {
            let prog = match prog {
                "page_fault" if self.stream_faults => "page_fault_events",
                p => p,
            };
            let program = self
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| TraceError::Internal(format!("program {prog} missing")))?;
            let attach_err = |e| TraceError::Attach(format!("{category}:{name}"), Box::new(e));
            let link = match how {
                Attach::Record => {
                    let program: &mut TracePoint = program
                        .try_into()
                        .map_err(|e| TraceError::Load(Box::new(e)))?;
                    if program.fd().is_err() {
                        program
                            .load()
                            .map_err(|e| TraceError::Verifier(prog.to_string(), Box::new(e)))?;
                    }
                    Link::Record(program.attach(category, name).map_err(attach_err)?)
                }
                Attach::Raw => {
                    let program: &mut RawTracePoint = program
                        .try_into()
                        .map_err(|e| TraceError::Load(Box::new(e)))?;
                    if program.fd().is_err() {
                        program
                            .load()
                            .map_err(|e| TraceError::Verifier(prog.to_string(), Box::new(e)))?;
                    }
                    Link::Raw(program.attach(name).map_err(attach_err)?)
                }
            };
            self.links.push((prog, link));
        }
        Ok(())
    }

    /// Detaches every program: no new events or counts after this. Maps stay readable.
    pub fn detach(&mut self) {
        for (prog, link) in self.links.drain(..) {
            let Some(p) = self.ebpf.program_mut(prog) else {
                continue;
            };
            match link {
                Link::Record(link) => {
                    if let Ok(tp) = <&mut TracePoint>::try_from(p) {
                        let _ = tp.detach(link);
                    }
                }
                Link::Raw(link) => {
                    if let Ok(tp) = <&mut RawTracePoint>::try_from(p) {
                        let _ = tp.detach(link);
                    }
                }
            }
        }
    }

    /// Drops what the programs keep about `pid`, once it is gone for good (its leader left
    /// with exit(2), so the programs could not tell when the last thread ended).
    pub fn forget(&mut self, pid: u32) -> Result<(), TraceError> {
        let map_err = |e: aya::maps::MapError| TraceError::Load(Box::new(e));
        {
            let mut chunks: BpfHashMap<_, ChunkKey, Chunk> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, "CHUNKS")?).map_err(map_err)?;
            let keys: Vec<ChunkKey> = chunks
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.tgid() == pid)
                .collect();
            for k in keys {
                let _ = chunks.remove(&k);
            }
        }
        {
            let mut markers: BpfHashMap<_, MarkerKey, RegionRef> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, "MARKERS")?).map_err(map_err)?;
            let keys: Vec<MarkerKey> = markers
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.tgid == pid)
                .collect();
            for k in keys {
                let _ = markers.remove(&k);
            }
        }
        let mut traced: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, "TRACED")?).map_err(map_err)?;
        let _ = traced.remove(&pid);
        Ok(())
    }

    /// Every process's counters, summed over CPUs.
    pub fn counters(&self) -> Result<HashMap<u32, PidCounters>, TraceError> {
        let map_err = |e: aya::maps::MapError| TraceError::Load(Box::new(e));
        let slots: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(map_ref(&self.ebpf, "SLOTS")?).map_err(map_err)?;
        let counters: PerCpuArray<_, PidCounters> =
            PerCpuArray::try_from(map_ref(&self.ebpf, "COUNTERS")?).map_err(map_err)?;
        let mut out = HashMap::new();
        for item in slots.iter() {
            let (pid, slot) = item.map_err(map_err)?;
            out.insert(pid, sum(counters.get(&slot, 0).map_err(map_err)?.iter()));
        }
        Ok(out)
    }

    /// Processes with a counter slot.
    pub fn slot_pids(&self) -> Result<Vec<u32>, TraceError> {
        let slots: BpfHashMap<_, u32, u32> = BpfHashMap::try_from(map_ref(&self.ebpf, "SLOTS")?)
            .map_err(|e| TraceError::Load(Box::new(e)))?;
        Ok(slots.keys().filter_map(Result::ok).collect())
    }

    /// The final counts of every process whose exit the programs saw (`RETIRED`), summed over
    /// CPUs; their slots are zeroed and given back to the programs.
    pub fn collect_retired(&mut self) -> Result<Vec<(u32, PidCounters)>, TraceError> {
        let retired: Vec<(u32, u32)> = {
            let map: BpfHashMap<_, u32, u32> =
                BpfHashMap::try_from(map_ref(&self.ebpf, "RETIRED")?)
                    .map_err(|e| TraceError::Load(Box::new(e)))?;
            map.iter().filter_map(Result::ok).collect()
        };
        let mut out = Vec::with_capacity(retired.len());
        for (slot, pid) in retired {
            if let Some(c) = self.recycle(slot) {
                out.push((pid, c));
            }
            if let Ok(mut map) =
                BpfHashMap::<_, u32, u32>::try_from(map_mut(&mut self.ebpf, "RETIRED")?)
            {
                let _ = map.remove(&slot);
            }
        }
        Ok(out)
    }

    /// One live process's counters, summed over CPUs, then forgotten (the process is gone
    /// though the programs saw no exit; call [`Probe::forget`] first, so that no chunk names
    /// the slot when it is given back).
    pub fn take_counters(&mut self, pid: u32) -> Option<PidCounters> {
        let slot = {
            let mut slots: BpfHashMap<_, u32, u32> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, "SLOTS").ok()?).ok()?;
            let slot = slots.get(&pid, 0).ok()?;
            slots.remove(&pid).ok()?;
            slot
        };
        self.recycle(slot)
    }

    /// Reads `slot`'s counters, zeroes them and queues the slot for reuse. Best effort after
    /// the read: a slot that cannot be zeroed is not reused (it is lost, not mixed up).
    fn recycle(&mut self, slot: u32) -> Option<PidCounters> {
        let mut counters: PerCpuArray<_, PidCounters> =
            PerCpuArray::try_from(map_mut(&mut self.ebpf, "COUNTERS").ok()?).ok()?;
        let total = sum(counters.get(&slot, 0).ok()?.iter());
        let zeroed = PerCpuValues::try_from(vec![PidCounters::default(); self.nr_cpus]).ok();
        if let Some(zeroed) = zeroed
            && counters.set(slot, zeroed, 0).is_ok()
            && let Some(Ok(mut free)) = self
                .ebpf
                .map_mut("FREE_SLOTS")
                .map(Queue::<_, u32>::try_from)
        {
            let _ = free.push(slot, 0);
        }
        Some(total)
    }

    pub fn drops(&self) -> Result<Drops, TraceError> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(map_ref(&self.ebpf, "DROPS")?)
            .map_err(|e| TraceError::Load(Box::new(e)))?;
        let slot = |i: u32| -> Result<u64, TraceError> {
            let v = map.get(&i, 0).map_err(|e| TraceError::Load(Box::new(e)))?;
            Ok(v.iter().sum())
        };
        Ok(Drops {
            fault_events: slot(DROP_FAULT_EVENTS)?,
            control_events: slot(DROP_CONTROL_EVENTS)?,
            map_full: slot(DROP_MAP_FULL)?,
        })
    }

    /// The event ring, moved out of the object so it can be polled on its own.
    pub fn take_events(&mut self) -> Result<RingBuf<aya::maps::MapData>, TraceError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| TraceError::Internal("map EVENTS missing".into()))?;
        RingBuf::try_from(map).map_err(|e| TraceError::Load(Box::new(e)))
    }

    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// How many tracepoints the programs are attached to.
    pub fn attachments(&self) -> usize {
        ATTACHMENTS.len()
    }

    /// Each distinct loaded program, by name, with what the kernel reports of it (id,
    /// verified instructions, run statistics): for benchmarks.
    pub fn program_infos(&self) -> Vec<(String, aya::programs::ProgramInfo)> {
        let mut seen = std::collections::HashSet::new();
        self.ebpf
            .programs()
            .filter_map(|(name, p)| Some((name.to_owned(), p.info().ok()?)))
            .filter(|(_, info)| seen.insert(info.id()))
            .collect()
    }
}

/// Loads the programs `sys_exit` tail-calls and puts them in their slots.
fn install_exit_programs(ebpf: &mut Ebpf) -> Result<(), TraceError> {
    let mut fds = Vec::new();
    for (slot, name) in TAIL_PROGRAMS {
        let program: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| TraceError::Internal(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| TraceError::Load(Box::new(e)))?;
        program
            .load()
            .map_err(|e| TraceError::Verifier(name.to_string(), Box::new(e)))?;
        let fd = program
            .fd()
            .map_err(|e| TraceError::Load(Box::new(e)))?
            .try_clone()
            .map_err(|e| TraceError::Io {
                what: "duplicating a program fd".into(),
                source: e,
            })?;
        fds.push((slot, fd));
    }
    let mut progs = ProgramArray::try_from(map_mut(ebpf, "TAIL_PROGS")?)
        .map_err(|e| TraceError::Load(Box::new(e)))?;
    for (slot, fd) in &fds {
        progs
            .set(*slot, fd, 0)
            .map_err(|e| TraceError::Load(Box::new(e)))?;
    }
    Ok(())
}

fn sum<'a>(values: impl Iterator<Item = &'a PidCounters>) -> PidCounters {
    let mut total = PidCounters::default();
    for v in values {
        for (t, f) in total.faults.iter_mut().zip(v.faults) {
            *t += f;
        }
        total.regions += v.regions;
        total.reserved_bytes = total.reserved_bytes.wrapping_add(v.reserved_bytes);
    }
    total
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map, TraceError> {
    ebpf.map_mut(name)
        .ok_or_else(|| TraceError::Internal(format!("map {name} missing")))
}

fn map_ref<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map, TraceError> {
    ebpf.map(name)
        .ok_or_else(|| TraceError::Internal(format!("map {name} missing")))
}

/// Loading BPF tracing programs needs root, or CAP_BPF with CAP_PERFMON.
fn check_privileges() -> Result<(), TraceError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |c: u64| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(TraceError::NotPrivileged)
}

/// Mounts tracefs when it is missing and we may; otherwise says how.
fn ensure_tracefs() -> Result<(), TraceError> {
    let root = tracefs();
    let events = root.join("events");
    if events.is_dir() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(&root)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok && events.is_dir() {
            return Ok(());
        }
    }
    Err(TraceError::NoTracefs(root.display().to_string()))
}

fn tracepoint_format(category: &str, name: &str) -> Result<String, TraceError> {
    let path = tracefs()
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    fs::read_to_string(&path).map_err(|e| TraceError::Tracepoint {
        name: format!("{category}:{name}"),
        why: if e.kind() == io::ErrorKind::NotFound {
            "this kernel does not have it (needs CONFIG_FTRACE_SYSCALLS, CONFIG_TRACEPOINTS)".into()
        } else {
            format!("{}: {e}", path.display())
        },
    })
}

/// The byte offset of `field` in a tracefs format description.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        parts.next()?.trim().strip_prefix("offset:")?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fork_offsets_on_old_and_new_kernels() {
        let v61 = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(v61, "child_pid"), Some(44));
        let v618 = "\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                    \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(v618, "child_pid"), Some(20));
        assert_eq!(field_offset(v618, "nope"), None);
    }
}
