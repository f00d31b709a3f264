//! `--regions anon` (issue 14): an unmodified program's memory, no tamalloc call anywhere.
//! The heap grown with `sbrk`, a large `calloc` and a plain private `mmap`, each touched in
//! a pattern the workload knows page by page.
//!
//! The process as a whole also touches memory the workload does not count (the Rust
//! runtime's and glibc's own), so the truth is per address range: one `range` line per
//! pattern, with its first and one-past-last address, how its mapping was made, and the
//! first touches in it by kind. A tracer following every anonymous mapping must count
//! exactly those faults there. THP is off (one fault per page).

use std::ptr;

use anyhow::bail;
use serde_json::json;
use tamalloc_common::trace::FaultKind;

use super::{Outcome, PAGE, no_thp, read, write};
use crate::output::emit;

/// One touched range and its truth.
struct Range {
    what: &'static str,
    made_by: &'static str,
    base: *mut u8,
    pages: usize,
    kinds: [u64; 5],
}

impl Range {
    fn new(what: &'static str, made_by: &'static str, base: *mut u8, pages: usize) -> Self {
        Self {
            what,
            made_by,
            base,
            pages,
            kinds: [0; 5],
        }
    }

    /// Writes page `i` (its first touch, or the write after a read: `kind`).
    fn write(&mut self, i: usize, kind: FaultKind) {
        write(self.base, i);
        self.kinds[kind as usize] += 1;
    }

    fn read(&mut self, i: usize) {
        read(self.base, i);
        self.kinds[FaultKind::ReadZero as usize] += 1;
    }

    fn line(&self) -> String {
        let mut v = json!({
            "type": "range",
            "scenario": "anon",
            "pid": std::process::id(),
            "what": self.what,
            "made_by": self.made_by,
            "start": self.base as u64,
            "end": self.base as u64 + (self.pages * PAGE) as u64,
        });
        for k in FaultKind::ALL {
            v[k.name()] = self.kinds[k as usize].into();
        }
        format!("{v}\n")
    }
}

/// The same pattern in every range: pages 1, 4, 7... written, 2, 5, 8... read, and every
/// second read page written afterwards (a zero page replaced: `cow_zero`). Page 0 is left
/// alone (calloc's chunk header lives there).
fn touch(r: &mut Range) {
    let n = r.pages;
    for i in (1..n).step_by(3) {
        r.write(i, FaultKind::WriteZero);
    }
    for i in (2..n).step_by(3) {
        r.read(i);
    }
    for i in (2..n).step_by(6) {
        r.write(i, FaultKind::CowZero);
    }
}

pub fn anon(report: Option<&std::path::Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut lines = String::new();

    // The heap: sbrk straight from the program, as an allocator of its own would.
    const HEAP_PAGES: usize = 96;
    // SAFETY: sbrk(0) only reads the program break.
    let cur = unsafe { libc::sbrk(0) } as usize;
    // Start on a page of its own: the page holding the current break may be in use.
    let pad = cur.next_multiple_of(PAGE) - cur + PAGE;
    // SAFETY: grows the heap; glibc's malloc treats memory a foreign sbrk took as not its own.
    let got = unsafe { libc::sbrk((pad + HEAP_PAGES * PAGE) as libc::intptr_t) };
    if got as isize == -1 {
        bail!("sbrk: {}", std::io::Error::last_os_error());
    }
    let heap = (got as usize + pad) as *mut u8;
    let mut r = Range::new("heap", "brk", heap, HEAP_PAGES);
    touch(&mut r);
    lines.push_str(&r.line());

    // A large calloc: glibc maps it fresh (above the mmap threshold) and skips the memset,
    // since the kernel's pages are zero; it writes the chunk header on page 0.
    const CALLOC_PAGES: usize = 16384;
    // SAFETY: a plain allocation, freed below.
    let c = unsafe { libc::calloc(CALLOC_PAGES, PAGE) }.cast::<u8>();
    if c.is_null() {
        bail!("calloc of {} MiB failed", (CALLOC_PAGES * PAGE) >> 20);
    }
    // The mapping starts at the chunk header, a page-aligned 16 bytes before `c`.
    let mapping = ((c as usize) & !(PAGE - 1)) as *mut u8;
    let mut r = Range::new("calloc", "mmap", mapping, CALLOC_PAGES);
    r.kinds[FaultKind::WriteZero as usize] += 1; // glibc's header, page 0
    touch(&mut r);
    lines.push_str(&r.line());

    // A plain private anonymous mmap.
    const MMAP_PAGES: usize = 1024;
    let m = super::plain(MMAP_PAGES, ptr::null_mut(), 0)?;
    let mut r = Range::new("mmap", "mmap", m, MMAP_PAGES);
    touch(&mut r);
    lines.push_str(&r.line());

    // SAFETY: `c` came from calloc and nothing holds it.
    unsafe { libc::free(c.cast()) };
    emit(report, &lines)?;
    Ok(Outcome::Ran)
}

/// `--regions name:arena`: two ranges named with prctl(PR_SET_VMA_ANON_NAME), `arena` and
/// `other`; the upper half of `arena` is renamed before it is touched. Only the lower half
/// of `arena` may count (kernels with CONFIG_ANON_VMA_NAME; others skip).
pub fn named(report: Option<&std::path::Path>) -> anyhow::Result<Outcome> {
    no_thp();
    const PAGES: usize = 256;
    let a = super::plain(PAGES, ptr::null_mut(), 0)?;
    let b = super::plain(64, ptr::null_mut(), 0)?;
    if let Err(e) = name(a, PAGES, c"arena") {
        return super::skip(
            "named",
            format!("this kernel cannot name anonymous memory: {e}"),
        );
    }
    name(b, 64, c"other")?;
    let upper = super::page(a, PAGES / 2);
    name(upper, PAGES / 2, c"arena-old")?;
    let mut lines = String::new();
    let mut r = Range::new("arena", "named", a, PAGES / 2);
    touch(&mut r);
    lines.push_str(&r.line());
    // Touched like the others, but named otherwise: nothing may count there.
    for (what, base, pages) in [("renamed", upper, PAGES / 2), ("other", b, 64)] {
        let mut r = Range::new(what, "named", base, pages);
        touch(&mut r);
        r.kinds = [0; 5];
        lines.push_str(&r.line());
    }
    emit(report, &lines)?;
    Ok(Outcome::Ran)
}

/// prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, base, pages, name).
fn name(base: *mut u8, pages: usize, name: &std::ffi::CStr) -> std::io::Result<()> {
    const PR_SET_VMA: libc::c_int = 0x5356_4d41;
    // SAFETY: names a range of our own mapping; `name` outlives the call.
    let r = unsafe {
        libc::prctl(
            PR_SET_VMA,
            0 as libc::c_ulong,
            base as libc::c_ulong,
            (pages * PAGE) as libc::c_ulong,
            name.as_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
