//! `raw_syscalls:sys_enter` / `sys_exit`: learn regions from 554 (or the documented mmap
//! fallback) and keep them true through munmap, mremap, MAP_FIXED mappings and madvise.
//!
//! Most work happens at `sys_exit`, once the kernel has said the call succeeded, from
//! arguments stashed per thread at `sys_enter`. munmap is the exception: it is applied at
//! `sys_enter`, before the kernel frees the range, so another thread's new region that the
//! kernel places in the freed range can never be erased by a late bookkeeping step.
//! Each syscall's work is its own tail-called program, so the verifier walks each once;
//! mremap's cases are in [`mremap`].

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tamalloc_common::{
    abi::{
        ENOSYS, SYS_BRK, SYS_CLONE, SYS_CLONE3, SYS_FORK, SYS_MMAP, SYS_MREMAP, SYS_MUNMAP,
        SYS_PRCTL, SYS_TAMALLOC, SYS_VFORK, TAMALLOC_MAP_FLAGS, TAMALLOC_PROT,
    },
    maps::{
        CONFIG_FILTER_COMM, CONFIG_FILTER_PID, CONFIG_REGIONS_ANON, CONFIG_REGIONS_NAMED,
        DROP_CONTROL_EVENTS, DROP_REGION_CUT, Pending, TRACED_NOW,
    },
    trace::{Event, EventKind, PAGE_SIZE, REGION_FALLBACK, REGION_MMAP, page_align},
};

mod advice;
mod heap;
mod mremap;
mod named;

use crate::{
    maps::{
        ENTER_MUNMAP, EXIT_BRK, EXIT_LEARN, EXIT_MADVISE, EXIT_MMAP, EXIT_MPROTECT, EXIT_MREMAP,
        EXIT_MUNMAP, EXIT_PRCTL, PENDING, TAIL_PROGS, TRACED, config, count_drop, counters, emit,
        instance_of, slot_of,
    },
    regions,
};

const ID_OFFSET: usize = 8;
const ARGS_OFFSET: usize = 16;
const RET_OFFSET: usize = 16;

const SYS_MADVISE: i64 = 28;
const SYS_MPROTECT: i64 = 10;
const SYS_PKEY_MPROTECT: i64 = 329;
const ENOMEM: i64 = 12;
/// A thread's own exit (not exit_group): the group may live on without its leader.
pub const SYS_EXIT: i64 = 60;
const MAP_FIXED: u64 = 0x10;
const MAP_TYPE: u64 = 0x0f;
const MAP_PRIVATE: u64 = 0x02;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_HUGETLB: u64 = 0x40000;
const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;
const MREMAP_FIXED: u64 = 2;
/// The advice values that drop pages: the next touch is a first touch again. (MADV_FREE
/// does not: the page stays mapped until reclaim takes it, unseen.)
const MADV_DONTNEED: u64 = 4;
const MADV_REMOVE: u64 = 9;
const MADV_DONTNEED_LOCKED: u64 = 24;
/// A forked child's copy of the pages starts empty, or no longer does.
const MADV_WIPEONFORK: u64 = 18;
const MADV_KEEPONFORK: u64 = 19;

/// ia32 syscall numbers (`int 0x80` from a 64-bit process) of the calls that change
/// regions or fork, read as their x86-64 counterparts; every other ia32 call is ignored (a
/// 64-bit number it shares, such as 11 = ia32 execve, is not the x86-64 call). Not
/// translated: ia32's old `mmap` (90, arguments in memory) and `exit` (1, the number of
/// x86-64's `write`, too hot to check; needed only before 6.15, see lifecycle.rs).
const IA32_FORK: i64 = 2;
const IA32_CLONE: i64 = 120;
const IA32_VFORK: i64 = 190;
const IA32_MUNMAP: i64 = 91;
const IA32_MPROTECT: i64 = 125;
const IA32_MREMAP: i64 = 163;
const IA32_MMAP2: i64 = 192;
const IA32_MADVISE: i64 = 219;
const IA32_PKEY_MPROTECT: i64 = 380;
/// `TS_COMPAT` in x86's `thread_info.status`: the current syscall is an ia32 one.
const TS_COMPAT: u32 = 0x0002;
/// The largest user address plus one (5-level paging).
const USER_END: u64 = 1 << 56;

