//! mremap of a region: `exit_mremap` picks the case (shrink, grow, move, move onto a fixed
//! target) and tail-calls its program, so the verifier walks each case once.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tamalloc_common::{
    abi::SYS_MREMAP,
    trace::{EventKind, PAGE_SIZE, page_align},
};

use super::{MREMAP_FIXED, RET_OFFSET, add_reserved, control, is_addr, read_u64, take_pending};
use crate::{
    maps::{
        EXIT_MREMAP_CLEAR_TARGET, EXIT_MREMAP_DROP_OLD, EXIT_MREMAP_GROW, EXIT_MREMAP_MOVE,
        EXIT_MREMAP_SHRINK, PENDING, TAIL_PROGS,
    },
    regions,
};

/// mremap(old, old_len, new_len, flags, new_addr) of a region page: pick the case and
/// tail-call its program. The stash stays until the last program of the case is done.
#[tracepoint]
pub fn exit_mremap(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_MREMAP) else {
        return 0;
    };
    let ret = read_u64(&ctx, RET_OFFSET);
    let tgid = (pid_tgid >> 32) as u32;
    let moved_fixed = ret != p.args[0] && p.args[3] & MREMAP_FIXED != 0;
    let slot = match (page_align(p.args[1]), page_align(p.args[2])) {
        // Any mapping moved onto region pages replaces them (the move program then finds
        // no region to carry when the source was not one).
        (Some(_), Some(_)) if is_addr(ret) && moved_fixed => EXIT_MREMAP_CLEAR_TARGET,
        (Some(old_len), Some(new_len))
            if is_addr(ret) && old_len != 0 && regions::is_region_page(tgid, p.args[0]) =>
        {
            if ret != p.args[0] {
                EXIT_MREMAP_MOVE
            } else if new_len < old_len {
                EXIT_MREMAP_SHRINK
            } else if new_len > old_len {
                EXIT_MREMAP_GROW
            } else {
                u32::MAX
            }
        }
        _ => u32::MAX,
    };
    if slot != u32::MAX {
        // SAFETY: as in `sys_exit`.
        unsafe { TAIL_PROGS.tail_call(&ctx, slot) };
    }
    let _ = PENDING.remove(pid_tgid);
    0
}
named_program!(exit_mremap = EXIT_MREMAP);

/// The mremap stash and its page-aligned lengths, for the case programs.
#[inline(always)]
fn mremap_args() -> Option<(u64, u32, u32, u64, u64, u64)> {
    let (pid_tgid, p) = take_pending(SYS_MREMAP)?;
    let _ = PENDING.remove(pid_tgid);
    Some((
        pid_tgid,
        (pid_tgid >> 32) as u32,
        pid_tgid as u32,
        p.args[0],
        page_align(p.args[1])?,
        page_align(p.args[2])?,
    ))
}

#[tracepoint]
pub fn exit_mremap_shrink(_ctx: TracePointContext) -> u32 {
    let Some((_, tgid, tid, old, old_len, new_len)) = mremap_args() else {
        return 0;
    };
    let gone = regions::remove(tgid, old + new_len, old_len - new_len);
    add_reserved(tgid, gone.wrapping_neg(), false);
    control(EventKind::Remap, tgid, tid, old, [old_len, old, new_len], 0);
    0
}
named_program!(exit_mremap_shrink = EXIT_MREMAP_SHRINK);

#[tracepoint]
pub fn exit_mremap_grow(_ctx: TracePointContext) -> u32 {
    let Some((_, tgid, tid, old, old_len, new_len)) = mremap_args() else {
        return 0;
    };
    // The new pages continue the region of the last old page.
    if let Some(last) = regions::region_at(tgid, old + old_len - PAGE_SIZE) {
        let grown = regions::add(
            tgid,
            old + old_len,
            new_len - old_len,
            last.id,
            last.index + 1,
        );
        add_reserved(tgid, grown, false);
    }
    control(EventKind::Remap, tgid, tid, old, [old_len, old, new_len], 0);
    0
}
named_program!(exit_mremap_grow = EXIT_MREMAP_GROW);

#[tracepoint]
pub fn exit_mremap_move(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_MREMAP) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    let (old, new_addr) = (p.args[0], read_u64(&ctx, RET_OFFSET));
    if let (Some(old_len), Some(new_len), Some(first)) = (
        page_align(p.args[1]),
        page_align(p.args[2]),
        regions::region_at(tgid, old),
    ) {
        // The pages, and what each maps, go along.
        let added = regions::add(tgid, new_addr, new_len, first.id, first.index);
        add_reserved(tgid, added, false);
        regions::copy_page_states(tgid, old, new_addr, old_len.min(new_len));
        // SAFETY: as in `sys_exit`.
        unsafe { TAIL_PROGS.tail_call(&ctx, EXIT_MREMAP_DROP_OLD) };
    }
    let _ = PENDING.remove(pid_tgid);
    0
}
named_program!(exit_mremap_move = EXIT_MREMAP_MOVE);

/// MREMAP_FIXED replaced whatever was mapped at the target, region pages included.
#[tracepoint]
pub fn exit_mremap_clear_target(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_MREMAP) else {
        return 0;
    };
    if let Some(new_len) = page_align(p.args[2]) {
        let tgid = (pid_tgid >> 32) as u32;
        let replaced = regions::remove(tgid, read_u64(&ctx, RET_OFFSET), new_len);
        add_reserved(tgid, replaced.wrapping_neg(), false);
        // SAFETY: as in `sys_exit`.
        unsafe { TAIL_PROGS.tail_call(&ctx, EXIT_MREMAP_MOVE) };
    }
    let _ = PENDING.remove(pid_tgid);
    0
}
named_program!(exit_mremap_clear_target = EXIT_MREMAP_CLEAR_TARGET);

/// The old range of a moved region. With MREMAP_DONTUNMAP it stays mapped but empty; the
/// tracer stops counting it (the moved pages are the region now).
#[tracepoint]
pub fn exit_mremap_drop_old(ctx: TracePointContext) -> u32 {
    let Some((_, tgid, tid, old, old_len, new_len)) = mremap_args() else {
        return 0;
    };
    let gone = regions::remove(tgid, old, old_len);
    add_reserved(tgid, gone.wrapping_neg(), false);
    let new_addr = read_u64(&ctx, RET_OFFSET);
    control(
        EventKind::Remap,
        tgid,
        tid,
        old,
        [old_len, new_addr, new_len],
        0,
    );
    0
}
named_program!(exit_mremap_drop_old = EXIT_MREMAP_DROP_OLD);
