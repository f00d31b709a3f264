//! `exceptions:page_fault_user` (and `page_fault_kernel`, for kernel-mode first touches of
//! user pages such as `read(2)` into a region): classify and count faults in region pages.
//!
//! This runs on every page fault of the machine, so the common case (not a region page) is one
//! hash lookup and out.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tamalloc_common::trace::{
    CHUNK_PAGES, CHUNK_SHIFT, CONFIG_STREAM_FAULTS, ChunkKey, DROP_FAULT_EVENTS, Event, EventKind,
    PAGE_SHIFT, PageState, classify,
};

use crate::{
    atomics::{fetch_and, fetch_or},
    maps::{CHUNKS, config, counters, emit},
    regions,
};

/// Offsets in the `exceptions:page_fault_*` record (stable since 3.13).
const ADDRESS_OFFSET: usize = 8;
const ERROR_CODE_OFFSET: usize = 24;
/// The largest user address plus one (5-level paging).
const USER_END: u64 = 1 << 56;

#[tracepoint]
pub fn page_fault(ctx: TracePointContext) -> u32 {
    on_fault(&ctx);
    0
}

#[inline(always)]
fn on_fault(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: tracepoint programs may read their record directly; both offsets are inside it.
    let (addr, error_code) = unsafe {
        let base = ctx.as_ptr() as *const u8;
        (
            *(base.add(ADDRESS_OFFSET) as *const u64),
            *(base.add(ERROR_CODE_OFFSET) as *const u64),
        )
    };
    // Kernel addresses (page_fault_kernel sees those too) are never region pages.
    if addr >= USER_END {
        return;
    }
    let chunk = addr >> CHUNK_SHIFT;
    let key = ChunkKey {
        tgid,
        _pad: 0,
        chunk,
    };
    let Some(ch) = CHUNKS.get_ptr_mut(key) else {
        return;
    };
    let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    let w = ((page >> 6) & 7) as usize;
    let bit = 1u64 << (page & 63);
    // SAFETY: `ch` is a live map value for this program run.
    let (in_region, zero, present) = unsafe {
        (
            (*ch).in_region[w],
            &raw mut (*ch).zero[w],
            &raw mut (*ch).present[w],
        )
    };
    if in_region & bit == 0 {
        return;
    }
    // SAFETY: as above.
    let was = unsafe {
        PageState {
            zero: *zero & bit != 0,
            present: *present & bit != 0,
        }
    };
    let (kind, now) = classify(error_code, was);
    if now.zero != was.zero {
        if now.zero {
            fetch_or(zero, bit);
        } else {
            fetch_and(zero, !bit);
        }
    }
    if now.present != was.present {
        if now.present {
            fetch_or(present, bit);
        } else {
            fetch_and(present, !bit);
        }
    }
    if let Some(c) = counters(tgid) {
        // SAFETY: this CPU's copy of a per-CPU value: no other writer.
        unsafe { (*c).faults[(kind as usize) % tamalloc_common::trace::FAULT_KINDS] += 1 };
    }
    if config().flags & CONFIG_STREAM_FAULTS == 0 {
        return;
    }
    // SAFETY: as above; only read.
    let r = regions::resolve(unsafe { &*ch }, tgid, chunk, page);
    emit(
        &Event {
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            addr,
            arg1: r.id,
            arg2: r.index,
            arg3: error_code,
            pid: tgid,
            tid: pid_tgid as u32,
            kind: EventKind::Fault as u8,
            detail: kind as u8,
            _pad: [0; 6],
        },
        DROP_FAULT_EVENTS,
    );
}