#[inline(always)]
fn read_u64(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: tracepoint programs may read their record directly; callers pass offsets of
    // fields of `raw_syscalls:sys_enter` / `sys_exit`.
    unsafe { *((ctx.as_ptr() as *const u8).add(offset) as *const u64) }
}

/// A syscall return value that is an address, not `-errno`.
#[inline(always)]
fn is_addr(ret: u64) -> bool {
    ret != 0 && ret < (-4095i64) as u64
}

/// Whether the process's own syscalls are worth stashing: it has regions (an instance) or
/// a counter slot (it had them before an exec: its exit and forks still matter), or
/// userspace follows it.
#[inline(always)]
pub fn tracked(tgid: u32) -> bool {
    // SAFETY: only the presence of the keys is used.
    instance_of(tgid) != 0 || slot_of(tgid).is_some() || unsafe { TRACED.get(tgid).is_some() }
}

/// Whether userspace asked to learn this process's regions.
#[inline(always)]
fn wanted(tgid: u32) -> bool {
    let cfg = config();
    if cfg.flags & (CONFIG_FILTER_PID | CONFIG_FILTER_COMM) == 0 {
        return true;
    }
    // SAFETY: only the presence of the key is used.
    // SAFETY: plain-data map value, copied out.
    if cfg.flags & CONFIG_FILTER_PID != 0 && unsafe { TRACED.get(tgid) } == Some(&TRACED_NOW) {
        return true;
    }
    cfg.flags & CONFIG_FILTER_COMM != 0 && bpf_get_current_comm().is_ok_and(|c| c == cfg.comm)
}

#[inline(always)]
fn args(ctx: &TracePointContext) -> [u64; 5] {
    [
        read_u64(ctx, ARGS_OFFSET),
        read_u64(ctx, ARGS_OFFSET + 8),
        read_u64(ctx, ARGS_OFFSET + 16),
        read_u64(ctx, ARGS_OFFSET + 24),
        read_u64(ctx, ARGS_OFFSET + 32),
    ]
}

#[inline(always)]
fn stash(pid_tgid: u64, nr: i64, args: [u64; 5], fallback_len: u64) {
    let p = Pending {
        nr: nr as u64,
        args,
        fallback_len,
    };
    let _ = PENDING.insert(pid_tgid, p, 0);
}

/// [`stash`] for a call that is no mmap: a fallback armed by a 554 that failed waits for
/// the thread's next mmap, so the stash carries it through (see [`done`]).
#[inline(always)]
fn stash_keeping_armed(pid_tgid: u64, nr: i64, args: [u64; 5]) {
    // SAFETY: plain-data map value of this thread only, copied out.
    let armed = unsafe { PENDING.get(pid_tgid) }.map_or(0, |p| p.fallback_len);
    stash(pid_tgid, nr, args, armed);
}

/// Ends the stash `p` of a call stashed by [`stash_keeping_armed`]: the thread is armed
/// again if it was, else it has no stash.
#[inline(always)]
fn done(pid_tgid: u64, p: &Pending) {
    if p.fallback_len != 0 {
        stash(pid_tgid, 0, [0; 5], p.fallback_len);
    } else {
        let _ = PENDING.remove(pid_tgid);
    }
}

