//! Transparent huge pages: a THP first touch (one fault, 512 pages) and MADV_COLLAPSE.
//! Both leave THP on for the process (the other scenarios switch it off). After either, a
//! forked child writes pages of the huge page its parent never wrote: the kernel splits the
//! shared PMD and copies each 4 KiB page, so each is a `cow`, not a first touch.

use std::path::Path;

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

use super::{
    Outcome, PAGE, Truth, fork_child, madvise, page, region, resident_count, skip, wait_ok, write,
    write_pages,
};

/// The PMD size of THP, or why THP cannot be used here.
fn hpage_size(needs_madvise_mode: bool) -> Result<usize, String> {
    let sys = "/sys/kernel/mm/transparent_hugepage";
    let enabled = std::fs::read_to_string(format!("{sys}/enabled"))
        .map_err(|e| format!("{sys}/enabled: {e} (no CONFIG_TRANSPARENT_HUGEPAGE)"))?;
    if needs_madvise_mode && enabled.contains("[never]") {
        return Err(format!("THP is off ({sys}/enabled: {})", enabled.trim()));
    }
    let size = std::fs::read_to_string(format!("{sys}/hpage_pmd_size"))
        .map_err(|e| format!("{sys}/hpage_pmd_size: {e}"))?;
    let size: usize = size
        .trim()
        .parse()
        .map_err(|e| format!("{sys}/hpage_pmd_size: {e}"))?;
    if size == 0 || !size.is_multiple_of(PAGE) {
        return Err(format!("{sys}/hpage_pmd_size is {size}"));
    }
    Ok(size)
}

/// AnonHugePages of the mapping that holds `addr`, in bytes (/proc/self/smaps).
fn anon_huge_bytes(addr: *mut u8) -> anyhow::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").context("reading /proc/self/smaps")?;
    let a = addr as usize;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = lo <= a && a < hi;
            continue;
        }
        if inside && let Some(kb) = line.strip_prefix("AnonHugePages:") {
            let kb: usize = kb.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no smaps entry for {addr:p}")
}

/// A region with room for two aligned huge pages: (region base, first aligned address).
fn aligned_region(huge: usize) -> anyhow::Result<(*mut u8, *mut u8)> {
    let base = region(3 * huge / PAGE)?;
    let aligned = (base as usize).next_multiple_of(huge);
    Ok((base, aligned as *mut u8))
}

/// Pages of the huge page at 0 that the parent writes, and then those the child writes.
const PARENT_WRITES: std::ops::Range<usize> = 0..8;
const CHILD_WRITES: std::ops::Range<usize> = 8..16;

/// The child after a fork: it writes pages 8..16 of huge page 0, whose first 8 pages the
/// parent wrote: a copy of each when huge page 0 was (or became) one THP, else first touches.
fn child_writes(
    report: Option<&Path>,
    scenario: &'static str,
    at: *mut u8,
    was_huge: bool,
) -> anyhow::Result<()> {
    let child = fork_child(|| {
        let mut c = Truth::new(
            scenario,
            "smaps AnonHugePages in the parent: THP pages are shared, so copied",
        );
        write_pages(at, CHILD_WRITES);
        let kind = if was_huge {
            FaultKind::Cow
        } else {
            FaultKind::WriteZero
        };
        c.add(kind, CHILD_WRITES.len() as u64);
        if was_huge {
            c.tracepoint_limit(
                super::UNSEEN_PRESENT_LIMIT,
                &[(FaultKind::CowZero, CHILD_WRITES.len() as u64)],
            );
        }
        c.emit(report)
    })?;
    wait_ok(child)
}

