//! tamalloc's eBPF programs.
//!
//! Data flow: kernel events enter at [`hooks`]: `raw_syscalls` learn regions (554, or the
//! documented mmap fallback) and keep them true through munmap/mremap; `sched` tracepoints
//! copy them on fork and drop them on exec/exit; `exceptions:page_fault_*` classify faults
//! in region pages and count them per process (always) and stream them through `EVENTS` (on
//! demand). Their state is kept by [`regions`] in the maps of [`maps`], whose names
//! [`names`] ties to `tamalloc_common::maps`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "BPF has no CAS, so only the intrinsics give fetch_or/fetch_and"
)]

#[macro_use]
mod names;

mod atomics;
mod hooks;
mod maps;
mod regions;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this; it is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
