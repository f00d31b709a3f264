//! What the programs classify and report: the fault kinds and the pure [`classify`] (tested
//! on the host), and [`Event`], the record on the ring. The maps' names, keys and values are
//! in [`crate::maps`].
/// log2 of the page size the tracer assumes (x86-64 base pages).
pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
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

/// What the kernel-mode programs hook: the kernel functions that install a page (or refuse
/// to), each classified by what it did rather than by what the fault looked like.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// `do_anonymous_page`: a pte-none fault in an anonymous VMA (a first touch, also after
    /// the page was dropped): the zero page for a read, a new zeroed page for a write.
    Anon = 0,
    /// `do_huge_pmd_anonymous_page`: the same for a whole PMD (a transparent huge page).
    HugeAnon = 1,
    /// `do_wp_page`: a write to a write-protected pte (a zero page, or a page shared since
    /// fork).
    WriteProtect = 2,
    /// `do_huge_pmd_wp_page`: the same for a huge page.
    HugeWriteProtect = 3,
}

/// Kernel constants the kernel-mode programs read (include/linux/mm_types.h,
/// arch/x86/include/asm/pgtable_types.h); the same from 6.1 to 6.18.
pub mod kernel {
    /// `enum fault_flag`.
    pub const FAULT_FLAG_WRITE: u32 = 1 << 0;
    pub const FAULT_FLAG_USER: u32 = 1 << 6;
    pub const FAULT_FLAG_REMOTE: u32 = 1 << 7;
    /// `enum vm_fault_reason`.
    pub const VM_FAULT_OOM: u32 = 0x1;
    pub const VM_FAULT_SIGBUS: u32 = 0x2;
    pub const VM_FAULT_HWPOISON: u32 = 0x10;
    pub const VM_FAULT_HWPOISON_LARGE: u32 = 0x20;
    pub const VM_FAULT_SIGSEGV: u32 = 0x40;
    pub const VM_FAULT_RETRY: u32 = 0x400;
    pub const VM_FAULT_FALLBACK: u32 = 0x800;
    /// The installed page table entry is the zero page: in an anonymous VMA the only
    /// special pte (`pte_mkspecial(zero_pfn)`), x86's `_PAGE_SPECIAL` (software bit 1).
    pub const PTE_SPECIAL: u64 = 1 << 9;
    /// A PMD's base pages (x86-64: 2 MiB of 4 KiB pages).
    pub const HPAGE_PMD_PAGES: u64 = 512;
}

/// Classifies what a hooked kernel function did, from its fault flags, its return value and
/// (write-protect faults) the pte it found: `(kind, pages)`, or `None` when nothing is to be
/// counted (the fault is retried, falls back to base pages, or is not the process's own).
///
/// The kernel tells what it installed, so no page state is kept: a second fault on a page
/// that is already mapped (swap-in, NUMA hinting, a spurious fault) never reaches these
/// functions, and a page dropped by `MADV_DONTNEED` reaches `do_anonymous_page` again.
pub const fn classify_install(
    at: Install,
    fault_flags: u32,
    ret: u32,
    orig_pte: u64,
) -> Option<(FaultKind, u64)> {
    use kernel::*;
    const REFUSED: u32 = VM_FAULT_OOM
        | VM_FAULT_SIGBUS
        | VM_FAULT_SIGSEGV
        | VM_FAULT_HWPOISON
        | VM_FAULT_HWPOISON_LARGE;
    let huge = matches!(at, Install::HugeAnon | Install::HugeWriteProtect);
    // Remote faults (process_vm_writev, ptrace) are another process's; a retried fault is
    // counted when it runs again (the first pass only asked for the mmap lock); a huge
    // fault that falls back is counted by the base-page function that runs next.
    if fault_flags & FAULT_FLAG_REMOTE != 0
        || ret & VM_FAULT_RETRY != 0
        || (huge && ret & VM_FAULT_FALLBACK != 0)
    {
        return None;
    }
    if ret & REFUSED != 0 {
        return Some((FaultKind::Other, 1));
    }
    let pages = if huge { HPAGE_PMD_PAGES } else { 1 };
    let write = fault_flags & FAULT_FLAG_WRITE != 0;
    match at {
        Install::Anon | Install::HugeAnon => Some((
            if write {
                FaultKind::WriteZero
            } else {
                FaultKind::ReadZero
            },
            pages,
        )),
        // Write-protect faults without FAULT_FLAG_WRITE are GUP's unsharing, not a write.
        Install::WriteProtect | Install::HugeWriteProtect if !write => None,
        Install::WriteProtect if orig_pte & PTE_SPECIAL != 0 => Some((FaultKind::CowZero, 1)),
        Install::WriteProtect | Install::HugeWriteProtect => Some((FaultKind::Cow, pages)),
    }
}

