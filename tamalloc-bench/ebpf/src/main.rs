//! The floor any fault tracer pays: a per-CPU counter on the fault tracepoint and nothing
//! else. Not part of the shipped tracer; `tamalloc-bench bpf` measures it beside the tracer's
//! `page_fault`, attached the same way (a raw tracepoint).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};

#[map]
pub static REFERENCE_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_reference(_ctx: RawTracePointContext) -> u32 {
    if let Some(p) = REFERENCE_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; no other writer.
        unsafe { *p += 1 };
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this; it is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
