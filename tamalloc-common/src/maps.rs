//! The eBPF object's maps and programs: their names, defined once for both sides, and what
//! the maps carry.
//!
//! A map's const has the name of its `#[map]` static, and tamalloc-ebpf ties the two at
//! compile time (its `named_map!`); a program's const in [`prog`] has the name of its
//! function (`named_program!`). The user side loads, resizes and reads by these consts only,
//! and a host test parses the built object and checks that it holds exactly [`ALL_MAPS`] and
//! [`ALL_PROGRAMS`]. Renaming one side alone fails the build or that test, not a load.
//!
//! Then what the maps carry, keys and values, `#[repr(C)]` plain data both sides read alike.
//!
//! Region bookkeeping is page-granular but stored per 2 MiB *chunk* of a process's address
//! space, so the fault path costs one hash lookup whatever the number of regions:
//!
//! ```text
//! INSTANCE[tgid]             -> inst: the process's current address space (0: none followed)
//! CHUNKS[(inst, addr >> 21)] -> Chunk { in_region, zero, start bitmaps (512 pages),
//!                                       carry: the region entering at page 0 }
//! MARKERS[(inst, page addr)] -> Marker      for every page with a `start` bit
//! ```
//!
//! A region keeps the identity it was born with (its first address) even after partial
//! `munmap`s or an `mremap`, so a page's region is "the nearest start marker at or below it
//! in its chunk, else the chunk's carry", and its page index follows from the marker.
//!
//! Keys name an *instance* (a counter slot and its generation), not a pid: a process gets
//! a new one at exec, and a reused pid a new one too, so a live process never finds a dead
//! address space's entries. Exit and exec end an instance in O(1) (`DEAD`, then userspace
//! deletes its entries). A forked child copies its parent's chunks (page states diverge at
//! once) but not its markers: it links to the parent's instance as its *origin* (`PROC`),
//! and finds there every marker the parent set before the fork (a marker's `set_epoch`
//! against the fork's epoch). A pre-fork server's 300 children share its 10,000 markers
//! instead of holding 3,000,000.

use crate::trace::{FAULT_KINDS, PAGE_SHIFT};

