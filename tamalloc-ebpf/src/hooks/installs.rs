//! Kernel mode: fexit on the kernel functions that install pages, classified by what the
//! kernel did (`tamalloc_common::trace::classify_install`), not by what the fault looked
//! like; fentry on the access-error path for faults the VMA's protection refuses.
//!
//! These run only where the kernel fills a pte-none (or pmd-none) entry, or handles a write
//! to a write-protected one: a fault that finds its page mapped (swap-in, NUMA hinting, a
//! spurious fault) and every fault outside anonymous first touches costs nothing here. The
//! fast path: the process's `INSTANCE` (one array read), one copy of the start of
//! `struct vm_fault`, one chunk lookup, one per-CPU increment. No per-page state: what the
//! kernel installed is the kernel's page table, read by the kernel itself.
//!
//! Field offsets come from the running kernel's BTF through [`KERNEL_LAYOUT`], a read-only
//! global the loader sets, so the verifier sees them as constants.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext, tracing::StackIdContext},
};
use tamalloc_common::{
    maps::{CHUNK_SHIFT, CHUNK_WORDS, DROP_FAULT_EVENTS, KernelLayout, VMF_WINDOW},
    trace::{
        Event, EventKind, FAULT_KINDS, FaultKind, Install, classify_install,
        kernel::FAULT_FLAG_USER, pf,
    },
};

use super::{faults::USER_END, stacks};
use crate::{
    maps::{emit, instance_of, slot_counters},
    regions::{self, Followed},
};

/// Set by the loader in kernel mode; zero (and unused) in tracepoint mode.
#[unsafe(no_mangle)]
static KERNEL_LAYOUT: KernelLayout = KernelLayout {
    vmf_address: 0,
    vmf_flags: 0,
    vmf_orig_pte: 0,
    stream: 0,
};

#[inline(always)]
fn layout() -> KernelLayout {
    // SAFETY: a plain read of a global; volatile so that the loader's value is read, not
    // the compile-time zero.
    unsafe { core::ptr::read_volatile(&KERNEL_LAYOUT) }
}

/// The first [`VMF_WINDOW`] bytes of `struct vm_fault`, as 4-byte words.
type Window = [u32; (VMF_WINDOW / 4) as usize];

/// The 8-byte field at byte `off` of the window (0 when out of it).
#[inline(always)]
fn field_u64(w: &Window, off: u32) -> u64 {
    let i = (off / 4) as usize;
    if i + 1 >= w.len() {
        return 0;
    }
    u64::from(w[i]) | (u64::from(w[i + 1]) << 32)
}

/// The 4-byte field at byte `off` of the window (0 when out of it).
#[inline(always)]
fn field_u32(w: &Window, off: u32) -> u32 {
    let i = (off / 4) as usize;
    if i >= w.len() {
        return 0;
    }
    w[i]
}

/// fexit do_anonymous_page(struct vm_fault *vmf) -> vm_fault_t
#[fexit(function = "do_anonymous_page")]
pub fn anon_fault(ctx: FExitContext) -> u32 {
    on_install(&ctx, Install::Anon);
    0
}
named_program!(anon_fault = ANON_FAULT);

/// fexit do_huge_pmd_anonymous_page(struct vm_fault *vmf) -> vm_fault_t
#[fexit(function = "do_huge_pmd_anonymous_page")]
pub fn huge_anon_fault(ctx: FExitContext) -> u32 {
    on_install(&ctx, Install::HugeAnon);
    0
}
named_program!(huge_anon_fault = HUGE_ANON_FAULT);

/// fexit do_wp_page(struct vm_fault *vmf) -> vm_fault_t
#[fexit(function = "do_wp_page")]
pub fn wp_fault(ctx: FExitContext) -> u32 {
    on_install(&ctx, Install::WriteProtect);
    0
}
named_program!(wp_fault = WP_FAULT);

/// fexit do_huge_pmd_wp_page(struct vm_fault *vmf) -> vm_fault_t
#[fexit(function = "do_huge_pmd_wp_page")]
pub fn huge_wp_fault(ctx: FExitContext) -> u32 {
    on_install(&ctx, Install::HugeWriteProtect);
    0
}
named_program!(huge_wp_fault = HUGE_WP_FAULT);

