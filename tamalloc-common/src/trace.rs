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

use crate::maps::prog;

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

    /// The kind whose discriminant (and index in [`FaultKind::ALL`]) is `v`.
    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < FAULT_KINDS {
            Some(Self::ALL[v as usize])
        } else {
            None
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
    pub const PK: u64 = 1 << 5;
    pub const SHSTK: u64 = 1 << 6;
    pub const SGX: u64 = 1 << 15;
}

/// What the tracer knows of one region page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageState {
    /// It maps the shared zero page (read before written).
    pub zero: bool,
    /// It maps a page of its own (written).
    pub present: bool,
}

/// Classifies a fault in a region page from the x86 error code and the page's state, and
/// returns the page's new state.
///
/// A not-present fault on a page that already maps something is not a first touch: a
/// spurious fault (two threads faulting the same page), a NUMA hinting fault or a swap-in.
/// Those are `other`, so that the first-touch kinds stay exact. A write-protect fault on a
/// page the tracer never saw mapped replaces a zero page it could not see (the huge zero
/// page, MADV_POPULATE_READ, a forked child's copied zero-page entry): `cow_zero`.
pub const fn classify(error_code: u64, page: PageState) -> (FaultKind, PageState) {
    const OTHER_BITS: u64 = pf::RSVD | pf::INSTR | pf::PK | pf::SHSTK | pf::SGX;
    let mapped = PageState {
        zero: false,
        present: true,
    };
    if error_code & OTHER_BITS != 0 {
        return (FaultKind::Other, page);
    }
    let write = error_code & pf::WRITE != 0;
    if error_code & pf::PROT == 0 {
        if page.present || (page.zero && !write) {
            (FaultKind::Other, page)
        } else if write {
            // Over a zero page (its entry was zapped): a first allocation all the same.
            (FaultKind::WriteZero, mapped)
        } else {
            (
                FaultKind::ReadZero,
                PageState {
                    zero: true,
                    present: false,
                },
            )
        }
    } else if write {
        if page.present && !page.zero {
            (FaultKind::Cow, mapped)
        } else {
            (FaultKind::CowZero, mapped)
        }
    } else {
        (FaultKind::Other, page)
    }
}

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
}

/// Processes with counters at once (slots of `COUNTERS`).
pub const MAX_PROCS: u32 = 8192;

/// The largest tgid plus one (`PID_MAX_LIMIT` on 64-bit).
pub const PID_LIMIT: u32 = 1 << 22;
/// Words of the `PID_GATE` bitmap: bit `tgid` is set once the process has a counter slot,
/// so a fault of any other process costs one array read, not a hash lookup.
pub const PID_GATE_WORDS: u32 = PID_LIMIT / 64;

/// `CHUNKS` key: the tgid in the top 24 bits, `addr >> CHUNK_SHIFT` (under 2^35 for
/// 5-level paging's 56-bit user addresses) in the low 40. One word hashes and compares
/// faster than a (tgid, chunk) pair, and the fault path pays that on every fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChunkKey(u64);

impl ChunkKey {
    const CHUNK_BITS: u32 = 40;

    #[inline(always)]
    pub const fn new(tgid: u32, chunk: u64) -> Self {
        Self(((tgid as u64) << Self::CHUNK_BITS) | (chunk & ((1 << Self::CHUNK_BITS) - 1)))
    }

    #[inline(always)]
    pub const fn tgid(self) -> u32 {
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
    pub _pad: u32,
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

/// Slots of `TAIL_PROGS`, the programs `sys_enter`/`sys_exit` tail-call, and their names.
pub const EXIT_LEARN: u32 = 0;
/// munmap, at `sys_enter`: forgotten before the kernel frees the range for reuse.
pub const ENTER_MUNMAP: u32 = 1;
pub const EXIT_MREMAP: u32 = 2;
/// mremap in place, smaller.
pub const EXIT_MREMAP_SHRINK: u32 = 3;
/// mremap in place, larger.
pub const EXIT_MREMAP_GROW: u32 = 4;
/// mremap to a new address: the new range first, then [`EXIT_MREMAP_DROP_OLD`].
pub const EXIT_MREMAP_MOVE: u32 = 5;
pub const EXIT_MREMAP_DROP_OLD: u32 = 6;
/// madvise(MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTNEED_LOCKED).
pub const EXIT_MADVISE: u32 = 7;
/// mremap with MREMAP_FIXED onto region pages: forget them, then [`EXIT_MREMAP_MOVE`].
pub const EXIT_MREMAP_CLEAR_TARGET: u32 = 8;
/// mmap with MAP_FIXED over region pages: forget them.
pub const EXIT_MMAP_FIXED: u32 = 9;
pub const TAIL_SLOTS: u32 = 10;
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
    (EXIT_MMAP_FIXED, prog::EXIT_MMAP_FIXED),
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

    const NONE: PageState = PageState {
        zero: false,
        present: false,
    };
    const ZERO: PageState = PageState {
        zero: true,
        present: false,
    };
    const OWN: PageState = PageState {
        zero: false,
        present: true,
    };

    #[test]
    fn classify_covers_the_zero_page_lifecycle() {
        use FaultKind::*;
        let (r, w, wp) = (
            pf::USER,
            pf::USER | pf::WRITE,
            pf::USER | pf::WRITE | pf::PROT,
        );
        assert_eq!(classify(r, NONE), (ReadZero, ZERO));
        assert_eq!(classify(w, NONE), (WriteZero, OWN));
        assert_eq!(classify(wp, ZERO), (CowZero, OWN));
        assert_eq!(classify(wp, OWN), (Cow, OWN));
        // A zero page the tracer could not see (huge zero page, populate, fork copy).
        assert_eq!(classify(wp, NONE), (CowZero, OWN));
        // Write over a zapped zero-page entry still allocates.
        assert_eq!(classify(w, ZERO), (WriteZero, OWN));
    }

    #[test]
    fn classify_keeps_repeat_and_foreign_faults_out_of_first_touches() {
        use FaultKind::*;
        // Two threads reading the same page at once: the second is not a first touch.
        assert_eq!(classify(pf::USER, ZERO), (Other, ZERO));
        // NUMA hinting or swap-in on a page of its own.
        assert_eq!(classify(pf::USER, OWN), (Other, OWN));
        assert_eq!(classify(pf::USER | pf::WRITE, OWN), (Other, OWN));
        assert_eq!(classify(pf::USER | pf::PROT, ZERO), (Other, ZERO));
        assert_eq!(classify(pf::USER | pf::INSTR, NONE), (Other, NONE));
        assert_eq!(classify(pf::USER | pf::WRITE | pf::PK, ZERO), (Other, ZERO));
    }

    #[test]
    fn chunk_key_keeps_tgid_and_chunk_apart() {
        let top_chunk = ((1u64 << 56) - 1) >> CHUNK_SHIFT;
        for (tgid, chunk) in [
            (1, 0),
            (PID_LIMIT - 1, top_chunk),
            (4242, 0x7fff_ffff_f000 >> 21),
        ] {
            let k = ChunkKey::new(tgid, chunk);
            assert_eq!((k.tgid(), k.chunk()), (tgid, chunk));
        }
        assert_ne!(ChunkKey::new(1, 2), ChunkKey::new(2, 1));
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
        for (i, k) in FaultKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "ALL is in discriminant order");
            assert_eq!(FaultKind::from_u8(k as u8), Some(k));
        }
        assert_eq!(FaultKind::from_u8(5), None);
        assert_eq!(core::mem::size_of::<Event>(), 56);
        assert_eq!(core::mem::size_of::<Chunk>(), 280);
    }
}
