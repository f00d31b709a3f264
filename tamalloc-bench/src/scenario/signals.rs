//! Faults that fail: reads of PROT_NONE region pages, each ending in SIGSEGV.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::bail;
use tamalloc_common::trace::FaultKind;

use super::{Outcome, PAGE, Truth, page, region, resident_count};

const PAGES: usize = 8;
/// si_code of a fault on a mapping without the access right (asm-generic/siginfo.h).
const SEGV_ACCERR: i32 = 2;

static SEGVS: AtomicU64 = AtomicU64::new(0);
static LAST_ADDR: AtomicUsize = AtomicUsize::new(0);
static LAST_CODE: AtomicUsize = AtomicUsize::new(0);

/// The probe: `mov al, [rdi]`, two bytes (8a 07), spelled out so that the handler knows how
/// far to step over it.
fn probe_read(p: *const u8) {
    // SAFETY: a one-byte read; when it faults, `on_segv` resumes after the instruction.
    unsafe {
        core::arch::asm!(".byte 0x8a, 0x07", in("rdi") p, out("al") _, options(nostack, readonly));
    }
}

extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
    unsafe {
        LAST_ADDR.store((*info).si_addr() as usize, Ordering::SeqCst);
        LAST_CODE.store((*info).si_code as usize, Ordering::SeqCst);
        SEGVS.fetch_add(1, Ordering::SeqCst);
        let uc = ctx.cast::<libc::ucontext_t>();
        (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] += 2;
    }
}

/// Eight reads of PROT_NONE region pages, each ending in a SIGSEGV that the handler counts
/// and steps over. Truth: the handler saw exactly one SEGV_ACCERR per page at that page's
/// address (8 faults that failed: `other`), and mincore shows nothing became resident.
pub fn prot_none(report: Option<&std::path::Path>) -> anyhow::Result<Outcome> {
    let mut t = Truth::new(
        "prot-none",
        "SIGSEGV handler: one SEGV_ACCERR at each page; mincore: 0 resident",
    );
    let base = region(PAGES)?;
    t.regions = 1;
    // SAFETY: the region is ours.
    if unsafe { libc::mprotect(base.cast(), PAGES * PAGE, libc::PROT_NONE) } != 0 {
        bail!("mprotect: {}", std::io::Error::last_os_error());
    }
    // SAFETY: installs a handler for this process; `on_segv` is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        if libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()) != 0 {
            bail!("sigaction: {}", std::io::Error::last_os_error());
        }
    }
    for i in 0..PAGES {
        let before = SEGVS.load(Ordering::SeqCst);
        probe_read(page(base, i));
        let (n, addr, code) = (
            SEGVS.load(Ordering::SeqCst),
            LAST_ADDR.load(Ordering::SeqCst),
            LAST_CODE.load(Ordering::SeqCst) as i32,
        );
        if n != before + 1 || addr != page(base, i) as usize || code != SEGV_ACCERR {
            bail!(
                "page {i}: expected one SEGV_ACCERR at {:p}, got {} at {addr:#x} (code {code})",
                page(base, i),
                n - before
            );
        }
        t.add(FaultKind::Other, 1);
    }
    // SAFETY: back to the default action.
    unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
    let res = resident_count(base, PAGES)?;
    if res != 0 {
        bail!("{res} PROT_NONE pages became resident");
    }
    t.info("segvs", SEGVS.load(Ordering::SeqCst));
    t.info("resident", res);
    t.emit(report)?;
    Ok(Outcome::Ran)
}