/// MADV_HUGEPAGE over two aligned huge pages, then one write at the start of each: a THP
/// first touch (1 fault, 512 pages) when the kernel finds a huge page, else a 4 KiB one.
/// Then pages 1..8 of each: no fault on a THP, first touches otherwise. Truth: smaps
/// AnonHugePages after each first write; mincore: the pages counted are the pages resident.
/// Kernel mode counts pages (512 per THP) and `huge_faults`; tracepoint mode faults.
pub fn thp(report: Option<&Path>) -> anyhow::Result<Outcome> {
    let huge = match hpage_size(true) {
        Ok(h) => h,
        Err(reason) => return skip("thp", reason),
    };
    let hp = huge / PAGE;
    let mut t = Truth::new(
        "thp",
        "smaps AnonHugePages after each first write (THP or not); mincore: resident pages",
    );
    let (_, at) = aligned_region(huge)?;
    t.regions = 1;
    madvise(at, 2 * hp, libc::MADV_HUGEPAGE).context("madvise(MADV_HUGEPAGE)")?;
    let (mut thps, mut faults) = (0, 0);
    let mut huge_pages = Vec::new();
    for k in 0..2 {
        let before = anon_huge_bytes(at)?;
        write(page(at, k * hp), 0);
        let is_huge = anon_huge_bytes(at)? == before + huge;
        huge_pages.push(is_huge);
        thps += u64::from(is_huge);
        faults += 1;
        // Kernel mode counts pages: a THP first touch is `hp` of them.
        t.add(FaultKind::WriteZero, if is_huge { hp as u64 } else { 1 });
        for i in PARENT_WRITES.skip(1) {
            write(page(at, k * hp), i);
            if !is_huge {
                t.add(FaultKind::WriteZero, 1);
                faults += 1;
            }
        }
    }
    let res = resident_count(at, 2 * hp)?;
    if res != t.kinds[FaultKind::WriteZero as usize] {
        bail!(
            "{res} pages resident, but the first touches made {} of them",
            t.kinds[FaultKind::WriteZero as usize]
        );
    }
    t.huge_faults = Some(thps);
    // Tracepoint mode counts faults (README: "the counts are faults, not pages").
    t.tracepoint("write_zero", faults);
    t.info("huge_page_bytes", huge);
    t.info("resident_pages", res);
    child_writes(report, "thp", at, huge_pages[0])?;
    t.emit(report)?;
    Ok(Outcome::Ran)
}

/// Pages 0..16 of an aligned huge page written as 4 KiB pages (MADV_NOHUGEPAGE), then
/// MADV_HUGEPAGE + MADV_COLLAPSE: the kernel fills the other 496 pages itself (EINVAL: a
/// kernel before 6.1, skipped). Touching them faults no more. Truth: smaps AnonHugePages
/// after the collapse; mincore: 512 resident.
pub fn collapse(report: Option<&Path>) -> anyhow::Result<Outcome> {
    const MADV_COLLAPSE: libc::c_int = 25;
    let huge = match hpage_size(false) {
        Ok(h) => h,
        Err(reason) => return skip("collapse", reason),
    };
    let hp = huge / PAGE;
    let mut t = Truth::new(
        "collapse",
        "bookkeeping; smaps AnonHugePages after MADV_COLLAPSE; mincore: all resident",
    );
    let (_, at) = aligned_region(huge)?;
    t.regions = 1;
    madvise(at, hp, libc::MADV_NOHUGEPAGE).context("madvise(MADV_NOHUGEPAGE)")?;
    write_pages(at, PARENT_WRITES);
    write_pages(at, 8..16);
    t.add(FaultKind::WriteZero, 16);
    madvise(at, hp, libc::MADV_HUGEPAGE).context("madvise(MADV_HUGEPAGE)")?;
    let mut tries = 0;
    loop {
        match madvise(at, hp, MADV_COLLAPSE) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return skip(
                    "collapse",
                    format!("MADV_COLLAPSE: {e} (kernel before 6.1?)"),
                );
            }
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("MADV_COLLAPSE: {e}, retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return skip("collapse", format!("MADV_COLLAPSE keeps failing: {e}")),
        }
    }
    let huge_now = anon_huge_bytes(at)?;
    if huge_now < huge {
        bail!("MADV_COLLAPSE succeeded but smaps shows {huge_now} AnonHugePages bytes");
    }
    let res = resident_count(at, hp)?;
    if res != hp as u64 {
        bail!("{res} of {hp} pages resident after MADV_COLLAPSE");
    }
    // The pages the kernel filled: touching them is no fault.
    write_pages(at, 16..32);
    // Pages 8..16 were written by the parent too: make the child write pages it never did.
    let child = fork_child(|| {
        let mut c = Truth::new(
            "collapse",
            "the collapsed THP is shared: each write copies a page",
        );
        write_pages(at, 100..108);
        c.add(FaultKind::Cow, 8);
        c.tracepoint_limit(super::UNSEEN_PRESENT_LIMIT, &[(FaultKind::CowZero, 8)]);
        c.emit(report)
    })?;
    wait_ok(child)?;
    t.info("anon_huge_bytes", huge_now);
    t.info("resident_pages", res);
    t.emit(report)?;
    Ok(Outcome::Ran)
}