/// Tracer settings userspace writes before attaching (`Array<Config>`, index 0).
pub const CONFIG: &str = "CONFIG";
/// Processes userspace asked to follow, and their descendants: [`TRACED_NOW`] or
/// [`TRACED_FROM_EXEC`].
pub const TRACED: &str = "TRACED";
/// `TRACED` value: the process is followed.
pub const TRACED_NOW: u8 = 1;
/// `TRACED` value: the process is followed from its next exec on (`trace -- CMD`: the
/// tracer's own helper that execs CMD is not CMD, and its memory is not counted).
pub const TRACED_FROM_EXEC: u8 = 2;
/// Syscall arguments between `sys_enter` and `sys_exit`, per thread.
pub const PENDING: &str = "PENDING";
/// Region pages, per 2 MiB chunk of a process's address space.
pub const CHUNKS: &str = "CHUNKS";
/// A region's identity at the pages that start it.
pub const MARKERS: &str = "MARKERS";
/// Chunk-sized per-CPU buffers (off the 512-byte stack).
pub const CHUNK_BUF: &str = "CHUNK_BUF";
/// A per-CPU marker being stored (off the stack).
pub const MARKER_BUF: &str = "MARKER_BUF";
/// Per-process counters, by slot (per CPU).
pub const COUNTERS: &str = "COUNTERS";
/// A live process's counter slot.
pub const SLOTS: &str = "SLOTS";
/// Slots of exited processes, for userspace to read and give back.
pub const RETIRED: &str = "RETIRED";
/// Free counter slots.
pub const FREE_SLOTS: &str = "FREE_SLOTS";
/// `tgid` -> its instance (0: none, so a fault costs one array read).
pub const INSTANCE: &str = "INSTANCE";
/// Per counter slot: the process's instance, fork epoch and origin.
pub const PROC: &str = "PROC";
/// Instances that ended (exit, exec), for userspace to delete their entries.
pub const DEAD: &str = "DEAD";
/// Instance -> live processes whose origin it is: its markers stay while any is left.
pub const ORIGIN_REFS: &str = "ORIGIN_REFS";
/// The programs `sys_enter`/`sys_exit` tail-call (slots in [`TAIL_PROGRAMS`]).
pub const TAIL_PROGS: &str = "TAIL_PROGS";
/// The event ring.
pub const EVENTS: &str = "EVENTS";
/// Lost events and map inserts, per CPU (slots `DROP_*`).
pub const DROPS: &str = "DROPS";
/// Per-CPU scratch of the marker sweep (private to the programs).
pub const SWEEP: &str = "SWEEP";
/// `--regions anon`: each followed process's heap (`brk`) as far as the programs know it.
pub const HEAPS: &str = "HEAPS";
/// `--regions name:NAME`: NAME, NUL-padded (`Array<[u8; ANON_NAME_MAX]>`, index 0).
pub const REGION_NAME: &str = "REGION_NAME";
/// `--stacks`: stacks by id, as instruction addresses (user and kernel ones).
pub const STACK_TRACES: &str = "STACK_TRACES";
/// `--stacks`: user stacks by id as (build ID, file offset) frames, taken once per new
/// [`StackKey`] so that exited processes and deleted files still resolve.
pub const BUILD_ID_STACKS: &str = "BUILD_ID_STACKS";
/// `--stacks`: pages first touched per [`StackKey`].
pub const STACK_COUNTS: &str = "STACK_COUNTS";
/// Name of the read-only global the loader sets to 1 with `--stacks` (0: no stack is
/// taken, and the verifier drops the code).
pub const STACKS_ON: &str = "STACKS_ON";

/// Every map of the object.
pub const ALL_MAPS: [&str; 24] = [
    CONFIG,
    TRACED,
    PENDING,
    CHUNKS,
    MARKERS,
    CHUNK_BUF,
    MARKER_BUF,
    COUNTERS,
    SLOTS,
    RETIRED,
    FREE_SLOTS,
    INSTANCE,
    PROC,
    DEAD,
    ORIGIN_REFS,
    TAIL_PROGS,
    EVENTS,
    DROPS,
    SWEEP,
    HEAPS,
    REGION_NAME,
    STACK_TRACES,
    BUILD_ID_STACKS,
    STACK_COUNTS,
];

