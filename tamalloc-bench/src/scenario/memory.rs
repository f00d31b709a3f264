//! madvise paths that drop pages, or only seem to.

use std::{
    path::Path,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

use super::{
    Outcome, PAGE, Truth, fork_child, madvise, no_thp, page, region, resident, resident_count,
    wait_ok, write_pages,
};

/// A 24-page region, pages 0..8 and 16..24 written, 8..16 unmapped: MADV_DONTNEED over all
/// 24 fails with ENOMEM (the hole) yet drops the pages on both sides, so rewriting them is
/// 16 first touches again. Truth: bookkeeping; mincore after the madvise: 0 of 16 resident.
pub fn dontneed_hole(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "dontneed-hole",
        "bookkeeping; mincore after the failed MADV_DONTNEED: 0 of 16 resident",
    );
    let base = region(24)?;
    t.regions = 1;
    write_pages(base, 0..8);
    write_pages(base, 16..24);
    t.add(FaultKind::WriteZero, 16);
    // SAFETY: pages 8..16 of our own region.
    if unsafe { libc::munmap(page(base, 8).cast(), 8 * PAGE) } != 0 {
        bail!("munmap: {}", std::io::Error::last_os_error());
    }
    match madvise(base, 24, libc::MADV_DONTNEED) {
        Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {}
        other => bail!("MADV_DONTNEED over a hole: expected ENOMEM, got {other:?}"),
    }
    let left = resident_count(base, 8)? + resident_count(page(base, 16), 8)?;
    if left != 0 {
        bail!("{left} pages survived MADV_DONTNEED");
    }
    write_pages(base, 0..8);
    write_pages(base, 16..24);
    t.add(FaultKind::WriteZero, 16);
    t.info("resident_after_madvise", left);
    t.emit(report)?;
    Ok(Outcome::Ran)
}

const FREE_PAGES: usize = 16;
const OLD: u8 = 0x5a;

/// A 16-page region written in full, then MADV_FREE: the pages stay mapped (and writable)
/// until reclaim takes them. Each page is then written with an atomic swap, whose old value
/// tells what the kernel did: the old data (kept: no fault at all) or zero (reclaimed: a
/// first touch again). Then a child writes every page: each is a real page shared
/// copy-on-write, so 16 `cow`. Truth: the pages' content; mincore before the swaps.
pub fn madv_free(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "madv-free",
        "page content after MADV_FREE (old data = kept, zero = reclaimed); mincore",
    );
    let base = region(FREE_PAGES)?;
    t.regions = 1;
    write_pages(base, 0..FREE_PAGES);
    t.add(FaultKind::WriteZero, FREE_PAGES as u64);
    madvise(base, FREE_PAGES, libc::MADV_FREE).context("madvise(MADV_FREE)")?;
    let kept_by_mincore = resident_count(base, FREE_PAGES)?;
    let mut reclaimed = 0;
    for i in 0..FREE_PAGES {
        // SAFETY: the first byte of a page of our region, accessed only atomically here.
        let cell = unsafe { AtomicU8::from_ptr(page(base, i)) };
        match cell.swap(0x7b, Ordering::SeqCst) {
            OLD => {}
            0 => reclaimed += 1,
            v => bail!("page {i} holds {v:#x} after MADV_FREE"),
        }
    }
    t.add(FaultKind::WriteZero, reclaimed);
    if reclaimed > 0 {
        t.tracepoint_limit(
            "A page reclaim takes after `MADV_FREE` is still believed mapped: its next touch \
             (which gets a new page: kernel mode counts `write_zero` or `read_zero`) counts \
             `other`.",
            &[
                (FaultKind::WriteZero, FREE_PAGES as u64),
                (FaultKind::Other, reclaimed),
            ],
        );
    }
    t.info("resident_after_free", kept_by_mincore);
    t.info("reclaimed", reclaimed);
    let child = fork_child(|| {
        let mut c = Truth::new(
            "madv-free",
            "mincore in the child: all 16 present (shared copy-on-write)",
        );
        let have = resident(base, FREE_PAGES)?;
        if !have.iter().all(|&r| r) {
            bail!("the child lacks pages its parent holds: {have:?}");
        }
        write_pages(base, 0..FREE_PAGES);
        c.add(FaultKind::Cow, FREE_PAGES as u64);
        c.emit(report)
    })?;
    wait_ok(child)?;
    t.emit(report)?;
    Ok(Outcome::Ran)
}