/// Whether the current syscall is an ia32 one (`TS_COMPAT`), read only for the numbers
/// the tracer acts on.
#[inline(always)]
fn in_ia32_syscall() -> bool {
    let off = config().thread_status_offset;
    if off == 0 {
        return false;
    }
    // SAFETY: helper without preconditions; the pointer is only read through
    // bpf_probe_read_kernel, which copes with any address.
    let status = unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.wrapping_add(off as usize) as *const u32)
    };
    status.is_ok_and(|s| s & TS_COMPAT != 0)
}

/// The x86-64 number of the syscall in `raw_syscalls`' `id`, -1 for one the tracer ignores.
#[inline(always)]
fn native_nr(ctx: &TracePointContext) -> i64 {
    let nr = read_u64(ctx, ID_OFFSET) as i64;
    let native = match nr {
        SYS_TAMALLOC | SYS_MMAP | SYS_BRK | SYS_MUNMAP | SYS_MREMAP | SYS_MADVISE
        | SYS_MPROTECT | SYS_PKEY_MPROTECT | SYS_PRCTL | SYS_CLONE | SYS_CLONE3 | SYS_FORK
        | SYS_VFORK | SYS_EXIT => nr,
        IA32_MUNMAP | IA32_MPROTECT | IA32_MREMAP | IA32_MMAP2 | IA32_MADVISE
        | IA32_PKEY_MPROTECT | IA32_FORK | IA32_CLONE | IA32_VFORK => -1,
        _ => return -1,
    };
    if !in_ia32_syscall() {
        return native;
    }
    match nr {
        IA32_MUNMAP => SYS_MUNMAP,
        IA32_MPROTECT => SYS_MPROTECT,
        IA32_MREMAP => SYS_MREMAP,
        IA32_MMAP2 => SYS_MMAP,
        IA32_MADVISE => SYS_MADVISE,
        IA32_PKEY_MPROTECT => SYS_PKEY_MPROTECT,
        // ia32 clone takes the flags first too; clone3's struct is the same.
        IA32_FORK => SYS_FORK,
        IA32_CLONE => SYS_CLONE,
        IA32_VFORK => SYS_VFORK,
        SYS_CLONE3 => SYS_CLONE3,
        _ => -1,
    }
}

#[tracepoint]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    let nr = native_nr(&ctx);
    if nr >= 0 {
        on_enter(&ctx, nr);
    }
    0
}
named_program!(sys_enter = SYS_ENTER);

#[inline(always)]
fn on_enter(ctx: &TracePointContext, nr: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    match nr {
        // Rare, and needed before the process is known: 554 may be its first region, and
        // a thread's clone flags must be known when it is tracked by the time it forks.
        SYS_TAMALLOC | SYS_CLONE | SYS_CLONE3 | SYS_FORK | SYS_VFORK => {
            stash(pid_tgid, nr, args(ctx), 0)
        }
        SYS_MMAP => on_enter_mmap(ctx, pid_tgid, tgid),
        SYS_BRK => {
            if anon_regions() && wanted(tgid) {
                stash_keeping_armed(pid_tgid, nr, args(ctx));
            }
        }
        SYS_PRCTL => {
            let a = args(ctx);
            if a[0] == named::PR_SET_VMA
                && a[1] == named::PR_SET_VMA_ANON_NAME
                && config().flags & CONFIG_REGIONS_NAMED != 0
                && (tracked(tgid) || wanted(tgid))
            {
                stash_keeping_armed(pid_tgid, nr, a);
            }
        }
        SYS_MUNMAP => {
            if tracked(tgid) {
                // SAFETY: the slot holds a tracepoint program of the same type, or nothing.
                unsafe { TAIL_PROGS.tail_call(ctx, ENTER_MUNMAP) };
            }
        }
        SYS_MREMAP => {
            if tracked(tgid) {
                stash(pid_tgid, nr, args(ctx), 0);
            }
        }
        // pkey_mprotect's first three arguments are mprotect's.
        SYS_MPROTECT | SYS_PKEY_MPROTECT => {
            if tracked(tgid) {
                stash_keeping_armed(pid_tgid, SYS_MPROTECT, args(ctx));
            }
        }
        SYS_MADVISE => {
            let a = args(ctx);
            if matches!(
                a[2],
                MADV_DONTNEED
                    | MADV_REMOVE
                    | MADV_DONTNEED_LOCKED
                    | MADV_WIPEONFORK
                    | MADV_KEEPONFORK
            ) && tracked(tgid)
            {
                stash(pid_tgid, nr, a, 0);
            }
        }
        // Only the group leader's own exit matters (see lifecycle.rs).
        SYS_EXIT if tgid == pid_tgid as u32 && tracked(tgid) => stash(pid_tgid, nr, [0; 5], 0),
        _ => {}
    }
}

