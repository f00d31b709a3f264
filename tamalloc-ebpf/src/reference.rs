//! The floor any fault tracer pays: a per-CPU counter on the fault tracepoint and nothing
//! else. Not attached by the tracer; `cargo xtask bench` measures it beside `page_fault`.

use aya_ebpf::{macros::map, macros::tracepoint, maps::PerCpuArray, programs::TracePointContext};

#[map]
pub static REFERENCE_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn page_fault_reference(_ctx: TracePointContext) -> u32 {
    if let Some(p) = REFERENCE_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; no other writer.
        unsafe { *p += 1 };
    }
    0
}
