//! Records shared between the eBPF programs and the userspace tracer.
//!
//! Region bookkeeping is page-granular but stored per 2 MiB *chunk* of a process's address
//! space, so the fault path costs one hash lookup whatever the number of regions:
//!
//! ```text
//! CHUNKS[(tgid, addr >> 21)] -> Chunk { in_region, zero, start bitmaps (512 pages),
//!                                       carry: the region entering at page 0 }
//! MARKERS[(tgid, page addr)] -> RegionRef   for every page with a `start` bit
//! ```
//!
//! A region keeps the identity it was born with (its first address) even after partial
//! `munmap`s or an `mremap`, so a page's region is "the nearest start marker at or below it
//! in its chunk, else the chunk's carry", and its page index follows from the marker.

/// log2 of the page size the tracer assumes (x86-64 base pages).
pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Pages per chunk: 512 x 4 KiB = 2 MiB, one PMD.
pub const CHUNK_PAGES: u64 = 512;
pub const CHUNK_SHIFT: u32 = PAGE_SHIFT + 9;
pub const CHUNK_WORDS: usize = (CHUNK_PAGES / 64) as usize;

/// Rounds `len` up to whole pages, or `None` when that overflows (the kernel's -ENOMEM).
pub const fn page_align(len: u64) -> Option<u64> {
    match len.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v & !(PAGE_SIZE - 1)),
        None => None,
    }
}

/// How a fault inside a tamalloc region is classified (x86 error code + per-page state).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Not-present read: the shared zero page is mapped, RSS unchanged.
    ReadZero = 0,
    /// Not-present write: a zeroed page is allocated, RSS +1 page.
    WriteZero = 1,
    /// Write-protect write to a page that maps the zero page: replaced, RSS +1 page.
    CowZero = 2,
    /// Write-protect write to a real page (shared copy-on-write after fork).
    Cow = 3,
    /// Anything else (protection read, instruction fetch, reserved bit).
    Other = 4,
}

pub const FAULT_KINDS: usize = 5;

impl FaultKind {
    pub const ALL: [FaultKind; FAULT_KINDS] = [
        FaultKind::ReadZero,
        FaultKind::WriteZero,
        FaultKind::CowZero,
        FaultKind::Cow,
        FaultKind::Other,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::ReadZero),
            1 => Some(Self::WriteZero),
            2 => Some(Self::CowZero),
            3 => Some(Self::Cow),
            4 => Some(Self::Other),
            _ => None,
        }
    }

    /// The name used in every output format.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ReadZero => "read_zero",
            Self::WriteZero => "write_zero",
            Self::CowZero => "cow_zero",
            Self::Cow => "cow",
            Self::Other => "other",
        }
    }
}

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub mod pf {
    pub const PROT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RSVD: u64 = 1 << 3;
    pub const INSTR: u64 = 1 << 4;
}

/// Classifies a fault in a region page from the error code and whether that page maps the
/// zero page. Returns the kind and the page's new zero-page state.
pub const fn classify(error_code: u64, maps_zero_page: bool) -> (FaultKind, bool) {
    if error_code & (pf::RSVD | pf::INSTR) != 0 {
        return (FaultKind::Other, maps_zero_page);
    }
    let write = error_code & pf::WRITE != 0;
    if error_code & pf::PROT == 0 {
        if write {
            (FaultKind::WriteZero, false)
        } else {
            (FaultKind::ReadZero, true)
        }
    } else if write {
        if maps_zero_page {
            (FaultKind::CowZero, false)
        } else {
            (FaultKind::Cow, false)
        }
    } else {
        (FaultKind::Other, maps_zero_page)
    }
}

/// Per-process counters, one copy per CPU (`PerCpuHashMap<u32 tgid, PidCounters>`).
/// `reserved_bytes` moves up and down on different CPUs: only the sum is meaningful.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidCounters {
    pub faults: [u64; FAULT_KINDS],
    /// Regions created (cumulative).
    pub regions: u64,
    /// Bytes of live region pages (wrapping: sum over CPUs).
    pub reserved_bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChunkKey {
    pub tgid: u32,
    pub _pad: u32,
    /// `addr >> CHUNK_SHIFT`
    pub chunk: u64,
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
    /// A `MARKERS` entry names the region of this page and those after it in the chunk.
    pub start: [u64; CHUNK_WORDS],
    /// The region that page 0 continues, when page 0 has no start marker.
    pub carry: RegionRef,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MarkerKey {
    pub tgid: u32,
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
}

/// The most CPUs the programs sum per-CPU values over.
pub const MAX_CPUS: u32 = 256;

/// Send every fault through the ring buffer, not only count it.
pub const CONFIG_STREAM_FAULTS: u64 = 1 << 0;
/// Learn regions only for processes in `TRACED` (and their descendants).
pub const CONFIG_FILTER_PID: u64 = 1 << 1;
/// Learn regions for processes whose comm equals `Config::comm`.
pub const CONFIG_FILTER_COMM: u64 = 1 << 2;

/// What an [`Event`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A fault in a region: `addr`, `arg1` = region id, `arg2` = page index, `detail` = kind.
    Fault = 0,
    /// A region was created: `addr`, `arg1` = length, `detail` = [`REGION_FALLBACK`] bit.
    Region = 1,
    /// Pages were unmapped: `addr`, `arg1` = length, `arg2` = region bytes that went away.
    Unmap = 2,
    /// A region moved or changed size: `addr` old, `arg1` old len, `arg2` new addr,
    /// `arg3` new len.
    Remap = 3,
    /// A traced process forked: `arg1` = child tgid; its regions were copied.
    Fork = 4,
    /// The process called exec: its regions are gone.
    Exec = 5,
    /// The process exited: its regions are gone; its counters await userspace.
    Exit = 6,
}

