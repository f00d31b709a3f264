//! The tracer's limits, reached on purpose: a region longer than CHUNKS' room, and more
//! followed processes alive at once than TRACED holds. Both must be counted in `drops`.

use std::path::Path;

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

use super::{Outcome, PAGE, Truth, fork_child, no_thp, page, wait_ok, write};

/// CHUNKS holds 262,144 chunks of 2 MiB (tamalloc-ebpf/src/maps.rs): 512 GiB of regions.
const CUT_BYTES: usize = 520 << 30;

/// One 520 GiB region (MAP_NORESERVE: nothing is reserved), its first and last page
/// written. Truth: the kernel made 2 first touches (mincore: both resident). A tracer whose
/// room ends at 512 GiB follows the head only and must say so (`region_cut`); the test
/// accepts that or all 2. `info.tail_write_zero` is the tail's share.
pub fn chunks_cut(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "chunks-cut",
        "bookkeeping: first and last page written; mincore: both resident",
    );
    let r = match tamalloc::alloc(CUT_BYTES) {
        Ok(r) => r,
        Err(e) => return super::skip("chunks-cut", format!("a 520 GiB region: {e}")),
    };
    let (p, len, _) = r.into_raw();
    let base = p.as_ptr();
    t.regions = 1;
    let last = len / PAGE - 1;
    write(base, 0);
    write(base, last);
    t.add(FaultKind::WriteZero, 2);
    let res = super::resident_count(base, 1)? + super::resident_count(page(base, last), 1)?;
    if res != 2 {
        bail!("{res} of the 2 written pages resident");
    }
    t.info("region_bytes", len);
    t.info("tail_write_zero", 1);
    t.emit(report)?;
    Ok(Outcome::Ran)
}

/// `children` children alive at once (each blocks on a pipe, touches nothing, exits), then
/// the parent writes one page of a region. Truth: bookkeeping; the test compares
/// `drops.traced_full` with the children beyond TRACED's room.
pub fn traced_full(report: Option<&Path>, children: u64) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "traced-full",
        "bookkeeping: the children touch nothing; the parent writes 1 region page",
    );
    let mut fds = [0; 2];
    // SAFETY: a pipe whose write end the parent closes once all children are forked.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let mut pids = Vec::with_capacity(children as usize);
    for _ in 0..children {
        let pid = fork_child(|| {
            // SAFETY: our copy of the write end, then a blocking read until EOF.
            unsafe {
                libc::close(fds[1]);
                let mut b = 0u8;
                libc::read(fds[0], (&raw mut b).cast(), 1);
            }
            Ok(())
        })
        .with_context(|| format!("forking child {} of {children}", pids.len() + 1))?;
        pids.push(pid);
    }
    // SAFETY: closing our ends of the pipe releases the children.
    unsafe {
        libc::close(fds[1]);
        libc::close(fds[0]);
    }
    for pid in pids {
        wait_ok(pid)?;
    }
    let base = super::region(1)?;
    t.regions = 1;
    write(base, 0);
    t.add(FaultKind::WriteZero, 1);
    t.info("children", children);
    t.emit(report)?;
    Ok(Outcome::Ran)
}
