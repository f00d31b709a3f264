//! ② Loading, configuring and attaching the eBPF programs ([`Probe`]); its maps are read
//! through [`maps`], the environment checked by [`privileges`] and [`tracefs`].
//!
//! A [`Probe`] owns the loaded object: dropping it detaches every program and frees every
//! map (aya's links are RAII), so an early return or a panic never leaves probes behind.
//! Every map and program is named by its const in `tamalloc_common::maps`.
//!
//! The fault programs depend on the [`Mode`], chosen at load from what the kernel offers
//! ([`mode`]): kernel mode (fexit on the functions that install pages, offsets from BTF)
//! where it can, else tracepoint mode (`exceptions:page_fault_*`, shadow page state).

mod btf;
mod compat;
mod maps;
mod mode;
mod names;
mod privileges;
mod regions;
mod stacks;
mod tracefs;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{
        FEntry, FExit, Program, ProgramError, ProgramInfo, RawTracePoint, TracePoint,
        fentry::FEntryLinkId, fexit::FExitLinkId, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use tamalloc_common::maps::{
    self as name, CONFIG_FILTER_COMM, CONFIG_FILTER_PID, CONFIG_REGIONS_ANON, CONFIG_REGIONS_NAMED,
    Config, EXIT_BRK, EXIT_PRCTL, KERNEL_HOOKS, MAX_CPUS, MAX_PROCS, TAIL_PROGRAMS, prog,
};

pub use self::{
    maps::Drops,
    mode::{Mode, ModeChoice},
    regions::Regions,
    tracefs::field_offset,
};
use super::TraceError;

/// How a program is attached to its tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attach {
    /// A classic tracepoint: reads fields of the tracepoint's record.
    Record,
    /// A raw tracepoint: reads the tracepoint's arguments, no record is filled (the fault
    /// path, where that saving is paid back on every fault of the machine).
    Raw,
}

/// Every tracepoint the tracer attaches to in both modes, then tracepoint mode's fault
/// programs (the last [`FAULT_TRACEPOINTS`]): (program, category, name, how). The fault
/// program is [`prog::PAGE_FAULT_EVENTS`] instead when faults are streamed.
const ATTACHMENTS: &[(&str, &str, &str, Attach)] = &[
    (prog::SYS_ENTER, "raw_syscalls", "sys_enter", Attach::Record),
    (prog::SYS_EXIT, "raw_syscalls", "sys_exit", Attach::Record),
    (
        prog::SCHED_PROCESS_FORK,
        "sched",
        "sched_process_fork",
        Attach::Record,
    ),
    (
        prog::SCHED_PROCESS_EXEC,
        "sched",
        "sched_process_exec",
        Attach::Record,
    ),
    (
        prog::SCHED_PROCESS_EXIT,
        "sched",
        "sched_process_exit",
        Attach::Record,
    ),
    (
        prog::PAGE_FAULT,
        "exceptions",
        "page_fault_user",
        Attach::Raw,
    ),
    (
        prog::PAGE_FAULT,
        "exceptions",
        "page_fault_kernel",
        Attach::Raw,
    ),
];

/// How many of [`ATTACHMENTS`], at its end, are tracepoint mode's fault programs.
const FAULT_TRACEPOINTS: usize = 2;

/// An attached program's link, to detach it before the final drain.
enum Link {
    Record(TracePointLinkId),
    Raw(RawTracePointLinkId),
    FExit(FExitLinkId),
    FEntry(FEntryLinkId),
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
    /// Which fault programs: `Auto` picks kernel mode where the kernel offers it (and
    /// `$TAMALLOC_TRACE_MODE`, when set, decides for `Auto`).
    pub mode: ModeChoice,
    /// Which mappings are regions (`--regions`).
    pub regions: Regions,
    /// Take the stack of every counted first touch (`--stacks`).
    pub stacks: bool,
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
            mode: ModeChoice::Auto,
            regions: Regions::Tamalloc,
            stacks: false,
        }
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
    /// The stack maps are sized and `STACKS_ON` set (`--stacks`).
    stacks: bool,
    /// Which fault programs are attached; with the kernel's BTF in kernel mode.
    mode: Mode,
    btf: Option<Btf>,
    /// Why kernel mode was not used, when `Auto` fell back.
    fallback: Option<String>,
    /// Why `--regions` follows less than it says on this kernel.
    regions_note: Option<String>,
    /// Ended instances whose chunks, and whose markers (these once no child links to
    /// them), `Probe::collect_dead` deletes.
    dead_chunks: std::collections::HashSet<u32>,
    dead_markers: std::collections::HashSet<u32>,
}

