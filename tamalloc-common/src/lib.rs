//! Types shared by the tamalloc eBPF programs, the userspace tracer and the syscall ABI.
//!
//! `abi` mirrors `include/uapi/linux/tamalloc.h` from the kernel patch; `maps` names the
//! eBPF object's maps and programs for both sides; `trace` holds the records the eBPF
//! programs write into those maps and ring buffers. Everything here is `#[repr(C)]`
//! plain data so that both sides read the same bytes.
#![no_std]

pub mod abi;
pub mod maps;
pub mod trace;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, has no padding the kernel or eBPF side
    // leaves uninitialised (explicit `_pad` fields), and any bit pattern is a valid value.
    unsafe impl aya::Pod for crate::trace::PidCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::trace::ChunkKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::trace::Chunk {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::trace::MarkerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::trace::RegionRef {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::trace::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::trace::Pending {}
}