/// Program names: the functions' names in tamalloc-ebpf.
pub mod prog {
    /// `raw_syscalls:sys_enter`.
    pub const SYS_ENTER: &str = "sys_enter";
    /// `raw_syscalls:sys_exit`.
    pub const SYS_EXIT: &str = "sys_exit";
    /// `sched:sched_process_fork`.
    pub const SCHED_PROCESS_FORK: &str = "sched_process_fork";
    /// `sched:sched_process_exec`.
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// `sched:sched_process_exit`.
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// `exceptions:page_fault_{user,kernel}`, counting.
    pub const PAGE_FAULT: &str = "page_fault";
    /// `exceptions:page_fault_{user,kernel}`, counting and streaming.
    pub const PAGE_FAULT_EVENTS: &str = "page_fault_events";
    // Tail-called from sys_enter/sys_exit (their slots: `super::TAIL_PROGRAMS`).
    pub const EXIT_LEARN: &str = "exit_learn";
    pub const ENTER_MUNMAP: &str = "enter_munmap";
    pub const EXIT_MUNMAP: &str = "exit_munmap";
    pub const EXIT_MREMAP: &str = "exit_mremap";
    pub const EXIT_MREMAP_SHRINK: &str = "exit_mremap_shrink";
    pub const EXIT_MREMAP_GROW: &str = "exit_mremap_grow";
    pub const EXIT_MREMAP_MOVE: &str = "exit_mremap_move";
    pub const EXIT_MREMAP_DROP_OLD: &str = "exit_mremap_drop_old";
    pub const EXIT_MADVISE: &str = "exit_madvise";
    pub const EXIT_MREMAP_CLEAR_TARGET: &str = "exit_mremap_clear_target";
    pub const EXIT_MMAP: &str = "exit_mmap";
    pub const EXIT_BRK: &str = "exit_brk";
    pub const EXIT_PRCTL: &str = "exit_prctl";
    pub const EXIT_MPROTECT: &str = "exit_mprotect";
    // Kernel mode (fexit/fentry, see `crate::trace::Install`); each counts and, when
    // `KernelLayout::stream` is set, streams.
    /// fexit `do_anonymous_page`.
    pub const ANON_FAULT: &str = "anon_fault";
    /// fexit `do_huge_pmd_anonymous_page`.
    pub const HUGE_ANON_FAULT: &str = "huge_anon_fault";
    /// fexit `do_wp_page`.
    pub const WP_FAULT: &str = "wp_fault";
    /// fexit `do_huge_pmd_wp_page`.
    pub const HUGE_WP_FAULT: &str = "huge_wp_fault";
    /// fentry `bad_area_access_error`: a fault the VMA's protection refuses (SIGSEGV).
    pub const ACCESS_ERROR: &str = "access_error";
}

/// The kernel-mode programs: (program, kernel function, fexit rather than fentry).
pub const KERNEL_HOOKS: [(&str, &str, bool); 5] = [
    (prog::ANON_FAULT, "do_anonymous_page", true),
    (prog::HUGE_ANON_FAULT, "do_huge_pmd_anonymous_page", true),
    (prog::WP_FAULT, "do_wp_page", true),
    (prog::HUGE_WP_FAULT, "do_huge_pmd_wp_page", true),
    (prog::ACCESS_ERROR, "bad_area_access_error", false),
];

/// Name of the read-only global ([`KernelLayout`]) the loader sets in kernel mode.
pub const KERNEL_LAYOUT: &str = "KERNEL_LAYOUT";

/// Where the kernel-mode programs find what they read, found by the loader in the running
/// kernel's BTF (the Rust programs have no CO-RE relocations). A read-only global, so the
/// verifier sees constants. Offsets are into `struct vm_fault`, read as one window of
/// [`VMF_WINDOW`] bytes from its start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `vm_fault.address` (`unsigned long`).
    pub vmf_address: u32,
    /// `vm_fault.flags` (`enum fault_flag`, 4 bytes).
    pub vmf_flags: u32,
    /// `vm_fault.orig_pte` (`pte_t`, 8 bytes).
    pub vmf_orig_pte: u32,
    /// Stream every counted fault through `EVENTS` too.
    pub stream: u32,
}

/// Bytes of `struct vm_fault` the kernel-mode programs copy (every offset + 8 fits).
pub const VMF_WINDOW: u32 = 96;

/// Every program of the object.
pub const ALL_PROGRAMS: [&str; 26] = [
    prog::SYS_ENTER,
    prog::SYS_EXIT,
    prog::SCHED_PROCESS_FORK,
    prog::SCHED_PROCESS_EXEC,
    prog::SCHED_PROCESS_EXIT,
    prog::PAGE_FAULT,
    prog::PAGE_FAULT_EVENTS,
    prog::EXIT_LEARN,
    prog::ENTER_MUNMAP,
    prog::EXIT_MUNMAP,
    prog::EXIT_MREMAP,
    prog::EXIT_MREMAP_SHRINK,
    prog::EXIT_MREMAP_GROW,
    prog::EXIT_MREMAP_MOVE,
    prog::EXIT_MREMAP_DROP_OLD,
    prog::EXIT_MADVISE,
    prog::EXIT_MREMAP_CLEAR_TARGET,
    prog::EXIT_MMAP,
    prog::EXIT_BRK,
    prog::EXIT_PRCTL,
    prog::EXIT_MPROTECT,
    prog::ANON_FAULT,
    prog::HUGE_ANON_FAULT,
    prog::WP_FAULT,
    prog::HUGE_WP_FAULT,
    prog::ACCESS_ERROR,
];