/// What an [`Event`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A fault in a region: `addr`, `arg1` = region id, `arg2` = page index, `detail` = kind.
    Fault = 0,
    /// A region was created: `addr`, `arg1` = length, `detail` = how ([`REGION_FALLBACK`],
    /// [`REGION_MMAP`], [`REGION_BRK`], or 0 for syscall 554).
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

/// `Event::detail` of a [`EventKind::Region`]: how the region was made. Syscall 554 is 0.
/// The documented mmap fallback of a 554 that returned -ENOSYS.
pub const REGION_FALLBACK: u8 = 1;
/// `--regions anon`: a private anonymous `mmap`.
pub const REGION_MMAP: u8 = 2;
/// `--regions anon`: the heap, grown with `brk`.
pub const REGION_BRK: u8 = 3;
/// `--regions name:NAME`: a range named NAME with `prctl(PR_SET_VMA_ANON_NAME)`.
pub const REGION_NAMED: u8 = 4;

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
    fn classify_install_reads_what_the_kernel_did() {
        use FaultKind::*;
        use kernel::*;
        let w = FAULT_FLAG_WRITE;
        assert_eq!(
            classify_install(Install::Anon, 0, 0, 0),
            Some((ReadZero, 1))
        );
        assert_eq!(
            classify_install(Install::Anon, w, 0, 0),
            Some((WriteZero, 1))
        );
        assert_eq!(
            classify_install(Install::WriteProtect, w, 0, 0x8000_0000_0000_0225),
            Some((CowZero, 1))
        );
        assert_eq!(
            classify_install(Install::WriteProtect, w, 0, 0x8000_0000_1234_5025),
            Some((Cow, 1))
        );
        assert_eq!(
            classify_install(Install::HugeAnon, w, 0, 0),
            Some((WriteZero, 512))
        );
        assert_eq!(
            classify_install(Install::HugeAnon, 0, 0, 0),
            Some((ReadZero, 512))
        );
        assert_eq!(
            classify_install(Install::HugeWriteProtect, w, 0, 0),
            Some((Cow, 512))
        );
    }

    #[test]
    fn classify_install_counts_refusals_once_and_skips_retries() {
        use FaultKind::*;
        use kernel::*;
        let w = FAULT_FLAG_WRITE;
        for refused in [
            VM_FAULT_OOM,
            VM_FAULT_SIGBUS,
            VM_FAULT_SIGSEGV,
            VM_FAULT_HWPOISON,
        ] {
            assert_eq!(
                classify_install(Install::Anon, w, refused, 0),
                Some((Other, 1))
            );
            assert_eq!(
                classify_install(Install::HugeAnon, w, refused, 0),
                Some((Other, 1))
            );
        }
        assert_eq!(classify_install(Install::Anon, w, VM_FAULT_RETRY, 0), None);
        assert_eq!(
            classify_install(Install::HugeAnon, w, VM_FAULT_FALLBACK, 0),
            None
        );
        assert_eq!(
            classify_install(Install::HugeWriteProtect, w, VM_FAULT_FALLBACK, 0),
            None
        );
        assert_eq!(
            classify_install(Install::Anon, w | FAULT_FLAG_REMOTE, 0, 0),
            None
        );
        // GUP unsharing is not a write.
        assert_eq!(classify_install(Install::WriteProtect, 0, 0, 0), None);
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
    }
}