impl EventKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Fault),
            1 => Some(Self::Region),
            2 => Some(Self::Unmap),
            3 => Some(Self::Remap),
            4 => Some(Self::Fork),
            5 => Some(Self::Exec),
            6 => Some(Self::Exit),
            _ => None,
        }
    }
}

/// `Event::detail` bit of a [`EventKind::Region`]: made by the documented mmap fallback.
pub const REGION_FALLBACK: u8 = 1;

/// One ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub addr: u64,
    pub arg1: u64,
    pub arg2: u64,
    pub arg3: u64,
    pub pid: u32,
    pub tid: u32,
    pub kind: u8,
    pub detail: u8,
    pub _pad: [u8; 6],
}

/// Slots of `EXIT_PROGS`, the programs `sys_exit` tail-calls, and their names.
pub const EXIT_LEARN: u32 = 0;
pub const EXIT_MUNMAP: u32 = 1;
pub const EXIT_MREMAP: u32 = 2;
/// mremap in place, smaller.
pub const EXIT_MREMAP_SHRINK: u32 = 3;
/// mremap in place, larger.
pub const EXIT_MREMAP_GROW: u32 = 4;
/// mremap to a new address: the new range first, then [`EXIT_MREMAP_DROP_OLD`].
pub const EXIT_MREMAP_MOVE: u32 = 5;
pub const EXIT_MREMAP_DROP_OLD: u32 = 6;
pub const EXIT_SLOTS: u32 = 7;
pub const EXIT_PROGRAMS: [(u32, &str); EXIT_SLOTS as usize] = [
    (EXIT_LEARN, "exit_learn"),
    (EXIT_MUNMAP, "exit_munmap"),
    (EXIT_MREMAP, "exit_mremap"),
    (EXIT_MREMAP_SHRINK, "exit_mremap_shrink"),
    (EXIT_MREMAP_GROW, "exit_mremap_grow"),
    (EXIT_MREMAP_MOVE, "exit_mremap_move"),
    (EXIT_MREMAP_DROP_OLD, "exit_mremap_drop_old"),
];

/// Indices of the per-CPU `DROPS` array.
pub const DROP_FAULT_EVENTS: u32 = 0;
pub const DROP_CONTROL_EVENTS: u32 = 1;
/// A map was full: a region, marker or counter could not be stored.
pub const DROP_MAP_FULL: u32 = 2;
pub const DROP_SLOTS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_covers_the_zero_page_lifecycle() {
        assert_eq!(classify(pf::USER, false), (FaultKind::ReadZero, true));
        assert_eq!(
            classify(pf::USER | pf::WRITE, false),
            (FaultKind::WriteZero, false)
        );
        assert_eq!(
            classify(pf::USER | pf::WRITE | pf::PROT, true),
            (FaultKind::CowZero, false)
        );
        assert_eq!(
            classify(pf::USER | pf::WRITE | pf::PROT, false),
            (FaultKind::Cow, false)
        );
        assert_eq!(
            classify(pf::USER | pf::PROT, true),
            (FaultKind::Other, true)
        );
        assert_eq!(
            classify(pf::USER | pf::INSTR, false),
            (FaultKind::Other, false)
        );
    }

    #[test]
    fn page_align_rounds_and_detects_overflow() {
        assert_eq!(page_align(1), Some(4096));
        assert_eq!(page_align(4096), Some(4096));
        assert_eq!(page_align(0), Some(0));
        assert_eq!(page_align(u64::MAX - 10), None);
    }

    #[test]
    fn kinds_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(FaultKind::from_u8(5), None);
        assert_eq!(core::mem::size_of::<Event>(), 56);
        assert_eq!(core::mem::size_of::<Chunk>(), 208);
    }
}