/// Whether two names are equal, in a `const` (the ties in tamalloc-ebpf are assertions).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// What the maps carry.

/// Pages per chunk: 512 x 4 KiB = 2 MiB, one PMD.
pub const CHUNK_PAGES: u64 = 512;
pub const CHUNK_SHIFT: u32 = PAGE_SHIFT + 9;
pub const CHUNK_WORDS: usize = (CHUNK_PAGES / 64) as usize;

/// Per-process counters, one copy per CPU: `COUNTERS[slot]`, a per-CPU array, where `SLOTS`
/// maps a process to its slot and every chunk of the process carries it too, so that the
/// fault path reaches the counters without a hash lookup. `reserved_bytes` moves up and down
/// on different CPUs: only the sum is meaningful.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidCounters {
    pub faults: [u64; FAULT_KINDS],
    /// Regions created (cumulative).
    pub regions: u64,
    /// Bytes of live region pages (wrapping: sum over CPUs).
    pub reserved_bytes: u64,
    /// First touches of a whole transparent huge page (kernel mode; their pages are in
    /// `faults`, which counts pages).
    pub huge_faults: u64,
}

/// Processes with counters at once (slots of `COUNTERS`).
pub const MAX_PROCS: u32 = 8192;

/// The largest tgid plus one (`PID_MAX_LIMIT` on 64-bit): `INSTANCE`'s length.
pub const PID_LIMIT: u32 = 1 << 22;

/// Instance numbers are below this (they fill the top bits of a [`ChunkKey`]); 0 is none.
pub const INSTANCE_LIMIT: u64 = 1 << 29;
/// An instance is its counter slot (the low bits: `--max-procs` is at most 2^20) and that
/// slot's generation (the high 9), moved on at every claim of the slot and every exec, by
/// the slot's one owner, so no atomic counter is needed. A generation comes back after 511
/// more, long after userspace deleted its chunks (every refresh); one whose markers a live
/// child still holds is skipped.
pub const INSTANCE_SLOT_BITS: u32 = 20;

/// The instance after `prev` for the process in `slot`: the next generation (1..=511).
#[inline(always)]
pub const fn next_instance(prev: u32, slot: u32) -> u32 {
    let gens = (INSTANCE_LIMIT >> INSTANCE_SLOT_BITS) as u32;
    let gen_now = prev >> INSTANCE_SLOT_BITS;
    let next = if gen_now + 1 >= gens { 1 } else { gen_now + 1 };
    (next << INSTANCE_SLOT_BITS) | (slot & ((1 << INSTANCE_SLOT_BITS) - 1))
}

/// A `DEAD` entry: the pid in the high half, its ended instance in the low.
#[inline(always)]
pub const fn dead_entry(tgid: u32, inst: u32) -> u64 {
    ((tgid as u64) << 32) | inst as u64
}

/// The counter slot of instance `inst`.
#[inline(always)]
pub const fn instance_slot(inst: u32) -> u32 {
    inst & ((1 << INSTANCE_SLOT_BITS) - 1)
}

/// `PROC[slot]`: what the programs know of the process in counter slot `slot`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    /// Its instance: set when the slot is claimed and at every exec.
    pub inst: u32,
    /// The instance whose markers it inherited at its fork (0: none).
    pub origin: u32,
    /// Forks of this instance so far: a marker it sets carries this as `set_epoch`.
    pub epoch: u64,
    /// The origin's `epoch` at the fork: its markers with `set_epoch` up to this are ours.
    pub origin_epoch: u64,
}