/// The embedded eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tamalloc"));

/// The kernel (or aya) refused something about the object or a map.
fn refused(e: impl std::error::Error + Send + Sync + 'static) -> TraceError {
    TraceError::Load(Box::new(e))
}

/// The program kinds the tracer attaches; loading is the same for both.
trait Loadable {
    fn load_once(&mut self) -> Result<(), ProgramError>;
}

macro_rules! loadable {
    ($($kind:ty),*) => {$(
        impl Loadable for $kind {
            /// Loads (verifies) the program unless an earlier attach did.
            fn load_once(&mut self) -> Result<(), ProgramError> {
                if self.fd().is_err() { self.load() } else { Ok(()) }
            }
        }
    )*};
}
loadable!(TracePoint, RawTracePoint);

/// Program `name` of `ebpf` as a `P`, loaded.
fn loaded<'a, P: Loadable>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, TraceError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program: &mut P = ebpf
        .program_mut(name)
        .ok_or_else(|| TraceError::Internal(format!("program {name} missing")))?
        .try_into()
        .map_err(refused)?;
    program
        .load_once()
        .map_err(|e| TraceError::Verifier(name.to_string(), Box::new(e)))?;
    Ok(program)
}

impl Probe {
    /// Checks the environment, loads, configures and attaches everything.
    pub fn load(opts: &ProbeOptions) -> Result<Self, TraceError> {
        privileges::check()?;
        tracefs::ensure_mounted()?;
        for (_, category, name, _) in ATTACHMENTS {
            tracefs::format(category, name)?;
        }
        stacks::check_stack_depth()?;
        let fork_child_pid_offset = tracefs::fork_child_pid_offset()?;
        let exit_group_dead_offset = tracefs::exit_group_dead_offset()?;
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

        let choice = opts.mode.or_env()?;
        let kernel = match choice {
            ModeChoice::Tracepoint => Err("asked for".to_owned()),
            _ => mode::kernel_layout(opts.stream_faults),
        };
        let (layout, fallback) = match kernel {
            Ok(k) => (Some(k), None),
            Err(_) if choice == ModeChoice::Tracepoint => (None, None),
            Err(why) if choice == ModeChoice::Kernel => {
                return Err(TraceError::Usage(format!(
                    "kernel mode is not available: {why}"
                )));
            }
            Err(why) => (None, Some(why)),
        };
        let mut loader = EbpfLoader::new();
        // No CO-RE relocations in our programs: the loader needs no kernel BTF (kernel mode
        // reads its own, once, for the fexit attach points).
        loader.btf(None);
        if let Some((l, _)) = &layout {
            loader.override_global(name::KERNEL_LAYOUT, l, true);
        }
        let stacks_on = u32::from(opts.stacks);
        loader.override_global(name::STACKS_ON, &stacks_on, true);
        // Without --stacks the stack maps hold nothing: one entry each, not 20 MiB.
        let room = |n: u32| if opts.stacks { n } else { 1 };
        let mut ebpf = loader
            .map_max_entries(name::EVENTS, opts.ring_bytes)
            .map_max_entries(name::COUNTERS, opts.max_procs)
            .map_max_entries(name::SLOTS, opts.max_procs)
            .map_max_entries(name::RETIRED, opts.max_procs)
            .map_max_entries(name::FREE_SLOTS, opts.max_procs)
            .map_max_entries(name::PROC, opts.max_procs)
            .map_max_entries(name::ORIGIN_REFS, opts.max_procs.saturating_mul(2))
            .map_max_entries(name::DEAD, opts.max_procs.saturating_mul(2))
            .map_max_entries(name::STACK_TRACES, room(name::STACK_TRACES_MAX))
            .map_max_entries(name::BUILD_ID_STACKS, room(name::BUILD_ID_STACKS_MAX))
            .map_max_entries(name::STACK_COUNTS, room(name::STACK_COUNTS_MAX))
            .load(OBJECT)
            .map_err(refused)?;

        let mut cfg = Config {
            fork_child_pid_offset,
            exit_group_dead_offset,
            thread_status_offset: compat::running_thread_status_offset(),
            nr_cpus: u32::try_from(nr_cpus).unwrap_or(MAX_CPUS).min(MAX_CPUS),
            // A wake-up per eighth of the ring: few per second at any fault rate, and room
            // for seven more eighths while the reader wakes.
            wakeup_bytes: opts.ring_bytes / 8,
            ..Config::default()
        };
        if opts.filter_pids || !opts.pids.is_empty() {
            cfg.flags |= CONFIG_FILTER_PID;
        }
        let mut regions_note = None;
        match &opts.regions {
            Regions::Tamalloc => {}
            Regions::Anon => cfg.flags |= CONFIG_REGIONS_ANON,
            Regions::Named(n) => {
                cfg.flags |= CONFIG_REGIONS_NAMED;
                maps::write_region_name(&mut ebpf, n)?;
                if !names::kernel_names_anon_memory() {
                    regions_note = Some(format!(
                        "--regions name:{n}: this kernel cannot name anonymous memory \
                         (no CONFIG_ANON_VMA_NAME), so only tamalloc regions are followed"
                    ));
                }
            }
        }
        if let Some(comm) = &opts.comm {
            cfg.flags |= CONFIG_FILTER_COMM;
            // The kernel keeps 15 bytes and a NUL.
            let n = comm.len().min(15);
            cfg.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
        }
        maps::write_config(&mut ebpf, cfg)?;
        maps::free_all_slots(&mut ebpf, opts.max_procs)?;
        install_tail_programs(&mut ebpf, &opts.regions)?;
        let (mode, btf) = match layout {
            Some((_, btf)) => (Mode::Kernel, Some(btf)),
            None => (Mode::Tracepoint, None),
        };
        let mut probe = Self {
            ebpf,
            nr_cpus,
            links: Vec::new(),
            stream_faults: opts.stream_faults,
            stacks: opts.stacks,
            mode,
            btf,
            fallback,
            regions_note,
            dead_chunks: Default::default(),
            dead_markers: Default::default(),
        };
        for &pid in &opts.pids {
            probe.follow(pid)?;
        }
        match probe.attach() {
            Ok(()) => {}
            // The kernel lists the functions but will not attach to one (not traceable,
            // no DIRECT_CALLS): fall back unless kernel mode was asked for.
            Err(e) if probe.mode == Mode::Kernel && choice == ModeChoice::Auto => {
                probe.detach();
                probe.mode = Mode::Tracepoint;
                probe.btf = None;
                probe.fallback = Some(mode::refusal(&e));
                probe.attach()?;
            }
            Err(e) if probe.mode == Mode::Kernel => {
                return Err(TraceError::Usage(format!(
                    "kernel mode is not available: {}",
                    mode::refusal(&e)
                )));
            }
            Err(e) => return Err(e),
        }
        Ok(probe)
    }

