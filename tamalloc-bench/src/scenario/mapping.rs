//! Changes to the address space a syscall replay gets wrong: a munmap that fails, a plain
//! mapping moved onto region pages, and a CLONE_VM child that is another process.

use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::bail;
use tamalloc_common::trace::FaultKind;

use super::{
    Outcome, PAGE, Truth, no_thp, page, plain, region, resident, resident_count, wait_ok,
    write_pages,
};

const MSEAL: libc::c_long = 462;

/// Pages 0..8 of a 16-page region written; then munmap calls that fail and unmap nothing:
/// an unaligned address (EINVAL), and, where mseal(2) exists (6.10+), the whole region with
/// pages 8..16 sealed (EPERM). Then pages 8..16 are written: first touches of a live region.
/// Truth: bookkeeping; mincore after the failed calls: pages 0..8 still resident.
pub fn munmap_fail(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "munmap-fail",
        "bookkeeping; mincore after the failed munmaps: the 8 written pages still resident",
    );
    let base = region(16)?;
    t.regions = 1;
    write_pages(base, 0..8);
    t.add(FaultKind::WriteZero, 8);
    let munmap = |addr: *mut u8, len: usize| {
        // SAFETY: callers pass ranges of our region, and expect the call to fail.
        let r = unsafe { libc::munmap(addr.cast(), len) };
        (r, std::io::Error::last_os_error().raw_os_error())
    };
    let r = munmap(base.wrapping_add(1), 16 * PAGE);
    if r != (-1, Some(libc::EINVAL)) {
        bail!("munmap of an unaligned address: {r:?}, expected EINVAL");
    }
    // SAFETY: mseal(addr, len, 0) seals pages 8..16 of our region against unmapping.
    let sealed = unsafe { libc::syscall(MSEAL, page(base, 8), 8 * PAGE, 0) } == 0;
    if sealed {
        let r = munmap(base, 16 * PAGE);
        if r != (-1, Some(libc::EPERM)) {
            bail!("munmap over sealed pages: {r:?}, expected EPERM");
        }
    } else {
        t.info(
            "mseal",
            format!(
                "{} (6.10+): only the EINVAL case",
                std::io::Error::last_os_error()
            ),
        );
    }
    let res = resident_count(base, 8)?;
    if res != 8 {
        bail!("a failed munmap dropped pages: {res} of 8 resident");
    }
    write_pages(base, 0..16);
    t.add(FaultKind::WriteZero, 8);
    t.info("sealed", sealed);
    t.emit(report)?;
    Ok(Outcome::Ran)
}

/// A plain, untouched 4-page mapping moved by mremap(MREMAP_FIXED) onto pages 4..8 of a
/// 16-page region: those pages are the plain mapping's now, not the region's. All 16 are
/// written: 12 first touches in the region. Truth: bookkeeping.
pub fn mremap_onto(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "mremap-onto",
        "bookkeeping: pages 4..8 belong to the moved plain mapping",
    );
    let base = region(16)?;
    t.regions = 1;
    let p = plain(4, std::ptr::null_mut(), 0)?;
    // SAFETY: moves our plain mapping over pages 4..8 of our region.
    let moved = unsafe {
        libc::mremap(
            p.cast(),
            4 * PAGE,
            4 * PAGE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            page(base, 4),
        )
    };
    if moved != page(base, 4).cast() {
        bail!("mremap(MREMAP_FIXED): {}", std::io::Error::last_os_error());
    }
    write_pages(base, 0..16);
    t.add(FaultKind::WriteZero, 12);
    t.info("resident", resident_count(base, 16)?);
    t.emit(report)?;
    Ok(Outcome::Ran)
}

/// README "Known limits, both modes", on a CLONE_VM child.
const CLONE_VM_LIMIT: &str = "A `vfork` or `CLONE_VM` child (without `CLONE_THREAD`) shares its \
     parent's memory but not the tracer's record of its regions, which is kept per process: \
     a region the child creates counts only the child's faults, and the child's `munmap` or \
     `MAP_FIXED` over its parent's region pages is not seen by the parent, whose faults there \
     still count as region pages (and the other way round).";

/// What the CLONE_VM child made: its region's address.
static CHILD_REGION: AtomicUsize = AtomicUsize::new(0);
/// The parent's region, for the child.
static PARENT_REGION: AtomicUsize = AtomicUsize::new(0);

extern "C" fn clone_vm_child(_: *mut libc::c_void) -> libc::c_int {
    let base = PARENT_REGION.load(Ordering::SeqCst) as *mut u8;
    // The parent waits in waitpid: the child may use the shared heap meanwhile.
    let Ok(r) = region(16) else { return 1 };
    write_pages(r, 0..4);
    CHILD_REGION.store(r as usize, Ordering::SeqCst);
    // SAFETY: pages 8..16 of the shared region, replaced by a plain mapping.
    let fixed = unsafe {
        libc::mmap(
            page(base, 8).cast(),
            8 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    i32::from(fixed != page(base, 8).cast())
}

/// A CLONE_VM child without CLONE_THREAD (another process, same address space) creates a
/// region and writes 4 of its pages, and maps a plain mapping over pages 8..16 of its
/// parent's region. The parent then writes all 16 pages of both: 8 + 12 first touches.
/// Truth: bookkeeping (faults belong to the process whose thread faulted; a region to the
/// process that created it); mincore: the child's 4 pages resident before the parent's writes.
pub fn clone_vm(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "clone-vm",
        "bookkeeping; mincore: the CLONE_VM child's 4 pages present before the parent's writes",
    );
    let base = region(16)?;
    t.regions = 1;
    PARENT_REGION.store(base as usize, Ordering::SeqCst);
    let mut stack = vec![0u8; 256 * 1024];
    let top = stack.as_mut_ptr().wrapping_add(stack.len()) as usize & !15;
    // SAFETY: the child runs `clone_vm_child` on `stack`, which outlives it (we wait for it
    // before returning); SIGCHLD makes it an ordinary child for waitpid.
    let pid = unsafe {
        libc::clone(
            clone_vm_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        bail!("clone(CLONE_VM): {}", std::io::Error::last_os_error());
    }
    wait_ok(pid)?;
    drop(stack);
    let r = CHILD_REGION.load(Ordering::SeqCst) as *mut u8;
    let have = resident(r, 16)?;
    if have[..4].iter().any(|&p| !p) || have[4..].iter().any(|&p| p) {
        bail!("the child's region: resident {have:?}, expected pages 0..4");
    }
    write_pages(base, 0..16);
    t.add(FaultKind::WriteZero, 8);
    write_pages(r, 0..16);
    t.add(FaultKind::WriteZero, 12);
    let mut c = Truth::new(
        "clone-vm",
        "bookkeeping: the CLONE_VM child created one region and wrote 4 of its pages",
    );
    c.pid = pid as u32;
    c.regions = 1;
    c.add(FaultKind::WriteZero, 4);
    c.emit(report)?;
    // The parent's 16 writes all count in its own region: the child's MAP_FIXED over 8 of
    // them and the child's region are unseen by it.
    t.limit_in_both_modes(CLONE_VM_LIMIT, &[(FaultKind::WriteZero, 16)]);
    t.emit(report)?;
    Ok(Outcome::Ran)
}