/// `MARKERS` value: a region's identity at a page that starts it, and when it was set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marker {
    pub region: RegionRef,
    /// The setter's `Proc::epoch` then: children forked later see it, earlier ones do not.
    pub set_epoch: u64,
}

/// `CHUNKS` key: the instance in the top 29 bits, `addr >> CHUNK_SHIFT` (under 2^35 for
/// 5-level paging's 56-bit user addresses) in the low 35. One word hashes and compares
/// faster than a pair, and the fault path pays that on every fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChunkKey(u64);

impl ChunkKey {
    const CHUNK_BITS: u32 = 35;

    #[inline(always)]
    pub const fn new(inst: u32, chunk: u64) -> Self {
        Self(((inst as u64) << Self::CHUNK_BITS) | (chunk & ((1 << Self::CHUNK_BITS) - 1)))
    }

    #[inline(always)]
    pub const fn inst(self) -> u32 {
        (self.0 >> Self::CHUNK_BITS) as u32
    }

    /// `addr >> CHUNK_SHIFT` of the chunk's first page.
    #[inline(always)]
    pub const fn chunk(self) -> u64 {
        self.0 & ((1 << Self::CHUNK_BITS) - 1)
    }
}

/// A region page's identity: the region's first address and the page's index in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionRef {
    pub id: u64,
    pub index: u64,
}

/// 512 pages of one process's address space. Bit `i` of word `i / 64` is page `i`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The page belongs to a live tamalloc region.
    pub in_region: [u64; CHUNK_WORDS],
    /// The page maps the shared zero page (it was read before it was written).
    pub zero: [u64; CHUNK_WORDS],
    /// The page maps a page of its own (it was written).
    pub present: [u64; CHUNK_WORDS],
    /// A `MARKERS` entry names the region of this page and those after it in the chunk.
    pub start: [u64; CHUNK_WORDS],
    /// The region that page 0 continues, when page 0 has no start marker.
    pub carry: RegionRef,
    /// The process's `COUNTERS` slot.
    pub slot: u32,
    /// [`CHUNK_RESTRICTED`] once a page of the chunk had `noread` or `nowrite` set (never
    /// cleared): the fault path reads those bitmaps only then. In the cache line of `slot`,
    /// which the fault path reads anyway.
    pub flags: u32,
    /// Tracepoint mode: the page's protection forbids every access (`PROT_NONE`): a fault
    /// there is refused (SIGSEGV) and counts `other`. Set by mprotect.
    pub noread: [u64; CHUNK_WORDS],
    /// Tracepoint mode: the page's protection forbids writes: a write fault counts `other`.
    pub nowrite: [u64; CHUNK_WORDS],
    /// `MADV_WIPEONFORK`: a forked child's copy of the page starts empty.
    pub wipe: [u64; CHUNK_WORDS],
    /// A thread's munmap covers the page and has not returned: forgotten if it succeeds.
    /// A region learned there meanwhile (another thread's, in the freed range) clears it.
    pub dying: [u64; CHUNK_WORDS],
}

/// [`Chunk::flags`]: some page of the chunk has (or had) a restricted protection.
pub const CHUNK_RESTRICTED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MarkerKey {
    pub inst: u32,
    pub _pad: u32,
    pub page_addr: u64,
}

/// A syscall seen at `sys_enter`, kept per thread until its `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub nr: u64,
    pub args: [u64; 5],
    /// Page-aligned length of a 554 call that returned -ENOSYS: the thread's next matching
    /// `mmap` is a fallback region. 0 when not armed.
    pub fallback_len: u64,
}