#[inline(always)]
fn on_enter_mmap(ctx: &TracePointContext, pid_tgid: u64, tgid: u32) {
    let a = args(ctx);
    // A thread armed by a 554 that failed with -ENOSYS: its next mmap decides. The
    // contract: mmap(NULL, same length, PROT_READ|PROT_WRITE,
    // MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0).
    // SAFETY: plain-data map value of this thread only, copied out.
    if let Some(p) = unsafe { PENDING.get(pid_tgid) }.copied()
        && p.fallback_len != 0
    {
        let fd = a[4] as i32;
        if a[0] == 0
            && page_align(a[1]) == Some(p.fallback_len)
            && a[2] == TAMALLOC_PROT
            && a[3] == TAMALLOC_MAP_FLAGS
            && fd == -1
        {
            stash(pid_tgid, SYS_MMAP, a, p.fallback_len);
            return;
        }
        // Any other mmap disarms.
        let _ = PENDING.remove(pid_tgid);
    }
    // MAP_FIXED replaces whatever was mapped there, region pages included; and under
    // `--regions anon` a private anonymous mapping is a region.
    if (a[3] & MAP_FIXED != 0 && tracked(tgid))
        || (is_private_anon(a[3]) && anon_regions() && wanted(tgid))
    {
        stash(pid_tgid, SYS_MMAP, a, 0);
    }
}

/// `--regions anon`: private anonymous mappings are regions too.
#[inline(always)]
pub(crate) fn anon_regions() -> bool {
    config().flags & CONFIG_REGIONS_ANON != 0
}

/// mmap flags of a private anonymous mapping (MAP_PRIVATE, not MAP_SHARED or
/// MAP_SHARED_VALIDATE, with MAP_ANONYMOUS), not hugetlbfs memory (its pages are not 4 KiB
/// and never the zero page).
#[inline(always)]
fn is_private_anon(flags: u64) -> bool {
    flags & MAP_TYPE == MAP_PRIVATE && flags & MAP_ANONYMOUS != 0 && flags & MAP_HUGETLB == 0
}

/// Marks the pages of a new region whose protection refuses reads or writes (an mmap with
/// `PROT_NONE` or `PROT_READ`, as allocators reserve address space).
#[inline(always)]
fn restrict(tgid: u32, addr: u64, len: u64, prot: u64) {
    // x86: any of read, write or exec lets a read through.
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
        regions::set_bits(tgid, addr, len, regions::Bits::NoRead, true);
    }
    if prot & PROT_WRITE == 0 {
        regions::set_bits(tgid, addr, len, regions::Bits::NoWrite, true);
    }
}

/// munmap(addr, len): the range's region pages are marked dying before the kernel frees
/// the range, and forgotten at `sys_exit` if the call succeeded (it fails for a sealed
/// mapping, -EPERM, or -ENOMEM splitting one; bad arguments are checked here). A region
/// another thread gets in the freed range meanwhile is learned without the mark, so the
/// late forgetting leaves it alone.
#[tracepoint]
pub fn enter_munmap(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (addr, len) = (read_u64(&ctx, ARGS_OFFSET), read_u64(&ctx, ARGS_OFFSET + 8));
    let Some(len) = page_align(len) else {
        return 0;
    };
    if len == 0 || addr & (PAGE_SIZE - 1) != 0 || addr >= USER_END || len > USER_END - addr {
        return 0;
    }
    regions::set_bits(
        (pid_tgid >> 32) as u32,
        addr,
        len,
        regions::Bits::Dying,
        true,
    );
    stash_keeping_armed(pid_tgid, SYS_MUNMAP, [addr, len, 0, 0, 0]);
    0
}
named_program!(enter_munmap = ENTER_MUNMAP);