    /// The fault programs attached.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why kernel mode is not used, when it was not asked for and the kernel lacks it.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Why `--regions` follows less here than it says (one line), if it does.
    pub fn regions_note(&self) -> Option<&str> {
        self.regions_note.as_deref()
    }

    /// Attaches every program (again, after [`Probe::detach`]: benchmarks measure the same
    /// loaded programs attached and detached in turn).
    pub fn attach(&mut self) -> Result<(), TraceError> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let common = ATTACHMENTS.len() - FAULT_TRACEPOINTS;
        let tracepoints = match self.mode {
            Mode::Kernel => &ATTACHMENTS[..common],
            Mode::Tracepoint => ATTACHMENTS,
        };
        for &(prog, category, name, how) in tracepoints {
            let prog = match prog {
                prog::PAGE_FAULT if self.stream_faults => prog::PAGE_FAULT_EVENTS,
                p => p,
            };
            let attach_err = |e| TraceError::Attach(format!("{category}:{name}"), Box::new(e));
            let link = match how {
                Attach::Record => Link::Record(
                    loaded::<TracePoint>(&mut self.ebpf, prog)?
                        .attach(category, name)
                        .map_err(attach_err)?,
                ),
                Attach::Raw => Link::Raw(
                    loaded::<RawTracePoint>(&mut self.ebpf, prog)?
                        .attach(name)
                        .map_err(attach_err)?,
                ),
            };
            self.links.push((prog, link));
        }
        if self.mode == Mode::Kernel {
            self.attach_kernel_hooks()?;
        }
        Ok(())
    }

    /// Kernel mode's fexit/fentry programs on the functions that install pages.
    fn attach_kernel_hooks(&mut self) -> Result<(), TraceError> {
        let btf = self
            .btf
            .as_ref()
            .ok_or_else(|| TraceError::Internal("kernel mode without BTF".into()))?;
        for (prog, function, exit) in KERNEL_HOOKS {
            let verify = |e| TraceError::Verifier(prog.to_string(), Box::new(e));
            let attach_err = |e| TraceError::Attach(function.to_string(), Box::new(e));
            let p = self
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| TraceError::Internal(format!("program {prog} missing")))?;
            let link = if exit {
                let p: &mut FExit = p.try_into().map_err(refused)?;
                if p.fd().is_err() {
                    p.load(function, btf).map_err(verify)?;
                }
                Link::FExit(p.attach().map_err(attach_err)?)
            } else {
                let p: &mut FEntry = p.try_into().map_err(refused)?;
                if p.fd().is_err() {
                    p.load(function, btf).map_err(verify)?;
                }
                Link::FEntry(p.attach().map_err(attach_err)?)
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
                Link::FExit(link) => {
                    if let Ok(fx) = <&mut FExit>::try_from(p) {
                        let _ = fx.detach(link);
                    }
                }
                Link::FEntry(link) => {
                    if let Ok(fe) = <&mut FEntry>::try_from(p) {
                        let _ = fe.detach(link);
                    }
                }
            }
        }
    }

    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// How many tracepoints and kernel functions the programs are attached to.
    pub fn attachments(&self) -> usize {
        match self.mode {
            Mode::Kernel => ATTACHMENTS.len() - FAULT_TRACEPOINTS + KERNEL_HOOKS.len(),
            Mode::Tracepoint => ATTACHMENTS.len(),
        }
    }

    /// What the kernel says of each loaded program (for per-program cost: run time and count
    /// with `kernel.bpf_stats_enabled`, verified instructions), one per program, by name.
    pub fn program_infos(&self) -> Vec<(String, ProgramInfo)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out: Vec<(String, ProgramInfo)> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| Some((name.to_owned(), p.info().ok()?)))
            .filter(|(_, info)| seen.insert(info.id()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Loads the programs `sys_enter`/`sys_exit` tail-call that `regions` needs and puts them in
/// their slots.
fn install_tail_programs(ebpf: &mut Ebpf, regions: &Regions) -> Result<(), TraceError> {
    let wanted: Vec<(u32, &str)> = TAIL_PROGRAMS
        .into_iter()
        .filter(|(s, _)| needed(*s, regions))
        .collect();
    let names: Vec<&str> = wanted.iter().map(|(_, n)| *n).collect();
    load_in_parallel(ebpf, &names)?;
    let mut fds = Vec::new();
    for (slot, name) in wanted {
        let fd = loaded::<TracePoint>(ebpf, name)?
            .fd()
            .map_err(refused)?
            .try_clone()
            .map_err(|e| TraceError::Io {
                what: "duplicating a program fd".into(),
                source: e,
            })?;
        fds.push((slot, fd));
    }
    let mut progs =
        ProgramArray::try_from(maps::map_mut(ebpf, name::TAIL_PROGS)?).map_err(refused)?;
    for (slot, fd) in &fds {
        progs.set(*slot, fd, 0).map_err(refused)?;
    }
    Ok(())
}

/// Loads (verifies) tracepoint programs `names` of `ebpf`, one per CPU at a time. The
/// verifier runs in the loading thread, and for a privileged loader under no lock; it is
/// most of the tracer's start-up.
fn load_in_parallel(ebpf: &mut Ebpf, names: &[&str]) -> Result<(), TraceError> {
    let mut programs: Vec<(&str, &mut TracePoint)> = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        if names.contains(&name) {
            programs.push((name, program.try_into().map_err(refused)?));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(programs.len());
    let queue = std::sync::Mutex::new(programs.into_iter());
    let next = || queue.lock().ok().and_then(|mut q| q.next());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), TraceError> {
                    while let Some((name, program)) = next() {
                        program
                            .load_once()
                            .map_err(|e| TraceError::Verifier(name.to_owned(), Box::new(e)))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| TraceError::Internal("a program-loading thread panicked".into()))?
        })
    })
}