/// Tracer settings written by userspace before attaching (`Array<Config>`, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u64,
    /// With `CONFIG_FILTER_COMM`: learn regions of processes with this comm too.
    pub comm: [u8; 16],
    /// Offset of `child_pid` in `sched:sched_process_fork` (it differs between kernels;
    /// the loader reads it from tracefs).
    pub fork_child_pid_offset: u32,
    /// Possible CPUs, for summing per-CPU values inside the programs.
    pub nr_cpus: u32,
    /// Offset of `group_dead` in `sched:sched_process_exit` (6.15 and later), 0 when the
    /// kernel's record has none: then the end of a process is guessed from its leader's.
    pub exit_group_dead_offset: u32,
    /// Offset of `thread_info.status` in `task_struct` (x86: 16 since 5.11, 8 before), 0
    /// when unknown: then every syscall is read as an x86-64 one. Its `TS_COMPAT` bit marks
    /// an ia32 syscall (`int 0x80`) of a 64-bit process.
    pub thread_status_offset: u32,
    /// Bytes waiting in the ring from which a fault event wakes the reader; below it, fault
    /// events are submitted without a wake-up (the reader also drains on a short timer), so
    /// a burst costs a wake-up per batch, not per event. 0: every event may wake it.
    pub wakeup_bytes: u32,
}

/// The most CPUs the programs sum per-CPU values over.
pub const MAX_CPUS: u32 = 256;

/// Learn regions only for processes in `TRACED` (and their descendants).
pub const CONFIG_FILTER_PID: u64 = 1 << 1;
/// Learn regions for processes whose comm equals `Config::comm`.
pub const CONFIG_FILTER_COMM: u64 = 1 << 2;
/// `--regions anon`: every private anonymous mapping is a region too (mmap and the heap).
pub const CONFIG_REGIONS_ANON: u64 = 1 << 3;
/// `--regions name:NAME`: anonymous ranges named NAME (`REGION_NAME`) are regions too.
pub const CONFIG_REGIONS_NAMED: u64 = 1 << 4;
/// Room for an anonymous mapping's name (the kernel's `ANON_VMA_NAME_MAX_LEN`, with the NUL).
pub const ANON_NAME_MAX: usize = 80;

/// Frames a stack keeps, innermost first (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const STACK_DEPTH: usize = 127;
/// Distinct stacks `STACK_TRACES` holds by default (user and kernel ones together).
pub const STACK_TRACES_MAX: u32 = 16384;
/// Distinct user stacks with build IDs (`BUILD_ID_STACKS`) by default: 4 MiB.
pub const BUILD_ID_STACKS_MAX: u32 = 1024;
/// Distinct (process, region, kind, stack)s counted by default.
pub const STACK_COUNTS_MAX: u32 = 65536;
/// A stack id field that holds no stack.
pub const NO_STACK: i32 = -1;

/// `STACK_COUNTS` key: what one first touch is attributed to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    /// The region's identity (as in events); 0 when it could not be named.
    pub region: u64,
    pub tgid: u32,
    /// `STACK_TRACES` id of the user stack.
    pub user: i32,
    /// `STACK_TRACES` id of the kernel stack when the kernel made the touch, else
    /// [`NO_STACK`].
    pub kernel: i32,
    /// `FaultKind as u32`.
    pub kind: u32,
    /// The process's instance (its address space) when the stack was taken: addresses mean
    /// something only in it, and an exec gives the pid another.
    pub inst: u32,
    pub _pad: u32,
}

/// `STACK_COUNTS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCount {
    /// Pages first touched (a huge page counts its followed pages).
    pub pages: u64,
    /// `BUILD_ID_STACKS` id of the same user stack, taken when the key was new;
    /// [`NO_STACK`] when that map was full or the stack could not be taken.
    pub build: i32,
    pub _pad: u32,
}

/// One frame of a `BUILD_ID_STACKS` entry: the kernel's `struct bpf_stack_build_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildIdFrame {
    /// [`BUILD_ID_VALID`], [`BUILD_ID_IP`] (no build ID: `offset_or_ip` is the address)
    /// or `BPF_STACK_BUILD_ID_EMPTY` (0, past the stack's end).
    pub status: i32,
    pub build_id: [u8; 20],
    /// The file offset when `status` is [`BUILD_ID_VALID`], else the address.
    pub offset_or_ip: u64,
}