#[tracepoint]
pub fn exit_munmap(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_MUNMAP) else {
        return 0;
    };
    done(pid_tgid, &p);
    let (tgid, tid, addr, len) = (
        (pid_tgid >> 32) as u32,
        pid_tgid as u32,
        p.args[0],
        p.args[1],
    );
    if read_u64(&ctx, RET_OFFSET) != 0 {
        regions::set_bits(tgid, addr, len, regions::Bits::Dying, false);
        return 0;
    }
    let gone = regions::remove_dying(tgid, addr, len);
    if gone != 0 {
        add_reserved(tgid, gone.wrapping_neg(), false);
        control(EventKind::Unmap, tgid, tid, addr, [len, gone, 0], 0);
    }
    0
}
named_program!(exit_munmap = EXIT_MUNMAP);

/// Forgets `[addr, addr + len)` of the current process and reports it.
#[inline(always)]
fn unmap(pid_tgid: u64, addr: u64, len: u64) {
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let gone = regions::remove(tgid, addr, len);
    if gone != 0 {
        add_reserved(tgid, gone.wrapping_neg(), false);
        control(EventKind::Unmap, tgid, tid, addr, [len, gone, 0], 0);
    }
}

#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let slot = match native_nr(&ctx) {
        SYS_TAMALLOC => EXIT_LEARN,
        // Stashed only when armed (fallback_len != 0), MAP_FIXED or a private anonymous
        // mapping under `--regions anon`; the stash says which.
        SYS_MMAP => {
            // SAFETY: plain-data map value of this thread only.
            match unsafe { PENDING.get(bpf_get_current_pid_tgid()) } {
                Some(p) if p.nr == SYS_MMAP as u64 && p.fallback_len == 0 => EXIT_MMAP,
                Some(_) => EXIT_LEARN,
                None => return 0,
            }
        }
        SYS_MUNMAP => EXIT_MUNMAP,
        SYS_BRK => EXIT_BRK,
        SYS_PRCTL => EXIT_PRCTL,
        SYS_MREMAP => EXIT_MREMAP,
        SYS_MADVISE => EXIT_MADVISE,
        SYS_MPROTECT | SYS_PKEY_MPROTECT => EXIT_MPROTECT,
        SYS_CLONE | SYS_CLONE3 | SYS_FORK | SYS_VFORK => {
            // The fork tracepoint has used the flags by now.
            let pid_tgid = bpf_get_current_pid_tgid();
            // SAFETY: only the presence of the key is used.
            if unsafe { PENDING.get(pid_tgid).is_some() } {
                let _ = PENDING.remove(pid_tgid);
            }
            return 0;
        }
        _ => return 0,
    };
    // SAFETY: the slot holds a tracepoint program of the same type, or nothing (then the
    // call falls through and we do nothing).
    unsafe { TAIL_PROGS.tail_call(&ctx, slot) };
    0
}
named_program!(sys_exit = SYS_EXIT);

/// The stash of the syscall this thread is leaving, if it was stashed for `nr`.
#[inline(always)]
fn take_pending(nr: i64) -> Option<(u64, Pending)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain-data map value of this thread only, copied out.
    let pending = unsafe { *PENDING.get(pid_tgid)? };
    if pending.nr != nr as u64 {
        return None;
    }
    Some((pid_tgid, pending))
}

