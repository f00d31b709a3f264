//! madvise and mprotect of region pages, applied at `sys_exit` from the stash: which pages
//! were dropped, which a forked child gets empty, which accesses a fault may make.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tamalloc_common::trace::{PAGE_SIZE, page_align};

use super::{
    ENOMEM, MADV_KEEPONFORK, MADV_WIPEONFORK, RET_OFFSET, SYS_MADVISE, SYS_MPROTECT, done,
    read_u64, take_pending,
};
use crate::{maps::PENDING, regions};

/// madvise(addr, len, MADV_DONTNEED and friends): the pages are dropped, their next touch
/// is a first touch again. MADV_WIPEONFORK / MADV_KEEPONFORK: whether a child's copy of
/// the pages starts empty. The kernel applies the advice to every mapping in the range
/// and then fails with -ENOMEM when the range had a hole, so that counts as done.
#[tracepoint]
pub fn exit_madvise(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_MADVISE) else {
        return 0;
    };
    let _ = PENDING.remove(pid_tgid);
    let ret = read_u64(&ctx, RET_OFFSET) as i64;
    if ret != 0 && ret != -ENOMEM {
        return 0;
    }
    let (tgid, addr) = ((pid_tgid >> 32) as u32, p.args[0] & !(PAGE_SIZE - 1));
    if let Some(len) = page_align(p.args[1]) {
        match p.args[2] {
            MADV_WIPEONFORK => regions::set_bits(tgid, addr, len, regions::Bits::Wipe, true),
            MADV_KEEPONFORK => regions::set_bits(tgid, addr, len, regions::Bits::Wipe, false),
            _ => regions::reset(tgid, addr, len),
        }
    }
    0
}
named_program!(exit_madvise = EXIT_MADVISE);

/// mprotect(addr, len, prot) succeeded: a fault in a page that `prot` forbids the access
/// is refused (SIGSEGV) and counts `other`. (On -ENOMEM the kernel changed the mappings
/// before the first hole; the tracer does not know where that was and changes nothing.)
#[tracepoint]
pub fn exit_mprotect(ctx: TracePointContext) -> u32 {
    const PROT_READ: u64 = 1;
    const PROT_WRITE: u64 = 2;
    const PROT_EXEC: u64 = 4;
    let Some((pid_tgid, p)) = take_pending(SYS_MPROTECT) else {
        return 0;
    };
    done(pid_tgid, &p);
    if read_u64(&ctx, RET_OFFSET) != 0 {
        return 0;
    }
    let (tgid, addr, prot) = ((pid_tgid >> 32) as u32, p.args[0], p.args[2]);
    if let Some(len) = page_align(p.args[1]) {
        // x86: any of read, write or exec lets a read through.
        let none = prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0;
        regions::set_bits(tgid, addr, len, regions::Bits::NoRead, none);
        regions::set_bits(
            tgid,
            addr,
            len,
            regions::Bits::NoWrite,
            prot & PROT_WRITE == 0,
        );
    }
    0
}
named_program!(exit_mprotect = EXIT_MPROTECT);