/// `BPF_STACK_BUILD_ID_VALID`.
pub const BUILD_ID_VALID: i32 = 1;
/// `BPF_STACK_BUILD_ID_IP`.
pub const BUILD_ID_IP: i32 = 2;

/// `HEAPS` value: a process's heap, `[start, end)` page-aligned, as its `brk` calls made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    /// The program break when the programs first saw it (a `brk(0)`).
    pub start: u64,
    /// The page-aligned program break now.
    pub end: u64,
}

/// Slots of `TAIL_PROGS`, the programs `sys_enter`/`sys_exit` tail-call, and their names.
pub const EXIT_LEARN: u32 = 0;
/// munmap, at `sys_enter`: the range's region pages are marked dying, then at `sys_exit`
/// ([`EXIT_MUNMAP`]) forgotten if the call succeeded, kept if it failed.
pub const ENTER_MUNMAP: u32 = 1;
pub const EXIT_MREMAP: u32 = 2;
/// mremap in place, smaller.
pub const EXIT_MREMAP_SHRINK: u32 = 3;
/// mremap in place, larger.
pub const EXIT_MREMAP_GROW: u32 = 4;
/// mremap to a new address: the new range first, then [`EXIT_MREMAP_DROP_OLD`].
pub const EXIT_MREMAP_MOVE: u32 = 5;
pub const EXIT_MREMAP_DROP_OLD: u32 = 6;
/// madvise(MADV_DONTNEED, MADV_REMOVE, MADV_DONTNEED_LOCKED, MADV_WIPEONFORK,
/// MADV_KEEPONFORK).
pub const EXIT_MADVISE: u32 = 7;
/// mremap with MREMAP_FIXED onto region pages: forget them, then [`EXIT_MREMAP_MOVE`].
pub const EXIT_MREMAP_CLEAR_TARGET: u32 = 8;
/// mmap with MAP_FIXED over region pages: forget them; under [`CONFIG_REGIONS_ANON`], a
/// private anonymous mmap: learn it.
pub const EXIT_MMAP: u32 = 9;
/// mprotect / pkey_mprotect of region pages: which accesses their faults may make.
pub const EXIT_MPROTECT: u32 = 10;
pub const EXIT_MUNMAP: u32 = 11;
/// brk under [`CONFIG_REGIONS_ANON`]: the heap grew or shrank.
pub const EXIT_BRK: u32 = 12;
/// prctl(PR_SET_VMA_ANON_NAME) under [`CONFIG_REGIONS_NAMED`]: a range named NAME is a
/// region; one named otherwise is not.
pub const EXIT_PRCTL: u32 = 13;
pub const TAIL_SLOTS: u32 = 14;
pub const TAIL_PROGRAMS: [(u32, &str); TAIL_SLOTS as usize] = [
    (EXIT_LEARN, prog::EXIT_LEARN),
    (ENTER_MUNMAP, prog::ENTER_MUNMAP),
    (EXIT_MREMAP, prog::EXIT_MREMAP),
    (EXIT_MREMAP_SHRINK, prog::EXIT_MREMAP_SHRINK),
    (EXIT_MREMAP_GROW, prog::EXIT_MREMAP_GROW),
    (EXIT_MREMAP_MOVE, prog::EXIT_MREMAP_MOVE),
    (EXIT_MREMAP_DROP_OLD, prog::EXIT_MREMAP_DROP_OLD),
    (EXIT_MADVISE, prog::EXIT_MADVISE),
    (EXIT_MREMAP_CLEAR_TARGET, prog::EXIT_MREMAP_CLEAR_TARGET),
    (EXIT_MMAP, prog::EXIT_MMAP),
    (EXIT_MPROTECT, prog::EXIT_MPROTECT),
    (EXIT_MUNMAP, prog::EXIT_MUNMAP),
    (EXIT_BRK, prog::EXIT_BRK),
    (EXIT_PRCTL, prog::EXIT_PRCTL),
];