/// fentry bad_area_access_error(struct pt_regs *regs, unsigned long error_code,
/// unsigned long address, struct mm_struct *mm, struct vm_area_struct *vma): the VMA's
/// protection refuses the access (a read of a `PROT_NONE` page, a write to a read-only
/// one); the process gets SIGSEGV, or a kernel access gets -EFAULT. Counted `other`.
#[fentry(function = "bad_area_access_error")]
pub fn access_error(ctx: FEntryContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let inst = instance_of(tgid);
    if inst == 0 {
        return 0;
    }
    let addr: u64 = ctx.arg(2);
    let error_code: u64 = ctx.arg(1);
    if addr >= USER_END {
        return 0;
    }
    if let Some(f) = regions::followed(inst, addr) {
        count(&f, FaultKind::Other, 1, false);
        if stacks::enabled() {
            let kernel = error_code & pf::USER == 0;
            take_stack(&ctx, &f, tgid, inst, addr, FaultKind::Other, 1, kernel);
        }
        if layout().stream != 0 {
            stream(
                &f,
                tgid,
                inst,
                pid_tgid as u32,
                addr,
                FaultKind::Other,
                error_code,
            );
        }
    }
    0
}
named_program!(access_error = ACCESS_ERROR);

#[inline(always)]
fn on_install(ctx: &FExitContext, at: Install) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let inst = instance_of(tgid);
    if inst == 0 {
        return;
    }
    let vmf: *const Window = ctx.arg(0);
    // The return value follows the one argument.
    let ret: u64 = ctx.arg(1);
    // SAFETY: bpf_probe_read_kernel copes with any pointer; `vmf` is the traced function's.
    let Ok(w) = (unsafe { bpf_probe_read_kernel(vmf) }) else {
        return;
    };
    let l = layout();
    let addr = field_u64(&w, l.vmf_address);
    let flags = field_u32(&w, l.vmf_flags);
    let orig_pte = field_u64(&w, l.vmf_orig_pte);
    let Some((kind, pages)) = classify_install(at, flags, ret as u32, orig_pte) else {
        return;
    };
    let Some(f) = regions::followed(inst, addr) else {
        return;
    };
    let huge = pages > 1;
    // A huge page is one chunk: count the pages of it that are followed.
    let pages = if huge { followed_pages(&f) } else { pages };
    count(&f, kind, pages, huge);
    if stacks::enabled() {
        let kernel = flags & FAULT_FLAG_USER == 0;
        take_stack(ctx, &f, tgid, inst, addr, kind, pages, kernel);
    }
    if l.stream != 0 {
        stream(
            &f,
            tgid,
            inst,
            pid_tgid as u32,
            addr,
            kind,
            u64::from(flags),
        );
    }
}

/// The followed pages of `f`'s chunk.
#[inline(always)]
fn followed_pages(f: &Followed) -> u64 {
    let mut n = 0u64;
    for w in 0..CHUNK_WORDS {
        // SAFETY: a live map value for this program run.
        n += u64::from(unsafe { (*f.chunk).in_region[w] }.count_ones());
    }
    n
}

#[inline(always)]
fn count(f: &Followed, kind: FaultKind, pages: u64, huge: bool) {
    // SAFETY: a live map value for this program run.
    if let Some(c) = slot_counters(unsafe { (*f.chunk).slot }) {
        // SAFETY: this CPU's copy of a per-CPU value: no other writer.
        unsafe {
            (*c).faults[(kind as usize) % FAULT_KINDS] += pages;
            if huge {
                (*c).huge_faults += 1;
            }
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the fault's facts, inlined into each hook"
)]
#[inline(always)]
fn take_stack<C: StackIdContext>(
    ctx: &C,
    f: &Followed,
    tgid: u32,
    inst: u32,
    addr: u64,
    kind: FaultKind,
    pages: u64,
    kernel: bool,
) {
    // SAFETY: a live map value, only read.
    let r = regions::resolve(unsafe { &*f.chunk }, inst, addr >> CHUNK_SHIFT, f.page);
    stacks::take(ctx, tgid, inst, r.id, kind, pages, kernel);
}

#[inline(always)]
fn stream(f: &Followed, tgid: u32, inst: u32, tid: u32, addr: u64, kind: FaultKind, detail: u64) {
    // SAFETY: a live map value, only read.
    let r = regions::resolve(unsafe { &*f.chunk }, inst, addr >> CHUNK_SHIFT, f.page);
    emit(
        &Event {
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            addr,
            arg1: r.id,
            arg2: r.index,
            arg3: detail,
            pid: tgid,
            tid,
            kind: EventKind::Fault as u8,
            detail: kind as u8,
            _pad: [0; 6],
        },
        DROP_FAULT_EVENTS,
    );
}
