//! `exceptions:page_fault_user` (and `page_fault_kernel`, for kernel-mode first touches of
//! user pages such as `read(2)` into a region): classify and count faults in region pages.
//!
//! This runs on every page fault of the machine. Raw tracepoints: the arguments come
//! straight from the call site, without the perf record a classic tracepoint fills first.
//! A process without regions costs one array read (its `INSTANCE`); a region page one
//! hash lookup (its chunk), one atomic bit operation and a per-CPU array increment.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tamalloc_common::{
    maps::{CHUNK_RESTRICTED, CHUNK_SHIFT, DROP_FAULT_EVENTS},
    trace::{Event, EventKind, FaultKind, PageState, classify, pf},
};

use super::stacks;
use crate::{
    atomics::{fetch_and, fetch_or},
    maps::{emit, instance_of, slot_counters},
    regions,
};

/// The largest user address plus one (5-level paging).
pub(super) const USER_END: u64 = 1 << 56;

/// Counts faults in region pages (the default mode).
///
/// `TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code)`
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault(ctx: RawTracePointContext) -> u32 {
    on_fault::<false>(&ctx);
    0
}
named_program!(page_fault = PAGE_FAULT);

/// Counts and streams faults in region pages (`--events`). A program of its own, so the
/// counting one carries no event code: fewer registers to keep alive, no spills.
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_events(ctx: RawTracePointContext) -> u32 {
    on_fault::<true>(&ctx);
    0
}
named_program!(page_fault_events = PAGE_FAULT_EVENTS);

#[inline(always)]
fn on_fault<const STREAM: bool>(ctx: &RawTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let inst = instance_of(tgid);
    if inst == 0 {
        return;
    }
    let addr: u64 = ctx.arg(0);
    let error_code: u64 = ctx.arg(2);
    // Kernel addresses (page_fault_kernel sees those too) are never region pages.
    if addr >= USER_END {
        return;
    }
    let Some(f) = regions::followed(inst, addr) else {
        return;
    };
    let (ch, page) = (f.chunk, f.page);
    let (w, bit) = f.word_bit();
    // SAFETY: `ch` is a live map value for this program run.
    let (zero, present) = unsafe { (&raw mut (*ch).zero[w], &raw mut (*ch).present[w]) };
    // SAFETY: as above.
    let was = unsafe {
        PageState {
            zero: *zero & bit != 0,
            present: *present & bit != 0,
        }
    };
    let (mut kind, mut now) = classify(error_code, was);
    // A page whose protection forbids the access: the kernel refuses the fault (SIGSEGV)
    // and maps nothing. `flags` shares `slot`'s cache line, read below anyway.
    // SAFETY: as above.
    if unsafe { (*ch).flags } & CHUNK_RESTRICTED != 0 {
        // SAFETY: as above.
        let (noread, nowrite) = unsafe { ((*ch).noread[w], (*ch).nowrite[w]) };
        if noread & bit != 0 || (error_code & pf::WRITE != 0 && nowrite & bit != 0) {
            kind = FaultKind::Other;
            now = was;
        }
    }
    // Faults racing on one page (threads of the process) all read the old state. Each marks
    // the page with an atomic operation whose old value says who came first; the others
    // count `other`. A page of its own never keeps its zero bit: a write clears it after
    // marking, and a read that then finds the page marked backs off (both operations are
    // sequentially consistent, so at least one of the two sees the other).
    if now.present && !was.present {
        if fetch_or(present, bit) & bit != 0 {
            kind = FaultKind::Other;
        }
        // SAFETY: a live map value; read again after the atomic operation.
        if unsafe { core::ptr::read_volatile(zero) } & bit != 0 {
            fetch_and(zero, !bit);
        }
    } else if now.zero && !was.zero {
        if fetch_or(zero, bit) & bit != 0 {
            kind = FaultKind::Other;
        // SAFETY: as above.
        } else if unsafe { core::ptr::read_volatile(present) } & bit != 0 {
            kind = FaultKind::Other;
            fetch_and(zero, !bit);
        }
    }
    // SAFETY: as above.
    if let Some(c) = slot_counters(unsafe { (*ch).slot }) {
        // SAFETY: this CPU's copy of a per-CPU value: no other writer.
        unsafe { (*c).faults[(kind as usize) % tamalloc_common::trace::FAULT_KINDS] += 1 };
    }
    let stacks = stacks::enabled();
    if !STREAM && !stacks {
        return;
    }
    // SAFETY: as above; only read.
    let r = regions::resolve(unsafe { &*ch }, inst, addr >> CHUNK_SHIFT, page);
    if stacks {
        stacks::take(ctx, tgid, inst, r.id, kind, 1, error_code & pf::USER == 0);
    }
    if !STREAM {
        return;
    }
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