/// Whether the tail program in `slot` has work to do when following `regions`. The heap's
/// and the names' programs have none outside their modes (`sys_enter` stashes no call for
/// them; an empty slot's tail call falls through), and verifying them is over a third of
/// start-up: they are not loaded.
fn needed(slot: u32, regions: &Regions) -> bool {
    match slot {
        EXIT_BRK => matches!(regions, Regions::Anon),
        EXIT_PRCTL => matches!(regions, Regions::Named(_)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_heap_and_names_programs_load_only_in_their_modes() {
        let skipped = |r: &Regions| -> Vec<u32> {
            TAIL_PROGRAMS
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| !needed(*s, r))
                .collect()
        };
        assert_eq!(skipped(&Regions::Tamalloc), vec![EXIT_BRK, EXIT_PRCTL]);
        assert_eq!(skipped(&Regions::Anon), vec![EXIT_PRCTL]);
        assert_eq!(skipped(&Regions::Named("x".into())), vec![EXIT_BRK]);
    }

    /// The built object holds exactly the maps and programs `tamalloc_common::maps` names,
    /// so a map or program renamed on one side only fails here, not at load (no root: the
    /// ELF is parsed, nothing is loaded).
    #[test]
    fn the_object_holds_exactly_the_named_maps_and_programs() {
        let obj = aya_obj::Object::parse(OBJECT).expect("parsing the embedded eBPF object");
        let names = |keys: Vec<&String>| -> BTreeSet<String> {
            keys.into_iter()
                // `.bss`, `.data` and `.rodata` become maps too; the programs name none.
                .filter(|k| !k.starts_with('.'))
                .cloned()
                .collect()
        };
        let listed =
            |list: &[&str]| -> BTreeSet<String> { list.iter().map(|s| (*s).to_owned()).collect() };
        assert_eq!(names(obj.maps.keys().collect()), listed(&name::ALL_MAPS));
        assert_eq!(
            names(obj.programs.keys().collect()),
            listed(&name::ALL_PROGRAMS)
        );
        // Every program the tracer loads by name is one of them.
        for (p, ..) in ATTACHMENTS {
            assert!(name::ALL_PROGRAMS.contains(p), "{p}");
        }
        for (_, p) in TAIL_PROGRAMS {
            assert!(name::ALL_PROGRAMS.contains(&p), "{p}");
        }
        for (p, ..) in KERNEL_HOOKS {
            assert!(name::ALL_PROGRAMS.contains(&p), "{p}");
        }
        // The fault tracepoints are the last ones, as `attach` assumes.
        for (p, ..) in &ATTACHMENTS[ATTACHMENTS.len() - FAULT_TRACEPOINTS..] {
            assert_eq!(*p, prog::PAGE_FAULT);
        }
    }
}
