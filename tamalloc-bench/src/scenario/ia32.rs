//! ia32 syscalls (`int 0x80`) from a 64-bit process: the same number means another call.
//! The kernel dispatches them through the ia32 table (raw_syscalls shows the ia32 number and
//! the ia32 argument registers), so a tracer that reads every number as x86-64 sees:
//!
//! | ia32 call                  | ia32 meaning | read as x86-64           |
//! |----------------------------|--------------|--------------------------|
//! | 11, fails with ENOENT      | execve       | munmap: forgets a region |
//! | 91, unmaps region pages    | munmap       | fchmod: misses the unmap |
//! | 554, fails with ENOSYS     | (none)       | tamalloc: arms fallback  |
//!
//! Arguments are 32-bit, so the region is first moved below 4 GiB (mremap MREMAP_FIXED).

use std::path::Path;

use anyhow::bail;
use tamalloc_common::{
    abi::{SYS_TAMALLOC, TAMALLOC_MAP_FLAGS, TAMALLOC_PROT},
    trace::FaultKind,
};

use super::{
    Outcome, PAGE, Truth, fork_child, no_thp, page, plain, region, resident_count, skip,
    write_pages,
};

/// An ia32 system call: `int 0x80` with eax = `nr`, ebx, ecx, edx = `args`.
fn int80(nr: u32, args: [u32; 3]) -> i32 {
    let ret: i32;
    // SAFETY: the callers' calls touch only memory this process owns (or fail); rbx is
    // LLVM's, so it is swapped in and out around the trap.
    unsafe {
        core::arch::asm!(
            "xchg {b}, rbx",
            "int 0x80",
            "xchg {b}, rbx",
            b = inout(reg) u64::from(args[0]) => _,
            inlateout("eax") nr => ret,
            in("ecx") args[1],
            in("edx") args[2],
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    ret
}

const IA32_GETPID: u32 = 20;
const IA32_EXECVE: u32 = 11;
const IA32_MUNMAP: u32 = 91;

/// Whether `int 0x80` works here (IA32_EMULATION, not disabled at boot): a child tries an
/// ia32 getpid, and dies of SIGSEGV where it does not.
fn ia32_works() -> anyhow::Result<bool> {
    let pid = fork_child(|| {
        // SAFETY: getpid has no preconditions.
        if int80(IA32_GETPID, [0; 3]) != unsafe { libc::getpid() } {
            bail!("ia32 getpid returned something else");
        }
        Ok(())
    })?;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}

/// Truth: bookkeeping; every ia32 call's result is checked; mincore: the unmapped pages are
/// gone and the plain mapping's pages are not the region's.
pub fn ia32(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    if !ia32_works()? {
        return skip(
            "ia32",
            "int 0x80 does not work here (no IA32_EMULATION, or ia32_emulation=0)",
        );
    }
    let mut t = Truth::new(
        "ia32",
        "bookkeeping; each int 0x80 result checked; 12 first writes in the region",
    );
    let a = region(16)?;
    t.regions = 1;
    // A place below 4 GiB, then the region moved onto it.
    let mut low: *mut u8 = std::ptr::null_mut();
    for addr in [0x2000_0000usize, 0x3000_0000, 0x4000_0000, 0x6000_0000] {
        if let Ok(p) = plain(16, addr as *mut u8, libc::MAP_FIXED_NOREPLACE) {
            low = p;
            break;
        }
    }
    if low.is_null() {
        bail!("no free room below 4 GiB");
    }
    // SAFETY: moves our region over our placeholder.
    let moved = unsafe {
        libc::mremap(
            a.cast(),
            16 * PAGE,
            16 * PAGE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            low.cast::<libc::c_void>(),
        )
    };
    if moved != low.cast() {
        bail!("mremap below 4 GiB: {}", std::io::Error::last_os_error());
    }
    let l = low as u32;
    write_pages(low, 0..4);
    t.add(FaultKind::WriteZero, 4);
    // Page 0 now holds "" at its start: execve("", ...) fails with ENOENT.
    // SAFETY: the first byte of a written page of our region.
    unsafe { std::ptr::write_volatile(low, 0) };
    let r = int80(IA32_EXECVE, [l, (16 * PAGE) as u32, 0]);
    if r >= 0 {
        bail!("ia32 execve(\"\") returned {r}");
    }
    t.info("ia32_execve", r);
    // ia32 munmap of pages 12..16, then a plain mapping there.
    let r = int80(IA32_MUNMAP, [l + 12 * PAGE as u32, 4 * PAGE as u32, 0]);
    if r != 0 {
        bail!("ia32 munmap returned {r}");
    }
    let p = plain(4, page(low, 12), libc::MAP_FIXED_NOREPLACE)?;
    write_pages(p, 0..4);
    write_pages(low, 4..12);
    t.add(FaultKind::WriteZero, 8);
    // ia32 554: ENOSYS, then the 64-bit mmap a fallback would make. Not a region.
    let r = int80(SYS_TAMALLOC as u32, [8 * PAGE as u32, 0, 0]);
    if r != -libc::ENOSYS {
        bail!("ia32 syscall {SYS_TAMALLOC} returned {r}, expected -ENOSYS");
    }
    // SAFETY: an anonymous mapping of the kernel's choice.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8 * PAGE,
            TAMALLOC_PROT as libc::c_int,
            TAMALLOC_MAP_FLAGS as libc::c_int,
            -1,
            0,
        )
    };
    if m == libc::MAP_FAILED {
        bail!("mmap: {}", std::io::Error::last_os_error());
    }
    write_pages(m.cast(), 0..8);
    t.info("resident_region_pages", resident_count(low, 12)?);
    t.emit(report)?;
    Ok(Outcome::Ran)
}