/// 554 and the mmaps that matter: the fallback's, and MAP_FIXED over region pages.
#[tracepoint]
pub fn exit_learn(ctx: TracePointContext) -> u32 {
    let nr = native_nr(&ctx);
    let Some((pid_tgid, pending)) = take_pending(nr) else {
        return 0;
    };
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let ret = read_u64(&ctx, RET_OFFSET);
    if nr == SYS_TAMALLOC {
        let len = page_align(pending.args[0]).unwrap_or(0);
        if ret as i64 == -ENOSYS && len != 0 {
            // Arm the fallback: this thread's next matching mmap is the region.
            stash(pid_tgid, 0, pending.args, len);
            return 0;
        }
        if is_addr(ret) && len != 0 {
            learn(tgid, tid, ret, len, 0);
        }
    } else if is_addr(ret) && pending.fallback_len != 0 {
        learn(tgid, tid, ret, pending.fallback_len, REGION_FALLBACK);
    }
    let _ = PENDING.remove(pid_tgid);
    0
}
named_program!(exit_learn = EXIT_LEARN);

/// An mmap succeeded: with MAP_FIXED, whatever region pages were there are gone; under
/// `--regions anon`, a private anonymous mapping is a new region.
#[tracepoint]
pub fn exit_mmap(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, pending)) = take_pending(SYS_MMAP) else {
        return 0;
    };
    let _ = PENDING.remove(pid_tgid);
    let ret = read_u64(&ctx, RET_OFFSET);
    let (true, Some(len)) = (is_addr(ret), page_align(pending.args[1])) else {
        return 0;
    };
    let flags = pending.args[3];
    if flags & MAP_FIXED != 0 {
        unmap(pid_tgid, ret, len);
    }
    if is_private_anon(flags) && anon_regions() {
        let tgid = (pid_tgid >> 32) as u32;
        if len > ANON_REGION_MAX {
            // A guard reservation of terabytes (a sanitizer's shadow, wasm memories) would
            // take CHUNKS from every other region: not followed, and said so.
            if wanted(tgid) {
                count_drop(DROP_REGION_CUT);
            }
            return 0;
        }
        learn(tgid, pid_tgid as u32, ret, len, REGION_MMAP);
        restrict(tgid, ret, len, pending.args[2]);
    }
    0
}

/// The largest anonymous mapping `--regions anon` follows: 64 GiB (32,768 of `CHUNKS`'
/// 262,144 entries). Larger ones count as `region_cut`.
const ANON_REGION_MAX: u64 = 64 << 30;
named_program!(exit_mmap = EXIT_MMAP);

#[inline(always)]
/// Emits a control event; `args` fill `arg1..arg3` (their meaning depends on `kind`).
fn control(kind: EventKind, tgid: u32, tid: u32, addr: u64, args: [u64; 3], detail: u8) {
    emit(
        &Event {
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            addr,
            arg1: args[0],
            arg2: args[1],
            arg3: args[2],
            pid: tgid,
            tid,
            kind: kind as u8,
            detail,
            _pad: [0; 6],
        },
        DROP_CONTROL_EVENTS,
    );
}

/// Adds `bytes` (two's complement for a decrease) to this CPU's reserved counter.
#[inline(always)]
pub fn add_reserved(tgid: u32, bytes: u64, new_region: bool) {
    if let Some(c) = counters(tgid) {
        // SAFETY: this CPU's copy of a per-CPU value: no other writer.
        unsafe {
            (*c).reserved_bytes = (*c).reserved_bytes.wrapping_add(bytes);
            if new_region {
                (*c).regions += 1;
            }
        }
    }
}

#[inline(always)]
fn learn(tgid: u32, tid: u32, addr: u64, len: u64, detail: u8) {
    if !wanted(tgid) {
        return;
    }
    let bytes = regions::add(tgid, addr, len, addr, 0);
    add_reserved(tgid, bytes, true);
    control(EventKind::Region, tgid, tid, addr, [len, 0, 0], detail);
}