/// Indices of the per-CPU `DROPS` array.
pub const DROP_FAULT_EVENTS: u32 = 0;
pub const DROP_CONTROL_EVENTS: u32 = 1;
/// A map was full: a region, marker or counter could not be stored.
pub const DROP_MAP_FULL: u32 = 2;
/// A process to follow could not be put in `TRACED` (it, or a forked child, is not followed).
pub const DROP_TRACED_FULL: u32 = 3;
/// A region was cut short: `CHUNKS` had no room for its tail, which is not counted.
pub const DROP_REGION_CUT: u32 = 4;
/// A forked child's region could not be named (a fault event, or a region lookup of its
/// syscalls): the parent replaced the region's marker after the fork. Counts are
/// unaffected.
pub const DROP_REGION_UNRESOLVED: u32 = 5;
/// `--stacks`: a first touch whose stack could not be taken (`STACK_TRACES` full, or a
/// different stack with the same hash there); its pages are counted, not attributed.
pub const DROP_STACKS_LOST: u32 = 6;
/// `--stacks`: `STACK_COUNTS` had no room for a new (process, region, kind, stack).
pub const DROP_STACKS_FULL: u32 = 7;
pub const DROP_SLOTS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// `BUILD_ID_STACKS` frames are the kernel's `struct bpf_stack_build_id` (uapi bpf.h):
    /// s32 status, 20 bytes, then a u64 at offset 24.
    #[test]
    fn build_id_frames_have_the_kernels_layout() {
        assert_eq!(size_of::<BuildIdFrame>(), 32);
        assert_eq!(core::mem::offset_of!(BuildIdFrame, offset_or_ip), 24);
        assert_eq!(size_of::<StackKey>(), 32);
        assert_eq!(size_of::<StackCount>(), 16);
    }

    #[test]
    fn names_are_listed_once() {
        for list in [&ALL_MAPS[..], &ALL_PROGRAMS[..]] {
            for (i, a) in list.iter().enumerate() {
                assert!(!list[i + 1..].contains(a), "{a} is listed twice");
            }
        }
        assert!(same("EVENTS", EVENTS) && !same("EVENT", EVENTS) && !same("EVENTZ", EVENTS));
    }

    #[test]
    fn chunk_key_keeps_tgid_and_chunk_apart() {
        let top_chunk = ((1u64 << 56) - 1) >> CHUNK_SHIFT;
        let top_inst = (INSTANCE_LIMIT - 1) as u32;
        for (inst, chunk) in [
            (1, 0),
            (top_inst, top_chunk),
            (4242, 0x7fff_ffff_f000 >> 21),
        ] {
            let k = ChunkKey::new(inst, chunk);
            assert_eq!((k.inst(), k.chunk()), (inst, chunk));
        }
        assert_ne!(ChunkKey::new(1, 2), ChunkKey::new(2, 1));
    }

    #[test]
    fn instances_are_never_zero_keep_their_slot_and_fit_a_chunk_key() {
        let top_slot = (1 << INSTANCE_SLOT_BITS) - 1;
        for slot in [0, 1, 8191, top_slot] {
            let mut inst = 0;
            // Generations 1, 2, ... 511: none repeats before the wrap.
            for generation in 1..512 {
                inst = next_instance(inst, slot);
                assert!(
                    inst != 0 && u64::from(inst) < INSTANCE_LIMIT,
                    "{slot} -> {inst}"
                );
                assert_eq!(inst & top_slot, slot);
                assert_eq!(inst >> INSTANCE_SLOT_BITS, generation);
            }
            // The 512th wraps to the first generation.
            assert_eq!(next_instance(inst, slot), next_instance(0, slot));
        }
    }
}
